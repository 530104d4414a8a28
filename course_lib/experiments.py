"""Small experiments with small language models, read top to bottom:
config -> model -> evaluation at any length -> scaling arithmetic -> one training run.

``ExperimentLM`` is a decoder-only LM in which every design choice the course has met is a
setting, so one experiment changes one of them and keeps the rest:

  position        "sinusoidal" (Vaswani et al. 2017 §3.5), "learned" (GPT-2), "rope" (Su et al.
                  2021), "alibi" (Press et al. 2022) or "none" (NoPE: the causal mask alone)
  norm_placement  "pre" (GPT-2 onward) or "post" (the 2017 paper)
  norm            "layernorm" or "rmsnorm"
  ffn             "gelu" (a plain FFN of d_ff) or "swiglu" (gated, 2/3·d_ff: the same parameters)
  n_kv_heads      n_heads = MHA, fewer = GQA, 1 = MQA
  rope_scaling    None, or RoPE stretched to longer contexts: position interpolation ("linear")
                  or NTK-aware scaling ("ntk"), ``course_lib.positional.RopeScaling`` (lesson 02)

It is built from the course's tested parts (``PositionalAttention``, ``Block``, ``make_ffn``, the
positional helpers), and returns plain logits (B, T, V), so ``course_lib.training.lm_loss`` and
``Trainer`` use it as they are. Every position type except "learned" runs at lengths longer than
the one it was trained on; "learned" raises ``LengthError`` there: it has no row to look up.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.positional_attention import PositionalAttention
from course_lib.blocks import Block
from course_lib.config import (ConfigError, check_choice, check_divisible, check_positive,
                               check_positive_values, check_range, make_config)
from course_lib.data import get_batch
from course_lib.ffn import ffn_params, make_ffn, matched_gated_d_ff
from course_lib.models.common import count_params, init_normal
from course_lib.models.sizes import ParamCount, attention_params
from course_lib.norms import make_norm
from course_lib.positional import (LearnedPositionalEmbedding, RopeScaling, alibi_bias, rope_cos_sin,
                                   sinusoidal_encoding)
from course_lib.training import History, TrainConfig, Trainer, lm_loss

POSITIONS = ("sinusoidal", "learned", "rope", "alibi", "none")
PLACEMENTS = ("pre", "post")
NORM_KINDS = ("layernorm", "rmsnorm")
FFN_KINDS = ("gelu", "swiglu")


class LengthError(ValueError):
    """A sequence is longer than a learned position table: there is no embedding to look up."""


# --------------------------------------------------------------------------- config
@dataclass
class ExperimentConfig:
    """One small causal LM. ``max_positions`` is the training length T (and the size of a learned
    position table). ``n_kv_heads`` None = n_heads (MHA). ``d_ff`` is the plain GELU FFN's hidden
    size (None = 4·d_model); SwiGLU gets ``matched_gated_d_ff(d_ff)`` = 2/3 of it, so both FFNs
    have the same number of weights. The None defaults are resolved by the properties
    ``kv_heads`` and ``ffn_hidden`` (not in place), so ``dataclasses.replace(cfg, d_model=32)``
    gives the defaults of the new size. ``rope_scaling`` (a ``RopeScaling`` or its dict, as in
    ``LlamaConfig``) stretches RoPE's angles; it adds no weights, so a trained model's state dict
    loads into ``ExperimentLM(replace(cfg, rope_scaling=...))`` as it is."""
    vocab_size: int = 65
    max_positions: int = 64  # the context length, as in GPTConfig and LlamaConfig
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_ff: int | None = None
    position: str = "learned"
    norm_placement: str = "pre"
    norm: str = "layernorm"
    ffn: str = "gelu"
    dropout: float = 0.0
    bias: bool = False  # no biases anywhere (LLaMA-style): the parameter counts stay simple
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | dict | None = None  # position interpolation or NTK (lesson 02)

    def __post_init__(self):
        check_positive(self, "vocab_size", "max_positions", "d_model", "n_layers", "n_heads")
        check_positive(self, "n_kv_heads", "d_ff", allow_none=True)
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        check_choice(self, "position", POSITIONS)
        check_choice(self, "norm_placement", PLACEMENTS)
        check_choice(self, "norm", NORM_KINDS)
        check_choice(self, "ffn", FFN_KINDS)
        check_divisible(self, "d_model", "n_heads", why="each head gets d_model // n_heads channels")
        if self.n_kv_heads is not None:  # None = n_heads, which always divides
            check_divisible(self, "n_heads", "n_kv_heads",
                            why=f"each key/value head serves the same number of query heads "
                                f"(n_kv_heads={self.n_heads} = MHA, 1 = MQA)")
        if self.position == "rope" and self.head_dim % 2:  # a rule of RoPE, not of the sizes alone
            raise ConfigError(f"ExperimentConfig.d_model={self.d_model}: expected an even head size d_model // "
                              f"n_heads for RoPE, which rotates pairs of features (got {self.head_dim}); "
                              f"e.g. d_model={(self.head_dim + 1) * self.n_heads}.")
        if self.position == "sinusoidal" and self.d_model % 2:
            raise ConfigError(f"ExperimentConfig.d_model={self.d_model}: expected an even d_model for sinusoidal "
                              f"positions, which come in sin/cos pairs (e.g. d_model={self.d_model + self.n_heads}).")
        check_range(self, "rope_theta", 0, math.inf, low_inclusive=False, hint="e.g. rope_theta=10000.0")
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        if not (self.rope_scaling is None or isinstance(self.rope_scaling, RopeScaling)):
            raise ConfigError(f"ExperimentConfig.rope_scaling={self.rope_scaling!r}: expected None, a RopeScaling or "
                              f"its dict, e.g. rope_scaling={{'kind': 'ntk', 'factor': 4.0}}.")
        if self.rope_scaling is not None and self.position != "rope":
            raise ConfigError(f"ExperimentConfig.rope_scaling={self.rope_scaling}: only RoPE has angles to scale, "
                              f"but position={self.position!r}; use position='rope' or rope_scaling=None.")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_heads (MHA), fewer (GQA) or 1 (MQA)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def ffn_hidden(self) -> int:
        """The FFN's hidden width: d_ff for GELU, round(2/3·d_ff) for SwiGLU (Shazeer 2020 §2)."""
        plain = 4 * self.d_model if self.d_ff is None else self.d_ff
        return plain if self.ffn == "gelu" else matched_gated_d_ff(plain)


# --------------------------------------------------------------------------- parameter count
def norm_params(cfg: ExperimentConfig) -> int:
    """γ (and β for a LayerNorm with biases) of one norm."""
    return cfg.d_model * (2 if cfg.norm == "layernorm" and cfg.bias else 1)


def experiment_params(cfg: ExperimentConfig) -> ParamCount:
    """The parameter count an ``ExperimentConfig`` implies, part by part, from the formulas alone."""
    C = cfg.d_model
    attn = attention_params(C, cfg.n_heads, cfg.head_dim, cfg.kv_heads, bias=cfg.bias)
    ffn = ffn_params(C, cfg.ffn_hidden, gated=cfg.ffn == "swiglu", bias=cfg.bias)
    block = attn + ffn + 2 * norm_params(cfg)  # two norms per block
    position_table = cfg.max_positions * C if cfg.position == "learned" else 0  # other schemes train nothing
    return ParamCount(embeddings=cfg.vocab_size * C + position_table, blocks=cfg.n_layers * block,
                      head=0,  # the LM head shares the token embedding (weight tying)
                      other=0 if cfg.norm_placement == "post" else norm_params(cfg))  # the final norm


# --------------------------------------------------------------------------- model
class ExperimentLM(nn.Module):
    """Token embedding (+ absolute positions) -> n_layers Blocks (+ a final norm unless post-LN)
    -> tied LM head. input_ids (B, T) -> logits (B, T, V); T may exceed ``config.max_positions``
    unless ``position == "learned"``."""

    def __init__(self, config: ExperimentConfig | None = None, **overrides):
        super().__init__()
        self.config = cfg = make_config(ExperimentConfig, config, overrides, model="ExperimentLM")
        C = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, C)
        self.pos_emb = LearnedPositionalEmbedding(cfg.max_positions, C) if cfg.position == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(self._block() for _ in range(cfg.n_layers))
        # post-LN already ends every block with a norm; pre-LN needs one before the head
        self.final_norm = nn.Identity() if cfg.norm_placement == "post" else self._norm()
        self.lm_head = nn.Linear(C, cfg.vocab_size, bias=False)
        self.reset_parameters()
        self.lm_head.weight = self.tok_emb.weight  # weight tying (Press & Wolf 2017)

    def _norm(self) -> nn.Module:
        return make_norm(self.config.norm, self.config.d_model, bias=self.config.bias)

    def _block(self) -> Block:
        cfg = self.config
        attn = PositionalAttention(cfg.d_model, cfg.n_heads, n_kv_heads=cfg.kv_heads, bias=cfg.bias,
                                  dropout=cfg.dropout)
        act, gated = ("gelu", False) if cfg.ffn == "gelu" else ("silu", True)
        ffn = make_ffn(cfg.d_model, cfg.ffn_hidden, act, gated=gated, bias=cfg.bias, dropout=cfg.dropout)
        return Block(attn, ffn, cfg.d_model, norm_placement=cfg.norm_placement, norm=cfg.norm,
                     dropout=cfg.dropout, norm_bias=cfg.bias)

    def reset_parameters(self) -> None:
        """GPT-2 §2.3: N(0, 0.02) weights, and the two projections per block that write into the
        residual stream scaled by 1/√(2·n_layers). With sinusoidal positions the token embedding
        starts at N(0, 1/d_model) instead, so that once multiplied by √d_model (§3.4 of the 2017
        paper) token vectors and the fixed table have the same size."""
        init_normal(self, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith(("attn.o_proj.weight", "ffn.down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layers))
        if self.config.position == "sinusoidal":
            nn.init.normal_(self.tok_emb.weight, std=self.config.d_model ** -0.5)

    def position_inputs(self, T: int, device: torch.device, dtype: torch.dtype = torch.float32) -> dict:
        """What each attention layer needs for positions: RoPE's (cos, sin), ALiBi's score bias,
        or nothing (absolute schemes are added to the embeddings; NoPE has none)."""
        cfg = self.config
        if cfg.position == "rope":
            pos = torch.arange(T, device=device)  # (T,)
            angle_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            cos, sin = rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta, layout="half", scaling=cfg.rope_scaling,
                                    dtype=angle_dtype)  # (T, D)
            return {"rotary": (cos.to(dtype), sin.to(dtype))}
        if cfg.position == "alibi":
            return {"bias": alibi_bias(cfg.n_heads, T, T).to(device, dtype)}  # (H, T, T): -slope·distance
        return {}

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings plus absolute positions (sinusoidal or learned): (B, T) -> (B, T, C)."""
        cfg = self.config
        T = input_ids.size(1)
        x = self.tok_emb(input_ids)  # (B, T, C)
        if cfg.position == "learned":
            if T > cfg.max_positions:
                raise LengthError(f"position='learned' has a table of {cfg.max_positions} positions (the training "
                                  f"context), but this input has {T} tokens: there is no embedding for "
                                  f"position >= {cfg.max_positions}, so a learned table cannot extrapolate. Use "
                                  f"inputs of at most {cfg.max_positions} tokens, or another position scheme.")
            x = x + self.pos_emb(torch.arange(T, device=input_ids.device))  # (B, T, C)
        elif cfg.position == "sinusoidal":
            # §3.4: the (tied) embedding is multiplied by √d_model; with the init above its vectors
            # then have entries of size ~1, like the fixed table's (in [-1, 1])
            x = x * math.sqrt(cfg.d_model) + sinusoidal_encoding(T, cfg.d_model, dtype=x.dtype, device=x.device)
        return x

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError("input_ids must be an integer tensor of shape (batch, time), got "
                             f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                             f"{tuple(getattr(input_ids, 'shape', ()))}; add a batch axis with ids[None].")
        x = self.drop(self.embed(input_ids))  # (B, T, C)
        extra = self.position_inputs(input_ids.size(1), input_ids.device, x.dtype)
        for block in self.blocks:
            x = block(x, is_causal=True, **extra)  # (B, T, C)
        return self.lm_head(self.final_norm(x))  # (B, T, V)


# --------------------------------------------------------------------------- evaluation at a length
@torch.no_grad()
def eval_at_length(model: nn.Module, data, length: int, n_batches: int = 8, batch_size: int = 16,
                   generator: torch.Generator | None = None) -> float:
    """Mean next-token cross-entropy (nats per token) over ``n_batches`` batches of
    ``batch_size`` random windows of ``length`` tokens from the 1-D token array ``data``.

    Windows are drawn by ``course_lib.data.get_batch`` with ``generator`` (so the same seed gives
    the same windows for every model); the model runs in eval mode (no dropout) without autograd,
    and is left in the mode it was in."""
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length={length!r}: expected a positive number of tokens per window.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        losses = []
        for _ in range(n_batches):
            x, y = get_batch(data, batch_size, length, generator, device)  # (B, T) each; y = x shifted by one
            losses.append(lm_loss(model, x, y).item())  # mean over the B·T predictions
    finally:
        model.train(was_training)
    return float(np.mean(losses))  # every batch has B·T predictions, so this is the mean over all


@torch.no_grad()
def loss_by_position(model: nn.Module, data, length: int, n_batches: int = 8, batch_size: int = 16,
                     generator: torch.Generator | None = None, window: int | None = None) -> torch.Tensor:
    """(length,) mean loss of the prediction made at each position of a `length`-token sequence.

    ``window=None``: the windows of ``eval_at_length`` (the same ones for the same generator), so
    the mean of the result equals it. ``window=W`` (a multiple of `length`): draw windows of W
    tokens instead and cut each into W / length pieces, each fed as a sequence of its own. Every
    `length` then predicts exactly the same tokens of the same text, and a difference between
    lengths comes from the context alone (Press et al. 2022 score non-overlapping pieces so)."""
    window = length if window is None else window
    if not isinstance(length, int) or length < 1 or not isinstance(window, int) or window % length:
        raise ValueError(f"length={length!r}, window={window!r}: expected a positive length that divides the "
                         f"window (e.g. window={4 * length if isinstance(length, int) else 128}).")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        total = torch.zeros(length, dtype=torch.float64)
        for _ in range(n_batches):
            x, y = get_batch(data, batch_size, window, generator, device)  # (B, W) each
            x, y = x.reshape(-1, length), y.reshape(-1, length)  # (B·W/length, length): the pieces
            logits = model(x)  # (B', length, V)
            nll = F.cross_entropy(logits.transpose(1, 2).float(), y, reduction="none")  # (B', length)
            total += nll.double().mean(0).cpu()  # (length,)
    finally:
        model.train(was_training)
    return (total / n_batches).float()  # (length,)


# --------------------------------------------------------------------------- scaling arithmetic
class PowerLaw(NamedTuple):
    """loss ≈ coefficient · N^(−exponent), fitted in log–log space; r2 is the fit's R² there."""
    coefficient: float
    exponent: float
    r2: float

    def __call__(self, n) -> np.ndarray:
        return self.coefficient * np.asarray(n, dtype=np.float64) ** (-self.exponent)


def fit_power_law(n, loss) -> PowerLaw:
    """Least squares of log(loss) = log(a) − α·log(N): a straight line on log–log axes.
    Returns PowerLaw(a, α, R²). Kaplan et al. 2020 (Eq. 1.1) write it L = (N_c / N)^α_N."""
    n, loss = np.asarray(n, dtype=np.float64).ravel(), np.asarray(loss, dtype=np.float64).ravel()
    if n.shape != loss.shape:
        raise ValueError(f"fit_power_law needs one loss per size, got {n.size} sizes and {loss.size} losses.")
    if n.size < 2 or np.unique(n).size < 2:
        raise ValueError(f"fit_power_law needs at least two different sizes, got {n.tolist()}.")
    if not (np.all(n > 0) and np.all(loss > 0) and np.all(np.isfinite(n)) and np.all(np.isfinite(loss))):
        raise ValueError("fit_power_law takes logarithms: every size and loss must be finite and > 0, got "
                         f"sizes {n.tolist()} and losses {loss.tolist()}.")
    x, y = np.log(n), np.log(loss)
    slope, intercept = np.polyfit(x, y, 1)  # y ≈ slope·x + intercept
    residual = y - (slope * x + intercept)
    spread = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - np.sum(residual ** 2) / spread if spread > 0 else 1.0
    return PowerLaw(float(np.exp(intercept)), float(-slope), float(r2))


def training_flops(n_params: float, n_tokens: float) -> float:
    """C ≈ 6·N·D (Kaplan et al. 2020 §2.1): 2 FLOPs per parameter per token forward (a multiply and
    an add), twice that backward. N is the non-embedding parameter count, D the training tokens."""
    if not (n_params > 0 and n_tokens > 0):
        raise ValueError(f"training_flops needs positive N and D, got n_params={n_params}, n_tokens={n_tokens}.")
    return 6.0 * n_params * n_tokens


def compute_optimal(c_flops: float, tokens_per_param: float = 20.0) -> tuple[float, float]:
    """The (N, D) that spend a budget of ``c_flops`` with D = tokens_per_param·N (Hoffmann et al.
    2022, "Chinchilla": about 20 tokens per parameter). From C = 6·N·D = 6·r·N²:
    N = √(C / 6r), D = r·N."""
    if not (c_flops > 0 and tokens_per_param > 0):
        raise ValueError(f"compute_optimal needs a positive budget and ratio, got c_flops={c_flops}, "
                         f"tokens_per_param={tokens_per_param}.")
    n = math.sqrt(c_flops / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


# --------------------------------------------------------------------------- one run
@dataclass
class ExperimentResult:
    config: ExperimentConfig
    model: ExperimentLM
    val_loss: float  # mean over `eval_iters` fixed validation batches at the training context
    seconds: float  # wall time of the training loop (volatile: print it, never branch on it)
    steps: int
    tokens: int
    n_params: int
    non_embedding: int
    history: History | None = None  # the Trainer's record: train loss per step, val loss per evaluation

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps


def run_experiment(cfg: ExperimentConfig, train, val, steps: int, *, batch_size: int = 16, lr: float = 3e-3,
                   warmup: int | None = None, eval_iters: int = 10, eval_interval: int | None = None, seed: int = 0,
                   init: nn.Module | dict | None = None,
                   device: str | torch.device | None = None) -> ExperimentResult:
    """Build ``ExperimentLM(cfg)`` with seed ``seed``, train it ``steps`` steps with the course
    Trainer (AdamW, warm-up + cosine to lr/10, clipping at 1.0) on windows of ``cfg.max_positions``
    tokens, and return its final validation loss and the wall time. Same seed = same initial
    weights (for equal shapes) and the same training batches for every config.

    ``init`` (a trained model or its state dict) starts from those weights instead: fine-tuning,
    e.g. at a longer ``max_positions`` or with a ``rope_scaling``, neither of which changes the
    weights' shapes. The model passed is copied, never changed. ``eval_interval`` (default:
    ``steps``, i.e. once at the end) evaluates more often; ``result.history`` has every value."""
    check_positive_values("run_experiment", steps=steps, batch_size=batch_size, eval_iters=eval_iters)
    if eval_interval is not None:
        check_positive_values("run_experiment", eval_interval=eval_interval)
    torch.manual_seed(seed)
    model = ExperimentLM(cfg)
    if init is not None:
        state = init.state_dict() if isinstance(init, nn.Module) else init
        mine = model.state_dict()
        misfits = sorted(set(mine) ^ set(state)) + [
            f"{k} {tuple(state[k].shape)} -> {tuple(v.shape)}"
            for k, v in mine.items() if k in state and state[k].shape != v.shape]
        if misfits:
            raise ValueError(f"run_experiment: init does not fit ExperimentLM(cfg): {len(misfits)} weight tensor(s) "
                             f"missing, extra or of another shape, e.g. {misfits[:2]}. Fine-tune with a config "
                             f"that changes no weight shape from the one the init was trained with (only "
                             f"max_positions with RoPE/ALiBi/NoPE, rope_scaling, rope_theta or dropout may differ).")
        model.load_state_dict(state)  # copies the values into the new model's own tensors
    warmup = max(1, steps // 10) if warmup is None else warmup
    tcfg = TrainConfig(max_steps=steps, batch_size=batch_size, seq_len=cfg.max_positions, lr=lr, min_lr=lr / 10,
                       warmup=warmup, eval_interval=eval_interval or steps, eval_iters=eval_iters, seed=seed,
                       progress=False, device=None if device is None else str(device))
    trainer = Trainer(model, train, val, tcfg)
    start = time.perf_counter()
    history = trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    return ExperimentResult(cfg, model, history.val_loss[-1], seconds, steps, history.tokens,
                            count_params(model), count_params(model, embeddings=False), history)
