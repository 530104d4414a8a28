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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/13_experiments.ipynb)

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
# # 13 · Experiments: extrapolation, scaling and ablations
#
# **You will learn** to ask a design question of a Transformer and answer it with a measurement:
# train small models that differ in *one* choice, evaluate them the same way, and read the
# numbers for what they can and cannot say. Three experiments, each a classic of the field:
#
# 1. **Length extrapolation.** Train at context T, test at 2T and 4T. Which positional scheme
#    (lesson 02) survives? Press et al. 2022, *Train Short, Test Long* (ALiBi); Kazemnejad et al.
#    2023, *The Impact of Positional Encoding on Length Generalization in Transformers* (NoPE).
#    Then two ways to stretch RoPE afterwards, with and without fine-tuning: position
#    interpolation (Chen et al. 2023) and NTK-aware scaling.
# 2. **Scaling.** Loss against model size on log–log axes, a fitted power law, and the
#    compute-optimal arithmetic behind today's model sizes. Kaplan et al. 2020, *Scaling Laws
#    for Neural Language Models*; Hoffmann et al. 2022, *Training Compute-Optimal Large Language
#    Models* (Chinchilla).
# 3. **Ablations at equal steps.** Pre- vs post-LN, LayerNorm vs RMSNorm, GELU vs SwiGLU
#    (parameter-matched), MHA vs GQA vs MQA: the GPT-2 → LLaMA changes, one at a time.
#
# Every model here is `course_lib.experiments.ExperimentLM`: the course's tested attention,
# block, norms and FFNs, with each of those choices a config field.
#
# **Then** do `exercises/13_experiments.ipynb`: write the evaluation loop that scores a model
# at any length, then fit scaling laws and find the compute-optimal model size.

# %%
import math
from dataclasses import replace

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import numpy as np
import torch

from course_lib import get_device, seed_everything
from course_lib.data import encoded_corpus, shakespeare_text
from course_lib.device import single_thread
from course_lib.experiments import (POSITIONS, ExperimentConfig, ExperimentLM, LengthError, compute_optimal,
                                    eval_at_length, experiment_params, fit_power_law, loss_by_position,
                                    run_experiment, training_flops)
from course_lib.models.common import count_params
from course_lib.models.sizes import PUBLISHED, param_count
from course_lib.positional import RopeScaling, rope_inv_freq
from course_lib.pretrained import manifest, shakespeare_gpt
from course_lib.tokenizers import CharTokenizer

SCALE = 1  # multiplies training steps and evaluation batches; see "Running it bigger" below

seed_everything(0)
device = get_device()
print("device in use:", device)

# %% [markdown]
# ## 0. One recipe for every run
# Character-level Shakespeare (lesson 10's data). Every model is trained with the same recipe
# (`run_experiment`: the course `Trainer`, AdamW, warm-up then cosine decay, the same seed, so
# the same initial weights wherever shapes agree and the *same training batches* for all) and
# differs from the baseline below in exactly one field. The baseline is a 2-layer, 64-wide,
# 4-head model with RoPE, pre-LN, LayerNorm, a GELU FFN and full multi-head attention.
#
# Training and evaluation run on one CPU thread (`single_thread`), so every loss printed here is
# the same on every machine. Time per step is printed too, but it is the one volatile number: it
# depends on the machine, and nothing in this notebook depends on it.

# %%
tok = CharTokenizer.train(shakespeare_text())
train_data, val_data = encoded_corpus(tok, "char")
T = 32  # the training context
STEPS, BATCH, LR = 250 * SCALE, 16, 5e-3
EVAL_BATCHES = 4 * SCALE  # x 16 windows for every evaluation length
BASE = ExperimentConfig(vocab_size=tok.vocab_size, max_positions=T, d_model=64, n_layers=2, n_heads=4,
                        position="rope", norm_placement="pre", norm="layernorm", ffn="gelu")


tokens_each = STEPS * BATCH * T  # training tokens of every small model


def train(seed: int = 0, **changes):
    """The baseline with `changes`, trained STEPS steps; returns an ExperimentResult."""
    with single_thread():
        return run_experiment(replace(BASE, **changes), train_data, val_data, STEPS, batch_size=BATCH, lr=LR,
                              seed=seed, device=device)


counts = experiment_params(BASE)
print(f"baseline: {counts.total:,} parameters ({counts.non_embedding:,} outside the embeddings); "
      f"{STEPS} steps x {BATCH} windows x {T} characters = {STEPS * BATCH * T:,} training tokens")

# %% [markdown]
# ## 1. Length extrapolation: train at T, test at 2T and 4T
# Five models, identical but for how they learn *where* a token is (lesson 02):
#
# | scheme | where position enters | beyond T at test time |
# |---|---|---|
# | sinusoidal | a fixed table added to the embeddings (Vaswani et al. 2017 §3.5) | table rows never seen in training |
# | learned | a trained table added to the embeddings (GPT-2) | no row at all: cannot run |
# | RoPE | q and k rotated by position; scores depend on the distance (Su et al. 2021) | rotation angles never seen in training |
# | ALiBi | −slope·distance added to the scores (Press et al. 2022 §3) | the same linear penalty, just longer |
# | none (NoPE) | nowhere: only the causal mask (Kazemnejad et al. 2023) | whatever the model inferred from the mask |
#
# Each model is then scored on the same validation text: windows of 4T characters (one seeded
# generator, so the same windows for every model), fed whole, as two halves of 2T, or as four
# quarters of T (`loss_by_position(..., window=4 * T)`). Every length therefore predicts exactly
# the same characters, and a difference between lengths can only come from the context the model
# is given. `loss_by_position` keeps the loss of each position separately; its mean is the loss.

# %% tolerance={"rel": 0.02, "abs": 0.03}
runs = {p: train(position=p) for p in POSITIONS}
LENGTHS = (T, 2 * T, 4 * T)
curves, refused = {}, {}
for p, r in runs.items():
    curves[p] = {}
    for L in LENGTHS:
        try:
            with single_thread():
                curves[p][L] = loss_by_position(r.model, val_data, L, EVAL_BATCHES, 16,
                                                torch.Generator().manual_seed(1), window=4 * T)
        except LengthError as err:
            refused.setdefault(p, str(err).split(":")[0])
loss = {p: {L: c.mean().item() for L, c in cs.items()} for p, cs in curves.items()}

print("validation loss (nats per character) on the same text, fed in pieces of each length")
print(f"{'position':<11}" + "".join(f"{f'length {L}':>12}" for L in LENGTHS) + "   change T -> 4T")
for p in POSITIONS:
    cells = [f"{loss[p][L]:12.3f}" if L in loss[p] else f"{'n/a':>12}" for L in LENGTHS]
    change = f"{loss[p][4 * T] - loss[p][T]:+.3f}" if 4 * T in loss[p] else "n/a"
    print(f"{p:<11}" + "".join(cells) + f"   {change:>14}")
for p, why in refused.items():
    print(f"\n{p}: n/a — no embedding for position >= {T}. The model says: {why}.")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for p in POSITIONS:
    Ls = sorted(loss[p])
    axes[0].plot(Ls, [loss[p][L] for L in Ls], "o-", label=p)
    c = curves[p][max(Ls)].numpy()
    smooth = np.convolve(c, np.ones(8) / 8, mode="valid")  # 8-position moving average
    axes[1].plot(np.arange(len(smooth)) + 3.5, smooth, label=p)
axes[0].set_xscale("log", base=2)
axes[0].set(xticks=LENGTHS, xlabel="sequence length fed to the model (characters)",
            ylabel="validation loss (nats)", title=f"trained at T = {T}")
axes[0].set_xticklabels([str(L) for L in LENGTHS], minor=False)
axes[1].axvline(T, color="grey", ls="--")
axes[1].text(T + 1, 0.97, "T", transform=axes[1].get_xaxis_transform(), va="top", color="grey")
axes[1].set(xlabel="position in the sequence", ylabel="loss at that position (8-position average)",
            title=f"sequences of {4 * T}")
axes[0].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
fig.tight_layout()
plt.show()

# %%
# what the table has to show for the text below to be true (checked on the reference run)
REFERENCE_RUN = SCALE == 1 and device.type == "cpu"
change = {p: loss[p][4 * T] - loss[p][T] for p in POSITIONS if p not in refused}
rope_beyond = curves["rope"][4 * T][2 * T:].mean().item() - curves["rope"][4 * T][:T].mean().item()
print(f"RoPE inside 4T windows: positions >= 2T lose {rope_beyond:+.3f} nats more than positions < T")
if REFERENCE_RUN:
    assert refused.keys() == {"learned"}
    assert abs(change["alibi"]) < 0.01 and min(change, key=lambda p: abs(change[p])) == "alibi"
    assert max(change, key=change.get) == "rope" and rope_beyond > 0.2
    assert change["alibi"] < change["none"] < change["rope"]
    assert min(loss, key=lambda p: loss[p][T]) == "rope" and max(loss, key=lambda p: loss[p][T]) == "sinusoidal"

# %% [markdown]
# **Reading the table.** The first column is an ordinary validation loss at the training length;
# differences there say how fast each scheme learns in this short run, not how good it finally is.
# The extrapolation story is in the last column and the right-hand plot:
#
# * **learned** cannot even be asked: position T has no row in its table (the message above).
# * **ALiBi** is flat: its loss at 4T is within a hundredth of its loss at T. Its bias is
#   −slope·distance whatever the distance, so a longer window only adds keys that are penalised
#   even more — the model keeps reading the recent past it was trained on. This is the result of
#   Press et al. 2022 (§4, Figure 1), who trained on 512 or 1024 tokens and evaluated on many
#   times that with perplexity staying flat, where sinusoidal and rotary models degraded.
# * **RoPE** has the best loss at T and the largest rise at 4T, and the right-hand plot shows
#   where: inside long sequences its late positions lose much more than its first T (the gap is
#   printed under the plot). RoPE's scores depend only on the distance, but
#   through *angles* distance·θᵢ; beyond T the slow-rotating pairs reach angles the model never saw
#   (the next cell counts them). This is why long-context LLaMA variants rescale RoPE (position
#   interpolation, NTK/YaRN: `course_lib.positional.RopeScaling`) and fine-tune briefly; we try
#   both below.
# * **NoPE** (no positions at all) still learns order from the causal mask alone — Kazemnejad
#   et al. 2023 (their Theorem 1) show its first layer can recover absolute positions from it —
#   and here it degrades less than RoPE and more than ALiBi. Their finding that NoPE generalised
#   to longer inputs better than the explicit schemes was on small synthetic reasoning tasks; on
#   text, in this tiny run, ALiBi wins.
# * **sinusoidal** meets table rows it was never trained with beyond T; its change is in the
#   table. Its loss at T is the worst of the five in this short run. We use the 2017 recipe as
#   written (embeddings multiplied by √d_model, §3.4, plus the fixed table) and one learning rate
#   for every scheme: no scheme was tuned, so read the first column as "after this much training".
#
# Where RoPE's unseen angles come from: pair i of a head rotates by θᵢ = 10000^(−2i/D) radians per
# token of distance. In training the largest distance is T − 1; at 4T it is 4T − 1.

# %%
theta = rope_inv_freq(BASE.head_dim)  # (D/2,) radians per token of distance
print(f"head size D = {BASE.head_dim}: {len(theta)} rotating pairs")
print(f"{'pair':>4} {'θ (rad/token)':>14} {'max angle, train (turns)':>25} {'at 4T (turns)':>14}")
for i, th in enumerate(theta.tolist()):
    seen, test = th * (T - 1) / (2 * math.pi), th * (4 * T - 1) / (2 * math.pi)
    print(f"{i:>4} {th:>14.5f} {seen:>25.3f} {test:>14.3f}")
full = int((theta * (T - 1) >= 2 * math.pi).sum())
print(f"{full} of {len(theta)} pairs turned a full circle within the training context; for the other "
      f"{len(theta) - full}, every angle beyond {T - 1} tokens is new at test time")

# %% [markdown]
# ### Stretching RoPE: position interpolation and NTK scaling
# If RoPE fails at 4T because of angles it never saw, the fix is to change the angles, not the
# weights. Lesson 02's `RopeScaling` has the two classic ways, each with a stretch factor s:
#
# * **Position interpolation** (`"linear"`; Chen et al. 2023, *Extending Context Window of Large
#   Language Models via Positional Interpolation*, Eq. 4) feeds position m as m / s. With s = 4 the
#   positions 0 … 4T−1 become 0 … T − 1/4, so every angle is (within a quarter token) one the model
#   saw; the price is that neighbours are now 1/s of a token apart, a distance never seen either.
#   Chen et al. fine-tune for about 1000 steps after the change.
# * **NTK-aware scaling** (`"ntk"`; bloc97 2023, described in Peng et al. 2023, YaRN §3.1) raises
#   the base instead, θ' = 10000 · s^(D/(D−2)). Pair i then turns s^(2i/(D−2)) times slower: the
#   fastest pair (i = 0) not at all, the slowest exactly s times, the ones between a geometric
#   blend. It is meant to work without fine-tuning.
#
# Neither adds a weight, so the trained model's state dict loads into a config with a
# `rope_scaling` as it is. First what each does to each pair at s = 4 (largest angle, in turns):

# %%
S = 4
ntk_theta = rope_inv_freq(BASE.head_dim, scaling=RopeScaling("ntk", S))  # (D/2,)
print(f"largest angle of each pair in turns: in training (distance {T - 1}) and at 4T (distance {4 * T - 1}), "
      f"scaled by s = {S}")
print(f"{'pair':>4} {'NTK slows it by':>15} {'train':>8} {'4T: none':>9} {'linear':>8} {'NTK':>8}")
beyond = {"none": 0, "linear": 0, "NTK": 0}
for i, (th, th_ntk) in enumerate(zip(theta.tolist(), ntk_theta.tolist())):
    turns = {"none": th * (4 * T - 1), "linear": th / S * (4 * T - 1), "NTK": th_ntk * (4 * T - 1)}
    seen = th * (T - 1)
    for k, a in turns.items():  # a pair that never turned a full circle, taken past its largest trained angle
        beyond[k] += seen < 2 * math.pi and a > seen * 1.05
    print(f"{i:>4} {th / th_ntk:>15.2f} {seen / (2 * math.pi):>8.3f}"
          + "".join(f"{a / (2 * math.pi):>{w}.3f}" for a, w in zip(turns.values(), (9, 8, 8))))
print(f"pairs taken more than 5 % past the largest angle they saw in training (of the {len(theta) - full} "
      f"that never turned a full circle): " + ", ".join(f"{k} {v}" for k, v in beyond.items()))

# %% [markdown]
# Linear keeps every pair in range. NTK barely touches the fast pairs (pair 0 not at all, pair 1
# a little; both turned full circles in training anyway) and pulls the slow ones back, but only the
# slowest by the full factor 4: the pairs in the middle are slowed by less, so at 4T they still pass
# the angles they were trained on (the count under the table).
#
# **Zero-shot.** The section-1 RoPE model, unchanged but for its `rope_scaling`, scored exactly as
# in section 1 (the same 4T windows, fed whole, in halves or in quarters). The row "none" is
# section 1's RoPE row. The last column says how much of RoPE's rise from T to 4T a method wins
# back: 100 % = its 4T loss is the unscaled loss at T, 0 % = no better than no scaling, negative =
# worse.

# %% tolerance={"rel": 0.02, "abs": 0.03, "pct": 6}
rope = runs["rope"].model
METHODS = {"none": None, "linear x2": RopeScaling("linear", 2.0), "linear x4": RopeScaling("linear", 4.0),
           "NTK x2": RopeScaling("ntk", 2.0), "NTK x4": RopeScaling("ntk", 4.0)}


def stretched(model: ExperimentLM, scaling) -> ExperimentLM:
    """The trained weights as they are, with RoPE's angles stretched by `scaling`."""
    m = ExperimentLM(replace(model.config, rope_scaling=scaling)).to(device)
    m.load_state_dict(model.state_dict())  # no weight is added or changed
    return m.eval()


def score(model: ExperimentLM) -> dict:
    """Section 1's evaluation: loss at T, 2T, 4T on the same 4T windows."""
    with single_thread():
        return {L: loss_by_position(model, val_data, L, EVAL_BATCHES, 16, torch.Generator().manual_seed(1),
                                    window=4 * T).mean().item() for L in LENGTHS}


def recovered(losses: dict) -> float:
    """The share of unscaled RoPE's rise from T to 4T that `losses` win back at 4T."""
    return (loss["rope"][4 * T] - losses[4 * T]) / (loss["rope"][4 * T] - loss["rope"][T])


zero_shot = {name: score(stretched(rope, s)) for name, s in METHODS.items()}
assert zero_shot["none"] == loss["rope"]  # the same model and windows as section 1


def table(results: dict) -> None:
    print(f"{'RoPE scaling':<12}" + "".join(f"{f'length {L}':>11}" for L in LENGTHS)
          + f"{'4T vs none at T':>17}{'rise recovered':>16}")
    for name, ls in results.items():
        print(f"{name:<12}" + "".join(f"{ls[L]:11.3f}" for L in LENGTHS)
              + f"{ls[4 * T] - loss['rope'][T]:+17.3f}{100 * recovered(ls):15.0f}%")


print(f"zero-shot: the section-1 RoPE model (trained at T = {T}), no fine-tuning")
table(zero_shot)

# %% [markdown]
# **Fine-tuning at 4T.** Chen et al. fine-tune after interpolating; so do we, briefly: each
# variant below continues from the trained weights (`run_experiment(..., init=rope)`) for a few
# steps on windows of 4T, with a lower learning rate. The row "none" is the control: fine-tuning
# at 4T with *no* scaling, which tells how much of any gain is the fine-tuning itself.

# %% tolerance={"rel": 0.02, "abs": 0.03, "pct": 6}
FT_STEPS, FT_LR, FT_SEED = 50 * SCALE, 1e-3, 1
FINE_TUNE = {"none": None, "linear x4": RopeScaling("linear", 4.0), "NTK x4": RopeScaling("ntk", 4.0)}
fine_tuned, ft_curve = {}, {}
for name, s in FINE_TUNE.items():
    with single_thread():
        # step 0: the loss on the 4T windows the Trainer evaluates on (its seed + 1), before any step
        start = eval_at_length(stretched(rope, s), val_data, 4 * T, 4, BATCH,
                               torch.Generator().manual_seed(FT_SEED + 1))
        ft = run_experiment(replace(BASE, max_positions=4 * T, rope_scaling=s), train_data, val_data, FT_STEPS,
                            batch_size=BATCH, lr=FT_LR, eval_iters=4, eval_interval=10 * SCALE, seed=FT_SEED,
                            init=rope, device=device)
    fine_tuned[name] = score(ft.model)
    ft_curve[name] = ([0] + ft.history.eval_steps, [start] + ft.history.val_loss)
print(f"after {FT_STEPS} fine-tuning steps of {BATCH} x {4 * T} characters ({FT_STEPS * BATCH * 4 * T:,} tokens; "
      f"the first training saw {tokens_each:,}), learning rate {FT_LR:g}")
table(fine_tuned)

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
for name, ls in zero_shot.items():
    axes[0].plot(LENGTHS, [ls[L] for L in LENGTHS], "o-", color=colors[name], label=name)
for name, ls in fine_tuned.items():
    axes[1].plot(LENGTHS, [zero_shot[name][L] for L in LENGTHS], "o:", color=colors[name], alpha=0.4)
    axes[1].plot(LENGTHS, [ls[L] for L in LENGTHS], "o-", color=colors[name], label=f"{name}, fine-tuned")
    axes[2].plot(*ft_curve[name], "o-", color=colors[name], label=name)
for ax, title in zip(axes[:2], ("zero-shot", f"after {FT_STEPS} steps at 4T (dotted: before)")):
    ax.set_xscale("log", base=2)
    ax.set(xticks=LENGTHS, xlabel="sequence length fed to the model", ylabel="validation loss (nats)", title=title)
    ax.set_xticklabels([str(L) for L in LENGTHS], minor=False)
    ax.axhline(loss["rope"][T], color="grey", ls="--", lw=0.8)
    ax.legend(fontsize=8, loc="center right" if ax is axes[0] else "center left")
axes[1].set_ylim(axes[0].get_ylim())
axes[2].set(xlabel="fine-tuning step", ylabel=f"validation loss at length {4 * T}", title="fine-tuning at 4T")
axes[2].axhline(loss["rope"][T], color="grey", ls="--", lw=0.8, label="unscaled RoPE at T")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
if REFERENCE_RUN:  # what the text below says, checked on the reference run
    z, f = zero_shot, fine_tuned
    assert z["linear x4"][4 * T] > z["none"][4 * T] and z["linear x2"][2 * T] > z["none"][2 * T]
    assert z["linear x4"][T] > z["linear x2"][T] > z["none"][T] + 0.2 and z["linear x2"][T] < z["none"][T] + 0.4
    assert abs(z["NTK x4"][T] - z["none"][T]) < 0.02 and abs(z["NTK x2"][2 * T] - z["none"][T]) < 0.02
    assert 0.1 < recovered(z["NTK x4"]) < 0.5
    assert max(z["linear x4"].values()) - min(z["linear x4"].values()) < 0.05  # flat in length
    assert f["linear x4"][4 * T] < z["linear x4"][4 * T] - 0.3 and f["linear x4"][4 * T] > f["none"][4 * T] + 0.05
    assert abs(f["NTK x4"][4 * T] - f["none"][4 * T]) < 0.02 and recovered(f["none"]) > 0.9
    assert ft_curve["linear x4"][1][-1] < ft_curve["linear x4"][1][-2]  # still falling when fine-tuning stops

# %% [markdown]
# **Does the 4T loss recover?**
#
# * **Zero-shot position interpolation makes things worse, everywhere.** At length T the
#   interpolated model loses far more than the unscaled one (the first column: about 0.3 nats at
#   s = 2, more at s = 4), and at 4T it is worse than doing nothing (negative "recovered").
#   Linear ×4's loss is now nearly flat in length: the extrapolation problem is gone and a
#   resolution problem has taken its place. A character model leans hardest on the last few
#   characters, whose distances the fast pairs resolve; squeezed by s they put the previous
#   character at a distance of 1/s, which the model has never seen. NTK, which keeps the fastest
#   pair as it was, loses nothing at T (next point), which fits that reading.
# * **NTK scaling costs nothing at T and recovers 2T, but only part of 4T.** Keeping the fast
#   pairs as they are leaves the short-range reading intact: NTK ×4 at length T is, within the
#   tolerance, the unscaled loss, and NTK ×2 at 2T matches the unscaled loss at T. At 4T NTK ×4 wins
#   back only part of the rise (under half, the last column): as the pair table shows, the middle
#   pairs are still taken past the angles they were trained on.
# * **Fine-tuning at 4T closes the gap, and here it needs no scaling.** After the fine-tuning
#   steps, NTK ×4 and the unscaled control both predict at 4T as well as the original model did at
#   T. Linear ×4 improves the most (its dotted line in the middle plot is far above its solid one)
#   but ends worse than both, and is still improving when fine-tuning stops (right plot).
#
# Chen et al. found interpolation plus about 1000 fine-tuning steps far better than fine-tuning
# without it; NTK-aware scaling came afterwards as the better zero-shot choice. Our run agrees with
# the second and not the first, and the reason is scale. Their LLaMA models had been trained on a
# trillion tokens or more at 2048 positions, a thousand steps were a sliver of that, and direct
# fine-tuning extended their effective context only slowly. Our model saw 128,000 tokens, our
# fine-tuning adds 80 % as many again (printed above), and two layers mostly read the last few
# characters, so relearning the angles is cheap. What carries over is the zero-shot pattern:
# interpolation must be fine-tuned, and leaving the fast pairs alone, as NTK does, is what keeps
# the short-range loss where it was (YaRN, Peng et al. 2023, builds on exactly that).

# %% [markdown]
# ## 2. Scaling: loss against model size
# Kaplan et al. 2020 found that the loss of a language model trained long enough falls as a
# power of its size, L(N) ≈ (N_c / N)^α_N (Eq. 1.1), with N the **non-embedding** parameters
# (counting the embeddings too makes the trend much less clean), and α_N ≈ 0.076 for N over six
# orders of magnitude (their Figure 1). A power law is a straight line on log–log axes, so we fit
# log L = log a − α log N by least squares (`fit_power_law`). The course's shipped, much larger
# model then goes on the same plot.
#
# Five sizes (their N is in the table), all trained on the same token budget with the same
# recipe; the largest is the baseline of section 1.

# %% tolerance={"rel": 0.02, "abs": 0.03}
SIZES = [(16, 1, 2), (32, 1, 4), (32, 2, 4), (48, 2, 4), (64, 2, 4)]  # (d_model, n_layers, n_heads)
if SCALE >= 4:
    SIZES += [(96, 3, 4), (128, 4, 4)]
scaling = {}
for d, L, H in SIZES:
    same_as_base = (d, L, H) == (BASE.d_model, BASE.n_layers, BASE.n_heads)
    scaling[(d, L, H)] = runs["rope"] if same_as_base else train(d_model=d, n_layers=L, n_heads=H)
N = np.array([r.non_embedding for r in scaling.values()])
val = np.array([r.val_loss for r in scaling.values()])
fit = fit_power_law(N, val)
print(f"{'d_model':>7} {'layers':>6} {'heads':>5} {'non-emb. N':>11} {'val loss':>9} {'fit':>7}")
for (d, L, H), n, v in zip(scaling, N, val):
    print(f"{d:>7} {L:>6} {H:>5} {n:>11,} {v:>9.3f} {fit(n):>7.3f}")
print(f"\nfit: loss ≈ {fit.coefficient:.3f} · N^(−{fit.exponent:.4f}),  r² = {fit.r2:.3f} (log–log); "
      f"N spans a factor of {N.max() / N.min():.0f}")
print("Kaplan et al. 2020: α_N ≈ 0.076, over six orders of magnitude of N, models trained to convergence")

# %% [markdown]
# ### The course's shipped model on the same axes
# `course_lib.pretrained.shakespeare_gpt()` is a GPT the course ships ready-trained with its own
# `Trainer`: 6 layers, 256 wide, context 128, trained on the same characters. It is not an
# `ExperimentLM`: it is GPT-2-style (learned positions, tanh-GELU), and was trained with dropout,
# batch 32, its own learning-rate schedule and bf16 arithmetic. To compare it fairly we score it
# with our evaluator on *exactly* the validation windows each small model was scored on
# (`run_experiment`'s validation batches are drawn with the seed + 1, so `eval_at_length` with
# that seed redraws them; the first line below checks that on the baseline). Those windows are
# T = 32 characters long, a quarter of the context the GPT was trained for, so we also print the
# loss its manifest records at its own context.

# %% tolerance={"rel": 0.02, "abs": 0.03}
gpt, gpt_tok = shakespeare_gpt(device)
info = manifest()
assert gpt_tok.itos == tok.itos  # the same characters, so the same ids
with single_thread():
    again = eval_at_length(runs["rope"].model, val_data, T, 10, BATCH, torch.Generator().manual_seed(1))
    gpt_loss = eval_at_length(gpt, val_data, T, 10, BATCH, torch.Generator().manual_seed(1))
print(f"the baseline rescored with eval_at_length: {again:.4f} (run_experiment said {runs['rope'].val_loss:.4f})")
gpt_n = count_params(gpt, embeddings=False)
tr = info["train"]
gpt_tokens = tr["max_steps"] * tr["batch_size"] * tr["seq_len"]
print(f"shipped GPT: {info['parameters']:,} parameters, N = {gpt_n:,} outside the embeddings "
      f"({gpt_n / N.max():.0f}x our largest)")
print(f"  trained on {tr['max_steps']:,} steps x {tr['batch_size']} x {tr['seq_len']} = {gpt_tokens:,} tokens, "
      f"{gpt_tokens / tokens_each:.0f}x the {tokens_each:,} each small model saw and "
      f"{gpt_tokens / len(train_data):.0f} passes over the {len(train_data):,} training characters;\n  "
      f"C = 6ND = {training_flops(gpt_n, gpt_tokens):.1e} FLOPs, against {training_flops(N.max(), tokens_each):.1e} "
      f"for our largest")
print(f"  validation loss on the same {T}-character windows: {gpt_loss:.3f}; "
      f"the fit above, extended to its N, predicts {fit(gpt_n):.3f}")
print(f"  at its own context ({gpt.config.max_positions}), over the whole validation split (manifest): "
      f"{info['val_loss']:.3f}")

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.loglog(N, val, "o", label=f"our runs ({tokens_each:,} tokens each)")
grid = np.geomspace(N.min() / 1.5, N.max() * 1.5, 50)
ax.loglog(grid, fit(grid), "--", label=f"fit: α = {fit.exponent:.3f}, r² = {fit.r2:.2f}")
far = np.geomspace(N.max() * 1.5, gpt_n * 1.5, 50)
ax.loglog(far, fit(far), ":", color="C1", label="the same fit, extended")
ax.loglog([gpt_n], [gpt_loss], "*", ms=14, color="C3",
          label=f"shipped GPT ({gpt_tokens / 1e6:.1f}M tokens), same windows")
plain = FuncFormatter(lambda v, _: f"{v:.1f}")  # loss values on a log axis, written plainly
ax.yaxis.set_major_formatter(plain)
ax.yaxis.set_minor_formatter(plain)
ax.set(xlabel="non-embedding parameters N", ylabel="validation loss (log scale)",
       title=f"windows of {T} characters")
ax.legend(fontsize=8)
plt.show()

# %%
assert abs(again - runs["rope"].val_loss) < 1e-5  # the same windows, the same evaluator
if REFERENCE_RUN:
    assert np.all(np.diff(val[np.argsort(N)]) < 0), "loss falls with every size step"
    assert 0 < fit.exponent < 0.2 and fit.r2 > 0.8
    assert gpt_loss < fit(gpt_n) - 0.2 and info["val_loss"] < gpt_loss - 0.1

# %% [markdown]
# **What a fit over five tiny models can say.** On the reference run loss falls with every step
# in size and the straight line fits well (r² above), so *within this range* "bigger is better,
# by a power law" holds. What it cannot give is Kaplan's exponent, for four reasons: our N spans
# the small factor printed above, not a million; each size is one seed; every model saw the same
# small token budget, so the larger ones are the furthest from converged (Kaplan's L(N) is for
# models trained to convergence); and character-level text has an entropy no model can beat, so
# the true curve flattens towards a floor — Hoffmann et al. fit L(N, D) = E + A/N^α + B/D^β
# (§3.3, Eq. 2) with that floor E in it. A pure power law without E, fitted on a short range,
# reads a bend as a smaller exponent.
#
# **The shipped GPT sits far below the line extended to its size** (the star: it scores the loss
# printed above on the same windows, well under what the fit predicts at its N). That says nothing
# about a steeper law. The line describes models that each saw 128,000 tokens; the GPT saw 115
# times more (about 15 passes over the training text) with 48 times our largest N, so both N and
# D changed. Its loss is Hoffmann's L(N, D) at a far larger D, where the B/D^β term that weighs on
# our short runs has shrunk, and an L(N) line fitted at one fixed D cannot predict that. What else
# differs is listed above it (the architecture and the training recipe); what does not is the
# text and the windows it is scored on. Given its full context of 128 characters it does better
# still (the manifest's loss, over the whole split: a different set of windows, so read the gap
# as a rough size of what the extra 96 characters of context are worth).
#
# ### Compute-optimal arithmetic
# Training costs about **C ≈ 6·N·D** floating-point operations for N parameters and D tokens:
# 2 per parameter per token forward (multiply and add), twice that backward (Kaplan et al. §2.1).
# Hoffmann et al. trained over 400 models and found that for a fixed C the loss is lowest when
# parameters and tokens grow together, at about **20 tokens per parameter** (Chinchilla itself,
# §4: 70B parameters on 1.4T tokens). With D = 20·N, C = 120·N², so N = √(C/120).

# %%
tokens = STEPS * BATCH * T
print(f"our runs: D = {tokens:,} tokens each")
print(f"{'N (non-emb.)':>12} {'tokens/param':>13} {'C = 6ND':>10} {'Chinchilla N for that C':>24}")
for n in N:
    c = training_flops(n, tokens)
    n_opt, _ = compute_optimal(c)
    print(f"{n:>12,} {tokens / n:>13.1f} {c:>10.2e} {n_opt:>24,.0f}")

print("\nreal models (N = all parameters, as Hoffmann et al. count them)")
for name, trained_tokens in (("GPT-2 small", None), ("LLaMA-2-7B", 2.0e12)):
    n = param_count(PUBLISHED[name][0]).total
    d_opt = 20 * n
    line = (f"{name:<12} N = {n / 1e9:.3f}B: Chinchilla-optimal D = 20·N = {d_opt / 1e9:,.1f}B tokens, "
            f"C = {training_flops(n, d_opt):.2e} FLOPs")
    if trained_tokens:
        line += (f"; trained on {trained_tokens / 1e12:.0f}T tokens = {trained_tokens / n:,.0f} per parameter, "
                 f"C = {training_flops(n, trained_tokens):.2e}")
    print(line)
n_c, d_c = compute_optimal(training_flops(70e9, 1.4e12))
print(f"check: Chinchilla's own budget, 6 x 70B x 1.4T FLOPs, gives N = {n_c / 1e9:.0f}B, D = {d_c / 1e12:.1f}T")
if REFERENCE_RUN:  # the text below: smallest over-fed, largest under-fed, relative to 20 tokens/parameter
    assert tokens / N.min() > 20 > tokens / N.max() and compute_optimal(training_flops(N.max(), tokens))[0] < N.max()

# %% [markdown]
# Our smallest model saw more than 20 tokens per parameter and the largest far fewer, so for the
# same compute the big one "should" have been smaller and trained longer (the last column) — the
# kind of imbalance Chinchilla found in Gopher and GPT-3. LLaMA-2-7B goes the other way on
# purpose (Touvron et al. 2023 trained every size on 2T tokens): far more tokens than
# compute-optimal buys a smaller model for the same loss, and a smaller model is cheaper to run
# for every user afterwards. "Compute-optimal" is optimal for the *training* bill only.
#
# ## 3. Ablations at equal steps
# Four changes between GPT-2 (2019) and LLaMA (2023), one at a time from the baseline, each
# trained for the same steps on the same batches:
#
# * **post-LN** (Vaswani et al. 2017) instead of pre-LN (GPT-2; Xiong et al. 2020 show pre-LN's
#   gradients are well-behaved at initialisation, so it needs less warm-up);
# * **RMSNorm** (Zhang & Sennrich 2019) instead of LayerNorm: no mean subtraction (and no β,
#   though our bias-free baseline's LayerNorm has none either);
# * **SwiGLU** (Shazeer 2020) instead of a GELU FFN, its hidden width 2/3 as large so the
#   parameter counts match;
# * **GQA** (2 key/value heads) and **MQA** (1) instead of 4 (Ainslie et al. 2023; Shazeer 2019):
#   fewer parameters and a KV cache n_heads / n_kv_heads times smaller (lesson 04).
#
# A difference only means something if it is larger than what changing nothing but the seed
# does, so the baseline is trained twice. Two seeds is a crude noise estimate — papers use more.

# %% tolerance={"rel": 0.02, "abs": 0.01}
ablations = {"baseline (pre-LN, LayerNorm, GELU, MHA)": runs["rope"], "baseline, seed 1": train(seed=1),
             "post-LN": train(norm_placement="post"), "RMSNorm": train(norm="rmsnorm"),
             "SwiGLU (parameter-matched)": train(ffn="swiglu"), "GQA (2 kv heads)": train(n_kv_heads=2),
             "MQA (1 kv head)": train(n_kv_heads=1)}
base_loss = runs["rope"].val_loss
noise = abs(ablations["baseline, seed 1"].val_loss - base_loss)
print(f"{'variant':<40} {'params':>8} {'val loss':>9} {'vs base':>8}  {'verdict':<18} {'time/step':>10}")
verdict = {}
for name, r in ablations.items():
    delta = r.val_loss - base_loss
    verdict[name] = "—" if name.startswith("baseline") else "within seed noise" if abs(delta) <= noise else \
        ("worse" if delta > 0 else "better")
    print(f"{name:<40} {r.n_params:>8,} {r.val_loss:>9.4f} {delta:>+8.4f}  {verdict[name]:<18} "
          f"{1e3 * r.seconds_per_step:>7.1f} ms")
print(f"\nseed noise (|seed 1 − seed 0|): {noise:.4f} nats")
gelu, swiglu = (experiment_params(replace(BASE, ffn=f)) for f in ("gelu", "swiglu"))
print(f"FFN hidden width: GELU {BASE.ffn_hidden}, SwiGLU {replace(BASE, ffn='swiglu').ffn_hidden}; parameters: "
      f"GELU model {gelu.total:,}, SwiGLU model {swiglu.total:,} ({100 * (swiglu.total / gelu.total - 1):+.2f} %)")

# %%
if REFERENCE_RUN:
    assert verdict["RMSNorm"] == "within seed noise"
    assert verdict["post-LN"] == "worse" and verdict["SwiGLU (parameter-matched)"] == "worse"
    assert abs(swiglu.total / gelu.total - 1) < 0.005
assert ablations["MQA (1 kv head)"].n_params < ablations["GQA (2 kv heads)"].n_params < runs["rope"].n_params

# %% [markdown]
# **Reading the ablation table** (the verdict column compares each change with the seed noise):
#
# * **RMSNorm** is within seed noise of LayerNorm: dropping the mean subtraction costs nothing
#   here. (β is not what differs: these models have no biases, so the baseline's LayerNorm has
#   none either, and the params column is the same.) The case for it is less work per token —
#   one statistic instead of two; Zhang & Sennrich report it running faster than LayerNorm at
#   the same quality, and LLaMA, Mistral and T5 use it. The time column cannot show that: each
#   entry is one short run, and the two baseline rows do identical work, so the gap between them
#   is the column's noise. Read no speed ordering into it.
# * **post-LN** is worse at equal steps, even at two layers. Xiong et al. 2020 (§3) show why it is
#   the harder one to train: with the norm on the residual path, the gradients of the last layers
#   are large at initialisation, so it needs a long warm-up, and ours is short.
# * **SwiGLU** is worse here, in this short run — the opposite of Shazeer's result (§3, Table 1,
#   after far longer training at far larger size). Short runs favour whatever learns fastest early;
#   a single tiny run is no evidence against a result measured at scale. Narang et al. 2021 (*Do
#   Transformer Modifications Transfer Across Implementations and Applications?*) found that most
#   proposed changes did not survive re-testing in another code base, while GLU variants and
#   RMSNorm did: ablations are easy to run and easy to over-read.
# * **GQA and MQA** remove key/value parameters (the params column); read their verdicts in the
#   table. Their real gain is at inference — the smaller KV cache — which a training loss cannot
#   show, and the time column is too noisy at this size to show a speed difference.
#
# ## Running it bigger
# Everything above is sized for a 2-core CPU. To see the same experiments with less noise, set
# `SCALE` in the first code cell and rerun; the run time grows about in proportion.
#
# * `SCALE = 4` multiplies the training steps and the evaluation windows by 4 and adds two larger
#   sizes (96 and 128 wide, 3 and 4 layers) to the scaling fit. Use a GPU for it (in Colab:
#   Runtime → Change runtime type); `get_device()` picks it up and every run uses it.
# * `SCALE = 8` or more on a GPU. Also worth changing then: `T = 128` (extrapolate to 4T = 512),
#   and several seeds per ablation (`train(seed=s, ...)` for a few s) to get a real noise band.
#
# What to expect to change: every loss drops; the ALiBi/RoPE/NoPE pattern of section 1 is the
# question to re-ask (does RoPE's rise at 4T stay? does NoPE catch up? does fine-tuning without
# scaling still keep up with NTK once the model has trained longer, which Chen et al. found it
# does not?); the scaling fit spans a wider range of N and the bend towards the irreducible loss
# becomes visible; ablation gaps that were within noise may open or close. The asserts in this
# notebook check the stored reference run only (`REFERENCE_RUN`), so a bigger run prints its own
# numbers without failing — read those.
#
# **Now** do `exercises/13_experiments.ipynb`.
