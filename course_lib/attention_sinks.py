"""Attention sinks: a learned logit per head that joins the softmax but carries no value
(GPT-OSS, OpenAI 2025, "gpt-oss-120b & gpt-oss-20b Model Card", §2; the idea of a sink token that absorbs
attention is Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks").

Ordinary attention must spend all of its weight on the keys: the weights of a row sum to 1,
so a head with nothing useful to read still mixes *some* values into its output. A sink s_h
(one number per head h) is an extra entry in every row's softmax whose value vector is zero:

    p_j = exp(a_j) / (exp(s_h) + Σ_k exp(a_k)),      a_j = q·k_j / sqrt(D) (masked keys: -inf)

so the row's weights sum to σ(logsumexp(a) - s_h) < 1 and the head can attend to "nothing".
Equivalently: plain attention's output, scaled by that factor (the tests use this identity
to check the layer against ``F.scaled_dot_product_attention``).

Read top to bottom: the attention step with a sink -> ``SinkAttention``, the
``PositionalAttention`` of the model families (RoPE, KV cache, sliding window) whose attention
step is this one. Names follow Hugging Face GPT-OSS (``sinks`` of shape (H,)).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import causal_mask, repeat_kv, softmax
from course_lib.positional_attention import PositionalAttention


def sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor,
                   mask: torch.Tensor | None = None, scale: float | None = None, *,
                   bias: torch.Tensor | None = None, dropout_p: float = 0.0,
                   return_weights: bool = False):
    """Attention with one sink logit per head: q (B, H, T_q, D), k and v (B, H_kv, T_k, D)
    (H a multiple of H_kv), sinks (H,), mask bool broadcastable to (B, H, T_q, T_k) with True
    = may attend, bias an additive float. Returns y (B, H, T_q, D), or (y, weights (B, H, T_q, T_k))
    whose rows sum to less than 1: the rest went to the sink."""
    B, H, T_q, D = q.shape
    if sinks.shape != (H,):
        raise ValueError(f"sinks must hold one logit per query head, shape ({H},); got {tuple(sinks.shape)}.")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got {mask.dtype}.")
    n_rep = H // k.size(1)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T_k, D)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T_q, T_k)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    sink = sinks.to(scores.dtype).view(1, H, 1, 1).expand(B, H, T_q, 1)  # (B, H, T_q, 1)
    probs = softmax(torch.cat([scores, sink], dim=-1), dim=-1)  # (B, H, T_q, T_k + 1)
    weights = probs[..., :-1]  # (B, H, T_q, T_k): drop the sink's column, it has no value
    y = F.dropout(weights, dropout_p) @ v if dropout_p > 0 else weights @ v  # (B, H, T_q, D)
    return (y, weights) if return_weights else y


class SinkAttention(PositionalAttention):
    """``PositionalAttention`` (RoPE, KV cache, sliding window, GQA, biases) whose attention
    step has a learned sink per head: GPT-OSS's attention. x (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, n_heads: int, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        self.sinks = nn.Parameter(torch.zeros(self.n_heads))  # (H,) one logit per head; 0 = one extra "key"

    def attend(self, q, k, v, mask=None, *, is_causal=False, bias=None, return_weights=False):
        """The attention step of MultiHeadAttention, with the sink in every softmax row."""
        if is_causal:  # PositionalAttention passes a position mask instead once a cache or window is in play
            causal = causal_mask(q.size(2), q.device)  # (T, T)
            mask = causal if mask is None else mask & causal
        p = self.dropout.p if self.training else 0.0
        y, weights = sink_attention(q, k, v, self.sinks, mask, self.scale, bias=bias, dropout_p=p,
                                    return_weights=True)  # (B, H, T_q, D), (B, H, T_q, T_k)
        for maps in self.recorders:
            maps.append(weights.detach())
        return (y, weights) if return_weights else y
