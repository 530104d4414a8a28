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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/13_experiments.ipynb)

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
# # Exercise 13 · Evaluating a model at any length
#
# Lesson 13 trained models at a context of T characters and scored them on longer inputs. Every
# such experiment rests on one small loop: draw windows of text, run the model, average the
# next-token loss. Here you write it. Read `notebooks/13_experiments.ipynb` first.

# %% [markdown]
# **The exercises here** (about 20 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_eval_at_length` | about 20 min | `course_lib.experiments.eval_at_length`, `course_lib.experiments.loss_by_position` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch
import torch.nn.functional as F

from course_lib.checks import check_eval_at_length, hint, solution
from course_lib.data import encoded_corpus, get_batch, shakespeare_text
from course_lib.device import single_thread
from course_lib.experiments import ExperimentConfig, LengthError, run_experiment
from course_lib.tokenizers import CharTokenizer

# %% [markdown]
# ## 1. `eval_at_length(model, data, length, n_batches, batch_size, generator)` (3 points)
#
# Return the mean next-token cross-entropy (nats per token) of `model` over `n_batches` batches
# of `batch_size` random windows of `length` tokens from `data`, a 1-D array of token ids:
#
# * draw each batch with `x, y = get_batch(data, batch_size, length, generator, device)`
#   (lesson 10): `x` holds the windows, `y` the same windows shifted by one token, both
#   `(batch_size, length)`. Pass `generator` on: with the same seed every model is scored on the
#   same windows. `device` is where the model's parameters are
#   (`next(model.parameters()).device`);
# * `logits = model(x)` has shape `(batch_size, length, vocab)`; every position predicts its next
#   token, so the loss is the cross-entropy averaged over all `batch_size · length` positions;
# * return the mean over the batches as a Python `float`.
#
# And evaluate like an evaluation: dropout off (`model.eval()`), no autograd (`torch.no_grad()`),
# and leave the model in the mode you found it in (`model.training` tells you which), because a
# training loop may call this between two steps. `length` may be longer than the model was
# trained on: feed all of it.

# %%
def eval_at_length(model, data, length: int, n_batches: int, batch_size: int,
                   generator: torch.Generator) -> float:
    # YOUR CODE HERE
    raise NotImplementedError()


result = check_eval_at_length(eval_at_length)

# %% [markdown]
# ## 2. Use it: does a model work beyond the length it was trained on?
# Three tiny models trained at T = 32 characters with learned positions, RoPE and ALiBi, then
# scored by *your* function at T, 2T and 4T (the same seed for every model, so each length uses
# the same windows for all three). Each length draws its own windows, so part of the difference
# between columns is which text was drawn; the lesson removed that by cutting one long window into
# pieces (`loss_by_position(..., window=...)`).

# %%
if result.passed:
    tok = CharTokenizer.train(shakespeare_text())
    train_data, val_data = encoded_corpus(tok, "char")
    T = 32
    models = {}
    with single_thread():
        for position in ("learned", "rope", "alibi"):
            cfg = ExperimentConfig(vocab_size=tok.vocab_size, max_positions=T, d_model=64, n_layers=2, n_heads=4,
                                   position=position)
            models[position] = run_experiment(cfg, train_data, val_data, 200, batch_size=16, lr=5e-3,
                                              device="cpu").model
        print(f"{'position':<9}" + "".join(f"{f'length {L}':>11}" for L in (T, 2 * T, 4 * T)) + "  change T -> 4T")
        for position, model in models.items():
            row = []
            for L in (T, 2 * T, 4 * T):
                try:
                    row.append(eval_at_length(model, val_data, L, 8, 16, torch.Generator().manual_seed(0)))
                except LengthError:
                    row.append(None)  # a learned table has no row for position >= T
            cells = "".join(f"{v:>11.3f}" if v is not None else f"{'n/a':>11}" for v in row)
            change = f"{row[2] - row[0]:+.3f}" if row[2] is not None else "n/a"
            print(f"{position:<9}{cells}  {change:>14}")

# %% [markdown]
# Which model keeps its loss at 4T, and which one cannot even be asked? Compare with the lesson's
# table, and with its explanation (ALiBi's linear distance penalty; RoPE's unseen angles; the
# learned table's missing rows).
#
# ## Done?
# 3/3 means your loop is the one `course_lib.experiments.eval_at_length` computes. Stuck?
# `hint("check_eval_at_length")`, or see the answer with `solution("check_eval_at_length")`.
