"""Mixture of experts, read top to bottom: routing -> auxiliary losses -> capacity -> the sparse
MoE layer -> weights from Hugging Face Mixtral -> counting total and active parameters.

A sparse MoE layer replaces the one FFN of a block by E expert FFNs and a *router* (a linear
"gate") that sends each token to k of them (Shazeer et al. 2017, Eq. 1-5):

    y = Σ_{i ∈ top-k(x)} w_i(x) · E_i(x)

so a token pays for k experts while the model holds E of them. Names follow Hugging Face
Mixtral: the router is ``gate`` (a bias-free linear d_model -> E) and ``experts.i`` are SwiGLU
FFNs with ``gate_proj/up_proj/down_proj``. Tokens are flattened: N = B·T rows of C channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import ConfigError, check_choice, check_positive, check_range
from course_lib.ffn import GatedFeedForward, check_activation

ORDERS = ("softmax_topk", "topk_softmax")


# --------------------------------------------------------------------------- routing
def top_k_routing(router_logits: torch.Tensor, k: int, order: str = "softmax_topk",
                  normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits (N, E) -> (weights (N, k), expert indices (N, k) int64), best expert first.

    order="softmax_topk" (Mixtral, Switch, DeepSeek): softmax over all E experts, keep the k
        largest probabilities, and with ``normalize`` divide them by their sum.
    order="topk_softmax" (Shazeer 2017, Eq. 3-5): keep the k largest *logits*, softmax over them.
    The two agree whenever the first one renormalises: exp(l_i) / Σ_{j in top-k} exp(l_j) either way.
    """
    if router_logits.dim() != 2:
        raise ValueError(f"router_logits should be (N tokens, E experts), got shape {tuple(router_logits.shape)}; "
                         "flatten the batch first: logits.reshape(-1, n_experts).")  # (B, T, E) -> (N, E)
    E = router_logits.size(-1)
    if not isinstance(k, int) or not 1 <= k <= E:
        raise ValueError(f"k={k!r}: expected an integer between 1 and the number of experts ({E}).")
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: expected one of {ORDERS}.")
    if order == "topk_softmax":
        if not normalize:
            raise ValueError("order='topk_softmax' is normalised by construction; use order='softmax_topk' "
                             "with normalize=False for unnormalised weights.")
        top_logits, indices = router_logits.topk(k, dim=-1)  # (N, k)
        return torch.softmax(top_logits, dim=-1), indices
    probs = torch.softmax(router_logits, dim=-1)  # (N, E): over the experts, never over tokens
    weights, indices = probs.topk(k, dim=-1)  # (N, k)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, indices


def expert_load(expert_indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """How many (token, choice) assignments each expert received: (N, k) -> (E,) int64."""
    return torch.bincount(expert_indices.reshape(-1), minlength=n_experts)  # (E,)


# --------------------------------------------------------------------------- auxiliary losses
def load_balancing_loss(router_probs: torch.Tensor, expert_indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch Transformer's balancing loss (Fedus et al. 2021, Eq. 4-6): N_E · Σ_i f_i · P_i.

    f_i = fraction of tokens routed to expert i, counting all k choices (as in Hugging Face's
          Mixtral): Σ f_i = k, and each f_i <= 1 because top-k picks an expert at most once per
          token; it has no gradient — it is a count.
    P_i = mean router probability of expert i (Σ P_i = 1); the gradient flows through it.
    Since f_i <= 1 the loss is at most N_E, approached when nearly all the probability sits on
    experts that every token picks (a collapsed router). A uniform load (f_i = k/N_E) scores
    exactly k, whatever P is. k is the minimum only when P follows the load: P_i = f_i/k gives
    (N_E/k)·Σ f_i² >= k, equal iff the load is uniform. In general the loss can go below k, e.g.
    when a router picks an expert but gives it almost no probability.
    """
    probs = router_probs.reshape(-1, n_experts)  # (N, E)
    idx = expert_indices.reshape(probs.size(0), -1)  # (N, k)
    f = F.one_hot(idx, n_experts).sum(dim=1).to(probs.dtype).mean(dim=0)  # (E,)
    P = probs.mean(dim=0)  # (E,)
    return n_experts * (f * P).sum()


def router_z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss (Zoph et al. 2022, Eq. 5): mean over tokens of logsumexp(logits)².
    It keeps the router's logits small, which keeps its softmax numerically tame."""
    return torch.logsumexp(router_logits.float(), dim=-1).pow(2).mean()


# --------------------------------------------------------------------------- capacity
def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert (Switch §2.2; GShard): ceil(capacity_factor · n_tokens · k / n_experts).
    Factor 1.0 gives exactly enough slots if the router were perfectly balanced."""
    if not capacity_factor > 0:
        raise ValueError(f"capacity_factor={capacity_factor!r}: expected a positive number (1.0-2.0 is usual) "
                         "or None for no limit.")
    return max(1, math.ceil(capacity_factor * n_tokens * top_k / n_experts))


def capacity_mask(expert_indices: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """(N, k) bool: True where an assignment fits in its expert's `capacity` slots.

    Priority (GShard): every token's first choice before any second choice, and earlier tokens
    first within a choice. An assignment that overflows is dropped: its token skips that expert
    (with every choice dropped the token passes through the block on the residual alone).
    """
    N, k = expert_indices.shape
    flat = expert_indices.t().reshape(-1)  # (k·N,) choice-major: all first choices, then seconds
    hot = F.one_hot(flat, n_experts)  # (k·N, E)
    slot = (hot.cumsum(dim=0) * hot).sum(dim=-1) - 1  # (k·N,) place in its expert's queue
    return (slot < capacity).view(k, N).t()  # (k·N,) -> (k, N) -> (N, k)


# --------------------------------------------------------------------------- the layer
@dataclass
class MoEConfig:
    """One sparse MoE layer. Mixtral-8x7B: d_model=4096, d_ff=14336, n_experts=8, top_k=2."""
    d_model: int = 64
    d_ff: int = 128  # hidden size of each expert
    n_experts: int = 8
    top_k: int = 2
    capacity_factor: float | None = None  # None: no limit (Mixtral); 1.0-1.25 in Switch
    n_shared_experts: int = 0  # DeepSeek-MoE: experts every token always uses
    order: str = "softmax_topk"
    normalize: bool = True  # renormalise the top-k probabilities (Mixtral: yes)
    activation: str = "silu"

    def __post_init__(self):
        check_positive(self, "d_model", "d_ff", "n_experts", "top_k")
        if self.top_k > self.n_experts:
            raise ConfigError(f"MoEConfig.top_k={self.top_k} is more than n_experts={self.n_experts}: a token "
                              f"cannot pick more experts than exist. Use top_k <= {self.n_experts}.")
        if self.capacity_factor is not None:  # None: no limit
            check_range(self, "capacity_factor", 0, math.inf, low_inclusive=False,
                        hint="e.g. 1.25, or None for no limit")
        check_range(self, "n_shared_experts", 0, math.inf, integer=True, hint="0 = none; DeepSeek-MoE uses 1 or 2")
        check_choice(self, "order", ORDERS, hint="'softmax_topk' = Mixtral")
        check_activation(self, hint="Mixtral: 'silu'")
        if self.order == "topk_softmax" and not self.normalize:
            raise ConfigError("MoEConfig: order='topk_softmax' is always normalised; set normalize=True "
                              "or use order='softmax_topk'.")


@dataclass
class MoEStats:
    """What the last forward pass routed (kept on the layer as ``.last`` for losses and plots)."""
    router_logits: torch.Tensor  # (N, E)
    weights: torch.Tensor  # (N, k) combine weights, 0 where dropped
    indices: torch.Tensor  # (N, k)
    kept: torch.Tensor  # (N, k) bool
    capacity: int | None
    balance_loss: torch.Tensor  # scalar, differentiable
    z_loss: torch.Tensor  # scalar, differentiable

    @property
    def overflow(self) -> int:
        """Assignments dropped because their expert was full."""
        return int((~self.kept).sum())

    @property
    def dropped_tokens(self) -> int:
        """Tokens none of whose experts had room: they pass through on the residual alone."""
        return int((~self.kept.any(dim=-1)).sum())

    def load(self) -> torch.Tensor:
        """(E,) assignments per expert that the router *asked* for (before capacity)."""
        return expert_load(self.indices, self.router_logits.size(-1))


class SparseMoE(nn.Module):
    """Top-k sparse mixture of SwiGLU experts, equal to Hugging Face's MixtralSparseMoeBlock
    (whose router logits are ``.last.router_logits`` here). x (B, T, C) -> (B, T, C).
    ``router_bias`` and ``expert`` (a function building one expert, (N, C) -> (N, C)) let a family
    keep this dispatch with its own router and experts (GPT-OSS: a biased router, clamped SwiGLU)."""

    def __init__(self, d_model: int, d_ff: int, n_experts: int = 8, top_k: int = 2, *,
                 capacity_factor: float | None = None, n_shared_experts: int = 0,
                 order: str = "softmax_topk", normalize: bool = True, activation: str = "silu",
                 router_bias: bool = False, expert=None):
        super().__init__()
        self.config = MoEConfig(d_model, d_ff, n_experts, top_k, capacity_factor, n_shared_experts,
                                order, normalize, activation)
        self.gate = nn.Linear(d_model, n_experts, bias=router_bias)  # the router
        expert = expert or (lambda: GatedFeedForward(d_model, d_ff, activation))
        self.experts = nn.ModuleList(expert() for _ in range(n_experts))
        self.shared_expert = (GatedFeedForward(d_model, d_ff * n_shared_experts, activation)
                              if n_shared_experts else None)  # s shared experts = one s-times wider FFN
        self.last: MoEStats | None = None

    def route(self, h: torch.Tensor) -> MoEStats:
        """h (N, C) -> routing decisions and auxiliary losses."""
        cfg = self.config
        logits = self.gate(h)  # (N, E)
        weights, indices = top_k_routing(logits, cfg.top_k, cfg.order, cfg.normalize)  # (N, k) each
        capacity = None
        kept = torch.ones_like(indices, dtype=torch.bool)  # (N, k)
        if cfg.capacity_factor is not None:
            capacity = expert_capacity(h.size(0), cfg.n_experts, cfg.top_k, cfg.capacity_factor)
            kept = capacity_mask(indices, cfg.n_experts, capacity)  # (N, k)
        probs = torch.softmax(logits.float(), dim=-1)  # (N, E)
        return MoEStats(logits, weights * kept, indices, kept, capacity,
                        load_balancing_loss(probs, indices, cfg.n_experts), router_z_loss(logits))

    def forward(self, x: torch.Tensor, naive: bool = False) -> torch.Tensor:
        if x.size(-1) != self.config.d_model:
            raise ValueError(f"SparseMoE was built for d_model={self.config.d_model}, got x of shape {tuple(x.shape)}.")
        h = x.reshape(-1, x.size(-1))  # (B, T, C) -> (N, C)
        self.last = stats = self.route(h)
        combine = self.combine_naive if naive else self.combine_grouped
        y = combine(h, stats.weights, stats.indices, stats.kept)  # (N, C)
        if self.shared_expert is not None:
            y = y + self.shared_expert(h)  # (N, C): every token, no router
        return y.view(x.shape)  # (N, C) -> (B, T, C)

    def combine_grouped(self, h, weights, indices, kept) -> torch.Tensor:
        """Efficient dispatch: group the kept (token, expert) pairs by expert, run each expert once
        on its own tokens only, and add the weighted results back with index_add."""
        N, k = indices.shape
        token = torch.arange(N, device=h.device).repeat_interleave(k)  # (N·k,) owner of each assignment
        expert, w, keep = indices.reshape(-1), weights.reshape(-1), kept.reshape(-1)  # (N·k,) each
        token, expert, w = token[keep], expert[keep], w[keep]  # (M,) kept assignments only
        order = torch.argsort(expert, stable=True)  # (M,): expert 0's tokens, then expert 1's, ...
        token, w = token[order], w[order]
        counts = torch.bincount(expert, minlength=len(self.experts)).tolist()
        y = torch.zeros_like(h)  # (N, C)
        start = 0
        for e, n in enumerate(counts):
            if n:
                rows = token[start:start + n]  # (n,) the tokens expert e serves
                out = self.experts[e](h[rows]) * w[start:start + n, None].to(h.dtype)  # (n, C)
                y = y.index_add(0, rows, out)  # (N, C)
            start += n
        return y

    def combine_naive(self, h, weights, indices, kept) -> torch.Tensor:
        """The definition, written plainly: every expert runs on *every* token, and each output is
        multiplied by that token's weight for the expert (0 when not chosen). E times the work."""
        y = torch.zeros_like(h)  # (N, C)
        for e, expert in enumerate(self.experts):
            w_e = (weights * (indices == e) * kept).sum(dim=-1)  # (N,): weight of expert e per token
            y = y + w_e[:, None].to(h.dtype) * expert(h)  # (N, C)
        return y


@dataclass
class LlamaMoE:
    """The ``moe`` option of ``course_lib.models.llama.LlamaConfig``: every block's SwiGLU FFN becomes a
    SparseMoE (Mixtral). ``d_ff`` None = the model's d_ff, the size of each expert."""
    n_experts: int = 8
    top_k: int = 2
    d_ff: int | None = None
    capacity_factor: float | None = None
    n_shared_experts: int = 0

    def __post_init__(self):  # the full validation happens in MoEConfig when a layer is built
        check_positive(self, "n_experts", "top_k")
        check_positive(self, "d_ff", allow_none=True)

    def build(self, cfg, layer_idx: int) -> SparseMoE:
        return SparseMoE(cfg.d_model, self.d_ff or cfg.d_ff, self.n_experts, self.top_k,
                         capacity_factor=self.capacity_factor, n_shared_experts=self.n_shared_experts,
                         activation=cfg.activation)


def moe_layers(model: nn.Module) -> list[SparseMoE]:
    return [m for m in model.modules() if isinstance(m, SparseMoE)]


def moe_aux_loss(model: nn.Module, balance_coef: float = 0.01, z_coef: float = 0.0) -> torch.Tensor:
    """Σ over the model's MoE layers of balance_coef · balancing loss + z_coef · z-loss, from the last
    forward pass (Switch used balance_coef = 0.01; ST-MoE z_coef = 0.001). Add it to the LM loss."""
    layers = [m for m in moe_layers(model) if m.last is not None]
    if not layers:
        raise ValueError("no SparseMoE layer has routed anything yet: run a forward pass first.")
    return sum(balance_coef * m.last.balance_loss + z_coef * m.last.z_loss for m in layers)


# --------------------------------------------------------------------------- Hugging Face weights
def mixtral_block_state_dict(hf_state: dict, prefix: str = "") -> dict:
    """Hugging Face Mixtral sparse-block weights -> SparseMoE's state dict (without `prefix`).

    Accepts both layouts: transformers ≥ 5 stores experts fused as ``experts.gate_up_proj`` (E, 2F, C)
    and ``experts.down_proj`` (E, C, F); older checkpoints hold ``experts.i.w1`` (gate), ``w3`` (up)
    and ``w2`` (down) per expert.
    """
    out = {"gate.weight": hf_state[prefix + "gate.weight"]}
    fused = prefix + "experts.gate_up_proj"
    if fused in hf_state:
        gate_up, down = hf_state[fused], hf_state[prefix + "experts.down_proj"]  # (E, 2F, C), (E, C, F)
        gate, up = gate_up.chunk(2, dim=1)  # (E, F, C) each
        for e in range(gate_up.size(0)):
            out.update({f"experts.{e}.gate_proj.weight": gate[e], f"experts.{e}.up_proj.weight": up[e],
                        f"experts.{e}.down_proj.weight": down[e]})
        return out
    names = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
    for key, value in hf_state.items():
        if key.startswith(prefix + "experts."):
            e, w, rest = key[len(prefix + "experts."):].split(".", 2)
            out[f"experts.{e}.{names.get(w, w)}.{rest}"] = value
    return out


def mixtral_block_to_hf(state: dict) -> dict:
    """The inverse of mixtral_block_state_dict: SparseMoE's state dict -> the fused transformers ≥ 5
    layout (``gate.weight``, ``experts.gate_up_proj`` (E, 2F, C), ``experts.down_proj`` (E, C, F))."""
    extra = [k for k in state if k != "gate.weight" and not k.startswith("experts.")]
    if extra:
        raise ValueError(f"{extra[:3]}: Mixtral's block has a router and experts only (no shared experts).")
    E = sum(k.endswith(".gate_proj.weight") for k in state)
    w = lambda e, name: state[f"experts.{e}.{name}.weight"]  # noqa: E731
    gate_up = torch.stack([torch.cat([w(e, "gate_proj"), w(e, "up_proj")]) for e in range(E)])  # (E, 2F, C)
    down = torch.stack([w(e, "down_proj") for e in range(E)])  # (E, C, F)
    return {"gate.weight": state["gate.weight"], "experts.gate_up_proj": gate_up, "experts.down_proj": down}


def from_hf_mixtral_block(hf_block: nn.Module) -> SparseMoE:
    """A SparseMoE equal to a Hugging Face ``MixtralSparseMoeBlock`` (same weights)."""
    cfg_src = hf_block.experts
    moe = SparseMoE(cfg_src.hidden_dim, cfg_src.intermediate_dim, cfg_src.num_experts, hf_block.top_k)
    w = hf_block.gate.weight
    moe.load_state_dict(mixtral_block_state_dict(hf_block.state_dict()))
    return moe.to(device=w.device, dtype=w.dtype)
