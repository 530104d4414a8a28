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
# We decode from the course's **Shakespeare GPT**, shipped with the course: its samples read like
# the plays, so what each setting does to the text is easy to see, and we *measure* it: how
# likely the model finds its own text, how many of its words exist, how often it repeats itself.
#
# Then speed: generating token t+1 needs the keys and values of tokens 1..t. Recomputing them
# at every step is wasted work; the **KV cache** keeps them. We prove the cached and uncached
# decodes identical and measure the speed-up live.
#
# **Then** do `exercises/11_generation.ipynb`: top-p sampling, cached greedy generation, beam
# search with a length penalty, and the repetition and n-gram penalties.

# %%
import math
import re
import time
import textwrap

import matplotlib.pyplot as plt
import torch

from course_lib import seed_everything
from course_lib.data import encoded_corpus, shakespeare_text
from course_lib.device import single_thread
from course_lib.generation import generate, top_k_filter, top_p_filter
from course_lib.pretrained import manifest, shakespeare_gpt

_ = seed_everything(0)

# %% [markdown]
# ## 1. A model to decode from
# The shipped GPT (`course_lib.pretrained`): lesson 10's model at 6 layers × 256 wide, trained
# on the course's Shakespeare for 3,600 steps by `python -m course_lib.pretrained --train`, with
# a context of 128 characters. Loading checks the file's sha256 against its manifest.

# %%
model, tok = shakespeare_gpt()
info = manifest()
print(f"{info['parameters']:,} parameters, context {model.config.max_positions} characters, "
      f"validation loss {info['val_loss']:.3f} nats/char (manifest; uniform guessing: ln {tok.vocab_size} "
      f"= {math.log(tok.vocab_size):.3f})")
prompt = torch.tensor([tok.encode("JULIET:\nO Romeo, Romeo!\n")])  # (1, 24)
print(f"prompt: {tok.decode(prompt[0].tolist())!r}, {prompt.size(1)} characters")

# %% [markdown]
# ## 2. The next-token distribution
# One forward pass gives logits (B, T, V); the prediction for the next character is the last
# position's row, turned into probabilities by softmax. Juliet's line has just ended with a
# newline; the model's strongest guess is a second newline (in the plays, a blank line ends a
# speech), and the rest of its probability goes mostly to capital letters: a new line of verse.

# %% tolerance={"abs": 0.002, "rel": 0.01}
with torch.no_grad():
    logits = model(prompt).logits[:, -1]  # (1, V)
probs = logits.softmax(-1)[0]  # (V,)
top = probs.topk(8)
print("after", repr(tok.decode(prompt[0].tolist())[-10:]), "the model predicts:")
for p_, i in zip(top.values.tolist(), top.indices.tolist()):
    print(f"   {tok.decode([i])!r:>6}  {p_:.3f}")

# %% [markdown]
# ## 3. Temperature
# Dividing the logits by T before softmax: T < 1 sharpens the distribution (towards greedy),
# T > 1 flattens it (towards uniform). Its entropy, measured:

# %% tolerance={"abs": 0.01, "rel": 0.01}
for T in (0.3, 0.7, 1.0, 1.5, 3.0):
    p_T = (logits / T).softmax(-1)[0]
    H = -(p_T * p_T.clamp_min(1e-12).log()).sum().item()
    print(f"T = {T:<4} entropy {H:.2f} nats, top token {p_T.max().item():.2f}")
print(f"(uniform over {tok.vocab_size} characters: {math.log(tok.vocab_size):.2f} nats)")

# %% [markdown]
# ## 4. Top-k and top-p
# Most of the vocabulary has tiny probabilities, but together they are often a sizeable chance
# of sampling *something* absurd. **Top-k** keeps the k most likely tokens; **top-p** keeps the
# smallest set whose total probability reaches p — so it adapts: few tokens where the model is
# sure, many where it is not. Note which token is kept at the boundary: the one that *crosses* p.

# %% tolerance={"abs": 0.002, "rel": 0.01}
sorted_p = probs.sort(descending=True).values
for p in (0.5, 0.9, 0.99):
    kept = torch.isfinite(top_p_filter(logits, p)).sum().item()
    print(f"top-p {p}: keeps {kept} tokens holding {sorted_p[:kept].sum().item():.3f} of the probability")

# %% [markdown]
# ## 5. What the settings do to the text
# Five continuations of the prompt, 100 characters each, with the same random seed. (Sampled
# text can come out differently on another machine: a last-bit difference in a logit can change
# one sampled character, and everything after it. So the samples are a picture, and what we
# compare are the measurements in section 6, averaged over many samples.)

# %%
def continuation(n: int = 100, seed: int = 1, **kw) -> str:
    out = generate(model, prompt, n, generator=torch.Generator().manual_seed(seed), **kw)
    return tok.decode(out[0, prompt.size(1):].tolist())


settings = {"greedy (T = 0)": dict(temperature=0.0), "T = 0.8": dict(temperature=0.8),
            "top-k 10, T = 1": dict(temperature=1.0, top_k=10), "top-p 0.9, T = 1": dict(temperature=1.0, top_p=0.9),
            "T = 1.5": dict(temperature=1.5)}
with single_thread():  # one thread: small steps gain nothing from two
    samples = {name: continuation(**kw) for name, kw in settings.items()}
fig, axes = plt.subplots(1, len(samples), figsize=(17, 2.9))
for ax, (name, text_) in zip(axes, samples.items()):
    shown = "\n".join(textwrap.fill(ln, 30) if ln else "" for ln in (tok.decode(prompt[0].tolist()) + text_).split("\n"))
    ax.text(0.0, 1.0, shown, va="top", ha="left", family="monospace", fontsize=8.5, transform=ax.transAxes)
    ax.set_title(name)
    ax.axis("off")
fig.suptitle("continuations of the prompt (prompt included, 100 new characters)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Measured: temperature against likelihood, real words and repetition
# For each temperature, 16 continuations of 100 characters; for each we measure
# * **log-prob**: the mean log-probability per character that the model itself (at T = 1) gives
#   the text it produced: how *typical* the text is for the model (held-out Shakespeare scores
#   minus its validation loss, about −1.4);
# * **real words**: the fraction of the complete words (letters only, lower-cased) that occur
#   somewhere in the corpus;
# * **distinct words**: unique words / words within one continuation: low means it repeats itself.
#
# Top-p 0.9 at T = 1 gets the same measurements (the star), and so does real text (16 held-out
# stretches of 100 characters, the dashed lines).

# %% tolerance={"abs": 0.06, "rel": 0.05}
corpus = shakespeare_text()
vocabulary = set(re.findall(r"[a-z]+", corpus.lower()))
_, val_ids = encoded_corpus(tok, "char")


def complete_words(text_: str) -> list[str]:
    """The letters-only words, lower-cased, without a word cut off at either end."""
    spans = list(re.finditer(r"[a-z]+", text_.lower()))
    if spans and spans[-1].end() == len(text_):
        spans = spans[:-1]  # cut off by the end of the sample
    return [m.group() for m in spans]


@torch.no_grad()
def measure(ids: torch.Tensor, start: int) -> tuple[float, float, float]:
    """ids (B, T): rows whose characters from `start` on are to be measured."""
    logp = model(ids[:, :-1]).logits.log_softmax(-1)  # (B, T-1, V)
    lp = logp.gather(-1, ids[:, 1:, None])[:, start - 1:].mean().item()  # per character after `start`
    texts = [tok.decode(row[start:].tolist()) for row in ids]
    words = [complete_words(t) for t in texts]
    real = sum(w in vocabulary for ws in words for w in ws) / max(1, sum(len(ws) for ws in words))
    distinct = sum(len(set(ws)) / max(1, len(ws)) for ws in words) / len(words)
    return lp, real, distinct


N, LENGTH = 16, 100
temperatures = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
rows = {}
with single_thread():
    for T in temperatures:
        out = generate(model, prompt.expand(N, -1), LENGTH, temperature=T,
                       generator=torch.Generator().manual_seed(2))  # (16, 124): 16 rows at once
        rows[T] = measure(out, prompt.size(1))
    out = generate(model, prompt.expand(N, -1), LENGTH, temperature=1.0, top_p=0.9,
                   generator=torch.Generator().manual_seed(2))
    nucleus = measure(out, prompt.size(1))  # top-p 0.9 at T = 1
starts = torch.randint(len(val_ids) - LENGTH - prompt.size(1), (N,), generator=torch.Generator().manual_seed(3))
real_text = torch.stack([torch.as_tensor(val_ids[s:s + prompt.size(1) + LENGTH]) for s in starts.tolist()])
reference = measure(real_text.long(), prompt.size(1))
print("temperature   log-prob/char   real words   distinct words")
for T, (lp, real, distinct) in rows.items():
    print(f"{T:>11}   {lp:13.2f}   {real:10.2f}   {distinct:14.2f}")
print(f"{'top-p 0.9':>11}   {nucleus[0]:13.2f}   {nucleus[1]:10.2f}   {nucleus[2]:14.2f}   (T = 1)")
print(f"{'real text':>11}   {reference[0]:13.2f}   {reference[1]:10.2f}   {reference[2]:14.2f}")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.3))
for ax, i, name in zip(axes, range(3), ["mean log-prob per character", "fraction of real words",
                                         "distinct words / words"]):
    ax.plot(temperatures, [rows[T][i] for T in temperatures], "o-", label="sampled")
    ax.plot([1.0], [nucleus[i]], "*", ms=12, color="C3", label="top-p 0.9, T = 1")
    ax.axhline(reference[i], color="grey", ls="--", label="held-out Shakespeare")
    ax.set(xlabel="temperature", title=name)
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# What the measurements say (each number may move by a few hundredths on another machine):
# * **Low temperature: likely, real, repetitive.** At T = 0.25 the model gives its own text about
#   −0.7 nats per character, far above the −1.4 of real Shakespeare, and nearly every word
#   exists; but only about 70 % of a continuation's words are distinct, against 90 % in real
#   text: near-greedy decoding goes round in circles.
# * **T = 1 samples the model's own distribution**, and even then the model finds its samples more
#   likely than real text (about −1.0 against −1.4): they are more predictable than Shakespeare.
#   About 93 % of their words exist.
# * **High temperature: the words fall apart.** The log-probability drops fast, and at T = 2 only
#   about half of the words are real.
#
# Real text's log-probability lies between T = 1 and T = 1.5, and its share of real words near
# T = 0.75. No single temperature matches real text on all three. Top-p 0.9 at T = 1 (the star)
# cuts the unlikely tail instead of sharpening everything, and lands close to T = 0.75: about 99 %
# real words and 93 % distinct, near real text's 99 % and 90 %, with a log-probability (about
# −0.9) still well above real text's. Both ways remove the non-words; both make the text more
# predictable than Shakespeare.
#
# ## 7. Explore
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
# ## 8. The KV cache
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
# Same tokens, same logits, much less work — measured (greedy, 100 new tokens, up to 124 of the
# model's 128 positions). The longer the sequence, the larger the saving: without the cache,
# step t costs a pass over t tokens.

# %%
NEW = 100
with torch.no_grad(), single_thread():
    t0 = time.perf_counter()
    slow = generate(model, prompt, NEW, use_cache=False)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = generate(model, prompt, NEW, use_cache=True)
    t_cache = time.perf_counter() - t0
print(f"same tokens with and without the cache: {torch.equal(slow, fast)}")
print(f"without cache {t_full * 1000 / NEW:.2f} ms per token, with cache {t_cache * 1000 / NEW:.2f} ms per token: "
      f"a speed-up of {t_full / t_cache:.1f}×")
with torch.no_grad():
    cache = model.new_cache()
    steps = [model(fast[:, :prompt.size(1)], cache=cache).logits[:, -1]]
    for t in range(prompt.size(1), fast.size(1) - 1):
        steps.append(model(fast[:, t:t + 1], cache=cache).logits[:, -1])
    full = model(fast[:, :-1]).logits[:, prompt.size(1) - 1:]
err = (torch.stack(steps, 1) - full).abs().max().item()
print(f"cached vs full logits at every generated position: max abs error below 1e-4: {err < 1e-4}")

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
