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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/04_kv_heads_and_cache.ipynb)

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
# # 04 · KV heads and the KV cache
#
# **You will learn** why a decoder keeps the keys and values of every past token (the **KV
# cache**), how much memory that costs for real models, and how **multi-query** (MQA, Shazeer
# 2019) and **grouped-query** attention (GQA, Ainslie et al. 2023) shrink it by letting several
# query heads share one key/value head. Each rung of the ladder MHA → GQA → MQA comes with a
# proof that it computes what it claims, and at the end our layer equals Hugging Face's
# `LlamaAttention` (RoPE + GQA) with copied weights.
#
# **Then** do `exercises/04_kv_heads_and_cache.ipynb`: write `repeat_kv`.

# %%
import math

import matplotlib.pyplot as plt
import torch

from course_lib import get_device, seed_everything
from course_lib.attention import MultiHeadAttention, repeat_kv
from course_lib.kv_cache import PUBLISHED_CONFIGS, KVCache, format_bytes
from course_lib.positional_attention import PositionalAttention
from course_lib.positional import apply_rope

device = get_device()
seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## 1. Why cache keys and values?
# A decoder generates one token at a time. At step t the new token's query must be compared with
# the keys of **all** tokens 0..t and blend their values. Those keys and values never change
# (causal attention: a token's k and v depend only on itself and the past), so recomputing them at
# every step is pure waste. The cache stores them: each step computes k and v for the *one* new
# token, appends them, and attends over everything stored.
#
# The proof that nothing changes: decode a sequence token by token through a cache and compare
# with one ordinary forward pass over the whole sequence. The layer is `PositionalAttention`:
# lesson 01's `MultiHeadAttention` plus the options a decoder needs, here `rotary` (RoPE from
# lesson 02; with a cache the new token's position is `cache.seq_len`, not 0) and `cache`.

# %%
seed_everything(1)
C, H, H_kv, T = 64, 8, 2, 12
layer = PositionalAttention(C, H, n_kv_heads=H_kv, bias=False).to(device).eval()
rope = lambda x, positions: apply_rope(x, positions, layout="half")  # noqa: E731
x = torch.randn(1, T, C, device=device)  # (B, T, C)

with torch.no_grad():
    full = layer(x, is_causal=True, rotary=rope)  # (B, T, C): all positions at once
    cache = KVCache()
    steps = []
    for t in range(T):  # one token at a time, as in generation
        steps.append(layer(x[:, t:t + 1], is_causal=True, rotary=rope, cache=cache))  # (B, 1, C)
        if t in (0, 1, T - 1):
            print(f"step {t:>2}: new token at position {t}, cache k {tuple(cache.k.shape)} (B, H_kv, T, D)")
cached = torch.cat(steps, dim=1)  # (B, T, C)
print("cached decoding equals the full forward pass:", torch.allclose(cached, full, atol=1e-5))

# %% [markdown]
# The cache holds `H_kv = 2` heads, not `H = 8`: it stores keys and values **before** they are
# shared out to the query heads. That is the whole point of the next section.
#
# ## 2. The ladder MHA → GQA → MQA
# Multi-head attention gives each of the H query heads its own key and value head. The cache
# then stores 2·H·D numbers per token per layer. Shazeer (2019) asked: do the heads really need
# separate keys and values? **MQA** keeps H query heads but one K/V head shared by all;
# **GQA** sits in between: `n_kv_heads` groups, each K/V head serving H / n_kv_heads
# *consecutive* query heads.
#
# In code the only new piece is `repeat_kv`, which copies each K/V head next to itself so the
# (B, H_kv, T, D) tensors line up with H query heads. The order matters: query heads 0 and 1
# share K/V head 0 — the order Hugging Face uses, so weights load as they are.

# %%
kv_ids = torch.arange(3.0).view(1, 3, 1, 1)  # (B, H_kv=3, T=1, D=1): each head holds its own id
print("repeat_kv (repeat_interleave):", repeat_kv(kv_ids, 2).flatten().tolist())  # (1, 6, 1, 1) -> (6,)
print("x.repeat (a common mistake):  ", kv_ids.repeat(1, 2, 1, 1).flatten().tolist())  # (1, 6, 1, 1) -> (6,)

# %% [markdown]
# **Rung 1 → 2, MHA → GQA.** A GQA layer is an MHA layer whose K/V weights come in identical
# groups. So copy each K/V head of a GQA layer into its group of MHA heads: the two layers must
# give the same output. **Rung 2 → 3, GQA → MQA** is the same statement with one group. Each
# rung prints its check, its parameter count and the cache it needs per token.

# %%
def as_mha(gqa: MultiHeadAttention) -> MultiHeadAttention:
    """The MHA layer that GQA secretly is: every K/V head copied to its group of query heads."""
    C, H, H_kv, D = gqa.config.d_model, gqa.n_heads, gqa.n_kv_heads, gqa.head_dim
    mha = MultiHeadAttention(C, H, bias=False).to(gqa.q_proj.weight.device).eval()
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(H_kv, D, C)  # (H_kv*D, C) -> (H_kv, D, C)
            w = w.repeat_interleave(H // H_kv, dim=0).reshape(H * D, C)  # (H, D, C) -> (H*D, C)
            getattr(mha, name).weight.copy_(w)
    return mha


seed_everything(2)
x = torch.randn(2, 10, C, device=device)  # (B, T, C)
print(f"{'rung':<5} {'n_kv_heads':>10} {'params':>7} {'cache/token/layer':>18}  equals MHA with copied K/V")
for n_kv, name in [(8, "MHA"), (4, "GQA"), (2, "GQA"), (1, "MQA")]:
    m = MultiHeadAttention(C, H, n_kv_heads=n_kv, bias=False).to(device).eval()
    with torch.no_grad():
        same = torch.allclose(m(x, is_causal=True), as_mha(m)(x, is_causal=True), atol=1e-6)
    n_params = sum(p.numel() for p in m.parameters())
    cache_numbers = 2 * n_kv * m.head_dim  # K and V, per token, per layer
    print(f"{name:<5} {n_kv:>10} {n_params:>7} {cache_numbers:>12} numbers  {same}")

# %% [markdown]
# Fewer K/V heads: fewer parameters in `k_proj`/`v_proj` and, far more important at inference,
# a cache that is H / n_kv_heads times smaller.
#
# ## 3. Is it right? Compare with Hugging Face `LlamaAttention`
# Llama 2 70B, Llama 3 and Mistral use GQA with RoPE. Build a tiny random `LlamaConfig` (nothing
# is downloaded), copy its attention weights into ours — the parameter names are the same — and
# compare, passing HF's own cos/sin tables as `rotary`.

# %%
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

hf_config = LlamaConfig(hidden_size=64, num_attention_heads=8, num_key_value_heads=2, intermediate_size=128,
                        num_hidden_layers=1, vocab_size=32, max_position_embeddings=64, attention_bias=False)
hf_config._attn_implementation = "eager"
seed_everything(3)
hf_attn = LlamaAttention(hf_config, layer_idx=0).eval()
ours = PositionalAttention(64, 8, n_kv_heads=2, bias=False).eval()
print("copied:", ours.load_state_dict(hf_attn.state_dict()))

T = 9
x = torch.randn(1, T, 64)  # (B, T, C)
cos, sin = LlamaRotaryEmbedding(hf_config)(x, torch.arange(T)[None])  # (B, T, D) each
causal_additive = torch.full((T, T), float("-inf")).triu(1)[None, None]  # (1, 1, T, T): 0 or -inf
with torch.no_grad():
    theirs, _ = hf_attn(x, position_embeddings=(cos, sin), attention_mask=causal_additive)
    mine = ours(x, is_causal=True, rotary=(cos, sin))
err = (mine - theirs).abs().max().item()
print(f"ours vs LlamaAttention (GQA 8 query / 2 kv heads, RoPE): max abs error below 1e-5: {err < 1e-5}")

# %% [markdown]
# ## 4. What the cache costs in real models
# Per token the cache holds, for every layer, a key and a value vector for each K/V head:
#
# $$\text{bytes per token} = 2 \times n_\text{layers} \times n_\text{kv heads} \times d_\text{head} \times \text{bytes per number}$$
#
# The numbers below are the published `config.json` values of each model (typed into
# `course_lib.kv_cache.PUBLISHED_CONFIGS`), in 16-bit precision.

# %%
print(f"{'model':<16} {'attention':<28} {'per token':>10} {'at max context':>24}")
for shape in PUBLISHED_CONFIGS.values():
    full_ctx = shape.cache_bytes(shape.max_positions)
    capped = f" (window keeps {shape.sliding_window})" if shape.sliding_window else ""
    print(f"{shape.name:<16} {shape.attention:<28} {format_bytes(shape.bytes_per_token()):>10} "
          f"{format_bytes(full_ctx):>11} at {shape.max_positions:>6} tok{capped}")

l7, l70 = PUBLISHED_CONFIGS["LLaMA-2-7B"], PUBLISHED_CONFIGS["LLaMA-2-70B"]
print(f"\nLLaMA-2-70B has {l70.n_layers / l7.n_layers:.1f}× the layers of LLaMA-2-7B but needs "
      f"{l70.bytes_per_token() / l7.bytes_per_token():.3g}× its cache per token: 8 K/V heads for its 64 query heads.")
batch, ctx = 32, 4096
print(f"Serving {batch} sequences of {ctx} tokens with LLaMA-2-7B: {format_bytes(l7.cache_bytes(ctx, batch))} "
      f"of cache — more than its {format_bytes(7e9 * 2)} of fp16 weights.")

# %%
lengths = [2 ** p for p in range(8, 16)]
fig, ax = plt.subplots(figsize=(7, 4))
for name in ["LLaMA-2-7B", "LLaMA-2-13B", "LLaMA-2-70B", "Mistral-7B-v0.1", "Falcon-7B"]:
    s = PUBLISHED_CONFIGS[name]
    ax.plot(lengths, [s.cache_bytes(t) / 2**30 for t in lengths], "o-", label=f"{name} ({s.attention.split(' ')[0]})")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("tokens in the sequence")
ax.set_ylabel("KV cache, GiB (fp16, batch 1)")
ax.set_title("KV cache per sequence: grows linearly, until a sliding window caps it (Mistral)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 5. Why a smaller cache makes decoding faster
# Generating one token multiplies a single vector by every weight matrix, and attends with one
# query per head over the whole cache. Each weight is read from memory, used in one
# multiply-add (2 FLOPs) and not needed again until the next token. Each cached key and value
# is used once per query head that shares it. With MHA that is again 2 FLOPs per number read:
# 1 FLOP per byte in 16-bit, ½ in float32. A large matmul, by contrast, re-uses every number it
# loads many times. So a decoding step mostly waits for memory, and its time follows the bytes
# it reads. The cache is a growing part of those bytes: with long contexts or many sequences
# per batch it outgrows the weights (§4: 32 sequences of 4096 tokens).
#
# GQA changes one term in that count. Each K/V number now serves H / n_kv_heads query heads,
# so the arithmetic per token stays the same while the bytes read fall by that factor.
#
# A measurement on this machine's CPU: the attention part of one decoding step, 16 query heads
# of size 64, float32, one thread, the median of 21 runs. MHA, GQA with 4 K/V heads and MQA
# attend over caches of 4096 and 16384 tokens. `decode_attention` groups the query heads that
# share a K/V head, so each cached key and value is read once (`repeat_kv` would first copy
# them H / n_kv_heads times). The K/V bytes and FLOPs come from the shapes; the times are
# measured. A 1024 × 1024 matmul on the same core shows how fast that core can do arithmetic
# when memory is not the limit.

# %%
import statistics
import time

from course_lib.device import single_thread


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One new token attending over the cache, each cached key and value read once.
    q (B, H, 1, D); k, v (B, H_kv, T, D) -> (B, H, 1, D)."""
    B, H, _, D = q.shape
    H_kv = k.size(1)
    qg = q.view(B, H_kv, H // H_kv, D)  # (B, H_kv, H/H_kv, D): the query heads that share a K/V head
    w = torch.softmax(qg @ k.transpose(-2, -1) / math.sqrt(D), dim=-1)  # (B, H_kv, H/H_kv, T)
    return (w @ v).view(B, H, 1, D)  # (B, H_kv, H/H_kv, D) -> (B, H, 1, D)


H_DEC, D_DEC, REPEATS = 16, 64, 21
variants = [("MHA", 16), ("GQA", 4), ("MQA", 1)]
seed_everything(5)
q_new = torch.randn(1, H_DEC, 1, D_DEC)  # (B, H, 1, D): the token being decoded
rows = []
with torch.no_grad(), single_thread():
    for T_cache in (4096, 16384):
        caches = {name: (torch.randn(1, n, T_cache, D_DEC), torch.randn(1, n, T_cache, D_DEC))  # (B, H_kv, T, D)
                  for name, n in variants}
        times = {name: [] for name in caches}
        for r in range(REPEATS + 1):  # the variants take turns; run 0 only warms up
            for name, (k, v) in caches.items():
                start = time.perf_counter()
                decode_attention(q_new, k, v)
                if r:
                    times[name].append(time.perf_counter() - start)
        for name, n_kv in variants:
            kv_bytes = 2 * n_kv * T_cache * D_DEC * 4  # K and V of every cached token, float32
            flops = 2 * 2 * H_DEC * T_cache * D_DEC  # q·k, then weights·v: a multiply-add per head, token, dim
            rows.append((name, n_kv, T_cache, kv_bytes, flops, statistics.median(times[name])))
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    mm = []
    for _ in range(6):
        start = time.perf_counter()
        a @ b
        mm.append(time.perf_counter() - start)
    matmul_s = statistics.median(mm[1:])

print(f"{'':<5}{'K/V heads':>9}{'cached tokens':>15}{'K/V read':>11}{'FLOPs':>8}{'FLOPs/byte':>12}   time per token")
for name, n_kv, T_cache, kv_bytes, flops, secs in rows:
    print(f"{name:<5}{n_kv:>9}{T_cache:>15}{kv_bytes / 2**20:>7.0f} MiB{flops / 1e6:>5.0f} M"
          f"{flops / kv_bytes:>12.1f}   {secs * 1e3:.2f} ms")
print(f"\nfor comparison, one 1024×1024 @ 1024×1024 matmul ({2 * 1024**3 / 1e9:.2f} GFLOP) "
      f"takes {matmul_s * 1e3:.1f} ms")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for T_cache in sorted({r[2] for r in rows}):
    mine = [r for r in rows if r[2] == T_cache]  # MHA, GQA, MQA over the same cache length
    xs, ys = [r[3] / 2**20 for r in mine], [r[5] * 1e3 for r in mine]
    axes[0].plot(xs, ys, "o-", label=f"{T_cache} cached tokens")
    for r, x_, y_ in zip(mine, xs, ys):
        axes[0].annotate(f"{r[0]} {r[3] / r[5] / 1e9:.1f} GB/s", (x_, y_), textcoords="offset points",
                         xytext=(5, -10), fontsize=7)
big = max(rows, key=lambda r: r[3])  # MHA at the longest cache
xs = sorted({r[3] / 2**20 for r in rows})
axes[0].plot(xs, [big[5] * 1e3 * x / (big[3] / 2**20) for x in xs], ":", color="grey", label="∝ bytes read")
axes[0].set_xscale("log", base=2)
axes[0].set_yscale("log")
axes[0].set_xlabel("K/V read per token (MiB)")
axes[0].set_ylabel("time per token (ms)")
axes[0].set_title("attention of one decoding step (this machine)")
axes[0].legend(fontsize=8)
labels = [f"{r[0]}\n{r[2] // 1024}k" for r in rows]
axes[1].bar(range(len(rows)), [r[4] / r[5] / 1e9 for r in rows], color=["C0", "C1", "C2"] * 2)
axes[1].axhline(2 * 1024**3 / matmul_s / 1e9, color="grey", ls="--", label="1024×1024 matmul, same core")
axes[1].set_xticks(range(len(rows)), labels)
axes[1].set_ylabel("GFLOP/s")
axes[1].set_title("the same arithmetic, done at what rate")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The times are this machine's and vary from run to run; the bytes and FLOPs are exact. At
# one cache length every row does the same arithmetic, and only the bytes read differ. The
# left panel plots time against bytes, and each point's label is bytes ÷ time, the effective
# bandwidth. Time per token falls with the bytes from MHA to MQA, but by less than the
# 16-fold cut in bytes. Some costs do not shrink with the number of K/V heads: the H × T
# scores that the softmax writes and reads, a fixed cost per operation, and the arithmetic
# itself. The right panel shows the arithmetic rate of each row against the matmul's. MHA
# runs far below the matmul's rate: it is waiting for memory. With fewer K/V heads the same
# FLOPs are done on fewer bytes, and the rate climbs toward the matmul's, where arithmetic
# starts to be the limit.
#
# ## 6. Why GQA is the compromise
# MQA gives the smallest cache, but every query head must then read the same keys and values;
# Ainslie et al. report that MQA loses quality and can be unstable to train, while GQA with a
# few groups is close to MHA in quality and close to MQA in speed. Their recipe for turning an
# existing MHA checkpoint into GQA is to **mean-pool** the K/V heads of each group (§2.1).
#
# Here is what pooling alone does to one layer. We pool the K/V projections of an MHA layer
# into fewer groups and measure how far the output moves, next to how much the cache shrinks.
# The layer is random. Its heads are made partly alike by hand (a shared part plus each
# head's own), so the numbers describe this layer only, not a trained model.

# %%
def pooled_gqa(mha: MultiHeadAttention, n_kv: int) -> MultiHeadAttention:
    """Ainslie et al. §2.1: each group's K/V projection = the mean of its heads' projections."""
    C, H, D = mha.config.d_model, mha.n_heads, mha.head_dim
    gqa = MultiHeadAttention(C, H, n_kv_heads=n_kv, bias=False).eval()
    with torch.no_grad():
        gqa.q_proj.weight.copy_(mha.q_proj.weight)
        gqa.o_proj.weight.copy_(mha.o_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(mha, name).weight.view(n_kv, H // n_kv, D, C)  # (H*D, C) -> (groups, per group, D, C)
            getattr(gqa, name).weight.copy_(w.mean(1).reshape(n_kv * D, C))  # (n_kv, D, C) -> (n_kv*D, C)
    return gqa


seed_everything(4)
mha = MultiHeadAttention(C, H, bias=False).eval()
with torch.no_grad():  # make the heads partly alike, as in trained models: shared part + own part
    for name in ("k_proj", "v_proj"):
        w = getattr(mha, name).weight.view(H, -1, C)  # (H, D, C)
        w.copy_(0.8 * w[:1] + 0.6 * w)
x = torch.randn(4, 16, C)  # (B, T, C)
with torch.no_grad():
    y_mha = mha(x, is_causal=True)
    rel = {n: ((pooled_gqa(mha, n)(x, is_causal=True) - y_mha).norm() / y_mha.norm()).item() for n in (8, 4, 2, 1)}
for n, e in rel.items():
    print(f"n_kv_heads={n}: cache ×{n / H:.3f} of MHA, output relative change {e:.2f}")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot([n / H for n in rel], list(rel.values()), "o-")
for n, e in rel.items():
    ax.annotate(f"{n} kv", (n / H, e), textcoords="offset points", xytext=(4, 4))
ax.set_xlabel("KV cache size relative to MHA")
ax.set_ylabel("relative change of the output")
ax.set_title("mean-pooling K/V heads: smaller cache, larger change")
plt.show()

# %% [markdown]
# The output moves a lot. Even at 4 K/V heads its relative change is 0.45, and it grows as the
# groups get larger. Pooling alone does not turn MHA into a good GQA model. Ainslie et al.
# follow the pooling with **uptraining**: they continue pre-training the pooled checkpoint for
# a small fraction of its original steps (5 % in their main runs). They report that uptrained
# GQA comes close to MHA in quality at close to MQA's speed. That is their result, on trained
# T5 models. This notebook trains nothing, so it neither shows nor tests it.

# %% [markdown]
# ## Summary
# * The KV cache turns each decoding step from recomputing T keys and values into computing one;
#   it equals the full forward pass exactly (checked above), but costs
#   2 · layers · kv heads · head size · bytes per token.
# * MQA shares one K/V head among all query heads; GQA shares one per group of consecutive query
#   heads (`repeat_kv` = `repeat_interleave` on the head axis). Both are MHA with tied K/V weights.
# * A decoding step reads every weight and the whole cache and does about 2 FLOPs per number it
#   reads, so it waits for memory. Fewer K/V heads mean fewer bytes and less time per token
#   (measured in §5; the time fell by less than the bytes).
# * GQA (e.g. 8 K/V heads in LLaMA-2-70B, Mistral, Llama 3) cuts the cache several-fold.
#   Mean-pooling alone moves a layer's output a lot (§6); Ainslie et al. report that after
#   uptraining GQA stays close to MHA in quality. Mistral's sliding window additionally caps
#   the cache at the window length.
#
# **Next:** `exercises/04_kv_heads_and_cache.ipynb`, then lesson 05 (long context).
