"""Two paths through every model, and the one switch between them.

Each component the lessons build by hand (softmax, attention, LayerNorm, RMSNorm, GELU, SiLU)
exists twice in course_lib:

  * the **from-scratch form**, written out as the lesson writes it (``attention.softmax``,
    ``norms.LayerNorm``'s mean/var/rsqrt, ``ffn.gelu_tanh``'s polynomial and tanh), which is
    the reference the lessons read and the checks grade against;
  * PyTorch's **fused kernel** for the same formula (``F.scaled_dot_product_attention``,
    ``F.layer_norm``, ``F.rms_norm``, ``F.gelu``, ``F.silu``): one call instead of a chain of
    element-wise operations, each of which would read and write the whole tensor again.

Models run the fused kernels by default. The tests prove both paths equal, forward and
gradients (float64 within 1e-12, float32 within 1e-6). To run a whole model on the lessons'
own code, wrap the call::

    from course_lib.kernels import from_scratch
    with from_scratch():
        logits = model(ids).logits      # every softmax, norm and activation is the hand-written one

``fused()`` tells a module which path to take. The switch is read at call time, so it also
covers a model built before the ``with`` block, and nesting ``from_scratch(False)`` inside
turns the kernels back on.
"""
from __future__ import annotations

from contextlib import contextmanager

_from_scratch = False


def fused() -> bool:
    """True when modules should call PyTorch's fused kernels (the default)."""
    return not _from_scratch


@contextmanager
def from_scratch(enabled: bool = True):
    """``with from_scratch():`` run every course_lib module on its from-scratch form."""
    global _from_scratch
    if not isinstance(enabled, bool):
        raise TypeError(f"from_scratch(enabled) takes True or False, got {enabled!r}.")
    previous, _from_scratch = _from_scratch, enabled
    try:
        yield
    finally:
        _from_scratch = previous
