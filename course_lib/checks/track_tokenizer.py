"""Checks for part 5 of the from-scratch track (the capstone): a byte-level BPE tokenizer the
learner trains and runs (part 6, decoding, is in track_decoding.py).

* `check_pretokenize(pretokenize)`: GPT-2's regex split, equal to `regex.findall(GPT2_SPLIT, text)`.
* `check_train_bpe(train_bpe)`: merges equal to `ByteBPETokenizer.train`'s (course_lib's trainer,
  proven equal to a full recount and close to Hugging Face `tokenizers` in tests/test_tokenizers.py),
  ties included; the tie rule is stated in the exercise.
* `check_tokenizer(Tokenizer)`: encode equal to `ByteBPETokenizer.encode`, decode its inverse.
* `check_encode_iterable(Tokenizer)`: streaming ids equal to `encode` of the whole text at every
  split point of a tricky string, and lazy: the check feeds lines from a generator and reads ids
  as they come; the learner may not fall more than `MAX_LAG` characters behind.

The learner's code is kept here as text (`*_CODE`); each check prints the pieces it needs.
"""
from __future__ import annotations

import functools
import operator
import random
from collections import Counter
from itertools import islice

import regex
import torch

from course_lib.data import shakespeare_text
from course_lib.tokenizers import GPT2_SPLIT, ByteBPETokenizer, merge_pair
from .core import LearnerError, Mismatch, call_learner, register

TOKENIZER_FORBID = ("course_lib", "tokenizers", "tiktoken", "transformers", "sentencepiece")

# ------------------------------------------------------------------ the learner's code, as text
PRETOKENIZE_CODE = r'''
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def pretokenize(text):
    return regex.findall(GPT2_PATTERN, text)  # the chunks, in order: "".join(chunks) == text
'''

TRAIN_BPE_CODE = '''
def split_special_tokens(text, special_tokens):
    """text -> pieces; each special token that occurs is a piece of its own."""
    if not special_tokens:
        return [text]
    longest_first = sorted(special_tokens, key=len, reverse=True)  # "<|end|>x" before "<|end|>"
    pattern = "(" + "|".join(regex.escape(token) for token in longest_first) + ")"  # () keeps the tokens
    return [piece for piece in regex.split(pattern, text) if piece]


def merge_pair(ids, pair, new_id):
    """Replace each occurrence of `pair` in `ids`, left to right: [a, a, a] -> [X, a]."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(text, vocab_size, special_tokens=()):
    n_merges = vocab_size - 256 - len(special_tokens)  # the special tokens take ids too
    if n_merges < 0:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for 256 bytes and {len(special_tokens)} specials")
    # 1. each distinct chunk once, with how often it occurs; special tokens are never trained on
    chunk_counts = Counter()
    for piece in split_special_tokens(text, special_tokens):
        if piece not in special_tokens:
            chunk_counts.update(pretokenize(piece))
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each chunk as byte ids
    freqs = list(chunk_counts.values())
    vocab = {i: bytes([i]) for i in range(256)}  # id -> the bytes it stands for
    merges = []
    for k in range(n_merges):
        # 2. count the adjacent pairs inside every chunk, weighted by the chunk's frequency
        pair_counts = Counter()
        for ids, freq in zip(words, freqs):
            for pair in zip(ids, ids[1:]):  # overlapping pairs count: "aaa" has (a, a) twice
                pair_counts[pair] += freq
        if not pair_counts:
            break  # every chunk is one token already
        # 3. the most frequent pair; a tie goes to the greater bytes (a, b), then to the smaller ids
        best = max(pair_counts, key=lambda p: (pair_counts[p], vocab[p[0]], vocab[p[1]], -p[0], -p[1]))
        new_id = 256 + k
        merges.append(best)
        vocab[new_id] = vocab[best[0]] + vocab[best[1]]
        words = [merge_pair(ids, best, new_id) for ids in words]  # 4. apply it everywhere
    return merges
'''

TOKENIZER_CODE = '''
class Tokenizer:
    def __init__(self, merges, special_tokens=()):
        self.merges = [tuple(pair) for pair in merges]
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}  # pair -> when it was learned
        self.vocab = {i: bytes([i]) for i in range(256)}  # id -> bytes
        for k, (a, b) in enumerate(self.merges):
            self.vocab[256 + k] = self.vocab[a] + self.vocab[b]
        first = 256 + len(self.merges)  # the special tokens come after the merges
        self.special_tokens = {token: first + i for i, token in enumerate(special_tokens)}
        for token, i in self.special_tokens.items():
            self.vocab[i] = token.encode("utf-8")
        self.longest_special = max((len(token) for token in special_tokens), default=0)

    def encode_chunk(self, chunk):
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            # the earliest-learned merge among the chunk's pairs, exactly as training applied them
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, math.inf))
            if pair not in self.ranks:
                break  # no pair left that was ever merged
            ids = merge_pair(ids, pair, 256 + self.ranks[pair])
        return ids

    def encode(self, text):
        ids = []
        for piece in split_special_tokens(text, list(self.special_tokens)):
            if piece in self.special_tokens:
                ids.append(self.special_tokens[piece])  # whole, never split into bytes
            else:
                for chunk in pretokenize(piece):
                    ids.extend(self.encode_chunk(chunk))
        return ids

    def decode(self, ids):
        data = b"".join(self.vocab[i] for i in ids)  # join the bytes first: a character may span tokens
        return data.decode("utf-8", errors="replace")

    def encode_iterable(self, iterable):
        buffer = ""  # text read but not yet encoded
        for piece in iterable:
            buffer += piece
            ids, buffer = self.encode_settled(buffer)
            yield from ids
        yield from self.encode(buffer)  # the end of the input settles the rest

    def encode_settled(self, text):
        """(ids of the part of `text` more text cannot change, the rest of `text`)."""
        margin = max(self.longest_special - 1, 0)  # a special token may still be forming in the last `margin` characters
        safe = max(len(text) - margin, 0)
        done = 0  # text[:done] ends with a complete special token: it is final
        if self.special_tokens:
            pattern = "|".join(regex.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True))
            for match in regex.finditer(pattern, text):
                if match.start() < safe:
                    done = match.end()
        ids = self.encode(text[:done])
        # after it, the last two chunks may still change ("'l" + "l" is "'ll"; "  " + "a" is " " + " a")
        settled = pretokenize(text[done:safe])[:-2]
        for chunk in settled:
            ids.extend(self.encode_chunk(chunk))
        done += sum(len(chunk) for chunk in settled)
        return ids, text[done:]
'''


def solution_text(imports: str, *pieces: str) -> str:
    return imports + "".join("\n" + p for p in pieces)


_TOK_IMPORTS = "import math\nfrom collections import Counter\n\nimport regex\n"




# ------------------------------------------------------------------ shared helpers
def _take(iterator, n):
    return list(islice(iterator, n))


@functools.lru_cache(maxsize=None)
def _corpus(n_chars: int) -> str:
    return shakespeare_text(n_chars)


CONTRACTIONS = "I'll go; we'll see; you'll run; they'll sing, and she'll dance.\n" * 40  # "'ll" becomes a token
INDENTED = "".join("    " + line + "\n" for line in shakespeare_text(3_000).splitlines())  # runs of spaces


@functools.lru_cache(maxsize=None)
def _reference_tokenizer(n_merges: int, specials: tuple[str, ...]) -> ByteBPETokenizer:
    """Trained on Shakespeare plus contractions and indentation: then "'ll" and runs of spaces are tokens,
    which a streaming encoder that cuts too early, or an encoder without pre-tokenisation, would split."""
    text = _corpus(60_000) + CONTRACTIONS + INDENTED
    return ByteBPETokenizer.train(text, 256 + n_merges + len(specials), list(specials))


def _ids_list(out, what: str, label: str) -> list[int]:
    if out is None:
        raise Mismatch(f"{what} returned None (did you forget a `return`?)", f"case: {label}")
    if isinstance(out, torch.Tensor):
        out = out.tolist()
    try:
        ids = list(out)
    except TypeError:
        raise Mismatch(f"{what} should return a list of ints, got {type(out).__name__}", f"case: {label}") from None
    out = []
    for i in ids:
        try:
            if isinstance(i, (bool, float)):
                raise TypeError
            out.append(operator.index(i))  # int, or a NumPy / 0-d tensor integer
        except TypeError:
            raise Mismatch(f"{what} should return a list of ints, got an element {i!r} ({type(i).__name__})",
                           f"case: {label}") from None
    return out


def _first_difference(got: list, expected: list) -> str:
    k = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    lo = max(0, k - 3)
    return (f"first difference at index {k}: expected ...{expected[lo:k + 4]}, got ...{got[lo:k + 4]} "
            f"(lengths {len(expected)} and {len(got)})")


def _short(s: str, n: int = 60) -> str:
    return repr(s if len(s) <= n else s[:n] + "…")


# ------------------------------------------------------------------ part 5a: pretokenize
PRETOKENIZE_MISCONCEPTIONS = {
    "whitespace_split": "the text was split on whitespace (str.split()), which throws the spaces away; "
                        "byte-level BPE must be able to give back the exact text. Use the GPT-2 pattern "
                        "with regex.findall: the chunks joined together are the text.",
}

PRETOKENIZE_CASES = ["Hello, World! It's 3.14159 o'clock.", "He'll say 'tis so;  twice\n\n  and\tthen",
                     "Café déjà vu — naïve 你好，世界！ 🎉🎉", "   leading and trailing spaces   ", "we've they're I'm",
                     "", "MiXeD123abc 4 5", "a\n\n\nb"]


@register("check_pretokenize", points=1, minutes=5, timeout=30, reference=solution_text("import regex\n", PRETOKENIZE_CODE),
          misconceptions=PRETOKENIZE_MISCONCEPTIONS, forbid=TOKENIZER_FORBID,
          hint="return regex.findall(GPT2_PATTERN, text) with the pattern given in the notebook (the `regex` "
               "package, not `re`: `re` does not know \\p{L}).",
          idea="Pre-tokenisation cuts the text into chunks (a word with its leading space, a number, a run of "
               "punctuation, a run of whitespace); BPE merges only inside a chunk, so no token spans two words.")
def check_pretokenize(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    outs = []
    for text in PRETOKENIZE_CASES:
        out = call_learner(learner, text)
        if not isinstance(out, (list, tuple)) or not all(isinstance(c, str) for c in out):
            hint = " (did you forget a `return`?)" if out is None else ""
            raise Mismatch(f"expected a list of str, got {type(out).__name__}{hint}", f"case: {_short(text)}")
        outs.append(list(out))
    for text, out in zip(PRETOKENIZE_CASES, outs):
        expected = regex.findall(GPT2_SPLIT, text)
        if out != expected:
            key = "whitespace_split" if all(o == t.split() for o, t in zip(outs, PRETOKENIZE_CASES)) else None
            raise Mismatch(f"chunks differ from GPT-2's pre-tokenisation for {_short(text)}",
                           f"expected {expected[:12]}\n   got      {out[:12]}", key)
    return len(PRETOKENIZE_CASES)


# ------------------------------------------------------------------ part 5b: train_bpe
def _variant_train(text, n_merges, specials=(), *, pretok=True, drop_specials=True, overlap=True,
                   tie="greater_bytes"):
    """A plain full-recount trainer with switches for each misconception (small inputs only)."""
    if specials and drop_specials:
        pattern = "(" + "|".join(regex.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")"
        pieces = [p for p in regex.split(pattern, text) if p and p not in specials]
    else:
        pieces = [text]
    counts = Counter(c for p in pieces for c in (regex.findall(GPT2_SPLIT, p) if pretok else [p]))
    words = [list(w.encode("utf-8")) for w in counts]
    freqs = list(counts.values())
    vocab = [bytes([i]) for i in range(256)]
    merges = []
    for k in range(n_merges):
        pc: Counter = Counter()
        for ids, f in zip(words, freqs):
            if overlap:
                for p in zip(ids, ids[1:]):
                    pc[p] += f
            else:  # each pair's non-overlapping occurrences, left to right ("aaa" has (a, a) once)
                for p in set(zip(ids, ids[1:])):
                    pc[p] += f * (len(ids) - len(merge_pair(ids, p, -1)))
        if not pc:
            break
        if tie == "greater_bytes":
            best = max(pc, key=lambda p: (pc[p], vocab[p[0]], vocab[p[1]], -p[0], -p[1]))
        elif tie == "first_seen":
            best = max(pc, key=pc.get)
        else:  # "smaller_bytes"
            best = max(pc, key=lambda p: (pc[p], [-c for c in vocab[p[0]] + b"\x00"], -p[0], -p[1]))
        merges.append(best)
        vocab.append(vocab[best[0]] + vocab[best[1]])
        words = [merge_pair(ids, best, 256 + k) for ids in words]
    return merges


def _pair_counts_after(text, specials, merges_so_far):
    """Pair counts (the correct rule) after applying `merges_so_far`: to tell a tie from a wrong count."""
    pattern = ("(" + "|".join(regex.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")") if specials else None
    pieces = [p for p in (regex.split(pattern, text) if pattern else [text]) if p and p not in specials]
    counts = Counter(c for p in pieces for c in regex.findall(GPT2_SPLIT, p))
    pc: Counter = Counter()
    for w, f in counts.items():
        ids = list(w.encode("utf-8"))
        for k, pair in enumerate(merges_so_far):
            ids = merge_pair(ids, pair, 256 + k)
        for p in zip(ids, ids[1:]):
            pc[p] += f
    return pc


TRAIN_BPE_MISCONCEPTIONS = {
    "no_pretokenization": "the pairs were counted over the whole text, so merges cross word boundaries "
                          "(a token like b'e t'). Cut the text into chunks with pretokenize() first and count "
                          "pairs only inside each chunk.",
    "specials_trained": "the special tokens were left in the training text, so their bytes were counted and "
                        "merged (b'<|', b'endoftext', ...). Split them out first and train only on the pieces between them.",
    "tie_rule": "two pairs were equally frequent and you picked the other one. The rule here: the most frequent "
                "pair; among equal counts the pair whose bytes (bytes of a, bytes of b) are greater; if still "
                "equal, the smaller ids: max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]], -p[0], -p[1])).",
    "overlap_count": "overlapping occurrences were counted once: in \"aaa\" the pair (a, a) occurs twice, at "
                     "positions 0 and 1 (count every adjacent pair: zip(ids, ids[1:])), even though a merge "
                     "can then replace only one of them.",
    "special_ids_not_reserved": "the special tokens take ids too: vocab_size = 256 + number of merges + "
                                "number of special tokens, so learn vocab_size - 256 - len(special_tokens) merges.",
}

_AAA = "aaa aaa aaa baba baba ab ab ab ab bb bb bb bb bb"  # (a, a) 6 with overlaps, 3 without


def _train_cases():
    sp = "<|endoftext|>"
    shakes = _corpus(6_000)
    return [  # (label, text, vocab_size, special tokens)
        ("6,000 characters of Shakespeare, 40 merges", shakes, 256 + 40, ()),
        ("speeches joined by <|endoftext|>, 30 merges", sp.join(shakes[:4_000].split("\n\n")), 256 + 30 + 1, (sp,)),
        (f"{_short(_AAA)}, 6 merges (overlapping pairs)", _AAA, 256 + 6, ()),
        ("'ab cd ef' (every pair occurs once: ties), 4 merges", "ab cd ef", 256 + 4, ()),
        ("'the cat the hat the bat' (words end in 't '), 8 merges", "the cat the hat the bat that " * 3, 256 + 8, ()),
        ("Unicode, 2 special tokens, 12 merges", "naïve café<|pad|>ééé 你好你好<|endoftext|> naïve <|pad|>", 256 + 12 + 2,
         ("<|endoftext|>", "<|pad|>")),
        ("a text shorter than its merges (training stops early)", "abab", 256 + 10, ()),
    ]


@register("check_train_bpe", points=4, minutes=40, timeout=30,
          reference=solution_text(_TOK_IMPORTS, PRETOKENIZE_CODE, TRAIN_BPE_CODE),
          misconceptions=TRAIN_BPE_MISCONCEPTIONS, forbid=TOKENIZER_FORBID,
          hint="Split out the special tokens; pretokenize each other piece; count each distinct chunk once "
               "(a Counter); then repeat: count adjacent pairs in every chunk (times the chunk's count), take the "
               "best pair by (count, bytes of a, bytes of b, -a, -b), record it, merge it in every chunk.",
          idea="Merge k makes id 256 + k, whose bytes are the two parts' bytes joined (keep a vocab dict id -> bytes; "
               "you need it for the tie rule). Working on distinct chunks with their counts is the same as working on "
               "the whole text, only faster. Stop early when no pair is left.")
def check_train_bpe(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _train_cases()
    outs = []
    for label, text, vocab_size, specials in cases:
        out = call_learner(learner, text, vocab_size, specials)
        if not isinstance(out, (list, tuple)):
            hint = " (did you forget a `return`?)" if out is None else ""
            raise Mismatch(f"expected a list of (a, b) pairs, got {type(out).__name__}{hint}", f"case: {label}")
        try:
            merges = [tuple(int(x) for x in m) for m in out]
        except (TypeError, ValueError):
            raise Mismatch("expected a list of (a, b) pairs of ints", f"case: {label}") from None
        if any(len(m) != 2 for m in merges):
            raise Mismatch("each merge should be a pair (a, b) of two ids", f"case: {label}")
        outs.append(merges)
    expected = [ByteBPETokenizer.train(t, v, list(s)).merges for _, t, v, s in cases]
    for (label, text, vocab_size, specials), got, exp in zip(cases, outs, expected):
        if got == exp:
            continue
        vocab = ByteBPETokenizer(exp).vocab
        if len(got) == len(exp) + len(specials) and got[:len(exp)] == exp and specials:
            raise Mismatch(f"{len(got)} merges, expected {len(exp)}", f"case: {label}", "special_ids_not_reserved")
        k = next((i for i, (a, b) in enumerate(zip(got, exp)) if a != b), min(len(got), len(exp)))
        detail = f"case: {label}\n   merge {k}: "
        if k < len(exp):
            detail += f"expected {exp[k]} = {vocab[exp[k][0]] + vocab[exp[k][1]]!r}"
        if k < len(got):
            g = got[k]
            spelled = (vocab[g[0]] + vocab[g[1]]) if max(g) < len(vocab) else "?"
            detail += f", got {g} = {spelled!r}"
        variants = {"no_pretokenization": dict(pretok=False), "specials_trained": dict(drop_specials=False),
                    "overlap_count": dict(overlap=False)}
        key = None
        failing = cases.index((label, text, vocab_size, specials))
        order = [failing] + [i for i in range(len(cases)) if i != failing]  # the failing case first: fails fast
        for name, kw in variants.items():  # (the variant differs from the reference where the learner does)
            if all(outs[i] == _variant_train(cases[i][1], cases[i][2] - 256 - len(cases[i][3]), cases[i][3], **kw)
                   for i in order):
                key = name
                break
        if key is None and k < len(got) and k < len(exp):  # same count as the expected pair: a tie broken otherwise
            counts = _pair_counts_after(text, specials, exp[:k])
            if counts.get(got[k], 0) == counts[exp[k]]:
                key = "tie_rule"
                detail += f"; both occur {counts[exp[k]]} times"
        if len(got) != len(exp):
            raise Mismatch(f"{len(got)} merges, expected {len(exp)}", detail, key)
        raise Mismatch(f"merge {k} differs from the reference", detail, key)
    return len(cases)


# ------------------------------------------------------------------ part 5c: Tokenizer (encode / decode)
SPECIALS = ("<|endoftext|>", "<|pad|>")

ENCODE_CASES = ["Hello, World! It's 3.14159 o'clock.", "He'll say 'tis so;  twice\n\n  and\tthen",
                "Café déjà vu — naïve 你好，世界！ 🎉🎉🎉", "   leading and trailing spaces   ",
                "<|endoftext|>", "a<|endoftext|>b <|pad|><|pad|>c<|endoftext|>",
                "<|endoftext ends early, <|pad| too, |> <|", "", "aaaaaaaaaaaaaaaaaaaa", "ROMEO:\nO, she doth teach",
                "a    b\n        indented  twice", "we'll, you'll"]


def _encode_cases():
    return ENCODE_CASES + [_corpus(60_000)[50_000:54_000]]


def _greedy_longest(tok: ByteBPETokenizer, text: str) -> list[int]:
    """Longest vocabulary token at each position, left to right (WordPiece's way), inside each chunk."""
    index = {v: i for i, v in enumerate(tok.vocab)}
    out = []
    for piece in tok._split_specials(text):
        if piece in tok.special_tokens:
            out.append(tok.special_tokens[piece])
            continue
        for chunk in regex.findall(GPT2_SPLIT, piece):
            b = chunk.encode("utf-8")
            i = 0
            while i < len(b):
                j = len(b)
                while b[i:j] not in index:
                    j -= 1
                out.append(index[b[i:j]])
                i = j
    return out


def _leftmost_first(tok: ByteBPETokenizer, text: str) -> list[int]:
    """Merges the leftmost pair that has a merge, instead of the earliest-learned one."""
    out = []
    for piece in tok._split_specials(text):
        if piece in tok.special_tokens:
            out.append(tok.special_tokens[piece])
            continue
        for chunk in regex.findall(GPT2_SPLIT, piece):
            ids = list(chunk.encode("utf-8"))
            while True:
                i = next((i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) in tok.ranks), None)
                if i is None:
                    break
                ids[i:i + 2] = [256 + tok.ranks[(ids[i], ids[i + 1])]]
            out.extend(ids)
    return out


def _no_special_split(tok: ByteBPETokenizer, text: str) -> list[int]:
    return ByteBPETokenizer(tok.merges).encode(text)


def _no_pretokenize(tok: ByteBPETokenizer, text: str) -> list[int]:
    out = []
    for piece in tok._split_specials(text):
        if piece in tok.special_tokens:
            out.append(tok.special_tokens[piece])
        else:
            out.extend(tok._encode_chunk(piece.encode("utf-8")))
    return out


ENCODE_VARIANTS = {"greedy_longest": _greedy_longest, "leftmost_pair_first": _leftmost_first,
                   "specials_not_split": _no_special_split, "no_pretokenization": _no_pretokenize}

TOKENIZER_MISCONCEPTIONS = {
    "greedy_longest": "each position took the longest token in the vocabulary (WordPiece's greedy rule). "
                      "BPE encodes by replaying the merges in the order they were learned: repeatedly merge the "
                      "pair with the smallest rank (earliest merge) until no pair has a merge.",
    "leftmost_pair_first": "the leftmost pair that has a merge was merged first. Merge the pair with the "
                           "smallest rank (the earliest-learned merge) wherever it is in the chunk, as training did.",
    "specials_not_split": "special tokens were encoded as ordinary text (their bytes). Cut them out before "
                          "pre-tokenising and give each its own id (256 + number of merges + its index).",
    "no_pretokenization": "the merges were applied to the whole text at once, so tokens cross chunk boundaries. "
                          "Pre-tokenise first and encode each chunk on its own, as in training.",
    "decode_per_token": "each token was decoded to text on its own, so a character whose UTF-8 bytes are split "
                        "across tokens came out as '\ufffd'. Join all the bytes first, then decode once.",
}


@register("check_tokenizer", points=3, minutes=30, timeout=30,
          reference=solution_text(_TOK_IMPORTS, PRETOKENIZE_CODE, TRAIN_BPE_CODE, TOKENIZER_CODE),
          misconceptions=TOKENIZER_MISCONCEPTIONS, forbid=TOKENIZER_FORBID,
          hint="encode: split out the specials, pretokenize the rest, and for each chunk start from its UTF-8 bytes and "
               "repeatedly merge the pair with the smallest rank (ranks = {pair: k}) until none has a merge. "
               "decode: join the bytes of all ids, then .decode('utf-8', errors='replace').",
          idea="Training learned merge k only after merges 0..k-1 had been applied, so encoding must apply them in the "
               "same order: the lowest-ranked pair present first. Applying every merge in order, one after the "
               "other, gives the same result (only slower).")
def check_tokenizer(learner):
    if not isinstance(learner, type):
        raise Mismatch(f"pass the class itself (Tokenizer), not {type(learner).__name__}")
    ref = _reference_tokenizer(200, SPECIALS)
    tok = call_learner(learner, [tuple(m) for m in ref.merges], list(SPECIALS))
    for name in ("encode", "decode"):
        if not callable(getattr(tok, name, None)):
            raise Mismatch(f"your Tokenizer has no method {name}()")
    cases = _encode_cases()
    outs = [_ids_list(call_learner(tok.encode, text), "encode", _short(text)) for text in cases]
    for text, got in zip(cases, outs):
        expected = ref.encode(text)
        if got != expected:
            key = next((k for k, f in ENCODE_VARIANTS.items()
                        if any(f(ref, t) != ref.encode(t) for t in cases) and all(o == f(ref, t) for o, t in zip(outs, cases))),
                       None)
            raise Mismatch(f"encode({_short(text, 40)}) differs from the reference", _first_difference(got, expected), key)
    n = len(cases)
    for text in cases:
        back = call_learner(tok.decode, ref.encode(text))
        if not isinstance(back, str):
            raise Mismatch(f"decode should return a str, got {type(back).__name__}", f"case: {_short(text)}")
        if back != text:
            per_token = "".join(ref.decode([i]) for i in ref.encode(text))
            raise Mismatch(f"decode(encode(text)) is not the text for {_short(text, 40)}",
                           f"got {_short(back)}", "decode_per_token" if back == per_token != text else None)
        n += 1
    for label, ids, expected in [("a lone byte 0xE4 (the start of a 3-byte character)", [0xE4], "\ufffd"),
                                 ("the special tokens' ids", [ref.special_tokens[s] for s in SPECIALS], "".join(SPECIALS))]:
        back = call_learner(tok.decode, ids)
        if back != expected:
            raise Mismatch(f"decode({ids}) should be {expected!r}, got {back!r}",
                           f"case: {label}; invalid UTF-8 becomes '\\ufffd' (errors='replace')")
        n += 1
    return n


# ------------------------------------------------------------------ part 5d: encode_iterable
MAX_LAG = 1 << 18  # characters the learner may read ahead of the ids they have yielded (256 K)
STREAM_SPECIALS = ("<|endoftext|>", "<|end|>")
TRICKY = ("He'll say 'tis   so.\n\n  <|endoftext|>café 你好🎉 x<|end|><|endoftext|>  'll's'\t\n 12345"
          " <|endof <|end|  \n")


class _ReadTooMuch(Exception):
    pass


def _per_piece(tok, pieces):
    return [i for p in pieces for i in tok.encode(p)]


def _hold_back(tok, pieces, *, keep_chunks, special_window):
    """A streaming encoder that keeps back the last `keep_chunks` chunks and, if `special_window`,
    the characters where a special token may still be forming."""
    longest = max(map(len, tok.special_tokens), default=0)
    out, buf = [], ""
    for p in pieces:
        buf += p
        safe = max(len(buf) - (max(longest - 1, 0) if special_window else 0), 0)
        done = 0
        if tok._special_split is not None:
            for m in tok._special_split.finditer(buf):
                if m.start() < safe:
                    done = m.end()
        out += tok.encode(buf[:done])
        chunks = regex.findall(GPT2_SPLIT, buf[done:safe])
        settled = chunks[:len(chunks) - keep_chunks] if keep_chunks else chunks
        for c in settled:
            out += tok._encode_chunk(c.encode("utf-8"))
        buf = buf[done + sum(map(len, settled)):]
    return out + tok.encode(buf)


ITERABLE_VARIANTS = {
    "encodes_pieces_separately": _per_piece,
    "keeps_back_one_chunk": functools.partial(_hold_back, keep_chunks=1, special_window=True),
    "special_token_straddles": functools.partial(_hold_back, keep_chunks=2, special_window=False),
}

ENCODE_ITERABLE_MISCONCEPTIONS = {
    "encodes_pieces_separately": "each piece was encoded on its own, so a chunk or a special token cut between "
                                 "two pieces came out as two. Keep the unsettled end of the text in a buffer and "
                                 "encode it once more text has come.",
    "keeps_back_one_chunk": "only the last chunk was kept back, but the one before it can change too: "
                            "\"'l\" is the chunks \"'\", \"l\", while \"'ll\" is one chunk. Keep back the last two chunks.",
    "special_token_straddles": "a special token cut between two pieces was not recognised: up to "
                               "(longest special token - 1) characters at the end of the buffer may be the start of "
                               "one, so treat them as unread until more text comes.",
    "not_lazy": "the whole input was read before the first id came out. Yield ids as soon as they are settled, "
                "so memory holds only a short buffer, whatever the size of the file.",
}


def _stream_cases():
    """(label, pieces) whose ids must equal encode of the joined text."""
    text, cases = TRICKY, []
    for i in range(len(text) + 1):
        cases.append((f"two pieces {_short(text[:i][-12:], 14)} | {_short(text[i:][:12], 14)} (cut at {i})",
                      [text[:i], text[i:]]))
    cases.append(("one character at a time", list(text)))
    rng = random.Random(19)
    for _ in range(150):
        i, j = sorted(rng.sample(range(len(text) + 1), 2))
        cases.append((f"three pieces cut at {i} and {j}", [text[:i], text[i:j], text[j:]]))
    lines = "<|endoftext|>".join(_corpus(60_000)[40_000:55_000].split("\n\n")).splitlines(keepends=True)
    cases.append(("15,000 characters of Shakespeare with <|endoftext|> between speeches, line by line", lines))
    return cases


@register("check_encode_iterable", points=3, minutes=30, timeout=30,
          reference=solution_text(_TOK_IMPORTS, PRETOKENIZE_CODE, TRAIN_BPE_CODE, TOKENIZER_CODE),
          misconceptions=ENCODE_ITERABLE_MISCONCEPTIONS, forbid=TOKENIZER_FORBID,
          hint="Keep a buffer. After each piece: find the last complete special token that starts before the last "
               "(longest special - 1) characters; encode everything up to it; pretokenize the text after it (without "
               "those last characters) and encode all its chunks but the last two; keep the rest in the buffer. "
               "At the end, encode what is left.",
          idea="A chunk is final only when the text after it can no longer change it: a run of letters or spaces may "
               "go on, and \"'l\" becomes \"'ll\" with one more letter. Two chunks of margin is enough for GPT-2's "
               "pattern. A special token may be cut between pieces, so its possible beginning must wait too.")
def check_encode_iterable(learner):
    if not isinstance(learner, type):
        raise Mismatch(f"pass the class itself (Tokenizer), not {type(learner).__name__}")
    ref = _reference_tokenizer(200, STREAM_SPECIALS)
    tok = call_learner(learner, [tuple(m) for m in ref.merges], list(STREAM_SPECIALS))
    if not callable(getattr(tok, "encode_iterable", None)):
        raise Mismatch("your Tokenizer has no method encode_iterable()")
    cases = _stream_cases()
    outs = []
    for label, pieces in cases:
        it = call_learner(tok.encode_iterable, iter(pieces))
        if it is None or not hasattr(it, "__iter__"):
            raise Mismatch(f"encode_iterable should return an iterator of ids (use `yield`), got {type(it).__name__}",
                           f"case: {label}")
        limit = 2 * len("".join(pieces).encode("utf-8")) + 10  # more ids than bytes: something is wrong
        outs.append(_ids_list(call_learner(_take, iter(it), limit), "encode_iterable", label))
    for (label, pieces), got in zip(cases, outs):
        expected = ref.encode("".join(pieces))
        if got != expected:
            key = next((k for k, f in ITERABLE_VARIANTS.items()
                        if all(o == f(ref, p) for o, (_, p) in zip(outs, cases))), None)
            raise Mismatch("the ids differ from encode() of the whole text", f"case: {label}\n   "
                           + _first_difference(got, expected), key)
    _check_lazy(tok)
    return len(cases) + 1


def _check_lazy(tok):
    """Feed lines without end; read ids while counting how far the learner reads ahead."""
    ref = _reference_tokenizer(200, STREAM_SPECIALS)
    lines = _corpus(60_000).splitlines(keepends=True)
    length = {i: len(b) for i, b in enumerate(ref.vocab)}
    length.update({i: len(s.encode("utf-8")) for s, i in ref.special_tokens.items()})
    state = {"read": 0}

    def feed():
        k = 0
        while True:
            if state["read"] > 4 * MAX_LAG:
                raise _ReadTooMuch()
            line = lines[k % len(lines)]
            state["read"] += len(line.encode("utf-8"))
            k += 1
            yield line

    label = "an endless stream of lines (the corpus over and over)"
    got, produced, worst = [], 0, 0  # produced: bytes of text the ids read so far stand for
    try:
        it = call_learner(tok.encode_iterable, feed())
        if it is None or not hasattr(it, "__iter__"):
            raise Mismatch(f"encode_iterable should return an iterator of ids (use `yield`), got {type(it).__name__}",
                           f"case: {label}")
        while produced < 100_000:
            ids = _ids_list(call_learner(_take, iter(it), 500), "encode_iterable", label)
            if not ids:
                raise Mismatch("encode_iterable stopped although the input had not ended", f"case: {label}")
            if any(i not in length for i in ids):
                raise Mismatch(f"encode_iterable yielded {next(i for i in ids if i not in length)}, not a token id",
                               f"case: {label}")
            got += ids
            produced += sum(length[i] for i in ids)
            worst = max(worst, state["read"] - produced)
            if worst > MAX_LAG:
                break
    except LearnerError as err:
        if not isinstance(err.exc, _ReadTooMuch):
            raise
        worst = state["read"]
    if worst > MAX_LAG:
        when = "before its first id" if not got else f"ahead of the ids it had yielded (after {len(got)} ids)"
        raise Mismatch(f"encode_iterable read {worst:,} characters {when}; at most {MAX_LAG:,} are allowed",
                       f"case: {label}", "not_lazy")
    expected = ref.encode("".join(lines) * 3)[:len(got)]  # 180,000 characters: more than was read
    if got != expected:
        raise Mismatch("the ids differ from encode() of the whole text", f"case: {label}\n   "
                       + _first_difference(got, expected))
