"""Exercise 10's accumulation and loss-scaling checks, both ways: check_accumulate_gradients and
check_grad_scaler accept the printed solutions and other correct implementations, and reject the stub,
delegation and each named misconception — written here as a learner would write it, independently of
the grader's own re-creations — with that diagnosis in the message. The references they compare with
are independent (F.cross_entropy on the concatenated batch; torch.amp.GradScaler), and a test shows the
grader's accumulation reference equal to a plain big-batch backward."""
import math

import pytest
import torch
import torch.nn.functional as F

import course_lib.training
from course_lib.checks import check_accumulate_gradients, check_grad_scaler
from course_lib.checks.training_track10 import _TinyLM, _torch_scaler, accumulate_reference, check_misuse

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

ACCUMULATE = solved("check_accumulate_gradients")
SCALER = solved("check_grad_scaler", "GradScaler")


# ================================================================== gradient accumulation
def test_reference_equals_one_big_batch():
    """Equal-length micro-batches can be stacked into one (B, T) batch: the grader's reference (concatenated
    tokens) gives that batch's gradient, and so does the printed solution's accumulation."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 13, (6, 5), generator=g)
    y = torch.randint(0, 13, (6, 5), generator=g)
    y[torch.rand(6, 5, generator=g) < 0.3] = -100
    big = _TinyLM(seed=3)
    logits = big(x)  # (B, T, V)
    F.cross_entropy(logits.reshape(-1, 13), y.reshape(-1), ignore_index=-100).backward()
    micro = [(x[:1], y[:1]), (x[1:4], y[1:4]), (x[4:], y[4:])]
    for fn in (accumulate_reference, ACCUMULATE):
        m = _TinyLM(seed=3)
        fn(m, micro, -100)
        for p, q in zip(big.parameters(), m.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7)


def accumulate_mean_weighted(model, micro_batches, ignore_index=-100):
    model.zero_grad(set_to_none=True)
    counts = [(y != ignore_index).sum() for _, y in micro_batches]
    total, loss = sum(counts), 0.0
    if total == 0:
        raise ValueError("all targets are ignore_index")
    for (x, y), n in zip(micro_batches, counts):
        mean = F.cross_entropy(model(x).transpose(1, 2), y, ignore_index=ignore_index)  # (B, V, T) layout
        (mean * n / total).backward()
        loss = loss + mean.detach() * n / total
    return loss


def accumulate_by_hand(model, micro_batches, ignore_index=-100):
    for p in model.parameters():
        if p.grad is not None:
            p.grad.zero_()
    n = sum((y != ignore_index).sum().item() for _, y in micro_batches)
    if not n:
        raise ValueError("nothing to learn from: every target is ignored")
    out = 0.0
    for x, y in micro_batches:
        logp = model(x).double().log_softmax(-1)  # (B, T, V), float64 inside
        keep = y != ignore_index  # (B, T)
        picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
        loss = -(picked * keep).sum() / n
        loss.backward()
        out += loss.item()
    return out


def accumulate_flat_masked(model, micro_batches, ignore_index=-100):
    model.zero_grad()
    n = sum(int(torch.count_nonzero(y.ne(ignore_index))) for _, y in micro_batches)
    if n < 1:
        raise ValueError(f"no target differs from ignore_index={ignore_index}")
    total = torch.zeros(())
    for x, y in micro_batches:
        logits = model(x).reshape(-1, model.head.out_features)  # (B*T, V)
        keep = y.reshape(-1) != ignore_index  # (B*T,)
        per_token = F.cross_entropy(logits[keep], y.reshape(-1)[keep], reduction="none")  # (kept,)
        (per_token.sum() / n).backward()
        total += per_token.detach().sum() / n
    return total


@pytest.mark.parametrize("impl", [ACCUMULATE, accumulate_mean_weighted, accumulate_by_hand, accumulate_flat_masked])
def test_accumulate_accepts_correct_implementations(impl):
    r = check_accumulate_gradients(impl)
    assert r.passed and r.points == r.max_points == 2, (r.message, r.detail)


def test_accumulate_stub_is_not_attempted():
    def accumulate_gradients(model, micro_batches, ignore_index=-100):
        raise NotImplementedError()
    assert_not_attempted(check_accumulate_gradients(accumulate_gradients))


def accumulate_with_course_loss(model, micro_batches, ignore_index=-100):
    model.zero_grad()
    for x, y in micro_batches:
        (course_lib.training.lm_loss(model, x, y) / len(micro_batches)).backward()
    return 0.0


@pytest.mark.parametrize("impl,used", [
    (accumulate_reference, "course_lib.checks.training_track10.accumulate_reference"),
    (lambda model, micro_batches, ignore_index=-100: accumulate_reference(model, micro_batches, ignore_index),
     "course_lib.checks.training_track10.accumulate_reference"),
    (accumulate_with_course_loss, "course_lib.training.lm_loss"),
])
def test_accumulate_refuses_delegation(impl, used):
    assert_delegates(check_accumulate_gradients(impl), used)


def test_accumulate_bad_outputs_are_explained():
    def returns_nothing(model, micro_batches, ignore_index=-100):
        ACCUMULATE(model, micro_batches, ignore_index)
    r = check_accumulate_gradients(returns_nothing)
    assert not r.passed and "return the step's mean token loss" in r.message and "NoneType" in r.message

    def nan_grads(model, micro_batches, ignore_index=-100):
        out = ACCUMULATE(model, micro_batches, ignore_index)
        model.head.weight.grad.fill_(float("nan"))
        return out
    r = check_accumulate_gradients(nan_grads)
    assert not r.passed and "head.weight.grad contains NaN" in r.message

    def raises(model, micro_batches, ignore_index=-100):
        raise ValueError("no tokens")
    r = check_accumulate_gradients(raises)
    assert not r.passed and "your code raised ValueError: no tokens" in r.message

    def forgets_backward(model, micro_batches, ignore_index=-100):
        model.zero_grad(set_to_none=True)
        return 1.0
    r = check_accumulate_gradients(forgets_backward)
    assert not r.passed and "no gradient reached emb.weight" in r.message

    r = check_accumulate_gradients(3)
    assert not r.passed and "expected a function" in r.message


def test_accumulate_asks_for_an_error_when_nothing_is_kept():
    def nan_when_empty(model, micro_batches, ignore_index=-100):
        n = sum(int((y != ignore_index).sum()) for _, y in micro_batches)
        if n == 0:
            return float("nan")
        return ACCUMULATE(model, micro_batches, ignore_index)
    r = check_accumulate_gradients(nan_when_empty)
    assert not r.passed and "raise a ValueError" in r.message and "all -100" in r.detail

    def wrong_error(model, micro_batches, ignore_index=-100):
        if all((y == ignore_index).all() for _, y in micro_batches):
            raise ZeroDivisionError("no tokens")
        return ACCUMULATE(model, micro_batches, ignore_index)
    r = check_accumulate_gradients(wrong_error)
    assert not r.passed and "your code raised ZeroDivisionError" in r.message


def test_accumulate_wrong_loss_is_explained():
    def returns_last_loss(model, micro_batches, ignore_index=-100):
        ACCUMULATE(model, micro_batches, ignore_index)
        x, y = micro_batches[-1]
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=ignore_index).item()
    r = check_accumulate_gradients(returns_last_loss)
    assert not r.passed and "expected the mean token loss of the whole step" in r.message


# ------------------------------------------------------------------ misconceptions, as a learner writes them
def sums_means(model, micro_batches, ignore_index=-100):
    model.zero_grad()
    total = 0.0
    for x, y in micro_batches:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=ignore_index)
        loss.backward()
        total += loss.item()
    return total


def divides_by_micro_batches(model, micro_batches, ignore_index=-100):  # nanoGPT's loss / grad_accum_steps
    model.zero_grad()
    k, total = len(micro_batches), 0.0
    for x, y in micro_batches:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=ignore_index) / k
        loss.backward()
        total += loss.item()
    return total


def weights_by_sequences(model, micro_batches, ignore_index=-100):
    model.zero_grad()
    rows = sum(x.shape[0] for x, _ in micro_batches)
    total = 0.0
    for x, y in micro_batches:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=ignore_index) * x.shape[0] / rows
        loss.backward()
        total += loss.item()
    return total


def counts_ignored_tokens(model, micro_batches, ignore_index=-100):
    model.zero_grad()
    n = sum(y.numel() for _, y in micro_batches)
    total = 0.0
    for x, y in micro_batches:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=ignore_index, reduction="sum") / n
        loss.backward()
        total += loss.item()
    return total


def zeroes_between(model, micro_batches, ignore_index=-100):
    n = sum(int((y != ignore_index).sum()) for _, y in micro_batches)
    total = 0.0
    for x, y in micro_batches:
        model.zero_grad()  # inside the loop
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=ignore_index, reduction="sum") / n
        loss.backward()
        total += loss.item()
    return total


def zeroes_between_mean_over_k(model, micro_batches, ignore_index=-100):
    total = 0.0
    for x, y in micro_batches:
        for p in model.parameters():
            p.grad = None
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=ignore_index) / len(micro_batches)
        loss.backward()
        total += loss.item()
    return total


def not_cleared_first(model, micro_batches, ignore_index=-100):
    n = sum(int((y != ignore_index).sum()) for _, y in micro_batches)
    total = 0.0
    for x, y in micro_batches:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=ignore_index, reduction="sum") / n
        loss.backward()
        total += loss.item()
    return total


def mutates_input(model, micro_batches, ignore_index=-100):
    out = ACCUMULATE(model, micro_batches, ignore_index)
    for _, y in micro_batches:
        y[y == ignore_index] = 0  # "clean up" the padding afterwards
    return out


ACCUM_BAD = {"sums_means": sums_means, "divides_by_micro_batches": divides_by_micro_batches,
             "weights_by_sequences": weights_by_sequences, "counts_ignored_tokens": counts_ignored_tokens,
             "zeroes_between": zeroes_between, "not_cleared_first": not_cleared_first,
             "mutates_input": mutates_input}


@pytest.mark.parametrize("key", list(ACCUM_BAD))
def test_accumulate_diagnoses_each_misconception(key):
    assert_diagnosed(check_accumulate_gradients(ACCUM_BAD[key]), key)


def test_zeroing_inside_the_loop_is_diagnosed_whatever_the_normalisation():
    assert_diagnosed(check_accumulate_gradients(zeroes_between_mean_over_k), "zeroes_between")


def test_accumulate_named_misconceptions_are_all_tested():
    assert_all_tested("check_accumulate_gradients", ACCUM_BAD)


# ================================================================== dynamic loss scaling
class TensorScaler:
    """Another correct scaler: the scale is a float32 tensor as in torch, the gradients are divided,
    and the stages and findings live in two dicts."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled=True):
        self.on = enabled
        self.scale_t = torch.tensor(float(init_scale))
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.clean = 0
        self.stage, self.inf = {}, {}

    def get_scale(self):
        return self.scale_t.item() if self.on else 1.0

    def scale(self, outputs):
        if not self.on:
            return outputs
        if isinstance(outputs, torch.Tensor):
            return outputs * self.scale_t
        return type(outputs)(o * self.scale_t for o in outputs)

    def unscale_(self, optimizer):
        if not self.on:
            return
        if id(optimizer) in self.stage:
            raise RuntimeError(f"unscale_ after {self.stage[id(optimizer)]}")
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        with torch.no_grad():
            for grad in grads:
                grad.div_(self.scale_t)
        self.inf[id(optimizer)] = any(bool((~torch.isfinite(grad)).any()) for grad in grads)
        self.stage[id(optimizer)] = "unscale_"

    def step(self, optimizer, *args, **kwargs):
        if not self.on:
            return optimizer.step(*args, **kwargs)
        if self.stage.get(id(optimizer)) == "step":
            raise RuntimeError("step twice")
        if id(optimizer) not in self.stage:
            self.unscale_(optimizer)
        self.stage[id(optimizer)] = "step"
        return None if self.inf[id(optimizer)] else optimizer.step(*args, **kwargs)

    def update(self, new_scale=None):
        if not self.on:
            return
        if new_scale is not None:
            self.scale_t = torch.tensor(float(new_scale))
        elif any(self.inf.values()):
            self.scale_t *= self.backoff_factor
            self.clean = 0
        elif self.clean + 1 == self.growth_interval:
            self.scale_t *= self.growth_factor
            self.clean = 0
        else:
            self.clean += 1
        self.stage, self.inf = {}, {}

    def state_dict(self):
        if not self.on:
            return {}
        return dict(scale=self.scale_t.item(), growth_factor=self.growth_factor, backoff_factor=self.backoff_factor,
                    growth_interval=self.growth_interval, _growth_tracker=self.clean)

    def load_state_dict(self, state):
        if self.on:
            self.scale_t = torch.tensor(float(state["scale"]))
            self.growth_factor, self.backoff_factor = state["growth_factor"], state["backoff_factor"]
            self.growth_interval, self.clean = state["growth_interval"], state["_growth_tracker"]


class NanCheckScaler(SCALER):
    """Correct too: the overflow is found with one sum (an inf or a NaN anywhere makes it non-finite)."""

    def unscale_(self, optimizer):
        if not self.enabled:
            return
        if id(optimizer) in self._per_optimizer:
            raise RuntimeError("unscale_ twice, or after step")
        total = 0.0
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(1.0 / self._scale)
                        total += float(p.grad.abs().sum())
        self._per_optimizer[id(optimizer)] = {"stage": "unscaled", "found_inf": not math.isfinite(total)}


@pytest.mark.parametrize("impl", [SCALER, TensorScaler, NanCheckScaler])
def test_scaler_accepts_correct_implementations(impl):
    r = check_grad_scaler(impl)
    assert r.passed and r.points == r.max_points == 4, (r.message, r.detail)


def test_scaler_stub_is_not_attempted():
    class GradScaler:
        def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
            raise NotImplementedError()
    assert_not_attempted(check_grad_scaler(GradScaler))


class Subclass(torch.amp.GradScaler):
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        super().__init__("cpu", init_scale, growth_factor, backoff_factor, growth_interval)


class Wrapper:
    def __init__(self, **kw):
        self.inner = torch.amp.GradScaler("cpu", **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class HiddenWrapper:
    def __init__(self, **kw):
        self.inner = getattr(torch.amp, "Grad" + "Scaler")("cpu", **kw)

    def scale(self, loss):
        return self.inner.scale(loss)

    def unscale_(self, optimizer):
        self.inner.unscale_(optimizer)

    def step(self, optimizer):
        return self.inner.step(optimizer)

    def update(self):
        self.inner.update()

    def get_scale(self):
        return self.inner.get_scale()


class FusedUpdate(SCALER):
    """Writes everything but update(), which calls torch's own kernel."""

    def update(self, new_scale=None):
        scale, tracker = torch.tensor(self._scale), torch.tensor(self._growth_tracker, dtype=torch.int32)
        found = torch.tensor(float(any(st["found_inf"] for st in self._per_optimizer.values())))
        torch._amp_update_scale_(scale, tracker, found, self.growth_factor, self.backoff_factor, self.growth_interval)
        self._scale, self._growth_tracker, self._per_optimizer = scale.item(), int(tracker), {}


@pytest.mark.parametrize("impl,used", [
    (Subclass, "torch.amp.GradScaler"),
    (Wrapper, "torch.amp.GradScaler"),
    (HiddenWrapper, "torch.amp.GradScaler"),
    (FusedUpdate, "torch._amp_update_scale_"),
])
def test_scaler_refuses_delegation(impl, used):
    assert_delegates(check_grad_scaler(impl), used)


def test_scaler_bad_input_is_explained():
    r = check_grad_scaler(SCALER())
    assert not r.passed and "pass the class itself" in r.message

    class NoReturn(SCALER):
        def scale(self, loss):
            loss * self._scale
    r = check_grad_scaler(NoReturn)
    assert not r.passed and "scale(loss) should return the scaled loss" in r.message

    class Raises(SCALER):
        def update(self, new_scale=None):
            raise KeyError("tracker")
    r = check_grad_scaler(Raises)
    assert not r.passed and "your code raised KeyError" in r.message and "Traceback (your code)" in r.detail

    class StateWithoutTracker(SCALER):
        def state_dict(self):
            return {"scale": self._scale, "growth_factor": self.growth_factor,
                    "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval}
    r = check_grad_scaler(StateWithoutTracker)
    assert not r.passed and "torch.amp.GradScaler could not continue from your state_dict()" in r.message

    class NoEnabled(SCALER):
        def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
            super().__init__(init_scale, growth_factor, backoff_factor, growth_interval)
    r = check_grad_scaler(NoEnabled)
    assert not r.passed and "unexpected keyword argument 'enabled'" in r.message

    class NewScaleCountsAsClean(SCALER):
        def update(self, new_scale=None):
            super().update()
            if new_scale is not None:
                self._scale = float(new_scale)
    r = check_grad_scaler(NewScaleCountsAsClean)
    assert not r.passed and "update(new_scale)" in r.detail and "get_scale() is" in r.message

    class ListNotScaled(SCALER):
        def scale(self, outputs):
            if isinstance(outputs, (list, tuple)):
                return [out * self._scale for out in outputs]
            return super().scale(outputs)
    r = check_grad_scaler(ListNotScaled)
    assert not r.passed and "should return a tuple of the two scaled losses, got list" in r.message


@pytest.mark.parametrize("calls", [("unscale_", "unscale_"), ("step", "unscale_"), ("step", "step")])
def test_wrong_orders_raise_in_torch_and_must_in_yours(calls):
    assert check_misuse(_torch_scaler, lambda fn, *a, **k: fn(*a, **k), calls)  # what torch does

    class Lenient(SCALER):  # returns quietly for the order `calls`, raises for the other two
        def stage(self, optimizer):
            return self._per_optimizer.get(id(optimizer), {}).get("stage")

        def unscale_(self, optimizer):
            if calls == ("unscale_", "unscale_") and self.stage(optimizer) == "unscaled":
                return
            if calls == ("step", "unscale_") and self.stage(optimizer) == "stepped":
                return
            super().unscale_(optimizer)

        def step(self, optimizer, *args, **kwargs):
            if calls == ("step", "step") and self.stage(optimizer) == "stepped":
                return None
            return super().step(optimizer, *args, **kwargs)
    r = check_grad_scaler(Lenient)
    assert not r.passed and f"{calls[-1]}() should raise a RuntimeError" in r.message
    assert "; ".join(f"{c}()" for c in calls) in r.detail


# ------------------------------------------------------------------ misconceptions, as a learner writes them
class NoSkip(SCALER):
    def step(self, optimizer, *args, **kwargs):
        if id(optimizer) not in self._per_optimizer:
            self.unscale_(optimizer)
        self._per_optimizer[id(optimizer)]["stage"] = "stepped"
        return optimizer.step(*args, **kwargs)


class ChecksLossOnly(SCALER):
    def scale(self, outputs):
        self.loss_overflowed = not torch.isfinite(outputs).all().item()
        return outputs * self._scale

    def unscale_(self, optimizer):
        if id(optimizer) in self._per_optimizer:
            raise RuntimeError("unscale_() twice")
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad /= self._scale
        self._per_optimizer[id(optimizer)] = {"stage": "unscaled", "found_inf": self.loss_overflowed}


def overflowed(scaler):
    return any(st["found_inf"] for st in scaler._per_optimizer.values())


class NoBackoff(SCALER):
    def update(self, new_scale=None):
        if overflowed(self):
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        self._per_optimizer = {}


class GrowsEveryStep(SCALER):
    def update(self, new_scale=None):
        if overflowed(self):
            self._scale *= self.backoff_factor
        else:
            self._scale *= self.growth_factor
        self._per_optimizer = {}


class TrackerNotResetOnOverflow(SCALER):
    def update(self, new_scale=None):
        if overflowed(self):
            self._scale *= self.backoff_factor
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        self._per_optimizer = {}


class TrackerNotResetOnGrowth(SCALER):
    def update(self, new_scale=None):
        if overflowed(self):
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker >= self.growth_interval:
                self._scale *= self.growth_factor
        self._per_optimizer = {}


class UnscalesTwice(SCALER):
    def unscale_(self, optimizer):
        found = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.div_(self._scale)
                        found = found or not torch.isfinite(p.grad).all().item()
        self._per_optimizer[id(optimizer)] = {"stage": "unscaled", "found_inf": found}

    def step(self, optimizer, *args, **kwargs):
        self.unscale_(optimizer)  # always, even when the loop already called unscale_
        if not self._per_optimizer[id(optimizer)]["found_inf"]:
            return optimizer.step(*args, **kwargs)


class NoUnscale(SCALER):
    def step(self, optimizer, *args, **kwargs):
        if id(optimizer) not in self._per_optimizer:
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            bad = not all(torch.isfinite(g).all() for g in grads)
            self._per_optimizer[id(optimizer)] = {"stage": "stepped", "found_inf": bad}
        if not self._per_optimizer[id(optimizer)]["found_inf"]:
            return optimizer.step(*args, **kwargs)


class InfFlagNotCleared:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.s, self.gf, self.bf, self.gi = init_scale, growth_factor, backoff_factor, growth_interval
        self.good_steps, self.found_inf, self.unscaled = 0, False, set()

    def get_scale(self):
        return self.s

    def scale(self, loss):
        return loss * self.s

    def unscale_(self, optimizer):
        if optimizer in self.unscaled:
            raise RuntimeError("unscale_ called twice")
        self.unscaled.add(optimizer)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.data /= self.s
                    if not torch.isfinite(p.grad).all():
                        self.found_inf = True

    def step(self, optimizer):
        if optimizer not in self.unscaled:
            self.unscale_(optimizer)
        if not self.found_inf:
            optimizer.step()

    def update(self):
        if self.found_inf:  # never set back to False
            self.s *= self.bf
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.gi:
                self.s *= self.gf
                self.good_steps = 0
        self.unscaled = set()

    def state_dict(self):
        return {"scale": self.s, "growth_factor": self.gf, "backoff_factor": self.bf, "growth_interval": self.gi,
                "_growth_tracker": self.good_steps}

    def load_state_dict(self, state):
        self.s, self.gf, self.bf, self.gi = state["scale"], state["growth_factor"], state["backoff_factor"], \
            state["growth_interval"]
        self.good_steps = state["_growth_tracker"]


class OneFlagOverwritten(InfFlagNotCleared):
    def unscale_(self, optimizer):
        if optimizer in self.unscaled:
            raise RuntimeError("unscale_ called twice")
        self.unscaled.add(optimizer)
        self.found_inf = False  # this optimiser's finding replaces the last one's
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.data /= self.s
                    if not torch.isfinite(p.grad).all():
                        self.found_inf = True

    def update(self):
        super().update()
        self.found_inf = False


class OneFlagShared(InfFlagNotCleared):
    def update(self):
        super().update()
        self.found_inf = False  # cleared, but one flag for both optimisers


class LoadIgnoresTracker(SCALER):
    def load_state_dict(self, state):
        self._scale = state["scale"]
        self.growth_factor = state["growth_factor"]
        self.backoff_factor = state["backoff_factor"]
        self.growth_interval = state["growth_interval"]


SCALER_BAD = {"no_skip": NoSkip, "checks_loss_only": ChecksLossOnly, "no_backoff": NoBackoff,
              "grows_every_step": GrowsEveryStep, "tracker_not_reset_on_overflow": TrackerNotResetOnOverflow,
              "tracker_not_reset_on_growth": TrackerNotResetOnGrowth, "unscales_twice": UnscalesTwice,
              "no_unscale": NoUnscale, "inf_flag_not_cleared": InfFlagNotCleared,
              "one_flag_for_all_optimizers": OneFlagOverwritten, "load_ignores_tracker": LoadIgnoresTracker}


@pytest.mark.parametrize("key", list(SCALER_BAD))
def test_scaler_diagnoses_each_misconception(key):
    assert_diagnosed(check_grad_scaler(SCALER_BAD[key]), key)


def test_one_shared_flag_is_diagnosed_too():
    assert_diagnosed(check_grad_scaler(OneFlagShared), "one_flag_for_all_optimizers")


def test_scaler_named_misconceptions_are_all_tested():
    assert_all_tested("check_grad_scaler", SCALER_BAD)
