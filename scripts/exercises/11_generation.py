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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/11_generation.ipynb)

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
# # Exercise 11 · Nucleus sampling and cached generation
#
# Read `notebooks/11_generation.ipynb` first.

# %% [markdown]
# **The exercises here** (about 45 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_sample_top_p` | about 20 min | `course_lib.generation.top_p_filter`, `course_lib.generation.sample_next` |
# | `check_generate` | about 25 min | `course_lib.generation.generate` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch

from course_lib.checks import check_generate, check_sample_top_p, hint, solution

# %% [markdown]
# ## 1. Top-p (nucleus) sampling (3 points)
# `sample_top_p(logits, p, generator, temperature=1.0)`: logits (N, V) → N sampled token ids.
# 1. divide the **logits** by `temperature`; softmax;
# 2. sort the probabilities in descending order; keep the smallest set of most likely tokens
#    whose total reaches `p` — **including** the token that crosses `p` (keep a token when the
#    probability mass *before* it is still `< p`);
# 3. renormalise, draw with `torch.multinomial(..., generator=generator)`, and map the drawn
#    positions back to token ids.
#
# The check draws thousands of samples and compares the frequencies with the nucleus
# distribution, so any correct method passes.

# %%
def sample_top_p(logits, p, generator, temperature=1.0):
    # YOUR CODE HERE
    raise NotImplementedError()


top_p_result = check_sample_top_p(sample_top_p)

# %% [markdown]
# ## 2. Greedy generation with a KV cache (3 points)
# `generate(model, idx, n, use_cache=True)`: append `n` greedy (argmax) tokens to `idx` (B, T) and
# return the whole sequence (B, T + n). The model is a course_lib GPT:
# * `model(ids).logits` is (B, T, V); the next token comes from the **last** position;
# * `cache = model.new_cache()` makes an empty cache; `model(ids, cache=cache)` appends the keys
#   and values of `ids` to it and continues positions from what is already cached.
#
# With `use_cache=True`, feed the prompt once, then **only the newest token** each step. With
# `use_cache=False`, feed the whole sequence each step. Both must give the same tokens.

# %%
@torch.no_grad()
def generate(model, idx, n, use_cache=True):
    # YOUR CODE HERE
    raise NotImplementedError()


generate_result = check_generate(generate)
