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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/11_generation.ipynb)

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
# # Exercise 11 · Nucleus sampling, cached generation, beam search and repetition penalties
#
# Read `notebooks/11_generation.ipynb` first.

# %%
import torch

from course_lib.checks import (check_beam_search, check_generate, check_generate_penalized, check_no_repeat_ngram,
                               check_repetition_penalty, check_sample_top_p, hint, solution)

# %% [markdown]
# ## 1. Top-p (nucleus) sampling (3 points)
# `sample_top_p(logits, p, generator, temperature=1.0)`: logits (N, V) → N sampled token ids.
# 1. divide the **logits** by `temperature`; softmax;
# 2. sort the probabilities in descending order; keep the smallest set of most likely tokens
#    whose total reaches `p` — **including** the token that crosses `p` (keep a token when the
#    probability mass *before* it is still `< p`);
# 3. renormalise, draw with `torch.multinomial(..., generator=generator)`, and map the drawn
#    positions back to token ids.
#
# The check draws thousands of samples and compares the frequencies with the nucleus
# distribution, so any correct method passes.

# %%
def sample_top_p(logits, p, generator, temperature=1.0):
    ### BEGIN SOLUTION
    probs = torch.softmax(logits / temperature, dim=-1)  # (N, V)
    sorted_p, order = probs.sort(dim=-1, descending=True)  # (N, V)
    before = sorted_p.cumsum(-1) - sorted_p  # mass strictly before each token
    sorted_p = sorted_p.masked_fill(before >= p, 0.0)
    picked = torch.multinomial(sorted_p, 1, generator=generator)  # (N, 1) positions in sorted order
    return order.gather(-1, picked).squeeze(-1)  # (N,) token ids
    ### END SOLUTION


top_p_result = check_sample_top_p(sample_top_p)

# %% [markdown]
# ## 2. Greedy generation with a KV cache (3 points)
# `generate(model, idx, n, use_cache=True)`: append `n` greedy (argmax) tokens to `idx` (B, T) and
# return the whole sequence (B, T + n). The model is a course_lib GPT:
# * `model(ids).logits` is (B, T, V); the next token comes from the **last** position;
# * `cache = model.new_cache()` makes an empty cache; `model(ids, cache=cache)` appends the keys
#   and values of `ids` to it and continues positions from what is already cached.
#
# With `use_cache=True`, feed the prompt once, then **only the newest token** each step. With
# `use_cache=False`, feed the whole sequence each step. Both must give the same tokens.

# %%
@torch.no_grad()
def generate(model, idx, n, use_cache=True):
    ### BEGIN SOLUTION
    cache = model.new_cache() if use_cache else None
    step_input = idx
    for _ in range(n):
        logits = model(step_input, cache=cache).logits[:, -1]  # (B, V)
        nxt = logits.argmax(-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, nxt], dim=1)  # (B, T + 1)
        step_input = nxt if use_cache else idx
    return idx
    ### END SOLUTION


generate_result = check_generate(generate)

# %% [markdown]
# ## 3. Beam search with a length penalty (5 points)
# Greedy decoding commits to one token at a time. **Beam search** keeps the `num_beams` (k) best
# partial sequences ("beams") and extends them all, step by step. Write
# `beam_search(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True)`
# for one prompt `prompt` (T,) that returns `(sequence, score)`: the best finished hypothesis as a 1-D
# tensor (the prompt, its new tokens, the EOS token if it ended with one) and its score as a float. It
# must equal Hugging Face's `generate(num_beams=k, length_penalty=a, early_stopping=True, do_sample=False)`
# (transformers 5), which works like this:
# * A beam's **running score** is its sum of log-probabilities (`log_softmax` of the last position's
#   logits, in float32). The search starts from **one** beam, the prompt, with sum 0.
# * Each step, add every beam's sum to its V log-probabilities and take the best **2k** candidates
#   over all beams × vocabulary together (`topk` of the flattened (K, V) tensor; `index // V` is the
#   beam, `index % V` the token). Walk them best first:
#   * a candidate whose token is `eos_id` **finishes**, but only if it ranks among the first k;
#     an EOS candidate ranked lower is dropped. On the last step (`max_new_tokens` new tokens) every
#     candidate among the first k finishes, EOS or not;
#   * any other candidate becomes a running beam, until there are k of them (there always are:
#     at most k of the 2k end with EOS). A finished hypothesis is never extended again.
# * A finished hypothesis's **score** = sum of log-probabilities / L ** `length_penalty`, where L is
#   the number of **generated** tokens, the EOS token included (not the prompt). The finished list
#   keeps the k best scores. `length_penalty` > 0 favours longer hypotheses (the sum is negative),
#   < 0 shorter ones, 0 compares plain sums.
# * `early_stopping=True`: stop as soon as k hypotheses have finished (or after `max_new_tokens`
#   steps); return the best of the finished list.
#
# With `use_cache=False`, feed the k whole sequences each step. With `use_cache=True`, feed the prompt
# once, then only each beam's newest token; the beams change places every step, so first reorder the
# cache: `model.new_cache()` is a list with one cache per layer whose `.k` and `.v` are
# (beams, heads, T_cached, D); set `layer.k = layer.k[src]` (and `.v`), `src` the beam each kept
# candidate came from (the prompt's single row is copied k times by the same indexing).
#
# The check runs your function on small GPTs and asks for Hugging Face's answers on the same weights
# (`generate` on the copy `course_lib.interop.to_hf` makes; the course's tests prove the check's
# expected answers equal to it): the same sequence and the same score within 1e-4.

# %%
@torch.no_grad()
def beam_search(model, prompt, num_beams, max_new_tokens, eos_id, length_penalty=1.0, use_cache=True):
    ### BEGIN SOLUTION
    seqs = prompt[None]  # (1, T): the search starts from one beam, the prompt
    sums = torch.zeros(1)  # (1,): each running beam's sum of log-probabilities
    finished = []  # (score, sequence) of the best finished hypotheses, best first
    cache = model.new_cache() if use_cache else None
    fresh = seqs  # the tokens the model has not seen yet
    for length in range(1, max_new_tokens + 1):  # every candidate now has `length` new tokens
        logits = model(fresh, cache=cache).logits[:, -1]  # (K, V): one row per running beam
        totals = sums[:, None] + torch.log_softmax(logits.float(), dim=-1)  # (K, V)
        top, flat = totals.flatten().topk(2 * num_beams)  # (2k,): the best over all beams x vocabulary
        beam, token = flat // totals.size(1), flat % totals.size(1)  # (2k,) each: which beam, which token
        keep = []  # ranks of the candidates that stay running
        for rank in range(2 * num_beams):
            if token[rank] == eos_id or length == max_new_tokens:  # this hypothesis ends here
                if rank < num_beams:  # only a candidate ranked in the top num_beams may finish
                    sequence = torch.cat([seqs[beam[rank]], token[rank, None]])  # (T + length,)
                    finished.append((top[rank].item() / length ** length_penalty, sequence))
            elif len(keep) < num_beams:
                keep.append(rank)
        finished = sorted(finished, key=lambda pair: pair[0], reverse=True)[:num_beams]
        if len(finished) == num_beams or length == max_new_tokens:  # early_stopping=True
            break
        keep = torch.tensor(keep)  # (k,)
        seqs = torch.cat([seqs[beam[keep]], token[keep, None]], dim=1)  # (k, T + length)
        sums = top[keep]  # (k,)
        if use_cache:  # each kept candidate continues the cache row of the beam it came from
            for layer in cache:
                layer.k, layer.v = layer.k[beam[keep]], layer.v[beam[keep]]  # (k, H, T_cached, D)
        fresh = token[keep, None] if use_cache else seqs  # (k, 1), or the whole sequences
    score, best = finished[0]
    return best, score
    ### END SOLUTION


beam_result = check_beam_search(beam_search)

# %% [markdown]
# ## 4. Repetition penalty and no repeated n-grams (2 + 2 + 2 points)
# Greedy and beam search love loops ("the the the"). Two logits processors, as Hugging Face applies
# them before choosing a token; both take `logits` (B, V) for the next token and `input_ids` (B, T),
# each row's **whole** sequence so far (prompt and generated tokens), and return new logits (B, V)
# without changing the input:
#
# `repetition_penalty(logits, input_ids, penalty)`, the rule of CTRL (Keskar et al. 2019) as
# `RepetitionPenaltyLogitsProcessor` applies it: for every token that occurs in the row's `input_ids`,
# **once per distinct token** however often it occurred, make its logit less likely whatever its sign:
# a positive logit is **divided** by `penalty`, a negative one **multiplied** by it (dividing -2 would
# raise it). Other tokens keep their logit. `penalty` > 1 discourages repeats, < 1 rewards them.
#
# `no_repeat_ngram(logits, input_ids, n)`, as `NoRepeatNGramLogitsProcessor`: the next token would
# complete an n-gram with the row's last n - 1 tokens. For every complete n-gram already in the row
# (starts 0 .. T - n) whose first n - 1 tokens equal those last n - 1 tokens, set the logit of its
# last token to `-inf`. While T < n nothing is banned; with n = 1 every token seen so far is.

# %%
def repetition_penalty(logits, input_ids, penalty):
    ### BEGIN SOLUTION
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, input_ids, True)  # (B, V): once per distinct token
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # (B, V): always towards less likely
    return torch.where(seen, penalised, logits)  # (B, V)
    ### END SOLUTION


repetition_result = check_repetition_penalty(repetition_penalty)


# %%
def no_repeat_ngram(logits, input_ids, n):
    ### BEGIN SOLUTION
    banned = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
    T = input_ids.size(1)
    for b in range(input_ids.size(0)):
        ids = input_ids[b].tolist()
        prefix = ids[T - n + 1:] if n > 1 else []  # the last n - 1 tokens: what a new n-gram would start with
        for start in range(T - n + 1):  # every complete n-gram seen so far
            if ids[start:start + n - 1] == prefix:
                banned[b, ids[start + n - 1]] = True  # its last token would repeat it
    return logits.masked_fill(banned, float("-inf"))  # (B, V)
    ### END SOLUTION


ngram_result = check_no_repeat_ngram(no_repeat_ngram)

# %% [markdown]
# Now decode with them: `generate_penalized(model, idx, n, penalty=1.0, no_repeat_ngram_size=0)` appends
# `n` greedy tokens to `idx` (B, T) and returns (B, T + n), like part 2 without the cache, but each
# step's last-position logits (in float32) first go through `repetition_penalty` (when `penalty != 1`)
# and then `no_repeat_ngram` (when `no_repeat_ngram_size > 0`), both given the **whole sequence so
# far**, prompt included, as Hugging Face does for a decoder-only model. The check expects the tokens
# of `generate(do_sample=False, repetition_penalty=..., no_repeat_ngram_size=...)` on the same weights.

# %%
@torch.no_grad()
def generate_penalized(model, idx, n, penalty=1.0, no_repeat_ngram_size=0):
    ### BEGIN SOLUTION
    for _ in range(n):
        logits = model(idx).logits[:, -1].float()  # (B, V): the next token's logits
        if penalty != 1.0:
            logits = repetition_penalty(logits, idx, penalty)  # the whole sequence so far, prompt included
        if no_repeat_ngram_size > 0:
            logits = no_repeat_ngram(logits, idx, no_repeat_ngram_size)
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)  # (B, T + 1): greedy
    return idx  # (B, T + n)
    ### END SOLUTION


penalized_result = check_generate_penalized(generate_penalized)

# %% [markdown]
# ## Done?
# ✅ everywhere means 17/17: your sampler, your cached decoder, your beam search, your two
# processors and the decoder that uses them decide exactly as `course_lib.generation` and Hugging
# Face's `generate` do.
