"""Checks for Lesson 02 (positional encodings): sinusoidal table, RoPE (adjacent pairs, and the
half-split layout as a bonus), ALiBi slopes, T5 relative position buckets. Each misconception
below is a tiny re-creation of the mistake; the check names the one whose outputs equal the learner's."""
from __future__ import annotations

import math

import torch

from course_lib import positional as ref
from .cases import Case, grade_function, randn
from .core import register


# ------------------------------------------------------------------ sinusoidal
def _sinusoidal_variant(T, d, *, order="interleaved", exponent="2i"):
    pos = torch.arange(T, dtype=torch.float64)[:, None]  # (T, 1)
    k = torch.arange(d, dtype=torch.float64)  # (d,) dimension index
    i = torch.div(k, 2, rounding_mode="floor")  # (d,) pair index
    power = {"2i": 2 * i, "i": i, "k": k}[exponent]
    angles = pos / 10000.0 ** (power / d)  # (T, d)
    even = (k % 2 == 0)
    if order == "swapped":
        return torch.where(even, angles.cos(), angles.sin()).float()
    pe = torch.where(even, angles.sin(), angles.cos())  # (T, d), sin on even, cos on odd
    if order == "concatenated":
        return torch.cat([pe[:, 0::2], pe[:, 1::2]], dim=-1).float()  # (T, d): all sin, then all cos
    return pe.float()


SINUSOIDAL_MISCONCEPTIONS = {
    "swapped": "sin and cos are swapped: the paper puts sin on the even dimensions (2i) and cos on "
               "the odd ones (2i+1).",
    "concatenated": "all the sines come first and all the cosines after ([sin | cos]), tensor2tensor's "
                    "layout; this exercise asks for the paper's, which interleaves them: dimension 2i is sin, "
                    "dimension 2i+1 is cos of the *same* angle.",
    "exponent_i_over_d": "the frequency uses 10000^(i/d) with i the pair index; the paper's exponent "
                         "is 2i/d, so the wavelengths run from 2π up to 10000·2π across the d dimensions.",
    "exponent_per_dimension": "each dimension k uses 10000^(k/d), so the cos at 2i+1 gets a different "
                              "frequency from its sin at 2i. Both members of a pair share 10000^(2i/d).",
}


SINUSOIDAL_SOLUTION = """import torch


def sinusoidal_encoding(T: int, d: int) -> torch.Tensor:
    pos = torch.arange(T, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,): 1 / 10000^(2i/d)
    angles = pos * inv_freq  # (T, d/2)
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (T, d/2, 2): sin and cos of the same angle
    return pe.flatten(-2)  # (T, d): sin in columns 0, 2, 4, ..., cos in 1, 3, 5, ...
"""


@register("check_sinusoidal_encoding", minutes=15,
          forbid=('course_lib.positional.sinusoidal_encoding', 'course_lib.checks'), points=2, reference=SINUSOIDAL_SOLUTION,
          misconceptions=SINUSOIDAL_MISCONCEPTIONS,
          hint="angles[pos, i] = pos / 10000 ** (2i / d) for i = 0 .. d/2 - 1 (torch.arange(0, d, 2) gives "
               "2i directly). Put sin(angles) in columns 0, 2, 4, ... and cos(angles) in 1, 3, 5, ... "
               "(pe[:, 0::2] = ..., or stack [sin, cos] on a new last axis and merge it into d). "
               "Return float32 (T, d).")
def check_sinusoidal_encoding(learner):
    cases = [Case(f"T={T}, d={d}", (T, d)) for T, d in [(1, 2), (10, 16), (7, 6), (50, 64), (128, 32)]]
    variants = {
        "swapped": lambda T, d: _sinusoidal_variant(T, d, order="swapped"),
        "concatenated": lambda T, d: _sinusoidal_variant(T, d, order="concatenated"),
        "exponent_i_over_d": lambda T, d: _sinusoidal_variant(T, d, exponent="i"),
        "exponent_per_dimension": lambda T, d: _sinusoidal_variant(T, d, exponent="k"),
    }
    return grade_function(learner, cases, ref.sinusoidal_encoding, variants, ("T", "d"))


# ------------------------------------------------------------------ RoPE
def _rope_variant(x, positions, theta=10000.0, *, pairs="adjacent", freqs="adjacent", sign=1.0,
                  ignore_positions=False, exponent="2i", ignore_theta=False):
    D = x.size(-1)
    if ignore_positions:
        positions = torch.arange(x.size(-2))
    theta = 10000.0 if ignore_theta else theta
    power = torch.arange(0, D, 2, dtype=torch.float64) / (2 if exponent == "i" else 1)  # (D/2,)
    angles = positions[..., None].double() * theta ** (-power / D)  # (..., T, D/2)
    if freqs == "half":
        angles = torch.cat([angles, angles], -1)  # (..., T, D)
    else:
        angles = angles.repeat_interleave(2, -1)  # (..., T, D)
    if angles.dim() == 3:
        angles = angles[:, None]  # (B, 1, T, D)
    rotate = ref.rotate_half if pairs == "half" else ref.rotate_adjacent
    x64 = x.double()
    return (x64 * angles.cos() + sign * rotate(x64) * angles.sin()).to(x.dtype)


def _rope_cases(g) -> list[Case]:
    b_t = torch.tensor([[0, 1, 2, 3], [7, 8, 9, 10]])
    return [
        Case("x (1, 1, 4, 2), positions arange(4)", (randn(1, 1, 4, 2, gen=g), torch.arange(4))),
        Case("x (2, 3, 6, 8), positions arange(6)", (randn(2, 3, 6, 8, gen=g), torch.arange(6))),
        Case("x (2, 2, 5, 16), positions arange(10, 15) (an offset, as with a KV cache)",
             (randn(2, 2, 5, 16, gen=g), torch.arange(10, 15))),
        Case("x (2, 3, 4, 8), positions of shape (B, T) = [[0, 1, 2, 3], [7, 8, 9, 10]]",
             (randn(2, 3, 4, 8, gen=g), b_t)),
        Case("x (1, 2, 5, 32), positions arange(3, 8), theta=500000.0",
             (randn(1, 2, 5, 32, gen=g), torch.arange(3, 8)), {"theta": 500000.0}),
    ]


_ROPE_COMMON = {
    "ignores_positions": "the rotation uses torch.arange(T) instead of the `positions` you were given, so "
                         "an offset (a KV cache continuing at position 10) or per-sequence positions are lost. "
                         "Use positions[..., None] * inv_freq.",
    "negative_rotation": "the rotation goes the wrong way (by -mθ): the sin term has the wrong sign. "
                         "Rotating (x1, x2) by +mθ gives (x1 cos - x2 sin, x1 sin + x2 cos).",
    "exponent_i_over_d": "the frequencies use θ^(-i/D) with i the pair index; RoPE's are θ^(-2i/D) "
                         "(Su et al. 2021, Eq. 15), i.e. θ ** (-torch.arange(0, D, 2) / D).",
    "ignores_theta": "the base θ is fixed at 10000 and the `theta` argument is ignored; LLaMA 3, for "
                     "example, uses θ = 500000.",
    "mutates_input": "the input x was changed in place; build a new tensor instead.",
}

ROPE_MISCONCEPTIONS = {
    "half_layout": "you rotated the half-split pairs (j, j + D/2), Hugging Face Llama's `rotate_half` "
                   "layout, but this exercise asks for adjacent pairs (2i, 2i+1), the RoFormer paper's form: "
                   "rotate x[..., 0::2] with x[..., 1::2].",
    "mixed_layout": "the features are paired as adjacent (2i, 2i+1) but the cos/sin table is laid out for the "
                    "half-split layout (torch.cat([angles, angles])). With adjacent pairs each angle must be "
                    "repeated in place: angles.repeat_interleave(2, -1).",
    **_ROPE_COMMON,
}

ROPE_HALF_MISCONCEPTIONS = {
    "adjacent_layout": "you rotated adjacent pairs (2i, 2i+1), the RoFormer layout, but this exercise asks for "
                       "Hugging Face Llama's half-split pairs (j, j + D/2): rotate_half(x) = cat(-x2, x1).",
    "mixed_layout": "the features are paired half-split (j, j + D/2) but the cos/sin table is laid out for "
                    "adjacent pairs (repeat_interleave). With rotate_half the angles are repeated as two "
                    "halves: torch.cat([angles, angles], -1).",
    **_ROPE_COMMON,
}


ROPE_SOLUTION = """import torch


def apply_rope(x, positions, theta=10000.0):
    D = x.size(-1)
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)  # (D/2,)
    angles = positions[..., None].float() * inv_freq  # (..., T, D/2)
    if angles.dim() == 3:
        angles = angles[:, None]  # (B, 1, T, D/2): one set of positions per sequence, shared by heads
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, D/2): the two members of each pair
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, D/2, 2)
    return rotated.flatten(-2)  # (B, H, T, D)
"""

ROPE_HALF_SOLUTION = """import torch


def apply_rope_half(x, positions, theta=10000.0):
    D = x.size(-1)
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)  # (D/2,)
    angles = positions[..., None].float() * inv_freq  # (..., T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (..., T, D): feature j and j + D/2 share an angle
    if angles.dim() == 3:
        angles = angles[:, None]  # (B, 1, T, D)
    rotated_half = torch.cat([-x[..., D // 2:], x[..., :D // 2]], dim=-1)  # (B, H, T, D)
    return x * angles.cos() + rotated_half * angles.sin()
"""


def _grade_rope(learner, layout: str, seed: int) -> int:
    other = "half" if layout == "adjacent" else "adjacent"
    variants = {
        f"{other}_layout": lambda x, p, theta=10000.0: _rope_variant(x, p, theta, pairs=other, freqs=other),
        "mixed_layout": lambda x, p, theta=10000.0: _rope_variant(x, p, theta, pairs=layout, freqs=other),
        "ignores_positions": lambda x, p, theta=10000.0: _rope_variant(x, p, theta, pairs=layout, freqs=layout,
                                                                       ignore_positions=True),
        "negative_rotation": lambda x, p, theta=10000.0: _rope_variant(x, p, theta, pairs=layout, freqs=layout,
                                                                       sign=-1.0),
        "exponent_i_over_d": lambda x, p, theta=10000.0: _rope_variant(x, p, theta, pairs=layout, freqs=layout,
                                                                       exponent="i"),
        "ignores_theta": lambda x, p, theta=10000.0: _rope_variant(x, p, theta, pairs=layout, freqs=layout,
                                                                   ignore_theta=True),
    }

    def reference(x, positions, theta=10000.0):
        return ref.apply_rope(x, positions, theta, layout=layout)

    return grade_function(learner, _rope_cases(torch.Generator().manual_seed(seed)), reference, variants,
                          ("x", "positions"))


@register("check_apply_rope", minutes=20,
          forbid=('course_lib.positional.apply_rope', 'course_lib.positional.apply_rope_complex', 'course_lib.positional.apply_rotary', 'course_lib.positional.rope_cos_sin', 'course_lib.checks'), points=3, reference=ROPE_SOLUTION, misconceptions=ROPE_MISCONCEPTIONS,
          hint="inv_freq = theta ** (-torch.arange(0, D, 2) / D) has D/2 entries; angles = positions[..., None] "
               "* inv_freq is (..., T, D/2). Rotate each pair (x[..., 0::2], x[..., 1::2]) by its angle: "
               "(x1 cos - x2 sin, x1 sin + x2 cos), then interleave the results back: stack them on a new last "
               "axis and merge it with the one before. When positions is (B, T), add a head axis to cos and "
               "sin: [:, None].")
def check_apply_rope(learner):
    return _grade_rope(learner, "adjacent", seed=4)


@register("check_apply_rope_half", minutes=10,
          forbid=('course_lib.positional.apply_rope', 'course_lib.positional.apply_rope_complex', 'course_lib.positional.apply_rotary', 'course_lib.positional.rope_cos_sin', 'course_lib.checks'), points=1, reference=ROPE_HALF_SOLUTION, misconceptions=ROPE_HALF_MISCONCEPTIONS,
          hint="Same angles as before, laid out as torch.cat([angles, angles], -1) (D entries). With "
               "rotate_half(x) = torch.cat([-x[..., D//2:], x[..., :D//2]], -1), the result is "
               "x * cos + rotate_half(x) * sin.")
def check_apply_rope_half(learner):
    return _grade_rope(learner, "half", seed=5)


# ------------------------------------------------------------------ ALiBi slopes
def _slopes_variant(n, *, extra="every_other", first=1, power_of_two_only=False, sort=False):
    def geometric(m):
        return [2.0 ** (-8.0 * (i + first) / m) for i in range(m)]

    if power_of_two_only:
        slopes = geometric(n)
    else:
        p = 2 ** int(math.log2(n))
        more = geometric(2 * p)
        slopes = geometric(p) + (more[0::2] if extra == "every_other" else more)[: n - p]
    if sort:
        slopes = sorted(slopes, reverse=True)
    return torch.tensor(slopes, dtype=torch.float32)


ALIBI_MISCONCEPTIONS = {
    "non_power_of_two": "the slopes are 2^(-8i/n) for every n, which the paper defines only when n is a power "
                        "of two. For other n take the 2^k < n closest slopes, then every other slope of the "
                        "2^(k+1)-head sequence (Press et al. 2022, §3).",
    "starts_at_one": "the first slope is 2^0 = 1: the sequence starts at 2^(-8/n) (head 1), so use exponents "
                     "-8(i + 1)/n for i = 0 .. n-1.",
    "extra_not_interleaved": "the extra slopes for a non-power-of-two head count are the *first* ones of the "
                             "2^(k+1) sequence; the paper takes every other one ([0::2]), so they fall between "
                             "the slopes you already have.",
    "sorted": "the slopes are sorted. For a non-power-of-two head count the paper keeps the order: the "
              "2^k geometric slopes first, then the interleaved extra ones.",
}


ALIBI_SOLUTION = """import math

import torch


def alibi_slopes(n_heads: int) -> torch.Tensor:
    def power_of_two(n):  # n a power of two: 2^(-8/n), 2^(-16/n), ..., 2^(-8)
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_heads))  # the largest power of two <= n_heads
    slopes = power_of_two(p) + power_of_two(2 * p)[0::2][: n_heads - p]  # then every other 2p-head slope
    return torch.tensor(slopes, dtype=torch.float32)  # (H,)
"""


@register("check_alibi_slopes", minutes=15,
          forbid=('course_lib.positional.alibi_slopes', 'course_lib.checks'), points=2, reference=ALIBI_SOLUTION, misconceptions=ALIBI_MISCONCEPTIONS,
          hint="For n a power of two: start = 2 ** (-8 / n), slopes = [start ** (i + 1) for i in range(n)]. "
               "Otherwise let p = 2 ** floor(log2(n)): the p slopes for p heads, then the 2p-head slopes "
               "[0::2][: n - p]. Return torch.tensor(slopes) (float32, shape (n,)).")
def check_alibi_slopes(learner):
    cases = [Case(f"n_heads={n}", (n,)) for n in (1, 2, 4, 8, 16, 3, 6, 12, 20, 24)]
    variants = {
        "non_power_of_two": lambda n: _slopes_variant(n, power_of_two_only=True),
        "starts_at_one": lambda n: _slopes_variant(n, first=0),
        "extra_not_interleaved": lambda n: _slopes_variant(n, extra="first"),
        "sorted": lambda n: _slopes_variant(n, sort=True),
    }
    return grade_function(learner, cases, ref.alibi_slopes, variants, ("n_heads",))


# ------------------------------------------------------------------ T5 buckets
def _bucket_variant(rel, bidirectional=True, num_buckets=32, max_distance=128, *, sign=1, clamp=True,
                    causal_abs=False, split=True):
    rel = sign * rel
    out = torch.zeros_like(rel)
    if bidirectional:
        if split:
            num_buckets //= 2
        out = out + (rel > 0).long() * num_buckets
        n = rel.abs()
    else:
        n = rel.abs() if causal_abs else (-rel).clamp(min=0)
    exact = num_buckets // 2
    large = exact + (torch.log(n.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                     * (num_buckets - exact)).long()
    if clamp:
        large = large.clamp(max=num_buckets - 1)
    return out + torch.where(n < exact, n, large)


T5_MISCONCEPTIONS = {
    "sign_flipped": "the relative position has the wrong sign. T5 uses key position - query position "
                    "(memory - context), so keys in the past are negative; in the causal case only those "
                    "count, and in the bidirectional case the *positive* ones get the upper half of the buckets.",
    "no_max_distance_clamp": "distances beyond max_distance produce bucket ids past the end. Clamp the "
                             "logarithmic buckets with .clamp(max=num_buckets - 1): everything from "
                             "max_distance on shares the last bucket.",
    "causal_uses_abs": "in the causal (bidirectional=False) case you bucket |relative_position|, so keys in "
                       "the future get buckets too. Use n = max(-relative_position, 0): the future maps to 0.",
    "no_half_split": "in the bidirectional case the buckets are not split in two: halve num_buckets first "
                     "(num_buckets //= 2), then add num_buckets to the ids of keys after the query.",
}


def _rel(T_q, T_k, offset=0):
    return torch.arange(T_k)[None, :] - (torch.arange(T_q)[:, None] + offset)  # (T_q, T_k)


T5_BUCKET_SOLUTION = """import math

import torch


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    buckets = torch.zeros_like(relative_position)  # same shape, torch.long
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets  # keys after the query: upper half
        n = relative_position.abs()
    else:
        n = (-relative_position).clamp(min=0)  # causal: only the past counts, the future is 0
    max_exact = num_buckets // 2
    # log-spaced from max_exact to max_distance; clamp(min=1) only avoids log(0) where it is not used
    log_ratio = torch.log(n.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(n < max_exact, n, large)
"""


@register("check_relative_position_bucket", minutes=25,
          forbid=('course_lib.positional.relative_position_bucket', 'course_lib.checks'), points=3, reference=T5_BUCKET_SOLUTION,
          misconceptions=T5_MISCONCEPTIONS,
          hint="If bidirectional: halve num_buckets, add num_buckets where relative_position > 0, and use "
               "n = |relative_position|; else n = (-relative_position).clamp(min=0). With max_exact = "
               "num_buckets // 2: n < max_exact keeps bucket n; otherwise max_exact + log(n / max_exact) / "
               "log(max_distance / max_exact) * (num_buckets - max_exact), cast with .long() and clamped to "
               "num_buckets - 1. torch.where picks between them.")
def check_relative_position_bucket(learner):
    rng = torch.arange(-300, 301)
    cases = [
        Case("relative_position = arange(-300, 301), bidirectional=True, 32 buckets, max_distance 128",
             (rng, True, 32, 128)),
        Case("relative_position = arange(-300, 301), bidirectional=False, 32 buckets, max_distance 128",
             (rng, False, 32, 128)),
        Case("relative_position of shape (6, 200) (key - query, queries at 194..199), bidirectional=False, "
             "16 buckets, max_distance 64", (_rel(6, 200, 194), False, 16, 64)),
        Case("relative_position = arange(-50, 51), bidirectional=True, 8 buckets, max_distance 20",
             (torch.arange(-50, 51), True, 8, 20)),
        Case("relative_position of shape (20, 20), bidirectional=True, 10 buckets, max_distance 50",
             (_rel(20, 20), True, 10, 50)),
    ]
    variants = {
        "sign_flipped": lambda *a: _bucket_variant(*a, sign=-1),
        "no_max_distance_clamp": lambda *a: _bucket_variant(*a, clamp=False),
        "causal_uses_abs": lambda *a: _bucket_variant(*a, causal_abs=True),
        "no_half_split": lambda *a: _bucket_variant(*a, split=False),
    }
    return grade_function(learner, cases, ref.relative_position_bucket, variants, ("relative_position",))
