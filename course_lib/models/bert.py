"""BERT (Devlin et al. 2019), read top to bottom: config -> embeddings -> encoder -> pooler ->
masked-language-model head.

  * embeddings: word + learned position + token type ("segment A/B", §3.2, Figure 2), then
    LayerNorm and dropout;
  * N post-LN encoder blocks, exactly the 2017 paper's: x = LN(x + Attn(x)); x = LN(x + FFN(x)),
    bidirectional attention (no causal mask; padding masked), GELU feed-forward of 4·C;
  * pooler: tanh(W · h_[CLS]) for sentence-level tasks (next-sentence prediction, §3.1);
  * MLM head: dense -> GELU -> LayerNorm -> a decoder that *shares* the word-embedding
    matrix, plus its own output bias (Task #1 "Masked LM", §3.1).

Hugging Face names map as: ``attention.self.query`` = ``attn.q_proj``, ``attention.output.dense``
= ``attn.o_proj``, ``attention.output.LayerNorm`` = ``attn_norm``, ``intermediate.dense`` =
``ffn.up_proj``, ``output.dense`` = ``ffn.down_proj``, ``output.LayerNorm`` = ``ffn_norm``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.attention import MultiHeadAttention, padding_mask
from course_lib.blocks import Block
from course_lib.config import check_divisible, check_positive, check_range, make_config
from course_lib.ffn import check_activation, get_activation, make_ffn
from course_lib.models.common import ModelOutput, check_input_ids, init_normal, run_blocks
from course_lib.norms import make_norm
from course_lib.positional import LearnedPositionalEmbedding


@dataclass
class BertConfig:
    """BERT-base by default (110M parameters)."""
    vocab_size: int = 30522
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    activation: str = "gelu"
    eps: float = 1e-12
    dropout: float = 0.1
    pad_token_id: int = 0

    def __post_init__(self):
        check_positive(self, "vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_positions",
                       "type_vocab_size")
        check_divisible(self, "d_model", "n_heads", why="each head gets d_model // n_heads channels")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        check_range(self, "pad_token_id", 0, self.vocab_size, high_inclusive=False, integer=True,
                    hint="a token id of the vocabulary")
        check_activation(self, hint="BERT: 'gelu'")


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings -> LayerNorm -> dropout. (B, T) -> (B, T, C)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_token_id)
        self.pos_emb = LearnedPositionalEmbedding(cfg.max_positions, cfg.d_model)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.norm = make_norm("layernorm", cfg.d_model, cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids=None, position_ids=None) -> torch.Tensor:
        T = input_ids.size(1)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)  # (T,)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # (B, T): everything is segment A
        x = self.tok_emb(input_ids) + self.pos_emb(position_ids) + self.type_emb(token_type_ids)  # (B, T, C)
        return self.drop(self.norm(x))


def bert_block(cfg: BertConfig) -> Block:
    attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, bias=True, dropout=cfg.dropout)
    ffn = make_ffn(cfg.d_model, cfg.d_ff, cfg.activation, bias=True)
    return Block(attn, ffn, cfg.d_model, norm_placement="post", norm="layernorm", eps=cfg.eps, dropout=cfg.dropout)


class Bert(nn.Module):
    """The bare encoder: input_ids (B, T) -> ModelOutput(last_hidden_state (B, T, C),
    pooler_output (B, C))."""

    def __init__(self, config: BertConfig | None = None, add_pooler: bool = True, **overrides):
        super().__init__()
        self.config = cfg = make_config(BertConfig, config, overrides, model="Bert")
        self.embeddings = BertEmbeddings(cfg)
        self.blocks = nn.ModuleList(bert_block(cfg) for _ in range(cfg.n_layers))
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model) if add_pooler else None
        init_normal(self, std=0.02)
        with torch.no_grad():
            self.embeddings.tok_emb.weight[cfg.pad_token_id].zero_()  # [PAD] starts as the zero vector

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """attention_mask (B, T): 1 = token, 0 = padding; no token attends to padding."""
        check_input_ids(input_ids, self.config.vocab_size)
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, C)
        mask = padding_mask(attention_mask, input_ids.shape)  # (B, 1, 1, T) or None
        h, maps = run_blocks(self.blocks, x, output_attentions, mask=mask)  # (B, T, C)
        pooled = None if self.pooler is None else torch.tanh(self.pooler(h[:, 0]))  # (B, C) from [CLS]
        return ModelOutput(last_hidden_state=h, pooler_output=pooled, attentions=maps)


class MLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> decoder (tied to the word embeddings) + bias."""

    def __init__(self, cfg: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = get_activation(cfg.activation)
        self.norm = make_norm("layernorm", cfg.d_model, cfg.eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.decoder.weight = word_embeddings.weight  # tied: scoring a word = matching its embedding

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(h))))  # (B, T, C) -> (B, T, V)


class BertForMaskedLM(nn.Module):
    """Bert (without pooler, like Hugging Face's) + the MLM head: -> ModelOutput(logits (B, T, V))."""

    def __init__(self, config: BertConfig | None = None, **overrides):
        super().__init__()
        self.config = cfg = make_config(BertConfig, config, overrides, model="BertForMaskedLM")
        self.bert = Bert(cfg, add_pooler=False)
        self.mlm_head = MLMHead(cfg, self.bert.embeddings.tok_emb)
        init_normal(self.mlm_head, std=0.02)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                output_attentions: bool = False) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions)
        out.logits = self.mlm_head(out.last_hidden_state)  # (B, T, V)
        return out


def mlm_mask(input_ids: torch.Tensor, mask_token_id: int, vocab_size: int, p: float = 0.15,
             special_ids=(), generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption (§3.1, Task #1; Appendix A.1): choose each non-special token
    with probability p; of the chosen, 80 % become [MASK], 10 % a random token, 10 % stay.
    Returns (corrupted input_ids, labels) with labels = the original id where chosen, -100
    elsewhere (ignored by the loss). The 10 % left unchanged still have to be predicted, so the
    model cannot learn that "only [MASK] positions matter"."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p!r}: expected a probability in [0, 1] (BERT: 0.15).")
    special = torch.isin(input_ids, torch.as_tensor(list(special_ids), dtype=input_ids.dtype,
                                                    device=input_ids.device))  # (B, T)
    draw = lambda q: torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < q  # noqa: E731
    chosen = draw(p) & ~special  # (B, T)
    to_mask = chosen & draw(0.8)  # 80 % of the chosen
    to_random = chosen & ~to_mask & draw(0.5)  # half of the remaining 20 % = 10 %
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    corrupted = input_ids.masked_fill(to_mask, mask_token_id)
    corrupted = torch.where(to_random, random_ids, corrupted)
    labels = input_ids.masked_fill(~chosen, -100)
    return corrupted, labels


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average of the token vectors, padding excluded: (B, T, C) -> (B, C). Sentence-BERT's
    default pooling (Reimers & Gurevych 2019, §3)."""
    if attention_mask is None:
        return last_hidden_state.mean(1)
    w = attention_mask.to(last_hidden_state.dtype)[..., None]  # (B, T, 1)
    return (last_hidden_state * w).sum(1) / w.sum(1).clamp(min=1e-9)  # (B, C)


def sentence_embedding(model: Bert, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence vector: mean pooling, then L2 normalisation -> (B, C) unit
    vectors, so a dot product is the cosine similarity."""
    h = model(input_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, C)
    return nn.functional.normalize(mean_pool(h, attention_mask), p=2, dim=-1)  # (B, C)
