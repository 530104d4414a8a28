"""Exercise 09's from-scratch checks (WordPiece, unigram Viterbi), both ways: they accept the printed
solution and correct code written differently, and reject the stub, delegation, bad output and each
named misconception, written as a learner would (a text edit of the printed solution, or a small
function written here). The references are checked against Hugging Face: BertTokenizer's WordPiece on
the MiniLM vocabulary, and `tokenizers`' Unigram model (plus brute force on the short texts)."""
import functools
import itertools
import math
import time

import pytest

from course_lib.checks import REGISTRY
from course_lib.checks import tokenization_track as tk
from course_lib.checks.tokenization_track import check_unigram_viterbi, check_wordpiece

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted

pytestmark = pytest.mark.usefixtures("quiet_checks")

OBJECT = {"check_wordpiece": "wordpiece", "check_unigram_viterbi": "unigram_viterbi"}


def learner(check_name, *edits, extra=""):
    """The printed solution of `check_name` with each (old, new) text edit applied (each must occur
    exactly once), plus `extra` code, run as a learner's notebook: returns the function."""
    text = REGISTRY[check_name].reference
    for old, new in edits:
        assert text.count(old) == 1, (check_name, old, text.count(old))
        text = text.replace(old, new)
    ns = {"__name__": f"learner_{check_name}"}
    exec(compile(text + extra, f"<learner {check_name}>", "exec"), ns)  # noqa: S102 - our own text
    return ns[OBJECT[check_name]]


def passes(result):
    assert result.passed and result.points == result.max_points, (result.message, result.detail)


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_the_printed_solution_passes_quickly(name):
    fn = learner(name)
    REGISTRY[name].func(fn)  # warm-up: the MiniLM vocabulary is read once
    start = time.perf_counter()
    passes(REGISTRY[name].func(fn))
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_a_stub_is_not_attempted(name):
    assert_not_attempted(REGISTRY[name].func(stub))


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_every_check_has_hint_idea_forbid_and_minutes(name):
    spec = REGISTRY[name]
    assert spec.hint and spec.idea and spec.forbid and spec.minutes > 0
    for lib in ("course_lib.tokenizers", "course_lib.unigram", "tokenizers", "transformers", "sentencepiece"):
        assert lib in spec.forbid.names


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_bad_output_and_errors_are_verdicts_not_exceptions(name):
    def returns_none(*a, **k):
        return None

    def returns_a_string(*a, **k):
        return "pieces"

    def raises(*a, **k):
        raise ValueError("boom")

    for fn, fragment in ((returns_none, "forget a `return`"), (returns_a_string, "list of strings"),
                         (raises, "ValueError: boom")):
        r = REGISTRY[name].func(fn)
        assert not r.passed and r.points == 0 and fragment in r.message, r.message
    r = REGISTRY[name].func(42)
    assert not r.passed and "expected a function" in r.message


# ------------------------------------------------------------------ WordPiece
def test_wordpiece_reference_equals_hugging_face():
    """On every case: HF `tokenizers`' WordPiece model (the one inside BertTokenizer); on the MiniLM
    words without punctuation also the whole BertTokenizer (whose pre-tokenizer leaves them alone)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from transformers import BertTokenizer
    from course_lib.tokenizers import minilm_vocab_path
    bert = BertTokenizer.from_pretrained(str(minilm_vocab_path().parent))
    n_bert = 0
    for label, (word, vocab), kw in tk._wordpiece_cases():
        unk, max_chars = kw.get("unk", "[UNK]"), kw.get("max_chars", 100)
        ids = {t: i for i, t in enumerate(sorted(vocab | {unk}))}
        hf = Tokenizer(WordPiece(ids, unk_token=unk, max_input_chars_per_word=max_chars))
        ref = tk._wordpiece_reference(word, vocab, **kw)
        assert ref == (hf.encode(word).tokens if word else []), label
        if vocab is tk._minilm_vocab() and word.isalpha():
            assert bert.tokenize(word) == ref, label
            n_bert += 1
    assert n_bert >= 6


def wordpiece_for_else(word, vocab, unk="[UNK]", max_chars=100):
    """Correct, written differently: for/else, the prefix chosen once per position."""
    if len(word) > max_chars:
        return [unk]
    out, i = [], 0
    while i < len(word):
        prefix = "##" if out else ""
        for j in range(len(word), i, -1):
            if prefix + word[i:j] in vocab:
                out.append(prefix + word[i:j])
                i = j
                break
        else:
            return [unk]
    return out


def test_wordpiece_accepts_a_different_correct_version():
    passes(check_wordpiece(wordpiece_for_else))


WORDPIECE_WRONG = {
    "shortest_first": [("end = len(word)", "end = start + 1"), ("while end > start:", "while end <= len(word):"),
                       ("end -= 1", "end += 1")],
    "no_continuation_prefix": [('candidate = "##" + candidate', "pass")],
    "partial_pieces": [("return [unk]  # no piece fits", "return pieces + [unk]  # no piece fits")],
    "unk_per_char": [("            return [unk]  # no piece fits here: the WHOLE word is unknown, not just this part",
                      "            pieces.append(unk)\n            start += 1\n            continue")],
    "ignores_max_chars": [("    if len(word) > max_chars:\n        return [unk]  # BERT gives up on very long words\n",
                           "")],
    "mutates_input": [("    pieces = []\n", "    pieces = []\n    vocab.discard(unk)  # [UNK] is never a piece\n")],
}


@pytest.mark.parametrize("key", sorted(WORDPIECE_WRONG))
def test_wordpiece_diagnoses(key):
    assert_diagnosed(check_wordpiece(learner("check_wordpiece", *WORDPIECE_WRONG[key])), key)


def test_wordpiece_misconceptions_are_all_tested():
    assert_all_tested("check_wordpiece", WORDPIECE_WRONG)


def test_wordpiece_delegation_is_refused():
    def wordpiece(word, vocab, unk="[UNK]", max_chars=100):
        from course_lib.tokenizers import WordPieceTokenizer
        return WordPieceTokenizer([*vocab, "[CLS]", "[SEP]"], unk_token=unk, max_chars_per_word=max_chars).wordpiece(word)

    assert_delegates(check_wordpiece(wordpiece), "course_lib.tokenizers")

    def via_hf(word, vocab, unk="[UNK]", max_chars=100):
        from transformers import BertTokenizer
        return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, unk_token=unk).tokenize(word)

    assert_delegates(check_wordpiece(via_hf), "transformers")


# ------------------------------------------------------------------ unigram Viterbi
def all_segmentations(text, vocab):
    if not text:
        yield []
        return
    for j in range(1, len(text) + 1):
        if text[:j] in vocab:
            for rest in all_segmentations(text[j:], vocab):
                yield [text[:j], *rest]


def test_viterbi_reference_equals_hugging_face_unigram_and_brute_force():
    from tokenizers import Tokenizer
    from tokenizers.models import Unigram
    for label, text, vocab in tk._viterbi_cases():
        ref = tk._viterbi_reference(text, vocab)
        hf = Tokenizer(Unigram([("<unk>", 0.0), *vocab.items()], unk_id=0))
        assert hf.encode(text).tokens == ref, label if text else None
        if len(text) <= 12:  # the optimum is unique (by a margin), so "equal" and "most likely" agree
            scores = sorted((tk._score(s, vocab) for s in all_segmentations(text, vocab)), reverse=True)
            assert math.isclose(scores[0], tk._score(ref, vocab))
            assert len(scores) == 1 or scores[0] - scores[1] > 0.05, label


@functools.lru_cache(maxsize=None)
def _memo(text, items):
    vocab = dict(items)
    if not text:
        return 0.0, ()
    return max(((_memo(text[j:], items)[0] + vocab[text[:j]], (text[:j], *_memo(text[j:], items)[1]))
                for j in range(1, len(text) + 1) if text[:j] in vocab), key=lambda t: t[0])


def viterbi_top_down(text, pieces_logprob):
    """Correct, written differently: recursion on the suffix with a cache (short texts), forward DP otherwise."""
    if len(text) <= 30:
        return list(_memo(text, tuple(sorted(pieces_logprob.items())))[1])
    best = {0: (0.0, None)}
    for j in range(1, len(text) + 1):
        offers = [(best[i][0] + pieces_logprob[text[i:j]], i) for i in range(j) if text[i:j] in pieces_logprob]
        best[j] = max(offers)
    out, j = [], len(text)
    while j:
        i = best[j][1]
        out.insert(0, text[i:j])
        j = i
    return out


def test_viterbi_accepts_a_different_correct_version():
    passes(check_unigram_viterbi(viterbi_top_down))


def greedy(text, pieces_logprob):
    out, i = [], 0
    while i < len(text):
        for j in range(len(text), i, -1):  # the longest piece that starts at i
            if text[i:j] in pieces_logprob:
                out.append(text[i:j])
                i = j
                break
    return out


VITERBI_WRONG = {
    "least_likely": [("score = best[i] + pieces_logprob[piece]", "score = best[i] - pieces_logprob[piece]")],
    "fewest_pieces": [("best = [0.0] + [-math.inf] * n", "best = [0] + [math.inf] * n"),
                      ("score = best[i] + pieces_logprob[piece]", "score = best[i] + 1"),
                      ("if score > best[j]:", "if score < best[j]:")],
    "product_underflows": [("best = [0.0] + [-math.inf] * n", "best = [1.0] + [0.0] * n"),
                           ("score = best[i] + pieces_logprob[piece]",
                            "score = best[i] * math.exp(pieces_logprob[piece])")],
    "not_reversed": [("return pieces[::-1]", "return pieces")],
    "backpointer_off_by_one": [("pieces.append(text[i:j])", "pieces.append(text[i + 1:j + 1])")],
    "mutates_input": [("    n = len(text)\n", "    n = len(text)\n    pieces_logprob['<unk>'] = -100.0\n")],
}


@pytest.mark.parametrize("key", sorted(VITERBI_WRONG))
def test_viterbi_diagnoses(key):
    assert_diagnosed(check_unigram_viterbi(learner("check_unigram_viterbi", *VITERBI_WRONG[key])), key)


def test_viterbi_diagnoses_greedy_longest_match():
    assert_diagnosed(check_unigram_viterbi(greedy), "greedy_longest")


def test_viterbi_misconceptions_are_all_tested():
    assert_all_tested("check_unigram_viterbi", [*VITERBI_WRONG, "greedy_longest"])


def test_viterbi_product_that_crashes_on_underflow_is_diagnosed_too():
    crashes = learner("check_unigram_viterbi", *VITERBI_WRONG["product_underflows"],
                      ("start_of_last = [0] * (n + 1)", "start_of_last = [None] * (n + 1)"))
    r = check_unigram_viterbi(crashes)
    assert_diagnosed(r, "product_underflows")
    assert "raised" in r.message


def test_viterbi_an_equally_likely_segmentation_is_accepted():
    ties = learner("check_unigram_viterbi", ("if score > best[j]:", "if score >= best[j]:"))
    passes(check_unigram_viterbi(ties))


def test_viterbi_delegation_is_refused():
    def unigram_viterbi(text, pieces_logprob):
        from course_lib.unigram import UnigramTokenizer
        tok = UnigramTokenizer([("<unk>", 0.0), *pieces_logprob.items()], add_dummy_prefix=False)
        return [text[s:e] for s, e, _ in tok.viterbi(text)]

    assert_delegates(check_unigram_viterbi(unigram_viterbi), "course_lib.unigram")

    def via_hf(text, pieces_logprob):
        from tokenizers import Tokenizer
        from tokenizers.models import Unigram
        return Tokenizer(Unigram([("<unk>", 0.0), *pieces_logprob.items()], unk_id=0)).encode(text).tokens

    assert_delegates(check_unigram_viterbi(via_hf), "tokenizers")


def test_the_variants_differ_from_the_reference_somewhere():
    cases = tk._viterbi_cases()
    for fn in (tk._greedy_longest, tk._least_likely, tk._fewest_pieces):
        assert any(fn(t, v) != tk._viterbi_reference(t, v) for _, t, v in cases), fn.__name__
    assert sum(tk._underflows(t, v) for _, t, v in cases) == 2
    assert list(itertools.islice(all_segmentations("ab", {"a": 0, "b": 0, "ab": 0}), 3)) == [["a", "b"], ["ab"]]
