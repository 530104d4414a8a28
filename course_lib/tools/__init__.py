"""Tools that build and check the course's notebooks. They work on the repository's files, so
they need a source checkout of the course; `repo_root` finds it or says how to get one."""
from __future__ import annotations

from pathlib import Path

_CHECKOUT_MARKERS = ("pyproject.toml", "notebooks", "solutions", "scripts")


class NotACheckout(RuntimeError):
    """course_lib runs from an installed copy, away from the course's notebooks."""


def repo_root() -> Path:
    """The root of the source checkout this course_lib belongs to."""
    root = Path(__file__).resolve().parents[2]
    if all((root / marker).exists() for marker in _CHECKOUT_MARKERS):
        return root
    from course_lib import REPO_URL
    raise NotACheckout(
        f"course_lib runs from {root / 'course_lib'}, which is not inside a source checkout of the course "
        f"(no {', '.join(m for m in _CHECKOUT_MARKERS if not (root / m).exists())} next to it). The course "
        f"tools and the course map read the repository's notebooks: clone it (git clone {REPO_URL}), "
        "then install it editable from inside the clone (python -m pip install -e .).")
