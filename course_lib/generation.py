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


def _logits(out) -> torch.Tensor:
    return getattr(out, "logits", out)


def context_length(model) -> int | None:
    """The longest input the model was built for: its config's `max_positions` (every
    course_lib model), or None when it has none (T5's relative positions have no limit)."""
    config = getattr(model, "config", None)
    for name in ("max_positions",):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


@torch.no_grad()
def generate(model, idx: torch.Tensor, n: int, use_cache: bool = True, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None,
             stop_tokens: tuple[int, ...] | list[int] = (), generator: torch.Generator | None = None,
             max_positions: int | None = None) -> torch.Tensor:
    """Append up to `n` tokens to `idx` (B, T). temperature 0 = greedy.

    With `use_cache`, the prompt is run once (prefill) and each new token is fed alone while
    the model's KV cache (`model.new_cache()`) holds the keys and values of everything before:
    one token of work per step instead of the whole sequence. Without it, the whole (cropped)
    sequence is recomputed each step; so is it once the sequence reaches the model's context
    length (`max_positions`, from the model's config unless given), keeping the last `max_positions`
    tokens. Generation stops early when every row has produced one of
    `stop_tokens` (rows that stopped are padded with their stop token).
    """
    if idx.dim() != 2:
        raise ValueError(f"idx must be (batch, time) token ids, got shape {tuple(idx.shape)}.")
    if n < 0:
        raise ValueError(f"n={n}: expected the number of tokens to generate (>= 0).")
    max_positions = max_positions or context_length(model)
    if use_cache and not hasattr(model, "new_cache"):
        raise TypeError(f"{type(model).__name__} has no KV cache (no new_cache() method); "
                        "call generate(..., use_cache=False) to recompute the context each step.")
    was_training = model.training
    model.eval()
    stop = torch.tensor(list(stop_tokens), device=idx.device, dtype=idx.dtype)
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    cache = model.new_cache() if use_cache else None
    step_input = idx
    for _ in range(n):
        if use_cache and max_positions is not None and idx.size(1) >= max_positions:
            use_cache = False  # the context is full: from now on recompute the last max_positions tokens
        if use_cache:
            logits = _logits(model(step_input, cache=cache))[:, -1]  # (B, V): only the new position
        else:
            context = idx if max_positions is None else idx[:, -max_positions:]  # (B, <=T_max)
            logits = _logits(model(context))[:, -1]  # (B, V)
        nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
        if len(stop):
            last = idx[:, -1]
            nxt = torch.where(done, last, nxt)  # finished rows repeat their stop token
            done = done | torch.isin(nxt, stop)
        idx = torch.cat([idx, nxt[:, None]], dim=1)  # (B, T+1)
        step_input = nxt[:, None]  # (B, 1): the cache holds the rest
        if len(stop) and bool(done.all()):
            break
    model.train(was_training)
    return idx


# speculative decoding lives in course_lib/speculative.py; it is part of generation's API
from course_lib.speculative import SpeculativeStats, speculative_accept, speculative_generate  # noqa: E402,F401
