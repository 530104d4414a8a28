"""Tokenizers against independent references: a slow full-recount BPE trainer, Hugging Face
`tokenizers` trained on the same text, the real all-MiniLM-L6-v2 BertTokenizerFast, and for the
Unigram tokenizer HF's Unigram model (same pieces and scores) plus a brute-force search over all
segmentations."""
import random
from collections import Counter

import pytest
import regex

from course_lib.data import shakespeare_text
from course_lib.tokenizers import (GPT2_SPLIT, ByteBPETokenizer, CharTokenizer, WordPieceTokenizer, merge_pair,
                                   minilm_vocab_path)
from course_lib.unigram import SPACE, UnigramTokenizer, byte_piece

SAMPLES = ["Hello, World! It's 3.14159 o'clock.", "Café déjà vu — naïve résumé", "你好，世界！",
           "emoji 🎉 and tabs\tand\nnewlines", "hyphen-ated_words and https://x.org/a?b=c",
           "ÀÉÎÕÜ ﬁ ligature", "   leading and trailing spaces   ", "MiXeD CaSe, UPPER: lower; 123abc",
           "don't won't y'all isn't", "a\u0000b\u200bc control\u0007chars", ""]


def test_char_tokenizer_round_trip_and_clear_error():
    tok = CharTokenizer.train("hello world")
    assert tok.decode(tok.encode("low hello")) == "low hello" and tok.vocab_size == 8
    with pytest.raises(ValueError, match="'z' is not in this tokenizer's vocabulary"):
        tok.encode("zebra")


@pytest.mark.parametrize("ids,pair,new,expected", [
    ([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9]), ([5, 5, 5], (5, 5), 7, [7, 5]), ([5, 5, 5, 5], (5, 5), 7, [7, 7]),
    ([], (1, 2), 3, []), ([1], (1, 2), 3, [1])])
def test_merge_pair(ids, pair, new, expected):
    assert merge_pair(ids, pair, new) == expected


def slow_bpe(text, n_merges, special_tokens=()):
    """Reference trainer: recount every pair from scratch before each merge (no incremental updates).
    Ties: the greater (bytes of a, bytes of b), then the smaller ids. Special tokens are cut out."""
    pieces = regex.split("|".join(map(regex.escape, special_tokens)), text) if special_tokens else [text]
    words = Counter(m.encode() for piece in pieces for m in regex.findall(GPT2_SPLIT, piece))
    seqs = {w: list(w) for w in words}
    vocab = [bytes([i]) for i in range(256)]
    merges = []
    for _ in range(n_merges):
        counts = Counter()
        for w, ids in seqs.items():
            for p in zip(ids, ids[1:]):
                counts[p] += words[w]
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]], -p[0], -p[1]))
        merges.append(best)
        vocab.append(vocab[best[0]] + vocab[best[1]])
        seqs = {w: merge_pair(ids, best, 255 + len(merges)) for w, ids in seqs.items()}
    return merges


def test_bpe_incremental_training_equals_full_recount():
    text = shakespeare_text(30_000)
    fast = ByteBPETokenizer.train(text, 256 + 200)
    assert fast.merges == slow_bpe(text, 200)


def test_fast_trainer_equals_reference_trainer_on_the_corpus():
    text = shakespeare_text(200_000)
    fast = ByteBPETokenizer.train(text, 256 + 500)
    assert len(fast.merges) == 500
    assert fast.merges == ByteBPETokenizer.train(text, 256 + 500, reference=True).merges
    special = "<|endoftext|>"
    text = special.join(text[:60_000].split("\n\n"))
    fast = ByteBPETokenizer.train(text, 256 + 300 + 1, [special])
    assert fast.merges == ByteBPETokenizer.train(text, 256 + 300 + 1, [special], reference=True).merges


ADVERSARIAL = ["aaaa", "aaaaa aaa aa a aaaaaaa", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababab abab ab aba",
               "aaabaaab aaab baaa", "ab cd ef gh", "ba ab ba ab", "abcabc bcab cabca", "xyz zyx yzx",
               "ééé éé 你好你好 🎉🎉🎉 🎉", "\n\n\n   \t\t  \n", "a1 a11 a111 1111 11", "", "a"]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_bpe_trainers_on_adversarial_text_equal_full_recount(text):
    """Overlapping runs ("aaaa"), alternations ("abab"), ties everywhere, multi-byte characters."""
    expected = slow_bpe(text, 60)  # stops early when no pair is left
    for reference in (False, True):
        assert ByteBPETokenizer.train(text, 256 + 60, reference=reference).merges == expected


def test_bpe_trainers_on_random_text_equal_full_recount():
    rng = random.Random(0)
    for _ in range(300):
        alphabet = rng.choice(["ab", "ab ", "aab ", "abc ", "aé\n "])
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        expected = slow_bpe(text, 30)
        assert ByteBPETokenizer.train(text, 256 + 30).merges == expected, text
        assert ByteBPETokenizer.train(text, 256 + 30, reference=True).merges == expected, text


def test_bpe_special_tokens_never_merge():
    special = ["<|endoftext|>", "<|pad|>"]
    text = "aa<|endoftext|>aa<|endoftext|><|endoftext|>aa <|pad|>a<|pad|><|pad|>" * 50 + "|> <| >|< <"
    expected = slow_bpe(text, 40, special)
    assert len(expected) > 5  # there is something to learn, and "|>", "<|" occur outside the specials too
    for reference in (False, True):
        tok = ByteBPETokenizer.train(text, 256 + 40 + 2, special, reference=reference)
        assert tok.merges == expected
        letters = set(b"endoftxp")  # bytes that occur only inside the special tokens
        assert not any(letters & set(v) for v in tok.vocab[256:]), "a special token was merged"
        assert tok.encode("aa<|pad|>") == tok.encode("aa") + [tok.special_tokens["<|pad|>"]]


def test_bpe_ties_go_to_the_lexicographically_greater_pair():
    tok = ByteBPETokenizer.train("ab cd", 257)  # (a,b), (' ',c), (c,d) all occur once
    assert tok.vocab[256] == b"cd"


def test_bpe_round_trips_any_text_and_keeps_special_tokens_whole(tmp_path):
    special = "<|endoftext|>"
    text = special.join(shakespeare_text(20_000).split("\n\n"))
    tok = ByteBPETokenizer.train(text, 400, [special])
    assert all(b"<|" not in v and b"|>" not in v for v in tok.vocab[256:]), "a special token was merged"
    for s in SAMPLES + [text[:3000], f"a{special}b {special}"]:
        assert tok.decode(tok.encode(s)) == s
    ids = tok.encode(f"x{special}y")
    assert ids.count(tok.special_tokens[special]) == 1 and tok.vocab_size == 400
    tok.save(tmp_path / "bpe.json")
    again = ByteBPETokenizer.load(tmp_path / "bpe.json")
    assert again.encode(text[:5000]) == tok.encode(text[:5000])
    with pytest.raises(ValueError, match="smaller than the 256 byte tokens"):
        ByteBPETokenizer.train("abc", 200)


def test_bpe_compared_with_hugging_face_tokenizers():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    text = shakespeare_text(200_000)
    ours = ByteBPETokenizer.train(text, 1000)
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=1000, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    hf_vocab = {bytes(byte_of[c] for c in tok) for tok in hf.get_vocab()}
    our_vocab = set(ours.vocab)
    overlap = len(hf_vocab & our_vocab) / len(our_vocab)
    sample = shakespeare_text(300_000)[200_000:]
    ours_bpt = len(sample.encode()) / len(ours.encode(sample))
    hf_bpt = len(sample.encode()) / len(hf.encode(sample).ids)
    print(f"vocab overlap {overlap:.1%}; bytes/token on held-out text: ours {ours_bpt:.3f}, HF {hf_bpt:.3f}")
    assert hf.decode(hf.encode(sample).ids) == sample and ours.decode(ours.encode(sample)) == sample
    assert overlap > 0.95 and abs(ours_bpt - hf_bpt) / hf_bpt < 0.02


def _bytes_to_unicode():
    """GPT-2's printable stand-ins for the 256 bytes (how HF byte-level vocabularies spell tokens)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


@pytest.fixture(scope="module")
def minilm():
    from transformers import BertTokenizerFast
    ours = WordPieceTokenizer.from_vocab_file(minilm_vocab_path())
    return ours, BertTokenizerFast.from_pretrained(str(minilm_vocab_path().parent))


def test_wordpiece_equals_the_real_minilm_tokenizer(minilm):
    ours, hf = minilm
    lines = [l for l in shakespeare_text(60_000).splitlines() if l][:400]
    long_word = "x" * 120
    for s in SAMPLES + lines + [long_word, "Straße ΑΒΓ Привет мир"]:
        assert ours.encode(s) == hf(s)["input_ids"], s
    assert ours.vocab_size == hf.vocab_size == 30522
    assert ours.decode(ours.encode("unbelievable tokenizers")) == "unbelievable tokenizers"


def test_wordpiece_rejects_a_non_bert_vocab():
    with pytest.raises(ValueError, match="no '\\[CLS\\]' token"):
        WordPieceTokenizer(["a", "b"])


# --------------------------------------------------------------------------- Unigram (SentencePiece)
BYTES = [(byte_piece(b), 0.0) for b in range(256)]


def hf_unigram(pieces, unk_id=0, byte_fallback=False):
    """HF `tokenizers`' own Unigram model with the same pieces and scores, set up as SentencePiece runs:
    dummy prefix and spaces as '▁' (normalizer), no pre-tokenizer, so Viterbi sees the whole text."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    tok = Tokenizer(models.Unigram([tuple(p) for p in pieces], unk_id, byte_fallback))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


def random_vocab(rng, alphabet, n_pieces):
    """<unk>, most single characters (some left out: they become unknown), random multi-character pieces."""
    pieces, alphabet = {"<unk>": 0.0}, alphabet.replace(" ", SPACE)  # pieces spell a space as '▁'
    for c in alphabet:
        if rng.random() < 0.8:
            pieces[c] = -rng.uniform(2, 12)
    while len(pieces) < n_pieces:
        pieces.setdefault("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6))), -rng.uniform(2, 14))
    return list(pieces.items())


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_unigram_viterbi_equals_hugging_face_on_random_vocabularies(byte_fallback):
    rng = random.Random(1 if byte_fallback else 0)
    for case in range(150):
        alphabet = rng.choice(["ab ", "abc ", "abé ", "xyz \n", "ab" + SPACE + " "])
        vocab = random_vocab(rng, alphabet, rng.randint(3, 40)) + (BYTES if byte_fallback else [])
        ours, hf = UnigramTokenizer(vocab, 0, byte_fallback), hf_unigram(vocab, 0, byte_fallback)
        for _ in range(10):  # with unknown characters too: an emoji, and the characters left out above
            text = "".join(rng.choice(alphabet + "q🎉") for _ in range(rng.randint(0, 40)))
            assert ours.encode(text) == hf.encode(text).ids, (case, vocab, text)
            if SPACE not in text and (byte_fallback or ours.unk_id not in ours.encode(text)):
                assert ours.decode(ours.encode(text)) == text  # lossless (a '▁' in the text would come back as ' ')
                if SPACE in ours.normal:  # HF's decoder leaves a '▁' spelled in bytes as '▁'; ours reads it as ' '
                    assert hf.decode(hf.encode(text).ids) == text


def all_segmentations(text, tok):
    """Every way to cut `text` into pieces, an unknown single character allowed only where no piece is
    that character: (log-prob, pieces). Exponential: for short texts only."""
    if not text:
        return [(0.0, [])]
    out = []
    for j in range(1, len(text) + 1):
        head = text[:j]
        if head in tok.normal:
            score = tok.normal[head][1]
        elif j == 1:
            score = tok.unk_score
        else:
            continue
        out += [(score + s, [head] + rest) for s, rest in all_segmentations(text[j:], tok)]
    return out


def test_unigram_viterbi_is_the_best_of_all_segmentations():
    rng = random.Random(2)
    for _ in range(300):
        tok = UnigramTokenizer(random_vocab(rng, "abc", rng.randint(4, 25)))
        text = "".join(rng.choice("abcd") for _ in range(rng.randint(1, 12)))
        best = max(s for s, _ in all_segmentations(text, tok))
        assert tok.score(text) == pytest.approx(best, abs=1e-9), text
        spans = tok.viterbi(text)
        assert "".join(text[i:j] for i, j, _ in spans) == text  # the spans tile the text


@pytest.fixture(scope="module")
def trained_unigram():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    text = shakespeare_text(160_000)
    hf = Tokenizer(models.Unigram())
    hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    hf.train_from_iterator([text[:100_000]], trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False))
    return hf, text[100_000:]


def test_unigram_trained_on_the_corpus_equals_hugging_face(trained_unigram):
    trained, held_out = trained_unigram
    ours = UnigramTokenizer.from_hf(trained)
    assert ours.vocab_size == trained.get_vocab_size() == 400
    hf = hf_unigram(ours.pieces, ours.unk_id)
    lines = [l for l in held_out.splitlines() if l]
    words = sorted(set(held_out.split()))
    assert len(lines) > 1000 and len(words) > 2000
    for s in lines + words + SAMPLES[:-2]:  # held-out lines and words; accents, CJK, emoji -> <unk>
        assert ours.encode(s) == hf.encode(s).ids, s
        if not s.startswith(" "):  # HF's Metaspace adds no dummy prefix where the text starts with a space
            assert ours.encode(s) == trained.encode(s).ids, s
    assert ours.encode(held_out) == hf.encode(held_out).ids  # the whole text in one Viterbi pass
    assert ours.decode(ours.encode(held_out)) == held_out  # every character was seen in training: lossless


def test_unigram_byte_fallback_spells_unknown_characters_in_utf8_bytes():
    vocab = [("<unk>", 0.0), (SPACE, -2.0), ("a", -3.0), ("b", -3.0), (SPACE + "ab", -4.0)]
    plain, fallback = UnigramTokenizer(vocab), UnigramTokenizer(vocab + BYTES, byte_fallback=True)
    text = "ab 🎉é ab"
    assert plain.tokenize(text) == [SPACE + "ab", SPACE, "<unk>", SPACE + "ab"]  # the run 🎉é fused into one
    assert fallback.tokenize(text) == ([SPACE + "ab", SPACE] + [byte_piece(b) for b in "🎉é".encode()]
                                       + [SPACE + "ab"])
    assert fallback.decode(fallback.encode(text)) == text and plain.decode(plain.encode(text)) == "ab <unk> ab"
    assert plain.encode("") == fallback.encode("") == [] and plain.decode([]) == ""


@pytest.mark.parametrize("args,message", [
    (([],), "vocabulary is empty"),
    (([("<unk>", 0.0), ("a", -1.0)], 5), "unk_id=5 is not an index"),
    (([("<unk>", 0.0), ("a", -1.0), ("a", -2.0)],), "'a' occurs twice"),
    (([("<unk>", 0.0), ("a", float("nan"))],), "finite score"),
    (([("<unk>", 0.0), ("", -1.0)],), "non-empty string"),
    (([("<unk>", 0.0), ("a", -1.0)], 0, True), "needs the 256 pieces"),
    ((["<unk>", "abc"],), "a \\(piece, log-probability\\) pair"),
    (([("<unk>", 0.0), ("a", "likely")],), "a \\(piece, log-probability\\) pair"),
])
def test_unigram_rejects_bad_vocabularies_with_a_clear_message(args, message):
    with pytest.raises(ValueError, match=message):
        UnigramTokenizer(*args)


def test_unigram_from_hf_rejects_other_models():
    from tokenizers import Tokenizer, models
    with pytest.raises(ValueError, match="not 'Unigram'"):
        UnigramTokenizer.from_hf(Tokenizer(models.BPE()))
    with pytest.raises(ValueError, match="no unknown piece"):
        UnigramTokenizer.from_hf(Tokenizer(models.Unigram([("a", -1.0)], None, False)))


# --------------------------------------------------------------------------- streaming: encode_iterable
SPECIALS = ["<|endoftext|>", "<|end|>"]  # one is a prefix of the other: the longer must win
TRICKY = ("He'll say 'tis   so.\n\n  <|endoftext|>café 你好🎉 x<|end|><|endoftext|>  'll's'\t\n 12345"
          " <|endof <|end|  \n")  # contractions, space runs, multi-byte characters, specials and near-specials


@pytest.fixture(scope="module")
def streaming_tok():
    return ByteBPETokenizer.train(shakespeare_text(100_000), 256 + 300 + len(SPECIALS), SPECIALS)


def test_encode_iterable_equals_encode_on_the_whole_corpus_read_line_by_line(tmp_path, streaming_tok):
    text = "<|endoftext|>".join(shakespeare_text().split("\n\n"))  # a special token between speeches
    assert text.count("<|endoftext|>") > 5000
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    expected = streaming_tok.encode(text)
    with open(path, encoding="utf-8") as lines:
        assert list(streaming_tok.encode_iterable(lines)) == expected
    streaming_tok._BATCH = 1  # no batching: every line is cut at its own settled point
    try:
        assert list(streaming_tok.encode_iterable(text.splitlines(keepends=True))) == expected
    finally:
        del streaming_tok._BATCH


def test_encode_iterable_at_every_split_point_of_a_tricky_string(streaming_tok):
    """Two cuts anywhere (inside "'ll", a run of spaces, a multi-byte character's neighbours, a special
    token or a string that only starts like one) and one character at a time: the ids of the whole."""
    tok, text = streaming_tok, TRICKY
    expected = tok.encode(text)
    tok._BATCH = 1
    try:
        for i in range(len(text) + 1):
            for j in range(i, len(text) + 1):
                pieces = [text[:i], text[i:j], text[j:]]
                assert list(tok.encode_iterable(pieces)) == expected, pieces
        assert list(tok.encode_iterable(iter(text))) == expected
        rng = random.Random(0)
        alphabet = ["a", "b", " ", "  ", "'", "l", "s", "\n", "é", "🎉", "1", ".", "<|", "|>", *SPECIALS]
        for _ in range(300):
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            cuts = sorted(rng.randint(0, len(s)) for _ in range(rng.randint(0, 6)))
            pieces = [s[a:b] for a, b in zip([0, *cuts], [*cuts, len(s)])]
            assert list(tok.encode_iterable(pieces)) == tok.encode(s), pieces
    finally:
        del tok._BATCH


def test_encoding_pieces_separately_would_differ(streaming_tok):
    """The test above can fail: encoding each piece on its own gives other ids at most cuts."""
    tok, text = streaming_tok, TRICKY
    differ = sum(tok.encode(text[:i]) + tok.encode(text[i:]) != tok.encode(text) for i in range(len(text) + 1))
    assert differ > len(text) // 3


def test_encode_iterable_is_lazy(streaming_tok):
    read = []

    def lines():
        for line in shakespeare_text().splitlines(keepends=True):
            read.append(len(line))
            yield line

    ids = streaming_tok.encode_iterable(lines())
    first = next(ids)
    assert first == streaming_tok.encode(shakespeare_text(100))[0]
    assert sum(read) <= 2 * streaming_tok._BATCH  # a few KB read, not the 1.1 MB corpus
    with pytest.raises(TypeError, match="reads str pieces"):
        list(streaming_tok.encode_iterable([b"bytes"]))


def test_encode_iterable_memory_stays_bounded_on_a_large_file(tmp_path, streaming_tok):
    """tracemalloc: streaming a 0.7 MB generated file line by line needs a batch of text and its ids
    (tens of KB) whatever the file's size, while `encode` holds every chunk and every id at once.
    Both run with the chunk cache already filled, so the peaks compare the work itself; the cache
    has a fixed number of entries (the next test). The file is small because tracemalloc
    makes every allocation several times slower."""
    import time
    import tracemalloc
    from itertools import islice
    text = shakespeare_text()
    path = tmp_path / "large.txt"
    path.write_text(text[:600_000] + "<|endoftext|>" + text[:100_000].swapcase(), encoding="utf-8")
    tok = ByteBPETokenizer(streaming_tok.merges, SPECIALS)
    tok._CACHE_SIZE = 1 << 20  # room for every chunk of this file: the peaks measure the work alone
    whole = path.read_text(encoding="utf-8")
    n_ids = len(tok.encode(whole))  # fills the cache
    peaks, count = [], 0
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        with open(path, encoding="utf-8") as lines:
            ids = tok.encode_iterable(lines)
            while True:  # parts of 40,000 ids (the last one shorter); keep no id
                n = sum(1 for _ in islice(ids, 40_000))  # (sum adds in C: no int objects are made)
                count += n
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.reset_peak()
                if n < 40_000:
                    break
        t1 = time.perf_counter()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        assert len(tok.encode(whole)) == n_ids
        encode_peak = tracemalloc.get_traced_memory()[1] - base
        t2 = time.perf_counter()
    finally:
        tracemalloc.stop()
    print(f"{len(whole) / 1e6:.1f} MB: encode_iterable peak {max(peaks) / 1e3:.0f} KB (by part of 40,000 "
          f"ids: {[round(p / 1e3) for p in peaks]}), encode peak {encode_peak / 1e6:.1f} MB; traced times "
          f"{t1 - t0:.1f} s and {t2 - t1:.1f} s")
    assert count == n_ids and len(peaks) > 5
    assert max(peaks) < 300e3 and max(peaks) * 50 < encode_peak
    assert max(peaks[1:]) < 2 * peaks[0] + 50e3  # flat: more text does not need more memory


def test_the_chunk_cache_has_a_fixed_size(streaming_tok):
    tok = ByteBPETokenizer(streaming_tok.merges, SPECIALS)
    tok._CACHE_SIZE = 100
    words = [f" w{i}" for i in range(1000)]  # 1000 distinct chunks
    assert tok.encode("".join(words)) == [i for w in words for i in streaming_tok.encode(w)]
    assert 0 < len(tok._cache) <= 100
