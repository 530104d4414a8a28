"""Export a course model to ONNX and run it in ONNX Runtime, read top to bottom:
the optional packages -> a logits-only wrapper -> export -> run.

ONNX is a file format for computation graphs: the exported file holds the operators and the
weights, and runs without PyTorch or course_lib in any ONNX runtime (servers, browsers,
phones). PyTorch ≥ 2.9 exports with ``torch.export`` (``dynamo=True``): it traces the model into
an exact graph of aten operators, then onnxscript translates them to ONNX. Batch size and
sequence length stay *symbolic* (dynamic), so one file serves every input shape.

Needs the optional packages onnx, onnxruntime and onnxscript:
    python -m pip install onnx onnxruntime onnxscript      (or: python -m pip install -e ".[export]")
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

INSTALL_HINT = 'python -m pip install onnx onnxruntime onnxscript   (or: python -m pip install -e ".[export]")'
PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def require_onnx() -> None:
    """Raise ImportError naming the pip command when an optional ONNX package is missing."""
    missing = []
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"ONNX export needs the package(s) {', '.join(missing)}, which are not installed. "
                          f"Install them with:\n    {INSTALL_HINT}")


def onnx_available() -> bool:
    try:
        require_onnx()
    except ImportError:
        return False
    return True


class LogitsOnly(nn.Module):
    """model(input_ids) -> logits tensor: an ONNX graph returns tensors, not a ModelOutput."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids)
        return getattr(out, "logits", out)  # (B, T, V)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs progress and library warnings (missing torchvision, deprecations) that
    say nothing about the model; keep them out of the notebook."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: nn.Module, example_inputs: torch.Tensor, path: str | os.PathLike,
                dynamic: bool = True, keep_metadata: bool = False) -> Path:
    """Export `model` (token ids (B, T) -> logits, or an object with `.logits`) to the ONNX file
    `path`, traced with `example_inputs` (B, T). With `dynamic`, batch and sequence length are
    symbolic, so the file runs on any (B, T) the model accepts. The exporter annotates every
    node with the Python stack trace it came from (handy for debugging, but it holds your local
    file paths and a third of a small model's file); `keep_metadata=False` drops it. Returns the path."""
    require_onnx()
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() != 2:
        raise ValueError("example_inputs must be one (batch, time) tensor of token ids, got "
                         f"{type(example_inputs).__name__} {tuple(getattr(example_inputs, 'shape', ()))}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = LogitsOnly(model).eval()
    example = example_inputs.to(next(model.parameters()).device)
    shapes = ({0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC},) if dynamic else None
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(wrapper, (example,), dynamo=True, dynamic_shapes=shapes,
                                    input_names=["input_ids"], output_names=["logits"], verbose=False)
        program.save(str(path))  # weights inside the one file (small models fit in 2 GB)
    if not keep_metadata:
        _drop_node_metadata(path)
    return path


def _drop_node_metadata(path: Path) -> None:
    import onnx
    proto = onnx.load(str(path))
    graphs = [proto.graph, *(f for f in proto.functions)]
    for graph in graphs:
        for node in graph.node:
            del node.metadata_props[:]
    for info in proto.graph.value_info:
        del info.metadata_props[:]
    onnx.save(proto, str(path))


def run_onnxruntime(path: str | os.PathLike, input_ids) -> np.ndarray:
    """Run the exported file on the CPU with ONNX Runtime: input_ids (B, T) -> logits (B, T, V)."""
    require_onnx()
    import onnxruntime as ort
    if not Path(path).exists():
        raise FileNotFoundError(f"no ONNX file at {path}; create it with export_onnx(model, ids, {str(path)!r}).")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = input_ids.detach().cpu().numpy() if isinstance(input_ids, torch.Tensor) else np.asarray(input_ids)
    return session.run(None, {session.get_inputs()[0].name: ids.astype(np.int64)})[0]
