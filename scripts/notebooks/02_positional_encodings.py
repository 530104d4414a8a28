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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/02_positional_encodings.ipynb)

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
# # 02 · Positional encodings
#
# **You will learn** why attention needs to be told where each token is (measured, not
# asserted), and the five answers the model families in this course give:
#
# | scheme | paper | where it acts |
# |---|---|---|
# | sinusoidal | Vaswani et al. 2017, §3.5 | added to the embeddings |
# | learned | GPT-2 (Radford et al. 2019), BERT | added to the embeddings |
# | RoPE | Su et al. 2021 (RoFormer), §3.4 | rotates q and k |
# | ALiBi | Press et al. 2022, §3 | bias added to the scores |
# | T5 buckets | Raffel et al. 2020, §2.1 | learned bias added to the scores |
#
# Each one is built from `course_lib.positional` and compared with an independent
# reference: the paper's formula or Hugging Face `transformers`.
#
# **Then** do `exercises/02_positional_encodings.ipynb`: the sinusoidal table, RoPE, ALiBi
# slopes and T5 buckets, each graded by a check.

# %%
import math

import matplotlib.pyplot as plt
import torch

from course_lib import get_device, seed_everything
from course_lib.attention import MultiHeadAttention, causal_mask
from course_lib.positional import (LearnedPositionalEmbedding, RopeScaling, T5RelativeBias, alibi_bias,
                                   alibi_slopes, apply_rope, apply_rope_complex, half_to_adjacent_permutation,
                                   relative_position_bucket, rope_cos_sin, rope_inv_freq, sinusoidal_encoding)
from course_lib.viz import plot_bias_heads, plot_buckets, plot_encoding

device = get_device()
seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)


def below(err: float, tol: float) -> str:
    """Report a numerical error as a stable sentence (the last digits of float noise vary by machine)."""
    return f"max abs error < {tol:g}" if err <= tol else f"max abs error {err:.3g}, MORE than {tol:g}!"


# %% [markdown]
# ## 1. Attention cannot see order
# Self-attention compares every query with every key by a dot product and sums values by
# weight. Nothing in that computation knows which token came first. Shuffle the input tokens
# and the output rows are shuffled the same way, and otherwise unchanged: attention is
# **permutation-equivariant**. "dog bites man" and "man bites dog" would look the same.
#
# Measure it with the multi-head attention layer from lesson 01:

# %%
seed_everything(0)
T, C = 6, 32
mha = MultiHeadAttention(C, 4).to(device).eval()
x = torch.randn(1, T, C, device=device)  # (B, T, C) token embeddings, no positions
perm = torch.randperm(T, device=device)
with torch.no_grad():
    out_then_shuffle = mha(x)[:, perm]  # (B, T, C)
    shuffle_then_out = mha(x[:, perm])  # (B, T, C)
err = (out_then_shuffle - shuffle_then_out).abs().max().item()
print(f"permutation {perm.tolist()}: attention(shuffled x) vs shuffled attention(x): {below(err, 1e-5)}")

# %% [markdown]
# The fix: make each token's vector depend on its position. Adding a position code to the
# embeddings before attention breaks the symmetry; the same test now fails, as it should:

# %%
pe = sinusoidal_encoding(T, C).to(device)  # (T, C)
with torch.no_grad():
    diff = (mha(x + pe)[:, perm] - mha(x[:, perm] + pe)).abs().max().item()  # same positions, shuffled words
print(f"with positions added, shuffling the words changes the outputs by up to {diff:.2f}")

# %% [markdown]
# ## 2. Sinusoidal encodings (Vaswani et al. 2017, §3.5)
# $$PE_{(pos,\,2i)} = \sin\!\big(pos / 10000^{2i/d}\big), \qquad
#   PE_{(pos,\,2i+1)} = \cos\!\big(pos / 10000^{2i/d}\big)$$
#
# Each pair of dimensions (2i, 2i+1) is a point on a circle that turns with the position, at
# its own speed ω_i = 10000^(−2i/d), so its wavelength is 2π/ω_i tokens. The first pair
# (i = 0) turns by one radian per token: wavelength 2π. The last pair (i = d/2 − 1) turns so
# slowly that its wavelength is 2π·10000^((d−2)/d): about 35,000 tokens for the d = 32 below,
# as the cell prints. The paper's range "from 2π to 10000·2π" names the limit of that as d
# grows; no finite d reaches it, and small d stays well short. Fast pairs tell neighbours
# apart, slow pairs tell where in a long text you are — like the hands of a clock.

# %%
pe = sinusoidal_encoding(64, 32)  # (T, d)
print("shape:", tuple(pe.shape))
wavelengths = 2 * math.pi / rope_inv_freq(32, 10000.0)  # (d/2,) tokens per full turn of each pair
print(f"wavelength of pair 0: {wavelengths[0]:.2f} tokens; pair 15: {wavelengths[-1]:.0f} tokens")
paper = torch.tensor([[math.sin(p / 10000 ** (k / 32)) if k % 2 == 0 else math.cos(p / 10000 ** ((k - 1) / 32))
                       for k in range(32)] for p in range(64)])  # the formula, one entry at a time
print(f"course_lib vs the paper's formula: {below((pe - paper).abs().max().item(), 1e-6)}")
plot_encoding(pe, title="sinusoidal encoding, 64 positions × 32 dimensions")
plt.show()

# %% [markdown]
# **Why these frequencies?** The paper's reason (§3.5): for any fixed offset k, PE(pos + k)
# is a *linear* function of PE(pos) — each pair is rotated by the angle k·ω_i, whatever pos
# is — so a layer can learn to attend "k tokens back". Check it: one fixed block-rotation
# matrix M_k maps every position to the one k steps later.

# %%
k = 5
w = rope_inv_freq(32, 10000.0, dtype=torch.float64)  # (d/2,) ω_i
M = torch.zeros(32, 32, dtype=torch.float64)
for i, a in enumerate((k * w).tolist()):  # row vector (sin x, cos x) @ M -> (sin(x+a), cos(x+a))
    M[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                                                       dtype=torch.float64)
pe64 = sinusoidal_encoding(64, 32, dtype=torch.float64)  # (T, d)
print(f"PE(pos + {k}) == PE(pos) @ M_{k} for every pos: {below((pe64[:-k] @ M - pe64[k:]).abs().max().item(), 1e-9)}")

# %% [markdown]
# A consequence: the dot product PE(p)·PE(p+k) = Σ_i cos(k·ω_i) depends only on the distance
# k, not on p. It is largest at k = 0 and falls off (unevenly) with distance:

# %%
pe_long = sinusoidal_encoding(300, 64)  # (T, d)
fig, ax = plt.subplots(figsize=(7, 3))
for p in (0, 50, 100):
    ks = torch.arange(0, 200)
    ax.plot(ks, (pe_long[p] * pe_long[p + ks]).sum(-1), label=f"from position {p}")
ax.set_xlabel("distance k")
ax.set_ylabel("PE(p) · PE(p + k)")
ax.set_title("the three curves lie on top of each other: only the distance matters", fontsize=10)
ax.legend()
plt.show()

# %% [markdown]
# ## 3. Learned absolute embeddings (GPT-2's `wpe`)
# GPT-2 and BERT simply *learn* one vector per position: an embedding table with
# `max_positions` rows, added to the token embeddings. Flexible, but it costs parameters and
# it has nothing to say about a position it never saw in training.

# %%
seed_everything(0)
wpe = LearnedPositionalEmbedding(1024, 768)  # GPT-2 small's sizes
print(f"GPT-2 small's wpe: {sum(p.numel() for p in wpe.parameters()):,} parameters")
print("positions 0..4 ->", tuple(wpe(torch.arange(5)).shape))
try:
    wpe(torch.arange(1020, 1030))
except ValueError as e:
    print("position 1029 ->", e)

# %% [markdown]
# Is it the same as GPT-2's? Build a tiny random GPT-2 with `transformers` (offline), copy its
# `wpe` into ours, and compare the embeddings the model feeds its first block:

# %%
from transformers import GPT2Config, GPT2Model
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
seed_everything(0)
gpt2 = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=16, vocab_size=50,
                            bos_token_id=0, eos_token_id=0)).eval()
ours = LearnedPositionalEmbedding(16, 32)
ours.load_state_dict(gpt2.wpe.state_dict())  # same parameter name, `weight`: a plain copy
ids = torch.randint(0, 50, (2, 9))
with torch.no_grad():
    theirs = gpt2(ids, output_hidden_states=True).hidden_states[0]  # wte(ids) + wpe(positions)
    mine = gpt2.wte(ids) + ours(torch.arange(9))
print(f"token + learned position embeddings vs GPT-2: {below((mine - theirs).abs().max().item(), 1e-6)}")

# %% [markdown]
# ## 4. RoPE: rotate q and k (Su et al. 2021)
# Instead of adding a code to the input, RoPE **rotates** each query and key inside attention,
# by an angle proportional to its position. Pair the D features of a head into D/2 pairs; pair
# i of a vector at position m is rotated by m·θ_i, with θ_i = θ^(−2i/D) and θ = 10000 (Eq. 15):
#
# $$\begin{pmatrix}x'_{2i}\\x'_{2i+1}\end{pmatrix} =
#   \begin{pmatrix}\cos m\theta_i & -\sin m\theta_i\\ \sin m\theta_i & \cos m\theta_i\end{pmatrix}
#   \begin{pmatrix}x_{2i}\\x_{2i+1}\end{pmatrix}$$
#
# The payoff: rotations compose, R_mᵀ R_n = R_(n−m), so q_m·k_n = qᵀ R_(n−m) k depends on the
# positions **only through their difference**. Relative position, at no parameter cost, and
# the values v are left alone.
#
# **The version ladder.** Four ways to write the same rotation, each checked against the last.
#
# *Rung 1 — the matrix of Eq. 15*, block-diagonal, built explicitly:

# %%
seed_everything(1)
B, H, T, D = 1, 2, 6, 8
xq = torch.randn(B, H, T, D, dtype=torch.float64)  # (B, H, T, D) a query tensor
positions = torch.arange(T)


def rope_by_matrix(x, positions, theta=10000.0):
    """Rung 1: x @ R_mᵀ for each position, R_m block-diagonal with 2x2 rotations (Eq. 15)."""
    D = x.size(-1)
    out = torch.empty_like(x)
    for t, m in enumerate(positions.tolist()):
        R = torch.zeros(D, D, dtype=x.dtype)
        for i in range(D // 2):
            a = m * theta ** (-2 * i / D)
            c, s = math.cos(a), math.sin(a)
            R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[c, -s], [s, c]], dtype=x.dtype)
        out[..., t, :] = x[..., t, :] @ R.T  # (B, H, D)
    return out


rung1 = rope_by_matrix(xq, positions)
print("rung 1 (matrix):", tuple(rung1.shape))

# %% [markdown]
# *Rung 2 — elementwise, adjacent pairs (2i, 2i+1)*: the matrix is mostly zeros, so compute
# x·cos + rotate(x)·sin with rotate([x0, x1, x2, x3, …]) = [−x1, x0, −x3, x2, …]. This is
# `apply_rope(..., layout="adjacent")`, the RoFormer paper's form (Eq. 34).
#
# *Rung 3 — complex numbers*, Meta's original LLaMA code: a pair (a, b) is the complex number
# a + ib, and a rotation by angle φ is a multiplication by e^(iφ) (`torch.view_as_complex`).

# %%
rung2 = apply_rope(xq, positions, layout="adjacent")  # (B, H, T, D)
rung3 = apply_rope_complex(xq, positions)  # (B, H, T, D)
print(f"rung 2 (adjacent pairs) vs rung 1 (matrix): {below((rung2 - rung1).abs().max().item(), 1e-12)}")
print(f"rung 3 (complex)        vs rung 2         : {below((rung3 - rung2).abs().max().item(), 1e-12)}")

# %% [markdown]
# *Rung 4 — the half-split layout* of Hugging Face Llama: it pairs feature j with feature
# j + D/2 instead (`rotate_half`: [x1 | x2] → [−x2 | x1]), with the cos/sin table laid out
# as [angles | angles]. It is the **same rotation, on permuted features**: if we reorder
# the features so that j and j + D/2 sit side by side, the adjacent layout gives the same
# numbers. (This is why converting Meta's checkpoints to Hugging Face permutes the rows
# of `q_proj` and `k_proj` once, after which both compute the same attention.)

# %%
perm = half_to_adjacent_permutation(D)
print("feature order that turns half-split pairs into adjacent pairs:", perm.tolist())
half = apply_rope(xq, positions, layout="half")  # (B, H, T, D)
print(f"half-split then permute vs permute then adjacent: "
      f"{below((half[..., perm] - apply_rope(xq[..., perm], positions, layout='adjacent')).abs().max().item(), 1e-12)}")
print(f"... but without the permutation they differ by up to {(half - rung2).abs().max().item():.2f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
for ax, layout in zip(axes, ("adjacent", "half")):
    cos, _ = rope_cos_sin(torch.arange(16), 16, layout=layout)  # (T, D)
    ax.imshow(cos, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_title(f"cos table, layout={layout!r}", fontsize=10)
    ax.set_xlabel("feature")
    ax.set_ylabel("position")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Is it the same as `transformers`?** `LlamaRotaryEmbedding` + `apply_rotary_pos_emb` from a
# tiny random config, with positions that start at 20 (as a KV cache would) and θ = 500000
# (LLaMA 3):

# %%
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

cfg = LlamaConfig(hidden_size=64, num_attention_heads=4,
                  rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
seed_everything(2)
q, k = torch.randn(2, 4, 7, 16), torch.randn(2, 4, 7, 16)  # (B, H, T, D)
position_ids = torch.stack([torch.arange(7), torch.arange(20, 27)])  # (B, T)
cos_hf, sin_hf = LlamaRotaryEmbedding(cfg)(q, position_ids)  # (B, T, D)
q_hf, k_hf = apply_rotary_pos_emb(q, k, cos_hf, sin_hf)
err = max((apply_rope(q, position_ids, 500000.0, layout="half") - q_hf).abs().max().item(),
          (apply_rope(k, position_ids, 500000.0, layout="half") - k_hf).abs().max().item())
print(f"course_lib RoPE (half layout) vs transformers Llama: {below(err, 1e-6)}")

# %% [markdown]
# **Only the difference counts.** Rotate one query and one key to many position pairs: with
# the same gap m − n the score is the same, wherever the pair sits.

# %%
seed_everything(3)
q1, k1 = torch.randn(1, 1, 1, 64, dtype=torch.float64), torch.randn(1, 1, 1, 64, dtype=torch.float64)


def rope_score(m, n):
    return (apply_rope(q1, torch.tensor([m])) * apply_rope(k1, torch.tensor([n]))).sum().item()


for m, n in [(3, 0), (10, 7), (500, 497), (4000, 3997), (10, 0)]:
    print(f"q at m={m:>4}, k at n={n:>4}, gap {m - n:>2}: score {rope_score(m, n):+.4f}")

# %% [markdown]
# **Play with it.** One pair of features of q and k, as arrows in the plane. Move the query to
# position m and the key to n: each arrow turns by its position times the pair's frequency.
# "shift both" moves the two together — the arrows turn, the angle between them does not,
# and neither does the score.

# %%
from course_lib.widgets import alibi_explorer, rope_rotation_explorer, t5_bucket_explorer

rope_rotation_explorer()

# %% [markdown]
# **Longer contexts than trained.** A model trained on L tokens has never seen the angles of
# positions beyond L on its slow pairs. Two common fixes change the frequencies:
#
# * *Position interpolation* (Chen et al. 2023, Eq. 4): use position m / s for a context s
#   times longer, i.e. divide every θ_i by s. Position 4L with s = 4 gets the angles that
#   position L had in training.
# * *"NTK-aware" scaling* (bloc97 2023; Peng et al. 2023, YaRN §3.1): raise the base instead,
#   θ' = θ · s^(D/(D−2)). The fastest pair (i = 0) is untouched, so neighbours stay as sharp
#   as in training, and the slowest pair is stretched by exactly s.

# %%
L, s, D = 2048, 4.0, 64
plain = rope_inv_freq(D)  # (D/2,)
linear = rope_inv_freq(D, scaling=RopeScaling("linear", s))  # (D/2,)
ntk = rope_inv_freq(D, scaling=RopeScaling("ntk", s))  # (D/2,)
print(f"linear: angles at position {int(s * L)} equal the trained angles at {L}: "
      f"{torch.allclose(s * L * linear, L * plain)}")
print(f"ntk   : fastest pair unchanged: {torch.isclose(ntk[0], plain[0]).item()}; "
      f"slowest pair slowed by {(plain[-1] / ntk[-1]).item():.3f} (= s)")

# %% [markdown]
# ## 5. ALiBi: a distance penalty on the scores (Press et al. 2022)
# No position vectors at all. ALiBi adds −m·(i − j) to the score of query i for key j: the
# further back the key, the larger the penalty. Each head h gets its own slope m_h, a
# geometric sequence — for H heads a power of two, it starts at 2^(−8/H) with that same ratio
# (§3). Steep heads look only at the last few tokens, flat heads see far.
#
# For a head count that is not a power of two, the paper takes the 2^k < H closest slopes,
# then fills up with every other slope of the 2^(k+1)-head sequence:

# %%
for H in (8, 12):
    print(f"{H:>2} heads:", [f"{s:.4f}" for s in alibi_slopes(H).tolist()])
print("the last 4 of the 12 are slopes 1, 3, 5, 7 of the 16-head sequence:",
      [f"{s:.4f}" for s in alibi_slopes(16)[0:8:2].tolist()])

# %%
H, T = 8, 10
bias = alibi_bias(H, T, T).masked_fill(~causal_mask(T), float("nan"))  # (H, T, T); hide the masked future
plot_bias_heads(bias[[0, 2, 5, 7]], titles=[f"head {h}, slope {alibi_slopes(H)[h]:.4f}" for h in (0, 2, 5, 7)])
plt.show()

# %% [markdown]
# The bias depends on i − j only, so ALiBi is relative too — and it is defined for any
# distance, which is what the paper's title means by "train short, test long". Explore the
# heads: with equal content scores, what does the last query attend to?

# %%
alibi_explorer()

# %% [markdown]
# **Against BLOOM.** BLOOM (`transformers`) adds +m·j (the key's position) instead of −m·(i − j).
# The two differ by m·i, the same for every key of query i, and softmax ignores a constant
# added to a whole row — so under a causal mask the attention weights are equal:

# %%
from transformers.models.bloom.modeling_bloom import build_alibi_tensor

seed_everything(4)
H, T = 12, 9
scores = torch.randn(H, T, T)  # (H, T, T) content scores q·k/√d
bloom = build_alibi_tensor(torch.ones(1, T), H, torch.float32).view(H, 1, T)  # (B*H, 1, T) -> (H, 1, T)
blocked = ~causal_mask(T)
w_ours = torch.softmax((scores + alibi_bias(H, T, T)).masked_fill(blocked, float("-inf")), -1)  # (H, T, T)
w_bloom = torch.softmax((scores + bloom).masked_fill(blocked, float("-inf")), -1)  # (H, T, T)
print(f"slopes vs BLOOM's: {below((alibi_slopes(H) - bloom[:, 0, 1]).abs().max().item(), 1e-7)}")
print(f"attention weights, 12 heads, causal: {below((w_ours - w_bloom).abs().max().item(), 1e-6)}")

# %% [markdown]
# ## 6. T5: learned biases over relative-position buckets (Raffel et al. 2020, §2.1)
# T5 learns one scalar per head for each *bucket* of relative position (key − query) and adds
# it to the scores. Small distances get a bucket each; beyond that the buckets widen
# logarithmically up to `max_distance`, and everything further shares the last bucket. The
# encoder is bidirectional (half the buckets for keys after the query); the decoder is causal
# (only the past has buckets; the future all maps to 0 and is masked anyway).

# %%
rel = torch.arange(-160, 161)
curves = {"bidirectional (encoder)": relative_position_bucket(rel, True, 32, 128),
          "causal (decoder)": relative_position_bucket(rel, False, 32, 128)}
plot_buckets(rel, curves)
plt.show()
for d in (-1, -7, -8, -20, -64, -127, -128, -1000, 3, 50):
    print(f"relative position {d:>5}: bucket {relative_position_bucket(torch.tensor(d), True, 32, 128).item():>2} "
          f"(bidirectional), {relative_position_bucket(torch.tensor(d), False, 32, 128).item():>2} (causal)")

# %%
t5_bucket_explorer()

# %% [markdown]
# **Against `transformers`' T5.** `T5RelativeBias` keeps Hugging Face's parameter name,
# `relative_attention_bias`, so the weights copy over as they are. Compare with
# `T5Attention.compute_bias` for an encoder and a decoder, including a decoder query at
# position 39 after 39 cached tokens:

# %%
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5Attention

seed_everything(5)
for is_decoder in (False, True):
    t5cfg = T5Config(d_model=16, d_kv=4, num_heads=3, relative_attention_num_buckets=32,
                     relative_attention_max_distance=128, is_decoder=is_decoder)
    hf_attn = T5Attention(t5cfg, has_relative_attention_bias=True, layer_idx=0)
    bias_mod = T5RelativeBias(3, 32, 128, bidirectional=not is_decoder)
    bias_mod.load_state_dict(hf_attn.relative_attention_bias.state_dict(prefix="relative_attention_bias."))
    with torch.no_grad():
        err = max((bias_mod(T_q, T_k, offset=past) - hf_attn.compute_bias(T_q, T_k, past_seen_tokens=past))
                  .abs().max().item() for T_q, T_k, past in [(12, 12, 0), (200, 200, 0), (1, 40, 39)])
    kind = "decoder" if is_decoder else "encoder"
    print(f"{kind}: bias (1, H, T_q, T_k) vs T5Attention.compute_bias: {below(err, 1e-6)}")

# %% [markdown]
# ## 7. The five schemes side by side — computed, not typed
# For each scheme we build a score function "query at m, key at n" with the library and
# measure: how many parameters it adds (d = 64, 8 heads, 512 trained positions), whether the
# score is unchanged when both positions shift by the same amount (relative), and whether it
# is defined at position 1000, beyond the 512 trained ones.

# %%
seed_everything(6)
d, n_heads, L = 64, 8, 512
qv, kv = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)  # one query, one key
learned = LearnedPositionalEmbedding(L, d).double()
t5 = T5RelativeBias(n_heads, 32, 128, bidirectional=False).double()
with torch.no_grad():
    t5.relative_attention_bias.weight.normal_()  # a trained-looking bias table


def pe_at(m):
    return sinusoidal_encoding(m + 1, d, dtype=torch.float64)[m]  # (d,)


schemes = {  # name: (score(m, n), parameters, used by)
    "sinusoidal": (lambda m, n: (qv + pe_at(m)) @ (kv + pe_at(n)), 0, "Transformer (2017)"),
    "learned": (lambda m, n: (qv + learned(torch.tensor(m))) @ (kv + learned(torch.tensor(n))),
                sum(p.numel() for p in learned.parameters()), "GPT-2, BERT"),
    "RoPE": (lambda m, n: (apply_rope(qv.view(1, 1, 1, d), torch.tensor([m]))  # (1, 1, 1, d)
                           * apply_rope(kv.view(1, 1, 1, d), torch.tensor([n]))).sum(), 0,  # (1, 1, 1, d)
             "LLaMA, Mistral"),
    "ALiBi": (lambda m, n: qv @ kv + alibi_bias(n_heads, m + 1, m + 1)[0, m, n], 0, "BLOOM, MPT"),
    "T5 buckets": (lambda m, n: qv @ kv + t5(m + 1, m + 1)[0, 0, m, n], sum(p.numel() for p in t5.parameters()), "T5"),
}

rows = [f"{'scheme':<11} {'params':>7} {'relative?':>10} {'position 1000?':>15}  used by"]
with torch.no_grad():
    for name, (score, n_params, used_by) in schemes.items():
        pairs = [(7, 3), (107, 103), (300, 296)]  # the same gap of 4 at three places
        values = [float(score(m, n)) for m, n in pairs]
        relative = max(values) - min(values) < 1e-9
        try:
            score(1000, 996)
            beyond = "defined"
        except ValueError:
            beyond = "error"
        rows.append(f"{name:<11} {n_params:>7,} {str(relative):>10} {beyond:>15}  {used_by}")
print("\n".join(rows))

# %% [markdown]
# Reading the table: the two absolute schemes change the score when both tokens move; the
# three relative ones do not. Only the learned table stops at its trained length. "Defined"
# is not the same as "works well" there: RoPE models need the scaling tricks of §4 to go far
# beyond their training length, while ALiBi was designed to extrapolate and T5 simply treats
# every distance ≥ `max_distance` alike. Lesson 13 measures that.
#
# ## Summary
# * Attention alone is blind to order (permutation-equivariant); positions must be injected.
# * Sinusoidal: fixed sin/cos pairs at geometric frequencies; shifts are rotations of the code.
# * Learned: a trained table (GPT-2's `wpe`), `max_positions × d` parameters, no extrapolation.
# * RoPE: rotate q and k by m·θ_i; scores depend on m − n only. Two layouts in the wild —
#   adjacent pairs (paper, Meta) and half-split (Hugging Face) — the same rotation up to a
#   permutation of features.
# * ALiBi: −m_h·(i − j) added to the scores; geometric slopes per head.
# * T5: a learned scalar per (bucket, head); log-spaced buckets up to `max_distance`.
#
# **Next:** `exercises/02_positional_encodings.ipynb`.
