"""check_eval_at_length, both ways: correct implementations pass, the stub is not attempted, and
each named misconception, written as a learner would write it, is diagnosed."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import check_eval_at_length
from course_lib.checks.experiments import _cases
from course_lib.data import get_batch
from course_lib.experiments import eval_at_length, loss_by_position

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


# ------------------------------------------------------------------ correct, written differently
def with_manual_windows(model, data, length, n_batches, batch_size, generator):
    tokens = torch.as_tensor(np.asarray(data, dtype=np.int64))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for _ in range(n_batches):
            starts = torch.randint(len(tokens) - length, (batch_size,), generator=generator)
            windows = torch.stack([tokens[s: s + length + 1] for s in starts.tolist()]).to(device)  # (B, T+1)
            logits = model(windows[:, :-1])  # (B, T, V)
            logp = torch.log_softmax(logits.double(), dim=-1)
            nll = -logp.gather(-1, windows[:, 1:, None]).squeeze(-1)  # (B, T)
            total += nll.sum().item()
            count += nll.numel()
    model.train(was_training)
    return total / count


def tensor_result(model, data, length, n_batches, batch_size, generator):
    mode = model.training
    model.eval()
    losses = []
    with torch.no_grad():
        for _ in range(n_batches):
            x, y = get_batch(data, batch_size, length, generator)
            logits = model(x)
            losses.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)))
    model.train(mode)
    return torch.stack(losses).mean()  # a 0-d tensor without grad is fine


@pytest.mark.parametrize("impl", [solved("check_eval_at_length"), with_manual_windows, tensor_result])
def test_accepts_correct_implementations(impl):
    r = check_eval_at_length(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


def via_loss_by_position(model, data, length, n_batches, batch_size, generator):
    return loss_by_position(model, data, length, n_batches, batch_size, generator).mean().item()


@pytest.mark.parametrize("impl,used", [(eval_at_length, "course_lib.experiments.eval_at_length"),
                                       (via_loss_by_position, "course_lib.experiments.loss_by_position")])
def test_refuses_delegation(impl, used):
    assert_delegates(check_eval_at_length(impl), used)


def test_stub_is_not_attempted():
    def eval_at_length(model, data, length, n_batches, batch_size, generator):
        raise NotImplementedError()
    r = check_eval_at_length(eval_at_length)
    assert_not_attempted(r)


def test_the_short_case_really_draws_the_last_start():
    """The off-by-one learner fails only if one of its starts is len(data) - length: make sure the
    short case's seed draws it (else that misconception could not be seen)."""
    case = next(c for c in _cases() if len(c.data) - c.length == 2)
    g = torch.Generator().manual_seed(case.seed)
    starts = torch.cat([torch.randint(len(case.data) - case.length + 1, (case.batch_size,), generator=g)
                        for _ in range(case.n_batches)])
    assert (starts == len(case.data) - case.length).any()


# ------------------------------------------------------------------ mistakes, as a learner writes them
def restore(model):
    model.train()


def left_in_train_mode(model, data, length, n_batches, batch_size, generator):
    losses = []
    with torch.no_grad():
        for _ in range(n_batches):
            x, y = get_batch(data, batch_size, length, generator)
            losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
    return sum(losses) / len(losses)


def without_no_grad(model, data, length, n_batches, batch_size, generator):
    model.eval()
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length, generator)
        losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
    model.train()
    return sum(losses) / len(losses)


def returns_the_graph(model, data, length, n_batches, batch_size, generator):
    model.eval()
    total = 0
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length, generator)
        total = total + F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    model.train()
    return total / n_batches


def never_back_to_train(model, data, length, n_batches, batch_size, generator):
    model.eval()
    losses = []
    with torch.no_grad():
        for _ in range(n_batches):
            x, y = get_batch(data, batch_size, length, generator)
            losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
    return sum(losses) / len(losses)


def evaluating(body):
    """Wrap a learner's loop body with the correct eval / no_grad / restore handling, so each
    mistake below is the only one."""
    def fn(model, data, length, n_batches, batch_size, generator):
        model.eval()
        with torch.no_grad():
            out = body(model, data, length, n_batches, batch_size, generator)
        model.train()
        return out
    fn.__name__ = body.__name__
    return fn


@evaluating
def predicts_current_token(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length, generator)
        logits = model(x)
        losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)), x.view(-1)).item())
    return np.mean(losses)


@evaluating
def sum_reduction(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length, generator)
        logits = model(x)
        losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum").item())
    return np.mean(losses)


@evaluating
def adds_batch_means(model, data, length, n_batches, batch_size, generator):
    total = 0.0
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length, generator)
        total += F.cross_entropy(model(x).transpose(1, 2), y).item()
    return total


@evaluating
def crops_like_generate(model, data, length, n_batches, batch_size, generator):
    seq_len = model.config.max_positions
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length, generator)
        x_cond, y_cond = x[:, -seq_len:], y[:, -seq_len:]
        logits = model(x_cond)
        losses.append(F.cross_entropy(logits.transpose(1, 2), y_cond).item())
    return sum(losses) / n_batches


@evaluating
def windows_of_training_length(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, model.config.max_positions, generator)
        losses.append(F.cross_entropy(model(x).transpose(1, 2), y).item())
    return sum(losses) / n_batches


@evaluating
def only_last_logits(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length, generator)
        logits = model(x)[:, -1, :]  # (B, V)
        losses.append(F.cross_entropy(logits, y[:, -1]).item())
    return sum(losses) / n_batches


@evaluating
def last_start_off_by_one(model, data, length, n_batches, batch_size, generator):
    data = torch.tensor(np.asarray(data), dtype=torch.long)
    losses = []
    for _ in range(n_batches):
        ix = torch.randint(0, len(data) - length + 1, (batch_size,), generator=generator)
        x = torch.stack([data[i:i + length] for i in ix])
        y = torch.stack([data[i + 1:i + length + 1] for i in ix])
        logits = model(x)
        losses.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item())
    return sum(losses) / len(losses)


@evaluating
def forgets_the_generator(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length)
        losses.append(F.cross_entropy(model(x).transpose(1, 2), y).item())
    return sum(losses) / n_batches


MISTAKES = [(left_in_train_mode, "train_mode"), (without_no_grad, "grad_tracked"),
            (returns_the_graph, "grad_tracked"), (never_back_to_train, "mode_not_restored"),
            (predicts_current_token, "targets_not_shifted"), (sum_reduction, "summed_tokens"),
            (adds_batch_means, "summed_batches"), (crops_like_generate, "crops_to_context"),
            (windows_of_training_length, "training_length"), (only_last_logits, "last_position_only"),
            (last_start_off_by_one, "window_past_end"), (forgets_the_generator, "ignores_generator")]


@pytest.mark.parametrize("impl,key", MISTAKES, ids=[f.__name__ for f, _ in MISTAKES])
def test_diagnoses(impl, key):
    assert_diagnosed(check_eval_at_length(impl), key)


def test_every_named_misconception_is_tested():
    assert_all_tested("check_eval_at_length", {k for _, k in MISTAKES})


def test_other_failures_are_reported_not_raised():
    def returns_a_list(model, data, length, n_batches, batch_size, generator):
        return [1.0, 2.0]

    def crashes(model, data, length, n_batches, batch_size, generator):
        return model(data)  # a numpy array is not a batch of ids

    r = check_eval_at_length(returns_a_list)
    assert not r.passed and "expected one number" in r.message and r.misconception is None
    r = check_eval_at_length(crashes)
    assert not r.passed and "your code raised" in r.message and "Traceback (your code)" in r.detail
    r = check_eval_at_length(lambda *a: 1.0)
    assert not r.passed and "returned 1, expected" in r.message and r.misconception is None
