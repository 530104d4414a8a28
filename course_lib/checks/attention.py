"""Checks for Lesson 01 (attention): softmax, scaled dot-product attention, causal mask,
multi-head attention. Each misconception below is a tiny re-creation of the mistake;
the check names the one whose outputs equal the learner's."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from course_lib import attention as ref
from .cases import Case, grade_function, randn
from .core import Mismatch, call_learner, compare, diagnose, register


# ------------------------------------------------------------------ softmax
def _naive_softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


SOFTMAX_MISCONCEPTIONS = {
    "overflow": "exp() overflows on large inputs (exp(1000) = inf, inf/inf = NaN). Subtract the "
                "maximum along `dim` before exponentiating; it cancels in the ratio.",
    "ignores_dim": "the result is always normalised over the last axis; use the `dim` argument "
                   "in both the max/exp and the sum (keepdim=True).",
    "all_elements": "you divide by the sum over the whole tensor; sum along `dim` with keepdim=True.",
    "not_normalised": "the exponentials are not divided by their sum, so rows do not add up to 1.",
    "mutates_input": "the input tensor was changed in place.",
}


SOFTMAX_SOLUTION = """import torch


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    x_max = x.amax(dim=dim, keepdim=True)  # cancels in the ratio, but keeps exp() from overflowing
    e = torch.exp(x - x_max)  # same shape as x; a -inf entry gives exactly 0
    return e / e.sum(dim=dim, keepdim=True)  # each slice along `dim` sums to 1
"""


@register("check_softmax", minutes=15,
          forbid=('torch.softmax', 'torch.nn.functional.softmax', 'torch.Tensor.softmax', 'torch.special.softmax', 'torch.nn.Softmax', 'torch.log_softmax', 'torch.nn.functional.log_softmax', 'torch.Tensor.log_softmax', 'course_lib.attention.softmax', 'course_lib.checks'), points=2, reference=SOFTMAX_SOLUTION, misconceptions=SOFTMAX_MISCONCEPTIONS,
          hint="Exponentiate, then divide by the sum along `dim` (keepdim=True so it broadcasts). "
               "For stability subtract x.amax(dim, keepdim=True) first: softmax(x) = softmax(x - c).")
def check_softmax(learner):
    g = torch.Generator().manual_seed(1)
    big = randn(3, 6, gen=g) * 400 + 600
    partly_masked = randn(3, 5, gen=g)
    partly_masked[0, 1:3] = float("-inf")
    partly_masked[2, 0] = float("-inf")
    cases = [
        Case("x of shape (4, 7), dim=-1", (randn(4, 7, gen=g), -1)),
        Case("x of shape (2, 3, 5), dim=1", (randn(2, 3, 5, gen=g), 1)),
        Case("x of shape (3, 6) float64, dim=0", (randn(3, 6, gen=g, dtype=torch.float64), 0)),
        Case("large logits (about 600 ± 400), dim=-1", (big, -1)),
        Case("some entries -inf (masked), dim=-1", (partly_masked, -1)),
    ]
    variants = {
        "overflow": _naive_softmax,
        "ignores_dim": lambda x, dim=-1: ref.softmax(x, -1),
        "all_elements": lambda x, dim=-1: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(),
        "not_normalised": lambda x, dim=-1: torch.exp(x - x.amax(dim, keepdim=True)),
    }
    return grade_function(learner, cases, ref.softmax, variants, ("x",))


# ------------------------------------------------------------------ scaled dot-product attention
def _sdpa_variant(q, k, v, mask=None, *, scale="sqrt", axis=-1, mask_mode="neg_inf"):
    d = q.size(-1)
    s = {"sqrt": 1 / math.sqrt(d), "none": 1.0, "d": 1 / d}[scale]
    scores = q @ k.transpose(-2, -1) * s  # (..., T_q, T_k)
    if mask is not None and mask_mode == "neg_inf":
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None and mask_mode == "zero":
        scores = scores.masked_fill(~mask, 0.0)
    elif mask is not None and mask_mode == "inverted":
        scores = scores.masked_fill(mask, float("-inf"))
    w = torch.softmax(scores, dim=axis)
    if mask is not None and mask_mode == "after":
        w = w.masked_fill(~mask, 0.0)
    return w @ v


SDPA_MISCONCEPTIONS = {
    "no_scale": "the scores are not divided by sqrt(d_k). Without it the dot products grow with "
                "d_k and softmax saturates; multiply q @ k.transpose(-2, -1) by 1/math.sqrt(d_k).",
    "scale_by_d": "the scores are divided by d_k instead of sqrt(d_k). The variance of q·k grows "
                  "like d_k, so its standard deviation grows like sqrt(d_k).",
    "wrong_axis": "softmax is taken over the queries (dim=-2). Each query's weights over the keys "
                  "must sum to 1: use dim=-1.",
    "mask_after_softmax": "the mask is applied after softmax, so the remaining weights no longer "
                          "sum to 1. Fill masked scores with -inf *before* softmax.",
    "mask_fill_zero": "masked scores are set to 0, but exp(0) = 1 still gives them weight. "
                      "Fill them with float('-inf') so exp() makes them exactly 0.",
    "inverted_mask": "the mask is used the other way round. In this course (and in PyTorch) "
                     "True means 'may attend': use scores.masked_fill(~mask, float('-inf')).",
    "mutates_input": "an input tensor was changed in place.",
}


def _random_mask(*shape, gen):
    m = torch.rand(*shape, generator=gen) > 0.4
    m[..., 0] = True  # every query keeps at least one key
    return m


SDPA_SOLUTION = """import math

import torch

from course_lib.attention import softmax  # part 1 (your softmax gives the same)


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # True = may attend; -inf gets weight 0
    weights = softmax(scores, dim=-1)  # (..., T_q, T_k): each query's weights over the keys sum to 1
    return weights @ v  # (..., T_q, D_v)
"""


@register("check_scaled_dot_product_attention", minutes=20,
          forbid=('torch.nn.functional.scaled_dot_product_attention', 'torch.nn.MultiheadAttention', 'torch.nn.functional.multi_head_attention_forward', 'course_lib.attention.scaled_dot_product_attention', 'course_lib.attention.attend', 'course_lib.attention.attention_weights', 'course_lib.attention.MultiHeadAttention', 'course_lib.efficient_attention.online_softmax_attention', 'course_lib.efficient_attention.sliding_window_attention', 'course_lib.checks'), points=3, reference=SDPA_SOLUTION,
          misconceptions=SDPA_MISCONCEPTIONS,
          hint="scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)); where the mask is False put "
               "-inf (scores.masked_fill(~mask, float('-inf'))); softmax over the last axis; "
               "then multiply the weights by v.")
def check_scaled_dot_product_attention(learner):
    g = torch.Generator().manual_seed(2)
    q3 = randn(3, 2, 5, 16, gen=g)
    k3, v3 = randn(3, 2, 5, 16, gen=g), randn(3, 2, 5, 16, gen=g)
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]).bool()[:, None, None, :]
    cases = [
        Case("q, k, v of shape (2, 6, 16), no mask", (randn(2, 6, 16, gen=g), randn(2, 6, 16, gen=g),
                                                       randn(2, 6, 16, gen=g), None)),
        Case("cross-attention: q (2, 3, 4, 16), k and v (2, 3, 7, 16) / (2, 3, 7, 8), no mask",
             (randn(2, 3, 4, 16, gen=g), randn(2, 3, 7, 16, gen=g), randn(2, 3, 7, 8, gen=g), None)),
        Case("causal mask of shape (5, 5) broadcast over (3, 2, 5, 16)",
             (q3, k3, v3, ref.causal_mask(5))),
        Case("padding mask of shape (3, 1, 1, 5) (rows 1 and 2 padded)", (q3, k3, v3, pad)),
        Case("float64, random mask of shape (1, 2, 6, 6)",
             (randn(1, 2, 6, 32, gen=g, dtype=torch.float64), randn(1, 2, 6, 32, gen=g, dtype=torch.float64),
              randn(1, 2, 6, 32, gen=g, dtype=torch.float64), _random_mask(1, 2, 6, 6, gen=g))),
    ]
    variants = {
        "no_scale": lambda *a: _sdpa_variant(*a, scale="none"),
        "scale_by_d": lambda *a: _sdpa_variant(*a, scale="d"),
        "wrong_axis": lambda *a: _sdpa_variant(*a, axis=-2),
        "mask_after_softmax": lambda *a: _sdpa_variant(*a, mask_mode="after"),
        "mask_fill_zero": lambda *a: _sdpa_variant(*a, mask_mode="zero"),
        "inverted_mask": lambda *a: _sdpa_variant(*a, mask_mode="inverted"),
    }
    return grade_function(learner, cases, ref.scaled_dot_product_attention, variants, ("q", "k", "v", "mask"))


# ------------------------------------------------------------------ causal mask
CAUSAL_MISCONCEPTIONS = {
    "inverted": "True marks the *future* here. In this course True means 'may attend': the lower "
                "triangle (including the diagonal) is True.",
    "no_diagonal": "the diagonal is False, so a token cannot attend to itself (and the first row "
                   "has nothing to attend to). Use torch.tril, which keeps the diagonal.",
    "additive_float": "this is an additive float mask (0 / -inf), Hugging Face's convention; this exercise "
                      "asks for the course's boolean mask (True = may attend): torch.ones(T, T, dtype=torch.bool).tril().",
    "float_ones": "the values are right but the dtype is float; masks are torch.bool.",
}


CAUSAL_MASK_SOLUTION = """import torch


def causal_mask(T: int) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool).tril()  # (T, T): query i may attend to keys 0 .. i
"""


@register("check_causal_mask", minutes=5,
          forbid=('course_lib.attention.causal_mask', 'course_lib.attention.position_mask', 'course_lib.checks'), points=1, reference=CAUSAL_MASK_SOLUTION, misconceptions=CAUSAL_MISCONCEPTIONS,
          hint="Row i is the query at position i; it may see keys 0..i. That is the lower triangle "
               "of a (T, T) boolean matrix: torch.tril(...).")
def check_causal_mask(learner):
    cases = [Case(f"T={T}", (T,)) for T in (1, 2, 5, 8)]
    variants = {
        "inverted": lambda T: ~ref.causal_mask(T),
        "no_diagonal": lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1),
        "additive_float": lambda T: torch.zeros(T, T).masked_fill(~ref.causal_mask(T), float("-inf")),
        "float_ones": lambda T: ref.causal_mask(T).float(),
    }
    return grade_function(learner, cases, ref.causal_mask, variants, ("T",))


# ------------------------------------------------------------------ multi-head attention
def _mha_variant(m: nn.Module, x, mask=None, *, split="ok", merge="ok", scale="head"):
    B, T, C = x.shape
    H = m.n_heads
    D = C // H

    def heads(t):
        if split == "ok":
            return t.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        return t.view(B, H, T, D)  # wrong: mixes time and channels

    q, k, v = heads(m.q_proj(x)), heads(m.k_proj(x)), heads(m.v_proj(x))
    s = {"head": 1 / math.sqrt(D), "model": 1 / math.sqrt(C), "none": 1.0}[scale]
    scores = q @ k.transpose(-2, -1) * s  # (B, H, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    y = torch.softmax(scores, -1) @ v  # (B, H, T, D)
    y = y.transpose(1, 2).reshape(B, T, C) if merge == "ok" else y.reshape(B, T, C)  # (B, T, C)
    return m.o_proj(y)


MHA_MISCONCEPTIONS = {
    "split_heads_wrong": "heads are split with .view(B, H, T, D) directly, which mixes positions "
                         "and channels. View as (B, T, H, D) first, then .transpose(1, 2).",
    "merge_heads_wrong": "heads are merged with .reshape(B, T, C) straight from (B, H, T, D). "
                         "Transpose back to (B, T, H, D) first, then reshape.",
    "scale_by_d_model": "scores are scaled by 1/sqrt(d_model); each head works in head_dim = "
                        "d_model // n_heads dimensions, so scale by 1/sqrt(head_dim).",
    "no_scale": "the scores are not scaled by 1/sqrt(head_dim).",
}


def _instantiate(cls, d_model, n_heads):
    if not isinstance(cls, type):
        raise Mismatch(f"pass the class itself (MultiHeadAttention), not {type(cls).__name__}")
    m = call_learner(cls, d_model, n_heads)
    if not isinstance(m, nn.Module):
        raise Mismatch("MultiHeadAttention should subclass torch.nn.Module")
    C = d_model
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        lin = getattr(m, name, None)
        if not isinstance(lin, nn.Linear):
            raise Mismatch(f"no nn.Linear called `{name}`; name the projections q_proj, k_proj, "
                           "v_proj and o_proj (as in Hugging Face Llama) so weights can be loaded")
        if tuple(lin.weight.shape) != (C, C):
            raise Mismatch(f"`{name}.weight` has shape {tuple(lin.weight.shape)}, expected ({C}, {C})")
    if getattr(m, "n_heads", n_heads) != n_heads:
        raise Mismatch(f"self.n_heads is {m.n_heads}, but {n_heads} heads were asked for")
    return m


MHA_SOLUTION = """import torch
import torch.nn as nn

from course_lib.attention import scaled_dot_product_attention  # part 2 (yours gives the same)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    def forward(self, x, mask=None):
        B, T, C = x.shape
        H, D = self.n_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        k = self.k_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = self.v_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        y = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, D); scaled by 1/sqrt(D), mask broadcasts
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        return self.o_proj(y)  # (B, T, C)
"""


@register("check_multi_head_attention", minutes=30,
          forbid=('torch.nn.functional.scaled_dot_product_attention', 'torch.nn.MultiheadAttention', 'torch.nn.functional.multi_head_attention_forward', 'course_lib.attention.MultiHeadAttention', 'course_lib.attention.CrossAttention', 'course_lib.checks'), points=4, reference=MHA_SOLUTION,
          misconceptions=MHA_MISCONCEPTIONS,
          hint="Project x with q_proj/k_proj/v_proj, split C into H heads of D = C // H: "
               ".view(B, T, H, D).transpose(1, 2) -> (B, H, T, D). Attend per head (scale by "
               "1/sqrt(D)), merge with .transpose(1, 2).reshape(B, T, C), then o_proj.")
def check_multi_head_attention(learner):
    g = torch.Generator().manual_seed(3)
    n = 0
    for d_model, n_heads, dtype in [(32, 4, torch.float32), (24, 3, torch.float32), (16, 2, torch.float64)]:
        torch.manual_seed(n)  # the learner's own initialisation, made repeatable
        m = _instantiate(learner, d_model, n_heads).to(dtype).eval()
        bias = m.q_proj.bias is not None
        r = ref.MultiHeadAttention(d_model, n_heads, bias=bias).to(dtype).eval()
        r.load_state_dict({k: v for k, v in m.state_dict().items() if k.split(".")[0] in
                           ("q_proj", "k_proj", "v_proj", "o_proj")})
        B, T = 2, 6
        x = randn(B, T, d_model, gen=g, dtype=dtype)
        pad = torch.tensor([[1] * T, [1] * (T - 2) + [0, 0]]).bool()[:, None, None, :]
        for label, mask in [("no mask", None), ("causal mask (T, T)", ref.causal_mask(T)),
                            ("padding mask (B, 1, 1, T)", pad)]:
            with torch.no_grad():
                expected = r(x, mask)
                x_in = x.clone()
                out = call_learner(m, x_in, mask) if mask is not None else call_learner(m, x_in)
            if not torch.equal(x_in, x):
                raise Mismatch("forward modified its input x in place")
            n += 1
            try:
                compare(out, expected)
            except Mismatch as mm:
                variants = {
                    "split_heads_wrong": lambda: [_mha_variant(r, x, mask, split="bad")],
                    "merge_heads_wrong": lambda: [_mha_variant(r, x, mask, merge="bad")],
                    "scale_by_d_model": lambda: [_mha_variant(r, x, mask, scale="model")],
                    "no_scale": lambda: [_mha_variant(r, x, mask, scale="none")],
                }
                with torch.no_grad():
                    key = diagnose([out], variants, [expected])
                detail = f"case: d_model={d_model}, n_heads={n_heads}, {dtype}, x (2, {T}, {d_model}), {label}"
                raise Mismatch(mm.reason, detail, key) from None
    return n
