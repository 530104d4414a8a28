"""What a learner sees in JupyterLab's file browser: notebooks/ and exercises/ list one entry
per lesson (the paired py:percent scripts live under scripts/), each opening as a notebook."""
from __future__ import annotations

import pytest

from course_lib.tools import repo_root

ROOT = repo_root()


pytestmark = pytest.mark.browser

_ITEMS = """() => [...document.querySelectorAll('.jp-DirListing-content .jp-DirListing-item')]
  .map(li => li.querySelector('.jp-DirListing-itemText').innerText.trim())"""


@pytest.mark.parametrize("folder", ["notebooks", "exercises"])
def test_file_browser_lists_one_entry_per_lesson(folder, lab_server, page, screenshot_dir):
    base, token = lab_server
    page.goto(f"{base}/lab/tree/{folder}?reset&token={token}")
    page.wait_for_function("() => !!window.jupyterapp")
    expected = sorted(p.name for p in (ROOT / folder).glob("*.ipynb"))
    page.wait_for_function(f"() => ({_ITEMS})().length >= {len(expected)}", timeout=60_000)
    shown = sorted(page.evaluate(_ITEMS))
    page.screenshot(path=str(screenshot_dir / f"file-browser-{folder}.png"))
    assert shown == expected, f"{folder}/ shows {shown}, expected only the notebooks {expected}"
    stems = [s.removesuffix(".ipynb") for s in shown]
    assert len(set(stems)) == len(stems), f"a lesson is listed twice in {folder}/: {shown}"
    print(f"\n{folder}/ in JupyterLab: {len(shown)} entries, all notebooks "
          f"(screenshot {screenshot_dir}/file-browser-{folder}.png)")
