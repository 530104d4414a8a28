"""Checks for Lesson 14 (beyond the standard block): Mamba's selective scan in its sequential form.
Each misconception is a tiny re-creation of the mistake; the check names the one whose outputs
equal the learner's."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cases import Case, grade_function, randn
from .core import register


def selective_scan_reference(x, delta, A, B, C, D):
    """Mamba's scan, one time step at a time (Algorithm 2 with B̄ = ΔB, as in Mamba's code).
    x, delta (B, T, E); A (E, N); B, C (B, T, N); D (E,) -> y (B, T, E)."""
    h = x.new_zeros(x.size(0), x.size(2), A.size(1))  # (B, E, N): the state starts at zero
    ys = []
    for t in range(x.size(1)):
        dt = delta[:, t, :, None]  # (B, E, 1)
        A_bar = torch.exp(dt * A)  # (B, E, N): zero-order hold
        B_bar = dt * B[:, t, None, :]  # (B, E, N)
        h = A_bar * h + B_bar * x[:, t, :, None]  # (B, E, N)
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])  # (B, E)
    return torch.stack(ys, dim=1)  # (B, T, E)


def _scan_variant(x, delta, A, B, C, D, *, a_bar="zoh", carry=True, read_before=False, swap=False,
                  skip=True, delta_on_B=True):
    if swap:
        B, C = C, B
    h = x.new_zeros(x.size(0), x.size(2), A.size(1))  # (B, E, N)
    ys = []
    for t in range(x.size(1)):
        dt = delta[:, t, :, None]  # (B, E, 1)
        Ab = {"zoh": torch.exp(dt * A), "raw": A.expand_as(h), "no_delta": torch.exp(A).expand_as(h)}[a_bar]
        Bb = (dt if delta_on_B else 1.0) * B[:, t, None, :]  # (B, E, N)
        h_prev = h
        h = (Ab * h if carry else 0) + Bb * x[:, t, :, None]  # (B, E, N)
        read = h_prev if read_before else h
        ys.append((read * C[:, t, None, :]).sum(-1) + (D * x[:, t] if skip else 0))  # (B, E)
    return torch.stack(ys, dim=1)  # (B, T, E)


SCAN_MISCONCEPTIONS = {
    "raw_A": "the state is multiplied by A itself. A is the *continuous* system's matrix; the discrete "
             "step uses Ā = exp(Δ·A) (zero-order hold, paper eq. 4), which lies in (0, 1) because A < 0.",
    "no_delta_in_A": "Ā = exp(A) forgets the step size: Ā = exp(Δ_t · A), with Δ from delta[:, t].",
    "no_delta_in_B": "B̄ = B forgets the step size: with Mamba's simplification B̄ = Δ_t · B_t.",
    "state_not_carried": "the state is not carried across time steps (h_t = B̄_t x_t); the recurrence is "
                         "h_t = Ā_t · h_{t-1} + B̄_t · x_t, with h updated in place of the old one.",
    "output_before_update": "y_t is read from the *previous* state. Update first, h_t = Ā_t h_{t-1} + B̄_t x_t, "
                            "then y_t = C_t · h_t + D · x_t.",
    "swapped_B_C": "B and C are swapped: B writes the input into the state (B̄ = Δ·B), C reads the state "
                   "out (y = C·h).",
    "no_skip": "the skip term D · x_t is missing from y_t.",
    "mutates_input": "an input tensor was changed in place.",
}


def _cases(g) -> list[Case]:
    cases = []
    for label, (Bsz, T, E, N), dtype in [("1 sequence, T=6, E=2 channels, N=3 states", (1, 6, 2, 3), torch.float32),
                                         ("batch 2, T=9, E=4, N=5", (2, 9, 4, 5), torch.float32),
                                         ("batch 2, T=1 (a single step), E=3, N=2", (2, 1, 3, 2), torch.float32),
                                         ("batch 3, T=12, E=3, N=4, float64", (3, 12, 3, 4), torch.float64)]:
        x = randn(Bsz, T, E, gen=g, dtype=dtype)
        delta = F.softplus(randn(Bsz, T, E, gen=g, dtype=dtype))
        A = -torch.rand(E, N, generator=g, dtype=dtype) * 2 - 0.2
        cases.append(Case(f"{label}: x, delta ({Bsz}, {T}, {E}); A ({E}, {N}); B, C ({Bsz}, {T}, {N}); D ({E},)",
                          (x, delta, A, randn(Bsz, T, N, gen=g, dtype=dtype), randn(Bsz, T, N, gen=g, dtype=dtype),
                           randn(E, gen=g, dtype=dtype))))
    return cases


SCAN_SOLUTION = """import torch


def selective_scan(x, delta, A, B, C, D):
    h = x.new_zeros(x.size(0), x.size(2), A.size(1))  # (B, E, N): the state starts at zero
    ys = []
    for t in range(x.size(1)):
        dt = delta[:, t, :, None]  # (B, E, 1): one step size per channel
        A_bar = torch.exp(dt * A)  # (B, E, N): zero-order hold
        B_bar = dt * B[:, t, None, :]  # (B, E, N)
        h = A_bar * h + B_bar * x[:, t, :, None]  # (B, E, N)
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])  # (B, E): C_t · h_t over the N states
    return torch.stack(ys, dim=1)  # (B, T, E)
"""


@register("check_selective_scan", minutes=30,
          forbid=('course_lib.ssm.selective_scan', 'course_lib.ssm.MambaBlock', 'course_lib.ssm', 'course_lib.checks'), points=4, reference=SCAN_SOLUTION, misconceptions=SCAN_MISCONCEPTIONS,
          hint="h = zeros (B, E, N). For each t: dt = delta[:, t, :, None]; A_bar = exp(dt * A); "
               "B_bar = dt * B[:, t, None, :]; h = A_bar * h + B_bar * x[:, t, :, None]; "
               "y_t = (h * C[:, t, None, :]).sum(-1) + D * x[:, t]. Stack the y_t on dim 1.")
def check_selective_scan(learner):
    cases = _cases(torch.Generator().manual_seed(14))
    variants = {
        "raw_A": lambda *a: _scan_variant(*a, a_bar="raw"),
        "no_delta_in_A": lambda *a: _scan_variant(*a, a_bar="no_delta"),
        "no_delta_in_B": lambda *a: _scan_variant(*a, delta_on_B=False),
        "state_not_carried": lambda *a: _scan_variant(*a, carry=False),
        "output_before_update": lambda *a: _scan_variant(*a, read_before=True),
        "swapped_B_C": lambda *a: _scan_variant(*a, swap=True),
        "no_skip": lambda *a: _scan_variant(*a, skip=False),
    }
    return grade_function(learner, cases, selective_scan_reference, variants, ("x", "delta", "A", "B", "C", "D"))
