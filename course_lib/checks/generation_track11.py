"""Checks for exercise 11's parts 3 and 4: beam search, the repetition penalty and the n-gram blocker,
each held to what Hugging Face `transformers` (5.x) does. The checks compare with re-creations written
here (the variants below with no mistake switched on), because the grader's process may not load
transformers' compiled libraries; tests/test_checks_generation_track11.py proves each re-creation
equal to transformers on every case the checks use.

* `check_beam_search(beam_search)`: the learner's beam search on small course_lib GPTs, with and
  without the KV cache, against `generate(num_beams=k, length_penalty=a, early_stopping=True,
  do_sample=False)` of the same weights copied into a `GPT2LMHeadModel` (`course_lib.interop.to_hf`):
  the same best sequence and the same score (sum of log-probabilities / generated length ** a).
* `check_repetition_penalty(repetition_penalty)`: equal to `RepetitionPenaltyLogitsProcessor`.
* `check_no_repeat_ngram(no_repeat_ngram)`: equal to `NoRepeatNGramLogitsProcessor`.
* `check_generate_penalized(generate_penalized)`: greedy decoding through both processors, equal to
  `generate(do_sample=False, repetition_penalty=..., no_repeat_ngram_size=...)` on the same weights.

Each misconception is a small re-creation of the mistake; the verdict names the one whose outputs
equal the learner's.
"""
from __future__ import annotations

import math

import torch

from .cases import Case, grade_function
from .core import Mismatch, assert_unmodified, call_learner, compare, register, snapshot

FORBID_HF = "transformers"  # generate() and every logits processor (a dotted name would import transformers)


# ================================================================== beam search
BEAM_SOLUTION = """import torch


@torch.no_grad()
def beam_search(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
    seqs = prompt[None]  # (1, T): the search starts from one beam, the prompt
    sums = torch.zeros(1)  # (1,): each running beam's sum of log-probabilities
    finished = []  # (score, sequence) of the best finished hypotheses, best first
    cache = model.new_cache() if use_cache else None
    fresh = seqs  # the tokens the model has not seen yet
    for length in range(1, max_new_tokens + 1):  # every candidate now has `length` new tokens
        logits = model(fresh, cache=cache).logits[:, -1]  # (K, V): one row per running beam
        totals = sums[:, None] + torch.log_softmax(logits.float(), dim=-1)  # (K, V)
        top, flat = totals.flatten().topk(2 * num_beams)  # (2k,): the best over all beams x vocabulary
        beam, token = flat // totals.size(1), flat % totals.size(1)  # (2k,) each: which beam, which token
        keep = []  # ranks of the candidates that stay running
        for rank in range(2 * num_beams):
            if token[rank] == eos_id or length == max_new_tokens:  # this hypothesis ends here
                if rank < num_beams:  # only a candidate ranked in the top num_beams may finish
                    sequence = torch.cat([seqs[beam[rank]], token[rank, None]])  # (T + length,)
                    finished.append((top[rank].item() / length ** length_penalty, sequence))
            elif len(keep) < num_beams:
                keep.append(rank)
        finished = sorted(finished, key=lambda pair: pair[0], reverse=True)[:num_beams]
        if len(finished) == num_beams or length == max_new_tokens:  # early_stopping=True
            break
        keep = torch.tensor(keep)  # (k,)
        seqs = torch.cat([seqs[beam[keep]], token[keep, None]], dim=1)  # (k, T + length)
        sums = top[keep]  # (k,)
        if use_cache:  # each kept candidate continues the cache row of the beam it came from
            for layer in cache:
                layer.k, layer.v = layer.k[beam[keep]], layer.v[beam[keep]]  # (k, H, T_cached, D)
        fresh = token[keep, None] if use_cache else seqs  # (k, 1), or the whole sequences
    score, best = finished[0]
    return best, score
"""

V_BEAM = 23
# (model seed, embedding scale, num_beams, max_new_tokens, length_penalty, eos_id): chosen so that every
# misconception below gives another result than Hugging Face on at least one case, no two alike, and
# no decision is a near tie (tests/test_checks_generation_track11.py measures the margins)
BEAM_CASES = [(1, 10.0, 4, 10, 2.0, 18), (1, 6.0, 4, 10, 2.0, 18), (1, 10.0, 3, 8, 1.0, 6),
              (0, 10.0, 4, 10, 2.0, 2), (0, 10.0, 3, 9, -1.0, 22)]
PROMPT_LEN = 4


def beam_model(seed: int, scale: float):
    """A 2-layer course_lib GPT whose next-token distributions are peaked enough for decisions
    with clear margins (a random GPT's are nearly uniform)."""
    from course_lib.models import GPT
    torch.manual_seed(seed)
    model = GPT(vocab_size=V_BEAM, max_positions=64, d_model=32, n_layers=2, n_heads=4).eval()
    with torch.no_grad():
        model.pos_emb.weight.normal_(0.0, 1.0)
        model.tok_emb.weight.mul_(scale)  # tied to the LM head: sharper logits
        for block in model.blocks:
            block.attn.q_proj.weight.mul_(5.0)
    return model


def beam_prompt(seed: int) -> torch.Tensor:
    return torch.randint(0, V_BEAM, (PROMPT_LEN,), generator=torch.Generator().manual_seed(seed))  # (T,)


def expected_beam(case: tuple) -> tuple[torch.Tensor, float]:
    """What Hugging Face's `generate(num_beams=k, length_penalty=a, early_stopping=True, do_sample=False)`
    returns on the case (the tests prove it): (sequence (T + L,), score)."""
    seed, scale, k, n, lp, eos = case
    return beam_variant(beam_model(seed, scale), beam_prompt(seed), k, n, eos, lp, use_cache=False)


@torch.no_grad()
def beam_variant(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True, *,
                 length="generated", width=2, finished_run=False, probs=False, per_beam=None,
                 eos_any_rank=False, duplicate_start=False, stop_first=False, reorder=True):
    """Beam search with one mistake switched on; with none, Hugging Face's beam search (early_stopping=True)."""
    k, T = num_beams, prompt.numel()
    seqs = prompt[None].repeat(k if duplicate_start else 1, 1)  # (1 or k, T)
    sums = torch.full((seqs.size(0),), 1.0 if probs else 0.0)  # products of probabilities, or sums of logs
    finished = []
    cache = model.new_cache() if use_cache else None
    fresh = seqs
    for step in range(1, max_new_tokens + 1):
        logits = model(fresh, cache=cache).logits[:, -1].float()  # (K, V)
        totals = sums[:, None] * logits.softmax(-1) if probs else sums[:, None] + logits.log_softmax(-1)
        V = totals.size(1)
        if per_beam:  # each beam's own best `per_beam` tokens, then ranked together
            vals, toks = totals.topk(min(per_beam, V), dim=-1)  # (K, w)
            rows = torch.arange(totals.size(0))[:, None].expand_as(toks)  # (K, w)
            order = vals.flatten().argsort(descending=True)[:width * k]  # (2k,) into the (K * w,) candidates
            top, src, token = vals.flatten()[order], rows.flatten()[order], toks.flatten()[order]  # (2k,) each
        else:
            top, flat = totals.flatten().topk(width * k)  # (2k,) over all K * V candidates
            src, token = flat // V, flat % V
        keep = []
        for rank in range(top.numel()):
            ends = bool(token[rank] == eos_id) or step == max_new_tokens
            if ends and (rank < k or eos_any_rank):
                n = {"generated": step, "full": T + step, "no_eos": step - int(token[rank] == eos_id)}.get(length, 1)
                a = 0.0 if length == "none" else length_penalty
                finished.append((top[rank].item() / max(n, 1) ** a, torch.cat([seqs[src[rank]], token[rank, None]])))
            if (not ends or finished_run) and len(keep) < k and step < max_new_tokens:
                keep.append(rank)
        finished = sorted(finished, key=lambda f: f[0], reverse=True)[:k]
        if len(finished) == k or step == max_new_tokens or (stop_first and finished) or not keep:
            break
        keep = torch.tensor(keep)
        if use_cache:
            for layer in cache:
                if reorder:
                    layer.k, layer.v = layer.k[src[keep]], layer.v[src[keep]]  # (k, H, T, D)
                elif step == 1:  # the prompt's row copied once, never reordered afterwards
                    layer.k, layer.v = layer.k.expand(len(keep), -1, -1, -1), layer.v.expand(len(keep), -1, -1, -1)
            fresh = token[keep, None]  # (k, 1)
        seqs = torch.cat([seqs[src[keep]], token[keep, None]], 1)  # (k, T + step)
        sums = top[keep]
        if not use_cache:
            fresh = seqs
    score, best = finished[0]
    return best, score


BEAM_VARIANTS = {
    "no_length_penalty": {"length": "none"},
    "full_length": {"length": "full"},
    "eos_not_counted": {"length": "no_eos"},
    "finished_stay_running": {"finished_run": True},
    "probabilities": {"probs": True},
    "per_beam_topk": {"per_beam": 2},
    "too_few_candidates": {"width": 1},
    "eos_beyond_top_k": {"eos_any_rank": True},
    "duplicate_start": {"duplicate_start": True},
    "stops_at_first_finished": {"stop_first": True},
    "cache_not_reordered": {"reorder": False},
}

BEAM_MISCONCEPTIONS = {
    "no_length_penalty": "the finished hypotheses are compared by their sum of log-probabilities alone. Their "
                         "score is that sum divided by length ** length_penalty (length = the new tokens, EOS "
                         "included), which is what makes length_penalty matter.",
    "full_length": "the length in the penalty counts the prompt too. Hugging Face (transformers 5) divides by "
                   "the number of *generated* tokens ** length_penalty, the EOS token included, not by the "
                   "whole sequence's length.",
    "eos_not_counted": "the length in the penalty leaves out the EOS token; it counts every generated token, "
                       "EOS included (a hypothesis that ends at step t has length t).",
    "finished_stay_running": "a hypothesis that produced EOS was kept among the running beams and extended "
                             "further. Once it ends with EOS it goes to the finished list only; the running "
                             "beams are the best candidates that did *not* end.",
    "probabilities": "probabilities were multiplied instead of log-probabilities added. A beam's score is the "
                     "*sum of log-probabilities* (log_softmax), and the length penalty divides that sum.",
    "per_beam_topk": "the candidates were chosen per beam (each beam's own best tokens). Beam search ranks all "
                     "num_beams x V continuations together by their accumulated score and takes the best "
                     "2 * num_beams overall, so a strong beam may supply several and a weak beam none.",
    "too_few_candidates": "only the best num_beams candidates were taken, so after an EOS fewer than num_beams "
                          "beams stay running. Take the best 2 * num_beams: at most num_beams of them can end "
                          "with EOS, so num_beams running beams always remain.",
    "eos_beyond_top_k": "a candidate ending with EOS was accepted as finished although it ranked below the "
                        "top num_beams candidates of its step. Only EOS candidates among the first num_beams "
                        "ranks finish; the others are dropped.",
    "duplicate_start": "the search started from num_beams copies of the prompt, so the first step picked the "
                       "same token num_beams times. Start from *one* beam (the prompt, score 0); the first "
                       "step's top candidates are then all different.",
    "stops_at_first_finished": "the search stopped at the first finished hypothesis. With early_stopping=True "
                               "it stops when num_beams hypotheses have finished (or at max_new_tokens) and "
                               "returns the best of them by score.",
    "cache_not_reordered": "the KV cache rows were not reordered when the beams were. After choosing the "
                           "candidates, every layer's cache must follow the beams they came from: "
                           "layer.k = layer.k[beam_of_each_kept_candidate] (the same for layer.v).",
    "ignores_cache": "use_cache=True ran the whole sequences through the model each step (the answer is right "
                     "but nothing is saved). After the prompt, feed only each beam's newest token and "
                     "reorder the cache.",
    "mutates_input": "your code changed the prompt it was given; build new tensors instead.",
}


def _as_beam_answer(out, label: str) -> tuple[torch.Tensor, float]:
    """The learner's (sequence, score), checked for type and shape."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Mismatch(f"expected a pair (sequence, score), got {type(out).__name__}"
                       + (" (did you forget a `return`?)" if out is None else ""), f"case: {label}")
    seq, score = out
    if not isinstance(seq, torch.Tensor) or seq.dim() != 1 or seq.is_floating_point():
        raise Mismatch("the sequence should be a 1-D tensor of token ids (the prompt then the new tokens), "
                       f"got {type(seq).__name__} {tuple(getattr(seq, 'shape', ()))}", f"case: {label}")
    try:
        score = float(score)
    except (TypeError, ValueError, RuntimeError):
        raise Mismatch(f"the score should be a number, got {type(score).__name__}", f"case: {label}") from None
    return seq.cpu(), score


def _same_answer(a, b) -> bool:
    return (a[0].shape == b[0].shape and torch.equal(a[0], b[0]) and math.isfinite(a[1])
            and abs(a[1] - b[1]) <= 1e-4 + 1e-4 * abs(b[1]))


def _input_lengths(model):
    lengths = []
    handle = model.register_forward_pre_hook(lambda m, args, kw: lengths.append(
        (args[0] if args else kw["input_ids"]).size(1)), with_kwargs=True)
    return lengths, handle


@register("check_beam_search", points=5, minutes=50,
          forbid=(FORBID_HF, "course_lib.generation", "course_lib.interop", "course_lib.checks"),
          reference=BEAM_SOLUTION, misconceptions=BEAM_MISCONCEPTIONS,
          hint="Keep running beams (sequences and sums of log-probabilities, starting from the prompt alone) and "
               "a list of finished ones. Each step: add every beam's log-probabilities to its sum, take the best "
               "2 * num_beams over all beams x vocabulary, send EOS candidates (top num_beams ranks only) to the "
               "finished list with their length-penalised score, keep the best num_beams others running.",
          idea="score = sum of log-probs / L ** length_penalty, L = new tokens including EOS. Per step: totals = "
               "sums[:, None] + log_softmax(logits) (K, V); top, flat = totals.flatten().topk(2k); beam = flat // V, "
               "token = flat % V. Walk the ranks: EOS (or the last step) with rank < k -> finished; otherwise fill "
               "the k running beams. Stop when k hypotheses have finished; return the best. With the cache: "
               "layer.k, layer.v = layer.k[beam[keep]], layer.v[beam[keep]], then feed only the new tokens.")
def check_beam_search(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    n = 0
    for use_cache in (False, True):
        outs, labels, fed = [], [], []
        for case in BEAM_CASES:  # every case first, so that a wrong answer can be diagnosed on all of them
            seed, scale, k, steps, lp, eos = case
            label = (f"prompt {beam_prompt(seed).tolist()}, num_beams={k}, max_new_tokens={steps}, eos_id={eos}, "
                     f"length_penalty={lp}, use_cache={use_cache}")
            model, prompt = beam_model(seed, scale), beam_prompt(seed)
            before = snapshot([prompt])
            lengths, handle = _input_lengths(model)
            try:
                out = call_learner(learner, model, prompt, k, steps, eos, length_penalty=lp, use_cache=use_cache)
            finally:
                handle.remove()
            try:
                assert_unmodified([prompt], before, ["prompt"])
            except Mismatch as mm:
                raise Mismatch(mm.reason, f"case: {label}", "mutates_input") from None
            outs.append(_as_beam_answer(out, label))
            labels.append(label)
            fed.append(lengths)
        for case, got, label, lengths in zip(BEAM_CASES, outs, labels, fed):
            expected = expected_beam(case)
            if not _same_answer(got, expected):
                raise _beam_mismatch(outs, got, expected, label, use_cache)
            if use_cache and any(L != 1 for L in lengths[1:]):
                raise Mismatch("use_cache=True fed more than one token per beam after the prompt (input lengths "
                               f"per call: {lengths[:6]}...)", f"case: {label}", "ignores_cache")
            n += 1
    return n


def _beam_mismatch(outs, got, expected, label: str, use_cache: bool) -> Mismatch:
    """Why the learner's answer differs, naming the misconception whose answers equal the learner's on
    every case (`outs`, in the order of BEAM_CASES)."""
    if got[0].shape != expected[0].shape or not torch.equal(got[0], expected[0]):
        reason = "the best sequence differs from Hugging Face's beam search"
    else:
        reason = f"the sequence is right but its score is {got[1]:.6g}, expected {expected[1]:.6g}"
    detail = (f"case: {label}\n   expected {expected[0].tolist()} (score {expected[1]:.6g})\n"
              f"   got      {got[0].tolist()} (score {got[1]:.6g})")
    for name, flags in BEAM_VARIANTS.items():
        if name == "cache_not_reordered" and not use_cache:
            continue
        try:
            theirs = [beam_variant(beam_model(seed, scale), beam_prompt(seed), k, steps, eos, lp, use_cache, **flags)
                      for seed, scale, k, steps, lp, eos in BEAM_CASES]
        except Exception:  # noqa: BLE001, S112 - a variant that cannot run does not match
            continue
        if all(_same_answer(g, t) for g, t in zip(outs, theirs)):
            return Mismatch(reason, detail, name)
    return Mismatch(reason, detail)


# ================================================================== repetition penalty
REPETITION_SOLUTION = """import torch


def repetition_penalty(logits, input_ids, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, input_ids, True)  # (B, V): once per distinct token
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # (B, V): always towards less likely
    return torch.where(seen, penalised, logits)  # (B, V)
"""


def rep_variant(logits, input_ids, penalty, *, how="ctrl", per_occurrence=False, whole_batch=False):
    """The repetition penalty with one mistake switched on; with none, RepetitionPenaltyLogitsProcessor."""
    out = logits.clone()
    for b in range(logits.size(0)):
        ids = input_ids.flatten() if whole_batch else input_ids[b]  # (B * T,) or (T,)
        for t in (ids.tolist() if per_occurrence else ids.unique().tolist()):
            x = out[b, t]
            if how == "divide_all":
                out[b, t] = x / penalty
            elif how == "inverted":
                out[b, t] = x * penalty if x > 0 else x / penalty
            else:
                out[b, t] = x * penalty if x < 0 else x / penalty
    return out


REPETITION_MISCONCEPTIONS = {
    "divides_negative": "every seen token's logit was divided by the penalty. For a negative logit that "
                        "*raises* it (-2 / 1.5 = -1.33), making the repeat more likely; CTRL's rule divides "
                        "positive logits and multiplies negative ones.",
    "inverted": "the rule is the wrong way round: positive logits were multiplied and negative ones divided, "
                "which rewards repetition. Divide positive logits by the penalty, multiply negative ones.",
    "per_occurrence": "a token was penalised once per occurrence (penalty ** count). Hugging Face penalises "
                      "each distinct previous token once, however often it occurred.",
    "whole_batch": "tokens seen in *any* row were penalised in every row. Each row's penalty uses only that "
                   "row's own previous tokens.",
    "mutates_input": "your code changed `logits` in place; return a new tensor (use torch.where or clone first).",
}


def _rep_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1111)
    cases = []
    for label, B, T, V, penalty, dtype in [("2 rows, T=6, V=10, penalty 1.5", 2, 6, 10, 1.5, torch.float32),
                                           ("3 rows, T=12, V=16, penalty 1.2", 3, 12, 16, 1.2, torch.float32),
                                           ("1 row, T=9, V=8, penalty 0.8 (< 1 rewards repeats)", 1, 9, 8, 0.8,
                                            torch.float32),
                                           ("2 rows, T=7, V=12, penalty 2.0, float64", 2, 7, 12, 2.0, torch.float64)]:
        logits = torch.randn(B, V, generator=g, dtype=dtype) * 3  # (B, V): positive and negative logits
        ids = torch.randint(0, V // 2 + B, (B, T), generator=g)  # (B, T): repeats, rows differ
        cases.append(Case(f"{label}: logits ({B}, {V}), input_ids {ids.tolist()}", (logits, ids, penalty)))
    return cases


@register("check_repetition_penalty", points=2, minutes=15,
          forbid=(FORBID_HF, "course_lib.generation", "course_lib.checks"),
          reference=REPETITION_SOLUTION, misconceptions=REPETITION_MISCONCEPTIONS,
          hint="Find, per row, which tokens occur in that row's input_ids (each counts once). For those tokens "
               "only, make the logit less likely whatever its sign; leave the others alone.",
          idea="seen = zeros (B, V) bool, scattered True at input_ids along dim 1. penalised = logits * penalty "
               "where logits < 0, else logits / penalty. Return torch.where(seen, penalised, logits).")
def check_repetition_penalty(learner):
    variants = {"divides_negative": lambda *a: rep_variant(*a, how="divide_all"),
                "inverted": lambda *a: rep_variant(*a, how="inverted"),
                "per_occurrence": lambda *a: rep_variant(*a, per_occurrence=True),
                "whole_batch": lambda *a: rep_variant(*a, whole_batch=True)}
    return grade_function(learner, _rep_cases(), rep_variant, variants, ("logits", "input_ids", "penalty"))


# ================================================================== no repeated n-grams
NGRAM_SOLUTION = """import torch


def no_repeat_ngram(logits, input_ids, n):
    banned = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
    T = input_ids.size(1)
    for b in range(input_ids.size(0)):
        ids = input_ids[b].tolist()
        prefix = ids[T - n + 1:] if n > 1 else []  # the last n - 1 tokens: what a new n-gram would start with
        for start in range(T - n + 1):  # every complete n-gram seen so far
            if ids[start:start + n - 1] == prefix:
                banned[b, ids[start + n - 1]] = True  # its last token would repeat it
    return logits.masked_fill(banned, float("-inf"))  # (B, V)
"""


def ngram_variant(logits, input_ids, n, *, match=None, windows_short=False, whole_batch=False):
    """The n-gram blocker with one mistake switched on; with none, NoRepeatNGramLogitsProcessor.
    match: how many trailing tokens a window must share (n - 1 is right); windows_short: the last
    complete n-gram is skipped; whole_batch: the n-grams of all rows ban in every row."""
    m = n - 1 if match is None else match
    size = m + 1
    T = input_ids.size(1)
    banned = torch.zeros_like(logits, dtype=torch.bool)
    for b in range(input_ids.size(0)):
        prefix = input_ids[b].tolist()[T - m:] if m > 0 else []
        rows = input_ids.tolist() if whole_batch else [input_ids[b].tolist()]
        for ids in rows:
            for s in range(T - size + (0 if windows_short else 1)):
                if ids[s:s + m] == prefix:
                    banned[b, ids[s + m]] = True
    return logits.masked_fill(banned, float("-inf"))


NGRAM_MISCONCEPTIONS = {
    "prefix_of_n": "the last n tokens were matched instead of the last n - 1. A new token completes an n-gram "
                   "together with the n - 1 tokens before it: ban it when those n - 1 tokens were once followed "
                   "by it.",
    "ignores_n": "only the last token was matched (a bigram rule) whatever n is. Match the last n - 1 tokens.",
    "misses_last_ngram": "the most recent complete n-gram was skipped (the windows stop one early): the n-grams "
                         "start at 0 .. T - n *inclusive*.",
    "whole_batch": "n-grams of other rows were used. Each row bans only what repeats one of its own n-grams.",
    "finite_ban": "banned tokens got a large finite value. Set them to -inf (float('-inf')), as Hugging Face "
                  "does, so that no later processing or sampling can bring them back.",
    "mutates_input": "your code changed `logits` in place; return a new tensor (masked_fill, not masked_fill_).",
}


def _ngram_cases() -> list[Case]:
    rows = {
        "n=2, 2 rows": ([[3, 5, 3, 7, 2, 3], [3, 1, 4, 6, 1, 3]], 2),
        "n=3, 2 rows": ([[2, 4, 1, 2, 4, 6, 5, 1, 2, 4], [5, 5, 5, 1, 5, 5, 2, 7, 5, 5]], 3),
        "n=3, the last trigram repeats its prefix": ([[1, 6, 1, 6, 1, 6]], 3),
        "n=1 (every seen token is banned)": ([[4, 0, 4, 7]], 1),
        "n=4, shorter than n": ([[2, 3, 1]], 4),
        "n=2, float64": ([[7, 1, 7, 2, 7], [0, 0, 3, 0, 0]], 2),
    }
    g = torch.Generator().manual_seed(1112)
    cases = []
    for label, (ids, n) in rows.items():
        ids = torch.tensor(ids)  # (B, T)
        dtype = torch.float64 if "float64" in label else torch.float32
        logits = torch.randn(ids.size(0), 9, generator=g, dtype=dtype)  # (B, V)
        cases.append(Case(f"{label}: input_ids {ids.tolist()}", (logits, ids, n)))
    return cases


@register("check_no_repeat_ngram", points=2, minutes=20,
          forbid=(FORBID_HF, "course_lib.generation", "course_lib.checks"),
          reference=NGRAM_SOLUTION, misconceptions=NGRAM_MISCONCEPTIONS,
          hint="The next token would complete an n-gram with the last n - 1 tokens. Look for earlier places where "
               "those same n - 1 tokens occurred, and ban the token that followed them there.",
          idea="Per row: prefix = the last n - 1 tokens; for every start in 0 .. T - n, if ids[start:start + n - 1] "
               "== prefix, ban ids[start + n - 1]. Return logits.masked_fill(banned, -inf). Nothing is banned "
               "while T < n; with n = 1 every seen token is.")
def check_no_repeat_ngram(learner):
    cases = _ngram_cases()
    variants = {"prefix_of_n": lambda lg, ids, n: ngram_variant(lg, ids, n, match=n),
                "ignores_n": lambda lg, ids, n: ngram_variant(lg, ids, n, match=1),
                "misses_last_ngram": lambda lg, ids, n: ngram_variant(lg, ids, n, windows_short=True),
                "whole_batch": lambda lg, ids, n: ngram_variant(lg, ids, n, whole_batch=True)}
    try:
        return grade_function(learner, cases, ngram_variant, variants, ("logits", "input_ids", "n"))
    except Mismatch as mm:
        if mm.misconception is None and _finite_bans(learner, cases):
            raise Mismatch(mm.reason, mm.detail, "finite_ban") from None
        raise


def _finite_bans(learner, cases) -> bool:
    """The learner's outputs equal the reference except that banned tokens hold a large finite negative."""
    for case in cases:
        ref = ngram_variant(*case.args)
        out = call_learner(learner, *(a.clone() if isinstance(a, torch.Tensor) else a for a in case.args))
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
            return False
        inf = torch.isinf(ref)
        if not torch.isfinite(out[inf]).all() or not (out[inf] <= -1e4).all():
            return False
        try:
            compare(out.masked_fill(inf, float("-inf")), ref)
        except Mismatch:
            return False
    return any(torch.isinf(ngram_variant(*c.args)).any() for c in cases)


# ================================================================== greedy decoding with both processors
GENERATE_PENALIZED_SOLUTION = REPETITION_SOLUTION + NGRAM_SOLUTION.removeprefix("import torch\n") + '''

@torch.no_grad()
def generate_penalized(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
    for _ in range(n):
        logits = model(idx).logits[:, -1].float()  # (B, V): the next token's logits
        if penalty != 1.0:
            logits = repetition_penalty(logits, idx, penalty)  # the whole sequence so far, prompt included
        if no_repeat_ngram_size > 0:
            logits = no_repeat_ngram(logits, idx, no_repeat_ngram_size)
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)  # (B, T + 1): greedy
    return idx  # (B, T + n)
'''

# (model seed, embedding scale, batch, new tokens, repetition_penalty, no_repeat_ngram_size)
PENALIZED_CASES = [(1, 10.0, 2, 12, 1.5, 0), (2, 10.0, 1, 14, 1.3, 3), (3, 6.0, 2, 10, 2.0, 2), (0, 10.0, 2, 12, 1.2, 2)]
PENALIZED_PROMPT_LEN = 5


def penalized_prompt(seed: int, batch: int) -> torch.Tensor:
    return torch.randint(0, V_BEAM, (batch, PENALIZED_PROMPT_LEN), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def penalized_variant(model, idx, n, penalty, ngram, seen="all"):
    """Greedy decoding through both processors, given `seen` = "all" tokens so far (Hugging Face's
    `generate(do_sample=False, repetition_penalty=..., no_repeat_ngram_size=...)`), the "prompt" or the
    "generated" tokens only."""
    T = idx.size(1)
    for _ in range(n):
        logits = model(idx).logits[:, -1].float()  # (B, V)
        ids = {"all": idx, "prompt": idx[:, :T], "generated": idx[:, T:]}[seen]
        if penalty != 1.0 and ids.size(1):
            logits = rep_variant(logits, ids, penalty)
        if ngram:
            logits = ngram_variant(logits, ids, ngram)
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], 1)  # (B, T + 1)
    return idx


PENALIZED_MISCONCEPTIONS = {
    "prompt_only": "the processors saw only the prompt, so the tokens generated so far were never penalised. "
                   "Pass the whole sequence so far (prompt and new tokens) at every step.",
    "generated_only": "the processors saw only the generated tokens. For a decoder-only model Hugging Face "
                      "penalises the prompt's tokens too: pass the whole sequence so far.",
    "drops_prompt": "return the prompt followed by the new tokens, shape (B, T + n).",
    "mutates_input": "your code changed the `idx` it was given in place; build the longer sequence with torch.cat.",
}


@register("check_generate_penalized", points=2, minutes=10,
          forbid=(FORBID_HF, "course_lib.generation", "course_lib.checks"),
          reference=GENERATE_PENALIZED_SOLUTION, misconceptions=PENALIZED_MISCONCEPTIONS,
          hint="Greedy decoding as in part 2 (without the cache); before each argmax, run the next-token logits "
               "through your two processors, given everything generated so far.",
          idea="for each step: logits = model(idx).logits[:, -1]; logits = repetition_penalty(logits, idx, "
               "penalty) when penalty != 1; logits = no_repeat_ngram(logits, idx, size) when size > 0; append "
               "logits.argmax(-1) to idx. idx is the prompt plus every token so far.")
def check_generate_penalized(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    outs = []
    for case in PENALIZED_CASES:
        seed, scale, B, n, penalty, ngram = case
        idx = penalized_prompt(seed, B)
        label = f"prompt {idx.tolist()}, n={n}, penalty={penalty}, no_repeat_ngram_size={ngram}"
        before = snapshot([idx])
        out = call_learner(learner, beam_model(seed, scale), idx, n, penalty=penalty, no_repeat_ngram_size=ngram)
        try:
            assert_unmodified([idx], before, ["idx"])
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {label}", "mutates_input") from None
        if not isinstance(out, torch.Tensor):
            raise Mismatch(f"expected a tensor of token ids, got {type(out).__name__}", f"case: {label}")
        if out.shape == (B, n):
            raise Mismatch(f"returned shape {tuple(out.shape)}, expected {(B, PENALIZED_PROMPT_LEN + n)}",
                           f"case: {label}", "drops_prompt")
        outs.append(out)
    for case, out in zip(PENALIZED_CASES, outs):
        seed, scale, B, n, penalty, ngram = case
        expected = penalized_variant(beam_model(seed, scale), penalized_prompt(seed, B), n, penalty, ngram)
        if out.shape != expected.shape or not torch.equal(out, expected):
            key = None
            if out.shape == expected.shape:
                for name, seen in (("prompt_only", "prompt"), ("generated_only", "generated")):
                    theirs = [penalized_variant(beam_model(c[0], c[1]), penalized_prompt(c[0], c[2]), *c[3:], seen)
                              for c in PENALIZED_CASES]
                    if all(o.shape == t.shape and torch.equal(o, t) for o, t in zip(outs, theirs)):
                        key = name
                        break
            what = (f"shape {tuple(out.shape)}, expected {tuple(expected.shape)}" if out.shape != expected.shape
                    else "different tokens than Hugging Face's generate")
            raise Mismatch(f"returned {what}", f"case: prompt {penalized_prompt(seed, B).tolist()}, n={n}, "
                           f"penalty={penalty}, no_repeat_ngram_size={ngram}\n   expected {expected.tolist()}\n"
                           f"   got      {out.tolist()}", key)
    return len(PENALIZED_CASES)
