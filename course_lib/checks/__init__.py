"""Graders for the exercises: ``check_<exercise>(your_code)``, ``hint(name)``, ``solution(name)``.

Every module in this package that registers checks is imported here, so a new lesson's
checks are importable as ``from course_lib.checks import check_...`` without editing this file.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .core import REGISTRY, RESULTS, CheckResult, hint, solution  # noqa: F401

for _mod in _pkgutil.iter_modules(__path__):
    if _mod.name not in ("core", "cases"):
        _importlib.import_module(f"{__name__}.{_mod.name}")

globals().update(REGISTRY_FUNCS := {name: c.func for name, c in REGISTRY.items()})
__all__ = ["REGISTRY", "RESULTS", "CheckResult", "hint", "solution", *sorted(REGISTRY_FUNCS)]
