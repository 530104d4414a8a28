"""Gemma 3, text only (Gemma Team 2025, "Gemma 3 Technical Report", §2 "Model Architecture"),
read top to bottom.

What differs from LLaMA (``course_lib.models.llama``):
  * local and global layers interleaved, by ``layer_types`` (§2, 5:1 interleaving): a
    "sliding_attention" layer sees the last ``sliding_window`` tokens (1024 in Gemma 3), a
    "full_attention" layer sees everything; five local layers, then one global;
  * two RoPE bases (§2, long context): 10k on local layers (``rope_local_theta``), 1M on global
    layers (``rope_theta``), and the global layers' positions interpolated (``rope_scaling``,
    linear ×8 in the 4B-27B models);
  * QK-norm (§2, in place of Gemma 2's soft-capping of the attention logits): an RMSNorm over
    each head's query and key, before RoPE; the scores are scaled by
    ``query_pre_attn_scalar ** -0.5`` instead of ``head_dim ** -0.5``;
  * sandwich norms (§2, RMSNorm both before and after each sub-layer):
    x = x + PostNorm(Attn(PreNorm(x))), and the same around the FFN;
  * Gemma's RMSNorm multiplies by (1 + w), its weights starting at 0 (``GemmaRMSNorm``);
  * the token embeddings are multiplied by sqrt(d_model) (in the embedding's dtype, as the
    reference implementation does), and the LM head is tied to them;
  * GeGLU feed-forward (tanh-GELU on the gate) instead of SwiGLU;
  * optional final-logit soft-capping, cap · tanh(logits / cap) (Gemma 2; None in Gemma 3).

The interleaved layer types are shared with GPT-OSS (``course_lib.models.gpt_oss``): the
helpers ``check_layer_types``, ``layer_caches``, ``layer_masks`` and ``run_layers`` below serve both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import padding_mask
from course_lib.config import ConfigError, check_divisible, check_positive, check_range, make_config
from course_lib.ffn import check_activation, ffn_params, make_ffn
from course_lib.kv_cache import KVCache
from course_lib.models.common import ModelOutput, cache_offset, check_input_ids, init_normal
from course_lib.models.sizes import ParamCount, attention_params
from course_lib.norms import RMSNorm
from course_lib.positional import RopeScaling, rope_cos_sin
from course_lib.positional_attention import PositionalAttention

SLIDING, FULL = "sliding_attention", "full_attention"  # Hugging Face's names for the two layer types
LAYER_TYPES = (SLIDING, FULL)


# --------------------------------------------------------------------------- interleaved layer types
def interleaved_layer_types(n_layers: int, every: int) -> tuple[str, ...]:
    """every-1 sliding layers, then one full layer, repeated: every=6 is Gemma 3, every=2 GPT-OSS."""
    return tuple(FULL if (i + 1) % every == 0 else SLIDING for i in range(n_layers))


def check_layer_types(cfg) -> None:
    """``cfg.layer_types`` names one known type per layer, and a sliding layer has a window."""
    name = type(cfg).__name__
    types = cfg.layer_types
    if isinstance(types, str) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{name}.layer_types={types!r}: expected a list with one name per layer, each "
                          f"one of {LAYER_TYPES}.")
    if len(types) != cfg.n_layers:
        raise ConfigError(f"{name}.layer_types has {len(types)} entries but n_layers={cfg.n_layers}: give one "
                          f"type per layer, e.g. layer_types=interleaved_layer_types({cfg.n_layers}, every=6).")
    unknown = sorted({t for t in types if t not in LAYER_TYPES})
    if unknown:
        raise ConfigError(f"{name}.layer_types holds {unknown}: each entry must be one of {LAYER_TYPES}.")
    if SLIDING in types and cfg.sliding_window is None:
        raise ConfigError(f"{name}.sliding_window=None but layer_types has 'sliding_attention' layers: set "
                          "sliding_window (e.g. 1024), or make every layer 'full_attention'.")
    check_positive(cfg, "sliding_window", allow_none=True)


def layer_window(cfg, i: int) -> int | None:
    """The window of layer i: the config's sliding_window on a sliding layer, None on a full one."""
    return cfg.sliding_window if cfg.layer_types[i] == SLIDING else None


def layer_caches(cfg) -> list[KVCache]:
    """One KV cache per layer: a rolling cache of sliding_window tokens on sliding layers, so their
    memory stops growing; an ever-growing one on full layers."""
    return [KVCache(window=layer_window(cfg, i)) for i in range(cfg.n_layers)]


def layer_masks(attention_mask, cache, n_layers: int, B: int, offset: int, T: int) -> list:
    """The padding mask (B, 1, 1, T_k) each layer needs: a rolling cache dropped its oldest keys,
    so layers of different windows see different numbers of keys. None without attention_mask."""
    mask = padding_mask(attention_mask, (B, offset + T))  # (B, 1, 1, offset + T)
    if mask is None or cache is None:
        return [mask] * n_layers
    kept = [0 if c.k is None else c.k.size(2) for c in cache]  # keys each cache holds now
    return [mask[..., -(n + T):] for n in kept]  # (B, 1, 1, n + T) per layer


def run_layers(blocks, cfg, x: torch.Tensor, rotary: dict, attention_mask, cache, offset: int) -> torch.Tensor:
    """x (B, T, C) through the blocks, each with its layer type's window, RoPE ({type: (cos, sin)}),
    KV cache and padding mask."""
    masks = layer_masks(attention_mask, cache, cfg.n_layers, x.size(0), offset, x.size(1))  # n_layers x (B, 1, 1, T_k)
    for i, block in enumerate(blocks):
        x = block(x, mask=masks[i], is_causal=True, rotary=rotary[cfg.layer_types[i]], window=layer_window(cfg, i),
                  cache=None if cache is None else cache[i])  # (B, T, C)
    return x


# --------------------------------------------------------------------------- the config
@dataclass
class Gemma3Config:
    """Gemma-3-27B's text config.json by default (its global layers' RoPE linear x8).
    ``layer_types`` None = five sliding layers, then one full, repeated; ``head_dim`` None =
    d_model // n_heads; ``rope_scaling`` acts on the global (full) layers only, None = plain RoPE."""
    vocab_size: int = 262208
    d_model: int = 5376
    n_layers: int = 62
    n_heads: int = 32
    n_kv_heads: int = 16
    head_dim: int | None = 128
    d_ff: int = 21504
    max_positions: int = 131072
    query_pre_attn_scalar: int = 168  # scores are scaled by its -1/2 power
    sliding_window: int | None = 1024
    layer_types: tuple[str, ...] | None = None
    rope_theta: float = 1_000_000.0  # global layers
    rope_local_theta: float = 10_000.0  # sliding layers
    rope_scaling: RopeScaling | dict | None = field(default_factory=lambda: RopeScaling("linear", 8.0))  # global only
    eps: float = 1e-6
    final_logit_softcapping: float | None = None
    activation: str = "gelu_tanh"
    attention_bias: bool = False
    tie_weights: bool = True

    def __post_init__(self):
        check_positive(self, "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_positions")
        if self.head_dim is None:
            check_divisible(self, "d_model", "n_heads", why="each head gets d_model // n_heads channels "
                            "unless head_dim is given explicitly")
            self.head_dim = self.d_model // self.n_heads
        if self.head_dim < 2 or self.head_dim % 2:
            raise ConfigError(f"Gemma3Config.head_dim={self.head_dim}: RoPE rotates pairs of features, so it "
                              "must be even (e.g. head_dim=128).")
        check_divisible(self, "n_heads", "n_kv_heads", why="each key/value head serves the same number of query heads")
        if self.layer_types is None:
            self.layer_types = interleaved_layer_types(self.n_layers, every=6)
        if not isinstance(self.layer_types, str):  # a string is refused by check_layer_types
            self.layer_types = tuple(self.layer_types)
        check_layer_types(self)
        check_positive(self, "query_pre_attn_scalar")  # usually head_dim; Gemma-3-27B: d_model / n_heads = 168
        for name in ("rope_theta", "rope_local_theta"):
            check_range(self, name, 0, float("inf"), low_inclusive=False, hint="e.g. 10000.0")
        if self.final_logit_softcapping is not None:
            check_range(self, "final_logit_softcapping", 0, float("inf"), low_inclusive=False,
                        hint="None for no capping; Gemma 2 used 30.0")
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        check_activation(self, hint="Gemma: 'gelu_tanh'")


def gemma3_1b_config(**overrides) -> Gemma3Config:
    """Gemma-3-1B's config.json: 26 layers, one kv head, a 512-token window, no RoPE scaling."""
    base = dict(vocab_size=262144, d_model=1152, n_layers=26, n_heads=4, n_kv_heads=1, head_dim=256, d_ff=6912,
                max_positions=32768, query_pre_attn_scalar=256, sliding_window=512, rope_scaling=None)
    return Gemma3Config(**{**base, **overrides})


# --------------------------------------------------------------------------- the pieces that differ
class GemmaRMSNorm(RMSNorm):
    """Gemma's RMSNorm: x / sqrt(mean(x²) + ε) · (1 + w), computed in float32 and cast back at the
    end (Gemma multiplies before the cast, LLaMA after). The weight starts at 0, i.e. a gain of 1."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__(d, eps)
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.promote_types(x.dtype, torch.float32))  # float32 for half inputs
        h = F.rms_norm(h, (self.d,), None, self.eps)  # (..., d) root mean square 1
        return (h * (1.0 + self.weight.to(h.dtype))).to(x.dtype)


class GemmaAttention(PositionalAttention):
    """PositionalAttention with QK-norm: each head's query and key pass through their own
    GemmaRMSNorm (over D, weights shared by the heads) before RoPE. x (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, n_heads: int, *, eps: float = 1e-6, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        self.q_norm = GemmaRMSNorm(self.head_dim, eps)
        self.k_norm = GemmaRMSNorm(self.head_dim, eps)

    def project(self, x: torch.Tensor, src: torch.Tensor):
        q, k, v = super().project(x, src)  # (B, H, T, D), (B, H_kv, T, D), (B, H_kv, T, D)
        return self.q_norm(q), self.k_norm(k), v  # normalised over D, per head and token


def _first(out):
    return out[0] if isinstance(out, tuple) else out  # attention may return (y, weights)


class SandwichBlock(nn.Module):
    """A pre-norm block with a second norm on each branch's output before it joins the residual:
    x = x + post_attn_norm(Attn(attn_norm(x))); x = x + post_ffn_norm(FFN(ffn_norm(x)))."""

    def __init__(self, attn: nn.Module, ffn: nn.Module, d_model: int, eps: float):
        super().__init__()
        self.attn_norm, self.attn, self.post_attn_norm = GemmaRMSNorm(d_model, eps), attn, GemmaRMSNorm(d_model, eps)
        self.ffn_norm, self.ffn, self.post_ffn_norm = GemmaRMSNorm(d_model, eps), ffn, GemmaRMSNorm(d_model, eps)

    def forward(self, x: torch.Tensor, **attn_kwargs) -> torch.Tensor:
        x = x + self.post_attn_norm(_first(self.attn(self.attn_norm(x), **attn_kwargs)))  # (B, T, C)
        return x + self.post_ffn_norm(self.ffn(self.ffn_norm(x)))  # (B, T, C)


def gemma3_block(cfg: Gemma3Config) -> SandwichBlock:
    attn = GemmaAttention(cfg.d_model, cfg.n_heads, n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                          bias=cfg.attention_bias, scale=cfg.query_pre_attn_scalar ** -0.5, eps=cfg.eps)
    ffn = make_ffn(cfg.d_model, cfg.d_ff, cfg.activation, gated=True, bias=False)  # GeGLU
    return SandwichBlock(attn, ffn, cfg.d_model, cfg.eps)


def embedding_scale(d_model: int, dtype: torch.dtype) -> torch.Tensor:
    """sqrt(d_model) as Gemma multiplies it: a float32 number rounded to the embedding's dtype
    (in bfloat16, sqrt(3072) = 55.43 becomes 55.5)."""
    return torch.tensor(d_model ** 0.5, dtype=torch.float32).to(dtype)


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap · tanh(logits / cap): smooth, and never beyond ±cap (Gemma 2 §2.2). None: unchanged."""
    return logits if cap is None else cap * torch.tanh(logits / cap)


# --------------------------------------------------------------------------- the model
class Gemma3(nn.Module):
    """input_ids (B, T) -> ModelOutput(logits (B, T, V), last_hidden_state (B, T, C))."""

    def __init__(self, config: Gemma3Config | None = None, **overrides):
        super().__init__()
        self.config = cfg = make_config(Gemma3Config, config, overrides, model="Gemma3")
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(gemma3_block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = GemmaRMSNorm(cfg.d_model, cfg.eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_normal(self, std=0.02)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def new_cache(self, batch_size: int | None = None) -> list[KVCache]:
        """Rolling caches of sliding_window tokens on the local layers, full ones on the global layers."""
        return layer_caches(self.config)

    def rotary(self, positions: torch.Tensor, dtype: torch.dtype) -> dict:
        """{layer type: (cos, sin)}: the local base on sliding layers, the global base (and scaling)
        on full layers, each (T, D) or (B, T, D)."""
        cfg = self.config
        local = rope_cos_sin(positions, cfg.head_dim, cfg.rope_local_theta, "half")
        full = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, "half", cfg.rope_scaling)
        return {SLIDING: tuple(t.to(dtype) for t in local), FULL: tuple(t.to(dtype) for t in full)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: list | None = None) -> ModelOutput:
        """As ``Llama.forward``: attention_mask (B, offset + T) covers the cached tokens too."""
        cfg = self.config
        check_input_ids(input_ids, cfg.vocab_size)
        offset = cache_offset(cache, cfg.n_layers)
        if position_ids is None:
            position_ids = torch.arange(offset, offset + input_ids.size(1), device=input_ids.device)  # (T,)
        x = self.tok_emb(input_ids)  # (B, T, C)
        x = x * embedding_scale(cfg.d_model, x.dtype).to(x.device)  # (B, T, C) scaled by sqrt(C)
        rotary = self.rotary(position_ids, x.dtype)  # {type: 2 x (T, D)}
        x = run_layers(self.blocks, cfg, x, rotary, attention_mask, cache, offset)  # (B, T, C)
        h = self.final_norm(x)  # (B, T, C)
        logits = soft_cap(self.lm_head(h), cfg.final_logit_softcapping)  # (B, T, V)
        return ModelOutput(logits=logits, last_hidden_state=h, cache=cache)


# --------------------------------------------------------------------------- size
def gemma3_params(cfg: Gemma3Config) -> ParamCount:
    """Parameters from the config alone: per block attention, two head-sized q/k norms, a GeGLU FFN
    and four d_model norms; a tied head counts once."""
    C, D = cfg.d_model, cfg.head_dim
    block = attention_params(C, cfg.n_heads, D, cfg.n_kv_heads, bias=cfg.attention_bias)
    block += 2 * D + ffn_params(C, cfg.d_ff, gated=True, bias=False) + 4 * C
    return ParamCount(embeddings=cfg.vocab_size * C, blocks=cfg.n_layers * block,
                      head=0 if cfg.tie_weights else cfg.vocab_size * C, other=C)
