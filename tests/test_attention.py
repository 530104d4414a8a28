"""course_lib.attention against PyTorch's own implementations."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import (AttentionConfig, MultiHeadAttention, causal_mask, padding_mask, repeat_kv,
                                  scaled_dot_product_attention, softmax)
from course_lib.config import ConfigError

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_torch(dtype, dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=g, dtype=dtype) * 30
    x[0, 0, 0] = float("-inf")
    assert (softmax(x, dim) - torch.softmax(x, dim)).abs().max() <= TOL[dtype]


def test_softmax_is_stable_on_huge_logits():
    x = torch.tensor([1e4, 1e4 - 1, 0.0])
    out = softmax(x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.softmax(x, -1))


def test_softmax_fully_masked_row_gives_nan_free_zeros_in_attention():
    q = k = v = torch.randn(1, 3, 4)
    mask = torch.tensor([[False, False, False], [True, False, False], [True, True, True]])
    out = scaled_dot_product_attention(q, k, v, mask)
    assert torch.isfinite(out).all() and out[0, 0].abs().max() == 0


def _masks(B, H, Tq, Tk, g):
    rand = torch.rand(B, H, Tq, Tk, generator=g) > 0.5
    rand[..., 0] = True
    pad = torch.ones(B, Tk, dtype=torch.long)
    pad[0, Tk - 2:] = 0
    return {"none": None, "causal": causal_mask(Tq) if Tq == Tk else None, "random": rand,
            "padding": padding_mask(pad), "broadcast_heads": rand[:, :1]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("Tq,Tk", [(6, 6), (3, 7)])
def test_sdpa_matches_torch(dtype, Tq, Tk):
    g = torch.Generator().manual_seed(1)
    B, H, D = 2, 3, 16
    q = torch.randn(B, H, Tq, D, generator=g, dtype=dtype)
    k = torch.randn(B, H, Tk, D, generator=g, dtype=dtype)
    v = torch.randn(B, H, Tk, 8, generator=g, dtype=dtype)
    worst = 0.0
    for name, m in _masks(B, H, Tq, Tk, g).items():
        ours = scaled_dot_product_attention(q, k, v, m)
        theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        err = (ours - theirs).abs().max().item()
        worst = max(worst, err)
        assert err <= TOL[dtype], (name, err)
    print(f"SDPA {dtype} Tq={Tq} Tk={Tk}: max abs error {worst:.2e}")


def test_sdpa_non_contiguous_and_broadcast_batch():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(2, 8, 5, 4, generator=g)  # (B, T, H, D), transposed below: non-contiguous
    q = base.transpose(1, 2)  # (B, H, T, D)
    k = torch.randn(2, 6, 5, 4, generator=g).transpose(1, 2)  # (B, H, 6, D), non-contiguous
    v = torch.randn(1, 5, 6, 4, generator=g)  # batch 1 broadcast against 2
    assert not q.is_contiguous() and not k.is_contiguous()
    ours = scaled_dot_product_attention(q, k, v)
    theirs = F.scaled_dot_product_attention(q, k, v.expand(2, -1, -1, -1))
    assert ours.shape == (2, 5, 8, 4)
    assert (ours - theirs).abs().max() <= 1e-6


def test_sdpa_custom_scale():
    q, k, v = (torch.randn(1, 2, 4, 8, dtype=torch.float64) for _ in range(3))
    ours = scaled_dot_product_attention(q, k, v, scale=0.3)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, scale=0.3), atol=1e-12)


def test_non_bool_mask_is_a_clear_error():
    q = torch.randn(1, 3, 4)
    with pytest.raises(TypeError, match="bool"):
        scaled_dot_product_attention(q, q, q, torch.ones(3, 3))


def test_causal_mask_and_padding_mask():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())
    pm = padding_mask(torch.tensor([[1, 1, 0]]))
    assert pm.shape == (1, 1, 1, 3) and pm.dtype == torch.bool and pm.tolist() == [[[[True, True, False]]]]
    with pytest.raises(ValueError, match="T >= 1"):
        causal_mask(0)
    with pytest.raises(ValueError, match="batch, key_length"):
        padding_mask(torch.ones(3))


def _torch_mha_from(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    C, H = ours.config.d_model, ours.n_heads
    t = nn.MultiheadAttention(C, H, batch_first=True).to(ours.q_proj.weight.dtype).eval()
    with torch.no_grad():
        t.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        t.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        t.out_proj.weight.copy_(ours.o_proj.weight)
        t.out_proj.bias.copy_(ours.o_proj.bias)
    return t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C,H", [(32, 4), (24, 3), (16, 1)])
def test_mha_matches_nn_multiheadattention(C, H, dtype):
    torch.manual_seed(0)
    ours = MultiHeadAttention(C, H).to(dtype).eval()
    theirs = _torch_mha_from(ours)
    x = torch.randn(2, 7, C, dtype=dtype)
    cm = causal_mask(7)
    with torch.no_grad():
        for mask in (None, cm):
            a = ours(x, mask)
            b, _ = theirs(x, x, x, attn_mask=None if mask is None else ~mask, need_weights=False)
            err = (a - b).abs().max().item()
            assert err <= TOL[dtype], err
        a = ours(x, is_causal=True)
        b, _ = theirs(x, x, x, attn_mask=~cm, need_weights=False)
        assert (a - b).abs().max() <= TOL[dtype]
        pad = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
        a = ours(x, padding_mask(pad))
        b, _ = theirs(x, x, x, key_padding_mask=~pad.bool(), need_weights=False)
        assert (a - b).abs().max() <= TOL[dtype]


def test_mha_returns_weights_that_sum_to_one():
    m = MultiHeadAttention(16, 2).eval()
    y, w = m(torch.randn(1, 5, 16), is_causal=True, return_weights=True)
    assert w.shape == (1, 2, 5, 5) and torch.allclose(w.sum(-1), torch.ones(1, 2, 5))
    assert (w.triu(1) == 0).all()


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_gqa_equals_mha_with_repeated_kv_weights(n_kv):
    """MHA -> GQA -> MQA: a GQA layer equals a full MHA layer whose k/v heads are copies."""
    torch.manual_seed(0)
    C, H = 32, 4
    D = C // H
    gqa = MultiHeadAttention(C, H, n_kv_heads=n_kv).eval()
    mha = MultiHeadAttention(C, H).eval()
    rep = H // n_kv
    with torch.no_grad():
        mha.q_proj.load_state_dict(gqa.q_proj.state_dict())
        mha.o_proj.load_state_dict(gqa.o_proj.state_dict())
        for name in ("k_proj", "v_proj"):
            src = getattr(gqa, name)
            w = src.weight.view(n_kv, D, C).repeat_interleave(rep, 0).reshape(C, C)  # (H_kv*D, C) -> (C, C)
            getattr(mha, name).weight.copy_(w)
            getattr(mha, name).bias.copy_(src.bias.view(n_kv, D).repeat_interleave(rep, 0).reshape(C))
    x = torch.randn(2, 6, C)
    assert (gqa(x, is_causal=True) - mha(x, is_causal=True)).abs().max() <= 1e-6


def test_repeat_kv_matches_repeat_interleave():
    x = torch.randn(2, 3, 5, 4)
    assert torch.equal(repeat_kv(x, 2), x.repeat_interleave(2, dim=1))


@pytest.mark.parametrize("kwargs,match", [
    (dict(d_model=30, n_heads=4), "d_model=30 is not divisible by n_heads=4"),
    (dict(d_model=32, n_heads=4, n_kv_heads=3), "n_heads=4 is not divisible by n_kv_heads=3"),
    (dict(d_model=0, n_heads=4), "d_model=0: expected a positive integer"),
    (dict(d_model=32, n_heads=4, dropout=1.5), r"dropout=1.5: expected a number in \[0.0, 1.0\)"),
])
def test_bad_config_says_what_and_how_to_fix(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AttentionConfig(**kwargs)
    assert issubclass(ConfigError, ValueError)


def test_wrong_input_width_is_explained():
    with pytest.raises(ValueError, match=r"expected x of shape \(B, T, 16\)"):
        MultiHeadAttention(16, 2)(torch.randn(1, 3, 8))
