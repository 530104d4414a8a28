"""Checks for exercise 12, written from scratch: the induction score of every head, attention
rollout through the layers (Abnar & Zuidema 2020, §3) and the logit lens's per-layer losses
(nostalgebraist 2020). Each is graded against course_lib.analysis; each misconception is a tiny
re-creation of the mistake, and the check names the one whose outputs equal the learner's."""
from __future__ import annotations

import torch
import torch.nn as nn

from course_lib import analysis as ref
from .cases import Case
from .core import Mismatch, call_learner, compare, diagnose, register
from .track_tensors import isolated


# ------------------------------------------------------------------ shared
def _snap(x):
    """A deep copy of the tensors in x (a tensor, or a list/tuple of them); None for anything else."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return [_snap(v) for v in x]
    return None


def _same(x, before) -> bool:
    if before is None:
        return True
    if isinstance(before, list):
        return isinstance(x, (list, tuple)) and len(x) == len(before) and all(map(_same, x, before))
    return torch.equal(x.detach(), before)


def _grade(learner, cases: list[Case], reference, variants: dict, arg_names: tuple[str, ...],
           parts: tuple[str, ...] = ()) -> int:
    """Like cases.grade_function, for arguments that are lists of tensors (the per-layer maps, streams):
    their tensors too must come back unchanged. A reference that returns a tuple names its `parts`."""
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    refs, outs = [], []
    for case in cases:
        refs.append(reference(*case.args, **case.kwargs))
        before = [_snap(a) for a in case.args]
        outs.append(call_learner(learner, *case.args, **case.kwargs))
        for a, b, n in zip(case.args, before, arg_names):
            if not _same(a, b):
                raise Mismatch(f"your code modified its input `{n}` in place; compute new tensors instead "
                               "(avoid `+=`, `.div_()`, `[...] =` on inputs)", f"case: {case.label}", "mutates_input")
    for case, out, want in zip(cases, outs, refs):
        try:
            if isinstance(want, tuple):  # several outputs, e.g. (losses, accuracy)
                if not isinstance(out, (tuple, list)) or len(out) != len(want):
                    hint = " (did you forget a `return`?)" if out is None else ""
                    raise Mismatch(f"return a tuple of {len(want)} tensors ({', '.join(parts)}), "
                                   f"got {type(out).__name__}{hint}")
                for o, w, name in zip(out, want, parts):
                    compare(o, w, name)
            else:
                compare(out, want)
        except Mismatch as mm:
            runs = {k: (lambda v=v: _flat([v(*c.args, **c.kwargs) for c in cases])) for k, v in variants.items()}
            key = diagnose(_flat(outs), runs, _flat(refs))
            raise Mismatch(mm.reason, f"case: {case.label}", key) from None
    return len(cases)


def _flat(outs: list) -> list:
    """Each case's output, or the parts of a tuple output, in one list (for diagnose)."""
    return [p for o in outs for p in (o if isinstance(o, (tuple, list)) else (o,))]


def _causal_maps(B, H, T, *, gen, dtype=torch.float32, scale=2.0):
    scores = torch.randn(B, H, T, T, generator=gen, dtype=dtype) * scale
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, -1)  # (B, H, T, T), rows sum to 1


def _maps(B, H, T, *, gen, dtype=torch.float32):
    return torch.softmax(torch.randn(B, H, T, T, generator=gen, dtype=dtype) * 2, -1)  # (B, H, T, T)


# ------------------------------------------------------------------ induction score
INDUCTION_SOLUTION = """import torch


def induction_score(attn, period):
    T = attn.size(-1)
    queries = torch.arange(period, T)  # (T - period,): the queries whose token occurred before
    keys = queries - period + 1  # (T - period,): the token that followed that earlier occurrence
    weight = attn[:, :, queries, keys]  # (B, H, T - period): each such query's weight on its key
    return weight.mean(dim=(0, 2))  # (H,): averaged over the batch and the queries
"""

INDUCTION_MISCONCEPTIONS = {
    "same_token": "you read attn[..., i, i - period], the weight on the earlier occurrence of the *same* "
                  "token (a duplicate-token head). An induction head looks one further: at i - period + 1, "
                  "the token that *followed* the earlier occurrence, the one it can copy.",
    "diagonal_includes_first": "the diagonal at offset -(period - 1) starts at query period - 1 (key 0), but "
                               "that query's token has not occurred before: only queries i >= period count. "
                               "Drop the diagonal's first entry.",
    "counts_first_period": "you divided by T, counting the first `period` queries as zeros. They have no "
                           "earlier occurrence, so they are not part of the mean: T - period queries count.",
    "per_example": "you kept the batch axis and returned (B, H). Average over the batch too: one score per "
                   "head, shape (H,).",
    "mutates_input": "the attention tensor was changed in place.",
}


def _induction_reference(attn, period):
    return ref.weight_on_keys(attn, ref.repeat_keys(attn.size(-1), period)).to(attn.dtype)  # (H,)


def _induction_variant(attn, period, *, kind):
    T = attn.size(-1)
    if kind == "diagonal_includes_first":
        return attn.diagonal(offset=1 - period, dim1=-2, dim2=-1).mean((0, -1))
    q = torch.arange(period, T)
    k = q - period if kind == "same_token" else q - period + 1
    w = attn[:, :, q, k]  # (B, H, T - period)
    if kind == "counts_first_period":
        return w.sum(-1).mean(0) / T
    if kind == "per_example":
        return w.mean(-1)
    return w.mean((0, 2))


def _perfect_heads(T, period):
    """(1, 2, T, T): head 0 a perfect induction head, head 1 a perfect same-token head (uniform
    causal weights for the first period)."""
    a = torch.ones(T, T).tril()
    a = (a / a.sum(-1, keepdim=True))[None, None].repeat(1, 2, 1, 1)
    for i in range(period, T):
        a[0, :, i] = 0.0
        a[0, 0, i, i - period + 1] = 1.0
        a[0, 1, i, i - period] = 1.0
    return a


@register("check_induction_score", points=2, minutes=15, reference=INDUCTION_SOLUTION,
          misconceptions=INDUCTION_MISCONCEPTIONS,
          forbid=("course_lib.analysis.weight_on_keys", "course_lib.analysis.repeat_keys",
                  "course_lib.analysis.last_occurrence", "course_lib.checks"),
          hint="In a sequence that repeats every `period` tokens, query i >= period has seen its own token "
               "before, at i - period. Which key holds the token that came *next* that time?",
          idea="Queries i = period .. T-1, keys i - period + 1: build both index vectors with torch.arange "
               "and read attn[:, :, queries, keys], shape (B, H, T - period). Average over the batch and the "
               "queries (dims 0 and 2) to get one score per head, (H,).")
@isolated
def check_induction_score(learner):
    g = torch.Generator().manual_seed(12)
    cases = [
        Case("causal attn (2, 3, 10, 10), period 4", (_causal_maps(2, 3, 10, gen=g), 4)),
        Case("head 0 a perfect induction head, head 1 a perfect same-token head, (1, 2, 12, 12), period 5: "
             "scores [1, 0]", (_perfect_heads(12, 5), 5)),
        Case("causal attn (3, 2, 9, 9) float64, period 3", (_causal_maps(3, 2, 9, gen=g, dtype=torch.float64), 3)),
        Case("period 1 (one token repeated): the key is the query itself, (2, 2, 6, 6)",
             (_causal_maps(2, 2, 6, gen=g), 1)),
        Case("period T - 1: a single query counts, (2, 4, 7, 7)", (_causal_maps(2, 4, 7, gen=g), 6)),
    ]
    variants = {k: (lambda a, p, k=k: _induction_variant(a, p, kind=k))
                for k in INDUCTION_MISCONCEPTIONS if k != "mutates_input"}
    return _grade(learner, cases, _induction_reference, variants, ("attn", "period"))


# ------------------------------------------------------------------ attention rollout
ROLLOUT_SOLUTION = """import torch


def attention_rollout(maps, residual=0.5, head_fusion="mean"):
    T = maps[0].size(-1)
    eye = torch.eye(T, dtype=maps[0].dtype, device=maps[0].device)  # (T, T): the residual path
    rollout = None
    for attn in maps:  # layer 0 first
        if head_fusion == "mean":
            a = attn.mean(dim=1)  # (B, H, T, T) -> (B, T, T): the heads averaged
        elif head_fusion == "max":
            a = attn.amax(dim=1)  # (B, T, T): the strongest head at each entry
        elif head_fusion == "min":
            a = attn.amin(dim=1)  # (B, T, T): the weakest head at each entry
        else:
            raise ValueError(f"head_fusion={head_fusion!r}: expected 'mean', 'max' or 'min'")
        a = residual * eye + (1 - residual) * a  # (B, T, T): part of each position stays itself
        a = a / a.sum(dim=-1, keepdim=True)  # (B, T, T): every row sums to 1 again (max/min rows did not)
        rollout = a if rollout is None else a @ rollout  # (B, T, T): the later layer on the left
    return rollout
"""

ROLLOUT_MISCONCEPTIONS = {
    "wrong_order": "the layers are multiplied in the wrong order: rollout @ Ã puts the *first* layer on "
                   "the left. Row i of the result must follow position i down through the top layer first: "
                   "rollout = Ã_L · ... · Ã_1, so each new layer multiplies from the left (Ã @ rollout).",
    "no_residual": "there is no identity: the product of the raw attention maps ignores the residual "
                   "connection, through which every position also keeps what it had. Mix residual·I in.",
    "not_renormalised": "the rows are not renormalised. With the heads averaged they happen to sum to 1, but "
                        "the max or min over heads does not: divide every row of residual·I + (1 - residual)·A "
                        "by its sum before multiplying the layers.",
    "identity_added": "you added residual·I to the attention without weighting the attention by "
                      "(1 - residual) or renormalising: every row then sums to 1 + residual, and the "
                      "product of L layers to (1 + residual)^L. Use residual·I + (1 - residual)·A and "
                      "divide each row by its sum.",
    "residual_swapped": "the weights are swapped: (1 - residual)·I + residual·A. `residual` is the weight "
                        "of the identity: residual·I + (1 - residual)·A (the same at 0.5, not elsewhere).",
    "fixed_half": "`residual` is ignored: 0.5·I + 0.5·A is the paper's choice, but the function must use "
                  "its argument: residual·I + (1 - residual)·A.",
    "heads_summed": "the heads are summed, not averaged: after renormalising, the identity then gets "
                    "residual / (residual + (1 - residual)·H) of each row instead of `residual`. Average "
                    "the heads (mean over dim 1).",
    "mutates_input": "an attention map in `maps` was changed in place.",
}


def _rollout_reference(maps, residual=0.5, head_fusion="mean"):
    return ref.attention_rollout(maps, residual, head_fusion)


def _rollout_variant(maps, residual=0.5, head_fusion="mean", *, kind):
    T = maps[0].size(-1)
    eye = torch.eye(T, dtype=maps[0].dtype)
    r = 0.5 if kind == "fixed_half" else residual
    fuse = {"mean": (lambda a: a.sum(1)) if kind == "heads_summed" else (lambda a: a.mean(1)),
            "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}[head_fusion]
    out = None
    for attn in maps:
        a = fuse(attn)  # (B, T, T)
        if kind == "identity_added":
            a = a + r * eye
        elif kind == "residual_swapped":
            a = (1 - r) * eye + r * a
        elif kind != "no_residual":
            a = r * eye + (1 - r) * a
        if kind not in ("identity_added", "not_renormalised"):
            a = a / a.sum(-1, keepdim=True)
        out = a if out is None else (out @ a if kind == "wrong_order" else a @ out)
    return out


@register("check_attention_rollout", points=3, minutes=25, reference=ROLLOUT_SOLUTION,
          misconceptions=ROLLOUT_MISCONCEPTIONS,
          forbid=("course_lib.analysis.attention_rollout", "course_lib.checks"),
          hint="Per layer: one (B, T, T) map from the heads, the residual path mixed in as an identity, rows "
               "back to sum 1; then chain the layers so that row i of the result follows position i from the "
               "top layer down to the inputs.",
          idea="eye = torch.eye(T); for each layer: a = attn.mean(1) (or .amax(1), .amin(1)); "
               "a = residual*eye + (1-residual)*a; a = a / a.sum(-1, keepdim=True); rollout = a if it is the "
               "first layer, else a @ rollout (the later layer on the left: Ã_L · ... · Ã_1).")
@isolated
def check_attention_rollout(learner):
    g = torch.Generator().manual_seed(20)
    cases = [
        Case("3 causal layers (2, 4, 6, 6), residual and head_fusion by default",
             ([_causal_maps(2, 4, 6, gen=g) for _ in range(3)],)),
        Case("2 bidirectional layers (1, 3, 5, 5), residual=0.2", ([_maps(1, 3, 5, gen=g) for _ in range(2)], 0.2)),
        Case("4 bidirectional layers (2, 2, 7, 7) float64, residual=0.7",
             ([_maps(2, 2, 7, gen=g, dtype=torch.float64) for _ in range(4)], 0.7)),
        Case("one layer (1, 2, 4, 4), residual=0.5", ([_maps(1, 2, 4, gen=g)], 0.5)),
        Case("3 bidirectional layers (2, 3, 5, 5), residual=0.0 (attention alone)",
             ([_maps(2, 3, 5, gen=g) for _ in range(3)], 0.0)),
        Case("2 causal layers (2, 4, 6, 6), head_fusion='max'",
             ([_causal_maps(2, 4, 6, gen=g) for _ in range(2)],), {"head_fusion": "max"}),
        Case("3 bidirectional layers (1, 3, 5, 5), residual=0.3, head_fusion='min'",
             ([_maps(1, 3, 5, gen=g) for _ in range(3)], 0.3), {"head_fusion": "min"}),
    ]
    variants = {k: (lambda m, r=0.5, head_fusion="mean", k=k: _rollout_variant(m, r, head_fusion, kind=k))
                for k in ROLLOUT_MISCONCEPTIONS if k != "mutates_input"}
    return _grade(learner, cases, _rollout_reference, variants, ("maps", "residual"))


# ------------------------------------------------------------------ the logit lens's losses
LENS_SOLUTION = """import torch


def logit_lens_scores(streams, final_norm, unembed, targets):
    losses, accuracies = [], []
    for x in streams:  # x: (B, T, C), the residual stream after one layer
        logits = final_norm(x) @ unembed.T  # (B, T, C) @ (C, V) -> (B, T, V): read as the top layer is read
        log_probs = logits.log_softmax(dim=-1)  # (B, T, V)
        nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)  # (B, T): -log p(the next token)
        losses.append(nll.mean())  # 0-d: the mean over the batch and the positions
        correct = logits.argmax(dim=-1) == targets  # (B, T): the top guess is the next token
        accuracies.append(correct.float().mean())  # 0-d: the fraction guessed right
    return torch.stack(losses), torch.stack(accuracies)  # (L+1,) each: one per stream
"""

LENS_MISCONCEPTIONS = {
    "skips_final_norm": "the streams go straight into the unembedding: logits = x @ Wᵀ. The model never reads "
                        "its stream that way; it applies its final norm first (logits = final_norm(x) @ Wᵀ), "
                        "and the lens must read every stream the same way.",
    "shifted_again": "the targets are shifted once more: `targets` already holds the next token of every "
                     "position (targets[b, t] follows position t). Compare logits[:, t] with targets[:, t].",
    "sign_flipped": "the sign of the loss is flipped: the loss is -log p(target), a positive number.",
    "per_position": "the scores are not averaged: return one number per stream, the mean over the batch and "
                    "the positions, shape (L+1,).",
    "one_number": "you averaged over the streams too and returned one number each: return one score per "
                  "stream, shape (L+1,).",
    "accuracy_in_percent": "the accuracy is in percent; return the fraction of positions whose top guess is "
                           "the target, between 0 and 1.",
    "mutates_input": "a stream or the targets were changed in place.",
}


def _lens_reference(streams, final_norm, unembed, targets):
    with torch.no_grad():
        lens = torch.stack([final_norm(x) @ unembed.T for x in streams])  # (L+1, B, T, V)
    loss, acc = ref.lens_scores(lens, targets)  # (L+1,) each
    return loss.to(streams[0].dtype), acc.to(streams[0].dtype)


def _lens_variant(streams, final_norm, unembed, targets, *, kind):
    with torch.no_grad():
        lens = torch.stack([(x if kind == "skips_final_norm" else final_norm(x)) @ unembed.T
                            for x in streams]).double()  # (L+1, B, T, V)
    if kind == "shifted_again":
        lens, targets = lens[:, :, :-1], targets[:, 1:]
    nll = -lens.log_softmax(-1).gather(-1, targets[None, ..., None].expand(lens.size(0), *targets.shape, 1))
    nll = nll.squeeze(-1)  # (L+1, B, T)
    right = (lens.argmax(-1) == targets[None]).double()  # (L+1, B, T)
    if kind == "sign_flipped":
        nll = -nll
    if kind == "accuracy_in_percent":
        right = 100 * right
    if kind == "per_position":
        loss, acc = nll, right
    elif kind == "one_number":
        loss, acc = nll.mean(), right.mean()
    else:
        loss, acc = nll.mean((1, 2)), right.mean((1, 2))
    return loss.to(streams[0].dtype), acc.to(streams[0].dtype)


def _lens_case(L, B, T, C, V, *, gen, eps=1e-5):
    """Streams that grow layer by layer with an offset (so the norm matters), a final LayerNorm with
    its own weights, a (V, C) unembedding and next-token targets."""
    streams, x = [], torch.randn(B, T, C, generator=gen)
    for _ in range(L + 1):
        streams.append(x)
        x = x + 1.5 * torch.randn(B, T, C, generator=gen) + 0.5  # (B, T, C)
    norm = nn.LayerNorm(C, eps=eps)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(C, generator=gen))
        norm.bias.copy_(0.3 * torch.randn(C, generator=gen))
    unembed = torch.randn(V, C, generator=gen) * 0.5  # (V, C)
    targets = torch.randint(0, V, (B, T), generator=gen)  # (B, T)
    return streams, norm, unembed, targets


@register("check_logit_lens_scores", points=3, minutes=20, reference=LENS_SOLUTION,
          misconceptions=LENS_MISCONCEPTIONS,
          forbid=("course_lib.analysis.logit_lens", "course_lib.analysis.lens_scores", "course_lib.checks"),
          hint="Read every stream exactly as the model reads its last one, then score it: the mean "
               "next-token cross-entropy, and how often the top guess is the next token.",
          idea="For each x in streams: logits = final_norm(x) @ unembed.T, (B, T, V); the loss is the mean over "
               "(b, t) of -log_softmax(logits)[b, t, targets[b, t]] (gather, or F.cross_entropy on the "
               "flattened logits); the accuracy is (logits.argmax(-1) == targets).float().mean(). Return "
               "(torch.stack(losses), torch.stack(accuracies)), each of shape (L+1,).")
@isolated
def check_logit_lens_scores(learner):
    g = torch.Generator().manual_seed(7)
    cases = [
        Case("3 streams (L = 2) of (2, 5, 8), V = 11", _lens_case(2, 2, 5, 8, 11, gen=g)),
        Case("5 streams (L = 4) of (1, 7, 16), V = 23", _lens_case(4, 1, 7, 16, 23, gen=g)),
        Case("1 stream (L = 0) of (3, 4, 6), V = 9", _lens_case(0, 3, 4, 6, 9, gen=g)),
    ]
    variants = {k: (lambda *a, k=k: _lens_variant(*a, kind=k)) for k in LENS_MISCONCEPTIONS if k != "mutates_input"}
    return _grade(learner, cases, _lens_reference, variants, ("streams", "final_norm", "unembed", "targets"),
                  ("losses", "accuracy"))

