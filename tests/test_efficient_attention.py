"""course_lib.efficient_attention against F.scaled_dot_product_attention (values and gradients),
exact quadratic forms, and measured memory growth."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import causal_mask, sliding_window_mask
from course_lib.config import ConfigError
from course_lib.efficient_attention import (block_layout_mask, block_sparse_attention, causal_linear_attention,
                                            causal_linear_attention_parallel, elu_feature_map, fixed_mask,
                                            linear_attention, linear_attention_recurrent, online_softmax_attention,
                                            peak_memory, receptive_field, sliding_window_attention,
                                            sliding_window_attention_naive, strided_mask, tiled_attention,
                                            window_global_random_mask)


def _qkv(*shape, dtype=torch.float32, seed=0, t_k=None, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    *lead, T, D = shape
    mk = lambda t: torch.randn(*lead, t, D, generator=g, dtype=dtype).requires_grad_(requires_grad)  # noqa: E731
    return mk(T), mk(t_k or T), mk(t_k or T)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T,bq,bk", [(50, 16, 16), (64, 64, 8), (37, 5, 11), (1, 4, 4)])
def test_tiled_equals_sdpa_values_and_gradients(causal, T, bq, bk):
    q, k, v = _qkv(2, 3, T, 16, requires_grad=True)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = tiled_attention(q, k, v, block_q=bq, block_k=bk, causal=causal)
    grad = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, (q, k, v), grad)
    g_out = torch.autograd.grad(out, (q, k, v), grad)
    errs = [(out - ref).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(g_out, g_ref)]
    print(f"tiled T={T} blocks {bq}x{bk} causal={causal}: max abs error out/dq/dk/dv " +
          " ".join(f"{e:.1e}" for e in errs))
    assert max(errs) <= 1e-5


def test_tiled_cross_attention_and_gradcheck():
    q, k, v = _qkv(1, 2, 7, 8, t_k=13, dtype=torch.float64, requires_grad=True)
    out = tiled_attention(q, k, v, block_q=3, block_k=4)
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() <= 1e-12
    assert torch.autograd.gradcheck(lambda a, b, c: tiled_attention(a, b, c, 3, 4), (q, k, v))
    q, k, v = _qkv(1, 1, 9, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: tiled_attention(a, b, c, 4, 2, causal=True), (q, k, v))


@pytest.mark.parametrize("block", [1, 4, 7, 64])
def test_online_softmax_attention_equals_sdpa(block):
    q, k, v = _qkv(2, 2, 20, 8, t_k=23)
    assert (online_softmax_attention(q, k, v, block) - F.scaled_dot_product_attention(q, k, v)).abs().max() <= 1e-6
    big = online_softmax_attention(q * 100, k, v, block)
    assert torch.isfinite(big).all()


@pytest.mark.parametrize("T,w", [(16, 1), (16, 4), (33, 8), (10, 10), (6, 20)])
def test_sliding_window_naive_vectorised_and_sdpa_agree(T, w):
    q, k, v = _qkv(2, 3, T, 8, dtype=torch.float64)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(T, w))
    assert (sliding_window_attention_naive(q, k, v, w) - ref).abs().max() <= 1e-12
    assert (sliding_window_attention(q, k, v, w) - ref).abs().max() <= 1e-12


def test_sliding_window_mask_is_hugging_face_convention():
    """Lesson 05 states it: our window w = transformers' sliding_window (w keys, the token included)."""
    masking = pytest.importorskip("transformers.masking_utils")
    T, w = 9, 3
    keep = masking.sliding_window_causal_mask_function(w)
    hf = torch.tensor([[bool(keep(*map(torch.tensor, (0, 0, i, j)))) for j in range(T)] for i in range(T)])
    assert torch.equal(hf, sliding_window_mask(T, w))
    assert hf[5].nonzero().flatten().tolist() == [3, 4, 5]  # i - w + 1 .. i


def test_sliding_window_gradients_flow():
    q, k, v = _qkv(1, 2, 12, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: sliding_window_attention(a, b, c, 3), (q, k, v))


def test_sliding_window_memory_grows_like_T_not_T_squared():
    w, peaks = 16, {}
    for name, fn in [("vectorised", sliding_window_attention), ("naive", sliding_window_attention_naive)]:
        for T in (1024, 2048):
            q, k, v = _qkv(1, 1, T, 16)
            peaks[name, T] = peak_memory(fn, q, k, v, w)[1]
    grow_vec = peaks["vectorised", 2048] / peaks["vectorised", 1024]
    grow_naive = peaks["naive", 2048] / peaks["naive", 1024]
    print(f"peak memory growth when T doubles: vectorised ×{grow_vec:.2f}, naive ×{grow_naive:.2f}")
    assert 1.6 < grow_vec < 2.4 and 3.5 < grow_naive < 4.5
    assert peaks["vectorised", 2048] < 2048 * 2048 * 4 / 8  # far below one T×T float32 matrix


def test_tiled_memory_is_below_one_score_matrix():
    T = 2048
    q, k, v = _qkv(1, 1, T, 16)
    out, peak = peak_memory(tiled_attention, q, k, v)
    assert peak < T * T * 4 / 8
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() <= 1e-5


def test_sparse_patterns():
    T = 16
    for m in (strided_mask(T, 4), fixed_mask(T, 4), window_global_random_mask(T, 3, 1, 2, causal=True)):
        assert m.shape == (T, T) and m.dtype == torch.bool
        assert not (m & ~causal_mask(T)).any() and m.diagonal().all()  # causal, sees itself
    s = strided_mask(T, 4)
    assert s[15].nonzero().flatten().tolist() == [3, 7, 11, 12, 13, 14, 15]  # (T,)
    f = fixed_mask(T, 4)
    assert f[9].nonzero().flatten().tolist() == [3, 7, 8, 9]  # own block 8..9 + summary tokens 3, 7
    bb = window_global_random_mask(T, 5, n_global=2, n_random=3, seed=1)
    assert bb[:2].all() and bb[:, :2].all()  # global tokens
    assert (bb.sum(-1) >= 5).all() and torch.equal(bb, window_global_random_mask(T, 5, 2, 3, seed=1))


def test_block_layout_mask_expands_blocks_to_tokens():
    layout = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)  # (3, 3) blocks
    m = block_layout_mask(layout, 2, 5)  # T = 5: the last block holds one token
    assert m.shape == (5, 5)
    assert m[3].tolist() == [True, True, True, True, False]  # query 3 in block 1 sees blocks 0, 1
    assert m[4].tolist() == [False, False, True, True, True]  # query 4 in block 2 sees blocks 1, 2
    assert torch.equal(block_layout_mask(layout, 2, 5, causal=True), m & causal_mask(5))
    full = torch.ones(3, 3, dtype=torch.bool)
    assert torch.equal(block_layout_mask(full, 2, 5, causal=True), causal_mask(5))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T,block,n_random", [(64, 8, 1), (50, 8, 2), (7, 4, 0), (1, 4, 0), (33, 33, 0)])
def test_block_sparse_equals_dense_attention_with_the_same_mask(dtype, tol, causal, T, block, n_random):
    n = -(-T // block)
    layout = window_global_random_mask(n, 3, n_global=1, n_random=n_random, causal=causal, seed=T)  # (n, n)
    q, k, v = _qkv(2, 3, T, 8, dtype=dtype)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=block_layout_mask(layout, block, T, causal))
    out = block_sparse_attention(q, k, v, layout, block, causal=causal)
    assert out.shape == ref.shape and (out - ref).abs().max() <= tol


@pytest.mark.parametrize("causal", [False, True])
def test_block_sparse_special_layouts(causal):
    T, block = 24, 4
    q, k, v = _qkv(1, 2, T, 8, dtype=torch.float64)
    every_block = torch.ones(6, 6, dtype=torch.bool)  # dense, computed tile by tile
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert (block_sparse_attention(q, k, v, every_block, block, causal=causal) - ref).abs().max() <= 1e-12
    own_block = torch.eye(6, dtype=torch.bool)  # each block only sees itself: chunked attention
    chunks = [F.scaled_dot_product_attention(*(x[..., i:i + block, :] for x in (q, k, v)), is_causal=causal)
              for i in range(0, T, block)]
    out = block_sparse_attention(q, k, v, own_block, block, causal=causal)
    assert (out - torch.cat(chunks, -2)).abs().max() <= 1e-12


def test_block_sparse_gradients():
    layout = window_global_random_mask(3, 2, n_global=1, n_random=1, causal=True, seed=0)  # (3, 3)
    q, k, v = _qkv(1, 2, 11, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: block_sparse_attention(a, b, c, layout, 4, causal=True), (q, k, v))
    q, k, v = _qkv(2, 2, 40, 8, requires_grad=True)
    layout = window_global_random_mask(5, 3, n_global=1, n_random=1, seed=3)  # non-causal, global rows
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=block_layout_mask(layout, 8, 40))
    out = block_sparse_attention(q, k, v, layout, 8)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        assert (a - b).abs().max() <= 1e-5


def test_block_sparse_memory_grows_like_T_not_T_squared():
    block, peaks = 64, {}
    for T in (1024, 2048):
        n = T // block
        layout = window_global_random_mask(n, 3, n_global=1, causal=True)  # at most 4 tiles per row
        q, k, v = _qkv(1, 1, T, 16)
        with torch.no_grad():
            peaks[T] = peak_memory(block_sparse_attention, q, k, v, layout, block, True)[1]
    print(f"block-sparse peak memory: {peaks[1024]:,} -> {peaks[2048]:,} bytes when T doubles")
    assert 1.6 < peaks[2048] / peaks[1024] < 2.4
    assert peaks[2048] < 2048 * 2048 * 4 / 2  # below half of one T×T float32 matrix


@pytest.mark.parametrize("w,L", [(3, 1), (3, 2), (4, 3)])
def test_receptive_field_of_a_sliding_window_is_L_times_w_minus_1(w, L):
    T = 20
    reach = receptive_field(sliding_window_mask(T, w), L)
    assert reach[T - 1].nonzero().min().item() == T - 1 - L * (w - 1)


def test_linear_attention_three_forms_agree():
    q, k, v = _qkv(2, 3, 25, 8, dtype=torch.float64)
    par = causal_linear_attention_parallel(q, k, v)
    assert (causal_linear_attention(q, k, v) - par).abs().max() <= 1e-12
    assert (linear_attention_recurrent(q, k, v) - par).abs().max() <= 1e-12
    fq, fk = elu_feature_map(q), elu_feature_map(k)
    a = fq @ fk.transpose(-1, -2)  # (B, H, T, T)
    assert (linear_attention(q, k, v) - (a @ v) / a.sum(-1, keepdim=True)).abs().max() <= 1e-12
    assert (elu_feature_map(torch.linspace(-8, 5, 50, dtype=torch.float64)) > 0).all()


def test_bad_arguments_are_explained():
    q, k, v = _qkv(1, 1, 4, 8)
    with pytest.raises(ConfigError, match="online_softmax_attention: block_size=0: expected a positive integer"):
        online_softmax_attention(q, k, v, 0)
    with pytest.raises(ConfigError, match="tiled_attention: block_q=0: expected a positive integer"):
        tiled_attention(q, k, v, block_q=0)
    with pytest.raises(ValueError, match=r"q \(..., T_q, D\)"):
        tiled_attention(q, k[..., :4], v)
    with pytest.raises(ConfigError, match="tiled_attention: block_k=-1: expected a positive integer"):
        tiled_attention(q, k, v, block_k=-1)
    with pytest.raises(ConfigError, match="sliding_window_attention: window=0: expected a positive integer"):
        sliding_window_attention(q, k, v, 0)
    with pytest.raises(ValueError, match="T >= 1 and window >= 1"):
        sliding_window_mask(4, 0)
    with pytest.raises(ConfigError, match="block_sparse_attention: block=0: expected a positive integer"):
        block_sparse_attention(q, k, v, torch.ones(1, 1, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match=r"layout must be \(2, 2\) bool"):
        block_sparse_attention(q, k, v, torch.ones(1, 1, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="with a True diagonal"):
        block_sparse_attention(q, k, v, torch.tensor([[True, False], [True, False]]), 2)
    with pytest.raises(ValueError, match="is self-attention"):
        block_sparse_attention(q, k[..., :3, :], v, torch.ones(2, 2, dtype=torch.bool), 2)
