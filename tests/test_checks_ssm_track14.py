"""Exercise 14's parallel checks, both ways: check_parallel_scan, check_scan_function,
check_chunked_scan, check_discretize_zoh and check_selective_scan_zoh accept the printed solutions and other correct
implementations (Hillis-Steele, Blelloch's up-sweep/down-sweep on a padded power of two, float64
inside, a series for small ΔA, autograd through the scan instead of a custom backward), and reject
the stub, a loop over time, and each named misconception, written here as a learner would write
it, with that diagnosis in the message. The check's reference for the discretisation (the matrix
exponential of the augmented matrix) is held against the closed form here."""
import math

import pytest
import torch

from course_lib import ssm
from course_lib.checks import (check_chunked_scan, check_discretize_zoh, check_parallel_scan, check_scan_function,
                               check_selective_scan_zoh)
from course_lib.checks.ssm_track14 import discretize_reference, scan_reference

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

SCAN = solved("check_parallel_scan")
SCAN_FN = solved("check_scan_function", "ScanFunction")
CHUNKED = solved("check_chunked_scan")
ZOH = solved("check_discretize_zoh")
SELECTIVE = solved("check_selective_scan_zoh")


# ------------------------------------------------------------------ the references
def test_matrix_exp_reference_equals_the_closed_form():
    g = torch.Generator().manual_seed(0)
    delta = torch.rand(2, 5, 3, generator=g, dtype=torch.float64) + 0.1
    A = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 3 - 0.1
    B = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    A_bar, B_bar = discretize_reference(delta, A, B)
    dA = delta[..., None] * A
    torch.testing.assert_close(A_bar, torch.exp(dA))
    torch.testing.assert_close(B_bar, torch.expm1(dA) / dA * delta[..., None] * B[:, :, None, :])
    _, B_lib = ssm.discretize(delta, A, B, "zoh")  # the lesson's library agrees too
    torch.testing.assert_close(B_bar, B_lib)


def test_scan_reference_equals_the_library_scans():
    a = torch.rand(2, 37, 3, dtype=torch.float64)
    b = torch.randn(2, 37, 3, dtype=torch.float64)
    torch.testing.assert_close(scan_reference(a, b), ssm.scan_sequential(a, b))
    torch.testing.assert_close(scan_reference(a, b), ssm.scan_parallel(a, b))


# ------------------------------------------------------------------ correct implementations
def scan_hillis_steele(a, b):
    s = 1
    while s < b.shape[1]:
        a_prev = torch.cat([torch.ones_like(a[:, :s]), a[:, :-s]], 1)
        b_prev = torch.cat([torch.zeros_like(b[:, :s]), b[:, :-s]], 1)
        a, b = a * a_prev, a * b_prev + b
        s *= 2
    return b


def scan_blelloch(a, b):
    """Up-sweep and down-sweep on a copy padded to a power of two (an exclusive scan made inclusive)."""
    T = b.shape[1]
    P = 1 << max(0, math.ceil(math.log2(T)))
    A = torch.cat([a, torch.ones_like(a[:, :1]).expand(-1, P - T, *a.shape[2:])], 1).clone()
    Bv = torch.cat([b, torch.zeros_like(b[:, :1]).expand(-1, P - T, *b.shape[2:])], 1).clone()
    d = 1
    while d < P:  # up-sweep: position i·2d + 2d - 1 holds its block's map
        right = torch.arange(2 * d - 1, P, 2 * d)
        left = right - d
        A[:, right], Bv[:, right] = A[:, left] * A[:, right], A[:, right] * Bv[:, left] + Bv[:, right]
        d *= 2
    A[:, P - 1], Bv[:, P - 1] = 1.0, 0.0  # the identity enters at the root
    d = P // 2
    while d >= 1:  # down-sweep: exclusive prefixes
        right = torch.arange(2 * d - 1, P, 2 * d)
        left = right - d
        a_l, b_l, a_r, b_r = A[:, left].clone(), Bv[:, left].clone(), A[:, right].clone(), Bv[:, right].clone()
        A[:, left], Bv[:, left] = a_r, b_r
        A[:, right], Bv[:, right] = a_r * a_l, a_l * b_r + b_l
        d //= 2
    return (a * Bv[:, :T] + b)  # inclusive: one more step on each exclusive prefix (h_{-1} = 0 at the start)


def scan_float64_inside(a, b):
    return SCAN(a.double(), b.double()).to(b.dtype)


@pytest.mark.parametrize("impl", [SCAN, scan_hillis_steele, scan_blelloch, scan_float64_inside])
def test_parallel_scan_accepts_correct_implementations(impl):
    r = check_parallel_scan(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


class ScanAutogradOfHillisSteele(torch.autograd.Function):
    """Another forward, and a backward written with the reverse Hillis-Steele scan."""

    @staticmethod
    def forward(ctx, a, b):
        h = scan_hillis_steele(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        a_next = torch.nn.functional.pad(a[:, 1:], (0, 0) * (a.dim() - 2) + (0, 1))
        g = scan_hillis_steele(a_next.flip(1), grad_h.flip(1)).flip(1)
        h_prev = torch.nn.functional.pad(h[:, :-1], (0, 0) * (h.dim() - 2) + (1, 0))
        return g * h_prev, g


@pytest.mark.parametrize("impl", [SCAN_FN, ScanAutogradOfHillisSteele])
def test_scan_function_accepts_correct_implementations(impl):
    r = check_scan_function(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


def zoh_series(delta, A, B):
    """(e^x - 1)/x by its series where |x| is small, exactly elsewhere."""
    x = delta[..., None] * A
    small = x.abs() < 1e-3
    x_safe = torch.where(small, torch.ones_like(x), x)
    ratio = torch.where(small, 1 + x / 2 + x * x / 6, (torch.exp(x_safe) - 1) / x_safe)
    return torch.exp(x), ratio * delta[..., None] * B[:, :, None, :]


def zoh_float64(delta, A, B):
    dt = delta.double()[..., None]
    x = dt * A.double()
    ratio = torch.where(x == 0, torch.ones_like(x), torch.expm1(x) / torch.where(x == 0, torch.ones_like(x), x))
    return torch.exp(x).to(delta.dtype), (ratio * B.double()[:, :, None, :] * dt).to(delta.dtype)


def zoh_divide_by_A(delta, A, B):
    """(exp(ΔA) - 1)/A · B: Δ cancels; A = 0 gives Δ·B."""
    dA = delta[..., None] * A
    A_safe = torch.where(A == 0, torch.ones_like(A), A)
    factor = torch.where(A == 0, delta[..., None].expand_as(dA), torch.expm1(dA) / A_safe)
    return torch.exp(dA), factor * B[:, :, None, :]


@pytest.mark.parametrize("impl", [ZOH, zoh_series, zoh_float64, zoh_divide_by_A])
def test_discretize_zoh_accepts_correct_implementations(impl):
    r = check_discretize_zoh(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


def selective_autograd_through_scan(x, delta, A, B, C, D):
    A_bar, B_bar = ZOH(delta, A, B)
    h = scan_hillis_steele(A_bar, B_bar * x[..., None])  # autograd differentiates the scan itself
    return torch.einsum("bten,btn->bte", h, C) + D * x


@pytest.mark.parametrize("impl", [SELECTIVE, selective_autograd_through_scan])
def test_selective_scan_zoh_accepts_correct_implementations(impl):
    r = check_selective_scan_zoh(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


# ------------------------------------------------------------------ stubs, loops, delegation, bad output
def test_stubs_are_not_attempted():
    def stub(*args):
        raise NotImplementedError()

    class ScanFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            raise NotImplementedError()

        @staticmethod
        def backward(ctx, grad_h):
            raise NotImplementedError()

    for check, impl in ((check_parallel_scan, stub), (check_scan_function, ScanFunction), (check_chunked_scan, stub),
                        (check_discretize_zoh, stub), (check_selective_scan_zoh, stub)):
        assert_not_attempted(check(impl))


def scan_loop(a, b):
    h, out = torch.zeros_like(b[:, 0]), []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1)


def scan_chunks_of_16(a, b):
    """Parallel inside chunks of 16 steps, a Python loop over the chunks: still linear in T."""
    h0, out = torch.zeros_like(b[:, 0]), []
    for s in range(0, b.shape[1], 16):
        a_c, b_c = a[:, s:s + 16], b[:, s:s + 16].clone()
        b_c[:, 0] = b_c[:, 0] + a_c[:, 0] * h0
        h = scan_hillis_steele(a_c, b_c)
        out.append(h)
        h0 = h[:, -1]
    return torch.cat(out, 1)


class LoopBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        h = SCAN(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        g, acc = torch.zeros_like(grad_h), torch.zeros_like(grad_h[:, 0])
        for t in reversed(range(grad_h.shape[1])):
            acc = grad_h[:, t] + (a[:, t + 1] * acc if t + 1 < grad_h.shape[1] else 0)
            g[:, t] = acc
        return g * torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1), g


def selective_loop(x, delta, A, B, C, D):
    A_bar, B_bar = ZOH(delta, A, B)
    h = scan_loop(A_bar, B_bar * x[..., None])
    return (h * C[:, :, None, :]).sum(-1) + D * x


@pytest.mark.parametrize("check,impl", [(check_parallel_scan, scan_loop), (check_parallel_scan, scan_chunks_of_16),
                                        (check_scan_function, LoopBackward),
                                        (check_selective_scan_zoh, selective_loop)])
def test_loops_over_time_are_refused(check, impl):
    assert_diagnosed(check(impl), "loops_over_time")


def scan_library(a, b):
    return ssm.scan_parallel(a, b)


lib_scan = ssm.scan_parallel  # an alias made before the check runs


def zoh_matrix_exp(delta, A, B):
    dA = delta[..., None] * A
    M = torch.zeros(*dA.shape, 2, 2)
    M[..., 0, 0], M[..., 0, 1] = dA, delta[..., None] * B[:, :, None, :]
    E = torch.linalg.matrix_exp(M)
    return E[..., 0, 0], E[..., 0, 1]


def zoh_library(delta, A, B):
    return ssm.discretize(delta, A, B, method="zoh")


@pytest.mark.parametrize("check,impl,used", [
    (check_parallel_scan, scan_library, "course_lib.ssm.scan_parallel"),
    (check_parallel_scan, lambda a, b: lib_scan(a, b), "course_lib.ssm.scan_parallel"),
    (check_parallel_scan, scan_reference, "course_lib.checks"),
    (check_discretize_zoh, zoh_matrix_exp, "torch.linalg.matrix_exp"),
    (check_discretize_zoh, zoh_library, "course_lib.ssm.discretize"),
    (check_selective_scan_zoh, lambda x, delta, A, B, C, D: ssm.selective_scan(x, delta, A, B, C, D, "parallel", "zoh"),
     "course_lib.ssm.selective_scan"),
])
def test_refuses_delegation(check, impl, used):
    assert_delegates(check(impl), used)


def test_bad_outputs_are_explained():
    r = check_parallel_scan(lambda a, b: SCAN(a, b)[:, -1])
    assert not r.passed and "shape" in r.message
    r = check_discretize_zoh(lambda delta, A, B: ZOH(delta, A, B)[1])
    assert not r.passed and "two tensors" in r.message
    r = check_scan_function(SCAN)  # a function, not an autograd.Function
    assert_diagnosed(r, "not_a_function")
    r = check_selective_scan_zoh(lambda *args: SELECTIVE(*args).detach())
    assert not r.passed and "gradient" in r.message


# ------------------------------------------------------------------ misconceptions, as a learner writes them
def _hs(a, b, combine, rounds):
    s = 1
    for _ in range(rounds):
        a_prev = torch.cat([torch.ones_like(a[:, :s]), a[:, :-s]], 1)
        b_prev = torch.cat([torch.zeros_like(b[:, :s]), b[:, :-s]], 1)
        a, b = combine(a, b, a_prev, b_prev)
        s *= 2
    return b


def _rounds(T):
    return math.ceil(math.log2(T)) if T > 1 else 0


def scan_wrong_order(a, b):
    return _hs(a, b, lambda a, b, ap, bp: (a * ap, ap * b + bp), _rounds(b.shape[1]))


def scan_too_few_steps(a, b):
    return _hs(a, b, lambda a, b, ap, bp: (a * ap, a * bp + b), int(math.log2(b.shape[1])))


def scan_a_not_composed(a, b):
    return _hs(a, b, lambda a, b, ap, bp: (a, a * bp + b), _rounds(b.shape[1]))


def scan_exclusive(a, b):
    h = SCAN(a, b)
    return torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)  # Blelloch's output, not made inclusive


def scan_cumprod(a, b):
    P = a.cumprod(1)
    return P * (b / P).cumsum(1)


def scan_mutates(a, b):
    b[:, 1:] += 0.0 * b[:, :-1]
    a.clamp_(max=0.9)
    return SCAN(a, b)


SCAN_BAD = {"wrong_combine_order": scan_wrong_order, "too_few_steps": scan_too_few_steps,
            "a_not_composed": scan_a_not_composed, "exclusive": scan_exclusive, "cumprod_division": scan_cumprod,
            "loops_over_time": scan_loop, "mutates_input": scan_mutates}


@pytest.mark.parametrize("key", list(SCAN_BAD))
def test_parallel_scan_diagnoses_each_misconception(key):
    assert_diagnosed(check_parallel_scan(SCAN_BAD[key]), key)


def test_parallel_scan_misconceptions_are_all_tested():
    assert_all_tested("check_parallel_scan", SCAN_BAD)


def _scan_fn(backward):
    class Learner(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            h = SCAN(a, b)
            ctx.save_for_backward(a, h)
            return h

    Learner.backward = staticmethod(backward)
    return Learner


def _shift_left(a):
    return torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], 1)


def _shift_right(h):
    return torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)


def back_unshifted(ctx, grad_h):
    a, h = ctx.saved_tensors
    g = SCAN(a.flip(1), grad_h.flip(1)).flip(1)  # a_t where a_{t+1} belongs
    return g * _shift_right(h), g


def back_h_not_shifted(ctx, grad_h):
    a, h = ctx.saved_tensors
    g = SCAN(_shift_left(a).flip(1), grad_h.flip(1)).flip(1)
    return g * h, g


def back_not_reversed(ctx, grad_h):
    a, h = ctx.saved_tensors
    g = SCAN(_shift_left(a), grad_h)
    return g * _shift_right(h), g


def back_no_accumulation(ctx, grad_h):
    a, h = ctx.saved_tensors
    return grad_h * _shift_right(h), grad_h


SCAN_FN_BAD = {"unshifted_a": _scan_fn(back_unshifted), "h_not_shifted": _scan_fn(back_h_not_shifted),
               "not_reversed": _scan_fn(back_not_reversed), "no_accumulation": _scan_fn(back_no_accumulation),
               "not_a_function": SCAN, "loops_over_time": LoopBackward}


@pytest.mark.parametrize("key", list(SCAN_FN_BAD))
def test_scan_function_diagnoses_each_misconception(key):
    assert_diagnosed(check_scan_function(SCAN_FN_BAD[key]), key)


def test_scan_function_misconceptions_are_all_tested():
    assert_all_tested("check_scan_function", SCAN_FN_BAD)


def zoh_euler(delta, A, B):
    dt = delta.unsqueeze(-1)
    return torch.exp(dt * A), dt * B.unsqueeze(2)  # Mamba's B̄ = ΔB


def zoh_no_division(delta, A, B):
    dt = delta.unsqueeze(-1)
    return torch.exp(dt * A), torch.expm1(dt * A) * dt * B.unsqueeze(2)


def zoh_extra_delta(delta, A, B):
    dt = delta.unsqueeze(-1)
    dA = dt * A
    A_safe = torch.where(A == 0, torch.ones_like(A), A)
    factor = torch.where(A == 0, dt.expand_as(dA), torch.expm1(dA) / A_safe)  # (e^{ΔA} - 1)/A ...
    return torch.exp(dA), factor * dt * B.unsqueeze(2)  # ... times ΔB


def zoh_nan_at_zero(delta, A, B):
    dA = delta.unsqueeze(-1) * A
    return dA.exp(), dA.expm1() / dA * delta.unsqueeze(-1) * B.unsqueeze(2)


def zoh_no_expm1(delta, A, B):
    dA = delta.unsqueeze(-1) * A
    ratio = torch.ones_like(dA)
    nz = dA != 0
    ratio[nz] = (torch.exp(dA[nz]) - 1) / dA[nz]
    return torch.exp(dA), ratio * delta.unsqueeze(-1) * B.unsqueeze(2)


def zoh_euler_A(delta, A, B):
    _, B_bar = ZOH(delta, A, B)
    return 1 + delta.unsqueeze(-1) * A, B_bar


def zoh_mutates(delta, A, B):
    A.clamp_(max=-1e-9)
    return ZOH(delta, A, B)


ZOH_BAD = {"euler_B": zoh_euler, "no_division": zoh_no_division, "extra_delta": zoh_extra_delta,
           "nan_at_zero": zoh_nan_at_zero, "no_expm1": zoh_no_expm1, "euler_A": zoh_euler_A,
           "mutates_input": zoh_mutates}


@pytest.mark.parametrize("key", list(ZOH_BAD))
def test_discretize_zoh_diagnoses_each_misconception(key):
    assert_diagnosed(check_discretize_zoh(ZOH_BAD[key]), key)


def test_discretize_zoh_misconceptions_are_all_tested():
    assert_all_tested("check_discretize_zoh", ZOH_BAD)


def selective_euler(x, delta, A, B, C, D):
    dt = delta.unsqueeze(-1)
    h = SCAN_FN.apply(torch.exp(dt * A), dt * B.unsqueeze(2) * x.unsqueeze(-1))  # part 1's B̄ = ΔB
    return (h * C.unsqueeze(2)).sum(-1) + D * x


def selective_no_skip(x, delta, A, B, C, D):
    A_bar, B_bar = ZOH(delta, A, B)
    h = SCAN_FN.apply(A_bar, B_bar * x.unsqueeze(-1))
    return (h * C.unsqueeze(2)).sum(-1)


def selective_mutates(x, delta, A, B, C, D):
    x.mul_(2)
    return SELECTIVE(x / 2, delta, A, B, C, D)


SELECTIVE_BAD = {"euler_B": selective_euler, "no_skip": selective_no_skip, "loops_over_time": selective_loop,
                 "mutates_input": selective_mutates}


@pytest.mark.parametrize("key", list(SELECTIVE_BAD))
def test_selective_scan_zoh_diagnoses_each_misconception(key):
    assert_diagnosed(check_selective_scan_zoh(SELECTIVE_BAD[key]), key)


def test_selective_scan_zoh_misconceptions_are_all_tested():
    assert_all_tested("check_selective_scan_zoh", SELECTIVE_BAD)


# ------------------------------------------------------------------ the chunked scan
def chunked_pad_and_hillis_steele(a, b, chunk):
    T = b.shape[1]
    K = -(-T // chunk)
    pad = K * chunk - T
    trail = (0, 0) * (a.dim() - 2)
    a = torch.nn.functional.pad(a, trail + (0, pad), value=1.0)
    b = torch.nn.functional.pad(b, trail + (0, pad))
    a_c = a.reshape(a.shape[0], K, chunk, *a.shape[2:])
    b_c = b.reshape(b.shape[0], K, chunk, *b.shape[2:])
    h_local = scan_hillis_steele(a_c.flatten(0, 1), b_c.flatten(0, 1)).view_as(b_c)
    decay = a_c.flatten(0, 1).cumprod(1).view_as(a_c)
    h_end = scan_hillis_steele(decay[:, :, -1], h_local[:, :, -1])
    h_start = torch.nn.functional.pad(h_end[:, :-1], trail + (1, 0))
    return (h_local + decay * h_start[:, :, None]).flatten(1, 2)[:, :T]


def chunked_float64(a, b, chunk):
    return CHUNKED(a.double(), b.double(), chunk).to(b.dtype)


@pytest.mark.parametrize("impl", [CHUNKED, chunked_pad_and_hillis_steele, chunked_float64])
def test_chunked_scan_accepts_correct_implementations(impl):
    r = check_chunked_scan(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


def _chunks(a, b, chunk):
    return [(a[:, s:s + chunk], b[:, s:s + chunk]) for s in range(0, b.shape[1], chunk)]


def chunked_no_carry(a, b, chunk):
    return torch.cat([SCAN(a_c, b_c) for a_c, b_c in _chunks(a, b, chunk)], 1)


def chunked_not_decayed(a, b, chunk):
    out, h = [], torch.zeros_like(b[:, 0])
    for a_c, b_c in _chunks(a, b, chunk):
        local = SCAN(a_c, b_c)
        true = local + a_c.cumprod(1) * h[:, None]
        out.append(local + h[:, None])  # the entering state, not decayed
        h = true[:, -1]
    return torch.cat(out, 1)


def chunked_last_chunk_only(a, b, chunk):
    out, h = [], torch.zeros_like(b[:, 0])
    for a_c, b_c in _chunks(a, b, chunk):
        local = SCAN(a_c, b_c)
        out.append(local + a_c.cumprod(1) * h[:, None])
        h = local[:, -1]  # the previous chunk's end from zero, not the true state
    return torch.cat(out, 1)


def chunked_loop(a, b, chunk):
    out, h = [], torch.zeros_like(b[:, 0])
    for a_c, b_c in _chunks(a, b, chunk):
        local = SCAN(a_c, b_c) + a_c.cumprod(1) * h[:, None]
        out.append(local)
        h = local[:, -1]
    return torch.cat(out, 1)


def chunked_mutates(a, b, chunk):
    b.mul_(2.0)
    return CHUNKED(a, b / 2, chunk)


CHUNKED_BAD = {"no_carry": chunked_no_carry, "carry_not_decayed": chunked_not_decayed,
               "carry_last_chunk_only": chunked_last_chunk_only, "loops_over_time": chunked_loop,
               "mutates_input": chunked_mutates}


@pytest.mark.parametrize("key", list(CHUNKED_BAD))
def test_chunked_scan_diagnoses_each_misconception(key):
    assert_diagnosed(check_chunked_scan(CHUNKED_BAD[key]), key)


def test_chunked_scan_misconceptions_are_all_tested():
    assert_all_tested("check_chunked_scan", CHUNKED_BAD)


def test_chunked_scan_refuses_the_library():
    assert_delegates(check_chunked_scan(lambda a, b, chunk: ssm.scan_parallel(a, b)), "course_lib.ssm.scan_parallel")
