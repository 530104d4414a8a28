"""Validation helpers shared by every config dataclass: a bad value names itself,
says what was expected and how to fix it."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent with another one."""


def check_positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(
                f"{type(cfg).__name__}.{name}={value!r}: expected a positive integer "
                f"(e.g. {name}=4)."
            )


def check_range(cfg, name: str, low: float, high: float, high_inclusive: bool = True) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, (int, float)) and low <= value and (value <= high if high_inclusive else value < high)
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ConfigError(f"{type(cfg).__name__}.{name}={value!r}: expected a number in "
                          f"[{low}, {high}{bracket}.")


def is_exporting() -> bool:
    """True while torch.export traces a model (ONNX export, lesson 15). Checks that read tensor
    *values* (``int(ids.max())``) cannot be traced, so input validation skips them then."""
    import torch
    return bool(getattr(torch.compiler, "is_exporting", lambda: False)())
