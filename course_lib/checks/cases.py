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


# ------------------------------------------------------------------ a learner's torch.autograd.Function
def function_class(learner, what: str) -> type:
    """The learner's class itself, a torch.autograd.Function subclass; anything else is a verdict."""
    if not (isinstance(learner, type) and issubclass(learner, torch.autograd.Function)):
        got = learner.__name__ if isinstance(learner, type) else type(learner).__name__
        raise Mismatch(f"pass the class itself ({what}), a subclass of torch.autograd.Function; got {got}")
    return learner


def through_engine(cls: type, inputs: tuple, grad_out: torch.Tensor):
    """y = cls.apply(*inputs), then autograd's engine calls cls.backward with grad_out.
    Returns (y, what backward returned), read by a spy subclass before the engine checks it."""
    returned = []

    def backward(ctx, *grads):
        out = cls.backward(ctx, *grads)
        returned.append(out)
        return out

    spy = type(cls.__name__, (cls,), {"backward": staticmethod(backward)})
    y = spy.apply(*inputs)
    if not isinstance(y, torch.Tensor):
        return y, None
    leaves = [a for a in inputs if isinstance(a, torch.Tensor)]
    try:
        torch.autograd.grad(y, leaves, grad_out, allow_unused=True)
    except Exception:  # noqa: BLE001 - the engine refuses a malformed result; judge what backward returned
        if not returned:
            raise
    return y.detach(), (returned[0] if returned else None)


def gradcheck(cls: type, inputs: tuple) -> bool:
    """torch.autograd.gradcheck of cls.apply (float64 inputs): backward against finite differences."""
    return torch.autograd.gradcheck(cls.apply, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=False)
