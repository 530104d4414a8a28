"""int8 weight quantisation, read top to bottom: absmax scales -> quantise / dequantise ->
a Linear that stores int8 -> swapping the Linears of a model -> counting bytes.

Symmetric absmax quantisation maps the floats of a group onto the integers -127 .. 127:

    scale = max|w| / 127,    q = round(w / scale) clamped to [-127, 127],    ŵ = q · scale

so the largest |w| lands exactly on ±127 and every weight is off by at most scale / 2 (one
half-step of rounding). *Per-tensor* uses one scale for the whole matrix; *per-channel*
(per output row, as in LLM.int8() and most weight-only int8 schemes) gives each output neuron
its own scale, so one row of large weights — an outlier row — no longer coarsens the grid of
every other row. -128 is left unused, so the grid is symmetric around 0.

An int8 weight takes 1 byte instead of 4 (float32): a model's Linear weights shrink 4×, plus
one float scale per row. Here the matmul still runs in float (we multiply by the integer-valued
weights, then by the scale); real speed-ups need int8 kernels, which this file does not use.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

QMAX = 127  # symmetric int8: -127 .. 127


# --------------------------------------------------------------------------- quantise / dequantise
def _check_weight(w: torch.Tensor, what: str) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"{what} expects a 2-D float weight matrix (out_features, in_features), got "
                         f"{getattr(w, 'dtype', type(w).__name__)} of shape {tuple(getattr(w, 'shape', ()))}; "
                         "pass linear.weight.")


def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (out, in) float -> (q (out, in) int8, scale (out,) in w's dtype): one absmax scale per
    output row. An all-zero row gets scale 1 (any scale reconstructs zeros; 0 would divide by 0)."""
    _check_weight(w, "quantize_per_channel")
    absmax = w.abs().amax(dim=1)  # (out,): the largest magnitude of each row
    scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))  # (out,)
    q = torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)  # (out, in)
    return q, scale


def quantize_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (out, in) -> (q (out, in) int8, scale () ): one absmax scale for the whole matrix."""
    _check_weight(w, "quantize_per_tensor")
    absmax = w.abs().max()  # (): the largest magnitude anywhere
    scale = absmax / QMAX if absmax > 0 else torch.ones_like(absmax)
    q = torch.round(w / scale).clamp(-QMAX, QMAX).to(torch.int8)  # (out, in)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """ŵ = q · scale: int8 (out, in) with a per-row scale (out,) or one scale () -> float (out, in)."""
    if scale.dim() == 1:
        scale = scale[:, None]  # (out, 1): one per row
    return q.to(scale.dtype) * scale  # (out, in)


# --------------------------------------------------------------------------- a quantised Linear
class QuantLinear(nn.Module):
    """A Linear layer that stores its weight as int8 (out, in) plus float scales.

    forward: y = (x · q ᵀ) · scale + b. Since ŵ = diag(scale) · q, this equals x · ŵᵀ + b, but the
    scale is applied once per output instead of to every weight."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        if q.dtype != torch.int8 or q.dim() != 2:
            raise ValueError(f"QuantLinear needs an int8 (out, in) weight, got {q.dtype} {tuple(q.shape)}.")
        self.in_features, self.out_features = q.size(1), q.size(0)
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale.detach().clone())  # (out,) or ()
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, per_channel: bool = True) -> "QuantLinear":
        w = linear.weight.detach()
        q, scale = quantize_per_channel(w) if per_channel else quantize_per_tensor(w)
        return cls(q, scale, linear.bias)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize(self.weight_int8, self.scale)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight_int8.to(x.dtype)) * self.scale.to(x.dtype)  # (..., out)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        kind = "per-channel" if self.scale.dim() == 1 else "per-tensor"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 {kind}"


# --------------------------------------------------------------------------- a whole model
def tied_linears(model: nn.Module) -> set[str]:
    """Names of the Linear layers whose weight is also used by another module (weight tying,
    e.g. GPT's lm_head = tok_emb): quantising one copy would keep the float one anyway."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), []).append(name)
    return {n for names in owners.values() if len(names) > 1 for n in names
            if isinstance(model.get_submodule(n), nn.Linear)}


def quantize_model(model: nn.Module, per_channel: bool = True, skip_tied: bool = True,
                   skip: tuple[str, ...] = ()) -> nn.Module:
    """A copy of `model` with every nn.Linear replaced by a QuantLinear (weight-only int8).

    skip_tied leaves a Linear whose weight is shared with an embedding in float: the embedding
    needs the float matrix for its look-ups, so an int8 copy would *add* bytes. `skip` lists
    more module names to keep in float. The original model is not changed."""
    qmodel = copy.deepcopy(model)
    keep = set(skip) | (tied_linears(qmodel) if skip_tied else set())
    targets = [n for n, m in qmodel.named_modules() if isinstance(m, nn.Linear) and n not in keep]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = qmodel.get_submodule(parent_name) if parent_name else qmodel
        setattr(parent, child, QuantLinear.from_linear(getattr(parent, child), per_channel))
    return qmodel.eval()


def model_size_bytes(model: nn.Module) -> int:
    """Bytes held by a model's parameters and buffers, each tensor counted once (tied weights once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total
