"""Checks of lessons 04-05, both ways: correct implementations (the reference and others written
differently) pass, stubs are "not attempted", and each named misconception — written here the
way a learner would write it, independently of the grader's re-creations — is diagnosed."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import attention as ref
from course_lib import efficient_attention as eff
from course_lib.checks import (check_causal_linear_attention, check_online_softmax_attention,
                               check_repeat_kv, check_sliding_window_attention, check_sliding_window_mask)

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


def stub(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check", [check_repeat_kv, check_online_softmax_attention, check_sliding_window_mask,
                                   check_sliding_window_attention, check_causal_linear_attention])
def test_stub_is_not_attempted(check):
    r = check(stub)
    assert_not_attempted(r)


# ------------------------------------------------------------------ repeat_kv
def repeat_kv_index(x, n_rep):  # correct: gather heads with an index [0, 0, 1, 1, ...]
    idx = torch.arange(x.size(1)).repeat_interleave(n_rep)
    return x[:, idx]


@pytest.mark.parametrize("impl", [solved("check_repeat_kv"), repeat_kv_index, lambda x, n: x.repeat_interleave(n, dim=1)])
def test_repeat_kv_accepts_correct(impl):
    r = check_repeat_kv(impl)
    assert r.passed and r.points == r.max_points, r.message


def repeat_kv_import_inside(x, n_rep):
    from course_lib.attention import repeat_kv
    return repeat_kv(x, n_rep)


@pytest.mark.parametrize("impl", [ref.repeat_kv, repeat_kv_import_inside])
def test_repeat_kv_refuses_delegation(impl):
    assert_delegates(check_repeat_kv(impl), "course_lib.attention.repeat_kv")


def repeat_tiles(x, n_rep):
    return torch.cat([x] * n_rep, dim=1)


def repeat_time(x, n_rep):
    B, H, T, D = x.shape
    return x[:, :, :, None].expand(B, H, T, n_rep, D).reshape(B, H, T * n_rep, D)  # wrong: copies along time


@pytest.mark.parametrize("impl,key", [(repeat_tiles, "repeat_not_interleave"), (repeat_time, "wrong_dim")])
def test_repeat_kv_diagnoses(impl, key):
    assert_diagnosed(check_repeat_kv(impl), key)


def test_repeat_kv_misconceptions_all_tested():
    assert_all_tested("check_repeat_kv", {"repeat_not_interleave", "wrong_dim"})


# ------------------------------------------------------------------ online softmax attention
def online_learner(q, k, v, block_size, bug=None):
    """A learner's loop: per key block, running max / sum / weighted values."""
    D, T_k = q.shape[-1], k.shape[-2]
    run_max = torch.full(q.shape[:-1], -math.inf, dtype=q.dtype)
    run_sum = torch.zeros(q.shape[:-1], dtype=q.dtype)
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    n_blocks = T_k // block_size if bug == "floor" else math.ceil(T_k / block_size)
    for b in range(n_blocks):
        kb, vb = k[..., b * block_size:(b + 1) * block_size, :], v[..., b * block_size:(b + 1) * block_size, :]
        scores = torch.einsum("...qd,...kd->...qk", q, kb) / math.sqrt(D)
        if bug == "nomax":
            weights = scores.exp()
            run_sum = run_sum + weights.sum(-1)
            out = out + weights @ vb
            continue
        new_max = torch.maximum(run_max, scores.max(-1).values)
        weights = torch.exp(scores - new_max[..., None])
        fix = torch.exp(run_max - new_max)
        if bug == "norescale":
            fix = torch.ones_like(fix)
        run_sum = run_sum * fix + weights.sum(-1)
        out = (out if bug == "accfix" else out * fix[..., None]) + weights @ vb
        run_max = new_max
    return out / run_sum[..., None]


def online_f64(q, k, v, block_size):  # correct, float64 inside, logsumexp merging of blocks
    lse, acc = None, None
    for s in range(0, k.size(-2), block_size):
        sc = (q.double() @ k[..., s:s + block_size, :].double().transpose(-1, -2)) / math.sqrt(q.size(-1))  # (..., T_q, b)
        blk_lse = sc.logsumexp(-1, keepdim=True)
        blk_out = torch.softmax(sc, -1) @ v[..., s:s + block_size, :].double()
        if lse is None:
            lse, acc = blk_lse, blk_out
        else:
            new = torch.logaddexp(lse, blk_lse)
            acc = acc * (lse - new).exp() + blk_out * (blk_lse - new).exp()
            lse = new
    return acc.to(q.dtype)


@pytest.mark.parametrize("impl", [solved("check_online_softmax_attention"), online_learner, online_f64])
def test_online_softmax_accepts_correct(impl):
    r = check_online_softmax_attention(impl)
    assert r.passed, r.message


def online_via_sdpa(q, k, v, block_size):  # right numbers, no tiling: the exercise's point is missed
    return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("impl,used", [
    (online_via_sdpa, "torch.nn.functional.scaled_dot_product_attention"),
    (eff.online_softmax_attention, "course_lib.efficient_attention.online_softmax_attention"),
    (lambda q, k, v, block_size: eff.tiled_attention(q, k, v, block_size, block_size),
     "course_lib.efficient_attention.tiled_attention"),
    (lambda q, k, v, block_size: ref.attend(q, k, v), "course_lib.attention.attend"),
])
def test_online_softmax_refuses_delegation(impl, used):
    assert_delegates(check_online_softmax_attention(impl), used)


@pytest.mark.parametrize("bug,key", [("norescale", "no_rescale"), ("accfix", "acc_not_rescaled"),
                                     ("floor", "drops_last_block"), ("nomax", "overflow")])
def test_online_softmax_diagnoses(bug, key):
    impl = lambda q, k, v, block_size: online_learner(q, k, v, block_size, bug)  # noqa: E731
    assert_diagnosed(check_online_softmax_attention(impl), key)


def test_online_softmax_misconceptions_all_tested():
    assert_all_tested("check_online_softmax_attention", {
        "no_rescale", "acc_not_rescaled", "drops_last_block", "overflow"})


# ------------------------------------------------------------------ sliding-window mask
@pytest.mark.parametrize("impl", [
    solved("check_sliding_window_mask"),
    lambda T, window: torch.ones(T, T, dtype=torch.bool).tril() & ~torch.ones(T, T, dtype=torch.bool).tril(-window),
    lambda T, window: torch.tensor([[i - window < j <= i for j in range(T)] for i in range(T)]),
])
def test_sliding_window_mask_accepts_correct(impl):
    assert check_sliding_window_mask(impl).passed


@pytest.mark.parametrize("impl,used", [
    (ref.sliding_window_mask, "course_lib.attention.sliding_window_mask"),
    (lambda T, window: ref.position_mask(torch.arange(T), torch.arange(T), window=window),
     "course_lib.attention.position_mask"),
])
def test_sliding_window_mask_refuses_delegation(impl, used):
    assert_delegates(check_sliding_window_mask(impl), used)


def _band(T, lo, hi):  # lo <= i - j <= hi
    d = torch.arange(T).view(-1, 1) - torch.arange(T).view(1, -1)  # (T, T)
    return (d >= lo) & (d <= hi)


@pytest.mark.parametrize("impl,key", [
    (lambda T, window: _band(T, 0, window), "window_too_wide"),
    (lambda T, window: _band(T, 0, window - 2), "window_too_narrow"),
    (lambda T, window: _band(T, -(window - 1), window - 1), "not_causal"),
    (lambda T, window: ~_band(T, 0, window - 1), "inverted"),
])
def test_sliding_window_mask_diagnoses(impl, key):
    assert_diagnosed(check_sliding_window_mask(impl), key)


def test_sliding_window_mask_misconceptions_all_tested():
    assert_all_tested("check_sliding_window_mask", {
        "window_too_wide", "window_too_narrow", "not_causal", "inverted"})


# ------------------------------------------------------------------ sliding-window attention
def sw_learner(q, k, v, window, pad_side="left", mask_pad=True, extra=0):
    w = window + extra
    T, D = q.shape[-2:]
    pad = (0, 0, w - 1, 0) if pad_side == "left" else (0, 0, 0, w - 1)
    kw = F.pad(k, pad).unfold(2, w, 1)  # (B, H, T, D, w)
    vw = F.pad(v, pad).unfold(2, w, 1)  # (B, H, T, D, w)
    s = torch.einsum("bhtd,bhtdw->bhtw", q, kw) / math.sqrt(D)
    if mask_pad:
        key_pos = torch.arange(T)[:, None] + torch.arange(w)[None, :] - (w - 1 if pad_side == "left" else 0)
        s = s.masked_fill((key_pos < 0) | (key_pos >= T), float("-inf"))
    return torch.einsum("bhtw,bhtdw->bhtd", s.softmax(-1), vw)


def sw_loop(q, k, v, window):  # correct, one query at a time
    outs = []
    for t in range(q.size(-2)):
        lo = max(0, t - window + 1)
        s = q[..., t:t + 1, :] @ k[..., lo:t + 1, :].transpose(-1, -2) / math.sqrt(q.size(-1))  # (..., 1, t+1-lo)
        outs.append(s.softmax(-1) @ v[..., lo:t + 1, :])
    return torch.cat(outs, dim=-2)


@pytest.mark.parametrize("impl", [solved("check_sliding_window_attention"), sw_learner, sw_loop])
def test_sliding_window_attention_accepts_correct(impl):
    r = check_sliding_window_attention(impl)
    assert r.passed and r.cases == 6, r.message


def sw_via_sdpa(q, k, v, window):
    T = q.size(-2)
    d = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # (T, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=(d >= 0) & (d < window))


@pytest.mark.parametrize("impl,used", [
    (sw_via_sdpa, "torch.nn.functional.scaled_dot_product_attention"),
    (eff.sliding_window_attention, "course_lib.efficient_attention.sliding_window_attention"),
    (eff.sliding_window_attention_naive, "course_lib.efficient_attention.sliding_window_attention_naive"),
])
def test_sliding_window_attention_refuses_delegation(impl, used):
    assert_delegates(check_sliding_window_attention(impl), used)


@pytest.mark.parametrize("kwargs,key", [(dict(pad_side="right"), "pad_right"),
                                        (dict(mask_pad=False), "pad_not_masked"),
                                        (dict(extra=1), "window_too_wide")])
def test_sliding_window_attention_diagnoses(kwargs, key):
    impl = lambda q, k, v, window: sw_learner(q, k, v, window, **kwargs)  # noqa: E731
    assert_diagnosed(check_sliding_window_attention(impl), key)


def test_sliding_window_attention_rejects_a_txt_matrix():
    def full_then_mask(q, k, v, window):  # right values, O(T²) memory
        T = q.size(-2)
        d = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # (T, T)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))  # (B, H, T, T)
        scores = scores.masked_fill(~((d >= 0) & (d < window)), float("-inf"))
        return scores.softmax(-1) @ v
    r = check_sliding_window_attention(full_then_mask)
    assert_diagnosed(r, "materialises_TxT")
    assert "MiB" in r.message


def test_sliding_window_attention_misconceptions_all_tested():
    assert_all_tested("check_sliding_window_attention", {
        "pad_right", "pad_not_masked", "window_too_wide", "materialises_TxT"})


# ------------------------------------------------------------------ causal linear attention
def linear_loop(q, k, v, phi=lambda x: F.elu(x) + 1, normalise=True, causal=True):
    fq, fk = phi(q), phi(k)
    T = q.size(-2)
    outs = []
    for t in range(T):
        end = t + 1 if causal else T
        S = torch.einsum("...jd,...je->...de", fk[..., :end, :], v[..., :end, :])
        num = torch.einsum("...d,...de->...e", fq[..., t, :], S)
        if normalise:
            num = num / (fq[..., t, :] * fk[..., :end, :].sum(-2)).sum(-1, keepdim=True)
        outs.append(num)
    return torch.stack(outs, -2)


@pytest.mark.parametrize("impl", [solved("check_causal_linear_attention"), linear_loop])
def test_causal_linear_accepts_correct(impl):
    r = check_causal_linear_attention(impl)
    assert r.passed, r.message


@pytest.mark.parametrize("impl", [eff.causal_linear_attention, eff.causal_linear_attention_parallel,
                                  eff.linear_attention_recurrent])
def test_causal_linear_library_versions_are_right_but_refused(impl):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 6, 4).unbind(0)
    torch.testing.assert_close(impl(q, k, v), linear_loop(q, k, v))  # the same numbers as a learner's loop
    r = check_causal_linear_attention(impl)
    assert_delegates(r, "course_lib.efficient_attention.")
    assert impl.__name__ in r.message


@pytest.mark.parametrize("kwargs,key", [(dict(normalise=False), "no_normaliser"), (dict(causal=False), "not_causal"),
                                        (dict(phi=F.elu), "elu_without_plus_one")])
def test_causal_linear_diagnoses(kwargs, key):
    impl = lambda q, k, v: linear_loop(q, k, v, **kwargs)  # noqa: E731
    assert_diagnosed(check_causal_linear_attention(impl), key)


def test_causal_linear_misconceptions_all_tested():
    assert_all_tested("check_causal_linear_attention", {
        "no_normaliser", "not_causal", "elu_without_plus_one"})
