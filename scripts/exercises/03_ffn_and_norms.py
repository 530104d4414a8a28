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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/03_ffn_and_norms.ipynb)

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
# # Exercise 03 · FFN, activations and norms
#
# Five pieces, each followed by its check. Replace each `raise NotImplementedError()` with
# your code and run the check cell: ✅ means it matches the reference on every case; ❌ says
# which case failed and, for common mistakes, *why*. `hint("check_gelu")` gives a nudge,
# `solution("check_gelu")` the answer.
#
# Use basic tensor operations (`mean`, `pow`, `sqrt`/`rsqrt`, `tanh`, `sigmoid`, `nn.Linear`…);
# do not call `F.gelu`, `F.layer_norm`, `nn.LayerNorm`, `F.rms_norm` or `nn.RMSNorm` — writing
# them is the point. Read `notebooks/03_ffn_and_norms.ipynb` first.

# %% [markdown]
# **The exercises here** (about 75 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_gelu` | about 10 min | `torch.nn.functional.gelu`, `torch.nn.GELU`, `course_lib.ffn.gelu`, `course_lib.ffn.gelu_tanh` |
# | `check_layer_norm` | about 15 min | `torch.nn.functional.layer_norm`, `torch.layer_norm`, `torch.nn.LayerNorm`, `course_lib.norms.LayerNorm`, `course_lib.norms.StdEpsLayerNorm` |
# | `check_rms_norm` | about 10 min | `torch.nn.functional.rms_norm`, `torch.rms_norm`, `torch.nn.RMSNorm`, `course_lib.norms.RMSNorm`, `course_lib.norms.T5LayerNorm` |
# | `check_swiglu_ffn` | about 15 min | `course_lib.ffn.GatedFeedForward`, `course_lib.ffn.glu_ffn`, `course_lib.ffn.make_ffn` |
# | `check_pre_norm_block` | about 25 min | `torch.nn.TransformerEncoderLayer`, `course_lib.blocks.Block`, `course_lib.blocks.transformer_block` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import MultiHeadAttention
from course_lib.checks import (check_gelu, check_layer_norm, check_pre_norm_block, check_rms_norm,
                               check_swiglu_ffn, hint, solution)
from course_lib.ffn import GatedFeedForward
from course_lib.norms import LayerNorm as ReferenceLayerNorm

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. GELU, tanh form (1 point)
# GPT-2's GELU: $\mathrm{GELU}(x) \approx 0.5\,x\,\big(1 + \tanh\big(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\big)\big)$,
# element-wise, same shape and dtype as `x`.

# %%
def gelu(x: torch.Tensor) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_gelu(gelu)

# %% [markdown]
# ## 2. LayerNorm (2 points)
# A module like `nn.LayerNorm(d, eps)`: parameters `weight` (starts at ones) and `bias`
# (starts at zeros), both of shape (d,). `forward(x)` normalises each token over the **last**
# axis with the **biased** variance (divide by d) and ε **inside** the square root, then
# applies `weight` and `bias`:
# $\;y = \dfrac{x-\mu}{\sqrt{\sigma^2+\epsilon}}\odot\gamma+\beta$.

# %%
class LayerNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_layer_norm(LayerNorm)

# %% [markdown]
# ## 3. RMSNorm (2 points)
# A module with one parameter, `weight` (ones, shape (d,)), and **no** bias:
# $\;y = \dfrac{x}{\sqrt{\mathrm{mean}(x^2)+\epsilon}}\odot\gamma$ over the last axis.
# Like LLaMA, compute in float32 when `x` is float16/bfloat16 and cast the normalised value
# back to `x.dtype` before multiplying by `weight` — the output keeps the input's dtype.

# %%
class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_rms_norm(RMSNorm)

# %% [markdown]
# ## 4. SwiGLU feed-forward (2 points)
# Three `nn.Linear` layers **without bias**, named as in Hugging Face Llama: `gate_proj` and
# `up_proj` (d_model → d_ff) and `down_proj` (d_ff → d_model).
# $\;\mathrm{SwiGLU}(x) = W_{\text{down}}\big(\mathrm{SiLU}(W_{\text{gate}}x)\odot W_{\text{up}}x\big)$,
# with SiLU(z) = z·σ(z) (`F.silu` is allowed).

# %%
class SwiGLUFFN(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_swiglu_ffn(SwiGLUFFN)

# %% [markdown]
# ## 5. A pre-LN block (3 points)
# The sub-modules are built for you (course_lib's reference versions, so this check tests
# only the wiring). Write `forward`: each sub-layer reads a **normalised copy** of the
# stream and its output is **added** to the un-normalised stream:
#
# $$h = x + \mathrm{Attn}(\mathrm{Norm}_1(x), \text{mask}),\qquad y = h + \mathrm{FFN}(\mathrm{Norm}_2(h))$$
#
# Call the attention as `self.attn(h, mask)`.

# %%
class PreNormBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attn_norm = ReferenceLayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ffn_norm = ReferenceLayerNorm(d_model)
        self.ffn = GatedFeedForward(d_model, d_ff)  # SwiGLU

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_pre_norm_block(PreNormBlock)

# %% [markdown]
# ## Done?
# All five ✅ means 10/10. Want more? Swap your `LayerNorm` into `PreNormBlock` for the
# reference one, switch it to post-LN, and stack 24 of them: lesson 03's section 6 shows what
# to measure.
