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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/03_ffn_and_norms.ipynb)

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
# # 03 · Feed-forward networks, activations, normalisation and residual wiring
#
# **You will learn** what the feed-forward half of every block computes and why it is
# "position-wise"; the activations the field moved through (ReLU → GELU → SiLU) and what
# their derivatives look like; why *gated* FFNs (SwiGLU, GeGLU) replaced the plain one, with
# the parameter arithmetic behind LLaMA's odd hidden size 11008; what LayerNorm and RMSNorm
# normalise; and — measured live — why moving the norm *before* each sub-layer (pre-LN) lets
# a deep stack train without warm-up while the original post-LN does not; and what a deep
# stack does when its residual connections are taken out.
#
# **Then** do `exercises/03_ffn_and_norms.ipynb`: GELU, LayerNorm, RMSNorm, a SwiGLU FFN and
# a pre-LN block, then the backward passes of RMSNorm, LayerNorm and SwiGLU by hand, each graded
# by a check.
#
# Papers: Vaswani et al. 2017 (§3.3 FFN, §5.4 residual + norm); Hendrycks & Gimpel 2016
# (GELU); Shazeer 2020, *GLU Variants Improve Transformer*; Ba et al. 2016 (LayerNorm);
# Zhang & Sennrich 2019 (RMSNorm); Xiong et al. 2020, *On Layer Normalization in the
# Transformer Architecture*; He et al. 2016 (residual connections); Dong et al. 2021, *Attention
# is not all you need: pure attention loses rank doubly exponentially with depth*.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import get_device, seed_everything
from course_lib.device import single_thread
from course_lib.blocks import Block, TinyTransformer, per_layer_grad_norms, reverse_task, transformer_block
from course_lib.ffn import (ACTIVATIONS, FeedForward, GatedFeedForward, ffn_params, gelu, gelu_tanh, get_activation,
                            llama_hidden_size, matched_gated_d_ff, silu)
from course_lib.kernels import from_scratch
from course_lib.norms import GroupNorm, LayerNorm, RMSNorm, StdEpsLayerNorm, T5LayerNorm
from course_lib.viz import plot_per_layer

device = get_device()
seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)
# Training runs below use one CPU thread (single_thread) so that their printed losses are the
# same on every machine: the order of floating-point sums depends on the thread count.


# %% [markdown]
# ## 1. The position-wise feed-forward network (§3.3, Eq. 2)
#
# $$\mathrm{FFN}(x) = \max(0,\, xW_1 + b_1)\,W_2 + b_2, \qquad W_1 \in \mathbb{R}^{d\times 4d},\ W_2 \in \mathbb{R}^{4d\times d}$$
#
# Attention *mixes* tokens; the FFN then processes **each token on its own** with the same
# two matrices — "position-wise". It widens to d_ff = 4·d, applies a non-linearity, and
# projects back. In course_lib the two matrices are `up_proj` and `down_proj` (the names
# Hugging Face Llama uses; GPT-2 calls them `c_fc`/`c_proj`, BERT `intermediate`/`output`).

# %%
seed_everything(0)
B, T, C = 2, 5, 16
ffn = FeedForward(C, 4 * C, activation="relu").to(device)
x = torch.randn(B, T, C, device=device)  # (B, T, C)
hidden = F.relu(ffn.up_proj(x))  # (B, T, 4C): widened
y = ffn.down_proj(hidden)  # (B, T, C): back to the model width
print("x", tuple(x.shape), "-> hidden", tuple(hidden.shape), "-> y", tuple(y.shape))
print("equal to FeedForward.forward:", torch.allclose(y, ffn(x)))
token_by_token = torch.stack([ffn(x[:, t]) for t in range(T)], dim=1)  # (B, T, C): one position at a time
print("position-wise (each token alone gives the same answer):", torch.allclose(token_by_token, ffn(x), atol=1e-6))
n = sum(p.numel() for p in ffn.parameters())
print(f"parameters: {n} = 2·d·4d + 4d + d = {ffn_params(C, 4 * C)}  (≈ 8·d² = {8 * C * C} without biases)")

# %% [markdown]
# With d = 4096 (LLaMA-7B) that is 8·d² ≈ 134 M parameters per block — about two thirds of a
# block's weights live in the FFN, so its design matters.
#
# ## 2. Activations
# | name | formula | used by |
# |---|---|---|
# | ReLU | max(0, x) | the 2017 paper, T5 v1.0 |
# | GELU | x·Φ(x), Φ = standard normal CDF | BERT, GPT-2 (tanh form) |
# | GELU (tanh) | 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) | GPT-2, T5 v1.1 |
# | SiLU / Swish_β | x·σ(βx), β = 1 for SiLU | LLaMA, Mistral (inside SwiGLU) |
# | Mish | x·tanh(softplus(x)) | some vision models |
#
# First, are ours right? Each against PyTorch's own, in float64:

# %% tolerance={"abs": 1e-12}
x64 = torch.linspace(-8, 8, 2001, dtype=torch.float64)
torch_versions = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
                  "silu": F.silu, "mish": F.mish, "sigmoid": torch.sigmoid}
for name, theirs in torch_versions.items():
    err = (ACTIVATIONS[name](x64) - theirs(x64)).abs().max().item()
    print(f"{name:<10} max |ours - torch| = {err:.1e}")
gap = (gelu(x64) - gelu_tanh(x64)).abs()
print(f"GELU exact vs tanh approximation: max difference {gap.max().item():.1e} at x = {x64[gap.argmax()].item():.2f}")

# %% [markdown]
# The tanh form was a speed trick from 2016 (erf was slow on GPUs then). It differs from the
# exact GELU only in the fourth decimal — but a model trained with one should be run with the
# same one, which is why Hugging Face keeps both (`"gelu"` and `"gelu_new"`).
#
# **Derivatives matter more than the curves**: gradients flow through f'(x). ReLU's slope is
# exactly 0 for every negative input (a unit that is negative on all inputs stops learning —
# a "dead" ReLU). GELU, SiLU and Mish are smooth, have a small negative dip, and let a little
# gradient through for negative inputs. Tick activations below and compare their slopes.

# %%
from course_lib.widgets import activation_explorer

activation_explorer()

# %%
xs = torch.linspace(-5, 5, 100001, dtype=torch.float64, requires_grad=True)
at_minus_2 = (xs.detach() + 2).abs().argmin()  # index of x = -2
for name in ("relu", "gelu", "silu", "mish"):
    f = get_activation(name)
    (slope,) = torch.autograd.grad(f(xs).sum(), xs)
    i = f(xs).argmin().item()
    dip = f"dips to {f(xs)[i].item():+.3f} at x = {xs[i].item():+.3f}" if name != "relu" else "never below 0"
    print(f"{name:<5} {dip:<30} slope at x = -2: {slope[at_minus_2].item():+.3f}")

# %% [markdown]
# ## 3. Gated FFNs: the GLU family (Shazeer 2020)
# Replace the first matrix by **two**, and let one *gate* the other element-wise:
#
# $$\mathrm{FFN}_{\mathrm{GLU}}(x) = \big(\mathrm{act}(xW_{\text{gate}}) \odot xW_{\text{up}}\big)\,W_{\text{down}}$$
#
# act = σ gives GLU (what some write-ups call "SiGLU"), ReLU gives ReGLU, GELU gives GeGLU
# (T5 v1.1), SiLU gives **SwiGLU** (PaLM, LLaMA, Mistral). The product lets each hidden unit
# compute a *multiplicative* interaction of two linear features — something a plain FFN can
# only approximate with many units. A ladder with an equivalence check at each rung:

# %% tolerance={"abs": 1e-05}
seed_everything(1)
d, d_ff = 16, 40
swiglu = GatedFeedForward(d, d_ff, activation="silu").to(device)
xg = torch.randn(3, 4, d, device=device)  # (B, T, C)
gate = F.silu(swiglu.gate_proj(xg))  # (B, T, d_ff)
by_hand = swiglu.down_proj(gate * swiglu.up_proj(xg))  # (B, T, C)
print("rung 1  SwiGLU by hand == GatedFeedForward:", torch.allclose(by_hand, swiglu(xg), atol=1e-6))

from transformers import LlamaConfig, T5Config  # noqa: E402  (tiny random configs; nothing is downloaded)
from transformers.models.llama.modeling_llama import LlamaMLP  # noqa: E402
from transformers.models.t5.modeling_t5 import T5DenseGatedActDense  # noqa: E402

llama_mlp = LlamaMLP(LlamaConfig(hidden_size=d, intermediate_size=d_ff, num_attention_heads=2, hidden_act="silu")).to(device)
llama_mlp.load_state_dict(swiglu.state_dict())  # identical names: gate_proj, up_proj, down_proj
with torch.no_grad(), from_scratch():  # our activation formula, not PyTorch's kernel (see §4)
    print(f"rung 2  vs HF LlamaMLP, same weights: max abs error {(swiglu(xg) - llama_mlp(xg)).abs().max().item():.1e}")
t5_ff = T5DenseGatedActDense(T5Config(d_model=d, d_ff=d_ff, num_heads=2, d_kv=8, feed_forward_proj="gated-gelu", dropout_rate=0.0)).to(device).eval()
geglu = GatedFeedForward(d, d_ff, activation="gelu_tanh").to(device)
geglu.load_state_dict({"gate_proj.weight": t5_ff.wi_0.weight, "up_proj.weight": t5_ff.wi_1.weight,
                       "down_proj.weight": t5_ff.wo.weight})  # T5 names: wi_0 = gate, wi_1 = up, wo = down
with torch.no_grad(), from_scratch():
    print(f"rung 3  GeGLU vs HF T5 v1.1 gated-GELU FFN: max abs error {(geglu(xg) - t5_ff(xg)).abs().max().item():.1e}")

# %% [markdown]
# **The parameter arithmetic.** A gated FFN has *three* d×d_ff matrices instead of two. To
# compare at equal cost, Shazeer shrinks d_ff by 2/3 — and LLaMA then rounds up to a multiple
# of 256 for fast matrix kernels:

# %%
for dm in (512, 4096):
    plain = ffn_params(dm, 4 * dm, bias=False)
    same_width = ffn_params(dm, 4 * dm, gated=True, bias=False)
    matched = ffn_params(dm, matched_gated_d_ff(4 * dm), gated=True, bias=False)
    print(f"d={dm}: plain FFN d_ff={4 * dm}: {plain / 1e6:.2f} M | gated, same d_ff: {same_width / 1e6:.2f} M "
          f"(×{same_width / plain:.2f}) | gated, d_ff={matched_gated_d_ff(4 * dm)}: {matched / 1e6:.2f} M")
for name, dm, kw in [("LLaMA-7B", 4096, {}), ("LLaMA-13B", 5120, {}), ("LLaMA-65B", 8192, {}),
                     ("LLaMA-2-70B", 8192, dict(multiple_of=4096, ffn_dim_multiplier=1.3))]:
    print(f"{name:<12} d_model={dm}: 2/3·4d = {int(8 * dm / 3)} -> intermediate_size {llama_hidden_size(dm, **kw)}")

# %% [markdown]
# **Does gating help? A small measurement.** Three FFNs with exactly the same number of
# parameters learn a target built from products of input pairs, y = Σᵢ x₂ᵢ·x₂ᵢ₊₁. This task
# is chosen to show the mechanism — a product is what a gate computes directly — so read it as
# an illustration; Shazeer's language-model results (Table 1) are the real evidence.

# %%
def fit(model, steps=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = lambda t: (t[:, 0::2] * t[:, 1::2]).sum(-1)  # noqa: E731  sum of pairwise products
    x_train, x_test = torch.randn(2048, 8, generator=g), torch.randn(1024, 8, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        xb = x_train[torch.randint(0, 2048, (128,), generator=g)]  # (128, 8)
        loss = (model(xb).sum(-1) - target(xb)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (model(x_test).sum(-1) - target(x_test)).pow(2).mean().item()


gating_results = {}
with single_thread():
    for name, make in [("ReLU FFN, d_ff=48", lambda: FeedForward(8, 48, "relu", bias=False)),
                       ("GELU FFN, d_ff=48", lambda: FeedForward(8, 48, "gelu", bias=False)),
                       ("SwiGLU, d_ff=32", lambda: GatedFeedForward(8, 32, "silu"))]:
        torch.manual_seed(0)
        m = make()
        gating_results[name] = fit(m)
        print(f"{name:<18} {sum(p.numel() for p in m.parameters())} parameters, test MSE {gating_results[name]:.4f}")
best_plain = min(v for k, v in gating_results.items() if "FFN" in k)
print(f"SwiGLU's error is {best_plain / gating_results['SwiGLU, d_ff=32']:.0f}× smaller than the best plain FFN's.")

# %% [markdown]
# ## 4. Normalisation: what each norm normalises
# **LayerNorm** (Ba et al. 2016) standardises each token over its C channels, then applies a
# learned gain γ and shift β:
#
# $$\mathrm{LN}(x) = \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}}\odot\gamma+\beta,\qquad \mu=\tfrac1C\textstyle\sum_i x_i,\ \ \sigma^2=\tfrac1C\sum_i (x_i-\mu)^2$$
#
# **RMSNorm** (Zhang & Sennrich 2019) drops the centring and β: it only rescales each token to
# root-mean-square 1,
#
# $$\mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac1C\sum_i x_i^2+\epsilon}}\odot\gamma .$$
#
# Cheaper (one statistic instead of two) and, the paper reports, as good — LLaMA, Mistral and
# T5 use it. After LayerNorm every token has mean 0 and variance 1; after RMSNorm only
# mean² + variance = 1. Slide the offset and spread and watch:

# %%
from course_lib.widgets import norm_explorer

norm_explorer()

# %%
seed_everything(2)
tokens = torch.randn(4, 16, dtype=torch.float64) * torch.tensor([[0.5], [1.0], [2.0], [4.0]], dtype=torch.float64) + 2.0
with torch.no_grad():
    for name, norm in [("input", nn.Identity()), ("LayerNorm", LayerNorm(16).double()), ("RMSNorm", RMSNorm(16).double())]:
        out = norm(tokens)
        mean, var = out.mean(-1), out.var(-1, unbiased=False)
        print(f"{name:<9} mean per token {[round(v, 3) + 0.0 for v in mean.tolist()]}  var {[round(v, 3) for v in var.tolist()]}"
              f"  mean²+var {[round(v, 3) for v in (mean ** 2 + var).tolist()]}")  # + 0.0: print -0.0 as 0.0

# %% [markdown]
# **A classic slip, measured.** The Annotated Transformer wrote LayerNorm as
# γ·(x − μ)/(std + ε) + β with `x.std()` — the *unbiased* std (divide by C − 1) and ε
# *outside* the root. For wide, well-scaled activations it is nearly the same; for narrow
# layers or tiny activations it is not:

# %%
seed_everything(3)
for C_, scale in [(512, 1.0), (8, 1.0), (512, 1e-3)]:
    xs_ = torch.randn(64, C_) * scale  # (N, C)
    with torch.no_grad():
        err = (StdEpsLayerNorm(C_)(xs_) - nn.LayerNorm(C_)(xs_)).abs().max().item()
    print(f"C={C_:<4} activations of size {scale:g}: max |std+eps variant - nn.LayerNorm| = {err:.2g}")

# %% [markdown]
# With C = 8 the unbiased std is √(8/7) ≈ 1.07 times the biased one, so every output is about
# 7 % too small. With activations of size 10⁻³ the two disagree completely: nn.LayerNorm's
# ε = 10⁻⁵ *under* the root (√(10⁻⁶ + 10⁻⁵) ≈ 3.3·10⁻³) outweighs the variance itself, while
# the variant's ε = 10⁻⁶ *outside* the root hardly matters. Same name, different function.
#
# **Equal to the references.** Our norms against `nn.LayerNorm`, `nn.RMSNorm`, `nn.GroupNorm`,
# and Hugging Face's `LlamaRMSNorm` / `T5LayerNorm` — in bfloat16 too, where HF normalises in
# float32 and casts back (so must we, bit for bit). One thing to know first: when a model
# *trains*, course_lib's norms call PyTorch's fused kernels (`F.layer_norm`, `F.rms_norm`: one
# pass over the tensor instead of one per operation; lesson 15 measures what that buys).
# Comparing those with `nn.LayerNorm` would compare PyTorch with itself, so the comparisons
# run `with from_scratch():` — on the formulas written above:

# %% tolerance={"abs": 1e-05}
from transformers.models.llama.modeling_llama import LlamaRMSNorm  # noqa: E402
from transformers.models.t5.modeling_t5 import T5LayerNorm as HFT5LayerNorm  # noqa: E402


def copy_random_weights(ours, theirs, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


seed_everything(4)
xn = torch.randn(2, 5, 64) * 3 + 1  # (B, T, C)
pairs = [("LayerNorm   vs nn.LayerNorm", LayerNorm(64), nn.LayerNorm(64), torch.float32),
         ("RMSNorm     vs nn.RMSNorm", RMSNorm(64), nn.RMSNorm(64, eps=1e-6), torch.float32),
         ("RMSNorm     vs HF LlamaRMSNorm", RMSNorm(64), LlamaRMSNorm(64), torch.float32),
         ("RMSNorm     vs HF LlamaRMSNorm", RMSNorm(64), LlamaRMSNorm(64), torch.bfloat16),
         ("T5LayerNorm vs HF T5LayerNorm", T5LayerNorm(64), HFT5LayerNorm(64), torch.bfloat16)]
with torch.no_grad(), from_scratch():
    for label, ours, theirs, dtype in pairs:
        ours, theirs = copy_random_weights(ours, theirs)
        a, b = ours.to(dtype)(xn.to(dtype)), theirs.to(dtype)(xn.to(dtype))
        print(f"{label:<32} {str(dtype):<15} max abs error {(a.float() - b.float()).abs().max().item():.1e}")
    gn, tgn = copy_random_weights(GroupNorm(4, 16), nn.GroupNorm(4, 16))
    img = torch.randn(2, 16, 6, 6)  # (B, C, H, W): GroupNorm's layout
    print(f"{'GroupNorm   vs nn.GroupNorm':<32} {'torch.float32':<15} max abs error {(gn(img) - tgn(img)).abs().max().item():.1e}")

# %% [markdown]
# Why the float32 upcast? In float16 the squares of activations around 300 already overflow
# (300² = 90 000 > 65 504, float16's largest number):

# %%
x16 = (torch.randn(1, 1024) * 300).half()  # (1, C) float16
naive = x16 * torch.rsqrt(x16.pow(2).mean(-1, keepdim=True) + 1e-6)
print("float16 all the way :", naive[0, :4], "| mean of x² =", x16.pow(2).mean().item(),
      "-> every output is 0:", bool((naive == 0).all()))
print("upcast to float32   :", RMSNorm(1024).half()(x16)[0, :4].detach())

# %% [markdown]
# **GroupNorm**, for completeness: it normalises groups of channels *together with all
# positions* of one sample, input (B, C, …). It belongs to convolutional nets trained with
# small batches (diffusion U-Nets) and appears per head in some recurrent/retention layers
# (RWKV, RetNet); transformer blocks use LayerNorm or RMSNorm.
#
# ## 5. Where the norm goes: three wirings of one block
# Every sub-layer (attention, FFN) sits on a residual connection. The norm can go
#
# * **post-LN** (2017 paper, §5.4; BERT): x ← Norm(x + Sublayer(x)) — the residual stream is
#   re-normalised after every sub-layer.
# * **pre-LN** (GPT-2 onward, LLaMA): x ← x + Sublayer(Norm(x)) — the stream itself is never
#   normalised; a final norm sits before the output head.
# * **parallel** (GPT-J, PaLM): x ← x + Attn(Norm(x)) + FFN(Norm(x)) — both sub-layers read
#   the same input, so they can run at the same time.
#
# `course_lib.blocks.Block` is one implementation with `norm_placement` as a setting; every
# model family later (GPT, BERT, T5, LLaMA) builds on it. Checked against PyTorch's own
# `nn.TransformerEncoderLayer`, whose `norm_first=False/True` are post-/pre-LN:

# %% tolerance={"abs": 1e-05}
def copy_into_torch_layer(block, layer):
    with torch.no_grad():
        a, t = block.attn, layer.self_attn
        t.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        t.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        t.out_proj.load_state_dict({"weight": a.o_proj.weight, "bias": a.o_proj.bias})
        layer.linear1.load_state_dict(block.ffn.up_proj.state_dict())
        layer.linear2.load_state_dict(block.ffn.down_proj.state_dict())
        layer.norm1.load_state_dict(block.attn_norm.state_dict())
        layer.norm2.load_state_dict(block.ffn_norm.state_dict())


seed_everything(5)
xb = torch.randn(2, 7, 32)  # (B, T, C)
for placement, norm_first in (("post", False), ("pre", True)):
    block = transformer_block(32, 4, 128, norm_placement=placement).eval()
    layer = nn.TransformerEncoderLayer(32, 4, 128, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=norm_first).eval()
    copy_into_torch_layer(block, layer)
    with torch.no_grad():
        err = (block(xb) - layer(xb)).abs().max().item()
    print(f"Block(norm_placement={placement!r}) vs nn.TransformerEncoderLayer(norm_first={norm_first}): "
          f"max abs error {err:.1e}")

par = transformer_block(32, 4, 128, norm_placement="parallel").eval()
with torch.no_grad():
    h = par.attn_norm(xb)  # (B, T, C): one norm feeds both branches (GPT-J)
    print("parallel block == x + attn(norm(x)) + ffn(norm(x)):",
          torch.allclose(par(xb), xb + par.attn(h) + par.ffn(h), atol=1e-6))

# %% [markdown]
# ## 6. Pre-LN vs post-LN, measured
# Xiong et al. (2020) explain why post-LN transformers need a learning-rate **warm-up**: at
# initialisation the gradients of the parameters near the output are large. Their Theorem 1
# states it for the last layer's FFN output matrix (their W^{2,L}). In a post-LN stack of L
# layers its gradient norm has a bound that does not depend on L; in a pre-LN stack the bound
# shrinks like 1/√L.
#
# We measure at initialisation, on one batch of a synthetic task (reverse a sequence of 12
# random tokens from a vocabulary of 12), with one backward pass. First the gradient norm of
# every layer's FFN output matrix (`down_proj`) in a 24-layer stack; then, as Theorem 1 does,
# the top layer's alone while the depth changes.

# %%
V, T_TASK, D_MODEL, N_HEADS = 12, 12, 32, 2
grad_curves = {}
with single_thread():
    for placement in ("post", "pre"):
        torch.manual_seed(0)  # the same initial weights for both placements
        model = TinyTransformer(V, T_TASK, D_MODEL, n_layers=24, n_heads=N_HEADS, norm_placement=placement).to(device)
        xt, yt = reverse_task(32, T_TASK, V, torch.Generator().manual_seed(1))
        logits = model(xt.to(device))  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), yt.to(device).flatten()).backward()  # (B*T, V) vs (B*T,)
        grad_curves[f"{placement}-LN"] = per_layer_grad_norms(model)
for name, g in grad_curves.items():
    print(f"{name:<7} layer 1: {g[0]:.3f}   layer 12: {g[11]:.3f}   layer 24: {g[-1]:.3f}   "
          f"max/min over layers: {max(g) / min(g):.1f}")
post_over_pre = sum(grad_curves["post-LN"]) / sum(grad_curves["pre-LN"])
top = grad_curves["post-LN"][-1] / grad_curves["pre-LN"][-1]
print(f"on average a post-LN layer gets {post_over_pre:.1f}× the gradient of a pre-LN layer "
      f"({top:.1f}× in the top layer)")
plot_per_layer(grad_curves, "‖∂loss/∂W_down‖", "gradient norm per layer at initialisation (24 layers)")
plt.show()

# %% [markdown]
# In this small stack post-LN's gradients are larger than pre-LN's in every layer, by the
# factors printed. But the profile does not show what the paper's abstract describes, large
# gradients for "the parameters near the output layer": post-LN's gradients are largest in
# the bottom layers and smallest in the top ones. Pre-LN's also fall from bottom to top, less
# steeply. This plot does not confirm the paper's picture. Theorem 1 itself is about the top layer as the stack
# deepens, and the next cell measures that. It takes the mean over 5 seeds at L = 6, 12, 24
# and 48 (seed 0 at L = 24 is the model above). For pre-LN it also prints the size (RMS) of the
# residual stream entering block 1 and reaching the final norm.

# %%
DEPTHS, SEEDS = (6, 12, 24, 48), range(5)
top_grad = {"post-LN": [], "pre-LN": []}  # mean over seeds of the top layer's ‖∂loss/∂W_down‖, per depth
top_rms, in_rms = [], []  # pre-LN: RMS of the residual stream entering block 1 and reaching the final norm
with single_thread():
    for L in DEPTHS:
        for placement in ("post", "pre"):
            grads, rms, rms_in = [], [], []
            for seed in SEEDS:
                torch.manual_seed(seed)  # the same initial weights for both placements
                model = TinyTransformer(V, T_TASK, D_MODEL, n_layers=L, n_heads=N_HEADS,
                                        norm_placement=placement).to(device)
                g = torch.Generator().manual_seed(seed + 1)  # seed 0: the batch above
                xt, yt = reverse_task(32, T_TASK, V, g)
                seen = {}
                hooks = [model.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(x_in=args[0].detach())),
                         model.final_norm.register_forward_pre_hook(lambda m, args: seen.update(x_top=args[0].detach()))]
                logits = model(xt.to(device))  # (B, T, V)
                for hook in hooks:
                    hook.remove()
                F.cross_entropy(logits.flatten(0, 1), yt.to(device).flatten()).backward()  # (B*T, V) vs (B*T,)
                grads.append(per_layer_grad_norms(model)[-1])  # the top layer only
                rms.append(seen["x_top"].pow(2).mean().sqrt().item())  # (B, T, C) -> one number
                rms_in.append(seen["x_in"].pow(2).mean().sqrt().item())  # the embeddings
            top_grad[f"{placement}-LN"].append(sum(grads) / len(grads))
            if placement == "pre":
                top_rms.append(sum(rms) / len(rms))
                in_rms.append(sum(rms_in) / len(rms_in))
for i, L in enumerate(DEPTHS):
    post, pre = top_grad["post-LN"][i], top_grad["pre-LN"][i]
    print(f"L={L:>2}: top layer's gradient post-LN {post:.3f}, pre-LN {pre:.3f} (post/pre {post / pre:.1f}); "
          f"pre-LN residual stream RMS {in_rms[i]:.2f} into block 1, {top_rms[i]:.2f} at the final norm")
pre_change = top_grad["pre-LN"][-1] / top_grad["pre-LN"][0]
print(f"from L={DEPTHS[0]} to L={DEPTHS[-1]}: pre-LN's top gradient ×{pre_change:.2f}, "
      f"its stream's RMS at the final norm ×{top_rms[-1] / top_rms[0]:.2f}; "
      f"1/√L would give ×{(DEPTHS[0] / DEPTHS[-1]) ** 0.5:.2f} and √L ×{(DEPTHS[-1] / DEPTHS[0]) ** 0.5:.2f}")

fig, ax = plt.subplots(figsize=(5.5, 3.6))
for name, ys in top_grad.items():
    ax.plot(DEPTHS, ys, "o-", label=name)
ax.plot(DEPTHS, [top_grad["pre-LN"][0] * (DEPTHS[0] / L) ** 0.5 for L in DEPTHS], ":", color="grey",
        label="∝ 1/√L, from pre-LN at L = 6")
ax.set_xscale("log", base=2)
ax.set_xticks(DEPTHS, [str(L) for L in DEPTHS])
ax.set_xlabel("number of layers L")
ax.set_ylabel("‖∂loss/∂W_down‖, top layer")
ax.set_title(f"top layer's gradient at initialisation (mean of {len(SEEDS)} seeds)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Against Theorem 1:
# * Post-LN's top-layer gradient does not shrink as the stack deepens. Here it grows, from
#   0.160 at 6 layers to 0.334 at 48. The theorem gives only an upper bound that does not
#   depend on L, so growth does not contradict it.
# * Pre-LN's is below post-LN's at every depth. It stays level from 6 to 12 layers and then
#   falls, but far more slowly than 1/√L: ×0.81 from 6 to 48 layers, where 1/√L gives ×0.35
#   (the dotted line).
# * So the gap post/pre widens with depth, from 1.6 to 4.2: the direction the theorem
#   predicts.
#
# The RMS columns explain the slow shrinking. In Xiong et al.'s analysis each pre-LN
# sub-layer reads a normalised input and adds an output of about that size, so the residual
# stream grows like √L, and the final norm divides by it. Here the stream enters block 1 at
# the embeddings' RMS of 1.43, and each block adds little at initialisation. From 6 to 48
# layers its RMS at the final norm grows ×1.58, not ×2.83. This small model agrees with the
# paper in direction (post-LN's top gradient grows with depth, pre-LN's falls overall, and the
# gap widens), not in the rate.
#
# Now train. Same task, 12 layers, Adam with a fairly high learning rate (6·10⁻³) and **no
# warm-up**, 120 steps: pre-LN, post-LN, and post-LN again with a 50-step linear warm-up. (A
# warm-up starts the learning rate near 0 and raises it linearly to its full value over the
# first steps, so the first, largest updates are small; lesson 10 uses one to train a GPT.)
# (Loss log 12 ≈ 2.48 is chance: guessing uniformly among 12 tokens.)

# %%
def train_reverse(placement, lr=6e-3, warmup=0, steps=120, n_layers=12, seed=0):
    torch.manual_seed(seed)
    model = TinyTransformer(V, T_TASK, D_MODEL, n_layers, N_HEADS, norm_placement=placement).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    g, losses = torch.Generator().manual_seed(seed + 1), []
    for _ in range(steps):
        xt, yt = reverse_task(32, T_TASK, V, g)
        logits = model(xt.to(device))  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), yt.to(device).flatten())  # (B*T, V) vs (B*T,)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


runs = {}
with single_thread():
    for label, kw in [("pre-LN, no warm-up", dict(placement="pre")),
                      ("post-LN, no warm-up", dict(placement="post")),
                      ("post-LN, 50-step warm-up", dict(placement="post", warmup=50))]:
        runs[label] = train_reverse(**kw)
for label, losses in runs.items():
    print(f"{label:<25} loss at step 40: {sum(losses[30:40]) / 10:.3f}   at step 120: {sum(losses[-10:]) / 10:.3f}")

fig, ax = plt.subplots(figsize=(7, 3.6))
for label, losses in runs.items():
    ax.plot(losses, label=label)
ax.axhline(torch.log(torch.tensor(float(V))).item(), color="grey", ls="--", lw=0.8, label="chance (log 12)")
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.set_yscale("log")
ax.legend(fontsize=8)
ax.set_title("reversing 12 tokens, 12 layers, Adam lr 6e-3")
plt.show()

# %%
final = {k: sum(v[-10:]) / 10 for k, v in runs.items()}
print(f"Without warm-up, pre-LN ends at loss {final['pre-LN, no warm-up']:.3f} while post-LN ends at "
      f"{final['post-LN, no warm-up']:.3f} (chance is {torch.log(torch.tensor(12.0)).item():.3f}); "
      f"with a warm-up post-LN reaches {final['post-LN, 50-step warm-up']:.3f}.")

# %% [markdown]
# Read it together with the gradient plot: post-LN's larger gradients at initialisation,
# multiplied by a full learning rate from step 1, push it into a state it does not leave (the
# loss sits at chance); a warm-up keeps the first updates small until the weights are
# better conditioned. Pre-LN's residual stream is an identity path from the output to every
# layer, so it trains at the full rate from the start — the reason GPT-2 and every LLaMA
# uses it. (Post-LN, when it *does* train, often ends slightly better; several papers —
# e.g. DeepNet — rescale the residual to keep that while staying stable.)
#
# ## 7. Take the residuals out
# Every wiring above keeps the **residual connection** x + Sublayer(…) (He et al. 2016 for
# convolutional nets; §5.4 of the 2017 paper). What does it buy? Below, the same pre-LN stack
# on the reversal task with two switches: `residual=False` replaces x ← x + f(Norm(x)) by
# x ← f(Norm(x)), and `norm=False` drops every norm. First at initialisation, as the stack
# deepens: the gradient norm reaching the **first** layer's FFN output matrix, and how alike
# the T = 12 positions' vectors are when they reach the top (the mean cosine similarity over
# all pairs of different positions; 1 means every position carries the same vector).

# %% tolerance={"rel": 0.02, "abs": 0.002}
class SwitchableStack(nn.Module):
    """TinyTransformer's pre-LN stack with switches: residual=False computes x <- f(norm(x)) instead of
    x <- x + f(norm(x)) in every sub-layer; norm=False leaves every norm out."""

    def __init__(self, n_layers, residual=True, norm=True):
        super().__init__()
        self.residual, self.norm = residual, norm
        self.tok_emb, self.pos_emb = nn.Embedding(V, D_MODEL), nn.Embedding(T_TASK, D_MODEL)
        self.blocks = nn.ModuleList(transformer_block(D_MODEL, N_HEADS, 4 * D_MODEL) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(D_MODEL) if norm else nn.Identity()
        self.head = nn.Linear(D_MODEL, V)

    def forward(self, idx):  # idx (B, T)
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.size(1), device=idx.device))  # (B, T, C)
        for block in self.blocks:
            for norm, f in ((block.attn_norm, block.attn), (block.ffn_norm, block.ffn)):
                h = f(norm(x) if self.norm else x)  # (B, T, C)
                x = x + h if self.residual else h
        self.top = x.detach()  # (B, T, C): kept to measure how alike the positions are
        return self.head(self.final_norm(x))  # (B, T, V)


def position_similarity(h):
    """Mean cosine similarity between the vectors of different positions; h (B, T, C)."""
    z = F.normalize(h, dim=-1)  # (B, T, C)
    sim = z @ z.transpose(1, 2)  # (B, T, T)
    off_diagonal = ~torch.eye(h.size(1), dtype=torch.bool, device=h.device)  # (T, T)
    return sim[:, off_diagonal].mean().item()


VARIANTS = {"residual + norm (pre-LN)": dict(), "no residual": dict(residual=False),
            "no residual, no norm": dict(residual=False, norm=False)}
xt, yt = reverse_task(32, T_TASK, V, torch.Generator().manual_seed(1))
print(f"{'layers':>6}  " + "  ".join(f"{name:>30}" for name in VARIANTS))
print(f"{'':>6}  " + "  ".join(f"{'grad layer 1':>14} {'similarity':>15}" for _ in VARIANTS))
with single_thread():
    for L in (1, 2, 4, 8, 16):
        row = []
        for kw in VARIANTS.values():
            torch.manual_seed(0)
            model = SwitchableStack(L, **kw).to(device)
            logits = model(xt.to(device))  # (B, T, V)
            F.cross_entropy(logits.flatten(0, 1), yt.to(device).flatten()).backward()  # (B*T, V) vs (B*T,)
            grad_1 = model.blocks[0].ffn.down_proj.weight.grad.norm().item()
            row.append(f"{grad_1:>14.1e} {position_similarity(model.top):>15.3f}")
        print(f"{L:>6}  " + "  ".join(row))

# %% [markdown]
# Two different failures. Without residuals and norms the gradient reaching layer 1 shrinks by
# orders of magnitude with every few layers (each sub-layer with PyTorch's default initialisation makes
# its output smaller than its input, and the backward pass multiplies those factors): the first
# layers get almost no signal. With the norms kept, the gradient still arrives, but the
# positions become the same vector: at initialisation each attention layer spreads its weight
# nearly evenly and *blends* all positions, and without the residual nothing carries a token's
# own vector past the blend. The column "similarity" reaches 1.000: the top of the stack no
# longer knows which position it is at, so it cannot say which token goes there. (Dong et al.
# 2021 prove that attention without residuals loses rank doubly exponentially with depth.) With
# the residual, every layer only *adds* to the stream, so the token's own vector and the
# gradient's direct path to layer 1 survive any depth.
#
# Now train: 120 Adam steps at lr 3·10⁻³, pre-LN with 8 layers against the stack without
# residuals at 2, 4 and 8 layers and without residuals or norms at 8 layers.

# %% tolerance={"abs": 0.15, "rel": 0.1}
def train_switchable(n_layers, steps=120, lr=3e-3, **kw):
    torch.manual_seed(0)
    model = SwitchableStack(n_layers, **kw).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g, losses, grad_1 = torch.Generator().manual_seed(1), [], []
    for _ in range(steps):
        xb, yb = reverse_task(32, T_TASK, V, g)
        logits = model(xb.to(device))  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), yb.to(device).flatten())  # (B*T, V) vs (B*T,)
        opt.zero_grad()
        loss.backward()
        grad_1.append(model.blocks[0].ffn.down_proj.weight.grad.norm().item())
        opt.step()
        losses.append(loss.item())
    return losses, grad_1


residual_runs = {}
with single_thread():
    for label, L, kw in [("pre-LN, 8 layers", 8, {}), ("no residual, 2 layers", 2, dict(residual=False)),
                         ("no residual, 4 layers", 4, dict(residual=False)),
                         ("no residual, 8 layers", 8, dict(residual=False)),
                         ("no residual or norm, 8 layers", 8, dict(residual=False, norm=False))]:
        residual_runs[label] = train_switchable(L, **kw)
for label, (losses, grad_1) in residual_runs.items():
    print(f"{label:<30} loss over the last 10 steps {sum(losses[-10:]) / 10:.2f}   "
          f"layer-1 gradient at step 1: {grad_1[0]:.1e}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for label, (losses, grad_1) in residual_runs.items():
    axes[0].plot(losses, label=label)
    axes[1].semilogy(grad_1, label=label)
axes[0].axhline(torch.log(torch.tensor(float(V))).item(), color="grey", ls="--", lw=0.8, label="chance (log 12)")
axes[0].set(xlabel="step", ylabel="training loss", title="reversing 12 tokens, Adam lr 3e-3")
axes[1].set(xlabel="step", ylabel="‖∂loss/∂W_down‖, layer 1", title="gradient reaching the first layer")
axes[0].legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# Depth without residuals fails. The pre-LN stack with 8 layers solves the task; the same 8
# layers without residuals stay at chance, as does the stack without residuals or norms, whose
# first layer receives a gradient of about 10⁻¹⁰ (pre-LN's: about 0.1). Without residuals, 2
# layers still learn part of the task and 4 layers barely move away from chance, so it is depth
# that breaks it. This is why
# every block in this course, and lesson 10's GPT, sits on a residual stream.
#
# ## Summary
# * The FFN is a per-token MLP, d → 4d → d (Eq. 2); about two thirds of a block's weights.
# * GELU/SiLU are smooth ReLUs whose slope does not vanish for negative inputs.
# * Gated FFNs multiply two projections; at d_ff = 2/3·4d they cost what the plain FFN costs
#   (LLaMA-7B: 11008).
# * LayerNorm centres and scales each token (biased variance, ε inside the root); RMSNorm
#   only scales. Half-precision inputs are normalised in float32.
# * Post-LN, pre-LN and parallel blocks are one `Block` with a setting; pre-LN trains deep
#   stacks without warm-up — measured above.
# * Without residual connections a deep stack fails: the positions blend into one vector
#   (with norms) or the gradient vanishes (without), and training stays at chance.
#
# **Next:** `exercises/03_ffn_and_norms.ipynb`.
