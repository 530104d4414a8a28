"""Checks for parts 5 and 6 of the from-scratch track (the capstone): a byte-level BPE tokenizer
the learner trains and runs, and decoding with their own sampling and KV-cached generation.

* `check_pretokenize(pretokenize)`: GPT-2's regex split, equal to `regex.findall(GPT2_SPLIT, text)`.
* `check_train_bpe(train_bpe)`: merges equal to `ByteBPETokenizer.train`'s (course_lib's trainer,
  proven equal to a full recount and close to Hugging Face `tokenizers` in tests/test_tokenizers.py),
  ties included; the tie rule is stated in the exercise.
* `check_tokenizer(Tokenizer)`: encode equal to `ByteBPETokenizer.encode`, decode its inverse.
* `check_encode_iterable(Tokenizer)`: streaming ids equal to `encode` of the whole text at every
  split point of a tricky string, and lazy: the check feeds lines from a generator and reads ids
  as they come; the learner may not fall more than `MAX_LAG` characters behind.
* `check_sample_next(sample_next)`: greedy exactly; temperature, top-k, top-p judged by the
  frequencies of thousands of draws.
* `check_generate_cached(generate)`: a small reference model that follows the track's protocol
  (`model(ids, caches=None)`, `model.blocks`, `model.window`; each cache one of the learner's
  `KVCache`s: it calls `cache.update(k, v)` and reads `cache.pos`), so it depends on no other
  part's code. (`check_generate` is lesson 11's check, with course_lib's GPT.)

The learner's code is kept here as text (`*_CODE`); each check prints the pieces it needs.
"""
from __future__ import annotations

import functools
import inspect
import math
import operator
import random
from collections import Counter
from itertools import islice

import regex
import torch
import torch.nn as nn

from course_lib.data import shakespeare_text
from course_lib.generation import top_k_filter, top_p_filter
from course_lib.tokenizers import GPT2_SPLIT, ByteBPETokenizer, merge_pair
from .core import LearnerError, Mismatch, NotAttempted, call_learner, register
from .track_tensors import KV_CACHE_CODE  # part 2's cache: the printed generate runs on its own

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

SAMPLE_NEXT_CODE = '''
def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,): greedy
    logits = logits / temperature  # (B, V): the temperature divides the logits, before softmax
    if top_k is not None:
        kth_largest = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, -math.inf)  # keep the k largest
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V): the mass strictly before each token
        drop_sorted = before >= top_p  # keeps the token that crosses top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # (B, V): back to vocabulary order
        logits = logits.masked_fill(drop, -math.inf)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)
'''

GENERATE_CODE = '''
@torch.no_grad()
def generate(model, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
             use_cache=True):
    caches = [KVCache(model.window) for _ in model.blocks] if use_cache else None
    logits = model(ids, caches=caches)[:, -1]  # (B, V): the prompt once; its last position predicts
    for step in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
        ids = torch.cat([ids, next_id[:, None]], dim=1)  # (B, T + step + 1)
        if step == max_new_tokens - 1:
            break  # no need to run the model for a token nobody asks for
        if use_cache:
            logits = model(ids[:, -1:], caches=caches)[:, -1]  # (B, V): only the new token; the caches hold the rest
        else:
            logits = model(ids)[:, -1]  # (B, V): the whole sequence again
    return ids  # (B, T + max_new_tokens)
'''


def solution_text(imports: str, *pieces: str) -> str:
    return imports + "".join("\n" + p for p in pieces)


_TOK_IMPORTS = "import math\nfrom collections import Counter\n\nimport regex\n"




# ------------------------------------------------------------------ shared helpers
def _one_thread(body):
    """Run a check body on one thread: its tensors are tiny, and on a busy machine more threads
    only wait for each other (measured: 12 s instead of 0.5 s for check_generate_cached)."""
    @functools.wraps(body)
    def run(learner):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return body(learner)
        finally:
            torch.set_num_threads(n)
    return run


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


# ------------------------------------------------------------------ part 6a: sample_next
N_DRAWS = 4000  # per row kind; each case has two kinds of rows


def _ref_probs(row, temperature=1.0, top_k=None, top_p=None, order=("k", "p")):
    z = row.double() / temperature
    for f in order:
        if f == "k" and top_k is not None:
            z = top_k_filter(z, top_k)
        if f == "p" and top_p is not None:
            z = top_p_filter(z, top_p)
    return z.softmax(-1)


def _variant_probs(kind, row, temperature=1.0, top_k=None, top_p=None):
    if kind == "temperature_after_softmax":
        return _ref_probs(row, 1.0, top_k, top_p)
    if kind == "top_k_keeps_k_plus_1":
        return _ref_probs(row, temperature, None if top_k is None else top_k + 1, top_p)
    if kind == "top_p_drops_crossing_token":
        z = row.double() / temperature
        if top_k is not None:
            z = top_k_filter(z, top_k)
        if top_p is not None:
            probs = z.softmax(-1)
            sp, order = probs.sort(descending=True)
            keep_sorted = sp.cumsum(-1) <= top_p
            keep_sorted[0] = True
            keep = keep_sorted.scatter(-1, order, keep_sorted)
            z = z.masked_fill(~keep, -math.inf)
        return z.softmax(-1)
    raise KeyError(kind)


_ROW = torch.tensor([2.0, 1.4, 1.0, 0.3, -0.5, -1.2, -2.0])
_SAMPLE_CASES = [  # (label, kwargs); each case draws rows of _ROW and of a permutation of it
    ("temperature 1", dict(temperature=1.0)),
    ("temperature 0.5", dict(temperature=0.5)),
    ("temperature 2", dict(temperature=2.0)),
    ("top_k=3", dict(temperature=1.0, top_k=3)),
    ("top_k=2, temperature 0.7", dict(temperature=0.7, top_k=2)),
    ("top_p=0.7 (the third token crosses it)", dict(temperature=1.0, top_p=0.7)),
    ("top_p=0.5", dict(temperature=1.0, top_p=0.5)),
    ("top_k=4 and top_p=0.8", dict(temperature=1.0, top_k=4, top_p=0.8)),
]
SAMPLE_VARIANTS = ("temperature_after_softmax", "top_k_keeps_k_plus_1", "top_p_drops_crossing_token")

SAMPLE_NEXT_MISCONCEPTIONS = {
    "temperature_after_softmax": "the temperature had no effect: dividing the probabilities by it is undone when "
                                 "they are renormalised. Divide the *logits* by the temperature, then softmax.",
    "top_k_keeps_k_plus_1": "top-k kept k + 1 tokens (an index off by one: the k-th largest logit is "
                            "torch.topk(logits, k).values[:, -1], i.e. sorted position k - 1).",
    "top_p_drops_crossing_token": "the token whose probability crosses top_p was dropped. The nucleus is the "
                                  "smallest set whose total reaches top_p, so it includes that token (keep a token "
                                  "when the mass *before* it is < top_p).",
    "ignores_generator": "two calls with generators seeded alike gave different tokens: pass `generator` to "
                         "torch.multinomial (generate relies on it to give the same sample with and without the cache).",
    "greedy_not_argmax": "temperature=0 should be greedy: the argmax of each row, with no sampling.",
}


def _empirical(ids: torch.Tensor, V: int) -> torch.Tensor:
    return torch.bincount(ids.long(), minlength=V).double() / ids.numel()  # (N,) -> (V,)


def _close(emp, probs, n):
    tol = 5 * (probs * (1 - probs) / n).sqrt() + 2e-3  # about 5 standard errors
    return bool((((emp - probs).abs() <= tol) & ~((probs == 0) & (emp > 0))).all())


@register("check_sample_next", points=3, minutes=25, timeout=30, reference=solution_text("import math\n\nimport torch\n", SAMPLE_NEXT_CODE),
          misconceptions=SAMPLE_NEXT_MISCONCEPTIONS, forbid=("course_lib", "transformers"),
          hint="temperature 0: argmax. Otherwise divide the logits by the temperature; top-k: set logits below the k-th "
               "largest to -inf; top-p: sort, softmax, keep tokens whose mass *before* them is < p; softmax; "
               "torch.multinomial(probs, 1, generator=generator).squeeze(-1).",
          idea="Every filter works on logits by setting the tokens it removes to -inf, so that one softmax at the end "
               "renormalises whatever is left. Keep the batch dimension: every row is filtered on its own.")
@_one_thread
def check_sample_next(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    V = _ROW.numel()
    perm = torch.tensor([3, 6, 0, 5, 1, 4, 2])
    rows = torch.stack([_ROW, _ROW[perm]])  # (2, V): two different rows
    # greedy
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=g)  # (5, 11)
    before = logits.clone()
    for kw in (dict(temperature=0.0), dict(temperature=0.0, top_k=3, top_p=0.5)):
        out = call_learner(learner, logits, **kw)
        _check_ids(out, 5, 11, f"greedy, {kw}")
        if not torch.equal(logits, before):
            raise Mismatch("your function changed the logits it was given", f"case: {kw}")
        if not torch.equal(out.long(), logits.argmax(-1)):
            raise Mismatch(f"with temperature=0 expected the argmax {logits.argmax(-1).tolist()}, got {out.tolist()}",
                           f"case: {kw}", "greedy_not_argmax")
    n = 2
    # the generator
    big = rows.repeat_interleave(N_DRAWS // 4, dim=0)  # (N/2, V)
    a = call_learner(learner, big.clone(), temperature=1.0, generator=torch.Generator().manual_seed(7))
    b = call_learner(learner, big.clone(), temperature=1.0, generator=torch.Generator().manual_seed(7))
    _check_ids(a, big.size(0), V, "temperature 1, generator seeded 7")
    _check_ids(b, big.size(0), V, "temperature 1, generator seeded 7")
    if not torch.equal(a, b):
        raise Mismatch("two calls with generators seeded alike gave different tokens",
                       "case: temperature 1, generator seeded 7, twice", "ignores_generator")
    n += 1
    # distributions: N_DRAWS rows of each kind
    batch = rows.repeat_interleave(N_DRAWS, dim=0)  # (2N, V): first N rows of one kind, then the other
    emps = []
    for k, (label, kw) in enumerate(_SAMPLE_CASES):
        out = call_learner(learner, batch.clone(), generator=torch.Generator().manual_seed(100 + k), **kw)
        _check_ids(out, batch.size(0), V, label)
        emps.append([_empirical(out[:N_DRAWS], V), _empirical(out[N_DRAWS:], V)])
    for (label, kw), emp in zip(_SAMPLE_CASES, emps):
        orders = [("k", "p"), ("p", "k")]  # top-k then top-p (Hugging Face) or the other way: both accepted
        ok = any(all(_close(e, _ref_probs(r, order=o, **kw), N_DRAWS) for e, r in zip(emp, rows)) for o in orders)
        if not ok:
            key = None
            for name in SAMPLE_VARIANTS:
                probs = [[_variant_probs(name, r, **kw) for r in rows] for _, kw in _SAMPLE_CASES]
                differs = any(not torch.allclose(p, _ref_probs(r, **kw), atol=1e-3)
                              for ps, (_, kw) in zip(probs, _SAMPLE_CASES) for p, r in zip(ps, rows))
                if differs and all(_close(e, p, N_DRAWS) for es, ps in zip(emps, probs) for e, p in zip(es, ps)):
                    key = name
                    break
            expected = _ref_probs(rows[0], **kw)
            raise Mismatch("the sampled frequencies differ from the expected distribution",
                           f"case: {label}, logits {[round(x, 2) for x in rows[0].tolist()]}\n"
                           f"   expected {[round(x, 3) for x in expected.tolist()]}\n"
                           f"   sampled  {[round(x, 3) for x in emp[0].tolist()]}", key)
        n += 1
    return n


def _check_ids(out, B, V, label):
    if not isinstance(out, torch.Tensor):
        hint = " (did you forget a `return`?)" if out is None else ""
        raise Mismatch(f"expected a tensor of token ids, got {type(out).__name__}{hint}", f"case: {label}")
    if out.shape != (B,):
        extra = " (squeeze the last dimension of torch.multinomial's (B, 1))" if out.shape == (B, 1) else ""
        raise Mismatch(f"expected shape ({B},) for logits ({B}, {V}), got {tuple(out.shape)}{extra}", f"case: {label}")
    if out.dtype != torch.long:
        raise Mismatch(f"expected dtype torch.int64 (long) token ids, got {out.dtype}", f"case: {label}")
    if out.numel() and (out.min() < 0 or out.max() >= V):
        raise Mismatch(f"token ids outside 0..{V - 1}", f"case: {label}")


# ------------------------------------------------------------------ part 6b: generate with the learner's KVCache
class _BrokenCache(Exception):
    pass


class ReferenceModel(nn.Module):
    """A small decoder that follows the track's protocol: forward(ids, caches=None) -> logits (B, T, V);
    caches: one cache per block, with update(k, v) -> (k_all, v_all) and pos (tokens seen so far).
    Learned absolute positions (large, so that a wrong position changes the tokens), float64 (so
    cached and full computations agree to ~1e-15 and greedy choices never flip), sliding window if
    `window` is set. It records every call: the input length, whether caches came, the position
    it started at, and the longest stored context a cache handed back."""

    def __init__(self, vocab_size=29, d_model=32, n_layers=2, n_heads=2, max_positions=128, window=None, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def p(*shape, scale):
            return nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64) * scale)

        self.window, self.n_heads, self.vocab_size = window, n_heads, vocab_size
        self.tok_emb = p(vocab_size, d_model, scale=1.0)
        self.pos_emb = p(max_positions, d_model, scale=1.0)
        self.blocks = nn.ModuleList()
        for _ in range(n_layers):
            block = nn.Module()
            block.qkv = p(d_model, 3 * d_model, scale=3.0 / math.sqrt(d_model))  # sharp attention
            block.out = p(d_model, d_model, scale=1.0 / math.sqrt(d_model))
            block.up = p(d_model, 2 * d_model, scale=1.0 / math.sqrt(d_model))
            block.down = p(2 * d_model, d_model, scale=1.0 / math.sqrt(2 * d_model))
            self.blocks.append(block)
        self.head = p(d_model, vocab_size, scale=2.0 / math.sqrt(d_model))
        self.calls: list[dict] = []

    @staticmethod
    def _norm(x):
        return x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()

    @torch.no_grad()
    def forward(self, ids, caches=None):
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise TypeError(f"the model takes ids of shape (B, T), got {getattr(ids, 'shape', type(ids).__name__)}")
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"caches has {len(caches)} entries, the model has {len(self.blocks)} blocks")
        B, T = ids.shape
        start = int(caches[0].pos) if caches is not None else 0
        call = {"T": T, "cached": caches is not None, "start": start, "stored": 0}
        self.calls.append(call)
        H = self.n_heads
        x = self.tok_emb[ids] + self.pos_emb[start:start + T]  # (B, T, C)
        q_pos = torch.arange(start, start + T)  # (T,)
        for i, block in enumerate(self.blocks):
            h = self._norm(x)
            q, k, v = (h @ block.qkv).split(x.size(-1), dim=-1)  # (B, T, C) each
            q, k, v = (t.view(B, T, H, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
            if caches is not None:
                before = int(caches[i].pos)
                out = caches[i].update(k, v)
                if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
                    raise _BrokenCache(f"update(k, v) returned {type(out).__name__}, not a (keys, values) pair")
                k, v = out
                if k.shape[:2] != (B, H) or k.shape != v.shape or k.size(2) < T:
                    raise _BrokenCache(f"update(k, v) with k of shape {(B, H, T, q.size(-1))} returned keys of shape "
                                       f"{tuple(k.shape)} (values {tuple(v.shape)})")
                if int(caches[i].pos) != before + T:
                    raise _BrokenCache(f"pos went from {before} to {caches[i].pos} after update() with {T} new tokens")
                call["stored"] = max(call["stored"], k.size(2) - T)
            L = k.size(2)
            k_pos = torch.arange(start + T - L, start + T)  # (L,): absolute positions of the keys
            visible = k_pos[None, :] <= q_pos[:, None]  # (T, L)
            if self.window is not None:
                visible = visible & (k_pos[None, :] > q_pos[:, None] - self.window)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, L)
            att = att.masked_fill(~visible, -math.inf).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, -1)  # (B, T, C)
            x = x + y @ block.out
            x = x + torch.relu(self._norm(x) @ block.up) @ block.down
        return self._norm(x) @ self.head  # (B, T, V)


def _greedy_reference(model, ids, n):
    for _ in range(n):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


GENERATE_MISCONCEPTIONS = {
    "kv_cache_broken": "your KVCache does not do what generate needs (see the case); run check_kv_cache(KVCache) "
                       "and fix it first.",
    "ignores_cache": "with use_cache=True the model still saw the whole sequence every step (the tokens are right but "
                     "nothing was saved). Run the prompt once through the caches, then feed only the newest token.",
    "refeeds_whole_sequence": "the whole sequence went through the caches every step, so they hold every earlier "
                              "token several times. After the prompt, feed only the newest token: ids[:, -1:].",
    "caches_recreated": "new, empty caches were made during generation, so the model saw a token at position 0 "
                        "with nothing before it. Make the caches once, before the prompt, and reuse them.",
    "window_not_passed": "the caches were made without the model's window, so they kept every position. Make "
                         "them with KVCache(model.window) (a rolling cache keeps only the last `window`).",
    "off_by_one": "one token too few: return the prompt followed by exactly max_new_tokens new tokens.",
    "drops_prompt": "return the prompt followed by the new tokens, shape (B, T + max_new_tokens).",
}


def _learner_kv_cache(learner):
    glb = getattr(inspect.unwrap(learner), "__globals__", {})  # (through @torch.no_grad())
    cls = glb.get("KVCache")
    return cls if isinstance(cls, type) else None


def _self_test_cache(cls):
    """The learner's KVCache inside the reference model: chunked prefill and single steps must give the
    logits of the full computation (with and without a window)."""
    g = torch.Generator().manual_seed(3)
    for window in (None, 3):
        model = ReferenceModel(window=window)
        ids = torch.randint(0, model.vocab_size, (2, 9), generator=g)  # (B, T)
        full = model(ids)
        caches = [call_learner(cls, window) for _ in model.blocks]
        parts = [ids[:, :4], ids[:, 4:6], ids[:, 6:7], ids[:, 7:8], ids[:, 8:9]]
        got = []
        try:
            for part in parts:
                got.append(call_learner(model, part, caches=caches))
        except LearnerError as err:
            if isinstance(err.exc, _BrokenCache):
                raise Mismatch(f"KVCache: {err.exc}", f"case: the reference model with window={window}",
                               "kv_cache_broken") from None
            raise
        got = torch.cat(got, dim=1)
        if not torch.allclose(got, full, atol=1e-9):
            raise Mismatch("with your KVCache the model's logits differ from the full computation",
                           f"case: a 9-token prompt fed as 4 + 2 + 1 + 1 + 1 tokens, window={window}", "kv_cache_broken")


@register("check_generate_cached", points=4, minutes=30, timeout=30,
          reference=solution_text("import math\n\nimport torch\n", KV_CACHE_CODE, SAMPLE_NEXT_CODE, GENERATE_CODE),
          misconceptions=GENERATE_MISCONCEPTIONS, forbid=("course_lib", "transformers"),
          hint="caches = [KVCache(model.window) for _ in model.blocks] if use_cache else None; logits = model(ids, "
               "caches=caches)[:, -1]; then max_new_tokens times: next_id = sample_next(logits, ...); append it; "
               "logits = model(ids[:, -1:], caches=caches)[:, -1] (or model(ids)[:, -1] without the cache).",
          idea="The caches remember every earlier token's keys and values, and their pos tells the model where the "
               "next token sits; so after the prompt the model needs only the newest token. Without the cache the "
               "model must see the whole sequence each step. Both give the same tokens.")
@_one_thread
def check_generate_cached(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cls = _learner_kv_cache(learner)
    if cls is not None:
        try:
            _self_test_cache(cls)
        except NotAttempted:
            raise Mismatch("your KVCache is not written yet: generate uses it (write it and pass check_kv_cache first)",
                           "", "kv_cache_broken") from None
        except LearnerError as err:
            raise Mismatch(f"your KVCache raised {err.summary}", err.report, "kv_cache_broken") from None
    g = torch.Generator().manual_seed(5)
    n = 0
    for window, B, T, steps in [(None, 2, 5, 9), (None, 1, 3, 1), (4, 2, 6, 10)]:
        model = ReferenceModel(window=window)
        ids = torch.randint(0, model.vocab_size, (B, T), generator=g)  # (B, T)
        expected = _greedy_reference(model, ids, steps)
        for use_cache in (False, True):
            label = f"greedy (temperature=0), prompt ({B}, {T}), max_new_tokens={steps}, window={window}, use_cache={use_cache}"
            model.calls.clear()
            out = _run_generate(learner, model, ids, steps, label, temperature=0.0, use_cache=use_cache)
            _compare_generated(out, expected, model, steps, use_cache, label)
            n += 1
    # sampling: cached == uncached with the same seed, and every token inside the top-k set
    model = ReferenceModel(seed=1)
    ids = torch.randint(0, model.vocab_size, (3, 4), generator=g)
    for kw in (dict(temperature=1.0, top_k=5), dict(temperature=0.8, top_p=0.6)):
        runs = []
        for use_cache in (False, True):
            label = f"sampling {kw}, generator seeded 11, use_cache={use_cache}"
            model.calls.clear()
            out = _run_generate(learner, model, ids, 12, label, generator=torch.Generator().manual_seed(11),
                                use_cache=use_cache, **kw)
            _check_shape(out, ids, 12, label)
            runs.append(out)
        if not torch.equal(runs[0], runs[1]):
            raise Mismatch("with the same generator seed, generation with the cache gave other tokens than without",
                           f"case: sampling {kw}\n   without {runs[0][0].tolist()}\n   with    {runs[1][0].tolist()}")
        logits = model(runs[0][:, :-1])[:, ids.size(1) - 1:]  # (B, 12, V): what predicted each new token
        new = runs[0][:, ids.size(1):]  # (B, 12)
        if "top_k" in kw:
            allowed = logits >= logits.topk(kw["top_k"], dim=-1).values[..., -1:]
        else:
            allowed = torch.isfinite(top_p_filter(logits / kw["temperature"], kw["top_p"]))
        if not allowed.gather(-1, new[..., None]).all():
            raise Mismatch(f"a sampled token lies outside the {'top-k' if 'top_k' in kw else 'top-p'} set",
                           f"case: sampling {kw}: pass temperature, top_k, top_p and generator on to sample_next")
        if len(set(map(tuple, new.tolist()))) == 1 and new.size(0) > 1 and kw["temperature"] > 0.5:
            raise Mismatch("every row sampled the same tokens", f"case: sampling {kw}")
        n += 1
    return n


def _run_generate(learner, model, ids, steps, label, **kw):
    try:
        return call_learner(learner, model, ids.clone(), steps, **kw)
    except LearnerError as err:
        if isinstance(err.exc, _BrokenCache):
            raise Mismatch(f"KVCache: {err.exc}", f"case: {label}", "kv_cache_broken") from None
        raise


def _check_shape(out, ids, steps, label):
    B, T = ids.shape
    if not isinstance(out, torch.Tensor):
        hint = " (did you forget a `return`?)" if out is None else ""
        raise Mismatch(f"expected a tensor of token ids, got {type(out).__name__}{hint}", f"case: {label}")
    if out.shape == (B, steps):
        raise Mismatch(f"returned shape {tuple(out.shape)}, expected {(B, T + steps)}", f"case: {label}", "drops_prompt")
    if out.shape == (B, T + steps - 1):
        raise Mismatch(f"returned shape {tuple(out.shape)}, expected {(B, T + steps)}", f"case: {label}", "off_by_one")
    if out.shape != (B, T + steps):
        raise Mismatch(f"returned shape {tuple(out.shape)}, expected {(B, T + steps)}", f"case: {label}")
    if out.dtype != ids.dtype:
        raise Mismatch(f"expected token ids of dtype {ids.dtype} (the prompt's), got {out.dtype}", f"case: {label}")
    if not torch.equal(out[:, :T], ids):
        raise Mismatch("the output does not start with the prompt", f"case: {label}")


def _compare_generated(out, expected, model, steps, use_cache, label):
    _check_shape(out, expected[:, :expected.size(1) - steps], steps, label)
    calls = model.calls
    key = None
    if use_cache:
        if not calls or not calls[0]["cached"]:
            key = "ignores_cache"
        elif any(c["cached"] and c["start"] == 0 for c in calls[1:]):
            key = "caches_recreated"
        elif any(c["T"] > 1 for c in calls[1:]):
            key = "refeeds_whole_sequence" if all(c["cached"] for c in calls) else "ignores_cache"
        elif model.window is not None and any(c["stored"] > model.window for c in calls):
            key = "window_not_passed"
    if not torch.equal(out, expected):
        raise Mismatch("different tokens than greedy decoding", f"case: {label}\n   expected {expected[0].tolist()}\n"
                                                                 f"   got      {out[0].tolist()}", key)
    if key is not None:
        lengths = [c["T"] for c in calls][:6]
        raise Mismatch("the tokens are right, but the cache was not used as it should be",
                       f"case: {label}; input lengths of the model's calls: {lengths}...", key)
