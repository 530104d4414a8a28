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
# # Exercise 15 · int8 quantisation and Mixture-of-Depths routing
#
# Replace the `raise NotImplementedError()` with your code and run the check cell: ✅ means it
# matches the reference on every case; ❌ says which case failed and, for common mistakes,
# *why*. `hint("check_quantize_per_channel")` gives a nudge, `hint("check_quantize_per_channel", 2)`
# the idea, `solution("check_quantize_per_channel")` the answer. Read `notebooks/15_efficiency.ipynb`
# first (§1 for part 5, §5 for parts 1-4).
#
# | part | you write | points | about |
# |---|---|---|---|
# | 1 | `quantize_per_channel(w)` | 3 | 20 min |
# | 3 | `QuantLinear(linear)`, a layer that stores int8 | 3 | 25 min |
# | 4 | `quantize_per_group(w, group_size)` | 3 | 20 min |
# | 5 | `mod_route(x, scores, k, block)`, Mixture-of-Depths routing | 3 | 30 min |

# %% [markdown]
# **The exercises here** (about 95 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_quantize_per_channel` | about 20 min | `torch.quantize_per_channel`, `torch.ao`, `course_lib.quantization.quantize_per_channel` |
# | `check_quant_linear` | about 25 min | `torch.ao`, `torch.quantize_per_channel`, `torch.quantize_per_tensor`, `torch.fake_quantize_per_channel_affine`, `torch.fake_quantize_per_tensor_affine`, `course_lib` |
# | `check_quantize_per_group` | about 20 min | `torch.ao`, `torch.quantize_per_channel`, `torch.quantize_per_tensor`, `torch.fake_quantize_per_channel_affine`, `torch.fake_quantize_per_tensor_affine`, `course_lib` |
# | `check_mod_route` | about 30 min | `course_lib` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch
import torch.nn as nn

from course_lib.checks import (check_mod_route, check_quant_linear, check_quantize_per_channel,
                               check_quantize_per_group, hint, solution)

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
# ## 3. A Linear layer that stores int8 (3 points, about 25 minutes)
#
# Write `QuantLinear(linear)`: an `nn.Module` built from a float `nn.Linear`. In `__init__`,
# quantise `linear.weight` per output row (use your `quantize_per_channel` from part 1) and keep
# **only** the int8 matrix and the scales, registered as buffers named `weight_int8` (out, in) and
# `scale` (out,), plus the layer's bias (a buffer or a frozen parameter; `None` when the layer has
# none). `forward(x)` rebuilds ŵ = q · s (one s per row) and returns x @ ŵᵀ + b for any leading
# axes, in x's dtype. Do not keep `linear` itself or any float copy of its weight: the point is
# that the module's `state_dict()` holds 1 byte per weight.
#
# **Not allowed:** `course_lib`, `torch.ao`, `torch.quantize_per_channel`, `torch.quantize_per_tensor`,
# `torch.fake_quantize_per_channel_affine`, `torch.fake_quantize_per_tensor_affine` (the check reads your
# code and watches it run).
#
# **Allowed:** your `quantize_per_channel`, `self.register_buffer`, `@`, `torch.nn.functional.linear`,
# and helpers of your own.

# %%
class QuantLinear(nn.Module):
    def __init__(self, linear):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x):
        # YOUR CODE HERE
        raise NotImplementedError()


check_quant_linear(QuantLinear)

# %% [markdown]
# Your layer next to the float one: the bytes its `state_dict()` holds, and how far its outputs move.

# %% tolerance={"rel": 0.05}
try:
    float_layer = torch.nn.Linear(256, 128)
    int8_layer = QuantLinear(float_layer)
    x = torch.randn(8, 256)  # (B, in)
    for name, layer in [("nn.Linear", float_layer), ("QuantLinear", int8_layer)]:
        saved = sum(t.numel() * t.element_size() for t in layer.state_dict().values())
        print(f"{name:<12} state_dict bytes: {saved:>7,}")
    with torch.no_grad():
        moved = (int8_layer(x) - float_layer(x)).abs().max().item()
    print(f"largest change of an output: {moved:.1e} (outputs are of size {float_layer(x).abs().mean().item():.1f})")
except NotImplementedError:
    print("write QuantLinear above first")

# %% [markdown]
# ## 4. One scale per group of columns (3 points, about 20 minutes)
#
# One outlier weight still coarsens its whole row under per-channel scales. Weight-only schemes
# for large models (GPTQ, AWQ, the k-quants of llama.cpp) therefore give a scale to each **group**
# of `group_size` consecutive input columns of a row. Write `quantize_per_group(w, group_size)`:
# `w` (out, in) with `in` divisible by `group_size`; return `(q, scale)` with `q` (out, in) int8
# and `scale` (out, in // group_size) in w's dtype, where `scale[j, g]` = max |w| over columns
# g·group_size … (g+1)·group_size - 1 of row j, divided by 127 (1 for an all-zero group), and
# q = clamp(round(w / its group's scale), -127, 127). Do not change `w` in place.
#
# **Not allowed:** `course_lib`, `torch.ao`, `torch.quantize_per_channel`, `torch.quantize_per_tensor`,
# `torch.fake_quantize_per_channel_affine`, `torch.fake_quantize_per_tensor_affine` (the check reads your
# code and watches it run).
#
# **Allowed:** `reshape`, `.amax`, `torch.round`, `torch.where`, your `quantize_per_channel` from part 1,
# and helpers of your own.

# %%
def quantize_per_group(w, group_size):
    # YOUR CODE HERE
    raise NotImplementedError()


check_quantize_per_group(quantize_per_group)

# %% [markdown]
# A 4 × 64 weight whose row 0 has one weight 50× larger than the rest: the worst error per row
# under per-channel scales and under groups of 16 columns.

# %%
try:
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))  # (out, in)
    w[0, 5] = 50.0  # one outlier weight in row 0
    q, scale = quantize_per_channel(w)
    err_channel = (q * scale[:, None] - w).abs().amax(dim=1)  # (out,)
    qg, scale_g = quantize_per_group(w, 16)  # (4, 64), (4, 4)
    w_hat_group = (qg.reshape(4, 4, 16) * scale_g[..., None]).reshape(4, 64)  # (out, in)
    group_err = (w_hat_group - w).abs().reshape(4, 4, 16).amax(dim=-1)  # (out, G): worst error per group
    print("worst error per row, per-channel:", "  ".join(f"{e:.4f}" for e in err_channel.tolist()))
    print("worst error per group of row 0:   ", "  ".join(f"{e:.4f}" for e in group_err[0].tolist()))
    print(f"scales stored: per-channel {scale.numel()}, per-group {scale_g.numel()} (one per 16 weights)")
except NotImplementedError:
    print("write quantize_per_channel and quantize_per_group above first")

# %% [markdown]
# Only the outlier's own group of row 0 keeps the coarse step; the other three groups of row 0
# are back at the error of the ordinary rows (about 0.01 instead of about 0.19). The price is
# one scale per 16 weights instead of one per row.
#
# ## 5. Mixture-of-Depths routing (3 points, about 30 minutes)
#
# Lesson §1: a MoD block sends only the k best-scored tokens of each sequence through its block;
# the others skip it unchanged. Write `mod_route(x, scores, k, block)`: `x` (B, T, C), `scores`
# (B, T) the router's r, `k` an int, `block` a residual function (B, n, C) → (B, n, C) that
# returns h + f(h). For each sequence, choose the k tokens with the highest scores, keep them **in
# sequence order**, run `block` on those k tokens **alone**, and return x with each chosen token i
# replaced by x_i + g_i · (block(x̃)_i - x_i), where g_i = sigmoid(r_i) (the course's gate; the
# paper's g_i = r_i is accepted too). Every other token stays exactly as it was. The output must
# carry a gradient to `scores` (that is how the router learns), and x is not changed in place.
#
# **Not allowed:** `course_lib` (the check reads your code and watches it run).
#
# **Allowed:** `torch.topk`, `argsort`, `sort`, `gather`, `scatter`, `torch.where`, `torch.sigmoid`,
# and helpers of your own.

# %%
def mod_route(x, scores, k, block):
    # YOUR CODE HERE
    raise NotImplementedError()


check_mod_route(mod_route)

# %% [markdown]
# Route two sequences of 12 tokens through a block that adds 1 to every channel, with k = 4
# (█ = went through the block), and check the router gets a gradient only from the chosen tokens.

# %%
try:
    x = torch.zeros(2, 12, 3)  # (B, T, C)
    scores = torch.randn(2, 12, generator=torch.Generator().manual_seed(2)).requires_grad_(True)  # (B, T)
    y = mod_route(x, scores, 4, lambda h: h + 1.0)  # (B, T, C)
    changed = (y != x).any(-1)  # (B, T): which tokens the block touched
    for b in range(2):
        print(f"sequence {b}: {''.join('█' if c else '·' for c in changed[b].tolist())}")
    y.sum().backward()
    print("scores with a gradient are exactly the chosen tokens:", torch.equal(scores.grad != 0, changed))
except NotImplementedError:
    print("write mod_route above first")

# %% [markdown]
# ## Done?
# ✅ on all four checks means 12/12. Want more? Write `quantize_per_tensor` (one scale for the
# whole matrix) and compare it with parts 1 and 4 on a real model's weights — `course_lib.quantization`
# has the library versions, and `quantize_model` swaps every Linear of a model. Or wrap a course
# `Block` with your `mod_route` and a `nn.Linear(C, 1)` router and train it as lesson 15 §2 does.
