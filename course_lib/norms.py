"""Normalisation layers, read top to bottom: LayerNorm -> RMSNorm -> T5's RMS layer norm ->
GroupNorm -> a factory. Every norm works on the last axis (the C channels of each token)
except GroupNorm, which follows ``nn.GroupNorm``'s (B, C, *) layout.

Half-precision inputs (float16 / bfloat16) are normalised in float32 and cast back, as
PyTorch's kernels and Hugging Face's LlamaRMSNorm do: the mean of squares of a few thousand
half-precision numbers loses too many digits otherwise.

LayerNorm and RMSNorm have two paths (``course_lib.kernels``): ``forward`` calls PyTorch's
fused ``F.layer_norm`` / ``F.rms_norm``; ``from_scratch`` is the formula written out, which
the lessons read. Inside ``with from_scratch():`` forward takes the second.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import ConfigError
from course_lib.kernels import fused


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half inputs, the input's own dtype for float32 / float64."""
    return torch.promote_types(x.dtype, torch.float32)


def _check_width(x: torch.Tensor, d: int, name: str) -> None:
    if x.size(-1) != d:
        raise ValueError(f"{name} was built for {d} channels but got input of shape {tuple(x.shape)} "
                         f"(last axis {x.size(-1)}); build it with {name}({x.size(-1)}).")


# --------------------------------------------------------------------------- LayerNorm
class LayerNorm(nn.Module):
    """LayerNorm(x) = (x - μ) / √(σ² + ε) · γ + β over the last axis (Ba et al. 2016, Eq. 4).

    σ² is the *biased* variance (divide by C, not C - 1) and ε sits *inside* the square
    root, exactly as ``nn.LayerNorm``. ``bias=False`` drops β (as some recent models do).
    """

    def __init__(self, d: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_width(x, self.d, "LayerNorm")
        if not fused():
            return self.from_scratch(x)
        h = x.to(_compute_dtype(x))
        weight = self.weight.to(h.dtype)
        bias = None if self.bias is None else self.bias.to(h.dtype)
        return F.layer_norm(h, (self.d,), weight, bias, self.eps).to(x.dtype)

    def from_scratch(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(_compute_dtype(x))
        mean = h.mean(-1, keepdim=True)  # (B, T, 1) one mean per token
        var = (h - mean).pow(2).mean(-1, keepdim=True)  # (B, T, 1) biased: / C
        h = (h - mean) * torch.rsqrt(var + self.eps)  # (B, T, C) mean 0, variance 1 per token
        h = h * self.weight.to(h.dtype)
        if self.bias is not None:
            h = h + self.bias.to(h.dtype)
        return h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}, bias={self.bias is not None}"


class StdEpsLayerNorm(nn.Module):
    """The variant written in The Annotated Transformer: γ·(x - μ)/(std + ε) + β with the
    *unbiased* std and ε *outside* the root. Kept only to measure how it differs."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)  # (B, T, 1)
        std = x.std(-1, keepdim=True)  # (B, T, 1) unbiased: / (C - 1)
        return self.weight * (x - mean) / (std + self.eps) + self.bias


# --------------------------------------------------------------------------- RMSNorm
class RMSNorm(nn.Module):
    """RMSNorm(x) = x / √(mean(x²) + ε) · γ (Zhang & Sennrich 2019, Eq. 4): no mean is
    subtracted and there is no β. LLaMA, Mistral, T5.

    Computed like Hugging Face's LlamaRMSNorm: normalise in float32, cast back to the
    input's dtype, *then* multiply by the weight.
    """

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_width(x, self.d, "RMSNorm")
        if not fused():
            return self.from_scratch(x)
        if x.dtype == self.weight.dtype and x.dtype in (torch.float32, torch.float64):
            return F.rms_norm(x, (self.d,), self.weight, self.eps)  # one kernel, weight included
        h = F.rms_norm(x.to(_compute_dtype(x)), (self.d,), None, self.eps)  # (B, T, C) in float32
        return self.weight * h.to(x.dtype)

    def from_scratch(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(_compute_dtype(x))
        mean_sq = h.pow(2).mean(-1, keepdim=True)  # (B, T, 1) one mean square per token
        h = h * torch.rsqrt(mean_sq + self.eps)  # (B, T, C) root mean square 1 per token
        return self.weight * h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}"


class T5LayerNorm(RMSNorm):
    """T5's "layer norm": the same RMS normalisation without bias, in T5's order of casts.

    It scales the *original* input by the float32 reciprocal root (so the product is float32)
    and casts to half precision only when the weight itself is half precision. For float32
    and float64 it equals RMSNorm; in half precision the two can differ in the last bit.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_width(x, self.d, "T5LayerNorm")
        mean_sq = x.to(_compute_dtype(x)).pow(2).mean(-1, keepdim=True)  # (B, T, 1)
        h = x * torch.rsqrt(mean_sq + self.eps)  # (B, T, C), promoted to float32 for half x
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            h = h.to(self.weight.dtype)
        return self.weight * h


# --------------------------------------------------------------------------- GroupNorm
class GroupNorm(nn.Module):
    """GroupNorm (Wu & He 2018): split the C channels into G groups and normalise each group
    over its channels *and* all spatial/time positions; per-channel γ, β. Input (B, C, *)
    like ``nn.GroupNorm``.

    When it is used: convolutional nets with small batches (BatchNorm's batch statistics are
    too noisy there) — diffusion U-Nets, some speech encoders — and per-head output
    normalisation in RetNet- and RWKV-style layers. G = 1 normalises the whole (C, *) sample;
    G = C is InstanceNorm.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ConfigError(f"GroupNorm: num_channels={num_channels} is not divisible by "
                              f"num_groups={num_groups}; choose num_groups among the divisors of "
                              f"{num_channels}.")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.size(1) != self.num_channels:
            raise ValueError(f"GroupNorm expects input of shape (B, {self.num_channels}, ...), "
                             f"got {tuple(x.shape)}.")
        B, C = x.shape[:2]
        h = x.to(_compute_dtype(x)).reshape(B, self.num_groups, -1)  # (B, G, C/G · positions)
        mean = h.mean(-1, keepdim=True)  # (B, G, 1)
        var = (h - mean).pow(2).mean(-1, keepdim=True)  # (B, G, 1) biased
        h = ((h - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)  # (B, C, *)
        if self.weight is not None:
            shape = (1, C) + (1,) * (x.dim() - 2)  # per-channel γ, β broadcast over positions
            h = h * self.weight.to(h.dtype).view(shape) + self.bias.to(h.dtype).view(shape)  # (B, C, *)
        return h.to(x.dtype)


# --------------------------------------------------------------------------- factory
NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "t5": T5LayerNorm}
DEFAULT_EPS = {"layernorm": 1e-5, "rmsnorm": 1e-6, "t5": 1e-6}


def make_norm(kind: str, d: int, eps: float | None = None, bias: bool = True) -> nn.Module:
    """The norm a model config names: "layernorm" (GPT-2, BERT), "rmsnorm" (LLaMA, Mistral)
    or "t5". ``bias`` only applies to LayerNorm."""
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of: {', '.join(NORMS)}.")
    eps = DEFAULT_EPS[kind] if eps is None else eps
    if kind == "layernorm":
        return LayerNorm(d, eps, bias=bias)
    return NORMS[kind](d, eps)
