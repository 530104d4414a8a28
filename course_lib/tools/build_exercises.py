"""Generate learner notebooks from the solved ones: solutions/*.ipynb -> exercises/*.ipynb.

    python -m course_lib.tools.build_exercises

Inside a code cell, everything between `### BEGIN SOLUTION` and `### END SOLUTION` is
replaced by a stub that raises NotImplementedError (indented like the region); a cell
tagged `solution-only` (e.g. a demo that uses the solved function) is dropped; outputs
are cleared; the Colab badge points at the exercise. A test fails when the committed
exercises differ from what this produces.
"""
from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import nbformat

from course_lib.tools.notebooks import COLAB_TAG, ROOT, normalise, with_header, write_pair

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
_REGION = re.compile(rf"^([ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*(\n|$)",
                     re.MULTILINE | re.DOTALL)


def strip_solutions(source: str) -> str:
    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"unbalanced {BEGIN} / {END} markers in cell:\n{source}")

    def stub(m: re.Match) -> str:
        indent = m.group(1)
        return "".join(f"{indent}{line}\n" for line in STUB.splitlines())

    out = _REGION.sub(stub, source)
    return out.rstrip("\n") if not source.endswith("\n") else out


def rules_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """A table of the notebook's exercises: the expected time and what each may not use (from the
    checks' own `minutes` and `forbid`, so the table and the grader cannot disagree)."""
    from course_lib.checks import REGISTRY
    from course_lib.grade import called_checks

    names = called_checks(nb)
    if not names:
        return None
    rows = []
    for n in names:
        spec = REGISTRY[n]
        banned = ", ".join(f"`{b}`" for b in spec.forbid.names if b != "course_lib.checks") or "nothing"
        rows.append(f"| `{n}` | about {spec.minutes} min | {banned} |")
    total = sum(REGISTRY[n].minutes for n in names)
    return nbformat.v4.new_markdown_cell(
        f"**The exercises here** (about {total} minutes in all). Write each one yourself: the check "
        "refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) "
        "is off limits everywhere. Everything else in torch is yours to use.\n\n"
        "| check | expected time | may not use |\n|---|---|---|\n" + "\n".join(rows) +
        "\n\nStuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, "
        "`solution('check_…')` the code.")


def to_exercise(nb: nbformat.NotebookNode, relpath: str) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "solution-only" not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":
            c.source = strip_solutions(c.source)
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
    rules = rules_cell(nb)
    if rules is not None:  # after the title
        title = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                     and COLAB_TAG not in c.get("metadata", {}).get("tags", []))
        nb.cells.insert(title + 1, rules)
    return normalise(with_header(nb, relpath))


def build_all(names: set[str] | None = None) -> list[Path]:
    """Write exercises/X.ipynb (+ scripts/exercises/X.py) from every solutions/X.ipynb, or only those named."""
    written = []
    for sol in sorted((ROOT / "solutions").glob("*.ipynb")):
        if names is not None and sol.name not in names:
            continue
        target = ROOT / "exercises" / sol.name
        write_pair(to_exercise(nbformat.read(sol, as_version=4), f"exercises/{sol.name}"), target)
        written.append(target)
    return written


if __name__ == "__main__":
    for p in build_all():
        print(f"wrote {p.relative_to(ROOT)}")
    sys.exit(0)
