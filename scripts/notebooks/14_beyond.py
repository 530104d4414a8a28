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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/14_beyond.ipynb)

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
# # 14 · Beyond the standard block: a selective state-space layer (Mamba) and a Vision Transformer
#
# **You will learn** what a state-space model (SSM) is and how Mamba makes it *selective*
# (its step size Δ and its matrices B and C depend on the input); how the continuous system
# becomes a discrete recurrence (zero-order hold); why the same recurrence can run as a
# sequential loop *or* as a parallel, log-depth associative scan — and we check that the two agree;
# how the Mamba block wraps the SSM (projection, causal conv, gate); how its memory grows with
# sequence length next to attention's; and, on the paper's *selective copying* task, what
# selection buys over a time-invariant SSM and how it compares with attention. Then the same
# encoder blocks read *images*: a Vision Transformer cuts a digit into patches, treats them as
# tokens and classifies it from a class token.
#
# **Then** do `exercises/14_beyond.ipynb`: the selective scan step by step, then the parallel
# (log-depth) scan, its backward, the chunked scan and the exact zero-order-hold discretisation.
#
# Paper: Gu & Dao 2023, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*
# (equations 1-4, Algorithm 2, Figure 3, Section 4.1.1). Background: Gu et al. 2022, S4;
# Blelloch 1990 and Hillis & Steele 1986 for parallel prefix scans. Dosovitskiy et al. 2021,
# *An Image is Worth 16x16 Words* (the Vision Transformer, eq. 1-4).

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from course_lib import get_device, seed_everything
from course_lib.device import single_thread
from course_lib.efficient_attention import peak_memory
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.viz import plot_attention
from course_lib.vit import ViTConfig, VisionTransformer, load_digits_tensors, patchify
from course_lib.ssm import (MambaBlock, MambaConfig, MambaLM, discretize, scan_parallel, scan_sequential,
                            selective_copying, selective_scan)

seed_everything(0)
device = get_device()
print("device in use:", device)

# %% [markdown]
# ## 1. A state-space model is a linear recurrence
#
# An SSM maps an input signal x(t) to an output y(t) through a hidden state h(t) of size N
# (paper eq. 1):  h'(t) = A h(t) + B x(t),  y(t) = C h(t).  To use it on tokens we take steps of
# size Δ. Holding x constant during a step (a *zero-order hold*) gives the exact discrete
# system of eq. 4:
#
# $$\bar A = \exp(\Delta A), \qquad \bar B = (\Delta A)^{-1}(\exp(\Delta A) - I)\,\Delta B \approx \Delta B,
# \qquad h_t = \bar A h_{t-1} + \bar B x_t, \qquad y_t = C h_t.$$
#
# Mamba keeps A diagonal and negative (one decay rate per state), so each $\bar A$ lies in
# (0, 1): Δ decides how much of the past survives a step. A **small Δ** keeps the state (the
# token is mostly ignored); a **large Δ** forgets the state and writes the current token in.
# Mamba's code uses the simpler $\bar B = \Delta B$ (Euler) for B, the exact form for A.
#
# The output has one more term. Eq. 1 leaves it out, but Mamba's code, Hugging Face's
# `MambaMixer` and `course_lib/ssm.py` all add a skip: $y_t = C h_t + D x_t$, with D one learned
# number per channel (ours starts at 1). It carries the current input straight to the output,
# so a token reaches $y_t$ even when a small Δ keeps it out of the state.

# %%
A = -torch.tensor([[1.0, 4.0]])  # (E=1, N=2): two decay rates
B_in = torch.ones(1, 1, 2)  # (B=1, T=1, N=2)
for dt in (0.01, 0.1, 1.0):
    A_bar, B_zoh = discretize(torch.full((1, 1, 1), dt), A, B_in, "zoh")  # (1, 1, 1, 2) each
    _, B_euler = discretize(torch.full((1, 1, 1), dt), A, B_in, "euler")
    a1, a2 = A_bar.flatten().tolist()  # (1, 1, 1, 2) -> two numbers
    b_zoh, b_euler = B_zoh.flatten()[1].item(), B_euler.flatten()[1].item()  # (2,) -> the state with A = -4
    print(f"Δ = {dt:<4}: Ā = {a1:.3f}, {a2:.3f}   B̄ zoh = {b_zoh:.3f}  B̄ euler = {b_euler:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 2.6))
steps = torch.arange(30)
for dt in (0.05, 0.2, 1.0):
    ax.plot(steps, torch.exp(-dt * steps), label=f"Δ = {dt}")  # Ā^k for A = -1: how an input fades
ax.set(xlabel="steps after the input", ylabel="weight left in the state", title="Δ sets the memory")
ax.legend()
plt.show()

# %% [markdown]
# ## 2. Selection: Δ, B and C depend on the token
#
# S4 used the same Δ, B, C at every step, so the whole model is one fixed convolution over the
# past: it cannot decide to *keep* one token and *skip* another. Mamba's change (Algorithm 2,
# "S6") is to compute them from the input: B = Linear(x), C = Linear(x), Δ = softplus(Linear(x)).
# With E channels and N states per channel the shapes are below. Because Δ is computed from each
# token, it differs from token to token, even in this untrained block on random input: the
# second and third lines print by how much (max/min over the tokens of a sequence).

# %%
block = MambaBlock(MambaConfig(d_model=16, d_state=4))
x_inner = torch.randn(2, 7, block.config.d_inner)  # (B, T, E)
delta, Bm, Cm = block.ssm_parameters(x_inner)
print("x:", tuple(x_inner.shape), "  Δ:", tuple(delta.shape), "  B:", tuple(Bm.shape), "  C:", tuple(Cm.shape),
      "  A:", tuple(block.A_log.shape))
lo, hi = delta[0, :, 0].min().item(), delta[0, :, 0].max().item()  # channel 0 of sequence 0, over its T tokens
print(f"Δ over the {x_inner.size(1)} tokens of sequence 0, channel 0: from {lo:.4f} to {hi:.4f} "
      f"(max/min {hi / lo:.1f})")
spread = (delta.amax(1) / delta.amin(1)).median().item()  # (B, E) max/min over T -> one number
print(f"max/min of Δ over the tokens, median over every sequence and channel: {spread:.1f}")

# %% [markdown]
# ## 3. The selective scan, two ways
#
# Because Δ, B, C change with t, the convolution trick of S4 no longer applies: we must run
# the recurrence. Written plainly it is a loop of T steps, each depending on the last.
#
# But each step is an *affine map* h ↦ aₜ·h + bₜ (with aₜ = Āₜ, bₜ = B̄ₜxₜ), and composing
# two affine maps gives another one:
#
# $$(a_1, b_1) \text{ then } (a_2, b_2) \;=\; (a_1 a_2,\; a_2 b_1 + b_2).$$
#
# This composition is **associative**, so a prefix scan can combine neighbours in a tree:
# after round k every position holds the composition of the last 2ᵏ maps, and ⌈log₂ T⌉ rounds
# finish the job (Hillis & Steele). That is the idea which makes a recurrence parallel — a
# log-depth prefix scan — not the kernel Mamba runs. The paper's hardware-aware scan (§3.3)
# loads Δ, A, B, C into the GPU's fast on-chip SRAM, discretises and scans there, and writes
# only y back, never all the states; its CUDA kernel walks the sequence in chunks, scans each
# chunk in parallel and carries the running state into the next. (Hillis–Steele also does about
# T·log₂T combines where the loop does T; work-efficient scans, Blelloch 1990, do O(T).)

# %%
a = torch.tensor([[0.5, 0.5, 0.5, 0.5]])  # (B=1, T=4)
b = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # (B=1, T=4)
print("sequential states:", scan_sequential(a, b).tolist()[0])
print("parallel states:  ", scan_parallel(a, b).tolist()[0], f"(in ⌈log2 4⌉ = {math.ceil(math.log2(4))} rounds)")

# %% [markdown]
# Now the full selective scan, equal in float64 for lengths that are and are not powers of two:

# %%
g = torch.Generator().manual_seed(0)
for T in (1, 5, 16, 100, 257):
    args = [torch.randn(2, T, 3, generator=g, dtype=torch.float64),
            F.softplus(torch.randn(2, T, 3, generator=g, dtype=torch.float64)),
            -torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.1,
            torch.randn(2, T, 4, generator=g, dtype=torch.float64),
            torch.randn(2, T, 4, generator=g, dtype=torch.float64)]
    err = (selective_scan(*args, mode="sequential") - selective_scan(*args, mode="parallel")).abs().max().item()
    print(f"T = {T:>3}: {T:>3} sequential steps vs {math.ceil(math.log2(T)):>2} parallel rounds; "
          f"equal within 1e-10: {err <= 1e-10}")

# %% [markdown]
# ## 4. The Mamba block (Figure 3)
#
# One block replaces *both* attention and the FFN of a Transformer block:
# `in_proj` splits the input into a stream x and a gate z (each E = 2·d_model wide); x goes
# through a short **causal depthwise convolution** (each channel sees its last 4 inputs), SiLU,
# and the selective SSM; the result is multiplied by SiLU(z) and projected back with `out_proj`.
# Our parameter names equal Hugging Face's `MambaMixer`, so its weights load directly — and the
# outputs match (`tests/test_ssm.py` does this with random weights):

# %%
from transformers import MambaConfig as HFMambaConfig  # noqa: E402
from transformers.models.mamba.modeling_mamba import MambaMixer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()  # silence "falling back to the PyTorch implementation"
torch.manual_seed(0)
hf = MambaMixer(HFMambaConfig(hidden_size=16, state_size=4, conv_kernel=4, expand=2, time_step_rank=1,
                              num_hidden_layers=1, vocab_size=10), layer_idx=0).eval()
ours = MambaBlock(MambaConfig(d_model=16, d_state=4, d_conv=4, expand=2, dt_rank=1))
ours.load_state_dict(hf.state_dict())
h_in = torch.randn(2, 12, 16)  # (B, T, C)
with torch.no_grad():
    diff = (ours(h_in) - hf(h_in)).abs().max().item()
print(f"our MambaBlock vs Hugging Face MambaMixer (float32): equal within 1e-5: {diff <= 1e-5}")
print(f"parameters: {sum(p.numel() for p in ours.parameters()):,}")

# %% [markdown]
# ## 5. Memory and time against sequence length
#
# Attention builds a T × T score matrix per head, so its memory grows as T². The SSM carries a
# state of fixed size, so per token it costs the same at any length. Our pure-PyTorch scan
# still materialises every state (B, T, E, N) — linear in T, with a large constant E·N; a fused
# kernel would keep only the running state. We measure the peak memory of one forward pass —
# causal attention alone (no projections) against a whole Mamba block — and fit the growth
# exponent (memory ∝ Tᵖ); timings are indicative only.

# %%
def attention_forward(x, n_heads=4):
    B, T, C = x.shape
    q = k = v = x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, H, T, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // n_heads)  # (B, H, T, T)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)


mem_block = MambaBlock(MambaConfig(d_model=32, d_state=8, scan="sequential"))
Ts = [256, 512, 1024, 2048]
results = {"attention": [], "Mamba block": []}
with torch.no_grad(), single_thread():
    for T in Ts:
        x_mem = torch.randn(1, T, 32)  # (B, T, C)
        for name, fn in (("attention", attention_forward), ("Mamba block", mem_block)):
            start = time.perf_counter()
            _, peak = peak_memory(fn, x_mem)
            results[name].append((peak, time.perf_counter() - start))
for name, rows in results.items():
    slope = math.log(rows[-1][0] / rows[0][0]) / math.log(Ts[-1] / Ts[0])
    print(f"{name:<12}: peak memory ∝ T^{slope:.1f};  time at T = {Ts[-1]}: {rows[-1][1] * 1000:.1f} ms")

fig, ax = plt.subplots(figsize=(6, 3))
for name, rows in results.items():
    ax.loglog(Ts, [r[0] / 2**20 for r in rows], "o-", label=name)
ax.set(xlabel="sequence length T", ylabel="peak memory (MiB)", title="one forward pass, batch 1")
ax.legend()
plt.show()

# %% [markdown]
# ## 6. What selection buys: selective copying (Section 4.1.1)
#
# Four coloured tokens are scattered at random positions among blanks; after a marker, the
# model must say them back in order. *Where* they are changes every time, so a model must
# decide per token whether to remember it — exactly what an input-independent (LTI) SSM cannot
# do. We train three tiny models for the same number of steps on one thread:
# Mamba, the same Mamba with selection switched off (Δ, B, C learned constants, as in S4D),
# and a GPT (causal attention) of comparable size (the cell prints each model's parameters).

# %%
ids, targets = selective_copying(1, n_data=4, length=16, generator=torch.Generator().manual_seed(5))
print("input :", ids[0].tolist())
print("answer:", [t if t >= 0 else "·" for t in targets[0].tolist()])


# %% tolerance={"pct": 5}
def train_copying(model, forward, steps=400, seed=1):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        x, y = selective_copying(32, n_data=4, length=16, generator=g)
        loss = F.cross_entropy(forward(model, x).flatten(0, 1), y.flatten())  # (B·T, V) vs (B·T,)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = selective_copying(512, n_data=4, length=16, generator=torch.Generator().manual_seed(999))
    with torch.no_grad():
        pred = forward(model, x).argmax(-1)  # (B, T)
    keep = y != -100
    return (pred[keep] == y[keep]).float().mean().item()


models = {
    "Mamba (selective)": (lambda: MambaLM(10, MambaConfig(d_model=16, d_state=8), n_layers=2),
                          lambda m, x: m(x)),
    "Mamba, selection off (LTI)": (lambda: MambaLM(10, MambaConfig(d_model=16, d_state=8, selective=False),
                                                   n_layers=2), lambda m, x: m(x)),
    "attention (GPT)": (lambda: GPT(GPTConfig(vocab_size=10, max_positions=64, d_model=16, n_layers=2,
                                              n_heads=2)), lambda m, x: m(x).logits),
}
accuracy = {}
with single_thread():
    for name, (build, forward) in models.items():
        torch.manual_seed(0)
        model = build()
        start = time.perf_counter()
        accuracy[name] = train_copying(model, forward)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name:<27} {n_params:>5,} parameters: accuracy {accuracy[name]:.1%} on held-out sequences "
              f"(trained in {time.perf_counter() - start:.1f} s)")
print(f"chance is {1 / 8:.1%} (8 colours)")

# %% [markdown]
# The two Mamba models differ only in selection, and selection is what separates their
# accuracies: without it the SSM cannot tell which inputs matter, because every input is mixed
# into the state by the same fixed rule. The paper's Table 1 is this comparison, not a larger
# version of our three-way one: a small synthetic selective-copying experiment in which the
# time-invariant S4, the Hyena long convolution and the selective S6 each sit inside several
# architectures, and S6 is the layer that solves the task. It has no attention model.
#
# Our attention model, which can look back at every position, lands in between in this run: far
# above chance and the time-invariant SSM, below the selective Mamba, with more parameters. One
# short run at this size does not rank the two. The cost side is clearer: attention's look-back
# needs a T × T score matrix (the memory growth measured above), while Mamba selects by content
# with a fixed-size state — the point of the paper.
#
# **Where attention still wins:** a fixed-size state must compress the past. Tasks that need
# exact recall of many items (associative recall with many keys, copying long strings) favour
# attention, which keeps every token; hybrids (Jamba, Zamba) interleave a few attention layers
# with many Mamba layers for that reason.
#
# ## 7. A Vision Transformer on real images (Dosovitskiy et al. 2021)
#
# Nothing in an encoder block knows that its tokens are words. ViT (eq. 1) cuts an image into
# P × P patches, flattens each, maps it linearly to d_model (the *patch embedding*), prepends a
# learned **class token** and adds learned positions; after the encoder, the class token's
# vector alone is classified (eq. 4). We use scikit-learn's bundled 8 × 8 handwritten digits
# (1,797 images, no download) and 2 × 2 patches: 16 patch tokens + 1 class token.

# %%
train_x, train_y, test_x, test_y = load_digits_tensors()
print(f"train images {tuple(train_x.shape)}, test images {tuple(test_x.shape)}, labels 0-9")
patches = patchify(train_x[:1], patch_size=2)  # (1, 16, 4)
print(f"one image -> {patches.shape[1]} patches of {patches.shape[2]} pixels each: {tuple(patches.shape)}")

fig, axes = plt.subplots(1, 2, figsize=(5.5, 2.6))
axes[0].imshow(train_x[0, 0], cmap="gray_r")
axes[0].set_title(f"a digit ({int(train_y[0])})")
grid = patches[0].view(4, 4, 2, 2).permute(0, 2, 1, 3).reshape(4, 2, 4, 2)  # (row, P, col, P)
axes[1].imshow(torch.nn.functional.pad(grid, (0, 1, 0, 0, 0, 1)).reshape(12, 12), cmap="gray_r")  # gaps between patches
axes[1].set_title("its 16 patches = 16 tokens")
for ax in axes:
    ax.axis("off")
plt.show()

# %% tolerance={"pct": 3}
vit_cfg = ViTConfig(image_size=8, patch_size=2, channels=1, n_classes=10, d_model=32, n_layers=2, n_heads=4)
torch.manual_seed(0)
vit = VisionTransformer(vit_cfg)
print(f"ViT: {sum(p.numel() for p in vit.parameters()):,} parameters; tokens per image: {vit_cfg.n_patches} patches + 1 class token")
opt = torch.optim.AdamW(vit.parameters(), lr=3e-3, weight_decay=0.05)
g = torch.Generator().manual_seed(0)
start = time.perf_counter()
with single_thread():
    for epoch in range(15):
        order = torch.randperm(len(train_y), generator=g)
        for i in range(0, len(train_y), 64):
            batch = order[i:i + 64]
            loss = F.cross_entropy(vit(train_x[batch]), train_y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        vit_accuracy = (vit(test_x).argmax(-1) == test_y).float().mean().item()
print(f"test accuracy after 15 epochs: {vit_accuracy:.1%} on {len(test_y)} held-out digits "
      f"(trained in {time.perf_counter() - start:.1f} s)")

# %% [markdown]
# **Attention over patches.** Row 0 of the last layer's attention is what the class token
# reads: one weight per patch (plus itself). Averaged over the heads and put back on the 4 × 4
# patch grid, it shows where the classifier looks; in these examples the weight sits on the
# inner columns, where the strokes are, rather than on the blank border.

# %%
maps = vit.attention_maps(test_x[:4])  # each (B, H, 17, 17)
cls_to_patches = maps[-1][:, :, 0, 1:].mean(1).view(4, 4, 4)  # (B, 4, 4): class token -> patches
fig, axes = plt.subplots(2, 4, figsize=(8, 4))
for j in range(4):
    axes[0, j].imshow(test_x[j, 0], cmap="gray_r")
    axes[0, j].set_title(f"label {int(test_y[j])}")
    axes[1, j].imshow(cls_to_patches[j], cmap="Blues")
    axes[1, j].set_title("cls → patches", fontsize=9)
    for ax in axes[:, j]:
        ax.axis("off")
plt.tight_layout()
plt.show()
plot_attention(maps[0][0].mean(0), keys=["cls"] + [str(i) for i in range(16)], annotate=False,
               title="layer 1, head mean: every token over every token")
plt.show()

# %% [markdown]
# ## Summary
# * The SSM recurrence hₜ = Āₜ hₜ₋₁ + B̄ₜ xₜ with Ā = exp(ΔA) (zero-order hold) and B̄ ≈ ΔB;
#   the output yₜ = Cₜ hₜ + D xₜ, D a learned per-channel skip.
# * Selection: Δ, B, C are functions of the token, so the model decides what to keep.
# * The recurrence is a composition of affine maps, hence associative: a log-depth parallel scan
#   gives the same states as the loop (checked to 1e-10 in float64).
# * The Mamba block = in_proj → causal depthwise conv → SiLU → selective SSM, gated by SiLU(z),
#   → out_proj; ours equals Hugging Face's `MambaMixer`.
# * A Vision Transformer is the same encoder on patch tokens plus a class token; on 8 × 8 digits a
#   two-layer ViT learns in seconds, and its class token's attention shows where it looks.
#
# **Next:** `exercises/14_beyond.ipynb` — write the selective scan yourself, step by step and in parallel.
