# ---
# jupyter:
#   jupytext:
#     formats: exercises///ipynb,scripts/exercises///py:percent
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/08_mixture_of_experts.ipynb)

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
# Three pieces, each followed by its check. Replace each `raise NotImplementedError()` with
# your code and run the check cell: ✅ means it matches the reference on every case; ❌ says
# which case failed and, for common mistakes, *why*. `hint("check_top_k_routing")` gives a
# nudge, `solution("check_top_k_routing")` the answer.
#
# Tokens arrive flattened: N rows (one per token) and E columns (one per expert). Read
# `notebooks/08_mixture_of_experts.ipynb` first.

# %% [markdown]
# **The exercises here** (about 60 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_top_k_routing` | about 15 min | `course_lib.moe.top_k_routing` |
# | `check_load_balancing_loss` | about 15 min | `course_lib.moe.load_balancing_loss` |
# | `check_sparse_moe` | about 30 min | `course_lib.moe.SparseMoE` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.checks import check_load_balancing_loss, check_sparse_moe, check_top_k_routing, hint, solution
from course_lib.ffn import GatedFeedForward
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
    # YOUR CODE HERE
    raise NotImplementedError()


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
    # YOUR CODE HERE
    raise NotImplementedError()


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
        # YOUR CODE HERE
        raise NotImplementedError()


check_sparse_moe(SparseMoE)

# %% [markdown]
# ## Done?
# All three ✅ means 8/8. Want more? Put your `SparseMoE` (without the residual) into
# `course_lib.blocks.Block` as the `ffn`, add the balancing loss of every layer to the LM loss,
# and repeat the lesson's experiment with top-1 routing and a capacity factor of 1.0: how many
# tokens are dropped per step with and without the loss?
