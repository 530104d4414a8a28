"""Grade learner notebooks headlessly, where the notebook cannot touch its own score.

    python -m course_lib.grade exercises/01_attention.ipynb [more.ipynb ...] [--json grades.json]
    python -m course_lib.grade submissions/ --json grades.json --csv roster.csv

How a notebook is graded. Each notebook runs top to bottom in a fresh Python process of its
own (an IPython shell, so magics work; output is thrown away; a cell that raises does not stop
the run; each cell has a time limit and the whole run another), in an empty temporary folder,
so files it writes (a checkpoint) never land beside the submission. In that run every call
`check_x(your_function)` only *records* its argument: no verdict is computed while the
notebook's own cells run. After the last cell the process puts back everything the notebook
may have changed in torch, the standard library and the grader (functions replaced, results
rewritten, checks redefined), then runs each recorded check on what the learner passed, and
sends the results to this process over a private pipe, each line signed with a token only
the two processes know. Printed text, a forged results line, `RESULTS` or `results_json`
rewritten, a redefined `check_*`, an early exit, an endless loop or a flood of output earn
nothing; reading the course's solutions from disk is refused in the grading process.
What the grader does not promise: it is not a sandbox for hostile code. Run submissions you
do not trust in a container; code that walks the interpreter's frames can reach anything.

A check the notebook calls but whose result never arrived counts as failed. Prints a score
table and, with --json, writes {"notebooks": [{"path", "score", "max_score", "checks": [...]}]}.
A folder argument grades every .ipynb under it. With --csv it also writes a roster: one row
per notebook (student, notebook, score, max_score, status, then one column of points per
check). The student is the folder the notebook sits in (submissions/alice/01_attention.ipynb
-> alice), or its file name when it lies directly in a folder given on the command line
(submissions/alice.ipynb -> alice). Exits non-zero only when a notebook cannot be executed
(missing, unreadable, its process died or ran out of time); a low score is not an error.
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat

from course_lib.checks import REGISTRY

RECORD = "__course_grader_record__"  # the name a check call is rewritten to inside the graded run
PIPE_LIMIT = 1 << 20  # bytes of results read back; more is not a real result
ERR_LIMIT = 20_000  # characters of the graded process's stderr kept for a diagnosis


# ------------------------------------------------------------------ what the notebook asks to be graded
def _cell_python(source: str) -> str:
    """A code cell as Python (IPython magics and shell escapes turned into calls)."""
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(source)


def called_checks(nb: nbformat.NotebookNode) -> list[str]:
    """The registered checks the notebook's code cells call, in order."""
    names = []
    for c in nb.cells:
        if c.cell_type == "code":
            for name in re.findall(r"\b(check_\w+)\s*\(", c.source):
                if name in REGISTRY and name not in names:
                    names.append(name)
    return names


class _RecordChecks(ast.NodeTransformer):
    """`check_x(args)` -> `__course_grader_record__("check_x", args)`, for registered checks only."""

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in REGISTRY:
            return ast.copy_location(ast.Call(func=ast.Name(RECORD, ast.Load()),
                                              args=[ast.Constant(node.func.id), *node.args],
                                              keywords=node.keywords), node)
        return node


# ------------------------------------------------------------------ the graded process
class _Snapshot:
    """Every attribute of the given modules and classes, and the registry's checks, as they were;
    `restore()` puts them back and returns what had changed."""

    def __init__(self, owners, checks):
        self.owners = [(o, dict(vars(o))) for o in owners]
        self.checks = [(c, dict(vars(c))) for c in checks]

    def restore(self) -> list[str]:
        """Put back every attribute that was replaced or deleted. New attributes stay (importing a
        submodule adds one); nothing the checks use can be new."""
        changed = []
        for owner, saved in self.owners:
            now = vars(owner)
            for k, v in saved.items():
                new = now.get(k, _MISSING)
                if new is not v and _torch_own_wrapper(new, v):
                    saved[k] = new  # torch wraps some functions lazily on first use (torch._compile)
                elif new is not v:
                    changed.append(f"{getattr(owner, '__name__', '?')}.{k}")
                    try:
                        setattr(owner, k, v)
                    except (AttributeError, TypeError):
                        pass
        for check, saved in self.checks:
            if vars(check) != saved:
                changed.append(f"the check {check.name}")
                vars(check).clear()
                vars(check).update(saved)
        return changed


_MISSING = object()


def _torch_own_wrapper(new, old) -> bool:
    """True when `new` is torch's own wrapper around `old` (its code lives in torch's package)."""
    import torch
    code = getattr(new, "__code__", None)
    return (getattr(new, "__wrapped__", None) is old and code is not None
            and os.path.dirname(code.co_filename).startswith(os.path.dirname(torch.__file__)))


def _guarded_owners() -> list:
    """Modules and classes a notebook could change to fool a check: torch's public namespaces,
    the standard helpers checks use, and all of course_lib (references and grader)."""
    import builtins
    import math

    import torch
    names = [n for n in sys.modules if n == "course_lib" or n.startswith("course_lib.")]
    mods = [sys.modules[n] for n in names] + [torch, torch.nn, torch.nn.functional, torch.nn.init, torch.testing,
                                              torch.linalg, torch.special, torch.optim, torch.nn.utils,
                                              torch.random, builtins, math, json, os, os.path]
    classes = [torch.Tensor, torch.nn.Module, torch.nn.Parameter, torch.optim.Optimizer, torch.Generator]
    for m in mods:
        for v in list(vars(m).values()):
            if isinstance(v, type) and getattr(v, "__module__", "").startswith(("course_lib", "torch.nn.modules")):
                classes.append(v)
    seen, out = set(), []
    for o in mods + classes:
        if id(o) not in seen:
            seen.add(id(o))
            out.append(o)
    return out


def _audit(event: str, args: tuple) -> None:
    """Refused in the graded process: reading the course's solutions, starting programs,
    walking the garbage collector to find the grader's objects."""
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        p = os.fsdecode(args[0]).replace("\\", "/")
        if "/solutions/" in p or p.startswith("solutions/") or "/scripts/solutions" in p:
            raise PermissionError(f"the grader does not let a notebook read the course's solutions ({p})")
    elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "pty.spawn", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                   "sys.setprofile", "sys.settrace", "ctypes.dlopen", "ctypes.dlsym"):
        raise PermissionError(f"not allowed while grading: {event}")


class _CellTimeout(BaseException):
    pass


def child(path: str, fd: int, cell_timeout: float) -> int:
    """The graded run (a process of its own): execute, record, restore, check, report."""
    token = sys.stdin.readline().strip()
    out = os.fdopen(fd, "w", buffering=1, closefd=True)
    devnull = open(os.devnull, "w")
    os.dup2(devnull.fileno(), 1)  # the notebook's prints go nowhere, at the OS level too

    import torch  # noqa: F401 - loaded before the snapshot so its namespaces are the originals
    from IPython.core.interactiveshell import InteractiveShell

    import course_lib.checks as checks_pkg
    from course_lib.checks import core
    checks = dict(REGISTRY)
    funcs = {name: spec.func for name, spec in checks.items()}
    recorded: dict[str, tuple] = {}

    def record(name, *args, **kwargs):
        recorded[name] = (args, kwargs)  # the last call wins, as when a learner re-runs a check
        # what the notebook sees instead of a verdict (a cell may go on with `if result.passed:`)
        return core.CheckResult(name, False, "recorded for grading", 0, checks[name].max_points)

    shell = InteractiveShell.instance()
    shell.ast_transformers.append(_RecordChecks())
    shell.user_ns[RECORD] = record
    nb = nbformat.read(path, as_version=4)
    snapshot = _Snapshot(_guarded_owners(), checks.values())
    sys.addaudithook(_audit)

    def alarm(signum, frame):
        raise _CellTimeout(f"a cell ran longer than {cell_timeout:g} s")

    signal.signal(signal.SIGALRM, alarm)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        shell.user_ns[RECORD] = record  # even if a cell rebound the name
        signal.setitimer(signal.ITIMER_REAL, cell_timeout, 1.0)
        try:
            shell.run_cell(cell.source, store_history=False, silent=True)
        except BaseException:  # noqa: BLE001 - a cell's failure is the learner's; go on
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    snapshot.restore()
    core.RESULTS.clear()
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    for name in [n for n in called_checks(nb) if n in recorded] + [n for n in recorded if n not in called_checks(nb)]:
        args, kwargs = recorded[name]
        snapshot.restore()
        try:
            r = funcs[name](*args, quiet=True, **kwargs).as_dict()
        except BaseException as exc:  # noqa: BLE001 - a check must never stop the others
            r = {"name": name, "passed": False, "points": 0, "max_points": checks[name].max_points,
                 "message": f"the check could not run ({type(exc).__name__}: {str(exc)[:200]})"}
        changed = snapshot.restore()
        if changed:
            r = {"name": name, "passed": False, "points": 0, "max_points": checks[name].max_points,
                 "message": "your code changed the grader or torch while it was checked "
                            f"({', '.join(changed[:3])}); checks run on your code only"}
        row = {k: r[k] for k in ("name", "passed", "points", "max_points", "message")}
        out.write(token + json.dumps(row) + "\n")
    out.write(token + "END\n")
    out.close()
    del checks_pkg
    os._exit(0)  # nothing of the notebook runs after the report (atexit handlers included)


# ------------------------------------------------------------------ the grading process
def _read_capped(stream, limit: int, sink: list) -> None:
    n = 0
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        if n < limit:
            sink.append(chunk[: limit - n])
        n += len(chunk)


def grade_notebook(path: Path, cell_timeout: float = 600, total_timeout: float = 1800) -> dict:
    nb = nbformat.read(path, as_version=4)  # unreadable -> the caller's "could not execute"
    expected = called_checks(nb)
    token = secrets.token_hex(16)
    r, w = os.pipe()
    env = dict(os.environ, COURSE_LIB_HEADLESS="1", MPLBACKEND="Agg", COURSE_LIB_GRADING="1",
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    workdir = tempfile.mkdtemp(prefix="course-grade-")  # files the notebook writes land here, not beside it
    proc = subprocess.Popen([sys.executable, "-m", "course_lib.grade", "--child", str(path.resolve()), str(w),
                             "--cell-timeout", str(cell_timeout)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            pass_fds=(w,), cwd=workdir, env=env, start_new_session=True)
    os.close(w)
    got: list[bytes] = []
    err: list[bytes] = []
    with os.fdopen(r, "rb") as pipe:
        readers = [threading.Thread(target=_read_capped, args=(pipe, PIPE_LIMIT, got), daemon=True),
                   threading.Thread(target=_read_capped, args=(proc.stderr, ERR_LIMIT, err), daemon=True)]
        for t in readers:
            t.start()
        proc.stdin.write((token + "\n").encode())
        proc.stdin.close()
        start = time.monotonic()
        try:
            proc.wait(timeout=total_timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for t in readers:
            t.join(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - start
    lines = b"".join(got).decode("utf-8", "replace").splitlines()
    signed = [ln[len(token):] for ln in lines if ln.startswith(token)]
    if "END" not in signed:
        why = ("ran longer than the grader allows" if elapsed >= total_timeout - 1
               else "ended its process before the checks ran (an exit, a crash or running out of memory)")
        tail = b"".join(err).decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"the notebook {why}" + (f"; last error: {tail[0][:200]}" if tail[0] else ""))
    found: dict[str, dict] = {}
    for s in signed[: signed.index("END")]:
        row = json.loads(s)
        found[row["name"]] = row
    checks = []
    for name in expected + [n for n in found if n not in expected]:
        c = found.get(name) or {"name": name, "passed": False, "points": 0,
                                "max_points": REGISTRY[name].max_points,
                                "message": "not reached: the cell that calls this check raised or timed out"}
        checks.append(c)
    return {"path": str(path), "score": sum(c["points"] for c in checks),
            "max_score": sum(c["max_points"] for c in checks), "checks": checks}


def expand(args: list[Path]) -> list[tuple[Path, str]]:
    """(notebook, student) for each argument; a folder stands for every .ipynb under it."""
    found = []
    for arg in args:
        if not arg.is_dir():
            found.append((arg, arg.resolve().parent.name))
            continue
        for nb in sorted(arg.rglob("*.ipynb")):
            if ".ipynb_checkpoints" not in nb.parts:
                found.append((nb, nb.stem if nb.parent == arg else nb.relative_to(arg).parts[0]))
    return found


def write_roster(rows: list[dict], path: Path) -> None:
    """One row per notebook: student, notebook, score, max_score, status, points per check."""
    names = list(dict.fromkeys(c["name"] for r in rows for c in r.get("checks", [])))
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook", "score", "max_score", "status", *names])
        for r in rows:
            points = {c["name"]: c["points"] for c in r.get("checks", [])}
            w.writerow([r["student"], r["notebook"], r.get("score", ""), r.get("max_score", ""),
                        r["status"], *(points.get(n, "") for n in names)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        cp = argparse.ArgumentParser()
        cp.add_argument("path")
        cp.add_argument("fd", type=int)
        cp.add_argument("--cell-timeout", type=float, default=600)
        a = cp.parse_args(argv[1:])
        return child(a.path, a.fd, a.cell_timeout)
    ap = argparse.ArgumentParser(prog="python -m course_lib.grade", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path, help="notebooks, or folders of them")
    ap.add_argument("--json", type=Path, help="write the scores as JSON to this file")
    ap.add_argument("--csv", type=Path, help="write a roster (one row per notebook) as CSV to this file")
    ap.add_argument("--cell-timeout", type=float, default=600, help="seconds per cell (default 600)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per notebook (default 1800)")
    args = ap.parse_args(argv)
    report, failed, roster = {"notebooks": []}, [], []
    for path, student in expand(args.notebooks):
        row = {"student": student, "notebook": path.name}
        roster.append(row)
        try:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such notebook")
            entry = grade_notebook(path, args.cell_timeout, args.timeout)
        except Exception as exc:  # noqa: BLE001 - reported per notebook, then exit 1
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
            print(f"ERROR {path}: could not execute: {why}", file=sys.stderr)
            failed.append(str(path))
            row["status"] = f"could not execute: {why}"
            continue
        report["notebooks"].append(entry)
        row.update(status="graded", score=entry["score"], max_score=entry["max_score"], checks=entry["checks"])
        print(f"\n{entry['path']}: {entry['score']}/{entry['max_score']}")
        for c in entry["checks"]:
            mark = "✅" if c["passed"] else "❌"
            print(f"  {mark} {c['name']:<40} {c['points']}/{c['max_points']}  {c['message'][:100]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.csv:
        write_roster(roster, args.csv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
