"""Checks for Lesson 13 (experiments): evaluating a language model at a chosen length.

The learner's ``eval_at_length(model, data, length, n_batches, batch_size, generator)`` runs on
small ``ExperimentLM``s that have dropout (so a model left in training mode gives different
numbers) and are handed over in training mode (as a training loop would), with seeded
generators. Besides the loss itself the check watches every forward pass: was the model in
eval mode, was autograd off, and was the model's mode restored afterwards. Each misconception
below is re-created as a small function; the check names the one whose outcomes (numbers, or
an error in the same cases) equal the learner's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from course_lib.data import get_batch
from course_lib.experiments import ExperimentLM, eval_at_length
from .core import LearnerError, Mismatch, call_learner, register

VOCAB, CONTEXT, GLOBAL_SEED = 13, 16, 1234
RTOL, ATOL = 1e-5, 1e-6


def _model(position: str) -> ExperimentLM:
    """A tiny LM with dropout and peaked predictions, so that every mistake moves the loss."""
    torch.manual_seed(13)
    model = ExperimentLM(vocab_size=VOCAB, max_positions=CONTEXT, d_model=32, n_layers=2, n_heads=4,
                         position=position, dropout=0.3)
    with torch.no_grad():
        model.tok_emb.weight.mul_(40.0)  # tied head: logits of std ≈ 5 instead of ≈ 0.1
    return model.train()


def _data() -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(13)
    text = rng.integers(0, VOCAB, 2000)
    return text.astype(np.uint16), torch.as_tensor(text[:700], dtype=torch.long), text[:42].astype(np.uint16)


@dataclass
class _Case:
    label: str
    position: str
    data: object
    length: int
    n_batches: int
    batch_size: int
    seed: int


def _cases() -> list[_Case]:
    long_np, long_t, short = _data()
    return [
        _Case("RoPE model trained at 16 tokens, length 16, numpy uint16 data", "rope", long_np, 16, 3, 4, 1),
        _Case("RoPE model trained at 16 tokens, length 48 (3x longer), torch int64 data", "rope", long_t, 48, 2, 3, 2),
        _Case("ALiBi model, length 40 from 42 tokens of data (window starts 0 or 1 only)", "alibi", short, 40, 2, 6, 3),
        _Case("learned positions (16 of them), length 16, batch_size 2, one batch", "learned", long_np, 16, 1, 2, 4),
    ]


# ------------------------------------------------------------------ the learner's run, observed
@dataclass
class _Outcome:
    value: object = None
    error: LearnerError | None = None
    forwards: list = field(default_factory=list)  # (model.training, grad enabled) per forward
    training_after: bool = True


def _observe(fn, case: _Case) -> _Outcome:
    model, out = _model(case.position), _Outcome()
    model.register_forward_pre_hook(lambda m, args: out.forwards.append((m.training, torch.is_grad_enabled())))
    torch.manual_seed(GLOBAL_SEED)  # dropout (if left on) and any draw from the global RNG: repeatable
    try:
        out.value = call_learner(fn, model, case.data, case.length, case.n_batches, case.batch_size,
                                 torch.Generator().manual_seed(case.seed))
    except LearnerError as err:
        out.error = err
    out.training_after = model.training
    return out


def _run_variant(fn, case: _Case):
    """A misconception's outcome on a case: its number, or the exception type it raises."""
    model = _model(case.position).eval()
    torch.manual_seed(GLOBAL_SEED)
    try:
        with torch.no_grad():
            return float(fn(model, case.data, case.length, case.n_batches, case.batch_size,
                            torch.Generator().manual_seed(case.seed)))
    except Exception as exc:  # noqa: BLE001 - a variant that fails on a case fails like the learner would
        return exc


def _close(a, b) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


# ------------------------------------------------------------------ misconceptions, re-created
def _windows(data, length, batch_size, generator):
    return get_batch(data, batch_size, length, generator)  # (B, T) each


def _ce(logits, y, reduction="mean"):
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction=reduction)  # (B*T, V) vs (B*T,)


def _not_shifted(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, _ = _windows(data, length, batch_size, generator)
        losses.append(_ce(model(x), x).item())
    return sum(losses) / n_batches


def _summed_tokens(model, data, length, n_batches, batch_size, generator):
    total = 0.0
    for _ in range(n_batches):
        x, y = _windows(data, length, batch_size, generator)
        total += _ce(model(x), y, "sum").item()
    return total / n_batches


def _summed_batches(model, data, length, n_batches, batch_size, generator):
    total = 0.0
    for _ in range(n_batches):
        x, y = _windows(data, length, batch_size, generator)
        total += _ce(model(x), y).item()
    return total


def _cropped(model, data, length, n_batches, batch_size, generator):
    ctx = model.config.max_positions
    losses = []
    for _ in range(n_batches):
        x, y = _windows(data, length, batch_size, generator)
        losses.append(_ce(model(x[:, -ctx:]), y[:, -ctx:]).item())
    return sum(losses) / n_batches


def _training_length(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, y = _windows(data, model.config.max_positions, batch_size, generator)
        losses.append(_ce(model(x), y).item())
    return sum(losses) / n_batches


def _last_position(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, y = _windows(data, length, batch_size, generator)
        losses.append(F.cross_entropy(model(x)[:, -1], y[:, -1]).item())
    return sum(losses) / n_batches


def _past_end(model, data, length, n_batches, batch_size, generator):
    data = torch.as_tensor(np.asarray(data, dtype=np.int64))
    losses = []
    for _ in range(n_batches):
        starts = torch.randint(len(data) - length + 1, (batch_size,), generator=generator)
        x = torch.stack([data[s: s + length] for s in starts])
        y = torch.stack([data[s + 1: s + length + 1] for s in starts])
        losses.append(_ce(model(x), y).item())
    return sum(losses) / n_batches


def _global_rng(model, data, length, n_batches, batch_size, generator):
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, length)  # no generator: torch's global RNG
        losses.append(_ce(model(x), y).item())
    return sum(losses) / n_batches


VARIANTS = {"targets_not_shifted": _not_shifted, "summed_tokens": _summed_tokens,
            "summed_batches": _summed_batches, "crops_to_context": _cropped,
            "training_length": _training_length, "last_position_only": _last_position,
            "window_past_end": _past_end, "ignores_generator": _global_rng}

MISCONCEPTIONS = {
    "train_mode": "the model ran in training mode, so dropout was on and the loss is noisy and too "
                  "high. Call model.eval() before the forward passes.",
    "grad_tracked": "autograd was on during evaluation: every forward pass kept its activations for a "
                    "backward pass that never comes (memory grows with the length you test). Put the "
                    "loop under `with torch.no_grad():` and return a plain number (loss.item()).",
    "mode_not_restored": "the model came in training mode and left in eval mode: a training loop that "
                         "calls your function would go on training without dropout. Remember "
                         "was_training = model.training and call model.train(was_training) at the end.",
    "targets_not_shifted": "you scored the model on predicting the token it is looking at (targets = x). "
                           "The target at position t is the *next* token, data[i+t+1]: use the y that "
                           "get_batch returns (x shifted by one).",
    "summed_tokens": "you summed the loss over the tokens of a batch (reduction='sum'). Report the mean "
                     "per token, so that lengths and batch sizes can be compared: nats per token.",
    "summed_batches": "you added up the batch means; divide by the number of batches (n_batches) to "
                      "get the mean.",
    "crops_to_context": "you cut each window to the model's training context (x[:, -context:], as "
                        "generate() does). Then the model never sees a sequence longer than it was "
                        "trained on, and 'extrapolation' looks free. Feed all `length` tokens.",
    "training_length": "you drew windows of model.config.max_positions tokens; the point is to evaluate at "
                       "`length` tokens, which may be longer than the model was trained on.",
    "last_position_only": "you scored only the last position of each window (logits[:, -1]). Every "
                          "position predicts its next token: average the loss over all of them.",
    "window_past_end": "the last window can start at len(data) - length - 1 (its targets end at the "
                       "last token); starting at len(data) - length leaves the targets one token short. "
                       "Draw starts with torch.randint(len(data) - length, ...), as get_batch does.",
    "ignores_generator": "you drew windows without the `generator` argument, from torch's global RNG: "
                         "each model would then be scored on different text, and no run is repeatable. "
                         "Pass it on: get_batch(data, batch_size, length, generator).",
}


def _diagnose(outcomes: list[_Outcome], cases: list[_Case], refs: list[float]) -> str | None:
    """The misconception whose outcome (number, or an error) equals the learner's on every case."""
    for key, fn in VARIANTS.items():
        outs = [_run_variant(fn, c) for c in cases]
        if all(isinstance(o, float) and _close(o, r) for o, r in zip(outs, refs)):
            continue  # equal to the reference here: cannot be told apart
        if all(_same_outcome(lo, vo) for lo, vo in zip(outcomes, outs)):
            return key
    return None


def _same_outcome(learner: _Outcome, variant) -> bool:
    if learner.error is not None or isinstance(variant, Exception):
        return learner.error is not None and isinstance(variant, Exception)
    number = _as_number(learner.value)
    return number is not None and _close(number, variant)


def _as_number(value) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach()) if value.numel() == 1 else None
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


EVAL_SOLUTION = """import torch
import torch.nn.functional as F

from course_lib.data import get_batch  # lesson 10's batcher, as the exercise says


def eval_at_length(model, data, length: int, n_batches: int, batch_size: int,
                   generator: torch.Generator) -> float:
    was_training = model.training
    model.eval()  # dropout off
    device = next(model.parameters()).device
    losses = []
    with torch.no_grad():
        for _ in range(n_batches):
            x, y = get_batch(data, batch_size, length, generator, device)  # (B, T) each; y is x shifted by one
            logits = model(x)  # (B, T, V)
            losses.append(F.cross_entropy(logits.flatten(0, 1), y.flatten()).item())  # mean over B·T positions
    model.train(was_training)  # leave the model in the mode it was in
    return sum(losses) / len(losses)
"""


@register("check_eval_at_length", minutes=20,
          forbid=('course_lib.experiments.eval_at_length', 'course_lib.experiments.loss_by_position', 'course_lib.checks'), points=3, reference=EVAL_SOLUTION, misconceptions=MISCONCEPTIONS,
          hint="For each of n_batches: x, y = get_batch(data, batch_size, length, generator, device) (y is x "
               "shifted by one), logits = model(x), loss = F.cross_entropy over all B·T positions. Run it "
               "with model.eval() under torch.no_grad(), restore model.train(was_training) at the end, "
               "and return the mean of the batch losses as a float.")
def check_eval_at_length(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _cases()
    refs = [eval_at_length(_model(c.position), c.data, c.length, c.n_batches, c.batch_size,
                           torch.Generator().manual_seed(c.seed)) for c in cases]
    outcomes = []
    for case in cases:
        outcomes.append(_observe(learner, case))  # NotAttempted (the stub) stops here
    for case, o in zip(cases, outcomes):  # a crash first: nothing else can be judged on that case
        if o.error is not None:
            raise Mismatch(f"your code raised {o.error.summary}", f"case: {case.label}\n{o.error.report}",
                           _diagnose(outcomes, cases, refs))
    forwards = [f for o in outcomes for f in o.forwards]
    if any(training for training, _ in forwards):
        raise Mismatch("the model was in training mode during your forward passes", misconception="train_mode")
    if any(grad for _, grad in forwards) or any(isinstance(o.value, torch.Tensor) and o.value.requires_grad
                                                for o in outcomes):
        raise Mismatch("autograd was recording your forward passes", misconception="grad_tracked")
    for case, o in zip(cases, outcomes):
        if o.error is None and not o.training_after:
            raise Mismatch("the model was left in eval mode", f"case: {case.label}", "mode_not_restored")
    for case, o in zip(cases, outcomes):
        if _as_number(o.value) is None:
            got = "None (did you forget a `return`?)" if o.value is None else \
                f"{type(o.value).__name__}{tuple(o.value.shape) if isinstance(o.value, torch.Tensor) else ''}"
            raise Mismatch(f"expected one number (the mean loss per token), got {got}", f"case: {case.label}")
    for case, o, ref in zip(cases, outcomes, refs):
        if not _close(_as_number(o.value), ref):
            raise Mismatch(f"returned {_as_number(o.value):.6g}, expected {ref:.6g}", f"case: {case.label}",
                           _diagnose(outcomes, cases, refs))
    return len(cases)


