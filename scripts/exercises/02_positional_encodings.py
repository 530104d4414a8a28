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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/02_positional_encodings.ipynb)

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
# # Exercise 02 · Positional encodings
#
# Four schemes to implement (and a bonus), each followed by its check. Replace each
# `raise NotImplementedError()` with your code and run the check cell: ✅ means it matches the
# reference on every case; ❌ says which case failed and, for common mistakes, *why*.
# `hint("check_apply_rope")` gives a nudge, `solution("check_apply_rope")` the answer.
#
# Use basic tensor operations (`arange`, `sin`, `cos`, `stack`, `cat`, `log`, `where`, …); do not
# import `course_lib.positional` — writing it is the point. Read
# `notebooks/02_positional_encodings.ipynb` first.

# %% [markdown]
# **The exercises here** (about 85 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_sinusoidal_encoding` | about 15 min | `course_lib.positional.sinusoidal_encoding` |
# | `check_apply_rope` | about 20 min | `course_lib.positional.apply_rope`, `course_lib.positional.apply_rope_complex`, `course_lib.positional.apply_rotary`, `course_lib.positional.rope_cos_sin` |
# | `check_apply_rope_half` | about 10 min | `course_lib.positional.apply_rope`, `course_lib.positional.apply_rope_complex`, `course_lib.positional.apply_rotary`, `course_lib.positional.rope_cos_sin` |
# | `check_alibi_slopes` | about 15 min | `course_lib.positional.alibi_slopes` |
# | `check_relative_position_bucket` | about 25 min | `course_lib.positional.relative_position_bucket` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import math

import torch

from course_lib.checks import (check_alibi_slopes, check_apply_rope, check_apply_rope_half,
                               check_relative_position_bucket, check_sinusoidal_encoding, hint, solution)

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Sinusoidal encoding (2 points)
# Return the (T, d) float32 table of Vaswani et al. 2017, §3.5, for positions 0 … T−1 and an even d:
#
# $$PE_{(pos,\,2i)} = \sin\!\big(pos / 10000^{2i/d}\big), \qquad PE_{(pos,\,2i+1)} = \cos\!\big(pos / 10000^{2i/d}\big)$$

# %%
def sinusoidal_encoding(T: int, d: int) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_sinusoidal_encoding(sinusoidal_encoding)

# %% [markdown]
# ## 2. RoPE, adjacent pairs (3 points)
# x is a query or key tensor (B, H, T, D); `positions` is an integer tensor (T,) — maybe starting
# at an offset, as with a KV cache — or (B, T), one row of positions per sequence. Rotate feature
# pair (x[2i], x[2i+1]) of the token at position m by the angle m·θ_i with θ_i = theta^(−2i/D)
# (Su et al. 2021, Eq. 15, the RoFormer layout):
#
# $$(x_{2i},\, x_{2i+1}) \;\mapsto\; (x_{2i}\cos m\theta_i - x_{2i+1}\sin m\theta_i,\;\; x_{2i}\sin m\theta_i + x_{2i+1}\cos m\theta_i)$$
#
# Return a new tensor of x's shape and dtype.

# %%
def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_apply_rope(apply_rope)

# %% [markdown]
# A quick look at what you built: the score between a rotated query and a rotated key depends
# only on the gap between their positions.

# %%
g = torch.Generator().manual_seed(0)
q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)  # (B, H, T, D)
try:
    for m, n in [(5, 2), (40, 37), (9, 2)]:
        score = (apply_rope(q, torch.tensor([m])) * apply_rope(k, torch.tensor([n]))).sum().item()
        print(f"m={m:>2}, n={n:>2}, m - n = {m - n}: score {score:+.3f}")
except NotImplementedError:
    print("write apply_rope above first")

# %% [markdown]
# ## 2b. Bonus: RoPE, half-split layout (1 point)
# Hugging Face Llama pairs feature j with feature j + D/2 instead: with
# `rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])` and the angles laid out as
# `cat([angles, angles])`, the result is `x * cos + rotate_half(x) * sin`. Same frequencies,
# same positions argument.

# %%
def apply_rope_half(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_apply_rope_half(apply_rope_half)

# %% [markdown]
# ## 3. ALiBi slopes (2 points)
# Return the (n_heads,) float32 tensor of head slopes (Press et al. 2022, §3). When n_heads is a
# power of two, the slopes are the geometric sequence that starts at 2^(−8/n) and has that same
# ratio: for 8 heads 1/2, 1/4, …, 1/256. Otherwise, with p the largest power of two below
# n_heads: the p slopes for p heads, followed by every other slope of the 2p-head sequence
# (its 1st, 3rd, 5th, …) until there are n_heads.

# %%
def alibi_slopes(n_heads: int) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_alibi_slopes(alibi_slopes)

# %% [markdown]
# ## 4. T5 relative position buckets (3 points)
# `relative_position` is an integer tensor of key position − query position (any shape). Return
# a same-shaped `torch.long` tensor of bucket ids (Raffel et al. 2020, §2.1; the same rule as
# Hugging Face's `T5Attention._relative_position_bucket`):
#
# 1. **bidirectional** (encoder): halve `num_buckets`; keys *after* the query (relative
#    position > 0) add `num_buckets` (the halved value) to their id; continue with
#    n = |relative_position|. **Causal** (decoder): n = max(−relative_position, 0), so every
#    future key gets n = 0.
# 2. With max_exact = num_buckets // 2: if n < max_exact, the bucket is n itself. Otherwise it is
#    max_exact + ⌊ log(n / max_exact) / log(max_distance / max_exact) · (num_buckets − max_exact) ⌋,
#    but never more than num_buckets − 1 (all distances from `max_distance` on share the last bucket).

# %%
def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_relative_position_bucket(relative_position_bucket)

# %% [markdown]
# ## Done?
# All five ✅ means 11/11. Want more? Use your `relative_position_bucket` with a learned
# `nn.Embedding(num_buckets, n_heads)` to build T5's attention bias, and compare it with
# `course_lib.positional.T5RelativeBias` — lesson 06 builds T5 on it.
