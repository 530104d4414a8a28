"""Checks for Lesson 12 (inside attention): the previous-token head score. Each misconception
below is a tiny re-creation of the mistake; the check names the one whose outputs equal the
learner's."""
from __future__ import annotations

import torch

from course_lib import analysis as ref
from .cases import Case, grade_function
from .core import register


def _causal_softmax(*shape, gen, dtype=torch.float32):
    T = shape[-1]
    scores = torch.randn(*shape, generator=gen, dtype=dtype) * 2
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, -1)


def _softmax(*shape, gen, dtype=torch.float32):
    return torch.softmax(torch.randn(*shape, generator=gen, dtype=dtype) * 2, -1)


def _shifted(T: int) -> torch.Tensor:
    a = torch.zeros(T, T)
    a[0, 0] = 1.0
    a[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    return a


def _sub(attn, offset):
    return attn.diagonal(offset=offset, dim1=-2, dim2=-1)  # (..., T - |offset|)


PREVIOUS_MISCONCEPTIONS = {
    "diagonal": "you read the main diagonal attn[..., i, i]: that is how much a token attends to "
                "*itself*. The previous token is one column to the left: attn[..., i, i-1], the "
                "diagonal just below the main one (diagonal(offset=-1, dim1=-2, dim2=-1)).",
    "swapped_axes": "you read attn[..., i-1, i] (the diagonal above the main one): rows are "
                    "queries and columns are keys, so that is the weight on the *next* token. Use "
                    "offset=-1 (row i, column i-1).",
    "includes_first_row": "you divided by T, counting query 0 as a zero. Query 0 has no previous "
                          "token, so it is not part of the average: divide by T-1 (or take the "
                          ".mean() of the T-1 entries of the sub-diagonal).",
    "wraps_first_row": "for query 0 you read attn[..., 0, -1]: index -1 wraps round to the *last* "
                       "key. Query 0 has no previous token; start the loop at i = 1 and average "
                       "over the T-1 queries 1..T-1.",
    "sum_not_mean": "you summed over the queries; the score is a mean weight (between 0 and 1): "
                    "divide by the number of queries that have a previous token, T-1.",
    "mean_over_everything": "you averaged over every axis and returned one number. Average only "
                            "over the queries: the result keeps the leading axes, e.g. (B, H) "
                            "for attn of shape (B, H, T, T), one score per head.",
    "wrong_axis": "torch.diagonal takes its diagonal over dims 0 and 1 unless told otherwise, so "
                  "on a (B, H, T, T) tensor you read a batch-by-head 'diagonal'. Pass dim1=-2, "
                  "dim2=-1 (the query and key axes).",
    "mutates_input": "the attention tensor was changed in place.",
}


def _wraps(attn):
    T = attn.size(-1)
    return sum(attn[..., i, i - 1] for i in range(T)) / T


PREVIOUS_SOLUTION = """import torch


def previous_token_score(attn: torch.Tensor) -> torch.Tensor:
    below = attn.diagonal(offset=-1, dim1=-2, dim2=-1)  # (..., T-1): attn[..., i, i-1] for i = 1 .. T-1
    return below.mean(-1)  # (...): query 0 has no previous token, so T-1 terms
"""


@register("check_previous_token_score", minutes=15,
          forbid=('course_lib.analysis.previous_token_score', 'course_lib.analysis.HeadPatterns', 'course_lib.checks'), points=2, reference=PREVIOUS_SOLUTION,
          misconceptions=PREVIOUS_MISCONCEPTIONS,
          hint="Rows are queries, columns keys. The weight query i puts on the token before it is "
               "attn[..., i, i-1], for i = 1..T-1: the sub-diagonal, "
               "attn.diagonal(offset=-1, dim1=-2, dim2=-1), of shape (..., T-1). Average it over "
               "its last axis.")
def check_previous_token_score(learner):
    g = torch.Generator().manual_seed(12)
    cases = [
        Case("bidirectional (BERT-like) attn of shape (2, 3, 6, 6)", (_softmax(2, 3, 6, 6, gen=g),)),
        Case("causal (GPT-like) attn of shape (4, 5, 5)", (_causal_softmax(4, 5, 5, gen=g),)),
        Case("a perfect previous-token head, shape (7, 7): score 1", (_shifted(7),)),
        Case("causal attn of shape (1, 2, 9, 9), float64", (_causal_softmax(1, 2, 9, 9, gen=g, dtype=torch.float64),)),
        Case("two tokens only, shape (3, 2, 2)", (_softmax(3, 2, 2, gen=g),)),
    ]
    variants = {
        "diagonal": lambda a: _sub(a, 0).mean(-1),
        "swapped_axes": lambda a: _sub(a, 1).mean(-1),
        "includes_first_row": lambda a: _sub(a, -1).sum(-1) / a.size(-1),
        "wraps_first_row": _wraps,
        "sum_not_mean": lambda a: _sub(a, -1).sum(-1),
        "mean_over_everything": lambda a: _sub(a, -1).mean(),
        "wrong_axis": lambda a: a.diagonal(offset=-1).mean(-1),
    }
    return grade_function(learner, cases, ref.previous_token_score, variants, ("attn",))
