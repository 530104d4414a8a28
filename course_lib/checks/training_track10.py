"""Checks for exercise 10's training parts beyond the schedule and clipping: gradient accumulation over
micro-batches of unequal size, and dynamic loss scaling (what mixed precision's GradScaler does).

* `check_accumulate_gradients(accumulate_gradients)`: micro-batches of different shapes whose targets
  hold ignored tokens (-100, or the case's own ignore_index), on a tiny language model whose
  gradients are stale from a previous step. The gradients left in `.grad` must equal those of
  F.cross_entropy (mean over the kept tokens) on all micro-batches concatenated into one batch, with
  one backward: the independent reference. The returned loss must be that batch's mean loss, and a step
  whose targets are all ignored must raise ValueError (its mean would be 0/0).
* `check_grad_scaler(GradScaler)`: the learner's class and `torch.amp.GradScaler("cpu", ...)` are
  driven side by side through the same scripted training runs (gradients cast through float16, so a
  too-large scale overflows as it would in fp16 training; infs and NaNs injected into one gradient; a
  batch whose loss is inf; explicit unscale_ before clipping; two optimisers; a state_dict() round
  trip each way; enabled=False; update(new_scale); a list and a tuple of losses). After every step the
  scale, which optimisers stepped and the parameters must agree; then the three wrong orders of calls
  (unscale_ twice, unscale_ after step, step twice) must raise RuntimeError as torch's do.
"""
from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.device import single_thread
from .core import REGISTRY, Delegates, LearnerError, Mismatch, _same_nan_aware, call_learner, compare, register


# ================================================================== gradient accumulation
class _TinyLM(nn.Module):
    """Embedding -> causal running mean over time -> tanh layer -> vocabulary logits."""

    def __init__(self, vocab: int = 13, width: int = 8, seed: int = 0, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, width, dtype=dtype)
        self.proj = nn.Linear(width, width, dtype=dtype)
        self.head = nn.Linear(width, vocab, dtype=dtype)

    def forward(self, ids):
        h = self.emb(ids)  # (B, T, C)
        steps = torch.arange(1, ids.shape[1] + 1, dtype=h.dtype)  # (T,)
        h = h.cumsum(1) / steps[:, None]  # (B, T, C): each position sees itself and the past
        return self.head(torch.tanh(self.proj(h)))  # (B, T, V)


def _micro_batch(g, rows, T, vocab, ignore_index, drop):
    """Random (x, y) of shape (rows, T); a fraction `drop` of the targets, and the padded tail of the
    last row, are `ignore_index`."""
    x = torch.randint(0, vocab, (rows, T), generator=g)  # (B_i, T_i)
    y = torch.randint(0, vocab, (rows, T), generator=g)  # (B_i, T_i)
    y[torch.rand(rows, T, generator=g) < drop] = ignore_index
    y[-1, T // 2:] = ignore_index  # a short last sequence, padded
    return x, y


def _accum_cases():
    """(label, model, stale gradients, micro_batches, ignore_index) for each case."""
    g = torch.Generator().manual_seed(10)
    cases = []
    for label, shapes, drop, ignore, dtype in [
            ("3 micro-batches of shapes (2, 5), (4, 9), (1, 4) with -100 targets", [(2, 5), (4, 9), (1, 4)],
             0.3, -100, torch.float32),
            ("2 micro-batches of shapes (3, 6), (1, 12), float64 model", [(3, 6), (1, 12)], 0.5, -100, torch.float64),
            ("a single micro-batch of shape (3, 7)", [(3, 7)], 0.2, -100, torch.float32),
            ("4 micro-batches (1, 3), (2, 8), (2, 2), (5, 6) with ignore_index=-1", [(1, 3), (2, 8), (2, 2), (5, 6)],
             0.4, -1, torch.float32)]:
        model = _TinyLM(seed=len(cases), dtype=dtype)
        stale = [torch.randn(p.shape, generator=g, dtype=dtype) for p in model.parameters()]
        batches = [_micro_batch(g, r, t, 13, ignore, drop) for r, t in shapes]
        cases.append((label, model, stale, batches, ignore))
    return cases


def _stale_copy(model, stale):
    """A copy of `model` holding the gradients the previous optimiser step left behind."""
    copied = copy.deepcopy(model)
    for p, g in zip(copied.parameters(), stale):
        p.grad = g.clone()
    return copied


def accumulate_reference(model, micro_batches, ignore_index=-100):
    """The independent reference: one batch, all micro-batches' tokens concatenated, F.cross_entropy's
    mean over the kept tokens, one backward. Leaves the gradients in model's .grad; returns the loss."""
    model.zero_grad(set_to_none=True)
    logits = torch.cat([model(x).flatten(0, 1) for x, _ in micro_batches])  # (N, V): every token of the step
    targets = torch.cat([y.flatten() for _, y in micro_batches])  # (N,)
    loss = F.cross_entropy(logits, targets, ignore_index=ignore_index)
    loss.backward()
    return loss.detach()


def _accum_variant(model, micro_batches, ignore_index=-100, *, norm="tokens", zero_each=False, clear=True):
    """Accumulation with a normalisation `norm` (how each micro-batch's summed loss is divided) and the
    switches that make the misconceptions."""
    if clear:
        model.zero_grad(set_to_none=True)
    kept = [int((y != ignore_index).sum()) for _, y in micro_batches]
    rows = [y.shape[0] for _, y in micro_batches]
    k = len(micro_batches)
    for (x, y), n_i, b_i in zip(micro_batches, kept, rows):
        if zero_each:
            model.zero_grad(set_to_none=True)
        logits = model(x).flatten(0, 1)  # (B, T, V) -> (B*T, V)
        loss_sum = F.cross_entropy(logits, y.flatten(), ignore_index=ignore_index, reduction="sum")  # (B*T,) targets
        divisor = {"tokens": sum(kept), "means": n_i, "means_over_k": n_i * k,
                   "all_tokens": sum(y.numel() for _, y in micro_batches),
                   "sequences": n_i * sum(rows) / b_i}[norm]
        (loss_sum / divisor).backward()


ACCUM_MISCONCEPTIONS = {
    "sums_means": "each micro-batch's *mean* loss was back-propagated as it is, so the gradients of the "
                  "micro-batches add up to about k times the gradient of one big batch. Divide every "
                  "micro-batch's summed token loss by the number of kept tokens of the whole step.",
    "divides_by_micro_batches": "each micro-batch's mean loss was divided by the number of micro-batches. That is "
                                "right only when every micro-batch has the same number of kept tokens; here "
                                "they differ (other shapes, other amounts of -100), so a token in a small "
                                "micro-batch weighs more than one in a big one. Sum the token losses "
                                "(reduction='sum') and divide by the kept tokens of the whole step.",
    "weights_by_sequences": "each micro-batch's mean was weighted by its number of sequences (rows). Tokens are "
                            "what the loss averages over: sequences differ in length and in ignored tokens, so "
                            "divide each micro-batch's summed token loss by the kept tokens of the whole step.",
    "counts_ignored_tokens": "the divisor counts every target, including the ignored ones (ignore_index). The "
                             "mean is over the kept tokens only: count (y != ignore_index).sum() over all "
                             "micro-batches.",
    "zeroes_between": "the gradients were cleared inside the loop, so only the last micro-batch's gradient "
                      "survives. Clear them once, before the first micro-batch; backward() then adds each "
                      "micro-batch's share into .grad.",
    "not_cleared_first": "the gradients left from the previous step were not cleared, so backward() added the new "
                         "gradients to them. Set p.grad = None (or model.zero_grad()) before the first micro-batch.",
    "mutates_input": "a micro-batch tensor (x or y) was changed in place; leave the batches as they are "
                     "(compute a mask with y != ignore_index instead of overwriting y).",
}

_ACCUM_VARIANTS = {
    "sums_means": [dict(norm="means")],
    "divides_by_micro_batches": [dict(norm="means_over_k")],
    "weights_by_sequences": [dict(norm="sequences")],
    "counts_ignored_tokens": [dict(norm="all_tokens")],
    "zeroes_between": [dict(zero_each=True, norm=n) for n in ("tokens", "means_over_k", "means")],
    "not_cleared_first": [dict(clear=False)],
}

ACCUM_SOLUTION = '''import torch
import torch.nn.functional as F


def accumulate_gradients(model, micro_batches, ignore_index=-100):
    """One optimiser step's worth of backward passes over micro_batches, a list of (x, y) with
    x (B_i, T_i) token ids and y (B_i, T_i) targets. Leaves in each p.grad the gradient of the mean
    token loss over all micro-batches together; returns that loss."""
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
'''


def _grads(model):
    return [p.grad for p in model.parameters()]


def _grads_match(a, b) -> bool:
    return all(x is not None and y is not None and _same_nan_aware(x, y) for x, y in zip(a, b))


@register("check_accumulate_gradients", points=2, reference=ACCUM_SOLUTION, misconceptions=ACCUM_MISCONCEPTIONS,
          minutes=20, forbid=("course_lib", "course_lib.checks"),
          hint="Count the kept tokens (y != ignore_index) of *all* micro-batches first. Then, per micro-batch, "
               "back-propagate its summed token loss divided by that count.",
          idea="The big batch's loss is (sum of all kept tokens' losses) / N, with N the kept tokens of the whole "
               "step. It splits exactly into one term per micro-batch, sum_i(loss_i) / N, and backward() adds "
               "the gradients of the terms into .grad. F.cross_entropy(..., reduction='sum', "
               "ignore_index=ignore_index) gives sum_i; clear .grad once before the loop, never inside it.")
def check_accumulate_gradients(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    with torch.random.fork_rng(), single_thread():
        cases = _accum_cases()
        learner_grads, ref_grads = [], []
        for label, model, stale, batches, ignore in cases:
            ref_model = _stale_copy(model, stale)
            ref_loss = accumulate_reference(ref_model, batches, ignore)
            ref_grads.append(_grads(ref_model))
            mine = _stale_copy(model, stale)
            before = [(x.clone(), y.clone()) for x, y in batches]
            out = call_learner(learner, mine, batches, ignore_index=ignore)
            if any(not (torch.equal(x, x0) and torch.equal(y, y0)) for (x, y), (x0, y0) in zip(batches, before)):
                raise Mismatch("your code changed a micro-batch tensor in place", f"case: {label}", "mutates_input")
            learner_grads.append(_grads(mine))
            for (name, p), ref in zip(mine.named_parameters(), ref_grads[-1]):
                if p.grad is None:
                    raise Mismatch(f"no gradient reached {name} (its .grad is None): call backward() on every "
                                   "micro-batch's loss", f"case: {label}")
            try:
                for (name, p), ref in zip(mine.named_parameters(), ref_grads[-1]):
                    compare(p.grad, ref, f"{name}.grad")
            except Mismatch as mm:
                raise Mismatch(mm.reason + " (the gradient of one big batch's mean token loss)", f"case: {label}",
                               _diagnose_accum(cases, learner_grads, ref_grads)) from None
            value = out.item() if isinstance(out, torch.Tensor) and out.numel() == 1 else out
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Mismatch(f"return the step's mean token loss (a float or a 0-d tensor), got "
                               f"{type(out).__name__}", f"case: {label}")
            if not math.isclose(float(value), float(ref_loss), rel_tol=1e-5, abs_tol=1e-6):
                raise Mismatch(f"returned loss {float(value):.6g}, expected the mean token loss of the whole step "
                               f"{float(ref_loss):.6g} (all kept tokens of all micro-batches)", f"case: {label}")
        _check_nothing_kept(learner, cases[0])
    return len(cases) + 1


def _check_nothing_kept(learner, case) -> None:
    """Every target ignored: the mean is 0/0, and the function should say so with a ValueError."""
    _, model, stale, batches, ignore = case
    empty = [(x, torch.full_like(y, ignore)) for x, y in batches]
    try:
        call_learner(learner, _stale_copy(model, stale), empty, ignore_index=ignore)
    except LearnerError as err:
        if isinstance(err.exc, ValueError):
            return
        raise
    raise Mismatch("when every target equals ignore_index there is no token to average over (0/0): raise a "
                   "ValueError that says so instead of returning", "case: micro-batches whose targets are all -100")


def _diagnose_accum(cases, learner_grads, ref_grads) -> str | None:
    """The misconception whose gradients equal the learner's on every case graded so far."""
    n = len(learner_grads)
    for key, flag_sets in _ACCUM_VARIANTS.items():
        for flags in flag_sets:
            outs = []
            for (label, model, stale, batches, ignore), ref in zip(cases[:n], ref_grads):
                m = _stale_copy(model, stale)
                _accum_variant(m, batches, ignore, **flags)
                outs.append(_grads(m))
            if all(_grads_match(o, r) for o, r in zip(outs, ref_grads)):
                continue  # indistinguishable from the right answer on these cases
            if all(_grads_match(l, o) for l, o in zip(learner_grads, outs)):
                return key
    return None


# ================================================================== dynamic loss scaling
SCALER_MISCONCEPTIONS = {
    "no_skip": "the optimiser stepped although a gradient was inf or NaN, so the parameters became inf/NaN. "
               "step() must skip optimizer.step() when unscale_ found a non-finite gradient.",
    "checks_loss_only": "only the loss was checked for inf/NaN. In fp16 the loss is usually finite when "
                        "the *gradients* overflow (they are scale times larger and pass through many layers), "
                        "so look at every gradient (torch.isfinite(p.grad).all()) in unscale_.",
    "no_backoff": "the scale was not lowered after an overflow. update() multiplies the scale by "
                  "backoff_factor whenever a step was skipped, or the next steps overflow too.",
    "grows_every_step": "the scale grew after every clean step. It grows by growth_factor only after "
                        "growth_interval clean steps *in a row*: count them, and grow when the count reaches "
                        "growth_interval.",
    "tracker_not_reset_on_overflow": "the count of clean steps was not set back to 0 by an overflow, so the scale "
                                     "grew too early. Growth needs growth_interval clean steps in a row.",
    "tracker_not_reset_on_growth": "the count of clean steps was not set back to 0 when the scale grew, so it grew "
                                   "again at every following step. After growing, start counting from 0.",
    "unscales_twice": "step() divided the gradients by the scale although unscale_() had already done it (the "
                      "loop called unscale_ before clipping). Remember per optimiser that it is unscaled, and let "
                      "step() unscale only if that has not happened since the last update().",
    "no_unscale": "step() left the gradients scaled when unscale_() was not called first, so the optimiser "
                  "took steps scale times too large. step() unscales (and checks) itself in that case.",
    "inf_flag_not_cleared": "the overflow flag was never cleared, so after the first overflow every step was "
                            "skipped and the scale kept falling. update() must forget this iteration's findings.",
    "one_flag_for_all_optimizers": "one overflow flag served all optimisers. Keep it per optimiser (a dict keyed by "
                                   "id(optimizer)): each step() skips only when *its* gradients overflowed, and "
                                   "update() backs off when any of them did.",
    "load_ignores_tracker": "load_state_dict() restored the scale but not the count of clean steps "
                            "('_growth_tracker'), so the resumed run grows the scale at other steps than the run "
                            "in one go.",
}


SCALER_SOLUTION = '''import torch


class GradScaler:
    """Dynamic loss scaling for float16 training, as torch.amp.GradScaler (without its device argument)."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled=True):
        if enabled and (growth_factor <= 1.0 or not 0.0 < backoff_factor < 1.0):
            raise ValueError("growth_factor must be > 1 and backoff_factor between 0 and 1")
        self.enabled = enabled  # False: the same loop runs without scaling (float32 or bf16)
        self._scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self._growth_tracker = 0  # clean steps in a row since the scale last changed
        self._per_optimizer = {}  # id(optimizer) -> {"stage": "unscaled" or "stepped", "found_inf": bool}

    def get_scale(self):
        """The current scale, a float (1.0 when disabled)."""
        return self._scale if self.enabled else 1.0

    def scale(self, outputs):
        """outputs (a loss, or a list or tuple of losses) times the scale: their backward() gives scale x the
        true gradients."""
        if not self.enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(out) for out in outputs)
        return outputs * self._scale

    def unscale_(self, optimizer):
        """Divide this optimiser's gradients by the scale, in place; note whether any is inf or NaN."""
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

    def step(self, optimizer, *args, **kwargs):
        """Unscale unless done in this iteration; then optimizer.step(), unless a gradient overflowed."""
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

    def update(self, new_scale=None):
        """End of an iteration: back off after an overflow, grow after growth_interval clean steps (or set
        new_scale by hand)."""
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

    def state_dict(self):
        """torch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker; {} when disabled."""
        if not self.enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state):
        """Restore what state_dict() returned, yours or torch.amp.GradScaler's."""
        if not self.enabled:
            return
        self._scale = float(state["scale"])
        self.growth_factor = state["growth_factor"]
        self.backoff_factor = state["backoff_factor"]
        self.growth_interval = state["growth_interval"]
        self._growth_tracker = int(state["_growth_tracker"])
'''


class _ScalerVariant:
    """The grader's re-creations of the mistakes, one switch each (all off: a correct scaler)."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled=True, **flags):
        self.on = enabled
        self.s, self.gf, self.bf, self.gi, self.tracker = float(init_scale), growth_factor, backoff_factor, \
            growth_interval, 0
        self.flags, self.found, self.unscaled, self.loss_bad, self.sticky = flags, {}, set(), False, False

    def get_scale(self):
        return self.s if self.on else 1.0

    def scale(self, loss):
        if not self.on:
            return loss
        if isinstance(loss, (list, tuple)):
            return type(loss)(self.scale(x) for x in loss)
        self.loss_bad = self.loss_bad or not bool(torch.isfinite(loss).all())
        return loss * self.s

    def _record(self, opt, bad):
        f = self.flags
        if f.get("flag") == "overwrite":
            self.found = {"all": bad}
        elif f.get("flag") == "or":
            self.found = {"all": self.found.get("all", False) or bad}
        else:
            self.found[id(opt)] = bad
        self.sticky = self.sticky or bad

    def _bad(self, opt):
        f = self.flags
        if f.get("loss_only"):
            return self.loss_bad
        if f.get("sticky"):
            return self.sticky
        return self.found.get("all") if f.get("flag") else self.found[id(opt)]

    def unscale_(self, opt, divide=True):
        if not self.on:
            return
        bad = False
        with torch.no_grad():
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        if divide:
                            p.grad.mul_(1.0 / self.s)
                        bad = bad or not bool(torch.isfinite(p.grad).all())
        self._record(opt, bad)
        self.unscaled.add(id(opt))

    def step(self, opt):
        f = self.flags
        if not self.on:
            opt.step()
            return
        if id(opt) not in self.unscaled:
            self.unscale_(opt, divide=not f.get("no_unscale"))
        elif f.get("unscale_twice"):
            with torch.no_grad():
                for group in opt.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.mul_(1.0 / self.s)
        if f.get("no_skip") or not self._bad(opt):
            opt.step()

    def update(self, new_scale=None):
        f = self.flags
        if not self.on:
            return
        if new_scale is not None:
            self.s = float(new_scale)
            self.found, self.unscaled, self.loss_bad = {}, set(), False
            return
        bad = self.loss_bad if f.get("loss_only") else self.sticky if f.get("sticky") else any(self.found.values())
        if bad:
            if not f.get("no_backoff"):
                self.s *= self.bf
            if not f.get("keep_tracker"):
                self.tracker = 0
        else:
            self.tracker += 1
            if f.get("grow_every"):
                self.s *= self.gf
            elif f.get("no_reset_on_growth"):
                if self.tracker >= self.gi:
                    self.s *= self.gf
            elif self.tracker >= self.gi:
                self.s *= self.gf
                self.tracker = 0
        self.found, self.unscaled, self.loss_bad = {}, set(), False

    def state_dict(self):
        if not self.on:
            return {}
        return {"scale": self.s, "growth_factor": self.gf, "backoff_factor": self.bf, "growth_interval": self.gi,
                "_growth_tracker": self.tracker}

    def load_state_dict(self, st):
        self.s, self.gf, self.bf, self.gi = float(st["scale"]), st["growth_factor"], st["backoff_factor"], \
            st["growth_interval"]
        self.tracker = 0 if self.flags.get("load_ignores_tracker") else int(st["_growth_tracker"])


_SCALER_VARIANTS = {
    "no_skip": [dict(no_skip=True)],
    "checks_loss_only": [dict(loss_only=True)],
    "no_backoff": [dict(no_backoff=True)],
    "grows_every_step": [dict(grow_every=True)],
    "tracker_not_reset_on_overflow": [dict(keep_tracker=True)],
    "tracker_not_reset_on_growth": [dict(no_reset_on_growth=True)],
    "unscales_twice": [dict(unscale_twice=True)],
    "no_unscale": [dict(no_unscale=True)],
    "inf_flag_not_cleared": [dict(sticky=True)],
    "one_flag_for_all_optimizers": [dict(flag="overwrite"), dict(flag="or")],
    "load_ignores_tracker": [dict(load_ignores_tracker=True)],
}


# ------------------------------------------------------------------ the scripted runs
class _CountingSGD:
    """SGD with momentum 0.9 that counts its steps, so a skipped step is seen. It offers what a scaler uses
    of an optimiser (param_groups and step), written out because torch.optim's first step costs seconds."""

    def __init__(self, params, lr=0.05, momentum=0.9):
        self.param_groups = [{"params": list(params), "lr": lr, "momentum": momentum}]
        self.state = {}
        self.steps = 0

    @torch.no_grad()
    def step(self):
        self.steps += 1
        group = self.param_groups[0]
        for p in group["params"]:
            if p.grad is None:
                continue
            buf = self.state.get(p)
            buf = p.grad.clone() if buf is None else buf.mul_(group["momentum"]).add_(p.grad)
            self.state[p] = buf
            p.add_(buf, alpha=-group["lr"])


def _task():
    g = torch.Generator().manual_seed(20)
    x = torch.randn(8, 3, generator=g)  # (N, 3)
    y = torch.randn(8, 2, generator=g)  # (N, 2)
    w = torch.randn(4, 3, generator=g) * 0.5
    b = torch.randn(4, generator=g) * 0.1
    v = torch.randn(2, 4, generator=g) * 0.5
    return x, y, [nn.Parameter(w), nn.Parameter(b), nn.Parameter(v)]


def _loss(params, x, y):
    w, b, v = params
    return ((torch.tanh(x @ w.T + b) @ v.T - y) ** 2).mean()  # ()


# A step: "inf" puts (param index, value) into one gradient after backward (an fp16 overflow of one
# tensor); "bad" gives an inf target (the loss itself is inf); "unscale" calls unscale_ before step
# and clips the unscaled gradients to norm 0.3, as a training loop does; "pair" scales a list or tuple
# of two losses in one call; "set" calls update(new_scale) instead of update().
_INF, _NAN = float("inf"), float("nan")
_MAIN = [{}, {}, {}, {}, {}, {}, {"unscale": 1}, {}, {}, {"inf": (2, _INF)}, {}, {}, {"unscale": 1},
         {"bad": 1}, {}, {}, {}, {"inf": (1, _NAN)}, {"unscale": 1}, {}, {}, {"unscale": 1, "inf": (2, -_INF)},
         {}, {}, {}, {}, {}, {}, {}]
_TWO = [{}, {}, {"inf": (0, _INF)}, {}, {}, {"inf": (2, _NAN)}, {"unscale": 1}, {}, {"inf": (0, _NAN)}, {}, {}, {}]
_EXTRAS = [{}, {"pair": list}, {"set": 2.0**20}, {}, {"pair": tuple}, {}, {"set": 512.0}, {"unscale": 1}, {},
           {"pair": list, "inf": (0, _INF)}, {}, {}]
_SCRIPTS = {  # name -> (constructor arguments, steps, number of optimisers)
    "main": (dict(init_scale=2.0**20, growth_interval=3), _MAIN, 1),
    "factors": (dict(init_scale=2.0**10, growth_factor=4.0, backoff_factor=0.25, growth_interval=2),
                _MAIN[:18], 1),
    "defaults": ({}, _MAIN[:8], 1),
    "two_optimizers": (dict(init_scale=2.0**12, growth_interval=2), _TWO, 2),
    "disabled": (dict(init_scale=2.0**20, enabled=False), _MAIN[:8], 1),
    "extras": (dict(init_scale=2.0**10, growth_interval=2), _EXTRAS, 1),
}
_LABELS = {
    "main": "GradScaler(init_scale=2**20, growth_interval=3), one SGD optimiser, gradients cast through float16",
    "factors": "GradScaler(init_scale=2**10, growth_factor=4.0, backoff_factor=0.25, growth_interval=2)",
    "defaults": "GradScaler() with its default arguments",
    "two_optimizers": "GradScaler(init_scale=2**12, growth_interval=2) shared by two SGD optimisers "
                      "(one for W and b, one for V)",
    "disabled": "GradScaler(init_scale=2**20, enabled=False): the same loop without scaling",
    "extras": "GradScaler(init_scale=2**10, growth_interval=2) with update(new_scale) at two steps and scale() of "
              "a list and of a tuple of two losses",
    "saves": "11 steps with your GradScaler, then torch.amp.GradScaler('cpu').load_state_dict(yours.state_dict()) "
             "runs the rest",
    "loads": "11 steps with torch.amp.GradScaler, then a new GradScaler() of yours load_state_dict()s its "
             "state_dict() and runs the rest",
}
_CUT = 11  # where the state_dict round trips change hands (mid-interval: the growth count is 1)


class _Run:
    """Drives a scaler (torch's, the learner's or a variant) through steps; keeps a trace."""

    def __init__(self, n_opt: int):
        self.x, self.y, self.params = _task()
        groups = [self.params] if n_opt == 1 else [self.params[:2], self.params[2:]]
        self.opts = [_CountingSGD(g) for g in groups]
        self.trace = []  # per step: (scale after update, steps per optimiser, parameters, unscaled grad norm)

    def steps(self, scaler, steps, call):
        for spec in steps:
            for p in self.params:
                p.grad = None
            y = self.y.clone()
            if spec.get("bad"):
                y[0, 0] = _INF
            if "pair" in spec:  # two losses (two heads, or two halves of the batch) scaled in one call
                halves = spec["pair"]((0.5 * _loss(self.params, self.x[:4], y[:4]),
                                       0.5 * _loss(self.params, self.x[4:], y[4:])))
                scaled = call(scaler.scale, halves)
                if type(scaled) is not type(halves) or len(scaled) != 2 or \
                        not all(isinstance(t, torch.Tensor) and t.numel() == 1 for t in scaled):
                    raise Mismatch(f"scale() of a {type(halves).__name__} of two losses should return a "
                                   f"{type(halves).__name__} of the two scaled losses, got {type(scaled).__name__}")
                scaled = scaled[0] + scaled[1]
            else:
                scaled = call(scaler.scale, _loss(self.params, self.x, y))
                if not isinstance(scaled, torch.Tensor) or scaled.numel() != 1:
                    raise Mismatch(f"scale(loss) should return the scaled loss (a tensor with one element), got "
                                   f"{type(scaled).__name__}")
            with torch.enable_grad():
                scaled.backward()
            with torch.no_grad():
                for p in self.params:
                    p.grad.copy_(p.grad.half().float())  # what an fp16 backward can hold: above 65504 is inf
                if "inf" in spec:
                    i, value = spec["inf"]
                    self.params[i].grad.view(-1)[1] = value  # flat view: the gradient's second entry
            norm = None
            if spec.get("unscale"):
                for opt in self.opts:
                    call(scaler.unscale_, opt)
                grads = [p.grad for p in self.params]
                norm = float(torch.cat([g.flatten() for g in grads]).norm())  # all gradients as one (P,)
                if math.isfinite(norm) and norm > 0.3:
                    with torch.no_grad():
                        for g in grads:
                            g.mul_(0.3 / norm)
            before = [opt.steps for opt in self.opts]
            for opt in self.opts:
                call(scaler.step, opt)
            if "set" in spec:
                call(scaler.update, spec["set"])  # update(new_scale): a scale chosen by hand
            else:
                call(scaler.update)
            scale = call(scaler.get_scale)
            try:
                scale = float(scale)
            except (TypeError, ValueError, RuntimeError):
                raise Mismatch(f"get_scale() should return the scale as a number, got {type(scale).__name__}") \
                    from None
            stepped = tuple(opt.steps - b for opt, b in zip(self.opts, before))
            flat = torch.cat([p.detach().flatten() for p in self.params]).clone()  # (P,)
            self.trace.append((scale, stepped, flat, norm))
        return self


def _direct(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def _torch_scaler(**kw):
    return torch.amp.GradScaler("cpu", **kw)


def _script_trace(name: str, make, call) -> list:
    """The trace of script `name` with scaler class `make` (torch's, the learner's or a variant's), whose
    methods are called through `call`."""
    if name in _SCRIPTS:
        kw, steps, n_opt = _SCRIPTS[name]
        return _Run(n_opt).steps(call(make, **kw), steps, call).trace
    kw, steps, _ = _SCRIPTS["main"]
    if name == "saves":
        scaler = call(make, **kw)
        run = _Run(1).steps(scaler, steps[:_CUT], call)
        state = call(scaler.state_dict)
        try:
            theirs = torch.amp.GradScaler("cpu")
            theirs.load_state_dict(state)
            return run.steps(theirs, steps[_CUT:], _direct).trace
        except Exception as exc:  # noqa: BLE001 - torch could not use the learner's state dict
            raise Mismatch(f"torch.amp.GradScaler could not continue from your state_dict() ({type(exc).__name__}: "
                           f"{str(exc)[:120]}); return a dict with torch's keys 'scale', 'growth_factor', "
                           "'backoff_factor', 'growth_interval' and '_growth_tracker', holding Python numbers",
                           f"case: {_LABELS[name]}") from None
    ref = _torch_scaler(**kw)
    run = _Run(1).steps(ref, steps[:_CUT], _direct)
    mine = call(make)
    call(mine.load_state_dict, ref.state_dict())
    return run.steps(mine, steps[_CUT:], call).trace


_ORDER = ("main", "factors", "defaults", "two_optimizers", "saves", "loads", "disabled", "extras")


def _reference_trace(name: str) -> list:
    return _script_trace("main" if name in ("saves", "loads") else name, _torch_scaler, _direct)


def _same_step(a, b) -> bool:
    (sa, ta, pa, na), (sb, tb, pb, nb) = a, b
    scale_ok = math.isclose(sa, sb, rel_tol=1e-6) or (math.isnan(sa) and math.isnan(sb))
    norm_ok = (na is None) == (nb is None) and (na is None or math.isclose(na, nb, rel_tol=1e-4, abs_tol=1e-6)
                                                 or (math.isnan(na) and math.isnan(nb)) or na == nb)
    close = bool(torch.isclose(pa.double(), pb.double(), rtol=1e-5, atol=1e-6, equal_nan=True).all())
    return scale_ok and ta == tb and norm_ok and close


def _first_difference(mine, ref) -> int | None:
    for i, (a, b) in enumerate(zip(mine, ref)):
        if not _same_step(a, b):
            return i
    return None if len(mine) == len(ref) else min(len(mine), len(ref))


def _describe(step: int, mine, ref) -> str:
    (sm, tm, pm, nm), (sr, tr, pr, nr) = mine, ref
    at = f"at step {step}"
    if tm != tr:
        said = {(0,): "skipped", (1,): "stepped"}
        if len(tr) == 1:
            return (f"{at} the optimiser {said.get(tm, f'stepped {tm[0]} times')} where torch.amp.GradScaler "
                    f"{said[tr]} it")
        return f"{at} the optimisers stepped {list(tm)} times where with torch.amp.GradScaler they stepped {list(tr)}"
    if (nm is None) != (nr is None) or (nm is not None and not math.isclose(nm, nr, rel_tol=1e-4)):
        return (f"{at} the gradient norm after unscale_() is {nm:.6g}, with torch.amp.GradScaler {nr:.6g}: "
                "unscale_ must divide every gradient by the scale, in place")
    if not (math.isclose(sm, sr, rel_tol=1e-6) or (math.isnan(sm) and math.isnan(sr))):
        return f"{at} get_scale() is {sm:g} after update(), torch.amp.GradScaler's is {sr:g}"
    err = float((pm.double() - pr.double()).abs().nan_to_num(float("inf")).max())
    return f"{at} the parameters differ from the run with torch.amp.GradScaler (max abs difference {err:.3g})"


_SCALER_FORBID = ("torch.amp.GradScaler", "torch.cuda.amp.GradScaler", "torch.cpu.amp.GradScaler",
                  "torch._amp_foreach_non_finite_check_and_unscale_", "torch._amp_update_scale_",
                  "course_lib", "course_lib.checks")


@register("check_grad_scaler", points=4, reference=SCALER_SOLUTION, misconceptions=SCALER_MISCONCEPTIONS, minutes=40,
          forbid=_SCALER_FORBID,
          hint="scale(loss) multiplies by the scale. unscale_(opt) divides every p.grad in place and notes, for this "
               "optimiser, whether any is inf/NaN. step(opt) unscales if that has not happened yet, then steps "
               "only if its gradients were finite. update() backs off on an overflow, else counts clean steps and "
               "grows the scale after growth_interval of them; then it forgets this iteration's findings.",
          idea="Keep a dict id(optimizer) -> {'stage': 'unscaled' or 'stepped', 'found_inf': bool}, filled by "
               "unscale_ and step and emptied by update(): it tells step() whether to unscale (never twice), "
               "whether to skip this optimiser, and when a call comes in the wrong order (RuntimeError). update(): "
               "if any found_inf, scale *= backoff_factor and the clean-step count goes to 0; else count += 1, and "
               "when it reaches growth_interval, scale *= growth_factor and the count goes to 0. state_dict() uses "
               "torch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker. With "
               "enabled=False every method passes through.")
def check_grad_scaler(learner):
    if not isinstance(learner, type):
        raise Mismatch(f"pass the class itself (check_grad_scaler(GradScaler)), not a {type(learner).__name__}")
    rules = REGISTRY["check_grad_scaler"].forbid
    for base in learner.__mro__[1:]:  # `class GradScaler(torch.amp.GradScaler): pass`
        used = rules.forbidden(base)
        if used:
            raise Delegates([used], rules)
    with torch.random.fork_rng(), single_thread():
        mine = []
        for k, name in enumerate(_ORDER):
            mine.append(_script_trace(name, learner, call_learner))
            ref = _reference_trace(name)
            step = _first_difference(mine[-1], ref)
            if step is not None:
                if step >= min(len(mine[-1]), len(ref)):
                    raise Mismatch(f"the run stopped after {len(mine[-1])} of {len(ref)} steps", f"case: {_LABELS[name]}")
                raise Mismatch(_describe(step, mine[-1][step], ref[step]), f"case: {_LABELS[name]}",
                               _diagnose_scaler(mine))
        _check_misuses(learner)
    return len(_ORDER) + len(MISUSES)


def _diagnose_scaler(mine: list) -> str | None:
    """The misconception whose traces equal the learner's on every script run so far."""
    names = _ORDER[:len(mine)]
    refs = [_reference_trace(n) for n in names]
    for key, flag_sets in _SCALER_VARIANTS.items():
        for flags in flag_sets:
            make = functools.partial(_ScalerVariant, **flags)
            try:
                outs = [_script_trace(n, make, _direct) for n in names]
            except Exception:  # noqa: BLE001 - a variant that cannot run these scripts does not match
                continue
            if all(_first_difference(o, r) is None for o, r in zip(outs, refs)):
                continue
            if all(_first_difference(m, o) is None for m, o in zip(mine, outs)):
                return key
    return None


# calls, in order, after scale(loss).backward(), whose last one must raise RuntimeError as torch's does
MISUSES = {("unscale_", "unscale_"): "a second unscale_(optimizer) before update() would divide the gradients "
                                     "by the scale once more",
           ("step", "unscale_"): "unscale_(optimizer) after step(optimizer) comes too late: the step already used "
                                 "the gradients",
           ("step", "step"): "a second step(optimizer) before update() would apply the same gradients twice"}


def check_misuse(make, call, calls) -> bool:
    """Run scale(loss).backward() and then `calls` on a fresh scaler; True if the last call raised RuntimeError."""
    x, y, params = _task()
    opt = _CountingSGD(params)
    scaler = call(make, init_scale=8.0)
    with torch.enable_grad():
        call(scaler.scale, _loss(params, x, y)).backward()
    for name in calls[:-1]:
        call(getattr(scaler, name), opt)
    try:
        call(getattr(scaler, calls[-1]), opt)
    except LearnerError as err:
        if isinstance(err.exc, RuntimeError):
            return True
        raise
    except RuntimeError:
        return True
    return False


def _check_misuses(learner) -> None:
    for calls, why in MISUSES.items():
        if not check_misuse(learner, call_learner, calls):
            said = "(); ".join(calls)
            raise Mismatch(f"{calls[-1]}() should raise a RuntimeError here, as torch.amp.GradScaler's does: {why}",
                           f"case: scale(loss).backward(); {said}() on the same optimiser")
