"""Checks for lessons 04 (KV heads) and 05 (long context): repeat_kv, online-softmax attention,
the sliding-window mask, sliding-window attention without a T×T matrix, causal linear attention.
Each misconception is a tiny re-creation of the mistake; the check names the one whose
outputs equal the learner's."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course_lib import attention as ref
from course_lib import efficient_attention as eff
from .cases import Case, grade_function, randn
from .core import Mismatch, call_learner, compare, register


def _qkv(*shape, gen, dtype=torch.float32, d_v=None, t_k=None, mult=1.0):
    *lead, T, D = shape
    Tk = T if t_k is None else t_k
    return (randn(*lead, T, D, gen=gen, dtype=dtype) * mult, randn(*lead, Tk, D, gen=gen, dtype=dtype),
            randn(*lead, Tk, d_v or D, gen=gen, dtype=dtype))


# ------------------------------------------------------------------ repeat_kv (lesson 04)
REPEAT_KV_MISCONCEPTIONS = {
    "repeat_not_interleave": "x.repeat(1, n_rep, 1, 1) tiles the whole block of heads [0, 1, 0, 1], "
                             "but query heads 0..n_rep-1 must share kv head 0: [0, 0, 1, 1]. Use "
                             "x.repeat_interleave(n_rep, dim=1) (or expand a new axis after dim 1, then reshape).",
    "wrong_dim": "the copies were made along the time axis (dim 2); the heads are dim 1 of (B, H_kv, T, D).",
}


REPEAT_KV_SOLUTION = """import torch


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    B, H_kv, T, D = x.shape
    x = x[:, :, None, :, :].expand(B, H_kv, n_rep, T, D)  # (B, H_kv, n_rep, T, D): a view, no copy yet
    return x.reshape(B, H_kv * n_rep, T, D)  # (B, H, T, D): heads 0, 0, ..., 1, 1, ...
"""


@register("check_repeat_kv", minutes=10,
          forbid=('course_lib.attention.repeat_kv', 'course_lib.checks'), points=2, reference=REPEAT_KV_SOLUTION, misconceptions=REPEAT_KV_MISCONCEPTIONS,
          hint="(B, H_kv, T, D) -> (B, H_kv * n_rep, T, D) with each kv head copied n_rep times *next to "
               "itself*: x[:, :, None].expand(B, H_kv, n_rep, T, D).reshape(B, H_kv * n_rep, T, D).")  # (B, H_kv, T, D) -> (B, H, T, D)
def check_repeat_kv(learner):
    g = torch.Generator().manual_seed(4)
    cases = [
        Case("x (2, 2, 5, 4), n_rep=3 (GQA)", (randn(2, 2, 5, 4, gen=g), 3)),
        Case("x (1, 1, 3, 8), n_rep=4 (MQA)", (randn(1, 1, 3, 8, gen=g), 4)),
        Case("x (2, 4, 3, 2), n_rep=1 (MHA: unchanged)", (randn(2, 4, 3, 2, gen=g), 1)),
        Case("x (1, 3, 2, 4) float64, n_rep=2", (randn(1, 3, 2, 4, gen=g, dtype=torch.float64), 2)),
    ]
    variants = {
        "repeat_not_interleave": lambda x, n: x.repeat(1, n, 1, 1),
        "wrong_dim": lambda x, n: x.repeat_interleave(n, dim=2),
    }
    return grade_function(learner, cases, ref.repeat_kv, variants, ("x", "n_rep"))


# ------------------------------------------------------------------ online softmax attention
def _online_variant(q, k, v, block_size, *, rescale_sum=True, rescale_acc=True, use_max=True, drop_last=False):
    scale = 1 / math.sqrt(q.size(-1))
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype)
    l = torch.zeros((*q.shape[:-1], 1), dtype=q.dtype)
    acc = torch.zeros((*q.shape[:-1], v.size(-1)), dtype=q.dtype)
    stop = k.size(-2) - block_size + 1 if drop_last else k.size(-2)
    for s0 in range(0, stop, block_size):
        s = q @ k[..., s0:s0 + block_size, :].transpose(-2, -1) * scale  # (..., T_q, b)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True)) if use_max else torch.zeros_like(m)
        c = torch.exp(m - m_new) if use_max else torch.ones_like(m)
        p = torch.exp(s - m_new)
        l = (l * c if rescale_sum else l) + p.sum(-1, keepdim=True)
        acc = (acc * c if rescale_acc else acc) + p @ v[..., s0:s0 + block_size, :]
        m = m_new
    return acc / l


ONLINE_MISCONCEPTIONS = {
    "no_rescale": "the running max is updated but the running sum and the accumulator are not "
                  "multiplied by exp(m_old - m_new). Everything summed so far was relative to the old "
                  "max; without the correction earlier blocks get too much weight.",
    "acc_not_rescaled": "the running sum is rescaled by exp(m_old - m_new) but the accumulator "
                        "(Σ p·v) is not; both were computed relative to the old max.",
    "drops_last_block": "the last, shorter block of keys is skipped when block_size does not divide T_k. "
                        "Loop with range(0, T_k, block_size) and slice k[..., start:start + block_size, :].",
    "overflow": "no running max is subtracted, so exp() overflows for large scores (inf / inf = NaN).",
}


ONLINE_SOLUTION = """import math

import torch


def online_softmax_attention(q, k, v, block_size):
    scale = 1.0 / math.sqrt(q.size(-1))
    m = q.new_full((*q.shape[:-1], 1), float("-inf"))  # (..., T_q, 1): running max
    l = q.new_zeros((*q.shape[:-1], 1))  # (..., T_q, 1): running sum of exp(s - m)
    acc = q.new_zeros((*q.shape[:-1], v.size(-1)))  # (..., T_q, D_v): running sum of exp(s - m) v
    for start in range(0, k.size(-2), block_size):
        kb = k[..., start:start + block_size, :]  # (..., b, D); the last block may be shorter
        vb = v[..., start:start + block_size, :]  # (..., b, D_v)
        s = q @ kb.transpose(-2, -1) * scale  # (..., T_q, b)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))  # (..., T_q, 1)
        correction = torch.exp(m - m_new)  # (..., T_q, 1): what was summed under the old max, rescaled
        p = torch.exp(s - m_new)  # (..., T_q, b)
        l = l * correction + p.sum(-1, keepdim=True)
        acc = acc * correction + p @ vb  # (..., T_q, D_v)
        m = m_new
    return acc / l  # (..., T_q, D_v)
"""


@register("check_online_softmax_attention", minutes=40,
          forbid=('torch.nn.functional.scaled_dot_product_attention', 'torch.nn.MultiheadAttention', 'torch.nn.functional.multi_head_attention_forward', 'course_lib.attention.scaled_dot_product_attention', 'course_lib.attention.attend', 'course_lib.efficient_attention.online_softmax_attention', 'course_lib.efficient_attention.tiled_attention', 'course_lib.checks'), points=4, reference=ONLINE_SOLUTION,
          misconceptions=ONLINE_MISCONCEPTIONS,
          hint="Keep per query m (running max, start at -inf), l (running sum, 0) and acc (0). For each key "
               "block: s = q @ kb.T / sqrt(D); m_new = max(m, s.max(-1)); c = exp(m - m_new); "
               "p = exp(s - m_new); l = l*c + p.sum(-1); acc = acc*c + p @ vb; m = m_new. Return acc / l.")
def check_online_softmax_attention(learner):
    g = torch.Generator().manual_seed(5)
    cases = [
        Case("q, k, v (2, 3, 10, 8), block_size=4 (last block shorter)", (*_qkv(2, 3, 10, 8, gen=g), 4)),
        Case("q, k, v (1, 2, 16, 8), block_size=16 (a single block)", (*_qkv(1, 2, 16, 8, gen=g), 16)),
        Case("q (1, 2, 7, 8), k and v with T_k=12, block_size=5", (*_qkv(1, 2, 7, 8, gen=g, t_k=12), 5)),
        Case("q, k, v (2, 9, 4) float64, v width 6, block_size=1", (*_qkv(2, 9, 4, gen=g, dtype=torch.float64,
                                                                             d_v=6), 1)),
        Case("large scores (q × 60), (1, 1, 12, 16), block_size=3", (*_qkv(1, 1, 12, 16, gen=g, mult=60.0), 3)),
    ]
    variants = {
        "no_rescale": lambda *a: _online_variant(*a, rescale_sum=False, rescale_acc=False),
        "acc_not_rescaled": lambda *a: _online_variant(*a, rescale_acc=False),
        "drops_last_block": lambda *a: _online_variant(*a, drop_last=True),
        "overflow": lambda *a: _online_variant(*a, use_max=False),
    }
    return grade_function(learner, cases, eff.online_softmax_attention, variants, ("q", "k", "v", "block_size"))


# ------------------------------------------------------------------ sliding-window mask
SW_MASK_MISCONCEPTIONS = {
    "window_too_wide": "each row has window+1 True entries, flash-attn's inclusive convention "
                       "(window_size=(w, 0)); this exercise asks for Mistral's, where the window counts the "
                       "token itself: query i sees keys i-window+1 .. i (0 <= i - j < window).",
    "window_too_narrow": "each row has window-1 True entries: the token itself is one of the window's "
                         "tokens, so use 0 <= i - j < window (not <= window - 1 - 1).",
    "not_causal": "the band reaches into the future (|i - j| < window); the sliding window of a decoder "
                  "only looks back: 0 <= i - j < window.",
    "inverted": "True marks the blocked entries; in this course True means 'may attend'.",
}


SW_MASK_SOLUTION = """import torch


def sliding_window_mask(T, window):
    i = torch.arange(T)[:, None]  # (T, 1): query positions
    j = torch.arange(T)[None, :]  # (1, T): key positions
    return (i - j >= 0) & (i - j < window)  # (T, T): the token itself and the window - 1 before it
"""


@register("check_sliding_window_mask", minutes=10,
          forbid=('course_lib.attention.sliding_window_mask', 'course_lib.attention.position_mask', 'course_lib.efficient_attention.window_global_random_mask', 'course_lib.checks'), points=2, reference=SW_MASK_SOLUTION,
          misconceptions=SW_MASK_MISCONCEPTIONS,
          hint="Entry (i, j) is True when 0 <= i - j < window. With i = torch.arange(T)[:, None] and "
               "j = torch.arange(T)[None, :] that is one line of broadcasting.")
def check_sliding_window_mask(learner):
    cases = [Case(f"T={T}, window={w}", (T, w)) for T, w in [(1, 1), (5, 1), (6, 3), (8, 8), (4, 10), (10, 4)]]
    dist = lambda T: torch.arange(T)[:, None] - torch.arange(T)[None, :]  # noqa: E731
    variants = {
        "window_too_wide": lambda T, w: (dist(T) >= 0) & (dist(T) <= w),
        "window_too_narrow": lambda T, w: (dist(T) >= 0) & (dist(T) < w - 1),
        "not_causal": lambda T, w: dist(T).abs() < w,
        "inverted": lambda T, w: ~ref.sliding_window_mask(T, w),
    }
    return grade_function(learner, cases, ref.sliding_window_mask, variants, ("T", "window"))


# ------------------------------------------------------------------ sliding-window attention
def _band_attention(q, k, v, keep):
    mask = keep(torch.arange(q.size(-2))[:, None] - torch.arange(k.size(-2))[None, :])  # (T, T)
    return ref.scaled_dot_product_attention(q, k, v, mask)


def _pad_not_masked(q, k, v, w):
    kw = F.pad(k, (0, 0, w - 1, 0)).unfold(-2, w, 1)  # (..., T, D, w)
    vw = F.pad(v, (0, 0, w - 1, 0)).unfold(-2, w, 1)  # (..., T, D_v, w)
    p = torch.softmax(torch.einsum("...td,...tdw->...tw", q, kw) / math.sqrt(q.size(-1)), -1)  # (..., T, w)
    return torch.einsum("...tw,...tdw->...td", p, vw)  # (..., T, D_v)


SW_ATTN_MISCONCEPTIONS = {
    "pad_right": "the padding went after the sequence, so query t sees keys t .. t+window-1: the *future* "
                 "leaks in. Pad window-1 rows before position 0: F.pad(k, (0, 0, window - 1, 0)).",
    "pad_not_masked": "the zero rows added as padding are not masked: their score is 0, exp(0) = 1, so they "
                      "take weight from the real keys in the first window-1 positions. Set their scores to -inf.",
    "window_too_wide": "each query sees window+1 keys (flash-attn's inclusive convention); this exercise asks "
                       "for Mistral's, where the window counts the token itself (keys t-window+1 .. t).",
    "materialises_TxT": "the output is right, but a T×T matrix was built (memory grows like T²). Use "
                        "overlapping windows: k_win = F.pad(k, (0, 0, w-1, 0)).unfold(-2, w, 1) and einsum.",
}


SW_ATTN_SOLUTION = """import math

import torch
import torch.nn.functional as F


def sliding_window_attention(q, k, v, window):
    T = q.size(2)
    # window - 1 zero rows *before* position 0 (the past), then overlapping windows as a strided view
    k_win = F.pad(k, (0, 0, window - 1, 0)).unfold(2, window, 1)  # (B, H, T, D, w): slot s = key t - w + 1 + s
    v_win = F.pad(v, (0, 0, window - 1, 0)).unfold(2, window, 1)  # (B, H, T, D, w)
    scores = torch.einsum("bhtd,bhtdw->bhtw", q, k_win) / math.sqrt(q.size(-1))  # (B, H, T, w)
    slot = torch.arange(window)[None, :]  # (1, w)
    real = torch.arange(T)[:, None] + slot >= window - 1  # (T, w): False on the padded slots
    weights = torch.softmax(scores.masked_fill(~real, float("-inf")), dim=-1)  # (B, H, T, w)
    return torch.einsum("bhtw,bhtdw->bhtd", weights, v_win)  # (B, H, T, D)
"""


@register("check_sliding_window_attention", minutes=30,
          forbid=('torch.nn.functional.scaled_dot_product_attention', 'torch.nn.MultiheadAttention', 'torch.nn.functional.multi_head_attention_forward', 'course_lib.attention.scaled_dot_product_attention', 'course_lib.attention.attend', 'course_lib.efficient_attention.sliding_window_attention', 'course_lib.efficient_attention.sliding_window_attention_naive', 'course_lib.checks'), points=4, reference=SW_ATTN_SOLUTION,
          misconceptions=SW_ATTN_MISCONCEPTIONS,
          hint="Pad k and v with window-1 zero rows at the start (the past), k_win = k_pad.unfold(-2, window, 1) "
               "-> (B, H, T, D, w); scores = einsum('bhtd,bhtdw->bhtw', q, k_win) / sqrt(D); set the padded "
               "slots (t + slot < window - 1) to -inf; softmax over w; einsum with v_win.")
def check_sliding_window_attention(learner):
    g = torch.Generator().manual_seed(6)
    cases = [
        Case("q, k, v (2, 2, 12, 8), window=4", (*_qkv(2, 2, 12, 8, gen=g), 4)),
        Case("q, k, v (1, 3, 9, 16), window=1 (each token sees itself only)", (*_qkv(1, 3, 9, 16, gen=g), 1)),
        Case("q, k, v (1, 2, 9, 8), window=9 (= causal attention)", (*_qkv(1, 2, 9, 8, gen=g), 9)),
        Case("q, k, v (2, 1, 7, 8), window=20 (longer than the sequence)", (*_qkv(2, 1, 7, 8, gen=g), 20)),
        Case("q, k, v (1, 2, 10, 4) float64, v width 6, window=3",
             (*_qkv(1, 2, 10, 4, gen=g, dtype=torch.float64, d_v=6), 3)),
    ]
    variants = {
        "pad_right": lambda q, k, v, w: _band_attention(q, k, v, lambda d: (d <= 0) & (d > -w)),
        "pad_not_masked": _pad_not_masked,
        "window_too_wide": lambda q, k, v, w: _band_attention(q, k, v, lambda d: (d >= 0) & (d <= w)),
    }
    n = grade_function(learner, cases, eff.sliding_window_attention, variants, ("q", "k", "v", "window"))
    return n + _no_quadratic_memory(learner, g)


def _no_quadratic_memory(learner, g) -> int:
    T, w = 4096, 8
    q, k, v = _qkv(1, 1, T, 8, gen=g)
    out, peak = eff.peak_memory(call_learner, learner, q, k, v, w)
    compare(out, eff.sliding_window_attention(q, k, v, w))
    txt = T * T * q.element_size()
    if peak >= txt // 2:
        raise Mismatch(f"at T={T}, window={w} your function allocated {peak / 2**20:.0f} MiB at its peak; a "
                       f"T×T matrix is {txt / 2**20:.0f} MiB, the windowed version needs about "
                       f"{T * w * 4 * 4 / 2**20:.1f} MiB", f"case: q, k, v (1, 1, {T}, 8), window={w}",
                       "materialises_TxT")
    return 1


# ------------------------------------------------------------------ causal linear attention
def _linear_variant(q, k, v, *, phi=eff.elu_feature_map, normalise=True, causal=True):
    fq, fk = phi(q), phi(k)
    a = fq @ fk.transpose(-2, -1)  # (..., T, T)
    if causal:
        a = a.masked_fill(~ref.causal_mask(q.size(-2)), 0.0)
    return (a @ v) / a.sum(-1, keepdim=True) if normalise else a @ v


LINEAR_MISCONCEPTIONS = {
    "no_normaliser": "the numerator φ(q_t)·S_t is not divided by φ(q_t)·z_t with z_t = Σ_{j<=t} φ(k_j); "
                     "without it the output grows with t instead of being a weighted average of values.",
    "not_causal": "every query uses the sums over the whole sequence (the future included); use running "
                  "sums: torch.cumsum over the time axis, so position t only sees keys j <= t.",
    "elu_without_plus_one": "φ(x) = elu(x) + 1 (Katharopoulos et al., Eq. 7): without the +1 features "
                            "can be negative and the normaliser can approach 0.",
}


LINEAR_SOLUTION = """import torch
import torch.nn.functional as F


def causal_linear_attention(q, k, v):
    fq, fk = F.elu(q) + 1, F.elu(k) + 1  # (..., T, D): φ(x) = elu(x) + 1 > 0
    s = torch.cumsum(fk[..., :, :, None] * v[..., :, None, :], dim=-3)  # (..., T, D, D_v): Σ_{j<=t} φ(k_j) v_jᵀ
    z = torch.cumsum(fk, dim=-2)  # (..., T, D): z_t = Σ_{j<=t} φ(k_j)
    num = torch.einsum("...td,...tde->...te", fq, s)  # (..., T, D_v): φ(q_t)ᵀ S_t
    den = torch.einsum("...td,...td->...t", fq, z)  # (..., T): φ(q_t)ᵀ z_t
    return num / den[..., None]  # (..., T, D_v)
"""


@register("check_causal_linear_attention", minutes=25,
          forbid=('torch.nn.functional.scaled_dot_product_attention', 'torch.nn.MultiheadAttention', 'torch.nn.functional.multi_head_attention_forward', 'course_lib.efficient_attention.causal_linear_attention', 'course_lib.efficient_attention.causal_linear_attention_parallel', 'course_lib.efficient_attention.linear_attention_recurrent', 'course_lib.checks'), points=3, reference=LINEAR_SOLUTION,
          misconceptions=LINEAR_MISCONCEPTIONS,
          hint="φ = F.elu(x) + 1. S = torch.cumsum(φk[..., :, :, None] * v[..., :, None, :], dim=-3) is "
               "(B, H, T, D, D_v); z = φk.cumsum(-2). out_t = φq_t·S_t / φq_t·z_t (einsum '...td,...tde->...te').")
def check_causal_linear_attention(learner):
    g = torch.Generator().manual_seed(7)
    cases = [
        Case("q, k, v (2, 2, 10, 8)", _qkv(2, 2, 10, 8, gen=g)),
        Case("q, k, v (1, 1, 1, 4) (one token)", _qkv(1, 1, 1, 4, gen=g)),
        Case("q, k, v (1, 3, 7, 5) float64, v width 3", _qkv(1, 3, 7, 5, gen=g, dtype=torch.float64, d_v=3)),
        Case("q, k, v (2, 1, 16, 16)", _qkv(2, 1, 16, 16, gen=g)),
    ]
    variants = {
        "no_normaliser": lambda q, k, v: _linear_variant(q, k, v, normalise=False),
        "not_causal": lambda q, k, v: _linear_variant(q, k, v, causal=False),
        "elu_without_plus_one": lambda q, k, v: _linear_variant(q, k, v, phi=F.elu),
    }
    return grade_function(learner, cases, eff.causal_linear_attention, variants, ("q", "k", "v"))
