"""Checks for exercise 03's backward passes written by hand: RMSNorm, LayerNorm and the SwiGLU
feed-forward as `torch.autograd.Function` subclasses whose `backward` returns the gradients
without autograd.

The reference is PyTorch's own `F.rms_norm` / `F.layer_norm` / `F.linear` and `F.silu`, and the
gradients autograd computes through them (tests/test_checks_norms_track03.py adds nn.RMSNorm,
nn.LayerNorm and Hugging Face's LlamaMLP). The learner's backward is read *as it returns*, before autograd's engine touches
its result: the engine quietly sums a gradient of a broadcast shape (a dweight of shape (B, T, C)
becomes (C,)), so a spy subclass records what `backward` itself returned. Every case then runs
`torch.autograd.gradcheck` in float64 on the learner's `apply`. The backward may not call autograd
(torch.autograd.grad, Tensor.backward, torch.func, torch.autograd.functional): that is the exercise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cases import function_class, gradcheck, through_engine
from .core import Mismatch, call_learner, compare, diagnose, register, snapshot

# what would do the exercise for the learner: the norms themselves and autograd inside backward
_AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
             "torch.autograd.functional", "torch.func")
_NORMS = ("torch.nn.functional.rms_norm", "torch.rms_norm", "torch.nn.RMSNorm",
          "torch.nn.functional.layer_norm", "torch.layer_norm", "torch.native_layer_norm",
          "torch.nn.LayerNorm", "course_lib.norms")


def _autograd_reference(fn, inputs: tuple, grad_out: torch.Tensor) -> list[torch.Tensor]:
    """[y, d(input) for each tensor input] by autograd through `fn` (PyTorch's own norm)."""
    leaves = [a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in inputs]
    y = fn(*leaves)
    grads = torch.autograd.grad(y, [a for a in leaves if isinstance(a, torch.Tensor)], grad_out)
    return [y.detach(), *grads]


def _grade_function_class(learner, what: str, cases: list[tuple], reference, variants: dict,
                          names: tuple[str, ...]) -> int:
    """cases: (label, inputs, grad_out). `names` names forward's inputs; the tensor ones get a
    gradient, the others (eps) must get None. `reference(*inputs, grad_out)` and each variant return
    [y, grad per tensor input]."""
    cls = function_class(learner, what)
    outs, refs = [], []
    tensor_names = [n for n, a in zip(names, cases[0][1]) if isinstance(a, torch.Tensor)]
    wanted = ", ".join(f"d{n}" if isinstance(a, torch.Tensor) else "None"
                       for n, a in zip(names, cases[0][1]))
    for label, inputs, grad_out in cases:
        refs.append(reference(*inputs, grad_out))
        leaves = tuple(a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a
                       for a in inputs)
        before = snapshot(leaves + (grad_out,))
        y, grads = call_learner(through_engine, cls, leaves, grad_out)
        for a, b, n in zip(leaves + (grad_out,), before, names + ("grad_out",)):
            if b is not None and not torch.equal(a.detach(), b):
                raise Mismatch(f"your code modified `{n}` in place; compute new tensors instead (avoid `*=`, "
                               "`.mul_()`, `[...] =` on inputs and on grad_out)", f"case: {label}", "mutates_input")
        if not isinstance(y, torch.Tensor):
            raise Mismatch(f"forward should return a tensor, got {type(y).__name__}", f"case: {label}")
        if not isinstance(grads, (tuple, list)) or len(grads) != len(names):
            n = len(grads) if isinstance(grads, (tuple, list)) else "one value"
            raise Mismatch(f"backward returned {n}; it must return one entry per input of forward "
                           f"({', '.join(names)}): {wanted}", f"case: {label}")
        for g, n, a in zip(grads, names, inputs):
            if not isinstance(a, torch.Tensor) and g is not None:
                raise Mismatch(f"backward returns a gradient for `{n}`, which is a plain number: return None "
                               "in its place", f"case: {label}")
        outs.append([y] + [g for g, a in zip(grads, inputs) if isinstance(a, torch.Tensor)])
    for (label, inputs, grad_out), out, expected in zip(cases, outs, refs):
        try:
            for o, e, n in zip(out, expected, ["forward's output"] + [f"d{n}" for n in tensor_names]):
                compare(o, e, n)
        except Mismatch as mm:
            runs = {k: (lambda v=v: [t for c in cases for t in v(*c[1], c[2])]) for k, v in variants.items()}
            key = diagnose([t for o in outs for t in o], runs, [t for r in refs for t in r])
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    label, inputs, _ = cases[-1]  # a float64 case
    leaves = tuple(a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in inputs)
    if not call_learner(gradcheck, cls, leaves):
        raise Mismatch("torch.autograd.gradcheck fails: your backward disagrees with finite differences of your "
                       f"forward through {what}.apply (run torch.autograd.gradcheck yourself to see where)",
                       f"case: {label}")
    return len(cases) + 1


def _cases(specs: list[tuple], seed: int, bias: bool) -> list[tuple]:
    """specs: (shape, eps, dtype, scale, shift) -> (label, (x, weight[, bias], eps), grad_out)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for shape, eps, dtype, scale, shift in specs:
        C = shape[-1]
        x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)
        weight = (1.0 + 0.5 * torch.randn(C, generator=g, dtype=torch.float64)).to(dtype)
        params = (weight, (0.5 * torch.randn(C, generator=g, dtype=torch.float64)).to(dtype)) if bias else (weight,)
        grad_out = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        label = f"x of shape {shape} {dtype} (scale {scale}, mean {shift}), eps={eps}, grad_out random"
        cases.append((label, (x, *params, eps), grad_out))
    return cases


def _sum_leading(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.size(-1)).sum(0)  # (..., C) -> (N, C) -> (C,)


# ================================================================== RMSNorm
def _rms_reference(x, weight, eps, grad_out):
    return _autograd_reference(lambda x, w: F.rms_norm(x, (x.size(-1),), w, eps), (x, weight), grad_out)


def _rms_variant(x, weight, eps, grad_out, kind):
    """[y, dx, dweight] with one mistake."""
    if kind == "eps_outside_sqrt":  # a consistent forward and backward of the wrong formula
        return _autograd_reference(lambda x, w: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w,
                                   (x, weight), grad_out)
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
    x_hat = x * rstd  # (..., C)
    g = grad_out if kind == "no_weight_in_dx" else grad_out * weight  # (..., C)
    proj = (g * x_hat).sum(-1, keepdim=True) if kind == "sum_not_mean" else (g * x_hat).mean(-1, keepdim=True)
    dx = rstd * g if kind == "rms_constant" else rstd * (g - x_hat * proj)  # (..., C)
    dweight = grad_out * x_hat if kind == "dweight_not_summed" else _sum_leading(grad_out * x_hat)
    return [x_hat * weight, dx, dweight]


RMS_BACKWARD_MISCONCEPTIONS = {
    "rms_constant": "dx treats the rms as a constant (dx = g·weight / rms). The rms is computed from every "
                    "x_j of the token, so changing x_j also changes the divisor of all the others: "
                    "dx = rstd·(g − x̂·mean(g·x̂)) with g = grad_out·weight.",
    "dweight_not_summed": "dweight has the shape of x: grad_out·x̂ for every token. The weight is shared by "
                          "all tokens, so its gradient is the sum over every axis but the last, shape (C,). "
                          "(autograd's engine would quietly sum it for you; the contract of backward is one "
                          "gradient of each input's own shape.)",
    "eps_outside_sqrt": "the forward divides by sqrt(mean(x²)) + ε. ε belongs inside the root: "
                        "x / sqrt(mean(x²) + ε), as in F.rms_norm and LLaMA.",
    "sum_not_mean": "the rms term of dx uses a sum over the channels where the derivative of mean(x²) "
                    "gives a mean: d rms/dx_j = x_j / (C·rms), so it is x̂·mean(g·x̂), not x̂·sum(g·x̂).",
    "no_weight_in_dx": "dx is computed from grad_out alone; the gradient reaching x̂ is grad_out·weight "
                       "(y = x̂·weight), so start from g = grad_out * weight.",
    "mutates_input": "an input or grad_out was changed in place; autograd may hand the same grad_out to "
                     "other functions, so compute new tensors.",
}

RMS_BACKWARD_SOLUTION = """import torch


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1): 1 / rms of each token
        x_hat = x * rstd  # (..., C): root mean square 1
        ctx.save_for_backward(x_hat, rstd, weight)
        return x_hat * weight  # (..., C)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x_hat, rstd, weight = ctx.saved_tensors
        g = grad_out * weight  # (..., C): dL/dx_hat
        # rstd depends on every x_j of the token: the second term is that path, d rms/dx_j = x_j / (C·rms)
        dx = rstd * (g - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))  # (..., C)
        dweight = (grad_out * x_hat).reshape(-1, x_hat.size(-1)).sum(dim=0)  # (N, C) -> (C,): every token
        return dx, dweight, None  # eps is a number: no gradient
"""


@register("check_rms_norm_backward", minutes=35, points=3, reference=RMS_BACKWARD_SOLUTION,
          forbid=_NORMS + _AUTOGRAD + ("course_lib.checks",), misconceptions=RMS_BACKWARD_MISCONCEPTIONS,
          hint="Write x̂ = x·r with r = 1/sqrt(mean(x²) + ε) and follow the chain rule for one token on "
               "paper: x_j reaches the loss directly through x̂_j and again through r, which every x̂_i "
               "shares. The weight is shared by all tokens.",
          idea="With g = grad_out·weight: dx = r·(g − x̂·mean(g·x̂, -1)), because ∂r/∂x_j = −r³·x_j / C. "
               "dweight = (grad_out·x̂) summed over every axis but the last, shape (C,). Save x̂, r and "
               "weight in forward (ctx.save_for_backward) and return (dx, dweight, None).")
def check_rms_norm_backward(learner):
    specs = [((2, 5, 16), 1e-6, torch.float32, 3.0, 1.0),
             ((6, 12), 1e-5, torch.float32, 0.3, 0.0),  # 2-D: tokens × channels
             ((2, 2, 3, 8), 1e-6, torch.float32, 1.0, 0.0),  # dweight sums over three axes
             ((3, 4, 8), 0.1, torch.float64, 1.0, 0.0)]  # ε large enough to matter; float64 for gradcheck
    variants = {k: (lambda x, w, eps, g, k=k: _rms_variant(x, w, eps, g, k))
                for k in RMS_BACKWARD_MISCONCEPTIONS if k != "mutates_input"}
    return _grade_function_class(learner, "RMSNormFunction", _cases(specs, 301, bias=False), _rms_reference,
                                 variants, ("x", "weight", "eps"))


# ================================================================== LayerNorm
def _ln_reference(x, weight, bias, eps, grad_out):
    return _autograd_reference(lambda x, w, b: F.layer_norm(x, (x.size(-1),), w, b, eps),
                               (x, weight, bias), grad_out)


def _ln_variant(x, weight, bias, eps, grad_out, kind):
    """[y, dx, dweight, dbias] with one mistake."""
    if kind == "unbiased_variance":
        return _autograd_reference(
            lambda x, w, b: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b,
            (x, weight, bias), grad_out)
    mean = x.mean(-1, keepdim=True)  # (..., 1)
    rstd = torch.rsqrt((x - mean).pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
    x_hat = (x - mean) * rstd  # (..., C)
    g = grad_out * weight  # (..., C)
    mean_term = 0 if kind in ("mean_constant", "stats_constant") else g.mean(-1, keepdim=True)
    var_term = 0 if kind in ("var_constant", "stats_constant") else x_hat * (g * x_hat).mean(-1, keepdim=True)
    dx = rstd * (g - mean_term - var_term)  # (..., C)
    summed = (lambda t: t) if kind == "params_not_summed" else _sum_leading
    return [x_hat * weight + bias, dx, summed(grad_out * x_hat), summed(grad_out)]


LN_BACKWARD_MISCONCEPTIONS = {
    "mean_constant": "dx misses the path through the mean: μ depends on every x_j, so dx has a "
                     "− mean(g) term: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).",
    "var_constant": "dx misses the path through the variance: σ² depends on every x_j, so dx has a "
                    "− x̂·mean(g·x̂) term: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).",
    "stats_constant": "dx treats the mean and the variance as constants (dx = g·rstd); both are computed "
                      "from every x_j of the token: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).",
    "params_not_summed": "dweight and dbias have the shape of x. weight and bias are shared by all tokens, "
                         "so their gradients are sums over every axis but the last, shape (C,). (autograd's "
                         "engine would quietly sum them; backward's contract is each input's own shape.)",
    "unbiased_variance": "the forward divides the variance by C − 1 (torch.var's default). LayerNorm uses "
                         "the biased variance, a mean over C.",
    "mutates_input": "an input or grad_out was changed in place; autograd may hand the same grad_out to "
                     "other functions, so compute new tensors.",
}

LN_BACKWARD_SOLUTION = """import torch


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # (..., 1): biased
        rstd = torch.rsqrt(var + eps)  # (..., 1)
        x_hat = (x - mean) * rstd  # (..., C): mean 0, variance 1 per token
        ctx.save_for_backward(x_hat, rstd, weight)
        return x_hat * weight + bias  # (..., C)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x_hat, rstd, weight = ctx.saved_tensors
        g = grad_out * weight  # (..., C): dL/dx_hat
        # three paths from x_j: directly, through the mean (− mean(g)), through the variance (− x̂·mean(g·x̂))
        dx = rstd * (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
        C = x_hat.size(-1)
        dweight = (grad_out * x_hat).reshape(-1, C).sum(dim=0)  # (N, C) -> (C,)
        dbias = grad_out.reshape(-1, C).sum(dim=0)  # (N, C) -> (C,)
        return dx, dweight, dbias, None
"""


@register("check_layer_norm_backward", minutes=30, points=3, reference=LN_BACKWARD_SOLUTION,
          forbid=_NORMS + _AUTOGRAD + ("course_lib.checks",), misconceptions=LN_BACKWARD_MISCONCEPTIONS,
          hint="Same road as RMSNorm's backward, with one more quantity that depends on every x_j of the "
               "token: count the paths from x_j to x̂_i.",
          idea="With g = grad_out·weight and x̂ = (x − μ)·r: dx = r·(g − mean(g) − x̂·mean(g·x̂)) (the "
               "middle term is the path through μ, the last through σ²). dweight = Σ grad_out·x̂ and "
               "dbias = Σ grad_out over every axis but the last; return (dx, dweight, dbias, None).")
def check_layer_norm_backward(learner):
    specs = [((2, 5, 16), 1e-5, torch.float32, 3.0, 1.0),
             ((6, 12), 1e-5, torch.float32, 0.5, -2.0),
             ((2, 2, 3, 8), 1e-5, torch.float32, 1.0, 0.5),
             ((3, 4, 8), 0.1, torch.float64, 1.0, 0.0)]
    variants = {k: (lambda x, w, b, eps, g, k=k: _ln_variant(x, w, b, eps, g, k))
                for k in LN_BACKWARD_MISCONCEPTIONS if k != "mutates_input"}
    return _grade_function_class(learner, "LayerNormFunction", _cases(specs, 302, bias=True), _ln_reference,
                                 variants, ("x", "weight", "bias", "eps"))


# ================================================================== SwiGLU
def _swiglu_reference(x, w_gate, w_up, w_down, grad_out):
    return _autograd_reference(lambda x, wg, wu, wd: F.linear(F.silu(F.linear(x, wg)) * F.linear(x, wu), wd),
                               (x, w_gate, w_up, w_down), grad_out)


def _swiglu_variant(x, w_gate, w_up, w_down, grad_out, kind):
    """[y, dx, dw_gate, dw_up, dw_down] with one mistake."""
    C = x.size(-1)
    x2, g2 = x.reshape(-1, C), grad_out.reshape(-1, C)  # (N, C)
    a, b = x2 @ w_gate.t(), x2 @ w_up.t()  # (N, F)
    sig = torch.sigmoid(a)
    h = a * sig * b  # (N, F)
    dh = g2 @ w_down  # (N, F)
    da = dh * b * (sig if kind == "silu_grad_is_sigmoid" else sig * (1 + a * (1 - sig)))
    db = dh * a * sig
    dx = da @ w_gate if kind == "dx_gate_branch_only" else da @ w_gate + db @ w_up  # (N, C)
    dw_down = g2.t() @ (a * sig if kind == "down_grad_from_gate" else h)  # (C, F)
    dw_gate, dw_up = da.t() @ x2, db.t() @ x2  # (F, C)
    if kind == "weight_grads_transposed":
        dw_gate, dw_up, dw_down = dw_gate.t(), dw_up.t(), dw_down.t()
    return [(h @ w_down.t()).reshape(x.shape), dx.reshape(x.shape), dw_gate, dw_up, dw_down]  # (N, C) -> x's


SWIGLU_BACKWARD_MISCONCEPTIONS = {
    "silu_grad_is_sigmoid": "the derivative of SiLU is taken as σ(a). SiLU(a) = a·σ(a) is a product: its "
                            "derivative is σ(a) + a·σ(a)·(1 − σ(a)) = σ(a)·(1 + a·(1 − σ(a))).",
    "dx_gate_branch_only": "dx has only the gate branch. x feeds both projections, so both gradients reach it: "
                           "dx = da @ w_gate + db @ w_up.",
    "down_grad_from_gate": "dw_down uses SiLU(a); down_proj's input is the product h = SiLU(a)·b, so "
                           "dw_down = grad_outᵀ @ h.",
    "weight_grads_transposed": "the weight gradients are transposed: each must have its weight's shape, "
                               "nn.Linear's (out_features, in_features): dw_gate = daᵀ @ x, (d_ff, d_model).",
    "mutates_input": "an input or grad_out was changed in place; autograd may hand the same grad_out to "
                     "other functions, so compute new tensors.",
}

SWIGLU_BACKWARD_SOLUTION = """import torch


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
        a = x @ w_gate.t()  # (..., F): the gate's pre-activation
        b = x @ w_up.t()  # (..., F)
        ctx.save_for_backward(x, w_gate, w_up, w_down, a, b)
        return (a * torch.sigmoid(a) * b) @ w_down.t()  # (..., C)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, w_gate, w_up, w_down, a, b = ctx.saved_tensors
        x2, g2 = x.reshape(-1, x.size(-1)), grad_out.reshape(-1, grad_out.size(-1))  # (N, C): all tokens
        a, b = a.reshape(-1, a.size(-1)), b.reshape(-1, b.size(-1))  # (N, F)
        sig = torch.sigmoid(a)
        dh = g2 @ w_down  # (N, F): the gradient at down_proj's input h = silu(a)·b
        da = dh * b * sig * (1 + a * (1 - sig))  # (N, F): silu'(a) = σ(a)·(1 + a·(1 − σ(a)))
        db = dh * a * sig  # (N, F)
        dx = (da @ w_gate + db @ w_up).reshape(x.shape)  # (N, C) -> (..., C): x feeds both branches
        dw_down = g2.t() @ (a * sig * b)  # (C, F), summed over the tokens by the matmul
        return dx, da.t() @ x2, db.t() @ x2, dw_down  # weight gradients (F, C), (F, C), (C, F)
"""


@register("check_swiglu_backward", minutes=35, points=3, reference=SWIGLU_BACKWARD_SOLUTION,
          forbid=_AUTOGRAD + ("course_lib.ffn", "course_lib.checks"), misconceptions=SWIGLU_BACKWARD_MISCONCEPTIONS,
          hint="Name the intermediate tensors of the forward (a = x·W_gateᵀ, b = x·W_upᵀ, h = silu(a)·b) and "
               "walk back from y = h·W_downᵀ one step at a time. For y = u·Wᵀ: du = dy·W and dW = dyᵀ·u.",
          idea="dh = grad_out @ w_down; da = dh·b·σ(a)·(1 + a·(1 − σ(a))); db = dh·silu(a); dx = da @ w_gate + "
               "db @ w_up; dw_gate = daᵀ @ x, dw_up = dbᵀ @ x, dw_down = grad_outᵀ @ h, with the tokens "
               "flattened to (N, ·) so the matmuls sum over them.")
def check_swiglu_backward(learner):
    g = torch.Generator().manual_seed(303)
    cases = []
    for shape, d_ff, dtype in [((2, 5, 8), 12, torch.float32), ((6, 8), 16, torch.float32),
                               ((2, 3, 4), 6, torch.float64)]:
        C = shape[-1]
        r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
        x, wg, wu, wd = r(*shape), r(d_ff, C) / C ** 0.5, r(d_ff, C) / C ** 0.5, r(C, d_ff) / d_ff ** 0.5
        cases.append((f"x of shape {shape} {dtype}, d_ff={d_ff}, grad_out random",
                      tuple(t.to(dtype) for t in (x, wg, wu, wd)), r(*shape).to(dtype)))
    variants = {k: (lambda x, wg, wu, wd, go, k=k: _swiglu_variant(x, wg, wu, wd, go, k))
                for k in SWIGLU_BACKWARD_MISCONCEPTIONS if k != "mutates_input"}
    return _grade_function_class(learner, "SwiGLUFunction", cases, _swiglu_reference, variants,
                                 ("x", "w_gate", "w_up", "w_down"))
