# ---
# jupyter:
#   jupytext:
#     formats: solutions///ipynb,scripts/solutions///py:percent
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/01_attention.ipynb)

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
    ### BEGIN SOLUTION
    x = x - x.amax(dim=dim, keepdim=True)
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)
    ### END SOLUTION


check_softmax(softmax)

# %% [markdown]
# ## 2. Scaled dot-product attention (3 points)
# q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v); `mask` is None or a bool tensor that
# broadcasts to (..., T_q, T_k) with **True = may attend**. Return (..., T_q, D_v).
# Use your `softmax` from above.

# %%
def scaled_dot_product_attention(q, k, v, mask=None):
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=-1) @ v  # (..., T_q, D_v)
    ### END SOLUTION


check_scaled_dot_product_attention(scaled_dot_product_attention)

# %% [markdown]
# ## 3. The causal mask (1 point)
# Return a (T, T) **bool** tensor where entry (i, j) is True when query i may attend to key j,
# i.e. when j ≤ i.

# %%
def causal_mask(T: int) -> torch.Tensor:
    ### BEGIN SOLUTION
    return torch.ones(T, T, dtype=torch.bool).tril()
    ### END SOLUTION


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
        ### BEGIN SOLUTION
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)
        ### END SOLUTION

    def forward(self, x, mask=None):
        ### BEGIN SOLUTION
        B, T, C = x.shape
        H, D = self.n_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = self.v_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        y = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.o_proj(y)
        ### END SOLUTION


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
    ### BEGIN SOLUTION
    dot = (dy * y).sum(dim=-1, keepdim=True)  # (..., 1): sum_j dy_j * y_j, one per row
    return y * (dy - dot)  # (..., T): dx_i = y_i * (dy_i - sum_j dy_j * y_j)
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k): recomputed, as FlashAttention does
    if causal:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()  # (T_q, T_k)
        scores = scores.masked_fill(~allowed, float("-inf"))  # the forward's mask, again
    p = softmax(scores, dim=-1)  # (..., T_q, T_k)
    dv = p.transpose(-2, -1) @ do  # (..., T_k, D_v): O = P V
    dp = do @ v.transpose(-2, -1)  # (..., T_q, T_k)
    ds = softmax_backward(p, dp)  # (..., T_q, T_k): through the softmax of each row
    dq = ds @ k * scale  # (..., T_q, D): S = scale * Q K^T
    dk = ds.transpose(-2, -1) @ q * scale  # (..., T_k, D)
    return dq, dk, dv
    ### END SOLUTION


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
        ### BEGIN SOLUTION
        scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
        scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k)
        if causal:
            allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()  # (T_q, T_k)
            scores = scores.masked_fill(~allowed, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)  # (..., T_q, 1): L, one number per query
        o = torch.exp(scores - lse) @ v  # (..., T_q, D_v): exp(S - L) is the softmax
        ctx.save_for_backward(q, k, v, o, lse)  # not P: backward rebuilds it from L
        ctx.scale, ctx.causal = scale, causal
        return o
        ### END SOLUTION

    @staticmethod
    def backward(ctx, do):
        ### BEGIN SOLUTION
        q, k, v, o, lse = ctx.saved_tensors
        scores = q @ k.transpose(-2, -1) * ctx.scale  # (..., T_q, T_k)
        if ctx.causal:
            allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()  # (T_q, T_k)
            scores = scores.masked_fill(~allowed, float("-inf"))
        p = torch.exp(scores - lse)  # (..., T_q, T_k): P rebuilt from L, no max or sum needed
        dv = p.transpose(-2, -1) @ do  # (..., T_k, D_v)
        dp = do @ v.transpose(-2, -1)  # (..., T_q, T_k)
        delta = (do * o).sum(dim=-1, keepdim=True)  # (..., T_q, 1): equals rowsum(dP * P) because O = P V
        ds = p * (dp - delta)  # (..., T_q, T_k)
        dq = ds @ k * ctx.scale  # (..., T_q, D)
        dk = ds.transpose(-2, -1) @ q * ctx.scale  # (..., T_k, D)
        return dq, dk, dv, None, None  # scale and causal are options: no gradient
        ### END SOLUTION


check_attention_function(AttentionFunction)

# %% [markdown]
# ## Done?
# All seven ✅ means 19/19. Want more? Add `n_kv_heads` to your module (grouped-query
# attention) — that is where lesson 04 starts. Or tile part 5c like FlashAttention: loop over
# blocks of keys so that no full (T_q, T_k) matrix is ever held (lesson 05 shows how).
