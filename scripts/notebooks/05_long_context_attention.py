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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/05_long_context_attention.ipynb)

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
# # 05 · Long context: tiled softmax, sliding windows, sparse and linear attention
#
# "Attention is O(T²)" is where most explanations stop. Here we **measure** it on this machine,
# then take four ways around it and check each against exact attention wherever it claims to
# be exact:
#
# 1. **Online softmax / tiled attention** (Milakov & Gimelshein 2018; FlashAttention, Dao et al.
#    2022): the *same* result, never holding the T×T matrix.
# 2. **Sliding-window attention** (Longformer's local part; Mistral 7B): each token sees only
#    the last w tokens — memory O(T·w).
# 3. **Sparse patterns** (Sparse Transformer, Child et al. 2019; Longformer; BigBird): first as
#    masks, which save nothing, then as block-sparse attention that skips the masked tiles.
# 4. **Linear attention** (Katharopoulos et al. 2020): softmax replaced by a kernel — O(T),
#    and an RNN in disguise.
#
# **Then** do `exercises/05_long_context_attention.ipynb`.

# %%
import math
import statistics
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from course_lib import get_device, seed_everything
from course_lib.attention import causal_mask, scaled_dot_product_attention, sliding_window_mask
from course_lib.device import single_thread
from course_lib.efficient_attention import (block_layout_mask, block_sparse_attention, causal_linear_attention,
                                            causal_linear_attention_parallel, elu_feature_map,
                                            linear_attention_recurrent, online_softmax_attention, peak_memory,
                                            receptive_field, sliding_window_attention, sliding_window_attention_naive,
                                            tiled_attention, window_global_random_mask)
from course_lib.viz import plot_mask, plot_scaling

device = get_device()
seed_everything(0)
torch.set_printoptions(precision=4, sci_mode=False)


def growth(Ts, ys) -> str:
    """Fit y ∝ T^p on log-log axes and say which regime p is in (the exact p varies a little)."""
    lx, ly = torch.tensor(Ts, dtype=torch.float64).log(), torch.tensor(ys, dtype=torch.float64).log()
    p = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    return "≈ T² (quadratic)" if p > 1.5 else "≈ T (linear) or flatter"


def best_time(fn, *args, repeats: int = 3) -> float:
    """Fastest of a few runs, in seconds: the least disturbed by whatever else the machine does."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


# %% [markdown]
# ## 1. The memory wall, measured
# Exact attention as written in lesson 01 builds the scores `q @ kᵀ`: a T×T matrix per head, and
# softmax makes a second one. We measure the **peak memory** each call allocates: on a GPU from
# the allocator's counter, on the CPU by recording every allocation and free with PyTorch's
# profiler and replaying them (`course_lib.efficient_attention.peak_memory`). The plot also shows
# PyTorch's fused `F.scaled_dot_product_attention` (SDPA).

# %%
Ts = [256, 512, 1024, 2048]
mem = {"naive (lesson 01)": [], "SDPA (PyTorch)": []}
for T in Ts:
    q, k, v = (torch.randn(1, 1, T, 64, device=device) for _ in range(3))  # (B, H, T, D)
    mem["naive (lesson 01)"].append(peak_memory(scaled_dot_product_attention, q, k, v)[1] / 2**20)
    mem["SDPA (PyTorch)"].append(peak_memory(F.scaled_dot_product_attention, q, k, v)[1] / 2**20)
for name, ys in mem.items():
    print(f"{name:<18} peak memory grows {growth(Ts, ys)}")
plot_scaling(Ts, mem, "peak memory (MiB)", title="one head, D = 64, float32")
plt.show()

# %% [markdown]
# At T = 2048 one head's scores are 2048² × 4 bytes = 16 MiB; a 32-head layer at T = 32k would need
# 128 GiB. SDPA's CPU and GPU kernels avoid that — the next two sections show how.
#
# ## 2. Online softmax, step by step
# softmax(s)·v = Σ_j e^{s_j} v_j / Σ_j e^{s_j}, and for stability we subtract the maximum m first.
# The trouble: m is the maximum over **all** scores, which we do not know until we have seen them
# all. Milakov & Gimelshein's trick keeps three running quantities while reading the scores
# block by block:
#
# * m — the largest score so far,
# * l = Σ e^{s_j − m} — the sum of exponentials *relative to m*,
# * acc = Σ e^{s_j − m} v_j — the weighted sum of values, also relative to m.
#
# When a new block raises the maximum from m to m′, everything accumulated so far is too large
# by a factor e^{m′ − m}, so both l and acc are multiplied by the **correction** e^{m − m′}
# before the block is added. At the end, acc / l is exactly softmax(s)·v.
#
# A worked example you can follow by hand: six scores in two blocks of three, values 1..6.

# %%
scores = torch.tensor([2.0, 1.0, 4.0, 3.0, 0.0, 6.0], dtype=torch.float64)
values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
m, l, acc = torch.tensor(-math.inf, dtype=torch.float64), 0.0, 0.0
for b, start in enumerate(range(0, 6, 3)):
    s, vb = scores[start:start + 3], values[start:start + 3]
    m_new = torch.maximum(m, s.max())
    correction = torch.exp(m - m_new)  # e^(m - m'): 0 for the first block (m = -inf)
    p = torch.exp(s - m_new)
    l = l * correction + p.sum()
    acc = acc * correction + (p * vb).sum()
    print(f"block {b}: scores {s.tolist()}  max {m.item()} -> {m_new.item()}  correction {correction.item():.4f}  "
          f"l = {l.item():.4f}  acc = {acc.item():.4f}")
    m = m_new
print(f"online result acc / l = {(acc / l).item():.6f}")
print(f"direct softmax(s) · v = {(torch.softmax(scores, 0) @ values).item():.6f}")

# %% [markdown]
# Check block 0 yourself: the max is 4, so l = e^{−2} + e^{−3} + e^{0} and
# acc = 1·e^{−2} + 2·e^{−3} + 3·e^{0}. Block 1 raises the max to 6: multiply both by e^{4−6},
# then add e^{−3}, e^{−6}, e^{0} (and 4·e^{−3}, 5·e^{−6}, 6·e^{0}).
#
# Forget the correction and block 0's terms keep their old, larger scale — the classic mistake
# (the exercise's check recognises it):

# %%
m, l_bad, acc_bad = torch.tensor(-math.inf, dtype=torch.float64), 0.0, 0.0
for start in range(0, 6, 3):
    s, vb = scores[start:start + 3], values[start:start + 3]
    m = torch.maximum(m, s.max())
    p = torch.exp(s - m)
    l_bad, acc_bad = l_bad + p.sum(), acc_bad + (p * vb).sum()  # no rescaling of the old sums
print(f"without the correction: {(acc_bad / l_bad).item():.6f} (should be {(acc / l).item():.6f})")

# %% [markdown]
# ## 3. From online softmax to tiled ("flash") attention
# `online_softmax_attention(q, k, v, block_size)` does the same for every query row at once,
# visiting the keys in blocks. FlashAttention (Dao et al. 2022, Algorithm 1) also cuts the
# **queries** into blocks, so each step touches one (block_q × block_k) tile of scores, and adds a
# backward pass (Algorithm 2) that recomputes the tiles from the saved row log-sum-exp instead of
# storing the T×T probabilities. `course_lib.efficient_attention.tiled_attention` is both, in plain
# PyTorch (for teaching — the real kernel's speed comes from keeping tiles in on-chip memory).
#
# Equal to SDPA, causal and not, in values **and** gradients:

# %%
seed_everything(5)
q, k, v = (torch.randn(2, 4, 300, 32, device=device, requires_grad=True) for _ in range(3))  # (B, H, T, D)
print("online softmax, blocks of 64, equals SDPA:",
      torch.allclose(online_softmax_attention(q, k, v, 64), F.scaled_dot_product_attention(q, k, v), atol=1e-5))
for causal in (False, True):
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = tiled_attention(q, k, v, block_q=64, block_k=48, causal=causal)
    g = torch.randn_like(ref)
    grads_ref, grads_out = torch.autograd.grad(ref, (q, k, v), g), torch.autograd.grad(out, (q, k, v), g)
    worst = max((a - b).abs().max().item() for a, b in zip((out, *grads_out), (ref, *grads_ref)))
    print(f"tiled attention, causal={causal}: output and dq, dk, dv within 1e-5 of SDPA: {worst <= 1e-5}")

# %% [markdown]
# And the memory: the tiled version's peak no longer grows like T².

# %%
Ts = [256, 512, 1024, 2048]
mem_tiled, time_tiled = {"naive": [], "tiled (64×64)": [], "SDPA": []}, {"naive": [], "tiled (64×64)": [], "SDPA": []}
fns = {"naive": lambda q, k, v: scaled_dot_product_attention(q, k, v, causal_mask(q.size(-2), q.device)),
       "tiled (64×64)": lambda q, k, v: tiled_attention(q, k, v, 64, 64, causal=True),
       "SDPA": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
with torch.no_grad():
    for T in Ts:
        q, k, v = (torch.randn(1, 1, T, 64, device=device) for _ in range(3))  # (B, H, T, D)
        for name, fn in fns.items():
            mem_tiled[name].append(peak_memory(fn, q, k, v)[1] / 2**20)
            time_tiled[name].append(best_time(fn, q, k, v))
for name, ys in mem_tiled.items():
    print(f"{name:<14} peak memory grows {growth(Ts, ys)}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
plot_scaling(Ts, mem_tiled, "peak memory (MiB)", ax=axes[0], title="causal attention, memory")
plot_scaling(Ts, time_tiled, "time (s)", ax=axes[1], title="causal attention, time on this machine")
fig.tight_layout()
plt.show()

# %% [markdown]
# Tiling saves **memory**, not arithmetic: all T² scores are still computed, so the time keeps
# growing like T² — and a Python loop over tiles is slow. Fused kernels (SDPA, FlashAttention)
# run the same loop without Python and without writing tiles to main memory.
#
# ## 4. Sliding-window attention
# If most of what a token needs is nearby, let it see only a **window** of recent tokens.
#
# **Convention used throughout the course:** with window w, query i may attend to keys
# i − w + 1 … i. That is w keys: the token itself and the w − 1 tokens before it
# (`sliding_window_mask`; w = T gives ordinary causal attention). Two sources you will compare
# against count differently:
#
# * **Hugging Face `transformers`** builds its Mistral mask with `sliding_window_overlay`
#   (in `transformers/masking_utils.py`), which keeps key j when j > i − sliding_window, i.e.
#   i − j < sliding_window. That is the same w keys. Our `window` is their `sliding_window`:
#   a checkpoint whose config says `sliding_window: 4096` has window = 4096 here.
# * **The Mistral 7B paper** (Jiang et al. 2023, §2) says the hidden state at position i attends
#   to the positions between i − W and i. Read literally, with both ends included, that is
#   W + 1 keys, which is our window = W + 1.
#
# The two differ by one key per query. That matters only when you compare masks entry by
# entry, or count how far information travels (below). As a mask, True = may attend:

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, w in zip(axes, (1, 3, 10)):
    plot_mask(sliding_window_mask(10, w), f"sliding_window_mask(10, window={w})", ax=ax)
fig.tight_layout()
plt.show()
print(sliding_window_mask(6, 3).int())

# %% [markdown]
# **Naive:** build all T×T scores and mask the band — right answer, O(T²) memory, nothing gained.
#
# **Vectorised:** give each query its own w keys. Pad k and v with w − 1 zero rows *before*
# position 0 (padding after would let the future in), then `unfold` takes overlapping windows —
# a strided **view**, no copy: row t of the result holds keys t − w + 1 … t. One `einsum`
# scores each query against its window only; padded slots get −∞.

# %%
seed_everything(6)
B, H, T, D, w = 1, 2, 10, 8, 4
q, k, v = (torch.randn(B, H, T, D) for _ in range(3))  # (B, H, T, D)
k_pad = F.pad(k, (0, 0, w - 1, 0))  # (B, H, T + w - 1, D): w-1 zero rows in the past
k_win = k_pad.unfold(2, w, 1)  # (B, H, T, D, w): window t = keys t-w+1 .. t
scores = torch.einsum("bhtd,bhtdw->bhtw", q, k_win) / math.sqrt(D)  # (B, H, T, w)
print("k_pad", tuple(k_pad.shape), "k_win", tuple(k_win.shape), "scores", tuple(scores.shape))
print("k_win shares memory with k_pad (a view):", k_win.data_ptr() == k_pad.data_ptr())
print("window of query 5 = keys 2..5:", torch.equal(k_win[0, 0, 5], k[0, 0, 2:6].T))
naive, fast = sliding_window_attention_naive(q, k, v, w), sliding_window_attention(q, k, v, w)
print("vectorised equals naive:", torch.allclose(naive, fast, atol=1e-6))
print("naive equals SDPA with the band mask:",
      torch.allclose(naive, F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(T, w)), atol=1e-6))

# %% [markdown]
# Memory and time against T at a fixed window w = 64 (sizes that run in a few seconds here;
# `benchmarks/attention.py` goes to T = 8192):

# %%
Ts, w = [256, 512, 1024, 2048, 4096], 64
mem_sw, time_sw = {"naive": [], "vectorised": []}, {"naive": [], "vectorised": []}
with torch.no_grad():
    for T in Ts:
        q, k, v = (torch.randn(1, 1, T, 64, device=device) for _ in range(3))  # (B, H, T, D)
        for name, fn in (("naive", sliding_window_attention_naive), ("vectorised", sliding_window_attention)):
            mem_sw[name].append(peak_memory(fn, q, k, v, w)[1] / 2**20)
            time_sw[name].append(best_time(fn, q, k, v, w))
for name in mem_sw:
    print(f"sliding window, {name:<10} peak memory grows {growth(Ts, mem_sw[name])}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
plot_scaling(Ts, mem_sw, "peak memory (MiB)", ax=axes[0], title=f"sliding window w={w}: memory")
plot_scaling(Ts, time_sw, "time (s)", ax=axes[1], title=f"sliding window w={w}: time on this machine")
fig.tight_layout()
plt.show()

# %% [markdown]
# **But can a token still use information from far away?** Yes, through depth: layer 1 mixes in
# the last w − 1 tokens, layer 2 mixes in *their* windows, and so on. After L layers the
# receptive field reaches back L·(w − 1) tokens. This is the argument of the Mistral 7B paper
# (§2), which gives W × L, about 131k tokens for 32 layers and W = 4096. The last two lines
# below count both ways: our window of 4096 keys, and the paper's literal i − W … i.

# %%
T, w = 40, 4
for L in (1, 2, 3, 5):
    reach = receptive_field(sliding_window_mask(T, w), L)  # (T, T)
    first = reach[T - 1].nonzero().min().item()
    print(f"L={L}: the last token is influenced by tokens {first}..{T - 1}: {T - 1 - first} back = L·(w−1) = {L * (w - 1)}")
print(f"Mistral 7B: 32 layers × (4096 − 1) = {32 * 4095:,} tokens of theoretical reach")
print(f"with the paper's i − W … i (W + 1 keys, W = 4096): 32 × 4096 = {32 * 4096:,} tokens")

# %% [markdown]
# ## 5. Sparse patterns
# Sliding windows are one sparse pattern. Others mix local and long-range links:
#
# * **strided** (Child et al. 2019, §4.2): the previous `stride` tokens, plus every stride-th token
#   before them — any two tokens connect in two steps;
# * **fixed**: tokens in the same block of `stride`, plus the last token of every block as a
#   "summary" (GPT-3 alternates dense layers with locally banded sparse ones);
# * **window + global + random** (Longformer, BigBird): a local band, a few global tokens that see
#   and are seen by all, and some random links.
#
# Explore them: pick a pattern, a window or stride, and a number of layers. The left map is one
# layer's mask, the right one what can reach each token after L layers. (Run the notebook for the
# live version; stored outputs show the default view.)

# %%
from course_lib.widgets import pattern_explorer

pattern_explorer()

# %% [markdown]
# ### Masks compute everything; block-sparse attention skips tiles
# Each pattern above is a mask. All T × T scores are still computed and most are thrown away,
# so memory and time stay O(T²). Only the vectorised sliding window of §4 skipped work, by
# gathering each query's own keys. The other patterns can skip work too, if they are defined
# on **blocks** of tokens instead of single tokens. A block layout is an
# (n_blocks × n_blocks) bool matrix that says which (query block, key block) tiles are computed
# at all. The Sparse Transformer's kernels and BigBird (Zaheer et al. 2020, App. D) work this
# way.
#
# `block_sparse_attention(q, k, v, layout, block)` lists the allowed tiles and gathers each
# tile's queries, keys and values with `index_select`. It scores all tiles as one batch of
# (block × block) matmuls. A query's scores are now spread over several tiles, so its softmax
# is put together per query block: first the maximum over the row's tiles (`scatter_reduce`),
# then the sum of exponentials and the weighted values, each added up per query block with
# `index_add`. Inside a tile the causal rule and the padding of the last block still apply,
# token by token.
#
# The layout is BigBird's pattern on blocks: `window_global_random_mask`, called with the
# number of blocks instead of the number of tokens. Each block sees itself and the 2 blocks
# before it, the first block (global) and one random earlier block. First the proof, on 8 × 8
# tiles, in float64 and float32:

# %%
T, BLOCK = 64, 8
layout = window_global_random_mask(T // BLOCK, 3, n_global=1, n_random=1, causal=True, seed=0)  # (8, 8) tiles
mask = block_layout_mask(layout, BLOCK, T, causal=True)  # (T, T) tokens
print(layout.int())
print(f"{int(layout.sum())} of {layout.numel()} tiles computed; {int(mask.sum())} of {T * T} scores are allowed")
seed_everything(8)
for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
    q, k, v = (torch.randn(2, 3, T, 16, dtype=dtype) for _ in range(3))  # (B, H, T, D)
    dense = scaled_dot_product_attention(q, k, v, mask)  # all T×T scores, then the mask
    sparse = block_sparse_attention(q, k, v, layout, BLOCK, causal=True)  # only the allowed tiles
    print(f"{str(dtype):<14} block-sparse equals dense masked attention within {tol:.0e}: "
          f"{(sparse - dense).abs().max().item() <= tol}")
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
plot_mask(layout, f"block layout: {T // BLOCK} × {T // BLOCK} tiles of {BLOCK} × {BLOCK}", ax=axes[0])
plot_mask(mask, f"the token mask it stands for ({T} × {T})", ax=axes[1])
axes[0].set_xlabel("key block")
axes[0].set_ylabel("query block")
fig.tight_layout()
plt.show()

# %% [markdown]
# Now the cost, with blocks of 64 at T = 1024, 2048 and 4096 and one head of size 64, on the
# CPU. We compare lesson 01's attention and PyTorch's SDPA, both given the same T × T mask,
# built once outside the measurement. Peak memory is measured as in §1; time is the median of
# 3 runs on one thread.

# %% tolerance={"rel": 0.1}
def median_time(fn, *args, repeats: int = 3) -> float:
    """Median of a few runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


BLOCK, Ts = 64, [1024, 2048, 4096]
names = ["dense masked (lesson 01)", "SDPA masked", "block-sparse"]
mem_bs, time_bs = {n: [] for n in names}, {n: [] for n in names}
seed_everything(9)
with torch.no_grad(), single_thread():
    for T in Ts:
        layout = window_global_random_mask(T // BLOCK, 3, n_global=1, n_random=1, causal=True, seed=0)  # tiles
        mask = block_layout_mask(layout, BLOCK, T, causal=True)  # (T, T), built once, outside the timing
        q, k, v = (torch.randn(1, 1, T, 64) for _ in range(3))  # (B, H, T, D)
        fns = {"dense masked (lesson 01)": lambda q, k, v: scaled_dot_product_attention(q, k, v, mask),
               "SDPA masked": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
               "block-sparse": lambda q, k, v: block_sparse_attention(q, k, v, layout, BLOCK, causal=True)}
        outs = {}
        for name, fn in fns.items():
            outs[name], peak = peak_memory(fn, q, k, v)
            mem_bs[name].append(peak / 2**20)
            time_bs[name].append(median_time(fn, q, k, v))
        same = all((o - outs["dense masked (lesson 01)"]).abs().max().item() <= 1e-5 for o in outs.values())
        tiles = int(layout.sum())
        print(f"T={T}: {tiles} of {layout.numel()} tiles, {tiles / layout.numel():.1%} of the T² scores; "
              f"all three outputs equal within 1e-5: {same}")
        print("   peak memory " + ", ".join(f"{n} {mem_bs[n][-1]:.1f} MiB" for n in names))
        print("   time        " + ", ".join(f"{n} {time_bs[n][-1] * 1e3:.1f} ms" for n in names))
for name in names:
    print(f"{name:<25} peak memory grows {growth(Ts, mem_bs[name])}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
plot_scaling(Ts, mem_bs, "peak memory (MiB)", ax=axes[0], title=f"BigBird-style layout, blocks of {BLOCK}: memory")
plot_scaling(Ts, time_bs, "time (s)", ax=axes[1], title="time on this machine (one thread)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The tile counts are exact, and so is the memory on a given PyTorch build; the times are this
# machine's. The block-sparse version computes only the share of the T² scores printed, and
# its peak memory grows like T. Both dense versions compute every score. SDPA's peak is well
# below lesson 01's, but given a T × T mask it still grows like T². The mask itself, T² bools
# (16 MiB at T = 4096), is memory that only the dense versions need. In time, the gap between
# block-sparse and the dense versions widens as T grows.
#
# Block-sparse attention buys this only for patterns that come in whole tiles. Strided or
# random links between single tokens would leave almost every tile partly used, and a tile is
# computed in full as soon as one of its scores is needed.

# %% [markdown]
# ## 6. Linear attention
# Softmax attention weighs key j by sim(q, k_j) = exp(q·k_j/√D). Katharopoulos et al. (2020)
# replace it by a kernel sim(q, k) = φ(q)·φ(k) with a positive feature map, φ(x) = elu(x) + 1
# (Eq. 7). Then the sum over keys can be computed *once* and reused by every query (Eq. 5):
#
# $$\text{out}_i = \frac{\sum_j \phi(q_i)^\top \phi(k_j)\, v_j^\top}{\sum_j \phi(q_i)^\top \phi(k_j)}
#   = \frac{\phi(q_i)^\top \overbrace{\textstyle\sum_j \phi(k_j) v_j^\top}^{S\ (D \times D_v)}}{\phi(q_i)^\top \underbrace{\textstyle\sum_j \phi(k_j)}_{z\ (D)}}$$
#
# Causal: only j ≤ i, so S and z become **running sums** S_i, z_i — a cumulative sum over time,
# or equivalently an RNN whose state (S, z) is updated once per token (§3.4). Three forms, one
# answer:

# %%
seed_everything(7)
q, k, v = (torch.randn(2, 3, 50, 16, dtype=torch.float64) for _ in range(3))  # (B, H, T, D)
parallel = causal_linear_attention_parallel(q, k, v)  # T×T similarities, masked, normalised
cumsum = causal_linear_attention(q, k, v)  # prefix sums: memory O(T·D·D_v)
recurrent = linear_attention_recurrent(q, k, v)  # an RNN: state of fixed size D×D_v
print("cumsum form equals parallel form:   ", torch.allclose(cumsum, parallel, atol=1e-10))
print("recurrent form equals parallel form:", torch.allclose(recurrent, parallel, atol=1e-10))

# %% [markdown]
# **The trade-off.** Softmax can make one key win by a mile (exponentials); a sum of positive
# feature products cannot be that selective. A small retrieval task shows it: T random keys,
# the query is one of them; how much weight lands on the matching key as T grows?

# %%
def weight_on_target(T: int, D: int = 32, trials: int = 200, sharpness: float = 2.0):
    g = torch.Generator().manual_seed(T)
    keys = torch.randn(trials, T, D, generator=g, dtype=torch.float64)  # (N, T, D)
    target = torch.randint(0, T, (trials,), generator=g)  # (N,)
    query = sharpness * keys[torch.arange(trials), target]  # (N, D): a scaled copy of the target key
    soft = torch.softmax(torch.einsum("nd,ntd->nt", query, keys) / math.sqrt(D), -1)  # (N, T)
    sim = torch.einsum("nd,ntd->nt", elu_feature_map(query), elu_feature_map(keys))  # (N, T)
    lin = sim / sim.sum(-1, keepdim=True)  # (N, T)
    pick = lambda w: w[torch.arange(trials), target].mean().item()  # noqa: E731
    return pick(soft), pick(lin)


lengths = [4, 16, 64, 256, 1024]
res = {T: weight_on_target(T) for T in lengths}
for T, (s, l) in res.items():
    print(f"T={T:>5}: weight on the matching key — softmax {s:.2f}, linear (elu+1) {l:.3f}")

fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.plot(lengths, [res[T][0] for T in lengths], "o-", label="softmax")
ax.plot(lengths, [res[T][1] for T in lengths], "s-", label="linear, φ = elu + 1")
ax.set_xscale("log", base=2)
ax.set_xlabel("number of keys T")
ax.set_ylabel("mean weight on the right key")
ax.set_title("retrieval: linear attention's weights spread out")
ax.legend()
plt.show()

# %% [markdown]
# Linear attention buys O(T) memory and time, and O(1) memory per generated token as an RNN, at
# the price of blurrier retrieval. Much later work (gated linear attention, state-space models,
# lesson 14) is about getting that selectivity back.
#
# ## Summary
# * Online softmax keeps (max, sum, accumulator) and rescales by e^{m − m′} whenever the max grows;
#   tiled attention applies it to tiles of queries and keys: exact, with memory O(T) instead of
#   O(T²) (the arithmetic is still O(T²)).
# * Sliding-window attention (window = the token and the w − 1 before it) costs O(T·w) when done
#   with padded, unfolded windows; depth extends its reach to L·(w − 1).
# * Sparse patterns mix local, strided, global and random links. As masks they save nothing.
#   Defined on blocks, `block_sparse_attention` computes only the allowed tiles: equal to the
#   dense masked attention, with memory that grows like T.
# * Linear attention replaces exp(q·k) by φ(q)·φ(k): parallel, cumulative-sum and RNN forms are
#   equal, memory is linear in T, and retrieval gets blurrier.
#
# **Next:** `exercises/05_long_context_attention.ipynb`.
