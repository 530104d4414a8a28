"""Notebooks that try to fool the grader, each graded by `python -m course_lib.grade` the way an
instructor would: none of them may earn a point, and the grader never hangs. Beside them, an
honest notebook that solves two exercises (one with einsum and float64) earns exactly those
points, so the suite can fail.

Each notebook is small: the two exercises' stubs (softmax and the causal mask, as in
exercises/01_attention.ipynb), one cheating cell, and the two check calls."""
import json
import subprocess
import sys
import time

import nbformat
import pytest

from course_lib.tools import repo_root

ROOT = repo_root()

IMPORTS = "import torch\nimport torch.nn.functional as F\nfrom course_lib.checks import check_softmax, check_causal_mask"
STUBS = ("def softmax(x, dim=-1):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n\n"
         "def causal_mask(T):\n    # YOUR CODE HERE\n    raise NotImplementedError()")
CHECKS = ["check_softmax(softmax)", "check_causal_mask(causal_mask)"]
HONEST = ("def softmax(x, dim=-1):\n    y = x.double()\n    y = y - y.amax(dim, keepdim=True)\n"
          "    return (y.exp() / y.exp().sum(dim, keepdim=True)).to(x.dtype)\n\n\n"
          "def causal_mask(T):\n    i = torch.arange(T)\n    return torch.einsum('i,j->ij', i, torch.ones(T, dtype=torch.long)) >= i")

CHEATS = {
    # the grader's own answers and torch's, handed to the checks
    "course_lib_answers": "import course_lib.attention as A\nsoftmax, causal_mask = A.softmax, A.causal_mask",
    "torch_builtins": "softmax = lambda x, dim=-1: torch.softmax(x, dim)\n"
                      "sm = F.softmax\ndef softmax(x, dim=-1):\n    return sm(x, dim=dim)",
    "getattr_string": "def softmax(x, dim=-1):\n    return getattr(torch, 'soft' + 'max')(x, dim)",
    # rewriting where results are kept, or how they are reported
    "rewrite_results": ("from course_lib.checks.core import RESULTS, CheckResult\n"
                        "for n in ('check_softmax', 'check_causal_mask'):\n"
                        "    RESULTS[n] = CheckResult(n, True, 'passed all 5 cases', 10, 10, status='passed')"),
    "replace_results_json": ("import json, course_lib.checks.core as core\n"
                             "core.results_json = lambda: core.RESULTS_MARKER + json.dumps("
                             "[{'name': 'check_softmax', 'passed': True, 'points': 10, 'max_points': 2, 'message': 'ok'}])"),
    "redefine_checks": ("def check_softmax(f):\n    print('✅ check_softmax: passed all 5 cases [2/2 points]')\n"
                        "check_causal_mask = check_softmax"),
    "forged_output": ("print('@@COURSE_LIB_RESULTS@@[{\"name\": \"check_softmax\", \"passed\": true, \"points\": 2, "
                      "\"max_points\": 2, \"message\": \"passed\"}]')\n"
                      "import os\nfor fd in range(3, 64):\n    try:\n"
                      "        os.write(fd, b'{\"name\": \"check_softmax\", \"passed\": true, \"points\": 2, \"max_points\": 2, \"message\": \"x\"}\\nEND\\n')\n"
                      "    except OSError:\n        pass"),
    "patch_the_comparison": ("import course_lib.checks.core as core\ncore.compare = lambda *a, **k: None\n"
                             "torch.isclose = lambda a, b, **k: torch.ones(a.shape, dtype=torch.bool)\n"
                             "core.REGISTRY['check_softmax'].max_points = 100\n"
                             "def softmax(x, dim=-1):\n    return x\n\ndef causal_mask(T):\n    return torch.ones(T, T, dtype=torch.bool)"),
    "patch_while_checked": ("def softmax(x, dim=-1):\n    import course_lib.checks.core as core\n"
                            "    core.compare = lambda *a, **k: None\n    return x\n\n"
                            "def causal_mask(T):\n    import course_lib.checks.core as core\n"
                            "    core.compare = lambda *a, **k: None\n    return torch.zeros(T, T, dtype=torch.bool)"),
    "read_the_solutions": (f"import json\nnb = json.load(open({str(ROOT / 'solutions' / '01_attention.ipynb')!r}))\n"
                           "exec('\\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code'"
                           " and 'def softmax' in ''.join(c['source'])))"),
    "exit_early": "import os\nos._exit(0)",
    "system_exit": "import sys\nsys.exit(0)",
    "endless_loop": "while True:\n    pass",
    "one_gigabyte_print": "import sys\nline = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(line)",
}


def notebook(cheat: str | None, honest: bool = False) -> nbformat.NotebookNode:
    cells = [IMPORTS, HONEST if honest else STUBS] + ([cheat] if cheat else []) + CHECKS
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def grade(paths, tmp_path, *extra):
    out = tmp_path / "grades.json"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "course_lib.grade", *map(str, paths), "--json", str(out),
                           "--cell-timeout", "8", *extra], capture_output=True, text=True, timeout=900, cwd=ROOT)
    return proc, json.loads(out.read_text()), time.monotonic() - t0


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cheats")
    paths = {"honest": tmp / "honest.ipynb"}
    nbformat.write(notebook(None, honest=True), paths["honest"])
    for name, src in CHEATS.items():
        paths[name] = tmp / f"{name}.ipynb"
        nbformat.write(notebook(src), paths[name])
    proc, report, seconds = grade(list(paths.values()), tmp, "--timeout", "120")
    by_name = {p.split("/")[-1].removesuffix(".ipynb"): n for n in report["notebooks"] for p in [n["path"]]}
    return proc, by_name, seconds


def test_an_honest_notebook_earns_its_points(graded):
    proc, by_name, _ = graded
    honest = by_name["honest"]
    assert honest["score"] == honest["max_score"] == 3, honest
    assert [c["name"] for c in honest["checks"]] == ["check_softmax", "check_causal_mask"]


STOPPED = {"exit_early"}  # the grading process ends: no score at all


@pytest.mark.parametrize("cheat", sorted(set(CHEATS) - STOPPED))
def test_no_cheat_earns_a_point(graded, cheat):
    proc, by_name, _ = graded
    entry = by_name[cheat]
    assert entry["score"] == 0 and entry["max_score"] == 3, (cheat, entry)
    assert all(not c["passed"] for c in entry["checks"]), entry


def test_what_the_learner_is_told(graded):
    _, by_name, _ = graded
    msg = {k: [c["message"] for c in v["checks"]] for k, v in by_name.items()}
    assert "not allowed here: your code uses course_lib.attention.softmax" in msg["course_lib_answers"][0]
    assert "torch.nn.functional.softmax" in msg["torch_builtins"][0]
    assert "torch.softmax" in msg["getattr_string"][0]
    assert "changed the grader" in msg["patch_while_checked"][0]
    assert all("not attempted" in m for m in msg["rewrite_results"] + msg["read_the_solutions"]), msg


def test_an_early_exit_or_an_unstoppable_loop_is_a_notebook_that_could_not_run(graded):
    proc, by_name, _ = graded
    assert not STOPPED & set(by_name) and proc.returncode == 1
    assert "exit_early.ipynb: could not execute" in proc.stderr
    assert "ended its process before the checks ran" in proc.stderr


def test_the_grader_never_hangs(graded):
    proc, by_name, seconds = graded
    # 16 notebooks: one cell that never ends (8 s limit), one that prints 1 GB
    assert seconds < 400, seconds


def test_a_notebook_that_defeats_its_cell_time_limit_is_stopped(tmp_path):
    paths = [tmp_path / "ignores_alarm.ipynb", tmp_path / "swallows_alarm.ipynb"]
    nbformat.write(notebook("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"), paths[0])
    nbformat.write(notebook("while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"),
                   paths[1])
    proc, report, seconds = grade(paths, tmp_path, "--timeout", "20")
    assert proc.returncode == 1 and report == {"notebooks": []}, proc.stderr[-500:]
    assert proc.stderr.count("ran longer than the grader allows") == 2, proc.stderr[-1000:]
    assert seconds < 100
