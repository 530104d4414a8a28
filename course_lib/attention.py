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


# --------------------------------------------------------------------------- attention
def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                      scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(D) + mask): (..., T_q, D), (..., T_k, D) -> (..., T_q, T_k)."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
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

    def __post_init__(self):
        check_positive(self, "d_model", "n_heads")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        check_positive(self, "n_kv_heads")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        if self.d_model % self.n_heads:
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
        return self.d_model // self.n_heads


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections (names as in HF Llama).

    With ``n_kv_heads`` < ``n_heads`` it is grouped-query attention (GQA); with 1 it is MQA.
    """

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None,
                 bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.config = cfg = AttentionConfig(d_model, n_heads, n_kv_heads, bias, dropout)
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
                is_causal: bool = False, return_weights: bool = False):
        """x (B, T, C); mask bool broadcastable to (B, H, T, T), True = may attend."""
        if x.dim() != 3 or x.size(-1) != self.config.d_model:
            raise ValueError(f"expected x of shape (B, T, {self.config.d_model}), got {tuple(x.shape)}.")
        B, T, C = x.shape
        q = self.split_heads(self.q_proj(x), self.n_heads)  # (B, H, T, D)
        k = self.split_heads(self.k_proj(x), self.n_kv_heads)  # (B, H_kv, T, D)
        v = self.split_heads(self.v_proj(x), self.n_kv_heads)  # (B, H_kv, T, D)
        k = repeat_kv(k, self.n_heads // self.n_kv_heads)  # (B, H, T, D)
        v = repeat_kv(v, self.n_heads // self.n_kv_heads)  # (B, H, T, D)
        if is_causal:
            causal = causal_mask(T, device=x.device)  # (T, T)
            mask = causal if mask is None else mask & causal
        weights = torch.nan_to_num(attention_weights(q, k, mask), nan=0.0)  # (B, H, T, T)
        y = self.dropout(weights) @ v  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, H*D)
        y = self.o_proj(y)  # (B, T, C)
        return (y, weights) if return_weights else y
