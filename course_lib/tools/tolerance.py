"""Numbers in stored notebook outputs, compared within a stated tolerance (an nbval extension).

nbval compares a re-run cell's outputs with the stored ones character by character. That is
right for what is exact (shapes, token ids, counts, verdicts, text) and wrong for a number that
depends on floating-point summation order or on a training run: a loss of 3.176 on one CPU is
3.201 on another (AVX2, AVX-512, the generic path, another thread count, CUDA).

A cell whose output holds such numbers says how far they may move, in its metadata (the
py:percent script shows it on the cell's first line):

    # %% tolerance={"rel": 0.02, "abs": 1e-6, "pct": 3}

* every number written with a decimal point or an exponent (3.176, 1e-16) may differ from
  the stored one by at most  abs + rel * |stored|;
* a number followed by "%" (93.4%, 15 %) is a measured share: it may differ by ``pct``
  percentage points (when given; otherwise by the same abs + rel rule);
* other integers stay exact (shapes, ids, counts, steps), unless ``"ints": r`` is given for a
  count that comes out of a training run ("9 of 4096 would overflow"): then it may differ by
  at most 1 + r * |stored|;
* all text around the numbers stays exact (runs of spaces may change width with the numbers).

Lines are compared one by one: a line whose numbers are all within tolerance counts as equal to
the stored line; any other difference fails the cell as usual, with the stored value, the new
value and the tolerance of every number that moved too far, and the command that re-records the
outputs. Cells without the metadata are compared exactly, as before.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

KEY = "tolerance"
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w]|\.\d)")
_SPACES = re.compile(r"[ \t]+")


class ToleranceError(ValueError):
    """A cell's tolerance metadata is malformed."""


@dataclass(frozen=True)
class Tolerance:
    rel: float = 0.0
    abs: float = 0.0
    pct: float | None = None
    ints: float | None = None

    @classmethod
    def from_metadata(cls, spec, where: str = "this cell") -> "Tolerance":
        if not isinstance(spec, dict):
            raise ToleranceError(f"{where}: `tolerance` metadata must be a mapping such as "
                                 f'{{"rel": 0.02, "abs": 1e-6}}, got {spec!r}')
        unknown = set(spec) - {"rel", "abs", "pct", "ints"}
        if unknown:
            raise ToleranceError(f"{where}: unknown key(s) {sorted(unknown)} in `tolerance` metadata; "
                                 "allowed: rel, abs, pct (percentage points), ints (relative, for counts)")
        for k in ("rel", "abs", "pct", "ints"):
            v = spec.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ToleranceError(f"{where}: tolerance {k}={v!r} must be a number >= 0")
        if not any(spec.get(k) for k in ("rel", "abs", "pct")):
            raise ToleranceError(f"{where}: `tolerance` metadata allows no difference at all; give rel, "
                                 "abs or pct > 0, or remove the metadata to compare exactly")
        opt = {k: None if spec.get(k) is None else float(spec[k]) for k in ("pct", "ints")}
        return cls(float(spec.get("rel", 0.0)), float(spec.get("abs", 0.0)), **opt)

    def describe(self, percent: bool, integer: bool = False) -> str:
        if percent and self.pct is not None:
            return f"±{self.pct:g} percentage points"
        if integer and not percent:
            return f"1 + {self.ints:g}·|stored| (a count)"
        parts = ([f"rel {self.rel:g}"] if self.rel else []) + ([f"abs {self.abs:g}"] if self.abs else [])
        return " + ".join(parts)

    def allows(self, stored: float, new: float, percent: bool, integer: bool = False) -> bool:
        if percent and self.pct is not None:
            return abs(new - stored) <= self.pct
        if integer and not percent:
            return abs(new - stored) <= 1 + self.ints * abs(stored)
        return abs(new - stored) <= self.abs + self.rel * abs(stored)


@dataclass(frozen=True)
class Moved:
    """One number that moved further than the tolerance allows."""
    line: str
    stored: str
    new: str
    allowed: str

    def __str__(self) -> str:
        return f"stored {self.stored}, new {self.new}, tolerance {self.allowed}   in: {self.line.strip()[:120]}"


def _split(line: str):
    """(text pieces, number tokens): text[0] num[0] text[1] num[1] ... text[-1]."""
    texts, nums, last = [], [], 0
    for m in _NUMBER.finditer(line):
        texts.append(line[last:m.start()])
        nums.append((m.group(), line[m.end():m.end() + 2].lstrip(" ").startswith("%")))
        last = m.end()
    texts.append(line[last:])
    # spaces next to a number change with its width ("  9.99" / " 10.01"); runs of spaces elsewhere too
    texts = [_SPACES.sub(" ", t) for t in texts]
    texts = [t.rstrip(" ") if i < len(nums) else t for i, t in enumerate(texts)]
    texts = [t.lstrip(" ") if i > 0 else t for i, t in enumerate(texts)]
    return texts, nums


def _is_int(token: str) -> bool:
    return not any(c in token for c in ".eE")


def _value(token: str) -> float:
    return float(token.replace(",", ""))


def compare_line(stored: str, new: str, tol: Tolerance) -> tuple[bool, list[Moved]]:
    """(equal within tolerance, numbers that moved too far). Equal text is always equal."""
    if stored == new:
        return True, []
    (st, sn), (nt, nn) = _split(stored), _split(new)
    if st != nt or len(sn) != len(nn):
        return False, []  # the text differs: not a question of tolerance
    moved = []
    for (a, pa), (b, pb) in zip(sn, nn):
        if a == b:
            continue
        integer = _is_int(a) or _is_int(b)
        if pa != pb or (integer and not pa and tol.ints is None):
            return False, []  # an exact number (or its unit) changed
        if not tol.allows(_value(a), _value(b), pa, integer):
            moved.append(Moved(stored, a, b, tol.describe(pa, integer)))
    return not moved, moved


def reconcile_text(stored: str, new: str, tol: Tolerance) -> tuple[str, list[Moved]]:
    """`new` with every line that matches its stored line within tolerance replaced by the stored
    line, so that an exact comparison afterwards sees only real differences."""
    s_lines, n_lines = stored.split("\n"), new.split("\n")
    if len(s_lines) != len(n_lines):
        return new, []
    out, moved = [], []
    for s, n in zip(s_lines, n_lines):
        ok, why = compare_line(s, n, tol)
        out.append(s if ok else n)
        moved += why
    return "\n".join(out), moved


def _text_fields(outputs):
    """{key: [(container, field), ...]} for every text an nbval comparison looks at."""
    fields: dict = {}
    for out in outputs:
        if out.get("output_type") == "stream":
            fields.setdefault(("stream", out.get("name")), []).append((out, "text"))
        for mime, value in (out.get("data") or {}).items():
            if isinstance(value, str) and mime.startswith("text/"):
                fields.setdefault(("data", mime), []).append((out["data"], mime))
    return fields


def reconcile_outputs(test, ref, tol: Tolerance, sanitize=lambda s: s):
    """A copy of the test outputs where numbers within tolerance of the stored ones read as the
    stored text; plus the numbers that moved too far."""
    test = copy.deepcopy(test)
    t_fields, r_fields, moved = _text_fields(test), _text_fields(ref), []
    for key, pairs in t_fields.items():
        for (t_obj, t_key), (r_obj, r_key) in zip(pairs, r_fields.get(key, [])):
            text, why = reconcile_text(sanitize(r_obj[r_key]), sanitize(t_obj[t_key]), tol)
            t_obj[t_key] = text
            moved += why
    return test, moved


# ----------------------------------------------------------------------------- pytest plugin
def rerecord_command(path: str) -> str:
    return f"python -m course_lib.tools.notebooks {path}"


def pytest_configure(config):
    """Teach nbval's cell comparison the `tolerance` metadata (loaded from the root conftest)."""
    if not (getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False)):
        return
    from nbval.plugin import IPyNbCell
    if getattr(IPyNbCell.compare_outputs, "_course_tolerance", False):
        return
    exact = IPyNbCell.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        where = f"{self.fspath.relto(self.config.rootdir)} cell {self.cell_num}"
        spec, moved = self.cell.metadata.get(KEY), []
        if spec is not None:
            tol = Tolerance.from_metadata(spec, where)
            test, moved = reconcile_outputs(test, ref, tol, self.sanitize)
        if exact(self, test, ref, skip_compare):
            return True
        notes = [f"\n{where}: the new output differs from the stored one."]
        if moved:
            notes.append("Numbers that moved further than the cell's tolerance allows:")
            notes += [f"  {m}" for m in moved]
        elif spec is None:
            notes.append("This cell is compared exactly (it has no `tolerance` metadata).")
        notes.append("If the change is intended, re-record the stored outputs with\n  "
                     + rerecord_command(str(self.fspath.relto(self.config.rootdir))))
        self.comparison_traceback = notes + self.comparison_traceback
        return False

    compare_outputs._course_tolerance = True
    IPyNbCell.compare_outputs = compare_outputs
