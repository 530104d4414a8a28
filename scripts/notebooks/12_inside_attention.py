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
# which pattern each head follows over thousands of queries (instead of eyeballing one sentence),
# to find heads that track the *content* of the text (the last space, the start of the line),
# to remove a head and see what the loss thinks of it, to read the model's guess after every
# layer (the logit lens), to follow information through all the layers with attention rollout,
# and to watch an encoder–decoder learn an alignment.
#
# Two trained models: the course's **Shakespeare GPT**, shipped with the course
# (`course_lib.pretrained`, trained by `python -m course_lib.pretrained --train`), and the real
# pretrained **all-MiniLM-L6-v2** BERT (lesson 07); at the end a tiny T5 trained here to
# reverse digit strings. The papers behind the tools:
# * Clark et al. 2019, *What Does BERT Look At?* — positional heads, heads that park their
#   weight on `[CLS]`/`[SEP]`, broad heads (§3);
# * Olsson et al. 2022, *In-context Learning and Induction Heads* — heads that find the previous
#   occurrence of the current token and copy what came next;
# * Michel et al. 2019, *Are Sixteen Heads Really Better than One?* — remove heads one at a
#   time and measure the loss (§3);
# * nostalgebraist 2020, *interpreting GPT: the logit lens* — decode the residual stream after
#   every layer with the model's own output head;
# * Abnar & Zuidema 2020, *Quantifying Attention Flow in Transformers* — attention rollout (§3).
#
# Lesson 07 looked at one sentence. A single sentence can make any head look like anything;
# here every score is an average over thousands of queries.
#
# **Then** do `exercises/12_inside_attention.ipynb`: the previous-token and induction scores,
# attention rollout and the logit lens, written yourself.

# %%
import math

import matplotlib.pyplot as plt
import torch

from course_lib import seed_everything
from course_lib.analysis import (PATTERNS, HeadPatterns, ablate_heads, attention_maps, attention_rollout,
                                 head_ablation, last_occurrence, lens_scores, logit_lens, record_attention,
                                 repeat_keys, weight_on_keys)
from course_lib.data import encoded_corpus, get_batch, shakespeare_text
from course_lib.device import single_thread
from course_lib.models.minilm import encode_batch, load_minilm, load_minilm_tokenizer
from course_lib.pretrained import manifest, shakespeare_gpt, validation_loss
from course_lib.training import lm_loss
from course_lib.viz import plot_attention, plot_layer_head_grid
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
# ## 2. The shipped Shakespeare GPT
# Lesson 10's GPT, grown and trained for longer (the manifest records the recipe and the time):
# 6 layers, 256 wide, 4 heads of 64 channels, a context of 128 characters. `shakespeare_gpt()` checks the file's sha256 against
# the manifest and returns the model in eval mode with its character tokenizer. The manifest
# records its loss on the whole held-out last 10 % of the corpus; we recompute it on the first
# 4,096 held-out characters (32 windows of 128), which costs a second instead of fifteen.

# %% tolerance={"abs": 0.002, "rel": 0.002}
model, tok = shakespeare_gpt()
text = shakespeare_text()
train_data, val_data = encoded_corpus(tok, "char")
cfg, info = model.config, manifest()
CONTEXT = cfg.max_positions
print(f"{cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, context {CONTEXT}, "
      f"{tok.vocab_size} characters, {info['parameters']:,} parameters; trained for {info['train']['max_steps']:,} "
      f"steps in {info['train_seconds'] / 60:.0f} minutes on {info['threads']} CPU threads")
print(f"validation loss: {info['val_loss']:.3f} nats/char on all {info['val_tokens']:,} held-out characters "
      f"(manifest); {validation_loss(model, val_data[:32 * CONTEXT]):.3f} on the first 4,096 (measured here); "
      f"uniform guessing: ln {tok.vocab_size} = {math.log(tok.vocab_size):.3f}")

# %% [markdown]
# ## 3. Looking: a map for every layer, head and example
# Pick the model and sentence, the layer and the head. Rows are queries (the token doing the
# looking), columns are keys. The GPT's maps are lower-triangular: the causal mask. (Headless,
# three chosen maps are drawn: two GPT heads that sections 4 and 5 single out, and a MiniLM head.)

# %%
snippet = tok.encode("ROMEO:\nBut soft, what light\nthrough yonder window")
sentences = ["The cat sat on the mat because it was tired.", "To be, or not to be, that is the question."]
examples = [("Shakespeare GPT (characters)",
             [repr(c)[1:-1] for c in tok.decode(snippet)],
             [m[0] for m in attention_maps(model, torch.tensor([snippet]))])]
for s in sentences:
    one, _ = encode_batch(wp, [s])
    examples.append((f"MiniLM: {s}", [wp.itos[i] for i in one[0].tolist()],
                     [m[0] for m in attention_maps(minilm, one)]))
attention_browser(examples, static=((0, 0, 1), (0, 2, 2), (1, 0, 2)))

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
# Each score is averaged over every counted (example, query) pair: 32 held-out windows of 128
# characters for the GPT (4,064 queries per head), 500 lines of verse (padding excluded) for
# MiniLM. The *dominant* pattern of a head is its strongest positional score, or "broad" when
# even that is below 0.3.

# %% tolerance={"abs": 0.01}
xb, yb = get_batch(val_data, 32, CONTEXT, torch.Generator().manual_seed(5))  # (32, 128) held-out windows
maps_gpt = attention_maps(model, xb)  # 6 x (32, 4, 128, 128)
patterns_gpt = HeadPatterns(causal=True)
patterns_gpt.update(maps_gpt)
print(f"GPT: {patterns_gpt.n_examples:,} windows of {CONTEXT} characters")
print(patterns_gpt.table())

# %%
lines = [ln.strip() for ln in text.splitlines() if len(ln.split()) >= 5 and not ln.strip().endswith(":")][:500]
patterns_bert = HeadPatterns(causal=False)
by_length = sorted(lines, key=len)  # similar lengths in a batch: little padding to compute
for i in range(0, len(lines), 100):
    ids, mask = encode_batch(wp, by_length[i:i + 100])
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


fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1, 2.4]})
dominant_grid(patterns_gpt, "Shakespeare GPT: dominant pattern", axes[0])
dominant_grid(patterns_bert, "MiniLM: dominant pattern", axes[1])
fig.tight_layout()
plt.show()

fig, axes = plt.subplots(1, len(PATTERNS), figsize=(20, 2.8))
for ax, (p, name) in zip(axes, enumerate(PATTERNS)):
    plot_layer_head_grid(patterns_bert.scores[..., p], f"MiniLM: {name}", ax=ax, fmt="{:.1f}")
fig.tight_layout()
plt.show()

# %% tolerance={"abs": 0.01}
s_gpt, s_bert = patterns_gpt.scores, patterns_bert.scores
prev, first, sep = PATTERNS.index("previous"), PATTERNS.index("first"), PATTERNS.index("delimiter")
for name in ("previous", "next"):
    p = PATTERNS.index(name)
    l, h = divmod(int(s_bert[..., p].argmax()), s_bert.size(1))
    print(f"MiniLM's strongest {name}-token head: layer {l}, head {h}, mean weight {s_bert[l, h, p]:.2f}")
print(f"MiniLM's mean weight on [CLS] per layer: {[round(v, 2) for v in s_bert[..., first].mean(1).tolist()]}")
print(f"MiniLM's mean weight on [SEP] per layer: {[round(v, 2) for v in s_bert[..., sep].mean(1).tolist()]}")
for name in ("previous", "local"):
    print(f"the GPT's layer-0 {name!r} score per head: "
          f"{[round(v, 2) for v in s_gpt[0, :, PATTERNS.index(name)].tolist()]}")
print(f"the GPT's mean 'broad' score (entropy / log keys) per layer: "
      f"{[round(v, 2) for v in s_gpt[..., PATTERNS.index('broad')].mean(1).tolist()]}")

# %% [markdown]
# What the numbers say. MiniLM has a near-perfect previous-token head in its first layer and a
# next-token head in its second, and from layer 1 on `[CLS]` is the dominant key of nearly every
# head (on average 0.4–0.6 of each layer's weight): the "no-op" sink Clark et al. describe for
# BERT-base (where `[SEP]` took much of that role; this model was distilled and fine-tuned for
# sentence embeddings, and the measurement shows which token it uses).
#
# The Shakespeare GPT's first layer is positional: heads 1 and 3 put most of their weight (about
# 0.95 and 0.86) on the previous character, head 2 most of its weight on the characters 2–3 back,
# and head 0 splits between the two. Together they hand every position its last few
# characters. From layer 1 on, every head but one (layer 1, head 1, previous 0.33) is "broad": no
# positional pattern reaches 0.3, and the weight is spread (normalised entropy about 0.5–0.8 per
# layer). Positional scores cannot say what these heads look at; the next section asks the text.

# %% [markdown]
# ## 5. Heads that follow the text, not the position
# A positional score asks "how far back?". A character model also needs to know *where it is in
# the word and in the line*: which characters began this word, which name began this line. Those
# keys are at a different distance for every query, so we choose the key per query from the
# text itself (`last_occurrence`) and average the weight each head puts on it (`weight_on_keys`):
# * **last space**: the latest space or newline at least 2 characters back (so that a
#   previous-character head does not score here just because the previous character was a space);
#   for a query inside a word, the character just before the word began;
# * **line start**: the latest newline at least 2 characters back;
# * **induction** (Olsson et al. 2022): a string of random words, repeated: `... A B ... A` —
#   does the head at the second `A` look at the `B` that followed the first `A`? A head that
#   does can copy `B` and predict the repeat. We also measure the model's loss on the second copy
#   against the first: a model that copies predicts the second copy much better.

# %% tolerance={"abs": 0.01, "rel": 0.02}
space_ids = [tok.stoi[" "], tok.stoi["\n"]]
scores = {"last space": torch.stack([weight_on_keys(m, last_occurrence(xb, space_ids, 2)) for m in maps_gpt]),
          "line start": torch.stack([weight_on_keys(m, last_occurrence(xb, [tok.stoi["\n"]], 2))
                                     for m in maps_gpt])}

words = sorted({w for w in text.lower().split() if w.isalpha()})
g = torch.Generator().manual_seed(7)
PERIOD = 60
rows = []
for _ in range(16):
    s = ""
    while len(s) < PERIOD - 1:
        s += words[int(torch.randint(len(words), (1,), generator=g))] + " "
    rows.append(tok.encode(s[:PERIOD - 1] + " ") * 2)  # (120,): the same 60 characters twice
rep = torch.tensor(rows)  # (16, 120)
maps_rep = attention_maps(model, rep)
scores["induction"] = torch.stack([weight_on_keys(m, repeat_keys(rep.size(1), PERIOD)) for m in maps_rep])
with torch.no_grad():
    nll = torch.nn.functional.cross_entropy(model(rep).logits[:, :-1].transpose(1, 2), rep[:, 1:],
                                            reduction="none")  # (16, 119): position t predicts t+1
print(f"repeated strings, e.g. {tok.decode(rows[0][:PERIOD])!r}")
print(f"loss on the first copy {nll[:, :PERIOD - 1].mean():.2f} nats/char, "
      f"on the second copy {nll[:, PERIOD - 1:].mean():.2f}")
for name, sc in scores.items():
    l, h = divmod(int(sc.argmax()), sc.size(1))
    print(f"{name:>10}: strongest head layer {l}, head {h}, mean weight {sc[l, h]:.2f}; "
          f"median over all 24 heads {sc.median():.3f}")

fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for ax, (name, sc) in zip(axes, scores.items()):
    plot_layer_head_grid(sc, f"GPT: weight on the {name} key", ax=ax, fmt="{:.2f}")
fig.tight_layout()
plt.show()

# %% [markdown]
# Two heads of layer 2 follow the text. Head 2 puts about 0.63 of its weight on the newline that
# began the current line, where the median head puts 0.03; head 0 puts about 0.27 on the last
# space, where the median head puts 0.06. Both are things a character model needs: the line so far
# (verse lines, and the speaker names that open a speech) and the word so far decide the next
# character. Click through layer 2 in the browser above to see them on one line.
#
# No head copies. Every head's induction score is at most about 0.01, and the model predicts the
# second copy of a random string of words *worse* than the first (about 2.4 against 2.1 nats per
# character), where a model with induction heads predicts a repeat far better (Olsson et al. 2022
# use exactly this test). This model, 6 layers trained on one million characters, has learned
# local structure, not in-context copying; "does it copy?" is a question to measure, not to assume.
#
# ## 6. Ablation: remove one head, measure the loss
# `ablate_heads(model, [(layer, head)])` zeroes that head's slice of the concatenated head
# outputs just before the output projection, so it writes nothing into the residual stream;
# every other head is untouched (the tests check that the change is exactly that head's term).
# `head_ablation` does it for each head in turn, here on 8 held-out windows of 128 characters
# (1,024 predictions), the same windows every time so the differences are paired.

# %% tolerance={"abs": 0.002, "rel": 0.02}
xa, ya = xb[:8], yb[:8]  # (8, 128)
with single_thread():
    base, delta = head_ablation(model, lambda m: lm_loss(m, xa, ya).item())
    with ablate_heads(model, [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)]):
        no_attention = lm_loss(model, xa, ya).item()
print(f"loss with every head: {base:.3f}; with no attention at all: {no_attention:.3f}")
worst = divmod(int(delta.argmax()), delta.size(1))
print(f"the most important single head: layer {worst[0]}, head {worst[1]} (+{delta.max():.3f} nats); "
      f"the least: {delta.min():+.3f}")
print(f"the 24 single-head costs add up to {delta.sum():.3f} nats; "
      f"per layer: {[round(v, 3) for v in delta.sum(1).tolist()]}")
plt.show(plot_layer_head_grid(delta, "GPT: loss change when one head is removed (nats)", center=True,
                              fmt="{:+.3f}"))

# %% [markdown]
# Michel et al. found that most heads of a large trained model can be removed one at a time, and
# that holds here: the costliest single head adds about 0.02 nats, near 1 % of the loss, and it
# is layer 2's line-start head from section 5. Per layer, the first layer (the positional heads)
# and layer 2 cost the most. But removing all 24 heads at once costs about 1.7 nats, ten times
# the 24 single costs added up (about 0.17): what one head does, others can largely do when it
# is gone, and the model cannot do without attention altogether.
#
# ## 7. The logit lens: what the model would say after each layer
# In a pre-LN GPT every block *adds* to the residual stream, and the model reads its answer off
# the final stream with `final_norm` and the tied head (logits = LN(x)·Eᵀ). The logit lens
# (nostalgebraist 2020) reads *every* intermediate stream the same way, as if the model stopped
# there. `logit_lens(model, ids)` returns these (L+1, B, T, V) logits (row 0: the embeddings,
# row L: the model's real output — the tests check that the last row is exactly the model's
# logits) and `lens_scores` the loss and top-1 accuracy of each row on the real next character.

# %% tolerance={"abs": 0.005, "rel": 0.005, "pct": 0.3}
lens = logit_lens(model, xa)  # (7, 8, 128, 73)
lens_loss, lens_acc = lens_scores(lens, ya)
print("read after      loss (nats/char)   top-1 accuracy")
for l, (lo, ac) in enumerate(zip(lens_loss.tolist(), lens_acc.tolist())):
    print(f"{'embeddings' if l == 0 else f'block {l - 1}':<14}  {lo:8.3f}          {100 * ac:5.1f} %")
print("last row equals the model's logits:", torch.equal(lens[-1], model(xa).logits))
print(f"row 0 (embeddings): its top guess is the *current* character at "
      f"{100 * (lens[0].argmax(-1) == xa).float().mean():.1f} % of positions")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
names = ["emb"] + [f"block {l}" for l in range(cfg.n_layers)]
axes[0].plot(names, lens_loss, "o-")
axes[0].axhline(math.log(tok.vocab_size), color="grey", ls="--", label="uniform guess (ln 73)")
axes[0].set(ylabel="next-char loss (nats)", title="logit lens: loss after each layer", yscale="log")
axes[0].legend()
axes[1].plot(names, 100 * lens_acc, "o-")
axes[1].set(ylabel="top-1 accuracy (%)", title="logit lens: accuracy after each layer", ylim=(0, 100))
fig.tight_layout()
plt.show()

# %% [markdown]
# What each layer would guess, on one line of the play: under each character of the text, each
# layer's top guess for it from the characters before (green: right; `·` is a space, `⏎` a newline).

# %%
line = tok.encode("ROMEO:\nBut soft, what light through yonder window breaks")
guess = logit_lens(model, torch.tensor([line]))[:, 0, :-1].argmax(-1)  # (7, T-1): each row's top guess
truth = line[1:]
glyph = lambda i: {" ": "·", "\n": "⏎"}.get(tok.decode([i]), tok.decode([i]))
fig, ax = plt.subplots(figsize=(14, 3.2))
for r, row in enumerate([truth] + guess.tolist()):
    for t, i in enumerate(row):
        right = r > 0 and i == truth[t]
        ax.text(t, -r, glyph(i), ha="center", va="center", family="monospace", fontsize=11,
                color="green" if right else ("black" if r == 0 else "firebrick"))
ax.set(xlim=(-1, len(truth)), ylim=(-guess.size(0) - 0.5, 0.5), xticks=[],
       yticks=[-r for r in range(guess.size(0) + 1)],
       yticklabels=["the text", "embeddings"] + [f"after block {l}" for l in range(cfg.n_layers)])
ax.set_title("logit lens on one line: each layer's top guess for the next character")
for side in ax.spines.values():
    side.set_visible(False)
fig.tight_layout()
plt.show()

# %% [markdown]
# The loss falls after every block, from about 2.7 nats after block 0 to 1.3 at the top, and the
# top-1 accuracy rises from about 26 % to 61 %: the prediction is built up over all six layers,
# not made by the last one. Row 0 is not a prediction at all: with a tied head the embedding of a
# character scores *that character* highest (printed: 100 % of positions), so read straight from
# the embeddings the model would always "predict" the character it just saw. The picture shows
# the same on one line: more characters turn green with depth, and the first letter of a word
# stays the hardest to guess, even at the top.
#
# ## 8. Attention rollout: following information through the layers
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
# ## 9. Cross-attention: an encoder–decoder learns an alignment
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
# * Open a model you train yourself (lesson 10's `GPT` and `Trainer`, or the shipped recipe in
#   `course_lib/pretrained.py` with more steps on a GPU) and rerun sections 4–7: at which step
#   does the line-start head appear, and does an induction head ever form?
# * Measure over 5,000 lines instead of 500 (change `[:500]`), and the GPT over 256 windows
#   instead of 32: if the tables are stable in their second decimal, the smaller samples were
#   enough.
#
# **Now** do `exercises/12_inside_attention.ipynb`.
