"""Colab start-up, without Colab: the generated setup cell runs in a clean virtual environment
that has the course's dependencies but no course_lib, with `google.colab` simulated. The cell's
`pip install git+REPO_URL.git` is redirected by git's own `url.<base>.insteadOf` to a local git
repository made from this working tree, so the cell runs verbatim, offline, and installs what
this checkout would publish. Then the notebook's next cell imports the course. Also: every
notebook's Colab badge opens that very notebook."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from course_lib import REPO_URL
from course_lib.tools import repo_root
from course_lib.tools.colab import COLAB_TAG, setup_code

ROOT = repo_root()

BOOKS = sorted(p for d in ("notebooks", "solutions", "exercises") for p in (ROOT / d).glob("*.ipynb"))

FAKE_COLAB = '''"""A stand-in for Colab's `google.colab` package: records what the setup cell calls."""
import os


class output:
    @staticmethod
    def enable_custom_widget_manager():
        open(os.environ["FAKE_COLAB_LOG"], "a").write("enable_custom_widget_manager\\n")
'''

RUN_CELLS = '''import sys, json
import google.colab  # in Colab this module is always imported
cells = json.load(open(sys.argv[1]))
for source in cells:
    exec(compile(source, "<cell>", "exec"), globals())
import course_lib

print("course_lib from", course_lib.__file__)
'''


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def deps_without_course_lib(tmp: Path) -> Path:
    """A folder of links to every installed package of this environment except course_lib (and
    its editable-install hooks): the dependencies, without the course."""
    deps = tmp / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not re.match(r"(__editable__.*course_lib|course_lib|.*\.pth$)", entry.name):
            (deps / entry.name).symlink_to(entry)
    return deps


def local_remote(tmp: Path) -> Path:
    """A git repository holding this working tree's package (what `git+REPO_URL` would fetch)."""
    src = tmp / "remote"
    shutil.copytree(ROOT / "course_lib", src / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    run([*git, "init", "-q"], cwd=src)
    run([*git, "add", "-A"], cwd=src)
    run([*git, "commit", "-q", "-m", "snapshot"], cwd=src)
    return src


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colab")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    for old in site.glob("setuptools*"):  # the venv's own (older) setuptools would shadow the project's
        shutil.rmtree(old)
    (site / "course_deps.pth").write_text(str(deps_without_course_lib(tmp)) + "\n")
    fake = tmp / "fake_colab" / "google" / "colab"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_COLAB)
    gitconfig = tmp / "gitconfig"
    gitconfig.write_text(f'[url "file://{local_remote(tmp)}"]\n\tinsteadOf = {REPO_URL}.git\n')
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update(PYTHONPATH=str(tmp / "fake_colab"), GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1",
               FAKE_COLAB_LOG=str(tmp / "colab.log"), PIP_NO_BUILD_ISOLATION="0", PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", COURSE_LIB_HEADLESS="1", MPLBACKEND="Agg")
    return py, work, env, tmp


def test_the_clean_environment_has_the_dependencies_but_not_the_course(colab_env):
    py, work, env, _ = colab_env
    probe = "import importlib.util as u; print(u.find_spec('course_lib') is None, u.find_spec('torch') is not None)"
    assert run([str(py), "-c", probe], cwd=work, env=env).stdout.split() == ["True", "True"]


def test_setup_cell_installs_the_course_in_simulated_colab_and_the_notebook_imports_it(colab_env):
    py, work, env, tmp = colab_env
    nb = nbformat.read(ROOT / "notebooks" / "01_attention.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert COLAB_TAG in code[0].metadata.get("tags", []) and code[0].source == setup_code()
    cells = tmp / "cells.json"
    cells.write_text(__import__("json").dumps([code[0].source, code[1].source]))  # setup, then the imports
    script = tmp / "run_cells.py"
    script.write_text(RUN_CELLS)
    proc = run([str(py), str(script), str(cells)], cwd=work, env=env)
    print(proc.stdout[-1500:], proc.stderr[-1500:])
    installed = proc.stdout.split("course_lib from", 1)[1].strip()
    assert installed.startswith(str(tmp / "venv")), f"course_lib was imported from {installed}, not the venv"
    assert (tmp / "colab.log").read_text() == "enable_custom_widget_manager\n"  # ipywidgets 8 in Colab
    # run again, as a learner re-running the cell: nothing to install, nothing raised
    run([str(py), str(script), str(cells)], cwd=work, env=env)
    assert (tmp / "colab.log").read_text() == "enable_custom_widget_manager\n"


def test_setup_cell_outside_colab_names_the_fix_when_course_lib_is_missing(colab_env, tmp_path):
    py, work, env, _ = colab_env
    bare = tmp_path / "bare"
    run([sys.executable, "-m", "venv", "--without-pip", str(bare)])
    proc = subprocess.run([str(bare / "bin" / "python"), "-c", setup_code()], capture_output=True, text=True,
                          cwd=work, env={k: v for k, v in env.items() if k != "PYTHONPATH"}, timeout=120)
    assert proc.returncode != 0 and "python -m pip install -e ." in proc.stderr


@pytest.mark.parametrize("path", BOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_colab_badge_opens_this_notebook(path):
    rel = path.relative_to(ROOT).as_posix()
    badge = nbformat.read(path, as_version=4).cells[0].source
    urls = re.findall(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", badge)
    slug = REPO_URL.removeprefix("https://github.com/")
    assert urls == [f"https://colab.research.google.com/github/{slug}/blob/main/{rel}"], badge
    assert (ROOT / urls[0].split("/blob/main/", 1)[1]).is_file()
