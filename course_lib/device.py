"""One place that decides where tensors live, and one seed for everything.

Every notebook and the library call `get_device()`; nobody writes `"cuda"` by hand.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

_VALID = ("auto", "cpu", "cuda", "mps")


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA when present, else CPU.

    Apple's MPS is used only when asked for (``prefer="mps"`` or the environment
    variable ``COURSE_DEVICE=mps``): several ops the course uses (float64, some
    index ops) are missing or slow there, so it is not picked automatically.
    """
    choice = (prefer or os.environ.get("COURSE_DEVICE") or "auto").lower()
    if choice not in _VALID:
        raise ValueError(
            f"device {choice!r} is not one of {_VALID}; "
            "pass prefer='cpu' (or unset COURSE_DEVICE) to let the course choose."
        )
    if choice == "cpu":
        return torch.device("cpu")
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if choice == "cuda":
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False; "
                         "use prefer='auto' to fall back to the CPU.")
    if choice == "mps":
        if torch.backends.mps.is_available():
            return torch.device("mps")
        raise ValueError("device 'mps' was asked for but torch.backends.mps.is_available() is False.")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator with that seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def describe_device(device: torch.device | None = None) -> str:
    """A one-line, human description of the device in use."""
    device = device or get_device()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GiB"
    if device.type == "mps":
        return "mps: Apple GPU"
    return f"cpu: {torch.get_num_threads()} threads"


class single_thread:
    """`with single_thread():` run on one CPU thread, so that float sums happen in the same order
    on every machine: a notebook's printed losses are then reproducible to the last digit."""

    def __init__(self, n: int = 1):
        self.n = n

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)
        return False
