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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/01_attention.ipynb)

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
# # Exercise 01 · Attention
#
# Five parts, each followed by its check. Replace each `raise NotImplementedError()` with
# your code and run the check cell: ✅ means it matches the reference on every case; ❌ says
# which case failed and, for common mistakes, *why*. `hint("check_softmax")` gives a nudge,
# `solution("check_softmax")` the answer.
#
# Use only basic tensor operations (`@`, `exp`, `sum`, `masked_fill`, `view`, `transpose`…);
# do not call `torch.softmax` or `F.scaled_dot_product_attention` — writing them is the point.
# Part 5 writes attention's backward pass by hand, so there autograd is off limits too.
# Read `notebooks/01_attention.ipynb` first.

# %% [markdown]
# **The exercises here** (about 145 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_softmax` | about 15 min | `torch.softmax`, `torch.nn.functional.softmax`, `torch.Tensor.softmax`, `torch.special.softmax`, `torch.nn.Softmax`, `torch.log_softmax`, `torch.nn.functional.log_softmax`, `torch.Tensor.log_softmax`, `course_lib.attention.softmax` |
# | `check_scaled_dot_product_attention` | about 20 min | `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`, `torch.nn.functional.multi_head_attention_forward`, `course_lib.attention.scaled_dot_product_attention`, `course_lib.attention.attend`, `course_lib.attention.attention_weights`, `course_lib.attention.MultiHeadAttention`, `course_lib.efficient_attention.online_softmax_attention`, `course_lib.efficient_attention.sliding_window_attention` |
# | `check_causal_mask` | about 5 min | `course_lib.attention.causal_mask`, `course_lib.attention.position_mask` |
# | `check_multi_head_attention` | about 30 min | `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`, `torch.nn.functional.multi_head_attention_forward`, `course_lib.attention.MultiHeadAttention`, `course_lib.attention.CrossAttention` |
# | `check_softmax_backward` | about 10 min | `torch.autograd.grad`, `torch.autograd.backward`, `torch.Tensor.backward`, `torch.autograd.functional`, `torch.func`, `torch.softmax`, `torch.nn.functional.softmax`, `torch.Tensor.softmax`, `torch.special.softmax`, `torch.nn.Softmax`, `torch._softmax_backward_data` |
# | `check_attention_backward` | about 35 min | `torch.autograd.grad`, `torch.autograd.backward`, `torch.Tensor.backward`, `torch.autograd.functional`, `torch.func`, `torch.softmax`, `torch.nn.functional.softmax`, `torch.Tensor.softmax`, `torch.special.softmax`, `torch.nn.Softmax`, `torch._softmax_backward_data`, `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`, `torch.nn.functional.multi_head_attention_forward`, `course_lib.attention.scaled_dot_product_attention`, `course_lib.attention.attend`, `course_lib.attention.attention_weights`, `course_lib.attention.MultiHeadAttention`, `course_lib.efficient_attention` |
# | `check_attention_function` | about 30 min | `torch.autograd.grad`, `torch.autograd.backward`, `torch.Tensor.backward`, `torch.autograd.functional`, `torch.func`, `torch.softmax`, `torch.nn.functional.softmax`, `torch.Tensor.softmax`, `torch.special.softmax`, `torch.nn.Softmax`, `torch._softmax_backward_data`, `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`, `torch.nn.functional.multi_head_attention_forward`, `course_lib.attention.scaled_dot_product_attention`, `course_lib.attention.attend`, `course_lib.attention.attention_weights`, `course_lib.attention.MultiHeadAttention`, `course_lib.efficient_attention` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import math

import torch
import torch.nn as nn

from course_lib.checks import (check_attention_backward, check_attention_function, check_causal_mask,
                               check_multi_head_attention, check_scaled_dot_product_attention, check_softmax,
                               check_softmax_backward, hint, solution)

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Softmax (2 points)
# `softmax(x, dim)` = exp(x) / sum(exp(x)) along `dim`. Make it **numerically stable**: it must
# not return NaN for inputs around 1000, and a row that contains −inf entries must give them
# weight 0.

# %%
def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_softmax(softmax)

# %% [markdown]
# ## 2. Scaled dot-product attention (3 points)
# q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v); `mask` is None or a bool tensor that
# broadcasts to (..., T_q, T_k) with **True = may attend**. Return (..., T_q, D_v).
# Use your `softmax` from above.

# %%
def scaled_dot_product_attention(q, k, v, mask=None):
    # YOUR CODE HERE
    raise NotImplementedError()


check_scaled_dot_product_attention(scaled_dot_product_attention)

# %% [markdown]
# ## 3. The causal mask (1 point)
# Return a (T, T) **bool** tensor where entry (i, j) is True when query i may attend to key j,
# i.e. when j ≤ i.

# %%
def causal_mask(T: int) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_causal_mask(causal_mask)

# %% [markdown]
# ## 4. Multi-head attention (4 points)
# A module with four `nn.Linear(d_model, d_model)` layers named `q_proj`, `k_proj`, `v_proj`,
# `o_proj` (the names Hugging Face uses, so weights can be copied in). `forward(x, mask=None)`
# takes x (B, T, C) and returns (B, T, C): project, split into `n_heads` heads of
# D = C // n_heads, attend per head with your function, merge the heads, apply `o_proj`.
# Put a shape comment on every line that changes a shape.

# %%
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x, mask=None):
        # YOUR CODE HERE
        raise NotImplementedError()


check_multi_head_attention(MultiHeadAttention)

# %% [markdown]
# ## 5. The backward pass by hand (9 points)
# Training needs the gradients of attention's output with respect to q, k and v. Autograd finds
# them for you; here you derive and write them yourself, the way FlashAttention's backward kernel
# does. In this part do not use autograd (`torch.autograd.grad`, `.backward()`,
# `torch.autograd.functional`, `torch.func`), `torch.softmax` or `F.scaled_dot_product_attention`;
# your `softmax` from part 1 is yours to use.
#
# ### 5a. Softmax's backward (2 points)
# For y = softmax(x) along the last axis and dy = ∂L/∂y, return dx = ∂L/∂x, the vector-Jacobian
# product: **dx = y ⊙ (dy − Σⱼ dyⱼ·yⱼ)**, the sum taken along the last axis for each row. It is
# computed from the *output* y alone, so x need not be kept. Same shape as y.

# %%
def softmax_backward(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """dx of y = softmax(x, dim=-1), given y and dy (both of shape (..., T))."""
    # YOUR CODE HERE
    raise NotImplementedError()


check_softmax_backward(softmax_backward)

# %% [markdown]
# ### 5b. Attention's gradients (4 points)
# The forward is O = P·V with P = softmax(S) row by row and S = scale·Q·Kᵀ; `scale=None` means
# 1/√D, and `causal=True` (only for T_q = T_k) masks key j > i with −∞ before the softmax, as
# `F.scaled_dot_product_attention(..., is_causal=True)` does. Given q (..., T_q, D),
# k (..., T_k, D), v (..., T_k, D_v) and do = ∂L/∂O (..., T_q, D_v), return the tuple
# **(dq, dk, dv)**, each the shape of its input. Do not take P from anywhere: **recompute** it from
# q and k (masked exactly as in the forward). Then, for a product C = A·B, dA = dC·Bᵀ and
# dB = Aᵀ·dC; use `softmax_backward` for the step through the softmax.

# %%
def attention_backward(q, k, v, do, scale=None, causal=False):
    """(dq, dk, dv) of O = softmax(scale * q @ k^T, masked if causal) @ v, given do = dL/dO."""
    # YOUR CODE HERE
    raise NotImplementedError()


check_attention_backward(attention_backward)

# %% [markdown]
# ### 5c. FlashAttention's bookkeeping in a `torch.autograd.Function` (3 points)
# Now make attention a `torch.autograd.Function` that autograd can use, keeping what FlashAttention
# keeps. `forward(ctx, q, k, v, scale=None, causal=False)` computes the masked scores S, the
# log-sum-exp of each row **L = log Σⱼ exp(S_ij)** (shape (..., T_q, 1)), and O = exp(S − L)·V.
# It saves **q, k, v, O and L** (not P: P has T_q·T_k entries per head, L only T_q), with `scale`
# and `causal` as attributes of ctx. `backward(ctx, do)` recomputes S (masked again), rebuilds
# **P = exp(S − L)** without another softmax, and uses FlashAttention's shortcut for the row sum:
# Σⱼ dP_ij·P_ij = Σⱼ (dOᵢ·vⱼ)·P_ij = **dOᵢ·Oᵢ**, so dS = P ⊙ (dP − rowsum(dO ⊙ O)). It returns one
# entry per input of forward: `dq, dk, dv, None, None`. Call it as
# `AttentionFunction.apply(q, k, v, scale, causal)` (apply takes its arguments by position). The
# check also runs `torch.autograd.gradcheck` in float64, which compares your backward with finite
# differences of your forward.

# %%
class AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False):
        # YOUR CODE HERE
        raise NotImplementedError()

    @staticmethod
    def backward(ctx, do):
        # YOUR CODE HERE
        raise NotImplementedError()


check_attention_function(AttentionFunction)

# %% [markdown]
# ## Done?
# All seven ✅ means 19/19. Want more? Add `n_kv_heads` to your module (grouped-query
# attention) — that is where lesson 04 starts. Or tile part 5c like FlashAttention: loop over
# blocks of keys so that no full (T_q, T_k) matrix is ever held (lesson 05 shows how).
