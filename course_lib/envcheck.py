"""The environment check of the start notebook: one line per package, OK or FAIL with the fix."""
from __future__ import annotations

import importlib
import sys

REQUIRED = [  # (import name, pip name, minimum version, what it is for)
    ("torch", "torch", "2.2", "tensors and autograd"),
    ("numpy", "numpy", "1.24", "arrays"),
    ("matplotlib", "matplotlib", "3.7", "plots"),
    ("ipywidgets", "ipywidgets", "8.0", "interactive controls"),
    ("tqdm", "tqdm", "4.60", "progress bars"),
]
OPTIONAL = [
    ("transformers", "transformers", "4.44", "comparing with Hugging Face models (lessons 06, 07)"),
    ("tokenizers", "tokenizers", "0.19", "comparing tokenizers (lesson 09)"),
]


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_environment(verbose: bool = True) -> bool:
    """Print OK/FAIL for each package; return True when every required one is fine."""
    ok_all = sys.version_info >= (3, 10)
    lines = [f"{'OK' if ok_all else 'FAIL':<5}python       {sys.version.split()[0]}"
             + ("" if ok_all else "  -> the course needs Python 3.10 or newer")]
    for group, required in ((REQUIRED, True), (OPTIONAL, False)):
        for mod, pip_name, minimum, why in group:
            try:
                version = getattr(importlib.import_module(mod), "__version__", "0")
            except ImportError:
                status = "FAIL" if required else "MISS"
                fix = f'python -m pip install "{pip_name}>={minimum}"'
                lines.append(f"{status:<5}{mod:<13}not installed -> {fix}   ({why})")
                ok_all &= not required
                continue
            if _version_tuple(version) < _version_tuple(minimum):
                status = "FAIL" if required else "OLD"
                lines.append(f"{status:<5}{mod:<13}{version} is older than {minimum} -> "
                             f'python -m pip install -U "{pip_name}>={minimum}"')
                ok_all &= not required
            else:
                lines.append(f"{'OK':<5}{mod:<13}{version}")
    if verbose:
        print("\n".join(lines))
    return ok_all
