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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/15_efficiency.ipynb)

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
# # 15 · Efficiency: routing tokens past blocks, parallel blocks, int8 weights, ONNX export
#
# **You will learn** four ways to make a Transformer cheaper, each measured here rather than
# promised:
# 1. **Mixture-of-Depths** — a router lets only the top 12.5 % of tokens of a sequence through
#    every other block; the rest skip it on the residual stream. We count the FLOPs it saves,
#    train it against its dense twin at equal steps and at equal FLOPs, and deal with its catch:
#    top-k over a sequence looks at the future, which sampling cannot do.
# 2. **Parallel attention + FFN** (GPT-J, PaLM): both branches read the same normalised input,
#    so their matmuls can be fused. Same FLOPs, fewer and larger matmuls.
# 3. **int8 weights**: per-channel absmax quantisation, 4× smaller Linear layers, and why one
#    scale per row beats one per matrix.
# 4. **ONNX export**: the trained model as a single file that runs in ONNX Runtime, no PyTorch
#    needed, checked against PyTorch's logits.
#
# **Then** do `exercises/15_efficiency.ipynb`: write per-channel int8 quantisation yourself.
#
# Papers: Raposo et al. 2024, *Mixture-of-Depths: Dynamically allocating compute in
# transformer-based language models* (§3-4); Wang & Komatsuzaki 2021, GPT-J; Chowdhery et
# al. 2022, *PaLM* (§2, "Parallel Layers"); Krishnamoorthi 2018, *Quantizing deep convolutional
# networks for efficient inference: A whitepaper* (per-channel weight quantisation); Dettmers et
# al. 2022, *LLM.int8()*.

# %%
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.utils.flop_counter import FlopCounterMode

from course_lib import get_device, seed_everything
from course_lib.blocks import transformer_block
from course_lib.data import encoded_corpus, get_batch, shakespeare_text
from course_lib.device import single_thread
from course_lib.export import export_onnx, run_onnxruntime
from course_lib.kernels import from_scratch
from course_lib.mod import (MoDBlock, MoDGPT, block_flops, capacity_tokens, fit_predictors, gpt_forward_flops,
                            predictor_agreement)
from course_lib.models.gpt import GPT, GPTConfig, gpt_block
from course_lib.parallel_block import FusedParallelBlock, linear_calls
from course_lib.quantization import (dequantize, model_size_bytes, quantize_model, quantize_per_channel,
                                     quantize_per_tensor)
from course_lib.tokenizers import CharTokenizer
from course_lib.training import Trainer, TrainConfig, lm_loss

seed_everything(0)
device = get_device()
print("device in use:", device)

# %% [markdown]
# ## 1. Mixture-of-Depths: not every token needs every block
#
# A dense Transformer spends the same compute on every token in every block, whether the token
# is the end of a hard word or a space. Mixture-of-Depths (MoD) gives each routed block a
# *capacity*: it processes only k = capacity · T tokens of each sequence. A linear **router**
# scores every token, r_i = w · x_i, and the k highest scores of the sequence win (§3.1-3.3):
#
# $$x_i' = \begin{cases} x_i + g(r_i)\, f(\tilde X)_i & \text{if } r_i \text{ is among the top } k \text{ of its sequence} \\ x_i & \text{otherwise (the residual stream carries it past)} \end{cases}$$
#
# f(X̃) is what the block adds to the residual stream, computed on the chosen tokens X̃ *alone*,
# kept in sequence order so that causal attention among them stays causal. Because k is fixed,
# every batch has the same shapes — unlike a threshold, which would give each sequence a
# different count. Two details:
# * **The router weight multiplies the update** (g(r) above, §3.4). Top-k is a hard choice with no
#   gradient; multiplying by the weight puts the router on the gradient path, so it learns
#   which tokens benefit from the block. The paper multiplies by r itself; we squash it with a
#   sigmoid so the multiplier stays in (0, 1) (`gate="raw"` gives the paper's version).
# * **Every other block** is routed, as in the paper's experiments; the others stay dense.
#
# A random block with capacity 0.25 on two sequences of 16 tokens (█ = goes through the block):

# %%
torch.manual_seed(0)
demo = MoDBlock(gpt_block(GPTConfig(vocab_size=10, max_positions=16, d_model=16, n_heads=2)), 16, capacity=0.25)
x = torch.randn(2, 16, 16)  # (B, T, C)
with torch.no_grad():
    y = demo(x, is_causal=True)  # (B, T, C)
for b in range(2):
    chosen = demo.last_selected[b]  # (T,) bool
    print(f"sequence {b}: {''.join('█' if c else '·' for c in chosen.tolist())}  "
          f"{int(chosen.sum())} of 16 tokens go through the block")
unchanged = (y == x).all(-1)  # (B, T): bit-for-bit the input
print("the tokens left exactly unchanged are exactly the ones not chosen:", torch.equal(unchanged, ~demo.last_selected))

# %% [markdown]
# ### What it saves, in FLOPs
#
# Counting matmuls at 2 FLOPs per multiply-add, one pre-LN block on n tokens that attend to
# each other costs
#
# $$F(n) = \underbrace{2n\,(4C^2 + 2C\,d_{ff})}_{\text{q,k,v,o projections and FFN}} + \underbrace{2 \cdot 2\,n^2 C}_{QK^\top \text{ and } AV}$$
#
# A routed block runs on k = capacity · T tokens: its projections and FFN shrink by the
# capacity, its attention by the capacity *squared*; the router adds 2·T·C. Our model for the
# rest of the section: a 4-layer character-level GPT, 64 wide, context 64, capacity 12.5 %
# (k = 8 tokens) in blocks 1 and 3. PyTorch's own `FlopCounterMode` checks the formula. It
# counts the matrix multiplies it sees, and it cannot see inside the fused attention kernel the
# models call by default, so the count runs the model on the lesson's from-scratch attention
# (`with from_scratch():`, see `course_lib.kernels`), which computes the same numbers:

# %%
text = shakespeare_text()
tok = CharTokenizer.train(text)
train_data, val_data = encoded_corpus(tok, "char")
CONTEXT, CAPACITY = 64, 0.125
cfg = GPTConfig(vocab_size=tok.vocab_size, max_positions=CONTEXT, d_model=64, n_layers=4, n_heads=4)
k = capacity_tokens(CONTEXT, CAPACITY)
dense_flops, mod_flops = gpt_forward_flops(cfg, CONTEXT), gpt_forward_flops(cfg, CONTEXT, CAPACITY)
print(f"one dense block on T = {CONTEXT} tokens: {block_flops(CONTEXT, 64, cfg.d_ff) / 1e6:6.2f} MFLOPs")
print(f"one MoD block on k = {k} tokens:      {(block_flops(k, 64, cfg.d_ff) + 2 * CONTEXT * 64) / 1e6:6.2f} MFLOPs "
      "(router included)")
print(f"whole model, one sequence: dense {dense_flops['total'] / 1e6:.2f} MFLOPs, MoD {mod_flops['total'] / 1e6:.2f} "
      f"MFLOPs = {mod_flops['total'] / dense_flops['total']:.0%} of dense")

ids = torch.randint(0, tok.vocab_size, (2, CONTEXT))  # (B, T)
counted = []
for model in (GPT(cfg), MoDGPT(cfg, capacity=CAPACITY)):
    with FlopCounterMode(display=False) as counter, torch.no_grad(), from_scratch():
        model.eval()(ids)
    counted.append(counter.get_total_flops() // 2)  # per sequence
assert counted == [dense_flops["total"], mod_flops["total"]]
print("FlopCounterMode counts the same FLOPs for both models:", counted == [dense_flops["total"], mod_flops["total"]])

# %% [markdown]
# ## 2. MoD against its dense twin, on Shakespeare
#
# Both models start from the *same* weights (`MoDGPT` wraps the blocks of the same GPT; only
# the routers are new), see the same batches and use the same constant learning rate after a
# short warm-up. The dense GPT trains for 160 steps. The MoD GPT trains for as many steps as
# the dense one's FLOPs buy it: with a constant learning rate its loss at step 160 is exactly
# that of a 160-step run, so one run gives both comparisons — **equal steps** and **equal
# FLOPs** (the comparison the paper makes in §4). One CPU thread, so that the printed losses
# are the same on every machine; times include the validation passes.

# %% tolerance={"rel": 0.02, "abs": 0.02}
STEPS = 160
EQUAL_FLOPS_STEPS = round(STEPS * dense_flops["total"] / mod_flops["total"])


def train(model, steps):
    tcfg = TrainConfig(max_steps=steps, batch_size=16, seq_len=CONTEXT, lr=4e-3, min_lr=4e-3, warmup=20,
                       eval_interval=STEPS, eval_iters=20, progress=False)
    trainer = Trainer(model, train_data, val_data, tcfg)
    start = time.perf_counter()
    with single_thread():
        history = trainer.train()
    return trainer, dict(zip(history.eval_steps, history.val_loss)), (time.perf_counter() - start) / steps


torch.manual_seed(0)
dense_trainer, dense_val, dense_step = train(GPT(cfg), STEPS)
torch.manual_seed(0)
mod_trainer, mod_val, mod_step = train(MoDGPT(cfg, capacity=CAPACITY), EQUAL_FLOPS_STEPS)

print(f"{'model':<12}{'steps':>6}{'training FLOPs':>16}{'val loss':>10}   time per step")
rows = [("dense GPT", STEPS, dense_flops, dense_val[STEPS], dense_step),
        ("MoD GPT", STEPS, mod_flops, mod_val[STEPS], mod_step),
        ("MoD GPT", EQUAL_FLOPS_STEPS, mod_flops, mod_val[EQUAL_FLOPS_STEPS], mod_step)]
for name, steps, flops, loss, step_time in rows:
    train_flops = 3 * flops["total"] * 16 * steps  # forward + backward ≈ 3 forwards, 16 sequences a batch
    print(f"{name:<12}{steps:>6}{train_flops / 1e12:>13.2f} TF{loss:>10.3f}   {step_time * 1000:.1f} ms")
print(f"MoD training step vs dense: speed-up ×{dense_step / mod_step:.2f} on this machine")
assert abs(mod_val[STEPS] - dense_val[STEPS]) < 0.05  # equal steps: about the same
assert mod_val[EQUAL_FLOPS_STEPS] < dense_val[STEPS] - 0.03  # equal FLOPs: MoD ahead

# %% [markdown]
# Read the table row by row. At **equal steps** the two models are within a few hundredths of
# each other, although the MoD model spent only the FLOPs fraction printed in §1 per step. At
# **equal FLOPs** MoD has taken more steps and its validation loss is clearly lower — the
# paper's claim (at equal training FLOPs MoD matches or beats the dense baseline, while each
# forward pass needs a fraction of the FLOPs), seen here at toy scale and early in training.
# Time per step follows FLOPs only roughly on a CPU: the gather and scatter of the chosen
# tokens cost time that the FLOPs count ignores.
#
# Which tokens did the trained routers choose? Block 1 and block 3 on one line of the
# validation text (a dark square = processed by the block). Which tokens win depends on the
# training run, so it differs a little from machine to machine; the count per block does not:
# top-k routing always takes exactly k.

# %%
line = tok.decode(val_data[1000:1000 + CONTEXT].tolist())
mod = mod_trainer.model.eval()
trainer_device = mod_trainer.device
with torch.no_grad():
    mod(torch.tensor([tok.encode(line)], device=trainer_device))
chosen = torch.stack([block.last_selected[0].cpu() for block in mod.mod_blocks()]).float()  # (2, T)
fig, ax = plt.subplots(figsize=(12, 1.6))
ax.imshow(chosen, cmap="Greys", vmin=0, vmax=1.4, aspect="auto")
ax.set_xticks(range(CONTEXT), [c if c != "\n" else "⏎" for c in line], fontsize=7, family="monospace")
ax.set_yticks([0, 1], ["block 1", "block 3"])
ax.set_title("tokens processed by each MoD block (top-k routing)")
plt.show()
for i, row in zip((1, 3), chosen):
    print(f"block {i} processes {int(row.sum())} of {CONTEXT} tokens of this line (k = {k})")

# %% [markdown]
# ## 3. The catch: top-k looks at the future
#
# Whether token i is among the top k of its sequence depends on the scores of the tokens
# *after* it. In training that is fine (the whole sequence is there); when sampling one token
# at a time it is not, and worse: a token's output now depends on future tokens, which breaks
# the causal language model. Watch it: change the second half of some sequences and see
# whether the logits of the first half move.

# %% tolerance={"rel": 0.6}
g = torch.Generator().manual_seed(1)
fit_batches = [get_batch(train_data, 16, CONTEXT, g, trainer_device)[0] for _ in range(6)]
check_batches = [get_batch(val_data, 16, CONTEXT, g, trainer_device)[0] for _ in range(4)]
ids = check_batches[0][:4]  # (4, T)
future = ids.clone()
future[:, CONTEXT // 2:] = ids.flip(0)[:, CONTEXT // 2:]  # new second halves, same first halves
with torch.no_grad():
    moved = (mod(ids).logits[:, :CONTEXT // 2] - mod(future).logits[:, :CONTEXT // 2]).abs().max().item()
print(f"top-k routing: changing tokens {CONTEXT // 2}-{CONTEXT - 1} moves the logits at positions "
      f"0-{CONTEXT // 2 - 1} by up to {moved:.3f}")
assert moved > 0.01

# %% [markdown]
# The paper's fixes (§3.5): (a) an auxiliary BCE loss that trains the router's own output to be
# positive exactly for top-k tokens, then route on its sign; or (b) a small auxiliary MLP, the
# **predictor**, that sees only x_i and learns "will token i be in the top k?", with its input
# detached so that its loss never changes the language model. We use (b). Since its gradient
# never reaches the model, we fit it after training, on the trained routers' choices — the
# same objective as training it alongside. At inference every token whose predictor says yes
# goes through the block: a decision about token i made from token i alone, hence causal.

# %% tolerance={"rel": 0.05, "abs": 0.02, "pct": 8}
with single_thread():
    bce = fit_predictors(mod, fit_batches, steps=200)
    agreement = predictor_agreement(mod, check_batches)
for i, a, loss in zip((1, 3), agreement, bce):
    print(f"block {i}: predictor vs top-k on held-out text: agree on {a['accuracy']:.1%} of tokens, "
          f"catch {a['recall']:.1%} of the top-k tokens, send {a['fraction_processed']:.1%} of tokens "
          f"through (top-k: {k / CONTEXT:.1%}); final BCE {loss:.3f}")

mod.set_routing("predictor")
with torch.no_grad():
    moved_causal = (mod(ids).logits[:, :CONTEXT // 2] - mod(future).logits[:, :CONTEXT // 2]).abs().max().item()
with single_thread():
    val_predictor = mod_trainer.evaluate()
mod.set_routing("topk")
with single_thread():
    val_topk = mod_trainer.evaluate()
print(f"\npredictor routing: changing the future moves the past's logits by up to {moved_causal:.3f}")
print(f"validation loss, top-k routing (sees the future): {val_topk:.3f}; predictor routing (causal): {val_predictor:.3f}")
assert moved_causal <= 1e-5 and all(a["accuracy"] > 0.9 for a in agreement) and val_predictor - val_topk < 0.05

# %% [markdown]
# The predictor agrees with top-k on most tokens (the paper, too, finds this an easy task),
# and routing with it costs little validation loss, printed above next to top-k's. It does not
# hit the capacity exactly: the number of tokens it sends varies per sequence, so a batch no
# longer has fixed shapes — the price of causality. The "catch" figures show how many of the
# top-k tokens it misses.
#
# ## 4. Parallel attention + FFN (GPT-J, PaLM §2)
#
# A pre-LN block runs its two sub-layers one after the other: the FFN reads x + Attn(LN(x)).
# The parallel block of GPT-J and PaLM feeds both from the same input:
#
# $$y = x + \mathrm{Attn}(\mathrm{LN}(x)) + \mathrm{FFN}(\mathrm{LN}(x))$$
#
# The FLOPs do not change. What changes is that the **input projections of both branches**
# (q, k, v and the FFN's up-projection) now multiply the same matrix LN(x), so they can be one
# matmul with the four weight matrices stacked; and because the branch outputs are added, the
# **output projections** (o_proj and down_proj) can be one matmul on the concatenated branch
# outputs. PaLM reports about 15 % faster training at large scale from this, with a small
# quality loss at 8B parameters and none at 62B. `Block(norm_placement="parallel")` is the
# unfused form (one shared norm); `FusedParallelBlock` stacks the weights:

# %%
C_demo = 64
torch.manual_seed(0)
sequential = transformer_block(C_demo, 4, 4 * C_demo, norm_placement="pre", activation="gelu_tanh")
parallel = transformer_block(C_demo, 4, 4 * C_demo, norm_placement="parallel", activation="gelu_tanh")
fused = FusedParallelBlock.from_block(parallel)
x = torch.randn(4, 32, C_demo)  # (B, T, C)
with torch.no_grad():
    diff = (fused(x, is_causal=True) - parallel(x, is_causal=True)).abs().max().item()
print(f"fused vs unfused parallel block, same weights: max abs difference below 1e-6: {diff <= 1e-6}\n")
print(f"{'block':<18}{'FLOPs':>12}  matmuls with weights (out × in)")
for name, block in [("pre-LN", sequential), ("parallel", parallel), ("fused parallel", fused)]:
    with FlopCounterMode(display=False) as counter, torch.no_grad(), from_scratch():
        block(x, is_causal=True)
    shapes = linear_calls(block, x, is_causal=True)
    print(f"{name:<18}{counter.get_total_flops():>12,}  {len(shapes)}: " + ", ".join(f"{o}×{i}" for o, i in shapes))

# %% [markdown]
# Forward + backward time of one block at a few widths (batch 8, 64 tokens, the best of five
# runs; one CPU thread here, the GPU when there is one):


# %%
def step_time(block, x, repeats=5):
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        block(x, is_causal=True).sum().backward()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:])


with single_thread():
    for width in (64, 128, 256):
        torch.manual_seed(0)
        par = transformer_block(width, 4, 4 * width, norm_placement="parallel", activation="gelu_tanh")
        blocks = [transformer_block(width, 4, 4 * width, norm_placement="pre", activation="gelu_tanh"), par,
                  FusedParallelBlock.from_block(par)]
        xb = torch.randn(8, 64, width, device=device)
        t = [step_time(b.to(device), xb) for b in blocks]
        print(f"width {width:>3}: pre-LN {t[0] * 1000:.2f} ms, parallel {t[1] * 1000:.2f} ms, "
              f"fused {t[2] * 1000:.2f} ms; fused vs pre-LN: speed-up ×{t[0] / t[2]:.2f}")

# %% [markdown]
# These timings are this machine's, today: we print them but draw no conclusion the notebook
# could not check. What the measurement can and cannot show: all three blocks do the same
# FLOPs, so a CPU core that is already kept busy by each matmul has little to gain from doing
# them in fewer launches. The gain PaLM reports comes from large accelerators, where one big
# matmul uses the hardware better than several small ones and the two branches no longer wait
# for each other. The same idea — stack what reads the same input — is why most
# implementations compute q, k and v with one `qkv_proj` matmul even in sequential blocks.
#
# ### What the fused kernels buy
#
# Every model in `course_lib` runs, by default, on PyTorch's fused kernels:
# `F.scaled_dot_product_attention` for softmax(QKᵀ/√d)·V, `F.layer_norm`, `F.gelu`. The
# lessons' own forms of the same formulas stay in the library, and `with from_scratch():`
# (from `course_lib.kernels`) runs a whole model on them. The two paths compute the same
# function; what differs is how often the tensors travel through memory. The formula for
# LayerNorm is five element-wise passes (mean, subtract, variance, rsqrt, scale), each of which
# reads and writes the whole activation; the fused kernel is one pass. Attention written out
# also stores the T × T weights for the backward pass, while the fused kernel recomputes what
# it needs.
#
# One training step (forward, backward) of the lesson-10 GPT (4 layers, 128 wide, context 64,
# batch 12), on each path, same weights, same batch. The timing alternates the two paths
# twenty times and keeps the median, on one CPU thread (the GPU when there is one):

# %%
torch.manual_seed(0)
gpt10 = GPT(GPTConfig(vocab_size=tok.vocab_size, max_positions=64, d_model=128, n_layers=4, n_heads=4)).to(device)
ids10, targets10 = get_batch(train_data, 12, 64, torch.Generator().manual_seed(0), device)


def train_step_loss(model):
    logits = model(ids10).logits  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets10.flatten())
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


loss_fused, grads_fused = train_step_loss(gpt10)
with from_scratch():
    loss_formula, grads_formula = train_step_loss(gpt10)
grad_diff = max((a - b).abs().max().item() for a, b in zip(grads_fused, grads_formula))
print(f"loss: fused {loss_fused.item():.4f}, from scratch {loss_formula.item():.4f}; "
      f"the losses agree within 1e-5: {abs(loss_fused - loss_formula).item() <= 1e-5}, "
      f"every gradient within 1e-5: {grad_diff <= 1e-5}")


def timed_step(model, scratch):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with from_scratch(scratch):
        train_step_loss(model)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


times = {False: [], True: []}
with single_thread():
    for scratch in (False, True):  # warm-up
        timed_step(gpt10, scratch)
    for _ in range(20):
        for scratch in (False, True):
            times[scratch].append(timed_step(gpt10, scratch))
fused_ms, scratch_ms = (sorted(times[s])[10] * 1000 for s in (False, True))
print(f"one training step: fused kernels {fused_ms:.1f} ms, from scratch {scratch_ms:.1f} ms; "
      f"fused vs from scratch: speed-up ×{scratch_ms / fused_ms:.2f}")

# %% [markdown]
# The two losses print the same to four decimals, and the gradients agree within 1e-5 (the
# tests in `tests/test_kernels.py` hold every component to 1e-6 in float32 and 1e-12 in
# float64). The times are this machine's: the ratio depends on the CPU, the thread count and
# the size of the model, so read it as a measurement, not a constant. The lessons' forms are
# there to be read; the fused ones are what you train with.
#
# ## 5. int8 weights: one scale per row
#
# Symmetric absmax quantisation maps a group of weights onto the integers -127 .. 127:
#
# $$s = \frac{\max |w|}{127}, \qquad q = \mathrm{clamp}(\mathrm{round}(w / s), -127, 127), \qquad \hat w = q\, s$$
#
# The largest |w| lands exactly on ±127 and every weight moves by at most s/2. The *group*
# matters. With one scale per matrix (**per-tensor**) a single row of large weights sets s
# for everyone, and the small rows fall onto a handful of levels. With one scale per output
# row (**per-channel**, the usual choice for weights since Krishnamoorthi 2018, and what
# LLM.int8()'s vector-wise quantisation does for a weight matrix) each row uses the whole grid. A matrix whose row 0 is 20× larger than the rest:

# %%
g = torch.Generator().manual_seed(0)
w = torch.randn(4, 8, generator=g)  # (out, in)
w[0] *= 20.0  # an outlier row
rows = {}
for name, fn in [("per-tensor", quantize_per_tensor), ("per-channel", quantize_per_channel)]:
    q, scale = fn(w)
    rows[name] = (dequantize(q, scale) - w).abs().amax(dim=1)  # (out,): worst error per row
    print(f"{name:<12} row 3 as int8: {q[3].tolist()}")
print("\nworst error per row:")
for name, err in rows.items():
    print(f"{name:<12}", "  ".join(f"{e:.4f}" for e in err.tolist()))
assert (rows["per-channel"][1:] < rows["per-tensor"][1:] / 5).all()

# %% [markdown]
# The same numbers as a picture. On the left, the worst error of each row under both schemes.
# On the right, row 3: its float weights (grey bars), the grid of multiples of the one
# per-tensor scale that row 0 sets (faint lines), and what each scheme gives back.

# %%
schemes = [("per-tensor", quantize_per_tensor), ("per-channel", quantize_per_channel)]
w_hat = {name: dequantize(*fn(w)) for name, fn in schemes}  # (out, in) each: the weights int8 gives back
s_tensor = quantize_per_tensor(w)[1]  # (): the one scale the outlier row sets
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
row_ids = torch.arange(w.size(0))  # (out,)
for i, (name, err) in enumerate(rows.items()):
    axes[0].bar(row_ids + (i - 0.5) * 0.38, err, width=0.38, label=name)
axes[0].set_yscale("log")
axes[0].set_xticks(row_ids, ["row 0\n(outlier)"] + [f"row {r}" for r in range(1, w.size(0))])
axes[0].set_ylabel("worst |ŵ − w| in the row")
axes[0].set_title("int8 error per row (log scale)")
axes[0].set_ylim(top=1.0)  # room for the legend
axes[0].legend(fontsize=8, ncol=2, loc="upper right")
cols = torch.arange(w.size(1))  # (in,)
lim = 1.2 * w[3].abs().max().item()
for level in range(-int(lim / s_tensor) - 1, int(lim / s_tensor) + 2):  # the per-tensor grid: multiples of s
    axes[1].axhline(level * s_tensor, color="C0", lw=0.5, alpha=0.35)
axes[1].bar(cols, w[3], color="lightgrey", label="w, float")
axes[1].plot(cols, w_hat["per-tensor"][3], "o", color="C0", label="ŵ per-tensor (lands on the grid)")
axes[1].plot(cols, w_hat["per-channel"][3], "x", color="C1", ms=9, label="ŵ per-channel")
axes[1].set_ylim(-lim, lim)
axes[1].set_xlabel("column")
axes[1].set_title("row 3 and the per-tensor grid (faint lines)")
axes[1].legend(fontsize=7, loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# Per-tensor quantisation leaves row 3 only a few distinct integers: its values must sit on
# the coarse grid. Per-channel uses the range up to ±127 for it, and its error on the ordinary
# rows is many times smaller. Row 0 holds the largest weight, so its own scale is the
# per-tensor scale, and its error is the same under both.
#
# Now the dense GPT of §2: we replace every `nn.Linear` by a `QuantLinear` that stores int8
# weights and one float scale per row. The LM head stays in float: it *is* the token-embedding matrix (weight
# tying), and the embedding needs the float table for its look-ups, so an int8 copy would add
# bytes instead of saving them. Validation loss is measured on the same 20 fixed batches for
# all three models.

# %%
gpt = dense_trainer.model.cpu().eval()


def val_loss(model, n_batches=20):
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad(), single_thread():
        return sum(lm_loss(model, *get_batch(val_data, 16, CONTEXT, gen)).item() for _ in range(n_batches)) / n_batches


models = {"float32": gpt, "int8 per-channel": quantize_model(gpt), "int8 per-tensor": quantize_model(gpt, per_channel=False)}
losses = {name: val_loss(m) for name, m in models.items()}
print(f"{'model':<18}{'bytes':>10}{'val loss':>10}{'change':>9}")
for name, m in models.items():
    change = round(losses[name] - losses["float32"], 3) + 0.0  # + 0.0 turns -0.0 into 0.0
    print(f"{name:<18}{model_size_bytes(m):>10,}{losses[name]:>10.3f}{change:>+9.3f}")
linear_bytes = sum(m.weight.numel() * 4 for n, m in gpt.named_modules()
                   if isinstance(m, torch.nn.Linear) and n != "lm_head")
print(f"\nthe quantised Linear weights: {linear_bytes:,} bytes -> {linear_bytes // 4:,} bytes plus the scales; "
      f"embeddings stay float32")
print(f"the whole model: {model_size_bytes(gpt) / model_size_bytes(models['int8 per-channel']):.1f}x smaller")
print(models["int8 per-channel"].blocks[0].attn.q_proj)
assert abs(losses["int8 per-channel"] - losses["float32"]) < 0.01
assert abs(losses["int8 per-tensor"] - losses["int8 per-channel"]) < 0.01

# %% [markdown]
# The whole model shrinks by the factor printed above (not quite 4×: the embeddings stay
# float32), and its validation loss barely moves. Both int8 versions do about equally well
# here, because this small, briefly trained model has no row that dwarfs the others. The table
# below measures that for the first block's matrices — the spread of the row maxima (largest ÷
# median) — with the reconstruction error of both schemes; as the 4 × 8 example showed, the
# per-tensor error grows with that spread.

# %% tolerance={"rel": 0.05}
print(f"{'matrix':<22}{'largest/median row max':>24}{'RMSE per-tensor':>18}{'RMSE per-channel':>18}")
ratio_all = []
for name, module in gpt.named_modules():
    if isinstance(module, torch.nn.Linear) and name != "lm_head":
        wt = module.weight.detach()
        row_max = wt.abs().amax(dim=1)  # (out,)
        rmse = [(dequantize(*fn(wt)) - wt).pow(2).mean().sqrt().item() for fn in (quantize_per_tensor, quantize_per_channel)]
        ratio_all.append(rmse[1] / rmse[0])
        if name.startswith("blocks.0."):
            print(f"{name:<22}{(row_max.max() / row_max.median()).item():>24.2f}{rmse[0]:>18.2e}{rmse[1]:>18.2e}")
print(f"\nper-channel error / per-tensor error, all {len(ratio_all)} matrices: "
      f"{min(ratio_all):.2f} to {max(ratio_all):.2f}")
assert max(ratio_all) < 1.0

# %% [markdown]
# Per-channel is more accurate in every matrix, by the ratio printed above. Two notes on what
# this does *not* do. The matmul still runs in float (`QuantLinear` multiplies by the
# integer-valued weights, then by the scale): the saving is memory, and memory traffic is
# what limits token-by-token decoding. Real speed-ups need int8 kernels and quantised
# activations too, where outlier *features* (whole columns of activations, see LLM.int8()) are
# the hard part.
#
# ## 6. Export to ONNX and run without PyTorch
#
# ONNX is a file format for computation graphs: operators plus weights, runnable by ONNX
# Runtime on servers, phones or in a browser. PyTorch's exporter (`dynamo=True`, the default
# since 2.9) traces the model with `torch.export` into a graph of exact operators, and
# onnxscript translates them. Batch size and sequence length stay symbolic, so we export with a
# (2, 64) input and run a different shape. (This needs three optional packages; without them
# the cell prints how to install them.)

# %%
example = torch.randint(0, tok.vocab_size, (2, CONTEXT), generator=torch.Generator().manual_seed(0))  # (B, T)
try:
    path = export_onnx(gpt, example, Path(tempfile.mkdtemp()) / "shakespeare_gpt.onnx")
except ImportError as err:
    print(err)
else:
    ids = torch.randint(0, tok.vocab_size, (3, 40), generator=torch.Generator().manual_seed(1))  # another shape
    onnx_logits = run_onnxruntime(path, ids)  # numpy (3, 40, V)
    with torch.no_grad():
        torch_logits = gpt(ids).logits.numpy()
    max_diff = abs(onnx_logits - torch_logits).max()
    print(f"exported with input {tuple(example.shape)}, run in ONNX Runtime on {tuple(ids.shape)}: "
          f"logits {onnx_logits.shape}")
    print(f"max |ONNX Runtime - PyTorch| below 1e-4: {max_diff <= 1e-4}")
    print(f"file size {path.stat().st_size / 2**20:.1f} MiB; the float32 weights alone: "
          f"{model_size_bytes(gpt) / 2**20:.1f} MiB")
    assert max_diff <= 1e-4 and path.stat().st_size < 1.2 * model_size_bytes(gpt)

# %% [markdown]
# The file is about the size of the float32 weights — the graph itself is small (the exporter
# would also store each node's Python stack trace; `export_onnx` drops that by default) — and
# ONNX Runtime reproduces PyTorch's logits to float rounding at a shape it was never traced
# with. (The course's input checks — ids
# inside the vocabulary, positions inside the table — are Python `if`s on tensor *values*;
# `torch.export` traces shapes, so they are skipped while exporting and are not in the file.)
#
# ## Summary
# * **Mixture-of-Depths**: a router sends the top capacity·T tokens of each sequence through a
#   block and the rest around it; the router weight multiplies the update so it learns. Here,
#   with 12.5 % capacity in every other block: about the same loss at equal steps, a lower
#   loss at equal FLOPs. Top-k looks at the future; a small predictor trained on "is it in the
#   top k?" routes causally at inference, at the validation-loss cost shown in §3.
# * **Parallel blocks**: y = x + Attn(LN(x)) + FFN(LN(x)) lets the four input matmuls and the
#   two output matmuls fuse into one each — same FLOPs, fewer, larger matmuls; the gain is an
#   accelerator's, at scale.
# * **int8 weights**: s = max|w| / 127 per output row, q = round(w / s); Linear weights take 1
#   byte instead of 4, the loss barely moves, and per-channel beats per-tensor in every matrix.
# * **ONNX**: `export_onnx` + `run_onnxruntime` give a portable file whose logits match PyTorch's.
#
# **Next:** `exercises/15_efficiency.ipynb` — write per-channel int8 quantisation yourself.
