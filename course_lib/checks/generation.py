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


@register("check_sample_top_p", points=3, reference=top_p_filter, misconceptions=TOP_P_MISCONCEPTIONS,
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
