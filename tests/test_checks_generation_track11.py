"""Exercise 11's parts 3 and 4, both ways: check_beam_search, check_repetition_penalty,
check_no_repeat_ngram and check_generate_penalized accept the printed solutions and other correct
implementations, refuse Hugging Face's generation code, and reject the stub and each named
misconception, written here as a learner would write it (not with the checks' own re-creations),
with that diagnosis."""
from functools import cache
from types import SimpleNamespace

import pytest
import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor
from transformers.utils import logging as hf_logging

from course_lib.checks import (check_beam_search, check_generate_penalized, check_no_repeat_ngram,
                               check_repetition_penalty)
from course_lib.checks.generation_track11 import (BEAM_CASES, PENALIZED_CASES, beam_model, beam_prompt,
                                                  expected_beam, ngram_variant, penalized_prompt, penalized_variant,
                                                  rep_variant, _ngram_cases, _rep_cases)
from course_lib.interop import to_hf

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

BEAM = solved("check_beam_search")
REP = solved("check_repetition_penalty")
NGRAM = solved("check_no_repeat_ngram")


# ================================================================== the independent references: Hugging Face
def hf_copy(seed, scale):
    """The check's course_lib GPT as a GPT2LMHeadModel. (to_hf keeps GPT-2's special-token ids, 50256,
    outside the tiny vocabulary, and transformers warns about them; generate gets its own ids.)"""
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return to_hf(beam_model(seed, scale))
    finally:
        hf_logging.set_verbosity(before)


@cache
def hf_beam_search(case):
    seed, scale, k, n, lp, eos = case
    prompt = beam_prompt(seed)[None]  # (1, T)
    out = hf_copy(seed, scale).generate(prompt, attention_mask=torch.ones_like(prompt), num_beams=k,
                                        length_penalty=lp, early_stopping=True, do_sample=False, max_new_tokens=n,
                                        eos_token_id=eos, pad_token_id=eos, output_scores=True,
                                        return_dict_in_generate=True)
    return out.sequences[0], float(out.sequences_scores[0])


@cache
def hf_generate_penalized(case):
    seed, scale, B, n, penalty, ngram = case
    idx = penalized_prompt(seed, B)
    return hf_copy(seed, scale).generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=n,
                                         repetition_penalty=penalty, no_repeat_ngram_size=ngram, pad_token_id=0)


@pytest.mark.parametrize("case", BEAM_CASES)
def test_beam_expectation_is_hugging_face_generate(case):
    seq, score = expected_beam(case)
    hf_seq, hf_score = hf_beam_search(case)
    assert torch.equal(seq, hf_seq) and abs(score - hf_score) < 1e-5 * (1 + abs(hf_score)), (seq, hf_seq, score, hf_score)


@pytest.mark.parametrize("case", PENALIZED_CASES)
def test_penalized_expectation_is_hugging_face_generate(case):
    seed, scale, B, n, penalty, ngram = case
    ours = penalized_variant(beam_model(seed, scale), penalized_prompt(seed, B), n, penalty, ngram)
    assert torch.equal(ours, hf_generate_penalized(case))


def random_processor_inputs(seed, B=3, T=15, V=11):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, generator=g) * 3, torch.randint(0, V // 2, (B, T), generator=g)  # many repeats


def test_processor_expectations_are_hugging_face():
    """On every case of the checks and on random ones, the checks' expected logits are Hugging Face's."""
    for case in _rep_cases():
        logits, ids, penalty = case.args
        assert torch.equal(rep_variant(logits, ids, penalty),
                           RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())), case.label
    for case in _ngram_cases():
        logits, ids, n = case.args
        assert torch.equal(ngram_variant(logits, ids, n), NoRepeatNGramLogitsProcessor(n)(ids, logits.clone())), case.label
    for seed in range(5):
        logits, ids = random_processor_inputs(seed)
        for penalty in (0.7, 1.3, 3.0):
            assert torch.equal(rep_variant(logits, ids, penalty), RepetitionPenaltyLogitsProcessor(penalty)(ids, logits))
        for n in (1, 2, 3, 4):
            assert torch.equal(ngram_variant(logits, ids, n), NoRepeatNGramLogitsProcessor(n)(ids, logits.clone()))


# ================================================================== beam search
@torch.no_grad()
def learner_beam(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True, mistake=None):
    """A learner's beam search with Python lists of (sum, tokens); `mistake` switches one error on."""
    k = num_beams
    beams = [(1.0 if mistake == "probabilities" else 0.0, prompt.tolist())]
    if mistake == "duplicate_start":
        beams = beams * k
    done = []
    cache = model.new_cache() if use_cache else None
    for step in range(1, max_new_tokens + 1):
        if cache is None or step == 1:
            inp = torch.tensor([toks for _, toks in beams])
        else:
            inp = torch.tensor([[toks[-1]] for _, toks in beams])
        logits = model(inp, cache=cache).logits[:, -1].float()
        if mistake == "probabilities":
            table = torch.softmax(logits, -1) * torch.tensor([s for s, _ in beams])[:, None]
        else:
            table = torch.log_softmax(logits, -1) + torch.tensor([s for s, _ in beams])[:, None]
        cands = []
        for b in range(len(beams)):
            tokens = table[b].topk(2).indices.tolist() if mistake == "per_beam_topk" else range(table.size(1))
            cands += [(table[b, t].item(), b, t) for t in tokens]
        cands.sort(reverse=True)
        cands = cands[:k if mistake == "too_few_candidates" else 2 * k]
        running, parents = [], []
        for rank, (s, b, t) in enumerate(cands):
            ends = t == eos_id or step == max_new_tokens
            if ends and (rank < k or mistake == "eos_beyond_top_k"):
                n = step
                if mistake == "full_length":
                    n = len(prompt) + step
                elif mistake == "eos_not_counted" and t == eos_id:
                    n = step - 1
                lp = 0.0 if mistake == "no_length_penalty" else length_penalty
                done.append((s / max(n, 1) ** lp, beams[b][1] + [t]))
            if (not ends or mistake == "finished_stay_running") and len(running) < k and step < max_new_tokens:
                running.append((s, beams[b][1] + [t]))
                parents.append(b)
        done = sorted(done, reverse=True)[:k]
        if len(done) == k or step == max_new_tokens or (mistake == "stops_at_first_finished" and done):
            break
        if cache is not None:
            for layer in cache:
                if mistake != "cache_not_reordered":
                    layer.k, layer.v = layer.k[parents], layer.v[parents]
                elif step == 1:
                    layer.k, layer.v = layer.k.repeat(len(parents), 1, 1, 1), layer.v.repeat(len(parents), 1, 1, 1)
        beams = running
    score, toks = done[0]
    return torch.tensor(toks), score


def beam_lists(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
    return learner_beam(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty, use_cache)


def beam_float64_tensor_score(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
    """Sums kept in float64; the score returned as a 0-d tensor."""
    seqs, sums, done = prompt[None], torch.zeros(1, dtype=torch.float64), []
    cache = model.new_cache() if use_cache else None
    with torch.no_grad():
        for step in range(1, max_new_tokens + 1):
            feed = seqs if cache is None or step == 1 else seqs[:, -1:]
            logp = torch.log_softmax(model(feed, cache=cache).logits[:, -1].double(), -1)  # (K, V)
            total = (sums[:, None] + logp).reshape(-1)  # (K * V,)
            vals, idx = torch.sort(total, descending=True)
            vals, idx = vals[:2 * num_beams], idx[:2 * num_beams]
            src, tok = torch.div(idx, logp.size(1), rounding_mode="floor"), torch.remainder(idx, logp.size(1))
            last = step == max_new_tokens
            ends = (tok == eos_id) | last  # (2k,)
            rank = torch.arange(2 * num_beams)
            for r in (ends & (rank < num_beams)).nonzero().flatten().tolist():
                done.append((vals[r] / step ** length_penalty, torch.cat([seqs[src[r]], tok[r:r + 1]])))
            done = sorted(done, key=lambda d: -d[0].item())[:num_beams]
            if len(done) == num_beams or last:
                break
            go = (~ends).nonzero().flatten()[:num_beams]  # (k,)
            if cache is not None:
                for layer in cache:
                    layer.k, layer.v = layer.k.index_select(0, src[go]), layer.v.index_select(0, src[go])
            seqs, sums = torch.cat([seqs[src[go]], tok[go, None]], 1), vals[go]
    return done[0][1], done[0][0]


@pytest.mark.parametrize("impl", [BEAM, beam_lists, beam_float64_tensor_score])
def test_beam_accepts_correct_implementations(impl):
    r = check_beam_search(impl)
    assert r.passed and r.points == r.max_points == 5, (r.message, r.detail)


def test_beam_cases_are_far_from_ties():
    """Logit noise 100 times float32's rounding changes no decision of the printed solution on the check's
    cases, so other CPUs, thread counts and summation orders reach Hugging Face's answers too."""
    class Noisy(torch.nn.Module):
        def __init__(self, model, seed):
            super().__init__()
            self.model, self.g = model, torch.Generator().manual_seed(seed)

        def new_cache(self):
            return self.model.new_cache()

        def forward(self, ids, cache=None):
            logits = self.model(ids, cache=cache).logits
            return SimpleNamespace(logits=logits + 1e-4 * torch.randn(logits.shape, generator=self.g))

    for case in BEAM_CASES:
        seed, scale, k, n, lp, eos = case
        seq, score = hf_beam_search(case)
        assert seq[:len(beam_prompt(seed))].tolist() == beam_prompt(seed).tolist()
        for noise_seed in range(3):
            got, got_score = BEAM(Noisy(beam_model(seed, scale), noise_seed), beam_prompt(seed), k, n, eos, lp,
                                  use_cache=False)
            assert torch.equal(got, seq) and abs(got_score - score) < 1e-3 * (1 + abs(score)), (case, got, seq)


def test_beam_cases_end_both_ways():
    """Some best hypotheses end with EOS, some run to max_new_tokens."""
    ends = [hf_beam_search(c)[0][-1].item() == c[5] for c in BEAM_CASES]
    lengths = [len(hf_beam_search(c)[0]) - len(beam_prompt(c[0])) for c in BEAM_CASES]
    assert any(ends) and not all(ends)
    assert any(L < c[3] for L, c in zip(lengths, BEAM_CASES))


def beam_with_hf_generate(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
    from course_lib.interop import to_hf
    out = to_hf(model).generate(prompt[None], num_beams=num_beams, max_new_tokens=max_new_tokens,
                                eos_token_id=eos_id, length_penalty=length_penalty, early_stopping=True,
                                output_scores=True, return_dict_in_generate=True)
    return out.sequences[0], out.sequences_scores[0].item()


def test_beam_refuses_hugging_face_generate():
    assert_delegates(check_beam_search(beam_with_hf_generate), "course_lib.interop.to_hf")


def test_beam_stub_is_not_attempted():
    def beam_search(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
        raise NotImplementedError()
    assert_not_attempted(check_beam_search(beam_search))


def test_beam_bad_answers_are_explained():
    r = check_beam_search(lambda model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True:
                          beam_lists(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty, use_cache)[0])
    assert not r.passed and "expected a pair (sequence, score)" in r.message, r.message
    r = check_beam_search(lambda model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True:
                          (prompt[None], 0.0))
    assert not r.passed and "1-D tensor" in r.message, r.message
    r = check_beam_search(lambda model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True:
                          model(prompt).logits)
    assert not r.passed and "your code raised" in r.message, r.message


def beam_mistake(key):
    def beam_search(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
        return learner_beam(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty, use_cache, mistake=key)
    return beam_search


@torch.no_grad()
def beam_ignores_cache(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
    return learner_beam(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty, use_cache=False)


def beam_mutates_prompt(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
    out = learner_beam(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty, use_cache)
    prompt[0] = eos_id
    return out


BEAM_BAD = {key: beam_mistake(key) for key in (
    "no_length_penalty", "full_length", "eos_not_counted", "finished_stay_running", "probabilities",
    "per_beam_topk", "too_few_candidates", "eos_beyond_top_k", "duplicate_start", "stops_at_first_finished",
    "cache_not_reordered")}
BEAM_BAD.update(ignores_cache=beam_ignores_cache, mutates_input=beam_mutates_prompt)


@pytest.mark.parametrize("key", list(BEAM_BAD))
def test_beam_diagnoses_each_misconception(key):
    assert_diagnosed(check_beam_search(BEAM_BAD[key]), key)


def test_beam_misconceptions_are_all_tested():
    assert_all_tested("check_beam_search", BEAM_BAD)


# ================================================================== repetition penalty
def rep_loop(logits, input_ids, penalty):
    out = logits.clone()
    for b in range(logits.shape[0]):
        for t in set(input_ids[b].tolist()):
            out[b, t] = out[b, t] * penalty if out[b, t] < 0 else out[b, t] / penalty
    return out


def rep_gather_scatter(logits, input_ids, penalty):
    picked = logits.gather(1, input_ids)  # (B, T): repeated ids write the same value twice
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.scatter(1, input_ids, picked)


def rep_float64(logits, input_ids, penalty):
    return REP(logits.double(), input_ids, penalty).to(logits.dtype)


@pytest.mark.parametrize("impl", [REP, rep_loop, rep_gather_scatter, rep_float64])
def test_rep_accepts_correct_implementations(impl):
    r = check_repetition_penalty(impl)
    assert r.passed and r.points == r.max_points == 2, (r.message, r.detail)


def rep_hf(logits, input_ids, penalty):
    return RepetitionPenaltyLogitsProcessor(penalty)(input_ids, logits)


make_processor = RepetitionPenaltyLogitsProcessor


def rep_hf_alias(logits, input_ids, penalty):
    return make_processor(float(penalty))(input_ids, logits.clone())


@pytest.mark.parametrize("impl", [rep_hf, rep_hf_alias])
def test_rep_refuses_hugging_face(impl):
    assert_delegates(check_repetition_penalty(impl), "RepetitionPenaltyLogitsProcessor")


def test_rep_stub_and_bad_output():
    def repetition_penalty(logits, input_ids, penalty):
        raise NotImplementedError()
    assert_not_attempted(check_repetition_penalty(repetition_penalty))
    r = check_repetition_penalty(lambda logits, input_ids, penalty: rep_loop(logits, input_ids, penalty) * float("nan"))
    assert not r.passed and "NaN" in r.message, r.message
    r = check_repetition_penalty(lambda logits, input_ids, penalty: rep_loop(logits, input_ids, penalty)[0])
    assert not r.passed and "shape" in r.message, r.message


def rep_divides_all(logits, input_ids, penalty):
    out = logits.clone()
    for b in range(len(out)):
        ids = input_ids[b].unique()
        out[b, ids] = out[b, ids] / penalty
    return out


def rep_inverted(logits, input_ids, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, input_ids, True)
    return torch.where(seen, torch.where(logits > 0, logits * penalty, logits / penalty), logits)


def rep_per_occurrence(logits, input_ids, penalty):
    out = logits.clone()
    for b in range(len(out)):
        for t in input_ids[b].tolist():  # every occurrence
            out[b, t] = out[b, t] * penalty if out[b, t] < 0 else out[b, t] / penalty
    return out


def rep_whole_batch(logits, input_ids, penalty):
    ids = torch.unique(input_ids)
    out = logits.clone()
    out[:, ids] = torch.where(out[:, ids] < 0, out[:, ids] * penalty, out[:, ids] / penalty)
    return out


def rep_in_place(logits, input_ids, penalty):
    for b in range(len(logits)):
        for t in set(input_ids[b].tolist()):
            logits[b, t] = logits[b, t] * penalty if logits[b, t] < 0 else logits[b, t] / penalty
    return logits


REP_BAD = {"divides_negative": rep_divides_all, "inverted": rep_inverted, "per_occurrence": rep_per_occurrence,
           "whole_batch": rep_whole_batch, "mutates_input": rep_in_place}


@pytest.mark.parametrize("key", list(REP_BAD))
def test_rep_diagnoses_each_misconception(key):
    assert_diagnosed(check_repetition_penalty(REP_BAD[key]), key)


def test_rep_misconceptions_are_all_tested():
    assert_all_tested("check_repetition_penalty", REP_BAD)


# ================================================================== no repeated n-grams
def ngram_dict(logits, input_ids, n):
    """Every (n-1)-prefix -> the tokens that followed it, then look up the last n - 1 tokens."""
    out = logits.clone()
    for b, row in enumerate(input_ids.tolist()):
        seen = {}
        for i in range(len(row) - n + 1):
            seen.setdefault(tuple(row[i:i + n - 1]), set()).add(row[i + n - 1])
        if len(row) >= n:
            for t in seen.get(tuple(row[len(row) - n + 1:]), ()):
                out[b, t] = float("-inf")
    return out


def ngram_unfold(logits, input_ids, n):
    B, T = input_ids.shape
    if T < n:
        return logits.clone()
    windows = input_ids.unfold(1, n, 1)  # (B, T - n + 1, n)
    prefix = input_ids[:, T - n + 1:]  # (B, n - 1)
    hit = (windows[..., :-1] == prefix[:, None]).all(-1)  # (B, T - n + 1)
    banned = torch.zeros(B, logits.size(1) + 1, dtype=torch.bool)
    banned.scatter_(1, torch.where(hit, windows[..., -1], logits.size(1)), True)
    return logits.masked_fill(banned[:, :-1], float("-inf"))


@pytest.mark.parametrize("impl", [NGRAM, ngram_dict, ngram_unfold])
def test_ngram_accepts_correct_implementations(impl):
    r = check_no_repeat_ngram(impl)
    assert r.passed and r.points == r.max_points == 2, (r.message, r.detail)


def ngram_hf(logits, input_ids, n):
    return NoRepeatNGramLogitsProcessor(n)(input_ids, logits)


def test_ngram_refuses_hugging_face():
    assert_delegates(check_no_repeat_ngram(ngram_hf), "NoRepeatNGramLogitsProcessor")


def test_ngram_stub_and_exception():
    def no_repeat_ngram(logits, input_ids, n):
        raise NotImplementedError()
    assert_not_attempted(check_no_repeat_ngram(no_repeat_ngram))
    r = check_no_repeat_ngram(lambda logits, input_ids, n: logits[:, input_ids[0, -n]])
    assert not r.passed, r.message


def _ngram_learner(logits, input_ids, n, match, stop=0, rows_of=None, ban=float("-inf")):
    out = logits.clone()
    T = input_ids.shape[1]
    for b in range(input_ids.shape[0]):
        prefix = input_ids[b, T - match:].tolist() if match else []
        for row in (input_ids.tolist() if rows_of == "all" else [input_ids[b].tolist()]):
            for i in range(T - match - stop):
                if row[i:i + match] == prefix:
                    out[b, row[i + match]] = ban
    return out


def ngram_prefix_of_n(logits, input_ids, n):
    return _ngram_learner(logits, input_ids, n, match=n)


def ngram_bigram(logits, input_ids, n):
    return _ngram_learner(logits, input_ids, n, match=1)


def ngram_skips_last(logits, input_ids, n):
    return _ngram_learner(logits, input_ids, n, match=n - 1, stop=1)


def ngram_all_rows(logits, input_ids, n):
    return _ngram_learner(logits, input_ids, n, match=n - 1, rows_of="all")


def ngram_finite(logits, input_ids, n):
    return _ngram_learner(logits, input_ids, n, match=n - 1, ban=-1e9)


def ngram_in_place(logits, input_ids, n):
    banned = ngram_dict(logits, input_ids, n).isinf()
    return logits.masked_fill_(banned, float("-inf"))


NGRAM_BAD = {"prefix_of_n": ngram_prefix_of_n, "ignores_n": ngram_bigram, "misses_last_ngram": ngram_skips_last,
             "whole_batch": ngram_all_rows, "finite_ban": ngram_finite, "mutates_input": ngram_in_place}


def test_ngram_learner_helper_is_right_when_no_mistake():
    assert check_no_repeat_ngram(lambda logits, input_ids, n: _ngram_learner(logits, input_ids, n, match=n - 1)).passed


@pytest.mark.parametrize("key", list(NGRAM_BAD))
def test_ngram_diagnoses_each_misconception(key):
    assert_diagnosed(check_no_repeat_ngram(NGRAM_BAD[key]), key)


def test_ngram_misconceptions_are_all_tested():
    assert_all_tested("check_no_repeat_ngram", NGRAM_BAD)


# ================================================================== greedy decoding through both processors
GEN = solved("check_generate_penalized")


@torch.no_grad()
def gen_with_test_processors(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
    """Another correct loop: this file's own processors, both always applied (1.0 and 0 change nothing)."""
    for _ in range(n):
        logits = model(idx).logits[:, -1]
        logits = ngram_dict(rep_loop(logits, idx, penalty), idx, no_repeat_ngram_size) if no_repeat_ngram_size \
            else rep_loop(logits, idx, penalty)
        idx = torch.cat([idx, logits.argmax(-1)[:, None]], 1)
    return idx


@pytest.mark.parametrize("impl", [GEN, gen_with_test_processors])
def test_penalized_accepts_correct_implementations(impl):
    r = check_generate_penalized(impl)
    assert r.passed and r.points == r.max_points == 2, (r.message, r.detail)


def test_penalized_cases_are_changed_by_the_penalties():
    """On every case Hugging Face's penalised tokens differ from plain greedy decoding."""
    for case in PENALIZED_CASES:
        seed, scale, B, n, _, _ = case
        plain = GEN(beam_model(seed, scale), penalized_prompt(seed, B), n)
        assert not torch.equal(plain, hf_generate_penalized(case)), case


@torch.no_grad()
def gen_with_hf_processor(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
    for _ in range(n):
        logits = RepetitionPenaltyLogitsProcessor(float(penalty))(idx, model(idx).logits[:, -1])
        idx = torch.cat([idx, logits.argmax(-1)[:, None]], 1)
    return idx


def test_penalized_refuses_hugging_face_and_stub():
    assert_delegates(check_generate_penalized(gen_with_hf_processor), "RepetitionPenaltyLogitsProcessor")

    def generate_penalized(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
        raise NotImplementedError()
    assert_not_attempted(check_generate_penalized(generate_penalized))


@torch.no_grad()
def _gen_learner(model, idx, n, penalty, size, seen):
    prompt = idx
    for _ in range(n):
        logits = model(idx).logits[:, -1]
        ids = prompt if seen == "prompt" else idx[:, prompt.shape[1]:]
        if penalty != 1.0 and ids.shape[1] > 0:
            logits = rep_gather_scatter(logits, ids, penalty)
        if size:
            logits = ngram_unfold(logits, ids, size)
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], 1)
    return idx


def gen_prompt_only(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
    return _gen_learner(model, idx, n, penalty, no_repeat_ngram_size, "prompt")


def gen_generated_only(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
    return _gen_learner(model, idx, n, penalty, no_repeat_ngram_size, "generated")


def gen_new_tokens_only(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
    return GEN(model, idx, n, penalty, no_repeat_ngram_size)[:, idx.shape[1]:]


def gen_overwrites_prompt(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
    out = GEN(model, idx, n, penalty, no_repeat_ngram_size)
    idx[:, 0] = out[:, -1]
    return out


PENALIZED_BAD = {"prompt_only": gen_prompt_only, "generated_only": gen_generated_only,
                 "drops_prompt": gen_new_tokens_only, "mutates_input": gen_overwrites_prompt}


@pytest.mark.parametrize("key", list(PENALIZED_BAD))
def test_penalized_diagnoses_each_misconception(key):
    assert_diagnosed(check_generate_penalized(PENALIZED_BAD[key]), key)


def test_penalized_misconceptions_are_all_tested():
    assert_all_tested("check_generate_penalized", PENALIZED_BAD)
