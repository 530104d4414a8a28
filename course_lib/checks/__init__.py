"""Graders for the exercises: ``check_<exercise>(your_code)``, ``hint(name)``, ``solution(name)``.

Every module in this package that registers checks is imported here, so a new lesson's
checks are importable as ``from course_lib.checks import check_...`` without editing this file.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .core import REGISTRY, RESULTS, CheckResult, hint, solution  # noqa: F401

for _mod in _pkgutil.iter_modules(__path__):
    if _mod.name not in ("core", "cases", "delegation", "nudges"):
        _importlib.import_module(f"{__name__}.{_mod.name}")

from .nudges import NUDGES as _NUDGES  # noqa: E402

for _name, _nudge in _NUDGES.items():  # the lesson checks' hints become tier 2 behind a nudge
    _spec = REGISTRY.get(_name)
    if _spec is not None and not _spec.idea:
        _spec.idea, _spec.hint = _spec.hint, _nudge

globals().update(REGISTRY_FUNCS := {name: c.func for name, c in REGISTRY.items()})
__all__ = ["REGISTRY", "RESULTS", "CheckResult", "hint", "solution", *sorted(REGISTRY_FUNCS)]
