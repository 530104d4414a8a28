"""Exercise 06's T5 span-corruption checks, both ways: check_random_spans_noise_mask and
check_span_corruption accept the printed solutions and other correct implementations (a transcription
of T5's own segmentation, loops, itertools.groupby, numpy), and reject the stubs and each named
misconception — written here as a learner would write it — with that diagnosis in the message. The
plain-loop reference is tied to independent facts: the paper's Figure 2 example and the sentinel
numbering of Hugging Face's T5TokenizerFast (<extra_id_i> = len(tokenizer) - 1 - i, </s> = 1)."""
import itertools

import numpy as np
import pytest
import torch

from course_lib.checks import check_random_spans_noise_mask, check_span_corruption, check_t5_collate
from course_lib.checks.t5_track06 import (_collate_cases, _t5_mask, noise_counts, runs, span_corruption_reference,
                                          t5_collate_reference)

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

MASK = solved("check_random_spans_noise_mask")
CORRUPT = solved("check_span_corruption")
COLLATE = solved("check_t5_collate")


# ------------------------------------------------------------------ the reference vs independent facts
def test_reference_reproduces_the_papers_figure_2():
    words = "Thank you for inviting me to your party last week .".split()
    vocab = {w: 10 + i for i, w in enumerate(words)}  # ids 10.. : clear of </s> = 1
    ids = torch.tensor([vocab[w] for w in words])
    noise = torch.tensor([w in ("for", "inviting", "last") for w in words])
    names = {32099: "<X>", 32098: "<Y>", 32097: "<Z>", 1: "</s>"}
    show = lambda t: " ".join(names.get(i) or words[i - 10] for i in t.tolist())
    for fn in (span_corruption_reference, CORRUPT):
        inputs, targets = fn(ids, noise, 32099, 1)
        assert show(inputs) == "Thank you <X> me to your party <Y> week . </s>"
        assert show(targets) == "<X> for inviting <Y> last <Z> </s>"


@pytest.mark.parametrize("extra_ids", [100, 7])
def test_sentinels_follow_hugging_faces_t5_tokenizer(extra_ids):
    from transformers import T5TokenizerFast
    tok = T5TokenizerFast(extra_ids=extra_ids)  # no download: the built-in minimal vocabulary plus extra ids
    start = tok.convert_tokens_to_ids("<extra_id_0>")
    assert start == len(tok) - 1
    g = torch.Generator().manual_seed(3)
    for length in (12, 30):
        mask = _t5_mask(length, 0.2, 2.0, g)
        n_spans = sum(v for v, _ in runs(mask))
        assert n_spans <= extra_ids
        ids = torch.randint(0, 3, (length,), generator=g)
        for fn in (span_corruption_reference, CORRUPT):
            inputs, targets = fn(ids, mask, start, tok.eos_token_id)
            expected = [f"<extra_id_{i}>" for i in range(n_spans)]
            sentinels = [t for t in tok.convert_ids_to_tokens(inputs.tolist()) if t.startswith("<extra_id_")]
            assert sentinels == expected
            tgt = tok.convert_ids_to_tokens(targets.tolist())
            assert [t for t in tgt if t.startswith("<extra_id_")] == expected  # T5 masks end with noise
            assert tgt[0] == "<extra_id_0>" and tgt[-1] == "</s>"
            assert tok.convert_ids_to_tokens(inputs.tolist())[-1] == "</s>"


def noise_span_to_unique_sentinel(tokens, noise_mask, sentinel_id):
    """T5's preprocessor of that name (t5.data.preprocessors), transcribed to numpy."""
    prev_is_noise = np.pad(noise_mask[:-1], (1, 0))
    first = noise_mask & ~prev_is_noise
    subsequent = noise_mask & prev_is_noise
    sentinel = sentinel_id + 1 - np.cumsum(first)
    return np.where(first, sentinel, tokens)[~subsequent]


def test_reference_equals_t5s_preprocessor():
    g = torch.Generator().manual_seed(11)
    for length, density, mean in [(9, 0.3, 1.0), (50, 0.15, 3.0), (128, 0.5, 4.0)]:
        mask = _t5_mask(length, density, mean, g)
        ids = torch.randint(2, 32000, (length,), generator=g)
        inputs, targets = span_corruption_reference(ids, mask, 32099, 1)
        tok, m = ids.numpy(), mask.numpy()
        assert inputs.tolist() == noise_span_to_unique_sentinel(tok, m, 32099).tolist() + [1]
        assert targets.tolist() == noise_span_to_unique_sentinel(tok, ~m, 32099).tolist() + [1]


def test_reference_mask_has_t5s_counts():
    g = torch.Generator().manual_seed(2)
    for length, density, mean in [(512, 0.15, 3.0), (7, 0.05, 3.0), (5, 0.95, 4.0)]:
        m = _t5_mask(length, density, mean, g)
        num_noise, num_spans = noise_counts(length, density, mean)
        r = runs(m)
        assert int(m.sum()) == num_noise and len(r) == 2 * num_spans and not r[0][0]
    assert noise_counts(512, 0.15, 3.0) == (77, 26)  # T5's default: 76.8 -> 77 noise tokens in 25.7 -> 26 spans


# ------------------------------------------------------------------ (a) correct masks
def mask_t5_segmentation(length, noise_density, mean_noise_span_length, generator):
    """T5's _random_segmentation: shuffle (arange(n - 1) < k - 1), pad a 0 in front, cumsum = segment id."""
    num_noise = int(np.round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(np.round(num_noise / mean_noise_span_length)), 1)

    def segmentation(n, k):
        first_in_segment = (torch.arange(n - 1) < k - 1)[torch.randperm(n - 1, generator=generator)]
        segment_id = torch.cumsum(torch.cat([torch.tensor([False]), first_in_segment]).long(), 0)
        return torch.bincount(segment_id, minlength=k)

    interleaved = torch.stack([segmentation(length - num_noise, num_spans),
                               segmentation(num_noise, num_spans)], 1).reshape(-1)
    span_starts = torch.cumsum(interleaved, 0)[:-1]
    indicator = torch.zeros(length, dtype=torch.long)
    indicator[span_starts] = 1
    return torch.cumsum(indicator, 0) % 2 == 1


def mask_loop(length, noise_density, mean_noise_span_length, generator):
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(1, round(n_noise / mean_noise_span_length))

    def split(total):
        gaps = torch.rand(total - 1, generator=generator).argsort()[: n_spans - 1].tolist()
        bounds = [0] + sorted(c + 1 for c in gaps) + [total]
        return [b - a for a, b in zip(bounds, bounds[1:])]

    out = []
    for keep, noise in zip(split(length - n_noise), split(n_noise)):
        out += [False] * keep + [True] * noise
    return torch.tensor(out)


def mask_hf_flax_style(length, noise_density, mean_noise_span_length, generator):
    """The Hugging Face Flax T5 example's variant: spans counted from min(noise, non-noise) tokens."""
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(min(num_noise, length - num_noise) / mean_noise_span_length), 1)
    mask = torch.zeros(length, dtype=torch.bool)
    pos = 0
    keep = _composition(length - num_noise, num_spans, generator)
    noise = _composition(num_noise, num_spans, generator)
    for k, n in zip(keep, noise):
        mask[pos + k: pos + k + n] = True
        pos += k + n
    return mask


def _composition(n, k, g):
    chosen = torch.zeros(n - 1, dtype=torch.bool)
    chosen[torch.randperm(n - 1, generator=g)[: k - 1]] = True
    cuts = [0] + [i + 1 for i in range(n - 1) if chosen[i]] + [n]
    return [b - a for a, b in zip(cuts, cuts[1:])]


@pytest.mark.parametrize("impl", [MASK, mask_t5_segmentation, mask_loop, mask_hf_flax_style])
def test_mask_accepts_correct_implementations(impl):
    r = check_random_spans_noise_mask(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


def test_mask_stub_is_not_attempted():
    def random_spans_noise_mask(length, noise_density, mean_noise_span_length, generator):
        raise NotImplementedError()
    assert_not_attempted(check_random_spans_noise_mask(random_spans_noise_mask))


def test_mask_wrong_dtype_and_exception_are_explained():
    r = check_random_spans_noise_mask(lambda *a: MASK(*a).long())
    assert not r.passed and "torch.bool" in r.message
    r = check_random_spans_noise_mask(lambda *a: MASK(*a)[1:])
    assert not r.passed and "shape" in r.message
    r = check_random_spans_noise_mask(lambda length, *a: torch.randperm(length - 5 * length))
    assert not r.passed and "raised" in r.message


def test_mask_refuses_the_graders_helper():
    def random_spans_noise_mask(length, noise_density, mean_noise_span_length, generator):
        return _t5_mask(length, noise_density, mean_noise_span_length, generator)
    assert_delegates(check_random_spans_noise_mask(random_spans_noise_mask), "course_lib.checks")


# ------------------------------------------------------------------ (a) misconceptions, as a learner writes them
def _interleave(keep, noise, noise_first=False):
    out = []
    for k, n in zip(keep, noise):
        out += ([True] * n + [False] * k) if noise_first else ([False] * k + [True] * n)
    return torch.tensor(out)


def floor_not_round(length, noise_density, mean_noise_span_length, generator):
    n_noise = min(max(int(length * noise_density), 1), length - 1)
    n_spans = max(1, round(n_noise / mean_noise_span_length))
    return _interleave(_composition(length - n_noise, n_spans, generator), _composition(n_noise, n_spans, generator))


def per_token_coin(length, noise_density, mean_noise_span_length, generator):
    mask = torch.rand(length, generator=generator) < noise_density
    mask[0] = False
    return mask


def starts_with_noise(length, noise_density, mean_noise_span_length, generator):
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(1, round(n_noise / mean_noise_span_length))
    return _interleave(_composition(length - n_noise, n_spans, generator), _composition(n_noise, n_spans, generator),
                       noise_first=True)


def fixed_span_lengths(length, noise_density, mean_noise_span_length, generator):
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(1, round(n_noise / mean_noise_span_length))
    even = lambda n: [n // n_spans] * (n_spans - 1) + [n - (n // n_spans) * (n_spans - 1)]
    return _interleave(even(length - n_noise), even(n_noise))


def ignores_generator(length, noise_density, mean_noise_span_length, generator):
    return MASK(length, noise_density, mean_noise_span_length, torch.default_generator)


MASK_BAD = {"floor_not_round": floor_not_round, "per_token_coin": per_token_coin,
            "starts_with_noise": starts_with_noise, "fixed_span_lengths": fixed_span_lengths,
            "ignores_generator": ignores_generator}


@pytest.mark.parametrize("key", list(MASK_BAD))
def test_mask_diagnoses_each_misconception(key):
    assert_diagnosed(check_random_spans_noise_mask(MASK_BAD[key]), key)


def test_mask_rejects_a_biased_split():
    """Cut points drawn with replacement and deduplicated: every count is right, but not every split is
    equally likely (and spans can merge), so the distribution check must catch it."""
    def biased(length, noise_density, mean_noise_span_length, generator):
        n_noise = min(max(round(length * noise_density), 1), length - 1)
        n_spans = max(1, round(n_noise / mean_noise_span_length))

        def split(n):  # first cut uniform, the others at the end: a skewed but valid composition
            if n_spans == 1:
                return [n]
            first = int(torch.randint(1, n - n_spans + 2, (1,), generator=generator))
            return [first] + [1] * (n_spans - 2) + [n - first - (n_spans - 2)]
        return _interleave(split(length - n_noise), split(n_noise))
    r = check_random_spans_noise_mask(biased)
    assert not r.passed and r.points == 0
    assert "not a uniformly random split" in r.message or "spans" in r.message, r.message


def test_mask_misconceptions_are_all_tested():
    assert_all_tested("check_random_spans_noise_mask", MASK_BAD)


# ------------------------------------------------------------------ (b) correct span corruption
def corruption_groupby(ids, noise_mask, sentinel_start, eos_id):
    def build(drop):
        out, sentinel = [], sentinel_start
        for dropped, group in itertools.groupby(zip(ids.tolist(), drop.tolist()), key=lambda p: p[1]):
            if dropped:
                out.append(sentinel)
                sentinel -= 1
            else:
                out += [t for t, _ in group]
        return torch.tensor(out + [eos_id], dtype=ids.dtype)
    return build(noise_mask), build(~noise_mask)


def corruption_spans_first(ids, noise_mask, sentinel_start, eos_id):
    """Find the spans as (start, end) pairs, then assemble both sequences from them."""
    m = noise_mask.tolist()
    spans, t = [], 0
    while t < len(m):
        if m[t]:
            s = t
            while t < len(m) and m[t]:
                t += 1
            spans.append((s, t))
        else:
            t += 1
    inputs, targets, pos = [], [], 0
    for i, (s, e) in enumerate(spans):
        if s > pos:
            targets.append(sentinel_start - i)
        inputs += ids[pos:s].tolist() + [sentinel_start - i]
        targets += ids[s:e].tolist()
        pos = e
    if pos < len(m):
        inputs += ids[pos:].tolist()
        targets.append(sentinel_start - len(spans))
    # T5 masks start with a kept token, so the targets' first sentinel is sentinel_start
    return (torch.tensor(inputs + [eos_id], dtype=ids.dtype), torch.tensor(targets + [eos_id], dtype=ids.dtype))


def corruption_numpy(ids, noise_mask, sentinel_start, eos_id):
    tok, m = ids.numpy(), noise_mask.numpy()
    eos = np.array([eos_id])
    return (torch.from_numpy(np.concatenate([noise_span_to_unique_sentinel(tok, m, sentinel_start), eos]).astype(tok.dtype)),
            torch.from_numpy(np.concatenate([noise_span_to_unique_sentinel(tok, ~m, sentinel_start), eos]).astype(tok.dtype)))


@pytest.mark.parametrize("impl", [CORRUPT, corruption_groupby, corruption_spans_first, corruption_numpy])
def test_corruption_accepts_correct_implementations(impl):
    r = check_span_corruption(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


def test_corruption_stub_is_not_attempted():
    def span_corruption(ids, noise_mask, sentinel_start, eos_id):
        raise NotImplementedError()
    assert_not_attempted(check_span_corruption(span_corruption))


def test_corruption_bad_outputs_are_explained():
    r = check_span_corruption(lambda *a: CORRUPT(*a)[0])
    assert not r.passed and "pair" in r.message
    r = check_span_corruption(lambda ids, *a: tuple(t.float() for t in CORRUPT(ids, *a)))
    assert not r.passed and "dtype" in r.message
    r = check_span_corruption(lambda ids, m, s, e: (ids[~m], ids[len(ids)]))  # an index error
    assert not r.passed and "raised" in r.message, r.message


@pytest.mark.parametrize("impl", [span_corruption_reference,
                                  lambda ids, m, s, e: span_corruption_reference(ids, m, s, e)])
def test_corruption_refuses_the_graders_reference(impl):
    assert_delegates(check_span_corruption(impl), "course_lib.checks")


# ------------------------------------------------------------------ (b) misconceptions, as a learner writes them
def one_sentinel_per_token(ids, noise_mask, sentinel_start, eos_id):
    def build(drop):
        out, s = [], sentinel_start
        for t, d in zip(ids.tolist(), drop.tolist()):
            if d:
                out.append(s)
                s -= 1
            else:
                out.append(t)
        return torch.tensor(out + [eos_id], dtype=ids.dtype)
    return build(noise_mask), build(~noise_mask)


def sentinels_count_up(ids, noise_mask, sentinel_start, eos_id):
    def build(mask):
        prev = torch.cat([torch.tensor([False]), mask[:-1]])
        first = mask & ~prev
        sent = sentinel_start - 1 + torch.cumsum(first.long(), 0)
        return torch.cat([torch.where(first, sent.to(ids.dtype), ids)[~(mask & prev)],
                          torch.tensor([eos_id], dtype=ids.dtype)])
    return build(noise_mask), build(~noise_mask)


def swapped_inputs_targets(ids, noise_mask, sentinel_start, eos_id):
    inputs, targets = CORRUPT(ids, noise_mask, sentinel_start, eos_id)
    return targets, inputs


def targets_copy_everything(ids, noise_mask, sentinel_start, eos_id):
    inputs, _ = CORRUPT(ids, noise_mask, sentinel_start, eos_id)
    targets, s, prev = [], sentinel_start, False
    for t, d in zip(ids.tolist(), noise_mask.tolist()):
        if d and not prev:
            targets.append(s)
            s -= 1
        targets.append(t)
        prev = d
    return inputs, torch.tensor(targets + [eos_id], dtype=ids.dtype)


def missing_eos(ids, noise_mask, sentinel_start, eos_id):
    inputs, targets = CORRUPT(ids, noise_mask, sentinel_start, eos_id)
    return inputs[:-1], targets[:-1]


def span_boundary_off_by_one(ids, noise_mask, sentinel_start, eos_id):
    def build(mask):
        prev = torch.cat([torch.tensor([False]), mask[:-1]])
        first = mask & ~prev
        keep = ~mask | first
        out, s = [], sentinel_start
        for t, f, k in zip(ids.tolist(), first.tolist(), keep.tolist()):
            if f:
                out.append(s)
                s -= 1
            if k:
                out.append(t)  # the span's first token survives after its sentinel
        return torch.tensor(out + [eos_id], dtype=ids.dtype)
    return build(noise_mask), build(~noise_mask)


def no_final_sentinel(ids, noise_mask, sentinel_start, eos_id):
    inputs, _ = CORRUPT(ids, noise_mask, sentinel_start, eos_id)
    targets, s, prev = [], sentinel_start, False
    for t, d in zip(ids.tolist(), noise_mask.tolist()):  # a sentinel before each noise span, nothing else
        if d and not prev:
            targets.append(s)
            s -= 1
        if d:
            targets.append(t)
        prev = d
    return inputs, torch.tensor(targets + [eos_id], dtype=ids.dtype)


def mutates_input(ids, noise_mask, sentinel_start, eos_id):
    out = CORRUPT(ids, noise_mask, sentinel_start, eos_id)
    ids[noise_mask] = 0
    return out


CORRUPTION_BAD = {"one_sentinel_per_token": one_sentinel_per_token, "sentinels_count_up": sentinels_count_up,
                  "swapped_inputs_targets": swapped_inputs_targets, "targets_copy_everything": targets_copy_everything,
                  "missing_eos": missing_eos, "span_boundary_off_by_one": span_boundary_off_by_one,
                  "no_final_sentinel": no_final_sentinel, "mutates_input": mutates_input}


@pytest.mark.parametrize("key", list(CORRUPTION_BAD))
def test_corruption_diagnoses_each_misconception(key):
    assert_diagnosed(check_span_corruption(CORRUPTION_BAD[key]), key)


def test_corruption_misconceptions_are_all_tested():
    assert_all_tested("check_span_corruption", CORRUPTION_BAD)


# ------------------------------------------------------------------ (c) the batch, against Hugging Face's T5
def test_collate_reference_matches_hugging_faces_t5():
    """decoder_input_ids are what T5ForConditionalGeneration makes from labels (its _shift_right), and a
    forward pass with the batch runs and gives the loss of the non-ignored label positions."""
    from transformers import T5Config, T5ForConditionalGeneration
    for _, examples, pad_id in _collate_cases():
        cfg = T5Config(vocab_size=32100, d_model=8, d_ff=16, d_kv=4, num_heads=2, num_layers=1,
                       pad_token_id=pad_id, decoder_start_token_id=pad_id, eos_token_id=1, dropout_rate=0.0)
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(cfg).eval()
        for fn in (t5_collate_reference, COLLATE):
            batch = fn(examples, pad_id)
            assert torch.equal(batch["decoder_input_ids"], model._shift_right(batch["labels"]))
            assert torch.equal(batch["attention_mask"].sum(1), torch.tensor([len(i) for i, _ in examples]))
            with torch.no_grad():
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=batch["labels"])
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               decoder_input_ids=batch["decoder_input_ids"]).logits
            keep = batch["labels"] != -100
            manual = torch.nn.functional.cross_entropy(logits[keep], batch["labels"][keep])
            torch.testing.assert_close(out.loss, manual)


def collate_loop(examples, pad_id):
    T_in = max(i.numel() for i, _ in examples)
    T_out = max(t.numel() for _, t in examples)
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "decoder_input_ids": []}
    for inputs, targets in examples:
        x, y = inputs.tolist(), targets.tolist()
        rows["input_ids"].append(x + [pad_id] * (T_in - len(x)))
        rows["attention_mask"].append([1] * len(x) + [0] * (T_in - len(x)))
        labels = y + [-100] * (T_out - len(y))
        rows["labels"].append(labels)
        rows["decoder_input_ids"].append([pad_id] + [pad_id if v == -100 else v for v in labels[:-1]])
    return {k: torch.tensor(v) for k, v in rows.items()}


def collate_with_F_pad(examples, pad_id):
    T_in = max(len(i) for i, _ in examples)
    T_out = max(len(t) for _, t in examples)
    F = torch.nn.functional
    input_ids = torch.stack([F.pad(i, (0, T_in - len(i)), value=pad_id) for i, _ in examples])
    labels = torch.stack([F.pad(t, (0, T_out - len(t)), value=-100) for _, t in examples])
    mask = torch.stack([F.pad(torch.ones_like(i), (0, T_in - len(i))) for i, _ in examples])
    dec = F.pad(labels, (1, -1), value=pad_id)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
            "decoder_input_ids": torch.where(dec == -100, pad_id, dec)}


@pytest.mark.parametrize("impl", [COLLATE, collate_loop, collate_with_F_pad])
def test_collate_accepts_correct_implementations(impl):
    r = check_t5_collate(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


def test_collate_stub_is_not_attempted():
    def t5_collate(examples, pad_id):
        raise NotImplementedError()
    assert_not_attempted(check_t5_collate(t5_collate))


def test_collate_bad_outputs_are_explained():
    r = check_t5_collate(lambda ex, p: tuple(COLLATE(ex, p).values()))
    assert not r.passed and "dict" in r.message
    r = check_t5_collate(lambda ex, p: {k: v for k, v in COLLATE(ex, p).items() if k != "labels"})
    assert not r.passed and "labels" in r.message
    r = check_t5_collate(lambda ex, p: {k: v.float() for k, v in COLLATE(ex, p).items()})
    assert not r.passed and "dtype" in r.message


def collate_with_pad_sequence(examples, pad_id):
    from torch.nn.utils.rnn import pad_sequence as pad
    batch = collate_loop(examples, pad_id)
    batch["input_ids"] = pad([i for i, _ in examples], batch_first=True, padding_value=pad_id)
    return batch


@pytest.mark.parametrize("impl,used", [(collate_with_pad_sequence, "torch.nn.utils.rnn.pad_sequence"),
                                       (t5_collate_reference, "course_lib.checks")])
def test_collate_refuses_delegation(impl, used):
    assert_delegates(check_t5_collate(impl), used)


# ------------------------------------------------------------------ (c) misconceptions, as a learner writes them
def labels_padded_with_pad(examples, pad_id):
    batch = collate_loop(examples, pad_id)
    T = batch["labels"].shape[1]
    batch["labels"] = torch.tensor([t.tolist() + [pad_id] * (T - len(t)) for _, t in examples])
    return batch


def attention_mask_inverted(examples, pad_id):
    batch = collate_loop(examples, pad_id)
    batch["attention_mask"] = (batch["input_ids"] == pad_id).long()
    return batch


def decoder_inputs_not_shifted(examples, pad_id):
    batch = collate_loop(examples, pad_id)
    batch["decoder_input_ids"] = batch["labels"].masked_fill(batch["labels"] == -100, pad_id)
    return batch


def decoder_inputs_keep_minus100(examples, pad_id):
    batch = collate_loop(examples, pad_id)
    batch["decoder_input_ids"] = torch.cat([torch.full((len(examples), 1), pad_id), batch["labels"][:, :-1]], 1)
    return batch


def left_padding(examples, pad_id):
    flipped = [(i.flip(0), t.flip(0)) for i, t in examples]
    batch = collate_loop(flipped, pad_id)
    for k in ("input_ids", "attention_mask", "labels"):
        batch[k] = batch[k].flip(1)
    lab = batch["labels"]
    batch["decoder_input_ids"] = torch.cat([torch.full((len(examples), 1), pad_id), lab[:, :-1]], 1)
    batch["decoder_input_ids"] = batch["decoder_input_ids"].masked_fill(batch["decoder_input_ids"] == -100, pad_id)
    return batch


def collate_mutates_input(examples, pad_id):
    batch = collate_loop(examples, pad_id)
    examples[0][1][-1] = 0  # "the EOS is not needed here"
    return batch


COLLATE_BAD = {"labels_padded_with_pad": labels_padded_with_pad, "attention_mask_inverted": attention_mask_inverted,
               "decoder_inputs_not_shifted": decoder_inputs_not_shifted,
               "decoder_inputs_keep_minus100": decoder_inputs_keep_minus100, "left_padding": left_padding,
               "mutates_input": collate_mutates_input}


@pytest.mark.parametrize("key", list(COLLATE_BAD))
def test_collate_diagnoses_each_misconception(key):
    assert_diagnosed(check_t5_collate(COLLATE_BAD[key]), key)


def test_collate_misconceptions_are_all_tested():
    assert_all_tested("check_t5_collate", COLLATE_BAD)
