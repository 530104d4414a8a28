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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/14_beyond.ipynb)

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
# # Exercise 14 · The selective scan
#
# Replace the `raise NotImplementedError()` with your code and run the check cell: ✅ means it
# matches the reference on every case; ❌ says which case failed and, for common mistakes,
# *why*. `hint("check_selective_scan")` gives a nudge, `solution("check_selective_scan")` the
# answer. Read `notebooks/14_beyond.ipynb` first.

# %% [markdown]
# **The exercises here** (about 30 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_selective_scan` | about 30 min | `course_lib.ssm.selective_scan`, `course_lib.ssm.MambaBlock`, `course_lib.ssm` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch
import torch.nn.functional as F

from course_lib.checks import check_selective_scan, hint, solution

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Mamba's selective scan, one step at a time (4 points)
#
# Inputs, with B batch, T time, E channels and N states per channel:
# * `x` (B, T, E) — the input stream; `delta` (B, T, E) — the positive step sizes Δ;
# * `A` (E, N) — the continuous, negative, diagonal state matrix (one row per channel);
# * `B`, `C` (B, T, N) — the input-dependent input and output matrices, shared by the channels;
# * `D` (E,) — the skip connection.
#
# For every time step t, starting from a state h = 0 of shape (B, E, N):
#
# $$\bar A_t = \exp(\Delta_t A), \qquad \bar B_t = \Delta_t B_t, \qquad
# h_t = \bar A_t \, h_{t-1} + \bar B_t \, x_t, \qquad y_t = C_t \cdot h_t + D\, x_t$$
#
# (Δₜ is one number per channel, Bₜ and Cₜ one vector of N per sequence; `C_t · h_t` sums over
# the N states.) Return y, of shape (B, T, E). Write the loop over t: the parallel scan is the
# lesson's business.

# %%
def selective_scan(x, delta, A, B, C, D):
    # YOUR CODE HERE
    raise NotImplementedError()


check_selective_scan(selective_scan)

# %% [markdown]
# ## Done?
# ✅ means 4/4. Want more? Write the parallel form: turn your loop's `(A_bar, B_bar * x)` pairs
# into an associative scan (compose `(a1, b1)` then `(a2, b2)` as `(a1 * a2, a2 * b1 + b2)`)
# and compare it with your loop in float64 — `course_lib.ssm.scan_parallel` is one answer.
