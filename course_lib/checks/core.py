"""The grading framework every exercise uses.

A check runs the learner's code on seeded cases, compares with the course_lib
reference at a tolerance that scales with the dtype, and returns a `CheckResult`.
It never raises because of the learner's code: their exception becomes a failed
result that shows *their* frames of the traceback.

When the output is wrong, the check tries each known misconception (a small function
that reproduces the mistake) and names the one the learner's output matches.
"""
from __future__ import annotations

import inspect
import json
import os
import signal
import threading
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch

from .delegation import Rules

_CHECKS_DIR = os.path.dirname(os.path.abspath(__file__))
_QUIET = False  # set by tests to keep their output short

# last result per check name, read by `python -m course_lib.grade`
RESULTS: dict[str, "CheckResult"] = {}
# every check the course knows: name -> Check (filled by @register)
REGISTRY: dict[str, "Check"] = {}


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str  # one line: the verdict and, when failed, why
    points: int
    max_points: int
    status: str = "failed"  # passed | failed | not_attempted
    detail: str = ""  # more lines: a traceback, the failing case, a hint
    misconception: str | None = None  # key of the diagnosed misconception, if any
    cases: int = 0

    def __repr__(self) -> str:
        return f"<CheckResult {self.name}: {self.status}, {self.points}/{self.max_points} points>"

    def _ipython_display_(self):  # the check already printed its verdict
        pass

    def as_dict(self) -> dict:
        return asdict(self)


class NotAttempted(Exception):
    pass


class LearnerError(Exception):
    """The learner's code raised; `.report` holds their frames of the traceback."""

    def __init__(self, exc: BaseException):
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if not os.path.abspath(f.filename).startswith(_CHECKS_DIR)]
        lines = traceback.format_list(frames[-8:]) if frames else []
        lines += traceback.format_exception_only(type(exc), exc)
        self.exc = exc
        self.summary = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:200]
        self.report = "Traceback (your code):\n" + "".join(lines).rstrip()
        super().__init__(self.summary)


class Mismatch(Exception):
    """The learner's output is wrong; carries the one-line reason and details."""

    def __init__(self, reason: str, detail: str = "", misconception: str | None = None):
        super().__init__(reason)
        self.reason, self.detail, self.misconception = reason, detail, misconception


class TooSlow(Exception):
    """Raised inside the learner's code when a call runs past the check's time limit."""


# the check now running: its forbid rules and time limit, read by call_learner
_ACTIVE: dict[str, Any] = {}


@contextmanager
def _time_limit(seconds: float | None):
    """Interrupt the learner's code after `seconds` (POSIX main thread; elsewhere no limit)."""
    usable = (seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if not usable:
        yield
        return

    def stop(signum, frame):
        raise TooSlow(f"did not finish within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)  # and again every 0.5 s, should their code catch it
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def call_learner(fn: Callable, *args, **kwargs):
    """Call learner code; NotImplementedError -> NotAttempted, anything else -> LearnerError.

    While it runs, the check's forbidden functions are watched (a call from the learner's code
    fails the check) and a time limit applies (an endless loop becomes a failed verdict)."""
    rules, learner = _ACTIVE.get("rules"), _ACTIVE.get("learner", fn)
    try:
        with _time_limit(_ACTIVE.get("timeout")):
            if rules:
                with rules.watch(learner) as tripped:
                    out = fn(*args, **kwargs)
                if tripped:
                    raise Delegates(tripped, rules)
                return out
            return fn(*args, **kwargs)
    except (NotAttempted, Delegates):
        raise
    except NotImplementedError as exc:
        raise NotAttempted() from exc
    except TooSlow as exc:
        raise Mismatch(f"your code {exc}: look for a loop that never ends (or make it faster)") from None
    except Exception as exc:  # noqa: BLE001 - the learner's exception, reported not raised
        raise LearnerError(exc) from exc


class Delegates(Exception):
    """The learner's code used something the exercise asks them to write themselves."""

    def __init__(self, used: list[str], rules: Rules):
        self.used, self.rules = used, rules
        super().__init__(", ".join(used))


# ------------------------------------------------------------------ tolerances and comparison
# torch.testing.assert_close's defaults, times a margin so that a correct implementation
# that reduces in another order (einsum, float64 inside, fused kernels) still passes.
_TOL = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5),
        torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}
MARGIN = 10.0


def tolerances(dtype: torch.dtype) -> tuple[float, float]:
    rtol, atol = _TOL.get(dtype, (0.0, 0.0))
    return rtol * MARGIN, atol * MARGIN


def _same_nan_aware(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Close where finite, identical NaN/inf pattern elsewhere (used to match misconceptions)."""
    if a.shape != b.shape:
        return False
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    rtol, atol = tolerances(a.dtype)
    return bool(torch.isclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True).all())


def compare(actual: Any, expected: torch.Tensor, what: str = "output") -> None:
    """Raise Mismatch with a learner-readable reason if `actual` is not `expected`."""
    if not isinstance(actual, torch.Tensor):
        hint = " (did you forget a `return`?)" if actual is None else ""
        raise Mismatch(f"{what} should be a torch.Tensor, got {type(actual).__name__}{hint}")
    if actual.shape != expected.shape:
        raise Mismatch(f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        raise Mismatch(f"{what} has dtype {actual.dtype}, expected {expected.dtype}")
    if actual.device != expected.device:
        raise Mismatch(f"{what} is on {actual.device}, expected {expected.device}")
    if expected.dtype == torch.bool or not expected.is_floating_point():
        if not torch.equal(actual, expected):
            n = int((actual != expected).sum())
            raise Mismatch(f"{what} differs from the reference in {n} of {expected.numel()} entries")
        return
    bad = ~torch.isfinite(actual) & torch.isfinite(expected)
    if bad.any():
        kind = "NaN" if torch.isnan(actual[bad]).any() else "inf"
        raise Mismatch(f"{what} contains {kind} where the reference is finite "
                       f"({int(bad.sum())} of {actual.numel()} entries)")
    rtol, atol = tolerances(expected.dtype)
    a64, e64 = actual.detach().double(), expected.detach().double()
    close = torch.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True)
    if not close.all():
        err = (a64 - e64).abs().nan_to_num(0.0).max().item()
        raise Mismatch(f"{what} values differ from the reference (max abs error {err:.3g}; "
                       f"allowed {atol:.1g} + {rtol:.1g}·|expected|)")


def snapshot(args: Iterable) -> list:
    return [a.detach().clone() if isinstance(a, torch.Tensor) else None for a in args]


def assert_unmodified(args: Iterable, before: list, names: Iterable[str]) -> None:
    for a, b, n in zip(args, before, names):
        if b is not None and not torch.equal(a.detach(), b):
            raise Mismatch(f"your code modified its input `{n}` in place; compute a new tensor "
                           "instead (avoid `+=`, `.masked_fill_()`, `[...] =` on inputs)")


# ------------------------------------------------------------------ registration and reporting
@dataclass
class Check:
    name: str
    func: Callable
    max_points: int
    hint: str
    reference: Any  # shown by solution(name): the exercise's answer as code, with its imports
    misconceptions: dict[str, str] = field(default_factory=dict)  # key -> explanation
    idea: str = ""  # the second hint tier: hint(name, 2)
    forbid: Rules = field(default_factory=lambda: Rules(()))  # what the learner's code may not use
    timeout: float = 60.0  # seconds per call of the learner's code
    minutes: int = 0  # the expected time for a learner, stated in the exercise


DELEGATES = "delegates"  # the misconception key of a forbidden use


def register(name: str, *, points: int, hint: str, reference: Any,
             misconceptions: dict[str, str] | None = None, idea: str = "",
             forbid: tuple[str, ...] = (), timeout: float = 60.0, minutes: int = 0):
    """Decorator: turn `body(learner) -> (n_cases)` raising Mismatch into a public check.

    `hint` is the nudge (tier 1), `idea` the idea (tier 2), `reference` the code (tier 3,
    printed by solution(name)). `forbid` lists what the learner's code may not use (dotted
    names: functions, Tensor methods, classes, modules; see delegation.py). `timeout` is the
    time limit of each call of the learner's code; `minutes` the time a learner should expect."""

    def wrap(body: Callable):
        if name in REGISTRY and REGISTRY[name].func.__module__ != body.__module__:
            raise ValueError(f"{name} is already registered by {REGISTRY[name].func.__module__}: "
                             "choose another name for the new check (or reuse that one)")

        def check(learner: Any, *more: Any, quiet: bool = False, **options: Any) -> CheckResult:
            result = run(name, body, learner, *more, **options)
            RESULTS[name] = result
            if not (quiet or _QUIET):
                print(format_result(result))
            return result

        check.__name__ = check.__qualname__ = name
        check.__module__ = body.__module__
        check.__doc__ = f"Grade your implementation; prints a verdict and returns a CheckResult.\n\n{hint}"
        REGISTRY[name] = Check(name, check, points, hint, reference, dict(misconceptions or {}),
                               idea, Rules(forbid), timeout, minutes)
        return check

    return wrap


def _not_allowed(name: str, used: list[str], rules: Rules) -> CheckResult:
    return CheckResult(name, False, f"not allowed here: your code uses {', '.join(used)}; this exercise "
                       "asks you to write it yourself", 0, REGISTRY[name].max_points,
                       detail=f"Not allowed in this exercise: {rules.describe()}. Plain tensor "
                       "operations (+, *, @, exp, sum, max, ...) and your own helpers are fine.",
                       misconception=DELEGATES)


def run(name: str, body: Callable, learner: Any, *more: Any, **options: Any) -> CheckResult:
    spec = REGISTRY[name]
    pts = spec.max_points
    if learner is None:
        return CheckResult(name, False, "nothing to check: pass your function or class, "
                           f"e.g. {name}(my_function)", 0, pts)
    try:
        used = spec.forbid.static_uses(learner)
    except Exception:  # noqa: BLE001 - reading odd code must not break the check; watching still runs
        used = []
    if used:
        return _not_allowed(name, used, spec.forbid)
    try:
        inspect.signature(body).bind(learner, *more, **options)
    except TypeError as exc:
        return CheckResult(name, False, f"{name} was called with the wrong arguments ({exc}); see "
                           f"hint('{name}')", 0, pts)
    outer = dict(_ACTIVE)  # a check may run another (the capstone runs the component checks)
    _ACTIVE.clear()
    _ACTIVE.update(rules=spec.forbid, learner=learner, timeout=spec.timeout)
    try:
        n = body(learner, *more, **options)
    except Delegates as d:
        return _not_allowed(name, d.used, d.rules)
    except NotAttempted:
        return CheckResult(name, False, "not attempted yet: replace the "
                           "`raise NotImplementedError` line with your code", 0, pts,
                           status="not_attempted")
    except LearnerError as err:
        return CheckResult(name, False, f"your code raised {err.summary}", 0, pts, detail=err.report)
    except Mismatch as mm:
        misc = REGISTRY[name].misconceptions.get(mm.misconception or "", "")
        message = mm.reason if not misc else f"{mm.reason}. Likely cause: {misc}"
        return CheckResult(name, False, message, 0, pts, detail=mm.detail, misconception=mm.misconception)
    except Exception as exc:  # a grader bug must never look like the learner's fault
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return CheckResult(name, False, f"the checker itself failed ({type(exc).__name__}: {exc}); "
                           "please report this", 0, pts, detail=tb)
    finally:
        _ACTIVE.clear()
        _ACTIVE.update(outer)
    n, note = n if isinstance(n, tuple) else (n, "")  # a body may add a note: (n_cases, "half-split pairs")
    return CheckResult(name, True, f"passed all {n} cases" + (f" ({note})" if note else ""), pts, pts,
                       status="passed", cases=n)


def format_result(r: CheckResult) -> str:
    mark = {"passed": "✅", "not_attempted": "⏳"}.get(r.status, "❌")
    line = f"{mark} {r.name}: {r.message} [{r.points}/{r.max_points} points]"
    if r.detail:
        line += "\n" + "\n".join("   " + s for s in r.detail.splitlines())
    if r.status == "failed":
        line += f"\n   Need a nudge? hint('{r.name}')"
    return line


def diagnose(learner_outs: list, variants: dict[str, Callable[[], list]],
             reference_outs: list) -> str | None:
    """Name the misconception whose outputs equal the learner's on every case.

    `variants[key]()` returns the misconception's outputs for the same cases. A variant
    that equals the reference on all cases cannot be told apart, so it is skipped.
    """
    for key, make in variants.items():
        try:
            outs = make()
        except Exception:  # noqa: BLE001 - a variant that cannot run on a case just doesn't match
            continue
        if all(o.dtype == r.dtype and _same_nan_aware(o, r) for o, r in zip(outs, reference_outs)):
            continue
        if all(isinstance(l, torch.Tensor) and _same_nan_aware(l, o)
               for l, o in zip(learner_outs, outs)):
            return key
    return None


def hint(name: str, level: int = 1) -> None:
    """Print a hint of a check: hint('check_softmax') is a nudge, hint('check_softmax', 2) the
    idea; solution('check_softmax') prints the code."""
    name = name if name.startswith("check_") else f"check_{name}"
    if name not in REGISTRY:
        print(f"No check called {name!r}. Known: {', '.join(sorted(REGISTRY))}")
        return
    spec = REGISTRY[name]
    if level >= 2 and spec.idea:
        print(f"💡💡 {name}: {spec.idea}\n   Still stuck? solution('{name}') prints the code.")
    elif spec.idea:
        print(f"💡 {name}: {spec.hint}\n   More: hint('{name}', 2) gives the idea.")
    else:
        print(f"💡 {name}: {spec.hint}")


def solution(name: str) -> None:
    """Print the reference answer of a check, e.g. solution('check_softmax')."""
    name = name if name.startswith("check_") else f"check_{name}"
    if name not in REGISTRY:
        print(f"No check called {name!r}. Known: {', '.join(sorted(REGISTRY))}")
        return
    ref = REGISTRY[name].reference  # a lesson-level answer, runnable on its own (tests/test_printed_solutions.py)
    print((ref if isinstance(ref, str) else inspect.getsource(ref)).rstrip("\n"))


RESULTS_MARKER = "@@COURSE_LIB_RESULTS@@"


def results_json() -> str:
    """What the grader reads at the end of a notebook run."""
    return RESULTS_MARKER + json.dumps([r.as_dict() for r in RESULTS.values()])
