"""OLMo 2 (Team OLMo 2024, "2 OLMo 2 Furious", arXiv:2501.00656), read as LLaMA plus what
differs (§3.2 "Architecture improvements", aimed at training stability):

  * QK-norm over the whole projection: one RMSNorm over q_proj's H·D outputs and one over
    k_proj's H_kv·D outputs, before the split into heads and before RoPE
    (``course_lib.qk_norm``, placement "projection"; Qwen3 normalises each head instead);
  * the norms move *after* the sub-layers, inside the residual branch, and the input of each
    sub-layer is not normalised at all:
        LLaMA (pre-norm):    x = x + Attn(Norm(x));   x = x + FFN(Norm(x))
        OLMo 2:              x = x + Norm(Attn(x));   x = x + Norm(FFN(x))
    unlike the 2017 post-norm Norm(x + Attn(x)), the residual stream itself is never normalised;
  * otherwise LLaMA: RMSNorm, SwiGLU, RoPE (base 500,000), no biases, an untied head, a final norm.

Hugging Face names the two norms ``post_attention_layernorm`` and ``post_feedforward_layernorm``;
here they are each block's ``attn_norm`` and ``ffn_norm``, as in every course_lib block.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.blocks import Block
from course_lib.config import ConfigError, make_config
from course_lib.models.common import init_normal
from course_lib.models.llama import Llama, LlamaConfig, make_llama_ffn
from course_lib.models.sizes import ParamCount, llama_params
from course_lib.qk_norm import QKNormAttention


@dataclass
class Olmo2Config(LlamaConfig):
    """OLMo-2-1124-7B's config.json by default (huggingface.co/allenai/OLMo-2-1124-7B)."""
    vocab_size: int = 100352
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    d_ff: int | None = 11008
    max_positions: int = 4096
    rope_theta: float = 500_000.0
    eps: float = 1e-6

    def __post_init__(self):
        super().__post_init__()
        if self.sliding_window is not None or self.moe is not None:
            raise ConfigError("Olmo2Config: OLMo 2 has no sliding window and no mixture of experts; set "
                              "sliding_window=None and moe=None (Mistral/Mixtral are LlamaConfig options).")

    @property
    def family(self) -> str:
        return "OLMo 2"


class PostSublayerNormBlock(Block):
    """OLMo 2's block: x = x + Norm(Sublayer(x)) for attention and the FFN. The norms normalise
    what each sub-layer adds to the residual stream, not its input. x (B, T, C) -> (B, T, C)."""

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, f, place: str) -> torch.Tensor:
        return x + self.dropout(norm(f(x)))  # (B, T, C): the residual stream is never normalised


def olmo2_block(cfg: Olmo2Config, layer_idx: int) -> Block:
    attn = QKNormAttention(cfg.d_model, cfg.n_heads, qk_norm="projection", eps=cfg.eps, n_kv_heads=cfg.n_kv_heads,
                           bias=cfg.attention_bias, dropout=cfg.dropout, head_dim=cfg.head_dim)
    return PostSublayerNormBlock(attn, make_llama_ffn(cfg, layer_idx), cfg.d_model, norm="rmsnorm", eps=cfg.eps,
                                 dropout=cfg.dropout)


class Olmo2(Llama):
    """input_ids (B, T) -> ModelOutput(logits (B, T, V), ...): LLaMA's forward, cache and RoPE,
    with OLMo 2's blocks (the final norm stays: the last block's output is not normalised)."""

    def __init__(self, config: Olmo2Config | None = None, **overrides):
        super().__init__(make_config(Olmo2Config, config, overrides, model="Olmo2"))
        cfg = self.config  # Llama built LLaMA blocks; OLMo 2's replace them
        self.blocks = nn.ModuleList(olmo2_block(cfg, i) for i in range(cfg.n_layers))
        init_normal(self.blocks, std=0.02)


def olmo2_params(cfg: Olmo2Config) -> ParamCount:
    """LLaMA's count plus the QK-norm gains: (H + H_kv)·D per layer (the two block norms only move)."""
    count = llama_params(cfg)
    count.blocks += cfg.n_layers * (cfg.n_heads + cfg.n_kv_heads) * cfg.head_dim
    return count
