"""T5 (Raffel et al. 2020), read top to bottom: config -> shift_right -> one stack (encoder or
decoder) -> the encoder-decoder model.

T5 is the 2017 encoder-decoder with four changes (§2.1, "Model"):
  * a "layer norm" that only rescales (RMS, no mean, no bias), placed *before* each sub-layer;
  * no bias in any linear layer;
  * no absolute positions: a learned scalar per (relative-distance bucket, head) is added to
    the attention scores. It is computed once, in the first layer, and shared by all layers
    of the stack (the encoder looks both ways, the decoder only back);
  * attention scores are *not* divided by √D (the initialisation absorbs it).
v1.0 uses a ReLU feed-forward and an LM head tied to the input embedding, rescaled by
d_model^-0.5 (Mesh TensorFlow); v1.1 uses gated-GELU (Shazeer 2020) and an untied head.

Decoder blocks: self-attention (causal) -> cross-attention (queries from the decoder, keys
and values from the encoder output) -> feed-forward; ``course_lib.blocks.Block`` wires them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import CrossAttention, padding_mask
from course_lib.blocks import Block
from course_lib.config import check_positive, check_range, make_config
from course_lib.ffn import check_activation, make_ffn
from course_lib.models.common import ModelOutput, cache_offset, check_input_ids, new_caches
from course_lib.norms import make_norm
from course_lib.positional import T5RelativeBias
from course_lib.positional_attention import PositionalAttention


@dataclass
class T5Config:
    """T5-small (v1.0) by default; ``t5_v1_1_config()`` gives T5 v1.1-small."""
    vocab_size: int = 32128
    d_model: int = 512
    head_dim: int = 64  # head size (HF: d_kv); n_heads * head_dim need not equal d_model
    d_ff: int = 2048
    n_layers: int = 6
    n_decoder_layers: int | None = None  # None = n_layers
    n_heads: int = 8
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    dropout: float = 0.1
    activation: str = "relu"
    gated: bool = False
    tie_weights: bool = True  # v1.0: tied head, logits = (h · d_model^-0.5) Eᵀ
    pad_token_id: int = 0
    decoder_start_token_id: int = 0

    def __post_init__(self):
        self.n_decoder_layers = self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers
        check_positive(self, "vocab_size", "d_model", "head_dim", "d_ff", "n_layers", "n_decoder_layers", "n_heads",
                       "num_buckets", "max_distance")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        for name in ("pad_token_id", "decoder_start_token_id"):
            check_range(self, name, 0, self.vocab_size, high_inclusive=False, integer=True,
                        hint="a token id of the vocabulary")
        check_activation(self,
                     hint="T5 v1.0: 'relu'; v1.1: 'gelu_tanh' with gated=True")

    @property
    def version(self) -> str:
        return "v1.1" if self.gated and not self.tie_weights else "v1.0" if not self.gated and self.tie_weights else "custom"


def t5_v1_1_config(**overrides) -> T5Config:
    """google/t5-v1_1-small: gated-GELU FFN of 1024, 8 + 8 layers, 6 heads, untied head."""
    base = dict(d_model=512, head_dim=64, d_ff=1024, n_layers=8, n_heads=6, activation="gelu_tanh",
                gated=True, tie_weights=False)
    return T5Config(**{**base, **overrides})


def shift_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Teacher forcing: the decoder input at step t is the label of step t-1, starting from the
    start token. -100 ("ignore in the loss") is not a token, so it becomes padding."""
    start = labels.new_full((labels.size(0), 1), decoder_start_token_id)  # (B, 1)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)  # (B, T)
    return shifted.masked_fill(shifted == -100, pad_token_id)


def t5_block(cfg: T5Config, decoder: bool) -> Block:
    attn = lambda: PositionalAttention(cfg.d_model, cfg.n_heads, bias=False, dropout=cfg.dropout,  # noqa: E731
                                       head_dim=cfg.head_dim, scale=1.0)
    cross = CrossAttention(cfg.d_model, cfg.n_heads, bias=False, dropout=cfg.dropout, head_dim=cfg.head_dim,
                           scale=1.0) if decoder else None
    ffn = make_ffn(cfg.d_model, cfg.d_ff, cfg.activation, gated=cfg.gated, bias=False)
    return Block(attn(), ffn, cfg.d_model, norm_placement="pre", norm="t5", eps=cfg.eps, cross_attn=cross,
                 dropout=cfg.dropout)


class T5Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal + cross-attention): blocks sharing one
    relative-position bias, then a final norm. embeddings (B, T, C) -> (B, T, C)."""

    def __init__(self, cfg: T5Config, decoder: bool):
        super().__init__()
        self.is_decoder = decoder
        n = cfg.n_decoder_layers if decoder else cfg.n_layers
        self.rel_bias = T5RelativeBias(cfg.n_heads, cfg.num_buckets, cfg.max_distance, bidirectional=not decoder)
        self.blocks = nn.ModuleList(t5_block(cfg, decoder) for _ in range(n))
        self.final_norm = make_norm("t5", cfg.d_model, cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask=None, memory=None, memory_mask=None, cache=None) -> torch.Tensor:
        T = x.size(1)
        offset = cache_offset(cache, len(self.blocks))
        bias = self.rel_bias(T, offset + T, offset)  # (1, H, T, T_k): once, for every layer
        extra = {"memory": memory, "cross_kwargs": {"mask": memory_mask}} if self.is_decoder else {}
        h = self.drop(x)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            h = block(h, mask=mask, bias=bias, is_causal=self.is_decoder,
                      cache=None if cache is None else cache[i], **extra)  # (B, T, C)
        return self.drop(self.final_norm(h))  # (B, T, C)


class T5(nn.Module):
    """T5ForConditionalGeneration: (input_ids (B, T_enc), decoder_input_ids (B, T)) ->
    ModelOutput(logits (B, T, V), last_hidden_state, encoder_last_hidden_state, loss)."""

    def __init__(self, config: T5Config | None = None, **overrides):
        super().__init__()
        self.config = cfg = make_config(T5Config, config, overrides, model="T5")
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)  # one table for encoder and decoder
        self.encoder = T5Stack(cfg, decoder=False)
        self.decoder = T5Stack(cfg, decoder=True)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_weights:
            self.lm_head.weight = self.shared.weight

    def reset_parameters(self) -> None:
        """Mesh TensorFlow's init (as in Hugging Face): N(0, 1) embeddings, and each matrix
        scaled by 1/√(fan-in) (queries by 1/√(d_model·D), since scores are not scaled)."""
        cfg = self.config
        for name, p in self.named_parameters():
            if "rel_bias" in name:
                std = cfg.d_model ** -0.5
            elif p.dim() < 2:
                continue  # norm gains stay 1
            elif name in ("shared.weight", "lm_head.weight"):
                std = 1.0
            elif name.endswith("q_proj.weight"):
                std = (cfg.d_model * cfg.head_dim) ** -0.5
            else:
                std = p.size(1) ** -0.5  # 1/sqrt(fan-in)
            nn.init.normal_(p, std=std)

    def new_cache(self, batch_size: int | None = None) -> list:
        """KV caches for the decoder's self-attention (cross-attention recomputes from memory)."""
        return new_caches(self.config.n_decoder_layers)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T_enc) -> encoder output (B, T_enc, C): the decoder's memory."""
        check_input_ids(input_ids, self.config.vocab_size)
        mask = padding_mask(attention_mask, input_ids.shape)  # (B, 1, 1, T_enc)
        return self.encoder(self.shared(input_ids), mask)  # (B, T_enc, C)

    def decode(self, decoder_input_ids, memory, attention_mask=None, decoder_attention_mask=None,
               cache=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits (B, T, V), decoder hidden states (B, T, C)); attention_mask is the encoder's."""
        check_input_ids(decoder_input_ids, self.config.vocab_size)
        B, T = decoder_input_ids.shape
        offset = cache_offset(cache, self.config.n_decoder_layers)
        mem_mask = padding_mask(attention_mask, (B, memory.size(1)))  # (B, 1, 1, T_enc)
        self_mask = padding_mask(decoder_attention_mask, (B, offset + T))  # (B, 1, 1, T_k)
        h = self.decoder(self.shared(decoder_input_ids), self_mask, memory, mem_mask, cache)  # (B, T, C)
        scaled = h * self.config.d_model ** -0.5 if self.config.tie_weights else h  # v1.0's rescale
        return self.lm_head(scaled), h  # (B, T, V), (B, T, C)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                labels=None, encoder_outputs=None, cache=None) -> ModelOutput:
        """Like Hugging Face: without decoder_input_ids, they are shift_right(labels); with labels,
        the loss is the mean cross-entropy over positions whose label is not -100."""
        cfg = self.config
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("T5 needs decoder_input_ids, or labels to build them with shift_right.")
            decoder_input_ids = shift_right(labels, cfg.decoder_start_token_id, cfg.pad_token_id)
        memory = encoder_outputs if encoder_outputs is not None else self.encode(input_ids, attention_mask)
        logits, h = self.decode(decoder_input_ids, memory, attention_mask, decoder_attention_mask, cache)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)  # (B*T, V)
        return ModelOutput(logits=logits, last_hidden_state=h, encoder_last_hidden_state=memory, loss=loss, cache=cache)
