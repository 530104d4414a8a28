"""GPT-OSS (OpenAI 2025, "gpt-oss-120b & gpt-oss-20b Model Card", arXiv:2508.10925, §2),
read top to bottom.

What differs from Mixtral (``course_lib.models.llama`` with ``LlamaConfig.moe``):
  * attention sinks: a learned logit per head joins every softmax row, so a head can
    give weight to nothing (``course_lib.attention_sinks.SinkAttention``);
  * sliding and full attention alternate, layer by layer (a banded window of 128 tokens, then
    a dense layer): ``layer_types``, shared with Gemma 3;
  * biases in every attention projection, in the router and in the experts;
  * the MoE: top-k routing whose weights are a softmax over the k *selected* logits
    (top-4 of 128 experts in gpt-oss-120b), and each expert a clamped SwiGLU:
        gate = min(x W_g + b_g, limit),  up = clamp(x W_u + b_u, -limit, limit),
        expert(x) = ((up + 1) · gate · σ(α · gate)) W_d + b_d,    α = 1.702, limit = 7.0
    (σ(1.702·z)·z is the sigmoid approximation of GELU; the clamps keep activations bounded);
  * YaRN RoPE scaling (``course_lib.positional.RopeScaling(kind="yarn")``): factor 32 over a
    4096-token original context, base 150 000, band edges not rounded (``truncate=False``);
  * no weight tying; RMSNorm with ε = 1e-5; GQA with 64 query and 8 key/value heads of size 64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from course_lib.attention_sinks import SinkAttention
from course_lib.blocks import Block
from course_lib.config import ConfigError, check_divisible, check_positive, check_range, make_config
from course_lib.ffn import ffn_params
from course_lib.kv_cache import KVCache
from course_lib.models.common import ModelOutput, cache_offset, check_input_ids, init_normal
from course_lib.models.gemma3 import LAYER_TYPES, check_layer_types, interleaved_layer_types, layer_caches, run_layers
from course_lib.models.sizes import ParamCount, attention_params
from course_lib.moe import SparseMoE
from course_lib.norms import make_norm
from course_lib.positional import RopeScaling, rope_cos_sin


def gpt_oss_yarn() -> RopeScaling:
    """The released models' rope_scaling: YaRN x32 over the 4096 tokens of pre-training."""
    return RopeScaling("yarn", 32.0, original_max_positions=4096, beta_fast=32.0, beta_slow=1.0, truncate=False)


@dataclass
class GptOssConfig:
    """gpt-oss-120b's config.json by default. ``layer_types`` None = sliding, full, sliding, full, ...;
    ``rope_scaling`` None = plain RoPE."""
    vocab_size: int = 201088
    d_model: int = 2880
    n_layers: int = 36
    n_heads: int = 64
    n_kv_heads: int = 8
    head_dim: int = 64
    d_ff: int = 2880  # each expert's width
    n_experts: int = 128
    top_k: int = 4
    sliding_window: int | None = 128
    layer_types: tuple[str, ...] | None = None
    max_positions: int = 131072
    rope_theta: float = 150000.0
    rope_scaling: RopeScaling | dict | None = field(default_factory=gpt_oss_yarn)
    eps: float = 1e-5
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    attention_bias: bool = True
    tie_weights: bool = False

    def __post_init__(self):
        check_positive(self, "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                       "n_experts", "top_k", "max_positions")
        if self.head_dim % 2:
            raise ConfigError(f"GptOssConfig.head_dim={self.head_dim}: RoPE rotates pairs of features, so it must "
                              "be even (e.g. head_dim=64).")
        check_divisible(self, "n_heads", "n_kv_heads", why="each key/value head serves the same number of query heads")
        if self.top_k > self.n_experts:
            raise ConfigError(f"GptOssConfig.top_k={self.top_k} is more than n_experts={self.n_experts}: each token "
                              "picks top_k distinct experts; choose top_k <= n_experts (gpt-oss: 4 of 128).")
        if self.layer_types is None:
            self.layer_types = interleaved_layer_types(self.n_layers, every=2)
        if not isinstance(self.layer_types, str):  # a string is refused by check_layer_types
            self.layer_types = tuple(self.layer_types)
        check_layer_types(self)
        for name in ("rope_theta", "swiglu_alpha", "swiglu_limit"):
            check_range(self, name, 0, float("inf"), low_inclusive=False, hint="gpt-oss: 150000.0, 1.702, 7.0")
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)


def gpt_oss_20b_config(**overrides) -> GptOssConfig:
    """gpt-oss-20b's config.json: 24 layers, 32 experts (RoPE unscaled here, as above)."""
    return GptOssConfig(**{"n_layers": 24, "n_experts": 32, **overrides})


# --------------------------------------------------------------------------- the MoE
class ClampedSwiGLU(nn.Module):
    """One GPT-OSS expert: ((up + 1) · gate · σ(α·gate)) W_down + b, with gate clamped above at
    ``limit`` and up clamped to [-limit, limit]. x (N, C) -> (N, C)."""

    def __init__(self, d_model: int, d_ff: int, alpha: float = 1.702, limit: float = 7.0):
        super().__init__()
        self.alpha, self.limit = alpha, limit
        self.gate_proj = nn.Linear(d_model, d_ff)
        self.up_proj = nn.Linear(d_model, d_ff)
        self.down_proj = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(x).clamp(max=self.limit)  # (N, d_ff): only from above
        up = self.up_proj(x).clamp(-self.limit, self.limit)  # (N, d_ff)
        glu = gate * torch.sigmoid(self.alpha * gate)  # (N, d_ff): SiLU with a gain, ≈ GELU
        return self.down_proj((up + 1) * glu)  # (N, C): the +1 lets up = 0 pass the gate through


class GptOssMoE(SparseMoE):
    """The course's SparseMoE (lesson 08) with GPT-OSS's parts: a router with a bias, weights =
    softmax over the top-k logits ("topk_softmax"), clamped-SwiGLU experts with biases.
    x (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int, alpha: float = 1.702,
                 limit: float = 7.0):
        super().__init__(d_model, d_ff, n_experts, top_k, order="topk_softmax", router_bias=True,
                         expert=lambda: ClampedSwiGLU(d_model, d_ff, alpha, limit))


# --------------------------------------------------------------------------- the model
def gpt_oss_block(cfg: GptOssConfig) -> Block:
    attn = SinkAttention(cfg.d_model, cfg.n_heads, n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                         bias=cfg.attention_bias)
    moe = GptOssMoE(cfg.d_model, cfg.d_ff, cfg.n_experts, cfg.top_k, cfg.swiglu_alpha, cfg.swiglu_limit)
    return Block(attn, moe, cfg.d_model, norm_placement="pre", norm="rmsnorm", eps=cfg.eps)


class GptOss(nn.Module):
    """input_ids (B, T) -> ModelOutput(logits (B, T, V), last_hidden_state (B, T, C))."""

    def __init__(self, config: GptOssConfig | None = None, **overrides):
        super().__init__()
        self.config = cfg = make_config(GptOssConfig, config, overrides, model="GptOss")
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(gpt_oss_block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = make_norm("rmsnorm", cfg.d_model, cfg.eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_normal(self, std=0.02)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def new_cache(self, batch_size: int | None = None) -> list[KVCache]:
        """Rolling caches of sliding_window tokens on the banded layers, full ones on the dense layers."""
        return layer_caches(self.config)

    def rotary(self, positions: torch.Tensor, dtype: torch.dtype) -> dict:
        """{layer type: (cos, sin)}, each (T, D) or (B, T, D): the same RoPE for both types."""
        cfg = self.config
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, "half", cfg.rope_scaling)
        return dict.fromkeys(LAYER_TYPES, (cos.to(dtype), sin.to(dtype)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: list | None = None) -> ModelOutput:
        """As ``Llama.forward``: attention_mask (B, offset + T) covers the cached tokens too."""
        cfg = self.config
        check_input_ids(input_ids, cfg.vocab_size)
        offset = cache_offset(cache, cfg.n_layers)
        if position_ids is None:
            position_ids = torch.arange(offset, offset + input_ids.size(1), device=input_ids.device)  # (T,)
        x = self.tok_emb(input_ids)  # (B, T, C)
        rotary = self.rotary(position_ids, x.dtype)  # {type: 2 x (T, D)}
        x = run_layers(self.blocks, cfg, x, rotary, attention_mask, cache, offset)  # (B, T, C)
        h = self.final_norm(x)  # (B, T, C)
        return ModelOutput(logits=self.lm_head(h), last_hidden_state=h, cache=cache)  # logits (B, T, V)


# --------------------------------------------------------------------------- size
def gpt_oss_params(cfg: GptOssConfig) -> ParamCount:
    """Parameters from the config alone. ``inactive`` = the experts a token's router skips
    (n_experts - top_k per layer). The model card's "active" count also leaves out the token
    embedding table (a lookup, not a matmul): ``active - embeddings``."""
    C = cfg.d_model
    expert = ffn_params(C, cfg.d_ff, gated=True, bias=True)  # gate_proj, up_proj, down_proj + biases
    block = attention_params(C, cfg.n_heads, cfg.head_dim, cfg.n_kv_heads, bias=cfg.attention_bias)
    block += cfg.n_heads  # the sinks
    block += C * cfg.n_experts + cfg.n_experts + cfg.n_experts * expert + 2 * C  # router, experts, 2 norms
    return ParamCount(embeddings=cfg.vocab_size * C, blocks=cfg.n_layers * block,
                      head=0 if cfg.tie_weights else cfg.vocab_size * C, other=C,
                      inactive=cfg.n_layers * (cfg.n_experts - cfg.top_k) * expert)
