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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/01_attention.ipynb)

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
# # 01 · Attention
#
# **You will learn** what attention computes, step by step; *why* the scores are divided by
# √d_k (measured, not asserted); how causal and padding masks work; and how multi-head
# attention splits and merges heads — ending with proof that our code equals PyTorch's.
#
# **Then** do `exercises/01_attention.ipynb`: softmax, scaled dot-product attention, the
# causal mask, a multi-head attention module, and attention's backward pass by hand, each graded
# by a check.
#
# Paper: Vaswani et al. 2017, *Attention Is All You Need*, §3.2.

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import get_device, seed_everything
from course_lib.attention import (MultiHeadAttention, attention_weights, causal_mask, padding_mask,
                                  scaled_dot_product_attention, softmax)
from course_lib.device import single_thread
from course_lib.kernels import from_scratch
from course_lib.viz import plot_attention, plot_mask

device = get_device()
seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## 1. A soft dictionary lookup
# A Python dict returns the value whose key *equals* the query. Attention returns a
# **blend** of all values, weighted by how *similar* each key is to the query:
#
# $$\text{output} = \sum_j \text{softmax}_j(q \cdot k_j)\, v_j$$
#
# Below, three keys are 2-d vectors; the query points almost along key 1, so value 1
# gets most of the weight — but not all of it.

# %%
keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # (T=3, D=2)
values = torch.tensor([[10.0], [20.0], [30.0]])  # (T=3, 1)
query = torch.tensor([0.2, 2.0])  # (D=2,)

scores = keys @ query  # (3,) one similarity per key
weights = softmax(scores, dim=-1)  # (3,) sums to 1
print("scores :", scores)
print("weights:", weights, "sum =", weights.sum().item())
print("output :", weights @ values, "(a hard lookup of key 1 would give 20)")

# %% [markdown]
# ## 2. Scores → softmax → weighted sum, for a whole sequence
# In self-attention every token produces a query, a key and a value (three linear maps of
# its embedding). With T tokens we compute all T×T scores at once as a matrix product.
# Shapes use one vocabulary throughout the course: B batch, T time, C channels, H heads,
# D head size.

# %%
B, T, D = 1, 5, 8
q = torch.randn(B, T, D)  # (B, T, D)
k = torch.randn(B, T, D)  # (B, T, D)
v = torch.randn(B, T, D)  # (B, T, D)

attn_scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, T, T): row i = query i against every key
attn_weights = softmax(attn_scores, dim=-1)  # (B, T, T): each row sums to 1
context = attn_weights @ v  # (B, T, D): row i = blend of values for query i
print("scores", tuple(attn_scores.shape), "weights", tuple(attn_weights.shape), "context", tuple(context.shape))
print("row sums:", attn_weights.sum(-1).round(decimals=4))  # 1 up to float32 rounding

# %% [markdown]
# **Why subtract the maximum inside softmax?** `exp(1000)` is `inf` in float32, and
# `inf / inf` is `NaN`. Since softmax(x) = softmax(x − c) for any constant c, we subtract the
# row maximum first. Compare:

# %%
big = torch.tensor([1000.0, 999.0, 998.0])
naive = torch.exp(big) / torch.exp(big).sum()
print("naive  :", naive)
print("stable :", softmax(big, dim=-1))

# %% [markdown]
# ## 3. Why divide by √d_k? Measure it.
# If the entries of q and k are independent with mean 0 and variance 1, then q·k is a sum of
# d_k such products, so its **variance grows like d_k**. Large scores push softmax towards a
# one-hot vector: the entropy collapses and the gradient through softmax vanishes.
# Dividing by √d_k brings the variance back to 1 whatever the head size.
#
# The cell measures all three for several d_k, with and without the scale.

# %%
seed_everything(0)
dims = [4, 16, 64, 256, 1024]
rows = []
for d in dims:
    qd, kd = torch.randn(2000, d), torch.randn(2000, 16, d)  # 2000 queries, 16 keys each
    raw = torch.einsum("nd,ntd->nt", qd, kd)  # (2000, 16) unscaled scores
    for name, s in (("unscaled", raw), ("scaled", raw / math.sqrt(d))):
        p = softmax(s, dim=-1)
        entropy = -(p * p.clamp_min(1e-30).log()).sum(-1).mean().item()
        # size of d(softmax)/d(scores): Jacobian diag(p) - p pᵀ; its Frobenius norm, averaged
        jac = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (2000, 16, 16)
        grad = jac.flatten(1).norm(dim=-1).mean().item()  # (2000, 256) -> scalar
        rows.append((d, name, s.var().item(), entropy, p.max(-1).values.mean().item(), grad))

print(f"{'d_k':>5} {'':>9} {'var(q·k)':>9} {'entropy':>8} {'max weight':>10} {'|∂softmax|':>10}")
for d, name, var, ent, mx, grad in rows:
    print(f"{d:>5} {name:>9} {var:>9.1f} {ent:>8.3f} {mx:>10.3f} {grad:>10.4f}")
print(f"(uniform weights over 16 keys would have entropy ln 16 = {math.log(16):.3f})")

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for name, style in (("unscaled", "o-"), ("scaled", "s--")):
    sel = [r for r in rows if r[1] == name]
    for ax, col, label in zip(axes, (2, 3, 5), ("variance of q·k", "softmax entropy (nats)",
                                                 "softmax Jacobian norm")):
        ax.plot(dims, [r[col] for r in sel], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("d_k")
        ax.set_title(label)
axes[0].set_yscale("log")
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the table: unscaled, the variance tracks d_k, the entropy falls towards 0 (one key
# takes almost all the weight) and the Jacobian norm — how much a change in the scores can
# move the weights, and so how much gradient flows back — shrinks. Scaled, all three stay
# put as d_k grows. That is the whole argument for the 1/√d_k in Eq. 1.

# %% [markdown]
# ## 4. Masks: who may attend to whom
# A mask is a boolean (T_q, T_k) matrix — **True means "may attend"**, the convention of
# `F.scaled_dot_product_attention`. Before softmax we set the blocked scores to −∞, so
# `exp(−∞) = 0` gives them exactly zero weight and the rest still sum to 1.
#
# * **Causal** (GPT): token i sees only tokens 0..i — it must not peek at the future it is
#   trained to predict.
# * **Padding** (any batch of unequal lengths): nobody attends to the pad tokens.

# %%
tokens = ["the", "cat", "sat", "<pad>", "<pad>"]
cm = causal_mask(5)  # (T, T)
pm = padding_mask(torch.tensor([[1, 1, 1, 0, 0]]))[0, 0]  # (1, 1, 1, T) -> (1, T)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
plot_mask(cm, "causal", ax=axes[0], labels=tokens)
plot_mask(pm.expand(5, 5), "padding", ax=axes[1], labels=tokens)
plot_mask(cm & pm, "causal & padding", ax=axes[2], labels=tokens)
fig.tight_layout()
plt.show()

# %%
seed_everything(1)
x = torch.randn(1, 5, 8)  # (B, T, D)
w_masked = attention_weights(x, x, cm & pm)  # (B, T, T)
print(w_masked[0])
print("row sums:", w_masked[0].sum(-1))

# %% [markdown]
# Rows 3 and 4 are queries *at* pad positions: they still attend to the real tokens (their
# outputs are thrown away later). Had a row been blocked entirely, softmax over all −∞
# would be 0/0; our `scaled_dot_product_attention` returns zeros there.
#
# **Two classic mistakes**, measured: filling blocked scores with 0 instead of −∞ (exp(0) = 1
# still gives them weight), and masking *after* softmax (rows no longer sum to 1):

# %% tolerance={"abs": 0.002}
s = x @ x.transpose(-2, -1) / math.sqrt(8)  # (B, T, T)
fill_zero = softmax(s.masked_fill(~cm, 0.0), -1)[0]  # (T, T)
after = softmax(s, -1).masked_fill(~cm, 0.0)[0]  # (T, T)
print("weight on the future, fill with 0 :", fill_zero[~cm].sum().item())
print("row sums, mask after softmax      :", after.sum(-1))

# %% [markdown]
# ## 5. Multi-head attention
# One attention layer computes a single weighting per query. **Multi-head** attention runs H
# attentions in parallel, each on its own D = C / H slice of the projections, so different
# heads can look for different things; `o_proj` mixes their outputs back together.
#
# The only tricky part is the bookkeeping: split C into (H, D), move H next to B so each head
# is a separate batch entry, and undo it afterwards. Follow the shapes:

# %%
seed_everything(2)
B, T, C, H = 2, 5, 32, 4
D = C // H
mha = MultiHeadAttention(C, H).to(device).eval()
x = torch.randn(B, T, C, device=device)  # (B, T, C)

q = mha.q_proj(x)  # (B, T, C)
q_heads = q.view(B, T, H, D)  # (B, T, H, D): C split into H heads of D channels
q_heads = q_heads.transpose(1, 2)  # (B, H, T, D): each head is now its own "batch" entry
k_heads = mha.k_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
v_heads = mha.v_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
per_head = scaled_dot_product_attention(q_heads, k_heads, v_heads)  # (B, H, T, D)
merged = per_head.transpose(1, 2).reshape(B, T, C)  # (B, T, H, D) -> (B, T, C)
y_by_hand = mha.o_proj(merged)  # (B, T, C)
for name, t in [("x", x), ("q", q), ("q_heads", q_heads), ("per_head", per_head), ("merged", merged), ("y", y_by_hand)]:
    print(f"{name:>9}: {tuple(t.shape)}")
print("equal to MultiHeadAttention.forward:", torch.allclose(y_by_hand, mha(x), atol=1e-6))

# %% [markdown]
# Why `.view(B, T, H, D)` and not `.view(B, H, T, D)`? The projection lays out each token's
# C channels contiguously as [head 0 | head 1 | …]. Viewing as (B, H, T, D) directly would
# cut the flat memory in the wrong places and mix *positions* into heads. It runs without any
# error — which is why the exercise's check looks for exactly this mistake.

# %% [markdown]
# ## 6. Is it right? Compare with PyTorch
# Two independent references: `F.scaled_dot_product_attention` (PyTorch's fused kernel) and
# `nn.MultiheadAttention` with our weights copied in. Note that `nn.MultiheadAttention`'s
# boolean `attn_mask` uses the **opposite** convention (True = *blocked*), so we pass `~mask`.
#
# `MultiHeadAttention` itself has two paths for its attention step. By default it calls
# `F.scaled_dot_product_attention`, which computes the same softmax(QKᵀ/√d)·V in one fused
# kernel (faster, and it never stores the T × T weights); inside `with from_scratch():` (from
# `course_lib.kernels`) it runs the `scaled_dot_product_attention` written above. Both are
# compared:

# %% tolerance={"abs": 1e-05}
seed_everything(3)
qh, kh, vh = (torch.randn(2, 4, 7, 16, dtype=torch.float64) for _ in range(3))  # (B, H, T, D)
for name, m in [("no mask", None), ("causal", causal_mask(7)),
                ("padding", padding_mask(torch.tensor([[1] * 7, [1] * 4 + [0] * 3])))]:
    ours = scaled_dot_product_attention(qh, kh, vh, m)
    theirs = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=m)
    print(f"SDPA, {name:<8} float64 max |ours - torch| = {(ours - theirs).abs().max().item():.2e}")

torch_mha = nn.MultiheadAttention(C, H, batch_first=True).to(device).eval()
with torch.no_grad():  # copy our weights in: PyTorch stacks q, k, v into one in_proj matrix
    torch_mha.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
    torch_mha.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
    torch_mha.out_proj.weight.copy_(mha.o_proj.weight)
    torch_mha.out_proj.bias.copy_(mha.o_proj.bias)
    cmask = causal_mask(T, device=device)
    theirs, _ = torch_mha(x, x, x, attn_mask=~cmask, need_weights=False)  # True = blocked there
    for path, scratch in (("fused SDPA", False), ("from scratch", True)):
        with from_scratch(scratch):
            ours = mha(x, cmask)
        print(f"MultiHeadAttention ({path:<12}) vs nn.MultiheadAttention, causal, float32: "
              f"max abs error {(ours - theirs).abs().max().item():.2e}")

# %% [markdown]
# ## 7. Explore
# Four heads built by hand on a short sentence, each with one job. Pick a head; scale the
# scores up (sharper, lower entropy) or down (flatter); switch the causal mask on and watch
# the upper triangle vanish and each row renormalise.

# %%
from course_lib.widgets import attention_explorer

attention_explorer()

# %% [markdown]
# ## 8. Why attention? Path length and parallelism
# Before 2017, sequence models mixed tokens with a **recurrent** network (an RNN such as the
# GRU: one step per token, each step reading the previous step's state) or a **convolution**
# (each layer mixes the k neighbouring positions). Vaswani et al. compare the three layer types
# in their Table 1 on three counts, for a sequence of n tokens of width d and kernel size k:
#
# * **work per layer**: attention compares every pair of tokens, n²·d; a recurrent layer applies
#   a d × d matrix to each of the n tokens, n·d²; a convolution applies k of them, k·n·d²;
# * **sequential operations**: how many steps must wait for the previous one. An RNN cannot
#   compute token t before token t − 1 (n steps); attention and a convolution handle all
#   positions at once (1 step per layer);
# * **maximum path length**: how many layers or steps a signal crosses from one token to a
#   token far away. Attention connects any two tokens directly (1); an RNN carries a token
#   through up to n steps; a stack of convolutions needs about n/k layers (contiguous kernels)
#   or log_k n layers (dilated kernels, whose gaps grow ×k per layer) to span n tokens.
#
# Short paths matter because a gradient (and any information) weakens with each step it crosses.
# The table, computed for concrete sizes (the leading terms, as in Table 1):

# %%
def layer_costs(n, d, k):
    """Table 1 of Vaswani et al. for concrete n, d, k: (work per layer, sequential ops, max path length)."""
    return {"self-attention": (n * n * d, 1, 1),
            "recurrent (RNN)": (n * d * d, n, n),
            "convolution, contiguous": (k * n * d * d, 1, math.ceil((n - 1) / (k - 1))),
            "convolution, dilated": (k * n * d * d, 1, math.ceil(math.log(n, k)))}


d_model, kernel = 512, 3
for n_tok in (128, 4096):
    print(f"n = {n_tok}, d = {d_model}, k = {kernel}")
    print(f"  {'layer':<24} {'work per layer':>15} {'sequential ops':>15} {'max path length':>16}")
    for name, (work, seq, path) in layer_costs(n_tok, d_model, kernel).items():
        print(f"  {name:<24} {work:>15,} {seq:>15,} {path:>16,}")

# %% [markdown]
# Attention costs less work than a recurrent layer while n < d (128 tokens at width 512) and
# more once n > d (4096 tokens), the n² that lesson 05 fights. But it needs only one
# sequential step and one hop between any two tokens. Now measure both claims on real layers
# of width 32 with random weights: one causal attention layer, a GRU
# (`nn.GRU`), and a stack of 4 causal convolutions with k = 3, contiguous and dilated
# (dilations 1, 3, 9, 27).
#
# **Path length.** Take the output at the last of 64 positions and ask how strongly it depends
# on the input j positions earlier: the gradient norm ‖∂y₆₃/∂x₆₃₋ⱼ‖. It is exactly zero where
# no path exists.

# %% tolerance={"rel": 0.05, "abs": 1e-12}
class CausalConvStack(nn.Module):
    """n_layers causal 1-d convolutions of kernel k (ReLU between); dilation k**i in layer i if dilated."""

    def __init__(self, C, n_layers, k=3, dilated=False):
        super().__init__()
        self.k = k
        self.convs = nn.ModuleList(nn.Conv1d(C, C, k, dilation=k ** i if dilated else 1) for i in range(n_layers))

    def forward(self, x):  # x (B, T, C)
        h = x.transpose(1, 2)  # (B, C, T): Conv1d wants channels first
        for conv in self.convs:
            h = torch.relu(conv(F.pad(h, ((self.k - 1) * conv.dilation[0], 0))))  # pad on the left only: causal
        return h.transpose(1, 2)  # (B, T, C)


seed_everything(4)
C_why, T_why = 32, 64
attn_layer = MultiHeadAttention(C_why, 4)
gru = nn.GRU(C_why, C_why, batch_first=True)
layers = {"attention, 1 layer": lambda t: attn_layer(t, is_causal=True),
          "GRU": lambda t: gru(t)[0],  # nn.GRU returns (outputs, last state)
          "conv k=3, 4 layers": CausalConvStack(C_why, 4),
          "dilated conv k=3, 4 layers": CausalConvStack(C_why, 4, dilated=True)}
x_why = torch.randn(1, T_why, C_why, requires_grad=True)  # (B, T, C)
dependence = {}
with single_thread():
    for name, layer in layers.items():
        (grad_x,) = torch.autograd.grad(layer(x_why)[0, -1].sum(), x_why)  # (1, T, C)
        dependence[name] = grad_x[0].norm(dim=-1).flip(0)  # (T,): entry j = distance j back
print(f"{'':<27} {'positions reached':>17}   ‖∂y₆₃/∂x₆₃₋ⱼ‖ at j = 1, 8, 32, 63")
for name, dep in dependence.items():
    print(f"{name:<27} {int((dep > 0).sum()):>10} of {T_why}   "
          + "  ".join(f"{dep[j].item():.1e}" for j in (1, 8, 32, 63)))

fig, ax = plt.subplots(figsize=(6.5, 3.4))
for name, dep in dependence.items():
    ax.semilogy(range(T_why), dep.clamp_min(1e-20), label=name)
ax.set_xlabel("distance j back from the last position")
ax.set_ylabel("‖∂y_last / ∂x_(last−j)‖")
ax.set_ylim(1e-20, 10)
ax.legend(fontsize=8)
ax.set_title("how much the last output depends on each earlier input (random weights)")
plt.show()

# %% [markdown]
# The counts are exact. Four contiguous convolutions of kernel 3 see 1 + 4·2 = 9 positions and
# nothing older (gradient exactly 0, drawn at the bottom of the plot); dilated ones see
# 1 + 2·(1 + 3 + 9 + 27) = 81 ≥ 64, all of them. The GRU reaches every position, but its
# dependence shrinks by orders of magnitude with distance: the gradient is multiplied by one
# step's Jacobian for every token it crosses, and at initialisation those factors are below 1.
# (Training with gates can keep some of it alive; the path is still 63 steps long.) The one
# attention layer depends on the token 63 positions back with the same order of magnitude as
# on its neighbour: every token is one hop away.
#
# **Parallelism.** Time one forward pass of each layer on one thread as n grows (the median of
# 5 runs; your times will differ, the shape of the curves should not):

# %%
import time  # noqa: E402

lengths = (64, 256, 1024, 2048)
times_ms = {name: [] for name in layers}
with torch.no_grad(), single_thread():
    for n_tok in lengths:
        x_n = torch.randn(1, n_tok, C_why)  # (B, T, C)
        for name, layer in layers.items():
            layer(x_n)  # warm-up
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                layer(x_n)
                runs.append((time.perf_counter() - t0) * 1e3)
            times_ms[name].append(sorted(runs)[2])
for name, ts in times_ms.items():
    print(f"{name:<27} " + "  ".join(f"n={n_tok}: {t:.2f} ms" for n_tok, t in zip(lengths, ts)))
i_1k = lengths.index(1024)
print(f"at n = 1024 the GRU is slower ×{times_ms['GRU'][i_1k] / times_ms['attention, 1 layer'][i_1k]:.1f} "
      f"than attention")

fig, ax = plt.subplots(figsize=(6.5, 3.4))
for name, ts in times_ms.items():
    ax.loglog(lengths, ts, "o-", label=name)
ax.set_xlabel("sequence length n")
ax.set_ylabel("forward time, one thread (ms)")
ax.legend(fontsize=8)
ax.set_title("one forward pass, width 32")
plt.show()

# %% [markdown]
# The GRU's time grows roughly in proportion to n because it runs n small steps one after another; on a
# GPU with thousands of cores those steps still wait for each other. Attention and the
# convolutions do each layer as a few large matrix products over all positions at once, the
# kind of work a GPU (or the CPU's vector units) runs in parallel. Attention's n² work shows at
# the long end: its curve bends upwards, steeper than the others. The trade the transformer made
# is visible in the two measurements: more work per layer in exchange for one step and one hop
# between any two tokens.

# %% [markdown]
# ## Summary
# * Attention = softmax(Q Kᵀ / √d_k) V: a similarity-weighted blend of values.
# * The √d_k keeps score variance at 1, so softmax neither saturates nor starves gradients.
# * Masks are booleans (True = may attend) applied as −∞ *before* softmax.
# * Multi-head attention is bookkeeping around the same function: view → transpose → attend
#   → transpose → reshape → `o_proj`.
# * Why attention (Table 1): one sequential step and a path of length 1 between any two tokens,
#   for n²·d work per layer; an RNN needs n steps and its dependence fades with distance, a
#   convolution stack sees only its receptive field.
#
# **Next:** `exercises/01_attention.ipynb`.
