"""Turning next-token logits into text: greedy, temperature, top-k, top-p (nucleus) sampling,
stop tokens, and decoding with or without a KV cache.

Temperature divides the *logits* (before softmax): T < 1 sharpens, T > 1 flattens, T -> 0 is
greedy. Top-k keeps the k most likely tokens; top-p (Holtzman et al. 2020) keeps the smallest
set of most likely tokens whose probability reaches p — including the token that crosses p.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest (per row) to -inf. logits (..., V)."""
    if k <= 0:
        raise ValueError(f"top_k={k}: expected a positive integer (or None to switch it off).")
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose total probability is >= p."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p={p}: expected a number in (0, 1].")
    if p == 1.0:
        return logits  # everything is kept (and float rounding of the cumsum cannot drop the tail)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # probability mass strictly before each token
    drop_sorted = before >= p  # the token that crosses p has before < p: it is kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,). temperature=0 means greedy (argmax)."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: expected >= 0 (0 = greedy).")
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
