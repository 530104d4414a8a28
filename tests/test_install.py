"""The install is complete: every third-party module the course imports is declared in
pyproject.toml (core, or the extra that needs it) and in environment.yml, and what learners and
instructors run works from the core install, without the build tools."""
from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.tools import repo_root

ROOT = repo_root()

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

# Modules that only some commands need, and the extra that declares them. Everything else the
# course imports belongs to the core install.
EXTRA_ONLY = {"jupytext": "dev", "nbval": "dev", "pytest": "dev", "xdist": "dev", "playwright": "dev",
              "onnx": "export", "onnxruntime": "export", "onnxscript": "export"}
# Imported only inside the Colab guard of the setup cell; Colab provides it.
PROVIDED = {"google"}
# The build tools: the grader and the lessons must not need them.
BUILD_TOOLS = ["jupytext", "nbval", "pytest", "xdist", "playwright"]
BUILD_MODULES = {"course_lib.tools.notebooks", "course_lib.tools.build_exercises", "course_lib.tools.tolerance",
                 "course_lib.tools.spread"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(req: str) -> str:
    return norm(re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0])


def declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {"core": {req_name(r) for r in project["dependencies"]}}
    for extra, reqs in project["optional-dependencies"].items():
        out[extra] = {req_name(r) for r in reqs}
    return out


def conda_names() -> set[str]:
    names = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.\-]+)", line)
        if m and not line.strip().startswith("- -e"):
            names.add(norm(m.group(1)))
    return names | {"torch"} if "pytorch" in names else names  # conda-forge calls torch `pytorch`


def top_level_imports(source: str) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return mods


def code_of_notebooks() -> dict[str, str]:
    out = {}
    for folder in ("notebooks", "solutions", "exercises"):
        for p in sorted((ROOT / folder).glob("*.ipynb")):
            cells = nbformat.read(p, as_version=4).cells
            src = "\n".join(c.source for c in cells if c.cell_type == "code")
            out[str(p.relative_to(ROOT))] = "\n".join(
                line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
    return out


def sources() -> dict[str, str]:
    files = [*(ROOT / "course_lib").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
             *(ROOT / "scripts").rglob("*.py")]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files} | code_of_notebooks()


def third_party(mods: set[str]) -> set[str]:
    return {m for m in mods if m not in sys.stdlib_module_names and m not in ("course_lib", "__future__")}


def dists_of(module: str) -> set[str]:
    return {norm(d) for d in md.packages_distributions().get(module, [])}


def test_every_imported_module_is_declared_in_pyproject_and_environment_yml():
    decl, conda = declared(), conda_names()
    missing = []
    for path, src in sources().items():
        for mod in sorted(third_party(top_level_imports(src)) - PROVIDED):
            dists = dists_of(mod)
            assert dists, f"{path} imports {mod!r}, which no installed distribution provides"
            where = "core" if mod not in EXTRA_ONLY else EXTRA_ONLY[mod]
            if not dists & decl[where]:
                missing.append(f"{path}: {mod} ({'/'.join(sorted(dists))}) is not in pyproject's "
                               f"{'dependencies' if where == 'core' else f'[{where}] extra'}")
            elif not dists & conda:
                missing.append(f"{path}: {mod} ({'/'.join(sorted(dists))}) is not in environment.yml")
    assert not missing, "\n".join(missing)


def test_environment_yml_lists_every_requirement_of_pyproject():
    conda = conda_names()
    lost = sorted(r for reqs in declared().values() for r in reqs if r not in conda)
    assert not lost, f"environment.yml lacks {lost}"


def test_the_dependency_scan_sees_what_it_should():
    """The scan is not vacuous: it finds the imports it must judge, here and in the notebooks."""
    mods = set().union(*(third_party(top_level_imports(s)) for s in sources().values()))
    assert {"torch", "transformers", "sklearn", "nbformat", "jupytext", "ipywidgets", "matplotlib"} <= mods
    assert dists_of("sklearn") == {"scikit-learn"}
    assert top_level_imports("import a.b as c\nfrom d.e import f\nfrom . import g\n") == {"a", "d"}


BLOCKER = f"""
import importlib.abc, sys

BLOCKED = {BUILD_TOOLS!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: a build tool)", name=name)
sys.meta_path.insert(0, Block())
for m in list(sys.modules):
    if m.split('.')[0] in BLOCKED:
        del sys.modules[m]
"""


def run_blocked(code: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_the_blocker_really_blocks():
    proc = run_blocked("import jupytext")
    assert proc.returncode != 0 and "blocked: a build tool" in proc.stderr


def test_every_learner_facing_module_imports_without_the_build_tools():
    code = ("import pkgutil, importlib, course_lib\n"
            f"skip = {sorted(BUILD_MODULES)!r}\n"
            "names = [m.name for m in pkgutil.walk_packages(course_lib.__path__, 'course_lib.')]\n"
            "for n in names:\n"
            "    if n not in skip: importlib.import_module(n)\n"
            "print(len(names))")
    proc = run_blocked(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 30


def test_the_grader_runs_without_the_build_tools(tmp_path):
    nb = nbformat.read(ROOT / "exercises" / "01_attention.ipynb", as_version=4)
    for c in nb.cells:  # a learner who solved softmax only
        if "def softmax(" in c.source:  # part 1 (not part 5's softmax_backward)
            c.source = c.source.replace("# YOUR CODE HERE\n    raise NotImplementedError()",
                                        "x = x - x.amax(dim, keepdim=True)\n    e = x.exp()\n"
                                        "    return e / e.sum(dim, keepdim=True)")
    path, out = tmp_path / "learner.ipynb", tmp_path / "grades.json"
    nbformat.write(nb, path)
    proc = run_blocked("import runpy, sys; sys.argv = ['grade', *sys.argv[1:]]; "
                       "runpy.run_module('course_lib.grade', run_name='__main__')",
                       str(path), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(out.read_text())["notebooks"][0]["checks"]}
    assert checks["check_softmax"]["passed"] and not checks["check_causal_mask"]["passed"]


@pytest.mark.parametrize("module", ["course_lib.tools.notebooks", "course_lib.tools.build_exercises"])
def test_build_tools_say_how_to_install_when_missing(module):
    proc = run_blocked(f"import {module}")
    assert proc.returncode != 0
    assert 'pip install -e ".[dev]"' in proc.stderr, proc.stderr[-2000:]
