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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/06_model_families.ipynb)

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
# Seven pieces, each followed by its check: the decoder block of an encoder-decoder model,
# BERT's masking rule, T5's `shift_right`, a complete GPT forward pass, and T5's pre-training
# objective, span corruption, in three parts (the random span mask, inputs and targets, a batch). Replace each
# `raise NotImplementedError()` with your code and run the check cell: ✅ means it matches the
# reference on every case; ❌ says which case failed and, for common mistakes, *why*.
# `hint("check_decoder_block")` gives a nudge, `solution("check_decoder_block")` the answer.
#
# Read `notebooks/06_model_families.ipynb` first.

# %%
import torch
import torch.nn as nn

from course_lib.attention import CrossAttention, MultiHeadAttention, causal_mask
from course_lib.checks import (check_decoder_block, check_gpt_forward, check_mlm_mask, check_random_spans_noise_mask,
                               check_shift_right, check_span_corruption, check_t5_collate, hint, solution)
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
        ### BEGIN SOLUTION
        x = x + self.attn(self.attn_norm(x), is_causal=True)  # (B, T, C)
        x = x + self.cross_attn(self.cross_attn_norm(x), memory, memory_mask)  # (B, T, C)
        return x + self.ffn(self.ffn_norm(x))  # (B, T, C)
        ### END SOLUTION


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
    ### BEGIN SOLUTION
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype))  # (B, T)
    chosen = (torch.rand(input_ids.shape) < p) & ~special  # (B, T)
    to_mask = chosen & (torch.rand(input_ids.shape) < 0.8)
    to_random = chosen & ~to_mask & (torch.rand(input_ids.shape) < 0.5)  # half of the other 20 %
    random_ids = torch.randint(0, vocab_size, input_ids.shape)
    masked = torch.where(to_random, random_ids, input_ids.masked_fill(to_mask, mask_token_id))
    labels = input_ids.masked_fill(~chosen, -100)
    return masked, labels
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    start = torch.full((labels.size(0), 1), decoder_start_token_id, dtype=labels.dtype)  # (B, 1)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)  # (B, T)
    return shifted.masked_fill(shifted == -100, pad_token_id)
    ### END SOLUTION


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
        ### BEGIN SOLUTION
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_positions, config.d_model)
        self.blocks = nn.ModuleList(gpt_block(config) for _ in range(config.n_layers))
        self.final_norm = LayerNorm(config.d_model, eps=config.eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one Parameter, two uses
        ### END SOLUTION

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        T = input_ids.size(1)
        x = self.tok_emb(input_ids) + self.pos_emb(torch.arange(T, device=input_ids.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x, is_causal=True)  # (B, T, C)
        return self.lm_head(self.final_norm(x))  # (B, T, V)
        ### END SOLUTION


check_gpt_forward(MiniGPT)

# %% [markdown]
# ## 5. T5's span corruption, part a: the random span mask (3 points)
# T5 is pre-trained by *span corruption* (Raffel et al. 2020, §3.1.4 and §3.3): about 15 % of the
# tokens, in spans of mean length 3, are dropped from the encoder input, and the decoder learns to
# write them back. Write T5's procedure for choosing them,
# `random_spans_noise_mask(length, noise_density, mean_noise_span_length, generator)`, which returns
# a `torch.bool` tensor of shape `(length,)`, `True` at noise tokens:
# 1. `num_noise = round(length * noise_density)`, then kept between 1 and `length - 1`;
#    `num_spans = max(round(num_noise / mean_noise_span_length), 1)` (Python's `round`);
# 2. split the `num_noise` noise tokens into `num_spans` runs of length ≥ 1 at random, every split
#    equally likely (choose `num_spans - 1` of the `num_noise - 1` gaps between tokens as cut points,
#    without replacement); split the `length - num_noise` kept tokens into `num_spans` runs the same way;
# 3. lay the runs out alternately, **starting with kept tokens**: keep, noise, keep, noise, ...
#    (so every mask starts with a kept token and ends with a noise span).
#
# Draw all randomness from `generator` (e.g. `torch.randperm(n, generator=generator)`). The check
# tests the exact counts, the alternation, that the mask follows the generator, and, over hundreds of
# draws, that every split is equally likely. Example: `length=10, noise_density=0.3,
# mean_noise_span_length=1.5` has 3 noise tokens in 2 spans, e.g. `[F F T F F F F F T T]`.

# %%
def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            generator: torch.Generator) -> torch.Tensor:
    """T5's noise mask: (length,) bool, True at the tokens to corrupt."""
    ### BEGIN SOLUTION
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)

    def random_split(n):  # n items into num_spans non-empty runs, every split equally likely
        cuts = torch.randperm(n - 1, generator=generator)[: num_spans - 1].sort().values + 1
        return torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([n])]))  # (num_spans,)

    keep_lengths = random_split(length - num_noise)  # (S,)
    noise_lengths = random_split(num_noise)  # (S,)
    lengths = torch.stack([keep_lengths, noise_lengths], dim=1).flatten()  # (2 S,): keep, noise, keep, ...
    span_index = torch.repeat_interleave(torch.arange(2 * num_spans), lengths)  # (length,)
    return span_index % 2 == 1  # (length,): the odd spans are noise
    ### END SOLUTION


check_random_spans_noise_mask(random_spans_noise_mask)

# %% [markdown]
# ## 6. T5's span corruption, part b: inputs and targets (3 points)
# `span_corruption(ids, noise_mask, sentinel_start, eos_id)` takes one sequence `ids` (T,) and a mask
# from part a (T,) and returns `(inputs, targets)`, two 1-D tensors of `ids`' dtype:
# * **inputs**: `ids` with every noise span (a run of `True`) replaced by ONE sentinel id; the
#   sentinels count **down**: the first span gets `sentinel_start`, the second `sentinel_start - 1`, ...
#   (Hugging Face's T5 vocabulary: `<extra_id_0>` = 32099, `<extra_id_1>` = 32098, ...);
# * **targets**: the same with the mask inverted: every run of *kept* tokens becomes one sentinel, so
#   the targets are each noise span after its sentinel, plus one last sentinel if the sequence ends with
#   kept tokens (T5's `noise_span_to_unique_sentinel` applied to `~noise_mask`);
# * `eos_id` appended at the end of both.
#
# The masks start with a kept token, as every mask of part a does. Do not modify `ids`. The paper's
# Figure 2, "Thank you `for inviting` me to your party `last` week .":
# inputs "Thank you <X> me to your party <Y> week . </s>", targets "<X> for inviting <Y> last <Z> </s>".

# %%
def span_corruption(ids: torch.Tensor, noise_mask: torch.Tensor, sentinel_start: int,
                    eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T5's span corruption of one sequence: (inputs, targets), each ending with eos_id."""
    ### BEGIN SOLUTION
    def replace_runs(mask):  # every run of True in mask -> one sentinel, counting down
        prev = torch.cat([mask.new_zeros(1), mask[:-1]])  # (T,): was the token before in the mask?
        first = mask & ~prev  # (T,): the first token of each run
        sentinels = sentinel_start + 1 - torch.cumsum(first, dim=0)  # (T,): run 1 -> sentinel_start, ...
        out = torch.where(first, sentinels.to(ids.dtype), ids)[~(mask & prev)]  # (T',): one token per run
        return torch.cat([out, torch.tensor([eos_id], dtype=ids.dtype)])  # (T' + 1,)

    return replace_runs(noise_mask), replace_runs(~noise_mask)
    ### END SOLUTION


check_span_corruption(span_corruption)

# %% [markdown]
# ## 7. T5's span corruption, part c: a training batch (2 points)
# `t5_collate(examples, pad_id)` turns a list of `(inputs, targets)` pairs from part b (1-D `torch.long`
# tensors of different lengths) into the batch `T5ForConditionalGeneration` trains on, a dict of four
# `torch.long` tensors:
# * `"input_ids"` (B, T_in): the `inputs`, one per row, padded on the right with `pad_id` to the longest;
# * `"attention_mask"` (B, T_in): 1 at real tokens, 0 at padding;
# * `"labels"` (B, T_out): the `targets`, one per row, padded on the right with **-100** (ignored by the loss);
# * `"decoder_input_ids"` (B, T_out): the labels shifted right as in part 3, starting with `pad_id`
#   (T5's decoder start token) and with -100 read as `pad_id`.
#
# Do not modify the tensors in `examples`. The check compares with PyTorch's `pad_sequence`, which it
# therefore refuses in your code.

# %%
def t5_collate(examples: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded T5 training batch from (inputs, targets) pairs."""
    ### BEGIN SOLUTION
    B = len(examples)
    T_in = max(len(inputs) for inputs, _ in examples)
    T_out = max(len(targets) for _, targets in examples)
    input_ids = torch.full((B, T_in), pad_id, dtype=torch.long)  # (B, T_in)
    labels = torch.full((B, T_out), -100, dtype=torch.long)  # (B, T_out): -100 is ignored by the loss
    for b, (inputs, targets) in enumerate(examples):
        input_ids[b, : len(inputs)] = inputs
        labels[b, : len(targets)] = targets
    lengths = torch.tensor([len(inputs) for inputs, _ in examples])  # (B,)
    attention_mask = (torch.arange(T_in) < lengths[:, None]).long()  # (B, T_in)
    decoder_input_ids = torch.cat([torch.full((B, 1), pad_id), labels[:, :-1]], dim=1)  # (B, T_out)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == -100, pad_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "decoder_input_ids": decoder_input_ids}
    ### END SOLUTION


check_t5_collate(t5_collate)

# %% [markdown]
# ## Done?
# All seven ✅ means 19/19. Want more? `course_lib.interop.from_hf` turns a Hugging Face
# `GPT2LMHeadModel` into course_lib's `GPT`; copy its `state_dict()` into your `MiniGPT`
# (the names match) and compare the logits.
