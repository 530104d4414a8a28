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
# Four pieces, each followed by its check. Replace each `raise NotImplementedError()` with
# your code and run the check cell: ✅ means it matches the reference on every case; ❌ says
# which case failed and, for common mistakes, *why*. `hint("check_softmax")` gives a nudge,
# `solution("check_softmax")` the answer.
#
# Use only basic tensor operations (`@`, `exp`, `sum`, `masked_fill`, `view`, `transpose`…);
# do not call `torch.softmax` or `F.scaled_dot_product_attention` — writing them is the point.
# Read `notebooks/01_attention.ipynb` first.

# %%
import math

import torch
import torch.nn as nn

from course_lib.checks import (check_causal_mask, check_multi_head_attention,
                               check_scaled_dot_product_attention, check_softmax, hint, solution)

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
# ## Done?
# All four ✅ means 10/10. Want more? Add `n_kv_heads` to your module (grouped-query
# attention) — that is where lesson 04 starts.
