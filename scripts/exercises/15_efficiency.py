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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/15_efficiency.ipynb)

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
# # Exercise 15 · Per-channel int8 quantisation
#
# Replace the `raise NotImplementedError()` with your code and run the check cell: ✅ means it
# matches the reference on every case; ❌ says which case failed and, for common mistakes,
# *why*. `hint("check_quantize_per_channel")` gives a nudge, `solution("check_quantize_per_channel")`
# the answer. Read `notebooks/15_efficiency.ipynb` first (§5).

# %% [markdown]
# **The exercises here** (about 20 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_quantize_per_channel` | about 20 min | `torch.quantize_per_channel`, `torch.ao`, `course_lib.quantization.quantize_per_channel` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch

from course_lib.checks import check_quantize_per_channel, hint, solution

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. One absmax scale per output row (3 points)
#
# `w` is a Linear layer's weight, shape (out_features, in_features): row j holds the weights of
# output neuron j. Quantise each row to the symmetric int8 grid -127 .. 127:
#
# $$s_j = \frac{\max_i |w_{ji}|}{127}, \qquad q_{ji} = \mathrm{clamp}\big(\mathrm{round}(w_{ji} / s_j),\, -127,\, 127\big)$$
#
# Return `(q, scale)`: `q` of shape (out, in) and dtype `torch.int8`; `scale` of shape (out,) in
# the weight's own dtype. A row of zeros has max |w| = 0: give it a scale of 1 (its q is 0
# anyway). Do not change `w` in place.

# %%
def quantize_per_channel(w):
    # YOUR CODE HERE
    raise NotImplementedError()


check_quantize_per_channel(quantize_per_channel)

# %% [markdown]
# ## 2. Use it on a layer
#
# Dequantise (ŵ = q · s, one s per row) and compare with the float weights: no weight may move
# by more than half a step, s/2, and the layer's weights now take one byte each.

# %%
layer = torch.nn.Linear(64, 32)
w = layer.weight.detach()  # (32, 64)
try:
    q, scale = quantize_per_channel(w)
    w_hat = q.to(w.dtype) * scale[:, None]  # (32, 64)
    worst = (w_hat - w).abs().amax(dim=1)  # (32,): worst error per row
    print(f"worst error {worst.max().item():.2e}; every row within half a step (s/2): "
          f"{bool((worst <= scale / 2 * (1 + 1e-6)).all())}")
    print(f"weight bytes: float32 {w.numel() * w.element_size():,} -> int8 {q.numel() * q.element_size():,} "
          f"+ scales {scale.numel() * scale.element_size():,}")
    x = torch.randn(4, 64)
    err = (x @ w_hat.T - x @ w.T).abs().max().item()
    print(f"the layer's outputs move by at most {err:.1e}")
except NotImplementedError:
    print("write quantize_per_channel above first")

# %% [markdown]
# ## Done?
# ✅ means 3/3. Want more? Write `quantize_per_tensor` (one scale for the whole matrix), make one
# row 20× larger than the others, and compare the two schemes' errors on the *other* rows —
# `course_lib.quantization` has both, and `quantize_model` swaps every Linear of a model.
