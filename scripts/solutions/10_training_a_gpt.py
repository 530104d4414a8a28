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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/10_training_a_gpt.ipynb)

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
# # Exercise 10 · Schedule, clipping, accumulation and loss scaling
#
# Four pieces of every modern training loop: the learning-rate schedule, gradient clipping,
# gradient accumulation and the dynamic loss scaling of float16 training. Read
# `notebooks/10_training_a_gpt.ipynb` first.

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.checks import (check_accumulate_gradients, check_clip_grad_norm, check_cosine_lr, check_grad_scaler,
                               hint, solution)
from course_lib.device import single_thread

# %% [markdown]
# ## 1. Warm-up + cosine decay (2 points)
# `cosine_lr(step, warmup, total, max_lr, min_lr)`, with `step` counted from 0:
# * for `step < warmup`: rise linearly so that the **first** step already has
#   `max_lr / warmup` and step `warmup - 1` has `max_lr`: `max_lr * (step + 1) / warmup`;
# * for `warmup <= step < total`: cosine from `max_lr` (at `step == warmup`) down towards
#   `min_lr` (reached at `step == total`), with `progress = (step - warmup) / (total - warmup)`:
#   `min_lr + 0.5 * (1 + cos(pi * progress)) * (max_lr - min_lr)`;
# * for `step >= total`: `min_lr`.

# %%
def cosine_lr(step: int, warmup: int, total: int, max_lr: float, min_lr: float) -> float:
    ### BEGIN SOLUTION
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    ### END SOLUTION


lr_result = check_cosine_lr(cosine_lr)

# %%
if lr_result.passed:
    plt.figure(figsize=(6, 2.5))
    plt.plot([cosine_lr(s, 100, 1000, 1e-3, 1e-4) for s in range(1100)])
    plt.xlabel("step")
    plt.ylabel("learning rate")
    plt.title("your schedule: warm-up 100, total 1000")
    plt.show()

# %% [markdown]
# ## 2. Global-norm gradient clipping (2 points)
# `clip_grad_norm(parameters, max_norm)`: the **global** norm is the L2 norm of *all* gradient
# entries of all parameters together, `sqrt(sum_p (p.grad ** 2).sum())`. If it exceeds
# `max_norm`, scale every gradient **in place** by `max_norm / (total + 1e-6)`. Return the total
# norm measured *before* clipping. Skip parameters whose `.grad` is None.

# %%
def clip_grad_norm(parameters, max_norm: float):
    ### BEGIN SOLUTION
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + 1e-6))
    return total
    ### END SOLUTION


clip_result = check_clip_grad_norm(clip_grad_norm)

# %% [markdown]
# ## 3. Gradient accumulation over micro-batches of unequal size (2 points)
# When a batch does not fit in memory, split it into micro-batches, run `backward()` on each and step
# once: `backward()` *adds* into `p.grad`. The sum must be the gradient of the **whole batch's** loss,
# the mean cross-entropy over all its *kept* tokens. Targets equal to `ignore_index` (padding, or a
# prompt that is not trained on) count for nothing, so micro-batches of other shapes or with more
# padding hold different numbers of kept tokens, and dividing each micro-batch's mean by the number of
# micro-batches (right only when all hold the same number) weighs their tokens unequally.
#
# `accumulate_gradients(model, micro_batches, ignore_index=-100)`:
# * `micro_batches` is a list of `(x, y)`: token ids `x` of shape `(B_i, T_i)` and targets `y` of the
#   same shape; the shapes differ from one micro-batch to the next; `model(x)` returns logits `(B_i, T_i, V)`;
# * first clear the gradients the previous step left (`p.grad = None` for every parameter);
# * count `N`, the kept targets (`y != ignore_index`) of **all** micro-batches together; then for each
#   micro-batch back-propagate its *summed* token loss divided by `N`
#   (`F.cross_entropy(..., ignore_index=ignore_index, reduction="sum") / N`);
# * return the whole batch's mean token loss as a float. Leave `x` and `y` unchanged. If no target
#   is kept at all, the mean is 0/0: raise a `ValueError` that says so.
#
# The check compares your gradients with one `backward()` of `F.cross_entropy` on all tokens of all
# micro-batches concatenated, on a model whose `.grad` still holds an old step's gradients.

# %%
def accumulate_gradients(model, micro_batches, ignore_index=-100):
    """One optimiser step's worth of backward passes over micro_batches, a list of (x, y) with
    x (B_i, T_i) token ids and y (B_i, T_i) targets. Leaves in each p.grad the gradient of the mean
    token loss over all micro-batches together; returns that loss."""
    ### BEGIN SOLUTION
    for p in model.parameters():
        p.grad = None  # a new step: forget the last step's gradients
    n_tokens = sum(int((y != ignore_index).sum()) for _, y in micro_batches)  # kept tokens of the whole step
    if n_tokens == 0:
        raise ValueError("every target equals ignore_index: there is no token to average the loss over")
    total = 0.0
    for x, y in micro_batches:
        logits = model(x)  # (B_i, T_i, V)
        loss_sum = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=ignore_index,
                                   reduction="sum")  # (): this micro-batch's summed token loss
        (loss_sum / n_tokens).backward()  # adds this micro-batch's share into every p.grad
        total += loss_sum.item()
    return total / n_tokens
    ### END SOLUTION


accum_result = check_accumulate_gradients(accumulate_gradients)

# %% [markdown]
# Why the normalisation matters: one step of three micro-batches, a full one, a heavily padded one and
# a short one. The relative error of the accumulated gradient against one big batch, for your function
# and for the common shortcut of dividing each micro-batch's mean loss by the number of micro-batches:

# %% tolerance={"rel": 0.01}
if accum_result.passed:
    torch.manual_seed(0)
    lm = nn.Sequential(nn.Embedding(20, 16), nn.Linear(16, 20))  # (B, T) -> (B, T, 20)
    g = torch.Generator().manual_seed(1)
    micro = []
    for rows, T, kept in ((8, 32, 32), (8, 32, 4), (2, 8, 8)):  # full, padded after 4 tokens, short
        x = torch.randint(0, 20, (rows, T), generator=g)  # (B_i, T_i)
        y = torch.randint(0, 20, (rows, T), generator=g)  # (B_i, T_i)
        y[:, kept:] = -100
        micro.append((x, y))
    print("kept tokens per micro-batch:", [int((y != -100).sum()) for _, y in micro])

    def error_vs_big():
        mine = torch.cat([p.grad.flatten() for p in lm.parameters()])
        return ((mine - big).norm() / big.norm()).item()

    with single_thread():  # tiny tensors: one thread is fastest
        lm.zero_grad()
        logits = torch.cat([lm(x).flatten(0, 1) for x, _ in micro])  # (N_all, 20)
        F.cross_entropy(logits, torch.cat([y.flatten() for _, y in micro])).backward()
        big = torch.cat([p.grad.flatten() for p in lm.parameters()])
        accumulate_gradients(lm, micro)
        yours = error_vs_big()
        lm.zero_grad()
        for x, y in micro:
            (F.cross_entropy(lm(x).flatten(0, 1), y.flatten()) / len(micro)).backward()
        shortcut = error_vs_big()
    print(f"your accumulation: {'equal to the big batch up to float32 rounding' if yours < 1e-5 else yours}")
    print(f"mean / number of micro-batches: relative gradient error {shortcut:.3f}")

# %% [markdown]
# ## 4. Dynamic loss scaling, the GradScaler of float16 training (4 points)
# Lesson 10 showed why float16 training multiplies the loss by a scale S before `backward()`: small
# gradients would otherwise become 0. A large S overflows instead (float16 ends at 65504), so the scale
# is *dynamic*: lower it when a gradient is inf or NaN (and skip that step), raise it again after a run
# of clean steps. Write `GradScaler`, a class that behaves as `torch.amp.GradScaler` (the same
# constructor arguments but the device, the same methods):
# * `GradScaler(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
#   enabled=True)`; `get_scale()` returns the current scale as a float;
# * `scale(outputs)` returns `outputs * scale`, for one loss or for each loss of a list or tuple (the
#   same type back); the loop calls `.backward()` on it, so every gradient comes out `scale` times too large;
# * `unscale_(optimizer)` divides the gradient of every parameter in `optimizer.param_groups` by the
#   scale, **in place**, and notes *for this optimiser* whether any gradient is inf or NaN. A loop calls
#   it when it needs the true gradients before the step (to clip them);
# * `step(optimizer, *args, **kwargs)` first unscales, unless `unscale_(optimizer)` already ran in this
#   iteration; then it calls `optimizer.step(*args, **kwargs)` only if none of this optimiser's
#   gradients was inf or NaN; otherwise the step is **skipped** (return `optimizer.step`'s result, or None);
# * per optimiser and iteration, `unscale_` then `step` is the only order: a second `unscale_`,
#   `unscale_` after `step`, or a second `step` before `update()` raises `RuntimeError`;
# * `update()` ends the iteration: if any optimiser's gradients overflowed, `scale *= backoff_factor`
#   and the count of clean steps goes back to 0; otherwise the count grows by 1, and when it reaches
#   `growth_interval`, `scale *= growth_factor` and the count goes back to 0. `update(new_scale)` sets
#   the scale by hand instead (the count stays as it is). Either way the findings of this iteration are
#   forgotten;
# * `state_dict()` returns torch's keys, `"scale"`, `"growth_factor"`, `"backoff_factor"`,
#   `"growth_interval"` and `"_growth_tracker"` (the count of clean steps), holding Python numbers;
#   `load_state_dict(state)` restores them. Torch's scaler must be able to load yours, and yours torch's;
# * with `enabled=False` the same loop runs unscaled: `scale` returns its input, `step` just calls
#   `optimizer.step(...)`, `get_scale()` is 1.0, `state_dict()` is `{}`, and the other methods do nothing.
#
# One iteration of a loop with it: `scaler.scale(loss).backward()`, then optionally
# `scaler.unscale_(optimizer)` and clipping, then `scaler.step(optimizer)` and `scaler.update()`.
# The check runs your class and `torch.amp.GradScaler("cpu", ...)` side by side through the same
# scripted runs (gradients cast through float16, so that a too-large scale overflows; infs and NaNs in
# one gradient; a batch whose loss is inf; two optimisers; a checkpoint each way; `enabled=False`;
# `update(new_scale)`; two losses in one `scale` call) and compares the scale, which steps were skipped
# and the parameters after every step. Then it tries the three wrong orders.

# %%
class GradScaler:
    """Dynamic loss scaling for float16 training, as torch.amp.GradScaler (without its device argument)."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled=True):
        ### BEGIN SOLUTION
        if enabled and (growth_factor <= 1.0 or not 0.0 < backoff_factor < 1.0):
            raise ValueError("growth_factor must be > 1 and backoff_factor between 0 and 1")
        self.enabled = enabled  # False: the same loop runs without scaling (float32 or bf16)
        self._scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self._growth_tracker = 0  # clean steps in a row since the scale last changed
        self._per_optimizer = {}  # id(optimizer) -> {"stage": "unscaled" or "stepped", "found_inf": bool}
        ### END SOLUTION

    def get_scale(self):
        """The current scale, a float (1.0 when disabled)."""
        ### BEGIN SOLUTION
        return self._scale if self.enabled else 1.0
        ### END SOLUTION

    def scale(self, outputs):
        """outputs (a loss, or a list or tuple of losses) times the scale: their backward() gives scale x the
        true gradients."""
        ### BEGIN SOLUTION
        if not self.enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(out) for out in outputs)
        return outputs * self._scale
        ### END SOLUTION

    def unscale_(self, optimizer):
        """Divide this optimiser's gradients by the scale, in place; note whether any is inf or NaN."""
        ### BEGIN SOLUTION
        if not self.enabled:
            return
        state = self._per_optimizer.get(id(optimizer))
        if state is not None and state["stage"] == "unscaled":
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update()")
        if state is not None:
            raise RuntimeError("unscale_() is being called after step()")
        found_inf = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    p.grad.mul_(1.0 / self._scale)  # in place: the optimiser reads p.grad
                    found_inf = found_inf or not bool(torch.isfinite(p.grad).all())
        self._per_optimizer[id(optimizer)] = {"stage": "unscaled", "found_inf": found_inf}
        ### END SOLUTION

    def step(self, optimizer, *args, **kwargs):
        """Unscale unless done in this iteration; then optimizer.step(), unless a gradient overflowed."""
        ### BEGIN SOLUTION
        if not self.enabled:
            return optimizer.step(*args, **kwargs)
        if id(optimizer) not in self._per_optimizer:  # not unscaled yet in this iteration
            self.unscale_(optimizer)
        state = self._per_optimizer[id(optimizer)]
        if state["stage"] == "stepped":
            raise RuntimeError("step() has already been called since the last update()")
        state["stage"] = "stepped"
        if state["found_inf"]:
            return None  # an inf or NaN gradient: skip, the weights stay as they were
        return optimizer.step(*args, **kwargs)
        ### END SOLUTION

    def update(self, new_scale=None):
        """End of an iteration: back off after an overflow, grow after growth_interval clean steps (or set
        new_scale by hand)."""
        ### BEGIN SOLUTION
        if not self.enabled:
            return
        if new_scale is not None:
            self._scale = float(new_scale)  # the count of clean steps carries on
        elif any(state["found_inf"] for state in self._per_optimizer.values()):
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        self._per_optimizer = {}  # the next iteration starts afresh
        ### END SOLUTION

    def state_dict(self):
        """torch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker; {} when disabled."""
        ### BEGIN SOLUTION
        if not self.enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self._growth_tracker}
        ### END SOLUTION

    def load_state_dict(self, state):
        """Restore what state_dict() returned, yours or torch.amp.GradScaler's."""
        ### BEGIN SOLUTION
        if not self.enabled:
            return
        self._scale = float(state["scale"])
        self.growth_factor = state["growth_factor"]
        self.backoff_factor = state["backoff_factor"]
        self.growth_interval = state["growth_interval"]
        self._growth_tracker = int(state["_growth_tracker"])
        ### END SOLUTION


# %%
scaler_result = check_grad_scaler(GradScaler)

# %% [markdown]
# Your scaler at work: 300 steps of a small model whose gradients pass through float16 (anything above
# 65504 becomes inf), starting from a scale of 2²⁴, far too large. Your scaler and
# `torch.amp.GradScaler` run the same steps side by side. The scale falls until the gradients fit, then
# tries to grow after every 25 clean steps, and falls back when that overflows. (`PlainSGD` is a
# minimal optimiser: `torch.optim.SGD` would do as well, but its first step loads PyTorch's compiler,
# which takes seconds.)

# %% tolerance={"rel": 0.01, "ints": 0.2}
if scaler_result.passed:
    class PlainSGD:  # what a scaler uses of an optimiser: param_groups and step()
        def __init__(self, params, lr):
            self.param_groups = [{"params": list(params), "lr": lr}]
            self.steps = 0

        @torch.no_grad()
        def step(self):
            self.steps += 1
            for p in self.param_groups[0]["params"]:
                p.add_(p.grad, alpha=-self.param_groups[0]["lr"])

    def fp16_run(scaler, steps=300):
        torch.manual_seed(0)
        lm = nn.Sequential(nn.Embedding(20, 16), nn.Linear(16, 20))  # (B, T) -> (B, T, 20)
        opt = PlainSGD(lm.parameters(), lr=0.5)
        g = torch.Generator().manual_seed(2)
        scales, skipped = [], []
        for step in range(steps):
            x = torch.randint(0, 20, (16, 8), generator=g)  # (B, T)
            loss = F.cross_entropy(lm(x).flatten(0, 1), ((x + 1) % 20).flatten())  # learn "next letter"
            for p in lm.parameters():
                p.grad = None
            scaler.scale(loss).backward()
            for p in lm.parameters():
                p.grad.copy_(p.grad.half().float())  # float16 gradients: above 65504 is inf
            before = opt.steps
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
            skipped.append(opt.steps == before)
        return scales, skipped

    kw = dict(init_scale=2.0**24, growth_interval=25)
    with single_thread():  # tiny tensors: one thread is fastest
        mine, mine_skipped = fp16_run(GradScaler(**kw))
        ref, ref_skipped = fp16_run(torch.amp.GradScaler("cpu", **kw))
    print(f"the same scale at every step as torch.amp.GradScaler: {mine == ref}; the same skipped steps: "
          f"{mine_skipped == ref_skipped}")
    print(f"skipped steps: {sum(mine_skipped)} of {len(mine)} ({sum(mine_skipped[:20])} in the first 20); "
          f"last scale 2^{round(math.log2(mine[-1]))}")
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.plot([math.log2(s) for s in mine], lw=1, label="your GradScaler")
    ax.plot([math.log2(s) for s in ref], lw=1, ls="--", label="torch.amp.GradScaler")
    ax.scatter([i for i, s in enumerate(mine_skipped) if s], [math.log2(mine[i]) for i, s in enumerate(mine_skipped) if s],
               s=10, color="red", label="skipped step", zorder=3)
    ax.set_xlabel("step")
    ax.set_ylabel("log2(scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Done?
# 10/10 means your schedule and clipping behave exactly like `course_lib.training`'s (and
# PyTorch's `clip_grad_norm_`), your accumulation gives the gradient of one big batch whatever the
# micro-batches' shapes and padding, and your loss scaler makes the same decisions as
# `torch.amp.GradScaler`. Lesson 10's trainer has all four; its micro-batches hold equal numbers of
# tokens, none ignored, so there dividing each mean by their number is exact, and for float16 on CUDA
# it uses `torch.amp.GradScaler`.
