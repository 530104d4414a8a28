# ---
# jupyter:
#   jupytext:
#     formats: notebooks///ipynb,scripts/notebooks///py:percent
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/08_mixture_of_experts.ipynb)

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
# # 08 · Mixture of experts
#
# **You will learn** how a sparse mixture-of-experts (MoE) layer replaces the one FFN of a
# block by many expert FFNs and a *router* that sends each token to k of them; the two ways
# the field writes top-k routing and when they agree; how to dispatch tokens to experts
# efficiently; why MoE needs a load-balancing loss (and what happens without it — measured
# live: router collapse); what a capacity factor is and what happens to the tokens it drops;
# and how to count the *total* and *active* parameters of Mixtral-8x7B from its config.
# Our layer and our whole Mixtral are checked against Hugging Face `transformers`.
#
# **Then** do `exercises/08_mixture_of_experts.ipynb`: top-k routing, the balancing loss, a sparse MoE
# forward, capacity-factor dispatch with dropped tokens, expert-choice routing and a Switch layer,
# each graded by a check.
#
# Papers: Shazeer et al. 2017, *Outrageously Large Neural Networks* (the sparsely-gated MoE
# layer); Lepikhin et al. 2020, *GShard* (top-2, capacity); Fedus et al. 2021, *Switch
# Transformers* (top-1, the balancing loss, capacity factor); Zoph et al. 2022, *ST-MoE*
# (router z-loss); Jiang et al. 2024, *Mixtral of Experts*; Dai et al. 2024, *DeepSeekMoE*
# (shared experts).

# %%
import matplotlib.pyplot as plt
import torch

from course_lib import get_device, seed_everything
from course_lib.models.sizes import moe_params, moe_params_from_hf
from course_lib.moe import (SparseMoE, capacity_mask, expert_capacity, expert_load, from_hf_mixtral_block,
                            load_balancing_loss, router_z_loss, top_k_routing)

device = get_device()
seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## 1. The sparsely-gated MoE layer (Shazeer et al. 2017, Eq. 1)
#
# $$y = \sum_{i=1}^{E} G(x)_i\, E_i(x), \qquad G(x) = \text{a vector with only } k \text{ non-zeros}$$
#
# E expert networks (here: SwiGLU FFNs, lesson 03) and a *router* (a linear map
# d_model → E, called `gate` in Mixtral) that scores the experts for each token. Only the k
# experts with non-zero G(x) run, so a token costs k FFNs while the layer *stores* E of them:
# capacity grows with E, compute per token with k. Mixtral-8x7B: E = 8, k = 2.
#
# The layer sees tokens, not sequences: (B, T, C) is flattened to N = B·T rows, and every
# row is routed on its own.

# %%
seed_everything(0)
B, T, C = 2, 5, 16
moe = SparseMoE(d_model=C, d_ff=32, n_experts=4, top_k=2).to(device)
x = torch.randn(B, T, C, device=device)  # (B, T, C)
y = moe(x)  # (B, T, C)
stats = moe.last  # what the forward pass routed
print("x", tuple(x.shape), "-> router logits", tuple(stats.router_logits.shape), "-> weights",
      tuple(stats.weights.shape), "+ expert indices", tuple(stats.indices.shape), "-> y", tuple(y.shape))
print("token 0 goes to experts", stats.indices[0].tolist(), "with weights",
      [round(w, 3) for w in stats.weights[0].tolist()])
expert_size = sum(p.numel() for p in moe.experts[0].parameters())
total = sum(p.numel() for p in moe.parameters())
print(f"parameters: {total} stored (4 experts × {expert_size} + router {moe.gate.weight.numel()}), "
      f"{2 * expert_size + moe.gate.weight.numel()} used per token")

# %% [markdown]
# ## 2. Top-k routing, two orders
#
# * **Shazeer 2017 (Eq. 3-5)**: keep the k largest router *logits*, softmax over those k.
# * **Mixtral, Switch, DeepSeek**: softmax over *all* E experts, keep the k largest
#   probabilities, then (Mixtral) divide by their sum so they add up to 1.
#
# They are the same numbers: renormalising the top-k probabilities gives
# $e^{l_i} / \sum_{j \in \text{top-}k} e^{l_j}$ — the softmax of the top-k logits. They part
# ways when the probabilities are *not* renormalised (Switch with k = 1 multiplies by the raw
# probability p_i < 1; DeepSeek-V2 and Qwen-MoE have a switch for it), except at k = E.

# %% tolerance={"abs": 1e-12}
seed_everything(1)
logits = torch.randn(6, 8, dtype=torch.float64)  # (N, E): 6 tokens, 8 experts
for k in (1, 2, 8):
    w_mixtral, i_mixtral = top_k_routing(logits, k, order="softmax_topk")
    w_shazeer, i_shazeer = top_k_routing(logits, k, order="topk_softmax")
    w_raw, _ = top_k_routing(logits, k, normalize=False)
    print(f"k={k}: same experts: {torch.equal(i_mixtral, i_shazeer)}, max weight difference "
          f"{(w_mixtral - w_shazeer).abs().max().item():.0e} | without renormalising, a token's weights sum to "
          f"{w_raw.sum(-1).min().item():.3f}..{w_raw.sum(-1).max().item():.3f}")

from transformers import MixtralConfig  # noqa: E402  (tiny random configs; nothing is downloaded)
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock, MixtralTopKRouter  # noqa: E402

hf_cfg = MixtralConfig(hidden_size=16, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2,
                       experts_implementation="eager")  # HF's plain per-expert loop
hf_router = MixtralTopKRouter(hf_cfg).to(device)
torch.nn.init.normal_(hf_router.weight)
h = torch.randn(10, 16, device=device)  # (N, C)
with torch.no_grad():
    _, hf_weights, hf_indices = hf_router(h)
    ours_w, ours_i = top_k_routing(h @ hf_router.weight.T, k=2)
print(f"vs HF MixtralTopKRouter: same experts {torch.equal(ours_i, hf_indices)}, "
      f"max weight error {(ours_w - hf_weights).abs().max().item():.0e}")

# %% [markdown]
# ## 3. Routing, seen
#
# The heat map has one row per token and one column per expert: the colour is the weight the
# token gives that expert (white = not chosen). The bars count how many tokens each expert
# received. Real routers are not balanced; **skew** makes the router favour expert 0, as an
# untrained or collapsing one does. The **capacity** (the dashed line, §5) is how many tokens
# an expert can take.

# %%
from course_lib.widgets import routing_explorer  # noqa: E402

routing_explorer()

# %% [markdown]
# ## 4. Dispatch: a ladder with an equivalence check at each rung
#
# 1. **The definition**: run every expert on every token and multiply by the token's weight
#    for that expert (0 when not chosen). Correct, and E/k times too much work.
# 2. **Grouped dispatch**: sort the (token, expert) assignments by expert, run each expert
#    once on its own tokens only, and add the weighted outputs back into place with
#    `index_add`. This is what `SparseMoE.forward` does.
# 3. **Hugging Face's `MixtralSparseMoeBlock`**, its weights copied into ours.

# %% tolerance={"abs": 1e-05}
seed_everything(2)
hf_block = MixtralSparseMoeBlock(hf_cfg).to(device).eval()
for p in hf_block.parameters():  # its fused expert tensors start uninitialised
    torch.nn.init.normal_(p, std=0.3)
moe = from_hf_mixtral_block(hf_block)  # router `gate` and 8 SwiGLU experts, same weights
x = torch.randn(3, 7, 16, device=device)  # (B, T, C)
with torch.no_grad():
    y_naive = moe(x, naive=True)
    y_grouped = moe(x)
    y_hf = hf_block(x.clone())
    hf_logits, _, _ = hf_block.gate(x.reshape(-1, 16))  # (N, E)
print(f"rung 1 → 2  definition vs grouped dispatch: max abs error {(y_naive - y_grouped).abs().max().item():.1e}")
print(f"rung 2 → 3  ours vs HF MixtralSparseMoeBlock: max abs error {(y_grouped - y_hf).abs().max().item():.1e}, "
      f"router logits {(moe.last.router_logits - hf_logits).abs().max().item():.1e}")
N = x.shape[0] * x.shape[1]
print(f"expert evaluations for {N} tokens: definition {8 * N}, grouped {N * 2} (= N·k)")

# %% [markdown]
# The grouped version does exactly N·k expert evaluations however many experts there are —
# the reason MoE is cheap per token. On a GPU, the per-expert loop becomes one grouped matrix
# multiply (Megablocks, "grouped GEMM"); the arithmetic is the same.
#
# ## 5. Capacity and dropped tokens (Switch §2.2, GShard)
#
# Hardware wants fixed-size buffers, so each expert gets
# $\text{capacity} = \lceil \text{capacity factor} \cdot N \cdot k / E \rceil$ slots.
# Factor 1 would be exactly enough for a perfectly balanced router. When more tokens pick an
# expert, the later ones **overflow** and are dropped: that expert skips them. A token all of
# whose choices were dropped gets nothing from the layer — and because the layer sits on a
# residual connection, `x + moe(x)` passes it to the next layer unchanged. Priority follows
# GShard: every token's first choice before any second choice, earlier tokens first.

# %%
seed_everything(3)
capped = SparseMoE(16, 32, n_experts=4, top_k=1, capacity_factor=1.0).to(device)
with torch.no_grad():
    capped.gate.weight.mul_(4)  # a confident, unbalanced router
    x = torch.randn(1, 16, 16, device=device)  # (B, T, C): 16 tokens
    y = capped(x)
st = capped.last
print(f"capacity = ceil(1.0 · 16 · 1 / 4) = {st.capacity} slots per expert; tokens asking for each expert: "
      f"{st.load().tolist()}")
print(f"overflow: {st.overflow} assignments dropped, {st.dropped_tokens} tokens skip every expert")
dropped = ~st.kept.any(-1)  # (N,)
print("layer output of the dropped tokens is zero:", bool((y[0, dropped] == 0).all()),
      "| so x + moe(x) == x for them:", torch.equal((x + y)[0, dropped], x[0, dropped]))
for cf in (0.5, 1.0, 1.25, 2.0, 4.0):
    capped.config.capacity_factor = cf
    with torch.no_grad():
        capped(x)
    print(f"capacity factor {cf:<4} -> capacity {capped.last.capacity:>2}, dropped assignments {capped.last.overflow}")

# %% [markdown]
# Mixtral sets no capacity at all (no token is dropped; the cost is uneven work per expert);
# Switch trained with factors 1.0-1.25. Either way, the fewer tokens an unbalanced router
# piles on one expert, the better — which brings us to the balancing loss.
#
# ## 6. The load-balancing loss (Switch Eq. 4-6) and the router z-loss (ST-MoE Eq. 5)
#
# $$\mathcal{L}_\text{balance} = E \cdot \sum_{i=1}^{E} f_i \, P_i, \qquad
# f_i = \frac{\#\{\text{tokens that chose } i\}}{N}, \qquad P_i = \frac{1}{N}\sum_{x} p_i(x)$$
#
# f_i is a count and has no gradient; P_i, the mean router probability, does. Here f counts
# all k choices of every token (as Hugging Face's Mixtral does), so each f_i is at most 1 and
# the f_i sum to k; the P_i sum to 1. Three facts follow, and the cell below prints each case.
#
# * **Upper bound E.** Since f_i ≤ 1, the loss is at most E · Σ P_i = E. It gets close to E
#   when nearly all the probability sits on experts that every token picks: a collapsed router.
# * **k at balance.** If every expert gets k/E of the assignments, the loss is
#   E · Σ (k/E) · P_i = k, whatever the probabilities are.
# * **k is the minimum only under a condition.** If each expert's mean probability matches its
#   share of the load (P_i = f_i/k), the loss is (E/k) · Σ f_i², which is smallest, k, exactly
#   when the load is uniform. Without that condition it can go below k: an expert that is picked
#   but given almost no probability costs almost nothing. The lopsided router below sends half
#   of all assignments to one expert and still scores less than a balanced one.
#
# What pushes a router towards balance in training is the gradient. With f held fixed,
# ∂L/∂P_i = E · f_i, largest for the busiest experts; through the softmax, a descent step
# lowers the logits of the experts whose load is above the token's probability-weighted mean
# load and raises the others. Section 9 measures the effect.
#
# The **z-loss**, the mean squared log-sum-exp of the logits, keeps the logits small so that
# the router's softmax stays numerically tame.

# %%
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func  # noqa: E402

E, Ntok = 8, 64
uniform = torch.full((Ntok, E), 1 / E)  # (N, E)
spread = torch.arange(Ntok * 2).view(Ntok, 2) % E  # (N, 2): every expert chosen equally often
print(f"balanced router, k=2: loss = {load_balancing_loss(uniform, spread, E).item():.3f} (= k)")
collapsed = torch.softmax(torch.randn(Ntok, E) + torch.tensor([6.0, 6.0] + [0.0] * 6), -1)  # (N, E)
idx = collapsed.topk(2, -1).indices  # (N, 2)
print(f"collapsed router (everything to experts 0 and 1): loss = "
      f"{load_balancing_loss(collapsed, idx, E).item():.3f} (at most E = {E})")
lopsided = torch.full((Ntok, E), -10.0)  # (N, E) logits
lopsided[torch.arange(Ntok), torch.arange(Ntok) % 7] = 10.0  # first choices spread over experts 0-6
lopsided[:, 7] = 0.0  # second choice: always expert 7, at almost zero probability
lop_probs = lopsided.softmax(-1)  # (N, E)
lop_idx = lop_probs.topk(2, -1).indices  # (N, 2)
print(f"lopsided router (expert 7 takes {(lop_idx == 7).float().mean():.0%} of the assignments): loss = "
      f"{load_balancing_loss(lop_probs, lop_idx, E).item():.3f} (below k)")
logits = torch.randn(Ntok, E) * 2  # (N, E)
probs = logits.softmax(-1)  # (N, E)
ours = load_balancing_loss(probs, probs.topk(2, -1).indices, E)
print(f"random router: ours {ours.item():.4f}, HF load_balancing_loss_func {load_balancing_loss_func((logits,), E, 2).item():.4f}")
print(f"z-loss of these logits {router_z_loss(logits).item():.2f}; of 10× larger logits {router_z_loss(10 * logits).item():.1f}")

# %% [markdown]
# ## 7. Shared experts (DeepSeekMoE) and counting parameters
#
# DeepSeekMoE keeps a few **shared** experts that every token uses, next to the routed ones,
# so that common knowledge need not be copied into every expert. `SparseMoE(...,
# n_shared_experts=s)` adds one always-on SwiGLU of s·d_ff to the routed output.
#
# **Total vs active.** Total = every weight stored; active = the weights one token uses:
# everything except the E − k experts it skips, in every layer. From Mixtral-8x7B's published
# config (32 layers, d_model 4096, 32/8 heads, experts of d_ff 14336, E = 8, k = 2, vocab
# 32000, untied head):

# %%
mixtral = moe_params(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                           d_ff=14336, n_experts=8, top_k=2)
print(f"Mixtral-8x7B: total {mixtral.total / 1e9:.2f} B, active per token {mixtral.active / 1e9:.2f} B  ({mixtral.active / mixtral.total:.0%} of the weights per token)")
dense_7b = moe_params(32000, 4096, 32, 32, 8, 14336, n_experts=1, top_k=1)
print(f"the same model with one dense FFN (≈ Mistral-7B): {dense_7b.total / 1e9:.2f} B")
print(f"so '8x7B' is not 56 B: attention and embeddings are shared, only the FFNs are multiplied "
      f"({8 * dense_7b.total / 1e9:.1f} B vs {mixtral.total / 1e9:.1f} B)")
from transformers import MixtralForCausalLM  # noqa: E402

with torch.device("meta"):  # an independent count: build HF's model with shapes only (no memory)
    big = MixtralForCausalLM(MixtralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                           num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8))
print(f"HF MixtralForCausalLM on the meta device stores {sum(p.numel() for p in big.parameters()):,} "
      f"parameters; our formula says {moe_params_from_hf(big.config).total:,}")
shared = SparseMoE(16, 32, n_experts=4, top_k=2, n_shared_experts=1)
print(f"with one shared expert, a layer of 4 routed experts holds {sum(p.numel() for p in shared.parameters())} "
      f"parameters (vs {sum(p.numel() for p in SparseMoE(16, 32, 4, 2).parameters())})")

# %% [markdown]
# ## 8. A whole Mixtral
#
# Mixtral is Mistral (lesson 06: RoPE, RMSNorm, GQA, optionally a sliding window) whose FFNs
# are sparse MoE layers. In course_lib that is one option of the LLaMA config,
# `LlamaConfig(moe=LlamaMoE(n_experts, top_k))`, and `from_hf` loads `MixtralForCausalLM`.

# %% tolerance={"abs": 1e-05}
from course_lib.interop import from_hf  # noqa: E402

seed_everything(4)
hf_model = MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                            num_experts_per_tok=2, output_router_logits=True)).eval()
for name, p in hf_model.named_parameters():
    if "experts" in name:
        torch.nn.init.normal_(p, std=0.1)
ours = from_hf(hf_model)
ids = torch.randint(0, 64, (2, 12))  # (B, T)
with torch.no_grad():
    ref_out, our_out = hf_model(ids), ours(ids)
print("course_lib:", type(ours).__name__, "with", type(ours.blocks[0].ffn).__name__, "feed-forwards,",
      ours.config.moe)
print(f"logits vs HF MixtralForCausalLM: max abs error {(our_out.logits - ref_out.logits).abs().max().item():.1e}; "
      f"router logits (every layer) {max((b.ffn.last.router_logits - r).abs().max().item() for b, r in zip(ours.blocks, ref_out.router_logits)):.1e}")

# %% [markdown]
# ## 9. Measured live: dense vs MoE, and MoE without the balancing loss
#
# Three tiny character-level models on the course's Shakespeare text, same data, same
# schedule, same seed:
#
# * **dense**: a 2-layer LLaMA with SwiGLU FFNs of d_ff = 128;
# * **MoE**: the same model whose FFNs are 8 experts of d_ff = 64 with top-2 routing — the
#   same *active* FFN size per token (2 × 64 = 128), four times the FFN weights — trained
#   with the balancing loss (coefficient 0.01, as in Switch);
# * **MoE, no balancing**: the same, coefficient 0.
#
# Each step we record the language-model loss, each expert's share of the assignments, and
# how many assignments *would* overflow a capacity factor of 1.25 (the layers here drop
# nothing; the count measures imbalance in the units that matter on hardware).
#
# Three pieces come from later lessons, so here is what each does. The text is the course's
# Shakespeare corpus split into single characters (`CharTokenizer`: one id per distinct
# character; lesson 09 builds better tokenizers). A training batch is a set of random windows
# of that text, each paired with the same window shifted by one character as its targets
# (`get_batch`). The loop is the course's `Trainer` (AdamW, a linear warm-up then cosine
# learning-rate decay, gradient clipping at norm 1; lesson 10 builds it piece by piece).
# Two hooks turn it into an MoE trainer without copying it: `loss_fn` returns the loss to
# minimise, LM loss + coefficient · balancing loss, and names the LM part so that it is logged
# on its own; `on_step` runs after every optimiser step and reads the routing that the step's
# forward pass left in each layer's `.last`. The validation loss is the plain LM loss.

# %% tolerance={"abs": 0.03, "rel": 0.02}
from course_lib.data import encoded_corpus, shakespeare_text  # noqa: E402
from course_lib.device import single_thread  # noqa: E402
from course_lib.models.llama import Llama, LlamaConfig  # noqa: E402
from course_lib.moe import LlamaMoE, moe_aux_loss, moe_layers  # noqa: E402
from course_lib.tokenizers import CharTokenizer  # noqa: E402
from course_lib.training import Trainer, TrainConfig, lm_loss  # noqa: E402

tok = CharTokenizer.train(shakespeare_text())
train_data, val_data = encoded_corpus(tok, "char")
STEPS, BATCH, BLOCK, LR = 200, 16, 64, 3e-3
WATCH_CAPACITY = 1.25  # the capacity factor whose overflow we count; the layers themselves have none


def tiny_model(moe=None):
    seed_everything(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4, d_ff=128,
                      max_positions=BLOCK, moe=moe)
    return Llama(cfg).to(device)


def lm_plus_balance(balance_coef):
    """A Trainer loss_fn: LM loss + balance_coef · Σ_layers balancing loss, logging the LM part as "lm"."""
    def loss_fn(model, x, y):  # x, y: (B, T)
        lm = lm_loss(model, x, y)
        aux = moe_aux_loss(model, balance_coef) if moe_layers(model) else 0.0
        return lm + aux, {"lm": lm.item()}
    return loss_fn


def record_routing(log):
    """A Trainer on_step hook: after each step, every layer's expert shares and the would-be overflow."""
    def on_step(trainer, info):
        layers = moe_layers(trainer.model)
        if not layers:
            return
        stats = [m.last for m in layers]  # what this step's forward pass routed, per layer
        loads = torch.stack([s.load() for s in stats]).float()  # (L, E)
        log["shares"].append(loads / loads.sum(-1, keepdim=True))  # (L, E)
        E, k = layers[0].config.n_experts, layers[0].config.top_k
        cap = expert_capacity(stats[0].indices.size(0), E, k, WATCH_CAPACITY)
        log["overflow"].append(sum(int((~capacity_mask(s.indices, E, cap)).sum()) for s in stats))
    return on_step


# one seed for the batches; validation: the same 20 batches of 16 for every model, after the last step
train_cfg = TrainConfig(max_steps=STEPS, batch_size=BATCH, seq_len=BLOCK, lr=LR, min_lr=LR / 10, warmup=20,
                        weight_decay=0.1, betas=(0.9, 0.99), grad_clip=1.0, seed=1, eval_interval=STEPS,
                        eval_iters=20, progress=False)
runs, models, results = {}, {}, {}
with single_thread():  # one CPU thread: the same order of float sums, so the same losses, on every machine
    for name, moe_opt, coef in [("dense", None, 0.0), ("MoE 8×64, top-2", LlamaMoE(8, 2, d_ff=64), 0.01),
                                ("MoE, no balancing", LlamaMoE(8, 2, d_ff=64), 0.0)]:
        models[name], runs[name] = tiny_model(moe_opt), {"shares": [], "overflow": []}
        history = Trainer(models[name], train_data, val_data, train_cfg, loss_fn=lm_plus_balance(coef),
                          on_step=record_routing(runs[name])).train()
        runs[name]["loss"], results[name] = history.parts["lm"], history.val_loss[-1]
for name, m in models.items():
    stored = sum(p.numel() for p in m.parameters())
    skipped = sum((len(layer.experts) - layer.config.top_k) * sum(p.numel() for p in layer.experts[0].parameters())
                  for layer in moe_layers(m))  # the E - k experts each token skips, in every layer
    print(f"{name:<18} {stored:>6} parameters stored, {stored - skipped:>6} active per token, "
          f"validation loss {results[name]:.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
smooth = lambda v, w=10: [sum(v[max(0, i - w + 1):i + 1]) / len(v[max(0, i - w + 1):i + 1]) for i in range(len(v))]  # noqa: E731
for name, log in runs.items():
    axes[0].plot(smooth(log["loss"]), label=name)
axes[0].set_ylim(1.8, 3.5)
axes[0].set_xlabel("step")
axes[0].set_ylabel("training loss (10-step mean)")
axes[0].legend(fontsize=8)
from course_lib.viz import plot_expert_shares  # noqa: E402

for ax, name in zip(axes[1:], ["MoE 8×64, top-2", "MoE, no balancing"]):
    plot_expert_shares(torch.stack([s[1] for s in runs[name]["shares"]]), ax=ax,
                       title=f"{name}: expert shares in layer 2")
plt.tight_layout()
plt.show()

# %% tolerance={"abs": 0.03, "ints": 0.2, "pct": 3, "rel": 0.02}
def utilisation(log, last=50):
    shares = torch.stack(log["shares"][-last:]).mean(0)  # (L, E), averaged over the last steps
    return shares, int((shares < 0.02).sum()), sum(log["overflow"][-last:]) / last


for name in ("MoE 8×64, top-2", "MoE, no balancing"):
    shares, starved, overflow = utilisation(runs[name])
    layers = [m.config for m in moe_layers(models[name])]
    n_experts, per_step = sum(c.n_experts for c in layers), sum(c.top_k for c in layers) * BATCH * BLOCK
    print(f"{name:<18} busiest expert takes {shares.max().item():.0%} of a layer's assignments "
          f"(fair: {1 / layers[0].n_experts:.1%}), {starved} of {n_experts} experts get < 2%, "
          f"would-overflow at capacity {WATCH_CAPACITY}: {overflow:.0f} of {per_step} per step")
dense_v, moe_v, nobal_v = (results[n] for n in ("dense", "MoE 8×64, top-2", "MoE, no balancing"))
spread = max(results.values()) - min(results.values())
print(f"After {STEPS} steps the dense model's validation loss is {dense_v:.3f}, the balanced MoE's {moe_v:.3f} and the "
      f"unbalanced MoE's {nobal_v:.3f}: all within {spread:.3f} of each other.")

# %% [markdown]
# What to read from it:
#
# * **Without the balancing loss the router collapses**: in the right-hand plot a few experts
#   take most of the tokens and some get almost none (printed above). An expert that gets no
#   tokens gets no gradient, so it never becomes useful and the router has no reason to try
#   it — a rich-get-richer loop. With capacity limits this would also mean many dropped
#   tokens. With the loss (middle plot) every expert keeps close to its fair 1/8.
# * **At this scale MoE does not clearly win** (the three losses printed above are within a
#   few hundredths). With the same active FFN size, the MoE holds four times the FFN weights,
#   but each expert sees only about a quarter of the tokens, and a few hundred steps of a
#   2-layer model are far from the regime where extra capacity pays. The balancing loss is not
#   free either: it pulls the router away from what the LM loss alone would choose; what it
#   buys is experts that all learn and, with a capacity limit, tokens that are not dropped.
#   Switch and Mixtral report their gains at large scale and long training, at equal compute;
#   a tiny, short run like this one mostly shows the cost: on a CPU the dispatch overhead also
#   makes each MoE step slower than a dense one. Honest small-scale measurement is part of the
#   lesson: change `STEPS` or the `LlamaMoE(...)` options above (more experts, top-1 routing) and
#   see how the numbers move.
#
# ## Summary
# * A sparse MoE layer: a linear router scores E experts, each token uses the top k, and the
#   output is the weighted sum of their outputs (Shazeer 2017, Eq. 1). Compute follows k,
#   parameters follow E: Mixtral-8x7B stores 46.7 B weights and uses 12.9 B per token.
# * "softmax → top-k → renormalise" (Mixtral) equals "top-k → softmax" (Shazeer); without the
#   renormalisation they differ.
# * Efficient dispatch groups tokens by expert and scatters results back with `index_add`:
#   N·k expert evaluations instead of N·E. Ours equals HF's Mixtral block and whole model.
# * Capacity limits make per-expert buffers fixed; overflowing tokens are dropped and ride the
#   residual connection.
# * The balancing loss E·Σ f_i·P_i keeps experts in use — without it the router collapsed
#   above; the z-loss keeps router logits small.
#
# **Next:** `exercises/08_mixture_of_experts.ipynb`.
