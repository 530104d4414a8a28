"""Shared test set-up: headless notebooks, quiet checks, per-notebook durations."""
import os
from collections import defaultdict

os.environ.setdefault("COURSE_LIB_HEADLESS", "1")  # widgets also store a static figure
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

import pytest  # noqa: E402

_durations = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _durations[path] += report.duration


def pytest_terminal_summary(terminalreporter):
    if _durations:
        terminalreporter.section("notebook run times (nbval)")
        for path, secs in sorted(_durations.items()):
            terminalreporter.write_line(f"{secs:7.1f} s  {path}")
        terminalreporter.write_line(f"{sum(_durations.values()):7.1f} s  total")


@pytest.fixture
def quiet_checks(monkeypatch):
    from course_lib.checks import core
    monkeypatch.setattr(core, "_QUIET", True)
