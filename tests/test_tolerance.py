"""The nbval extension that compares numbers in stored outputs within a cell's stated tolerance:
exact things stay exact, approximate numbers may move as far as the cell allows and no further,
and a failure names the stored value, the new value, the tolerance and the re-record command."""
from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

from course_lib.tools.tolerance import Tolerance, ToleranceError, compare_line, reconcile_outputs, reconcile_text

TOL = Tolerance(rel=0.02, abs=1e-6, pct=3)


@pytest.mark.parametrize("stored, new", [
    ("validation loss after 40 steps 3.176", "validation loss after 40 steps 3.201"),  # rel 0.8 %
    ("max weight difference 1e-16", "max weight difference 6e-17"),  # below abs
    ("Mamba accuracy 93.4% on held-out", "Mamba accuracy 95.3% on held-out"),  # 1.9 points
    ("reversal 98.6 %", "reversal 97.9 %"),
    ("loss  9.99 | acc 50.0%", "loss 10.01 | acc 51.0%"),  # a wider number shifts the padding
    ("tensor([0.1234, -0.5000])", "tensor([0.1236, -0.5001])"),
    ("-0.000", "0.000"),
])
def test_numbers_within_tolerance_compare_equal(stored, new):
    assert compare_line(stored, new, TOL) == (True, [])


@pytest.mark.parametrize("stored, new, why", [
    ("validation loss 3.176", "validation loss 3.301", "moved"),  # 3.9 % > 2 %
    ("accuracy 93.4%", "accuracy 89.0%", "moved"),  # 4.4 points > 3
    ("shape (2, 8, 64)", "shape (2, 8, 32)", "exact"),  # integers are exact
    ("12 of 16 experts used", "13 of 16 experts used", "exact"),
    ("token ids [15496, 11]", "token ids [15496, 12]", "exact"),
    ("verdict: equal to PyTorch", "verdict: differs from PyTorch", "exact"),  # text is exact
    ("loss 3.176", "loss 3.176 nats", "exact"),
    ("accuracy 93.4%", "accuracy 93.4", "exact"),  # the unit changed
    ("loss 3.0", "loss 3", "exact"),  # a float became an integer
])
def test_what_moves_too_far_or_is_exact_is_a_difference(stored, new, why):
    ok, moved = compare_line(stored, new, TOL)
    assert not ok
    assert bool(moved) == (why == "moved")


def test_moved_numbers_report_stored_new_and_tolerance():
    _, moved = compare_line("loss 3.176, accuracy 93.4%", "loss 3.301, accuracy 80.0%", TOL)
    assert [(m.stored, m.new, m.allowed) for m in moved] == [
        ("3.176", "3.301", "rel 0.02 + abs 1e-06"), ("93.4", "80.0", "±3 percentage points")]
    assert "stored 3.176, new 3.301" in str(moved[0])


def test_counts_from_a_training_run_may_move_when_the_cell_says_so():
    ints = Tolerance(rel=0.02, ints=0.1)
    assert compare_line("would overflow: 9 of 4096", "would overflow: 10 of 4096", ints)[0]
    assert compare_line("would overflow: 1075 of 4096", "would overflow: 1069 of 4096", ints)[0]
    ok, moved = compare_line("12 of 16 experts used", "3 of 16 experts used", ints)
    assert not ok and moved[0].allowed == "1 + 0.1·|stored| (a count)"
    one = Tolerance(rel=0.02, ints=0.0)  # a count may move by one
    assert compare_line("12 of 16", "13 of 16", one)[0] and not compare_line("12 of 16", "14 of 16", one)[0]


def test_a_share_in_percent_is_approximate_even_without_decimals():
    assert compare_line("busiest expert takes 15% (fair: 12.5%)", "busiest expert takes 14% (fair: 12.5%)", TOL)[0]
    assert not compare_line("busiest expert takes 15%", "busiest expert takes 25%", TOL)[0]


def test_lines_are_reconciled_one_by_one():
    stored = "step 10 loss 3.50\nstep 20 loss 3.00\nconverged: yes"
    new = "step 10 loss 3.51\nstep 20 loss 2.50\nconverged: yes"
    text, moved = reconcile_text(stored, new, TOL)
    assert text == "step 10 loss 3.50\nstep 20 loss 2.50\nconverged: yes"  # only the real change remains
    assert [m.new for m in moved] == ["2.50"]
    assert reconcile_text("a 1.0\nb 2.0", "a 1.0", TOL) == ("a 1.0", [])  # lines added or lost: exact


def test_reconcile_outputs_covers_streams_and_rich_text_and_leaves_the_input_alone():
    ref = [nbformat.v4.new_output("stream", name="stdout", text="loss 3.176\n"),
           nbformat.v4.new_output("execute_result", data={"text/plain": "0.5012", "image/png": "AAAA"},
                                  execution_count=1)]
    test = [nbformat.v4.new_output("stream", name="stdout", text="loss 3.180\n"),
            nbformat.v4.new_output("execute_result", data={"text/plain": "0.5013", "image/png": "BBBB"},
                                   execution_count=1)]
    out, moved = reconcile_outputs(test, ref, TOL)
    assert not moved and out[0]["text"] == "loss 3.176\n" and out[1]["data"]["text/plain"] == "0.5012"
    assert out[1]["data"]["image/png"] == "BBBB" and test[0]["text"] == "loss 3.180\n"


@pytest.mark.parametrize("spec, message", [
    ({"rell": 0.1}, "unknown key"),
    ({"rel": -1}, "must be a number >= 0"),
    ({"rel": "5%"}, "must be a number >= 0"),
    ({"ints": "yes", "rel": 0.1}, "must be a number >= 0"),
    ({"rel": 0}, "allows no difference"),
    ([0.1], "must be a mapping"),
])
def test_malformed_tolerance_metadata_says_what_is_wrong(spec, message):
    with pytest.raises(ToleranceError, match=message):
        Tolerance.from_metadata(spec, "notebooks/x.ipynb cell 3")


def _notebook(tmp_path, stored: str, printed: str, tolerance=None):
    meta = {} if tolerance is None else {"tolerance": tolerance}
    cell = nbformat.v4.new_code_cell(f"print({printed!r})", metadata=meta, execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", name="stdout", text=stored + "\n")])
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nb, path)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p",
                           "course_lib.tools.tolerance", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    return proc.returncode, proc.stdout + proc.stderr


def test_nbval_passes_a_number_within_the_cells_tolerance(tmp_path):
    rc, out = _notebook(tmp_path, "loss 3.176 after 40 steps", "loss 3.201 after 40 steps", {"rel": 0.02})
    assert rc == 0, out


def test_nbval_fails_a_number_beyond_it_and_says_how_to_rerecord(tmp_path):
    rc, out = _notebook(tmp_path, "loss 3.176 after 40 steps", "loss 3.401 after 40 steps", {"rel": 0.02})
    assert rc == 1
    assert "stored 3.176, new 3.401, tolerance rel 0.02" in out
    assert "python -m course_lib.tools.notebooks" in out and "lesson.ipynb" in out


def test_nbval_still_compares_exact_things_exactly(tmp_path):
    rc, out = _notebook(tmp_path, "loss 3.176 after 40 steps", "loss 3.176 after 41 steps", {"rel": 0.02})
    assert rc == 1 and "41" in out
    rc, out = _notebook(tmp_path, "loss 3.176", "loss 3.177")  # no tolerance metadata: exact
    assert rc == 1 and "compared exactly" in out


def test_spread_reports_how_far_numbers_and_text_moved():
    from course_lib.tools.spread import covered, moves
    worst, text = moves("loss 3.176 acc 93.4%\nsteps 40", "loss 3.201 acc 95.3%\nsteps 40")
    assert worst["rel"] == pytest.approx(0.025 / 3.176) and worst["pct"] == pytest.approx(1.9) and not text
    assert moves("sample: to be", "sample: or not")[1]  # text moved: no tolerance can cover it
    assert covered("loss 3.176", "loss 3.201", {"rel": 0.01}) and not covered("loss 3.176", "loss 3.201", None)


def test_spread_runs_a_notebook_on_another_code_path(tmp_path, capsys):
    from course_lib.tools.spread import main
    cell = nbformat.v4.new_code_cell("import torch\nprint(torch.get_num_threads() == 1, 'loss 3.176')",
                                     execution_count=1, outputs=[nbformat.v4.new_output(
                                         "stream", name="stdout", text="False loss 3.201\n")])
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert main([str(tmp_path / "x.ipynb"), "--paths", "threads1"]) == 1
    out = capsys.readouterr().out
    assert "cell 0 on threads1" in out and "NOT covered" in out and "text differs" in out


def test_the_sanitiser_makes_a_gpu_tensor_repr_read_as_on_the_cpu():
    import re
    from pathlib import Path

    from nbval.plugin import get_sanitize_patterns
    patterns = get_sanitize_patterns((Path(__file__).parent / "nbval_sanitize.cfg").read_text())

    def clean(s):
        for regex, replace in patterns:
            s = re.sub(regex, replace, s)
        return s
    assert clean("tensor([1., 2.], device='cuda:0')") == "tensor([1., 2.])"
    assert clean("tensor([3], device='cuda:1', dtype=torch.int32)") == "tensor([3], dtype=torch.int32)"
    assert clean("device in use: cuda (NVIDIA H200)") == "device in use: DEVICE"
