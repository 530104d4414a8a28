"""Build the course notebooks from their paired py:percent scripts.

    python -m course_lib.tools.notebooks [PATH ...]    # default: notebooks/ and solutions/

For each script (`notebooks/01_attention.py` ...): put the current Colab badge and setup
cell first, write the paired `.ipynb`, execute it (so stored outputs are real outputs of
the code), and write the script back from the executed notebook so the pair is in sync.
Then regenerate `exercises/` from `solutions/` (course_lib.tools.build_exercises) and the
course map in README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

from course_lib.tools.colab import COLAB_TAG, badge_markdown, setup_code

ROOT = Path(__file__).resolve().parents[2]
FORMATS = "ipynb,py:percent"
KERNEL = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
HEADLESS_ENV = {"COURSE_LIB_HEADLESS": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def with_header(nb: nbformat.NotebookNode, relpath: str) -> nbformat.NotebookNode:
    """Drop any old generated header cells and put the current two first."""
    cells = [c for c in nb.cells if COLAB_TAG not in c.get("metadata", {}).get("tags", [])]
    badge = nbformat.v4.new_markdown_cell(badge_markdown(relpath), metadata={"tags": [COLAB_TAG]})
    setup = nbformat.v4.new_code_cell(setup_code(), metadata={"tags": [COLAB_TAG]})
    nb.cells = [badge, setup] + cells
    nb.metadata["jupytext"] = {"formats": FORMATS}
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


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    os.environ.update(HEADLESS_ENV)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def write_pair(nb: nbformat.NotebookNode, ipynb: Path) -> None:
    nb = normalise(nb)
    nbformat.write(nb, ipynb)
    jupytext.write(nb, ipynb.with_suffix(".py"), fmt="py:percent")


def build(script: Path, run: bool = True) -> float:
    script = script.resolve()
    ipynb = script.with_suffix(".ipynb")
    nb = with_header(jupytext.read(script), str(ipynb.relative_to(ROOT)))
    start = time.perf_counter()
    if run:
        execute(nb, script.parent)
    write_pair(nb, ipynb)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="py:percent scripts (default: all lessons and solutions)")
    ap.add_argument("--no-run", action="store_true", help="only refresh headers and pairs; keep no outputs")
    ap.add_argument("--only", action="store_true",
                    help="build only the given scripts (and the exercises of given solutions); leave the "
                         "start notebook and README's map alone, e.g. while several lessons are being written")
    args = ap.parse_args(argv)
    scripts = args.paths or sorted((ROOT / "notebooks").glob("*.py")) + sorted((ROOT / "solutions").glob("*.py"))
    start_here = ROOT / "notebooks" / "00_start_here.py"
    if not args.only and start_here.resolve() not in [s.resolve() for s in scripts]:
        scripts.append(start_here)  # it shows the course map, whose status changes with every lesson
    for s in scripts:
        secs = build(s, run=not args.no_run)
        print(f"{s.relative_to(ROOT) if s.is_absolute() else s}: {secs:.1f} s", flush=True)
    from course_lib.tools.build_exercises import build_all
    only = {s.resolve().with_suffix(".ipynb").name for s in scripts
            if s.resolve().parent == ROOT / "solutions"} if args.only else None
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
