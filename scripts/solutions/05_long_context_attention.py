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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/05_long_context_attention.ipynb)

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
    ### BEGIN SOLUTION
    scale = 1 / math.sqrt(q.size(-1))
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype)  # (..., T_q, 1)
    l = torch.zeros((*q.shape[:-1], 1), dtype=q.dtype)  # (..., T_q, 1)
    acc = torch.zeros((*q.shape[:-1], v.size(-1)), dtype=q.dtype)  # (..., T_q, D_v)
    for start in range(0, k.size(-2), block_size):
        kb, vb = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = q @ kb.transpose(-2, -1) * scale  # (..., T_q, b)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        correction = torch.exp(m - m_new)
        p = torch.exp(s - m_new)  # (..., T_q, b)
        l = l * correction + p.sum(-1, keepdim=True)
        acc = acc * correction + p @ vb
        m = m_new
    return acc / l
    ### END SOLUTION


check_online_softmax_attention(online_softmax_attention)

# %% [markdown]
# ## 2. The sliding-window mask (2 points)
# Return a (T, T) **bool** tensor, True = may attend. Convention: with window w, query i may
# attend to keys i − w + 1 … i — **the token itself and the w − 1 tokens before it** (no future).
# So window=1 is the diagonal and window ≥ T is the causal mask.

# %%
def sliding_window_mask(T, window):
    ### BEGIN SOLUTION
    i = torch.arange(T)[:, None]  # (T, 1) query positions
    j = torch.arange(T)[None, :]  # (1, T) key positions
    return (i - j >= 0) & (i - j < window)
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    T, D = q.shape[-2:]
    k_win = F.pad(k, (0, 0, window - 1, 0)).unfold(2, window, 1)  # (B, H, T, D, w)
    v_win = F.pad(v, (0, 0, window - 1, 0)).unfold(2, window, 1)  # (B, H, T, D_v, w)
    scores = torch.einsum("bhtd,bhtdw->bhtw", q, k_win) / math.sqrt(D)  # (B, H, T, w)
    key_pos = torch.arange(T)[:, None] - (window - 1) + torch.arange(window)[None, :]  # (T, w)
    scores = scores.masked_fill(key_pos < 0, float("-inf"))  # padded slots
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, w): a window, not T×T
    return torch.einsum("bhtw,bhtdw->bhtd", weights, v_win)  # (B, H, T, D_v)
    ### END SOLUTION


check_sliding_window_attention(sliding_window_attention)

# %% [markdown]
# ## 4. Causal linear attention (3 points)
# φ(x) = elu(x) + 1. For each position t: S_t = Σ_{j≤t} φ(k_j) v_jᵀ (D × D_v), z_t = Σ_{j≤t} φ(k_j),
# out_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t. Use cumulative sums over the time axis (or a loop — both are
# accepted). q, k (..., T, D), v (..., T, D_v) → (..., T, D_v).

# %%
def causal_linear_attention(q, k, v):
    ### BEGIN SOLUTION
    fq, fk = F.elu(q) + 1, F.elu(k) + 1  # (..., T, D)
    S = torch.cumsum(fk[..., :, :, None] * v[..., :, None, :], dim=-3)  # (..., T, D, D_v)
    z = torch.cumsum(fk, dim=-2)  # (..., T, D)
    num = torch.einsum("...td,...tde->...te", fq, S)  # (..., T, D_v)
    den = torch.einsum("...td,...td->...t", fq, z)  # (..., T)
    return num / den[..., None]
    ### END SOLUTION


check_causal_linear_attention(causal_linear_attention)

# %% [markdown]
# ## Done?
# All four ✅ means 13/13. Curious? Make `online_softmax_attention` causal: which key blocks can a
# block of queries skip entirely?
