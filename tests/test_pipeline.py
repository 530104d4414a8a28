"""The course's conventions, enforced: exercises are generated from solutions, notebooks are
paired with py:percent scripts, every notebook starts with the current Colab cells, README's
course map is current, CI runs README's test command, and the grader scores notebooks."""
import json
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from course_lib.course_map import LESSONS, markdown_table
from course_lib.tools import repo_root
from course_lib.tools.build_exercises import strip_solutions, to_exercise
from course_lib.tools.colab import COLAB_TAG, badge_markdown, setup_code
from course_lib.tools.notebooks import formats, twins

ROOT = repo_root()


BOOKS = sorted(p for d in ("notebooks", "solutions", "exercises") for p in (ROOT / d).glob("*.ipynb"))
REL = [str(p.relative_to(ROOT)) for p in BOOKS]


def cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_notebooks():
    assert {"notebooks/00_start_here.ipynb", "notebooks/01_attention.ipynb",
            "solutions/01_attention.ipynb", "exercises/01_attention.ipynb"} <= set(REL)


def test_strip_solutions_keeps_indentation_and_code_around():
    src = ("def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\n"
           "check_f(f)")
    out = strip_solutions(src)
    assert out == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\ncheck_f(f)"
    with pytest.raises(ValueError, match="unbalanced"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")


@pytest.mark.parametrize("sol", sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_exercise_is_what_the_build_produces(sol):
    built = to_exercise(nbformat.read(sol, as_version=4), f"exercises/{sol.name}")
    committed = nbformat.read(ROOT / "exercises" / sol.name, as_version=4)
    assert cells(committed) == cells(built), (
        f"exercises/{sol.name} is stale: run `python -m course_lib.tools.build_exercises`")
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in json.dumps(committed.cells)


@pytest.mark.parametrize("rel", REL)
def test_notebook_and_its_py_percent_script_are_in_sync(rel):
    nb = nbformat.read(ROOT / rel, as_version=4)
    assert nb.metadata.get("jupytext", {}).get("formats") == formats(rel.split("/")[0])
    script = twins(ROOT / rel)[1]
    assert script.exists(), f"{rel} has no paired script; run `python -m course_lib.tools.notebooks`"
    assert cells(jupytext.read(script)) == cells(nb), (
        f"{rel} and {script.relative_to(ROOT)} differ: run `jupytext --sync {rel}`")


def test_jupytext_itself_pairs_each_notebook_with_its_script_under_scripts():
    from jupytext.paired_paths import paired_paths
    for rel in REL:
        nb = nbformat.read(ROOT / rel, as_version=4)
        paths = [p for p, _ in paired_paths(str(ROOT / rel), "ipynb", nb.metadata["jupytext"]["formats"])]
        assert paths == [str(ROOT / rel), str(twins(ROOT / rel)[1])]


def test_learners_see_one_entry_per_lesson():
    """notebooks/ and exercises/ hold only notebooks; every script is under scripts/."""
    for folder in ("notebooks", "exercises", "solutions"):
        entries = sorted(p.name for p in (ROOT / folder).iterdir() if not p.name.startswith("."))
        assert entries and all(e.endswith(".ipynb") for e in entries), (folder, entries)
        scripts = sorted(p.stem for p in (ROOT / "scripts" / folder).glob("*.py"))
        assert scripts == sorted(e[:-len(".ipynb")] for e in entries), folder


def test_twins_names_both_sides_and_rejects_other_paths():
    nb, script = twins(ROOT / "scripts" / "solutions" / "01_attention.py")
    assert nb == ROOT / "solutions" / "01_attention.ipynb"
    assert twins(nb) == (nb, script)
    with pytest.raises(ValueError, match="not a course notebook"):
        twins(ROOT / "course_lib" / "attention.py")


@pytest.mark.parametrize("rel", REL)
def test_every_notebook_starts_with_the_current_colab_cells(rel):
    nb = nbformat.read(ROOT / rel, as_version=4)
    badge, setup = nb.cells[0], nb.cells[1]
    assert badge.source == badge_markdown(rel) and COLAB_TAG in badge.metadata.get("tags", [])
    assert setup.source == setup_code() and COLAB_TAG in setup.metadata.get("tags", [])
    assert sum(COLAB_TAG in c.metadata.get("tags", []) for c in nb.cells) == 2


@pytest.mark.parametrize("rel", [r for r in REL if not r.startswith("exercises")])
def test_lessons_and_solutions_store_real_outputs_without_errors(rel):
    nb = nbformat.read(ROOT / rel, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{rel} was not executed top to bottom"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


def test_readme_course_map_is_current():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's course map is stale: run `python -m course_lib.tools.notebooks --no-run` or paste course_lib.course_map.markdown_table()"


def test_course_map_lists_every_lesson_and_exercise():
    listed = {l.lesson for l in LESSONS} | {l.exercise for l in LESSONS if l.exercise}
    assert set(r for r in REL if not r.startswith("solutions")) <= listed


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")  # join continued lines
    test_cmd = [l for l in ci.splitlines() if "pytest" in l and not l.startswith("#")]
    assert test_cmd and test_cmd[0].strip() in readme, "CI's first pytest line must be README's test command"
    others = test_cmd[1:]
    assert any("ATEN_CPU_CAPABILITY=default" in l and "pytest notebooks solutions" in l for l in others), (
        "CI re-runs the notebooks on a non-native CPU path")
    assert all("-m browser" in l or "ATEN_CPU_CAPABILITY=default" in l for l in others), (
        "other pytest lines in CI are the non-native notebook run and the browser subset")
    assert "python -m pytest -m browser tests/browser -p no:xdist" in readme
    assert "torch==2.13.0" in ci


def _grade(paths, tmp_path):
    out = tmp_path / "grades.json"
    proc = subprocess.run([sys.executable, "-m", "course_lib.grade", *map(str, paths), "--json", str(out)],
                          capture_output=True, text=True, timeout=2400, cwd=ROOT)  # 30 notebooks, a training run
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_grader_gives_solutions_full_marks_and_fresh_exercises_zero(tmp_path):
    sols = sorted((ROOT / "solutions").glob("*.ipynb"))
    exes = [ROOT / "exercises" / p.name for p in sols]
    proc, report = _grade(sols + exes, tmp_path)
    assert proc.returncode == 0, proc.stderr
    by_path = {Path(n["path"]).resolve(): n for n in report["notebooks"]}
    for s, e in zip(sols, exes):
        sol, ex = by_path[s.resolve()], by_path[e.resolve()]
        assert sol["max_score"] > 0 and sol["score"] == sol["max_score"], sol
        assert ex["score"] == 0 and ex["max_score"] == sol["max_score"]
        # a stub reads "not attempted"; a check whose inputs come from earlier stubs says which part
        # to write first (the capstone's generate needs your KVCache; its last check needs part 7's model)
        assert all(c["points"] == 0 and any(w in c["message"] for w in ("not attempted", "not written yet",
                                                                          "not reached"))
                   for c in ex["checks"]), ex["checks"]
        assert sum("not attempted" in c["message"] for c in ex["checks"]) >= len(ex["checks"]) - 2
        assert {"name", "passed", "points", "max_points", "message"} == set(ex["checks"][0])


def test_grader_scores_a_partly_done_notebook_and_survives_errors(tmp_path):
    nb = nbformat.read(ROOT / "exercises" / "01_attention.ipynb", as_version=4)
    for c in nb.cells:  # the learner solves softmax, and breaks a cell with a syntax error
        if "def softmax(" in c.source:  # part 1 (not part 5's softmax_backward)
            c.source = c.source.replace("# YOUR CODE HERE\n    raise NotImplementedError()",
                                        "e = (x - x.amax(dim, keepdim=True)).exp()\n    return e / e.sum(dim, keepdim=True)")
        if "def causal_mask" in c.source:
            c.source = "def causal_mask(T:\n" + c.source
    path = tmp_path / "learner.ipynb"
    nbformat.write(nb, path)
    proc, report = _grade([path], tmp_path)
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in report["notebooks"][0]["checks"]}
    assert checks["check_softmax"]["passed"] and report["notebooks"][0]["score"] == 2
    assert not checks["check_causal_mask"]["passed"]


def test_grader_fails_only_when_a_notebook_cannot_run(tmp_path):
    bad = tmp_path / "broken.ipynb"
    bad.write_text("{ not json")
    proc, report = _grade([bad, tmp_path / "missing.ipynb"], tmp_path)
    assert proc.returncode == 1
    assert "broken.ipynb: could not execute" in proc.stderr and "missing.ipynb" in proc.stderr
    assert report == {"notebooks": []}
