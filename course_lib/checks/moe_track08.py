"""Checks for exercise 08's capacity parts: Switch/GShard dispatch with a capacity and token dropping,
running the experts on their fixed-size buffers, expert-choice routing and its layer.

* `check_capacity_dispatch(capacity_dispatch)`: (weights, indices) from top-k routing -> the
  dispatch and combine tensors (N, E, S) and the fraction of the N·k assignments dropped, with
  S = ceil(capacity_factor · N · k / E) and GShard's priority: every token's first choice in
  sequence order, then every second choice in sequence order (first come, first served). Batch
  Priority Routing (V-MoE, by router weight) and fairseq/DeepSpeed's renormalisation after dropping
  are published variants, named in the verdict; the exercise states the one order it grades.
  tests/test_checks_moe_track08.py proves the reference equal to a plain loop, to course_lib's
  capacity_mask and, for k = 1, to Hugging Face's SwitchTransformersTop1Router.
* `check_dispatch_experts(dispatch_experts)`: the experts run on their (E, S, C) buffers, gathered
  and scattered with the dispatch and combine tensors; the reference is a loop over the kept
  (token, expert, slot) triples.
* `check_expert_choice_routing(expert_choice_routing)`: each expert picks its c = ceil(cf · N / E)
  best tokens by router probability (softmax over the experts; Zhou et al. 2022, §3.1).
* `check_expert_choice_layer(expert_choice_layer)`: each expert runs on its chosen tokens and the
  gated outputs are *added* back (a token chosen by several experts gets all of them); the
  reference is a loop over the (expert, slot) pairs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core import Mismatch, assert_unmodified, call_learner, compare, diagnose, register, snapshot


def _as_fraction(v) -> torch.Tensor:
    """A learner's fraction (a float, a 0-d tensor) as a float64 scalar tensor, or Mismatch."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise Mismatch(f"the fraction (last output) should be one number, got a tensor of shape {tuple(v.shape)}")
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Mismatch(f"the fraction (last output) should be a number (a float), got {type(v).__name__}")
    return torch.tensor(float(v), dtype=torch.float64)


def _grade_tuple(learner, cases: list, reference, variants: dict, arg_names: tuple, what: tuple,
                 fraction_at: int | None = None) -> int:
    """Run learner(*args) -> tuple on every case and compare with reference(*args), element by element.
    The element at `fraction_at` is a number (compared as float64)."""
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")

    def norm(out):
        out = list(out)
        if fraction_at is not None:
            out[fraction_at] = _as_fraction(out[fraction_at])
        return out

    refs, outs = [], []
    for label, args in cases:
        refs.append(norm(reference(*args)))
        before = snapshot(args)
        out = call_learner(learner, *args)
        try:
            assert_unmodified(args, before, arg_names)
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {label}", "mutates_input") from None
        if not isinstance(out, (tuple, list)) or len(out) != len(what):
            raise Mismatch(f"return a tuple ({', '.join(what)}), got {type(out).__name__}"
                           + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""), f"case: {label}")
        try:
            outs.append(norm(out))
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {label}") from None
    for (label, _), out, expected in zip(cases, outs, refs):
        try:
            for o, e, name in zip(out, expected, what):
                compare(o, e, name)
        except Mismatch as mm:
            runs = {k: (lambda v=v: [t for _, a in cases for t in norm(v(*a))]) for k, v in variants.items()}
            key = diagnose([t for o in outs for t in o], runs, [t for r in refs for t in r])
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    return len(cases)


def _routed(g, N, E, k, dtype=torch.float32, skew=2.0):
    """(weights, indices) as part 1 makes them, from a router that prefers the first experts."""
    logits = torch.randn(N, E, generator=g, dtype=torch.float64) * 1.5
    logits = logits + skew * torch.linspace(1, 0, E, dtype=torch.float64)  # an unbalanced router
    probs = torch.softmax(logits, dim=-1)  # (N, E)
    w, idx = probs.topk(k, dim=-1)  # (N, k)
    return (w / w.sum(-1, keepdim=True)).to(dtype), idx


# ================================================================== capacity dispatch
def capacity_dispatch_reference(weights, indices, n_experts, capacity_factor, *, capacity=None,
                                order="choice_major", renormalise=False, per_token=False, weighted=True):
    """The reference (default knobs) and, with one knob turned, each misconception."""
    N, k = indices.shape
    S = capacity if capacity is not None else math.ceil(capacity_factor * N * k / n_experts)
    token = torch.arange(N, device=indices.device)
    if order == "choice_major":  # GShard: all first choices in sequence order, then all second choices
        queue = [(n, j) for j in range(k) for n in token.tolist()]
    elif order == "token_major":
        queue = [(n, j) for n in token.tolist() for j in range(k)]
    else:  # batch priority routing: tokens with the largest top-1 weight first
        ranked = torch.argsort(weights[:, 0], descending=True, stable=True).tolist()
        queue = [(n, j) for j in range(k) for n in ranked]
    dispatch = torch.zeros(N, n_experts, S, dtype=torch.bool, device=indices.device)
    combine = torch.zeros(N, n_experts, S, dtype=weights.dtype, device=weights.device)
    used = [0] * n_experts
    for n, j in queue:
        e = int(indices[n, j])
        if used[e] < S:
            dispatch[n, e, used[e]] = True
            combine[n, e, used[e]] = weights[n, j] if weighted else 1.0
            used[e] += 1
    if renormalise:  # fairseq/DeepSpeed top-2 gating: the kept weights of a token sum to 1 again
        total = combine.sum(dim=(1, 2), keepdim=True)  # (N, 1, 1)
        combine = torch.where(total > 0, combine / total.clamp_min(1e-30), combine)
    kept = int(dispatch.sum())
    dropped = (N - int(dispatch.any(-1).any(-1).sum())) / N if per_token else 1.0 - kept / (N * k)
    return dispatch, combine, dropped


def _dispatch_cases():
    g = torch.Generator().manual_seed(801)
    cases = []
    for N, E, k, cf, dtype in [(8, 4, 1, 1.0, torch.float32),  # Switch: top-1, S = 2
                               (10, 4, 2, 1.0, torch.float32),  # S = 5
                               (12, 8, 2, 1.25, torch.float32),  # 3.75 slots -> 4 (not 3)
                               (9, 3, 2, 0.6, torch.float64),  # 3.6 -> 4
                               (7, 4, 1, 2.0, torch.float32)]:  # a generous factor: 3.5 -> 4, few drops
        w, idx = _routed(g, N, E, k, dtype)
        S = math.ceil(cf * N * k / E)
        cases.append((f"{N} tokens, {E} experts, k={k}, capacity_factor={cf} (capacity {S}), weights {dtype}",
                      (w, idx, E, cf)))
    return cases


DISPATCH_MISCONCEPTIONS = {
    "no_k_factor": "the capacity leaves out k: with top-k routing there are N·k assignments to place, so "
                   "S = ceil(capacity_factor · N · k / E).",
    "floor_capacity": "the capacity is rounded down. Switch and GShard round up: S = ceil(capacity_factor · N · k "
                      "/ E) (math.ceil), so that a factor of 1.0 always leaves room for a balanced router.",
    "batch_priority": "slots go to the tokens with the largest router weight first: that is Batch Priority "
                      "Routing (Riquelme et al. 2021, V-MoE), a published variant. This exercise asks for "
                      "Switch/GShard's order: first come, first served in sequence order.",
    "token_major_order": "the queue is token by token (token 0's choices, then token 1's, ...). GShard places "
                         "every token's first choice before any second choice: indices.t() gives that order.",
    "renormalised_after_drop": "the kept weights of a token are renormalised after dropping (fairseq and "
                               "DeepSpeed's top-2 gating do this). Here combine keeps each kept assignment's "
                               "weight as given; a dropped assignment's weight is simply lost.",
    "combine_unweighted": "combine holds 1 where dispatch is True; it should hold the assignment's router "
                          "weight, so that the expert's output is scaled by it.",
    "dropped_per_token": "the dropped fraction counts tokens; the exercise counts assignments: the number of "
                         "(token, choice) pairs that got no slot, divided by N·k.",
    "mutates_input": "an input tensor was changed in place.",
}

DISPATCH_SOLUTION = """import math

import torch
import torch.nn.functional as F


def capacity_dispatch(weights: torch.Tensor, indices: torch.Tensor, n_experts: int,
                      capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    N, k = indices.shape
    capacity = math.ceil(capacity_factor * N * k / n_experts)  # S slots per expert
    queue = indices.t().reshape(-1)  # (k·N,): every token's 1st choice in sequence order, then every 2nd
    token = torch.arange(N, device=indices.device).repeat(k)  # (k·N,): whose assignment each entry is
    one_hot = F.one_hot(queue, n_experts)  # (k·N, E)
    slot = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1  # (k·N,): place in its expert's queue
    kept = slot < capacity  # (k·N,): first come, first served
    where = (token[kept], queue[kept], slot[kept])  # (n_kept,) each
    dispatch = torch.zeros(N, n_experts, capacity, dtype=torch.bool, device=indices.device)
    dispatch[where] = True  # (N, E, S)
    combine = torch.zeros(N, n_experts, capacity, dtype=weights.dtype, device=weights.device)
    combine[where] = weights.t().reshape(-1)[kept]  # (N, E, S): the router weight at its slot
    return dispatch, combine, (~kept).sum().item() / kept.numel()  # dropped assignments / (N·k)
"""


@register("check_capacity_dispatch", minutes=30, points=4, reference=DISPATCH_SOLUTION,
          misconceptions=DISPATCH_MISCONCEPTIONS,
          forbid=("course_lib.moe", "course_lib.checks"),
          hint="Line the N·k assignments up in the order they are served (all first choices in token order, "
               "then all second choices), and give each the next free slot of its expert. A running count "
               "per expert is exactly what a cumulative sum over a one-hot gives.",
          idea="S = math.ceil(capacity_factor * N * k / E). queue = indices.t().reshape(-1) (k·N,); "
               "one_hot = F.one_hot(queue, E); slot = (one_hot.cumsum(0) * one_hot).sum(-1) - 1; kept = slot < S. "
               "Set dispatch[token, expert, slot] = True and combine[...] = the weight for the kept ones "
               "(token = arange(N).repeat(k)); the dropped fraction is (~kept).sum() / (N·k).")
def check_capacity_dispatch(learner):
    variants = {
        "no_k_factor": lambda w, i, E, cf: capacity_dispatch_reference(
            w, i, E, cf, capacity=math.ceil(cf * i.shape[0] / E)),
        "floor_capacity": lambda w, i, E, cf: capacity_dispatch_reference(
            w, i, E, cf, capacity=max(1, math.floor(cf * i.numel() / E))),
        "batch_priority": lambda w, i, E, cf: capacity_dispatch_reference(w, i, E, cf, order="batch_priority"),
        "token_major_order": lambda w, i, E, cf: capacity_dispatch_reference(w, i, E, cf, order="token_major"),
        "renormalised_after_drop": lambda w, i, E, cf: capacity_dispatch_reference(w, i, E, cf, renormalise=True),
        "combine_unweighted": lambda w, i, E, cf: capacity_dispatch_reference(w, i, E, cf, weighted=False),
        "dropped_per_token": lambda w, i, E, cf: capacity_dispatch_reference(w, i, E, cf, per_token=True),
    }
    return _grade_tuple(learner, _dispatch_cases(), capacity_dispatch_reference, variants,
                        ("weights", "indices"), ("dispatch", "combine", "dropped fraction"), fraction_at=2)


# ================================================================== the experts on their buffers
def dispatch_experts_reference(x, dispatch, combine, experts, *, kind=None):
    """y[n] = Σ over kept (n, e, s) of combine[n, e, s] · expert_e(x[n]), one slot at a time.
    kind="weights_on_input": dispatch and combine swapped (the weight scales the expert's input)."""
    y = torch.zeros_like(x)  # (N, C)
    for n, e, s in dispatch.nonzero().tolist():
        inp = x[n] * (combine[n, e, s] if kind == "weights_on_input" else 1)  # (C,)
        w = 1.0 if kind in ("combine_unweighted", "weights_on_input") else combine[n, e, s]
        y[n] += w * experts[e](inp[None])[0]  # (C,)
    return y


def _experts_cases():
    g = torch.Generator().manual_seed(802)
    cases = []
    for N, E, k, cf, C, dtype in [(10, 4, 2, 1.0, 8, torch.float32), (8, 4, 1, 1.0, 6, torch.float64),
                                  (12, 3, 2, 0.5, 8, torch.float32)]:
        w, idx = _routed(g, N, E, k, dtype)
        dispatch, combine, _ = capacity_dispatch_reference(w, idx, E, cf)
        experts = nn.ModuleList(nn.Sequential(nn.Linear(C, 2 * C), nn.SiLU(), nn.Linear(2 * C, C))
                                for _ in range(E)).to(dtype)  # biased experts: an empty slot is not zero
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(p.shape[-1]))
        x = torch.randn(N, C, generator=g, dtype=torch.float64).to(dtype)
        S = dispatch.shape[-1]
        cases.append((f"x ({N}, {C}) {dtype}, {E} experts (Linear-SiLU-Linear with biases), k={k}, "
                      f"capacity {S}, {int(N * k - dispatch.sum())} assignments dropped",
                      (x, dispatch, combine, experts)))
    return cases


EXPERTS_MISCONCEPTIONS = {
    "weights_on_input": "the router weights scale the experts' *inputs* (the buffers were gathered with "
                        "combine). Gather with dispatch, so each expert sees the token itself, and scale "
                        "the *outputs* with combine.",
    "combine_unweighted": "the outputs are scattered back with dispatch, so the router weights are lost; "
                          "scatter with combine.",
    "mutates_input": "an input tensor was changed in place.",
}

EXPERTS_SOLUTION = """import torch


def dispatch_experts(x: torch.Tensor, dispatch: torch.Tensor, combine: torch.Tensor, experts) -> torch.Tensor:
    buffers = torch.einsum("nes,nc->esc", dispatch.to(x.dtype), x)  # (E, S, C): each expert's S slots
    outputs = torch.stack([expert(buffers[e]) for e, expert in enumerate(experts)])  # (E, S, C)
    return torch.einsum("nes,esc->nc", combine.to(x.dtype), outputs)  # (N, C); empty slots weigh 0
"""


@register("check_dispatch_experts", minutes=15, points=2, reference=EXPERTS_SOLUTION,
          misconceptions=EXPERTS_MISCONCEPTIONS, forbid=("course_lib.moe", "course_lib.checks"),
          hint="Two einsums and one loop: gather the tokens into each expert's (S, C) buffer with dispatch, run "
               "each expert once on its buffer, and scatter the outputs back to the tokens with combine.",
          idea="buffers = einsum('nes,nc->esc', dispatch.to(x.dtype), x); outputs = stack([expert(buffers[e]) "
               "...]); y = einsum('nes,esc->nc', combine, outputs). Slots nobody filled hold expert(0), which "
               "need not be 0, but combine is 0 there.")
def check_dispatch_experts(learner):
    variants = {k: (lambda x, d, c, ex, k=k: dispatch_experts_reference(x, d, c, ex, kind=k))
                for k in ("weights_on_input", "combine_unweighted")}
    with torch.no_grad():
        cases = _experts_cases()
        return _grade_function_cases(learner, cases, dispatch_experts_reference, variants,
                                     ("x", "dispatch", "combine"))


def _grade_function_cases(learner, cases, reference, variants, arg_names) -> int:
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    refs, outs = [], []
    for label, args in cases:
        refs.append(reference(*args))
        before = snapshot(args)
        outs.append(call_learner(learner, *args))
        try:
            assert_unmodified(args, before, arg_names)
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {label}", "mutates_input") from None
    for (label, _), out, expected in zip(cases, outs, refs):
        try:
            compare(out, expected)
        except Mismatch as mm:
            runs = {k: (lambda v=v: [v(*a) for _, a in cases]) for k, v in variants.items()}
            key = diagnose(outs, runs, refs)
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    return len(cases)


# ================================================================== expert-choice routing
def expert_choice_reference(router_logits, capacity_factor, *, kind=None):
    N, E = router_logits.shape
    c = capacity_factor * N / E
    c = min(N, math.floor(c) if kind == "floor_capacity" else math.ceil(c))
    scores = router_logits if kind == "raw_logits" else torch.softmax(
        router_logits, dim=0 if kind == "softmax_over_tokens" else -1)  # (N, E)
    if kind == "token_choice":  # the fraction then counts the expert ids as if they were tokens
        gates, index = scores.topk(c, dim=-1)  # (N, c): tokens choosing experts
    else:
        gates, index = scores.t().topk(c, dim=-1)  # (E, c): experts choosing tokens
    chosen = torch.zeros(N, dtype=torch.bool, device=router_logits.device)
    chosen[index.reshape(-1)] = True  # (N,): chosen by at least one expert
    return gates, index, 1.0 - chosen.sum().item() / N


def _expert_choice_cases():
    g = torch.Generator().manual_seed(803)
    cases = []
    for N, E, cf, dtype in [(16, 4, 1.0, torch.float32), (12, 8, 2.0, torch.float32),
                            (10, 4, 1.0, torch.float64), (6, 4, 1.5, torch.float32)]:
        logits = (torch.randn(N, E, generator=g, dtype=torch.float64) * 2).to(dtype)
        c = min(N, math.ceil(cf * N / E))
        cases.append((f"router_logits ({N}, {E}) {dtype}, capacity_factor={cf} (c = {c} tokens per expert)",
                      (logits, cf)))
    return cases


EXPERT_CHOICE_MISCONCEPTIONS = {
    "softmax_over_tokens": "the softmax runs over the tokens. Zhou et al. keep the router's softmax over the "
                           "experts (S = softmax(X·W_g), each row a distribution); only the top-k runs over "
                           "tokens: each expert takes the c tokens with the largest S[:, e].",
    "token_choice": "each token picks its best experts: that is ordinary top-k routing. In expert choice "
                    "each *expert* picks its c best tokens: topk over the token axis of S (S.t().topk(c)).",
    "floor_capacity": "c is rounded down; the exercise asks for c = ceil(capacity_factor · N / E).",
    "raw_logits": "the gates are raw logits; they are the softmax probabilities S (over the experts) of the "
                  "chosen tokens.",
    "mutates_input": "an input tensor was changed in place.",
}

EXPERT_CHOICE_SOLUTION = """import math

import torch


def expert_choice_routing(router_logits: torch.Tensor, capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    N, E = router_logits.shape
    c = min(N, math.ceil(capacity_factor * N / E))  # tokens per expert
    scores = torch.softmax(router_logits, dim=-1)  # (N, E): over the experts, as for top-k routing
    gates, token_index = scores.t().topk(c, dim=-1)  # (E, c) each: every expert picks its c best tokens
    chosen = torch.zeros(N, dtype=torch.bool, device=router_logits.device)
    chosen[token_index.reshape(-1)] = True  # (N,): picked by at least one expert
    return gates, token_index, 1.0 - chosen.sum().item() / N
"""


@register("check_expert_choice_routing", minutes=15, points=3, reference=EXPERT_CHOICE_SOLUTION,
          misconceptions=EXPERT_CHOICE_MISCONCEPTIONS, forbid=("course_lib.moe", "course_lib.checks"),
          hint="Turn the routing around: the same (N, E) probabilities, but now each column (an expert) "
               "chooses among the tokens.",
          idea="c = min(N, ceil(capacity_factor · N / E)); S = softmax(router_logits, dim=-1); gates, index = "
               "S.t().topk(c, dim=-1) — both (E, c). A token no expert picked gets nothing: count them with a "
               "boolean (N,) mask set at index.")
def check_expert_choice_routing(learner):
    variants = {k: (lambda x, cf, k=k: expert_choice_reference(x, cf, kind=k))
                for k in EXPERT_CHOICE_MISCONCEPTIONS if k != "mutates_input"}
    return _grade_tuple(learner, _expert_choice_cases(), expert_choice_reference, variants, ("router_logits",),
                        ("gates", "token_index", "unchosen fraction"), fraction_at=2)


# ================================================================== the expert-choice layer
def expert_choice_layer_reference(x, gates, token_index, experts, *, kind=None):
    """y[n] = Σ over the (e, j) with token_index[e, j] = n of gates[e, j] · expert_e(x[n]), slot by slot."""
    y = torch.zeros_like(x)  # (N, C)
    for e, expert in enumerate(experts):
        for j, n in enumerate(token_index[e].tolist()):
            out = expert(x[n][None])[0] * (1.0 if kind == "gates_ignored" else gates[e, j])  # (C,)
            y[n] = out if kind == "overwrites" else y[n] + out  # overwrites: the last expert's output wins
    return y


def _expert_choice_layer_cases():
    g = torch.Generator().manual_seed(804)
    cases = []
    for N, E, cf, C, dtype in [(12, 4, 1.0, 8, torch.float32), (10, 4, 2.0, 6, torch.float64),
                               (8, 2, 1.5, 8, torch.float32)]:
        logits = torch.randn(N, E, generator=g, dtype=torch.float64) * 2  # (N, E)
        gates, index, _ = expert_choice_reference(logits, cf)  # (E, c) each
        experts = nn.ModuleList(nn.Sequential(nn.Linear(C, 2 * C), nn.SiLU(), nn.Linear(2 * C, C))
                                for _ in range(E)).to(dtype)
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(p.shape[-1]))
        x = torch.randn(N, C, generator=g, dtype=torch.float64).to(dtype)
        n_multi = int((torch.bincount(index.reshape(-1), minlength=N) > 1).sum())  # tokens chosen twice or more
        cases.append((f"x ({N}, {C}) {dtype}, {E} experts each taking {index.shape[1]} tokens "
                      f"({n_multi} tokens chosen by several experts)", (x, gates.to(dtype), index, experts)))
    return cases


EXPERT_CHOICE_LAYER_MISCONCEPTIONS = {
    "overwrites": "a token chosen by several experts keeps only one expert's output: `y[token_index] = out` "
                  "overwrites repeated indices instead of adding. Accumulate with y.index_add(0, index, out) "
                  "(or index_put_ with accumulate=True).",
    "gates_ignored": "the experts' outputs are added without their gates: multiply each by gates[e, j].",
    "mutates_input": "an input tensor was changed in place.",
}

EXPERT_CHOICE_LAYER_SOLUTION = """import torch


def expert_choice_layer(x: torch.Tensor, gates: torch.Tensor, token_index: torch.Tensor, experts) -> torch.Tensor:
    buffers = x[token_index]  # (E, c, C): the tokens each expert chose
    outputs = torch.stack([expert(buffers[e]) for e, expert in enumerate(experts)])  # (E, c, C)
    weighted = outputs * gates[..., None].to(x.dtype)  # (E, c, C)
    return torch.zeros_like(x).index_add(0, token_index.reshape(-1), weighted.reshape(-1, x.size(-1)))  # (N, C)
"""


@register("check_expert_choice_layer", minutes=15, points=2, reference=EXPERT_CHOICE_LAYER_SOLUTION,
          misconceptions=EXPERT_CHOICE_LAYER_MISCONCEPTIONS, forbid=("course_lib.moe", "course_lib.checks"),
          hint="Gather each expert's chosen tokens with token_index, run each expert once, weight by the gates, "
               "and add the results back at the tokens' rows: a token may come back from several experts.",
          idea="buffers = x[token_index] (E, c, C); outputs = stack([expert(buffers[e]) ...]) * gates[..., None]; "
               "y = zeros_like(x).index_add(0, token_index.reshape(-1), outputs.reshape(-1, C)) — index_add "
               "adds repeated rows, plain indexed assignment keeps only one of them.")
def check_expert_choice_layer(learner):
    variants = {k: (lambda x, g, i, ex, k=k: expert_choice_layer_reference(x, g, i, ex, kind=k))
                for k in ("overwrites", "gates_ignored")}
    with torch.no_grad():
        return _grade_function_cases(learner, _expert_choice_layer_cases(), expert_choice_layer_reference,
                                     variants, ("x", "gates", "token_index"))


# ================================================================== a Switch layer, end to end
def _switch_forward(m, x, *, kind=None):
    """[y with the residual, the balancing loss, the dropped fraction] of a Switch layer (top-1, capacity)."""
    B, T, C = x.shape
    h = x.reshape(B * T, C)  # (N, C)
    probs = torch.softmax(m.gate(h), dim=-1)  # (N, E)
    weight, index = probs.max(dim=-1, keepdim=True)  # (N, 1) each
    if kind == "renormalised_top1":
        weight = weight / weight.sum(-1, keepdim=True)  # = 1: Mixtral's renormalisation with k = 1
    cf = float("inf") if kind == "capacity_ignored" else m.capacity_factor
    capacity = B * T if kind == "capacity_ignored" else None
    dispatch, combine, dropped = capacity_dispatch_reference(weight, index, m.n_experts, cf, capacity=capacity)
    y = dispatch_experts_reference(h, dispatch, combine, m.experts)  # (N, C)
    f = F.one_hot(index[:, 0], m.n_experts).to(h.dtype).mean(0)  # (E,)
    aux = m.n_experts * (f * probs.mean(0)).sum()
    out = y if kind == "no_residual" else h + y  # (N, C)
    return [out.view(B, T, C), aux, torch.tensor(float(dropped), dtype=torch.float64)]  # (B, T, C), (), ()


SWITCH_MISCONCEPTIONS = {
    "renormalised_top1": "the top-1 weight is renormalised, which makes it exactly 1: the expert's output no "
                         "longer depends on the router, so the router gets no gradient from the loss. Switch "
                         "scales the output by the router probability p_i(x) itself (§2.1).",
    "no_residual": "the residual is missing: the layer returns x + the experts' output (a dropped token comes "
                   "out as x).",
    "capacity_ignored": "every token reaches its expert: use capacity_dispatch with self.capacity_factor, so "
                        "that tokens beyond an expert's capacity are dropped.",
    "mutates_input": "the input x was changed in place.",
}

SWITCH_SOLUTION = '''import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# the experts, as the exercise builds them
from course_lib.ffn import GatedFeedForward


# part 4
def capacity_dispatch(weights: torch.Tensor, indices: torch.Tensor, n_experts: int,
                      capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor, float]:
''' + DISPATCH_SOLUTION.split("capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor, float]:\n", 1)[1] + '''

# part 5
''' + EXPERTS_SOLUTION.split("import torch\n\n\n", 1)[1] + '''

class SwitchMoE(nn.Module):
    def __init__(self, d_model: int, d_ff: int, n_experts: int = 4, capacity_factor: float = 1.25):
        super().__init__()
        self.n_experts, self.capacity_factor = n_experts, capacity_factor
        self.gate = nn.Linear(d_model, n_experts, bias=False)  # the router
        self.experts = nn.ModuleList(GatedFeedForward(d_model, d_ff) for _ in range(n_experts))  # SwiGLU

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        B, T, C = x.shape
        h = x.reshape(B * T, C)  # (N, C)
        probs = torch.softmax(self.gate(h), dim=-1)  # (N, E)
        weight, index = probs.max(dim=-1, keepdim=True)  # (N, 1) each: top-1 and its probability, as it is
        dispatch, combine, dropped = capacity_dispatch(weight, index, self.n_experts, self.capacity_factor)
        y = dispatch_experts(h, dispatch, combine, self.experts)  # (N, C): zero for a dropped token
        f = F.one_hot(index[:, 0], self.n_experts).to(h.dtype).mean(dim=0)  # (E,): share of tokens per expert
        balance_loss = self.n_experts * (f * probs.mean(dim=0)).sum()  # part 2's loss with k = 1
        return x + y.view(B, T, C), balance_loss, dropped  # (N, C) -> (B, T, C), plus the residual
'''


def _switch_module(cls, *args) -> nn.Module:
    if not isinstance(cls, type):
        raise Mismatch(f"pass the class itself (SwitchMoE), not {type(cls).__name__}")
    m = call_learner(cls, *args)
    if not isinstance(m, nn.Module):
        raise Mismatch("SwitchMoE should subclass torch.nn.Module")
    for name in ("gate", "experts"):
        if not isinstance(getattr(m, name, None), nn.Module):
            raise Mismatch(f"no sub-module called `{name}`; keep the __init__ given in the exercise")
    return m


@register("check_switch_moe", minutes=20, points=3, reference=SWITCH_SOLUTION, misconceptions=SWITCH_MISCONCEPTIONS,
          forbid=("course_lib.moe", "course_lib.checks"),
          hint="Parts 1-5 put together, with Switch's top-1 routing: the expert's output is scaled by the "
               "router's probability for it. Return the output with its residual, the balancing loss and the "
               "dropped fraction.",
          idea="probs = softmax(self.gate(h), -1); weight, index = probs.max(-1, keepdim=True) (not renormalised); "
               "dispatch, combine, dropped = capacity_dispatch(weight, index, E, self.capacity_factor); "
               "y = dispatch_experts(h, dispatch, combine, self.experts); balance loss E·Σ f_i·P_i with "
               "f = one_hot(index).mean(0), P = probs.mean(0); return x + y, loss, dropped.")
def check_switch_moe(learner):
    g = torch.Generator().manual_seed(805)
    outs, refs, labels, pairs = [], [], [], []
    for i, (d, f, E, cf, (B, T), dtype) in enumerate([(16, 24, 4, 1.0, (2, 8), torch.float32),
                                                      (8, 16, 4, 1.25, (3, 5), torch.float64),
                                                      (12, 16, 8, 0.5, (1, 16), torch.float32)]):
        m = _switch_module(learner, d, f, E, cf)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(p.shape[-1]))
            m.gate.weight.mul_(3.0)  # a confident router, so that experts overflow
        m = m.to(dtype).eval()
        x = torch.randn(B, T, d, generator=g, dtype=torch.float64).to(dtype)
        labels.append(f"d_model={d}, d_ff={f}, {E} experts, capacity_factor={cf}, {dtype}, x {tuple(x.shape)}")
        with torch.no_grad():
            refs.append(_switch_forward(m, x))
        x_in = x.clone()
        out = call_learner(m, x_in)
        if not torch.equal(x_in, x):
            raise Mismatch("forward modified its input x in place; compute a new tensor instead",
                           f"case: {labels[-1]}", "mutates_input")
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise Mismatch("forward should return a tuple (y, balance_loss, dropped), got "
                           f"{type(out).__name__}", f"case: {labels[-1]}")
        try:
            outs.append([out[0], out[1], _as_fraction(out[2])])
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {labels[-1]}") from None
        pairs.append((m, x))
    for label, out, expected in zip(labels, outs, refs):
        try:
            for o, e, name in zip(out, expected, ("y", "balance_loss", "dropped fraction")):
                compare(o.detach() if isinstance(o, torch.Tensor) else o, e, name)
        except Mismatch as mm:
            runs = {k: (lambda k=k: [t for m, x in pairs for t in _switch_forward(m, x, kind=k)])
                    for k in ("renormalised_top1", "no_residual", "capacity_ignored")}
            with torch.no_grad():
                key = diagnose([t.detach() for o in outs for t in o], runs, [t for r in refs for t in r])
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    m, x = pairs[0]
    y, loss = outs[0][0], outs[0][1]
    if not (y.requires_grad and loss.requires_grad):
        raise Mismatch("no gradient flows from your output or loss back to the router", f"case: {labels[0]}")
    grad = torch.autograd.grad(y.square().sum() + loss, m.gate.weight, allow_unused=True)[0]
    if grad is None or not grad.abs().sum() > 0:
        raise Mismatch("the router gets no gradient", f"case: {labels[0]}")
    return len(pairs) + 1
