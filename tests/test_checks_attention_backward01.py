"""Exercise 01's backward pass by hand (course_lib/checks/attention_backward01.py): the printed
solutions and independently written correct versions get full points, stubs are "not attempted",
each misconception (written as a learner would write it) is named, delegation to autograd or to
PyTorch's softmax/attention is refused, and bad results get an explained verdict."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

from course_lib.checks import check_attention_backward, check_attention_function, check_softmax_backward
from course_lib.checks.attention_backward01 import _attention_reference, _softmax_backward_reference


def _own_softmax(x, dim=-1):
    e = (x - x.amax(dim, keepdim=True)).exp()
    return e / e.sum(dim, keepdim=True)


# ================================================================== the references are PyTorch's
def test_softmax_backward_reference_is_autograd_through_f_softmax():
    torch.manual_seed(0)
    for shape, dtype in [((4, 7), torch.float32), ((2, 3, 5), torch.float64)]:
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        dy = torch.randn(shape, dtype=dtype)
        y = F.softmax(x, dim=-1)
        (dx,) = torch.autograd.grad(y, x, dy)
        torch.testing.assert_close(_softmax_backward_reference(y.detach(), dy), dx)


def test_attention_reference_is_an_explicit_autograd_graph():
    """Autograd through SDPA equals autograd through softmax(QK^T·scale + mask)·V written out."""
    torch.manual_seed(0)
    for causal, scale in [(False, None), (True, 0.4)]:
        q, k, v = (torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
        do = torch.randn(2, 5, 4, dtype=torch.float64)
        s = q @ k.transpose(-2, -1) * (scale or 1 / math.sqrt(4))
        if causal:
            s = s.masked_fill(torch.ones(5, 5).triu(1).bool(), float("-inf"))
        o = torch.softmax(s, -1) @ v
        expected = [o.detach(), *torch.autograd.grad(o, (q, k, v), do)]
        for a, b in zip(_attention_reference(q.detach(), k.detach(), v.detach(), do, scale, causal), expected):
            torch.testing.assert_close(a, b)


# ================================================================== softmax_backward
SOFTMAX_BACKWARD = solved("check_softmax_backward")


def softmax_backward_jacobian(y, dy):
    """The full Jacobian diag(y) − y yᵀ per row, in float64."""
    y64, dy64 = y.double(), dy.double()
    jac = torch.diag_embed(y64) - y64.unsqueeze(-1) * y64.unsqueeze(-2)  # (..., T, T), symmetric
    return (jac @ dy64.unsqueeze(-1)).squeeze(-1).to(y.dtype)


def softmax_backward_einsum(y, dy):
    return y * dy - y * torch.einsum("...t,...t->...", y, dy).unsqueeze(-1)


@pytest.mark.parametrize("impl", [SOFTMAX_BACKWARD, softmax_backward_jacobian, softmax_backward_einsum])
def test_softmax_backward_accepts_correct_implementations(impl):
    r = check_softmax_backward(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


def _sb_mutates(y, dy):
    dy -= (dy * y).sum(-1, keepdim=True)  # reuses the caller's dy
    return y * dy


SOFTMAX_BACKWARD_BAD = {
    "diagonal_only": lambda y, dy: dy * y * (1 - y),
    "unweighted_sum": lambda y, dy: y * (dy - dy.sum(dim=-1, keepdim=True)),
    "sum_over_everything": lambda y, dy: y * dy - y * torch.sum(y * dy),
    "mutates_input": _sb_mutates,
}


@pytest.mark.parametrize("key", list(SOFTMAX_BACKWARD_BAD))
def test_softmax_backward_diagnoses_each_misconception(key):
    assert_diagnosed(check_softmax_backward(SOFTMAX_BACKWARD_BAD[key]), key)


def test_softmax_backward_misconceptions_are_all_tested():
    assert_all_tested("check_softmax_backward", SOFTMAX_BACKWARD_BAD)


def _sb_autograd(y, dy):
    x = y.log().detach().requires_grad_(True)  # softmax(log y) = y where y > 0
    with torch.enable_grad():
        out = torch.softmax(x, -1)
    return torch.autograd.grad(out, x, dy)[0]


_kernel = torch._softmax_backward_data


@pytest.mark.parametrize("impl,used", [(_sb_autograd, "torch.autograd.grad"),
                                       (lambda y, dy: _kernel(dy, y, -1, y.dtype), "torch._softmax_backward_data")])
def test_softmax_backward_refuses_delegation(impl, used):
    assert_delegates(check_softmax_backward(impl), used)


def test_softmax_backward_stub_and_bad_results():
    def softmax_backward(y, dy):
        raise NotImplementedError()
    assert_not_attempted(check_softmax_backward(softmax_backward))
    r = check_softmax_backward(lambda y, dy: (y * dy).sum(-1))
    assert not r.passed and "has shape" in r.message
    r = check_softmax_backward(lambda y, dy: y * (dy - (dy * y).sum(-1, keepdim=True)) / 0 * 0)
    assert not r.passed and "NaN" in r.message


# ================================================================== attention_backward
ATTENTION_BACKWARD = solved("check_attention_backward")


def attention_backward_einsum(q, k, v, do, scale=None, causal=False):
    """einsum, the full softmax Jacobian, causal mask as an additive bias."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.einsum("...id,...jd->...ij", q, k) * scale
    if causal:
        T = s.shape[-1]
        s = s + torch.full((T, T), float("-inf"), dtype=s.dtype).triu(1)
    p = _own_softmax(s)
    dv = torch.einsum("...ij,...id->...jd", p, do)
    dp = torch.einsum("...id,...jd->...ij", do, v)
    jac = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (..., T_q, T_k, T_k)
    ds = torch.einsum("...ijk,...ik->...ij", jac, dp)
    return (torch.einsum("...ij,...jd->...id", ds, k) * scale,
            torch.einsum("...ij,...id->...jd", ds, q) * scale, dv)


def attention_backward_float64(q, k, v, do, scale=None, causal=False):
    """float64 inside, scale folded into q first, softmax from its log-sum-exp (FlashAttention's L)."""
    dt = q.dtype
    q, k, v, do = (t.double() for t in (q, k, v, do))
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    qs = q * scale
    s = qs @ k.mT
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).tril().logical_not(), -math.inf)
    lse = torch.logsumexp(s, -1, keepdim=True)
    p = torch.exp(s - lse)
    dp = do @ v.mT
    ds = p * dp - p * (p * dp).sum(-1, keepdim=True)
    return (ds @ k * scale).to(dt), (ds.mT @ qs).to(dt), (p.mT @ do).to(dt)


@pytest.mark.parametrize("impl", [ATTENTION_BACKWARD, attention_backward_einsum, attention_backward_float64])
def test_attention_backward_accepts_correct_implementations(impl):
    r = check_attention_backward(impl)
    assert r.passed and r.points == r.max_points == 4, r.message


def _learner_backward(*, diag=False, scaled=True, dk_t=True, remask=True, dv_t=True):
    """A learner's attention_backward with the switches set to the one mistake."""
    def attention_backward(q, k, v, do, scale=None, causal=False):
        if scale is None:
            scale = 1.0 / q.shape[-1] ** 0.5
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        if causal and remask:
            T = scores.shape[-1]
            scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), float("-inf"))
        P = _own_softmax(scores)
        dV = torch.matmul(P.transpose(-1, -2), do) if dv_t else torch.matmul(P, do)
        dP = torch.matmul(do, v.transpose(-1, -2))
        dS = P * (1 - P) * dP if diag else P * (dP - (P * dP).sum(-1, keepdim=True))
        c = scale if scaled else 1.0
        dK = torch.matmul(dS.transpose(-1, -2), q) if dk_t else torch.matmul(dS, q)
        return torch.matmul(dS, k) * c, dK * c, dV
    return attention_backward


def _ab_mutates(q, k, v, do, scale=None, causal=False):
    q *= (scale or 1 / math.sqrt(q.shape[-1]))  # scales the caller's q in place
    dq, dk, dv = ATTENTION_BACKWARD(q, k, v, do, 1.0, causal)
    return dq * (scale or 1 / math.sqrt(q.shape[-1])), dk, dv


ATTENTION_BACKWARD_BAD = {
    "softmax_diagonal": _learner_backward(diag=True),
    "scale_missing": _learner_backward(scaled=False),
    "dk_not_transposed": _learner_backward(dk_t=False),
    "causal_not_reapplied": _learner_backward(remask=False),
    "dv_not_transposed": _learner_backward(dv_t=False),
    "mutates_input": _ab_mutates,
}


@pytest.mark.parametrize("key", list(ATTENTION_BACKWARD_BAD))
def test_attention_backward_diagnoses_each_misconception(key):
    assert_diagnosed(check_attention_backward(ATTENTION_BACKWARD_BAD[key]), key)


def test_attention_backward_misconceptions_are_all_tested():
    assert_all_tested("check_attention_backward", ATTENTION_BACKWARD_BAD)


def _ab_autograd(q, k, v, do, scale=None, causal=False):
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    with torch.enable_grad():
        s = leaves[0] @ leaves[1].mT * (scale or q.shape[-1] ** -0.5)
        if causal:
            s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
        o = _own_softmax(s) @ leaves[2]
    o.backward(do)
    return tuple(t.grad for t in leaves)


def _ab_sdpa(q, k, v, do, scale=None, causal=False):
    attend = F.scaled_dot_product_attention
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    with torch.enable_grad():
        o = attend(*leaves, is_causal=causal, scale=scale)
    return torch.autograd.grad(o, leaves, do)


def _ab_builtin_softmax(q, k, v, do, scale=None, causal=False):
    scale = scale or q.shape[-1] ** -0.5
    s = q @ k.mT * scale
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    p = s.softmax(-1)
    ds = SOFTMAX_BACKWARD(p, do @ v.mT)
    return ds @ k * scale, ds.mT @ q * scale, p.mT @ do


@pytest.mark.parametrize("impl,used", [(_ab_autograd, "torch.Tensor.backward"),
                                       (_ab_sdpa, "torch.nn.functional.scaled_dot_product_attention"),
                                       (_ab_builtin_softmax, "torch.Tensor.softmax")])
def test_attention_backward_refuses_delegation(impl, used):
    assert_delegates(check_attention_backward(impl), used)


def test_attention_backward_stub_and_bad_results():
    def attention_backward(q, k, v, do, scale=None, causal=False):
        raise NotImplementedError()
    assert_not_attempted(check_attention_backward(attention_backward))

    r = check_attention_backward(lambda q, k, v, do, scale=None, causal=False: ATTENTION_BACKWARD(q, k, v, do)[:2])
    assert not r.passed and "return the three gradients (dq, dk, dv); got 2 values" in r.message

    def raises(q, k, v, do, scale=None, causal=False):
        return q @ v  # (T, D) @ (T, D_v): D != T
    r = check_attention_backward(raises)
    assert not r.passed and "your code raised RuntimeError" in r.message and "Traceback (your code)" in r.detail

    def nan_dv(q, k, v, do, scale=None, causal=False):
        dq, dk, dv = ATTENTION_BACKWARD(q, k, v, do, scale, causal)
        return dq, dk, dv * float("nan")
    r = check_attention_backward(nan_dv)
    assert not r.passed and "dv contains NaN" in r.message


# ================================================================== AttentionFunction
FUNCTION = solved("check_attention_function", "AttentionFunction")


class FunctionSavingP(torch.autograd.Function):
    """Another correct design: save P (no recomputation), einsum, float64 inside the backward."""
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        s = torch.einsum("...id,...jd->...ij", q, k) * scale
        if causal:
            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
        p = _own_softmax(s)
        ctx.save_for_backward(q, k, v, p)
        ctx.scale = scale
        return p @ v

    @staticmethod
    def backward(ctx, do):
        q, k, v, p = (t.double() for t in ctx.saved_tensors)
        do64 = do.double()
        dp = do64 @ v.mT
        ds = p * (dp - (p * dp).sum(-1, keepdim=True))
        dt = do.dtype
        return (ctx.scale * ds @ k).to(dt), (ctx.scale * ds.mT @ q).to(dt), (p.mT @ do64).to(dt), None, None


@pytest.mark.parametrize("impl", [FUNCTION, FunctionSavingP])
def test_function_accepts_correct_implementations(impl):
    r = check_attention_function(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


class FunctionIgnoresOptions(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False):
        ctx.save_for_backward(q, k, v)
        return _own_softmax(q @ k.mT / math.sqrt(q.shape[-1])) @ v

    @staticmethod
    def backward(ctx, do):
        q, k, v = ctx.saved_tensors
        return (*ATTENTION_BACKWARD(q, k, v, do), None, None)


class FunctionMutates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False):
        return FUNCTION.forward(ctx, q, k, v, scale, causal)

    @staticmethod
    def backward(ctx, do):
        q, k, v = ctx.saved_tensors[:3]
        do.mul_(1.0 + 1e-3)  # changes the gradient autograd handed in
        return (*ATTENTION_BACKWARD(q, k, v, do / (1.0 + 1e-3), ctx.scale, ctx.causal), None, None)


def _lse_learner(*, lse_masked=True, backward_masked=True):
    """A learner's FlashAttention-style Function (mask built with triu), with one of two mask mistakes."""
    class AttentionFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, scale=None, causal=False):
            if scale is None:
                scale = q.shape[-1] ** -0.5
            S = torch.matmul(q, k.transpose(-1, -2)) * scale
            future = torch.triu(torch.ones(S.shape[-2], S.shape[-1], dtype=torch.bool), diagonal=1)
            S_masked = S.masked_fill(future, float("-inf")) if causal else S
            L = torch.logsumexp(S_masked if lse_masked else S, dim=-1, keepdim=True)
            O = torch.matmul(torch.exp(S_masked - L), v)
            ctx.save_for_backward(q, k, v, O, L)
            ctx.scale, ctx.causal = scale, causal
            return O

        @staticmethod
        def backward(ctx, dO):
            q, k, v, O, L = ctx.saved_tensors
            S = torch.matmul(q, k.transpose(-1, -2)) * ctx.scale
            if ctx.causal and backward_masked:
                S = S.masked_fill(torch.triu(torch.ones_like(S, dtype=torch.bool), diagonal=1), float("-inf"))
            P = torch.exp(S - L)
            dS = P * (torch.matmul(dO, v.transpose(-1, -2)) - (dO * O).sum(-1, keepdim=True))
            return (torch.matmul(dS, k) * ctx.scale, torch.matmul(dS.transpose(-1, -2), q) * ctx.scale,
                    torch.matmul(P.transpose(-1, -2), dO), None, None)
    return AttentionFunction


def test_the_learner_style_function_without_mistakes_passes():
    r = check_attention_function(_lse_learner())
    assert r.passed, r.message


FUNCTION_BAD = {"options_ignored": FunctionIgnoresOptions, "mutates_input": FunctionMutates,
                "lse_before_mask": _lse_learner(lse_masked=False),
                "backward_not_masked": _lse_learner(backward_masked=False)}


@pytest.mark.parametrize("key", list(FUNCTION_BAD))
def test_function_diagnoses_each_misconception(key):
    assert_diagnosed(check_attention_function(FUNCTION_BAD[key]), key)


def test_function_misconceptions_are_all_tested():
    assert_all_tested("check_attention_function", FUNCTION_BAD)


class FunctionAutograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False):
        return FUNCTION.forward(ctx, q, k, v, scale, causal)

    @staticmethod
    def backward(ctx, do):
        leaves = [t.detach().requires_grad_(True) for t in ctx.saved_tensors[:3]]
        with torch.enable_grad():
            o = FUNCTION.forward(type("Ctx", (), {"save_for_backward": lambda *t: None})(), *leaves,
                                 ctx.scale, ctx.causal)
        return (*torch.autograd.grad(o, leaves, do), None, None)


class FunctionViaTiled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False):
        from course_lib.efficient_attention import tiled_attention
        return tiled_attention(q, k, v, causal=causal, scale=scale)

    @staticmethod
    def backward(ctx, do):
        return do, do, do, None, None


@pytest.mark.parametrize("impl,used", [(FunctionAutograd, "torch.autograd.grad"),
                                       (FunctionViaTiled, "course_lib.efficient_attention")])
def test_function_refuses_delegation(impl, used):
    assert_delegates(check_attention_function(impl), used)


def test_function_stub_and_bad_results():
    class AttentionFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, scale=None, causal=False):
            raise NotImplementedError()

        @staticmethod
        def backward(ctx, do):
            raise NotImplementedError()
    assert_not_attempted(check_attention_function(AttentionFunction))

    r = check_attention_function(ATTENTION_BACKWARD)
    assert not r.passed and "subclass of torch.autograd.Function" in r.message

    class ThreeGrads(FUNCTION):
        @staticmethod
        def backward(ctx, do):
            return FUNCTION.backward(ctx, do)[:3]
    r = check_attention_function(ThreeGrads)
    assert not r.passed and "backward returned 3" in r.message and "dq, dk, dv, None, None" in r.message

    class WrongBackward(FUNCTION):  # consistent with SDPA's values nowhere: dq doubled
        @staticmethod
        def backward(ctx, do):
            dq, dk, dv, _, _ = FUNCTION.backward(ctx, do)
            return 2 * dq, dk, dv, None, None
    r = check_attention_function(WrongBackward)
    assert not r.passed and "dq values differ" in r.message
