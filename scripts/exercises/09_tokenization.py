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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/09_tokenization.ipynb)

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
# # Exercise 09 · One BPE merge
#
# Write `bpe_merge(ids, pair, new_id)`: return a **new** list where every occurrence of the
# adjacent `pair` in `ids` is replaced by `new_id`, scanning **left to right** (so in
# `[a, a, a]` only the first two merge: `[X, a]`). Do not modify `ids`.
# Then your function trains a small tokenizer. Read `notebooks/09_tokenization.ipynb` first.

# %% [markdown]
# **The exercises here** (about 15 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_bpe_merge` | about 15 min | `course_lib.tokenizers.merge_pair`, `course_lib.tokenizers.ByteBPETokenizer` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
from collections import Counter

from course_lib.checks import check_bpe_merge, hint, solution

# %%
def bpe_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    # YOUR CODE HERE
    raise NotImplementedError()


result = check_bpe_merge(bpe_merge)

# %% [markdown]
# ## Your merge, training a tokenizer
# Once the check passes, this cell uses your function for ten merges on a line of Macbeth.

# %%
line = "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day"
if result.passed:
    ids, vocab = list(line.encode()), {i: bytes([i]) for i in range(256)}
    for k in range(10):
        pairs = Counter(zip(ids, ids[1:]))
        pair = max(pairs, key=lambda p: (pairs[p], vocab[p[0]], vocab[p[1]]))
        vocab[256 + k] = vocab[pair[0]] + vocab[pair[1]]
        ids = bpe_merge(ids, pair, 256 + k)
    print(f"{len(line)} bytes -> {len(ids)} tokens:", [vocab[i].decode() for i in ids])
else:
    print("pass the check above first")
