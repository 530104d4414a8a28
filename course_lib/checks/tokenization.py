"""Checks for Lesson 09 (tokenization): one BPE merge step."""
from __future__ import annotations

from course_lib.tokenizers import merge_pair
from .core import Mismatch, call_learner, register


def _no_skip(ids, pair, new_id):  # after a merge, steps one position instead of two
    out = []
    for i in range(len(ids)):
        out.append(new_id if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair) else ids[i])
    return out


def _right_to_left(ids, pair, new_id):
    return merge_pair(ids[::-1], (pair[1], pair[0]), new_id)[::-1]


def _first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


BPE_MISCONCEPTIONS = {
    "no_skip": "after a merge you move on by one position, so the pair's second token is used "
               "again (in [a, a, a] the pair (a, a) overlaps itself). A merge consumes two tokens: "
               "jump i += 2, giving [a, a, a] -> [X, a].",
    "right_to_left": "you scan from the right. BPE scans left to right, so [a, a, a] -> [X, a], not [a, X].",
    "first_only": "only the first occurrence was replaced; replace every (non-overlapping) occurrence.",
    "mutates_input": "the input list was changed in place; build and return a new list.",
}

_CASES = [
    ("ids=[1, 2, 3, 1, 2], pair=(1, 2)", [1, 2, 3, 1, 2], (1, 2), 99),
    ("ids=[5, 5, 5], pair=(5, 5)  ('aaa')", [5, 5, 5], (5, 5), 7),
    ("ids=[5, 5, 5, 5], pair=(5, 5)", [5, 5, 5, 5], (5, 5), 7),
    ("ids=[4, 1, 2], pair=(1, 2) at the end", [4, 1, 2], (1, 2), 300),
    ("ids=[1, 3, 2], no occurrence", [1, 3, 2], (1, 2), 300),
    ("ids=[], empty", [], (1, 2), 300),
    ("ids=[2, 1, 2, 1, 2, 1], pair=(1, 2)", [2, 1, 2, 1, 2, 1], (1, 2), 256),
    ("ids=[0, 0, 0, 1, 0, 0, 0], pair=(0, 0)", [0, 0, 0, 1, 0, 0, 0], (0, 0), 258),
]


BPE_SOLUTION = """def bpe_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)  # a merge consumes two tokens: [a, a, a] -> [X, a]
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out  # a new list; ids is left alone
"""


@register("check_bpe_merge", minutes=15,
          forbid=('course_lib.tokenizers.merge_pair', 'course_lib.tokenizers.ByteBPETokenizer', 'course_lib.checks'), points=2, reference=BPE_SOLUTION, misconceptions=BPE_MISCONCEPTIONS,
          hint="Walk i from 0: if ids[i], ids[i+1] is the pair, append new_id and jump i += 2; "
               "otherwise append ids[i] and i += 1. Return a new list.")
def check_bpe_merge(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    outs = []
    for label, ids, pair, new_id in _CASES:
        given = list(ids)
        out = call_learner(learner, given, pair, new_id)
        if given != ids:
            raise Mismatch("your function changed the `ids` list it was given", f"case: {label}",
                           "mutates_input")
        outs.append(out)
    for (label, ids, pair, new_id), out in zip(_CASES, outs):
        expected = merge_pair(ids, pair, new_id)
        if not isinstance(out, (list, tuple)):
            hint = " (did you forget a `return`?)" if out is None else ""
            raise Mismatch(f"expected a list of ints, got {type(out).__name__}{hint}", f"case: {label}")
        if list(out) != expected:
            key = next((k for k, f in (("no_skip", _no_skip), ("right_to_left", _right_to_left),
                                       ("first_only", _first_only))
                        if all(list(o) == f(c[1], c[2], c[3]) for o, c in zip(outs, _CASES)
                               if isinstance(o, (list, tuple)))), None)
            raise Mismatch(f"returned {list(out)}, expected {expected}", f"case: {label}", key)
    return len(_CASES)
