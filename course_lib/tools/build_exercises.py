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

from course_lib.tools.notebooks import ROOT, normalise, with_header, write_pair

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


def to_exercise(nb: nbformat.NotebookNode, relpath: str) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "solution-only" not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":
            c.source = strip_solutions(c.source)
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
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
