"""Browser tests: a real `jupyter lab` server and Debian's chromium driven by Playwright.

They run only when selected with the `browser` marker (they take minutes):

    python -m pytest -m browser tests/browser -p no:xdist

COURSE_BROWSER_NOTEBOOKS=00,01,exercises/01 limits them to notebooks whose path contains one
of these strings; COURSE_BROWSER_SCREENSHOTS=DIR keeps the screenshots there (default: a
pytest temporary folder, printed at the end of the run).
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from course_lib.tools import repo_root

ROOT = repo_root()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
# JupyterLab user settings for the test server: never write the notebooks back (autosave off),
# keep every cell in the DOM (no virtual scrolling) and no news/update pop-ups.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": '{"autosave": false}',
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        '{"fetchNews": "false", "checkForUpdates": false}',
}
_screenshot_dir: list[Path] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives JupyterLab in chromium (slow; select with -m browser)")


def pytest_collection_modifyitems(config, items):
    if "browser" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="browser test: run with `python -m pytest -m browser tests/browser -p no:xdist`")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if _screenshot_dir:
        terminalreporter.section("browser screenshots")
        terminalreporter.write_line(str(_screenshot_dir[0]))


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium (Playwright cannot download its own browser here); installed with apt
    when missing."""
    if not Path(CHROMIUM).exists():
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (as root)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env, timeout=1200)
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """`jupyter lab` on a free localhost port with a token, rooted at the repository. Its kernels
    are not headless: the widgets draw live, as for a learner. Yields (base_url, token)."""
    home = tmp_path_factory.mktemp("lab")
    settings = home / "settings"
    for rel, text in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("COURSE_LIB_HEADLESS", "MPLBACKEND")}
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    port, token = _free_port(), secrets.token_hex(16)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={ROOT}", "--LabApp.expose_app_in_browser=True",
         f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",  # not .ipynb_checkpoints/ in the repo
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"jupyter lab did not start; its log:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield base, token
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(60_000)
    yield p
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    wanted = os.environ.get("COURSE_BROWSER_SCREENSHOTS")
    d = Path(wanted) if wanted else tmp_path_factory.mktemp("browser-screenshots")
    d.mkdir(parents=True, exist_ok=True)
    _screenshot_dir.append(d)
    print(f"\nbrowser screenshots: {d}")
    return d
