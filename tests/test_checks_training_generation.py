"""check_cosine_lr, check_clip_grad_norm and check_sample_top_p, both ways."""
import math

import pytest
import torch

from course_lib.checks import check_clip_grad_norm, check_cosine_lr, check_sample_top_p
from course_lib.generation import sample_next
from course_lib.training import clip_grad_norm, cosine_lr

from helpers import assert_all_tested, assert_diagnosed, assert_not_attempted

pytestmark = pytest.mark.usefixtures("quiet_checks")


# ------------------------------------------------------------------ cosine_lr
def lr_numpy_style(step, warmup, total, max_lr, min_lr):  # correct, written differently
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (max_lr - min_lr) * (math.cos(math.pi * t) + 1) / 2


def lr_off_by_one(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * step / warmup
    return lr_numpy_style(step, warmup, total, max_lr, min_lr)


def lr_to_zero(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return max_lr * (math.cos(math.pi * t) + 1) / 2


def lr_from_zero(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = min(1.0, step / total)
    return min_lr + (max_lr - min_lr) * (math.cos(math.pi * t) + 1) / 2


def lr_no_clamp(step, warmup, total, max_lr, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (max_lr - min_lr) * (math.cos(math.pi * t) + 1) / 2


@pytest.mark.parametrize("impl", [cosine_lr, lr_numpy_style])
def test_cosine_accepts(impl):
    assert check_cosine_lr(impl).passed


def test_cosine_stub():
    def f(step, warmup, total, max_lr, min_lr):
        raise NotImplementedError
    assert_not_attempted(check_cosine_lr(f))


@pytest.mark.parametrize("impl,key", [(lr_off_by_one, "warmup_off_by_one"), (lr_to_zero, "decays_to_zero"),
                                      (lr_from_zero, "progress_ignores_warmup"), (lr_no_clamp, "no_clamp_after_total")])
def test_cosine_diagnoses(impl, key):
    assert_diagnosed(check_cosine_lr(impl), key)


def test_cosine_named_all_tested():
    assert_all_tested("check_cosine_lr", {
        "warmup_off_by_one", "decays_to_zero", "progress_ignores_warmup", "no_clamp_after_total"})


# ------------------------------------------------------------------ clip_grad_norm
def clip_loop(parameters, max_norm):  # correct, with a Python loop
    ps = [p for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float((p.grad ** 2).sum()) for p in ps))
    if total > max_norm:
        for p in ps:
            p.grad *= max_norm / (total + 1e-6)
    return total


def clip_per_param(parameters, max_norm):
    for p in parameters:
        n = p.grad.norm()
        if n > max_norm:
            p.grad.mul_(max_norm / (n + 1e-6))
    return 0.0


def clip_not_in_place(parameters, max_norm):
    ps = list(parameters)
    total = torch.stack([p.grad.norm() for p in ps]).norm()
    for p in ps:
        g = p.grad * min(1.0, max_norm / (float(total) + 1e-6))  # a new tensor, never stored
    return total


def clip_always(parameters, max_norm):
    ps = list(parameters)
    total = torch.stack([p.grad.norm() for p in ps]).norm()
    for p in ps:
        p.grad.mul_(max_norm / (total + 1e-6))
    return total


def clip_returns_after(parameters, max_norm):
    ps = list(parameters)
    torch.nn.utils.clip_grad_norm_(ps, max_norm)
    return torch.stack([p.grad.norm() for p in ps]).norm()


@pytest.mark.parametrize("impl", [clip_grad_norm, clip_loop, torch.nn.utils.clip_grad_norm_])
def test_clip_accepts(impl):
    assert check_clip_grad_norm(impl).passed


@pytest.mark.parametrize("impl,key", [(clip_per_param, "per_parameter"), (clip_not_in_place, "not_in_place"),
                                      (clip_always, "always_rescales"), (clip_returns_after, "returns_clipped_norm")])
def test_clip_diagnoses(impl, key):
    assert_diagnosed(check_clip_grad_norm(impl), key)


def test_clip_named_all_tested_and_stub():
    assert_all_tested("check_clip_grad_norm", {
        "per_parameter", "not_in_place", "always_rescales", "returns_clipped_norm"})

    def f(parameters, max_norm):
        raise NotImplementedError
    assert_not_attempted(check_clip_grad_norm(f))


# ------------------------------------------------------------------ sample_top_p
def top_p_ref(logits, p, generator, temperature=1.0):
    return sample_next(logits, temperature, top_p=p, generator=generator)


def top_p_hf_style(logits, p, generator, temperature=1.0):  # correct: ascending sort, HF's way
    logits = logits / temperature
    sorted_logits, idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum <= (1 - p)
    remove[..., -1:] = False
    logits = logits.masked_fill(remove.scatter(-1, idx, remove), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _nucleus(logits, p, generator, temperature, keep_rule):
    probs = (logits / temperature).softmax(-1)
    sp, order = probs.sort(-1, descending=True)
    keep = keep_rule(sp)
    keep[..., 0] = True
    idx = torch.multinomial(sp * keep, 1, generator=generator)
    return order.gather(-1, idx)[:, 0]


def top_p_drops(logits, p, generator, temperature=1.0):
    return _nucleus(logits, p, generator, temperature, lambda sp: sp.cumsum(-1) <= p)


def top_p_unsorted(logits, p, generator, temperature=1.0):
    probs = (logits / temperature).softmax(-1)
    keep = (probs.cumsum(-1) - probs) < p
    return torch.multinomial(probs * keep, 1, generator=generator)[:, 0]


def top_p_temp_after(logits, p, generator, temperature=1.0):
    probs = logits.softmax(-1) / temperature
    probs = probs / probs.sum(-1, keepdim=True)
    sp, order = probs.sort(-1, descending=True)
    keep = (sp.cumsum(-1) - sp) < p
    return order.gather(-1, torch.multinomial(sp * keep, 1, generator=generator))[:, 0]


@pytest.mark.parametrize("impl", [top_p_ref, top_p_hf_style])
def test_top_p_accepts(impl):
    assert check_sample_top_p(impl).passed


@pytest.mark.parametrize("impl,key", [(top_p_drops, "drops_crossing_token"), (top_p_unsorted, "unsorted"),
                                      (top_p_temp_after, "temperature_after_softmax")])
def test_top_p_diagnoses(impl, key):
    assert_diagnosed(check_sample_top_p(impl), key)


def test_top_p_named_all_tested_and_stub():
    assert_all_tested("check_sample_top_p", {
        "drops_crossing_token", "unsorted", "temperature_after_softmax"})

    def f(logits, p, generator, temperature=1.0):
        raise NotImplementedError
    assert_not_attempted(check_sample_top_p(f))


# ------------------------------------------------------------------ generate
from course_lib.checks import check_generate  # noqa: E402
from course_lib.generation import generate  # noqa: E402


def gen_ref(model, idx, n, use_cache=True):
    return generate(model, idx, n, use_cache=use_cache)


def gen_manual(model, idx, n, use_cache=True):  # correct, written by hand with explicit positions
    cache = model.new_cache() if use_cache else None
    logits = model(idx, cache=cache).logits[:, -1]
    for i in range(n):
        nxt = logits.argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
        if i == n - 1:
            break
        if use_cache:
            pos = torch.full((idx.size(0), 1), idx.size(1) - 1)
            logits = model(nxt, cache=cache, position_ids=pos).logits[:, -1]
        else:
            logits = model(idx).logits[:, -1]
    return idx


def _loop(model, idx, n, use_cache, feed):
    cache = model.new_cache() if use_cache else None
    step = idx
    for _ in range(n):
        logits = feed(model, idx, step, cache) if use_cache else model(idx).logits[:, -1]
        nxt = logits.argmax(-1)
        idx = torch.cat([idx, nxt[:, None]], 1)
        step = nxt[:, None]
    return idx


def gen_positions_restart(model, idx, n, use_cache=True):
    return _loop(model, idx, n, use_cache, lambda m, full, step, c: m(
        step, cache=c, position_ids=torch.arange(step.size(1))).logits[:, -1])


def gen_refeed(model, idx, n, use_cache=True):
    return _loop(model, idx, n, use_cache, lambda m, full, step, c: m(full, cache=c).logits[:, -1])


def gen_ignores_cache(model, idx, n, use_cache=True):
    return _loop(model, idx, n, False, None)


def gen_drops_prompt(model, idx, n, use_cache=True):
    return gen_ref(model, idx, n, use_cache)[:, idx.size(1):]


@pytest.mark.parametrize("impl", [gen_ref, gen_manual])
def test_generate_accepts(impl):
    assert check_generate(impl).passed


@pytest.mark.parametrize("impl,key", [(gen_positions_restart, "positions_not_advanced"),
                                      (gen_refeed, "refeeds_whole_sequence"),
                                      (gen_ignores_cache, "ignores_cache"), (gen_drops_prompt, "drops_prompt")])
def test_generate_diagnoses(impl, key):
    assert_diagnosed(check_generate(impl), key)


def test_generate_named_all_tested_and_stub():
    assert_all_tested("check_generate", {
        "positions_not_advanced", "refeeds_whole_sequence", "ignores_cache", "drops_prompt"})

    def f(model, idx, n, use_cache=True):
        raise NotImplementedError
    assert_not_attempted(check_generate(f))
