"""Attention, read top to bottom: softmax -> masks -> scaled dot-product -> multi-head.

Conventions used everywhere in the course:
  * shapes: B batch, T time (sequence), C channels (= d_model), H heads, D head size.
  * boolean masks mean "True = may attend", exactly as ``F.scaled_dot_product_attention``.
  * projections are called ``q_proj, k_proj, v_proj, o_proj`` as in Hugging Face Llama.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import ConfigError, check_positive, check_range


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


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Hugging Face style ``attention_mask`` (B, T_k) of 1 = real token, 0 = padding
    -> bool mask (B, 1, 1, T_k) that broadcasts over heads and query positions."""
    if attention_mask.dim() != 2:
        raise ValueError(
            f"padding_mask expects a (batch, key_length) tensor of 1s and 0s, got shape "
            f"{tuple(attention_mask.shape)}."
        )
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
def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                      scale: float | None = None, *, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(D) + bias + mask): (..., T_q, D), (..., T_k, D) -> (..., T_q, T_k).
    `bias` is an additive float (ALiBi, T5 relative bias) broadcastable to (..., T_q, T_k)."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    if bias is not None:
        if not bias.is_floating_point():
            raise TypeError(f"bias must be a float tensor added to the scores, got {bias.dtype}; "
                            "a bool 'may attend' tensor belongs in `mask`.")
        scores = scores + bias
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(
                f"mask must be a bool tensor (True = may attend), got {mask.dtype}; "
                "convert a 0/1 mask with mask.bool()."
            )
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=-1)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 scale: float | None = None) -> torch.Tensor:
    """Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(d_k)) V  (Vaswani et al. 2017, Eq. 1).

    q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask bool broadcastable to
    (..., T_q, T_k) with True = may attend. Returns (..., T_q, D_v).
    A query row whose keys are all masked returns zeros (PyTorch returns NaN there).
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


# --------------------------------------------------------------------------- multi-head
@dataclass
class AttentionConfig:
    """Sizes of one attention layer. ``n_kv_heads`` < ``n_heads`` gives GQA; 1 gives MQA."""
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = same as n_heads (plain multi-head attention)
    bias: bool = True
    dropout: float = 0.0
    head_dim_override: int | None = None  # None = d_model // n_heads (Gemma-style models set it)

    def __post_init__(self):
        check_positive(self, "d_model", "n_heads")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        check_positive(self, "n_kv_heads")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        if self.head_dim_override is not None:
            check_positive(self, "head_dim_override")
        elif self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}: every head "
                f"gets d_model // n_heads channels. Choose d_model as a multiple of n_heads "
                f"(e.g. d_model={self.n_heads * max(1, round(self.d_model / self.n_heads))}) "
                f"or a divisor of {self.d_model} for n_heads."
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}: each "
                "key/value head must serve the same number of query heads. Choose n_kv_heads "
                f"among the divisors of {self.n_heads}."
            )

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.d_model // self.n_heads


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections (names as in HF Llama).

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

    def split_heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n, self.head_dim).transpose(1, 2)  # (B, T, n*D) -> (B, n, T, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                is_causal: bool = False, return_weights: bool = False, *,
                rotary=None, bias: torch.Tensor | None = None, cache=None, window: int | None = None,
                kv: torch.Tensor | None = None):
        """x (B, T, C); mask bool broadcastable to (B, H, T, T_k), True = may attend.

        rotary: RoPE for q and k, either ``(cos, sin)`` of the new tokens, each (T, D) or (B, T, D)
                in Hugging Face's "half" layout, or a callable ``rotary(x, positions) -> x``.
        bias:   additive float scores (ALiBi, T5 relative bias), broadcastable to (B, H, T, T_k).
        cache:  a ``course_lib.kv_cache.KVCache``: the new keys/values are appended to it (before
                repeat_kv, so it stores H_kv heads) and positions continue from ``cache.seq_len``.
        window: sliding-window attention (implies causal): position p sees keys p-window+1 .. p.
        kv:     cross-attention: keys and values come from this (B, T_k, C) tensor (the encoder
                output) instead of x; see CrossAttention.
        """
        if x.dim() != 3 or x.size(-1) != self.config.d_model:
            raise ValueError(f"expected x of shape (B, T, {self.config.d_model}), got {tuple(x.shape)}.")
        B, T, C = x.shape
        offset = 0 if cache is None else cache.seq_len
        positions = torch.arange(offset, offset + T, device=x.device)  # (T,)
        q = self.split_heads(self.q_proj(x), self.n_heads)  # (B, H, T, D)
        src = x if kv is None else self._check_kv(kv, B, rotary, cache)
        k = self.split_heads(self.k_proj(src), self.n_kv_heads)  # (B, H_kv, T_k, D)
        v = self.split_heads(self.v_proj(src), self.n_kv_heads)  # (B, H_kv, T_k, D)
        if rotary is not None:
            q, k = self.rotate(q, rotary, positions), self.rotate(k, rotary, positions)
        k_pos = positions if kv is None else torch.arange(kv.size(1), device=x.device)  # (T_k,)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H_kv, T_k, D): every key so far
            k_pos = cache.key_positions.to(x.device)  # (T_k,)
        k = repeat_kv(k, self.n_heads // self.n_kv_heads)  # (B, H, T_k, D)
        v = repeat_kv(v, self.n_heads // self.n_kv_heads)  # (B, H, T_k, D)
        if is_causal or window is not None:
            allowed = position_mask(positions, k_pos, causal=True, window=window)  # (T, T_k)
            mask = allowed if mask is None else mask & allowed
        weights = attention_weights(q, k, mask, self.scale, bias=bias)  # (B, H, T, T_k)
        weights = torch.nan_to_num(weights, nan=0.0)  # fully masked rows
        y = self.dropout(weights) @ v  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, H, T, D) -> (B, T, H*D)
        y = self.o_proj(y)  # (B, T, C)
        return (y, weights) if return_weights else y

    def _check_kv(self, kv: torch.Tensor, B: int, rotary, cache) -> torch.Tensor:
        if kv.dim() != 3 or kv.size(0) != B or kv.size(-1) != self.config.d_model:
            raise ValueError(f"kv (the memory to attend to) must have shape ({B}, T_k, {self.config.d_model}), "
                             f"got {tuple(kv.shape)}.")
        if rotary is not None or cache is not None:
            raise ValueError("cross-attention (kv=...) takes no rotary and no KV cache: its keys are the "
                             "encoder's, the same at every decoding step.")
        return kv

    @staticmethod
    def rotate(x: torch.Tensor, rotary, positions: torch.Tensor) -> torch.Tensor:
        """Apply RoPE to q or k (B, H, T, D) given as (cos, sin) or as a callable (see forward)."""
        if callable(rotary):
            return rotary(x, positions)
        if isinstance(rotary, (tuple, list)) and len(rotary) == 2:
            from course_lib.positional import apply_rotary  # lesson 02's RoPE
            return apply_rotary(x, rotary[0], rotary[1], layout="half")
        raise TypeError("rotary must be (cos, sin) from course_lib.positional.rope_cos_sin(..., "
                        f"layout='half') or a callable rotary(x, positions); got {type(rotary).__name__}.")


class CrossAttention(MultiHeadAttention):
    """Encoder-decoder attention (Vaswani et al. 2017, §3.2.3): queries from the decoder states x
    (B, T, C), keys and values from the encoder output `memory` (B, T_enc, C). ``mask`` is
    usually the encoder's padding mask (B, 1, 1, T_enc). Called as ``cross_attn(x, memory, ...)``
    by ``course_lib.blocks.Block``."""

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None,
                return_weights: bool = False, *, bias: torch.Tensor | None = None):
        return super().forward(x, mask, return_weights=return_weights, bias=bias, kv=memory)
