"""Checks for exercise 06 (model families): a pre-LN decoder block with cross-attention,
BERT's MLM masking (checked statistically), T5's shift_right, and a GPT forward pass with a
tied head. Each misconception is a small re-creation of the mistake; the check names the one
whose outputs (or statistics) match the learner's."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from course_lib.models import t5 as ref_t5
from course_lib.models.gpt import GPT, GPTConfig, gpt_block
from course_lib.norms import LayerNorm
from .cases import Case, grade_function, randn
from .core import Mismatch, call_learner, compare, diagnose, register


def _instantiate(cls, what: str, *args) -> nn.Module:
    if not isinstance(cls, type):
        raise Mismatch(f"pass the class itself ({what}), not {type(cls).__name__}")
    m = call_learner(cls, *args)
    if not isinstance(m, nn.Module):
        raise Mismatch(f"{what} should subclass torch.nn.Module")
    return m


def _grade_in_order(cases: list, run_learner, run_reference, variants: dict) -> int:
    """Compare case by case; on the first wrong output, name the variant that matches the
    learner on every case so far (so a mistake that crashes on later cases is still named)."""
    outs, refs = [], []
    for i, (label, args) in enumerate(cases):
        with torch.no_grad():
            refs.append(run_reference(*args))
            outs.append(run_learner(*args))
        try:
            compare(outs[-1], refs[-1])
        except Mismatch as mm:
            runs = {k: (lambda v=v: [v(*a) for _, a in cases[:i + 1]]) for k, v in variants.items()}
            with torch.no_grad():
                key = diagnose(outs, runs, refs)
            raise Mismatch(mm.reason, f"case: {label}", key) from None
    return len(cases)


# ------------------------------------------------------------------ decoder block
def decoder_block_forward(block, x, memory, memory_mask=None):
    """Pre-LN decoder block (Vaswani et al. 2017, §3.1 with the norms moved to the inputs)."""
    x = x + block.attn(block.attn_norm(x), is_causal=True)  # causal self-attention
    x = x + block.cross_attn(block.cross_attn_norm(x), memory, memory_mask)  # K, V from the encoder
    return x + block.ffn(block.ffn_norm(x))  # (B, T, C)


def _decoder_variant(b, x, memory, memory_mask, kind):
    if kind == "post_ln":
        x = b.attn_norm(x + b.attn(x, is_causal=True))
        x = b.cross_attn_norm(x + b.cross_attn(x, memory, memory_mask))
        return b.ffn_norm(x + b.ffn(x))
    x = x + b.attn(b.attn_norm(x), is_causal=kind != "no_causal_mask")
    h = b.cross_attn_norm(x)
    if kind == "cross_attends_to_decoder":
        x = x + b.cross_attn(h, h)
    else:
        x = x + b.cross_attn(h, memory, None if kind == "memory_mask_ignored" else memory_mask)
    return x + b.ffn(b.ffn_norm(x))


DECODER_MISCONCEPTIONS = {
    "cross_attends_to_decoder": "the cross-attention takes its keys and values from the decoder's own states. "
                                "Queries come from the decoder, keys and values from the encoder: "
                                "self.cross_attn(h, memory, memory_mask).",
    "no_causal_mask": "the decoder's self-attention is not causal, so position t sees the tokens it must "
                      "predict. Call self.attn(h, is_causal=True) (or pass causal_mask(T)).",
    "post_ln": "the norms are applied after the residual add (post-LN, the 2017 layout). This block is "
               "pre-LN: x = x + sublayer(norm(x)).",
    "memory_mask_ignored": "memory_mask is not passed to the cross-attention, so the decoder attends to the "
                           "encoder's padding: self.cross_attn(h, memory, memory_mask).",
}


def _randomise_norms(m: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("attn_norm", "cross_attn_norm", "ffn_norm"):
            for pname, p in getattr(m, name).named_parameters():
                p.copy_((1.0 if pname == "weight" else 0.0) + 0.3 * torch.randn(p.shape, generator=g))


DECODER_SOLUTION = """import torch
import torch.nn as nn

# the sub-modules the exercise builds for you
from course_lib.attention import CrossAttention, MultiHeadAttention
from course_lib.ffn import FeedForward
from course_lib.norms import LayerNorm


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
        x = x + self.attn(self.attn_norm(x), is_causal=True)  # (B, T, C): causal self-attention
        x = x + self.cross_attn(self.cross_attn_norm(x), memory, memory_mask)  # (B, T, C): K, V from the encoder
        return x + self.ffn(self.ffn_norm(x))  # (B, T, C)
"""


@register("check_decoder_block", minutes=30,
          forbid=('torch.nn.TransformerDecoderLayer', 'course_lib.blocks.Block', 'course_lib.blocks.transformer_block', 'course_lib.checks'), points=3, reference=DECODER_SOLUTION, misconceptions=DECODER_MISCONCEPTIONS,
          hint="Three residual steps, each x = x + sublayer(norm(x)): causal self-attention "
               "self.attn(h, is_causal=True); cross-attention self.cross_attn(h, memory, memory_mask) "
               "(queries from the decoder, keys/values from the encoder); then self.ffn(h).")
def check_decoder_block(learner):
    g = torch.Generator().manual_seed(60)
    cases = []
    for i, (d, H, d_ff, dtype) in enumerate([(24, 3, 40, torch.float32), (16, 2, 24, torch.float64)]):
        torch.manual_seed(i)
        m = _instantiate(learner, "DecoderBlock", d, H, d_ff)
        for name in ("attn_norm", "attn", "cross_attn_norm", "cross_attn", "ffn_norm", "ffn"):
            if not isinstance(getattr(m, name, None), nn.Module):
                raise Mismatch(f"no sub-module called `{name}`; keep the __init__ given in the exercise")
        _randomise_norms(m, 60 + i)
        m = m.to(dtype).eval()
        x, memory = randn(2, 5, d, gen=g, dtype=dtype), randn(2, 7, d, gen=g, dtype=dtype)
        pad = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).bool()[:, None, None, :]  # (B, 1, 1, T_enc)
        label = f"d_model={d}, n_heads={H}, {dtype}, x (2, 5, {d}), memory (2, 7, {d})"
        cases += [(label + ", no memory_mask", (m, x, memory, None)),
                  (label + ", memory_mask (2, 1, 1, 7) with padding", (m, x, memory, pad))]

    def run_learner(m, x, memory, mask):
        x_in, mem_in = x.clone(), memory.clone()
        out = call_learner(m, x_in, mem_in) if mask is None else call_learner(m, x_in, mem_in, mask)
        if not (torch.equal(x_in, x) and torch.equal(mem_in, memory)):
            raise Mismatch("forward modified x or memory in place; compute new tensors instead")
        return out

    variants = {k: (lambda m, x, mem, mask, k=k: _decoder_variant(m, x, mem, mask, k)) for k in DECODER_MISCONCEPTIONS}
    return _grade_in_order(cases, run_learner, decoder_block_forward, variants)


# ------------------------------------------------------------------ MLM masking (statistical)
MLM_MISCONCEPTIONS = {
    "all_mask": "every chosen token becomes [MASK]. BERT's rule is 80 % [MASK], 10 % a random token, 10 % "
                "unchanged, so the model also learns to check tokens that look normal.",
    "labels_not_ignored": "labels hold a token id at positions that were not chosen. Only chosen positions "
                          "are predicted: put -100 (ignored by cross_entropy) everywhere else.",
    "specials_masked": "special tokens ([CLS], [SEP], [PAD]) were chosen. They carry no word to predict: "
                       "exclude positions whose id is in special_ids before choosing.",
    "ten_percent_of_rest": "about 2 % of the chosen tokens get a random token instead of 10 %: you drew 10 % of "
                           "the 20 % not turned into [MASK]. Draw half of that remaining 20 %.",
}

MLM_SPECIALS = (0, 1, 2)  # [PAD], [CLS], [SEP] of the check's toy vocabulary
MLM_MASK_ID, MLM_VOCAB = 3, 500


def _mlm_batch(gen: torch.Generator) -> torch.Tensor:
    ids = torch.randint(4, MLM_VOCAB, (48, 40), generator=gen)  # (B, T) ordinary tokens
    ids[:, 0] = 1  # [CLS]
    lengths = torch.randint(20, 40, (48,), generator=gen)
    ids[torch.arange(48), lengths - 1] = 2  # [SEP]
    ids[torch.arange(40)[None, :] >= lengths[:, None]] = 0  # [PAD] after it
    return ids


def _rate_ok(k: int, n: int, p: float, z: float = 5.0) -> bool:
    """Is k successes out of n consistent with probability p (z standard deviations)?"""
    return n > 0 and abs(k / n - p) <= z * math.sqrt(p * (1 - p) / n) + 1e-9


MLM_SOLUTION = """import torch


def mlm_mask(input_ids: torch.Tensor, mask_token_id: int, vocab_size: int, p: float = 0.15,
             special_ids=()) -> tuple[torch.Tensor, torch.Tensor]:
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype))  # (B, T)
    chosen = (torch.rand(input_ids.shape) < p) & ~special  # (B, T): the tokens to predict
    to_mask = chosen & (torch.rand(input_ids.shape) < 0.8)  # 80 % of the chosen
    to_random = chosen & ~to_mask & (torch.rand(input_ids.shape) < 0.5)  # half of the other 20 %: 10 %
    random_ids = torch.randint(vocab_size, input_ids.shape)  # (B, T)
    masked = input_ids.masked_fill(to_mask, mask_token_id)  # a new tensor: input_ids is left alone
    masked = torch.where(to_random, random_ids, masked)  # 10 % random; the other 10 % stay unchanged
    labels = input_ids.masked_fill(~chosen, -100)  # (B, T): -100 is ignored by F.cross_entropy
    return masked, labels
"""


@register("check_mlm_mask", minutes=20,
          forbid=('course_lib.models.bert.mlm_mask', 'course_lib.checks'), points=3, reference=MLM_SOLUTION, misconceptions=MLM_MISCONCEPTIONS,
          hint="chosen = (rand < p) & ~special; of the chosen: to_mask = rand < 0.8, to_random = the rest "
               "with probability 0.5; labels = input_ids where chosen, -100 elsewhere. Build new tensors "
               "(masked_fill / torch.where), never edit input_ids.")
def check_mlm_mask(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    g = torch.Generator().manual_seed(61)
    n = 0
    for p in (0.15, 0.4):
        tally = dict(selectable=0, chosen=0, masked=0, random=0, kept=0)
        for draw in range(6):
            ids = _mlm_batch(g)
            before = ids.clone()
            torch.manual_seed(1000 * draw + int(p * 100))
            out = call_learner(learner, ids, MLM_MASK_ID, MLM_VOCAB, p=p, special_ids=MLM_SPECIALS)
            if not torch.equal(ids, before):
                raise Mismatch("mlm_mask modified input_ids in place; build new tensors (clone / masked_fill)")
            _mlm_one(out, ids, p, tally)
            n += 1
        _mlm_rates(tally, p)
    return n


def _mlm_one(out, ids, p, tally) -> None:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Mismatch("mlm_mask should return a pair (masked_input_ids, labels)")
    new, labels = out
    for what, t in (("masked_input_ids", new), ("labels", labels)):
        if not isinstance(t, torch.Tensor) or t.shape != ids.shape or t.dtype != ids.dtype:
            raise Mismatch(f"{what} should be a {ids.dtype} tensor of shape {tuple(ids.shape)}, got "
                           f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    special = torch.isin(ids, torch.tensor(MLM_SPECIALS))
    if (new[special] != ids[special]).any():
        raise Mismatch("a special token was replaced", misconception="specials_masked")
    if torch.equal(labels[~special], ids[~special]):
        raise Mismatch("labels equal input_ids at every position", misconception="labels_not_ignored")
    if (labels[special] != -100).any():
        raise Mismatch("a special token has a label", misconception="specials_masked")
    chosen = labels != -100
    if (labels[chosen] != ids[chosen]).any():
        raise Mismatch("where labels are not -100 they must be the ORIGINAL token ids (what to predict)")
    if (new[~chosen] != ids[~chosen]).any():
        raise Mismatch("tokens that were not chosen (labels == -100) were changed; only chosen tokens are corrupted")
    if not ((new >= 0) & (new < MLM_VOCAB)).all():
        raise Mismatch(f"random replacement tokens must be ids in [0, vocab_size={MLM_VOCAB})")
    tally["selectable"] += int((~special).sum())
    tally["chosen"] += int(chosen.sum())
    tally["masked"] += int((new[chosen] == MLM_MASK_ID).sum())
    tally["kept"] += int((new[chosen] == ids[chosen]).sum())
    tally["random"] += int(((new[chosen] != ids[chosen]) & (new[chosen] != MLM_MASK_ID)).sum())


def _mlm_rates(t: dict, p: float) -> None:
    c = t["chosen"]
    rates = f"chosen {t['chosen'] / t['selectable']:.3f} of tokens (p={p}); of those [MASK] {t['masked'] / max(c, 1):.3f}, " \
            f"random {t['random'] / max(c, 1):.3f}, unchanged {t['kept'] / max(c, 1):.3f}"
    detail = f"over 6 batches of 48 x 40 tokens: {rates}; expected {p} / 0.8 / 0.1 / 0.1 within 5 standard deviations"
    if not _rate_ok(c, t["selectable"], p):
        raise Mismatch(f"the fraction of chosen tokens is {c / t['selectable']:.3f}, expected p={p}", detail)
    if t["masked"] > 0.97 * c:
        raise Mismatch("all chosen tokens became [MASK]", detail, "all_mask")
    if 0.005 * c < t["random"] < 0.05 * c:
        raise Mismatch(f"only {t['random'] / c:.1%} of the chosen tokens are random", detail, "ten_percent_of_rest")
    for key, expected in (("masked", 0.8), ("random", 0.1), ("kept", 0.1)):
        if not _rate_ok(t[key], c, expected):
            raise Mismatch(f"{t[key] / c:.3f} of the chosen tokens are {key}, expected {expected}", detail)


# ------------------------------------------------------------------ shift_right
SHIFT_MISCONCEPTIONS = {
    "keeps_minus_100": "-100 is left in the decoder input. It marks 'ignore in the loss' in labels but is not "
                       "a token id (the embedding lookup would fail): replace it with pad_token_id.",
    "shifted_left": "the labels are shifted left (labels[:, 1:]). The decoder input at step t is the label of "
                    "step t-1, so shift RIGHT: start token first, then labels[:, :-1].",
    "keeps_last_token": "the start token is prepended but the last label is kept, so the sequence is one token "
                        "longer. Drop the last label: labels[:, :-1].",
    "mutates_input": "labels were changed in place (e.g. labels[labels == -100] = pad); work on a copy.",
}


SHIFT_SOLUTION = """import torch


def shift_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    start = labels.new_full((labels.size(0), 1), decoder_start_token_id)  # (B, 1)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)  # (B, T): step t sees the label of step t - 1
    return shifted.masked_fill(shifted == -100, pad_token_id)  # -100 is not a token: pad instead
"""


@register("check_shift_right", minutes=10,
          forbid=('course_lib.models.t5.shift_right', 'course_lib.checks'), points=2, reference=SHIFT_SOLUTION, misconceptions=SHIFT_MISCONCEPTIONS,
          hint="start = a (B, 1) column of decoder_start_token_id; shifted = torch.cat([start, labels[:, :-1]], "
               "dim=1); then shifted.masked_fill(shifted == -100, pad_token_id).")
def check_shift_right(learner):
    g = torch.Generator().manual_seed(62)
    with_ignore = torch.randint(3, 50, (3, 6), generator=g)
    with_ignore[1, 4:] = -100
    with_ignore[2, 1:] = -100
    cases = [Case("labels (2, 5), start 0, pad 0", (torch.randint(3, 50, (2, 5), generator=g), 0, 0)),
             Case("labels (3, 6) with -100 tails, start 0, pad 0", (with_ignore, 0, 0)),
             Case("labels (3, 6) with -100 tails, start 2, pad 1", (with_ignore.clone(), 2, 1)),
             Case("labels (1, 1), start 5, pad 0", (torch.tensor([[7]]), 5, 0))]
    start = lambda lab, s: torch.full_like(lab[:, :1], s)  # noqa: E731  (B, 1)
    unpad = lambda t, p: t.masked_fill(t == -100, p)  # noqa: E731
    variants = {
        "keeps_minus_100": lambda lab, s, p: torch.cat([start(lab, s), lab[:, :-1]], 1),
        "shifted_left": lambda lab, s, p: unpad(torch.cat([lab[:, 1:], start(lab, p)], 1), p),
        "keeps_last_token": lambda lab, s, p: unpad(torch.cat([start(lab, s), lab], 1), p),
    }
    return grade_function(learner, cases, ref_t5.shift_right, variants, ("labels",))


# ------------------------------------------------------------------ GPT forward
class ReferenceMiniGPT(nn.Module):
    """GPT-2's forward: token + position embeddings -> causal pre-LN blocks -> final norm -> tied head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_positions, config.d_model)
        self.blocks = nn.ModuleList(gpt_block(config) for _ in range(config.n_layers))
        self.final_norm = LayerNorm(config.d_model, eps=config.eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one matrix embeds and scores tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.size(1)
        x = self.tok_emb(input_ids) + self.pos_emb(torch.arange(T, device=input_ids.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x, is_causal=True)  # (B, T, C)
        return self.lm_head(self.final_norm(x))  # (B, T, V)


def _gpt_variant(ref: GPT, learner, ids, kind):
    T = ids.size(1)
    x = ref.tok_emb(ids) + (0 if kind == "no_positions" else ref.pos_emb(torch.arange(T)))  # (B, T, C)
    for block in ref.blocks:
        x = block(x, is_causal=kind != "not_causal")
    h = x if kind == "no_final_norm" else ref.final_norm(x)
    if kind == "head_not_tied":
        head = getattr(learner, "lm_head", None)
        if head is None or head.weight is learner.tok_emb.weight:
            raise ValueError("no separate head")
        return h @ head.weight.t()
    return h @ ref.tok_emb.weight.t()


GPT_MISCONCEPTIONS = {
    "head_not_tied": "lm_head has its own weight matrix. GPT-2 ties it to the token embedding: "
                     "self.lm_head.weight = self.tok_emb.weight (one Parameter, shared).",
    "no_positions": "the position embedding is not added, so the model cannot tell token order apart "
                    "(attention is permutation-equivariant): x = tok_emb(ids) + pos_emb(arange(T)).",
    "no_final_norm": "the final LayerNorm is missing. GPT-2 adds one after the last block (pre-LN blocks leave "
                     "the residual stream un-normalised): logits = lm_head(final_norm(x)).",
    "not_causal": "the blocks are called without a causal mask, so each position sees the future tokens it "
                  "should predict: block(x, is_causal=True).",
}


def _gpt_reference(m: nn.Module, cfg: GPTConfig) -> GPT:
    ref = GPT(cfg).to(m.tok_emb.weight.dtype).eval()
    theirs = {k: v for k, v in m.state_dict().items() if k != "lm_head.weight"}
    missing = [k for k in ref.state_dict() if k not in theirs and k != "lm_head.weight"]
    if missing:
        raise Mismatch(f"no parameter {missing[0]!r}: name the parts tok_emb, pos_emb, blocks (built with "
                       "gpt_block(config)) and final_norm, as the exercise says")
    ref.load_state_dict(theirs, strict=False)
    return ref


GPT_SOLUTION = """import torch
import torch.nn as nn

# the parts the exercise hands you: lesson 03's pre-LN block (built by gpt_block) and LayerNorm
from course_lib.models.gpt import GPTConfig, gpt_block
from course_lib.norms import LayerNorm


class MiniGPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_positions, config.d_model)
        self.blocks = nn.ModuleList(gpt_block(config) for _ in range(config.n_layers))
        self.final_norm = LayerNorm(config.d_model, eps=config.eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one matrix embeds and scores tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.size(1)
        x = self.tok_emb(input_ids) + self.pos_emb(torch.arange(T))  # (B, T, C)
        for block in self.blocks:
            x = block(x, is_causal=True)  # (B, T, C)
        return self.lm_head(self.final_norm(x))  # (B, T, V)
"""


@register("check_gpt_forward", minutes=30,
          forbid=('course_lib.models.gpt.GPT', 'course_lib.checks'), points=3, reference=GPT_SOLUTION, misconceptions=GPT_MISCONCEPTIONS,
          hint="x = tok_emb(ids) + pos_emb(torch.arange(T)); each block: x = block(x, is_causal=True); "
               "logits = lm_head(final_norm(x)) with self.lm_head.weight = self.tok_emb.weight.")
def check_gpt_forward(learner):
    g = torch.Generator().manual_seed(63)
    cases = []
    for i, (cfg, dtype, T) in enumerate([
            (GPTConfig(vocab_size=37, max_positions=12, d_model=24, n_layers=2, n_heads=3), torch.float32, 9),
            (GPTConfig(vocab_size=29, max_positions=8, d_model=16, n_layers=1, n_heads=2), torch.float64, 8)]):
        torch.manual_seed(i)
        m = _instantiate(learner, "MiniGPT", cfg)
        for name in ("tok_emb", "pos_emb", "blocks", "final_norm"):
            if not isinstance(getattr(m, name, None), nn.Module):
                raise Mismatch(f"no sub-module called `{name}`; use the names given in the exercise")
        m = m.to(dtype).eval()
        ref = _gpt_reference(m, cfg)
        cases.append((f"vocab {cfg.vocab_size}, d_model {cfg.d_model}, {cfg.n_layers} layers, {dtype}, ids (2, {T})",
                      (m, ref, torch.randint(0, cfg.vocab_size, (2, T), generator=g))))

    def run_learner(m, ref, ids):
        out = call_learner(m, ids.clone())
        return getattr(out, "logits", out)

    variants = {k: (lambda m, ref, ids, k=k: _gpt_variant(ref, m, ids, k)) for k in GPT_MISCONCEPTIONS}
    n = _grade_in_order(cases, run_learner, lambda m, ref, ids: ref(ids).logits, variants)
    for _, (m, _, _) in cases:
        head = getattr(m, "lm_head", None)
        if head is not None and head.weight is not m.tok_emb.weight:
            raise Mismatch("lm_head.weight is a separate tensor (equal now, but training would update the two "
                           "copies apart)", misconception="head_not_tied")
    return n
