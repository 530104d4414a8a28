"""DeepSeek-style mixture of experts (DeepSeekMoE, Dai et al. 2024; DeepSeek-V3 report §2.1.2), read
top to bottom: the config -> sigmoid scores and group-limited top-k -> the balancing bias and its
update -> the layer -> weights from Hugging Face.

What differs from lesson 08's Mixtral-style MoE (``course_lib.moe``):

  * **Fine-grained routed experts plus shared experts.** Many narrow experts (V3: 256 of width
    2048, 8 per token) instead of a few wide ones, and ``n_shared_experts`` that every token uses
    with no router (they hold what all tokens need, so the routed ones can specialise).
  * **Sigmoid scores**, s_i = σ(u·e_i), one independent score per expert instead of a softmax
    over experts; the chosen scores are divided by their sum (``norm_topk_prob``) and multiplied
    by ``routed_scaling_factor`` (2.5 in V3's config.json; it is not in the report's equations).
  * **Group-limited top-k** (the report's node-limited routing): the experts sit in ``n_group``
    equal groups (V3: 8, one per node); a group's score is the sum of its two highest expert scores
    (K_r/M = 8 experts / 4 nodes in the report; the released code and Hugging Face fix it at 2);
    a token keeps its ``topk_group`` best groups (V3: 4) and picks its top_k experts inside them.
  * **Auxiliary-loss-free balancing**: a per-expert bias b_i is added to the scores *for choosing
    the experts only*; the weights that multiply the experts' outputs use the plain s_i. After
    each training step, b_i moves by a fixed step γ: down if expert i was overloaded, up if
    underloaded (``update_bias``). No gradient flows through it: the bias is a buffer, stored in
    checkpoints as ``e_score_correction_bias``.

The layer is lesson 08's ``SparseMoE`` with a different router: its dispatch (``combine_grouped``,
``combine_naive``), its shared expert and its ``.last`` routing statistics are inherited, so
``moe.moe_aux_loss`` and ``MoEStats.load()`` work on it too. N = B·T flattened tokens, E routed experts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import ConfigError, check_divisible, check_positive, check_range, make_config
from course_lib.ffn import check_activation
from course_lib.moe import MoEStats, SparseMoE, load_balancing_loss, mixtral_block_state_dict, mixtral_block_to_hf


# --------------------------------------------------------------------------- the config
@dataclass
class DeepSeekMoEConfig:
    """One DeepSeek MoE layer; DeepSeek-V3's config.json by default. Field names follow lesson 08's
    MoEConfig (HF: d_ff = moe_intermediate_size, n_experts = n_routed_experts,
    top_k = num_experts_per_tok)."""
    d_model: int = 7168
    d_ff: int = 2048  # width of each routed expert; a shared expert has the same width
    n_experts: int = 256  # routed experts
    top_k: int = 8
    n_shared_experts: int = 1
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    activation: str = "silu"

    def __post_init__(self):
        check_positive(self, "d_model", "d_ff", "n_experts", "top_k", "n_group", "topk_group")
        check_range(self, "n_shared_experts", 0, math.inf, integer=True, hint="DeepSeek-V3: 1")
        check_range(self, "routed_scaling_factor", 0, math.inf, low_inclusive=False, hint="DeepSeek-V3: 2.5")
        check_activation(self, hint="DeepSeek: 'silu'")
        check_divisible(self, "n_experts", "n_group", why="the routed experts are split into n_group equal "
                        "groups (DeepSeek-V3: 256 experts in 8 groups of 32)")
        if self.experts_per_group < 2:
            raise ConfigError(f"DeepSeekMoEConfig.n_group={self.n_group} leaves {self.experts_per_group} expert "
                              "per group, but a group is scored by the sum of its two best experts. Use at most "
                              f"n_experts // 2 = {self.n_experts // 2} groups (n_group=1: no group limit).")
        if self.topk_group > self.n_group:
            raise ConfigError(f"DeepSeekMoEConfig.topk_group={self.topk_group} is more than n_group={self.n_group}: "
                              f"a token cannot keep more groups than exist. Use topk_group <= {self.n_group} "
                              "(DeepSeek-V3: 4 of 8; topk_group = n_group disables the group limit).")
        reachable = self.topk_group * self.experts_per_group
        if self.top_k > reachable:
            raise ConfigError(f"DeepSeekMoEConfig.top_k={self.top_k}: a token chooses among the experts of its "
                              f"topk_group={self.topk_group} groups only, {reachable} experts. Use top_k <= "
                              f"{reachable} or raise topk_group.")

    @property
    def experts_per_group(self) -> int:
        return self.n_experts // self.n_group


# --------------------------------------------------------------------------- routing
def group_limited_topk(scores: torch.Tensor, top_k: int, n_group: int, topk_group: int) -> torch.Tensor:
    """scores (N, E) -> the chosen experts (N, top_k): the top_k best scores among the experts of
    each token's ``topk_group`` best groups, a group scored by the sum of its two best experts."""
    N, E = scores.shape
    grouped = scores.view(N, n_group, E // n_group)  # (N, G, E/G)
    group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (N, G)
    best_groups = group_scores.topk(topk_group, dim=-1).indices  # (N, topk_group)
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter(1, best_groups, True)  # (N, G)
    keep = keep[:, :, None].expand_as(grouped).reshape(N, E)  # (N, G) -> (N, G, E/G) -> (N, E)
    return scores.masked_fill(~keep, float("-inf")).topk(top_k, dim=-1).indices  # (N, top_k)


def deepseek_routing(router_logits: torch.Tensor, bias: torch.Tensor | None, cfg: DeepSeekMoEConfig
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """router_logits (N, E) -> (weights (N, k), expert indices (N, k), scores (N, E)).

    s = σ(logits); the experts are *chosen* on s + bias (group-limited top-k), and *weighted* by s
    alone: the chosen s_i, divided by their sum when ``norm_topk_prob``, times routed_scaling_factor.
    """
    scores = router_logits.sigmoid()  # (N, E), each in (0, 1), independent of the others
    choice = scores if bias is None else scores + bias  # (N, E): the bias steers the choice only
    indices = group_limited_topk(choice, cfg.top_k, cfg.n_group, cfg.topk_group)  # (N, k)
    weights = scores.gather(1, indices)  # (N, k)
    if cfg.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)  # (N, k) summing to 1
    return weights * cfg.routed_scaling_factor, indices, scores


# --------------------------------------------------------------------------- aux-loss-free balancing
def update_bias(bias: torch.Tensor, load: torch.Tensor, rate: float) -> torch.Tensor:
    """DeepSeek-V3 §2.1.2: after a step, b_i <- b_i + γ·sign(mean load - load_i): an overloaded
    expert's bias goes down by γ (= ``rate``; the report used 0.001 for most of training), an
    underloaded one's goes up; an expert at exactly the mean load keeps its bias.
    bias (E,), load (E,) tokens per expert (``MoEStats.load()``) -> the new bias (E,)."""
    if bias.shape != load.shape or bias.dim() != 1:
        raise ValueError(f"bias and load must both be (E,) - one number per routed expert; got "
                         f"{tuple(bias.shape)} and {tuple(load.shape)}.")
    if not rate >= 0:
        raise ValueError(f"rate={rate!r}: expected the bias update speed γ >= 0 (DeepSeek-V3: 0.001).")
    load = load.to(bias.dtype)
    return bias + rate * torch.sign(load.mean() - load)


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """The small complementary balance loss of DeepSeek-V3 §2.1.2 (without its α), over the tokens
    given (the report computes it per sequence): Σ_i f_i·P_i with f_i = E/(k·N) · (tokens choosing i)
    and P_i = the mean over tokens of s_i / Σ_j s_j. It is lesson 08's Switch loss, computed on the
    normalised sigmoid scores and divided by k."""
    k = indices.size(-1)
    normalised = scores / scores.sum(dim=-1, keepdim=True)  # (N, E), each row sums to 1
    return load_balancing_loss(normalised, indices, n_experts) / k


# --------------------------------------------------------------------------- the layer
class SigmoidRouter(nn.Module):
    """The router: a weight (E, C) and the balancing bias ``e_score_correction_bias`` (E,), a buffer
    (saved, never trained by gradient). h (N, C) -> logits (N, E), computed in float32 as DeepSeek does."""

    def __init__(self, d_model: int, n_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_experts, d_model) * 0.02)
        self.register_buffer("e_score_correction_bias", torch.zeros(n_experts))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h.float(), self.weight.float())  # (N, E)


class DeepSeekMoE(SparseMoE):
    """Routed experts chosen by group-limited sigmoid top-k, plus shared experts; equal to Hugging
    Face's DeepseekV3MoE. x (B, T, C) -> (B, T, C). ``.last`` holds the last routing (lesson 08's
    MoEStats: ``balance_loss`` is ``sequence_balance_loss`` over the batch, ``z_loss`` is 0)."""

    def __init__(self, config: DeepSeekMoEConfig | None = None, **overrides):
        cfg = make_config(DeepSeekMoEConfig, config, overrides, model="DeepSeekMoE")
        super().__init__(cfg.d_model, cfg.d_ff, cfg.n_experts, cfg.top_k, n_shared_experts=cfg.n_shared_experts,
                         activation=cfg.activation)
        self.config = cfg
        self.gate = SigmoidRouter(cfg.d_model, cfg.n_experts)

    def route(self, h: torch.Tensor) -> MoEStats:
        """h (N, C) -> routing decisions (what SparseMoE.forward dispatches on)."""
        cfg = self.config
        logits = self.gate(h)  # (N, E) float32
        weights, indices, scores = deepseek_routing(logits, self.gate.e_score_correction_bias, cfg)  # (N, k) x 2
        kept = torch.ones_like(indices, dtype=torch.bool)  # (N, k): no capacity limit, nothing dropped
        return MoEStats(logits, weights, indices, kept, None, sequence_balance_loss(scores, indices, cfg.n_experts),
                        logits.new_zeros(()))

    @torch.no_grad()
    def update_bias(self, rate: float) -> torch.Tensor:
        """Aux-loss-free balancing, one step: move the bias by ``update_bias`` from the load of the
        last forward pass. Returns the new bias."""
        if self.last is None:
            raise ValueError("this DeepSeekMoE has not routed anything yet: run a forward pass first.")
        bias = self.gate.e_score_correction_bias
        bias.copy_(update_bias(bias, self.last.load(), rate))
        return bias


# --------------------------------------------------------------------------- Hugging Face weights
def deepseek_moe_from_hf(hf_block: dict) -> dict:
    """A DeepseekV3MoE state dict (router ``gate.weight`` and ``gate.e_score_correction_bias``, fused
    ``experts.gate_up_proj`` / ``experts.down_proj``, ``shared_experts.*``) -> DeepSeekMoE's."""
    routed = {k: v for k, v in hf_block.items() if k == "gate.weight" or k.startswith("experts.")}
    out = mixtral_block_state_dict(routed)  # the router and the experts, unfused as in Mixtral
    out["gate.e_score_correction_bias"] = hf_block["gate.e_score_correction_bias"]
    out |= {"shared_expert." + k.removeprefix("shared_experts."): v for k, v in hf_block.items()
            if k.startswith("shared_experts.")}
    return out


def deepseek_moe_to_hf(state: dict) -> dict:
    """The inverse of deepseek_moe_from_hf."""
    out = mixtral_block_to_hf({k: v for k, v in state.items() if k == "gate.weight" or k.startswith("experts.")})
    out["gate.e_score_correction_bias"] = state["gate.e_score_correction_bias"]
    out |= {"shared_experts." + k.removeprefix("shared_expert."): v for k, v in state.items()
            if k.startswith("shared_expert.")}
    return out
