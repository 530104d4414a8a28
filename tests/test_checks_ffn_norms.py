"""Lesson 03's checks, both ways: they accept the reference and other correct implementations,
and reject the stub and each named misconception — written here as a learner would write
it, independently of the grader's own re-creations — with that diagnosis in the message."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import MultiHeadAttention
from course_lib.blocks import Block
from course_lib.checks import (check_gelu, check_layer_norm, check_pre_norm_block, check_rms_norm,
                               check_swiglu_ffn, solution)
from course_lib.checks.ffn_norms import pre_norm_forward
from course_lib.ffn import GatedFeedForward, gelu_tanh
from course_lib.norms import LayerNorm as RefLayerNorm
from course_lib.norms import RMSNorm as RefRMSNorm

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


# ------------------------------------------------------------------ GELU
def gelu_pow(x):
    inner = 0.7978845608028654 * (x + 0.044715 * torch.pow(x, 3))
    return x * 0.5 * (1 + torch.tanh(inner))


def gelu_sigmoid_form(x):  # 0.5(1 + tanh(z)) = sigmoid(2z): the same function
    return x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))


@pytest.mark.parametrize("impl", [solved("check_gelu"), gelu_pow, gelu_sigmoid_form])
def test_gelu_accepts_correct_implementations(impl):
    r = check_gelu(impl)
    assert r.passed and r.points == r.max_points == 1, r.message


def gelu_module(x):
    return nn.GELU(approximate="tanh")(x)


@pytest.mark.parametrize("impl,used", [
    (lambda x: F.gelu(x, approximate="tanh"), "torch.nn.functional.gelu"),
    (gelu_module, "torch.nn.GELU"),
    (gelu_tanh, "course_lib.ffn.gelu_tanh"),
    (lambda x: gelu_tanh(x), "course_lib.ffn.gelu_tanh"),
])
def test_gelu_refuses_delegation(impl, used):
    assert_delegates(check_gelu(impl), used)


def test_gelu_stub_is_not_attempted():
    def gelu(x):
        raise NotImplementedError()
    assert_not_attempted(check_gelu(gelu))


def _gelu_in_place(x):
    x.mul_(1.0)
    return gelu_pow(x) + 0 * x.add_(1)


GELU_BAD = {
    "exact_erf": lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2))),
    "missing_cubic": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x)),
    "no_sqrt": lambda x: 0.5 * x * (1 + torch.tanh(2 / math.pi * (x + 0.044715 * x ** 3))),
    "missing_half": lambda x: x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "sigmoid_approx": lambda x: x / (1 + torch.exp(-1.702 * x)),
    "mutates_input": _gelu_in_place,
}


@pytest.mark.parametrize("key", list(GELU_BAD))
def test_gelu_diagnoses_each_misconception(key):
    assert_diagnosed(check_gelu(GELU_BAD[key]), key)


def test_gelu_named_misconceptions_are_all_tested():
    assert_all_tested("check_gelu", GELU_BAD)


# ------------------------------------------------------------------ LayerNorm
class LearnerLayerNorm(nn.Module):
    """A learner's LayerNorm; class attributes switch on one mistake each."""
    unbiased = eps_out = affine_off = False
    dim = -1

    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        mu = x.mean(dim=self.dim, keepdim=True)
        var = x.var(dim=self.dim, keepdim=True, unbiased=self.unbiased)
        y = (x - mu) / (var.sqrt() + self.eps) if self.eps_out else (x - mu) / torch.sqrt(var + self.eps)
        return y if self.affine_off else self.weight * y + self.bias


class LayerNormFloat64Inside(LearnerLayerNorm):
    def forward(self, x):
        h = x.double()
        y = (h - h.mean(-1, keepdim=True)) * torch.rsqrt(h.var(-1, unbiased=False, keepdim=True) + self.eps)
        return (y * self.weight.double() + self.bias.double()).to(x.dtype)


class AnnotatedLayerNorm(LearnerLayerNorm):  # The Annotated Transformer's code, as written there
    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.weight * (x - mean) / (std + self.eps) + self.bias


@pytest.mark.parametrize("impl", [solved("check_layer_norm", "LayerNorm"), LearnerLayerNorm, LayerNormFloat64Inside])
def test_layer_norm_accepts_correct_implementations(impl):
    r = check_layer_norm(impl)
    assert r.passed and r.points == 2, r.message


class LayerNormViaTorch(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps, self.weight, self.bias = eps, nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class LayerNormViaTorchModule(LearnerLayerNorm):
    def forward(self, x):
        norm = nn.LayerNorm(x.shape[-1], eps=self.eps, elementwise_affine=False)
        return norm(x) * self.weight + self.bias


class LayerNormViaCourse(RefLayerNorm):
    def forward(self, x):
        return super().forward(x)


@pytest.mark.parametrize("impl,used", [
    (LayerNormViaTorch, "torch.nn.functional.layer_norm"),
    (LayerNormViaTorchModule, "torch.nn.LayerNorm"),
    (LayerNormViaCourse, "course_lib.norms.LayerNorm"),
    (RefLayerNorm, "course_lib.norms.LayerNorm"),
])
def test_layer_norm_refuses_delegation(impl, used):
    assert_delegates(check_layer_norm(impl), used)


LN_BAD = {
    "unbiased_variance": dict(unbiased=True),
    "eps_outside_sqrt": dict(eps_out=True),
    "wrong_dim": dict(dim=1),
    "no_affine": dict(affine_off=True),
}


@pytest.mark.parametrize("key", list(LN_BAD))
def test_layer_norm_diagnoses_each_misconception(key):
    assert_diagnosed(check_layer_norm(type("Bad", (LearnerLayerNorm,), LN_BAD[key])), key)


def test_layer_norm_diagnoses_the_annotated_transformer_variant():
    assert_diagnosed(check_layer_norm(AnnotatedLayerNorm), "std_plus_eps")


def test_layer_norm_named_misconceptions_are_all_tested():
    assert_all_tested("check_layer_norm", [*LN_BAD, "std_plus_eps"])


def test_layer_norm_structure_errors_are_explained():
    class NoBias(nn.Module):
        def __init__(self, d, eps=1e-5):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

    assert "no nn.Parameter called `bias`" in check_layer_norm(NoBias).message

    class RandomInit(LearnerLayerNorm):
        def __init__(self, d, eps=1e-5):
            super().__init__(d, eps)
            self.weight = nn.Parameter(torch.randn(d))

    assert "`weight` should start at ones" in check_layer_norm(RandomInit).message
    assert "pass the class itself" in check_layer_norm(LearnerLayerNorm(4)).message

    class Stub(nn.Module):
        def __init__(self, d, eps=1e-5):
            super().__init__()
            raise NotImplementedError()

    assert_not_attempted(check_layer_norm(Stub))


# ------------------------------------------------------------------ RMSNorm
class LearnerRMSNorm(nn.Module):
    center = eps_out = use_sum = weight_off = False
    dim = -1

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        h = x.float()
        if self.center:
            h = h - h.mean(self.dim, keepdim=True)
        ms = (h * h).sum(self.dim, keepdim=True) if self.use_sum else (h * h).mean(self.dim, keepdim=True)
        y = h / (ms.sqrt() + self.eps) if self.eps_out else h / torch.sqrt(ms + self.eps)
        y = y.to(x.dtype)
        return y if self.weight_off else self.weight * y


@pytest.mark.parametrize("impl", [solved("check_rms_norm", "RMSNorm"), LearnerRMSNorm])
def test_rms_norm_accepts_correct_implementations(impl):
    r = check_rms_norm(impl)
    assert r.passed and r.points == 2, r.message


class RMSNormViaTorch(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)


class RMSNormViaCourse(LearnerRMSNorm):
    def forward(self, x):
        ref = RefRMSNorm(x.shape[-1], eps=self.eps)
        ref.weight = self.weight
        return ref(x)


@pytest.mark.parametrize("impl,used", [
    (RMSNormViaTorch, "torch.nn.functional.rms_norm"),
    (RMSNormViaCourse, "course_lib.norms.RMSNorm"),
    (RefRMSNorm, "course_lib.norms.RMSNorm"),
])
def test_rms_norm_refuses_delegation(impl, used):
    assert_delegates(check_rms_norm(impl), used)


RMS_BAD = {
    "subtracts_mean": dict(center=True),
    "eps_outside_sqrt": dict(eps_out=True),
    "sum_not_mean": dict(use_sum=True),
    "wrong_dim": dict(dim=1),
    "no_weight": dict(weight_off=True),
}


@pytest.mark.parametrize("key", list(RMS_BAD))
def test_rms_norm_diagnoses_each_misconception(key):
    assert_diagnosed(check_rms_norm(type("Bad", (LearnerRMSNorm,), RMS_BAD[key])), key)


def test_rms_norm_named_misconceptions_are_all_tested():
    assert_all_tested("check_rms_norm", RMS_BAD)


def test_rms_norm_wrong_dtype_and_bias_are_explained():
    class StaysFloat32(LearnerRMSNorm):
        def forward(self, x):
            h = x.to(torch.promote_types(x.dtype, torch.float32))  # upcasts half, never casts back
            return self.weight.to(h.dtype) * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)

    r = check_rms_norm(StaysFloat32)
    assert "dtype torch.float32, expected torch.bfloat16" in r.message

    class WithBias(LearnerRMSNorm):
        def __init__(self, d, eps=1e-6):
            super().__init__(d, eps)
            self.bias = nn.Parameter(torch.zeros(d))

    assert "RMSNorm has no bias" in check_rms_norm(WithBias).message


# ------------------------------------------------------------------ SwiGLU
class LearnerSwiGLU(nn.Module):
    mistake = None

    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        a, b = self.gate_proj(x), self.up_proj(x)
        if self.mistake == "gate_up_swapped":
            a, b = b, a
        if self.mistake == "silu_on_product":
            return self.down_proj(F.silu(a * b))
        if self.mistake == "silu_on_output":
            return F.silu(self.down_proj(a * b))
        if self.mistake == "sigmoid_gate":
            return self.down_proj(torch.sigmoid(a) * b)
        if self.mistake == "no_activation":
            return self.down_proj(a * b)
        return self.down_proj(a * torch.sigmoid(a) * b)


class SwiGLUEinsum(LearnerSwiGLU):
    def forward(self, x):
        g = torch.einsum("...c,fc->...f", x, self.gate_proj.weight)
        u = torch.einsum("...c,fc->...f", x, self.up_proj.weight)
        return torch.einsum("...f,cf->...c", F.silu(g) * u, self.down_proj.weight)


@pytest.mark.parametrize("impl", [solved("check_swiglu_ffn", "SwiGLUFFN"), LearnerSwiGLU, SwiGLUEinsum])
def test_swiglu_accepts_correct_implementations(impl):
    r = check_swiglu_ffn(impl)
    assert r.passed and r.points == 2, r.message


class SwiGLUViaCourse(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        inner = GatedFeedForward(d_model, d_ff)
        self.gate_proj, self.up_proj, self.down_proj = inner.gate_proj, inner.up_proj, inner.down_proj
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("impl", [GatedFeedForward, SwiGLUViaCourse])
def test_swiglu_refuses_delegation(impl):
    assert_delegates(check_swiglu_ffn(impl), "course_lib.ffn.GatedFeedForward")


SWIGLU_BAD = ["gate_up_swapped", "silu_on_product", "silu_on_output", "sigmoid_gate", "no_activation"]


@pytest.mark.parametrize("key", SWIGLU_BAD)
def test_swiglu_diagnoses_each_misconception(key):
    assert_diagnosed(check_swiglu_ffn(type("Bad", (LearnerSwiGLU,), {"mistake": key})), key)


def test_swiglu_named_misconceptions_are_all_tested():
    assert_all_tested("check_swiglu_ffn", SWIGLU_BAD)


def test_swiglu_structure_errors_are_explained():
    class WithBias(LearnerSwiGLU):
        def __init__(self, d_model, d_ff):
            super().__init__(d_model, d_ff)
            self.up_proj = nn.Linear(d_model, d_ff)

    assert "`up_proj` has a bias" in check_swiglu_ffn(WithBias).message

    class Fused(nn.Module):
        def __init__(self, d_model, d_ff):
            super().__init__()
            self.w12 = nn.Linear(d_model, 2 * d_ff, bias=False)

    assert "no nn.Linear called `gate_proj`" in check_swiglu_ffn(Fused).message

    class Transposed(LearnerSwiGLU):
        def __init__(self, d_model, d_ff):
            super().__init__(d_model, d_ff)
            self.down_proj = nn.Linear(d_model, d_ff, bias=False)

    assert "`down_proj.weight` has shape" in check_swiglu_ffn(Transposed).message


# ------------------------------------------------------------------ pre-LN block
class LearnerBlock(nn.Module):
    """The exercise's __init__ (given to the learner) and a forward with one switchable mistake."""
    mistake = None

    def __init__(self, d_model, n_heads, d_ff):
        super().__init__()
        self.attn_norm = RefLayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ffn_norm = RefLayerNorm(d_model)
        self.ffn = GatedFeedForward(d_model, d_ff)

    def forward(self, x, mask=None):
        k = self.mistake
        if k == "mask_ignored":
            mask = None
        if k == "no_residual":
            x = self.attn(self.attn_norm(x), mask)
            return self.ffn(self.ffn_norm(x))
        if k == "norm_after_add":
            x = self.attn_norm(x + self.attn(x, mask))
            return self.ffn_norm(x + self.ffn(x))
        if k == "residual_from_normed":
            x = self.attn_norm(x)
            x = x + self.attn(x, mask)
            x = self.ffn_norm(x)
            return x + self.ffn(x)
        if k == "parallel":
            return x + self.attn(self.attn_norm(x), mask) + self.ffn(self.ffn_norm(x))
        second = self.attn_norm if k == "shared_norm" else self.ffn_norm
        h = x + self.attn(self.attn_norm(x), mask)
        out = h + self.ffn(second(h))
        return out


class BlockViaLibrary(LearnerBlock):
    def forward(self, x, mask=None):
        b = Block(self.attn, self.ffn, self.attn.config.d_model, norm_placement="pre")
        b.attn_norm.load_state_dict(self.attn_norm.state_dict())
        b.ffn_norm.load_state_dict(self.ffn_norm.state_dict())
        return b.to(x.dtype)(x, mask=mask)


@pytest.mark.parametrize("impl", [solved("check_pre_norm_block", "PreNormBlock"), LearnerBlock])
def test_pre_norm_block_accepts_correct_implementations(impl):
    r = check_pre_norm_block(impl)
    assert r.passed and r.points == 3, r.message


class BlockViaTorch(LearnerBlock):
    def forward(self, x, mask=None):
        layer = nn.TransformerEncoderLayer(x.shape[-1], 2, norm_first=True, batch_first=True)
        return layer(x, src_mask=None if mask is None else ~mask)


def test_pre_norm_block_refuses_delegation():
    assert_delegates(check_pre_norm_block(BlockViaLibrary), "course_lib.blocks.Block")
    assert_delegates(check_pre_norm_block(BlockViaTorch), "torch.nn.TransformerEncoderLayer")


PRE_BAD = ["no_residual", "norm_after_add", "residual_from_normed", "parallel", "shared_norm", "mask_ignored"]


@pytest.mark.parametrize("key", PRE_BAD)
def test_pre_norm_block_diagnoses_each_misconception(key):
    assert_diagnosed(check_pre_norm_block(type("Bad", (LearnerBlock,), {"mistake": key})), key)


def test_pre_norm_block_named_misconceptions_are_all_tested():
    assert_all_tested("check_pre_norm_block", PRE_BAD)


def test_pre_norm_block_stub_and_missing_parts():
    class Stub(LearnerBlock):
        def forward(self, x, mask=None):
            raise NotImplementedError()

    assert_not_attempted(check_pre_norm_block(Stub))

    class Renamed(nn.Module):
        def __init__(self, d_model, n_heads, d_ff):
            super().__init__()
            self.ln_1 = RefLayerNorm(d_model)

    assert "no sub-module called `attn_norm`" in check_pre_norm_block(Renamed).message


def test_reference_forward_equals_the_library_block():
    torch.manual_seed(0)
    m = LearnerBlock(16, 2, 32)
    b = Block(m.attn, m.ffn, 16)
    x = torch.randn(2, 5, 16)
    assert torch.allclose(pre_norm_forward(m, x), b(x), atol=1e-6)


def test_solutions_print(capsys):
    for name in ("check_gelu", "check_layer_norm", "check_rms_norm", "check_swiglu_ffn", "check_pre_norm_block"):
        solution(name)
    out = capsys.readouterr().out
    assert "def gelu" in out and "class LayerNorm" in out and "class PreNormBlock" in out
