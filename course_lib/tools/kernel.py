"""Run a notebook top to bottom in a fresh, headless kernel: shared by the build (which stores
the outputs) and the grader (which collects check results). Needs only the core install
(nbformat and nbclient), not the build tools."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

# Widgets draw a static figure instead of waiting for a browser; plots render inline.
HEADLESS_ENV = {"COURSE_LIB_HEADLESS": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600,
            allow_errors: bool = False) -> nbformat.NotebookNode:
    """Execute `nb` in place with `cwd` as its working directory; `timeout` is per cell."""
    os.environ.update(HEADLESS_ENV)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb
