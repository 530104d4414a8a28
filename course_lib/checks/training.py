"""Checks for Lesson 10 (training): the learning-rate schedule and global-norm clipping (both reused
by part 4 of the capstone)."""
from __future__ import annotations

import math

import torch

from .core import Mismatch, call_learner, register

_LR_CONFIGS = [(10, 100, 1e-3, 1e-4), (0, 50, 6e-4, 6e-5), (3, 8, 1.0, 0.0)]

# The published ways to rise linearly to max_lr during warm-up; each is correct, and the check
# grades the learner's schedule with the one their warm-up follows.
WARMUP_CONVENTIONS = {
    "max_lr·(step+1)/warmup (course_lib: step warmup-1 already has max_lr)":
        lambda step, warmup: (step + 1) / warmup,
    "max_lr·step/warmup (Hugging Face get_cosine_schedule_with_warmup: step 0 has lr 0)":
        lambda step, warmup: step / warmup,
    "max_lr·(step+1)/(warmup+1) (nanoGPT)":
        lambda step, warmup: (step + 1) / (warmup + 1),
}


def _schedule(rise, step, warmup, total, max_lr, min_lr, *, floor=True, after_warmup=True, clamp=True):
    """Warm-up (`rise`), then cosine from max_lr to min_lr; the keyword flags make the misconceptions."""
    if step < warmup:
        return max_lr * rise(step, warmup)
    if clamp and step >= total:
        return min_lr if floor else 0.0
    progress = (step - warmup) / max(1, total - warmup) if after_warmup else step / total
    low = min_lr if floor else 0.0
    return low + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - low)


LR_MISCONCEPTIONS = {
    "decays_to_zero": "the cosine ends at 0 instead of min_lr: lr = min_lr + 0.5·(1 + cos(π·progress))·(max_lr − min_lr).",
    "progress_ignores_warmup": "the cosine progress is step / total; it must start after warm-up: "
                               "progress = (step − warmup) / (total − warmup).",
    "no_clamp_after_total": "after `total` steps the cosine rises again; return min_lr for step >= total.",
}
_LR_VARIANTS = {"decays_to_zero": dict(floor=False), "progress_ignores_warmup": dict(after_warmup=False),
                "no_clamp_after_total": dict(clamp=False)}


COSINE_SOLUTION = """import math


def cosine_lr(step: int, warmup: int, total: int, max_lr: float, min_lr: float) -> float:
    if step < warmup:
        return max_lr * (step + 1) / warmup  # the first step already learns; step warmup - 1 has max_lr
    if step >= total:
        return min_lr
    progress = (step - warmup) / (total - warmup)  # 0 -> 1 over the decay
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
"""


def _number(out) -> float | None:
    if isinstance(out, bool) or not (isinstance(out, (int, float)) or
                                     (isinstance(out, torch.Tensor) and out.numel() == 1)):
        return None
    return float(out)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


@register("check_cosine_lr", points=2, reference=COSINE_SOLUTION, misconceptions=LR_MISCONCEPTIONS, minutes=15,
          forbid=("course_lib.training", "course_lib.checks", "torch.optim.lr_scheduler"),
          hint="Three regions: step < warmup -> a linear rise to max_lr, e.g. max_lr·(step+1)/warmup; "
               "step >= total -> min_lr; otherwise min_lr + ½(1 + cos(π·(step−warmup)/(total−warmup)))·(max_lr − min_lr).",
          idea="progress = (step − warmup) / (total − warmup) runs from 0 at the end of warm-up to 1 at `total`; "
               "½(1 + cos(π·progress)) runs from 1 to 0, and scales the distance between max_lr and min_lr. "
               "Any of the published warm-ups is accepted: max_lr·(step+1)/warmup, max_lr·step/warmup "
               "(Hugging Face) or max_lr·(step+1)/(warmup+1) (nanoGPT).")
def check_cosine_lr(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    rows = [(s, *c) for c in _LR_CONFIGS for s in range(0, c[1] + 15)]
    outs = []
    for r in rows:
        out = _number(call_learner(learner, *r))
        if out is None:
            raise Mismatch("expected a number (a float, or a tensor with one element)", f"case: cosine_lr{r}")
        outs.append(out)
    # the warm-up convention the learner follows (every row before `warmup` must fit it)
    warm = [(r, o) for r, o in zip(rows, outs) if r[0] < r[1]]
    name, rise = next(((n, f) for n, f in WARMUP_CONVENTIONS.items()
                       if all(_close(o, r[3] * f(r[0], r[1])) for r, o in warm)), (None, None))
    if rise is None:
        r, o = next((r, o) for r, o in warm if not any(_close(o, r[3] * f(r[0], r[1]))
                                                      for f in WARMUP_CONVENTIONS.values()))
        raise Mismatch(f"during warm-up cosine_lr{r} returned {o:.6g}; the lr should rise linearly to max_lr",
                       "arguments: (step, warmup, total, max_lr, min_lr). Accepted warm-ups: "
                       + "; ".join(WARMUP_CONVENTIONS))
    for r, out in zip(rows, outs):
        expected = _schedule(rise, *r)
        if not _close(out, expected):
            key = next((k for k, flags in _LR_VARIANTS.items()
                        if all(_close(o, _schedule(rise, *rr, **flags)) for o, rr in zip(outs, rows))), None)
            raise Mismatch(f"cosine_lr{r} returned {out:.6g}, expected {expected:.6g}",
                           f"arguments: (step, warmup, total, max_lr, min_lr); your warm-up is {name}", key)
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


@register("check_clip_grad_norm", points=2, reference=CLIP_SOLUTION, misconceptions=CLIP_MISCONCEPTIONS, minutes=15,
          forbid=("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm", "torch.nn.utils.get_total_norm",
                  "torch.nn.utils.clip_grads_with_norm_", "course_lib.training", "course_lib.checks"),
          hint="total = sqrt(sum over parameters of (p.grad**2).sum()); if total > max_norm, multiply "
               "every p.grad in place by max_norm / total. Return total (before clipping).",
          idea="Treat all gradients as one long vector: its length is the global norm. Clipping shortens that "
               "vector to max_norm without turning it, so every gradient gets the same factor "
               "max_norm / (total + 1e-6), applied in place (g.mul_(...)) so the optimiser sees it.")
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
