"""Lesson 14's check, both ways: check_selective_scan accepts the reference and other correct
implementations (the library's parallel scan, an einsum loop, float64 inside, a per-channel loop),
and rejects the stub and each named misconception — written here as a learner would write it,
independently of the grader's own re-creations — with that diagnosis in the message."""
import pytest
import torch

from course_lib import ssm
from course_lib.checks import check_selective_scan
from course_lib.checks.ssm import selective_scan_reference

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

SCAN = solved("check_selective_scan")  # the printed learner-level answer


# ------------------------------------------------------------------ correct implementations
def scan_einsum(x, delta, A, B, C, D):
    Bsz, T, E = x.shape
    state = torch.zeros(Bsz, E, A.shape[1], dtype=x.dtype)
    out = []
    for t in range(T):
        dA = torch.exp(torch.einsum("be,en->ben", delta[:, t], A))
        dBx = torch.einsum("be,bn,be->ben", delta[:, t], B[:, t], x[:, t])
        state = dA * state + dBx
        out.append(torch.einsum("ben,bn->be", state, C[:, t]) + x[:, t] * D)
    return torch.stack(out, 1)


def scan_float64_inside(x, delta, A, B, C, D):
    return SCAN(*(a.double() for a in (x, delta, A, B, C, D))).to(x.dtype)


def scan_with_library_recurrence(x, delta, A, B, C, D):
    """Discretise and read out by hand, but leave the recurrence h_t = a_t h_(t-1) + b_t, the heart of
    the exercise, to lesson 14's scan_sequential: refused."""
    dt = delta.unsqueeze(-1)  # (B, T, E, 1)
    a = torch.exp(dt * A)  # (B, T, E, N)
    b = dt * B.unsqueeze(2) * x.unsqueeze(-1)  # (B, T, E, N)
    h = ssm.scan_sequential(a, b)  # (B, T, E, N)
    return (h * C.unsqueeze(2)).sum(-1) + D * x


def scan_per_channel(x, delta, A, B, C, D):
    y = torch.empty_like(x)
    for e in range(x.shape[2]):
        h = torch.zeros(x.shape[0], A.shape[1], dtype=x.dtype)
        for t in range(x.shape[1]):
            d = delta[:, t, e:e + 1]
            h = torch.exp(d * A[e]) * h + d * B[:, t] * x[:, t, e:e + 1]
            y[:, t, e] = (h * C[:, t]).sum(-1) + D[e] * x[:, t, e]
    return y


@pytest.mark.parametrize("impl", [SCAN, scan_einsum, scan_float64_inside, scan_per_channel])
def test_accepts_correct_implementations(impl):
    r = check_selective_scan(impl)
    assert r.passed and r.points == r.max_points == 4, r.message


def scan_library_parallel(x, delta, A, B, C, D):
    return ssm.selective_scan(x, delta, A, B, C, D, mode="parallel")


@pytest.mark.parametrize("impl,used", [
    (scan_library_parallel, "course_lib.ssm.selective_scan"),
    (selective_scan_reference, "course_lib.checks.ssm.selective_scan_reference"),
    (scan_with_library_recurrence, "course_lib.ssm.scan_sequential"),
])
def test_refuses_delegation(impl, used):
    assert_delegates(check_selective_scan(impl), used)


def test_stub_is_not_attempted():
    def selective_scan(x, delta, A, B, C, D):
        raise NotImplementedError()
    assert_not_attempted(check_selective_scan(selective_scan))


def test_wrong_shape_is_explained():
    r = check_selective_scan(lambda x, delta, A, B, C, D: SCAN(x, delta, A, B, C, D)[:, -1])
    assert not r.passed and "shape" in r.message


# ------------------------------------------------------------------ misconceptions, as a learner writes them
def _learner(x, delta, A, B, C, D, step):
    """A learner's loop whose one step is `step(h, t, dt) -> (new_h, y_t)`."""
    h = torch.zeros(x.shape[0], x.shape[2], A.shape[1], dtype=x.dtype)
    ys = []
    for t in range(x.shape[1]):
        h, y = step(h, t, delta[:, t].unsqueeze(-1))
        ys.append(y)
    return torch.stack(ys, dim=1)


def raw_A(x, delta, A, B, C, D):
    def step(h, t, dt):
        h = A * h + dt * B[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)
        return h, (h * C[:, t].unsqueeze(1)).sum(-1) + D * x[:, t]
    return _learner(x, delta, A, B, C, D, step)


def no_delta_in_A(x, delta, A, B, C, D):
    def step(h, t, dt):
        h = A.exp() * h + dt * B[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)
        return h, (h * C[:, t].unsqueeze(1)).sum(-1) + D * x[:, t]
    return _learner(x, delta, A, B, C, D, step)


def no_delta_in_B(x, delta, A, B, C, D):
    def step(h, t, dt):
        h = (dt * A).exp() * h + B[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)
        return h, (h * C[:, t].unsqueeze(1)).sum(-1) + D * x[:, t]
    return _learner(x, delta, A, B, C, D, step)


def state_not_carried(x, delta, A, B, C, D):
    def step(h, t, dt):
        h_t = dt * B[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)  # forgot Ā · h
        return h, (h_t * C[:, t].unsqueeze(1)).sum(-1) + D * x[:, t]
    return _learner(x, delta, A, B, C, D, step)


def output_before_update(x, delta, A, B, C, D):
    def step(h, t, dt):
        y = (h * C[:, t].unsqueeze(1)).sum(-1) + D * x[:, t]
        h = (dt * A).exp() * h + dt * B[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)
        return h, y
    return _learner(x, delta, A, B, C, D, step)


def swapped_B_C(x, delta, A, B, C, D):
    def step(h, t, dt):
        h = (dt * A).exp() * h + dt * C[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)  # C writes ...
        return h, (h * B[:, t].unsqueeze(1)).sum(-1) + D * x[:, t]  # ... and B reads
    return _learner(x, delta, A, B, C, D, step)


def no_skip(x, delta, A, B, C, D):
    def step(h, t, dt):
        h = (dt * A).exp() * h + dt * B[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)
        return h, (h * C[:, t].unsqueeze(1)).sum(-1)  # forgot + D * x_t
    return _learner(x, delta, A, B, C, D, step)


def mutates_input(x, delta, A, B, C, D):
    x.mul_(1.0).add_(0.5)
    return SCAN(x, delta, A, B, C, D)


BAD = {"raw_A": raw_A, "no_delta_in_A": no_delta_in_A, "no_delta_in_B": no_delta_in_B,
       "state_not_carried": state_not_carried, "output_before_update": output_before_update,
       "swapped_B_C": swapped_B_C, "no_skip": no_skip, "mutates_input": mutates_input}


@pytest.mark.parametrize("key", list(BAD))
def test_diagnoses_each_misconception(key):
    assert_diagnosed(check_selective_scan(BAD[key]), key)


def test_named_misconceptions_are_all_tested():
    assert_all_tested("check_selective_scan", BAD)
