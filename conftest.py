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

# pytest -n N runs N workers at once. Each worker (and each notebook kernel it starts) would
# otherwise use every core, so N workers x all cores threads fight for the cores, and OpenMP's
# spin-waiting makes that several times slower than sharing them (measured: a 2-thread training
# step 6x slower beside another one, 2x with one thread each). So each worker gets its share.
# An explicit OMP_NUM_THREADS (CI's one-thread run) wins.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
    import torch  # noqa: E402

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

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
