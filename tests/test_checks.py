"""Every check, both ways: it accepts the reference and other correct implementations, and
rejects the stub and each misconception it names, with that diagnosis in its message.
The misconceptions here are written as a learner would write them, independently of the
grader's own re-creations."""
import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from course_lib import attention as ref
from course_lib.checks import (check_causal_mask, check_multi_head_attention,
                               check_scaled_dot_product_attention, check_softmax, hint, solution)

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

SOFTMAX = solved("check_softmax")  # the printed learner-level answer, used where a test needs a correct softmax


# ------------------------------------------------------------------ softmax
def softmax_einsum_f64(x, dim=-1):  # correct, computed differently: float64 inside, logsumexp
    y = x.double()
    return torch.exp(y - torch.logsumexp(y, dim=dim, keepdim=True)).to(x.dtype)


def _shifted(x, dim):  # the learner's own helpers are allowed
    return x - x.amax(dim, keepdim=True)


def softmax_with_helpers(x, dim=-1):
    e = _shifted(x.double(), dim).exp()
    return (e / e.sum(dim, keepdim=True)).to(x.dtype)


@pytest.mark.parametrize("impl", [SOFTMAX, softmax_einsum_f64, softmax_with_helpers])
def test_softmax_accepts_correct_implementations(impl):
    r = check_softmax(impl)
    assert r.passed and r.points == r.max_points == 2 and r.status == "passed", r.message


# ------------------------------------------------------------------ softmax: delegation is refused
sm = torch.softmax  # an alias made before the check runs


def softmax_torch(x, dim=-1):
    return torch.softmax(x, dim=dim)


def softmax_alias(x, dim=-1):
    return sm(x, dim)


def softmax_getattr(x, dim=-1):  # invisible to reading: caught while it runs
    return getattr(torch, "soft" + "max")(x, dim)


def softmax_method(x, dim=-1):
    return x.softmax(dim)


def softmax_import_inside(x, dim=-1):
    from torch.nn.functional import softmax as f
    return f(x, dim)


def softmax_log(x, dim=-1):
    return torch.log_softmax(x, dim).exp()


def softmax_via_helper(x, dim=-1):  # hidden one call deep in the learner's own helper
    return _normalise(x, dim)


def _normalise(x, dim):
    return torch.nn.functional.softmax(x, dim)


def softmax_course_lib(x, dim=-1):
    return ref.softmax(x, dim)


@pytest.mark.parametrize("impl,used", [
    (softmax_torch, "torch.softmax"), (softmax_alias, "torch.softmax"), (softmax_getattr, "torch.softmax"),
    (softmax_method, "torch.Tensor.softmax"), (softmax_import_inside, "torch.nn.functional.softmax"),
    (lambda x, dim=-1: torch.nn.functional.softmax(x, dim), "torch.nn.functional.softmax"),
    (softmax_log, "torch.log_softmax"), (softmax_via_helper, "torch.nn.functional.softmax"),
    (softmax_course_lib, "course_lib.attention.softmax"), (ref.softmax, "course_lib.attention.softmax"),
])
def test_softmax_refuses_delegation(impl, used):
    r = check_softmax(impl)
    assert_delegates(r, used)
    assert "write it yourself" in r.message and "torch.softmax" in r.detail


def test_softmax_stub_is_not_attempted():
    def softmax(x, dim=-1):
        raise NotImplementedError()
    r = check_softmax(softmax)
    assert_not_attempted(r)


def naive(x, dim=-1):
    return x.exp() / x.exp().sum(dim, keepdim=True)


def last_axis_only(x, dim=-1):
    e = (x - x.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def whole_tensor(x, dim=-1):
    e = (x - x.max()).exp()
    return e / e.sum()


def unnormalised(x, dim=-1):
    return (x - x.amax(dim, keepdim=True)).exp()


def in_place(x, dim=-1):
    x -= x.amax(dim, keepdim=True)
    return x.exp() / x.exp().sum(dim, keepdim=True)


@pytest.mark.parametrize("impl,key", [(naive, "overflow"), (last_axis_only, "ignores_dim"),
                                      (whole_tensor, "all_elements"), (unnormalised, "not_normalised"),
                                      (in_place, "mutates_input")])
def test_softmax_diagnoses_each_misconception(impl, key):
    assert_diagnosed(check_softmax(impl), key)


def test_softmax_names_misconceptions_that_are_all_tested():
    assert_all_tested("check_softmax", {
        "overflow", "ignores_dim", "all_elements", "not_normalised", "mutates_input"})


# ------------------------------------------------------------------ generic failure modes
def test_learner_exception_shows_their_frames_not_the_graders():
    def softmax(x, dim=-1):
        return helper(x)

    def helper(x):
        return x.exp() / x.sum(dim=7)

    r = check_softmax(softmax)
    assert not r.passed and r.message.startswith("your code raised IndexError")
    assert "in helper" in r.detail and "in softmax" in r.detail
    assert "course_lib/checks" not in r.detail


def test_none_return_wrong_dtype_and_nan_are_explained():
    r = check_softmax(lambda x, dim=-1: None)
    assert "should be a torch.Tensor, got NoneType" in r.message and "return" in r.message
    r = check_softmax(lambda x, dim=-1: SOFTMAX(x.double(), dim))
    assert "dtype torch.float64, expected torch.float32" in r.message
    r = check_softmax(lambda x, dim=-1: SOFTMAX(x, dim) * float("nan"))
    assert "NaN" in r.message
    r = check_softmax(lambda x, dim=-1: SOFTMAX(x, dim).sum(dim))
    assert "shape" in r.message


def test_every_check_forbids_the_grader_itself():
    from course_lib.checks import REGISTRY
    from course_lib.checks.delegation import Rules
    for name, spec in REGISTRY.items():
        assert isinstance(spec.forbid, Rules) and spec.forbid, f"{name} forbids nothing"
        assert {"course_lib", "course_lib.checks"} & set(spec.forbid.names), (
            f"{name}: a learner could pass the grader's own reference (forbid 'course_lib.checks')")
        assert "course_lib.checks" in spec.forbid.prefixes or "course_lib" in spec.forbid.prefixes, name


def test_check_never_raises_and_handles_non_callables():
    assert not check_softmax(None).passed
    assert "expected a function" in check_softmax(42).message


def test_check_prints_one_line_verdict(capsys, monkeypatch):
    from course_lib.checks import core
    monkeypatch.setattr(core, "_QUIET", False)
    check_softmax(SOFTMAX)
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["✅ check_softmax: passed all 5 cases [2/2 points]"]
    check_softmax(naive)
    out = capsys.readouterr().out
    assert out.startswith("❌ check_softmax:") and "hint('check_softmax')" in out


def test_hint_and_solution_print(capsys):
    hint("softmax")
    assert "💡 check_softmax" in capsys.readouterr().out
    solution("check_softmax")
    assert "def softmax" in capsys.readouterr().out
    hint("nope")
    assert "No check called" in capsys.readouterr().out


def test_tolerance_scales_with_dtype():
    from course_lib.checks.core import tolerances
    assert tolerances(torch.float16)[0] > tolerances(torch.float32)[0] > tolerances(torch.float64)[0]


# ------------------------------------------------------------------ scaled dot-product attention
def sdpa_einsum(q, k, v, mask=None):  # correct, another formulation
    s = torch.einsum("...qd,...kd->...qk", q / q.shape[-1] ** 0.5, k)
    if mask is not None:
        s = torch.where(mask, s, torch.finfo(s.dtype).min)
    return torch.einsum("...qk,...kd->...qd", s.softmax(-1), v)


def sdpa_softmax_allowed(q, k, v, mask=None):  # this exercise is about attention: torch.softmax is fine
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


@pytest.mark.parametrize("impl", [solved("check_scaled_dot_product_attention"), sdpa_einsum, sdpa_softmax_allowed])
def test_sdpa_accepts_correct_implementations(impl):
    r = check_scaled_dot_product_attention(impl)
    assert r.passed, r.message


def sdpa_torch(q, k, v, mask=None):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sdpa_import_inside(q, k, v, mask=None):
    from torch.nn.functional import scaled_dot_product_attention as attend
    return attend(q, k, v, attn_mask=mask)


def sdpa_grader(q, k, v, mask=None):  # the grader's own code is off limits too
    from course_lib.checks.attention import _sdpa_variant
    return _sdpa_variant(q, k, v, mask)


@pytest.mark.parametrize("impl,used", [
    (sdpa_torch, "torch.nn.functional.scaled_dot_product_attention"),
    (sdpa_import_inside, "torch.nn.functional.scaled_dot_product_attention"),
    (lambda q, k, v, mask=None: ref.scaled_dot_product_attention(q, k, v, mask),
     "course_lib.attention.scaled_dot_product_attention"),
    (sdpa_grader, "course_lib.checks.attention._sdpa_variant"),
])
def test_sdpa_refuses_delegation(impl, used):
    assert_delegates(check_scaled_dot_product_attention(impl), used)


def _learner_sdpa(q, k, v, mask=None, *, div=None, axis=-1, fill=float("-inf"), after=False, invert=False):
    d = q.shape[-1]
    scores = q @ k.transpose(-1, -2)
    if div is not None:
        scores = scores / div(d)
    if mask is not None and not after:
        scores = scores.masked_fill(mask if invert else ~mask, fill)
    w = torch.softmax(scores, dim=axis)
    if mask is not None and after:
        w = w * mask
    return w @ v


SDPA_BAD = {
    "no_scale": dict(div=None),
    "scale_by_d": dict(div=lambda d: d),
    "wrong_axis": dict(div=math.sqrt, axis=-2),
    "mask_after_softmax": dict(div=math.sqrt, after=True),
    "mask_fill_zero": dict(div=math.sqrt, fill=0.0),
    "inverted_mask": dict(div=math.sqrt, invert=True),
}


@pytest.mark.parametrize("key", list(SDPA_BAD))
def test_sdpa_diagnoses_each_misconception(key):
    impl = lambda q, k, v, mask=None: _learner_sdpa(q, k, v, mask, **SDPA_BAD[key])  # noqa: E731
    assert_diagnosed(check_scaled_dot_product_attention(impl), key)


def test_sdpa_named_misconceptions_are_all_tested():
    assert_all_tested("check_scaled_dot_product_attention", set(SDPA_BAD) | {"mutates_input"})


def test_sdpa_in_place_mask_fill_is_caught():
    def impl(q, k, v, mask=None):
        q /= math.sqrt(q.shape[-1])
        return torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    assert_diagnosed(check_scaled_dot_product_attention(impl), "mutates_input")


def test_sdpa_stub():
    def impl(q, k, v, mask=None):
        raise NotImplementedError
    assert_not_attempted(check_scaled_dot_product_attention(impl))


# ------------------------------------------------------------------ causal mask
@pytest.mark.parametrize("impl", [solved("check_causal_mask"), lambda T: torch.arange(T)[:, None] >= torch.arange(T)[None, :],
                                  lambda T: ~torch.ones(T, T, dtype=torch.bool).triu(1)])
def test_causal_mask_accepts_correct_implementations(impl):
    assert check_causal_mask(impl).passed


causal = ref.causal_mask  # the course's own answer under another name


@pytest.mark.parametrize("impl", [ref.causal_mask, lambda T: causal(T)])
def test_causal_mask_refuses_delegation(impl):
    assert_delegates(check_causal_mask(impl), "course_lib.attention.causal_mask")


@pytest.mark.parametrize("impl,key", [
    (lambda T: torch.ones(T, T, dtype=torch.bool).triu(1), "inverted"),
    (lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1), "no_diagonal"),
    (lambda T: torch.full((T, T), float("-inf")).triu(1), "additive_float"),
    (lambda T: torch.ones(T, T).tril(), "float_ones"),
])
def test_causal_mask_diagnoses_each_misconception(impl, key):
    assert_diagnosed(check_causal_mask(impl), key)


def test_causal_mask_named_misconceptions_are_all_tested():
    assert_all_tested("check_causal_mask", {"inverted", "no_diagonal", "additive_float", "float_ones"})


# ------------------------------------------------------------------ multi-head attention
class LearnerMHA(nn.Module):
    """A learner's module; the flags reproduce one mistake each."""
    split_bad = merge_bad = False
    scale = "head"

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj, self.k_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.v_proj, self.o_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x, mask=None):
        B, T, C = x.shape
        H, D = self.n_heads, C // self.n_heads

        def split(t):
            return t.reshape(B, H, T, D) if self.split_bad else t.reshape(B, T, H, D).permute(0, 2, 1, 3)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        s = q @ k.transpose(-1, -2)
        s = s / math.sqrt({"head": D, "model": C, "none": 1}[self.scale])
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        y = s.softmax(-1) @ v
        y = y.reshape(B, T, C) if self.merge_bad else y.permute(0, 2, 1, 3).reshape(B, T, C)
        return self.o_proj(y)


class LearnerNoBias(LearnerMHA):
    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, n, nn.Linear(d_model, d_model, bias=False))


@pytest.mark.parametrize("impl", [solved("check_multi_head_attention", "MultiHeadAttention"), LearnerMHA, LearnerNoBias])
def test_mha_accepts_correct_implementations(impl):
    r = check_multi_head_attention(impl)
    assert r.passed, r.message


class MHAViaSDPA(LearnerMHA):  # the projections are theirs, the attention is torch's
    def forward(self, x, mask=None):
        B, T, C = x.shape
        H = self.n_heads
        q, k, v = (p(x).view(B, T, H, C // H).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class MHAViaTorchModule(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.inner = nn.MultiheadAttention(d_model, n_heads, batch_first=True)

    def forward(self, x, mask=None):
        return self.inner(x, x, x, attn_mask=None if mask is None else ~mask, need_weights=False)[0]


class MHAViaCourse(ref.MultiHeadAttention):
    def forward(self, x, mask=None):
        return super().forward(x, mask)


@pytest.mark.parametrize("impl,used", [
    (MHAViaSDPA, "torch.nn.functional.scaled_dot_product_attention"),
    (MHAViaTorchModule, "torch.nn.MultiheadAttention"),
    (MHAViaCourse, "course_lib.attention.MultiHeadAttention"),
    (ref.MultiHeadAttention, "course_lib.attention.MultiHeadAttention"),
])
def test_mha_refuses_delegation(impl, used):
    assert_delegates(check_multi_head_attention(impl), used)


@pytest.mark.parametrize("flags,key", [(dict(split_bad=True), "split_heads_wrong"),
                                       (dict(merge_bad=True), "merge_heads_wrong"),
                                       (dict(scale="model"), "scale_by_d_model"),
                                       (dict(scale="none"), "no_scale")])
def test_mha_diagnoses_each_misconception(flags, key):
    bad = type("Bad", (LearnerMHA,), flags)
    assert_diagnosed(check_multi_head_attention(bad), key)


def test_mha_named_misconceptions_are_all_tested():
    assert_all_tested("check_multi_head_attention", {
        "split_heads_wrong", "merge_heads_wrong", "scale_by_d_model", "no_scale"})


def test_mha_structure_errors_are_explained():
    class Fused(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.qkv = nn.Linear(d, 3 * d)

    r = check_multi_head_attention(Fused)
    assert "no nn.Linear called `q_proj`" in r.message
    r = check_multi_head_attention(LearnerMHA(8, 2))
    assert "pass the class itself" in r.message

    class Stub(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            raise NotImplementedError()

    assert_not_attempted(check_multi_head_attention(Stub))


# ------------------------------------------------------------------ the shared assertions (tests/helpers.py) can fail
def test_the_shared_assertions_can_fail():
    good, overflow = check_softmax(SOFTMAX), check_softmax(naive)
    assert good.passed
    assert_diagnosed(overflow, "overflow")
    for wrong in (good, dataclasses.replace(overflow, points=1), dataclasses.replace(overflow, message="wrong.")):
        with pytest.raises(AssertionError):
            assert_diagnosed(wrong, "overflow")
    with pytest.raises(AssertionError):
        assert_diagnosed(overflow, "ignores_dim")
    with pytest.raises(AssertionError):
        assert_not_attempted(overflow)
    named = {"overflow", "ignores_dim", "all_elements", "not_normalised", "mutates_input"}
    with pytest.raises(AssertionError, match=r"named but not tested \['overflow'\]"):
        assert_all_tested("check_softmax", named - {"overflow"})
    with pytest.raises(AssertionError, match=r"tested but not named \['typo'\]"):
        assert_all_tested("check_softmax", named | {"typo"})
    refused = check_softmax(softmax_torch)
    assert_delegates(refused, "torch.softmax")
    for wrong in (good, overflow, dataclasses.replace(refused, message="not allowed here: something else")):
        with pytest.raises(AssertionError):
            assert_delegates(wrong, "torch.softmax")
