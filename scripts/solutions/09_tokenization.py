# ---
# jupyter:
#   jupytext:
#     formats: solutions///ipynb,scripts/solutions///py:percent
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/09_tokenization.ipynb)

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
# # Exercise 09 · One BPE merge
#
# Write `bpe_merge(ids, pair, new_id)`: return a **new** list where every occurrence of the
# adjacent `pair` in `ids` is replaced by `new_id`, scanning **left to right** (so in
# `[a, a, a]` only the first two merge: `[X, a]`). Do not modify `ids`.
# Then your function trains a small tokenizer. Read `notebooks/09_tokenization.ipynb` first.

# %%
import math
from collections import Counter

from course_lib.checks import check_bpe_merge, check_unigram_viterbi, check_wordpiece, hint, solution
from course_lib.tokenizers import minilm_vocab_path

# %%
def bpe_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    ### BEGIN SOLUTION
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    ### END SOLUTION


result = check_bpe_merge(bpe_merge)

# %% [markdown]
# ## Your merge, training a tokenizer
# Once the check passes, this cell uses your function for ten merges on a line of Macbeth.

# %%
line = "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day"
if result.passed:
    ids, vocab = list(line.encode()), {i: bytes([i]) for i in range(256)}
    for k in range(10):
        pairs = Counter(zip(ids, ids[1:]))
        pair = max(pairs, key=lambda p: (pairs[p], vocab[p[0]], vocab[p[1]]))
        vocab[256 + k] = vocab[pair[0]] + vocab[pair[1]]
        ids = bpe_merge(ids, pair, 256 + k)
    print(f"{len(line)} bytes -> {len(ids)} tokens:", [vocab[i].decode() for i in ids])
else:
    print("pass the check above first")


# %% [markdown]
# ## Part 2 · WordPiece, BERT's tokenizer (3 points, about 25 minutes)
# Write `wordpiece(word, vocab, unk="[UNK]", max_chars=100)`: split one word (already lower-cased
# and split off from its neighbours, as in lesson 09 §7) into pieces of `vocab` (a set of strings)
# the way BERT does, **greedy longest-match-first**:
# * from the current position, take the **longest** piece of the vocabulary that starts there;
# * every piece after the first is looked up with the prefix `"##"` (BERT's vocabulary holds `ing`
#   and `##ing` as two different tokens);
# * if at some position no piece fits, the **whole word** becomes `[unk]` (a single `[UNK]`, not the
#   pieces found so far), and so does a word longer than `max_chars` characters.
#
# Return the list of pieces. The check compares it with BERT's answer on a small vocabulary and on
# the 30,522 tokens of the MiniLM vocabulary (lesson 09 §7).
#
# **Not allowed:** `course_lib.tokenizers` (its `WordPieceTokenizer`), `course_lib.unigram`,
# `tokenizers`, `transformers`, `sentencepiece` (the check reads your code and watches it run).
# **Allowed:** string slicing, `in`, loops, and helpers of your own. Stuck? `hint('check_wordpiece')`,
# then `hint('check_wordpiece', 2)`, then `solution('check_wordpiece')`.

# %%
def wordpiece(word, vocab, unk="[UNK]", max_chars=100):
    ### BEGIN SOLUTION
    if len(word) > max_chars:
        return [unk]  # BERT gives up on very long words
    pieces = []
    start = 0  # the first character not covered yet
    while start < len(word):
        end = len(word)
        piece = None
        while end > start:  # try the longest candidate first, then shorten it by one character
            candidate = word[start:end]
            if start > 0:
                candidate = "##" + candidate  # a piece inside the word carries the "##" prefix
            if candidate in vocab:
                piece = candidate
                break
            end -= 1
        if piece is None:
            return [unk]  # no piece fits here: the WHOLE word is unknown, not just this part
        pieces.append(piece)
        start = end
    return pieces  # (number of pieces,) strings from the vocabulary
    ### END SOLUTION


result_wp = check_wordpiece(wordpiece)

# %% [markdown]
# Once the check passes, this cell splits a few words with your function and BERT's vocabulary.

# %%
bert_vocab = set(minilm_vocab_path().read_text(encoding="utf-8").splitlines())
if result_wp.passed:
    for w in ["tokenization", "unaffable", "cromulent", "antidisestablishmentarianism", "snow\u2603man"]:
        print(f"{w:30} -> {wordpiece(w, bert_vocab)}")
else:
    print("pass the check above first")

# %% [markdown]
# ## Part 3 · The most likely segmentation under a unigram model (3 points, about 30 minutes)
# A unigram language model (lesson 09 §10-11) gives every piece a log-probability; a segmentation
# x_1 … x_M of a text has log p = log p(x_1) + … + log p(x_M). Write
# `unigram_viterbi(text, pieces_logprob)`: return the pieces (a list of strings, in order, joining
# back into `text`) of the **most likely** segmentation, by dynamic programming over the positions:
# `best[j]` is the log-probability of the best segmentation of `text[:j]`, and remember where its
# last piece starts so you can walk back from the end. `pieces_logprob` is a dict
# `{piece: log-probability}` in which every single character of `text` is a piece, so a
# segmentation always exists. Add log-probabilities: a product of probabilities underflows to 0.0
# on a long text. Greedy longest match is not the answer.
#
# **Not allowed:** `course_lib.unigram` (its `UnigramTokenizer`), `course_lib.tokenizers`,
# `tokenizers`, `transformers`, `sentencepiece`.
# **Allowed:** `math`, lists, dicts, loops, and helpers of your own. Stuck?
# `hint('check_unigram_viterbi')`, then `hint('check_unigram_viterbi', 2)`, then
# `solution('check_unigram_viterbi')`.

# %%
def unigram_viterbi(text, pieces_logprob):
    ### BEGIN SOLUTION
    n = len(text)
    longest = max(len(p) for p in pieces_logprob)  # no piece is longer than this
    # best[j]: the log-probability of the best segmentation of text[:j]; sums of logs never underflow
    best = [0.0] + [-math.inf] * n  # (n + 1,)
    start_of_last = [0] * (n + 1)  # (n + 1,): the best path to j ends with the piece text[start:j]
    for j in range(1, n + 1):
        for i in range(max(0, j - longest), j):  # every piece text[i:j] that ends at j
            piece = text[i:j]
            if piece in pieces_logprob:
                score = best[i] + pieces_logprob[piece]  # log(p_1 * ... * p_k) = log p_1 + ... + log p_k
                if score > best[j]:
                    best[j] = score
                    start_of_last[j] = i
    pieces = []
    j = n
    while j > 0:  # walk back from the end: the last piece is text[start_of_last[j]:j]
        i = start_of_last[j]
        pieces.append(text[i:j])
        j = i
    return pieces[::-1]  # (number of pieces,) from the first to the last
    ### END SOLUTION


result_vt = check_unigram_viterbi(unigram_viterbi)

# %% [markdown]
# Once the check passes, this cell compares your segmentation with greedy longest match on a toy
# vocabulary: greedy grabs the long but rare piece `unaff`; two likely pieces `un` + `aff` beat it.

# %%
toy = {c: -6.0 for c in "unafble"}
toy.update({"un": -3.2, "unaff": -9.5, "aff": -5.1, "able": -3.9, "ab": -4.4, "le": -4.8, "affable": -9.9})


def greedy_longest(text, pieces_logprob):
    out, i = [], 0
    while i < len(text):
        j = max(j for j in range(i + 1, len(text) + 1) if text[i:j] in pieces_logprob)
        out.append(text[i:j])
        i = j
    return out


if result_vt.passed:
    for name, pieces in [("greedy", greedy_longest("unaffable", toy)), ("Viterbi", unigram_viterbi("unaffable", toy))]:
        print(f"{name:8} {' | '.join(pieces):28} log p = {sum(toy[p] for p in pieces):.1f}")
else:
    print("pass the check above first")
