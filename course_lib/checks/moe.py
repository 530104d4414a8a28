"""Checks for Lesson 08 (mixture of experts): top-k routing, the load-balancing loss and a sparse
MoE sub-layer's forward. Each misconception is a tiny re-creation of the mistake; the check
names the one whose outputs equal the learner's."""
from __future__ import annotations

import torch
import torch.nn as nn

from course_lib import moe as ref
from .cases import Case, grade_function, randn
from .core import Mismatch, assert_unmodified, call_learner, compare, diagnose, register, snapshot


# ------------------------------------------------------------------ top-k routing
def _routing_variant(logits, k, *, axis=-1, renorm=True, softmax=True):
    probs = torch.softmax(logits, dim=axis) if softmax else logits  # (N, E)
    w, i = probs.topk(k, dim=-1)  # (N, k)
    return (w / w.sum(-1, keepdim=True) if renorm else w), i


ROUTING_MISCONCEPTIONS = {
    "token_axis": "softmax is taken over the tokens (dim=0). Each *token* distributes its weight over "
                  "the experts: softmax over the last axis (dim=-1), one row per token.",
    "no_renormalisation": "the top-k probabilities are not renormalised, so a token's weights sum to less "
                          "than 1. Mixtral divides them by their sum: weights / weights.sum(-1, keepdim=True).",
    "raw_logits": "the weights are the raw top-k logits; turn them into probabilities with a softmax "
                  "over the experts first.",
    "mutates_input": "the input tensor was changed in place.",
}


def _grade_tuple(learner, cases: list[Case], reference, variants: dict, arg_names, what=("weights", "indices")):
    """grade_function for a learner that returns a tuple of tensors."""
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    refs, outs = [], []
    for case in cases:
        refs.append(list(reference(*case.args)))
        before = snapshot(case.args)
        out = call_learner(learner, *case.args)
        try:
            assert_unmodified(case.args, before, arg_names)
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}", "mutates_input") from None
        if not isinstance(out, (tuple, list)) or len(out) != len(what):
            raise Mismatch(f"return a tuple ({', '.join(what)}), got {type(out).__name__}", f"case: {case.label}")
        outs.append(list(out))
    for case, out, expected in zip(cases, outs, refs):
        try:
            for o, e, name in zip(out, expected, what):
                compare(o, e, name)
        except Mismatch as mm:
            runs = {k: (lambda v=v: [t for c in cases for t in v(*c.args)]) for k, v in variants.items()}
            key = diagnose([t for o in outs for t in o], runs, [t for r in refs for t in r])
            raise Mismatch(mm.reason, f"case: {case.label}", key) from None
    return len(cases)


ROUTING_SOLUTION = """import torch


def top_k_routing(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(router_logits, dim=-1)  # (N, E): over the experts, never over the tokens
    weights, indices = probs.topk(k, dim=-1)  # (N, k) each, best expert first
    return weights / weights.sum(dim=-1, keepdim=True), indices  # a token's k weights sum to 1
"""


@register("check_top_k_routing", minutes=15,
          forbid=('course_lib.moe.top_k_routing', 'course_lib.checks'), points=2, reference=ROUTING_SOLUTION, misconceptions=ROUTING_MISCONCEPTIONS,
          hint="probs = torch.softmax(router_logits, dim=-1) (over the experts); weights, indices = "
               "probs.topk(k, dim=-1); then weights / weights.sum(-1, keepdim=True) so each token's k "
               "weights sum to 1.")
def check_top_k_routing(learner):
    g = torch.Generator().manual_seed(81)
    cases = [
        Case("router_logits of shape (6, 4) (6 tokens, 4 experts), k=2", (randn(6, 4, gen=g), 2)),
        Case("router_logits (10, 8), k=2 (Mixtral's 8 experts, top-2)", (randn(10, 8, gen=g) * 2, 2)),
        Case("router_logits (5, 8), k=1 (Switch: one expert per token)", (randn(5, 8, gen=g), 1)),
        Case("router_logits (7, 6) float64, k=3", (randn(7, 6, gen=g, dtype=torch.float64), 3)),
    ]
    variants = {
        "token_axis": lambda x, k: _routing_variant(x, k, axis=0),
        "no_renormalisation": lambda x, k: _routing_variant(x, k, renorm=False),
        "raw_logits": lambda x, k: _routing_variant(x, k, renorm=False, softmax=False),
    }
    return _grade_tuple(learner, cases, ref.top_k_routing, variants, ("router_logits", "k"))


# ------------------------------------------------------------------ load-balancing loss
def _balance_variant(probs, idx, E, *, f_source="mask", scale=True, per_choice=False):
    f = torch.nn.functional.one_hot(idx, E).sum(1).to(probs.dtype).mean(0)  # (E,)
    if per_choice:
        f = f / idx.size(-1)
    P = f if f_source == "mask" else probs.mean(0)  # (E,)
    return (E if scale else 1) * (f * P).sum()


BALANCE_MISCONCEPTIONS = {
    "mask_only": "the loss is computed from the top-k mask alone (f_i · f_i). Counts have no gradient, so "
                 "the router could never learn from it; P_i must be the mean router *probability* of "
                 "expert i: router_probs.mean(0).",
    "no_scale": "the sum Σ f_i·P_i is not multiplied by the number of experts N. With the factor a "
                "balanced router scores k whatever N is, so one coefficient works for every size.",
    "fraction_of_assignments": "f_i is divided by k (the fraction of *assignments*). Here, as in Switch and "
                               "Hugging Face Mixtral, f_i is the fraction of *tokens* that chose expert i "
                               "among their k, so Σ f_i = k.",
    "detached": "the value is right but no gradient reaches router_probs (.detach(), .item(), a NumPy "
                "detour or torch.no_grad()); the loss exists to train the router.",
    "mutates_input": "an input tensor was changed in place.",
}


def _balance_cases(g) -> list[Case]:
    cases = []
    for label, N, E, k, scale, dtype in [("8 tokens, 4 experts, k=1", 8, 4, 1, 1.0, torch.float32),
                                         ("12 tokens, 8 experts, k=2", 12, 8, 2, 2.0, torch.float32),
                                         ("10 tokens, 6 experts, k=2, float64", 10, 6, 2, 1.0, torch.float64)]:
        probs = torch.softmax(randn(N, E, gen=g, dtype=dtype) * scale, -1)  # (N, E)
        cases.append(Case(f"{label}: router_probs ({N}, {E}), expert_indices ({N}, {k})",
                          (probs, probs.topk(k, -1).indices, E)))
    collapsed = torch.softmax(randn(6, 4, gen=g) + torch.tensor([4.0, 0, 0, 0]), -1)  # (6, 4)
    cases.append(Case("a collapsed router: every token prefers expert 0, k=1",
                      (collapsed, collapsed.topk(1, -1).indices, 4)))
    return cases


BALANCE_SOLUTION = """import torch
import torch.nn.functional as F


def load_balancing_loss(router_probs: torch.Tensor, expert_indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    chosen = F.one_hot(expert_indices, n_experts).sum(dim=1)  # (N, k) -> (N, k, E) -> (N, E): choices per expert
    f = chosen.to(router_probs.dtype).mean(dim=0)  # (E,): fraction of tokens per expert, a count (no gradient)
    P = router_probs.mean(dim=0)  # (E,): mean router probability; the gradient flows through it
    return n_experts * (f * P).sum()
"""


@register("check_load_balancing_loss", minutes=15,
          forbid=('course_lib.moe.load_balancing_loss', 'course_lib.checks'), points=2, reference=BALANCE_SOLUTION,
          misconceptions=BALANCE_MISCONCEPTIONS,
          hint="f = F.one_hot(expert_indices, n_experts).sum(1).float().mean(0) — the fraction of tokens "
               "that chose each expert; P = router_probs.mean(0); return n_experts * (f * P).sum().")
def check_load_balancing_loss(learner):
    cases = _balance_cases(torch.Generator().manual_seed(82))
    variants = {
        "mask_only": lambda p, i, E: _balance_variant(p, i, E, f_source="mask"),
        "no_scale": lambda p, i, E: _balance_variant(p, i, E, f_source="probs", scale=False),
        "fraction_of_assignments": lambda p, i, E: _balance_variant(p, i, E, f_source="probs", per_choice=True),
    }
    n = grade_function(learner, cases, ref.load_balancing_loss, variants, ("router_probs", "expert_indices"))
    probs, idx, E = cases[1].args
    probs = probs.clone().requires_grad_(True)
    loss = call_learner(learner, probs, idx, E)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        raise Mismatch("no gradient flows from your loss back to router_probs", f"case: {cases[1].label}",
                       "detached")
    return n + 1


# ------------------------------------------------------------------ sparse MoE sub-layer
def sparse_moe_forward(moe, x):
    """SparseMoE.forward, the sub-layer *with its residual*: y = x + Σ_kept w · expert(x).
    A token none of whose choices fits in its expert's capacity comes out unchanged (y = x)."""
    B, T, C = x.shape
    h = x.reshape(-1, C)  # (N, C)
    weights, indices = ref.top_k_routing(moe.gate(h), moe.top_k)  # (N, k) each
    kept = torch.ones_like(indices, dtype=torch.bool)  # (N, k)
    if moe.capacity_factor is not None:
        capacity = ref.expert_capacity(h.size(0), moe.n_experts, moe.top_k, moe.capacity_factor)
        kept = ref.capacity_mask(indices, moe.n_experts, capacity)  # (N, k)
    y = torch.zeros_like(h)  # (N, C)
    for e, expert in enumerate(moe.experts):
        token, choice = torch.where((indices == e) & kept)  # tokens that chose e and got a slot
        if len(token):
            out = expert(h[token]) * weights[token, choice, None]  # (n, C)
            y = y.index_add(0, token, out)  # (N, C)
    return x + y.view(B, T, C)  # (N, C) -> (B, T, C), plus the residual


def _moe_variant(moe, x, kind):
    B, T, C = x.shape
    h = x.reshape(-1, C)  # (N, C)
    weights, indices = ref.top_k_routing(moe.gate(h), moe.top_k)  # (N, k)
    kept = torch.ones_like(indices, dtype=torch.bool)  # (N, k)
    if moe.capacity_factor is not None and kind != "capacity_ignored":
        capacity = ref.expert_capacity(h.size(0), moe.n_experts, moe.top_k, moe.capacity_factor)
        kept = ref.capacity_mask(indices, moe.n_experts, capacity)  # (N, k)
    if kind == "weights_ignored":
        weights = torch.ones_like(weights)
    y = torch.zeros_like(h)  # (N, C)
    for e, expert in enumerate(moe.experts):
        w_e = (weights * ((indices == e) & kept)).sum(-1)  # (N,)
        y = y + w_e[:, None] * expert(h)  # (N, C)
    if kind == "no_residual":
        return y.view(B, T, C)  # (B, T, C)
    out = h + y  # (N, C)
    if kind == "dropped_zeroed":
        out = out * kept.any(-1, keepdim=True)  # (N, C): fully dropped tokens -> 0
    return out.view(B, T, C)  # (B, T, C)


MOE_MISCONCEPTIONS = {
    "weights_ignored": "the experts' outputs are added without the router weights. Multiply each expert's "
                       "output by its token's weight for that expert before adding it.",
    "dropped_zeroed": "tokens whose experts were all full come out as zeros. A dropped token skips the "
                      "experts but keeps its residual: its output is x itself (Switch Transformer §2.2).",
    "no_residual": "the residual is missing: this sub-layer returns x + Σ w·expert(x).",
    "capacity_ignored": "every assignment is kept; with capacity_factor set, keep only the assignments "
                        "where capacity_mask(...) is True (each expert has `capacity` slots).",
    "mutates_input": "the input x was changed in place.",
}


def _instantiate(cls, *args) -> nn.Module:
    if not isinstance(cls, type):
        raise Mismatch(f"pass the class itself (SparseMoE), not {type(cls).__name__}")
    m = call_learner(cls, *args)
    if not isinstance(m, nn.Module):
        raise Mismatch("SparseMoE should subclass torch.nn.Module")
    for name in ("gate", "experts"):
        if not isinstance(getattr(m, name, None), nn.Module):
            raise Mismatch(f"no sub-module called `{name}`; keep the __init__ given in the exercise")
    return m


MOE_SOLUTION = """import torch
import torch.nn as nn

# what the exercise imports for you: the experts, the capacity helpers and part 1's routing
from course_lib.ffn import GatedFeedForward
from course_lib.moe import capacity_mask, expert_capacity
from course_lib.moe import top_k_routing as reference_top_k_routing


class SparseMoE(nn.Module):
    def __init__(self, d_model: int, d_ff: int, n_experts: int = 4, top_k: int = 2,
                 capacity_factor: float | None = None):
        super().__init__()
        self.n_experts, self.top_k, self.capacity_factor = n_experts, top_k, capacity_factor
        self.gate = nn.Linear(d_model, n_experts, bias=False)  # the router
        self.experts = nn.ModuleList(GatedFeedForward(d_model, d_ff) for _ in range(n_experts))  # SwiGLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = x.reshape(-1, C)  # (N, C): one row per token
        weights, indices = reference_top_k_routing(self.gate(h), self.top_k)  # (N, k) each
        kept = torch.ones_like(indices, dtype=torch.bool)  # (N, k): without a capacity every choice fits
        if self.capacity_factor is not None:
            capacity = expert_capacity(h.size(0), self.n_experts, self.top_k, self.capacity_factor)
            kept = capacity_mask(indices, self.n_experts, capacity)  # (N, k)
        y = torch.zeros_like(h)  # (N, C)
        for e, expert in enumerate(self.experts):
            token, choice = torch.where((indices == e) & kept)  # (n,) each: who chose e and got a slot
            out = expert(h[token]) * weights[token, choice, None]  # (n, C): only those tokens run
            y = y.index_add(0, token, out)  # (N, C)
        return x + y.view(B, T, C)  # (N, C) -> (B, T, C), plus the residual
"""


@register("check_sparse_moe", minutes=30,
          forbid=('course_lib.moe.SparseMoE', 'course_lib.checks'), points=4, reference=MOE_SOLUTION, misconceptions=MOE_MISCONCEPTIONS,
          hint="Flatten x to (N, C); weights, indices = top_k_routing(self.gate(h), self.top_k); with a "
               "capacity factor, kept = capacity_mask(indices, ...). For each expert e: token, choice = "
               "torch.where((indices == e) & kept); add expert(h[token]) * weights[token, choice, None] into "
               "a zero (N, C) tensor with index_add. Return x + that, reshaped to (B, T, C).")
def check_sparse_moe(learner):
    g = torch.Generator().manual_seed(83)
    specs = [(16, 32, 4, 2, None, (2, 5), torch.float32), (16, 24, 4, 1, 1.0, (2, 8), torch.float32),
             (8, 16, 8, 2, None, (3, 4), torch.float64), (12, 16, 4, 1, 0.5, (1, 12), torch.float32)]
    outs, refs, labels, pairs = [], [], [], []
    for i, (d, f, E, k, cf, (B, T), dtype) in enumerate(specs):
        torch.manual_seed(i)
        m = _instantiate(learner, d, f, E, k, cf)
        with torch.no_grad():
            m.gate.weight.mul_(3.0)  # a confident router, so that capacity really overflows
        m = m.to(dtype).eval()
        x = randn(B, T, d, gen=g, dtype=dtype)
        labels.append(f"d_model={d}, d_ff={f}, {E} experts, top_k={k}, capacity_factor={cf}, {dtype}, "
                      f"x {tuple(x.shape)}")
        with torch.no_grad():
            refs.append(sparse_moe_forward(m, x))
            x_in = x.clone()
            outs.append(call_learner(m, x_in))
        if not torch.equal(x_in, x):
            raise Mismatch("forward modified its input x in place; compute a new tensor instead",
                           f"case: {labels[-1]}", "mutates_input")
        pairs.append((m, x))
    for label, out, expected in zip(labels, outs, refs):
        try:
            compare(out, expected)
        except Mismatch as mm:
            runs = {k: (lambda k=k: [_moe_variant(m, x, k) for m, x in pairs])
                    for k in ("weights_ignored", "dropped_zeroed", "no_residual", "capacity_ignored")}
            with torch.no_grad():
                key = diagnose(outs, runs, refs)
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    return len(specs)
