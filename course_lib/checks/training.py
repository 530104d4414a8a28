"""Checks for Lesson 10 (training): the learning-rate schedule and global-norm clipping."""
from __future__ import annotations

import math

import torch

from course_lib.training import cosine_lr
from .core import Mismatch, call_learner, register

_LR_CONFIGS = [(10, 100, 1e-3, 1e-4), (0, 50, 6e-4, 6e-5), (3, 8, 1.0, 0.0)]


def _lr_off_by_one(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * step / warmup
    return cosine_lr(step, warmup, total, max_lr, min_lr)


def _lr_to_zero(step, warmup, total, max_lr, min_lr):
    return cosine_lr(step, warmup, total, max_lr, 0.0)


def _lr_progress_from_zero(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    return min_lr + 0.5 * (1 + math.cos(math.pi * step / total)) * (max_lr - min_lr)


def _lr_no_clamp(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


LR_MISCONCEPTIONS = {
    "warmup_off_by_one": "warm-up starts at 0 (max_lr * step / warmup): the first step would not "
                         "learn at all. Use (step + 1) / warmup, so step warmup-1 reaches max_lr.",
    "decays_to_zero": "the cosine ends at 0 instead of min_lr: lr = min_lr + 0.5·(1 + cos(π·progress))·(max_lr − min_lr).",
    "progress_ignores_warmup": "the cosine progress is step / total; it must start after warm-up: "
                               "progress = (step − warmup) / (total − warmup).",
    "no_clamp_after_total": "after `total` steps the cosine rises again; return min_lr for step >= total.",
}


COSINE_SOLUTION = """import math


def cosine_lr(step: int, warmup: int, total: int, max_lr: float, min_lr: float) -> float:
    if step < warmup:
        return max_lr * (step + 1) / warmup  # the first step already learns; step warmup - 1 has max_lr
    if step >= total:
        return min_lr
    progress = (step - warmup) / (total - warmup)  # 0 -> 1 over the decay
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
"""


@register("check_cosine_lr", points=2, reference=COSINE_SOLUTION, misconceptions=LR_MISCONCEPTIONS,
          hint="Three regions: step < warmup -> max_lr·(step+1)/warmup; step >= total -> min_lr; "
               "otherwise min_lr + ½(1 + cos(π·(step−warmup)/(total−warmup)))·(max_lr − min_lr).")
def check_cosine_lr(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    rows = [(s, *c) for c in _LR_CONFIGS for s in range(0, c[1] + 15)]
    outs = [call_learner(learner, *r) for r in rows]
    variants = {"warmup_off_by_one": _lr_off_by_one, "decays_to_zero": _lr_to_zero,
                "progress_ignores_warmup": _lr_progress_from_zero, "no_clamp_after_total": _lr_no_clamp}

    def close(a, b):
        try:
            return math.isclose(float(a), b, rel_tol=1e-6, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False

    for r, out in zip(rows, outs):
        expected = cosine_lr(*r)
        if not isinstance(out, (int, float)) and not (isinstance(out, torch.Tensor) and out.numel() == 1):
            raise Mismatch(f"expected a number, got {type(out).__name__}", f"case: cosine_lr{r}")
        if not close(out, expected):
            key = next((k for k, f in variants.items() if all(close(o, f(*rr)) for o, rr in zip(outs, rows))), None)
            raise Mismatch(f"cosine_lr{r} returned {float(out):.6g}, expected {expected:.6g}",
                           "arguments: (step, warmup, total, max_lr, min_lr)", key)
    return len(rows)


# ------------------------------------------------------------------ clipping
def _make_params(seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in ((4, 3), (3,), (2, 2, 2))]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * scale
    return ps


CLIP_MISCONCEPTIONS = {
    "per_parameter": "each parameter's gradient was clipped to max_norm on its own. Clipping uses the "
                     "*global* norm: sqrt of the sum of all squared gradient entries, one scale for all.",
    "not_in_place": "the gradients were not changed. Scale each p.grad in place (p.grad.mul_(scale)).",
    "always_rescales": "gradients smaller than max_norm were scaled *up*; only scale when the total "
                       "norm exceeds max_norm (scale = min(1, max_norm / total)).",
    "returns_clipped_norm": "return the total norm measured *before* clipping (it is what you log).",
}


CLIP_SOLUTION = """import torch


def clip_grad_norm(parameters, max_norm: float):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))  # the L2 norm of all entries together
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + 1e-6))  # in place, one scale for every gradient
    return total  # measured before clipping
"""


@register("check_clip_grad_norm", points=2, reference=CLIP_SOLUTION, misconceptions=CLIP_MISCONCEPTIONS,
          hint="total = sqrt(sum over parameters of (p.grad**2).sum()); if total > max_norm, multiply "
               "every p.grad in place by max_norm / total. Return total (before clipping).")
def check_clip_grad_norm(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = [("large gradients, max_norm=1.0", 0, 3.0, 1.0), ("small gradients, max_norm=100", 1, 0.1, 100.0),
             ("max_norm=0.5", 2, 1.0, 0.5)]
    for label, seed, scale, max_norm in cases:
        mine, ref = _make_params(seed, scale), _make_params(seed, scale)
        before = [p.grad.clone() for p in mine]
        total = call_learner(learner, mine, max_norm)
        expected = torch.nn.utils.clip_grad_norm_(ref, max_norm)
        got = [p.grad for p in mine]
        unchanged = all(torch.equal(a, b) for a, b in zip(got, before))
        grads_ok = all(torch.allclose(a, b.grad, rtol=1e-5, atol=1e-7) for a, b in zip(got, ref))
        if not grads_ok:
            per_param = [b * min(1.0, max_norm / (float(b.norm()) + 1e-6)) for b in before]
            up = [b * (max_norm / (float(torch.stack([x.norm() for x in before]).norm()) + 1e-6)) for b in before]
            key = ("not_in_place" if unchanged else
                   "per_parameter" if all(torch.allclose(a, b, rtol=1e-4) for a, b in zip(got, per_param)) else
                   "always_rescales" if all(torch.allclose(a, b, rtol=1e-4) for a, b in zip(got, up)) else None)
            raise Mismatch("the gradients after clipping differ from torch.nn.utils.clip_grad_norm_'s",
                           f"case: {label}", key)
        try:
            val = float(total)
        except (TypeError, ValueError):
            raise Mismatch(f"return the total norm (a number or 0-d tensor), got {type(total).__name__}",
                           f"case: {label}") from None
        if not math.isclose(val, float(expected), rel_tol=1e-5):
            clipped = float(torch.stack([p.grad.norm() for p in ref]).norm())
            key = "returns_clipped_norm" if math.isclose(val, clipped, rel_tol=1e-4) else None
            raise Mismatch(f"returned {val:.6g}, expected the total norm {float(expected):.6g}",
                           f"case: {label}", key)
    return len(cases)
