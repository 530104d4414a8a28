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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/04_kv_heads_and_cache.ipynb)

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
# # Exercise 04 · KV heads
#
# Replace the `raise NotImplementedError()` line with your code and run the check cell: ✅ means
# it matches the reference on every case; ❌ says which case failed and, for common mistakes,
# *why*. `hint("check_repeat_kv")` gives a nudge, `solution("check_repeat_kv")` the answer.
# Read `notebooks/04_kv_heads_and_cache.ipynb` first.

# %% [markdown]
# **The exercises here** (about 10 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_repeat_kv` | about 10 min | `course_lib.attention.repeat_kv` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch

from course_lib.checks import check_repeat_kv, hint, solution

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. `repeat_kv` (2 points)
# Grouped-query attention keeps `H_kv` key/value heads for `H = H_kv * n_rep` query heads. Before
# attending, each K/V head is copied so that it lines up with its group of **consecutive** query
# heads: (B, H_kv, T, D) → (B, H_kv · n_rep, T, D) with head order [0, 0, …, 1, 1, …] (each head
# n_rep times in a row — the order Hugging Face uses). With n_rep = 1 return the input unchanged.

# %%
def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_repeat_kv(repeat_kv)

# %% [markdown]
# See the order for yourself: three K/V heads holding their own index, repeated twice.

# %%
print(repeat_kv(torch.arange(3.0).view(1, 3, 1, 1), 2).flatten().tolist())  # (B, H_kv=3, 1, 1) -> (6,)

# %% [markdown]
# ## Done?
# ✅ means 2/2. Why does `expand` + `reshape` not copy memory until the reshape, and when does the
# reshape copy? Try `x.expand(...).is_contiguous()`.
