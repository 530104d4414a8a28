"""Checks for Exercise 06's T5 part: the span-corruption pre-training objective (Raffel et al. 2020,
§3.1.4 and §3.3). `check_random_spans_noise_mask` grades T5's random span mask by its properties
(exact counts, the interleaving, the use of the generator, and the distribution of span lengths);
`check_span_corruption` compares (inputs, targets) with a plain-loop reference. Each misconception
is a tiny re-creation of the mistake; the check names the one whose outputs equal the learner's."""
from __future__ import annotations

import math
from collections import Counter

import torch

from course_lib.device import single_thread
from .core import Mismatch, assert_unmodified, call_learner, compare, diagnose, register, snapshot


# ------------------------------------------------------------------ (a) the random span mask
def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """T5's numbers of noise tokens and noise spans for one sequence."""
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    return num_noise, max(round(num_noise / mean_noise_span_length), 1)


def runs(mask: torch.Tensor) -> list[tuple[bool, int]]:
    """The runs of a 1-D bool mask as (value, length), left to right."""
    out: list[tuple[bool, int]] = []
    for v in mask.tolist():
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out


MASK_MISCONCEPTIONS = {
    "floor_not_round": "the number of noise tokens is truncated (int(length * density)); T5 rounds it: "
                       "round(length * noise_density), then keeps it between 1 and length - 1.",
    "per_token_coin": "each token is made noise independently with probability noise_density. T5 fixes the "
                      "counts exactly: round(length·density) noise tokens in max(round(noise / mean), 1) spans.",
    "starts_with_noise": "the mask starts with a noise span; T5 interleaves starting with NON-noise: "
                         "keep, noise, keep, noise, ... (so the sequence ends with noise).",
    "fixed_span_lengths": "the span lengths are not random (every draw gives the same split); split each "
                          "total into spans by choosing the cut points at random with the generator.",
    "ignores_generator": "the mask does not follow `generator` (the same seed gave different masks, or the "
                         "global seed changed it); pass generator=generator to torch.randperm / torch.rand.",
}

# (length, noise_density, mean_noise_span_length): round-ups, the clamps at 1 and at length - 1,
# one span, many spans, and T5's default setting (density 0.15, mean span 3) on 512 tokens
MASK_CASES = [(20, 0.15, 3.0), (64, 0.15, 3.0), (7, 0.05, 3.0), (5, 0.95, 4.0), (100, 0.3, 2.5),
              (512, 0.15, 3.0), (8, 0.375, 1.5)]
# 3 noise tokens in 2 spans and 5 kept in 2 (2 x 4 = 8 layouts); 3 noise in 3 spans and 6 kept in 3 (1 x 10)
DIST_CASES, DIST_DRAWS = [(8, 0.375, 1.5), (9, 0.34, 1.0)], 300


def _one_mask(learner, length, density, mean, seed, global_seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(global_seed)  # differs between calls: a mask drawn from the global generator changes
    out = call_learner(learner, length, density, mean, g)
    if not isinstance(out, torch.Tensor):
        hint = " (did you forget a `return`?)" if out is None else ""
        raise Mismatch(f"random_spans_noise_mask should return a torch.Tensor, got {type(out).__name__}{hint}")
    if out.dtype != torch.bool or out.shape != (length,):
        raise Mismatch(f"the mask should be a torch.bool tensor of shape ({length},), got {out.dtype} "
                       f"{tuple(out.shape)}")
    return out


def _mask_props(mask, length, density, mean, label):
    num_noise, num_spans = noise_counts(length, density, mean)
    got = int(mask.sum())
    r = runs(mask)
    if got != num_noise:
        key = "floor_not_round" if got == min(max(int(length * density), 1), length - 1) else None
        raise Mismatch(f"{got} noise tokens, expected round({length} * {density}) = {num_noise}", label, key)
    if r[0][0]:
        raise Mismatch("the first token is noise; the mask must start with a non-noise span", label,
                       "starts_with_noise")
    noise_spans = sum(v for v, _ in r)
    if noise_spans != num_spans or len(r) != 2 * num_spans:
        raise Mismatch(f"{noise_spans} noise spans and {len(r) - noise_spans} non-noise spans, expected "
                       f"{num_spans} of each (round({num_noise} / {mean}), at least 1), alternating", label)


@register("check_random_spans_noise_mask", minutes=20, points=3,
          forbid=("course_lib.checks",),
          hint="Count first: num_noise = round(length * density) kept in [1, length - 1], num_spans = "
               "max(round(num_noise / mean), 1). Then split num_noise into num_spans random positive parts, "
               "and length - num_noise likewise, and lay them out keep, noise, keep, noise, ...",
          idea="A random split of n items into k non-empty parts: choose k - 1 of the n - 1 gaps between "
               "items as cut points, uniformly without replacement (torch.randperm(n - 1, generator=g)[:k - 1]), "
               "sort them, and take the differences of [0, cuts..., n]. Interleave the two length lists "
               "(keep first) and expand with torch.repeat_interleave.",
          reference="""import torch


def random_spans_noise_mask(length, noise_density, mean_noise_span_length, generator):
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)

    def random_split(n):  # n items into num_spans non-empty runs, every split equally likely
        cuts = torch.randperm(n - 1, generator=generator)[: num_spans - 1].sort().values + 1
        return torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([n])]))  # (num_spans,)

    keep_lengths = random_split(length - num_noise)  # (S,)
    noise_lengths = random_split(num_noise)  # (S,)
    lengths = torch.stack([keep_lengths, noise_lengths], dim=1).flatten()  # (2 S,): keep, noise, keep, ...
    span_index = torch.repeat_interleave(torch.arange(2 * num_spans), lengths)  # (length,)
    return span_index % 2 == 1  # (length,): the odd spans are noise
""", misconceptions=MASK_MISCONCEPTIONS)
def check_random_spans_noise_mask(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    with single_thread():  # hundreds of calls on tensors of a few elements: a busy thread pool only slows them
        return _grade_mask(learner)


def _grade_mask(learner):
    n = 0
    for i, (length, density, mean) in enumerate(MASK_CASES):
        label = f"case: length={length}, noise_density={density}, mean_noise_span_length={mean}"
        masks = [_one_mask(learner, length, density, mean, 100 * i + s, 500 + 10 * i + j)  # seeds 1, 1, 2, 3, 4
                 for j, s in enumerate((1, 1, 2, 3, 4))]
        counts = sorted({int(m.sum()) for m in masks})
        if len(counts) > 1:
            raise Mismatch(f"the number of noise tokens changes from draw to draw ({counts}); it must be exactly "
                           f"{noise_counts(length, density, mean)[0]}", label, "per_token_coin")
        for m in masks:
            _mask_props(m, length, density, mean, label)
        if not torch.equal(masks[0], masks[1]):
            raise Mismatch("two calls with generators seeded alike gave different masks", label, "ignores_generator")
        n += 1
    for i, case in enumerate(DIST_CASES):
        _distribution(learner, case, 10_000 * (i + 1))
    return n, f"and {DIST_DRAWS} draws at each of {len(DIST_CASES)} lengths for the span-length distribution"


def _distribution(learner, case, seed):
    """Every split of the noise and of the kept tokens into num_spans non-empty runs is equally likely, and
    the two splits are independent: each layout of run lengths has probability 1 / (C(noise-1, S-1) C(keep-1, S-1))."""
    length, density, mean = case
    num_noise, num_spans = noise_counts(*case)
    layouts = math.comb(num_noise - 1, num_spans - 1) * math.comb(length - num_noise - 1, num_spans - 1)
    what = f"length={length}, noise_density={density}, mean_noise_span_length={mean}"
    tally: Counter = Counter()
    for d in range(DIST_DRAWS):
        m = _one_mask(learner, *case, seed + d, seed + 5000 + d)
        _mask_props(m, *case, f"case: {what} (draw {d})")
        tally[tuple(k for _, k in runs(m))] += 1
    if len(tally) == 1:
        raise Mismatch(f"all {DIST_DRAWS} masks with {what} are the same", "", "fixed_span_lengths")
    p = 1 / layouts
    sd = math.sqrt(DIST_DRAWS * p * (1 - p))
    table = ", ".join(f"{k}: {c}" for k, c in sorted(tally.items()))
    if len(tally) != layouts or any(abs(c - DIST_DRAWS * p) > 5 * sd for c in tally.values()):
        raise Mismatch(f"the span lengths are not a uniformly random split: over {DIST_DRAWS} masks with {what} "
                       f"({num_noise} noise tokens in {num_spans} spans), each of the {layouts} layouts should appear "
                       f"about {DIST_DRAWS * p:.0f} times (within 5 standard deviations, {5 * sd:.0f})",
                       f"counts of the run lengths (keep, noise, keep, noise, ...): {table}",
                       "fixed_span_lengths" if len(tally) <= 2 else None)


# ------------------------------------------------------------------ (b) inputs and targets
def span_corruption_reference(ids, noise_mask, sentinel_start, eos_id):
    """Plain loops. inputs: each noise span -> one sentinel (sentinel_start, sentinel_start - 1, ...);
    targets: each kept span -> the same sentinel numbering, i.e. sentinel i then noise span i, and a
    last sentinel when the sequence ends with kept tokens. Both end with eos_id."""
    def replace_runs(drop):
        out, sentinel, prev = [], sentinel_start, False
        for tok, d in zip(ids.tolist(), drop.tolist()):
            if d and not prev:
                out.append(sentinel)
                sentinel -= 1
            elif not d:
                out.append(tok)
            prev = d
        return torch.tensor(out + [eos_id], dtype=ids.dtype)
    return replace_runs(noise_mask), replace_runs(~noise_mask)


def _corruption_variant(ids, noise_mask, sentinel_start, eos_id, *, per_token=False, step=-1, swap=False,
                        copy_all=False, eos=True, final_sentinel=True, keep_first=False):
    def replace_runs(drop):
        out, prev = [], False
        sentinel = sentinel_start
        for tok, d in zip(ids.tolist(), drop.tolist()):
            if d and (per_token or not prev):
                out.append(sentinel)
                sentinel += step
                if keep_first:
                    out.append(tok)
            elif not d:
                out.append(tok)
            prev = d
        return out

    inputs = replace_runs(noise_mask)
    if copy_all:  # targets: the whole sequence with a sentinel before each noise span
        targets, sentinel, prev = [], sentinel_start, False
        for tok, d in zip(ids.tolist(), noise_mask.tolist()):
            if d and not prev:
                targets.append(sentinel)
                sentinel += step
            targets.append(tok)
            prev = d
    else:
        targets = replace_runs(~noise_mask)
        if not final_sentinel and not bool(noise_mask[-1]):
            targets = targets[:-1]
    tail = [eos_id] if eos else []
    inputs, targets = (torch.tensor(t + tail, dtype=ids.dtype) for t in (inputs, targets))
    return (targets, inputs) if swap else (inputs, targets)


CORRUPTION_MISCONCEPTIONS = {
    "one_sentinel_per_token": "each noise TOKEN got its own sentinel; a whole noise span (a run of True) is "
                              "replaced by ONE sentinel.",
    "sentinels_count_up": "the sentinels count up (sentinel_start, sentinel_start + 1, ...); T5's count DOWN: "
                          "<extra_id_0> = sentinel_start, <extra_id_1> = sentinel_start - 1, ...",
    "swapped_inputs_targets": "inputs and targets are swapped: the encoder input keeps the non-noise tokens "
                              "(noise spans -> sentinels); the targets hold the noise spans, each after its sentinel.",
    "targets_copy_everything": "the targets contain the non-noise tokens too; they hold only the sentinels and "
                               "the dropped spans (every kept span becomes one sentinel).",
    "missing_eos": "eos_id is missing: append it at the end of both inputs and targets.",
    "span_boundary_off_by_one": "the span's first token is still in the inputs after its sentinel (and the "
                                "targets keep a kept token after theirs); the sentinel REPLACES the whole span.",
    "no_final_sentinel": "the targets lack their last sentinel. When the sequence ends with kept tokens, that "
                         "last kept span also becomes a sentinel in the targets (the paper's Figure 2: "
                         "'<X> for inviting <Y> last <Z>').",
    "mutates_input": "an input tensor was changed in place.",
}


def _corruption_cases():
    g = torch.Generator().manual_seed(6)
    fig2 = torch.tensor([False, False, True, True, False, False, False, False, True, False])
    cases = [("the paper's Figure 2: 'Thank you <X> me to your party <Y> week.' (10 tokens)",
              torch.arange(100, 110), fig2, 32099, 1)]
    for length, density, mean, start, eos, dtype in [(20, 0.15, 3.0, 32099, 1, torch.long),
                                                     (64, 0.15, 3.0, 32099, 1, torch.long),
                                                     (40, 0.3, 1.0, 99, 0, torch.int32),
                                                     (512, 0.15, 3.0, 32099, 1, torch.long)]:
        mask = _t5_mask(length, density, mean, g)
        ids = torch.randint(2, min(start - 9, 32000), (length,), generator=g, dtype=dtype)
        cases.append((f"{length} {dtype} tokens, noise_density={density}, mean_noise_span_length={mean}, "
                      f"sentinel_start={start}, eos_id={eos}", ids, mask, start, eos))
    ends_kept = torch.zeros(12, dtype=torch.bool)
    ends_kept[[1, 5, 6, 7]] = True  # spans of 1 and 3, the sequence ends with 4 kept tokens
    cases.append(("12 tokens, noise spans [1] and [5:8], ends with kept tokens", torch.arange(50, 62), ends_kept,
                  32099, 1))
    return cases


def _t5_mask(length, density, mean, g):
    """T5's mask (the procedure of part a), used to make the cases of part b."""
    num_noise, num_spans = noise_counts(length, density, mean)

    def split(n):
        cuts = torch.randperm(n - 1, generator=g)[: num_spans - 1].sort().values + 1
        return torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([n])]))

    lengths = torch.stack([split(length - num_noise), split(num_noise)], dim=1).flatten()  # (S, 2) -> (2S,)
    return torch.repeat_interleave(torch.arange(2 * num_spans), lengths) % 2 == 1


def _pair(out):
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Mismatch(f"span_corruption should return a pair (inputs, targets), got {type(out).__name__}")
    return out


def _joined(pair) -> torch.Tensor:
    """One tensor per case for matching misconceptions: inputs, a separator, targets."""
    a, b = pair
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return torch.tensor([])
    return torch.cat([a.reshape(-1).long(), torch.tensor([-7]), b.reshape(-1).long()]).double()  # 1-D


@register("check_span_corruption", minutes=20, points=3,
          forbid=("course_lib.checks",),
          hint="Find the first token of each run of True in noise_mask (True where the previous token is "
               "False); a running count of those starts numbers the spans, so span i's sentinel is "
               "sentinel_start - i. Inputs: keep non-noise tokens, put the sentinel at each span start, drop the "
               "rest. Targets: the same with the mask inverted. Append eos_id to both.",
          idea="One helper does both: replace_runs(mask) keeps ids where mask is False, writes "
               "sentinel_start + 1 - cumsum(starts) where a run starts, and drops the other run tokens; "
               "inputs = replace_runs(noise_mask), targets = replace_runs(~noise_mask), each + [eos_id]. With a "
               "T5 mask (first token kept) the two numberings line up: sentinel i precedes noise span i in both.",
          reference="""import torch


def span_corruption(ids, noise_mask, sentinel_start, eos_id):
    def replace_runs(mask):  # every run of True in mask -> one sentinel, counting down
        prev = torch.cat([mask.new_zeros(1), mask[:-1]])  # (T,): was the token before in the mask?
        first = mask & ~prev  # (T,): the first token of each run
        sentinels = sentinel_start + 1 - torch.cumsum(first, dim=0)  # (T,): run 1 -> sentinel_start, ...
        out = torch.where(first, sentinels.to(ids.dtype), ids)[~(mask & prev)]  # (T',): one token per run
        return torch.cat([out, torch.tensor([eos_id], dtype=ids.dtype)])  # (T' + 1,)

    return replace_runs(noise_mask), replace_runs(~noise_mask)
""", misconceptions=CORRUPTION_MISCONCEPTIONS)
def check_span_corruption(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _corruption_cases()
    refs, outs = [], []
    for label, *args in cases:
        refs.append(span_corruption_reference(*args))
        before = snapshot(args)
        outs.append(call_learner(learner, *args))
        try:
            assert_unmodified(args, before, ("ids", "noise_mask"))
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {label}", "mutates_input") from None
    variants = {
        "one_sentinel_per_token": dict(per_token=True),
        "sentinels_count_up": dict(step=+1),
        "swapped_inputs_targets": dict(swap=True),
        "targets_copy_everything": dict(copy_all=True),
        "missing_eos": dict(eos=False),
        "span_boundary_off_by_one": dict(keep_first=True),
        "no_final_sentinel": dict(final_sentinel=False),
    }
    for (label, *args), out, ref in zip(cases, outs, refs):
        try:
            inputs, targets = _pair(out)
            compare(inputs, ref[0], "inputs")
            compare(targets, ref[1], "targets")
        except Mismatch as mm:
            runs_ = {k: (lambda kw=kw: [_joined(_corruption_variant(*a, **kw)) for _, *a in cases])
                     for k, kw in variants.items()}
            key = diagnose([_joined(o) if isinstance(o, (tuple, list)) and len(o) == 2 else o for o in outs],
                           runs_, [_joined(r) for r in refs])
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    return len(cases)


# ------------------------------------------------------------------ (c) a training batch
def t5_collate_reference(examples, pad_id):
    """Right-pad with PyTorch's pad_sequence; labels padded with -100; decoder inputs = labels shifted
    right, starting with pad_id (T5's decoder_start_token_id) and with -100 read as pad_id."""
    inputs = [i for i, _ in examples]
    targets = [t for _, t in examples]
    input_ids = torch.nn.utils.rnn.pad_sequence(inputs, batch_first=True, padding_value=pad_id)
    labels = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=-100)
    attention_mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(i) for i in inputs], batch_first=True)
    decoder_input_ids = labels.roll(1, dims=1)
    decoder_input_ids[:, 0] = pad_id
    decoder_input_ids[decoder_input_ids == -100] = pad_id
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "decoder_input_ids": decoder_input_ids}


COLLATE_KEYS = ("input_ids", "attention_mask", "labels", "decoder_input_ids")


def _collate_variant(examples, pad_id, *, label_pad=-100, mask_inverted=False, shift=True, minus100_kept=False,
                     left=False):
    def pad(seqs, value):
        T = max(len(s) for s in seqs)
        out = torch.full((len(seqs), T), value, dtype=torch.long)
        for b, s in enumerate(seqs):
            if left:
                out[b, T - len(s):] = s
            else:
                out[b, : len(s)] = s
        return out
    input_ids = pad([i for i, _ in examples], pad_id)
    labels = pad([t for _, t in examples], label_pad)
    mask = pad([torch.ones(len(i), dtype=torch.long) for i, _ in examples], 0)
    if mask_inverted:
        mask = 1 - mask
    dec = torch.cat([torch.full((len(examples), 1), pad_id), labels[:, :-1]], 1) if shift else labels.clone()
    if not minus100_kept:
        dec = dec.masked_fill(dec == -100, pad_id)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "decoder_input_ids": dec}


COLLATE_MISCONCEPTIONS = {
    "labels_padded_with_pad": "the labels are padded with pad_id, so the loss would train the model to predict "
                              "padding; pad them with -100, the index cross_entropy ignores.",
    "attention_mask_inverted": "the attention mask is inverted: 1 marks a real token, 0 padding.",
    "decoder_inputs_not_shifted": "decoder_input_ids equal the labels; they are the labels shifted right by one, "
                                  "starting with pad_id (T5's decoder start token), so step t sees only labels < t.",
    "decoder_inputs_keep_minus100": "decoder_input_ids contain -100, which is not a token id (an embedding lookup "
                                    "fails); replace -100 by pad_id after shifting.",
    "left_padding": "the sequences are padded on the left; T5's encoder-decoder batches pad on the right "
                    "(tokens first, then padding).",
    "mutates_input": "an input tensor was changed in place.",
}


def _collate_cases():
    g = torch.Generator().manual_seed(60)
    cases = []
    for label, lengths, pad_id in [("3 sequences of 20, 33 and 12 tokens, pad_id=0", (20, 33, 12), 0),
                                   ("1 sequence of 16 tokens, pad_id=0", (16,), 0),
                                   ("4 sequences of 64, 9, 64 and 40 tokens, pad_id=5", (64, 9, 64, 40), 5)]:
        examples = []
        for length in lengths:
            mask = _t5_mask(length, 0.15, 3.0, g)
            ids = torch.randint(10, 32000, (length,), generator=g)
            examples.append(span_corruption_reference(ids, mask, 32099, 1))
        cases.append((f"{label} (inputs and targets made by span_corruption)", examples, pad_id))
    return cases


def _collate_joined(out) -> torch.Tensor:
    if not (isinstance(out, dict) and all(isinstance(out.get(k), torch.Tensor) for k in COLLATE_KEYS)):
        return torch.tensor([])
    return torch.cat([torch.cat([out[k].reshape(-1).double(), torch.tensor([0.5])]) for k in COLLATE_KEYS])  # 1-D


@register("check_t5_collate", minutes=20, points=2,
          forbid=("torch.nn.utils.rnn.pad_sequence",
                  "course_lib.models.t5.shift_right", "transformers", "course_lib.checks"),
          hint="Pad every inputs row on the right to the longest with pad_id, every targets row with -100; the "
               "attention mask is 1 at real tokens; decoder_input_ids = [pad_id] + labels[:, :-1] with -100 -> pad_id.",
          idea="Start from torch.full((B, T_max), pad_id) and torch.full((B, T_max), -100) and copy each "
               "sequence into row b, positions [0, len). Then the shift of exercise 3: cat a column of pad_id in "
               "front of labels[:, :-1] and masked_fill the -100s with pad_id.",
          reference="""import torch


def t5_collate(examples, pad_id):
    B = len(examples)
    T_in = max(len(inputs) for inputs, _ in examples)
    T_out = max(len(targets) for _, targets in examples)
    input_ids = torch.full((B, T_in), pad_id, dtype=torch.long)  # (B, T_in)
    labels = torch.full((B, T_out), -100, dtype=torch.long)  # (B, T_out): -100 is ignored by the loss
    for b, (inputs, targets) in enumerate(examples):
        input_ids[b, : len(inputs)] = inputs
        labels[b, : len(targets)] = targets
    lengths = torch.tensor([len(inputs) for inputs, _ in examples])  # (B,)
    attention_mask = (torch.arange(T_in) < lengths[:, None]).long()  # (B, T_in)
    decoder_input_ids = torch.cat([torch.full((B, 1), pad_id), labels[:, :-1]], dim=1)  # (B, T_out)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == -100, pad_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "decoder_input_ids": decoder_input_ids}
""", misconceptions=COLLATE_MISCONCEPTIONS)
def check_t5_collate(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _collate_cases()
    refs, outs = [], []
    for label, examples, pad_id in cases:
        refs.append(t5_collate_reference(examples, pad_id))
        before = [t.clone() for pair in examples for t in pair]
        outs.append(call_learner(learner, examples, pad_id))
        if any(not torch.equal(a, b) for a, b in zip((t for pair in examples for t in pair), before)):
            raise Mismatch("your code modified one of the (inputs, targets) tensors in place; copy them into new "
                           "tensors instead", f"case: {label}", "mutates_input")
    variants = {
        "labels_padded_with_pad": lambda ex, p: _collate_variant(ex, p, label_pad=p),
        "attention_mask_inverted": lambda ex, p: _collate_variant(ex, p, mask_inverted=True),
        "decoder_inputs_not_shifted": lambda ex, p: _collate_variant(ex, p, shift=False),
        "decoder_inputs_keep_minus100": lambda ex, p: _collate_variant(ex, p, minus100_kept=True),
        "left_padding": lambda ex, p: _collate_variant(ex, p, left=True),
    }
    for (label, examples, pad_id), out, ref in zip(cases, outs, refs):
        try:
            if not isinstance(out, dict):
                raise Mismatch(f"t5_collate should return a dict with keys {', '.join(COLLATE_KEYS)}, got "
                               f"{type(out).__name__}")
            missing = [k for k in COLLATE_KEYS if k not in out]
            if missing:
                raise Mismatch(f"the returned dict lacks {', '.join(missing)}")
            for k in COLLATE_KEYS:
                compare(out[k], ref[k], k)
        except Mismatch as mm:
            runs_ = {k: (lambda v=v: [_collate_joined(v(ex, p)) for _, ex, p in cases]) for k, v in variants.items()}
            key = diagnose([_collate_joined(o) for o in outs], runs_, [_collate_joined(r) for r in refs])
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    return len(cases)
