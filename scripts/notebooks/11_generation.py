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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/notebooks/11_generation.ipynb)

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
# # 11 · Generation: sampling and the KV cache
#
# A language model gives a probability for every possible next token. **Decoding** turns that
# into text, one token at a time: always take the most likely (greedy), or sample — sharpened or
# flattened by a **temperature**, restricted to the **top-k** tokens or to the smallest
# **nucleus** holding probability **p** (Holtzman et al. 2020).
#
# Then speed: generating token t+1 needs the keys and values of tokens 1..t. Recomputing them
# at every step is wasted work; the **KV cache** keeps them. We prove the cached and uncached
# decodes identical and measure the speed-up live.
#
# **Then** do `exercises/11_generation.ipynb`.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch

from course_lib import seed_everything
from course_lib.data import encoded_corpus, shakespeare_text
from course_lib.device import single_thread
from course_lib.generation import generate, sample_next, top_k_filter, top_p_filter
from course_lib.models import GPT
from course_lib.tokenizers import CharTokenizer
from course_lib.training import Trainer, TrainConfig

_ = seed_everything(0)

# %% [markdown]
# ## 1. A model to decode from
# A small character-level GPT, trained here for a few hundred steps (lesson 10 explains the
# training). It is weak, which makes the effect of each decoding choice easy to see.

# %%
tok = CharTokenizer.train(shakespeare_text())
train_data, val_data = encoded_corpus(tok, "char")
torch.manual_seed(0)
model = GPT(vocab_size=tok.vocab_size, max_positions=256, d_model=64, n_layers=2, n_heads=4)
cfg = TrainConfig(max_steps=250, batch_size=8, seq_len=128, lr=3e-3, min_lr=3e-4, warmup=20,
                  eval_interval=250, eval_iters=10, progress=False, device="cpu")
with single_thread():
    Trainer(model, train_data, val_data, cfg).train()
model.eval()
prompt = torch.tensor([tok.encode("KING HENRY:\nWhat say")])
print("validation loss", round(Trainer(model, train_data, val_data, cfg).evaluate(), 3))

# %% [markdown]
# ## 2. The next-token distribution
# One forward pass gives logits (B, T, V); the prediction for the next character is the last
# position's row, turned into probabilities by softmax.

# %%
with torch.no_grad():
    logits = model(prompt).logits[:, -1]  # (1, V)
probs = logits.softmax(-1)[0]  # (V,)
top = probs.topk(8)
print("after", repr(tok.decode(prompt[0].tolist())[-9:]), "the model predicts:")
for p_, i in zip(top.values.tolist(), top.indices.tolist()):
    print(f"   {tok.decode([i])!r:>6}  {p_:.3f}")

# %% [markdown]
# ## 3. Temperature
# Dividing the logits by T before softmax: T < 1 sharpens the distribution (towards greedy),
# T > 1 flattens it (towards uniform). Its entropy, measured:

# %%
for T in (0.3, 0.7, 1.0, 1.5, 3.0):
    p_T = (logits / T).softmax(-1)[0]
    H = -(p_T * p_T.clamp_min(1e-12).log()).sum().item()
    print(f"T = {T:<4} entropy {H:.2f} nats, top token {p_T.max().item():.2f}")
print(f"(uniform over {tok.vocab_size} characters: {math.log(tok.vocab_size):.2f} nats)")

# %% [markdown]
# Greedy decoding (T → 0) is deterministic and tends to loop; sampling at higher temperatures
# is varied, then incoherent:

# %%
def continuation(**kw) -> str:
    out = generate(model, prompt, 100, generator=torch.Generator().manual_seed(1), **kw)
    return tok.decode(out[0, prompt.size(1):].tolist())


for name, kw in [("greedy", dict(temperature=0.0)), ("T = 0.7", dict(temperature=0.7)),
                 ("T = 1.5", dict(temperature=1.5))]:
    print(f"--- {name}\n{continuation(**kw)}\n")

# %% [markdown]
# ## 4. Top-k and top-p
# Most of the vocabulary has tiny probabilities, but together they are often a sizeable chance
# of sampling *something* absurd. **Top-k** keeps the k most likely tokens; **top-p** keeps the
# smallest set whose total probability reaches p — so it adapts: few tokens where the model is
# sure, many where it is not. Note which token is kept at the boundary: the one that *crosses* p.

# %%
sorted_p = probs.sort(descending=True).values
for p in (0.5, 0.9, 0.99):
    kept = torch.isfinite(top_p_filter(logits, p)).sum().item()
    print(f"top-p {p}: keeps {kept} tokens holding {sorted_p[:kept].sum().item():.3f} of the probability")
for name, kw in [("top-k 5, T = 1.0", dict(temperature=1.0, top_k=5)),
                 ("top-p 0.9, T = 1.0", dict(temperature=1.0, top_p=0.9))]:
    print(f"--- {name}\n{continuation(**kw)}\n")

# %% [markdown]
# ## 5. Explore
# Move the controls: the bars are the distribution *after* temperature and filtering (grey:
# removed); the text below is sampled with those settings.

# %%
import ipywidgets as W

from course_lib.widgets import show_live_or_static


def filtered_probs(T: float, k: int, p: float) -> torch.Tensor:
    z = logits / max(T, 1e-4)
    if k < tok.vocab_size:
        z = top_k_filter(z, k)
    if p < 1.0:
        z = top_p_filter(z, p)
    return z.softmax(-1)[0]


def draw(T, k, p):
    q = filtered_probs(T, k, p)
    order = probs.argsort(descending=True)[:20]
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.bar(range(20), probs[order], color="lightgrey", label="original")
    ax.bar(range(20), q[order], alpha=0.8, label="after T / top-k / top-p")
    ax.set_xticks(range(20), [repr(tok.decode([int(i)]))[1:-1] for i in order])
    ax.set_title(f"T={T:.2f}, top-k={k}, top-p={p:.2f}: {int((q > 0).sum())} tokens possible")
    ax.legend()
    fig.tight_layout()
    return fig


temp_w = W.FloatSlider(value=1.0, min=0.1, max=2.5, step=0.05, description="temperature")
k_w = W.IntSlider(value=tok.vocab_size, min=1, max=tok.vocab_size, description="top-k")
p_w = W.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p")
plot_out, text_out = W.Output(), W.Output()


def redraw(*_):
    with plot_out:
        plot_out.clear_output(wait=True)
        plt.show(draw(temp_w.value, k_w.value, p_w.value))
    with text_out:
        text_out.clear_output(wait=True)
        print(continuation(temperature=temp_w.value, top_k=k_w.value, top_p=p_w.value))


show_live_or_static(W.VBox([W.HBox([temp_w, k_w, p_w]), plot_out, text_out]), [temp_w, k_w, p_w], redraw,
                    static=lambda: plt.show(draw(0.7, 10, 0.9)))

# %% [markdown]
# ## 6. The KV cache
# At step t the model needs queries for the **new** token only, but keys and values for **all**
# tokens so far — and those never change (causal attention: earlier tokens do not see later
# ones). So each layer keeps them: `model.new_cache()` gives one `KVCache` per layer, and every
# call `model(ids, cache=cache)` appends the new keys and values and attends over everything.
# Follow the shapes:

# %%
cache = model.new_cache()
with torch.no_grad():
    out = model(prompt, cache=cache)  # prefill: the whole prompt at once
    print(f"prefill: input {tuple(prompt.shape)} -> logits {tuple(out.logits.shape)}; layer-0 keys "
          f"{tuple(cache[0].k.shape)}  (B, H, T, D)")
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
    for _ in range(3):
        out = model(nxt, cache=cache)  # one token in, one row of logits out
        print(f"step:    input {tuple(nxt.shape)} -> logits {tuple(out.logits.shape)}; layer-0 keys "
              f"{tuple(cache[0].k.shape)}")
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)

# %% [markdown]
# Same tokens, same logits, much less work — measured (greedy, 230 new tokens, up to the
# model's 256 positions). The longer the sequence, the larger the saving: without the cache,
# step t costs a pass over t tokens.

# %%
with torch.no_grad(), single_thread():
    t0 = time.perf_counter()
    slow = generate(model, prompt, 230, use_cache=False)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = generate(model, prompt, 230, use_cache=True)
    t_cache = time.perf_counter() - t0
print(f"same tokens with and without the cache: {torch.equal(slow, fast)}")
print(f"without cache {t_full * 1000 / 230:.2f} ms per token, with cache {t_cache * 1000 / 230:.2f} ms per token: "
      f"a speed-up of {t_full / t_cache:.1f}×")
with torch.no_grad():
    cache = model.new_cache()
    steps = [model(fast[:, :prompt.size(1)], cache=cache).logits[:, -1]]
    for t in range(prompt.size(1), fast.size(1) - 1):
        steps.append(model(fast[:, t:t + 1], cache=cache).logits[:, -1])
    full = model(fast[:, :-1]).logits[:, prompt.size(1) - 1:]
err = (torch.stack(steps, 1) - full).abs().max().item()
print(f"cached vs full logits at every generated position: max abs error below 1e-5: {err < 1e-5}")

# %% [markdown]
# The cache costs memory instead: 2 (K and V) × layers × KV heads × head size × tokens. Lesson 04
# computes it for real models — and why GQA/MQA share K/V heads to shrink it.
#
# ## Summary
# * Decoding = logits → (temperature) → (top-k / top-p) → softmax → sample. Temperature divides
#   *logits*; the nucleus keeps the token that crosses p.
# * The KV cache turns each step from a pass over the whole sequence into a pass over one token;
#   it is exact, so the tokens cannot change.
#
# **Next:** `exercises/11_generation.ipynb`.
