"""Graders for the exercises: ``check_<exercise>(your_code)``, ``hint(name)``, ``solution(name)``."""
from .core import REGISTRY, RESULTS, CheckResult, hint, solution  # noqa: F401
from .attention import (  # noqa: F401
    check_causal_mask,
    check_multi_head_attention,
    check_scaled_dot_product_attention,
    check_softmax,
)
