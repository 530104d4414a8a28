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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/06_model_families.ipynb)

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
# # 06 · Model families: GPT, BERT, T5, LLaMA / Mistral
#
# **You will learn** how four famous architectures are the *same* transformer block with
# different settings: where the norm goes, which tokens may attend to which, how positions
# enter, which feed-forward, whether the output head shares the embedding matrix. Every
# model here is built from the parts of lessons 01-05 (`course_lib.blocks.Block`), and each
# one equals its Hugging Face twin to within 10⁻⁵ once the weights are copied.
#
# | family | paper | one-line summary |
# |---|---|---|
# | GPT-2 | Radford et al. 2019 | decoder-only, causal, learned positions, pre-LN, tied head |
# | BERT | Devlin et al. 2019 | encoder-only, bidirectional, post-LN, masked-LM objective |
# | T5 | Raffel et al. 2020 | encoder-decoder, relative position bias, RMS norm, no biases |
# | LLaMA / Mistral | Touvron et al. 2023 / Jiang et al. 2023 | GPT + RMSNorm + SwiGLU + RoPE + GQA (+ sliding window) |
#
# **Then** do `exercises/06_model_families.ipynb`: a decoder block with cross-attention,
# BERT's masking rule, T5's `shift_right`, a GPT forward pass, and T5's span-corruption objective
# (noise mask, sentinels, a collated batch).

# %%
import matplotlib.pyplot as plt
import torch

from course_lib import get_device, seed_everything
from course_lib.attention import causal_mask, padding_mask, sliding_window_mask
from course_lib.interop import from_hf
from course_lib.models.bert import Bert, BertConfig, mlm_mask
from course_lib.models.compare import describe, difference_table
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.models.llama import Llama, LlamaConfig, mistral_config
from course_lib.models.sizes import PUBLISHED, flops_per_token, param_count
from course_lib.models.t5 import T5, T5Config, shift_right, t5_v1_1_config
from course_lib.viz import plot_architecture, plot_mask

device = get_device()
_ = seed_everything(0)

# %% [markdown]
# ## 1. One block, many families
# Lesson 03 built one `Block` whose norm placement is a setting. A model family is a choice of
# settings plus an embedding at the bottom and a head at the top. Here are tiny versions of
# each, all 48 channels wide, so we can run them in a second. Each config is a dataclass that
# checks itself: a bad value says what was expected.

# %%
V = 100
tiny = {
    "GPT-2": GPTConfig(vocab_size=V, max_positions=32, d_model=48, n_layers=2, n_heads=4),
    "BERT": BertConfig(vocab_size=V, d_model=48, n_layers=2, n_heads=4, d_ff=192, max_positions=32, dropout=0.0),
    "T5 v1.1": t5_v1_1_config(vocab_size=V, d_model=48, head_dim=12, d_ff=96, n_layers=2, n_heads=4, dropout=0.0),
    "Mistral": mistral_config(vocab_size=V, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128,
                              sliding_window=4),
}
models = {"GPT-2": GPT(tiny["GPT-2"]), "BERT": Bert(tiny["BERT"]), "T5 v1.1": T5(tiny["T5 v1.1"]),
          "Mistral": Llama(tiny["Mistral"])}
ids = torch.randint(0, V, (2, 10), device=device)  # (B, T)
for name, model in models.items():
    model.to(device).eval()
    with torch.no_grad():
        out = model(ids, decoder_input_ids=ids[:, :6]) if name.startswith("T5") else model(ids)
    main = out.logits if out.logits is not None else out.last_hidden_state
    kind = "logits" if out.logits is not None else "last_hidden_state"
    print(f"{name:8s} {type(model).__name__:6s} {kind:17s} {tuple(main.shape)}  "
          f"blocks: {type(model.blocks[0] if hasattr(model, 'blocks') else model.encoder.blocks[0]).__name__}")

try:
    GPTConfig(d_model=100, n_heads=12)
except ValueError as err:
    print("\nConfigError:", err)

# %% [markdown]
# Every family returns an object with Hugging Face's field names: `logits` for language-model
# heads, `last_hidden_state` (and BERT's `pooler_output`) for bare encoders. T5 produces one
# row of logits per **decoder** position (6 here), whatever the encoder length (10).
#
# ## 2. The differences, generated from the configs
# The table below is computed from the published configurations (typed in from each model's
# `config.json`; no weights needed). Read it row by row: each row is one design decision.

# %%
published = {name: cfg for name, (cfg, _) in PUBLISHED.items()}
print(difference_table(published))

# %% [markdown]
# What changed over time, and why:
# * **Norm placement.** BERT keeps the 2017 post-LN block, `x = LN(x + F(x))`; GPT-2 (§2.3)
#   moved the norm to each sub-layer's input and added a final norm, so the residual stream is a
#   clean sum and deep stacks train without warm-up tricks (Xiong et al. 2020). Everyone after
#   followed.
# * **Positions.** Learned absolute tables (GPT-2, BERT) cannot go past their last row. T5 adds a
#   learned bias per *relative* distance bucket to the scores; LLaMA rotates q and k (RoPE), so
#   attention depends on the offset only (lesson 02).
# * **Norm and FFN.** RMSNorm drops the mean and the bias (cheaper, works as well); SwiGLU and
#   gated-GELU add a gate branch (Shazeer 2020) at the same parameter budget (lesson 03).
# * **Heads.** GQA lets 4 query heads share one key/value head in Mistral: a 4× smaller KV cache
#   (lesson 04). Mistral also limits each token to the last 4096 (lesson 05).
# * **The head.** GPT-2, BERT and T5 v1.0 reuse the input embedding as output matrix (weight tying,
#   Press & Wolf 2017); T5 v1.0 scales the decoder output by d_model^-0.5 first, because its
#   embeddings are initialised with standard deviation 1. LLaMA and T5 v1.1 keep them separate.
#
# The same choices, drawn from the configs (`describe(config)` → `plot_architecture`):

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 5.4), gridspec_kw=dict(width_ratios=[1, 1, 1.9, 1]))
for ax, name in zip(axes, ["GPT-2 small", "BERT-base", "T5-small (v1.0)", "Mistral-7B-v0.1"]):
    plot_architecture(describe(published[name]), ax=ax)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Who may attend to whom: the masks
# The block is the same; the **mask** makes a decoder a decoder. With T = 8 tokens, the last 3
# of the second sequence being padding:
# * GPT / LLaMA: causal, position t sees 0..t (it must predict t+1 without seeing it);
# * BERT / T5 encoder: everyone sees everyone except padding (the MLM objective allows it:
#   the word to predict is hidden by `[MASK]`, not by the mask);
# * T5 decoder: causal self-attention, plus **cross-attention** from the T_dec decoder positions
#   to all non-padding encoder positions: a (T_dec × T_enc) matrix, not square;
# * Mistral: causal *and* at most `window` tokens back (here 3).

# %%
T, T_dec = 8, 5
attention_mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])  # (B, T): 1 = token, 0 = padding
pad = padding_mask(attention_mask)[1, 0]  # (1, T) for the second sequence
panels = {
    "GPT / LLaMA: causal": causal_mask(T),
    "BERT / T5 encoder:\nbidirectional + padding": pad.expand(T, T),
    "T5 decoder self:\ncausal": causal_mask(T_dec),
    "T5 cross-attention\n(T_dec × T_enc) + padding": pad.expand(T_dec, T),
    "Mistral: sliding\nwindow 3": sliding_window_mask(T, 3),
}
fig, axes = plt.subplots(1, 5, figsize=(16, 3.6))
for ax, (title, m) in zip(axes, panels.items()):
    plot_mask(m, title, ax=ax)
fig.tight_layout()
plt.show()
for title, m in panels.items():
    print(f"{title.replace(chr(10), ' '):45s} shape {tuple(m.shape)}, {int(m.sum())} of {m.numel()} pairs allowed")

# %% [markdown]
# A check that the masks are what the models really use: in a causal model, changing a
# *future* token must not change the outputs at earlier positions; in BERT it changes all of them.

# %%
def changed_positions(model, ids, t, **kw):
    """Which positions' outputs move when token t is replaced."""
    other = ids.clone()
    other[:, t] = (other[:, t] + 1) % V
    with torch.no_grad():
        a = model(ids, **kw)
        b = model(other, **kw)
    a = a.logits if a.logits is not None else a.last_hidden_state
    b = b.logits if b.logits is not None else b.last_hidden_state
    return ((a - b).abs().amax(-1)[0] > 1e-6).int().tolist()


print("replace token 6 of 10; 1 = output changed")
for name in ("GPT-2", "BERT", "Mistral"):
    print(f"  {name:8s}", changed_positions(models[name], ids, 6))

# %% [markdown]
# GPT-2 and Mistral leave positions 0-5 untouched (causal); BERT changes every position.
# Mistral is causal *and* windowed: one layer carries information at most window - 1 = 3
# positions forward, so 2 layers carry it at most 6; lesson 05 showed how stacking layers
# widens the window. Watch the reach grow with depth on a longer input:

# %%
long_ids = torch.randint(0, V, (1, 24), device=device)
for n_layers in (1, 2, 3):
    cfg = mistral_config(vocab_size=V, d_model=48, n_layers=n_layers, n_heads=4, n_kv_heads=2, d_ff=128,
                         sliding_window=4)
    seed_everything(n_layers)
    reach = changed_positions(Llama(cfg).to(device).eval(), long_ids, 2)
    last = max(i for i, r in enumerate(reach) if r)
    print(f"Mistral, {n_layers} layer(s), window 4: token 2 influences positions 2..{last} "
          f"(at most 2 + {n_layers}·3 = {2 + 3 * n_layers})")

# %% [markdown]
# ## 4. Encoder-decoder: cross-attention with shapes
# In T5 (and the 2017 paper, §3.2.3) each decoder block has a second attention sub-layer whose
# **queries** come from the decoder and whose **keys and values** come from the encoder output
# (the "memory"). Let us follow the shapes through the first decoder block of the tiny T5.

# %%
t5 = models["T5 v1.1"]
src = torch.randint(0, V, (2, 10), device=device)  # (B, T_enc)
dec_in = shift_right(torch.randint(0, V, (2, 6), device=device), 0, 0)  # (B, T_dec)
with torch.no_grad():
    memory = t5.encode(src)  # (B, T_enc, C)
    block = t5.decoder.blocks[0]
    h = block.cross_attn_norm(t5.shared(dec_in))  # stand-in for the decoder states (B, T_dec, C)
    q = block.cross_attn.split_heads(block.cross_attn.q_proj(h), 4)  # (B, H, T_dec, D)
    k = block.cross_attn.split_heads(block.cross_attn.k_proj(memory), 4)  # (B, H, T_enc, D)
    _, weights = block.cross_attn(h, memory, return_weights=True)  # (B, H, T_dec, T_enc)
for what, t in [("encoder output (memory)", memory), ("decoder states h", h), ("q from h", q),
                ("k, v from memory", k), ("cross-attention weights", weights)]:
    print(f"{what:25s} {tuple(t.shape)}")
print(f"each decoder position's weights over the encoder sum to 1: {bool(torch.allclose(weights.sum(-1), torch.ones(1, device=device)))}")

# %% [markdown]
# The weights are (B, H, **T_dec, T_enc**): one row per decoder position, one column per source
# token. T5 also adds its relative position bias to the *self*-attention scores only; it is
# computed once per stack from the first layer's table and shared by every layer:

# %%
with torch.no_grad():
    enc_bias = t5.encoder.rel_bias(10, 10)  # (1, H, T, T) bidirectional buckets
    dec_bias = t5.decoder.rel_bias(6, 6)  # (1, H, T_dec, T_dec) causal buckets
print("encoder bias", tuple(enc_bias.shape), "| decoder bias", tuple(dec_bias.shape))
print("decoder: keys in the future share one bucket, so their bias is constant along each row:",
      bool((dec_bias[0, 0, 0, 1:] == dec_bias[0, 0, 0, 1]).all()))

# %% [markdown]
# Teacher forcing: during training the decoder reads the target shifted right by one
# (`shift_right`, exercise), so position t predicts label t from labels < t. `-100` marks
# label positions the loss ignores; in the decoder input it becomes padding:

# %%
labels = torch.tensor([[31, 7, 12, 1, -100, -100]])
print("labels              ", labels.tolist()[0])
print("decoder_input_ids   ", shift_right(labels, decoder_start_token_id=0, pad_token_id=0).tolist()[0])

# %% [markdown]
# BERT's training input is built differently (§3.1): 15 % of the tokens are chosen; of those
# 80 % become `[MASK]`, 10 % a random token, 10 % stay the same, and only the chosen positions
# carry a label (others get -100). Here with MiniLM's ids ([CLS] = 101, [SEP] = 102, [MASK] = 103):

# %%
g = torch.Generator().manual_seed(3)
sentence = torch.tensor([[101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102]])
masked, mlm_labels = mlm_mask(sentence.repeat(4, 1), 103, 30522, p=0.3, special_ids=(0, 101, 102), generator=g)
print("input   ", sentence.tolist()[0])
for row, lab in zip(masked.tolist(), mlm_labels.tolist()):
    print("masked  ", row, "\n  labels", lab)
big, big_labels = mlm_mask(torch.randint(1000, 30000, (256, 128), generator=g), 103, 30522, generator=g)
chosen = big_labels != -100
print(f"\nover 32768 tokens: chosen {chosen.float().mean():.3f}, of which [MASK] {(big[chosen] == 103).float().mean():.2f}")

# %% [markdown]
# ## 5. Equal to Hugging Face
# `from_hf(hf_model)` reads a `transformers` model's config, builds ours, and copies every
# tensor through a key map (GPT-2's fused `c_attn` is split in three and its `Conv1D` weights
# transposed). Tiny random configs, built offline, with odd sizes on purpose (3 heads of 12,
# GQA 6/2, head size 10):

# %%
import transformers as hf

hf.logging.set_verbosity_error()
torch.manual_seed(0)
hf_models = {
    "GPT-2": hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=V, n_positions=32, n_embd=36, n_layer=2, n_head=3)),
    "BERT (MLM)": hf.BertForMaskedLM(hf.BertConfig(vocab_size=V, hidden_size=36, num_hidden_layers=2,
                                                   num_attention_heads=3, intermediate_size=50)),
    "T5 v1.0": hf.T5ForConditionalGeneration(hf.T5Config(vocab_size=V, d_model=32, d_kv=10, d_ff=40, num_layers=2,
                                                         num_heads=3, feed_forward_proj="relu")),
    "LLaMA (GQA 6/2)": hf.LlamaForCausalLM(hf.LlamaConfig(vocab_size=V, hidden_size=60, intermediate_size=70,
                                                         num_hidden_layers=2, num_attention_heads=6,
                                                         num_key_value_heads=2)),
    "Mistral (window 4)": hf.MistralForCausalLM(hf.MistralConfig(vocab_size=V, hidden_size=40, intermediate_size=56,
                                                                num_hidden_layers=2, num_attention_heads=4,
                                                                num_key_value_heads=2, sliding_window=4)),
}
x = torch.randint(0, V, (2, 12))
mask = torch.ones(2, 12, dtype=torch.long)
mask[1, 9:] = 0  # padding
for name, ref in hf_models.items():
    ref.eval()
    ours = from_hf(ref)
    kw = dict(decoder_input_ids=x[:, :7]) if name.startswith("T5") else {}
    with torch.no_grad():
        theirs = ref(input_ids=x, attention_mask=mask, **kw).logits
        mine = ours(x, attention_mask=mask, **kw).logits
    keep = mask.bool() if theirs.shape[1] == 12 else torch.ones(2, 7, dtype=torch.bool)
    err = (mine - theirs)[keep].abs().max().item()
    print(f"{name:19s} -> {type(ours).__name__:15s} logits {tuple(mine.shape)}: max |diff| below 1e-5: {err < 1e-5}")

# %% [markdown]
# ## 6. Real sizes: parameters and compute
# `param_count(config)` adds up the matrices a config implies; it reproduces the published
# totals exactly, without instantiating a single weight:

# %%
print(f"{'model':18s} {'ours':>15s} {'published':>15s}  embeddings  blocks  untied head")
for name, (cfg, published_total) in PUBLISHED.items():
    c = param_count(cfg)
    print(f"{name:18s} {c.total:>15,} {published_total:>15,}  {c.embeddings / c.total:9.0%}  "
          f"{c.blocks / c.total:6.0%}  {c.head / c.total:11.0%}")

# %% [markdown]
# In the small models a large share of the parameters is the embedding table; at 7B the
# blocks are nearly everything. Where do a block's parameters go?

# %%
from course_lib.ffn import ffn_params
from course_lib.models.sizes import attention_params

for name in ("GPT-2 small", "LLaMA-2-7B", "Mistral-7B-v0.1"):
    cfg = published[name]
    heads = (cfg.n_heads, cfg.head_dim, getattr(cfg, "n_kv_heads", None))
    att = attention_params(cfg.d_model, heads[0], heads[1], heads[2])
    ffn = ffn_params(cfg.d_model, cfg.d_ff, gated=isinstance(cfg, LlamaConfig), bias=False)
    print(f"{name:16s} per block: attention {att / 1e6:6.1f}M, FFN {ffn / 1e6:6.1f}M -> "
          f"the FFN holds {ffn / (att + ffn):.0%} of the block's matrices")

# %% [markdown]
# Compute per token follows from the count (Kaplan et al. 2020, Table 1): a forward pass does
# one multiply-add per weight, 2N FLOPs, plus attention over the n_ctx previous tokens,
# 2·n_layers·n_ctx·d_attn; training (forward + backward) costs three times that, **≈ 6N**.

# %%
for name, n_ctx in (("GPT-2 small", 1024), ("LLaMA-2-7B", 4096), ("Mistral-7B-v0.1", 4096)):
    cfg = published[name]
    six_n = 6 * param_count(cfg).non_embedding
    total = flops_per_token(cfg, n_ctx)
    head = total - flops_per_token(cfg, n_ctx, lm_head=False)
    attn = total - six_n - head
    print(f"{name:16s} n_ctx={n_ctx}: {total / 1e9:6.2f} GFLOPs per training token = 6N {six_n / total:4.0%}"
          f" + attention {attn / total:4.0%} + LM head {head / total:4.0%}")
tokens = 2e12
print(f"\nLLaMA-2-7B on 2T tokens at 4096 context: {flops_per_token(published['LLaMA-2-7B'], 4096) * tokens:.1e} FLOPs")

# %% [markdown]
# ## 7. Initialisation: std 0.02 and the 1/√(2N) scaling
# A model's first forward pass uses whatever numbers its weights start with. GPT-2 (§2.3 of
# Radford et al. 2019) draws every weight from N(0, 0.02²), and the two matrices in each block
# that *write into* the residual stream (attention's `o_proj` and the FFN's `down_proj`) from a
# normal with std 0.02/√(2N), N being the number of blocks (two writes per block).
# `GPT.reset_parameters` does exactly that. Why both?
#
# * **0.02.** PyTorch's own defaults are N(0, 1) for an embedding and a uniform distribution of
#   width ~1/√fan_in for a linear layer. With the output head tied to the embedding (§2 above),
#   N(0, 1) embeddings give logits of size about √d, a confident and wrong first guess.
# * **1/√(2N).** In a pre-LN model the stream is a sum, x_N = x_0 + Σ (2N branch outputs). If
#   each branch adds an independent output of variance σ², the stream's variance grows by 2N·σ².
#   Scaling the writers by 1/√(2N) divides that sum's variance by 2N, so the total stays the
#   same whatever the depth.
#
# Measured at initialisation on a 48-block GPT (width 64, 65 tokens, one batch of random
# ids): the std of the residual stream after each block and the gradient norm of each block's
# parameters, for three initialisations. In the first, every layer keeps PyTorch's default
# (the head shares the embedding's N(0, 1) matrix).

# %% tolerance={"rel": 0.03, "abs": 0.002}
import math  # noqa: E402

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from course_lib.device import single_thread  # noqa: E402
from course_lib.models.common import init_normal  # noqa: E402


def pytorch_defaults(model):
    for m in model.modules():  # the tied head is skipped: it shares nn.Embedding's N(0, 1) matrix
        if m is not model and m is not model.lm_head and hasattr(m, "reset_parameters"):
            m.reset_parameters()


INITS = {"PyTorch defaults": pytorch_defaults,
         "N(0, 0.02²) everywhere": lambda model: init_normal(model, std=0.02),
         "GPT-2: 0.02 and 1/√(2N)": lambda model: model.reset_parameters()}
N_DEEP, V_INIT, T_INIT = 48, 65, 64
deep_cfg = GPTConfig(vocab_size=V_INIT, max_positions=T_INIT, d_model=64, n_layers=N_DEEP, n_heads=4)
init_ids = torch.randint(0, V_INIT, (8, T_INIT + 1), generator=torch.Generator().manual_seed(0))  # (B, T+1)
stream_std, block_grad, first_loss = {}, {}, {}
with single_thread():
    for name, init in INITS.items():
        torch.manual_seed(0)
        model = GPT(deep_cfg).to(device)
        init(model)
        stds = []
        hooks = [b.register_forward_hook(lambda m, args, out: stds.append(out.detach().std().item()))
                 for b in model.blocks]
        logits = model(init_ids[:, :-1].to(device)).logits  # (B, T, V)
        for hook in hooks:
            hook.remove()
        loss = F.cross_entropy(logits.flatten(0, 1), init_ids[:, 1:].to(device).flatten())  # (B*T, V) vs (B*T,)
        loss.backward()
        stream_std[name], first_loss[name] = stds, loss.item()
        block_grad[name] = [torch.cat([p.grad.flatten() for p in b.parameters()]).norm().item() for b in model.blocks]
print(f"uniform guessing would give loss ln {V_INIT} = {math.log(V_INIT):.3f}")
print(f"{'':<25} {'first loss':>10}   stream std after block 1 / 24 / 48   grad norm of block 1 / 24 / 48")
for name in INITS:
    sd, gr = stream_std[name], block_grad[name]
    print(f"{name:<25} {first_loss[name]:>10.3f}   {sd[0]:>8.3f} {sd[23]:>8.3f} {sd[-1]:>8.3f} (×{sd[-1] / sd[0]:.1f})"
          f"   {gr[0]:>7.3f} {gr[23]:>7.3f} {gr[-1]:>7.3f} (block 1 / block 48: {gr[0] / gr[-1]:.1f})")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name in INITS:
    axes[0].plot(range(1, N_DEEP + 1), stream_std[name], label=name)
    axes[1].plot(range(1, N_DEEP + 1), block_grad[name], label=name)
axes[0].set(xlabel="block", ylabel="std of the residual stream", yscale="log", title="forward: activations")
axes[1].set(xlabel="block", ylabel="‖∂loss/∂(block's parameters)‖", yscale="log", title="backward: gradients")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# What the numbers show:
# * **PyTorch defaults**: the first loss is well above uniform guessing (the N(0, 1) head is
#   confidently wrong), and the stream's std grows by the printed factor over the 48 blocks.
# * **N(0, 0.02²) without the scaling**: a sensible first loss, but the stream's std grows
#   about five-fold from block 1 to block 48, as 96 branch outputs pile up, and the gradients
#   are lopsided: block 1, where the stream is still small, gets several times the gradient of
#   block 48.
# * **GPT-2's 0.02 and 1/√(2N)**: the stream's std barely moves over 48 blocks and every block
#   gets a gradient of about the same size (within the printed factor), so one learning rate
#   suits them all.
#
# (Not every family scales: Hugging Face's Llama code draws every matrix with std 0.02 and no
# depth factor; T5 v1.0's embeddings use std 1 and it rescales the output instead, §2.)
#
# ## 8. Dropout
# **Dropout** (Srivastava et al. 2014) zeroes each activation with probability p during
# training and multiplies the survivors by 1/(1 − p), so the expected value of every activation
# is unchanged; in evaluation (`model.eval()`) it does nothing. GPT-2 applies it after the
# embeddings, to the attention weights and to each branch before it joins the residual stream
# (`GPTConfig.dropout`; 0.1 in GPT-2, 0 in many large modern models, which see every token once
# and do not overfit). Exactly:

# %%
drop = nn.Dropout(p=0.25)
ones = torch.ones(2, 8)  # on the CPU: the same random mask on every machine
torch.manual_seed(0)
print("train mode:\n", drop.train()(ones))
print("eval mode:\n", drop.eval()(ones))
big = drop.train()(torch.ones(100_000))
kept = big[big != 0]
print(f"survivors all equal 1/(1-p) = {1 / (1 - 0.25):.4f} exactly: {bool((kept == 1 / (1 - 0.25)).all())}")

# %% tolerance={"abs": 0.01}
print(f"fraction zeroed {(big == 0).float().mean().item():.2f} (p = 0.25), mean {big.mean().item():.2f} (the input's: 1)")

# %% [markdown]
# **What it buys.** Train a small GPT (2 blocks, width 96) on only 5,000 characters of the
# Shakespeare corpus, about 40 passes over them, and measure the loss on the 2,000
# characters that follow (the validation text, never trained on). Lessons 09 and 10 treat the
# pieces in detail; here it is enough to know that `CharTokenizer` gives each character one id,
# `get_batch` cuts random windows of 32 characters whose targets are the same text shifted by
# one, and AdamW is the Adam optimiser lesson 03 trained with, plus weight decay (here 0; lesson 10
# takes it apart). Both losses
# are measured in eval mode on 128 fixed windows each, every 40 steps, with and without dropout
# (on the CPU).

# %% tolerance={"abs": 0.06, "rel": 0.03}
from course_lib.data import get_batch, shakespeare_text  # noqa: E402
from course_lib.tokenizers import CharTokenizer  # noqa: E402

char_tok = CharTokenizer.train(shakespeare_text())
slice_ids = torch.tensor(char_tok.encode(shakespeare_text(7_000)))  # (7000,)
train_ids, val_ids = slice_ids[:5_000], slice_ids[5_000:]
T_DROP, STEPS_DROP = 32, 400
cpu = torch.device("cpu")  # this run stays on the CPU even where a GPU is present: dropout's random masks
# come from the CPU generator, so the curves below are the same on every machine
fixed = {"train": get_batch(train_ids, 128, T_DROP, torch.Generator().manual_seed(7)),
         "val": get_batch(val_ids, 128, T_DROP, torch.Generator().manual_seed(8))}


def eval_losses(model):
    model.eval()
    with torch.no_grad():
        out = {k: F.cross_entropy(model(x.to(cpu)).logits.flatten(0, 1), y.to(cpu).flatten()).item()
               for k, (x, y) in fixed.items()}  # logits (B*T, V) vs targets (B*T,)
    model.train()
    return out


def train_small_gpt(p):
    torch.manual_seed(0)
    model = GPT(vocab_size=char_tok.vocab_size, max_positions=T_DROP, d_model=96, n_layers=2, n_heads=4,
                dropout=p).to(cpu)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g, curve = torch.Generator().manual_seed(1), []
    for step in range(STEPS_DROP + 1):
        if step % 40 == 0:
            curve.append((step, eval_losses(model)))
        if step == STEPS_DROP:
            return curve
        x, y = get_batch(train_ids, 16, T_DROP, g)  # (B, T) each
        loss = F.cross_entropy(model(x.to(cpu)).logits.flatten(0, 1), y.to(cpu).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


print(f"{STEPS_DROP} steps × 16 windows × {T_DROP} characters = {STEPS_DROP * 16 * T_DROP / len(train_ids):.1f} passes "
      f"over {len(train_ids):,} training characters")
dropout_runs = {}
with single_thread():
    for p in (0.0, 0.2):
        dropout_runs[p] = train_small_gpt(p)
for p, curve in dropout_runs.items():
    last = curve[-1][1]
    best = min(v["val"] for _, v in curve)
    print(f"dropout {p}: final train {last['train']:.2f}, val {last['val']:.2f}, gap {last['val'] - last['train']:.2f}; "
          f"lowest val on the way {best:.2f}")

fig, ax = plt.subplots(figsize=(7, 3.6))
for p, curve in dropout_runs.items():
    steps = [s for s, _ in curve]
    line, = ax.plot(steps, [v["train"] for _, v in curve], "--", label=f"train, dropout {p}")
    ax.plot(steps, [v["val"] for _, v in curve], "-", color=line.get_color(), label=f"validation, dropout {p}")
ax.set(xlabel="step", ylabel="loss (nats per character)", ylim=(1.5, 3.2),
       title="5,000 characters, many passes: overfitting and dropout")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Without dropout the model memorises its 5,000 characters: the training loss keeps falling
# while the validation loss stops improving and turns upwards, and the gap between them grows
# (the printed gap). With dropout 0.2 the training loss falls more slowly, the gap is about
# half as large, and validation ends lower. Srivastava et al.'s explanation: a unit cannot count
# on any particular other unit being present, so the network cannot build the fragile
# co-adapted detectors that memorising needs. The price is slower progress on the training
# loss; a model that sees each token only once has little to memorise, which is why many large
# pre-training runs set p = 0.
#
# %% [markdown]
# ## Summary
# * One block, four families: post-LN bidirectional (BERT), pre-LN causal (GPT-2), pre-LN
#   encoder-decoder with cross-attention and relative bias (T5), pre-LN causal with RMSNorm,
#   SwiGLU, RoPE and GQA (LLaMA; Mistral adds a window).
# * The mask, not the block, decides encoder vs decoder; cross-attention is the only new wiring
#   (queries from the decoder, keys/values from the encoder: a T_dec × T_enc matrix).
# * `from_hf` copies any of them from `transformers` and the logits agree to better than 10⁻⁵.
# * Parameters and FLOPs follow from the config alone: 6N per training token plus attention.
# * GPT-2's initialisation (std 0.02, writers into the stream scaled by 1/√(2N)) keeps the
#   residual stream's size and the per-block gradients level across 48 blocks.
# * Dropout (train mode only, survivors scaled by 1/(1 − p)) narrows the gap between training
#   and validation loss when a model sees the same small data many times.
#
# Next: lesson 07 loads a **real** pretrained BERT (all-MiniLM-L6-v2) into this code.
