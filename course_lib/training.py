"""A real training loop for course_lib language models, readable top to bottom.

    schedule    linear warm-up, then cosine decay to a minimum (Loshchilov & Hutter 2017)
    optimiser   AdamW (Loshchilov & Hutter 2019) with decay only on matrices, not on norms,
                biases or embeddings; `AdamW` is the update written out (the Trainer runs
                PyTorch's fused one, held equal to it by the tests)
    step        gradient accumulation, mixed precision (bf16 autocast; fp16 + GradScaler on
                CUDA), global-norm gradient clipping
    bookkeeping periodic evaluation, tqdm, checkpoints that resume *bit-exactly*
                (model, optimiser, scaler, step, RNG states, data sampler)
    extension   a `loss_fn` hook (e.g. LM loss + an MoE balancing loss) and an `on_step` hook
                called after every optimiser step (e.g. to record expert routing)
    fast mode   ``TrainConfig(fast=True)``: bf16 autocast where the hardware computes in bf16,
                else torch.compile where a C++ compiler exists (`fast_mode` says which, and why)

A model is any nn.Module mapping token ids (B, T) to logits (B, T, V), or an object with `.logits`.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import warnings
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


class AdamW(torch.optim.Optimizer):
    """AdamW written out (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), equal
    to torch.optim.AdamW (amsgrad=False, maximize=False) within float rounding (tests/test_training.py).
    For each parameter p with gradient g, at its t-th step (t = 1, 2, ...):

        p <- p - lr * weight_decay * p           decoupled decay: shrinks p, never enters m or v
        m <- beta1 * m + (1 - beta1) * g         running mean of the gradient (momentum)
        v <- beta2 * v + (1 - beta2) * g * g     running mean of its square
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)    bias correction: m, v start at 0
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)

    Each param group has its own lr and weight_decay (a schedule writes group["lr"] before each
    step; `param_groups` above makes a decay and a no-decay group). t, m and v live in
    `self.state[p]`, so `state_dict()` / `load_state_dict()` resume exactly, and the state keys
    are torch.optim.AdamW's ("step", "exp_avg", "exp_avg_sq"): a checkpoint of either loads into the other."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        if not lr >= 0.0:
            raise ValueError(f"AdamW(lr={lr}): the learning rate must be >= 0.")
        if not (len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"AdamW(betas={betas}): expected two numbers in [0, 1), e.g. (0.9, 0.999).")
        if not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"AdamW(eps={eps}, weight_decay={weight_decay}): both must be >= 0.")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # the optimiser protocol: re-evaluate the model, return its loss
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue  # not used in this step's loss: no update, no decay
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients (use dense ones, "
                                       "e.g. nn.Embedding(sparse=False)).")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                t = state["step"] = int(state["step"]) + 1  # int(): torch's state stores a tensor
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                p.mul_(1.0 - lr * decay)
                m.lerp_(g, 1.0 - beta1)  # m + (1 - beta1)·(g - m), i.e. beta1·m + (1 - beta1)·g
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                # lr·m_hat / (sqrt(v_hat) + eps), with the two corrections taken out of the tensors
                denom = (v.sqrt() / math.sqrt(1.0 - beta2 ** t)).add_(eps)  # sqrt(v_hat) + eps
                p.addcdiv_(m, denom, value=-lr / (1.0 - beta1 ** t))
        return loss


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
    seq_len: int = 64  # tokens per training window (nanoGPT: block_size), at most the model's max_positions
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
    fast: bool = False  # bf16 autocast, or torch.compile, where this machine supports it (fast_mode)

    def __post_init__(self):
        check_positive(self, "max_steps", "batch_size", "seq_len", "grad_accum", "eval_interval", "eval_iters")
        check_range(self, "lr", 0.0, 10.0)
        check_range(self, "min_lr", 0.0, self.lr)
        if not 0 <= self.warmup <= self.max_steps:
            raise ConfigError(f"TrainConfig.warmup={self.warmup}: expected 0 <= warmup <= max_steps={self.max_steps}.")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"TrainConfig.amp={self.amp!r}: expected 'none', 'bf16' or 'fp16'.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"TrainConfig.grad_clip={self.grad_clip}: expected a positive number or None.")
        if self.fast and self.amp != "none":
            raise ConfigError(f"TrainConfig(fast=True, amp={self.amp!r}): fast mode chooses the precision "
                              "itself (see course_lib.training.fast_mode); pass one of them, not both.")


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `model` on inputs x (B, T) and targets y (B, T)."""
    out = model(x)
    logits = getattr(out, "logits", out)  # (B, T, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, V) vs (B*T,)


def _autocast(dtype: torch.dtype | None, device: torch.device):
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


# --------------------------------------------------------------------------- fast mode
def cpu_computes_bf16() -> bool:
    """True on CPUs with bf16 arithmetic in hardware (AVX512-BF16 or AMX, read from Linux's
    /proc/cpuinfo). Elsewhere bf16 autocast is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would call, or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@dataclass(frozen=True)
class FastMode:
    """What ``TrainConfig(fast=True)`` does on a device: bf16 autocast, torch.compile, both or neither."""
    bf16: bool
    compile: bool
    why: str

    @property
    def kind(self) -> str:
        return "+".join(k for k, on in (("bf16", self.bf16), ("compile", self.compile)) if on) or "none"

    def describe(self) -> str:
        return f"{self.kind} ({self.why})"


def fast_mode(device: torch.device | str) -> FastMode:
    """Which speed-up ``fast=True`` uses on `device`: bf16 autocast where the hardware multiplies
    in bf16 (CUDA GPUs from Ampere on; CPUs with AVX512-BF16 or AMX), which halves the bytes each
    matmul reads and, on such CPUs, runs them several times faster; otherwise torch.compile,
    which fuses the element-wise work between the matmuls into generated kernels (on the CPU it
    needs a C++ compiler, on CUDA the Triton package). Measured on the lesson-10 GPT
    (benchmarks/train_shakespeare.py): bf16 buys far more than compiling, and adding compile to
    bf16 buys a few percent for a minute of compiling, so bf16 alone is used where it exists."""
    device = torch.device(device)
    if device.type == "cuda":
        bf16, compiles = torch.cuda.is_bf16_supported(), _has_module("triton")
        have = ("bf16 matmuls on this GPU" if bf16 else
                "no fast bf16 on this GPU; " + ("Triton found for torch.compile" if compiles else
                                                "no Triton, so no torch.compile"))
    elif device.type == "cpu":
        bf16, compiler = cpu_computes_bf16(), cxx_compiler()
        compiles = compiler is not None
        have = ("the CPU has AVX512-BF16/AMX" if bf16 else
                "the CPU has no bf16 arithmetic; " + (f"C++ compiler {compiler} for torch.compile" if compiles
                                                       else "no C++ compiler for torch.compile"))
    else:
        bf16 = compiles = False
        have = f"no fast mode is known for {device.type}"
    return FastMode(bf16=bf16, compile=compiles and not bf16, why=have)


def _has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


FAST_FALLBACK = ("TrainConfig(fast=True): {why}, so neither speed-up applies here and training runs at "
                 "the default speed. On the CPU, installing a C++ compiler (e.g. `apt install g++`) "
                 "enables torch.compile.")


# a loss_fn returns the loss to minimise, or (that loss, {name: float} of its parts to log)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, dict]"]


def _split_loss(out) -> tuple[torch.Tensor, dict[str, float]]:
    """A loss_fn's answer -> (scalar loss tensor, {name: float})."""
    loss, parts = out if isinstance(out, tuple) and len(out) == 2 else (out, {})
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and isinstance(parts, dict)):
        got = (f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else
               f"({', '.join(type(v).__name__ for v in out)})" if isinstance(out, tuple) else type(out).__name__)
        raise TypeError(f"the Trainer's loss_fn(model, x, y) returned {got}; expected a scalar tensor, or "
                        "(scalar tensor, dict of floats to log), e.g. return lm + aux, {'aux': aux.item()}.")
    return loss, {name: float(v.detach() if isinstance(v, torch.Tensor) else v) for name, v in parts.items()}


# --------------------------------------------------------------------------- trainer
@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # what loss_fn minimised, per step
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # always the plain LM loss
    tokens: int = 0
    parts: dict[str, list[float]] = field(default_factory=dict)  # loss_fn's logged parts, per step


@dataclass
class StepInfo:
    """What `on_step` receives after each optimiser step (all plain floats)."""
    step: int  # 0-based index of the step just taken (trainer.step is already step + 1)
    loss: float  # the minimised loss, averaged over the micro-batches
    parts: dict[str, float]  # loss_fn's logged parts, averaged over the micro-batches
    lr: float
    grad_norm: float  # before clipping


class Trainer:
    """`Trainer(model, train_data, val_data, cfg).train()`; `save(path)` / `load(path)` resume exactly.

    Two hooks change what is trained and what is watched, without copying the loop:

    * ``loss_fn(model, x, y)``, default `lm_loss`: the loss each micro-batch minimises. It returns a
      scalar tensor, or ``(tensor, {name: float})`` whose named parts are averaged over the
      micro-batches and logged in ``history.parts[name]`` (one value per step), e.g.
      ``lm + 0.01 * aux, {"lm": lm.item(), "aux": aux.item()}`` for a mixture of experts.
      ``history.train_loss`` holds the minimised total. `evaluate()` always reports the plain LM
      loss (`lm_loss`), never a loss_fn's extra terms, so validation losses of runs with
      different loss_fns compare directly.
    * ``on_step(trainer, info: StepInfo)``: called after *every* optimiser step, before that
      step's evaluation (so state the last training forward pass left on the model, such as
      `SparseMoE.last`, is still there).

    They differ from ``train(callback=...)``, which is called only after each *evaluation*
    (every ``eval_interval`` steps and at the end), e.g. to redraw a live loss plot.
    The hooks are code, not state: `save` does not store them; pass them again before `load`.
    """

    def __init__(self, model: nn.Module, train_data, val_data, cfg: TrainConfig, *,
                 loss_fn: LossFn = lm_loss, on_step: Callable[["Trainer", StepInfo], None] | None = None):
        self.cfg = cfg
        self.device = torch.device(cfg.device) if cfg.device else get_device()
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("amp='fp16' needs a CUDA device (fp16 on CPU is slow and unsupported here); "
                              "use amp='bf16' or 'none'.")
        self.model = model.to(self.device)
        if cfg.grad_checkpointing:
            enable_gradient_checkpointing(model)
        self.fast = fast_mode(self.device) if cfg.fast else None
        if self.fast is not None and self.fast.kind == "none":
            warnings.warn(FAST_FALLBACK.format(why=self.fast.why), stacklevel=2)
        self.amp_dtype = ({"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
                          or (torch.bfloat16 if self.fast is not None and self.fast.bf16 else None))
        # what forward passes call: the model, or its torch.compile'd twin (same parameters)
        self.forward_model = torch.compile(model) if self.fast is not None and self.fast.compile else model
        self.train_data, self.val_data = train_data, val_data
        # PyTorch's fused AdamW: the whole update of every parameter in one kernel (on the CPU too,
        # where PyTorch would otherwise loop over the parameters in Python); foreach elsewhere.
        # tests/test_training.py holds it equal to the textbook update within float rounding.
        fused = self.device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in model.parameters())
        self.opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                                     fused=fused or None, foreach=None if fused else True)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
        self.data_gen = torch.Generator().manual_seed(cfg.seed)  # the batch sampler's own RNG
        self.eval_gen_seed = cfg.seed + 1
        self.loss_fn, self.on_step = loss_fn, on_step
        self.step = 0
        self.history = History()

    def batch(self, split: str = "train", gen: torch.Generator | None = None):
        data = self.train_data if split == "train" else self.val_data
        return get_batch(data, self.cfg.batch_size, self.cfg.seq_len, gen or self.data_gen, self.device)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean LM loss (`lm_loss`, whatever the loss_fn) on `eval_iters` fixed validation batches of
        `batch_size` (the same ones every time: drawn with seed cfg.seed + 1)."""
        self.model.eval()
        gen = torch.Generator().manual_seed(self.eval_gen_seed)
        losses = []
        for _ in range(self.cfg.eval_iters):
            x, y = self.batch("val", gen)
            with _autocast(self.amp_dtype, self.device):
                losses.append(self._call(lm_loss, x, y).item())
        self.model.train()
        return float(np.mean(losses))

    def train_step(self) -> float:
        cfg = self.cfg
        lr = cosine_lr(self.step, cfg.warmup, cfg.max_steps, cfg.lr, cfg.min_lr)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.model.train()
        total, parts = 0.0, {}
        for _ in range(cfg.grad_accum):
            x, y = self.batch()
            with _autocast(self.amp_dtype, self.device):
                loss, logged = _split_loss(self._call(self.loss_fn, x, y))
                loss = loss / cfg.grad_accum  # average over micro-batches: one batch of grad_accum·B
            self.scaler.scale(loss).backward()
            total += loss.item()
            for name, value in logged.items():
                parts[name] = parts.get(name, 0.0) + value / cfg.grad_accum
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
        h.tokens += cfg.batch_size * cfg.seq_len * cfg.grad_accum
        for name, value in parts.items():
            h.parts.setdefault(name, []).append(value)
        self.step += 1
        if self.on_step is not None:
            self.on_step(self, StepInfo(self.step - 1, total, parts, lr, float(norm)))
        return total

    def _call(self, loss_fn, x, y):
        """loss_fn on the compiled model when fast mode compiles; should compiling fail (a missing
        header, an unsupported platform), say so once and go on with the plain model."""
        if self.forward_model is self.model:
            return loss_fn(self.model, x, y)
        try:
            return loss_fn(self.forward_model, x, y)
        except Exception as err:  # noqa: BLE001 - any compiler failure; the eager retry re-raises real bugs
            out = loss_fn(self.model, x, y)
            warnings.warn(f"TrainConfig(fast=True): torch.compile failed ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); training goes on without it.",
                          stacklevel=3)
            self.forward_model = self.model
            return out

    def train(self, steps: int | None = None, callback: Callable[["Trainer"], None] | None = None) -> History:
        """Run until `max_steps` (or `steps` more); evaluate every `eval_interval` and at the end, and
        call `callback(trainer)` after each evaluation (per-step work belongs in `on_step`)."""
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
