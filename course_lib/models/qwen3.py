"""Qwen3 and Qwen3-MoE (Qwen Team 2025, "Qwen3 Technical Report", arXiv:2505.09388), read as LLaMA
plus the few parts that differ (§2 "Architecture"):

  * QK-norm: an RMSNorm on every head's query and key, after the projections and before RoPE
    (``course_lib.qk_norm``, placement "head"), which replaces the QKV bias of Qwen2;
  * otherwise LLaMA: pre-norm RMSNorm, SwiGLU, RoPE (base 1,000,000), grouped-query attention,
    an explicit ``head_dim`` (128 in every size, so H·D need not equal d_model);
  * Qwen3-MoE (§2, Table 2): each FFN is a mixture of 128 fine-grained SwiGLU experts of width
    768, of which a token uses 8, with *no shared expert*. The router is a softmax over all
    experts followed by top-k; with ``norm_topk_prob`` the k weights are divided by their sum.
    HF's ``decoder_sparse_step`` and ``mlp_only_layers`` let some layers keep a dense FFN.

The model is ``course_lib.models.llama.Llama`` with Qwen3's blocks; ``Qwen3Config(qk_norm=None)``
is LLaMA again, which is what the QK-norm demo at the end compares against.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.blocks import Block
from course_lib.config import check_choice, check_positive, check_positive_values, check_range, make_config
from course_lib.ffn import make_ffn
from course_lib.models.common import init_normal
from course_lib.models.llama import Llama, LlamaConfig, make_llama_ffn
from course_lib.models.sizes import ParamCount, llama_params
from course_lib.moe import SparseMoE
from course_lib.qk_norm import QK_NORMS, QKNormAttention


@dataclass
class Qwen3Config(LlamaConfig):
    """LlamaConfig plus ``qk_norm``: "head" (Qwen3), "projection" (OLMo 2's placement) or None (no
    QK-norm: LLaMA). The sizes default to LlamaConfig's, so a tiny config needs only what it
    changes; ``qwen3_8b_config()`` and ``qwen3_moe_config()`` are the published ones."""
    rope_theta: float = 1_000_000.0
    eps: float = 1e-6
    qk_norm: str | None = "head"

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "qk_norm", (*QK_NORMS, None), hint="'head' = Qwen3, None = no QK-norm")

    @property
    def family(self) -> str:
        return "Qwen3-MoE" if self.moe is not None else "Qwen3"


@dataclass
class Qwen3MoE:
    """The ``moe`` option of a Qwen3Config (Qwen3-30B-A3B by default): 128 experts of width 768,
    8 per token, softmax then top-k, renormalised when ``norm_topk_prob``; no shared expert.
    Layer i is sparse unless i is in ``dense_layers`` or (i + 1) is not a multiple of
    ``sparse_step`` (HF: mlp_only_layers, decoder_sparse_step); a dense layer has the model's d_ff."""
    n_experts: int = 128
    top_k: int = 8
    d_ff: int = 768  # each expert's hidden size (HF: moe_intermediate_size)
    norm_topk_prob: bool = True
    sparse_step: int = 1
    dense_layers: tuple[int, ...] = ()

    def __post_init__(self):
        self.dense_layers = tuple(self.dense_layers)
        check_positive(self, "n_experts", "top_k", "d_ff", "sparse_step")
        check_range(self, "top_k", 1, self.n_experts, integer=True,
                    hint=f"a token cannot pick more than the {self.n_experts} experts")

    def is_sparse(self, layer_idx: int) -> bool:
        return layer_idx not in self.dense_layers and (layer_idx + 1) % self.sparse_step == 0

    def build(self, cfg: LlamaConfig, layer_idx: int) -> nn.Module:
        if not self.is_sparse(layer_idx):
            return make_ffn(cfg.d_model, cfg.d_ff, cfg.activation, gated=True, bias=False)
        return SparseMoE(cfg.d_model, self.d_ff, self.n_experts, self.top_k, order="softmax_topk",
                         normalize=self.norm_topk_prob, activation=cfg.activation)


def qwen3_block(cfg: Qwen3Config, layer_idx: int) -> Block:
    """A LLaMA block whose attention normalises q and k per head."""
    attn = QKNormAttention(cfg.d_model, cfg.n_heads, qk_norm=cfg.qk_norm, eps=cfg.eps, n_kv_heads=cfg.n_kv_heads,
                           bias=cfg.attention_bias, dropout=cfg.dropout, head_dim=cfg.head_dim)
    return Block(attn, make_llama_ffn(cfg, layer_idx), cfg.d_model, norm_placement="pre", norm="rmsnorm",
                 eps=cfg.eps, dropout=cfg.dropout)


class Qwen3(Llama):
    """input_ids (B, T) -> ModelOutput(logits (B, T, V), ...): LLaMA's forward, cache and RoPE,
    with Qwen3's blocks. Qwen3-MoE is the same class with ``config.moe`` a ``Qwen3MoE``."""

    def __init__(self, config: Qwen3Config | None = None, **overrides):
        super().__init__(make_config(Qwen3Config, config, overrides, model="Qwen3"))
        cfg = self.config  # Llama built LLaMA blocks; Qwen3's replace them
        self.blocks = nn.ModuleList(qwen3_block(cfg, i) for i in range(cfg.n_layers))
        init_normal(self.blocks, std=0.02)


def qwen3_8b_config(**overrides) -> Qwen3Config:
    """Qwen3-8B's config.json (huggingface.co/Qwen/Qwen3-8B): 36 layers of 4096, 32 query / 8 key-value
    heads of 128 (H·D = d_model here), SwiGLU 12288, 151,936 tokens, an untied head."""
    base = dict(vocab_size=151936, d_model=4096, n_layers=36, n_heads=32, n_kv_heads=8, head_dim=128,
                d_ff=12288, max_positions=40960)
    return Qwen3Config(**{**base, **overrides})


def qwen3_moe_config(**overrides) -> Qwen3Config:
    """Qwen3-30B-A3B's config.json (huggingface.co/Qwen/Qwen3-30B-A3B): 48 layers of 2048, 32 query /
    4 key-value heads of 128, 128 experts of 768 with 8 per token in every layer."""
    base = dict(vocab_size=151936, d_model=2048, n_layers=48, n_heads=32, n_kv_heads=4, head_dim=128,
                d_ff=6144, max_positions=40960, moe=Qwen3MoE())
    return Qwen3Config(**{**base, **overrides})


# --------------------------------------------------------------------------- parameter counts
def qwen3_params(cfg: Qwen3Config) -> ParamCount:
    """LLaMA's count plus QK-norm's gains (and Qwen3-MoE's experts and routers).
    Qwen reports "non-embedding" parameters without the embedding table *and* without the untied
    LM head: that is ``blocks + other`` here (``non_embedding`` keeps the head, as Kaplan et al. do)."""
    count = llama_params(cfg)
    D, H, H_kv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    norm_gains = {"head": 2 * D, "projection": (H + H_kv) * D, None: 0}[cfg.qk_norm]
    count.blocks += cfg.n_layers * norm_gains
    moe = cfg.moe
    if isinstance(moe, Qwen3MoE):
        expert = 3 * cfg.d_model * moe.d_ff  # gate_proj, up_proj, down_proj of one expert
        dense_ffn = 3 * cfg.d_model * cfg.d_ff
        sparse = sum(moe.is_sparse(i) for i in range(cfg.n_layers))
        count.blocks += sparse * (moe.n_experts * expert + moe.n_experts * cfg.d_model - dense_ffn)  # + routers
        count.inactive = sparse * (moe.n_experts - moe.top_k) * expert
    elif moe is not None:
        raise TypeError(f"qwen3_params counts Qwen3MoE layers; got moe={type(moe).__name__}.")
    return count


# --------------------------------------------------------------------------- what QK-norm buys
def qk_norm_logit_growth(steps: int = 40, lr: float = 3e-2, seed: int = 0, d_model: int = 32, n_layers: int = 2,
                         n_heads: int = 4, T: int = 32, batch_size: int = 8, vocab_size: int = 32) -> dict:
    """Train the same tiny Qwen3 twice at a high learning rate, with and without QK-norm, on a
    copying task (the second half of every sequence repeats the first, so attention must become
    sharp), and record after every step the largest attention logit q·k/√D in any layer.

    Returns {"steps": [1..steps], "max_logit": {"qk-norm": [...], "none": [...]},
    "loss": {"qk-norm": [...], "none": [...]}}. Both runs see the same data and start from the
    same weights (apart from the norm gains, which start at 1). A few seconds on a laptop CPU."""
    check_positive_values("qk_norm_logit_growth", steps=steps, T=T, batch_size=batch_size)
    if T % 2:
        raise ValueError(f"T={T}: the copying task repeats the first half, so T must be even (e.g. T={T + 1}).")
    curves = {"steps": list(range(1, steps + 1)), "max_logit": {}, "loss": {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32-wide matrices: threads only add overhead (and fight other processes)
    try:
        for name, qk_norm in (("qk-norm", "head"), ("none", None)):
            curves["max_logit"][name], curves["loss"][name] = _train_tiny_qwen3(
                qk_norm, steps, lr, seed, d_model, n_layers, n_heads, T, batch_size, vocab_size)
    finally:
        torch.set_num_threads(threads)
    return curves


def _train_tiny_qwen3(qk_norm, steps, lr, seed, d_model, n_layers, n_heads, T, batch_size, vocab_size):
    """One run of qk_norm_logit_growth: (max logit per step, loss per step)."""
    torch.manual_seed(seed)
    model = Qwen3(Qwen3Config(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                              n_kv_heads=n_heads, head_dim=d_model // n_heads, d_ff=2 * d_model,
                              max_positions=T, rope_theta=10000.0, qk_norm=qk_norm))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    data = torch.Generator().manual_seed(seed + 1)
    max_logits, losses = [], []
    for _ in range(steps):
        half = torch.randint(0, vocab_size, (batch_size, T // 2), generator=data)  # (B, T/2)
        ids = torch.cat([half, half], dim=1)  # (B, T): the second half copies the first
        for block in model.blocks:
            block.attn.max_logits = []
        logits = model(ids[:, :-1]).logits  # (B, T-1, V)
        target = ids[:, T // 2:]  # (B, T/2): only the copied half can be predicted
        loss = F.cross_entropy(logits[:, T // 2 - 1:].reshape(-1, vocab_size), target.reshape(-1))  # (B·T/2, V)
        opt.zero_grad()
        loss.backward()
        opt.step()
        max_logits.append(max(m for block in model.blocks for m in block.attn.max_logits))
        losses.append(loss.item())
    return max_logits, losses
