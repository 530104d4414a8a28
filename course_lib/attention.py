"""Attention, read top to bottom: softmax -> masks -> scaled dot-product -> multi-head.

Conventions used everywhere in the course:
  * shapes: B batch, T time (sequence), C channels (= d_model), H heads, D head size.
  * boolean masks mean "True = may attend", exactly as ``F.scaled_dot_product_attention``.
  * projections are called ``q_proj, k_proj, v_proj, o_proj`` as in Hugging Face Llama.

This file is lesson 01 (and the encoder-decoder attention of lesson 06). What the model
families add on top - RoPE inside attention, an additive ALiBi / T5 bias, the KV cache, a
sliding window - is the subclass ``course_lib.positional_attention.PositionalAttention``,
so ``MultiHeadAttention`` below reads as plain multi-head attention.

Two paths (``course_lib.kernels``): ``attend`` calls PyTorch's fused
``F.scaled_dot_product_attention`` by default, and the formula written out here
(``attention_weights`` then ``weights @ v``) inside ``with from_scratch():`` or whenever the
caller asks for the weights themselves. Both check their input the same way.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import check_divisible, check_positive, check_range
from course_lib.kernels import fused


# --------------------------------------------------------------------------- softmax
def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable softmax: subtracting the row maximum changes nothing
    mathematically (it cancels in the ratio) but keeps exp() from overflowing."""
    x_max = x.amax(dim=dim, keepdim=True)
    # A row that is entirely -inf (everything masked) has max -inf; use 0 there so
    # we compute exp(-inf) = 0 instead of exp(nan).
    x_max = torch.where(torch.isfinite(x_max), x_max, torch.zeros_like(x_max))
    e = torch.exp(x - x_max)
    return e / e.sum(dim=dim, keepdim=True)


# --------------------------------------------------------------------------- masks
def causal_mask(T: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool: position i may attend to positions j <= i (lower triangle, diagonal included)."""
    if T < 1:
        raise ValueError(f"causal_mask needs T >= 1, got T={T}.")
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()  # (T, T)


def padding_mask(attention_mask: torch.Tensor | None, shape: tuple[int, int] | None = None) -> torch.Tensor | None:
    """Hugging Face style ``attention_mask`` (B, T_k) of 1 = real token, 0 = padding
    -> bool mask (B, 1, 1, T_k) that broadcasts over heads and query positions.

    The one builder every model uses: ``None`` passes through (no padding), and ``shape``
    = (B, T_k), when given, is what the model expects (with a KV cache T_k counts the cached
    tokens too, as in Hugging Face)."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        raise ValueError(
            f"padding_mask expects a (batch, key_length) tensor of 1s and 0s, got "
            f"{tuple(getattr(attention_mask, 'shape', ())) or type(attention_mask).__name__}."
        )
    if shape is not None and tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(f"attention_mask must have shape (batch, keys) = {tuple(shape)} (with a cache: the "
                         f"cached tokens plus the new ones), got {tuple(attention_mask.shape)}.")
    if attention_mask.is_floating_point() and not torch.isin(attention_mask, attention_mask.new_tensor([0.0, 1.0])).all():
        raise ValueError("attention_mask holds 1 for a token and 0 for padding; got other values. An additive "
                         "float mask (0 / -inf) is not an attention_mask: pass mask == 0 instead.")
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T_k)


def sliding_window_mask(T: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool band: query i may attend to keys i-window+1 .. i, i.e. the token itself and
    the window-1 tokens before it (Mistral's sliding window; window=T gives the causal mask)."""
    if T < 1 or window < 1:
        raise ValueError(f"sliding_window_mask needs T >= 1 and window >= 1, got T={T}, window={window}.")
    pos = torch.arange(T, device=device)  # (T,)
    return position_mask(pos, pos, causal=True, window=window)  # (T, T)


def position_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool = True,
                  window: int | None = None) -> torch.Tensor:
    """(T_q, T_k) bool mask from absolute positions (needed once a KV cache holds earlier
    tokens): causal keeps keys at k <= q; a window also drops keys at k <= q - window."""
    dist = q_pos[:, None] - k_pos[None, :]  # (T_q, T_k): how far back each key is
    keep = dist >= 0 if causal or window is not None else torch.ones_like(dist, dtype=torch.bool)
    if window is not None:
        if window < 1:
            raise ValueError(f"window={window}: expected a positive number of tokens (e.g. window=4096).")
        keep = keep & (dist < window)
    return keep  # (T_q, T_k)


# --------------------------------------------------------------------------- attention
def _check_mask(mask: torch.Tensor | None, bias: torch.Tensor | None) -> None:
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got {mask.dtype}; "
                        "convert a 0/1 mask with mask.bool().")
    if bias is not None and not bias.is_floating_point():
        raise TypeError(f"bias must be a float tensor added to the scores, got {bias.dtype}; "
                        "a bool 'may attend' tensor belongs in `mask`.")


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                      scale: float | None = None, *, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(D) + bias + mask): (..., T_q, D), (..., T_k, D) -> (..., T_q, T_k).
    `bias` is an additive float (ALiBi, T5 relative bias) broadcastable to (..., T_q, T_k)."""
    _check_mask(mask, bias)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=-1)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 scale: float | None = None) -> torch.Tensor:
    """Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(d_k)) V  (Vaswani et al. 2017, Eq. 1).

    q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask bool broadcastable to
    (..., T_q, T_k) with True = may attend. Returns (..., T_q, D_v).
    A query row whose keys are all masked returns zeros (as PyTorch's kernel does).
    """
    weights = attention_weights(q, k, mask, scale)  # (..., T_q, T_k)
    weights = torch.nan_to_num(weights, nan=0.0)  # fully masked rows
    return weights @ v  # (..., T_q, D_v)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, T, D) -> (B, H_kv * n_rep, T, D): each key/value head serves n_rep query heads."""
    if n_rep == 1:
        return x
    B, H_kv, T, D = x.shape
    x = x[:, :, None, :, :].expand(B, H_kv, n_rep, T, D)  # (B, H_kv, n_rep, T, D)
    return x.reshape(B, H_kv * n_rep, T, D)  # (B, H, T, D)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
           is_causal: bool = False, bias: torch.Tensor | None = None, scale: float | None = None,
           dropout_p: float = 0.0, return_weights: bool = False):
    """The attention step of every course_lib layer: q (B, H, T_q, D), k and v (B, H_kv, T_k, D)
    with H a multiple of H_kv (GQA), mask bool (True = may attend) and bias float, both
    broadcastable to (B, H, T_q, T_k). ``is_causal`` lets query i see keys j <= i (T_q = T_k).
    Returns y (B, H, T_q, D), or (y, weights (B, H, T_q, T_k)) with ``return_weights``.

    The fused path is one ``F.scaled_dot_product_attention`` call (its GQA, causal and masked
    forms); the from-scratch path is repeat_kv -> attention_weights -> dropout -> @ v.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or q.size(-1) != k.size(-1) or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"attend expects q (B, H, T_q, D), k and v (B, H_kv, T_k, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}.")
    if q.size(1) % k.size(1):
        raise ValueError(f"q has {q.size(1)} heads, k and v {k.size(1)}: the query heads must be a multiple of "
                         "the key/value heads (GQA).")
    _check_mask(mask, bias)
    if is_causal:
        if q.size(2) != k.size(2):
            raise ValueError(f"is_causal needs as many queries as keys (got {q.size(2)} and {k.size(2)}); with a "
                             "KV cache pass a position mask (course_lib.attention.position_mask) instead.")
        if mask is not None or bias is not None or not fused() or return_weights:
            causal = causal_mask(q.size(2), q.device)  # (T, T)
            mask, is_causal = (causal if mask is None else mask & causal), False
    n_rep = q.size(1) // k.size(1)
    if fused() and not return_weights:
        attn_mask = mask
        if bias is not None:  # one float mask: the bias where allowed, -inf where not
            attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled():
            return _sdpa_in_float32(q, k, v, attn_mask, dropout_p, is_causal, scale, n_rep > 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale, enable_gqa=n_rep > 1)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T_k, D)
    weights = attention_weights(q, k, mask, scale, bias=bias)  # (B, H, T_q, T_k)
    weights = torch.nan_to_num(weights, nan=0.0)  # fully masked rows attend to nothing
    y = F.dropout(weights, dropout_p) @ v if dropout_p > 0 else weights @ v  # (B, H, T_q, D)
    return (y, weights) if return_weights else y


def _sdpa_in_float32(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """SDPA on bfloat16 CPU tensors that will be backpropagated: PyTorch's CPU flash-attention
    *backward* is about 5x slower in bfloat16 than in float32 (measured on PyTorch 2.13 with
    AVX512-BF16), so attention itself runs in float32 and only its output returns to bfloat16;
    the projections around it keep their fast bfloat16 matmuls (``TrainConfig(fast=True)``)."""
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.float()
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                           dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                                           enable_gqa=enable_gqa)
    return y.to(q.dtype)


# --------------------------------------------------------------------------- multi-head
@dataclass
class AttentionConfig:
    """Sizes of one attention layer. ``n_kv_heads`` < ``n_heads`` gives GQA; 1 gives MQA.
    ``head_dim`` None = d_model // n_heads (Gemma- and T5-style models set it)."""
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = same as n_heads (plain multi-head attention)
    bias: bool = True
    dropout: float = 0.0
    head_dim: int | None = None

    def __post_init__(self):
        check_positive(self, "d_model", "n_heads")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        check_positive(self, "n_kv_heads")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        if self.head_dim is None:
            check_divisible(self, "d_model", "n_heads", why="every head gets d_model // n_heads channels")
            self.head_dim = self.d_model // self.n_heads
        check_positive(self, "head_dim")
        check_divisible(self, "n_heads", "n_kv_heads",
                        why="each key/value head must serve the same number of query heads")


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017, §3.2.2): project x to H query, key and
    value heads, attend in every head at once, concatenate, project back. x (B, T, C) -> (B, T, C).

    With ``n_kv_heads`` < ``n_heads`` it is grouped-query attention (GQA); with 1 it is MQA.
    K/V heads are shared by consecutive query heads (``repeat_kv``), the order Hugging Face uses.
    """

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None,
                 bias: bool = True, dropout: float = 0.0, head_dim: int | None = None,
                 scale: float | None = None):
        super().__init__()
        self.config = cfg = AttentionConfig(d_model, n_heads, n_kv_heads, bias, dropout, head_dim)
        self.scale = scale  # None = 1/sqrt(D); T5 uses 1.0 (its init absorbs the scale)
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(d_model, cfg.n_heads * cfg.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, cfg.n_kv_heads * cfg.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, cfg.n_kv_heads * cfg.head_dim, bias=bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.recorders: list[list] = []  # lists that `recording(...)` asked to receive the weights

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                return_weights: bool = False):
        """x (B, T, C); mask bool broadcastable to (B, H, T, T), True = may attend; is_causal:
        token i sees tokens j <= i. Returns y (B, T, C), or (y, weights (B, H, T, T))."""
        self.check_input(x)
        q, k, v = self.project(x, x)  # (B, H, T, D), (B, H_kv, T, D), (B, H_kv, T, D)
        out = self.attend(q, k, v, mask, is_causal=is_causal, return_weights=return_weights)
        return self.output(out, return_weights)

    # the steps, each reused by the subclasses -------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.size(-1) != self.config.d_model:
            raise ValueError(f"expected x of shape (B, T, {self.config.d_model}), got "
                             f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}.")

    def split_heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n, self.head_dim).transpose(1, 2)  # (B, T, n*D) -> (B, n, T, D)

    def project(self, x: torch.Tensor, src: torch.Tensor):
        """Queries from x (B, T, C), keys and values from src (B, T_k, C) (src = x: self-attention)."""
        # (A fused QKV projection - one matmul with the three weights concatenated - was measured
        # on the GPT-2 recipe of benchmarks/train_shakespeare.py and bought nothing on a CPU: the
        # concatenation costs what the single launch saves. Three Linear layers stay.)
        q, k, v = self.q_proj(x), self.k_proj(src), self.v_proj(src)  # (B, T, H·D), 2 x (B, T_k, H_kv·D)
        return (self.split_heads(q, self.n_heads), self.split_heads(k, self.n_kv_heads),
                self.split_heads(v, self.n_kv_heads))  # (B, H, T, D), 2 x (B, H_kv, T_k, D)

    def attend(self, q, k, v, mask=None, *, is_causal=False, bias=None, return_weights=False):
        """``attend`` with this layer's scale and dropout; a recorder gets a copy of the weights,
        computed apart so that recording leaves the output bit for bit as it was."""
        p = self.dropout.p if self.training else 0.0
        out = attend(q, k, v, mask, is_causal=is_causal, bias=bias, scale=self.scale, dropout_p=p,
                     return_weights=return_weights)
        if self.recorders:
            weights = out[1] if return_weights else attend(q, k, v, mask, is_causal=is_causal, bias=bias,
                                                           scale=self.scale, return_weights=True)[1]
            for maps in self.recorders:
                maps.append(weights.detach())
        return out

    def output(self, out, return_weights: bool):
        y, weights = out if return_weights else (out, None)  # y (B, H, T, D)
        B, H, T, D = y.shape
        y = self.o_proj(y.transpose(1, 2).reshape(B, T, H * D))  # (B, H, T, D) -> (B, T, H·D) -> (B, T, C)
        return (y, weights) if return_weights else y


class CrossAttention(MultiHeadAttention):
    """Encoder-decoder attention (Vaswani et al. 2017, §3.2.3): queries from the decoder states x
    (B, T, C), keys and values from the encoder output `memory` (B, T_enc, C). ``mask`` is
    usually the encoder's padding mask (B, 1, 1, T_enc). Called as ``cross_attn(x, memory, ...)``
    by ``course_lib.blocks.Block``."""

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None,
                return_weights: bool = False):
        self.check_input(x)
        if not isinstance(memory, torch.Tensor) or memory.dim() != 3 or memory.size(0) != x.size(0) \
                or memory.size(-1) != self.config.d_model:
            raise ValueError(f"memory (the encoder output to attend to) must have shape ({x.size(0)}, T_enc, "
                             f"{self.config.d_model}), got {tuple(getattr(memory, 'shape', ()))}.")
        q, k, v = self.project(x, memory)  # (B, H, T, D), (B, H_kv, T_enc, D) x 2
        return self.output(self.attend(q, k, v, mask, return_weights=return_weights), return_weights)


# --------------------------------------------------------------------------- looking at weights
@contextmanager
def recording(modules):
    """``with recording(attention_layers) as maps:`` every call of those layers appends its
    weights (B, H, T_q, T_k), detached, to the list ``maps``, in the order the calls ran; their
    outputs are unchanged. The one way course_lib collects attention maps: models'
    ``output_attentions``, ``analysis.record_attention`` and the ViT's maps all use it."""
    modules, maps = list(modules), []
    for m in modules:
        m.recorders.append(maps)
    try:
        yield maps
    finally:
        for m in modules:
            m.recorders[:] = [r for r in m.recorders if r is not maps]
