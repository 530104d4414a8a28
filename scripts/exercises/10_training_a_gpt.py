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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/10_training_a_gpt.ipynb)

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
# # Exercise 10 · The learning-rate schedule and gradient clipping
#
# Two pieces of every modern training loop. Read `notebooks/10_training_a_gpt.ipynb` first.

# %% [markdown]
# **The exercises here** (about 30 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_cosine_lr` | about 15 min | `course_lib.training`, `torch.optim.lr_scheduler` |
# | `check_clip_grad_norm` | about 15 min | `torch.nn.utils.clip_grad_norm_`, `torch.nn.utils.clip_grad_norm`, `torch.nn.utils.get_total_norm`, `torch.nn.utils.clip_grads_with_norm_`, `course_lib.training` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import math

import matplotlib.pyplot as plt
import torch

from course_lib.checks import check_clip_grad_norm, check_cosine_lr, hint, solution

# %% [markdown]
# ## 1. Warm-up + cosine decay (2 points)
# `cosine_lr(step, warmup, total, max_lr, min_lr)`, with `step` counted from 0:
# * for `step < warmup`: rise linearly so that the **first** step already has
#   `max_lr / warmup` and step `warmup - 1` has `max_lr`: `max_lr * (step + 1) / warmup`;
# * for `warmup <= step < total`: cosine from `max_lr` (at `step == warmup`) down towards
#   `min_lr` (reached at `step == total`), with `progress = (step - warmup) / (total - warmup)`:
#   `min_lr + 0.5 * (1 + cos(pi * progress)) * (max_lr - min_lr)`;
# * for `step >= total`: `min_lr`.

# %%
def cosine_lr(step: int, warmup: int, total: int, max_lr: float, min_lr: float) -> float:
    # YOUR CODE HERE
    raise NotImplementedError()


lr_result = check_cosine_lr(cosine_lr)

# %%
if lr_result.passed:
    plt.figure(figsize=(6, 2.5))
    plt.plot([cosine_lr(s, 100, 1000, 1e-3, 1e-4) for s in range(1100)])
    plt.xlabel("step")
    plt.ylabel("learning rate")
    plt.title("your schedule: warm-up 100, total 1000")
    plt.show()

# %% [markdown]
# ## 2. Global-norm gradient clipping (2 points)
# `clip_grad_norm(parameters, max_norm)`: the **global** norm is the L2 norm of *all* gradient
# entries of all parameters together, `sqrt(sum_p (p.grad ** 2).sum())`. If it exceeds
# `max_norm`, scale every gradient **in place** by `max_norm / (total + 1e-6)`. Return the total
# norm measured *before* clipping. Skip parameters whose `.grad` is None.

# %%
def clip_grad_norm(parameters, max_norm: float):
    # YOUR CODE HERE
    raise NotImplementedError()


clip_result = check_clip_grad_norm(clip_grad_norm)

# %% [markdown]
# ## Done?
# 4/4 means your schedule and clipping behave exactly like `course_lib.training`'s (and
# PyTorch's `clip_grad_norm_`). The trainer in lesson 10 uses the same two functions.
