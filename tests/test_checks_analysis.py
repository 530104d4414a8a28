"""check_previous_token_score, both ways: correct implementations pass, the stub is not
attempted, and each named misconception, written as a learner would write it, is diagnosed."""
import pytest
import torch

from course_lib.analysis import previous_token_score
from course_lib.checks import check_previous_token_score

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


# ------------------------------------------------------------------ correct, written differently
def with_a_loop(attn):
    T = attn.shape[-1]
    total = torch.zeros(attn.shape[:-2], dtype=attn.dtype)
    for i in range(1, T):
        total = total + attn[..., i, i - 1]
    return total / (T - 1)


def with_a_mask(attn):
    T = attn.shape[-1]
    below = torch.ones(T, T, dtype=torch.bool).tril(-1) & ~torch.ones(T, T, dtype=torch.bool).tril(-2)
    return (attn * below).sum((-2, -1)) / (T - 1)


def with_gather(attn):
    T = attn.shape[-1]
    idx = torch.arange(T - 1)
    return attn[..., idx + 1, idx].mean(-1)


@pytest.mark.parametrize("impl", [solved("check_previous_token_score"), with_a_loop, with_a_mask, with_gather])
def test_accepts_correct_implementations(impl):
    r = check_previous_token_score(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


score = previous_token_score  # the course's answer under an alias


@pytest.mark.parametrize("impl", [previous_token_score, lambda attn: score(attn)])
def test_refuses_delegation(impl):
    assert_delegates(check_previous_token_score(impl), "course_lib.analysis.previous_token_score")


def test_stub_is_not_attempted():
    def previous_token_score(attn):
        raise NotImplementedError()
    r = check_previous_token_score(previous_token_score)
    assert_not_attempted(r)


# ------------------------------------------------------------------ mistakes, as a learner writes them
def self_attention_diagonal(attn):
    return torch.diagonal(attn, dim1=-2, dim2=-1).mean(-1)


def next_token(attn):
    T = attn.shape[-1]
    return sum(attn[..., i - 1, i] for i in range(1, T)) / (T - 1)


def divide_by_T(attn):
    T = attn.shape[-1]
    total = 0
    for i in range(1, T):
        total = total + attn[..., i, i - 1]
    return total / T


def loop_from_zero(attn):
    T = attn.shape[-1]
    total = 0
    for i in range(T):
        total = total + attn[..., i, i - 1]
    return total / T


def summed(attn):
    return attn.diagonal(-1, -2, -1).sum(-1)


def one_number(attn):
    return attn.diagonal(-1, -2, -1).mean()


def default_diagonal_dims(attn):
    return torch.diagonal(attn, -1).mean(-1)


def in_place(attn):
    attn[..., 0, 0] = 0.0  # "query 0 has no previous token": zeroed on the caller's tensor
    return attn.diagonal(-1, -2, -1).mean(-1)


MISTAKES = [(self_attention_diagonal, "diagonal"), (next_token, "swapped_axes"),
            (divide_by_T, "includes_first_row"), (loop_from_zero, "wraps_first_row"),
            (summed, "sum_not_mean"), (one_number, "mean_over_everything"),
            (default_diagonal_dims, "wrong_axis"), (in_place, "mutates_input")]


@pytest.mark.parametrize("impl,key", MISTAKES)
def test_diagnoses(impl, key):
    assert_diagnosed(check_previous_token_score(impl), key)


def test_every_named_misconception_is_tested():
    assert_all_tested("check_previous_token_score", {k for _, k in MISTAKES})
