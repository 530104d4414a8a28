"""Validation shared by every config dataclass: one helper per rule, one form of message.

Every message reads ``<Config>.<name>=<value>: expected <what>`` and ends with how to fix it,
so a learner who mistypes a size sees which field, what it should be and an example:

    check_positive(cfg, "d_model", "n_heads")      positive integers
    check_divisible(cfg, "d_model", "n_heads")     d_model % n_heads == 0
    check_choice(cfg, "norm", ("layernorm", ...))  one of a few names
    check_range(cfg, "dropout", 0.0, 1.0)          a number in [low, high] (or [low, high), (low, inf), ...)
    make_config(GPTConfig, config, overrides)      "pass a config or keyword overrides"
"""
from __future__ import annotations

import math


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent with another one."""


def _where(cfg, name: str) -> str:
    owner = cfg if isinstance(cfg, str) else type(cfg).__name__
    return f"{owner}.{name}"


def check_positive(cfg, *names: str, allow_none: bool = False) -> None:
    """Each named field is a positive integer (``allow_none``: or None, meaning "the default")."""
    for name in names:
        value = getattr(cfg, name)
        if allow_none and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{_where(cfg, name)}={value!r}: expected a positive integer "
                              f"(e.g. {name}=4).")


def check_positive_values(where: str, **values) -> None:
    """The same rule for function arguments: ``check_positive_values("llama_hidden_size", d_model=d)``."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {name}={value!r}: expected a positive integer (e.g. {name}=256).")


def check_divisible(cfg, name: str, by: str, *, why: str = "") -> None:
    """``getattr(cfg, name)`` is a multiple of ``getattr(cfg, by)`` (e.g. d_model by n_heads).
    ``why`` says in a few words what the division is for ("each head gets d_model // n_heads
    channels"); the message proposes the nearest multiple."""
    check_positive(cfg, name, by)  # a zero divisor would otherwise raise ZeroDivisionError
    value, divisor = getattr(cfg, name), getattr(cfg, by)
    if value % divisor:
        near = divisor * max(1, round(value / divisor))
        small = [d for d in range(1, math.isqrt(value) + 1) if value % d == 0]
        divisors = sorted({*small, *(value // d for d in small)})
        raise ConfigError(f"{_where(cfg, name)}={value} is not divisible by {by}={divisor}"
                          f"{': ' + why if why else ''}. Choose {name} as a multiple of {by} "
                          f"(e.g. {name}={near}) or {by} among the divisors of {value} "
                          f"({', '.join(map(str, divisors[:8]))}{', ...' if len(divisors) > 8 else ''}).")


def check_choice(cfg, name: str, choices, *, hint: str = "") -> None:
    """The named field is one of ``choices``; ``hint`` says which to pick when ("'pre' for GPT-2")."""
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{_where(cfg, name)}={value!r}: expected one of {tuple(choices)}"
                          f"{' (' + hint + ')' if hint else ''}.")


def check_range(cfg, name: str, low: float, high: float, high_inclusive: bool = True, *,
                low_inclusive: bool = True, integer: bool = False, hint: str = "") -> None:
    """The named field is a number in [low, high] (``high_inclusive=False``: [low, high);
    ``low_inclusive=False``: (low, ...). ``high=math.inf``: no upper bound, read as ">= low".
    ``integer``: an int (a token id, a count). ``hint`` says what to pick ("e.g. 10000.0")."""
    value = getattr(cfg, name)
    kinds = (int,) if integer else (int, float)
    ok = (isinstance(value, kinds) and not isinstance(value, bool)
          and (low <= value if low_inclusive else low < value)
          and (value <= high if high_inclusive else value < high))
    if not ok:
        what = "an integer" if integer else "a number"
        if high == math.inf:
            what += f" {'>=' if low_inclusive else '>'} {low}"
        else:
            what += f" in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ConfigError(f"{_where(cfg, name)}={value!r}: expected {what}{' (' + hint + ')' if hint else ''}.")


def make_config(cls, config, overrides: dict, model: str | None = None):
    """The one rule every model constructor follows: ``Model(config)`` or ``Model(**overrides)``,
    never both. Returns the config to use."""
    model = model or cls.__name__.removesuffix("Config")
    a = "an" if cls.__name__[:1] in "AEIOU" else "a"  # an ExperimentConfig, a GPTConfig
    if config is None:
        return cls(**overrides)
    if not isinstance(config, cls):
        raise TypeError(f"{model} expects {a} {cls.__name__}, got {type(config).__name__}.")
    if overrides:
        raise TypeError(f"pass either {a} {cls.__name__} or keyword overrides to {model}, not both "
                        f"(got a config and {sorted(overrides)}); use dataclasses.replace(config, ...) "
                        "to change a field of a config.")
    return config


def is_tracing() -> bool:
    """True while torch.export or torch.compile traces a model (ONNX export in lesson 15,
    ``TrainConfig(fast=True)``). Checks that read tensor *values* (``int(ids.max())``) cannot be
    traced into a graph, so input validation skips them then; eager calls are always checked."""
    import torch
    compiler = torch.compiler
    return bool(getattr(compiler, "is_exporting", lambda: False)() or compiler.is_compiling())
