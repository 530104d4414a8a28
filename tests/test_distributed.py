"""DDP on 2 processes (torchrun, gloo) trains exactly like one process on the same global batch."""
import json
import os
import subprocess
import sys


def _run(cmd, tmp_path, name):
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "COURSE_LIB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd + ["-m", "course_lib.distributed", "--steps", "8", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_process_ddp_equals_single_process(tmp_path):
    single = _run([sys.executable], tmp_path, "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = _run(torchrun, tmp_path, "ddp")
    diffs = [abs(a - b) for a, b in zip(single, ddp)]
    print(f"DDP (2 x gloo) vs 1 process, 8 steps: losses {single[0]:.4f} -> {single[-1]:.4f}, "
          f"max |difference| {max(diffs):.1e}")
    assert len(ddp) == len(single) == 8 and max(diffs) <= 1e-5
    assert single[-1] < single[0]
