"""QK-norm: normalise queries and keys before their dot product, so attention logits cannot grow
without bound during training (Dehghani et al. 2023, ViT-22B §2 "QK normalization"; Wortsman
et al. 2023, "Small-scale proxies for large-scale Transformer training instabilities", §3.1).

Without it a logit q·k/√D grows with |q|·|k|, and at a high learning rate the weights that make
q and k grow until the softmax saturates into one-hot rows and training diverges. RMSNorm on q and
k fixes |q| and |k| up to the norms' learned gains. Two published placements:

  per head         (Qwen3, Gemma 3): one RMSNorm of width D shared by all heads, applied to each
                   head's q (and k) separately: ``q_norm.weight`` has shape (D,).
  whole projection (OLMo 2): one RMSNorm over the whole H·D-wide output of q_proj (and one over
                   k_proj's H_kv·D), *before* it is split into heads: ``q_norm.weight`` is (H·D,),
                   ``k_norm.weight`` is (H_kv·D,).

Either way the norm comes after the projection and before RoPE, as in Hugging Face's Qwen3,
Gemma 3 and OLMo 2.

API (stable; other modules build on it):
  QKNormAttention(d_model, n_heads, *, qk_norm="head" | "projection" | None, eps=1e-6,
                  norm="rmsnorm" or a callable norm(width, eps) -> nn.Module,
                  n_kv_heads=None, bias=False, dropout=0.0, head_dim=None, scale=None)
      a ``PositionalAttention`` (same forward: mask, is_causal, rotary, bias, cache, window) with
      sub-modules ``q_norm`` and ``k_norm`` (None when ``qk_norm`` is None). ``norm`` picks the
      norm class: ``"rmsnorm"`` is course_lib's RMSNorm (Qwen3, OLMo 2); pass a callable for a
      variant such as Gemma's (1 + weight) RMSNorm.
  QK_NORMS = ("head", "projection"): the placements.
  max_logits: set ``layer.max_logits = []`` and every forward appends the largest attention logit
      q·k·scale it computed (over the positions the mask allows), as a float: the quantity whose
      growth QK-norm stops.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from course_lib.attention import repeat_kv
from course_lib.config import ConfigError
from course_lib.norms import make_norm
from course_lib.positional_attention import PositionalAttention

QK_NORMS = ("head", "projection")


class QKNormAttention(PositionalAttention):
    """PositionalAttention with RMSNorm on q and k after the projections, before RoPE.
    x (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, n_heads: int, *, qk_norm: str | None = "head", eps: float = 1e-6,
                 norm: str | Callable[[int, float], nn.Module] = "rmsnorm", n_kv_heads: int | None = None,
                 bias: bool = False, dropout: float = 0.0, head_dim: int | None = None, scale: float | None = None):
        super().__init__(d_model, n_heads, n_kv_heads=n_kv_heads, bias=bias, dropout=dropout,
                         head_dim=head_dim, scale=scale)
        if qk_norm is not None and qk_norm not in QK_NORMS:
            raise ConfigError(f"QKNormAttention: qk_norm={qk_norm!r}: expected 'head' (one norm of width head_dim, "
                              "Qwen3 / Gemma 3), 'projection' (one norm over all heads' features, OLMo 2) or None "
                              "(no QK-norm).")
        self.qk_norm = qk_norm
        new_norm = (lambda width: make_norm(norm, width, eps)) if isinstance(norm, str) else (lambda w: norm(w, eps))
        H, H_kv, D = self.n_heads, self.n_kv_heads, self.head_dim
        widths = {"head": (D, D), "projection": (H * D, H_kv * D), None: None}[qk_norm]
        self.q_norm = None if widths is None else new_norm(widths[0])
        self.k_norm = None if widths is None else new_norm(widths[1])
        self.max_logits: list | None = None  # set to [] to record the largest logit of every call

    def project(self, x: torch.Tensor, src: torch.Tensor):
        """q, k, v as in MultiHeadAttention.project, with q and k normalised (src = x here)."""
        if self.qk_norm == "projection":  # OLMo 2: normalise the whole projection, then split
            q, k = self.q_norm(self.q_proj(x)), self.k_norm(self.k_proj(src))  # (B, T, H·D), (B, T_k, H_kv·D)
            return (self.split_heads(q, self.n_heads), self.split_heads(k, self.n_kv_heads),
                    self.split_heads(self.v_proj(src), self.n_kv_heads))  # (B, H, T, D), 2 x (B, H_kv, T_k, D)
        q, k, v = super().project(x, src)  # (B, H, T, D), (B, H_kv, T_k, D), (B, H_kv, T_k, D)
        if self.qk_norm == "head":  # Qwen3 / Gemma 3: each head's D features on their own
            q, k = self.q_norm(q), self.k_norm(k)  # RMSNorm over the last axis, D
        return q, k, v

    def attend(self, q, k, v, mask=None, *, is_causal=False, bias=None, return_weights=False):
        if self.max_logits is not None:
            self.max_logits.append(max_attention_logit(q, k, mask, is_causal, self.scale))
        return super().attend(q, k, v, mask, is_causal=is_causal, bias=bias, return_weights=return_weights)


@torch.no_grad()
def max_attention_logit(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                        is_causal: bool = False, scale: float | None = None) -> float:
    """The largest pre-softmax score q·k·scale (scale None = 1/√D) over the allowed positions.
    q (B, H, T, D), k (B, H_kv, T_k, D); mask bool broadcastable to (B, H, T, T_k)."""
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    k = repeat_kv(k, q.size(1) // k.size(1))  # (B, H, T_k, D)
    scores = (q @ k.transpose(-2, -1)).float() * scale  # (B, H, T, T_k)
    allowed = torch.ones_like(scores, dtype=torch.bool)  # (B, H, T, T_k)
    if is_causal:  # the queries are the last T of the T_k positions
        T, T_k = scores.shape[-2:]
        allowed = allowed & torch.ones(T, T_k, dtype=torch.bool, device=q.device).tril(T_k - T)
    if mask is not None:
        allowed = allowed & mask
    return scores.masked_fill(~allowed, -math.inf).max().item()
