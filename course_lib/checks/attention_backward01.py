"""Checks for exercise 01's backward pass written by hand: softmax's vector-Jacobian product,
attention's gradients (dq, dk, dv) recomputing the weights from q and k as FlashAttention's
backward does, and a `torch.autograd.Function` that keeps FlashAttention's row log-sum-exp L and
rebuilds the weights from it.

The reference is PyTorch's own: `torch._softmax_backward_data` (the kernel autograd runs for
softmax) and the gradients autograd computes through `F.scaled_dot_product_attention`
(tests/test_checks_attention_backward01.py proves the first equal to autograd through F.softmax).
The Function is also run through `torch.autograd.gradcheck` in float64. The learner may not use
autograd (torch.autograd.grad, Tensor.backward, torch.func, torch.autograd.functional) nor the
library's softmax or attention: their own `softmax` from part 1 is there to use.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .cases import Case, function_class, grade_function, gradcheck, through_engine
from .core import Mismatch, call_learner, compare, diagnose, register, snapshot

_AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
             "torch.autograd.functional", "torch.func")
_SOFTMAX = ("torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax", "torch.special.softmax",
            "torch.nn.Softmax", "torch._softmax_backward_data")
# the learner's own softmax (part 1) stands in for course_lib.attention.softmax; the rest of the
# attention module and the tiled attention with its own backward would do the exercise
_ATTENTION = ("torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention",
              "torch.nn.functional.multi_head_attention_forward",
              "course_lib.attention.scaled_dot_product_attention", "course_lib.attention.attend",
              "course_lib.attention.attention_weights", "course_lib.attention.MultiHeadAttention",
              "course_lib.efficient_attention")


# ================================================================== softmax backward
def _softmax_backward_reference(y, dy):
    return torch._softmax_backward_data(dy, y, -1, y.dtype)  # PyTorch's softmax backward kernel


SOFTMAX_BACKWARD_MISCONCEPTIONS = {
    "diagonal_only": "dx = y·(1 − y)·dy keeps only the diagonal of softmax's Jacobian. Every output y_i "
                     "depends on every input x_j (they share the denominator): ∂y_i/∂x_j = y_i·(δ_ij − y_j), "
                     "so dx = y ⊙ (dy − Σ_j dy_j·y_j).",
    "unweighted_sum": "the subtracted term is Σ dy; it is the y-weighted sum Σ_j dy_j·y_j "
                      "(from the −y_i·y_j part of the Jacobian): dx = y ⊙ (dy − Σ(dy ⊙ y)).",
    "sum_over_everything": "the sum Σ(dy ⊙ y) runs over the whole tensor; each row (the last axis) is its own "
                           "softmax: sum over dim=-1 with keepdim=True.",
    "mutates_input": "y or dy was changed in place; compute new tensors instead.",
}

SOFTMAX_BACKWARD_SOLUTION = """import torch


def softmax_backward(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    dot = (dy * y).sum(dim=-1, keepdim=True)  # (..., 1): sum_j dy_j * y_j, one per row
    return y * (dy - dot)  # (..., T): dx_i = y_i * (dy_i - sum_j dy_j * y_j)
"""


def _softmax_cases() -> list[Case]:
    g = torch.Generator().manual_seed(11)
    masked = torch.randn(3, 6, generator=g)
    masked[0, 2:] = float("-inf")  # a row that sees only two keys, as after a causal mask
    masked[2, 0] = float("-inf")
    specs = [("y of shape (4, 7)", torch.randn(4, 7, generator=g)),
             ("y of shape (2, 3, 5)", torch.randn(2, 3, 5, generator=g) * 3),
             ("y of shape (3, 6) float64", torch.randn(3, 6, generator=g, dtype=torch.float64)),
             ("y with zeros (from -inf scores), shape (3, 6)", masked)]
    return [Case(label + ", dy random", (torch.softmax(x, -1), torch.randn(x.shape, generator=g, dtype=x.dtype)))
            for label, x in specs]


@register("check_softmax_backward", minutes=10, points=2, reference=SOFTMAX_BACKWARD_SOLUTION,
          forbid=_AUTOGRAD + _SOFTMAX + ("course_lib.checks",), misconceptions=SOFTMAX_BACKWARD_MISCONCEPTIONS,
          hint="Write y_i = exp(x_i) / Σ_k exp(x_k) and differentiate y_i by x_j for i = j and for i ≠ j: "
               "the denominator depends on every x_j. Then dx_j = Σ_i dy_i·∂y_i/∂x_j.",
          idea="∂y_i/∂x_j = y_i·(δ_ij − y_j), so dx = y ⊙ (dy − Σ_j dy_j·y_j), the sum along the last axis "
               "with keepdim=True. No (T, T) Jacobian is needed.")
def check_softmax_backward(learner):
    variants = {
        "diagonal_only": lambda y, dy: y * (1 - y) * dy,
        "unweighted_sum": lambda y, dy: y * (dy - dy.sum(-1, keepdim=True)),
        "sum_over_everything": lambda y, dy: y * (dy - (dy * y).sum()),
    }
    return grade_function(learner, _softmax_cases(), _softmax_backward_reference, variants, ("y", "dy"))


# ================================================================== attention backward
def _attention_reference(q, k, v, do, scale=None, causal=False):
    """[o, dq, dk, dv]: autograd through PyTorch's F.scaled_dot_product_attention."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    o = F.scaled_dot_product_attention(*leaves, is_causal=causal, scale=scale)
    return [o.detach(), *torch.autograd.grad(o, leaves, do)]


def _attention_variant(q, k, v, do, scale=None, causal=False, *, kind):
    """[o, dq, dk, dv] with one mistake."""
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    s = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k)
    if causal:
        s_fwd = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
        s = s if kind == "causal_not_reapplied" else s_fwd
        o = torch.softmax(s_fwd, -1) @ v
    p = torch.softmax(s, -1)  # (..., T_q, T_k)
    o = o if causal else p @ v
    dv = p @ do if kind == "dv_not_transposed" else p.transpose(-2, -1) @ do  # (..., T_k, D_v)
    dp = do @ v.transpose(-2, -1)  # (..., T_q, T_k)
    ds = p * (1 - p) * dp if kind == "softmax_diagonal" else p * (dp - (dp * p).sum(-1, keepdim=True))
    c = 1.0 if kind == "scale_missing" else scale
    dq = ds @ k * c  # (..., T_q, D)
    dk = (ds @ q if kind == "dk_not_transposed" else ds.transpose(-2, -1) @ q) * c  # (..., T_k, D)
    return [o, dq, dk, dv]


ATTENTION_BACKWARD_MISCONCEPTIONS = {
    "softmax_diagonal": "dS uses only the diagonal of softmax's Jacobian, P·(1 − P)·dP. Each weight of a row "
                        "depends on every score of that row: dS = P ⊙ (dP − Σ_j dP_j·P_j) (your softmax_backward).",
    "scale_missing": "dq and dk miss the scale. S = scale·QKᵀ, so dq = scale·dS·K and dk = scale·dSᵀ·Q.",
    "dk_not_transposed": "dk = dS·Q uses dS the wrong way round. S_ij = q_i·k_j, so key j collects the rows of "
                         "Q weighted by column j of dS: dk = scale·dSᵀ·Q (shape (T_k, D)).",
    "causal_not_reapplied": "with causal=True the backward recomputes P without the mask, so future keys get "
                            "weight (and gradient). Mask the recomputed scores exactly as the forward did.",
    "dv_not_transposed": "dv = P·dO; O = P·V, so dv = Pᵀ·dO: value j collects dO of every query that attended "
                         "to it, weighted by P_ij.",
    "mutates_input": "q, k, v or do was changed in place; compute new tensors instead.",
}

ATTENTION_BACKWARD_CODE = """def attention_backward(q, k, v, do, scale=None, causal=False):
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k): recomputed, as FlashAttention does
    if causal:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()  # (T_q, T_k)
        scores = scores.masked_fill(~allowed, float("-inf"))  # the forward's mask, again
    p = softmax(scores, dim=-1)  # (..., T_q, T_k)
    dv = p.transpose(-2, -1) @ do  # (..., T_k, D_v): O = P V
    dp = do @ v.transpose(-2, -1)  # (..., T_q, T_k)
    ds = softmax_backward(p, dp)  # (..., T_q, T_k): through the softmax of each row
    dq = ds @ k * scale  # (..., T_q, D): S = scale * Q K^T
    dk = ds.transpose(-2, -1) @ q * scale  # (..., T_k, D)
    return dq, dk, dv
"""

ATTENTION_BACKWARD_SOLUTION = ("import math\n\nimport torch\n\n"
                               "from course_lib.attention import softmax  # part 1 (your softmax gives the same)\n\n\n"
                               + SOFTMAX_BACKWARD_SOLUTION.removeprefix("import torch\n\n\n") + "\n\n"
                               + ATTENTION_BACKWARD_CODE)


def _attention_cases(seed: int, specs: list[tuple]) -> list[tuple]:
    """specs: (batch shape, T_q, T_k, D, D_v, scale, causal, dtype) -> (label, (q, k, v, do, scale, causal))."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, T_q, T_k, D, D_v, scale, causal, dtype in specs:
        q, k = (torch.randn(*batch, T, D, generator=g, dtype=torch.float64).to(dtype) for T in (T_q, T_k))
        v = torch.randn(*batch, T_k, D_v, generator=g, dtype=torch.float64).to(dtype)
        do = torch.randn(*batch, T_q, D_v, generator=g, dtype=torch.float64).to(dtype)
        label = (f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} {dtype}, scale={scale}, "
                 f"causal={causal}, do random")
        cases.append((label, (q, k, v, do, scale, causal)))
    return cases


_ATTENTION_SPECS = [((2, 3), 5, 5, 8, 8, None, False, torch.float32),
                    ((2,), 6, 6, 4, 3, 0.7, False, torch.float32),  # D_v differs from D; an explicit scale
                    ((2, 2), 7, 7, 8, 8, None, True, torch.float32),
                    ((3,), 5, 5, 4, 6, 0.3, True, torch.float64)]


def _unpack(out, label: str) -> tuple:
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        got = f"{len(out)} values" if isinstance(out, (tuple, list)) else type(out).__name__
        raise Mismatch(f"return the three gradients (dq, dk, dv); got {got}", f"case: {label}")
    return tuple(out)


@register("check_attention_backward", minutes=35, points=4, reference=ATTENTION_BACKWARD_SOLUTION,
          forbid=_AUTOGRAD + _SOFTMAX + _ATTENTION + ("course_lib.checks",),
          misconceptions=ATTENTION_BACKWARD_MISCONCEPTIONS,
          hint="Go backwards through the forward one step at a time: O = P·V, P = softmax(S) row by row, "
               "S = scale·Q·Kᵀ (masked). For a product C = A·B, dA = dC·Bᵀ and dB = Aᵀ·dC. Recompute P first.",
          idea="P = softmax(scale·QKᵀ, masked as in the forward); dv = Pᵀ·dO; dP = dO·Vᵀ; "
               "dS = softmax_backward(P, dP) = P ⊙ (dP − rowsum(dP ⊙ P)); dq = scale·dS·K; dk = scale·dSᵀ·Q.")
def check_attention_backward(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _attention_cases(12, _ATTENTION_SPECS)
    names = ("q", "k", "v", "do")
    outs, refs = [], []
    for label, args in cases:
        refs.append(_attention_reference(*args)[1:])
        before = snapshot(args)
        out = call_learner(learner, *args)
        for a, b, n in zip(args, before, names):
            if b is not None and not torch.equal(a, b):
                raise Mismatch(f"your code modified its input `{n}` in place; compute new tensors instead "
                               "(avoid `*=`, `.masked_fill_()`, `[...] =` on inputs)", f"case: {label}",
                               "mutates_input")
        outs.append(_unpack(out, label))
    for (label, args), out, ref in zip(cases, outs, refs):
        try:
            for o, r, n in zip(out, ref, ("dq", "dk", "dv")):
                compare(o, r, n)
        except Mismatch as mm:
            runs = {key: (lambda key=key: [t for _, a in cases for t in _attention_variant(*a, kind=key)[1:]])
                    for key in ATTENTION_BACKWARD_MISCONCEPTIONS if key != "mutates_input"}
            key = diagnose([t for o in outs for t in o], runs, [t for r in refs for t in r])
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    return len(cases)


# ================================================================== as a torch.autograd.Function
FUNCTION_MISCONCEPTIONS = {
    "options_ignored": "the forward ignores `scale` or `causal` (Function.apply passes them by position: "
                       "apply(q, k, v, scale, causal)); use them in forward and keep them on ctx for backward.",
    "lse_before_mask": "L is taken over the unmasked scores, so it also counts the future keys and the causal "
                       "rows of exp(S − L) sum to less than 1. Mask S first, then L = logsumexp(S) of the masked "
                       "row.",
    "backward_not_masked": "backward rebuilds P = exp(S − L) from unmasked scores, so future keys get weight and "
                           "gradient. Apply the causal mask to the recomputed S exactly as forward did.",
    "mutates_input": "q, k, v or the incoming gradient was changed in place; compute new tensors instead.",
}


def _function_variant(q, k, v, do, scale=None, causal=False, *, kind):
    """[o, dq, dk, dv] of the Function with one mistake, computed as the learner's code computes it."""
    if kind == "options_ignored":
        return _attention_reference(q, k, v, do)
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    raw = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k)
    masked = raw.masked_fill(~torch.ones(raw.shape[-2:], dtype=torch.bool).tril(), float("-inf")) if causal else raw
    lse = torch.logsumexp(raw if kind == "lse_before_mask" else masked, -1, keepdim=True)  # (..., T_q, 1)
    o = torch.exp(masked - lse) @ v  # (..., T_q, D_v)
    p = torch.exp((raw if kind == "backward_not_masked" else masked) - lse)  # (..., T_q, T_k)
    ds = p * (do @ v.transpose(-2, -1) - (do * o).sum(-1, keepdim=True))  # (..., T_q, T_k)
    return [o, ds @ k * scale, ds.transpose(-2, -1) @ q * scale, p.transpose(-2, -1) @ do]  # O, dq, dk, dv


FUNCTION_SOLUTION = """import math

import torch


class AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False):
        scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
        scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k)
        if causal:
            allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()  # (T_q, T_k)
            scores = scores.masked_fill(~allowed, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)  # (..., T_q, 1): L, one number per query
        o = torch.exp(scores - lse) @ v  # (..., T_q, D_v): exp(S - L) is the softmax
        ctx.save_for_backward(q, k, v, o, lse)  # not P: backward rebuilds it from L
        ctx.scale, ctx.causal = scale, causal
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        scores = q @ k.transpose(-2, -1) * ctx.scale  # (..., T_q, T_k)
        if ctx.causal:
            allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()  # (T_q, T_k)
            scores = scores.masked_fill(~allowed, float("-inf"))
        p = torch.exp(scores - lse)  # (..., T_q, T_k): P rebuilt from L, no max or sum needed
        dv = p.transpose(-2, -1) @ do  # (..., T_k, D_v)
        dp = do @ v.transpose(-2, -1)  # (..., T_q, T_k)
        delta = (do * o).sum(dim=-1, keepdim=True)  # (..., T_q, 1): equals rowsum(dP * P) because O = P V
        ds = p * (dp - delta)  # (..., T_q, T_k)
        dq = ds @ k * ctx.scale  # (..., T_q, D)
        dk = ds.transpose(-2, -1) @ q * ctx.scale  # (..., T_k, D)
        return dq, dk, dv, None, None  # scale and causal are options: no gradient
"""


_FUNCTION_SPECS = [((2, 2), 5, 5, 8, 8, None, False, torch.float32),
                   ((2,), 6, 6, 4, 4, 0.5, True, torch.float32),
                   ((2,), 3, 5, 4, 6, 0.8, False, torch.float32),  # cross-attention: T_q != T_k
                   ((2,), 4, 4, 3, 2, 0.6, True, torch.float64)]  # float64: gradcheck runs on it too


@register("check_attention_function", minutes=30, points=3, reference=FUNCTION_SOLUTION,
          forbid=_AUTOGRAD + _SOFTMAX + _ATTENTION + ("course_lib.checks",), misconceptions=FUNCTION_MISCONCEPTIONS,
          hint="forward: mask S, then L = logsumexp(S) per row and O = exp(S − L)·V; keep q, k, v, O, L with "
               "ctx.save_for_backward and the options as ctx attributes. backward: rebuild P from L, then go "
               "back through O = P·V, the softmax and S = scale·QKᵀ. Return one entry per input of forward.",
          idea="backward: P = exp(S − L) (S masked again); dv = Pᵀ·dO; dP = dO·Vᵀ; Δ = rowsum(dO ⊙ O), which "
               "equals rowsum(dP ⊙ P); dS = P ⊙ (dP − Δ); dq = scale·dS·K; dk = scale·dSᵀ·Q; "
               "return dq, dk, dv, None, None.")
def check_attention_function(learner):
    function_class(learner, "AttentionFunction")
    cases = _attention_cases(13, _FUNCTION_SPECS)
    names = ("q", "k", "v", "do")
    outs, refs = [], []
    for label, (q, k, v, do, scale, causal) in cases:
        refs.append(_attention_reference(q, k, v, do, scale, causal))
        leaves = tuple(t.clone().requires_grad_(True) for t in (q, k, v))
        before = snapshot(leaves + (do,))
        o, grads = call_learner(through_engine, learner, leaves + (scale, causal), do)
        for a, b, n in zip(leaves + (do,), before, names):
            if not torch.equal(a.detach(), b):
                raise Mismatch(f"your code modified `{n}` in place; compute new tensors instead",
                               f"case: {label}", "mutates_input")
        if not isinstance(o, torch.Tensor):
            raise Mismatch(f"forward should return a tensor, got {type(o).__name__}", f"case: {label}")
        if not isinstance(grads, (tuple, list)) or len(grads) != 5:
            n = len(grads) if isinstance(grads, (tuple, list)) else "one value"
            raise Mismatch(f"backward returned {n}; it must return one entry per input of forward "
                           "(q, k, v, scale, causal): dq, dk, dv, None, None", f"case: {label}")
        if grads[3] is not None or grads[4] is not None:
            raise Mismatch("backward returns a gradient for `scale` or `causal`, which are options: return None "
                           "in their places", f"case: {label}")
        outs.append([o, *grads[:3]])
    for (label, _), out, ref in zip(cases, outs, refs):
        try:
            for o, r, n in zip(out, ref, ("forward's output", "dq", "dk", "dv")):
                compare(o, r, n)
        except Mismatch as mm:
            runs = {key: (lambda key=key: [t for _, a in cases for t in _function_variant(*a, kind=key)])
                    for key in FUNCTION_MISCONCEPTIONS if key != "mutates_input"}
            key = diagnose([t for o in outs for t in o], runs, [t for r in refs for t in r])
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    for label, (q, k, v, _, scale, causal) in cases[-1:]:
        leaves = tuple(t.clone().requires_grad_(True) for t in (q, k, v))
        if not call_learner(gradcheck, learner, leaves + (scale, causal)):
            raise Mismatch("torch.autograd.gradcheck fails: your backward disagrees with finite differences of "
                           "your forward through AttentionFunction.apply (run torch.autograd.gradcheck yourself "
                           "to see where)", f"case: {label}")
    return len(cases) + 1
