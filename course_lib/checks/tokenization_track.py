"""Checks for exercise 09's from-scratch parts: WordPiece (BERT's greedy longest-match-first with
'##' continuations) and the Viterbi segmentation of a unigram language model.

The references are course_lib's own tokenizers (WordPieceTokenizer.wordpiece, which equals Hugging
Face's BertTokenizer on the MiniLM vocabulary, and UnigramTokenizer.viterbi, which equals HF
`tokenizers`' Unigram model): tests/test_checks_tokenization_track.py proves both on these cases.
Each misconception is a small re-creation of the mistake (or, where the mistake gives no
predictable output, a pattern in which cases fail); the check names the one the learner's
outputs match."""
from __future__ import annotations

import functools
import math

from .core import LearnerError, Mismatch, call_learner, register

# ------------------------------------------------------------------ WordPiece
WORDPIECE_CODE = '''def wordpiece(word, vocab, unk="[UNK]", max_chars=100):
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
'''


def _wordpiece_variant(word, vocab, unk="[UNK]", max_chars=100, *, kind=""):
    """The reference algorithm (kind="") or a re-creation of one mistake."""
    if len(word) > max_chars and kind != "ignores_max_chars":
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        ends = range(start + 1, len(word) + 1) if kind == "shortest_first" else range(len(word), start, -1)
        piece = None
        for end in ends:
            cand = word[start:end] if start == 0 or kind == "no_continuation_prefix" else "##" + word[start:end]
            if cand in vocab:
                piece = cand
                break
        if piece is None:
            if kind == "partial_pieces":
                return pieces + [unk]
            if kind == "unk_per_char":
                pieces.append(unk)
                start += 1
                continue
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


def _wordpiece_reference(word, vocab, unk="[UNK]", max_chars=100):
    from course_lib.tokenizers import WordPieceTokenizer
    specials = [t for t in ("[CLS]", "[SEP]", unk) if t not in vocab]  # the class insists on them
    return WordPieceTokenizer([*vocab, *specials], unk_token=unk, max_chars_per_word=max_chars).wordpiece(word)


WORDPIECE_MISCONCEPTIONS = {
    "shortest_first": "you take the SHORTEST piece that is in the vocabulary. WordPiece is greedy longest-match-"
                      "first: start with the rest of the word and drop one character from the end until the "
                      "candidate is in the vocabulary.",
    "no_continuation_prefix": "the pieces after the first are looked up without the '##' prefix. Inside a word, "
                              "look up '##' + word[start:end] (BERT's vocabulary has 'ing' and '##ing' as "
                              "different tokens); only the first piece has no prefix.",
    "partial_pieces": "when no piece fits you keep the pieces found so far and add [UNK]. BERT replaces the "
                      "WHOLE word by a single [UNK] as soon as one position cannot be matched.",
    "unk_per_char": "when no piece fits you emit [UNK] for one character and carry on. BERT replaces the "
                    "WHOLE word by a single [UNK] as soon as one position cannot be matched.",
    "ignores_max_chars": "a word longer than max_chars must become [unk] at once (BERT's limit: 100 "
                         "characters); yours was split into pieces. Check len(word) > max_chars first.",
    "mutates_input": "the vocabulary passed in was changed; only read it.",
}

_SMALL = frozenset(["un", "una", "##aff", "##able", "##ble", "##ff", "##a", "##f", "##b", "##l", "##e", "u",
                    "##n", "play", "p", "##l", "##ay", "##y", "##ing", "##s", "ing", "s", "x", "##yz", "##z",
                    "##y", "a", "[UNK]"])


@functools.lru_cache(maxsize=1)
def _minilm_vocab() -> frozenset | None:
    try:
        from course_lib.tokenizers import minilm_vocab_path
        return frozenset(minilm_vocab_path().read_text(encoding="utf-8").splitlines())
    except Exception:  # noqa: BLE001 - the package is optional: the small vocabularies still grade
        return None


def _wordpiece_cases() -> list[tuple[str, tuple, dict]]:
    cases = [
        ("word 'unaffable', small vocabulary", ("unaffable", _SMALL), {}),
        ("word 'playing', small vocabulary", ("playing", _SMALL), {}),
        ("word 'plays', small vocabulary", ("plays", _SMALL), {}),
        ("word 'xyz', small vocabulary", ("xyz", _SMALL), {}),
        ("word 'unq' ('q' is in no piece), small vocabulary", ("unq", _SMALL), {}),
        ("word 'playq' ('q' is in no piece), small vocabulary", ("playq", _SMALL), {}),
        ("word 'q', small vocabulary", ("q", _SMALL), {}),
        ("empty word", ("", _SMALL), {}),
        ("word 'unaffable' with max_chars=5", ("unaffable", _SMALL), {"max_chars": 5}),
        ("word 'plays' with max_chars=5 (exactly 5 is allowed)", ("plays", _SMALL), {"max_chars": 5}),
        ("word 'unq' with unk='<unk>'", ("unq", _SMALL | {"<unk>"}), {"unk": "<unk>"}),
    ]
    vocab = _minilm_vocab()
    if vocab is not None:
        for w in ("unaffable", "tokenization", "cromulent", "xyzzy", "antidisestablishmentarianism",
                  "snow\u2603man", "##", "a" * 101):
            label = f"word {w!r}" if len(w) < 40 else f"a word of {len(w)} characters"
            cases.append((label + ", the MiniLM (BERT) vocabulary", (w, vocab), {}))
    return cases


def _same_pieces(out, expected) -> bool:
    return isinstance(out, (list, tuple)) and list(out) == list(expected)


@register("check_wordpiece", points=3, minutes=25, reference=WORDPIECE_CODE,
          misconceptions=WORDPIECE_MISCONCEPTIONS, timeout=10.0,
          forbid=("course_lib.tokenizers", "course_lib.unigram", "course_lib.checks", "tokenizers",
                  "transformers", "sentencepiece"),
          hint="Greedy longest-match-first: from the current position, try the longest remaining candidate and "
               "shorten it until it is in the vocabulary; pieces after the first get the '##' prefix.",
          idea="start = 0; while start < len(word): end = len(word); shrink end while the candidate (word[start:end], "
               "with '##' in front when start > 0) is not in vocab. If end reaches start, return [unk] for the whole "
               "word. Otherwise append the piece and set start = end. Before all that: len(word) > max_chars -> [unk].")
def check_wordpiece(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _wordpiece_cases()
    outs = []
    for label, (word, vocab), kw in cases:
        given = set(vocab)
        out = call_learner(learner, word, given, **kw)
        if given != vocab:
            raise Mismatch("your function changed the vocabulary it was given", f"case: {label}", "mutates_input")
        outs.append(out)
    for (label, args, kw), out in zip(cases, outs):
        expected = _wordpiece_reference(*args, **kw)
        if not isinstance(out, (list, tuple)) or not all(isinstance(p, str) for p in out):
            hint = " (did you forget a `return`?)" if out is None else ""
            raise Mismatch(f"expected a list of strings (the pieces), got {type(out).__name__}{hint}",
                           f"case: {label}")
        if list(out) != expected:
            key = None
            for k in WORDPIECE_MISCONCEPTIONS:
                if k == "mutates_input":
                    continue
                wrong = [_wordpiece_variant(*a, **w, kind=k) for _, a, w in cases]
                if (any(v != _wordpiece_reference(*a, **w) for v, (_, a, w) in zip(wrong, cases))
                        and all(_same_pieces(o, v) for o, v in zip(outs, wrong))):
                    key = k
                    break
            shown = list(out) if len(out) <= 12 else list(out[:12]) + ["..."]
            raise Mismatch(f"returned {shown}, expected {expected}", f"case: {label}", key)
    return len(cases)


# ------------------------------------------------------------------ unigram Viterbi
VITERBI_CODE = '''import math


def unigram_viterbi(text, pieces_logprob):
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
'''


def _viterbi_reference(text, pieces_logprob):
    from course_lib.unigram import UnigramTokenizer
    unk = "<unk>"
    while unk in pieces_logprob:
        unk = "<" + unk + ">"
    tok = UnigramTokenizer([(unk, 0.0), *pieces_logprob.items()], add_dummy_prefix=False)
    return [text[s:e] for s, e, _ in tok.viterbi(text)]


def _score(pieces, pieces_logprob) -> float:
    return math.fsum(pieces_logprob[p] for p in pieces)


def _greedy_longest(text, pieces_logprob):
    longest, out, i = max(map(len, pieces_logprob)), [], 0
    while i < len(text):
        j = next(j for j in range(min(len(text), i + longest), i, -1) if text[i:j] in pieces_logprob)
        out.append(text[i:j])
        i = j
    return out


def _least_likely(text, pieces_logprob):  # the same dynamic programme with min instead of max
    n = len(text)
    best, back = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            if text[i:j] in pieces_logprob and best[i] + pieces_logprob[text[i:j]] < best[j]:
                best[j], back[j] = best[i] + pieces_logprob[text[i:j]], i
    out, j = [], n
    while j > 0:
        out.append(text[back[j]:j])
        j = back[j]
    return out[::-1]


def _fewest_pieces(text, pieces_logprob):  # the shortest segmentation; a tie keeps the first offer
    n = len(text)
    best, back = [0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            if text[i:j] in pieces_logprob and best[i] + 1 < best[j]:
                best[j], back[j] = best[i] + 1, i
    out, j = [], n
    while j > 0:
        out.append(text[back[j]:j])
        j = back[j]
    return out[::-1]


VITERBI_MISCONCEPTIONS = {
    "greedy_longest": "you take the longest piece at each position (like WordPiece). A unigram model wants the "
                      "segmentation whose pieces' log-probabilities have the largest SUM, which greedy matching "
                      "misses: keep best[j] for every prefix text[:j] and let every piece text[i:j] offer "
                      "best[i] + log p(piece).",
    "least_likely": "you found the LEAST likely segmentation (min instead of max, or a minus sign on the log-"
                    "probabilities). Keep the larger of best[j] and best[i] + log p(piece).",
    "fewest_pieces": "you minimise the number of pieces. The model scores a segmentation by the sum of its "
                     "pieces' log-probabilities: two likely pieces can beat one rare piece.",
    "product_underflows": "your answer is right on every case except those whose probability is tiny (below "
                          "1e-308): a product of probabilities underflows to 0.0 there and every segmentation "
                          "looks equally likely. Add log-probabilities instead of multiplying probabilities.",
    "not_reversed": "your pieces are in reverse order: walking the back-pointers from the end finds the last "
                    "piece first, so reverse the list before returning it.",
    "backpointer_off_by_one": "your pieces do not join back into the text: the back-pointers (or the slices "
                              "you take with them) are one position off. If start[j] = i means the last piece "
                              "of text[:j] is text[i:j], walk back with piece = text[start[j]:j]; j = start[j].",
    "mutates_input": "the pieces_logprob dictionary passed in was changed; only read it.",
}


def _viterbi_cases() -> list[tuple[str, str, dict]]:
    abc = {"a": -2.3, "b": -2.9, "c": -3.1, "ab": -3.4, "bc": -4.6, "abc": -7.3, "ca": -4.05, "cab": -6.2}
    sub = {"h": -5.1, "e": -4.4, "l": -4.7, "o": -4.9, "w": -5.3, "r": -5.0, "d": -5.2, " ": -3.3,
           "he": -6.1, "hel": -9.8, "hell": -7.7, "ell": -8.9, "lo": -6.4, "llo": -6.9, "hello": -11.8,
           "wor": -9.1, "world": -12.9, "or": -5.9, "ld": -6.6, "rld": -7.2, " w": -6.15, "o w": -10.35}
    tiny = {k: v * 97.3 for k, v in abc.items()}  # log p from -224 to -710: p below 1e-97 per piece
    cases = [
        ("text 'abc' (greedy 'abc' is less likely than 'ab' + 'c')", "abc", abc),
        ("text 'cabcab'", "cabcab", abc),
        ("text 'abcabcab'", "abcabcab", abc),
        ("text 'b'", "b", abc),
        ("text 'hello world'", "hello world", sub),
        ("text 'world hello'", "world hello", sub),
        ("text 'held lower'", "held lower", sub),
        ("empty text", "", abc),
        ("text 'abcab', log p from -200 to -700 per piece (the product of probabilities underflows)",
         "abcab", tiny),
        ("text 'hello world' repeated 40 times (the product of its probabilities underflows)",
         " ".join(["hello world"] * 40), sub),
    ]
    return cases


def _underflows(text, pieces_logprob) -> bool:
    return math.exp(_score(_viterbi_reference(text, pieces_logprob), pieces_logprob)) == 0.0


@register("check_unigram_viterbi", points=3, minutes=30, reference=VITERBI_CODE,
          misconceptions=VITERBI_MISCONCEPTIONS, timeout=10.0,
          forbid=("course_lib.tokenizers", "course_lib.unigram", "course_lib.checks", "tokenizers",
                  "transformers", "sentencepiece"),
          hint="Dynamic programming over the positions of the text: the best segmentation of text[:j] ends with "
               "some piece text[i:j], preceded by the best segmentation of text[:i]. Add log-probabilities.",
          idea="best = [0.0] + [-inf] * n; for j in 1..n, for each i < j with text[i:j] in the vocabulary: if "
               "best[i] + logp(text[i:j]) > best[j], set best[j] and remember start[j] = i. Then walk back from "
               "j = n: the last piece is text[start[j]:j], then j = start[j]; reverse the list at the end.")
def check_unigram_viterbi(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _viterbi_cases()
    outs, errors = [], []
    for label, text, vocab in cases:
        given = dict(vocab)
        try:
            out = call_learner(learner, text, given)
        except LearnerError as err:  # kept: it may only happen where the product underflows
            out, errors = None, errors + [(label, err)]
        if given != vocab:
            raise Mismatch("your function changed the pieces_logprob dictionary it was given", f"case: {label}",
                           "mutates_input")
        outs.append(out)
    wrong = []  # (index, the one-line reason) of each case the learner gets wrong
    for k, ((label, text, vocab), out) in enumerate(zip(cases, outs)):
        err = next((e for lbl, e in errors if lbl == label), None)
        if err is not None:
            wrong.append((k, f"your code raised {err.summary}"))
            continue
        if not isinstance(out, (list, tuple)) or not all(isinstance(p, str) for p in out):
            hint = " (did you forget a `return`?)" if out is None else ""
            raise Mismatch(f"expected a list of strings (the pieces), got {type(out).__name__}{hint}",
                           f"case: {label}")
        expected = _viterbi_reference(text, vocab)
        if list(out) == expected:
            continue
        if "".join(out) != text:
            key = "not_reversed" if list(out[::-1]) == expected else "backpointer_off_by_one"
            raise Mismatch(f"your pieces {_short(out)} do not join back into the text {text[:40]!r}",
                           f"case: {label}", key)
        unknown = next((p for p in out if p not in vocab), None)
        if unknown is not None:
            wrong.append((k, f"your piece {unknown[:40]!r} is not in the vocabulary"))
            continue
        best = _score(expected, vocab)
        if abs(_score(out, vocab) - best) <= 1e-9 * max(1.0, abs(best)):
            continue  # an equally likely segmentation (a tie) is just as right
        wrong.append((k, f"returned {_short(out)} (log p = {_score(out, vocab):.2f}), expected {_short(expected)} "
                         f"(log p = {best:.2f})"))
    if not wrong:
        return len(cases)
    if all(_underflows(cases[i][1], cases[i][2]) for i, _ in wrong):
        key = "product_underflows"
    else:
        key = next((name for name, fn in (("greedy_longest", _greedy_longest), ("least_likely", _least_likely),
                                          ("fewest_pieces", _fewest_pieces))
                    if all(isinstance(o, (list, tuple)) and list(o) == fn(t, v) for o, (_, t, v) in zip(outs, cases))),
                   None)
    k, reason = wrong[0]
    label = cases[k][0]
    err = next((e for lbl, e in errors if lbl == label), None)
    if err is not None and key is None:
        raise err  # their exception, reported with their frames of the traceback
    raise Mismatch(reason, f"case: {label}" + (f"\n{err.report}" if err is not None else ""), key)


def _short(pieces, n: int = 10) -> list:
    pieces = list(pieces)
    return pieces if len(pieces) <= n else pieces[:n] + ["..."]
