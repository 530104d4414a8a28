"""Build the course notebooks from their paired py:percent scripts.

    python -m course_lib.tools.notebooks [PATH ...]    # default: every lesson and solution

Each notebook `notebooks/01_attention.ipynb` is paired with the script
`scripts/notebooks/01_attention.py` (likewise `solutions/`, `exercises/`): the scripts give
reviewable diffs and live apart, so a learner's file browser shows one entry per lesson.
A PATH may name either twin. For each: put the current Colab badge and setup cell first, write
the `.ipynb`, execute it (so stored outputs are real outputs of the code), and write the script
back from the executed notebook so the pair is in sync. Then regenerate `exercises/` from
`solutions/` (course_lib.tools.build_exercises) and the course map in README.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat

try:
    import jupytext
except ModuleNotFoundError as exc:  # a build tool, not part of the core install
    raise ModuleNotFoundError('building the notebooks needs jupytext, one of the development tools; '
                              'install them with: python -m pip install -e ".[dev]"', name="jupytext") from exc

from course_lib.tools import repo_root
from course_lib.tools.colab import COLAB_TAG, badge_markdown, setup_code
from course_lib.tools.kernel import execute

ROOT = repo_root()
BOOKS = ("notebooks", "solutions", "exercises")  # folders of notebooks, each mirrored under scripts/
SCRIPTS = ROOT / "scripts"
KERNEL = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def formats(folder: str) -> str:
    """Jupytext pairing of `folder/X.ipynb` with `scripts/folder/X.py` (`jupytext --sync` follows it)."""
    return f"{folder}///ipynb,scripts/{folder}///py:percent"


def twins(path: Path) -> tuple[Path, Path]:
    """(notebook, script) for either twin, e.g. notebooks/01_attention.ipynb or
    scripts/notebooks/01_attention.py."""
    path = Path(path).resolve()
    rel = path.relative_to(SCRIPTS if path.is_relative_to(SCRIPTS) else ROOT)
    if len(rel.parts) != 2 or rel.parts[0] not in BOOKS:
        raise ValueError(f"{path}: not a course notebook or its script; expected "
                         f"notebooks/, solutions/ or exercises/ X.ipynb, or scripts/<that folder>/X.py")
    ipynb = ROOT / rel.parent / f"{rel.stem}.ipynb"
    return ipynb, SCRIPTS / rel.parent / f"{rel.stem}.py"


def with_header(nb: nbformat.NotebookNode, relpath: str) -> nbformat.NotebookNode:
    """Drop any old generated header cells and put the current two first."""
    cells = [c for c in nb.cells if COLAB_TAG not in c.get("metadata", {}).get("tags", [])]
    badge = nbformat.v4.new_markdown_cell(badge_markdown(relpath), metadata={"tags": [COLAB_TAG]})
    setup = nbformat.v4.new_code_cell(setup_code(), metadata={"tags": [COLAB_TAG]})
    nb.cells = [badge, setup] + cells
    nb.metadata["jupytext"] = {"formats": formats(relpath.split("/")[0])}
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    for c in nb.cells:  # stable ids keep diffs small
        c.pop("id", None)
    return nb


def normalise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:03d}"
        if c.cell_type == "code":
            c.metadata.pop("execution", None)
    return nb


def write_pair(nb: nbformat.NotebookNode, ipynb: Path) -> None:
    nb = normalise(nb)
    script = twins(ipynb)[1]
    script.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, ipynb)
    jupytext.write(nb, script, fmt="py:percent")


def build(path: Path, run: bool = True) -> float:
    ipynb, script = twins(path)
    nb = with_header(jupytext.read(script), str(ipynb.relative_to(ROOT)))
    start = time.perf_counter()
    if run:
        execute(nb, ipynb.parent)
    write_pair(nb, ipynb)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path,
                    help="notebooks or their py:percent scripts (default: all lessons and solutions)")
    ap.add_argument("--no-run", action="store_true", help="only refresh headers and pairs; keep no outputs")
    ap.add_argument("--only", action="store_true",
                    help="build only the given scripts (and the exercises of given solutions); leave the "
                         "start notebook and README's map alone, e.g. while several lessons are being written")
    args = ap.parse_args(argv)
    books = [twins(p)[0] for p in args.paths] or [
        twins(s)[0] for d in ("notebooks", "solutions") for s in sorted((SCRIPTS / d).glob("*.py"))]
    start_here = ROOT / "notebooks" / "00_start_here.ipynb"
    if not args.only and start_here not in books:
        books.append(start_here)  # it shows the course map, whose status changes with every lesson
    for b in books:
        secs = build(b, run=not args.no_run)
        print(f"{b.relative_to(ROOT)}: {secs:.1f} s", flush=True)
    from course_lib.tools.build_exercises import build_all
    only = {b.name for b in books if b.parent == ROOT / "solutions"} if args.only else None
    for p in build_all(only):
        print(f"wrote {p.relative_to(ROOT)}")
    if args.only:
        return 0
    if sync_readme_map():
        print("updated the course map in README.md")
    return 0


def sync_readme_map() -> bool:
    """Replace README's course-map table with course_lib.course_map.markdown_table()."""
    from course_lib.course_map import markdown_table
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("| # | lesson")
    end = text.find("\n\n", start)
    new = text[:start] + markdown_table() + (text[end:] if end != -1 else "\n")
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    sys.exit(main())
