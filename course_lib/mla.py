"""Multi-head latent attention (MLA), DeepSeek-V2 (DeepSeek-AI 2024, §2.1) and DeepSeek-V3 (§2.1.1),
read top to bottom: the config -> the latent cache -> the layer (naive form, absorbed form).

What differs from the multi-head attention of lesson 01 (``course_lib.attention``):

  * **Low-rank keys and values.** Each token is first compressed to one small latent vector
    c_KV = RMSNorm(W_DKV x) of ``kv_lora_rank`` numbers (DeepSeek-V3: 512, for a model 7168
    wide); the keys and values of all H heads are up-projections of it:
    [k_nope; v] = W_UKV c_KV  (``kv_b_proj``, V2 Eq. 9-11; the RMSNorm is in the released code and
    config, not in the equations).
  * **Low-rank queries** too (``q_lora_rank``, V2 Eq. 12-13): c_Q = RMSNorm(W_DQ x), q = W_UQ c_Q.
    ``q_lora_rank=None`` (DeepSeek-V2-Lite) projects x to the queries in one matrix, ``q_proj``.
  * **Decoupled RoPE** (V2 §2.1.3). RoPE cannot act on a key that is rebuilt from c_KV (the
    rotation would sit between the two matrices that the absorbed form below multiplies
    together), so each head's query and key have two parts: ``qk_nope_head_dim`` features
    without position, and ``qk_rope_head_dim`` features that RoPE rotates. The RoPE key is one
    vector per token, shared by all heads (MQA-style); it comes out of ``kv_a_proj_with_mqa``
    next to the latent. Score = q_nope·k_nope + q_rope·k_rope, scaled by
    1/sqrt(qk_nope_head_dim + qk_rope_head_dim). Values have their own width, ``v_head_dim``.
  * **The cache** holds only c_KV and the rotated RoPE key: kv_lora_rank + qk_rope_head_dim
    numbers per token and layer, against 2·H·D for multi-head attention (``LatentCache``).
  * **The absorbed form** (V2 §2.1.2, "W_UK can be absorbed into W_Q, and W_UV into W_O"):
    q_nope·(W_UK c) = (W_UKᵀ q_nope)·c, so the key up-projection moves to the query side, and
    the value up-projection W_UV moves into the output projection. Attention then runs on
    the cache as it is: one key head of kv_lora_rank + qk_rope_head_dim features that every
    query head shares, whose first kv_lora_rank features are also the value - MQA over the
    latent. No per-head key or value is ever materialised.

Names follow Hugging Face's ``DeepseekV3Attention`` (``q_a_proj``, ``q_a_layernorm``, ``q_b_proj``,
``kv_a_proj_with_mqa``, ``kv_a_layernorm``, ``kv_b_proj``, ``o_proj``) so loading weights is a rename.
Shapes: B batch, T new tokens, T_k keys (cached + new), C = d_model, H heads, r = kv_lora_rank,
d_n / d_r / d_v = qk_nope / qk_rope / v head dims.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.attention import attend, position_mask
from course_lib.config import ConfigError, check_choice, check_positive, check_range
from course_lib.kv_cache import KVCache
from course_lib.norms import RMSNorm
from course_lib.positional import apply_rotary

LATENT_EPS = 1e-6  # the two latent RMSNorms use their default eps, whatever the model's rms_norm_eps


# --------------------------------------------------------------------------- the config
@dataclass
class MLAConfig:
    """One MLA layer; DeepSeek-V3's numbers by default (its config.json). ``rope_layout``:
    "adjacent" rotates feature pairs (2i, 2i+1), DeepSeek's own layout (HF ``rope_interleave=True``);
    "half" pairs i with i + d_r/2 (``rope_interleave=False``)."""
    d_model: int = 7168
    n_heads: int = 128
    q_lora_rank: int | None = 1536  # None: queries straight from x (q_proj)
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    bias: bool = False  # HF attention_bias: on q_a_proj, kv_a_proj_with_mqa and o_proj
    dropout: float = 0.0
    rope_layout: str = "adjacent"

    def __post_init__(self):
        check_positive(self, "d_model", "n_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                       "v_head_dim")
        check_positive(self, "q_lora_rank", allow_none=True)
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        check_choice(self, "rope_layout", ("adjacent", "half"), hint="'adjacent' = DeepSeek's interleaved pairs")
        for name in ("kv_lora_rank", "q_lora_rank"):
            rank = getattr(self, name)
            if rank is not None and rank > self.d_model:
                raise ConfigError(
                    f"MLAConfig.{name}={rank} is larger than the model width d_model={self.d_model}: a latent "
                    f"wider than x compresses nothing. Choose {name} <= {self.d_model}, usually far smaller "
                    f"(DeepSeek-V3: kv_lora_rank=512, q_lora_rank=1536 for d_model=7168)"
                    + (" or q_lora_rank=None for one full query projection." if name == "q_lora_rank" else "."))
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"MLAConfig.qk_rope_head_dim={self.qk_rope_head_dim}: RoPE rotates pairs of "
                              "features, so it must be even (DeepSeek-V3: 64).")

    @property
    def qk_head_dim(self) -> int:
        """Width of each head's query and key: the part without position + the RoPE part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def cache_values_per_token(self) -> int:
        """Numbers the latent cache holds per token (and layer): c_KV and the shared RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


# --------------------------------------------------------------------------- the cache
class LatentCache(KVCache):
    """MLA's cache for one layer: per token the normalised latent c_KV (B, T, r) and the rotated
    RoPE key shared by the heads (B, 1, T, d_r) - nothing per head. The course's KVCache stores
    them (the latent as a one-head "key", the RoPE key as the "value"), so positions, ``seq_len``
    and the rolling window work as there; ``latent`` and ``k_rope`` read them back."""

    def update(self, latent: torch.Tensor, k_rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append latent (B, T, r) and k_rope (B, 1, T, d_r); return every cached token's,
        (B, T_k, r) and (B, 1, T_k, d_r)."""
        if latent.dim() != 3 or k_rope.dim() != 4 or k_rope.size(1) != 1:
            raise ValueError(f"LatentCache.update expects latent (B, T, r) and k_rope (B, 1, T, d_r); got "
                             f"{tuple(latent.shape)} and {tuple(k_rope.shape)}.")
        all_latent, all_k_rope = super().update(latent[:, None], k_rope)  # (B, 1, T_k, r), (B, 1, T_k, d_r)
        return all_latent[:, 0], all_k_rope  # (B, T_k, r), (B, 1, T_k, d_r)

    @property
    def latent(self) -> torch.Tensor | None:
        return None if self.k is None else self.k[:, 0]  # (B, T_cached, r)

    @property
    def k_rope(self) -> torch.Tensor | None:
        return self.v  # (B, 1, T_cached, d_r)

    @property
    def nbytes(self) -> int:
        """Bytes held now: the latents plus the RoPE keys (they differ in width)."""
        if self.k is None:
            return 0
        return (self.k.nelement() + self.v.nelement()) * self.k.element_size()


# --------------------------------------------------------------------------- the layer
class MultiHeadLatentAttention(nn.Module):
    """MLA self-attention, x (B, T, C) -> (B, T, C). ``forward(..., absorbed=True)`` computes the
    same output with the up-projections folded into the query and output sides (see the top)."""

    def __init__(self, d_model: int, n_heads: int, *, q_lora_rank: int | None = None, kv_lora_rank: int = 512,
                 qk_nope_head_dim: int = 128, qk_rope_head_dim: int = 64, v_head_dim: int = 128,
                 bias: bool = False, dropout: float = 0.0, rope_layout: str = "adjacent",
                 scale: float | None = None):
        super().__init__()
        self.config = cfg = MLAConfig(d_model, n_heads, q_lora_rank, kv_lora_rank, qk_nope_head_dim,
                                      qk_rope_head_dim, v_head_dim, bias, dropout, rope_layout)
        # the softmax scale: 1/sqrt(d_n + d_r) - the width of the whole query·key product. (YaRN
        # multiplies it by mscale²: pass the product as `scale`.)
        self.scale = 1.0 / math.sqrt(cfg.qk_head_dim) if scale is None else scale
        H, d_qk = n_heads, cfg.qk_head_dim
        if q_lora_rank is None:
            self.q_proj = nn.Linear(d_model, H * d_qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(d_model, q_lora_rank, bias=bias)  # W_DQ: down to c_Q
            self.q_a_layernorm = RMSNorm(q_lora_rank, LATENT_EPS)
            self.q_b_proj = nn.Linear(q_lora_rank, H * d_qk, bias=False)  # W_UQ and W_QR: up to every head
        self.kv_a_proj_with_mqa = nn.Linear(d_model, kv_lora_rank + qk_rope_head_dim, bias=bias)  # W_DKV, W_KR
        self.kv_a_layernorm = RMSNorm(kv_lora_rank, LATENT_EPS)
        self.kv_b_proj = nn.Linear(kv_lora_rank, H * (qk_nope_head_dim + v_head_dim), bias=False)  # W_UK, W_UV
        self.o_proj = nn.Linear(H * v_head_dim, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    # the steps ---------------------------------------------------------------------------
    def query_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the query up-projection reads: c_Q = RMSNorm(W_DQ x) (B, T, q_lora_rank), or x."""
        if self.config.q_lora_rank is None:
            return x
        return self.q_a_layernorm(self.q_a_proj(x))  # (B, T, q_lora_rank)

    def query_weight(self) -> torch.Tensor:
        """The query up-projection's weight, (H·(d_n + d_r), q_lora_rank or C)."""
        return (self.q_proj if self.config.q_lora_rank is None else self.q_b_proj).weight

    def queries(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> q_nope (B, H, T, d_n), q_rope (B, H, T, d_r) (not yet rotated)."""
        cfg, (B, T, _) = self.config, x.shape
        q = self.query_input(x) @ self.query_weight().t()  # (B, T, H·(d_n + d_r))
        q = q.view(B, T, cfg.n_heads, cfg.qk_head_dim).transpose(1, 2)  # (B, H, T, d_n + d_r)
        return q.split([cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], dim=-1)

    def latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> c_KV (B, T, r) normalised, k_rope (B, 1, T, d_r) (not yet rotated)."""
        cfg, (B, T, _) = self.config, x.shape
        c_kv, k_rope = self.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        return self.kv_a_layernorm(c_kv), k_rope.view(B, 1, T, cfg.qk_rope_head_dim)  # (B, T, r), (B, 1, T, d_r)

    def rotate(self, x: torch.Tensor, rotary) -> torch.Tensor:
        """RoPE on the d_r features of q_rope or k_rope; rotary = (cos, sin), each (T, d_r) or
        (B, T, d_r) from ``rope_cos_sin(..., layout=config.rope_layout)``."""
        cos, sin = rotary
        return apply_rotary(x, cos, sin, layout=self.config.rope_layout)

    def up_projections(self) -> tuple[torch.Tensor, torch.Tensor]:
        """kv_b_proj split per head: W_UK (H, d_n, r) and W_UV (H, d_v, r)."""
        cfg = self.config
        w = self.kv_b_proj.weight.view(cfg.n_heads, cfg.qk_nope_head_dim + cfg.v_head_dim, cfg.kv_lora_rank)  # (H, dn+dv, r)
        return w.split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=1)  # (H, d_n + d_v, r) -> 2 parts

    def absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded matrices of the absorbed form:
        W_q_latent (H, r, C_q) = W_UKᵀ · W_UQ(nope rows): query input -> each head's query *in latent space*;
        W_o_latent (C, H, r)  = W_O · W_UV: each head's output *in latent space* -> the model width.
        (C_q = q_lora_rank, or C without query compression.) DeepSeek's own inference code applies
        W_UK after the query up-projection instead of folding it in, which costs less when r > d_n
        (512 > 128 in V3); the two are the same product by associativity."""
        cfg = self.config
        w_uk, w_uv = self.up_projections()  # (H, d_n, r), (H, d_v, r)
        w_q = self.query_weight().view(cfg.n_heads, cfg.qk_head_dim, -1)[:, :cfg.qk_nope_head_dim]  # (H, d_n, C_q)
        w_q_latent = w_uk.transpose(1, 2) @ w_q  # (H, r, d_n) @ (H, d_n, C_q) -> (H, r, C_q)
        w_o = self.o_proj.weight.view(cfg.d_model, cfg.n_heads, cfg.v_head_dim)  # (C, H·d_v) -> (C, H, d_v)
        w_o_latent = torch.einsum("chv,hvr->chr", w_o, w_uv)  # (C, H, r)
        return w_q_latent, w_o_latent

    # the forward pass --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                return_weights: bool = False, *, rotary=None, cache: LatentCache | None = None,
                absorbed: bool = False):
        """x (B, T, C); mask bool broadcastable to (B, H, T, T_k), True = may attend; rotary =
        (cos, sin) of the new tokens' positions for the d_r RoPE features; cache a LatentCache.
        absorbed: attend over the latent directly (same output, up to rounding).
        Returns y (B, T, C), or (y, weights (B, H, T, T_k)) with ``return_weights``."""
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.size(-1) != cfg.d_model:
            raise ValueError(f"expected x of shape (B, T, {cfg.d_model}), got {tuple(getattr(x, 'shape', ()))}.")
        offset = 0 if cache is None else cache.seq_len
        positions = torch.arange(offset, offset + x.size(1), device=x.device)  # (T,)
        latent, k_rope = self.latent(x)  # (B, T, r), (B, 1, T, d_r)
        if rotary is not None:
            k_rope = self.rotate(k_rope, rotary)  # rotated once, then cached rotated
        k_pos = positions  # (T_k,)
        if cache is not None:
            latent, k_rope = cache.update(latent, k_rope)  # (B, T_k, r), (B, 1, T_k, d_r): every token so far
            k_pos = cache.key_positions.to(x.device)  # (T_k,)
        if is_causal and latent.size(1) != x.size(1):  # cached keys: causality by absolute position
            allowed = position_mask(positions, k_pos, causal=True)  # (T, T_k)
            mask, is_causal = (allowed if mask is None else mask & allowed), False
        step = self.attend_absorbed if absorbed else self.attend_naive
        y, weights = step(x, latent, k_rope, rotary, mask, is_causal, return_weights)  # (B, T, C)
        return (y, weights) if return_weights else y

    def _attend(self, q, k, v, mask, is_causal, return_weights):
        p = self.dropout.p if self.training else 0.0
        out = attend(q, k, v, mask, is_causal=is_causal, scale=self.scale, dropout_p=p,
                     return_weights=return_weights)
        return out if return_weights else (out, None)

    def attend_naive(self, x, latent, k_rope, rotary, mask, is_causal, return_weights):
        """The definition: rebuild every head's key and value from the latent, then attend."""
        cfg, (B, T, _), T_k = self.config, x.shape, latent.size(1)
        q_nope, q_rope = self.queries(x)  # (B, H, T, d_n), (B, H, T, d_r)
        if rotary is not None:
            q_rope = self.rotate(q_rope, rotary)
        kv = self.kv_b_proj(latent).view(B, T_k, cfg.n_heads, -1).transpose(1, 2)  # (B, H, T_k, d_n + d_v)
        k_nope, v = kv.split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=-1)  # (B, H, T_k, d_n), (B, H, T_k, d_v)
        k = torch.cat([k_nope, k_rope.expand(-1, cfg.n_heads, -1, -1)], dim=-1)  # (B, H, T_k, d_n + d_r)
        q = torch.cat([q_nope, q_rope], dim=-1)  # (B, H, T, d_n + d_r)
        y, weights = self._attend(q, k, v, mask, is_causal, return_weights)  # (B, H, T, d_v)
        y = y.transpose(1, 2).reshape(B, T, cfg.n_heads * cfg.v_head_dim)  # (B, H, T, d_v) -> (B, T, H·d_v)
        return self.o_proj(y), weights  # (B, T, C)

    def attend_absorbed(self, x, latent, k_rope, rotary, mask, is_causal, return_weights):
        """The inference form: queries mapped into the latent space, attention over the cache
        itself (one shared key head [c_KV; k_rope], the value c_KV), W_UV folded into W_O."""
        cfg = self.config
        w_q_latent, w_o_latent = self.absorbed_weights()  # (H, r, C_q), (C, H, r)
        w_q_rope = self.query_weight().view(cfg.n_heads, cfg.qk_head_dim, -1)[:, cfg.qk_nope_head_dim:]  # (H, d_r, C_q)
        c_q = self.query_input(x)  # (B, T, C_q)
        q_latent = torch.einsum("btc,hrc->bhtr", c_q, w_q_latent)  # (B, H, T, r)
        q_rope = torch.einsum("btc,hdc->bhtd", c_q, w_q_rope)  # (B, H, T, d_r)
        if rotary is not None:
            q_rope = self.rotate(q_rope, rotary)
        q = torch.cat([q_latent, q_rope], dim=-1)  # (B, H, T, r + d_r)
        k = torch.cat([latent[:, None], k_rope], dim=-1)  # (B, 1, T_k, r + d_r): MQA, one key head
        y_latent, weights = self._attend(q, k, latent[:, None], mask, is_causal, return_weights)  # (B, H, T, r)
        y = torch.einsum("bhtr,chr->btc", y_latent, w_o_latent)  # (B, T, C)
        return (y if self.o_proj.bias is None else y + self.o_proj.bias), weights
