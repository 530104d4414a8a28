# ---
# jupyter:
#   jupytext:
#     formats: exercises///ipynb,scripts/exercises///py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] tags=["colab-setup"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/03_ffn_and_norms.ipynb)

# %% tags=["colab-setup"]
# Setup: in Colab this installs the course (about a minute); elsewhere it only checks it is installed.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("course_lib") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/transformers-from-scratch/course.git"], check=True)
    from google.colab import output
    output.enable_custom_widget_manager()  # ipywidgets 8 in Colab
if importlib.util.find_spec("course_lib") is None:
    raise ModuleNotFoundError("course_lib is not installed. In a terminal at the repository root run: "
                              "python -m pip install -e .  (see README.md)")

# %% [markdown]
# # Exercise 03 · FFN, activations and norms
#
# Eight pieces, each followed by its check. Replace each `raise NotImplementedError()` with
# your code and run the check cell: ✅ means it matches the reference on every case; ❌ says
# which case failed and, for common mistakes, *why*. `hint("check_gelu")` gives a nudge,
# `solution("check_gelu")` the answer.
#
# Use basic tensor operations (`mean`, `pow`, `sqrt`/`rsqrt`, `tanh`, `sigmoid`, `nn.Linear`…);
# do not call `F.gelu`, `F.layer_norm`, `nn.LayerNorm`, `F.rms_norm` or `nn.RMSNorm` — writing
# them is the point. Read `notebooks/03_ffn_and_norms.ipynb` first.

# %% [markdown]
# **The exercises here** (about 175 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_gelu` | about 10 min | `torch.nn.functional.gelu`, `torch.nn.GELU`, `course_lib.ffn.gelu`, `course_lib.ffn.gelu_tanh` |
# | `check_layer_norm` | about 15 min | `torch.nn.functional.layer_norm`, `torch.layer_norm`, `torch.nn.LayerNorm`, `course_lib.norms.LayerNorm`, `course_lib.norms.StdEpsLayerNorm` |
# | `check_rms_norm` | about 10 min | `torch.nn.functional.rms_norm`, `torch.rms_norm`, `torch.nn.RMSNorm`, `course_lib.norms.RMSNorm`, `course_lib.norms.T5LayerNorm` |
# | `check_swiglu_ffn` | about 15 min | `course_lib.ffn.GatedFeedForward`, `course_lib.ffn.glu_ffn`, `course_lib.ffn.make_ffn` |
# | `check_pre_norm_block` | about 25 min | `torch.nn.TransformerEncoderLayer`, `course_lib.blocks.Block`, `course_lib.blocks.transformer_block` |
# | `check_rms_norm_backward` | about 35 min | `torch.nn.functional.rms_norm`, `torch.rms_norm`, `torch.nn.RMSNorm`, `torch.nn.functional.layer_norm`, `torch.layer_norm`, `torch.native_layer_norm`, `torch.nn.LayerNorm`, `course_lib.norms`, `torch.autograd.grad`, `torch.autograd.backward`, `torch.Tensor.backward`, `torch.autograd.functional`, `torch.func` |
# | `check_layer_norm_backward` | about 30 min | `torch.nn.functional.rms_norm`, `torch.rms_norm`, `torch.nn.RMSNorm`, `torch.nn.functional.layer_norm`, `torch.layer_norm`, `torch.native_layer_norm`, `torch.nn.LayerNorm`, `course_lib.norms`, `torch.autograd.grad`, `torch.autograd.backward`, `torch.Tensor.backward`, `torch.autograd.functional`, `torch.func` |
# | `check_swiglu_backward` | about 35 min | `torch.autograd.grad`, `torch.autograd.backward`, `torch.Tensor.backward`, `torch.autograd.functional`, `torch.func`, `course_lib.ffn` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import MultiHeadAttention
from course_lib.checks import (check_gelu, check_layer_norm, check_layer_norm_backward, check_pre_norm_block,
                               check_rms_norm, check_rms_norm_backward, check_swiglu_backward, check_swiglu_ffn,
                               hint, solution)
from course_lib.ffn import GatedFeedForward
from course_lib.norms import LayerNorm as ReferenceLayerNorm

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. GELU, tanh form (1 point)
# GPT-2's GELU: $\mathrm{GELU}(x) \approx 0.5\,x\,\big(1 + \tanh\big(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\big)\big)$,
# element-wise, same shape and dtype as `x`.

# %%
def gelu(x: torch.Tensor) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_gelu(gelu)

# %% [markdown]
# ## 2. LayerNorm (2 points)
# A module like `nn.LayerNorm(d, eps)`: parameters `weight` (starts at ones) and `bias`
# (starts at zeros), both of shape (d,). `forward(x)` normalises each token over the **last**
# axis with the **biased** variance (divide by d) and ε **inside** the square root, then
# applies `weight` and `bias`:
# $\;y = \dfrac{x-\mu}{\sqrt{\sigma^2+\epsilon}}\odot\gamma+\beta$.

# %%
class LayerNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_layer_norm(LayerNorm)

# %% [markdown]
# ## 3. RMSNorm (2 points)
# A module with one parameter, `weight` (ones, shape (d,)), and **no** bias:
# $\;y = \dfrac{x}{\sqrt{\mathrm{mean}(x^2)+\epsilon}}\odot\gamma$ over the last axis.
# Like LLaMA, compute in float32 when `x` is float16/bfloat16 and cast the normalised value
# back to `x.dtype` before multiplying by `weight` — the output keeps the input's dtype.

# %%
class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_rms_norm(RMSNorm)

# %% [markdown]
# ## 4. SwiGLU feed-forward (2 points)
# Three `nn.Linear` layers **without bias**, named as in Hugging Face Llama: `gate_proj` and
# `up_proj` (d_model → d_ff) and `down_proj` (d_ff → d_model).
# $\;\mathrm{SwiGLU}(x) = W_{\text{down}}\big(\mathrm{SiLU}(W_{\text{gate}}x)\odot W_{\text{up}}x\big)$,
# with SiLU(z) = z·σ(z) (`F.silu` is allowed).

# %%
class SwiGLUFFN(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_swiglu_ffn(SwiGLUFFN)

# %% [markdown]
# ## 5. A pre-LN block (3 points)
# The sub-modules are built for you (course_lib's reference versions, so this check tests
# only the wiring). Write `forward`: each sub-layer reads a **normalised copy** of the
# stream and its output is **added** to the un-normalised stream:
#
# $$h = x + \mathrm{Attn}(\mathrm{Norm}_1(x), \text{mask}),\qquad y = h + \mathrm{FFN}(\mathrm{Norm}_2(h))$$
#
# Call the attention as `self.attn(h, mask)`.

# %%
class PreNormBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attn_norm = ReferenceLayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ffn_norm = ReferenceLayerNorm(d_model)
        self.ffn = GatedFeedForward(d_model, d_ff)  # SwiGLU

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_pre_norm_block(PreNormBlock)

# %% [markdown]
# ## 6. RMSNorm's backward pass, by hand (3 points)
# Autograd has computed every gradient so far; here you write one yourself, as a
# `torch.autograd.Function` used as `RMSNormFunction.apply(x, weight, eps)`.
#
# * `forward(ctx, x, weight, eps)`: x is (..., C) with any number of leading axes, weight is (C,).
#   Return $\;y = \hat x \odot \gamma,\quad \hat x = x \,/\, \sqrt{\mathrm{mean}(x^2) + \epsilon}\;$ (mean over the
#   last axis, ε inside the root, as in part 3), and keep what backward needs with
#   `ctx.save_for_backward(...)`.
# * `backward(ctx, grad_out)`: grad_out $= \partial L/\partial y$ has x's shape. Return **one entry per
#   input of forward**: `(dx, dweight, None)` — dx of x's shape, dweight of shape **(C,)**, None for
#   the number eps.
#
# Derive dx on paper first: each $x_j$ reaches the loss twice, through its own $\hat x_j$ and
# through the rms that every $\hat x_i$ of its token shares. No autograd inside: `torch.autograd.grad`,
# `.backward()`, `torch.func` and the built-in norms are refused. The check compares your forward
# and gradients with `F.rms_norm` and what autograd computes through it, reads dweight exactly as
# your backward returns it (autograd's engine would quietly sum a (B, T, C) dweight for you, but
# backward's contract is each input's own shape), and runs `torch.autograd.gradcheck` in float64.

# %%
class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        # YOUR CODE HERE
        raise NotImplementedError()


check_rms_norm_backward(RMSNormFunction)

# %% [markdown]
# See it for yourself once it passes: your gradients next to autograd's through the plain formula,
# and `torch.autograd.gradcheck`, which compares your backward with finite differences of your
# forward (float64, where finite differences are accurate).

# %% tolerance={"abs": 1e-12}
def plain_rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def compare_with_autograd(fn, plain, inputs, names):
    """Max |difference| between fn's gradients and autograd's through `plain`, per input."""
    g = torch.Generator().manual_seed(3)
    leaves = [a.clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in inputs]
    tensors = [a for a in leaves if isinstance(a, torch.Tensor)]
    y = fn(*leaves)
    grad_out = torch.randn(y.shape, generator=g, dtype=y.dtype)  # (B, T, C)
    mine = torch.autograd.grad(y, tensors, grad_out)
    theirs = torch.autograd.grad(plain(*leaves), tensors, grad_out)
    for name, a, b in zip(names, mine, theirs):
        print(f"d{name:<7} {tuple(a.shape)!s:<11} max |yours - autograd| = {(a - b).abs().max().item():.1e}")
    print("torch.autograd.gradcheck:", torch.autograd.gradcheck(fn, tuple(leaves)))


x64 = torch.randn(2, 5, 8, dtype=torch.float64)
w64 = 1 + 0.5 * torch.randn(8, dtype=torch.float64)
try:
    compare_with_autograd(RMSNormFunction.apply, plain_rms_norm, (x64, w64, 1e-6), ("x", "weight"))
except NotImplementedError:
    print("write RMSNormFunction first")

# %% [markdown]
# ## 7. LayerNorm's backward pass, by hand (3 points)
# The same for LayerNorm, `LayerNormFunction.apply(x, weight, bias, eps)`:
#
# * `forward(ctx, x, weight, bias, eps)` returns
#   $\;y = \hat x \odot \gamma + \beta,\quad \hat x = (x - \mu)\,/\,\sqrt{\sigma^2 + \epsilon}\;$ with μ and the
#   **biased** σ² over the last axis (part 2's formula);
# * `backward(ctx, grad_out)` returns `(dx, dweight, dbias, None)`, dweight and dbias of shape (C,).
#
# One more quantity now depends on every $x_j$ of the token: count the paths from $x_j$ to the
# loss before you write dx. Same rules and same check as part 6, against `F.layer_norm`.

# %%
class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        # YOUR CODE HERE
        raise NotImplementedError()


check_layer_norm_backward(LayerNormFunction)

# %% tolerance={"abs": 1e-12}
def plain_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt((x - mean).pow(2).mean(-1, keepdim=True) + eps) * weight + bias


b64 = 0.5 * torch.randn(8, dtype=torch.float64)
try:
    compare_with_autograd(LayerNormFunction.apply, plain_layer_norm, (x64, w64, b64, 1e-5), ("x", "weight", "bias"))
except NotImplementedError:
    print("write LayerNormFunction first")

# %% [markdown]
# ## 8. SwiGLU's backward pass, by hand (3 points)
# Part 4's feed-forward as one Function, `SwiGLUFunction.apply(x, w_gate, w_up, w_down)`, with the
# weights in `nn.Linear`'s layout: `w_gate` and `w_up` are (d_ff, C), `w_down` is (C, d_ff).
#
# * `forward(ctx, x, w_gate, w_up, w_down)` returns
#   $\;y = \big(\mathrm{SiLU}(x W_{\text{gate}}^\top) \odot x W_{\text{up}}^\top\big)\, W_{\text{down}}^\top$ for x (..., C),
#   with SiLU(a) = a·σ(a);
# * `backward(ctx, grad_out)` returns `(dx, dw_gate, dw_up, dw_down)`, each of its input's shape;
#   a weight's gradient sums over every token.
#
# Name the forward's intermediate tensors and walk back one step at a time; SiLU's derivative is
# a product rule. No autograd inside, as before; the check compares with autograd through
# `F.linear` and `F.silu` and runs `gradcheck` in float64.

# %%
class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        # YOUR CODE HERE
        raise NotImplementedError()


check_swiglu_backward(SwiGLUFunction)

# %% tolerance={"abs": 1e-12}
def plain_swiglu(x, w_gate, w_up, w_down):
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


weights64 = [torch.randn(12, 8, dtype=torch.float64) / 8 ** 0.5 for _ in range(2)] + \
            [torch.randn(8, 12, dtype=torch.float64) / 12 ** 0.5]
try:
    compare_with_autograd(SwiGLUFunction.apply, plain_swiglu, (x64, *weights64), ("x", "w_gate", "w_up", "w_down"))
except NotImplementedError:
    print("write SwiGLUFunction first")

# %% [markdown]
# ## Done?
# All eight ✅ means 19/19. Want more? Swap your `LayerNorm` into `PreNormBlock` for the
# reference one, switch it to post-LN, and stack 24 of them: lesson 03's section 6 shows what
# to measure. Or build part 4's `SwiGLUFFN` and part 3's `RMSNorm` on your two Functions and check
# a training step against autograd's: the gradients should agree to rounding.
