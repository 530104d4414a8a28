"""Checks for Lesson 15 (efficiency): per-channel absmax int8 quantisation of a weight matrix.

The learner returns a pair (q, scale). q must hold exactly the reference integers (a value
whose w / scale sits on a rounding tie may go either way); scale must be the per-row absmax / 127,
with any positive scale accepted for an all-zero row. When q is wrong, each misconception is
re-created as the *values* it would produce before clamping and casting, and it is named when
the learner's q agrees with them wherever they fit in int8 (out-of-range entries may be clamped
or wrapped around by the learner's cast, so they are not compared)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .core import Mismatch, call_learner, register, tolerances


def quantize_per_channel_reference(w):
    """w (out, in) float -> (q (out, in) int8, scale (out,)): one absmax scale per output row."""
    absmax = w.abs().amax(dim=1)  # (out,): the largest magnitude in each row
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))  # all-zero row: scale 1
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    return q, scale


QUANT_MISCONCEPTIONS = {
    "per_tensor": "one scale for the whole matrix (the max over every weight). Per-channel means one scale "
                  "per output row — absmax over dim=1 — so that one large row does not coarsen the grid of "
                  "all the others.",
    "per_input_column": "the scale is taken over the wrong axis: one per input column (amax over dim=0). A Linear "
                        "weight is (out_features, in_features); per-channel = one scale per output row, amax over dim=1.",
    "divide_by_128": "scale = max|w| / 128 maps the largest weight to 128, which int8's symmetric range -127..127 "
                     "does not hold; divide by 127 so that max|w| lands exactly on ±127.",
    "divide_by_255": "scale = max|w| / 255 spreads one row over 255 steps on *each* side of zero; int8 has 127 "
                     "per side (-127..127), so divide by 127.",
    "no_rounding": "w / scale is truncated (.to(torch.int8), .int(), .trunc() or .floor()) instead of rounded, "
                   "which can be off by almost a whole step; use torch.round first, then clamp, then cast.",
    "max_not_absmax": "the scale uses the largest value, max(w), instead of the largest magnitude, max(|w|): a row "
                      "whose biggest weight is negative overflows, and an all-negative row gets a negative scale. "
                      "Use w.abs().amax(dim=1).",
    "zero_row": "an all-zero row has max|w| = 0, so its scale is 0 and w / scale = 0 / 0 = NaN. Give such a row "
                "a positive scale (1 is fine: its q is 0 anyway), e.g. torch.where(absmax > 0, absmax / 127, 1.0).",
    "float_dtype": "q holds the right integers, but as a float tensor. Store it as torch.int8 — 1 byte per weight "
                   "instead of 4 is the whole point — with .to(torch.int8) after rounding and clamping.",
    "inverse_scale": "the scale returned is 127 / max|w| (what w is multiplied by); the scale is what q is "
                     "multiplied by to give w back: max|w| / 127.",
    "mutates_input": "the weight tensor passed in was changed in place.",
}


@dataclass
class _Case:
    label: str
    w: torch.Tensor


def _cases(g: torch.Generator) -> list[_Case]:
    def rows_at(out, inp, spread, dtype=torch.float32):
        w = torch.randn(out, inp, generator=g, dtype=dtype)
        return w * torch.exp(spread * torch.randn(out, 1, generator=g, dtype=dtype))  # rows of different sizes

    outlier = rows_at(8, 5, 0.3)
    outlier[2] *= 30.0
    mixed = rows_at(5, 7, 0.5)
    mixed[1] = 0.0
    mixed[3] = -mixed[3].abs()
    negative = rows_at(6, 6, 0.5)
    negative[4, 2] = -8.0 * negative[4].abs().max()
    return [_Case("a 4 x 6 weight", rows_at(4, 6, 0.0)),
            _Case("an 8 x 5 weight whose row 2 is an outlier (30x larger)", outlier),
            _Case("a 5 x 7 weight with an all-zero row 1 and an all-negative row 3", mixed),
            _Case("a 6 x 6 weight with one large negative weight in row 4", negative),
            _Case("a 16 x 32 weight with rows of very different sizes", rows_at(16, 32, 1.0)),
            _Case("a 3 x 9 float64 weight", rows_at(3, 9, 0.5, torch.float64))]


# ------------------------------------------------------------------ comparing one answer
def _near_tie(v: torch.Tensor) -> torch.Tensor:
    """Entries whose w / scale sits within 1e-3 of a .5 tie: either rounding is right there."""
    return ((v.abs() - v.abs().floor()) - 0.5).abs() < 1e-3


def _check_answer(out, w: torch.Tensor) -> None:
    """Raise Mismatch with the first thing that is wrong with out = (q, scale)."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        got = "None (did you forget a `return`?)" if out is None else type(out).__name__
        raise Mismatch(f"return a pair (q, scale); got {got}")
    q, scale = out
    ref_q, ref_scale = quantize_per_channel_reference(w)
    if not isinstance(q, torch.Tensor) or not isinstance(scale, torch.Tensor):
        raise Mismatch(f"q and scale should be tensors, got {type(q).__name__} and {type(scale).__name__}")
    if q.shape != w.shape:
        raise Mismatch(f"q has shape {tuple(q.shape)}, expected {tuple(w.shape)} (one integer per weight)")
    if q.dtype != torch.int8:
        raise Mismatch(f"q has dtype {q.dtype}, expected torch.int8")
    v = w.double() / ref_scale.double()[:, None]  # the exact quotient the reference rounds
    wrong = (q.to(torch.int64) != ref_q.to(torch.int64)) & ~(_near_tie(v) & ((q.double() - v).abs() <= 0.5 + 1e-3))
    if wrong.any():
        raise Mismatch(f"q differs from the reference in {int(wrong.sum())} of {q.numel()} entries")
    if scale.shape != ref_scale.shape:
        raise Mismatch(f"scale has shape {tuple(scale.shape)}, expected {tuple(ref_scale.shape)}: one scale per "
                       "output row")
    if scale.dtype != w.dtype:
        raise Mismatch(f"scale has dtype {scale.dtype}, expected {w.dtype} (the weight's own dtype)")
    zero = w.abs().amax(dim=1) == 0  # (out,)
    if not (torch.isfinite(scale[zero]) & (scale[zero] > 0)).all():
        raise Mismatch(f"the scale of an all-zero row is {scale[zero].tolist()}; expected a positive number")
    rtol, atol = tolerances(w.dtype)
    if not torch.isclose(scale[~zero].double(), ref_scale[~zero].double(), rtol=rtol, atol=atol).all():
        raise Mismatch("scale values differ from max|w| / 127 per row")


# ------------------------------------------------------------------ naming the mistake
_ROUNDING = {"round": torch.round, "trunc": torch.trunc, "floor": torch.floor}


def _variants(w: torch.Tensor) -> dict[str, list[tuple[torch.Tensor, str, torch.Tensor]]]:
    """Each misconception as (w / its scale in float64, how it rounds, the rows it defines);
    all-zero rows are left to the zero_row rule."""
    w = w.double()
    absmax = w.abs().amax(dim=1, keepdim=True)  # (out, 1)
    rows = (absmax > 0).expand_as(w)
    u = w / absmax * 127  # the correct quotient
    signed_max = w.amax(dim=1, keepdim=True)  # (out, 1)
    return {
        "per_tensor": [(w / w.abs().max() * 127, "round", rows)],
        "per_input_column": [(w / w.abs().amax(dim=0, keepdim=True) * 127, "round", rows)],
        "divide_by_128": [(w / absmax * 128, "round", rows)],
        "divide_by_255": [(w / absmax * 255, "round", rows)],
        "no_rounding": [(u, "trunc", rows), (u, "floor", rows)],
        "max_not_absmax": [(w / signed_max * 127, "round", (signed_max > 0).expand_as(w))],
    }


def _matches(q: torch.Tensor, u: torch.Tensor, rounding: str, defined: torch.Tensor) -> bool:
    """q equals rounding(u) wherever that is defined and fits in int8; where u sits within 1e-3
    of a rounding boundary (a .5 tie, or an integer for trunc/floor) it may be off by one."""
    values = _ROUNDING[rounding](u)
    care = defined & torch.isfinite(values) & (values.abs() <= 127)
    if not care.any():
        return False
    frac = u.abs() - u.abs().floor()
    boundary = (frac - 0.5).abs() < 1e-3 if rounding == "round" else (frac < 1e-3) | (frac > 1 - 1e-3)
    diff = (q.double() - values).abs().nan_to_num(float("inf"))
    return bool(((diff == 0) | (boundary & (diff <= 1)))[care].all())


def _diagnose(outs: list, cases: list[_Case]) -> str | None:
    pairs = [o if isinstance(o, (tuple, list)) and len(o) == 2 else (None, None) for o in outs]
    qs = [q for q, _ in pairs]
    if not all(isinstance(q, torch.Tensor) and q.shape == c.w.shape for q, c in zip(qs, cases)):
        return None
    refs = [quantize_per_channel_reference(c.w) for c in cases]
    variants = [_variants(c.w) for c in cases]
    for key in variants[0]:
        for j in range(len(variants[0][key])):
            per_case = [v[key][j] for v in variants]
            differs = any(not _matches(r[0], *v) for r, v in zip(refs, per_case))
            if differs and all(_matches(q, *v) for q, v in zip(qs, per_case)):
                return key
    nonzero = [(c.w.abs().amax(dim=1) > 0) for c in cases]  # (out,) per case
    values_right = all(_matches(q, c.w.double() / r[1].double()[:, None], "round", nz[:, None].expand_as(c.w))
                       for q, r, c, nz in zip(qs, refs, cases, nonzero))
    if values_right and all(isinstance(s, torch.Tensor) and s.shape == r[1].shape and
                            torch.allclose((s.double() * r[1].double())[nz], torch.ones(int(nz.sum()),
                                           dtype=torch.float64), rtol=1e-4)
                            for (_, s), r, nz in zip(pairs, refs, nonzero)):
        return "inverse_scale"
    for (q, scale), nz in zip(pairs, nonzero):  # an all-zero row with a zero/NaN/inf scale, or NaN in q
        zero = ~nz
        if zero.any() and isinstance(scale, torch.Tensor) and scale.shape == zero.shape:
            if not (torch.isfinite(scale[zero]) & (scale[zero] > 0)).all() or not (q[zero].double() == 0).all():
                return "zero_row"
    if values_right and any(q.is_floating_point() for q in qs):
        return "float_dtype"
    return None


QUANT_SOLUTION = """import torch


def quantize_per_channel(w):
    absmax = w.abs().amax(dim=1)  # (out,): the largest magnitude in each row
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))  # (out,); an all-zero row gets 1
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    return q, scale
"""


@register("check_quantize_per_channel", minutes=20,
          forbid=('torch.quantize_per_channel', 'torch.ao', 'course_lib.quantization.quantize_per_channel', 'course_lib.checks'), points=3, reference=QUANT_SOLUTION,
          misconceptions=QUANT_MISCONCEPTIONS,
          hint="absmax = w.abs().amax(dim=1) (one per output row); scale = absmax / 127, but 1.0 where absmax "
               "is 0; q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8). Return (q, scale).")
def check_quantize_per_channel(learner: Callable):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _cases(torch.Generator().manual_seed(15))
    outs = []
    for case in cases:
        before = case.w.clone()
        outs.append(call_learner(learner, case.w))
        if not torch.equal(case.w, before):
            raise Mismatch("your code changed the weight `w` in place; compute new tensors instead (avoid "
                           "`w /= ...`, `w.div_()`, `w[...] = ...`)", f"case: {case.label}", "mutates_input")
    for case, out in zip(cases, outs):
        try:
            _check_answer(out, case.w)
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}", _diagnose(outs, cases)) from None
    return len(cases)
