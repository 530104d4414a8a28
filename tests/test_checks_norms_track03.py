"""Exercise 03's hand-written backward passes (RMSNorm, LayerNorm), both ways: the checks accept the
printed solution and other correct Functions (float64 inside, saving x instead of x̂, the
setup_context style, einsum), and reject the stub, autograd inside backward, the built-in norms and
each named misconception — written here as a learner would write it, independently of the grader's
own re-creations — with that diagnosis in the message."""
import pytest
import torch
import torch.nn.functional as F

from course_lib import norms
from course_lib.checks import check_layer_norm_backward, check_rms_norm_backward
from course_lib.checks.norms_track03 import _ln_reference, _rms_reference

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

RMS = solved("check_rms_norm_backward", "RMSNormFunction")
LN = solved("check_layer_norm_backward", "LayerNormFunction")


# ------------------------------------------------------------------ the references are PyTorch's own
def test_references_are_pytorch_modules_and_their_autograd():
    g = torch.Generator().manual_seed(0)
    x, dy = torch.randn(3, 4, 8, generator=g, dtype=torch.float64), torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
    w, b = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    for module, ref, args in [(torch.nn.RMSNorm(8, eps=0.1), _rms_reference, (x, w, 0.1)),
                              (torch.nn.LayerNorm(8, eps=0.1), _ln_reference, (x, w, b, 0.1))]:
        module = module.double()
        with torch.no_grad():
            module.weight.copy_(w)
            if module.__class__ is torch.nn.LayerNorm:
                module.bias.copy_(b)
        xx = x.clone().requires_grad_(True)
        y = module(xx)
        y.backward(dy)
        expected = [y.detach(), xx.grad, module.weight.grad] + ([module.bias.grad] if len(args) == 4 else [])
        for got, want in zip(ref(*args, dy), expected):
            torch.testing.assert_close(got, want)


def test_printed_solutions_equal_the_course_library_norms_and_pass_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    r = norms.RMSNorm(6, eps=1e-3).double()
    with torch.no_grad():
        r.weight.copy_(w)
    torch.testing.assert_close(RMS.apply(x, w, 1e-3), r(x))
    assert torch.autograd.gradcheck(RMS.apply, (x, w, 1e-3))
    assert torch.autograd.gradcheck(LN.apply, (x, w, b, 1e-3))


# ------------------------------------------------------------------ correct implementations
class RMSFloat64Inside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        h = x.double()
        return (h / torch.sqrt((h * h).mean(-1, keepdim=True) + eps) * weight.double()).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        h, dy, w = x.double(), grad_out.double(), weight.double()
        ms = (h * h).mean(-1, keepdim=True) + ctx.eps
        rms = ms.sqrt()
        dx = dy * w / rms - h * (dy * w * h).sum(-1, keepdim=True) / (h.shape[-1] * ms * rms)
        dw = (dy * h / rms).flatten(0, -2).sum(0)
        return dx.to(x.dtype), dw.to(weight.dtype), None


class RMSSetupContext(torch.autograd.Function):
    """The newer style: forward without ctx, setup_context saves, einsum for the weight gradient."""
    @staticmethod
    def forward(x, weight, eps):
        return x * (x.square().mean(-1, keepdim=True) + eps).rsqrt() * weight

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, eps = inputs
        ctx.save_for_backward(x, weight)
        ctx.eps = eps

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        r = (x.square().mean(-1, keepdim=True) + ctx.eps).rsqrt()
        gw = grad_out * weight
        dx = r * gw - x * r ** 3 * (gw * x).mean(-1, keepdim=True)
        dweight = torch.einsum("...c,...c->c", grad_out, x * r)
        return dx, dweight, None


@pytest.mark.parametrize("impl", [RMS, RMSFloat64Inside, RMSSetupContext])
def test_rms_accepts_correct_implementations(impl):
    r = check_rms_norm_backward(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


class LNTwoStep(torch.autograd.Function):
    """Backward through the textbook chain: dx̂, then dvar and dmean, then dx (CS231n style)."""
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        ctx.save_for_backward(x, weight, mu, var)
        ctx.eps = eps
        return (x - mu) / torch.sqrt(var + eps) * weight + bias

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mu, var = ctx.saved_tensors
        C = x.shape[-1]
        std = torch.sqrt(var + ctx.eps)
        dxhat = grad_out * weight
        dvar = (dxhat * (x - mu) * -0.5 * std ** -3).sum(-1, keepdim=True)
        dmu = (-dxhat / std).sum(-1, keepdim=True) + dvar * (-2 * (x - mu)).mean(-1, keepdim=True)
        dx = dxhat / std + dvar * 2 * (x - mu) / C + dmu / C
        lead = tuple(range(x.dim() - 1))
        return dx, (grad_out * (x - mu) / std).sum(lead), grad_out.sum(lead), None


@pytest.mark.parametrize("impl", [LN, LNTwoStep])
def test_ln_accepts_correct_implementations(impl):
    r = check_layer_norm_backward(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


# ------------------------------------------------------------------ refused: the built-ins, autograd inside
class RMSViaFunctional(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return F.rms_norm(x, (x.shape[-1],), weight, eps)

    @staticmethod
    def backward(ctx, grad_out):
        return RMS.backward(ctx, grad_out)


class _RMSForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSAutogradGrad(_RMSForward):
    @staticmethod
    def backward(ctx, grad_out):
        x, weight = (t.detach().requires_grad_(True) for t in ctx.saved_tensors)
        with torch.enable_grad():
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ctx.eps) * weight
            return (*torch.autograd.grad(y, (x, weight), grad_out), None)


class RMSTensorBackward(_RMSForward):
    @staticmethod
    def backward(ctx, grad_out):
        x, weight = (t.detach().requires_grad_(True) for t in ctx.saved_tensors)
        with torch.enable_grad():
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ctx.eps) * weight
        y.backward(grad_out)  # found while it runs: a Tensor method
        return x.grad, weight.grad, None


class RMSViaModule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        norm = norms.RMSNorm(x.shape[-1], eps)
        return norm(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None, None


@pytest.mark.parametrize("impl,used", [
    (RMSViaFunctional, "torch.nn.functional.rms_norm"),
    (RMSAutogradGrad, "torch.autograd.grad"),
    (RMSTensorBackward, "torch.Tensor.backward"),
    (RMSViaModule, "course_lib.norms.RMSNorm"),
])
def test_rms_refuses_delegation(impl, used):
    assert_delegates(check_rms_norm_backward(impl), used)


class LNViaFunctional(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        ln = F.layer_norm  # an alias
        return ln(x, (x.shape[-1],), weight, bias, eps)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None, None, None


class LNViaVjp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        ctx.save_for_backward(x, weight, bias)
        ctx.eps = eps
        return LN.forward(ctx, x, weight, bias, eps)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        f = lambda x, w, b: (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + ctx.eps) * w + b
        _, vjp = torch.func.vjp(f, x, weight, bias)
        return (*vjp(grad_out), None)


@pytest.mark.parametrize("impl,used", [(LNViaFunctional, "torch.nn.functional.layer_norm"),
                                       (LNViaVjp, "torch.func")])
def test_ln_refuses_delegation(impl, used):
    assert_delegates(check_layer_norm_backward(impl), used)


def test_stubs_are_not_attempted():
    class RMSNormFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, eps):
            raise NotImplementedError()

        @staticmethod
        def backward(ctx, grad_out):
            raise NotImplementedError()
    assert_not_attempted(check_rms_norm_backward(RMSNormFunction))

    class LayerNormFunction(LN):  # forward written, backward still a stub
        @staticmethod
        def backward(ctx, grad_out):
            raise NotImplementedError()
    assert_not_attempted(check_layer_norm_backward(LayerNormFunction))


# ------------------------------------------------------------------ bad input: explained verdicts
def test_not_a_function_class_is_explained():
    r = check_rms_norm_backward(lambda x, w, eps: x)
    assert not r.passed and "subclass of torch.autograd.Function" in r.message


def test_wrong_number_of_gradients_is_explained():
    class TwoGrads(RMS):
        @staticmethod
        def backward(ctx, grad_out):
            return RMS.backward(ctx, grad_out)[:2]
    r = check_rms_norm_backward(TwoGrads)
    assert not r.passed and "returned 2" in r.message and "dx, dweight, None" in r.message


def test_learner_exception_and_nan_are_reported():
    class Raises(RMS):
        @staticmethod
        def backward(ctx, grad_out):
            x_hat, rstd, weight = ctx.saved_tensors
            return grad_out.reshape(7, -1) * weight, None, None  # 7 rows do not divide the tokens
    r = check_rms_norm_backward(Raises)
    assert not r.passed and "your code raised RuntimeError" in r.message and "Traceback (your code)" in r.detail

    class NaNs(RMS):
        @staticmethod
        def backward(ctx, grad_out):
            dx, dw, _ = RMS.backward(ctx, grad_out)
            return dx * float("nan"), dw, None
    r = check_rms_norm_backward(NaNs)
    assert not r.passed and "NaN" in r.message and "dx" in r.message


# ------------------------------------------------------------------ misconceptions, as a learner writes them
class _RMSLearner(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        rms = torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rms)
        return x / rms * weight


class RMSConstant(_RMSLearner):
    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rms = ctx.saved_tensors
        return grad_out * weight / rms, (grad_out * x / rms).sum(dim=tuple(range(x.dim() - 1))), None


class RMSNotSummed(_RMSLearner):
    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rms = ctx.saved_tensors
        g = grad_out * weight
        dx = g / rms - x * (g * x).mean(-1, keepdim=True) / rms ** 3
        return dx, grad_out * x / rms, None


class RMSEpsOutside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        s = torch.sqrt((x ** 2).mean(-1, keepdim=True))
        ctx.save_for_backward(x, weight, s)
        ctx.eps = eps
        return x / (s + eps) * weight

    @staticmethod
    def backward(ctx, grad_out):  # the right derivative of the wrong formula
        x, weight, s = ctx.saved_tensors
        d = s + ctx.eps
        g = grad_out * weight
        dx = g / d - x * (g * x).sum(-1, keepdim=True) / (d ** 2 * s * x.shape[-1])
        return dx, (grad_out * x / d).flatten(0, -2).sum(0), None


class RMSSumNotMean(_RMSLearner):
    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rms = ctx.saved_tensors
        g = grad_out * weight
        dx = g / rms - x * (g * x).sum(-1, keepdim=True) / rms ** 3
        return dx, (grad_out * x / rms).flatten(0, -2).sum(0), None


class RMSNoWeightInDx(_RMSLearner):
    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rms = ctx.saved_tensors
        dx = grad_out / rms - x * (grad_out * x).mean(-1, keepdim=True) / rms ** 3
        return dx, (grad_out * x / rms).flatten(0, -2).sum(0), None


class RMSMutates(_RMSLearner):
    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rms = ctx.saved_tensors
        grad_out *= weight  # reuses grad_out's memory: changes the caller's tensor
        dx = grad_out / rms - x * (grad_out * x).mean(-1, keepdim=True) / rms ** 3
        return dx, (grad_out / weight * x / rms).flatten(0, -2).sum(0), None


RMS_BAD = {"rms_constant": RMSConstant, "dweight_not_summed": RMSNotSummed, "eps_outside_sqrt": RMSEpsOutside,
           "sum_not_mean": RMSSumNotMean, "no_weight_in_dx": RMSNoWeightInDx, "mutates_input": RMSMutates}


@pytest.mark.parametrize("key", list(RMS_BAD))
def test_rms_diagnoses_each_misconception(key):
    assert_diagnosed(check_rms_norm_backward(RMS_BAD[key]), key)


def test_rms_named_misconceptions_are_all_tested():
    assert_all_tested("check_rms_norm_backward", RMS_BAD)


def _ln_learner(dx_rule, summed=True, unbiased=False):
    class LNLearner(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, eps):
            mu = x.mean(-1, keepdim=True)
            std = torch.sqrt(x.var(-1, unbiased=unbiased, keepdim=True) + eps)
            xn = (x - mu) / std
            ctx.save_for_backward(xn, std, weight)
            return xn * weight + bias

        @staticmethod
        def backward(ctx, grad_out):
            xn, std, weight = ctx.saved_tensors
            dxn = grad_out * weight
            dx = dx_rule(dxn, xn) / std
            if not summed:
                return dx, grad_out * xn, grad_out, None
            return dx, (grad_out * xn).flatten(0, -2).sum(0), grad_out.flatten(0, -2).sum(0), None
    return LNLearner


_full = lambda d, xn: d - d.mean(-1, keepdim=True) - xn * (d * xn).mean(-1, keepdim=True)  # noqa: E731
LN_BAD = {
    "mean_constant": _ln_learner(lambda d, xn: d - xn * (d * xn).mean(-1, keepdim=True)),
    "var_constant": _ln_learner(lambda d, xn: d - d.mean(-1, keepdim=True)),
    "stats_constant": _ln_learner(lambda d, xn: d),
    "params_not_summed": _ln_learner(_full, summed=False),
    "unbiased_variance": None,  # below: its own consistent backward
    "mutates_input": None,
}


class LNUnbiased(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True)  # divides by C - 1
        ctx.save_for_backward(x - mu, var, weight)
        ctx.eps = eps
        return (x - mu) / torch.sqrt(var + eps) * weight + bias

    @staticmethod
    def backward(ctx, grad_out):
        xc, var, weight = ctx.saved_tensors
        C = xc.shape[-1]
        s = torch.sqrt(var + ctx.eps)
        d = grad_out * weight
        dx = (d - d.mean(-1, keepdim=True)) / s - xc * (d * xc).sum(-1, keepdim=True) / ((C - 1) * s ** 3)
        return dx, (grad_out * xc / s).flatten(0, -2).sum(0), grad_out.flatten(0, -2).sum(0), None


class LNMutates(LN):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x -= x.mean(-1, keepdim=True)  # centres the caller's x in place
        return LN.forward(ctx, x, weight, bias, eps)


LN_BAD["unbiased_variance"], LN_BAD["mutates_input"] = LNUnbiased, LNMutates


@pytest.mark.parametrize("key", list(LN_BAD))
def test_ln_diagnoses_each_misconception(key):
    assert_diagnosed(check_layer_norm_backward(LN_BAD[key]), key)


def test_ln_named_misconceptions_are_all_tested():
    assert_all_tested("check_layer_norm_backward", LN_BAD)


# ================================================================== SwiGLU backward
from course_lib.checks import check_swiglu_backward  # noqa: E402
from course_lib.checks.norms_track03 import _swiglu_reference  # noqa: E402

SWIGLU = solved("check_swiglu_backward", "SwiGLUFunction")


def test_swiglu_reference_is_hugging_face_llama_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP
    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=12, hidden_act="silu", num_attention_heads=2, num_key_value_heads=2)).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 5, 8, dtype=torch.float64)
    y = mlp(x)
    y.backward(dy)
    weights = (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    got = _swiglu_reference(x.detach(), *(w.detach() for w in weights), dy)
    for a, b in zip(got, [y.detach(), x.grad] + [w.grad for w in weights]):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(SWIGLU.apply, (x.detach().requires_grad_(), *(w.detach().requires_grad_() for w in weights)))


class SwiGLUEinsum(torch.autograd.Function):
    """Saves only x and the weights (recomputes a and b in backward, as memory-lean kernels do); einsum."""
    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down):
        ctx.save_for_backward(x, w_gate, w_up, w_down)
        return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)

    @staticmethod
    def backward(ctx, grad_out):
        x, wg, wu, wd = ctx.saved_tensors
        a, b = torch.einsum("...c,fc->...f", x, wg), torch.einsum("...c,fc->...f", x, wu)
        s = torch.sigmoid(a)
        dh = torch.einsum("...c,cf->...f", grad_out, wd)
        da, db = dh * b * (s + a * s * (1 - s)), dh * a * s
        dx = torch.einsum("...f,fc->...c", da, wg) + torch.einsum("...f,fc->...c", db, wu)
        return (dx, torch.einsum("...f,...c->fc", da, x), torch.einsum("...f,...c->fc", db, x),
                torch.einsum("...c,...f->cf", grad_out, a * s * b))


class SwiGLUFloat64Inside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down):
        ctx.save_for_backward(x, w_gate, w_up, w_down)
        h, wg, wu, wd = (t.double() for t in (x, w_gate, w_up, w_down))
        return (F.silu(h @ wg.T) * (h @ wu.T) @ wd.T).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, wg, wu, wd = ctx.saved_tensors
        inner = type("Ctx", (), {})()
        inner.save_for_backward = lambda *t: setattr(inner, "saved_tensors", t)
        SWIGLU.forward(inner, *(t.double() for t in (x, wg, wu, wd)))
        return tuple(g.to(x.dtype) for g in SWIGLU.backward(inner, grad_out.double()))


@pytest.mark.parametrize("impl", [SWIGLU, SwiGLUEinsum, SwiGLUFloat64Inside])
def test_swiglu_accepts_correct_implementations(impl):
    r = check_swiglu_backward(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


class SwiGLUAutograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down):
        ctx.save_for_backward(x, w_gate, w_up, w_down)
        return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)

    @staticmethod
    def backward(ctx, grad_out):
        inputs = [t.detach().requires_grad_(True) for t in ctx.saved_tensors]
        with torch.enable_grad():
            y = F.linear(F.silu(F.linear(inputs[0], inputs[1])) * F.linear(inputs[0], inputs[2]), inputs[3])
        return torch.autograd.grad(y, inputs, grad_out)


class SwiGLUViaLibrary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down):
        from course_lib.ffn import GatedFeedForward
        ffn = GatedFeedForward(x.shape[-1], w_gate.shape[0])
        return ffn(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None, None, None


@pytest.mark.parametrize("impl,used", [(SwiGLUAutograd, "torch.autograd.grad"),
                                       (SwiGLUViaLibrary, "course_lib.ffn.GatedFeedForward")])
def test_swiglu_refuses_delegation(impl, used):
    assert_delegates(check_swiglu_backward(impl), used)


def test_swiglu_stub_is_not_attempted():
    class SwiGLUFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w_gate, w_up, w_down):
            raise NotImplementedError()

        @staticmethod
        def backward(ctx, grad_out):
            raise NotImplementedError()
    assert_not_attempted(check_swiglu_backward(SwiGLUFunction))


class _SwiGLULearner(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down):
        gate, up = x @ w_gate.T, x @ w_up.T
        h = F.silu(gate) * up
        ctx.save_for_backward(x, w_gate, w_up, w_down, gate, up)
        return h @ w_down.T

    @staticmethod
    def parts(ctx, grad_out, silu_grad):
        x, wg, wu, wd, gate, up = ctx.saved_tensors
        X, G = x.flatten(0, -2), grad_out.flatten(0, -2)
        gate, up = gate.flatten(0, -2), up.flatten(0, -2)
        dh = G @ wd
        dgate, dup = dh * up * silu_grad(gate), dh * F.silu(gate)
        return X, G, gate, up, dgate, dup


class SwiGLUSigmoidGrad(_SwiGLULearner):
    @staticmethod
    def backward(ctx, grad_out):
        X, G, gate, up, dgate, dup = _SwiGLULearner.parts(ctx, grad_out, torch.sigmoid)
        wg, wu = ctx.saved_tensors[1:3]
        return ((dgate @ wg + dup @ wu).view_as(grad_out), dgate.T @ X, dup.T @ X, G.T @ (F.silu(gate) * up))


def _silu_grad(z):
    s = torch.sigmoid(z)
    return s + z * s * (1 - s)


class SwiGLUGateOnly(_SwiGLULearner):
    @staticmethod
    def backward(ctx, grad_out):
        X, G, gate, up, dgate, dup = _SwiGLULearner.parts(ctx, grad_out, _silu_grad)
        wg = ctx.saved_tensors[1]
        return (dgate @ wg).view_as(grad_out), dgate.T @ X, dup.T @ X, G.T @ (F.silu(gate) * up)


class SwiGLUDownFromGate(_SwiGLULearner):
    @staticmethod
    def backward(ctx, grad_out):
        X, G, gate, up, dgate, dup = _SwiGLULearner.parts(ctx, grad_out, _silu_grad)
        wg, wu = ctx.saved_tensors[1:3]
        return (dgate @ wg + dup @ wu).view_as(grad_out), dgate.T @ X, dup.T @ X, G.T @ F.silu(gate)


class SwiGLUTransposed(_SwiGLULearner):
    @staticmethod
    def backward(ctx, grad_out):
        X, G, gate, up, dgate, dup = _SwiGLULearner.parts(ctx, grad_out, _silu_grad)
        wg, wu = ctx.saved_tensors[1:3]
        return (dgate @ wg + dup @ wu).view_as(grad_out), X.T @ dgate, X.T @ dup, (F.silu(gate) * up).T @ G


class SwiGLUMutates(_SwiGLULearner):
    @staticmethod
    def backward(ctx, grad_out):
        grad_out[..., 0] = 0.0  # zeroes a column of the caller's gradient
        return SwiGLUTransposed.backward(ctx, grad_out)


SWIGLU_BAD = {"silu_grad_is_sigmoid": SwiGLUSigmoidGrad, "dx_gate_branch_only": SwiGLUGateOnly,
              "down_grad_from_gate": SwiGLUDownFromGate, "weight_grads_transposed": SwiGLUTransposed,
              "mutates_input": SwiGLUMutates}


@pytest.mark.parametrize("key", list(SWIGLU_BAD))
def test_swiglu_diagnoses_each_misconception(key):
    assert_diagnosed(check_swiglu_backward(SWIGLU_BAD[key]), key)


def test_swiglu_named_misconceptions_are_all_tested():
    assert_all_tested("check_swiglu_backward", SWIGLU_BAD)
