"""GPT-2 (Radford et al. 2019), read top to bottom: config -> model -> forward -> sizes.

The layout of the 2019 model card and of nanoGPT:
  * token embedding + learned absolute position embedding (GPT-1 §3.1 kept in GPT-2);
  * N pre-LN blocks: x = x + Attn(LN(x)); x = x + MLP(LN(x)) (GPT-2 §2.3 moved the norm to
    each sub-block's input) with causal multi-head self-attention and a GELU-tanh MLP of 4·C;
  * a final LayerNorm (also new in GPT-2) and an LM head that *shares* the token-embedding
    matrix (weight tying, Press & Wolf 2017): logits = h · Eᵀ.

Names inside a block are course_lib's (``attn.q_proj``, ``ffn.up_proj``, ``attn_norm``);
``course_lib.interop`` maps them from Hugging Face's ``GPT2LMHeadModel``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.attention import padding_mask
from course_lib.blocks import Block
from course_lib.config import ConfigError, check_divisible, check_positive, check_range, make_config
from course_lib.ffn import check_activation, make_ffn
from course_lib.models.common import ModelOutput, cache_offset, check_input_ids, init_normal, new_caches
from course_lib.norms import make_norm
from course_lib.positional import LearnedPositionalEmbedding
from course_lib.positional_attention import PositionalAttention


@dataclass
class GPTConfig:
    """GPT-2 small by default (124M parameters). ``d_ff`` None = 4·d_model."""
    vocab_size: int = 50257
    max_positions: int = 1024  # the context length (n_positions / block_size)
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int | None = None
    activation: str = "gelu_tanh"
    eps: float = 1e-5
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True

    def __post_init__(self):
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        check_positive(self, "vocab_size", "max_positions", "d_model", "n_layers", "n_heads", "d_ff")
        check_divisible(self, "d_model", "n_heads", why="each head gets d_model // n_heads channels")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        if not (isinstance(self.eps, float) and 0 < self.eps < 1):
            raise ConfigError(f"GPTConfig.eps={self.eps!r}: expected a small positive float (GPT-2: 1e-5).")
        check_activation(self, hint="GPT-2: 'gelu_tanh'")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def gpt_block(cfg: GPTConfig) -> Block:
    """One GPT-2 block: pre-LN, causal MHA with biases, GELU-tanh MLP."""
    attn = PositionalAttention(cfg.d_model, cfg.n_heads, bias=cfg.bias, dropout=cfg.dropout)  # its KV cache
    ffn = make_ffn(cfg.d_model, cfg.d_ff, cfg.activation, bias=cfg.bias)
    return Block(attn, ffn, cfg.d_model, norm_placement="pre", norm="layernorm", eps=cfg.eps,
                 dropout=cfg.dropout, norm_bias=cfg.bias)


class GPT(nn.Module):
    """input_ids (B, T) -> ModelOutput(logits (B, T, V), last_hidden_state (B, T, C))."""

    def __init__(self, config: GPTConfig | None = None, **overrides):
        super().__init__()
        self.config = cfg = make_config(GPTConfig, config, overrides, model="GPT")
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = LearnedPositionalEmbedding(cfg.max_positions, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(gpt_block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = make_norm("layernorm", cfg.d_model, cfg.eps, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # one matrix: embeds ids and scores them

    def reset_parameters(self) -> None:
        """GPT-2 §2.3: N(0, 0.02), and the projections that write into the residual stream
        scaled by 1/√(2N) (two per block), so the stream's variance does not grow with depth."""
        init_normal(self, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith(("attn.o_proj.weight", "ffn.down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layers))

    def new_cache(self, batch_size: int | None = None) -> list:
        """Empty KV caches, one per block; pass as ``model(ids, cache=caches)`` and keep passing
        the same list: each call appends its tokens. (batch_size is fixed by the first call.)"""
        return new_caches(self.config.n_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: list | None = None) -> ModelOutput:
        """input_ids (B, T); attention_mask (B, T_k) 1 = token, 0 = padding (T_k counts cached
        tokens too); position_ids (B, T) or (T,), default offset .. offset+T-1 after the cache."""
        cfg = self.config
        check_input_ids(input_ids, cfg.vocab_size)
        B, T = input_ids.shape
        offset = cache_offset(cache, cfg.n_layers)
        if position_ids is None:
            position_ids = torch.arange(offset, offset + T, device=input_ids.device)  # (T,)
        x = self.tok_emb(input_ids) + self.pos_emb(position_ids)  # (B, T, C)
        x = self.drop(x)
        mask = padding_mask(attention_mask, (B, offset + T))  # (B, 1, 1, T_k) or None
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, is_causal=True, cache=None if cache is None else cache[i])  # (B, T, C)
        h = self.final_norm(x)  # (B, T, C)
        return ModelOutput(logits=self.lm_head(h), last_hidden_state=h, cache=cache)  # logits (B, T, V)

