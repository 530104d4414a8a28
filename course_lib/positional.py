"""Positional information, read top to bottom: sinusoidal -> learned -> RoPE -> ALiBi -> T5 buckets.

Self-attention is permutation-equivariant: shuffle the tokens and the outputs shuffle the
same way. Each scheme below tells the model *where* a token is, in one of two places:
  * added to the token embeddings (absolute): sinusoidal (Transformer, 2017), learned (GPT-2, BERT);
  * inside attention (relative): RoPE rotates q and k (LLaMA), ALiBi and T5 add a bias to the scores.

Shapes: B batch, T time, H heads, D head size. ``positions`` are integer tensors (T,) or (B, T),
so a KV cache can pass positions that start at an offset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.config import check_choice, check_positive, check_positive_values, check_range, is_tracing

LAYOUTS = ("adjacent", "half")


# --------------------------------------------------------------------------- sinusoidal
def sinusoidal_encoding(T: int, d: int, base: float = 10000.0, dtype: torch.dtype = torch.float32,
                        device: torch.device | None = None) -> torch.Tensor:
    """(T, d) table of Vaswani et al. 2017, §3.5:
    PE(pos, 2i) = sin(pos / base^(2i/d)),  PE(pos, 2i+1) = cos(pos / base^(2i/d))."""
    if T < 1 or d < 2 or d % 2:
        raise ValueError(f"sinusoidal_encoding needs T >= 1 and an even d >= 2 (sin and cos come in "
                         f"pairs), got T={T}, d={d}; use d={d + d % 2} or another even width.")
    pos = torch.arange(T, dtype=torch.float64, device=device)[:, None]  # (T, 1)
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)  # (d/2,)
    angles = pos * inv_freq  # (T, d/2)
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (T, d/2, 2): sin, cos interleaved
    return pe.flatten(-2).to(dtype)  # (T, d)


class LearnedPositionalEmbedding(nn.Embedding):
    """One trained vector per position (GPT-2's ``wpe``, BERT's ``position_embeddings``).

    ``forward(positions)`` with integer positions (T,) or (B, T) returns (..., d). It cannot
    go beyond ``max_positions``: that row was never trained, so there is nothing to look up.
    """

    def __init__(self, max_positions: int, d: int):
        cfg = _Sizes(max_positions, d)
        super().__init__(cfg.max_positions, cfg.d)
        nn.init.normal_(self.weight, mean=0.0, std=0.02)  # GPT-2's initialisation

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        _check_positions(positions)
        if is_tracing():  # torch.export and torch.compile trace shapes, not values
            return super().forward(positions)
        if positions.numel() and int(positions.max()) >= self.num_embeddings:
            raise ValueError(f"position {int(positions.max())} is beyond the {self.num_embeddings} learned "
                             "positions: a learned table cannot extrapolate. Use shorter inputs or a "
                             "larger max_positions (and train those rows).")
        return super().forward(positions)  # (..., d)


@dataclass
class _Sizes:
    max_positions: int
    d: int

    def __post_init__(self):
        check_positive(self, "max_positions", "d")


def _check_positions(positions) -> None:
    if not isinstance(positions, torch.Tensor) or positions.is_floating_point() or positions.dtype == torch.bool:
        raise TypeError(f"positions must be an integer tensor such as torch.arange(T), got "
                        f"{getattr(positions, 'dtype', type(positions).__name__)}.")
    if positions.numel() and not is_tracing() and int(positions.min()) < 0:
        raise ValueError(f"positions must be >= 0, got {int(positions.min())}.")


# --------------------------------------------------------------------------- RoPE
@dataclass
class RopeScaling:
    """Stretch RoPE to contexts ``factor`` times longer than trained.

    * ``"linear"`` - position interpolation (Chen et al. 2023, Eq. 4): use position m / factor,
      i.e. divide every frequency by ``factor``.
    * ``"ntk"`` - "NTK-aware" scaling (bloc97 2023; Peng et al. 2023, YaRN §3.1): keep the fast
      frequencies, stretch the slow ones, by raising the base: theta' = theta * factor^(D / (D - 2)).
    """
    kind: str = "linear"
    factor: float = 1.0

    def __post_init__(self):
        check_choice(self, "kind", ("linear", "ntk"), hint="'linear' = position interpolation, 'ntk' = a larger base")
        check_range(self, "factor", 1, math.inf, hint="new context length / trained context length, e.g. factor=4.0")


def rope_inv_freq(head_dim: int, theta: float = 10000.0, scaling: RopeScaling | dict | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(D/2,) angular frequencies theta_i = theta^(-2i/D) (Su et al. 2021, Eq. 15), optionally scaled."""
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of features, so head_dim must be even, got {head_dim}.")
    if isinstance(scaling, dict):
        scaling = RopeScaling(**scaling)
    if scaling is not None and scaling.kind == "ntk":
        theta = theta * scaling.factor ** (head_dim / (head_dim - 2))
    # the same operations as Hugging Face Llama, so cos/sin agree bit for bit in float32
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype) / head_dim))
    if scaling is not None and scaling.kind == "linear":
        inv_freq = inv_freq / scaling.factor
    return inv_freq  # (D/2,)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0, layout: str = "half",
                 scaling: RopeScaling | dict | None = None,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles m * theta_i, each positions.shape + (D,), laid out to
    match `layout`: "half" repeats the D/2 angles as [a0..a_{D/2-1}, a0..a_{D/2-1}] (HF Llama);
    "adjacent" repeats each angle twice in a row, [a0, a0, a1, a1, ...] (RoFormer, Meta)."""
    _check_layout(layout)
    _check_positions(positions)
    inv_freq = rope_inv_freq(head_dim, theta, scaling, dtype).to(positions.device)  # (D/2,)
    angles = positions[..., None].to(dtype) * inv_freq  # (..., T, D/2)
    if layout == "half":
        angles = torch.cat([angles, angles], dim=-1)  # (..., T, D)
    else:
        angles = angles.repeat_interleave(2, dim=-1)  # (..., T, D)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] with x1, x2 the two halves: pairs feature j with feature j + D/2."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., D/2) each
    return torch.cat([-x2, x1], dim=-1)  # (..., D)


def rotate_adjacent(x: torch.Tensor) -> torch.Tensor:
    """[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]: pairs feature 2i with feature 2i+1."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., D/2, 2)
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (..., D)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "half") -> torch.Tensor:
    """Rotate every feature pair of x (B, H, T, D) by its angle: x cos + rotate(x) sin
    (Su et al. 2021, Eq. 34). cos/sin are (T, D) or (B, T, D) from `rope_cos_sin`."""
    _check_layout(layout)
    if cos.dim() == 3 and x.dim() == 4:
        cos, sin = cos[:, None], sin[:, None]  # (B, T, D) -> (B, 1, T, D): broadcast over heads
    rotate = rotate_half if layout == "half" else rotate_adjacent
    return x * cos.to(x.dtype) + rotate(x) * sin.to(x.dtype)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0, layout: str = "adjacent",
               scaling: RopeScaling | dict | None = None) -> torch.Tensor:
    """RoPE on q or k of shape (B, H, T, D), token t at position positions[..., t]."""
    if x.dim() < 2 or x.size(-2) != positions.size(-1):
        raise ValueError(f"x has {x.size(-2) if x.dim() >= 2 else '?'} positions along dim -2 but "
                         f"`positions` has {positions.size(-1)}; pass one position per token, e.g. "
                         f"torch.arange(offset, offset + T).")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(x.device), x.size(-1), theta, layout, scaling, dtype)  # (..., T, D)
    return apply_rotary(x, cos, sin, layout)


def apply_rope_complex(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Meta's original form: view adjacent pairs as complex numbers and multiply by e^(i m theta_i).
    Equal to ``apply_rope(x, positions, theta, layout="adjacent")``."""
    xc = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())  # (..., T, D/2) complex
    angles = positions[..., None].double() * rope_inv_freq(x.size(-1), theta, dtype=torch.float64)  # (..., T, D/2)
    rot = torch.polar(torch.ones_like(angles), angles)  # (..., T, D/2): e^(i m theta_i)
    if rot.dim() == 3 and xc.dim() == 4:
        rot = rot[:, None]  # (B, 1, T, D/2)
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)  # (..., T, D)


def half_to_adjacent_permutation(head_dim: int) -> torch.Tensor:
    """Feature order p with ``rope_half(x)[..., p] == rope_adjacent(x[..., p])``: half-split
    feature j pairs with j + D/2, so they must land next to each other at 2j and 2j+1."""
    half = torch.arange(head_dim // 2)
    return torch.stack([half, half + head_dim // 2], dim=-1).flatten()  # (D/2, 2) -> (D,)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected 'adjacent' (pairs 2i, 2i+1; RoFormer, Meta) or "
                         "'half' (pairs i, i + D/2; Hugging Face Llama).")


# --------------------------------------------------------------------------- ALiBi
def alibi_slopes(n_heads: int) -> torch.Tensor:
    """(H,) head slopes of Press et al. 2022, §3: for H a power of two, the geometric sequence
    starting at 2^(-8/H) with that same ratio. Otherwise take the 2^k < H closest slopes,
    then every other slope of the 2^(k+1)-head sequence until there are H."""
    check_positive_values("alibi_slopes", n_heads=n_heads)

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)  # (H,)


def alibi_bias(n_heads: int, T_q: int, T_k: int) -> torch.Tensor:
    """(H, T_q, T_k) additive score bias -slope_h * |i - j| (Press et al. 2022, Eq. in §3).

    Queries are the *last* T_q of the T_k positions (as with a KV cache). Under a causal mask
    only j <= i survives, where this is the paper's -m (i - j); the symmetric values above the
    diagonal are what bidirectional ALiBi variants use.
    """
    if T_q > T_k:
        raise ValueError(f"T_q={T_q} > T_k={T_k}: the queries are the last T_q of the T_k key positions.")
    q_pos = torch.arange(T_k - T_q, T_k)[:, None]  # (T_q, 1)
    k_pos = torch.arange(T_k)[None, :]  # (1, T_k)
    neg_distance = -(q_pos - k_pos).abs()  # (T_q, T_k), integers: no -0.0 on the diagonal
    return alibi_slopes(n_heads)[:, None, None] * neg_distance  # (H, T_q, T_k)


# --------------------------------------------------------------------------- T5 relative buckets
def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """Map relative positions (key - query) to bucket ids in [0, num_buckets) (Raffel et al.
    2020, §2.1). Small distances get a bucket each; larger ones share logarithmically wider
    buckets; all distances >= max_distance share the last. Bidirectional: half the buckets
    are for keys after the query. Causal: keys after the query all map to bucket 0."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets  # keys in the future
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # only the past counts
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log-spaced between max_exact and max_distance; clamp(min=1) only avoids log(0) where unused
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)  # everything beyond max_distance: the last bucket
    return buckets + torch.where(is_small, distance, large)


@dataclass
class RelativeBiasConfig:
    n_heads: int = 8
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True

    def __post_init__(self):
        check_positive(self, "n_heads", "num_buckets", "max_distance")
        check_range(self, "num_buckets", 4 if self.bidirectional else 2, math.inf, integer=True,
                    hint=f"half exact, half logarithmic{', per direction' * self.bidirectional}; T5: 32")
        exact = self.num_buckets // (4 if self.bidirectional else 2)
        check_range(self, "max_distance", exact, math.inf, low_inclusive=False, integer=True,
                    hint=f"more than the {exact} exactly-bucketed distances, e.g. max_distance={4 * exact}")


class T5RelativeBias(nn.Module):
    """A learned scalar per (bucket, head), added to the attention scores (T5).
    ``relative_attention_bias`` has Hugging Face's name, so T5 weights load as they are."""

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.config = RelativeBiasConfig(n_heads, num_buckets, max_distance, bidirectional)
        self.relative_attention_bias = nn.Embedding(num_buckets, n_heads)

    def forward(self, T_q: int, T_k: int, offset: int = 0) -> torch.Tensor:
        """(1, H, T_q, T_k) bias; query t sits at position offset + t (a KV cache passes offset)."""
        device = self.relative_attention_bias.weight.device
        q_pos = torch.arange(T_q, device=device)[:, None] + offset  # (T_q, 1)
        k_pos = torch.arange(T_k, device=device)[None, :]  # (1, T_k)
        c = self.config
        buckets = relative_position_bucket(k_pos - q_pos, c.bidirectional, c.num_buckets, c.max_distance)  # (T_q, T_k)
        values = self.relative_attention_bias(buckets)  # (T_q, T_k, H)
        return values.permute(2, 0, 1)[None]  # (1, H, T_q, T_k)
