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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/12_inside_attention.ipynb)

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
# # Exercise 12 · Measuring what heads do
#
# Lesson 12 measured, for every head, how much weight each token puts on the token just before
# it, whether a head copies from an earlier occurrence (induction), how information flows through
# all the layers (rollout), and what the model would predict after each layer (the logit lens).
# Here you write those measurements yourself, each graded against `course_lib.analysis`, and use
# them on the course's models. Read `notebooks/12_inside_attention.ipynb` first.

# %%
import torch
import torch.nn.functional as F

from course_lib.analysis import attention_maps
from course_lib.checks import (check_attention_rollout, check_induction_score, check_logit_lens_scores,
                               check_previous_token_score, hint, solution)
from course_lib.data import encoded_corpus, shakespeare_text
from course_lib.models.minilm import encode_batch, load_minilm, load_minilm_tokenizer
from course_lib.pretrained import shakespeare_gpt

# %% [markdown]
# ## 1. `previous_token_score(attn)` (2 points)
# `attn` has shape `(..., T, T)`: any leading axes (batch, heads), then **rows = queries** and
# **columns = keys**; each row sums to 1. Return a tensor of shape `(...)`: for each leading
# index, the mean over the queries `i = 1, ..., T-1` of `attn[..., i, i-1]`.
#
# Query 0 has no previous token, so it is **not** part of the mean: there are T-1 terms.
# A perfect previous-token head scores 1; a head that never looks one step back scores 0.

# %%
def previous_token_score(attn: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    below = attn.diagonal(offset=-1, dim1=-2, dim2=-1)  # (..., T-1): attn[..., i, i-1]
    return below.mean(-1)
    ### END SOLUTION


result = check_previous_token_score(previous_token_score)

# %% [markdown]
# ## 2. Use it on a real model
# MiniLM's first layer, one line of verse at a time (no padding, so every row is a real token):
# your score for each of its 12 heads, averaged over 50 lines. One head should stand out.

# %%
if result.passed:
    model, tokenizer = load_minilm(), load_minilm_tokenizer()
    lines = [ln.strip() for ln in shakespeare_text().splitlines() if len(ln.split()) >= 5][:50]
    total = torch.zeros(12)
    for line in lines:
        ids, _ = encode_batch(tokenizer, [line])
        layer0 = attention_maps(model, ids)[0]  # (1, H, T, T)
        total += previous_token_score(layer0)[0]
    scores = total / len(lines)
    print("layer-0 previous-token score per head:", [round(v, 2) for v in scores.tolist()])
    print(f"head {int(scores.argmax())} is a previous-token head (score {scores.max():.2f})")

# %% [markdown]
# ## 3. `induction_score(attn, period)` (2 points, about 15 minutes)
# An *induction head* (Olsson et al. 2022) completes a pattern it has seen before: at the second
# `A` of `... A B ... A`, it looks at the `B` that followed the first `A`, so the model can copy `B`.
# Lesson 12 measured it on strings that repeat: the sequence `x` satisfies `x[i] = x[i - period]`.
#
# Write `induction_score(attn, period)`: `attn` has shape `(B, H, T, T)` (rows = queries, columns =
# keys), the maps of such a repeating sequence. For a query `i >= period`, its own token occurred
# before at `i - period`, and the token that followed it sits at key **`i - period + 1`**. Return a
# tensor of shape `(H,)`: for each head, the mean over the batch and over the queries
# `i = period, ..., T-1` of `attn[b, h, i, i - period + 1]`. The first `period` queries have no
# earlier occurrence and are not part of the mean. A perfect induction head scores 1.
#
# **Not allowed:** `course_lib.analysis.weight_on_keys`, `course_lib.analysis.repeat_keys`,
# `course_lib.analysis.last_occurrence`, `course_lib.checks` (the check reads your code and watches it
# run). **Allowed:** `torch.arange`, indexing, `.diagonal`, `.mean` and every other plain tensor
# operation, and helpers of your own.

# %%
def induction_score(attn: torch.Tensor, period: int) -> torch.Tensor:
    ### BEGIN SOLUTION
    T = attn.size(-1)
    queries = torch.arange(period, T)  # (T - period,): the queries whose token occurred before
    keys = queries - period + 1  # (T - period,): the token that followed that earlier occurrence
    weight = attn[:, :, queries, keys]  # (B, H, T - period): each such query's weight on its key
    return weight.mean(dim=(0, 2))  # (H,): averaged over the batch and the queries
    ### END SOLUTION


induction_result = check_induction_score(induction_score)

# %% [markdown]
# ### Use it: does the shipped GPT copy?
# Lesson 12's test: 16 strings of random words, 60 characters each, every one repeated once, through
# the shipped Shakespeare GPT (6 layers × 4 heads). Your score for each head, next to the score of a
# head that spreads its weight evenly over every key it can see (a causal "uniform" head).

# %% tolerance={"abs": 0.002, "rel": 0.05}
if induction_result.passed:
    gpt, tok = shakespeare_gpt()
    words = sorted({w for w in shakespeare_text().lower().split() if w.isalpha()})
    g = torch.Generator().manual_seed(7)
    PERIOD = 60
    rows = []
    for _ in range(16):
        s = ""
        while len(s) < PERIOD - 1:
            s += words[int(torch.randint(len(words), (1,), generator=g))] + " "
        rows.append(tok.encode(s[:PERIOD - 1] + " ") * 2)  # (120,): the same 60 characters twice
    rep = torch.tensor(rows)  # (16, 120)
    maps_rep = attention_maps(gpt, rep)  # 6 layers, each (16, 4, 120, 120)
    induction = torch.stack([induction_score(m, PERIOD) for m in maps_rep])  # (6, 4): layer x head
    uniform = torch.ones(2 * PERIOD, 2 * PERIOD).tril()  # (120, 120): every visible key alike
    uniform = uniform / uniform.sum(-1, keepdim=True)
    print(f"e.g. {tok.decode(rows[0][:PERIOD])!r}, twice")
    print("induction score (rows: layers 0-5, columns: heads 0-3):")
    for layer, row in enumerate(induction.tolist()):
        print(f"  layer {layer}: " + "  ".join(f"{v:.3f}" for v in row))
    l, h = divmod(int(induction.argmax()), induction.size(1))
    baseline = induction_score(uniform[None, None], PERIOD)[0]  # the score of a head that looks everywhere alike
    print(f"strongest: layer {l}, head {h}, {induction.max():.3f}; a uniform causal head: {baseline:.3f}; "
          f"every head below it: {bool((induction < baseline).all())}")

# %% [markdown]
# No head of the shipped model is an induction head: the strongest puts about 0.01 of its weight on
# the token to copy, less than a head that looks everywhere alike. (Lesson 12 shows the other side:
# the model predicts the second copy no better than the first.)
#
# ## 4. `attention_rollout(maps, residual=0.5, head_fusion="mean")` (3 points, about 25 minutes)
# A layer's map says where *that layer* reads from, but its inputs are mixes made by the layers below.
# Abnar & Zuidema (2020, §3) follow the mixing down through every layer. For each layer `l`:
# * fuse its heads into one `(B, T, T)` map `A_l`: their mean (`head_fusion="mean"`, the paper's
#   choice), or their maximum or minimum at each entry (`"max"`, `"min"`, as in later rollout code);
#   any other value is a `ValueError`;
# * add the residual connection, through which each position keeps what it had:
#   `Ã_l = residual·I + (1 - residual)·A_l`;
# * renormalise every row of `Ã_l` to sum to 1 (divide by the row's sum; after a max or min over
#   heads the rows no longer sum to 1);
#
# then multiply the layers, the **last layer on the left**: `rollout = Ã_{L-1} · … · Ã_1 · Ã_0`, so that
# row `i` follows position `i` from the top down to the inputs. `maps` is a list of `(B, H, T, T)`
# tensors, layer 0 first; return `(B, T, T)`, where row `i` says how much of each input token
# reaches position `i` at the top. `residual` is the weight of the identity (the paper uses 0.5).
#
# **Not allowed:** `course_lib.analysis.attention_rollout`, `course_lib.checks` (the check reads your
# code and watches it run). **Allowed:** `torch.eye`, `@`, `torch.bmm`, `torch.einsum`, `.amax` and
# every other plain tensor operation, and helpers of your own. Do not change the maps in place.

# %%
def attention_rollout(maps: list, residual: float = 0.5, head_fusion: str = "mean") -> torch.Tensor:
    ### BEGIN SOLUTION
    T = maps[0].size(-1)
    eye = torch.eye(T, dtype=maps[0].dtype, device=maps[0].device)  # (T, T): the residual path
    rollout = None
    for attn in maps:  # layer 0 first
        if head_fusion == "mean":
            a = attn.mean(dim=1)  # (B, H, T, T) -> (B, T, T): the heads averaged
        elif head_fusion == "max":
            a = attn.amax(dim=1)  # (B, T, T): the strongest head at each entry
        elif head_fusion == "min":
            a = attn.amin(dim=1)  # (B, T, T): the weakest head at each entry
        else:
            raise ValueError(f"head_fusion={head_fusion!r}: expected 'mean', 'max' or 'min'")
        a = residual * eye + (1 - residual) * a  # (B, T, T): part of each position stays itself
        a = a / a.sum(dim=-1, keepdim=True)  # (B, T, T): every row sums to 1 again (max/min rows did not)
        rollout = a if rollout is None else a @ rollout  # (B, T, T): the later layer on the left
    return rollout
    ### END SOLUTION


rollout_result = check_attention_rollout(attention_rollout)

# %% [markdown]
# ### Use it: what MiniLM's sentence vector is made of
# MiniLM's sentence vector is the mean of its top-layer token vectors, so the mean row of the rollout
# says which input tokens it draws on. The answer depends on how much the residual is assumed to
# carry: here for three values of `residual`.

# %% tolerance={"abs": 0.002, "rel": 0.01}
if rollout_result.passed:
    minilm, wp = load_minilm(), load_minilm_tokenizer()
    one, _ = encode_batch(wp, ["The cat sat on the mat because it was tired."])
    pieces = [wp.itos[i] for i in one[0].tolist()]  # [CLS] the cat ... . [SEP]
    maps_one = attention_maps(minilm, one)  # 6 layers, each (1, 12, 13, 13)
    print("share of each input token in the sentence vector (the mean row of the rollout)")
    print("residual " + "".join(f"{p:>8}" for p in pieces))
    for r in (0.0, 0.5, 0.9):
        share = attention_rollout(maps_one, r)[0].mean(0)  # (T, T) -> (T,): what the mean-pooled vector draws on
        print(f"{r:8.1f} " + "".join(f"{v:8.3f}" for v in share.tolist()))

# %% [markdown]
# With the paper's 0.5, more than half of the sentence vector is attributed to `[CLS]`, a token with
# no word in it: every layer sends part of every row to the sink, and the product compounds it; among
# the words, the full stop gets the most. Assume instead that the residual carries 0.9 of each layer
# and `[CLS]` falls below a third while the words get nearly even shares (about 0.05 to 0.07 each).
# Rollout answers "where could information have come from" under an assumption; the table shows how
# much the answer depends on it.
#
# ## 5. `logit_lens_scores(streams, final_norm, unembed, targets)` (3 points, about 20 minutes)
# The logit lens (nostalgebraist 2020) reads the residual stream after every layer as if the model
# stopped there, and asks how good a prediction it would be. A pre-norm GPT reads its answer off the
# last stream `x` as `logits = final_norm(x) @ Wᵀ`, with `W` the `(V, C)` unembedding (the tied
# token embedding). The lens reads *every* stream the same way, norm included.
#
# Write `logit_lens_scores(streams, final_norm, unembed, targets)`: `streams` is a list of `L+1`
# tensors of shape `(B, T, C)` (after the embeddings, then after each block); `final_norm` is the
# model's final norm (a module: call it); `unembed` is `W`, shape `(V, C)`; `targets` `(B, T)` holds
# the next token of every position (already shifted: `targets[b, t]` is what position `t` should
# predict). Return a tuple `(losses, accuracy)`, each of shape `(L+1,)`: for each stream, the mean over
# the batch and positions of `-log p(targets[b, t])` (the next-token cross-entropy in nats), and the
# fraction of positions whose top logit is the target (between 0 and 1).
#
# **Not allowed:** `course_lib.analysis.logit_lens`, `course_lib.analysis.lens_scores`,
# `course_lib.checks` (the check reads your code and watches it run). **Allowed:** `log_softmax`,
# `F.cross_entropy` (you wrote your own in the capstone track; here the lens is the point),
# `.gather`, `.argmax` and every other tensor operation, and helpers of your own.

# %%
def logit_lens_scores(streams: list, final_norm, unembed: torch.Tensor, targets: torch.Tensor):
    ### BEGIN SOLUTION
    losses, accuracies = [], []
    for x in streams:  # x: (B, T, C), the residual stream after one layer
        logits = final_norm(x) @ unembed.T  # (B, T, C) @ (C, V) -> (B, T, V): read as the top layer is read
        log_probs = logits.log_softmax(dim=-1)  # (B, T, V)
        nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)  # (B, T): -log p(the next token)
        losses.append(nll.mean())  # 0-d: the mean over the batch and the positions
        correct = logits.argmax(dim=-1) == targets  # (B, T): the top guess is the next token
        accuracies.append(correct.float().mean())  # 0-d: the fraction guessed right
    return torch.stack(losses), torch.stack(accuracies)  # (L+1,) each: one per stream
    ### END SOLUTION


lens_result = check_logit_lens_scores(logit_lens_scores)

# %% [markdown]
# ### Use it: the shipped GPT, layer by layer
# 8 held-out windows of 128 characters. The streams come from running the model's own pieces by hand:
# embeddings, then each block in turn. Your scores with the final norm, and the losses of the same
# streams read *without* it (`torch.nn.Identity()` in its place), next to the model's own loss.

# %% tolerance={"abs": 0.005, "rel": 0.005, "pct": 0.3}
if lens_result.passed:
    gpt, tok = shakespeare_gpt()
    _, val = encoded_corpus(tok, "char")
    window = torch.from_numpy(val[:8 * 128 + 1].astype("int64"))  # (1025,)
    x_ids, y_ids = window[:-1].view(8, 128), window[1:].view(8, 128)  # (8, 128) each: y is x shifted by one
    with torch.no_grad():
        h = gpt.tok_emb(x_ids) + gpt.pos_emb(torch.arange(128))  # (8, 128, 256): the embeddings
        streams = [h]
        for block in gpt.blocks:
            h = block(h, is_causal=True)  # (8, 128, 256): the stream after this block
            streams.append(h)
        W = gpt.lm_head.weight  # (73, 256)
        loss, accuracy = logit_lens_scores(streams, gpt.final_norm, W, y_ids)  # (7,) each
        loss_no_norm, _ = logit_lens_scores(streams, torch.nn.Identity(), W, y_ids)  # (7,)
        model_loss = F.cross_entropy(gpt(x_ids).logits.flatten(0, 1), y_ids.flatten())
    print("read after     loss (nats/char)   top-1 accuracy   loss without the final norm")
    for l, (a, c, b) in enumerate(zip(loss.tolist(), accuracy.tolist(), loss_no_norm.tolist())):
        print(f"{'embeddings' if l == 0 else f'block {l - 1}':<12}   {a:16.3f}   {100 * c:12.1f} %   {b:27.3f}")
    print(f"the model's own loss: {model_loss:.3f} nats/char")

# %% [markdown]
# With the norm, the loss falls and the accuracy rises after every block, and the last row is the
# model's own loss (about 1.25 nats per character here). Without the norm, the top stream is read
# about 0.25 nats worse: the final norm is part of how the model reads its answer, so a lens without it
# measures a model that does not exist. Row 0 with the norm is far worse than uniform guessing
# (ln 73 ≈ 4.3): with a tied head an embedding scores its *own* character highest (lesson 12,
# section 7), not the next one.
#
# ## Done?
# Full points mean your functions compute what `course_lib.analysis` computes: `previous_token_score`
# and `HeadPatterns` (the head-pattern table), `weight_on_keys` with `repeat_keys` (the induction
# score), `attention_rollout`, and `logit_lens` with `lens_scores`. Stuck? `hint("check_…")` gives a
# nudge, `hint("check_…", 2)` the idea, and `solution("check_…")` the code.
