"""check_cosine_lr, check_clip_grad_norm and check_sample_top_p, both ways."""
import math

import pytest
import torch

from course_lib.checks import check_clip_grad_norm, check_cosine_lr, check_sample_top_p
from course_lib.generation import sample_next
from course_lib.training import clip_grad_norm, cosine_lr

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted

pytestmark = pytest.mark.usefixtures("quiet_checks")


# ------------------------------------------------------------------ cosine_lr
def lr_numpy_style(step, warmup, total, max_lr, min_lr):  # correct, written differently
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (max_lr - min_lr) * (math.cos(math.pi * t) + 1) / 2


def lr_hf_style(step, warmup, total, max_lr, min_lr):
    """Hugging Face's get_cosine_schedule_with_warmup (and get_cosine_with_min_lr_schedule_with_warmup):
    a multiplier of max_lr, 0 at step 0; the cosine written with num_cycles = 0.5."""
    if step < warmup:
        factor = float(step) / float(max(1, warmup))
    else:
        progress = float(step - warmup) / float(max(1, total - warmup))
        factor = max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * min(progress, 1.0))))
        factor = factor * (1 - min_lr / max_lr) + min_lr / max_lr
    return max_lr * factor


def lr_nanogpt_style(it, warmup_iters, lr_decay_iters, learning_rate, min_lr):
    """nanoGPT's get_lr: warm-up (it + 1) / (warmup_iters + 1), min_lr once past the decay."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def lr_tensor(step, warmup, total, max_lr, min_lr):  # correct, computed as a 0-d tensor
    s = torch.tensor(float(step), dtype=torch.float64)
    if step < warmup:
        return max_lr * (s + 1) / warmup
    p = torch.clamp((s - warmup) / max(1, total - warmup), max=1.0)
    return min_lr + 0.5 * (1 + torch.cos(torch.pi * p)) * (max_lr - min_lr)


def lr_to_zero(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return max_lr * (math.cos(math.pi * t) + 1) / 2


def lr_hf_to_zero(step, warmup, total, max_lr, min_lr):  # HF's warm-up, but min_lr forgotten
    if step < warmup:
        return max_lr * step / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return max_lr * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_from_zero(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = min(1.0, step / total)
    return min_lr + (max_lr - min_lr) * (math.cos(math.pi * t) + 1) / 2


def lr_nanogpt_from_zero(step, warmup, total, max_lr, min_lr):  # nanoGPT's warm-up, progress from step 0
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    if step > total:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * step / total)) * (max_lr - min_lr)


def lr_no_clamp(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (max_lr - min_lr) * (math.cos(math.pi * t) + 1) / 2


@pytest.mark.parametrize("impl", [lr_numpy_style, lr_hf_style, lr_nanogpt_style, lr_tensor])
def test_cosine_accepts_every_published_warmup(impl):
    """course_lib's (step+1)/warmup, Hugging Face's step/warmup and nanoGPT's (step+1)/(warmup+1)
    are all correct warm-ups; none may be graded as a mistake."""
    result = check_cosine_lr(impl)
    assert result.passed, result.message


def test_cosine_stub():
    def f(step, warmup, total, max_lr, min_lr):
        raise NotImplementedError
    assert_not_attempted(check_cosine_lr(f))


@pytest.mark.parametrize("impl,key", [(lr_to_zero, "decays_to_zero"), (lr_hf_to_zero, "decays_to_zero"),
                                      (lr_from_zero, "progress_ignores_warmup"),
                                      (lr_nanogpt_from_zero, "progress_ignores_warmup"),
                                      (lr_no_clamp, "no_clamp_after_total")])
def test_cosine_diagnoses(impl, key):
    """Each mistake is named whichever warm-up convention it is written with."""
    assert_diagnosed(check_cosine_lr(impl), key)


def test_cosine_names_the_warmup_it_graded_with():
    result = check_cosine_lr(lr_hf_to_zero)
    assert "Hugging Face" in result.detail, result.detail


def test_cosine_wrong_warmup_lists_the_accepted_ones():
    def warm_to_half(step, warmup, total, max_lr, min_lr):  # rises to max_lr / 2 only
        if step < warmup:
            return 0.5 * max_lr * (step + 1) / warmup
        return lr_numpy_style(step, warmup, total, max_lr, min_lr)
    result = check_cosine_lr(warm_to_half)
    assert not result.passed and result.misconception is None and "warm-up" in result.message
    assert "nanoGPT" in result.detail and "Hugging Face" in result.detail


@pytest.mark.parametrize("bad", [lambda *a: None, lambda *a: "0.1", lambda *a: torch.ones(2),
                                 lambda *a: 1 / 0, lambda *a: float("nan")])
def test_cosine_bad_outputs_get_a_verdict(bad):
    result = check_cosine_lr(bad)
    assert not result.passed and result.points == 0 and "checker itself" not in result.message


course_schedule = cosine_lr  # an alias made at module level, as a learner might


def lr_through_alias(step, warmup, total, max_lr, min_lr):
    return course_schedule(step, warmup, total, max_lr, min_lr)


@pytest.mark.parametrize("impl", [cosine_lr, lr_through_alias])
def test_cosine_refuses_course_libs_schedule(impl):
    assert_delegates(check_cosine_lr(impl), "course_lib.training.cosine_lr")


def test_cosine_delegation_is_refused():
    from torch.optim.lr_scheduler import CosineAnnealingLR

    def with_scheduler(step, warmup, total, max_lr, min_lr):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
        sched = CosineAnnealingLR(opt, total, eta_min=min_lr)
        for _ in range(step):
            opt.step()
            sched.step()
        return opt.param_groups[0]["lr"]
    assert_delegates(check_cosine_lr(with_scheduler), "CosineAnnealingLR")


def test_cosine_named_all_tested():
    assert_all_tested("check_cosine_lr", {"decays_to_zero", "progress_ignores_warmup", "no_clamp_after_total"})


# ------------------------------------------------------------------ clip_grad_norm
def clip_loop(parameters, max_norm):  # correct, with a Python loop
    ps = [p for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float((p.grad ** 2).sum()) for p in ps))
    if total > max_norm:
        for p in ps:
            p.grad *= max_norm / (total + 1e-6)
    return total


def clip_per_param(parameters, max_norm):
    for p in parameters:
        n = p.grad.norm()
        if n > max_norm:
            p.grad.mul_(max_norm / (n + 1e-6))
    return 0.0


def clip_not_in_place(parameters, max_norm):
    ps = list(parameters)
    total = torch.stack([p.grad.norm() for p in ps]).norm()
    for p in ps:
        g = p.grad * min(1.0, max_norm / (float(total) + 1e-6))  # a new tensor, never stored
    return total


def clip_always(parameters, max_norm):
    ps = list(parameters)
    total = torch.stack([p.grad.norm() for p in ps]).norm()
    for p in ps:
        p.grad.mul_(max_norm / (total + 1e-6))
    return total


def clip_returns_after(parameters, max_norm):
    ps = [p for p in parameters if p.grad is not None]
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ps]))
    if total > max_norm:
        for p in ps:
            p.grad.mul_(max_norm / (total + 1e-6))
    return torch.stack([p.grad.norm() for p in ps]).norm()  # measured after clipping


def clip_float64(parameters, max_norm):  # correct: one flat vector, the norm in float64
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.cat([g.double().flatten() for g in grads]).pow(2).sum().sqrt()
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    for g in grads:
        g.mul_(scale)
    return total.float()


@pytest.mark.parametrize("impl", [clip_loop, clip_float64])
def test_clip_accepts(impl):
    assert check_clip_grad_norm(impl).passed


def clip_via_torch(parameters, max_norm):
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


@pytest.mark.parametrize("impl,used", [(clip_grad_norm, "course_lib.training.clip_grad_norm"),
                                       (torch.nn.utils.clip_grad_norm_, "torch.nn.utils.clip_grad_norm_"),
                                       (clip_via_torch, "torch.nn.utils.clip_grad_norm_")])
def test_clip_refuses_delegation(impl, used):
    assert_delegates(check_clip_grad_norm(impl), used)


@pytest.mark.parametrize("impl,key", [(clip_per_param, "per_parameter"), (clip_not_in_place, "not_in_place"),
                                      (clip_always, "always_rescales"), (clip_returns_after, "returns_clipped_norm")])
def test_clip_diagnoses(impl, key):
    assert_diagnosed(check_clip_grad_norm(impl), key)


def test_clip_named_all_tested_and_stub():
    assert_all_tested("check_clip_grad_norm", {
        "per_parameter", "not_in_place", "always_rescales", "returns_clipped_norm"})

    def f(parameters, max_norm):
        raise NotImplementedError
    assert_not_attempted(check_clip_grad_norm(f))


# ------------------------------------------------------------------ sample_top_p
from helpers import solved  # noqa: E402


def top_p_via_sample_next(logits, p, generator, temperature=1.0):
    return sample_next(logits, temperature, top_p=p, generator=generator)


def top_p_via_filter(logits, p, generator, temperature=1.0):
    from course_lib.generation import top_p_filter
    probs = torch.softmax(top_p_filter(logits / temperature, p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def top_p_hf_style(logits, p, generator, temperature=1.0):  # correct: ascending sort, HF's way
    logits = logits / temperature
    sorted_logits, idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum <= (1 - p)
    remove[..., -1:] = False
    logits = logits.masked_fill(remove.scatter(-1, idx, remove), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _nucleus(logits, p, generator, temperature, keep_rule):
    probs = (logits / temperature).softmax(-1)
    sp, order = probs.sort(-1, descending=True)
    keep = keep_rule(sp)
    keep[..., 0] = True
    idx = torch.multinomial(sp * keep, 1, generator=generator)
    return order.gather(-1, idx)[:, 0]


def top_p_drops(logits, p, generator, temperature=1.0):
    return _nucleus(logits, p, generator, temperature, lambda sp: sp.cumsum(-1) <= p)


def top_p_unsorted(logits, p, generator, temperature=1.0):
    probs = (logits / temperature).softmax(-1)
    keep = (probs.cumsum(-1) - probs) < p
    return torch.multinomial(probs * keep, 1, generator=generator)[:, 0]


def top_p_temp_after(logits, p, generator, temperature=1.0):
    probs = logits.softmax(-1) / temperature
    probs = probs / probs.sum(-1, keepdim=True)
    sp, order = probs.sort(-1, descending=True)
    keep = (sp.cumsum(-1) - sp) < p
    return order.gather(-1, torch.multinomial(sp * keep, 1, generator=generator))[:, 0]


@pytest.mark.parametrize("impl", [solved("check_sample_top_p"), top_p_hf_style])
def test_top_p_accepts(impl):
    assert check_sample_top_p(impl).passed


@pytest.mark.parametrize("impl,used", [(top_p_via_sample_next, "course_lib.generation.sample_next"),
                                       (top_p_via_filter, "course_lib.generation.top_p_filter")])
def test_top_p_refuses_delegation(impl, used):
    assert_delegates(check_sample_top_p(impl), used)


@pytest.mark.parametrize("impl,key", [(top_p_drops, "drops_crossing_token"), (top_p_unsorted, "unsorted"),
                                      (top_p_temp_after, "temperature_after_softmax")])
def test_top_p_diagnoses(impl, key):
    assert_diagnosed(check_sample_top_p(impl), key)


def test_top_p_named_all_tested_and_stub():
    assert_all_tested("check_sample_top_p", {
        "drops_crossing_token", "unsorted", "temperature_after_softmax"})

    def f(logits, p, generator, temperature=1.0):
        raise NotImplementedError
    assert_not_attempted(check_sample_top_p(f))


# ------------------------------------------------------------------ generate
from course_lib.checks import check_generate  # noqa: E402
from course_lib.generation import generate  # noqa: E402


GENERATE = solved("check_generate")  # the printed learner-level answer


def gen_via_library(model, idx, n, use_cache=True):
    return generate(model, idx, n, use_cache=use_cache)


def gen_manual(model, idx, n, use_cache=True):  # correct, written by hand with explicit positions
    cache = model.new_cache() if use_cache else None
    logits = model(idx, cache=cache).logits[:, -1]
    for i in range(n):
        nxt = logits.argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
        if i == n - 1:
            break
        if use_cache:
            pos = torch.full((idx.size(0), 1), idx.size(1) - 1)
            logits = model(nxt, cache=cache, position_ids=pos).logits[:, -1]
        else:
            logits = model(idx).logits[:, -1]
    return idx


def _loop(model, idx, n, use_cache, feed):
    cache = model.new_cache() if use_cache else None
    step = idx
    for _ in range(n):
        logits = feed(model, idx, step, cache) if use_cache else model(idx).logits[:, -1]
        nxt = logits.argmax(-1)
        idx = torch.cat([idx, nxt[:, None]], 1)
        step = nxt[:, None]
    return idx


def gen_positions_restart(model, idx, n, use_cache=True):
    return _loop(model, idx, n, use_cache, lambda m, full, step, c: m(
        step, cache=c, position_ids=torch.arange(step.size(1))).logits[:, -1])


def gen_refeed(model, idx, n, use_cache=True):
    return _loop(model, idx, n, use_cache, lambda m, full, step, c: m(full, cache=c).logits[:, -1])


def gen_ignores_cache(model, idx, n, use_cache=True):
    return _loop(model, idx, n, False, None)


def gen_drops_prompt(model, idx, n, use_cache=True):
    return GENERATE(model, idx, n, use_cache)[:, idx.size(1):]


@pytest.mark.parametrize("impl", [GENERATE, gen_manual])
def test_generate_accepts(impl):
    assert check_generate(impl).passed


def test_generate_refuses_delegation():
    assert_delegates(check_generate(gen_via_library), "course_lib.generation.generate")


@pytest.mark.parametrize("impl,key", [(gen_positions_restart, "positions_not_advanced"),
                                      (gen_refeed, "refeeds_whole_sequence"),
                                      (gen_ignores_cache, "ignores_cache"), (gen_drops_prompt, "drops_prompt")])
def test_generate_diagnoses(impl, key):
    assert_diagnosed(check_generate(impl), key)


def test_generate_named_all_tested_and_stub():
    assert_all_tested("check_generate", {
        "positions_not_advanced", "refeeds_whole_sequence", "ignores_cache", "drops_prompt"})

    def f(model, idx, n, use_cache=True):
        raise NotImplementedError
    assert_not_attempted(check_generate(f))
