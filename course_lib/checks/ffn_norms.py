"""Checks for Lesson 03 (FFN, activations, norms): GELU (tanh form), LayerNorm, RMSNorm,
SwiGLU feed-forward and a pre-LN block's forward. Each misconception is a tiny re-creation
of the mistake; the check names the one whose outputs equal the learner's."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import ffn as ref_ffn
from course_lib import norms as ref_norms
from course_lib.attention import causal_mask
from .cases import Case, grade_function, randn
from .core import Mismatch, call_learner, compare, diagnose, register

_C = math.sqrt(2.0 / math.pi)


# ------------------------------------------------------------------ shared: modules on cases
def _instantiate(cls, what: str, *args) -> nn.Module:
    if not isinstance(cls, type):
        raise Mismatch(f"pass the class itself ({what}), not {type(cls).__name__}")
    m = call_learner(cls, *args)
    if not isinstance(m, nn.Module):
        raise Mismatch(f"{what} should subclass torch.nn.Module")
    return m


def _grade_modules(cases: list[tuple], variants: dict) -> int:
    """cases: (label, learner_module, reference_module, args). Run both on every case; on the
    first wrong output, name the variant (key -> f(reference_module, *args)) that matches."""
    outs, refs = [], []
    for label, m, r, args in cases:
        with torch.no_grad():
            refs.append(r(*args))
            x_in = args[0].clone()
            outs.append(call_learner(m, x_in, *args[1:]))
        if not torch.equal(x_in, args[0]):
            raise Mismatch("forward modified its input x in place; compute a new tensor instead",
                           f"case: {label}")
    for (label, *_), out, expected in zip(cases, outs, refs):
        try:
            compare(out, expected)
        except Mismatch as mm:
            runs = {k: (lambda v=v: [v(c[2], *c[3]) for c in cases]) for k, v in variants.items()}
            with torch.no_grad():
                key = diagnose(outs, runs, refs)
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    return len(cases)


def _param(m: nn.Module, name: str, shape: tuple, init: float, what: str) -> None:
    p = getattr(m, name, None)
    if not isinstance(p, nn.Parameter):
        raise Mismatch(f"{what} has no nn.Parameter called `{name}`; create it with "
                       f"nn.Parameter(torch.{'ones' if init else 'zeros'}({shape[0]})) as nn.{what} does")
    if tuple(p.shape) != shape:
        raise Mismatch(f"`{name}` has shape {tuple(p.shape)}, expected {shape}")
    if not torch.all(p == init):
        raise Mismatch(f"`{name}` should start at {'ones' if init else 'zeros'} (so the layer starts "
                       "as a plain normalisation)")


def _randomise(m: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            base = 1.0 if name.endswith("weight") and p.dim() == 1 else 0.0  # norm gains around 1
            p.copy_(base + 0.5 * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------ GELU
def _gelu_variant(x, *, c=_C, cubic=0.044715, half=0.5):
    return half * x * (1.0 + torch.tanh(c * (x + cubic * x ** 3)))


GELU_MISCONCEPTIONS = {
    "exact_erf": "this is the exact GELU, x·Φ(x) with erf. The exercise asks for the tanh "
                 "approximation used by GPT-2: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).",
    "missing_cubic": "the 0.044715·x³ term inside the tanh is missing.",
    "no_sqrt": "the factor in the tanh is 2/π; it should be its square root, math.sqrt(2 / math.pi) ≈ 0.798.",
    "missing_half": "the leading factor 0.5 is missing, so large positive x gives 2x instead of x.",
    "sigmoid_approx": "x·sigmoid(1.702·x) is a different, cruder approximation ('quick GELU'); "
                      "use the tanh form.",
    "mutates_input": "the input tensor was changed in place.",
}


GELU_SOLUTION = """import math

import torch


def gelu(x: torch.Tensor) -> torch.Tensor:
    # the tanh form used by GPT-2 ("gelu_new" in Hugging Face), element by element
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
"""


@register("check_gelu", minutes=10,
          forbid=('torch.nn.functional.gelu', 'torch.nn.GELU', 'course_lib.ffn.gelu', 'course_lib.ffn.gelu_tanh', 'course_lib.checks'), points=1, reference=GELU_SOLUTION, misconceptions=GELU_MISCONCEPTIONS,
          hint="GELU(x) ≈ 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))). Use math.sqrt(2 / math.pi) "
               "and torch.tanh; every operation is element-wise.")
def check_gelu(learner):
    g = torch.Generator().manual_seed(31)
    cases = [
        Case("x of shape (5, 7)", (randn(5, 7, gen=g) * 3,)),
        Case("x of shape (2, 3, 4) float64", (randn(2, 3, 4, gen=g, dtype=torch.float64) * 3,)),
        Case("large inputs in [-20, 20]", (torch.linspace(-20, 20, 41),)),
    ]
    variants = {
        "exact_erf": ref_ffn.gelu,
        "missing_cubic": lambda x: _gelu_variant(x, cubic=0.0),
        "no_sqrt": lambda x: _gelu_variant(x, c=2 / math.pi),
        "missing_half": lambda x: _gelu_variant(x, half=1.0),
        "sigmoid_approx": lambda x: x * torch.sigmoid(1.702 * x),
    }
    return grade_function(learner, cases, ref_ffn.gelu_tanh, variants, ("x",))


# ------------------------------------------------------------------ LayerNorm and RMSNorm variants
def _ln(r, x, *, dim=-1, unbiased=False, eps_inside=True, affine=True, center=True, mean_sq=True):
    """A norm written with one knob per mistake, using module r's weight/bias/eps."""
    h = x.to(torch.promote_types(x.dtype, torch.float32))
    if center:
        h = h - h.mean(dim, keepdim=True)
    ms = h.pow(2).sum(dim, keepdim=True) / (h.size(dim) - (1 if unbiased else 0)) if mean_sq else \
        h.pow(2).sum(dim, keepdim=True)
    h = h / torch.sqrt(ms + r.eps) if eps_inside else h / (torch.sqrt(ms) + r.eps)
    if affine:
        h = h * r.weight.to(h.dtype)
        if getattr(r, "bias", None) is not None:
            h = h + r.bias.to(h.dtype)
    return h.to(x.dtype)


LAYER_NORM_MISCONCEPTIONS = {
    "unbiased_variance": "the variance divides by C - 1 (torch.var's default, unbiased=True). LayerNorm "
                         "uses the biased variance: x.var(-1, unbiased=False, keepdim=True), i.e. divide by C.",
    "eps_outside_sqrt": "ε is added after the square root. It belongs inside: (x - μ) / sqrt(σ² + ε).",
    "std_plus_eps": "this is The Annotated Transformer's variant: unbiased std + ε outside the root. "
                    "nn.LayerNorm uses the biased variance with ε inside: (x - μ) / sqrt(σ² + ε).",
    "wrong_dim": "the statistics are taken over the time axis (dim=1). LayerNorm normalises each token "
                 "over its own channels: mean and variance over the last axis (dim=-1, keepdim=True).",
    "no_affine": "the learned gain and shift are not applied: multiply by self.weight and add self.bias.",
}


def _norm_cases(learner, what, kind, specs, seed):
    cases = []
    g = torch.Generator().manual_seed(seed)
    for i, (d, eps, shape, dtype, scale, shift) in enumerate(specs):
        torch.manual_seed(i)
        m = _instantiate(learner, what, d, eps)
        _param(m, "weight", (d,), 1.0, what)
        if kind == "layernorm":
            _param(m, "bias", (d,), 0.0, what)
        elif isinstance(getattr(m, "bias", None), nn.Parameter):
            raise Mismatch("RMSNorm has no bias (β): remove the `bias` parameter")
        _randomise(m, seed + i)
        m = m.to(dtype).eval()
        r = ref_norms.LayerNorm(d, eps) if kind == "layernorm" else ref_norms.RMSNorm(d, eps)
        r.load_state_dict({k: v for k, v in m.state_dict().items() if k in ("weight", "bias")})
        r = r.to(dtype).eval()
        x = (randn(*shape, gen=g, dtype=torch.float64) * scale + shift).to(dtype)
        label = f"d={d}, eps={eps}, x of shape {shape} {dtype} (scale {scale}, mean {shift})"
        cases.append((label, m, r, (x,)))
    return cases


LAYER_NORM_SOLUTION = """import torch
import torch.nn as nn


class LayerNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))  # γ
        self.bias = nn.Parameter(torch.zeros(d))  # β

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)  # (B, T, 1): one mean per token
        var = (x - mean).pow(2).mean(-1, keepdim=True)  # (B, T, 1): biased, divide by d
        h = (x - mean) / torch.sqrt(var + self.eps)  # (B, T, C): mean 0, variance 1 per token
        return h * self.weight + self.bias  # (B, T, C)
"""


@register("check_layer_norm", minutes=15,
          forbid=('torch.nn.functional.layer_norm', 'torch.layer_norm', 'torch.nn.LayerNorm', 'course_lib.norms.LayerNorm', 'course_lib.norms.StdEpsLayerNorm', 'course_lib.checks'), points=2, reference=LAYER_NORM_SOLUTION, misconceptions=LAYER_NORM_MISCONCEPTIONS,
          hint="Over the last axis: mean = x.mean(-1, keepdim=True); var = ((x - mean)**2).mean(-1, "
               "keepdim=True) (biased); y = (x - mean) / torch.sqrt(var + eps); return y * weight + bias. "
               "weight starts at ones, bias at zeros.")
def check_layer_norm(learner):
    specs = [(16, 1e-5, (2, 5, 16), torch.float32, 3.0, 1.0),
             (8, 1e-5, (3, 4, 8), torch.float32, 1e-3, 0.0),  # tiny variance: eps matters
             (12, 0.1, (2, 3, 12), torch.float64, 1.0, -2.0),
             (6, 1e-5, (4, 2, 6), torch.float64, 2.0, 5.0)]
    variants = {
        "unbiased_variance": lambda r, x: _ln(r, x, unbiased=True),
        "eps_outside_sqrt": lambda r, x: _ln(r, x, eps_inside=False),
        "std_plus_eps": lambda r, x: _ln(r, x, unbiased=True, eps_inside=False),
        "wrong_dim": lambda r, x: _ln(r, x, dim=1),
        "no_affine": lambda r, x: _ln(r, x, affine=False),
    }
    return _grade_modules(_norm_cases(learner, "LayerNorm", "layernorm", specs, 40), variants)


RMS_NORM_MISCONCEPTIONS = {
    "subtracts_mean": "the mean is subtracted first: that is LayerNorm without β. RMSNorm divides x "
                      "itself by its root mean square: x / sqrt(mean(x²) + ε).",
    "eps_outside_sqrt": "ε is added after the square root. It belongs inside: x / sqrt(mean(x²) + ε).",
    "sum_not_mean": "x² is summed, not averaged: use x.pow(2).mean(-1, keepdim=True).",
    "wrong_dim": "the mean of squares is taken over the time axis (dim=1); take it over each token's "
                 "channels, the last axis (dim=-1, keepdim=True).",
    "no_weight": "the learned gain is not applied: multiply by self.weight.",
}


RMS_NORM_SOLUTION = """import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))  # γ; no β

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # half inputs: compute in float32
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)  # (B, T, C): root mean square 1
        return self.weight * h.to(x.dtype)  # cast back first, then the gain (as LLaMA does)
"""


@register("check_rms_norm", minutes=10,
          forbid=('torch.nn.functional.rms_norm', 'torch.rms_norm', 'torch.nn.RMSNorm', 'course_lib.norms.RMSNorm', 'course_lib.norms.T5LayerNorm', 'course_lib.checks'), points=2, reference=RMS_NORM_SOLUTION, misconceptions=RMS_NORM_MISCONCEPTIONS,
          hint="y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps); return weight * y. No mean is "
               "subtracted and there is no bias. For float16/bfloat16 inputs compute in float32 and cast "
               "back with .to(x.dtype) so the output keeps the input's dtype.")
def check_rms_norm(learner):
    specs = [(16, 1e-6, (2, 5, 16), torch.float32, 3.0, 1.0),
             (8, 1e-6, (3, 4, 8), torch.float32, 1e-3, 0.0),  # tiny values: eps matters
             (12, 0.5, (2, 3, 12), torch.float64, 1.0, -2.0),
             (64, 1e-6, (2, 3, 64), torch.bfloat16, 40.0, 0.0)]
    variants = {
        "subtracts_mean": lambda r, x: _ln(r, x),
        "eps_outside_sqrt": lambda r, x: _ln(r, x, center=False, eps_inside=False),
        "sum_not_mean": lambda r, x: _ln(r, x, center=False, mean_sq=False),
        "wrong_dim": lambda r, x: _ln(r, x, center=False, dim=1),
        "no_weight": lambda r, x: _ln(r, x, center=False, affine=False),
    }
    return _grade_modules(_norm_cases(learner, "RMSNorm", "rmsnorm", specs, 50), variants)


# ------------------------------------------------------------------ SwiGLU
def _swiglu_variant(r, x, kind):
    gate, up = r.gate_proj(x), r.up_proj(x)
    if kind == "gate_up_swapped":
        return r.down_proj(F.silu(up) * gate)
    if kind == "silu_on_product":
        return r.down_proj(F.silu(gate * up))
    if kind == "silu_on_output":
        return F.silu(r.down_proj(gate * up))
    if kind == "sigmoid_gate":
        return r.down_proj(torch.sigmoid(gate) * up)
    return r.down_proj(gate * up)  # no activation at all


SWIGLU_MISCONCEPTIONS = {
    "gate_up_swapped": "SiLU is applied to up_proj's output instead of gate_proj's: the two projections "
                       "are swapped. SwiGLU is down_proj(silu(gate_proj(x)) * up_proj(x)).",
    "silu_on_product": "SiLU is applied to the product gate·up. Only the gate branch goes through SiLU: "
                       "silu(gate_proj(x)) * up_proj(x).",
    "silu_on_output": "SiLU is applied after down_proj. The activation belongs on the gate branch, "
                      "before the product: down_proj(silu(gate_proj(x)) * up_proj(x)).",
    "sigmoid_gate": "the gate uses sigmoid: that is the original GLU. SwiGLU uses SiLU, x·sigmoid(x) "
                    "(F.silu).",
    "no_activation": "there is no activation: gate·up alone is a bilinear layer. Apply F.silu to the gate.",
}


def _swiglu_module(learner, d, d_ff):
    m = _instantiate(learner, "SwiGLUFFN", d, d_ff)
    for name, shape in (("gate_proj", (d_ff, d)), ("up_proj", (d_ff, d)), ("down_proj", (d, d_ff))):
        lin = getattr(m, name, None)
        if not isinstance(lin, nn.Linear):
            raise Mismatch(f"no nn.Linear called `{name}`; name the layers gate_proj, up_proj and "
                           "down_proj (as in Hugging Face Llama) so weights can be loaded")
        if tuple(lin.weight.shape) != shape:
            raise Mismatch(f"`{name}.weight` has shape {tuple(lin.weight.shape)}, expected {shape} "
                           f"(nn.Linear({shape[1]}, {shape[0]}))")
        if lin.bias is not None:
            raise Mismatch(f"`{name}` has a bias; LLaMA's SwiGLU uses nn.Linear(..., bias=False)")
    return m


SWIGLU_SOLUTION = """import torch
import torch.nn as nn
import torch.nn.functional as F


class SwiGLUFFN(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (B, T, d_ff): only the gate goes through SiLU
        return self.down_proj(h)  # (B, T, C)
"""


@register("check_swiglu_ffn", minutes=15,
          forbid=('course_lib.ffn.GatedFeedForward', 'course_lib.ffn.glu_ffn', 'course_lib.ffn.make_ffn', 'course_lib.checks'), points=2, reference=SWIGLU_SOLUTION, misconceptions=SWIGLU_MISCONCEPTIONS,
          hint="Three bias-free nn.Linear layers: gate_proj and up_proj (d_model -> d_ff), down_proj "
               "(d_ff -> d_model). forward: down_proj(F.silu(gate_proj(x)) * up_proj(x)).")
def check_swiglu_ffn(learner):
    g = torch.Generator().manual_seed(60)
    cases = []
    for i, (d, d_ff, shape, dtype) in enumerate([(32, 88, (2, 5, 32), torch.float32),
                                                 (16, 40, (3, 16), torch.float64),
                                                 (24, 64, (1, 7, 24), torch.float32)]):
        torch.manual_seed(i)
        m = _swiglu_module(learner, d, d_ff).to(dtype).eval()
        r = ref_ffn.GatedFeedForward(d, d_ff).to(dtype).eval()
        r.load_state_dict({k: v for k, v in m.state_dict().items() if k.split(".")[0] in
                           ("gate_proj", "up_proj", "down_proj")})
        x = randn(*shape, gen=g, dtype=dtype)
        cases.append((f"d_model={d}, d_ff={d_ff}, x of shape {shape} {dtype}", m, r, (x,)))
    variants = {k: (lambda r, x, k=k: _swiglu_variant(r, x, k)) for k in SWIGLU_MISCONCEPTIONS}
    return _grade_modules(cases, variants)


# ------------------------------------------------------------------ pre-LN block
def pre_norm_forward(block, x, mask=None):
    """PreNormBlock.forward: each sub-layer reads a normalised copy; the residual stream adds
    the sub-layer's output to the *un-normalised* x (Xiong et al. 2020; GPT-2)."""
    h = x + block.attn(block.attn_norm(x), mask)
    return h + block.ffn(block.ffn_norm(h))


def _block_variant(b, x, mask, kind):
    n1, n2 = b.attn_norm, (b.attn_norm if kind == "shared_norm" else b.ffn_norm)
    m = None if kind == "mask_ignored" else mask
    if kind == "no_residual":
        return b.ffn(n2(b.attn(n1(x), m)))
    if kind == "norm_after_add":
        h = n1(x + b.attn(x, m))
        return n2(h + b.ffn(h))
    if kind == "residual_from_normed":
        h = n1(x)
        h = h + b.attn(h, m)
        h2 = n2(h)
        return h2 + b.ffn(h2)
    if kind == "parallel":
        return x + b.attn(n1(x), m) + b.ffn(n2(x))
    h = x + b.attn(n1(x), m)
    return h + b.ffn(n2(h))


PRE_NORM_MISCONCEPTIONS = {
    "no_residual": "the residual connections are missing: each sub-layer's output must be *added* to "
                   "its input, x = x + self.attn(self.attn_norm(x), mask).",
    "norm_after_add": "the norm is applied after the residual add, norm(x + sublayer(x)): that is the "
                      "post-LN block of the 2017 paper. Pre-LN normalises the sub-layer's input only: "
                      "x + sublayer(norm(x)).",
    "residual_from_normed": "the residual adds the *normalised* x (x = norm(x); x = x + attn(x)). Keep the "
                            "un-normalised x for the residual: x = x + attn(norm(x)).",
    "parallel": "the FFN reads the block's input x, not the output of the attention step; that is the "
                "parallel block (GPT-J). Here the FFN sub-layer uses h = x + attn(...).",
    "shared_norm": "attn_norm is used for both sub-layers; the FFN sub-layer has its own ffn_norm.",
    "mask_ignored": "the mask is not passed to the attention: call self.attn(h, mask).",
}


PRE_NORM_SOLUTION = """import torch
import torch.nn as nn

# the sub-modules the exercise builds for you
from course_lib.attention import MultiHeadAttention
from course_lib.ffn import GatedFeedForward
from course_lib.norms import LayerNorm as ReferenceLayerNorm


class PreNormBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attn_norm = ReferenceLayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ffn_norm = ReferenceLayerNorm(d_model)
        self.ffn = GatedFeedForward(d_model, d_ff)  # SwiGLU

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x + self.attn(self.attn_norm(x), mask)  # (B, T, C): the norm touches only the sub-layer's input
        return h + self.ffn(self.ffn_norm(h))  # (B, T, C)
"""


@register("check_pre_norm_block", minutes=25,
          forbid=('torch.nn.TransformerEncoderLayer', 'course_lib.blocks.Block', 'course_lib.blocks.transformer_block', 'course_lib.checks'), points=3, reference=PRE_NORM_SOLUTION, misconceptions=PRE_NORM_MISCONCEPTIONS,
          hint="Two residual steps: x = x + self.attn(self.attn_norm(x), mask), then "
               "x = x + self.ffn(self.ffn_norm(x)). The norm touches only the sub-layer's input.")
def check_pre_norm_block(learner):
    g = torch.Generator().manual_seed(70)
    cases = []
    for i, (d, H, d_ff, dtype) in enumerate([(32, 4, 64, torch.float32), (16, 2, 40, torch.float64)]):
        torch.manual_seed(i)
        m = _instantiate(learner, "PreNormBlock", d, H, d_ff)
        for name in ("attn_norm", "attn", "ffn_norm", "ffn"):
            if not isinstance(getattr(m, name, None), nn.Module):
                raise Mismatch(f"no sub-module called `{name}`; keep the __init__ given in the exercise")
        _randomise(m.attn_norm, 70 + i)
        _randomise(m.ffn_norm, 80 + i)
        m = m.to(dtype).eval()
        ref = _BoundReference(m)
        T = 6
        x = randn(2, T, d, gen=g, dtype=dtype)
        pad = torch.tensor([[1] * T, [1] * (T - 2) + [0, 0]]).bool()[:, None, None, :]  # (B, 1, 1, T)
        for label, mask in [("no mask", None), ("causal mask (T, T)", causal_mask(T)),
                            ("padding mask (B, 1, 1, T)", pad)]:
            args = (x,) if mask is None else (x, mask)
            cases.append((f"d_model={d}, n_heads={H}, d_ff={d_ff}, {dtype}, x {tuple(x.shape)}, {label}",
                          m, ref, args))
    variants = {k: (lambda r, x, mask=None, k=k: _block_variant(r.block, x, mask, k)) for k in PRE_NORM_MISCONCEPTIONS}
    return _grade_modules(cases, variants)


class _BoundReference:
    """The reference forward, run on the learner's own sub-modules."""

    def __init__(self, block: nn.Module):
        self.block = block

    def __call__(self, x, mask=None):
        return pre_norm_forward(self.block, x, mask)
