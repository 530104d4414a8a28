"""Checks for Lesson 11 (generation): nucleus sampling, judged statistically."""
from __future__ import annotations

import torch

from course_lib.generation import top_p_filter
from .core import Mismatch, call_learner, register

N_DRAWS = 6000


def _reference_probs(logits: torch.Tensor, p: float, temperature: float) -> torch.Tensor:
    return top_p_filter(logits / temperature, p).softmax(-1)


def _keep_below(logits, p, temperature):  # drops the token that crosses p
    probs = (logits / temperature).softmax(-1)
    sorted_p, order = probs.sort(descending=True)
    keep_sorted = sorted_p.cumsum(-1) <= p
    keep_sorted[0] = True
    keep = keep_sorted.scatter(-1, order, keep_sorted)
    return torch.where(keep, probs, 0.0) / torch.where(keep, probs, 0.0).sum()


def _unsorted(logits, p, temperature):  # cumulative sum in vocabulary order
    probs = (logits / temperature).softmax(-1)
    before = probs.cumsum(-1) - probs
    kept = torch.where(before < p, probs, 0.0)
    return kept / kept.sum()


def _temp_after_softmax(logits, p, temperature):  # dividing probabilities changes nothing after renormalising
    return _reference_probs(logits, p, 1.0)


TOP_P_MISCONCEPTIONS = {
    "drops_crossing_token": "the token whose probability crosses p was dropped. The nucleus is the "
                            "smallest set whose total reaches p, so it *includes* that token "
                            "(keep tokens whose cumulative probability *before* them is < p).",
    "unsorted": "the cumulative sum runs in vocabulary order; sort the probabilities in descending "
                "order first, then map the kept set back to vocabulary ids.",
    "temperature_after_softmax": "the temperature has no effect: it must divide the *logits* before "
                                 "softmax (dividing probabilities is undone by renormalising).",
}

_CASES = [  # (label, logits row, p, temperature)
    ("p=0.9 on 6 tokens", torch.tensor([2.0, 1.5, 1.0, 0.5, -1.0, -3.0]), 0.9, 1.0),
    ("p=0.5, the top token alone has 0.4", torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1])), 0.5, 1.0),
    ("p=0.8, tokens not in sorted order", torch.tensor([0.0, 3.0, -1.0, 2.0, 1.0]), 0.8, 1.0),
    ("p=0.9, temperature 0.5", torch.tensor([1.0, 0.8, 0.6, 0.2, 0.0]), 0.9, 0.5),
]


def _empirical(samples: torch.Tensor, V: int) -> torch.Tensor:
    return torch.bincount(samples.flatten().long(), minlength=V).double() / samples.numel()  # (N,) -> (V,) frequencies


TOP_P_SOLUTION = """import torch


def sample_top_p(logits, p, generator, temperature=1.0):
    probs = torch.softmax(logits / temperature, dim=-1)  # (N, V): the temperature divides the logits
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (N, V) each, most likely first
    before = sorted_probs.cumsum(-1) - sorted_probs  # (N, V): the mass strictly before each token
    sorted_probs = sorted_probs.masked_fill(before >= p, 0.0)  # keeps the token that crosses p
    sorted_probs = sorted_probs / sorted_probs.sum(-1, keepdim=True)  # renormalise the nucleus
    choice = torch.multinomial(sorted_probs, 1, generator=generator)  # (N, 1): a position in sorted order
    return order.gather(-1, choice).squeeze(-1)  # (N,): back to token ids
"""


@register("check_sample_top_p", minutes=20,
          forbid=('course_lib.generation.top_p_filter', 'course_lib.generation.sample_next', 'course_lib.checks'), points=3, reference=TOP_P_SOLUTION, misconceptions=TOP_P_MISCONCEPTIONS,
          hint="Divide logits by temperature; softmax; sort descending; cumulative sum; drop tokens whose "
               "cumulative probability *before* them is already >= p; renormalise; torch.multinomial with "
               "the generator; map the sampled positions back to token ids.")
def check_sample_top_p(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    emps, labels = [], []
    for k, (label, row, p, temp) in enumerate(_CASES):
        logits = row.expand(N_DRAWS, -1).clone()  # (N, V): N independent draws in one call
        before = logits.clone()
        gen = torch.Generator().manual_seed(100 + k)
        out = call_learner(learner, logits, p, gen, temperature=temp)
        if not torch.equal(logits, before):
            raise Mismatch("your function changed the logits it was given", f"case: {label}")
        if not isinstance(out, torch.Tensor) or out.numel() != N_DRAWS or out.is_floating_point():
            raise Mismatch("expected a tensor of N integer token ids for logits of shape (N, V), got "
                           f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}", f"case: {label}")
        if out.min() < 0 or out.max() >= row.numel():
            raise Mismatch("sampled ids outside the vocabulary", f"case: {label}")
        emps.append(_empirical(out, row.numel()))
        labels.append(label)
    for (label, row, p, temp), emp in zip(_CASES, emps):
        expected = _reference_probs(row, p, temp).double()
        tol = 5 * (expected * (1 - expected) / N_DRAWS).sqrt() + 2e-3  # ~5 standard errors
        outside = (expected == 0) & (emp > 0)
        if outside.any() or ((emp - expected).abs() > tol).any():
            variants = {"drops_crossing_token": _keep_below, "unsorted": _unsorted,
                        "temperature_after_softmax": _temp_after_softmax}
            key = None
            for name, f in variants.items():
                probs = [f(r, pp, t).double() for _, r, pp, t in _CASES]
                if any(not torch.allclose(a, _reference_probs(r, pp, t).double(), atol=1e-3)
                       for a, (_, r, pp, t) in zip(probs, _CASES)) and all(
                        ((e - a).abs() <= 5 * (a * (1 - a) / N_DRAWS).sqrt() + 2e-3).all() for e, a in zip(emps, probs)):
                    key = name
                    break
            why = (f"token(s) {outside.nonzero().flatten().tolist()} are outside the nucleus but were sampled"  # noqa: E501
                   if outside.any() else "the sampled frequencies differ from the nucleus distribution")
            raise Mismatch(why, f"case: {label}\n   expected {[round(x, 3) for x in expected.tolist()]}\n"
                                f"   sampled  {[round(x, 3) for x in emp.tolist()]}", key)
    return len(_CASES)


# ------------------------------------------------------------------ cached generation
def _tiny_gpt():
    from course_lib.models import GPT
    torch.manual_seed(11)
    model = GPT(vocab_size=23, max_positions=64, d_model=32, n_layers=2, n_heads=4).eval()
    with torch.no_grad():  # an untrained model barely looks at positions; make them matter
        model.pos_emb.weight.normal_(0.0, 1.0)
        for block in model.blocks:
            block.attn.q_proj.weight.mul_(10.0)
    return model


def _variant_generate(model, idx, n, mode):
    cache = model.new_cache()
    step = idx
    for _ in range(n):
        if mode == "positions_not_advanced":
            pos = torch.arange(step.size(1))[None].expand(step.size(0), -1)  # (B, T) restarts at 0
            logits = model(step, cache=cache, position_ids=pos).logits[:, -1]
        else:  # "refeeds_whole_sequence": the full sequence goes into the cache every step
            logits = model(idx, cache=cache).logits[:, -1]
        nxt = logits.argmax(-1)
        idx = torch.cat([idx, nxt[:, None]], 1)  # (B, T+1)
        step = nxt[:, None]
    return idx


GENERATE_MISCONCEPTIONS = {
    "positions_not_advanced": "each new token is given position 0 (positions restart with every call). "
                              "With a cache, the new token's position is the number of tokens already "
                              "cached: let the model count them, or pass position_ids = cache length.",
    "refeeds_whole_sequence": "with the cache on, the whole sequence is fed again every step, so the cache "
                              "holds every earlier token several times. After the prompt, feed only the "
                              "newest token: idx[:, -1:].",
    "ignores_cache": "use_cache=True recomputes the whole sequence each step (the tokens are right but "
                     "nothing is saved). After the prompt, feed one token per step with the cache.",
    "drops_prompt": "return the prompt followed by the new tokens, shape (B, T + n).",
}


def _count_lengths(model):
    lengths = []
    handle = model.register_forward_pre_hook(lambda m, args, kw: lengths.append(
        (args[0] if args else kw["input_ids"]).size(1)), with_kwargs=True)
    return lengths, handle


GENERATE_SOLUTION = """import torch


@torch.no_grad()
def generate(model, idx, n, use_cache=True):
    cache = model.new_cache() if use_cache else None
    for step in range(n):
        fresh = idx if cache is None or step == 0 else idx[:, -1:]  # the cache holds everything before
        logits = model(fresh, cache=cache).logits[:, -1]  # (B, V): the last position predicts the next token
        next_id = logits.argmax(-1, keepdim=True)  # (B, 1): greedy
        idx = torch.cat([idx, next_id], dim=1)  # (B, T + step + 1)
    return idx  # (B, T + n)
"""


@register("check_generate", minutes=25,
          forbid=('course_lib.generation.generate', 'course_lib.checks'), points=3, reference=GENERATE_SOLUTION,
          misconceptions=GENERATE_MISCONCEPTIONS,
          hint="cache = model.new_cache(); logits = model(idx, cache=cache).logits[:, -1] for the prompt; "
               "then loop: next = logits.argmax(-1); append it; logits = model(next[:, None], cache=cache)"
               ".logits[:, -1]. Without the cache: model(idx).logits[:, -1] on the whole sequence each step.")
def check_generate(learner):
    from course_lib.generation import generate
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    model = _tiny_gpt()
    g = torch.Generator().manual_seed(5)
    n = 0
    for B, T, steps in [(1, 4, 8), (3, 6, 12)]:
        idx = torch.randint(0, 23, (B, T), generator=g)
        expected = generate(model, idx, steps, use_cache=False)
        for use_cache in (False, True):
            label = f"prompt (B={B}, T={T}), n={steps}, use_cache={use_cache}"
            lengths, handle = _count_lengths(model)
            try:
                with torch.no_grad():
                    out = call_learner(learner, model, idx.clone(), steps, use_cache=use_cache)
            finally:
                handle.remove()
            if not isinstance(out, torch.Tensor):
                raise Mismatch(f"expected a tensor of token ids, got {type(out).__name__}", f"case: {label}")
            if out.shape == (B, steps):
                raise Mismatch(f"returned shape {tuple(out.shape)}, expected {tuple(expected.shape)}",
                               f"case: {label}", "drops_prompt")
            if out.shape != expected.shape or not torch.equal(out, expected):
                key = None
                if use_cache and out.shape == expected.shape:
                    for mode in ("positions_not_advanced", "refeeds_whole_sequence"):
                        with torch.no_grad():
                            if torch.equal(out, _variant_generate(model, idx, steps, mode)):
                                key = mode
                                break
                what = (f"shape {tuple(out.shape)}, expected {tuple(expected.shape)}" if out.shape != expected.shape
                        else "different tokens than greedy decoding")
                raise Mismatch(f"returned {what}", f"case: {label}\n   expected {expected[0].tolist()}\n"
                                                   f"   got      {out[0].tolist()}", key)
            if use_cache and any(L != 1 for L in lengths[1:]):
                raise Mismatch("use_cache=True fed more than one token per step after the prompt "
                               f"(input lengths per call: {lengths[:6]}...)", f"case: {label}", "ignores_cache")
            n += 1
    return n
