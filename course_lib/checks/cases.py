"""Run a learner's *function* on cases and compare with the reference (shared by all
function-style checks)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .core import Mismatch, assert_unmodified, call_learner, compare, diagnose, snapshot


@dataclass
class Case:
    label: str  # shown to the learner when this case fails, e.g. "x of shape (2, 3), dim=0"
    args: tuple
    kwargs: dict = field(default_factory=dict)


def grade_function(learner: Callable, cases: list[Case], reference: Callable,
                   variants: dict[str, Callable], arg_names: tuple[str, ...]) -> int:
    """Compare `learner(*case.args, **case.kwargs)` with `reference(...)` on every case.

    On the first wrong case, raise Mismatch naming the case and, if the learner's outputs
    equal one of `variants` (misconceptions) on all cases, that misconception's key.
    Returns the number of cases when all pass.
    """
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    refs, outs = [], []
    for case in cases:
        refs.append(reference(*case.args, **case.kwargs))
        before = snapshot(case.args)
        outs.append(call_learner(learner, *case.args, **case.kwargs))
        try:
            assert_unmodified(case.args, before, arg_names)
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}", "mutates_input") from None
    for case, out, ref in zip(cases, outs, refs):
        try:
            compare(out, ref)
        except Mismatch as mm:
            runs = {k: (lambda v=v: [v(*c.args, **c.kwargs) for c in cases]) for k, v in variants.items()}
            key = diagnose(outs, runs, refs)
            raise Mismatch(mm.reason, f"case: {case.label}", key) from None
    return len(cases)


def randn(*shape, dtype=torch.float32, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)
