"""A selective state-space layer (Mamba, Gu & Dao 2023), read top to bottom: discretisation ->
the selective scan as a sequential recurrence -> the same scan as a parallel (associative,
log-depth) scan -> the selective SSM with input-dependent Δ, B, C -> the Mamba block.

Shapes: B batch, T time, E channels of the inner stream (d_inner = expand · d_model), N state
size per channel, R the rank of the Δ projection. Parameter names equal Hugging Face
``MambaMixer``'s, so its weights load with ``load_state_dict``.

The continuous system (paper eq. 1) is  h'(t) = A h(t) + B x(t),  y(t) = C h(t).  Mamba makes
Δ, B and C functions of the input (Algorithm 2, "S6"); A stays a learned diagonal, per channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import check_choice, check_positive, check_positive_values, check_range

DISCRETISATIONS = ("euler", "zoh")
SCANS = ("sequential", "parallel")


# --------------------------------------------------------------------------- discretisation
def discretize(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, method: str = "euler"):
    """Paper eq. 4: Ā = exp(ΔA) (zero-order hold) and B̄ = (ΔA)⁻¹(exp(ΔA) − I)·ΔB ("zoh") or its
    first-order simplification B̄ = ΔB ("euler", what Mamba's code and Hugging Face use).
    delta (B, T, E), A (E, N), B (B, T, N) -> Ā, B̄ both (B, T, E, N)."""
    if method not in DISCRETISATIONS:
        raise ValueError(f"discretize(method={method!r}): expected one of {DISCRETISATIONS}.")
    dA = delta.unsqueeze(-1) * A  # (B, T, E, N)
    A_bar = torch.exp(dA)  # (B, T, E, N)
    dB = delta.unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E, N)
    if method == "euler":
        return A_bar, dB
    # (exp(ΔA) − 1)/(ΔA) → 1 as ΔA → 0; expm1 keeps the small-ΔA digits
    ratio = torch.where(dA == 0, torch.ones_like(dA), torch.expm1(dA) / dA)  # (B, T, E, N)
    return A_bar, ratio * dB


def _check_scan_inputs(x, delta, A, B, C):
    if x.dim() != 3 or delta.shape != x.shape:
        raise ValueError(f"selective scan: x and delta must both be (B, T, E); got {tuple(x.shape)} "
                         f"and {tuple(delta.shape)}.")
    Bsz, T, E = x.shape
    if A.dim() != 2 or A.size(0) != E:
        raise ValueError(f"selective scan: A must be (E, N) with E={E} channels; got {tuple(A.shape)}.")
    N = A.size(1)
    for name, m in (("B", B), ("C", C)):
        if tuple(m.shape) != (Bsz, T, N):
            raise ValueError(f"selective scan: {name} must be (B, T, N) = {(Bsz, T, N)}; got {tuple(m.shape)}.")


# --------------------------------------------------------------------------- the two scans
def scan_sequential(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t · h_{t−1} + b_t with h_0 = 0, one step at a time (T steps of O(1) depth).
    a, b (B, T, ...) -> every state h (B, T, ...)."""
    h = torch.zeros_like(b[:, 0])  # (B, ...)
    states = []
    for t in range(b.size(1)):
        h = a[:, t] * h + b[:, t]  # (B, ...)
        states.append(h)
    return torch.stack(states, dim=1)  # (B, T, ...)


def scan_parallel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same states with ⌈log2 T⌉ steps (Hillis & Steele's inclusive scan). A pair (a, b) is the
    affine map h ↦ a·h + b; doing (a1, b1) then (a2, b2) is (a1·a2, a2·b1 + b2) — associative, so
    the pairs can be combined in any grouping. After the step with offset s, position t holds the
    composition of the 2s maps ending at t."""
    T = b.size(1)
    s = 1
    while s < T:
        a_prev = torch.cat([torch.ones_like(a[:, :s]), a[:, :-s]], dim=1)  # (B, T, ...): identity before 0
        b_prev = torch.cat([torch.zeros_like(b[:, :s]), b[:, :-s]], dim=1)  # (B, T, ...)
        a, b = a * a_prev, a * b_prev + b  # compose: earlier map first, then ours
        s *= 2
    return b  # with h_0 = 0 the state is the composed map's offset


def selective_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, mode: str = "sequential", method: str = "euler") -> torch.Tensor:
    """Algorithm 2's scan: h_t = Ā_t h_{t−1} + B̄_t x_t,  y_t = C_t h_t (+ D x_t).
    x, delta (B, T, E); A (E, N); B, C (B, T, N); D (E,) or None -> y (B, T, E)."""
    _check_scan_inputs(x, delta, A, B, C)
    A_bar, B_bar = discretize(delta, A, B, method)  # (B, T, E, N) each
    bx = B_bar * x.unsqueeze(-1)  # (B, T, E, N)
    if mode == "sequential":
        h = scan_sequential(A_bar, bx)  # (B, T, E, N)
    elif mode == "parallel":
        h = scan_parallel(A_bar, bx)  # (B, T, E, N)
    else:
        raise ValueError(f"selective_scan(mode={mode!r}): expected one of {SCANS}.")
    y = (h * C.unsqueeze(2)).sum(-1)  # (B, T, E)
    return y if D is None else y + D * x


# --------------------------------------------------------------------------- config
@dataclass
class MambaConfig:
    """One Mamba block. Defaults follow the paper: state 16, conv 4, expand 2, rank ⌈d_model/16⌉."""
    d_model: int = 64
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    scan: str = "parallel"
    discretisation: str = "euler"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bias: bool = False  # in_proj / out_proj biases (the paper's code: none)
    conv_bias: bool = True
    selective: bool = True  # False: Δ, B, C are learned constants (a time-invariant SSM, like S4D)

    def __post_init__(self):
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.d_model / 16)
        check_positive(self, "d_model", "d_state", "d_conv", "expand", "dt_rank")
        check_choice(self, "scan", SCANS, hint="the same states, one step at a time or in ⌈log2 T⌉ steps")
        check_choice(self, "discretisation", DISCRETISATIONS, hint="'euler' = Mamba's code, B̄ = ΔB")
        check_range(self, "dt_min", 0, math.inf, low_inclusive=False, hint="paper: dt_min=0.001, dt_max=0.1")
        check_range(self, "dt_max", self.dt_min, math.inf, hint="dt_max >= dt_min; paper: dt_min=0.001, dt_max=0.1")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


# --------------------------------------------------------------------------- the block
class MambaBlock(nn.Module):
    """Figure 3's Mamba block: in_proj splits into a stream x and a gate z; x goes through a causal
    depthwise conv, SiLU and the selective SSM; the result is gated by SiLU(z) and projected back.
    (B, T, d_model) -> (B, T, d_model). No residual and no norm: the model around it adds those."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = cfg = config
        E, N, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.in_proj = nn.Linear(cfg.d_model, 2 * E, bias=cfg.bias)
        self.conv1d = nn.Conv1d(E, E, cfg.d_conv, groups=E, padding=cfg.d_conv - 1, bias=cfg.conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)  # Δ (low rank), B and C from the input
        self.dt_proj = nn.Linear(R, E)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, cfg.d_model, bias=cfg.bias)
        if not cfg.selective:  # the ablation of Table 1: the same block without selection
            self.B_fixed = nn.Parameter(torch.randn(N) / math.sqrt(N))
            self.C_fixed = nn.Parameter(torch.randn(N) / math.sqrt(N))
        self._init_dt()

    def _init_dt(self):
        """Section 3.6: Δ starts log-uniform in [dt_min, dt_max]; the bias is softplus⁻¹ of it."""
        cfg = self.config
        dt = torch.exp(torch.rand(cfg.d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min))
                       + math.log(cfg.dt_min))  # (E,)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)

    def ssm_parameters(self, x: torch.Tensor):
        """The selection mechanism (Algorithm 2, lines 2-4): Δ, B, C from x (B, T, E)."""
        cfg = self.config
        if not cfg.selective:  # the same Δ, B, C at every step, whatever the input
            delta = F.softplus(self.dt_proj.bias).expand_as(x)  # (B, T, E)
            return delta, self.B_fixed.expand(*x.shape[:2], -1), self.C_fixed.expand(*x.shape[:2], -1)  # (B, T, N)
        dt, B, C = self.x_proj(x).split([cfg.dt_rank, cfg.d_state, cfg.d_state], dim=-1)  # (B, T, R|N|N)
        delta = F.softplus(self.dt_proj(dt))  # (B, T, E): positive step sizes
        return delta, B, C

    def forward(self, hidden: torch.Tensor, scan: str | None = None) -> torch.Tensor:
        T = hidden.size(1)
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (B, T, E) each
        x = self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2)  # (B, T, E): causal, left padding only
        x = F.silu(x)
        delta, B, C = self.ssm_parameters(x)
        A = -torch.exp(self.A_log)  # (E, N): negative, so every |Ā| < 1 and the state decays
        y = selective_scan(x, delta, A, B, C, self.D, mode=scan or self.config.scan,
                           method=self.config.discretisation)  # (B, T, E)
        return self.out_proj(y * F.silu(z))  # (B, T, d_model)


class MambaLM(nn.Module):
    """A tiny language model of residual pre-norm Mamba blocks, for the lesson's synthetic tasks."""

    def __init__(self, vocab_size: int, config: MambaConfig, n_layers: int = 2):
        super().__init__()
        check_positive_values("MambaLM", vocab_size=vocab_size, n_layers=n_layers)
        self.embed = nn.Embedding(vocab_size, config.d_model)
        self.norms = nn.ModuleList(nn.RMSNorm(config.d_model) for _ in range(n_layers))
        self.blocks = nn.ModuleList(MambaBlock(config) for _ in range(n_layers))
        self.norm_f = nn.RMSNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)  # (B, T, C)
        for norm, block in zip(self.norms, self.blocks):
            h = h + block(norm(h))  # (B, T, C)
        return self.lm_head(self.norm_f(h))  # (B, T, V)


# --------------------------------------------------------------------------- a task that needs selection
def selective_copying(batch: int, n_data: int = 4, length: int = 24, n_colors: int = 8,
                      generator: torch.Generator | None = None):
    """Section 4.1.1's selective copying: n_data coloured tokens (1..n_colors) scattered at random
    positions among `length` blanks (0), then a marker (n_colors + 1); the model must then emit the
    coloured tokens in order. Where they sit changes from sequence to sequence, so a time-invariant
    SSM (one fixed convolution) cannot know which inputs to keep. Returns (input_ids, targets),
    both (batch, length + n_data), targets −100 except at the n_data answer positions."""
    if not 0 < n_data <= length:
        raise ValueError(f"selective_copying(n_data={n_data}, length={length}): expected 0 < n_data <= length.")
    data = torch.randint(1, n_colors + 1, (batch, n_data), generator=generator)  # (B, K)
    pos = torch.rand(batch, length, generator=generator).argsort(-1)[:, :n_data].sort(-1).values  # (B, K)
    ids = torch.zeros(batch, length + 1 + n_data, dtype=torch.long)  # (B, L + 1 + K)
    ids[:, :length].scatter_(1, pos, data)
    ids[:, length] = n_colors + 1
    ids[:, length + 1:] = data  # teacher forcing: the answers so far are inputs
    targets = torch.full_like(ids, -100)  # (B, L + 1 + K)
    targets[:, length:length + n_data] = data
    return ids[:, :-1], targets[:, :-1]  # (B, L + K) each
