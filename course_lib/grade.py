"""Grade learner notebooks headlessly.

    python -m course_lib.grade exercises/01_attention.ipynb [more.ipynb ...] [--json grades.json]
    python -m course_lib.grade submissions/ --json grades.json --csv roster.csv

Each notebook runs top to bottom in a fresh kernel (a cell that raises does not stop
the run; each cell has a time limit). Every `check_*` result is collected; a check the
notebook calls but never reached counts as failed. Prints a score table and, with
--json, writes {"notebooks": [{"path", "score", "max_score", "checks": [...]}]}.
A folder argument grades every .ipynb under it. With --csv it also writes a roster: one row
per notebook (student, notebook, score, max_score, status, then one column of points per
check). The student is the folder the notebook sits in (submissions/alice/01_attention.ipynb
-> alice), or its file name when it lies directly in a folder given on the command line
(submissions/alice.ipynb -> alice).
Exits non-zero only when a notebook cannot be executed (missing, unreadable, kernel died);
a low score is not an error.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import nbformat

from course_lib.checks import REGISTRY
from course_lib.checks.core import RESULTS_MARKER
from course_lib.tools.kernel import execute

COLLECT = "from course_lib.checks.core import results_json as _r; print(_r())"


def called_checks(nb: nbformat.NotebookNode) -> list[str]:
    names = []
    for c in nb.cells:
        if c.cell_type == "code":
            for name in re.findall(r"\b(check_\w+)\s*\(", c.source):
                if name in REGISTRY and name not in names:
                    names.append(name)
    return names


def grade_notebook(path: Path, cell_timeout: int = 120) -> dict:
    nb = nbformat.read(path, as_version=4)
    expected = called_checks(nb)
    nb.cells.append(nbformat.v4.new_code_cell(COLLECT))
    execute(nb, path.parent.resolve(), timeout=cell_timeout, allow_errors=True)
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    if RESULTS_MARKER not in text:
        raise RuntimeError(f"{path}: the notebook ran but its check results could not be collected")
    found = {r["name"]: r for r in json.loads(text.split(RESULTS_MARKER, 1)[1].strip().splitlines()[0])}
    checks = []
    for name in expected + [n for n in found if n not in expected]:
        r = found.get(name) or {"name": name, "passed": False, "points": 0,
                                "max_points": REGISTRY[name].max_points,
                                "message": "not reached: a cell before this check raised or timed out"}
        checks.append({k: r[k] for k in ("name", "passed", "points", "max_points", "message")})
    return {"path": str(path), "score": sum(c["points"] for c in checks),
            "max_score": sum(c["max_points"] for c in checks), "checks": checks}


def expand(args: list[Path]) -> list[tuple[Path, str]]:
    """(notebook, student) for each argument; a folder stands for every .ipynb under it."""
    found = []
    for arg in args:
        if not arg.is_dir():
            found.append((arg, arg.resolve().parent.name))
            continue
        for nb in sorted(arg.rglob("*.ipynb")):
            if ".ipynb_checkpoints" not in nb.parts:
                found.append((nb, nb.stem if nb.parent == arg else nb.relative_to(arg).parts[0]))
    return found


def write_roster(rows: list[dict], path: Path) -> None:
    """One row per notebook: student, notebook, score, max_score, status, points per check."""
    names = list(dict.fromkeys(c["name"] for r in rows for c in r.get("checks", [])))
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook", "score", "max_score", "status", *names])
        for r in rows:
            points = {c["name"]: c["points"] for c in r.get("checks", [])}
            w.writerow([r["student"], r["notebook"], r.get("score", ""), r.get("max_score", ""),
                        r["status"], *(points.get(n, "") for n in names)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_lib.grade", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path, help="notebooks, or folders of them")
    ap.add_argument("--json", type=Path, help="write the scores as JSON to this file")
    ap.add_argument("--csv", type=Path, help="write a roster (one row per notebook) as CSV to this file")
    ap.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell (default 120)")
    args = ap.parse_args(argv)
    report, failed, roster = {"notebooks": []}, [], []
    for path, student in expand(args.notebooks):
        row = {"student": student, "notebook": path.name}
        roster.append(row)
        try:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such notebook")
            entry = grade_notebook(path, args.cell_timeout)
        except Exception as exc:  # noqa: BLE001 - reported per notebook, then exit 1
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
            print(f"ERROR {path}: could not execute: {why}", file=sys.stderr)
            failed.append(str(path))
            row["status"] = f"could not execute: {why}"
            continue
        report["notebooks"].append(entry)
        row.update(status="graded", score=entry["score"], max_score=entry["max_score"], checks=entry["checks"])
        print(f"\n{entry['path']}: {entry['score']}/{entry['max_score']}")
        for c in entry["checks"]:
            mark = "✅" if c["passed"] else "❌"
            print(f"  {mark} {c['name']:<40} {c['points']}/{c['max_points']}  {c['message'][:100]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.csv:
        write_roster(roster, args.csv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
