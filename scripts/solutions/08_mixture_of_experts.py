# ---
# jupyter:
#   jupytext:
#     formats: solutions///ipynb,scripts/solutions///py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] tags=["colab-setup"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/08_mixture_of_experts.ipynb)

# %% tags=["colab-setup"]
# Setup: in Colab this installs the course (about a minute); elsewhere it only checks it is installed.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("course_lib") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/transformers-from-scratch/course.git"], check=True)
    from google.colab import output
    output.enable_custom_widget_manager()  # ipywidgets 8 in Colab
if importlib.util.find_spec("course_lib") is None:
    raise ModuleNotFoundError("course_lib is not installed. In a terminal at the repository root run: "
                              "python -m pip install -e .  (see README.md)")

# %% [markdown]
# # Exercise 08 · Mixture of experts
#
# Eight pieces, each followed by its check. Replace each `raise NotImplementedError()` with
# your code and run the check cell: ✅ means it matches the reference on every case; ❌ says
# which case failed and, for common mistakes, *why*. `hint("check_top_k_routing")` gives a
# nudge, `solution("check_top_k_routing")` the answer.
#
# Tokens arrive flattened: N rows (one per token) and E columns (one per expert). Read
# `notebooks/08_mixture_of_experts.ipynb` first.

# %%
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.checks import (check_capacity_dispatch, check_dispatch_experts, check_expert_choice_layer,
                               check_expert_choice_routing, check_load_balancing_loss, check_sparse_moe,
                               check_switch_moe, check_top_k_routing, hint, solution)
from course_lib.ffn import GatedFeedForward
from course_lib.moe import SparseMoE as LibrarySparseMoE
from course_lib.moe import capacity_mask, expert_capacity
from course_lib.moe import top_k_routing as reference_top_k_routing

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Top-k routing, Mixtral's order (2 points)
# `router_logits` is (N, E). For every token: softmax over the **experts**, keep the k largest
# probabilities (best first, as `torch.topk` returns them) and **renormalise** them so that the
# token's k weights sum to 1. Return `(weights, indices)`, both (N, k).

# %%
def top_k_routing(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    ### BEGIN SOLUTION
    probs = torch.softmax(router_logits, dim=-1)  # (N, E): each token over the experts
    weights, indices = probs.topk(k, dim=-1)  # (N, k)
    return weights / weights.sum(dim=-1, keepdim=True), indices
    ### END SOLUTION


check_top_k_routing(top_k_routing)

# %% [markdown]
# ## 2. The load-balancing loss (2 points)
# Switch Transformer's auxiliary loss, $\;E \cdot \sum_i f_i\,P_i$, where
# * $f_i$ = the fraction of tokens that chose expert i among their k choices
#   (`expert_indices` is (N, k); with k = 2 the $f_i$ add up to 2);
# * $P_i$ = the mean of `router_probs[:, i]` over the tokens (`router_probs` is (N, E), each
#   row a softmax).
#
# The loss must stay differentiable with respect to `router_probs`.

# %%
def load_balancing_loss(router_probs: torch.Tensor, expert_indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    ### BEGIN SOLUTION
    f = F.one_hot(expert_indices, n_experts).sum(dim=1).to(router_probs.dtype).mean(dim=0)  # (E,)
    P = router_probs.mean(dim=0)  # (E,)
    return n_experts * (f * P).sum()
    ### END SOLUTION


check_load_balancing_loss(load_balancing_loss)

# %% [markdown]
# ## 3. A sparse MoE sub-layer (4 points)
# `forward(x)` takes x (B, T, C) and returns the sub-layer **with its residual**:
#
# $$y = x + \sum_{\text{kept } (i, w)} w \cdot \text{expert}_i(x)$$
#
# 1. flatten x to h (N, C); route: `weights, indices = reference_top_k_routing(self.gate(h), self.top_k)`
#    (or your own from part 1);
# 2. if `self.capacity_factor` is not None, only some assignments fit:
#    `kept = capacity_mask(indices, self.n_experts, expert_capacity(N, self.n_experts, self.top_k,
#    self.capacity_factor))` is (N, k) bool; otherwise all are kept;
# 3. dispatch: run each expert **only on the tokens that chose it** (and were kept), multiply
#    by their weights, and add the results into a zero (N, C) tensor (`index_add` is made for it);
# 4. add the residual and reshape to (B, T, C). A token none of whose choices was kept comes
#    out unchanged.

# %%
class SparseMoE(nn.Module):
    def __init__(self, d_model: int, d_ff: int, n_experts: int = 4, top_k: int = 2,
                 capacity_factor: float | None = None):
        super().__init__()
        self.n_experts, self.top_k, self.capacity_factor = n_experts, top_k, capacity_factor
        self.gate = nn.Linear(d_model, n_experts, bias=False)  # the router
        self.experts = nn.ModuleList(GatedFeedForward(d_model, d_ff) for _ in range(n_experts))  # SwiGLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        B, T, C = x.shape
        h = x.reshape(B * T, C)  # (N, C)
        weights, indices = reference_top_k_routing(self.gate(h), self.top_k)  # (N, k) each
        kept = torch.ones_like(indices, dtype=torch.bool)  # (N, k)
        if self.capacity_factor is not None:
            capacity = expert_capacity(B * T, self.n_experts, self.top_k, self.capacity_factor)
            kept = capacity_mask(indices, self.n_experts, capacity)  # (N, k)
        y = torch.zeros_like(h)  # (N, C)
        for e, expert in enumerate(self.experts):
            token, choice = torch.where((indices == e) & kept)  # (n,) each: who chose e, and as which choice
            if len(token):
                y = y.index_add(0, token, expert(h[token]) * weights[token, choice, None])  # (N, C)
        return x + y.view(B, T, C)  # (N, C) -> (B, T, C), plus the residual
        ### END SOLUTION


check_sparse_moe(SparseMoE)

# %% [markdown]
# ## 4. Capacity-factor dispatch with token dropping (4 points)
# Part 3 borrowed `capacity_mask`; now build the whole dispatch yourself, in the form Switch
# Transformer and GShard run it on accelerators: every expert gets a **fixed** number of slots,
#
# $$S = \left\lceil \text{capacity\_factor} \cdot \frac{N \cdot k}{E} \right\rceil \quad(\texttt{math.ceil}),$$
#
# (Switch §2.2 states it for k = 1; with top-k, as in GShard, there are N·k assignments to place:
# spread evenly they would need N·k/E slots per expert, and the factor adds room).
# `weights` and `indices` are (N, k) from part 1 (best expert first). **Priority**, as in GShard:
# the N first choices in sequence order (token 0, 1, 2, …), then the N second choices in sequence
# order, and so on; each assignment takes the next free slot of its expert, first come, first
# served, and an assignment that finds its expert full is **dropped**. Return
# `(dispatch, combine, dropped)`:
# * `dispatch` (N, E, S) bool: True at [n, e, s] when token n's assignment to expert e holds slot s;
# * `combine` (N, E, S), `weights`' dtype: that assignment's weight at the same place, 0 elsewhere
#   (a dropped assignment's weight is lost, **not** renormalised onto the token's other choice);
# * `dropped`: a float, the dropped **assignments** divided by N·k.
#
# A token all of whose assignments are dropped gets nothing from the experts: the layer's output
# for it is **zero** (part 5), and the block's residual passes it through unchanged (part 3).
# Sorting by router confidence instead (Batch Priority Routing, V-MoE) is a published variant, but
# not the order asked here.

# %%
def capacity_dispatch(weights: torch.Tensor, indices: torch.Tensor, n_experts: int,
                      capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    ### BEGIN SOLUTION
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
    ### END SOLUTION


check_capacity_dispatch(capacity_dispatch)

# %% [markdown]
# ## 5. The experts on their buffers (2 points)
# With fixed slots every expert runs on a tensor of the same shape, whatever the router did.
# `dispatch_experts(x, dispatch, combine, experts)`: x is (N, C), `experts` a list of E modules
# (C → C). **Gather** each expert's buffer (E, S, C) with `dispatch` (an empty slot holds zeros),
# run expert e **once** on its (S, C) buffer, and **scatter** the outputs back to the tokens with
# `combine`, which also applies the router weights. Return y (N, C): zero for a fully dropped token.
# `torch.einsum` writes each of the two moves in one line.

# %%
def dispatch_experts(x: torch.Tensor, dispatch: torch.Tensor, combine: torch.Tensor, experts) -> torch.Tensor:
    ### BEGIN SOLUTION
    buffers = torch.einsum("nes,nc->esc", dispatch.to(x.dtype), x)  # (E, S, C): each expert's S slots
    outputs = torch.stack([expert(buffers[e]) for e, expert in enumerate(experts)])  # (E, S, C)
    return torch.einsum("nes,esc->nc", combine.to(x.dtype), outputs)  # (N, C); empty slots weigh 0
    ### END SOLUTION


check_dispatch_experts(dispatch_experts)

# %% [markdown]
# Your two functions next to course_lib's `SparseMoE` (the layer of part 3, without its residual)
# with the same router and experts and a capacity factor of 1.0: the same output, dropped tokens
# included. Then the price of a small factor: the share of assignments dropped by a skewed router
# (one expert preferred) as the factor grows, for top-1 and top-2 routing.

# %% tolerance={"abs": 1e-05}
torch.manual_seed(8)
library_moe = LibrarySparseMoE(16, 32, n_experts=4, top_k=2, capacity_factor=1.0).eval()
with torch.no_grad():
    library_moe.gate.weight.mul_(3.0)  # a confident router, so that experts overflow
    h = torch.randn(24, 16)  # (N, C)
    weights, indices = reference_top_k_routing(library_moe.gate(h), 2)  # (N, k) each
    try:
        dispatch, combine, dropped = capacity_dispatch(weights, indices, 4, 1.0)
        y = dispatch_experts(h, dispatch, combine, library_moe.experts)  # (N, C)
        y_library = library_moe(h[None])[0]  # (1, N, C) -> (N, C)
        print(f"dispatch {tuple(dispatch.shape)}; {dropped:.3f} of the assignments dropped "
              f"(course_lib: {library_moe.last.overflow / indices.numel():.3f}); "
              f"max |yours - course_lib| = {(y - y_library).abs().max().item():.1e}")
    except NotImplementedError:
        print("write capacity_dispatch and dispatch_experts first")

# %% tolerance={"abs": 0.01}
g = torch.Generator().manual_seed(0)
skewed_logits = torch.randn(256, 8, generator=g) + torch.linspace(1.0, 0.0, 8)  # (N, E): expert 0 preferred
print("factor  slots(k=1)  dropped(k=1)  slots(k=2)  dropped(k=2)")
for factor in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
    row = f"{factor:>6}"
    for k in (1, 2):
        w, i = reference_top_k_routing(skewed_logits, k)  # (N, k) each
        try:
            d, _, dropped = capacity_dispatch(w, i, 8, factor)
            row += f"  {d.shape[-1]:>10}  {dropped:>12.3f}"
        except NotImplementedError:
            row += "  (write capacity_dispatch first)"
    print(row)

# %% [markdown]
# ## 6. Expert-choice routing (3 points)
# Zhou et al. (2022) turn the routing around: instead of each token choosing k experts (and
# experts overflowing), each **expert chooses** its c best tokens, so every expert is exactly full.
# With $S = \mathrm{softmax}(\text{router\_logits})$ over the **experts** (each row a distribution,
# as in part 1) and $c = \min(N, \lceil \text{capacity\_factor} \cdot N / E \rceil)$, expert e takes the c tokens
# with the largest $S[:, e]$, best first. Return `(gates, token_index, unchosen)`: `gates` (E, c) the
# chosen tokens' $S$ values, `token_index` (E, c) int64 their positions, and `unchosen` a float,
# the fraction of the N tokens that **no** expert chose (they skip the layer, on the residual).

# %%
def expert_choice_routing(router_logits: torch.Tensor, capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    ### BEGIN SOLUTION
    N, E = router_logits.shape
    c = min(N, math.ceil(capacity_factor * N / E))  # tokens per expert
    scores = torch.softmax(router_logits, dim=-1)  # (N, E): over the experts, as for top-k routing
    gates, token_index = scores.t().topk(c, dim=-1)  # (E, c) each: every expert picks its c best tokens
    chosen = torch.zeros(N, dtype=torch.bool, device=router_logits.device)
    chosen[token_index.reshape(-1)] = True  # (N,): picked by at least one expert
    return gates, token_index, 1.0 - chosen.sum().item() / N
    ### END SOLUTION


check_expert_choice_routing(expert_choice_routing)

# %% [markdown]
# With the same skewed router and a factor of 1 (on average one expert per token, as top-1), every
# expert is exactly full and none overflows, but the tokens no longer get one expert each: some get
# several, some none.

# %% tolerance={"ints": 0.1, "abs": 0.01}
try:
    gates, token_index, unchosen = expert_choice_routing(skewed_logits, 1.0)
    per_token = torch.bincount(token_index.reshape(-1), minlength=skewed_logits.size(0))  # (N,): experts per token
    print(f"each of the 8 experts takes {token_index.size(1)} tokens; unchosen: {unchosen:.3f} of the tokens")
    for n_experts, n_tokens in enumerate(torch.bincount(per_token).tolist()):
        print(f"{n_tokens:>4} tokens are processed by {n_experts} expert(s)")
except NotImplementedError:
    print("write expert_choice_routing first")

# %% [markdown]
# ## 7. The expert-choice layer (2 points)
# `expert_choice_layer(x, gates, token_index, experts)`: x is (N, C), `gates` and `token_index` are
# part 6's (E, c). Expert e runs **once**, on its c chosen tokens `x[token_index[e]]`; its outputs
# are multiplied by their gates and **added** to the rows of their tokens. Return y (N, C): a token
# chosen by several experts gets the sum of their weighted outputs, a token no expert chose gets
# zero (the block's residual passes it through).

# %%
def expert_choice_layer(x: torch.Tensor, gates: torch.Tensor, token_index: torch.Tensor, experts) -> torch.Tensor:
    ### BEGIN SOLUTION
    buffers = x[token_index]  # (E, c, C): the tokens each expert chose
    outputs = torch.stack([expert(buffers[e]) for e, expert in enumerate(experts)])  # (E, c, C)
    weighted = outputs * gates[..., None].to(x.dtype)  # (E, c, C)
    return torch.zeros_like(x).index_add(0, token_index.reshape(-1), weighted.reshape(-1, x.size(-1)))  # (N, C)
    ### END SOLUTION


check_expert_choice_layer(expert_choice_layer)

# %% [markdown]
# ## 8. A Switch layer, end to end (3 points)
# Parts 2, 4 and 5 together, as Switch Transformer's layer: **top-1** routing with a capacity.
# `forward(x)` takes x (B, T, C) and returns `(y, balance_loss, dropped)`:
# 1. flatten x to h (N, C); `probs = softmax(self.gate(h))` over the experts; each token's expert is
#    its most probable one, and its weight is that **probability itself**, not renormalised (with
#    k = 1 renormalising would make every weight 1, and the router would get no gradient from the
#    loss: Switch §2.1 scales the expert's output by $p_i(x)$);
# 2. your `capacity_dispatch` with `self.capacity_factor`, then your `dispatch_experts`;
# 3. `balance_loss`: part 2's loss with k = 1, $E \cdot \sum_i f_i P_i$;
# 4. `y = x + ` the experts' output, reshaped to (B, T, C); `dropped` from `capacity_dispatch`.

# %%
class SwitchMoE(nn.Module):
    def __init__(self, d_model: int, d_ff: int, n_experts: int = 4, capacity_factor: float = 1.25):
        super().__init__()
        self.n_experts, self.capacity_factor = n_experts, capacity_factor
        self.gate = nn.Linear(d_model, n_experts, bias=False)  # the router
        self.experts = nn.ModuleList(GatedFeedForward(d_model, d_ff) for _ in range(n_experts))  # SwiGLU

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        ### BEGIN SOLUTION
        B, T, C = x.shape
        h = x.reshape(B * T, C)  # (N, C)
        probs = torch.softmax(self.gate(h), dim=-1)  # (N, E)
        weight, index = probs.max(dim=-1, keepdim=True)  # (N, 1) each: top-1 and its probability, as it is
        dispatch, combine, dropped = capacity_dispatch(weight, index, self.n_experts, self.capacity_factor)
        y = dispatch_experts(h, dispatch, combine, self.experts)  # (N, C): zero for a dropped token
        f = F.one_hot(index[:, 0], self.n_experts).to(h.dtype).mean(dim=0)  # (E,): share of tokens per expert
        balance_loss = self.n_experts * (f * probs.mean(dim=0)).sum()  # part 2's loss with k = 1
        return x + y.view(B, T, C), balance_loss, dropped  # (N, C) -> (B, T, C), plus the residual
        ### END SOLUTION


check_switch_moe(SwitchMoE)

# %% [markdown]
# ## Done?
# All eight ✅ means 22/22. Want more? Put your `SparseMoE` (without the residual) into
# `course_lib.blocks.Block` as the `ffn`, add the balancing loss of every layer to the LM loss,
# and repeat the lesson's experiment with top-1 routing and a capacity factor of 1.0: how many
# tokens are dropped per step with and without the loss? Then train with your `SwitchMoE` and
# try Batch Priority Routing (sort the queue by router weight): which tokens does it save?
