# ---
# jupyter:
#   jupytext:
#     formats: notebooks///ipynb,scripts/notebooks///py:percent
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/00_start_here.ipynb)

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
# # 00 · Start here
#
# Welcome to **Transformers from Scratch**. You will build the Transformer one part at a
# time — attention, positions, feed-forward layers, normalisation — and then whole
# models (GPT, BERT, T5, LLaMA), train one on Shakespeare and look inside it.
#
# Each lesson is a notebook you read and play with; most have an **exercise** notebook where
# you write the key functions yourself and a **check** tells you at once whether they are
# right, and if not, *why*.
#
# This notebook: the course map, a check of your environment, the device you will use,
# and how widgets and checks work.

# %% [markdown]
# ## The course map
# The same table is in `README.md`; both come from `course_lib.course_map`.

# %%
from IPython.display import Markdown

from course_lib.course_map import markdown_table

Markdown(markdown_table())

# %% [markdown]
# ## Is your environment ready?
# Each line says OK, or FAIL with the command that fixes it. Optional packages (MISS) are
# only needed by a few lessons.

# %%
from course_lib.envcheck import check_environment

ready = check_environment()
print("\nready to go!" if ready else "\nfix the FAIL lines above, then restart the kernel")

# %% [markdown]
# ## Which device?
# `get_device()` returns CUDA when a GPU is present and the CPU otherwise. Every lesson uses
# it, so the same notebook runs on a laptop and on a Colab GPU. Every lesson is sized to
# run on a laptop CPU in a few minutes. `seed_everything` seeds Python, NumPy and PyTorch
# so that the numbers you see are the numbers we saw.

# %%
import torch

from course_lib import describe_device, get_device, seed_everything

device = get_device()
seed_everything(0)
print("device in use:", describe_device(device))
x = torch.randn(3, 4, device=device)
print("a random tensor on it:", tuple(x.shape), x.dtype, x.device.type)

# %% [markdown]
# ## How the widgets work
# Lessons use [ipywidgets](https://ipywidgets.readthedocs.io): sliders and menus that redraw a
# plot. Move the slider below. If you see text such as `VBox(children=...)` instead of a
# slider, the widget extension is not active: see *Troubleshooting* in `README.md`.
# (When this notebook was executed without a browser, a static picture of the default view
# was stored below it.)

# %%
import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from course_lib.widgets import show_live_or_static

temperature = W.FloatSlider(value=1.0, min=0.1, max=5.0, step=0.1, description="temperature")
out = W.Output()
logits = np.array([2.0, 1.0, 0.1, -1.0])


def show(t):
    p = np.exp(logits / t) / np.exp(logits / t).sum()
    fig, ax = plt.subplots(figsize=(4, 2.2))
    ax.bar(["a", "b", "c", "d"], p)
    ax.set_ylim(0, 1)
    ax.set_title(f"softmax(logits / {t:.1f})")
    return fig


def redraw(change=None):
    with out:
        out.clear_output(wait=True)
        plt.show(show(temperature.value))


show_live_or_static(W.VBox([temperature, out]), [temperature], redraw,
                    static=lambda: plt.show(show(temperature.value)))

# %% [markdown]
# ## How the checks work
# In an exercise you fill in a function and then call its check. Here is the one for
# softmax, run on a version with a classic bug: it overflows on large inputs. Read the
# verdict: it names the case that failed and the likely cause.

# %%
from course_lib.checks import check_softmax, hint


def my_softmax(x, dim=-1):
    e = torch.exp(x)  # overflows: exp(1000) is inf
    return e / e.sum(dim=dim, keepdim=True)


result = check_softmax(my_softmax)

# %% [markdown]
# Stuck? `hint("check_softmax")` gives a nudge and `solution("check_softmax")` the answer.
# The check also returns its result, which is what the instructor's grader collects:

# %%
hint("check_softmax")
print(result.passed, result.points, "/", result.max_points)

# %% [markdown]
# ## Where next
# Open **`notebooks/01_attention.ipynb`**, then do **`exercises/01_attention.ipynb`**.
