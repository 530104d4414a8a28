"""Each lesson notebook, the start notebook and one exercise, as a learner meets them in
JupyterLab: run all cells, no errors, every widget rendered (not "Loading widget…" nor a text
repr), one control per widget moved and its figure redrawn, screenshots saved."""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from course_lib.course_map import LESSONS
from course_lib.tools import repo_root
from lab_driver import WIDGET_MIME, Lab

ROOT = repo_root()


pytestmark = pytest.mark.browser

EXERCISE = "exercises/01_attention.ipynb"  # one exercise: its checks print verdicts in the browser
NOTEBOOKS = [l.lesson for l in LESSONS if (ROOT / l.lesson).exists()] + [EXERCISE]
ONLY = [s for s in os.environ.get("COURSE_BROWSER_NOTEBOOKS", "").split(",") if s.strip()]
if ONLY:
    NOTEBOOKS = [n for n in NOTEBOOKS if any(s.strip() in n for s in ONLY)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("rel", NOTEBOOKS)
def test_notebook_runs_and_its_widgets_respond(rel, lab_server, page, screenshot_dir):
    base, token = lab_server
    stem = rel.replace("/", "__").removesuffix(".ipynb")
    before = digest(ROOT / rel)
    lab = Lab(page, base, token, rel)
    start = time.monotonic()
    try:
        lab.open()
        result = lab.run_all(timeout_s=600)
        ran = time.monotonic() - start
        cells = lab.cells()

        # every code cell ran, top to bottom, and none raised
        assert result == "true", f"{rel}: 'Run All Cells' ended with {result}"
        counts = [c["count"] for c in cells]
        assert counts == list(range(1, len(cells) + 1)), f"{rel}: not every cell ran: {counts}"
        errors = [f"cell {c['count']}: {o['ename']}: {o['evalue']}" for c in cells for o in c["outputs"]
                  if o["type"] == "error"]
        assert not errors, f"{rel}: error outputs in the browser:\n" + "\n".join(errors)

        # every widget the kernel displayed is rendered by the front end
        expected = sum(WIDGET_MIME in o["mimes"] for c in cells for o in c["outputs"])
        views = lab.wait_rendered(expected)
        bad = [v for v in views if not v["rendered"] or "Loading widget" in v["text"]
               or "Error displaying widget" in v["text"] or re.match(r"[A-Z]\w*\(", v["text"])]
        assert len(views) == expected and not bad, (
            f"{rel}: {expected} widget outputs in the model, {len(views)} in the page, not rendered: {bad}")
        page.screenshot(path=str(screenshot_dir / f"{stem}.png"))

        # one control per widget changes what it shows
        moved = []
        for n in range(len(views)):
            lab.view(n).scroll_into_view_if_needed()
            lab.view(n).screenshot(path=str(screenshot_dir / f"{stem}-widget{n}-before.png"))
            what, no_effect = lab.move_a_control(n)
            has_controls = lab.view(n).locator("select, .noUi-handle, button, input").count() > 0
            assert what or not has_controls, (
                f"{rel}: moving widget {n}'s controls did not change its output (tried: {no_effect})")
            lab.view(n).screenshot(path=str(screenshot_dir / f"{stem}-widget{n}-after.png"))
            moved.append((what or "no controls (an output-only widget)")
                         + (f" (no visible change first from: {no_effect})" if no_effect else ""))

        if rel.startswith("exercises/"):  # each check call printed its verdict
            for c in cells:
                for name in re.findall(r"^(check_\w+)\(", c["source"], flags=re.M):
                    text = "".join(o["text"] for o in c["outputs"])
                    assert re.search(rf"{name}: .*\[\d+/\d+ points\]", text), f"{rel}: no verdict from {name}: {text!r}"
        print(f"\n{rel}: ran in {ran:.0f} s, {len(cells)} code cells, {len(views)} widgets; moved: {moved}; "
              f"screenshots {screenshot_dir}/{stem}*.png")
    except Exception:
        page.screenshot(path=str(screenshot_dir / f"{stem}-failure.png"))
        raise
    finally:
        try:
            lab.close_without_saving()
        except Exception as exc:  # noqa: BLE001 - do not hide the test's own failure
            print(f"could not close {rel} cleanly: {exc}")
    assert digest(ROOT / rel) == before, f"{rel} was modified on disk by the browser session"
