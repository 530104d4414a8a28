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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/12_inside_attention.ipynb)

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
# # Exercise 12 · The previous-token score
#
# Lesson 12 measured, for every head, how much weight each token puts on the token just before
# it. Here you write that measurement. Read `notebooks/12_inside_attention.ipynb` first.

# %% [markdown]
# **The exercises here** (about 15 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_previous_token_score` | about 15 min | `course_lib.analysis.previous_token_score`, `course_lib.analysis.HeadPatterns` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch

from course_lib.analysis import attention_maps
from course_lib.checks import check_previous_token_score, hint, solution
from course_lib.data import shakespeare_text
from course_lib.models.minilm import encode_batch, load_minilm, load_minilm_tokenizer

# %% [markdown]
# ## 1. `previous_token_score(attn)` (2 points)
# `attn` has shape `(..., T, T)`: any leading axes (batch, heads), then **rows = queries** and
# **columns = keys**; each row sums to 1. Return a tensor of shape `(...)`: for each leading
# index, the mean over the queries `i = 1, ..., T-1` of `attn[..., i, i-1]`.
#
# Query 0 has no previous token, so it is **not** part of the mean: there are T-1 terms.
# A perfect previous-token head scores 1; a head that never looks one step back scores 0.

# %%
def previous_token_score(attn: torch.Tensor) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


result = check_previous_token_score(previous_token_score)

# %% [markdown]
# ## 2. Use it on a real model
# MiniLM's first layer, one line of verse at a time (no padding, so every row is a real token):
# your score for each of its 12 heads, averaged over 50 lines. One head should stand out.

# %%
if result.passed:
    model, tokenizer = load_minilm(), load_minilm_tokenizer()
    lines = [ln.strip() for ln in shakespeare_text().splitlines() if len(ln.split()) >= 5][:50]
    total = torch.zeros(12)
    for line in lines:
        ids, _ = encode_batch(tokenizer, [line])
        layer0 = attention_maps(model, ids)[0]  # (1, H, T, T)
        total += previous_token_score(layer0)[0]
    scores = total / len(lines)
    print("layer-0 previous-token score per head:", [round(v, 2) for v in scores.tolist()])
    print(f"head {int(scores.argmax())} is a previous-token head (score {scores.max():.2f})")

# %% [markdown]
# ## Done?
# 2/2 means your score is the one `course_lib.analysis.previous_token_score` computes, and that
# lesson 12's head-pattern table uses. Stuck? `hint("check_previous_token_score")`, or see the
# answer with `solution("check_previous_token_score")`.
