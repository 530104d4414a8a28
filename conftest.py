"""Root pytest set-up, loaded for any pytest run in this repository (notebooks alone too):
notebooks run headless (widgets store a static figure that nbval can compare), and the run
ends with each notebook's total time."""
import importlib.util
import os
from collections import defaultdict

_missing = [m for m in ("nbval", "xdist", "jupytext") if importlib.util.find_spec(m) is None]
if _missing:  # pyproject's addopts use --nbval; without it pytest would only say "unrecognized arguments"
    raise ImportError(f"the tests need the development tools ({', '.join(_missing)} missing); "
                      'install them with: python -m pip install -e ".[dev]"')

from course_lib.tools.kernel import HEADLESS_ENV  # noqa: E402  (after the check above)

for _key, _value in HEADLESS_ENV.items():  # the same headless set-up as the build and the grader
    os.environ.setdefault(_key, _value)

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

# nbval compares numbers in cells that carry `tolerance` metadata within that tolerance
# (course_lib/tools/tolerance.py; README, "For contributors").
pytest_plugins = ["course_lib.tools.tolerance"]
