"""The layers stated in course_lib/__init__.py hold: no module imports from a later layer
(function-level imports included), and every module is placed in exactly one layer."""
import ast
from pathlib import Path

import pytest

import course_lib

PACKAGE = Path(course_lib.__file__).parent

LAYERS = {
    "foundations": ["config", "kernels", "device", "data", "tokenizers", "unigram"],
    "components": ["attention", "positional", "positional_attention", "ffn", "norms", "efficient_attention",
                   "kv_cache", "moe", "ssm", "quantization", "mla", "moe_deepseek", "qk_norm", "attention_sinks",
                   "paged_kv_cache"],
    "blocks": ["blocks", "parallel_block"],
    "models": ["models", "vit", "mod"],
    "training, generation, interop": ["training", "generation", "speculative", "interop", "models.minilm", "experiments",
                                      "analysis", "distributed", "export", "pretrained"],
    "teaching tools": ["checks", "grade", "widgets", "viz", "course_map", "envcheck", "tools"],
}
RANK = {name: i for i, names in enumerate(LAYERS.values()) for name in names}


def layer_of(module: str) -> str:
    """'models.gpt' -> 'models'; 'models.minilm' -> 'models.minilm' (the longest listed prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    raise KeyError(module)


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if parts:
            yield ".".join(parts), path


def course_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            if name.startswith("course_lib."):
                yield name.removeprefix("course_lib."), node.lineno
            elif name == "course_lib" and isinstance(node, ast.ImportFrom):
                yield from ((a.name, node.lineno) for a in node.names if a.name in RANK)


def test_every_module_has_a_layer_and_the_docstring_lists_them():
    unplaced = []
    for module, _ in modules():
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"add these modules to a layer in course_lib/__init__.py and LAYERS here: {unplaced}"
    doc = course_lib.__doc__
    for layer, names in LAYERS.items():
        assert f"**{layer}**" in doc
        for name in names:
            assert f"``{name}``" in doc, name


@pytest.mark.parametrize("module,path", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_module_imports_from_a_later_layer(module, path):
    own = RANK[layer_of(module)]
    later = [(name, line) for name, line in course_imports(path) if RANK[layer_of(name)] > own]
    assert not later, (f"course_lib.{module} (layer {own + 1}) imports from later layers: "
                       + ", ".join(f"course_lib.{n} at line {line}" for n, line in later))


def test_the_rule_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from course_lib.checks.core import RESULTS\n    from course_lib import viz\n")
    assert [(n, layer_of(n)) for n, _ in course_imports(bad)] == [("checks.core", "checks"), ("viz", "viz")]


def test_tools_need_a_source_checkout_and_say_so(tmp_path):
    """An installed copy (course_lib without the repository around it) gets a clear error from the
    tools and the course map, not a path error deep inside."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(PACKAGE, tmp_path / "site" / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("from course_lib.tools import NotACheckout\n"
            "for stmt in ('import course_lib.tools.notebooks', "
            "'from course_lib.course_map import LESSONS; LESSONS[1].status'):\n"
            "    try:\n        exec(stmt)\n    except NotACheckout as err:\n        print('ERR', err)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""}).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("ERR course_lib runs from") for line in lines), out
    assert "not inside a source checkout" in lines[0] and "git clone" in lines[0] and "pip install -e ." in lines[0]
    from course_lib.tools import repo_root
    assert (repo_root() / "notebooks" / "00_start_here.ipynb").exists()  # here, in the checkout
