"""Residual wiring: ONE transformer block whose norm placement is a setting, shared by every
model family in the course.

  post   (Vaswani et al. 2017, §5.4; BERT):   x = Norm(x + Attn(x));  x = Norm(x + FFN(x))
  pre    (GPT-2 onward, LLaMA; Xiong 2020):   x = x + Attn(Norm(x));  x = x + FFN(Norm(x))
  parallel (GPT-J, PaLM §2):                   x = x + Attn(Norm(x)) + FFN(Norm(x))

The block takes already-built sub-modules, so attention can be MHA/GQA/sliding-window and
the FFN plain/gated/MoE: anything mapping (B, T, C) -> (B, T, C). Self-attention is called
``attn(h, **attn_kwargs)`` (e.g. ``mask=..., is_causal=True``). An optional cross-attention
sub-layer (decoder of T5 / the 2017 paper) is called ``cross_attn(h, memory, **cross_kwargs)``.

Norm names in checkpoints: attn_norm = GPT-2 ``ln_1`` = Llama ``input_layernorm`` = BERT
``attention.output.LayerNorm``; ffn_norm = GPT-2 ``ln_2`` = Llama ``post_attention_layernorm``
= BERT ``output.LayerNorm``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.attention import MultiHeadAttention
from course_lib.config import ConfigError, check_choice, check_positive, check_range
from course_lib.ffn import make_ffn
from course_lib.norms import NORMS, make_norm

PLACEMENTS = ("pre", "post", "parallel")


@dataclass
class BlockConfig:
    """How one block wires its sub-layers. ``eps`` None = the norm's usual default."""
    d_model: int = 64
    norm_placement: str = "pre"
    norm: str = "layernorm"
    eps: float | None = None
    dropout: float = 0.0
    norm_bias: bool = True
    shared_parallel_norm: bool = True  # GPT-J / PaLM: one norm feeds both branches
    cross_attention: bool = False

    def __post_init__(self):
        check_positive(self, "d_model")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        check_choice(self, "norm_placement", PLACEMENTS, hint="'pre' for GPT-2/LLaMA, 'post' for the 2017 paper/BERT")
        check_choice(self, "norm", tuple(NORMS))
        if self.norm_placement == "parallel" and self.cross_attention:
            raise ConfigError("BlockConfig: a 'parallel' block has no cross-attention sub-layer; use "
                              "norm_placement='pre' or 'post' for a decoder with cross-attention.")


def _first(out):
    """Some attention modules return (output, weights); the residual needs the output."""
    return out[0] if isinstance(out, tuple) else out


class Block(nn.Module):
    """A transformer block: self-attention, optional cross-attention, FFN, each with a
    residual connection and a norm placed as ``norm_placement`` says. x (B, T, C) -> (B, T, C)."""

    def __init__(self, attn: nn.Module, ffn: nn.Module, d_model: int, *, norm_placement: str = "pre",
                 norm: str = "layernorm", eps: float | None = None, cross_attn: nn.Module | None = None,
                 dropout: float = 0.0, norm_bias: bool = True, shared_parallel_norm: bool = True):
        super().__init__()
        self.config = cfg = BlockConfig(d_model, norm_placement, norm, eps, dropout, norm_bias,
                                        shared_parallel_norm, cross_attention=cross_attn is not None)
        new_norm = lambda: make_norm(cfg.norm, d_model, cfg.eps, bias=cfg.norm_bias)  # noqa: E731
        self.attn_norm, self.attn = new_norm(), attn
        self.cross_attn = cross_attn
        self.cross_attn_norm = new_norm() if cross_attn is not None else None
        shared = cfg.norm_placement == "parallel" and cfg.shared_parallel_norm
        self.ffn_norm, self.ffn = (None if shared else new_norm()), ffn
        self.dropout = nn.Dropout(dropout)  # on each branch before it joins the residual stream

    def forward(self, x: torch.Tensor, *, memory: torch.Tensor | None = None,
                cross_kwargs: dict | None = None, **attn_kwargs) -> torch.Tensor:
        if (memory is None) != (self.cross_attn is None):
            raise ValueError("pass `memory` (the encoder output, (B, T_enc, C)) exactly when the block "
                             "has a cross-attention sub-layer" +
                             (" — this one has none" if self.cross_attn is None else " — it is missing"))
        place = self.config.norm_placement
        if place == "parallel":
            return self._parallel(x, attn_kwargs)
        x = self._sublayer(x, self.attn_norm, lambda h: _first(self.attn(h, **attn_kwargs)), place)
        if self.cross_attn is not None:
            x = self._sublayer(x, self.cross_attn_norm,
                               lambda h: _first(self.cross_attn(h, memory, **(cross_kwargs or {}))), place)
        return self._sublayer(x, self.ffn_norm, self.ffn, place)

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, f, place: str) -> torch.Tensor:
        if place == "pre":
            return x + self.dropout(f(norm(x)))  # the residual stream itself is never normalised
        return norm(x + self.dropout(f(x)))  # post: Norm(x + Sublayer(x)), §5.4

    def _parallel(self, x: torch.Tensor, attn_kwargs: dict) -> torch.Tensor:
        h = self.attn_norm(x)  # (B, T, C)
        h_ffn = h if self.ffn_norm is None else self.ffn_norm(x)  # (B, T, C)
        a = _first(self.attn(h, **attn_kwargs))  # (B, T, C)
        return x + self.dropout(a) + self.dropout(self.ffn(h_ffn))  # (B, T, C)


def transformer_block(d_model: int, n_heads: int, d_ff: int, *, norm_placement: str = "pre",
                      norm: str = "layernorm", activation: str = "gelu", gated: bool = False,
                      bias: bool = True, n_kv_heads: int | None = None, dropout: float = 0.0) -> Block:
    """A ready-made block: course_lib MultiHeadAttention + FeedForward/GatedFeedForward."""
    attn = MultiHeadAttention(d_model, n_heads, n_kv_heads=n_kv_heads, bias=bias, dropout=dropout)
    ffn = make_ffn(d_model, d_ff, activation, gated=gated, bias=bias, dropout=dropout)
    return Block(attn, ffn, d_model, norm_placement=norm_placement, norm=norm, dropout=dropout,
                 norm_bias=bias)


# --------------------------------------------------------------------------- a small stack
class TinyTransformer(nn.Module):
    """Token embedding + learned positions + N blocks (+ a final norm unless post-LN) + a
    linear head: the smallest model that shows how norm placement behaves with depth."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, n_layers: int, n_heads: int,
                 d_ff: int | None = None, norm_placement: str = "pre", norm: str = "layernorm",
                 causal: bool = False):
        super().__init__()
        self.causal = causal
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(
            transformer_block(d_model, n_heads, d_ff or 4 * d_model, norm_placement=norm_placement, norm=norm)
            for _ in range(n_layers))
        # post-LN already ends every block with a norm; pre-LN and parallel need one at the end
        self.final_norm = nn.Identity() if norm_placement == "post" else make_norm(norm, d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab)."""
        T = idx.size(1)
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x, is_causal=self.causal)  # (B, T, C)
        return self.head(self.final_norm(x))  # (B, T, vocab)


def reverse_task(batch_size: int, length: int, vocab_size: int,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic task: input a random sequence of tokens, target the same sequence reversed.
    Returns (inputs, targets), both (B, T) int64. Every position must look at another one."""
    x = torch.randint(0, vocab_size, (batch_size, length), generator=gen)  # (B, T)
    return x, x.flip(1)  # (B, T)


def per_layer_grad_norms(model: TinyTransformer, param: str = "ffn.down_proj.weight") -> list[float]:
    """The gradient norm of one parameter (default: each FFN's output matrix) in every block,
    from the bottom layer to the top. Call after loss.backward()."""
    norms = []
    for i, block in enumerate(model.blocks):
        p = block.get_parameter(param)
        if p.grad is None:
            raise ValueError(f"block {i} has no gradient for {param!r}: call loss.backward() first.")
        norms.append(p.grad.norm().item())
    return norms
