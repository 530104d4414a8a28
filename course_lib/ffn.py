"""The position-wise feed-forward network, read top to bottom:
activations -> activation registry -> plain FFN -> gated FFN (GLU family) -> sizes.

Names follow Hugging Face Llama: ``up_proj`` (d_model -> d_ff), ``down_proj``
(d_ff -> d_model) and, for the gated variants, ``gate_proj``. Other checkpoints map as:

  =================  ==========================  ==========================
  course_lib         GPT-2 (``mlp.``)            BERT (``layer.N.``)
  =================  ==========================  ==========================
  up_proj            c_fc   (Conv1D: weight.T)   intermediate.dense
  down_proj          c_proj (Conv1D: weight.T)   output.dense
  =================  ==========================  ==========================

T5 v1.1's gated feed-forward: ``wi_0`` = gate_proj, ``wi_1`` = up_proj, ``wo`` = down_proj.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import ConfigError, check_choice, check_positive, check_positive_values, check_range
from course_lib.kernels import fused


# --------------------------------------------------------------------------- activations
def relu(x: torch.Tensor) -> torch.Tensor:
    """max(0, x): the FFN activation of the 2017 paper (Eq. 2)."""
    return x.clamp_min(0.0)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU(x) = x·Φ(x), Φ the standard normal CDF (Hendrycks & Gimpel 2016). BERT, GPT-2 era."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU used by GPT-2 and T5 v1.1 ("gelu_new" in Hugging Face):
    0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Swish_β(x) = x·σ(βx) (Ramachandran et al. 2017); β = 1 is SiLU, LLaMA's gate activation."""
    return x * torch.sigmoid(beta * x)


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish(x) = x·tanh(softplus(x)) (Misra 2019)."""
    return x * torch.tanh(nn.functional.softplus(x))


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """σ(x): the gate of the original GLU (Dauphin et al. 2017)."""
    return torch.sigmoid(x)


# name -> function. Hugging Face's `hidden_act` strings are accepted as aliases so that a
# model config can be passed straight through.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu, "gelu": gelu, "gelu_tanh": gelu_tanh, "silu": silu, "mish": mish, "sigmoid": sigmoid,
}
ALIASES = {"swish": "silu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "glu": "sigmoid"}
ACTIVATION_NAMES = (*ACTIVATIONS, *ALIASES)
# the same functions as PyTorch's fused kernels (course_lib.kernels): one pass over the tensor
# instead of one per operation of the formula; tests hold each equal to its formula above
FUSED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "gelu": F.gelu, "gelu_tanh": partial(F.gelu, approximate="tanh"), "silu": F.silu,
    "mish": F.mish, "sigmoid": torch.sigmoid,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Activation by name, e.g. get_activation("gelu_tanh"): PyTorch's fused kernel, or the
    formula above inside ``with course_lib.kernels.from_scratch():``. The formula itself is
    ``get_activation(name).from_scratch``."""
    key = ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in ACTIVATIONS:
        valid = ", ".join(sorted([*ACTIVATIONS, *ALIASES]))
        raise ValueError(f"unknown activation {name!r}; choose one of: {valid}.")
    formula, kernel = ACTIVATIONS[key], FUSED[key]

    def activation(x: torch.Tensor) -> torch.Tensor:
        return kernel(x) if fused() else formula(x)

    activation.__name__ = activation.__qualname__ = key
    activation.from_scratch = formula
    return activation


def check_activation(cfg, name: str = "activation", hint: str = "") -> None:
    """Config validation: ``getattr(cfg, name)`` names an activation (one message everywhere)."""
    check_choice(cfg, name, ACTIVATION_NAMES, hint=hint)


# --------------------------------------------------------------------------- configs
@dataclass
class FFNConfig:
    """Sizes of one feed-forward layer. ``gated`` adds a gate_proj (the GLU family)."""
    d_model: int = 64
    d_ff: int = 256
    activation: str = "gelu"
    bias: bool = True
    gated: bool = False
    dropout: float = 0.0

    def __post_init__(self):
        check_positive(self, "d_model", "d_ff")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        check_activation(self)

    @property
    def n_params(self) -> int:
        return ffn_params(self.d_model, self.d_ff, gated=self.gated, bias=self.bias)


def ffn_params(d_model: int, d_ff: int, gated: bool = False, bias: bool = True) -> int:
    """Parameter count: 2 matrices (plain) or 3 (gated) of d_model×d_ff, plus their biases."""
    n_in = 2 if gated else 1  # gate_proj and up_proj, or up_proj alone
    weights = (n_in + 1) * d_model * d_ff
    biases = (n_in * d_ff + d_model) if bias else 0
    return weights + biases


# --------------------------------------------------------------------------- plain FFN
class FeedForward(nn.Module):
    """FFN(x) = act(x W₁ + b₁) W₂ + b₂, applied to every position alone (Vaswani et al. 2017,
    Eq. 2; d_ff = 4·d_model there). x (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.config = FFNConfig(d_model, d_ff, activation, bias, gated=False, dropout=dropout)
        self.act = get_activation(activation)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.up_proj(x))  # (B, T, d_ff)
        return self.dropout(self.down_proj(h))  # (B, T, C)


# --------------------------------------------------------------------------- gated FFN
# The GLU family (Shazeer 2020, "GLU Variants Improve Transformer", Eq. 5-6): which
# activation sits on the gate branch.
GLU_VARIANTS = {"glu": "sigmoid", "reglu": "relu", "geglu": "gelu", "swiglu": "silu"}


class GatedFeedForward(nn.Module):
    """FFN_GLU(x) = (act(x W_gate) ⊙ x W_up) W_down (Shazeer 2020). With SiLU it is SwiGLU
    (LLaMA, Mistral); with tanh-GELU it is T5 v1.1's gated-GELU. x (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "silu", bias: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.config = FFNConfig(d_model, d_ff, activation, bias, gated=True, dropout=dropout)
        self.act = get_activation(activation)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.act(self.gate_proj(x))  # (B, T, d_ff): the gate, in (0, 1)-ish for σ
        h = gate * self.up_proj(x)  # (B, T, d_ff): element-wise product = the gating
        return self.dropout(self.down_proj(h))  # (B, T, C)


def glu_ffn(variant: str, d_model: int, d_ff: int, bias: bool = False) -> GatedFeedForward:
    """GatedFeedForward by Shazeer's name: "glu", "reglu", "geglu" or "swiglu"."""
    if variant not in GLU_VARIANTS:
        raise ValueError(f"unknown GLU variant {variant!r}; choose one of: {', '.join(GLU_VARIANTS)}.")
    return GatedFeedForward(d_model, d_ff, GLU_VARIANTS[variant], bias=bias)


def make_ffn(d_model: int, d_ff: int, activation: str = "gelu", gated: bool = False,
             bias: bool = True, dropout: float = 0.0) -> nn.Module:
    """The one factory the model families use: FeedForward or GatedFeedForward."""
    cls = GatedFeedForward if gated else FeedForward
    return cls(d_model, d_ff, activation, bias=bias, dropout=dropout)


# --------------------------------------------------------------------------- sizes
def matched_gated_d_ff(d_ff: int) -> int:
    """The hidden size that gives a gated FFN (3 matrices) the parameters of a plain FFN with
    `d_ff` (2 matrices): 2/3·d_ff (Shazeer 2020, §2)."""
    check_positive_values("matched_gated_d_ff", d_ff=d_ff)
    return round(2 * d_ff / 3)


def llama_hidden_size(d_model: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """LLaMA's rule: 2/3 of 4·d_model, optionally scaled, rounded **up** to a multiple of
    `multiple_of` (meta-llama's model.py). d_model=4096 -> 11008 (LLaMA-7B)."""
    check_positive_values("llama_hidden_size", d_model=d_model, multiple_of=multiple_of)
    hidden = int(2 * (4 * d_model) / 3)
    if ffn_dim_multiplier is not None:
        if not ffn_dim_multiplier > 0:
            raise ConfigError(f"ffn_dim_multiplier={ffn_dim_multiplier!r}: expected a positive number "
                              "(e.g. 1.3 for LLaMA-2-70B) or None.")
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)

