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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/05_long_context_attention.ipynb)

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
# # Exercise 05 · Long context
#
# Four pieces, each followed by its check. Replace each `raise NotImplementedError()` with your
# code and run the check cell: ✅ means it matches the reference on every case; ❌ says which case
# failed and, for common mistakes, *why*. `hint("check_sliding_window_mask")` gives a nudge,
# `solution("check_sliding_window_mask")` the answer. Read
# `notebooks/05_long_context_attention.ipynb` first.
#
# Do not call `torch.softmax` on a full T×T matrix or `F.scaled_dot_product_attention` — avoiding
# them is the point.

# %% [markdown]
# **The exercises here** (about 105 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_online_softmax_attention` | about 40 min | `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`, `torch.nn.functional.multi_head_attention_forward`, `course_lib.attention.scaled_dot_product_attention`, `course_lib.attention.attend`, `course_lib.efficient_attention.online_softmax_attention`, `course_lib.efficient_attention.tiled_attention` |
# | `check_sliding_window_mask` | about 10 min | `course_lib.attention.sliding_window_mask`, `course_lib.attention.position_mask`, `course_lib.efficient_attention.window_global_random_mask` |
# | `check_sliding_window_attention` | about 30 min | `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`, `torch.nn.functional.multi_head_attention_forward`, `course_lib.attention.scaled_dot_product_attention`, `course_lib.attention.attend`, `course_lib.efficient_attention.sliding_window_attention`, `course_lib.efficient_attention.sliding_window_attention_naive` |
# | `check_causal_linear_attention` | about 25 min | `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`, `torch.nn.functional.multi_head_attention_forward`, `course_lib.efficient_attention.causal_linear_attention`, `course_lib.efficient_attention.causal_linear_attention_parallel`, `course_lib.efficient_attention.linear_attention_recurrent` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import math

import torch
import torch.nn.functional as F

from course_lib.checks import (check_causal_linear_attention, check_online_softmax_attention,
                               check_sliding_window_attention, check_sliding_window_mask, hint, solution)

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Online-softmax attention (4 points)
# Compute softmax(q kᵀ / √D) v **without** the full score matrix: visit the keys in blocks of
# `block_size` (the last block may be shorter) and keep, for every query, the running max `m`,
# the running sum `l` of exp(s − m) and the accumulator `acc` of exp(s − m)·v. When the max
# grows from m to m′, multiply `l` and `acc` by exp(m − m′) before adding the block.
# q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v) → (..., T_q, D_v). No mask (non-causal).

# %%
def online_softmax_attention(q, k, v, block_size):
    # YOUR CODE HERE
    raise NotImplementedError()


check_online_softmax_attention(online_softmax_attention)

# %% [markdown]
# ## 2. The sliding-window mask (2 points)
# Return a (T, T) **bool** tensor, True = may attend. Convention: with window w, query i may
# attend to keys i − w + 1 … i — **the token itself and the w − 1 tokens before it** (no future).
# So window=1 is the diagonal and window ≥ T is the causal mask.

# %%
def sliding_window_mask(T, window):
    # YOUR CODE HERE
    raise NotImplementedError()


check_sliding_window_mask(sliding_window_mask)

# %% [markdown]
# ## 3. Sliding-window attention without a T×T matrix (4 points)
# Same window as above, q, k, v (B, H, T, D) → (B, H, T, D). Pad k and v with window − 1 zero rows
# at the **start**, make overlapping windows with `.unfold(2, window, 1)` → (B, H, T, D, window),
# score with `torch.einsum`, give the padded slots −∞, softmax over the window, and blend v's
# windows. The check also runs a long input (T = 4096) and measures peak memory: building a T×T
# matrix fails it.

# %%
def sliding_window_attention(q, k, v, window):
    # YOUR CODE HERE
    raise NotImplementedError()


check_sliding_window_attention(sliding_window_attention)

# %% [markdown]
# ## 4. Causal linear attention (3 points)
# φ(x) = elu(x) + 1. For each position t: S_t = Σ_{j≤t} φ(k_j) v_jᵀ (D × D_v), z_t = Σ_{j≤t} φ(k_j),
# out_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t. Use cumulative sums over the time axis (or a loop — both are
# accepted). q, k (..., T, D), v (..., T, D_v) → (..., T, D_v).

# %%
def causal_linear_attention(q, k, v):
    # YOUR CODE HERE
    raise NotImplementedError()


check_causal_linear_attention(causal_linear_attention)

# %% [markdown]
# ## Done?
# All four ✅ means 13/13. Curious? Make `online_softmax_attention` causal: which key blocks can a
# block of queries skip entirely?
