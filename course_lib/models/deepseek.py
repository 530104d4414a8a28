"""DeepSeek-V3 (DeepSeek-AI, "DeepSeek-V3 Technical Report", arXiv:2412.19437, 2024), read top to
bottom: the config -> the block -> the model -> its parameter count -> its KV cache against GQA and MHA.

What differs from LLaMA (``course_lib.models.llama``), each a swap of one part:
  * attention is multi-head latent attention (``course_lib.mla``; V3 report §2.1.1, from DeepSeek-V2):
    low-rank queries and keys/values, decoupled RoPE features, a cache of one latent per token;
    RoPE rotates adjacent feature pairs (HF ``rope_interleave=True``) on qk_rope_head_dim features only;
  * the feed-forward is a DeepSeekMoE layer (``course_lib.moe_deepseek``; §2.1.2): 256 fine-grained
    routed experts (8 per token, sigmoid scores, group-limited top-k, an aux-loss-free balancing
    bias) plus 1 shared expert - except in the first ``first_k_dense_replace`` = 3 layers, which keep
    a dense SwiGLU FFN of width ``d_ff`` = 18432;
  * the MTP (multi-token prediction) module of §2.2 is a training-time extra and is not part of the
    model here, as it is not part of Hugging Face's DeepseekV3ForCausalLM (see ``mtp_params``).
Unchanged: pre-norm RMSNorm blocks, SwiGLU experts, no biases, an untied LM head.

The published config also stretches RoPE with YaRN (``rope_scaling``: factor 40 over 4096 trained
positions, mscale = mscale_all_dim = 1), which besides the frequencies rescales the softmax by
mscale(factor, mscale_all_dim)² (``softmax_scale``); ``rope_scaling=None`` is plain RoPE.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.attention import padding_mask
from course_lib.blocks import Block
from course_lib.config import ConfigError, check_positive, check_range, make_config
from course_lib.ffn import check_activation, ffn_params, make_ffn
from course_lib.kv_cache import ModelShape, format_bytes
from course_lib.mla import LatentCache, MLAConfig, MultiHeadLatentAttention
from course_lib.models.common import ModelOutput, cache_offset, check_input_ids, init_normal
from course_lib.models.sizes import ParamCount
from course_lib.moe_deepseek import DeepSeekMoE, DeepSeekMoEConfig
from course_lib.norms import make_norm
from course_lib.positional import RopeScaling, rope_cos_sin


# --------------------------------------------------------------------------- the config
@dataclass
class DeepSeekV3Config:
    """DeepSeek-V3 by default: the values of deepseek-ai/DeepSeek-V3's config.json on the Hugging Face
    Hub (its HF names in the comments), typed in here. It reports 671 B parameters, 37 B activated
    per token (report, abstract and §2)."""
    vocab_size: int = 129280
    d_model: int = 7168  # hidden_size
    n_layers: int = 61  # num_hidden_layers
    n_heads: int = 128  # num_attention_heads (= num_key_value_heads: MLA has no GQA)
    d_ff: int = 18432  # intermediate_size: the dense FFN of the first layers
    moe_d_ff: int = 2048  # moe_intermediate_size: each routed and shared expert
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    top_k: int = 8  # num_experts_per_tok
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    first_k_dense_replace: int = 3  # layers 0..2 dense, 3..60 MoE
    q_lora_rank: int | None = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    max_positions: int = 163840  # max_position_embeddings (with YaRN; 4096 without)
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | dict | None = None  # published: YaRN, see published_rope_scaling()
    rope_interleave: bool = True  # RoPE on adjacent pairs (2i, 2i+1)
    eps: float = 1e-6  # rms_norm_eps
    activation: str = "silu"  # hidden_act
    attention_bias: bool = False
    tie_weights: bool = False  # tie_word_embeddings
    dropout: float = 0.0

    def __post_init__(self):
        check_positive(self, "vocab_size", "d_model", "n_layers", "max_positions")
        check_range(self, "first_k_dense_replace", 0, self.n_layers, integer=True,
                    hint=f"how many of the {self.n_layers} layers keep a dense FFN; DeepSeek-V3: 3")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        if not self.rope_theta > 0:
            raise ConfigError(f"DeepSeekV3Config.rope_theta={self.rope_theta!r}: expected a positive base "
                              "(e.g. 10000.0).")
        check_activation(self, hint="DeepSeek: 'silu'")
        check_positive(self, "d_ff", "moe_d_ff")
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        try:  # the attention and the MoE validate their own fields; say whose fields they are
            self.mla_config()
            if self.first_k_dense_replace < self.n_layers:
                self.moe_config()
        except ConfigError as err:
            raise ConfigError(f"DeepSeekV3Config: {err}") from None

    def mla_config(self) -> MLAConfig:
        return MLAConfig(self.d_model, self.n_heads, self.q_lora_rank, self.kv_lora_rank, self.qk_nope_head_dim,
                         self.qk_rope_head_dim, self.v_head_dim, self.attention_bias, self.dropout,
                         "adjacent" if self.rope_interleave else "half")

    def moe_config(self) -> DeepSeekMoEConfig:
        return DeepSeekMoEConfig(self.d_model, self.moe_d_ff, self.n_routed_experts, self.top_k,
                                 self.n_shared_experts, self.n_group, self.topk_group, self.routed_scaling_factor,
                                 self.norm_topk_prob, self.activation)

    def is_moe_layer(self, layer_idx: int) -> bool:
        return layer_idx >= self.first_k_dense_replace


def published_rope_scaling() -> RopeScaling:
    """The rope_scaling of DeepSeek-V3's config.json: YaRN stretching 4096 trained positions 40-fold."""
    return RopeScaling("yarn", 40.0, original_max_positions=4096, beta_fast=32.0, beta_slow=1.0, mscale=1.0,
                       mscale_all_dim=1.0)


def softmax_scale(cfg: DeepSeekV3Config) -> float:
    """1/sqrt(qk_nope_head_dim + qk_rope_head_dim), times mscale(factor, mscale_all_dim)² under YaRN
    with mscale_all_dim (DeepSeek's rule, as in its released code and Hugging Face), where
    mscale(s, m) = 0.1·m·ln(s) + 1: the attention temperature of YaRN §3.4, applied to the whole logit."""
    scale = cfg.mla_config().qk_head_dim ** -0.5
    s = cfg.rope_scaling
    m = getattr(s, "mscale_all_dim", None) if s is not None else None
    if m and s.factor > 1:
        scale *= (0.1 * m * math.log(s.factor) + 1.0) ** 2
    return scale


# --------------------------------------------------------------------------- the block
def deepseek_block(cfg: DeepSeekV3Config, layer_idx: int) -> Block:
    """Pre-norm block: MLA, then a dense SwiGLU (first layers) or a DeepSeekMoE."""
    m = cfg.mla_config()
    attn = MultiHeadLatentAttention(m.d_model, m.n_heads, q_lora_rank=m.q_lora_rank, kv_lora_rank=m.kv_lora_rank,
                                    qk_nope_head_dim=m.qk_nope_head_dim, qk_rope_head_dim=m.qk_rope_head_dim,
                                    v_head_dim=m.v_head_dim, bias=m.bias, dropout=m.dropout,
                                    rope_layout=m.rope_layout, scale=softmax_scale(cfg))
    if cfg.is_moe_layer(layer_idx):
        ffn = DeepSeekMoE(cfg.moe_config())
    else:
        ffn = make_ffn(cfg.d_model, cfg.d_ff, cfg.activation, gated=True, bias=False)
    return Block(attn, ffn, cfg.d_model, norm_placement="pre", norm="rmsnorm", eps=cfg.eps, dropout=cfg.dropout)


# --------------------------------------------------------------------------- the model
class DeepSeekV3(nn.Module):
    """input_ids (B, T) -> ModelOutput(logits (B, T, V), last_hidden_state (B, T, C)), equal to Hugging
    Face's DeepseekV3ForCausalLM. ``forward(..., absorbed=True)`` runs every MLA layer in its absorbed form."""

    def __init__(self, config: DeepSeekV3Config | None = None, **overrides):
        super().__init__()
        self.config = cfg = make_config(DeepSeekV3Config, config, overrides, model="DeepSeekV3")
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(deepseek_block(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = make_norm("rmsnorm", cfg.d_model, cfg.eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_normal(self, std=0.02)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def new_cache(self, batch_size: int | None = None) -> list[LatentCache]:
        """One latent cache per block: c_KV and the RoPE key of every token, nothing per head."""
        return [LatentCache() for _ in range(self.config.n_layers)]

    def rotary(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (T, d_r) or (B, T, d_r) for the RoPE features, computed once for all layers."""
        cfg = self.config
        layout = "adjacent" if cfg.rope_interleave else "half"
        cos, sin = rope_cos_sin(positions, cfg.qk_rope_head_dim, cfg.rope_theta, layout, cfg.rope_scaling)
        return cos.to(dtype), sin.to(dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: list | None = None,
                absorbed: bool = False) -> ModelOutput:
        """input_ids (B, T); attention_mask (B, offset + T) 1 = token, 0 = padding, cached tokens included
        (as in Hugging Face); position_ids (T,) or (B, T), default continuing after the cache."""
        cfg = self.config
        check_input_ids(input_ids, cfg.vocab_size)
        B, T = input_ids.shape
        offset = cache_offset(cache, cfg.n_layers)
        if position_ids is None:
            position_ids = torch.arange(offset, offset + T, device=input_ids.device)  # (T,)
        x = self.tok_emb(input_ids)  # (B, T, C)
        rotary = self.rotary(position_ids, x.dtype)  # 2 x (T, d_r)
        mask = padding_mask(attention_mask, (B, offset + T))  # (B, 1, 1, offset + T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, is_causal=True, rotary=rotary, absorbed=absorbed,
                      cache=None if cache is None else cache[i])  # (B, T, C)
        h = self.final_norm(x)  # (B, T, C)
        return ModelOutput(logits=self.lm_head(h), last_hidden_state=h, cache=cache)  # logits (B, T, V)


# --------------------------------------------------------------------------- parameter count
def mla_params(m: MLAConfig) -> int:
    """One MLA layer: the query path (down, norm, up - or one q_proj), the joint KV down-projection
    with the RoPE key, the latent norm, the KV up-projection and the output projection."""
    C, H = m.d_model, m.n_heads
    if m.q_lora_rank is None:
        q = C * H * m.qk_head_dim
    else:
        q = C * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * H * m.qk_head_dim  # q_a_proj, q_a_layernorm, q_b_proj
    kv = C * m.cache_values_per_token + m.kv_lora_rank + m.kv_lora_rank * H * (m.qk_nope_head_dim + m.v_head_dim)
    o = H * m.v_head_dim * C
    biases = (m.q_lora_rank or 0) + m.cache_values_per_token + C if m.bias else 0
    return q + kv + o + biases


def block_params(cfg: DeepSeekV3Config, moe: bool) -> int:
    """One block: MLA, two RMSNorm gains, and a dense SwiGLU or the MoE (routed and shared experts,
    the router). The balancing bias is a buffer, not a parameter, and is not counted."""
    C = cfg.d_model
    attn_and_norms = mla_params(cfg.mla_config()) + 2 * C  # + input and post-attention RMSNorm gains
    if not moe:
        return attn_and_norms + ffn_params(C, cfg.d_ff, gated=True, bias=False)
    expert = ffn_params(C, cfg.moe_d_ff, gated=True, bias=False)
    return attn_and_norms + (cfg.n_routed_experts + cfg.n_shared_experts) * expert + cfg.n_routed_experts * C


def deepseek_v3_params(cfg: DeepSeekV3Config) -> ParamCount:
    """Parameters implied by a DeepSeekV3Config, by part; ``inactive`` = the routed experts a token
    does not use (n_routed_experts - top_k per MoE layer)."""
    C, n_moe = cfg.d_model, cfg.n_layers - cfg.first_k_dense_replace
    expert = ffn_params(C, cfg.moe_d_ff, gated=True, bias=False)
    blocks = sum(block_params(cfg, cfg.is_moe_layer(i)) for i in range(cfg.n_layers))
    return ParamCount(embeddings=cfg.vocab_size * C, blocks=blocks,
                      head=0 if cfg.tie_weights else cfg.vocab_size * C, other=C,  # the final norm
                      inactive=n_moe * (cfg.n_routed_experts - cfg.top_k) * expert)


def mtp_params(cfg: DeepSeekV3Config) -> ParamCount:
    """One multi-token-prediction module (§2.2) as the published checkpoint stores it (its layer 61):
    a MoE block, the projection M (2C -> C) that joins the hidden state with the next token's
    embedding, three RMSNorms (enorm, hnorm, the head's norm), and copies of the embedding and the
    output head (shared with the main model, but stored again)."""
    C = cfg.d_model
    return ParamCount(embeddings=cfg.vocab_size * C, blocks=block_params(cfg, moe=True) + 2 * C * C,
                      head=cfg.vocab_size * C, other=3 * C)


# The published totals (DeepSeek-V3 report, abstract; the model card of deepseek-ai/DeepSeek-V3):
# 671 B parameters, 37 B activated per token; the Hub checkpoint is 685 B with the 14 B MTP module.
PUBLISHED_TOTAL = 671e9
PUBLISHED_ACTIVE = 37e9
PUBLISHED_WITH_MTP = 685e9


# --------------------------------------------------------------------------- the KV cache per token
# The other two attention kinds, from each model's published config.json:
LLAMA_3_70B = ModelShape("Llama-3-70B", n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, max_positions=8192)
GPT2_XL = ModelShape("GPT-2 XL", n_layers=48, d_model=1600, n_heads=25, n_kv_heads=25, max_positions=1024)


@dataclass(frozen=True)
class CacheRow:
    """One row of the cache table: what each token leaves in the cache, summed over the layers."""
    model: str
    attention: str
    n_layers: int
    values_per_layer: int  # numbers cached per token in one layer
    bytes_per_value: float

    @property
    def bytes_per_token(self) -> int:
        return int(self.n_layers * self.values_per_layer * self.bytes_per_value)


def mla_cache_bytes_per_token(cfg: DeepSeekV3Config, bytes_per_value: float = 2) -> int:
    """n_layers × (kv_lora_rank + qk_rope_head_dim) × bytes: the latent and the RoPE key."""
    return int(cfg.n_layers * cfg.mla_config().cache_values_per_token * bytes_per_value)


def cache_table(bytes_per_value: float = 2, cfg: DeepSeekV3Config | None = None) -> list[CacheRow]:
    """KV-cache bytes per token (2 bytes per value: bf16/fp16): DeepSeek-V3's MLA, the same model
    if it cached full keys and values per head (MHA with its head sizes), LLaMA-3-70B's GQA and
    GPT-2 XL's MHA."""
    cfg = cfg or DeepSeekV3Config()
    m = cfg.mla_config()
    rows = [CacheRow("DeepSeek-V3", f"MLA (latent {m.kv_lora_rank} + RoPE key {m.qk_rope_head_dim})",
                     cfg.n_layers, m.cache_values_per_token, bytes_per_value),
            CacheRow("DeepSeek-V3 as MHA", f"MHA ({m.n_heads} heads, k {m.qk_head_dim} + v {m.v_head_dim})",
                     cfg.n_layers, m.n_heads * (m.qk_head_dim + m.v_head_dim), bytes_per_value)]
    for shape in (LLAMA_3_70B, GPT2_XL):
        kind = shape.attention.split(" (")[0]  # "GQA" or "MHA"
        heads = "kv heads" if kind == "GQA" else "heads"
        rows.append(CacheRow(shape.name, f"{kind} ({shape.n_kv_heads} {heads} × {shape.D}, k and v)",
                             shape.n_layers, 2 * shape.n_kv_heads * shape.D, bytes_per_value))
    return rows


def format_cache_table(rows: list[CacheRow]) -> str:
    """The table as text, with each row's bytes per token and its size relative to the first row."""
    lines = [f"{'model':<20} {'attention':<40} {'layers':>6} {'values/layer':>12} {'bytes/token':>12} {'':>10} "
             f"{'× MLA':>6}"]
    for row in rows:
        lines.append(f"{row.model:<20} {row.attention:<40} {row.n_layers:>6} {row.values_per_layer:>12,} "
                     f"{row.bytes_per_token:>12,} {format_bytes(row.bytes_per_token):>10} "
                     f"{row.bytes_per_token / rows[0].bytes_per_token:>6.1f}")
    return "\n".join(lines)
