"""What every model family shares: the output object, input checks, cache helpers and the
weight initialisation of the GPT-2 / BERT era.

``ModelOutput`` holds what a Hugging Face model returns under the same names, so code that
reads ``out.logits`` or ``out.last_hidden_state`` works with either; the course's trainer
reads ``getattr(out, "logits", out)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.attention import recording
from course_lib.config import is_tracing
from course_lib.kv_cache import KVCache


@dataclass
class ModelOutput:
    """logits (B, T, V) for LM heads; last_hidden_state (B, T, C) always; pooler_output (B, C)
    for BERT; loss when labels were given; cache = the per-layer KV caches that were updated."""
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    cache: list | None = None
    attentions: tuple | None = None  # one (B, H, T_q, T_k) map per layer, when asked for

    def __getitem__(self, key: str):
        return getattr(self, key)


def new_caches(n_layers: int, window: int | None = None) -> list[KVCache]:
    """One empty KV cache per layer (a rolling one of `window` tokens for sliding-window models)."""
    return [KVCache(window=window) for _ in range(n_layers)]


def cache_offset(cache: list | None, n_layers: int) -> int:
    """Tokens already cached = position of the first new token."""
    if cache is None:
        return 0
    if not isinstance(cache, (list, tuple)) or len(cache) != n_layers:
        raise ValueError(f"cache must be a list of {n_layers} KVCache objects (one per layer), as "
                         "returned by model.new_cache().")
    return cache[0].seq_len


def check_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError("input_ids must be an integer tensor of shape (batch, time), got "
                         f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                         f"{tuple(getattr(input_ids, 'shape', ()))}; add a batch axis with ids[None].")
    if is_tracing():  # export and compile trace shapes, not values: they cannot branch on ids
        return
    if input_ids.numel() and (int(input_ids.max()) >= vocab_size or int(input_ids.min()) < 0):
        raise ValueError(f"input_ids must lie in [0, {vocab_size}) (the vocabulary), got values in "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}].")


def run_blocks(blocks, x: torch.Tensor, output_attentions: bool = False, **kwargs):
    """Run x through `blocks`, passing kwargs to each; with output_attentions also return every
    layer's self-attention weights (B, H, T_q, T_k), recorded by ``attention.recording``."""
    if not output_attentions:
        for block in blocks:
            x = block(x, **kwargs)  # (B, T, C)
        return x, None
    with recording(b.attn for b in blocks) as maps:
        for block in blocks:
            x = block(x, **kwargs)  # (B, T, C)
    return x, tuple(maps)


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 / BERT initialisation: N(0, std) weights, zero biases, unit norm gains."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)


def count_params(model: nn.Module, trainable_only: bool = False, embeddings: bool = True) -> int:
    """Parameters of an instantiated model; a tied weight counts once. ``embeddings=False`` leaves
    out every ``nn.Embedding`` table (token and learned positions): the N of Kaplan et al. 2020,
    who found that it, not the total, predicts the loss. (`models.sizes.param_count` gives the
    same numbers from a config alone.)"""
    skip = set() if embeddings else {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum(p.numel() for p in model.parameters()  # parameters() yields a tied tensor once
               if id(p) not in skip and (p.requires_grad or not trainable_only))
