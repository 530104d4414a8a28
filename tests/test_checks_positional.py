"""The lesson-02 checks, both ways: correct implementations written in other ways pass; the stub
is "not attempted"; each named misconception, written as a learner would write it (independently
of the grader's re-creations), is diagnosed with its explanation in the message."""
import math

import numpy as np
import pytest
import torch

from course_lib import positional as ref
from course_lib.checks import (check_alibi_slopes, check_apply_rope, check_apply_rope_half,
                               check_relative_position_bucket, check_sinusoidal_encoding, solution)

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("check", [check_sinusoidal_encoding, check_apply_rope, check_apply_rope_half,
                                   check_alibi_slopes, check_relative_position_bucket])
def test_stub_is_not_attempted(check):
    r = check(stub)
    assert_not_attempted(r)


# ------------------------------------------------------------------ sinusoidal
def sinusoidal_loops(T, d):  # correct: NumPy, one pair at a time
    pe = np.zeros((T, d))
    for pos in range(T):
        for i in range(d // 2):
            pe[pos, 2 * i] = math.sin(pos / 10000 ** (2 * i / d))
            pe[pos, 2 * i + 1] = math.cos(pos / 10000 ** (2 * i / d))
    return torch.tensor(pe, dtype=torch.float32)


def sinusoidal_exp_log(T, d):  # correct: exp/log frequencies, slice assignment, float32 throughout
    pos = torch.arange(T).float().unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
    pe = torch.zeros(T, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


SINUSOIDAL = solved("check_sinusoidal_encoding")


@pytest.mark.parametrize("impl", [SINUSOIDAL, sinusoidal_loops, sinusoidal_exp_log])
def test_sinusoidal_accepts_correct_implementations(impl):
    r = check_sinusoidal_encoding(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


def sinusoidal_import_inside(T, d):
    from course_lib.positional import sinusoidal_encoding
    return sinusoidal_encoding(T, d)


@pytest.mark.parametrize("impl", [ref.sinusoidal_encoding, sinusoidal_import_inside])
def test_sinusoidal_refuses_delegation(impl):
    assert_delegates(check_sinusoidal_encoding(impl), "course_lib.positional.sinusoidal_encoding")


def _learner_sinusoidal(T, d, mistake):
    pe = torch.zeros(T, d)
    pos = torch.arange(T).float()[:, None]
    for k in range(d):
        i = k // 2
        expo = {"i": i / d, "k": k / d}.get(mistake, 2 * i / d)
        angle = pos[:, 0] / 10000 ** expo
        even = k % 2 == 0
        if mistake == "swapped":
            even = not even
        pe[:, k] = torch.sin(angle) if even else torch.cos(angle)
    if mistake == "concatenated":
        i = torch.arange(0, d, 2).float()
        ang = pos / 10000 ** (i / d)
        pe = torch.cat([ang.sin(), ang.cos()], dim=1)
    return pe


SIN_BAD = {"swapped": "swapped", "concatenated": "concatenated", "exponent_i_over_d": "i",
           "exponent_per_dimension": "k"}


@pytest.mark.parametrize("key", list(SIN_BAD))
def test_sinusoidal_diagnoses_each_misconception(key):
    assert_diagnosed(check_sinusoidal_encoding(lambda T, d: _learner_sinusoidal(T, d, SIN_BAD[key])), key)


def test_sinusoidal_named_misconceptions_are_all_tested():
    assert_all_tested("check_sinusoidal_encoding", SIN_BAD)


def test_sinusoidal_wrong_dtype_is_explained():
    r = check_sinusoidal_encoding(lambda T, d: SINUSOIDAL(T, d).double())
    assert "dtype torch.float64, expected torch.float32" in r.message


# ------------------------------------------------------------------ RoPE
def rope_complex(x, positions, theta=10000.0):  # correct: Meta's view_as_complex form, float64 inside
    D = x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, D, 2).double() / D)
    angles = torch.outer(positions.reshape(-1).double(), freqs).reshape(*positions.shape, D // 2)  # (..., T, D/2)
    rot = torch.polar(torch.ones_like(angles), angles)
    if rot.dim() == 3:
        rot = rot.unsqueeze(1)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], D // 2, 2))  # (B, H, T, D/2) complex
    return torch.view_as_real(xc * rot).reshape(x.shape).to(x.dtype)  # (B, H, T, D/2, 2) -> (B, H, T, D)


def rope_matrix(x, positions, theta=10000.0):  # correct: builds the block-diagonal rotation matrix R_m (Eq. 15)
    B, H, T, D = x.shape
    pos = positions.expand(B, T) if positions.dim() == 1 else positions
    out = torch.empty_like(x)
    for b in range(B):
        for t in range(T):
            R = torch.zeros(D, D)
            for i in range(D // 2):
                a = pos[b, t].item() * theta ** (-2 * i / D)
                R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[math.cos(a), -math.sin(a)],
                                                                    [math.sin(a), math.cos(a)]])
            out[b, :, t] = x[b, :, t] @ R.T
    return out


@pytest.mark.parametrize("impl", [solved("check_apply_rope"), rope_complex, rope_matrix])
def test_rope_accepts_correct_implementations(impl):
    r = check_apply_rope(impl)
    assert r.passed and r.points == 3, r.message


def rope_via_cos_sin(x, positions, theta=10000.0):  # the angles are the course's, the rotation the learner's
    cos, sin = ref.rope_cos_sin(positions, x.size(-1), theta, layout="adjacent")
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    rot = torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2)  # (B, H, T, D)
    return x * cos + rot * sin


@pytest.mark.parametrize("impl,used", [
    (lambda x, p, theta=10000.0: ref.apply_rope(x, p, theta), "course_lib.positional.apply_rope"),
    (rope_via_cos_sin, "course_lib.positional.rope_cos_sin"),
])
def test_rope_refuses_delegation(impl, used):
    assert_delegates(check_apply_rope(impl), used)


def _learner_rope(x, positions, theta=10000.0, *, layout="adjacent", freqs=None, sign=1, use_arange=False,
                  pair_exponent=False, fixed_theta=False, in_place=False):
    """A learner's RoPE: pairs (x1, x2) rotated by angle; each flag is one mistake."""
    D = x.shape[-1]
    freqs = freqs or layout
    if use_arange:
        positions = torch.arange(x.shape[-2])
    theta = 10000.0 if fixed_theta else theta
    i = torch.arange(D // 2).float()
    inv = theta ** (-(i if pair_exponent else 2 * i) / D)
    ang = positions.float()[..., None] * inv
    ang = torch.cat([ang, ang], -1) if freqs == "half" else torch.repeat_interleave(ang, 2, dim=-1)
    if ang.dim() == 3:
        ang = ang.unsqueeze(1)
    if layout == "half":
        rot = torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)
    else:
        rot = torch.stack([-x[..., 1::2], x[..., 0::2]], -1).reshape(x.shape)  # (B, H, T, D)
    if in_place:
        x *= ang.cos()
        return x + sign * rot * ang.sin()
    return x * ang.cos() + sign * rot * ang.sin()


ROPE_BAD = {
    "half_layout": dict(layout="half"),
    "mixed_layout": dict(layout="adjacent", freqs="half"),
    "ignores_positions": dict(use_arange=True),
    "negative_rotation": dict(sign=-1),
    "exponent_i_over_d": dict(pair_exponent=True),
    "ignores_theta": dict(fixed_theta=True),
    "mutates_input": dict(in_place=True),
}


@pytest.mark.parametrize("key", list(ROPE_BAD))
def test_rope_diagnoses_each_misconception(key):
    impl = lambda x, p, theta=10000.0: _learner_rope(x, p, theta, **ROPE_BAD[key])  # noqa: E731
    assert_diagnosed(check_apply_rope(impl), key)


def test_rope_named_misconceptions_are_all_tested():
    assert_all_tested("check_apply_rope", ROPE_BAD)


def test_rope_half_accepts_hf_style_and_diagnoses_the_reverse_layout():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    def hf_style(x, positions, theta=10000.0):  # HF Llama's layout, written out: cos/sin (B, T, D), rotate_half
        pos = positions if positions.dim() == 2 else positions[None]  # (B, T)
        inv_freq = 1.0 / theta ** (torch.arange(0, x.size(-1), 2).float() / x.size(-1))
        freqs = pos[..., None].float() * inv_freq  # (B, T, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (B, T, D)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]  # (B, 1, T, D)
        half = x.size(-1) // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

    x, pos = torch.randn(2, 3, 5, 8), torch.arange(4, 9)  # the convention is HF's: same numbers
    emb = torch.cat([pos[:, None] * 1e4 ** (-torch.arange(0, 8, 2) / 8)] * 2, -1)[None]  # (1, T, D)
    torch.testing.assert_close(hf_style(x, pos), apply_rotary_pos_emb(x, x, emb.cos(), emb.sin())[0])
    assert check_apply_rope_half(hf_style).passed
    assert check_apply_rope_half(solved("check_apply_rope_half")).passed
    assert check_apply_rope_half(lambda x, p, theta=10000.0: _learner_rope(x, p, theta, layout="half")).passed
    assert_delegates(check_apply_rope_half(lambda x, p, theta=10000.0: ref.apply_rope(x, p, theta, layout="half")),
                     "course_lib.positional.apply_rope")


ROPE_HALF_BAD = {**{k: v for k, v in ROPE_BAD.items() if k not in ("half_layout", "mixed_layout")},
                 "adjacent_layout": dict(layout="adjacent"), "mixed_layout": dict(layout="half", freqs="adjacent")}


@pytest.mark.parametrize("key", list(ROPE_HALF_BAD))
def test_rope_half_diagnoses_each_misconception(key):
    flags = {"layout": "half", **ROPE_HALF_BAD[key]}
    impl = lambda x, p, theta=10000.0: _learner_rope(x, p, theta, **flags)  # noqa: E731
    assert_diagnosed(check_apply_rope_half(impl), key)


def test_rope_half_named_misconceptions_are_all_tested():
    assert_all_tested("check_apply_rope_half", ROPE_HALF_BAD)


def test_rope_broadcast_error_shows_the_learners_frames():
    def forgot_head_axis(x, positions, theta=10000.0):
        D = x.shape[-1]
        ang = positions[..., None].float() * theta ** (-torch.arange(0, D, 2).float() / D)
        ang = ang.repeat_interleave(2, -1)  # (B, T, D) never gets its head axis
        rot = torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2)  # (B, H, T, D)
        return x * ang.cos() + rot * ang.sin()

    r = check_apply_rope(forgot_head_axis)
    assert r.message.startswith("your code raised RuntimeError") and "forgot_head_axis" in r.detail


def test_rope_solutions_print(capsys):
    solution("check_apply_rope")
    assert "def apply_rope(x, positions" in capsys.readouterr().out


# ------------------------------------------------------------------ ALiBi
def slopes_recursive(n):  # correct: the original repository's recursive form, in float64 then cast
    def pow2(m):
        start = 2 ** (-(2 ** -(math.log2(m) - 3)))
        return [start * start ** i for i in range(m)]
    if math.log2(n).is_integer():
        s = pow2(n)
    else:
        c = 2 ** math.floor(math.log2(n))
        s = pow2(c) + slopes_recursive(2 * c).tolist()[0::2][: n - c]
    return torch.tensor(s)


def slopes_torch(n):  # correct: vectorised
    p = 2 ** int(math.floor(math.log2(n)))
    base = torch.pow(2.0, -8.0 * torch.arange(1, p + 1) / p)
    extra = torch.pow(2.0, -8.0 * torch.arange(1, 2 * p + 1, 2) / (2 * p))[: n - p]
    return torch.cat([base, extra]).float()


ALIBI = solved("check_alibi_slopes")


@pytest.mark.parametrize("impl", [ALIBI, slopes_recursive, slopes_torch])
def test_alibi_accepts_correct_implementations(impl):
    r = check_alibi_slopes(impl)
    assert r.passed, r.message


alibi = ref.alibi_slopes  # an alias made at module level


@pytest.mark.parametrize("impl", [ref.alibi_slopes, lambda n: alibi(n)])
def test_alibi_refuses_delegation(impl):
    assert_delegates(check_alibi_slopes(impl), "course_lib.positional.alibi_slopes")


def plain_geometric(n):
    return torch.tensor([2 ** (-8 * (h + 1) / n) for h in range(n)])


def from_zero(n):
    def geo(m):
        return [2 ** (-8 * h / m) for h in range(m)]
    p = 2 ** int(math.log2(n))
    return torch.tensor(geo(p) + geo(2 * p)[::2][: n - p])


def first_extras(n):
    def geo(m):
        return [2 ** (-8 * (h + 1) / m) for h in range(m)]
    p = 2 ** int(math.log2(n))
    return torch.tensor(geo(p) + geo(2 * p)[: n - p])


def sorted_slopes(n):  # the right slopes (as the learner computed them), then sorted
    return ALIBI(n).sort(descending=True).values


ALIBI_BAD = {"non_power_of_two": plain_geometric, "starts_at_one": from_zero,
             "extra_not_interleaved": first_extras, "sorted": sorted_slopes}


@pytest.mark.parametrize("key", list(ALIBI_BAD))
def test_alibi_diagnoses_each_misconception(key):
    assert_diagnosed(check_alibi_slopes(ALIBI_BAD[key]), key)


def test_alibi_named_misconceptions_are_all_tested():
    assert_all_tested("check_alibi_slopes", ALIBI_BAD)


def test_alibi_list_instead_of_tensor_is_explained():
    r = check_alibi_slopes(lambda n: ALIBI(n).tolist())
    assert "should be a torch.Tensor, got list" in r.message


# ------------------------------------------------------------------ T5 buckets
def bucket_python(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """Correct, one element at a time in plain Python (math.log in float64)."""
    def one(r):
        nb, b = num_buckets, 0
        if bidirectional:
            nb //= 2
            b = nb if r > 0 else 0
            n = abs(r)
        else:
            n = max(-r, 0)
        exact = nb // 2
        if n < exact:
            return b + n
        return b + min(nb - 1, exact + int(math.log(n / exact) / math.log(max_distance / exact) * (nb - exact)))
    flat = [one(r) for r in relative_position.reshape(-1).tolist()]  # every entry, any shape
    return torch.tensor(flat, dtype=torch.long).reshape(relative_position.shape)  # back to the input's shape


BUCKET = solved("check_relative_position_bucket")


@pytest.mark.parametrize("impl", [BUCKET, bucket_python])
def test_t5_accepts_correct_implementations(impl):
    r = check_relative_position_bucket(impl)
    assert r.passed, r.message


def bucket_via_library(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return ref.relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance)


def test_t5_refuses_delegation():
    assert_delegates(check_relative_position_bucket(bucket_via_library), "course_lib.positional.relative_position_bucket")


def _learner_bucket(rp, bidirectional=True, num_buckets=32, max_distance=128, *, flip=False, clamp=True,
                    abs_causal=False, halve=True):
    if flip:
        rp = -rp
    ret = torch.zeros_like(rp)
    if bidirectional:
        if halve:
            num_buckets = num_buckets // 2
        ret += (rp > 0).long() * num_buckets
        n = torch.abs(rp)
    else:
        n = torch.abs(rp) if abs_causal else torch.max(-rp, torch.zeros_like(rp))
    max_exact = num_buckets // 2
    val_if_large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                                * (num_buckets - max_exact)).to(torch.long)
    if clamp:
        val_if_large = torch.min(val_if_large, torch.full_like(val_if_large, num_buckets - 1))
    return ret + torch.where(n < max_exact, n, val_if_large)


T5_BAD = {"sign_flipped": dict(flip=True), "no_max_distance_clamp": dict(clamp=False),
          "causal_uses_abs": dict(abs_causal=True), "no_half_split": dict(halve=False)}


@pytest.mark.parametrize("key", list(T5_BAD))
def test_t5_diagnoses_each_misconception(key):
    impl = lambda *a, **k: _learner_bucket(*a, **k, **T5_BAD[key])  # noqa: E731
    assert_diagnosed(check_relative_position_bucket(impl), key)


def test_t5_named_misconceptions_are_all_tested():
    assert_all_tested("check_relative_position_bucket", T5_BAD)


def test_t5_int32_output_is_explained():
    r = check_relative_position_bucket(lambda *a: BUCKET(*a).int())
    assert "dtype torch.int32, expected torch.int64" in r.message
