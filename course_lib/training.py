"""A real training loop for course_lib language models, readable top to bottom.

    schedule    linear warm-up, then cosine decay to a minimum (Loshchilov & Hutter 2017)
    optimiser   AdamW (Loshchilov & Hutter 2019) with decay only on matrices, not on norms,
                biases or embeddings
    step        gradient accumulation, mixed precision (bf16 autocast; fp16 + GradScaler on
                CUDA), global-norm gradient clipping
    bookkeeping periodic evaluation, tqdm, checkpoints that resume *bit-exactly*
                (model, optimiser, scaler, step, RNG states, data sampler)

A model is any nn.Module mapping token ids (B, T) to logits (B, T, V), or an object with `.logits`.
"""
from __future__ import annotations

import math
import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import ConfigError, check_positive, check_range
from course_lib.data import get_batch
from course_lib.device import get_device


# --------------------------------------------------------------------------- schedule
def cosine_lr(step: int, warmup: int, total: int, max_lr: float, min_lr: float) -> float:
    """Learning rate at `step` (0-based): warm-up reaches max_lr at step warmup-1, cosine decay
    reaches min_lr at step `total`, constant min_lr after."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


# --------------------------------------------------------------------------- clipping
def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Scale all gradients in place so that their *global* L2 norm is at most max_norm;
    return the norm before clipping (as torch.nn.utils.clip_grad_norm_ does)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


# --------------------------------------------------------------------------- optimiser
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay 2-D weight matrices of Linear layers; not biases, norm weights or embeddings."""
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            no_decay_ids.add(id(module.weight))
    decay, no_decay = [], []
    seen = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue  # a tied weight appears once
        seen.add(id(p))
        (no_decay if p.dim() < 2 or id(p) in no_decay_ids else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- memory
def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Checkpoint every block in `model.blocks`: its activations are not kept for backward but
    recomputed from the block's input (Chen et al. 2016) — memory per block drops to its input,
    at the price of one more forward pass. The module tree and state_dict are unchanged.
    Returns the number of blocks wrapped."""
    from torch.utils.checkpoint import checkpoint
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no `.blocks` to checkpoint; gradient checkpointing "
                         "wraps each transformer block of a course_lib model.")
    for block in blocks:
        if getattr(block, "_checkpointed", False):
            continue
        original = block.forward

        def forward(x, *args, _original=original, _block=block, **kwargs):
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_original, x, *args, use_reentrant=False, **kwargs)
            return _original(x, *args, **kwargs)

        block.forward = forward
        block._checkpointed = True
    return len(blocks)


# --------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    max_steps: int = 200
    batch_size: int = 12
    block_size: int = 64
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 20
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0
    amp: str = "none"  # none | bf16 | fp16 (fp16 needs CUDA)
    eval_interval: int = 50
    eval_iters: int = 20
    grad_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    seed: int = 1337
    device: str | None = None  # None: course_lib.get_device()
    progress: bool = True

    def __post_init__(self):
        check_positive(self, "max_steps", "batch_size", "block_size", "grad_accum", "eval_interval", "eval_iters")
        check_range(self, "lr", 0.0, 10.0)
        check_range(self, "min_lr", 0.0, self.lr)
        if not 0 <= self.warmup <= self.max_steps:
            raise ConfigError(f"TrainConfig.warmup={self.warmup}: expected 0 <= warmup <= max_steps={self.max_steps}.")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"TrainConfig.amp={self.amp!r}: expected 'none', 'bf16' or 'fp16'.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"TrainConfig.grad_clip={self.grad_clip}: expected a positive number or None.")


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    logits = getattr(out, "logits", out)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())  # (B*T, V) vs (B*T,)


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


# --------------------------------------------------------------------------- trainer
@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    tokens: int = 0


class Trainer:
    """`Trainer(model, train_data, val_data, cfg).train()`; `save(path)` / `load(path)` resume exactly."""

    def __init__(self, model: nn.Module, train_data, val_data, cfg: TrainConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device) if cfg.device else get_device()
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("amp='fp16' needs a CUDA device (fp16 on CPU is slow and unsupported here); "
                              "use amp='bf16' or 'none'.")
        self.model = model.to(self.device)
        if cfg.grad_checkpointing:
            enable_gradient_checkpointing(model)
        self.train_data, self.val_data = train_data, val_data
        # one multi-tensor kernel per update instead of a Python loop over parameters: fused on
        # CUDA, foreach elsewhere (PyTorch only picks foreach by itself for CUDA tensors)
        fused = self.device.type == "cuda"
        self.opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                                     fused=fused, foreach=None if fused else True)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
        self.data_gen = torch.Generator().manual_seed(cfg.seed)  # the batch sampler's own RNG
        self.eval_gen_seed = cfg.seed + 1
        self.step = 0
        self.history = History()

    def batch(self, split: str = "train", gen: torch.Generator | None = None):
        data = self.train_data if split == "train" else self.val_data
        return get_batch(data, self.cfg.batch_size, self.cfg.block_size, gen or self.data_gen, self.device)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss on `eval_iters` fixed validation batches (the same ones every time)."""
        self.model.eval()
        gen = torch.Generator().manual_seed(self.eval_gen_seed)
        losses = []
        for _ in range(self.cfg.eval_iters):
            x, y = self.batch("val", gen)
            with _autocast(self.cfg, self.device):
                losses.append(lm_loss(self.model, x, y).item())
        self.model.train()
        return float(np.mean(losses))

    def train_step(self) -> float:
        cfg = self.cfg
        lr = cosine_lr(self.step, cfg.warmup, cfg.max_steps, cfg.lr, cfg.min_lr)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.model.train()
        total = 0.0
        for _ in range(cfg.grad_accum):
            x, y = self.batch()
            with _autocast(cfg, self.device):
                loss = lm_loss(self.model, x, y) / cfg.grad_accum  # average over micro-batches
            self.scaler.scale(loss).backward()
            total += loss.item()
        self.scaler.unscale_(self.opt)
        # the same global-norm clipping as clip_grad_norm above (a test holds them equal), done by
        # PyTorch's multi-tensor version, which is faster for many small parameters
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or float("inf"),
                                              foreach=True)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        h = self.history
        h.steps.append(self.step)
        h.train_loss.append(total)
        h.lr.append(lr)
        h.grad_norm.append(float(norm))
        h.tokens += cfg.batch_size * cfg.block_size * cfg.grad_accum
        self.step += 1
        return total

    def train(self, steps: int | None = None, callback: Callable[["Trainer"], None] | None = None) -> History:
        """Run until `max_steps` (or `steps` more); evaluate every `eval_interval` and at the end."""
        end = self.cfg.max_steps if steps is None else min(self.cfg.max_steps, self.step + steps)
        bar = _progress(self.cfg.progress, self.step, end)
        while self.step < end:
            loss = self.train_step()
            if self.step % self.cfg.eval_interval == 0 or self.step == self.cfg.max_steps:
                self.history.eval_steps.append(self.step)
                self.history.val_loss.append(self.evaluate())
                if callback:
                    callback(self)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
        if bar is not None:
            bar.close()
        return self.history

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "history": asdict(self.history),
                "data_gen": self.data_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
                "config": asdict(self.cfg)}

    def save(self, path: str | Path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        s = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.scaler.load_state_dict(s["scaler"])
        self.step = s["step"]
        self.history = History(**s["history"])
        self.data_gen.set_state(s["data_gen"])
        torch.set_rng_state(s["torch_rng"])
        if s["cuda_rng"]:
            torch.cuda.set_rng_state_all(s["cuda_rng"])
        np.random.set_state(s["numpy_rng"])
        random.setstate(s["python_rng"])


def _progress(enabled: bool, start: int, end: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=end, initial=start, desc="training", leave=False)
