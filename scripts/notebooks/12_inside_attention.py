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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/12_inside_attention.ipynb)

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
# # 12 · Inside attention: measuring what the heads do
#
# **You will learn** to record every attention map of a model without editing it, to *measure*
# which pattern each head follows over a thousand examples (instead of eyeballing one sentence),
# to remove a head and see what the loss thinks of it, to follow information through all the
# layers with attention rollout, and to watch an encoder–decoder learn an alignment.
#
# Two models: a small character-level GPT that we train here on Shakespeare (lesson 10's
# recipe, shrunk), and the real pretrained **all-MiniLM-L6-v2** BERT (lesson 07); at the end a
# tiny T5 trained here to reverse digit strings. The papers
# behind the tools:
# * Clark et al. 2019, *What Does BERT Look At?* — positional heads, heads that park their
#   weight on `[CLS]`/`[SEP]`, broad heads (§3);
# * Michel et al. 2019, *Are Sixteen Heads Really Better than One?* — remove heads one at a
#   time and measure the loss (§3);
# * Abnar & Zuidema 2020, *Quantifying Attention Flow in Transformers* — attention rollout (§3).
#
# Lesson 07 looked at one sentence. A single sentence can make any head look like anything;
# here every number is an average over ≥ 1,000 examples.
#
# **Then** do `exercises/12_inside_attention.ipynb`: write the previous-token score yourself.

# %%
import math

import matplotlib.pyplot as plt
import torch

from course_lib import seed_everything
from course_lib.analysis import (PATTERNS, HeadPatterns, ablate_heads, attention_maps, attention_rollout,
                                 head_ablation, record_attention)
from course_lib.data import encoded_corpus, get_batch, shakespeare_text
from course_lib.device import single_thread
from course_lib.models import GPT
from course_lib.models.minilm import encode_batch, load_minilm, load_minilm_tokenizer
from course_lib.tokenizers import CharTokenizer
from course_lib.training import Trainer, TrainConfig, lm_loss
from course_lib.viz import plot_attention, plot_history, plot_layer_head_grid
from course_lib.widgets import attention_browser

_ = seed_everything(0)

# %% [markdown]
# ## 1. Recording attention without touching the model
# Every course model computes attention in one place, `MultiHeadAttention.forward`, which can
# return its weights (`return_weights=True`). `record_attention(model)` is a context manager
# that puts two PyTorch *forward hooks* on each attention module: a pre-hook that asks for the
# weights, and a post-hook that stores them and hands the caller only what it asked for. Leave
# the `with` block and the hooks are gone. No model code changes, so the same tool works on
# GPT, BERT, Llama and T5.
#
# First the proof that it records exactly what the model computes: MiniLM's own
# `output_attentions=True` path must give the same tensors.

# %%
minilm, wp = load_minilm(), load_minilm_tokenizer()
ids, mask = encode_batch(wp, ["The cat sat on the mat because it was tired.", "To be, or not to be."])
with torch.no_grad(), record_attention(minilm) as recorded:
    out = minilm(ids, mask)
reference = minilm(ids, mask, output_attentions=True).attentions
err = max((a - r).abs().max().item() for a, r in zip(recorded, reference))
print(f"{len(recorded)} layers recorded, each {tuple(recorded[0].shape)} = (B, H, T_q, T_k); "
      f"max abs difference from output_attentions: {err:.1e}")

# %% [markdown]
# ## 2. A small GPT, trained here
# Two layers, 64 wide, 4 heads, a context of 32 characters: small enough to train in well under
# a minute on one CPU thread (one thread, so that every printed number is the same on every
# machine).

# %%
text = shakespeare_text()
tok = CharTokenizer.train(text)
train_data, val_data = encoded_corpus(tok, "char")
CONTEXT = 32
torch.manual_seed(0)
gpt = GPT(vocab_size=tok.vocab_size, max_positions=CONTEXT, d_model=64, n_layers=2, n_heads=4)
cfg = TrainConfig(max_steps=500, batch_size=32, seq_len=CONTEXT, lr=5e-3, min_lr=5e-4, warmup=30,
                  eval_interval=100, eval_iters=10, progress=False, device="cpu")
trainer = Trainer(gpt, train_data, val_data, cfg)
with single_thread():
    history = trainer.train()
gpt.eval()
print(f"validation loss: {history.val_loss[0]:.3f} at step {history.eval_steps[0]} -> "
      f"{history.val_loss[-1]:.3f} at step {history.eval_steps[-1]} (ln V = {math.log(tok.vocab_size):.3f})")
plt.show(plot_history(history, "the GPT we are about to open"))

# %% [markdown]
# ## 3. Looking: a map for every layer, head and example
# Pick the model and sentence, the layer and the head. Rows are queries (the token doing the
# looking), columns are keys. The GPT's maps are lower-triangular: the causal mask. (Headless,
# a few chosen maps are drawn instead.)

# %%
snippet = tok.encode("ROMEO:\nBut soft, what light throu")[:CONTEXT]
sentences = ["The cat sat on the mat because it was tired.", "To be, or not to be, that is the question."]
examples = [("GPT (chars): " + repr(tok.decode(snippet)),
             [repr(c)[1:-1] for c in tok.decode(snippet)],
             [m[0] for m in attention_maps(gpt, torch.tensor([snippet]))])]
for s in sentences:
    one, _ = encode_batch(wp, [s])
    examples.append((f"MiniLM: {s}", [wp.itos[i] for i in one[0].tolist()],
                     [m[0] for m in attention_maps(minilm, one)]))
attention_browser(examples, static=((0, 0, 2), (1, 0, 2), (1, 3, 4)))

# %% [markdown]
# ## 4. Measuring: head-pattern scores over many examples
# For each head and each query we measure how much weight goes to
# * **previous**: the token just before (query 0 has none and is left out);
# * **next**: the token just after (undefined in a causal model, which cannot look ahead);
# * **first**: the first token — `[CLS]` in BERT; a *sink* where heads park weight when they
#   have nothing to do (Clark et al. 2019 §3.1);
# * **self**: the query's own position;
# * **local**: tokens 2–3 positions away, either side (nearby but not adjacent);
# * **delimiter**: the sequence's last token — `[SEP]` in BERT (undefined in a causal model);
# * **broad**: the entropy of the query's weights divided by log(number of keys it can see):
#   0 = all on one key, 1 = uniform.
#
# Each score is averaged over every counted (example, query) pair: 1,024 windows of 32
# characters for the GPT, 1,000 lines of verse (padding excluded) for MiniLM. The *dominant*
# pattern of a head is its strongest positional score, or "broad" when even that is below 0.3.

# %%
patterns_gpt = HeadPatterns(causal=True)
g = torch.Generator().manual_seed(5)
for _ in range(4):
    xb, _ = get_batch(val_data, 256, CONTEXT, g)
    patterns_gpt.update(attention_maps(gpt, xb))
print(f"GPT: {patterns_gpt.n_examples:,} windows of {CONTEXT} characters")
print(patterns_gpt.table())

# %%
lines = [ln.strip() for ln in text.splitlines() if len(ln.split()) >= 5 and not ln.strip().endswith(":")][:1000]
patterns_bert = HeadPatterns(causal=False)
for i in range(0, len(lines), 100):
    ids, mask = encode_batch(wp, lines[i:i + 100])
    patterns_bert.update(attention_maps(minilm, ids, mask), mask.sum(1))
print(f"MiniLM: {patterns_bert.n_examples:,} lines, e.g. {lines[0]!r}")
print(patterns_bert.table())

# %% [markdown]
# The same tables as pictures, then the score of every pattern for every head: a head that
# looks like a "previous-token head" in the table may still spend much of its weight elsewhere.

# %%
def dominant_grid(hp: HeadPatterns, title: str, ax):
    dom = hp.dominant()
    plot_layer_head_grid(torch.tensor([[s for _, s in row] for row in dom]), title, ax=ax,
                         labels=[[n for n, _ in row] for row in dom])


fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 2.4]})
dominant_grid(patterns_gpt, "GPT (chars): dominant pattern", axes[0])
dominant_grid(patterns_bert, "MiniLM: dominant pattern", axes[1])
fig.tight_layout()
plt.show()

fig, axes = plt.subplots(1, len(PATTERNS), figsize=(20, 2.8))
for ax, (p, name) in zip(axes, enumerate(PATTERNS)):
    plot_layer_head_grid(patterns_bert.scores[..., p], f"MiniLM: {name}", ax=ax, fmt="{:.1f}")
fig.tight_layout()
plt.show()

# %%
s_gpt, s_bert = patterns_gpt.scores, patterns_bert.scores
prev, first, sep = PATTERNS.index("previous"), PATTERNS.index("first"), PATTERNS.index("delimiter")
for name in ("previous", "next"):
    p = PATTERNS.index(name)
    l, h = divmod(int(s_bert[..., p].argmax()), s_bert.size(1))
    print(f"MiniLM's strongest {name}-token head: layer {l}, head {h}, mean weight {s_bert[l, h, p]:.2f}")
print(f"MiniLM's mean weight on [CLS] per layer: {[round(v, 2) for v in s_bert[..., first].mean(1).tolist()]}")
print(f"MiniLM's mean weight on [SEP] per layer: {[round(v, 2) for v in s_bert[..., sep].mean(1).tolist()]}")
l, h = divmod(int(s_gpt[..., prev].argmax()), s_gpt.size(1))
print(f"the GPT's strongest previous-token head: layer {l}, head {h}, mean weight {s_gpt[l, h, prev]:.2f}")

# %% [markdown]
# What the numbers say: MiniLM has a near-perfect previous-token head in its first layer and a
# next-token head in its second, and from layer 1 on most heads send most of their weight to `[CLS]`: the "no-op" sink Clark et al.
# describe for BERT-base (where `[SEP]` took much of that role; this model was distilled and
# fine-tuned for sentence embeddings, and the measurement shows which token it uses). The small
# GPT, after its short training, has first-layer heads that lean towards the previous character
# and broad second-layer heads: sharp specialised heads need much longer training.
#
# ## 5. Ablation: remove one head, measure the loss
# `ablate_heads(model, [(layer, head)])` zeroes that head's slice of the concatenated head
# outputs just before the output projection, so it writes nothing into the residual stream;
# every other head is untouched (the tests check that the change is exactly that head's term).
# `head_ablation` does it for each head in turn on a fixed validation batch.

# %%
xb, yb = get_batch(val_data, 128, CONTEXT, torch.Generator().manual_seed(6))
with single_thread():
    base, delta = head_ablation(gpt, lambda m: lm_loss(m, xb, yb).item())
    with ablate_heads(gpt, [(l, h) for l in range(2) for h in range(4)]):
        no_attention = lm_loss(gpt, xb, yb).item()
print(f"loss with every head: {base:.3f}; with no attention at all: {no_attention:.3f}")
worst = divmod(int(delta.argmax()), delta.size(1))
print(f"the most important single head: layer {worst[0]}, head {worst[1]} (+{delta.max():.3f} nats); "
      f"the least: {delta.min():+.3f}")
plt.show(plot_layer_head_grid(delta, "GPT: loss change when one head is removed (nats)", center=True, fmt="{:+.3f}"))

# %% [markdown]
# The cost depends on the layer (read the grid). Each second-layer head can go for a few
# hundredths of a nat at most. Each first-layer head costs clearly more, and the most
# important head printed above costs over a quarter of what removing all attention does.
# Michel et al. found that most heads of a large trained model can be removed one at a time;
# in this small GPT that holds for the second layer, not the first. Removing all eight heads
# costs more than the eight single costs added up, so part of what one head does, the
# others can also do when it is gone.
#
# ## 6. Attention rollout: following information through the layers
# A layer's attention map says where *that layer* reads from, but its inputs are already mixes
# made by the layers below. Abnar & Zuidema (§3) roll the maps out: average the heads of each
# layer, add the residual connection as 0.5·I (half of what leaves a block is what came in),
# renormalise the rows, and multiply the layers: Ã = Ã₅ · … · Ã₀. Row i of Ã estimates how much of
# each input token reaches position i at the top.
#
# MiniLM's sentence vector is the *mean* of its top-layer token vectors, so the mean row of Ã says
# which input tokens the embedding is made of.

# %%
one, _ = encode_batch(wp, ["The cat sat on the mat because it was tired."])
words = [wp.itos[i] for i in one[0].tolist()]
maps_one = attention_maps(minilm, one)
rollout = attention_rollout(maps_one)[0]  # (T, T)
last_raw = maps_one[-1][0].mean(0)  # (T, T): the top layer alone, heads averaged
fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
plot_attention(last_raw, words, ax=axes[0], annotate=False, title="top layer only (heads averaged)")
plot_attention(rollout, words, ax=axes[1], annotate=False, title="rollout through all 6 layers")
fig.tight_layout()
plt.show()
share = rollout.mean(0)  # (T,): what the mean-pooled embedding draws on
print("rows sum to 1:", bool(torch.allclose(rollout.sum(-1), torch.ones(len(words)))))
print(f"weight on [CLS]: top layer alone {last_raw[:, 0].mean():.2f}, rolled out {share[0]:.2f}")
inner = list(range(1, len(words) - 1))  # the words, without [CLS] and [SEP]
top = sorted(inner, key=lambda i: -share[i].item())[:4]
print("among the words, the sentence vector draws most on:", ", ".join(f"{words[i]} {share[i]:.3f}" for i in top))

# %% [markdown]
# Rolled out, the `[CLS]` sink compounds: each layer sends part of every position's weight to
# `[CLS]`, and the product of six such layers attributes most of the sentence vector to a token
# that carries no word. This is where rollout's assumption shows. It treats an attention weight
# as "how much information moves", but a head that parks its weight on a sink writes back a
# *small* vector: Kobayashi et al. 2020 (*Attention is Not Only a Weight*) measure weight ×
# ‖transformed value‖ and find the sink tokens' share collapses. Rollout is still far better
# correlated with gradient-based attributions than raw attention (Abnar & Zuidema, Table 1);
# read it as "where could information have come from", and look past the sink to the words.
#
# ## 7. Cross-attention: an encoder–decoder learns an alignment
# In an encoder–decoder (lesson 06's T5) the decoder's cross-attention reads the encoder's
# output: query = the output position being written, key = an input position (Vaswani et al.
# 2017, §3.2.3). For a task whose answer is a rearrangement of the input, the cross-attention
# map should *be* that rearrangement. We train a tiny T5 (one encoder block, one decoder block)
# to reverse strings of 8 digits and look: output position j must copy input position 7-j, so
# the map should be the anti-diagonal.
# `record_attention(model, "cross")` records the cross-attention modules instead of the
# self-attention ones.

# %% tolerance={"rel": 0.05, "abs": 0.06, "pct": 3}
from course_lib.models.t5 import T5, shift_right

DIGITS = 8
def reversal_batch(n: int, gen: torch.Generator):
    x = torch.randint(2, 12, (n, DIGITS), generator=gen)  # (B, 8): the digits 0-9 as ids 2..11 (0 = pad/start)
    return x, x.flip(1)  # target: the same digits reversed


torch.manual_seed(0)
t5 = T5(vocab_size=12, d_model=64, head_dim=16, d_ff=128, n_layers=1, n_heads=4, dropout=0.0, num_buckets=8,
        max_distance=16)  # one encoder and one decoder block
opt = torch.optim.AdamW(t5.parameters(), lr=3e-3)
g = torch.Generator().manual_seed(0)
with single_thread():
    for step in range(400):
        x, y = reversal_batch(64, g)
        loss = t5(input_ids=x, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
t5.eval()
x, y = reversal_batch(512, torch.Generator().manual_seed(1))
with torch.no_grad(), single_thread():
    out = t5(input_ids=x, labels=y)
    cross = attention_maps(t5, input_ids=x, decoder_input_ids=shift_right(y, 0, 0), kind="cross")
token_acc = (out.logits.argmax(-1) == y).float().mean().item()
print(f"after 400 steps: loss {out.loss.item():.3f}, {100 * token_acc:.1f} % of output digits right "
      "(teacher forcing, 512 fresh strings)")
for l, m in enumerate(cross):
    anti = m.flip(-1).diagonal(dim1=-2, dim2=-1).mean((0, -1))  # (H,): weight on input 7-j
    print(f"decoder layer {l}: mean cross-attention weight on the mirrored input position, per head:",
          [round(v, 2) for v in anti.tolist()])

fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, i in zip(axes, range(2)):
    digits = [str(int(d) - 2) for d in x[i]]
    plot_attention(cross[-1][i].mean(0), digits, [f"out {j}" for j in range(DIGITS)], ax=ax, annotate=False,
                   title=f"string {i}: cross-attention (heads averaged)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The anti-diagonal appears without anyone asking for it: to write output j the decoder looks at
# input 7-j. The loss only rewarded the right digits; the alignment is how the model found them.
# (The same picture, for translation, is Figure 3 of Bahdanau et al. 2015.)
#
# ## Bigger
# * Try sorting instead of reversal (`x.sort(1).values` as the target): the alignment is then
#   different for every string — look at a few.
# * Train longer and bigger (`max_steps=3000`, `n_layers=4`, `d_model=128`, `CONTEXT = 64`:
#   minutes on a GPU with `device=None`) and rerun sections 4–5: do sharper previous-token heads,
#   or heads that copy an earlier occurrence of the current character, appear?
# * Measure over 10,000 lines instead of 1,000 (change `[:1000]`): if the table is stable in
#   its second decimal, 1,000 examples were enough.
#
# **Now** do `exercises/12_inside_attention.ipynb`.
