"""The Unigram language model (Kudo 2018) with SentencePiece's conventions (Kudo & Richardson
2018): the tokenizer of T5, and byte fallback as in LLaMA's tokenizer. Lesson 09 teaches it;
``course_lib.tokenizers`` has the character, byte-level BPE and WordPiece tokenizers."""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter

SPACE = "\u2581"  # "▁", SentencePiece's visible stand-in for a space
UNK_PENALTY = 10.0  # an unknown character scores 10 below the least likely piece (as SentencePiece does)


def byte_piece(b: int) -> str:
    """The piece that stands for byte `b` under byte fallback: 10 -> '<0x0A>'."""
    return f"<0x{b:02X}>"


class UnigramTokenizer:
    """The Unigram language model (Kudo 2018) with SentencePiece's conventions (Kudo & Richardson 2018).

    The vocabulary is a list of (piece, log-probability). A segmentation x_1..x_M of a text has
    log-probability sum_i log p(x_i); the tokenizer returns the most likely segmentation, found by
    Viterbi (dynamic programming over the text's positions). SentencePiece's conventions:
      * spaces are ordinary characters written as "▁", and "▁" is put in front of the text
        (`add_dummy_prefix`), so "the" at the start looks like " the" elsewhere; nothing else is
        pre-tokenised, and decoding is concatenation with "▁" -> " ": lossless unless a character
        was unknown and there is no byte fallback;
      * a character that no piece covers is unknown: an <unk> piece scoring min(score) - 10, and a
        run of unknown characters becomes one <unk> (SentencePiece and HF `tokenizers` both fuse them);
      * with `byte_fallback=True` an unknown run becomes its UTF-8 bytes, pieces '<0x00>'..'<0xFF>',
        which must be in the vocabulary. The <unk> piece and the byte pieces are never matched
        against the text itself; they only stand in for what nothing else covers.
    """

    def __init__(self, pieces: list[tuple[str, float]], unk_id: int = 0, byte_fallback: bool = False,
                 add_dummy_prefix: bool = True):
        try:
            self.pieces = [(str(p), float(s)) for p, s in pieces]
        except (TypeError, ValueError):
            raise ValueError("each vocabulary entry must be a (piece, log-probability) pair, "
                             "e.g. [('<unk>', 0.0), ('▁the', -4.3)].") from None
        if not self.pieces:
            raise ValueError("the vocabulary is empty; give at least the unknown piece, e.g. [('<unk>', 0.0)].")
        if not 0 <= unk_id < len(self.pieces):
            raise ValueError(f"unk_id={unk_id} is not an index of the {len(self.pieces)} pieces; "
                             "give the position of '<unk>' in the list.")
        self.ids = {p: i for i, (p, _) in enumerate(self.pieces)}
        if len(self.ids) != len(self.pieces):
            dup = next(p for p, n in Counter(p for p, _ in self.pieces).items() if n > 1)
            raise ValueError(f"the piece {dup!r} occurs twice; each piece must appear once.")
        bad = next(((p, s) for p, s in self.pieces if not p or not math.isfinite(s)), None)
        if bad:
            raise ValueError(f"bad vocabulary entry {bad}: a piece must be a non-empty string with a finite score.")
        self.byte_ids = {b: self.ids.get(byte_piece(b)) for b in range(256)}
        if byte_fallback and None in self.byte_ids.values():
            raise ValueError("byte_fallback=True needs the 256 pieces '<0x00>'..'<0xFF>' in the vocabulary; "
                             "append them (score 0.0) or use byte_fallback=False.")
        self.unk_id, self.byte_fallback, self.add_dummy_prefix = unk_id, byte_fallback, add_dummy_prefix
        special = {unk_id} | {i for i in self.byte_ids.values() if i is not None}
        self.normal = {p: (i, s) for i, (p, s) in enumerate(self.pieces) if i not in special}  # matchable
        self.max_len = max(map(len, self.normal), default=1)
        self.unk_score = min((s for _, s in self.normal.values()), default=0.0) - UNK_PENALTY

    @classmethod
    def from_hf(cls, tokenizer, add_dummy_prefix: bool = True) -> "UnigramTokenizer":
        """Read the pieces and scores of a Hugging Face `tokenizers.Tokenizer` with a Unigram model."""
        model = json.loads(tokenizer.to_str())["model"]
        if model.get("type") != "Unigram":
            raise ValueError(f"this tokenizer's model is {model.get('type')!r}, not 'Unigram'.")
        if model.get("unk_id") is None:
            raise ValueError("this Unigram model has no unknown piece; train it with unk_token='<unk>' "
                             "(and '<unk>' among the special tokens).")
        return cls([tuple(v) for v in model["vocab"]], model["unk_id"], model.get("byte_fallback", False),
                   add_dummy_prefix)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def normalize(self, text: str) -> str:
        """SentencePiece's view of the text: spaces as '▁', plus one '▁' in front (none for "")."""
        return (SPACE if self.add_dummy_prefix and text else "") + text.replace(" ", SPACE)

    def lattice(self, text: str) -> list[tuple[int, int, str, float]]:
        """Every piece that occurs in `text`, as (start, end, piece, log-prob): the graph Viterbi searches."""
        return [(i, j, text[i:j], self.normal[text[i:j]][1]) for i in range(len(text))
                for j in range(i + 1, min(len(text), i + self.max_len) + 1) if text[i:j] in self.normal]

    def viterbi(self, text: str) -> list[tuple[int, int, int]]:
        """The most likely segmentation of `text` (already normalised), as (start, end, id) spans.

        best[j] is the log-prob of the best segmentation of text[:j]; every piece text[i:j] offers
        best[i] + log p(piece) to best[j]. With N characters and pieces of at most L characters that
        is O(N·L) dictionary look-ups and O(N) memory. Ties keep the first offer, which comes from
        the smallest i (the longest last piece), as SentencePiece and HF `tokenizers` do."""
        n = len(text)
        best = [0.0] + [float("-inf")] * n  # (N + 1,) best log-prob of text[:j]
        back = [(0, -1)] * (n + 1)  # (N + 1,) back[j] = (i, id): the last piece of that path is text[i:j]
        for i in range(n):  # best[i] is final once every piece ending at i has made its offer
            for j in range(i + 1, min(n, i + self.max_len) + 1):
                hit = self.normal.get(text[i:j])
                if hit is not None and best[i] + hit[1] > best[j]:
                    best[j], back[j] = best[i] + hit[1], (i, hit[0])
            if text[i] not in self.normal and best[i] + self.unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + self.unk_score, (i, self.unk_id)  # unknown character
        spans, j = [], n
        while j > 0:  # walk back from the end, fusing runs of unknown characters into one span
            i, piece_id = back[j]
            if piece_id == self.unk_id and spans and spans[-1][2] == self.unk_id:
                spans[-1] = (i, spans[-1][1], piece_id)
            else:
                spans.append((i, j, piece_id))
            j = i
        return spans[::-1]

    def score(self, text: str) -> float:
        """log p of the best segmentation of the normalised `text` (the value Viterbi maximises)."""
        return sum(self.unk_score * (e - s) if i == self.unk_id else self.pieces[i][1]
                   for s, e, i in self.viterbi(text))

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        norm = self.normalize(text)
        for start, end, piece_id in self.viterbi(norm):
            if piece_id == self.unk_id and self.byte_fallback:
                ids.extend(self.byte_ids[b] for b in norm[start:end].encode("utf-8"))  # <0xNN> per byte
            else:
                ids.append(piece_id)
        return ids

    def tokenize(self, text: str) -> list[str]:
        return [self.pieces[i][0] for i in self.encode(text)]

    def decode(self, ids) -> str:
        """Concatenate the pieces, turn byte pieces back into UTF-8 and '▁' into spaces. Lossless
        unless the text had an unknown character (without byte fallback it is gone: '<unk>')."""
        byte_of = {i: b for b, i in self.byte_ids.items() if i is not None}
        out, pending = [], bytearray()  # pending: a run of byte pieces, decoded together
        for i in map(int, ids):
            if i in byte_of:
                pending.append(byte_of[i])
                continue
            if pending:
                out.append(pending.decode("utf-8", errors="replace"))
                pending = bytearray()
            out.append(self.pieces[i][0])
        out.append(pending.decode("utf-8", errors="replace"))
        text = "".join(out).replace(SPACE, " ")
        return text[1:] if self.add_dummy_prefix and text.startswith(" ") else text

    def fingerprint(self) -> str:
        return "unigram:" + hashlib.sha1(json.dumps([self.pieces, self.unk_id, self.byte_fallback,
                                                     self.add_dummy_prefix]).encode()).hexdigest()
