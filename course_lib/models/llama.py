"""LLaMA (Touvron et al. 2023) and Mistral (Jiang et al. 2023), read top to bottom.

What changed since GPT-2, each a swap of one part (LLaMA §2.2 lists them):
  * RMSNorm instead of LayerNorm, pre-normalisation (from GPT-3);
  * SwiGLU feed-forward (Shazeer 2020) with d_ff = 2/3 · 4·C rounded up;
  * rotary position embeddings (RoPE, Su et al. 2021) in every attention layer instead of a
    learned absolute table; no biases anywhere; an untied LM head;
  * LLaMA-2 (70B) and Mistral: grouped-query attention, ``n_kv_heads`` < ``n_heads``;
  * Mistral: sliding-window attention, each token sees the last ``sliding_window`` tokens
    (§2 "Sliding Window Attention"), and a rolling KV cache of that many tokens.

The feed-forward of each block is built by ``make_llama_ffn``: with ``config.moe`` set (an
object with ``build(config, layer_idx) -> nn.Module``) a mixture of experts replaces it, as in
Mixtral; everything else stays the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from course_lib.attention import padding_mask
from course_lib.blocks import Block
from course_lib.config import ConfigError, check_divisible, check_positive, check_range, make_config
from course_lib.ffn import check_activation, llama_hidden_size, make_ffn
from course_lib.models.common import ModelOutput, cache_offset, check_input_ids, init_normal, new_caches
from course_lib.norms import make_norm
from course_lib.positional import RopeScaling, rope_cos_sin
from course_lib.positional_attention import PositionalAttention


@dataclass
class LlamaConfig:
    """LLaMA-2-7B by default. ``n_kv_heads`` None = n_heads; ``head_dim`` None = d_model // n_heads;
    ``d_ff`` None = LLaMA's 2/3·4·C rounded up to a multiple of 256."""
    vocab_size: int = 32000
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    max_positions: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | dict | None = None
    eps: float = 1e-5
    activation: str = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_weights: bool = False
    sliding_window: int | None = None  # Mistral: 4096
    dropout: float = 0.0
    moe: Any = None  # an MoE config (lesson 08): anything with build(config, layer_idx) -> nn.Module

    def __post_init__(self):
        self.n_kv_heads = self.n_heads if self.n_kv_heads is None else self.n_kv_heads
        self.d_ff = llama_hidden_size(self.d_model) if self.d_ff is None else self.d_ff
        check_positive(self, "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_positions")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        if self.head_dim is None:
            check_divisible(self, "d_model", "n_heads", why="each head gets d_model // n_heads channels "
                            "unless head_dim is given explicitly")
            self.head_dim = self.d_model // self.n_heads
        if self.head_dim < 2 or self.head_dim % 2:
            raise ConfigError(f"LlamaConfig.head_dim={self.head_dim}: RoPE rotates pairs of features, so it "
                              "must be even (e.g. head_dim=64).")
        check_divisible(self, "n_heads", "n_kv_heads", why="each key/value head serves the same number of query heads")
        check_positive(self, "sliding_window", allow_none=True)
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        if not self.rope_theta > 0:
            raise ConfigError(f"LlamaConfig.rope_theta={self.rope_theta!r}: expected a positive base (e.g. 10000.0).")
        if self.moe is not None and not callable(getattr(self.moe, "build", None)):
            raise ConfigError("LlamaConfig.moe must be None or an object with build(config, layer_idx) -> nn.Module.")
        check_activation(self, hint="LLaMA: 'silu'")

    @property
    def family(self) -> str:
        return "Mistral" if self.sliding_window is not None else "LLaMA"


def mistral_config(**overrides) -> LlamaConfig:
    """Mistral-7B-v0.1's config.json by default: GQA 32/8, d_ff 14336, a 4096-token window."""
    base = dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336, max_positions=32768,
                eps=1e-5, sliding_window=4096)
    return LlamaConfig(**{**base, **overrides})


def make_llama_ffn(cfg: LlamaConfig, layer_idx: int) -> nn.Module:
    """SwiGLU (gate_proj, up_proj, down_proj) - or the MoE layer when ``cfg.moe`` is set."""
    if cfg.moe is not None:
        return cfg.moe.build(cfg, layer_idx)
    return make_ffn(cfg.d_model, cfg.d_ff, cfg.activation, gated=True, bias=cfg.mlp_bias)


def llama_block(cfg: LlamaConfig, layer_idx: int) -> Block:
    attn = PositionalAttention(cfg.d_model, cfg.n_heads, n_kv_heads=cfg.n_kv_heads, bias=cfg.attention_bias,
                               dropout=cfg.dropout, head_dim=cfg.head_dim)
    return Block(attn, make_llama_ffn(cfg, layer_idx), cfg.d_model, norm_placement="pre", norm="rmsnorm",
                 eps=cfg.eps, dropout=cfg.dropout)


class Llama(nn.Module):
    """input_ids (B, T) -> ModelOutput(logits (B, T, V), last_hidden_state (B, T, C)).
    Mistral is the same class with ``sliding_window`` set."""

    def __init__(self, config: LlamaConfig | None = None, **overrides):
        super().__init__()
        self.config = cfg = make_config(LlamaConfig, config, overrides, model="Llama")
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(llama_block(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = make_norm("rmsnorm", cfg.d_model, cfg.eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_normal(self, std=0.02)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def new_cache(self, batch_size: int | None = None) -> list:
        """One KV cache per block; rolling caches of ``sliding_window`` tokens for Mistral."""
        return new_caches(self.config.n_layers, window=self.config.sliding_window)

    def rotary(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (T, D) or (B, T, D) for the given positions, computed once for all layers."""
        cfg = self.config
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, "half", cfg.rope_scaling)
        return cos.to(dtype), sin.to(dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: list | None = None) -> ModelOutput:
        """input_ids (B, T); attention_mask (B, offset + T) 1 = token, 0 = padding, for every
        token so far (cached ones included, as in Hugging Face); position_ids (T,) or (B, T), default continuing after the cache."""
        cfg = self.config
        check_input_ids(input_ids, cfg.vocab_size)
        B, T = input_ids.shape
        offset = cache_offset(cache, cfg.n_layers)
        if position_ids is None:
            position_ids = torch.arange(offset, offset + T, device=input_ids.device)  # (T,)
        x = self.tok_emb(input_ids)  # (B, T, C): no position added here, RoPE acts inside attention
        rotary = self.rotary(position_ids, x.dtype)  # 2 x (T, D)
        mask = padding_mask(attention_mask, (B, offset + T))  # (B, 1, 1, offset + T)
        if mask is not None:
            mask = mask[..., -self._keys(cache, offset, T):]  # (B, 1, 1, T_k): a rolling cache dropped the oldest
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, is_causal=True, rotary=rotary, window=cfg.sliding_window,
                      cache=None if cache is None else cache[i])  # (B, T, C)
        h = self.final_norm(x)  # (B, T, C)
        return ModelOutput(logits=self.lm_head(h), last_hidden_state=h, cache=cache)  # logits (B, T, V)

    def _keys(self, cache, offset: int, T: int) -> int:
        """How many keys attention sees: a rolling cache holds at most sliding_window old ones."""
        if cache is None or cache[0].k is None:
            return offset + T
        return cache[0].k.size(2) + T
