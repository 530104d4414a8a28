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
# # Exercise 04 · KV heads and the KV cache
#
# Five pieces, each followed by its check: `repeat_kv`, turning an MHA checkpoint into GQA,
# the size of a model's KV cache, the largest batch that fits in memory, and GQA attention
# that never copies K and V. Replace each `raise NotImplementedError()` with your code and run
# the check cell: ✅ means it matches the reference on every case; ❌ says which case failed
# and, for common mistakes, *why*. `hint("check_repeat_kv")` gives a nudge,
# `solution("check_repeat_kv")` the answer. Read `notebooks/04_kv_heads_and_cache.ipynb` first.

# %% [markdown]
# **The exercises here** (about 70 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_repeat_kv` | about 10 min | `course_lib.attention.repeat_kv` |
# | `check_mha_to_gqa` | about 15 min | `course_lib` |
# | `check_kv_cache_bytes` | about 10 min | `course_lib` |
# | `check_max_batch` | about 10 min | `course_lib` |
# | `check_gqa_attention` | about 25 min | `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`, `torch.nn.functional.multi_head_attention_forward`, `torch.repeat_interleave`, `torch.Tensor.repeat_interleave`, `course_lib` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import math

import torch

from course_lib.checks import (check_gqa_attention, check_kv_cache_bytes, check_max_batch, check_mha_to_gqa,
                               check_repeat_kv, hint, solution)

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
# ## 2. From MHA to GQA: mean-pool a checkpoint (3 points, about 15 minutes)
# Ainslie et al. (2023, §2.1) turn a trained multi-head checkpoint into a GQA one before they
# uptrain it: the key (and value) projection of each group is the **mean** of the projections of
# the heads in that group. Write `mha_to_gqa(k_proj_weight, v_proj_weight, n_heads, n_kv_heads)`.
#
# * The weights are an MHA layer's, each (H · D, C) as in `nn.Linear`: rows h·D … h·D + D − 1
#   belong to head h.
# * Group j holds the **consecutive** heads j·n_rep … j·n_rep + n_rep − 1 (n_rep = H / H_kv),
#   the order `repeat_kv` uses, so that after pooling K/V head j serves the same query heads.
# * Return the pair `(k_weight, v_weight)`, each (H_kv · D, C). Leave the inputs unchanged.
#
# **Not allowed:** `course_lib` (the lesson's `pooled_gqa` does this inside a layer). Plain
# tensor operations (`view`, `mean`, `reshape`, …) and helpers of your own are fine.

# %%
def mha_to_gqa(k_proj_weight: torch.Tensor, v_proj_weight: torch.Tensor, n_heads: int, n_kv_heads: int):
    # YOUR CODE HERE
    raise NotImplementedError()


check_mha_to_gqa(mha_to_gqa)

# %% [markdown]
# A GQA layer *is* an MHA layer whose heads come in identical groups (lesson §2). So copy the K/V
# heads of a GQA layer into their groups with your `repeat_kv`, then pool them again: the GQA
# weights must come back (the mean of n_rep equal numbers is that number, up to rounding).

# %%
H, H_kv, D, C = 8, 2, 4, 16
k_gqa, v_gqa = torch.randn(H_kv * D, C), torch.randn(H_kv * D, C)  # (H_kv*D, C) each
copied = [repeat_kv(w.view(1, H_kv, D, C), H // H_kv).reshape(H * D, C) for w in (k_gqa, v_gqa)]  # (H*D, C)
k_back, v_back = mha_to_gqa(*copied, H, H_kv)  # (H_kv*D, C) each
print("MHA copy of a GQA layer:", tuple(copied[0].shape), "-> pooled:", tuple(k_back.shape))
print("pooling gives the GQA weights back:", torch.allclose(k_back, k_gqa) and torch.allclose(v_back, v_gqa))

# %% [markdown]
# ## 3. How big is the KV cache? (2 points, about 10 minutes)
# Write `kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=2)`: the bytes of keys and
# values that `batch` sequences of `seq_len` tokens keep, for every layer. `config` is a model's
# `config.json` as a dict, with Hugging Face's names:
#
# * `num_hidden_layers`, `hidden_size`, `num_attention_heads` (the query heads);
# * `num_key_value_heads`, which older configs leave out: then every query head has its own
#   K/V head (MHA), as Hugging Face assumes;
# * `head_dim`, which most configs leave out: then head_dim = hidden_size // num_attention_heads.
#
# `bytes_per_value` is 2 for fp16/bf16, 4 for float32, 1 for int8, 0.5 for 4 bits. Return a number.
#
# **Not allowed:** `course_lib` (`course_lib.kv_cache` has this formula).

# %%
def kv_cache_bytes(config: dict, seq_len: int, batch: int = 1, bytes_per_value: float = 2):
    # YOUR CODE HERE
    raise NotImplementedError()


check_kv_cache_bytes(kv_cache_bytes)

# %% [markdown]
# Four published configs (the numbers from each model's `config.json`, typed in here) and what one
# token and one 4096-token sequence cost in fp16:

# %%
CONFIGS = {
    "LLaMA-2-7B": {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32},
    "LLaMA-2-70B": {"num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8},
    "Mistral-7B-v0.1": {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
                        "num_key_value_heads": 8},
    "Gemma-7B": {"num_hidden_layers": 28, "hidden_size": 3072, "num_attention_heads": 16, "num_key_value_heads": 16,
                 "head_dim": 256},
}
print(f"{'model':<16}{'per token':>12}{'4096 tokens':>14}")
for name, config in CONFIGS.items():
    print(f"{name:<16}{kv_cache_bytes(config, 1) / 2**10:>8.0f} KiB{kv_cache_bytes(config, 4096) / 2**30:>10.2f} GiB")

# %% [markdown]
# ## 4. How many sequences fit? (2 points, about 10 minutes)
# A server holds the weights once and a cache per sequence. Write
# `max_batch(config, seq_len, memory_bytes, weight_bytes, bytes_per_value=2)`: the largest number
# of `seq_len`-token sequences whose caches fit in `memory_bytes` next to `weight_bytes` of
# weights (everything else, such as activations, is left out here). A batch that fills the memory
# exactly fits; when not even one sequence fits (or not even the weights), return 0. Use your
# `kv_cache_bytes`.
#
# **Not allowed:** `course_lib`.

# %%
def max_batch(config: dict, seq_len: int, memory_bytes: float, weight_bytes: float, bytes_per_value: float = 2):
    # YOUR CODE HERE
    raise NotImplementedError()


check_max_batch(max_batch)

# %% [markdown]
# Two models of about 7 billion parameters (14 GB of fp16 weights, rounded) on one 80 GiB GPU.
# Mistral's 8 K/V heads instead of LLaMA-2's 32 let four times as many sequences share it.

# %%
for name in ("LLaMA-2-7B", "Mistral-7B-v0.1"):
    print(f"{name:<16} 4096-token sequences on 80 GiB: {max_batch(CONFIGS[name], 4096, 80 * 2**30, 14e9):>4}")

# %% [markdown]
# ## 5. GQA attention without copying K and V (3 points, about 25 minutes)
# `repeat_kv` makes K and V n_rep times bigger before attending, which undoes in memory what GQA
# saved. The lesson's `decode_attention` (§5) did the opposite for one new token: it grouped the
# query heads that share a K/V head. Write `gqa_attention(q, k, v, mask=None)` for any number of
# queries:
#
# * q (B, H, T, D); k, v (B, H_kv, S, D) with H a multiple of H_kv; query heads
#   j·n_rep … j·n_rep + n_rep − 1 use K/V head j;
# * `mask` is None or a bool tensor with **True = may attend**, the same for every head:
#   (T, S), (B, 1, T, S) or (B, 1, 1, S). Every query may attend to at least one key;
# * return (B, H, T, D), equal to attention over `repeat_kv(k)` and `repeat_kv(v)`, with the
#   scores scaled by 1/√D.
#
# The check watches the tensors your code creates: none may be n_rep times the size of `k`.
#
# **Not allowed:** `F.scaled_dot_product_attention`, `nn.MultiheadAttention`,
# `F.multi_head_attention_forward`, `repeat_interleave`, `course_lib`. Allowed: `@`, `einsum`,
# `torch.softmax` (you wrote your own in exercise 01), `masked_fill`, `view`, `reshape`.

# %%
def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
    # YOUR CODE HERE
    raise NotImplementedError()


check_gqa_attention(gqa_attention)

# %% [markdown]
# Your function against attention over copied K/V (your `repeat_kv`), for 3 new tokens after 5
# cached ones, 8 query heads sharing 2 K/V heads:

# %%
q, k, v = torch.randn(1, 8, 3, 16), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)  # (B, H, T, D), (B, H_kv, S, D)
mask = torch.ones(3, 8, dtype=torch.bool).tril(5)  # (T, S): query i sees keys 0 .. 5 + i
scores = q @ repeat_kv(k, 4).transpose(-2, -1) / math.sqrt(16)  # (B, H, T, S)
copied = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ repeat_kv(v, 4)  # (B, H, T, D)
print("equal to attention over copied K/V:", torch.allclose(gqa_attention(q, k, v, mask), copied, atol=1e-5))
print(f"K and V hold {2 * k.nelement() * k.element_size()} bytes; copied to all 8 query heads they would hold "
      f"{2 * repeat_kv(k, 4).nelement() * k.element_size()}")

# %% [markdown]
# ## Done?
# ✅ everywhere means 12/12. Why does `expand` + `reshape` not copy memory until the reshape, and
# when does the reshape copy? Try `x.expand(...).is_contiguous()`. Then: why can
# `q.reshape(B, H_kv, n_rep * T, D)` in part 5 be a view, without a copy?
