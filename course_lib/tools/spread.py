"""How far a notebook's stored numbers move on other CPU code paths: the measurement behind
each cell's `tolerance` metadata (course_lib/tools/tolerance.py).

    python -m course_lib.tools.spread notebooks/10_training_a_gpt.ipynb [more.ipynb ...]
    python -m course_lib.tools.spread notebooks/13_experiments.ipynb --paths generic,threads1

Each notebook runs once per code path, each in a fresh kernel: `native` (this CPU as it is),
`avx2`, `generic` (no AVX: ATEN_CPU_CAPABILITY=default ...) and `threads1` (one thread). Every
cell whose output differs from the stored one is listed with the largest relative, absolute and
percentage-point moves of its numbers, whether the cell's tolerance covers them, and any line
whose *text* differs (no tolerance can cover that: make the output exact, e.g. a figure plus a
printed count). Exit status 1 when some difference is not covered.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import re

import nbformat

from course_lib.tools.notebooks import ROOT
from course_lib.tools.tolerance import KEY, Tolerance, _is_int, _split, _value, reconcile_text

PATHS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "generic": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "threads1": {"OMP_NUM_THREADS": "1"},
}
_RUN = ("import sys, nbformat; from pathlib import Path; from course_lib.tools.kernel import execute\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "execute(nb, Path(sys.argv[1]).resolve().parent, timeout=900, allow_errors=True)\n"
        "nbformat.write(nb, sys.argv[2])")


def sanitizers() -> list[tuple[str, str]]:
    """The test suite's own sanitising of times, addresses and ids (tests/nbval_sanitize.cfg)."""
    from nbval.plugin import get_sanitize_patterns
    return get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())


def cell_text(cell, patterns=()) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        for mime, value in (out.get("data") or {}).items():
            if mime == "text/plain" and isinstance(value, str):
                parts.append(value)
    text = "".join(parts)
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


def run_on(path: Path, env: dict, out: Path) -> nbformat.NotebookNode:
    proc = subprocess.run([sys.executable, "-c", _RUN, str(path), str(out)], env={**os.environ, **env},
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{path} did not run: {proc.stderr[-2000:]}")
    return nbformat.read(out, as_version=4)


def moves(stored: str, new: str) -> tuple[dict, list[str]]:
    """Largest moves of the numbers between two texts, and the lines whose text differs."""
    worst, text_lines = {"rel": 0.0, "abs": 0.0, "pct": 0.0, "ints": 0.0}, []
    s_lines, n_lines = stored.split("\n"), new.split("\n")
    if len(s_lines) != len(n_lines):
        return worst, [f"{len(s_lines)} lines stored, {len(n_lines)} now"]
    for s, n in zip(s_lines, n_lines):
        if s == n:
            continue
        (st, sn), (nt, nn) = _split(s), _split(n)
        if st != nt or len(sn) != len(nn):
            text_lines.append(f"stored: {s.strip()[:100]}\n        now:    {n.strip()[:100]}")
            continue
        for (a, pa), (b, _) in zip(sn, nn):
            if a == b:
                continue
            d = abs(_value(a) - _value(b))
            if pa:
                worst["pct"] = max(worst["pct"], d)
            elif _is_int(a) and _is_int(b):
                worst["ints"] = max(worst["ints"], d / max(abs(_value(a)), 1))
            else:
                worst["abs"] = max(worst["abs"], d)
                worst["rel"] = max(worst["rel"], d / abs(_value(a)) if _value(a) else float("inf"))
    return worst, text_lines


def covered(stored: str, new: str, spec) -> bool:
    """Would the test suite accept `new` for `stored` under this tolerance metadata?"""
    return stored == new or (spec is not None and
                             reconcile_text(stored, new, Tolerance.from_metadata(spec))[0] == stored)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_lib.tools.spread", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    args = ap.parse_args(argv)
    chosen = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PATHS]
    if unknown:
        ap.error(f"unknown code path(s) {unknown}; choose from {', '.join(PATHS)}")
    uncovered, patterns = 0, sanitizers()
    with tempfile.TemporaryDirectory() as tmp:
        for nb_path in args.notebooks:
            stored = nbformat.read(nb_path, as_version=4)
            runs = {p: run_on(nb_path, PATHS[p], Path(tmp) / f"{p}.ipynb") for p in chosen}
            print(f"\n{nb_path}: ran on {', '.join(chosen)}")
            for i, cell in enumerate(stored.cells):
                if cell.cell_type != "code":
                    continue
                ref, spec = cell_text(cell, patterns), cell.metadata.get(KEY)
                for path, nb in runs.items():
                    new = cell_text(nb.cells[i], patterns)
                    if new == ref:
                        continue
                    worst, text = moves(ref, new)
                    ok = covered(ref, new, spec)
                    uncovered += not ok
                    found = ", ".join(f"{k} {v:.2g}" for k, v in worst.items() if v)
                    print(f"  cell {i} on {path}: numbers moved by {found or 'nothing'}; tolerance {spec}: "
                          f"{'covered' if ok else 'NOT covered'}")
                    for line in text:
                        print(f"    text differs: {line}")
    return 1 if uncovered else 0


if __name__ == "__main__":
    sys.exit(main())
