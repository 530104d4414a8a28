"""course_lib.export: the course GPT exported to ONNX and run in ONNX Runtime gives PyTorch's
logits, at the traced shape and at other batch sizes and lengths (dynamic axes); a missing
optional package is a clear ImportError naming the pip command."""
import sys

import pytest
import torch

from course_lib import export
from course_lib.models.gpt import GPT


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match="pip install onnx onnxruntime onnxscript") as info:
        export.export_onnx(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long), tmp_path / "m.onnx")
    assert "onnxruntime" in str(info.value) and '.[export]' in str(info.value)
    with pytest.raises(ImportError, match="pip install onnx onnxruntime onnxscript"):
        export.run_onnxruntime(tmp_path / "m.onnx", torch.zeros(1, 2, dtype=torch.long))
    assert not export.onnx_available()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = GPT(vocab_size=50, max_positions=48, d_model=32, n_layers=2, n_heads=4).eval()
    path = export.export_onnx(model, torch.randint(0, 50, (2, 16)), tmp_path_factory.mktemp("onnx") / "gpt.onnx")
    return model, path


@pytest.mark.parametrize("shape", [(2, 16), (3, 40), (1, 1), (5, 48)])
def test_onnxruntime_equals_pytorch_at_any_batch_and_length(exported, shape):
    model, path = exported
    ids = torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        ref = model(ids).logits.numpy()
    out = export.run_onnxruntime(path, ids)
    err = abs(out - ref).max()
    print(f"ONNX Runtime vs PyTorch at {shape}: max abs error {err:.1e}")
    assert out.shape == ref.shape and err <= 1e-4


def test_node_metadata_with_local_paths_is_dropped(exported):
    import onnx
    _, path = exported
    proto = onnx.load(str(path))
    assert len(proto.graph.node) > 50
    assert not any(n.metadata_props for n in proto.graph.node)
    assert "course_lib" not in path.read_bytes().decode("latin-1")  # no stack traces, no local paths


def test_export_leaves_the_model_usable_and_its_checks_on(exported):
    model, path = exported
    assert path.stat().st_size > 4 * sum(p.numel() for p in model.parameters())  # the weights are inside
    with pytest.raises(ValueError, match="vocabulary"):
        model(torch.tensor([[60]]))  # value checks are skipped only while exporting


def test_bad_inputs_are_clear_errors(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="batch, time"):
        export.export_onnx(torch.nn.Linear(2, 2), torch.zeros(4, dtype=torch.long), tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        export.run_onnxruntime(tmp_path / "missing.onnx", torch.zeros(1, 2, dtype=torch.long))
