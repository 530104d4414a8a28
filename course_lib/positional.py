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
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from course_lib.config import (ConfigError, check_choice, check_positive, check_positive_values, check_range,
                               is_tracing)

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
SCALINGS = ("linear", "ntk", "yarn")


@dataclass
class RopeScaling:
    """Stretch RoPE to contexts ``factor`` times longer than trained.

    * ``"linear"`` - position interpolation (Chen et al. 2023, Eq. 4): use position m / factor,
      i.e. divide every frequency by ``factor``.
    * ``"ntk"`` - "NTK-aware" scaling (bloc97 2023; Peng et al. 2023, YaRN §3.1): keep the fast
      frequencies, stretch the slow ones, by raising the base: theta' = theta * factor^(D / (D - 2)).
    * ``"yarn"`` - YaRN (Peng et al. 2023, §3.2 "NTK-by-parts" + §3.4): sort the frequencies into
      bands by how many full turns they make over the trained context ``original_max_positions``.
      More than ``beta_fast`` turns: kept as they are; fewer than ``beta_slow``: divided by
      ``factor`` like "linear"; in between: a linear ramp from one to the other. Then every
      logit is multiplied by (0.1·ln(factor) + 1)² (the paper's 1/t, §3.4), done as HF does by
      multiplying cos and sin, hence q and k, by 0.1·ln(factor) + 1 (``rope_attention_factor``).
      Fields and rules equal HF's ``rope_type: "yarn"``: ``attention_factor`` replaces
      0.1·ln(factor) + 1; ``mscale`` with ``mscale_all_dim`` (DeepSeek-V3) make it a ratio of two
      such terms; ``truncate`` rounds the band edges to whole dimensions (GPT-OSS sets it False).
      ``from_hf`` / ``to_hf`` read and write HF's ``rope_parameters`` dict.
    """
    kind: str = "linear"
    factor: float = 1.0
    original_max_positions: int | None = None  # yarn: the context length the model was trained on
    beta_fast: float = 32.0  # yarn: dimensions turning more often than this keep their frequency
    beta_slow: float = 1.0  # yarn: dimensions turning less often than this are interpolated
    attention_factor: float | None = None  # yarn: None = 0.1·ln(factor) + 1
    mscale: float | None = None  # yarn (DeepSeek-V3): with mscale_all_dim, the ratio form
    mscale_all_dim: float | None = None
    truncate: bool = True  # yarn: round the band edges outwards to whole dimensions

    def __post_init__(self):
        check_choice(self, "kind", SCALINGS, hint="'linear' = position interpolation, 'ntk' = a larger base, "
                     "'yarn' = by frequency band, with an attention temperature")
        check_range(self, "factor", 1, math.inf, hint="new context length / trained context length, e.g. factor=4.0")
        if self.kind != "yarn":
            return
        if self.original_max_positions is None:
            raise ConfigError("RopeScaling(kind='yarn') needs original_max_positions, the context length the "
                              "model was trained on (HF: original_max_position_embeddings), e.g. 4096.")
        check_positive(self, "original_max_positions")
        check_range(self, "beta_slow", 0, math.inf, low_inclusive=False, hint="YaRN's default is 1.0")
        check_range(self, "beta_fast", self.beta_slow, math.inf, low_inclusive=False,
                    hint=f"a number of turns above beta_slow={self.beta_slow}; YaRN's default is 32.0")
        if self.attention_factor is not None:
            check_range(self, "attention_factor", 0, math.inf, low_inclusive=False,
                        hint="or None for 0.1·ln(factor) + 1")

    def __repr__(self) -> str:
        """Only what is set: RopeScaling(kind='linear', factor=4.0); YaRN adds its non-default fields."""
        shown = ["kind", "factor"]
        if self.kind == "yarn":
            shown += [f.name for f in fields(self)[2:] if getattr(self, f.name) != f.default]
        return f"RopeScaling({', '.join(f'{name}={getattr(self, name)!r}' for name in shown)})"

    # Hugging Face keeps these in config.rope_parameters (config.json: "rope_scaling")
    @classmethod
    def from_hf(cls, rope_parameters: dict | None, max_positions: int | None = None) -> RopeScaling | None:
        """HF's rope_parameters -> RopeScaling, or None for plain RoPE (rope_type "default").
        ``max_positions`` (HF: max_position_embeddings) fills what HF fills from it when missing."""
        params = dict(rope_parameters or {})
        kind = params.get("rope_type", params.get("type", "default"))
        if kind == "default":
            return None
        if kind == "linear":
            return cls("linear", float(params["factor"]))
        if kind != "yarn":
            raise ValueError(f"rope_type={kind!r} is not supported by course_lib (only 'default', 'linear' and "
                             "'yarn'); HF's 'dynamic' differs from course_lib's fixed 'ntk' base.")
        original = params.get("original_max_position_embeddings") or max_positions
        factor = params.get("factor") or (max_positions / original if max_positions and original else None)
        optional = {name: params[name] for name in YARN_OPTIONS if params.get(name) is not None}
        return cls("yarn", float(factor) if factor is not None else None, original, **optional)

    def to_hf(self) -> dict:
        """The rope_parameters entries HF reads for this scaling (add "rope_theta" to them)."""
        if self.kind == "linear":
            return {"rope_type": "linear", "factor": float(self.factor)}
        if self.kind == "ntk":
            raise ValueError("RopeScaling(kind='ntk') has no Hugging Face rope_type: HF's 'dynamic' recomputes "
                             "the base from each sequence's length. Use 'linear' or 'yarn' for a HF model.")
        hf = {"rope_type": "yarn", "factor": float(self.factor),
              "original_max_position_embeddings": self.original_max_positions}
        return hf | {name: getattr(self, name) for name in YARN_OPTIONS if getattr(self, name) is not None}


YARN_OPTIONS = ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate")  # HF's names too


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
    powers = theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype) / head_dim)  # (D/2,) theta^(2i/D)
    if scaling is not None and scaling.kind == "yarn":
        return _yarn_inv_freq(powers, head_dim, theta, scaling)  # (D/2,)
    inv_freq = 1.0 / powers  # (D/2,)
    if scaling is not None and scaling.kind == "linear":
        inv_freq = inv_freq / scaling.factor
    return inv_freq  # (D/2,)


def yarn_band(head_dim: int, theta: float, scaling: RopeScaling) -> tuple[float, float]:
    """YaRN §3.2: the frequency dimensions (0 .. D/2-1, fastest first) where the ramp starts and
    ends. Dimension i turns L / (2π · theta^(2i/D)) times over the trained context L; solving
    for the i that turns exactly beta times gives i = D·ln(L / (2π·beta)) / (2·ln theta)."""
    L = scaling.original_max_positions
    dim_at = lambda turns: head_dim * math.log(L / (turns * 2 * math.pi)) / (2 * math.log(theta))  # noqa: E731
    low, high = dim_at(scaling.beta_fast), dim_at(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, head_dim - 1)


def _yarn_inv_freq(powers: torch.Tensor, head_dim: int, theta: float, scaling: RopeScaling) -> torch.Tensor:
    """Blend each frequency 1 / theta^(2i/D) between itself (fast dimensions) and itself / factor
    (slow ones), in the order of operations HF uses (so float32 agrees bit for bit)."""
    low, high = yarn_band(head_dim, theta, scaling)
    high = high + 0.001 if high == low else high  # a band of width 0: a step instead of a ramp
    ramp = ((torch.arange(head_dim // 2, dtype=powers.dtype) - low) / (high - low)).clamp(0, 1)  # (D/2,)
    keep = 1 - ramp  # (D/2,) 1 = keep the frequency (extrapolate), 0 = divide it by factor (interpolate)
    original, interpolated = 1.0 / powers, 1.0 / (scaling.factor * powers)  # (D/2,) each
    return interpolated * (1 - keep) + original * keep  # (D/2,)


def rope_attention_factor(scaling: RopeScaling | dict | None) -> float:
    """What cos and sin are multiplied by: 1, except for YaRN (§3.4), whose attention logits are
    multiplied by 1/t with sqrt(1/t) = 0.1·ln(factor) + 1: scaling q and k by sqrt(1/t) each does it."""
    if isinstance(scaling, dict):
        scaling = RopeScaling(**scaling)
    if scaling is None or scaling.kind != "yarn":
        return 1.0
    if scaling.attention_factor is not None:
        return float(scaling.attention_factor)

    def mscale(factor: float, m: float = 1.0) -> float:
        return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0

    if scaling.mscale and scaling.mscale_all_dim:  # DeepSeek-V3's form (HF's rule, kept as it is)
        return mscale(scaling.factor, scaling.mscale) / mscale(scaling.factor, scaling.mscale_all_dim)
    return mscale(scaling.factor)


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
    attention_factor = rope_attention_factor(scaling)  # 1 except for YaRN
    if attention_factor != 1.0:
        return angles.cos() * attention_factor, angles.sin() * attention_factor
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
