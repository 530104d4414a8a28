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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/exercises/06_model_families.ipynb)

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
# # Exercise 06 · Model families
#
# Four pieces, each followed by its check: the decoder block of an encoder-decoder model,
# BERT's masking rule, T5's `shift_right`, and a complete GPT forward pass. Replace each
# `raise NotImplementedError()` with your code and run the check cell: ✅ means it matches the
# reference on every case; ❌ says which case failed and, for common mistakes, *why*.
# `hint("check_decoder_block")` gives a nudge, `solution("check_decoder_block")` the answer.
#
# Read `notebooks/06_model_families.ipynb` first.

# %% [markdown]
# **The exercises here** (about 90 minutes in all). Write each one yourself: the check refuses code that calls the thing it asks you to build, and the grader (`course_lib.checks`) is off limits everywhere. Everything else in torch is yours to use.
#
# | check | expected time | may not use |
# |---|---|---|
# | `check_decoder_block` | about 30 min | `torch.nn.TransformerDecoderLayer`, `course_lib.blocks.Block`, `course_lib.blocks.transformer_block` |
# | `check_mlm_mask` | about 20 min | `course_lib.models.bert.mlm_mask` |
# | `check_shift_right` | about 10 min | `course_lib.models.t5.shift_right` |
# | `check_gpt_forward` | about 30 min | `course_lib.models.gpt.GPT` |
#
# Stuck? `hint('check_…')` gives a nudge, `hint('check_…', 2)` the idea, `solution('check_…')` the code.

# %%
import torch
import torch.nn as nn

from course_lib.attention import CrossAttention, MultiHeadAttention, causal_mask
from course_lib.checks import check_decoder_block, check_gpt_forward, check_mlm_mask, check_shift_right, hint, solution
from course_lib.ffn import FeedForward
from course_lib.models.gpt import GPTConfig, gpt_block
from course_lib.norms import LayerNorm

torch.manual_seed(0)

# %% [markdown]
# ## 1. A decoder block with cross-attention (3 points)
# The sub-modules are built for you (course_lib's versions, so the check tests the wiring).
# Write `forward` as a **pre-LN** block with three residual steps:
#
# $$h_1 = x + \mathrm{SelfAttn}(\mathrm{LN}_1(x))\ \text{(causal)},\quad
#   h_2 = h_1 + \mathrm{CrossAttn}(\mathrm{LN}_2(h_1), \text{memory}),\quad
#   y = h_2 + \mathrm{FFN}(\mathrm{LN}_3(h_2))$$
#
# * self-attention: `self.attn(h, is_causal=True)` (or `self.attn(h, causal_mask(T))`);
# * cross-attention: `self.cross_attn(h, memory, memory_mask)`, queries from `h`, keys and
#   values from the encoder output `memory` (B, T_enc, C); `memory_mask` (B, 1, 1, T_enc) hides
#   the encoder's padding.

# %%
class DecoderBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attn_norm = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.cross_attn_norm = LayerNorm(d_model)
        self.cross_attn = CrossAttention(d_model, n_heads)
        self.ffn_norm = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_decoder_block(DecoderBlock)

# %% [markdown]
# ## 2. BERT's masking rule (3 points)
# `mlm_mask(input_ids, mask_token_id, vocab_size, p, special_ids)` returns
# `(masked_input_ids, labels)`:
# 1. choose each token with probability `p`, never a token whose id is in `special_ids`;
# 2. of the chosen: 80 % become `mask_token_id`, 10 % a random id in `[0, vocab_size)`, 10 % stay;
# 3. `labels` = the original id at chosen positions, `-100` everywhere else.
#
# Use `torch.rand` / `torch.randint` (the check seeds them) and do not modify `input_ids`.
# The check is statistical: over many draws your rates must fall within 5 standard deviations
# of the rule.

# %%
def mlm_mask(input_ids: torch.Tensor, mask_token_id: int, vocab_size: int, p: float = 0.15,
             special_ids=()) -> tuple[torch.Tensor, torch.Tensor]:
    # YOUR CODE HERE
    raise NotImplementedError()


check_mlm_mask(mlm_mask)

# %% [markdown]
# ## 3. T5's `shift_right` (2 points)
# The decoder input at step t is the label of step t - 1, starting with
# `decoder_start_token_id`; a `-100` (ignored label) is not a token, so it becomes
# `pad_token_id`. Do not modify `labels`.
#
# `[[5, 6, 7, -100]]` with start 0 and pad 0 → `[[0, 5, 6, 7]]`.

# %%
def shift_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError()


check_shift_right(shift_right)

# %% [markdown]
# ## 4. A GPT forward pass (3 points)
# Build GPT-2 from parts and write its forward. Use these names (the check copies your
# weights into course_lib's `GPT` by name):
# * `self.tok_emb`: `nn.Embedding(vocab_size, d_model)`; `self.pos_emb`: `nn.Embedding(max_positions, d_model)`;
# * `self.blocks`: an `nn.ModuleList` of `config.n_layers` blocks made by `gpt_block(config)`;
# * `self.final_norm`: `LayerNorm(d_model, eps=config.eps)`;
# * `self.lm_head`: `nn.Linear(d_model, vocab_size, bias=False)` **tied** to the token embedding.
#
# forward: `x = tok_emb(ids) + pos_emb(positions 0..T-1)`; each block `x = block(x, is_causal=True)`;
# return the logits `lm_head(final_norm(x))` of shape (B, T, vocab_size).

# %%
class MiniGPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # YOUR CODE HERE
        raise NotImplementedError()


check_gpt_forward(MiniGPT)

# %% [markdown]
# ## Done?
# All four ✅ means 11/11. Want more? `course_lib.interop.from_hf` turns a Hugging Face
# `GPT2LMHeadModel` into course_lib's `GPT`; copy its `state_dict()` into your `MiniGPT`
# (the names match) and compare the logits.
