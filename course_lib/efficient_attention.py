"""Attention for long sequences, read top to bottom: measuring memory -> online softmax ->
tiled ("flash") attention with its own backward -> sliding window, naive and vectorised ->
sparse patterns as masks -> block-sparse attention that computes only the allowed tiles ->
linear attention in three equal forms.

Everything works on (..., T, D) tensors, usually (B, H, T, D), and equals the exact
softmax attention of ``course_lib.attention`` wherever it claims to.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

import torch
import torch.nn.functional as F

from course_lib.attention import causal_mask, scaled_dot_product_attention, sliding_window_mask
from course_lib.config import check_positive_values


# --------------------------------------------------------------------------- measuring memory
@contextlib.contextmanager
def _silence_fd2():
    """PyTorch's profiler writes start/stop lines straight to file descriptor 2; mute them."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory(fn, *args, **kwargs) -> tuple[object, int]:
    """Run fn(*args, **kwargs); return (its output, peak bytes allocated *during* the call
    above what was allocated before it).

    On CUDA: the allocator's own counter, ``torch.cuda.max_memory_allocated``. On the CPU there
    is no such counter, so we record every allocation and free with PyTorch's profiler
    (``profile_memory=True``), replay them in time order and keep the running maximum.
    """
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with _silence_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn(*args, **kwargs)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in events:  # + for an allocation, - for a free
        current += nbytes
        peak = max(peak, current)
    return out, peak


# --------------------------------------------------------------------------- online softmax
def online_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int = 64,
                             scale: float | None = None) -> torch.Tensor:
    """Exact softmax(q kᵀ·scale) v, visiting the keys block by block (Milakov & Gimelshein 2018).

    Keeps per query a running max m, a running sum of exponentials l and an accumulator
    acc = Σ exp(s - m) v. When a block raises the max to m', everything so far was computed
    relative to the old m, so l and acc are multiplied by exp(m - m') before adding the block.
    """
    check_positive_values("online_softmax_attention", block_size=block_size)  # keys per block
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    m = q.new_full((*q.shape[:-1], 1), float("-inf"))  # (..., T_q, 1) running max
    l = q.new_zeros((*q.shape[:-1], 1))  # (..., T_q, 1) running Σ exp(s - m)
    acc = q.new_zeros((*q.shape[:-1], v.size(-1)))  # (..., T_q, D_v) running Σ exp(s - m) v
    for start in range(0, k.size(-2), block_size):
        kb, vb = k[..., start:start + block_size, :], v[..., start:start + block_size, :]  # (..., b, D)
        s = q @ kb.transpose(-2, -1) * scale  # (..., T_q, b)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))  # (..., T_q, 1)
        correction = torch.exp(m - m_new)  # (..., T_q, 1): rescales what was summed under the old max
        p = torch.exp(s - m_new)  # (..., T_q, b)
        l = l * correction + p.sum(-1, keepdim=True)
        acc = acc * correction + p @ vb  # (..., T_q, D_v)
        m = m_new
    return acc / l


# --------------------------------------------------------------------------- tiled ("flash") attention
def _block_scores(qb, kb, scale, causal, i0, j0):
    s = qb @ kb.transpose(-2, -1) * scale  # (..., bq, bk)
    if causal and j0 + kb.size(-2) - 1 > i0:  # this block reaches above the diagonal
        qi = torch.arange(i0, i0 + qb.size(-2), device=qb.device)  # (bq,)
        kj = torch.arange(j0, j0 + kb.size(-2), device=qb.device)  # (bk,)
        s = s.masked_fill(kj[None, :] > qi[:, None], float("-inf"))
    return s


def _key_blocks(T_k, block_k, causal, i1):
    return range(0, min(T_k, i1) if causal else T_k, block_k)  # causal: skip blocks wholly in the future


class TiledAttention(torch.autograd.Function):
    """FlashAttention's algorithm (Dao et al. 2022, Alg. 1 forward, Alg. 2 backward) in plain
    PyTorch: queries and keys in tiles, never a T×T matrix. Forward saves only the output and
    the log-sum-exp L of each row; backward recomputes each tile's probabilities from L."""

    @staticmethod
    def forward(ctx, q, k, v, block_q, block_k, causal, scale):
        T_q, T_k = q.size(-2), k.size(-2)
        out = q.new_empty((*q.shape[:-1], v.size(-1)))  # (..., T_q, D_v)
        lse = q.new_empty(q.shape[:-1])  # (..., T_q) log Σ exp(s)
        for i0 in range(0, T_q, block_q):
            qb = q[..., i0:i0 + block_q, :]  # (..., bq, D)
            m = q.new_full((*qb.shape[:-1], 1), float("-inf"))  # (..., bq, 1)
            l = q.new_zeros((*qb.shape[:-1], 1))  # (..., bq, 1)
            acc = q.new_zeros((*qb.shape[:-1], v.size(-1)))  # (..., bq, D_v)
            for j0 in _key_blocks(T_k, block_k, causal, i0 + qb.size(-2)):
                s = _block_scores(qb, k[..., j0:j0 + block_k, :], scale, causal, i0, j0)  # (..., bq, bk)
                m_new = torch.maximum(m, s.amax(-1, keepdim=True))  # (..., bq, 1)
                p = torch.exp(s - m_new)  # (..., bq, bk)
                correction = torch.exp(m - m_new)  # (..., bq, 1)
                l = l * correction + p.sum(-1, keepdim=True)
                acc = acc * correction + p @ v[..., j0:j0 + block_k, :]  # (..., bq, D_v)
                m = m_new
            out[..., i0:i0 + block_q, :] = acc / l
            lse[..., i0:i0 + block_q] = (m + l.log()).squeeze(-1)  # (..., bq, 1) -> (..., bq)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.cfg = (block_q, block_k, causal, scale)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse = ctx.saved_tensors
        block_q, block_k, causal, scale = ctx.cfg
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        delta = (d_out * out).sum(-1)  # (..., T_q): Σ_j P_ij dP_ij, the softmax backward's row term
        for i0 in range(0, q.size(-2), block_q):
            sl_q = slice(i0, i0 + block_q)
            qb, dob = q[..., sl_q, :], d_out[..., sl_q, :]  # (..., bq, D), (..., bq, D_v)
            for j0 in _key_blocks(k.size(-2), block_k, causal, i0 + qb.size(-2)):
                sl_k = slice(j0, j0 + block_k)
                kb, vb = k[..., sl_k, :], v[..., sl_k, :]  # (..., bk, D), (..., bk, D_v)
                p = torch.exp(_block_scores(qb, kb, scale, causal, i0, j0) - lse[..., sl_q, None])  # (..., bq, bk)
                dv[..., sl_k, :] += p.transpose(-2, -1) @ dob  # (..., bk, D_v)
                ds = p * (dob @ vb.transpose(-2, -1) - delta[..., sl_q, None])  # (..., bq, bk)
                dq[..., sl_q, :] += ds @ kb * scale  # (..., bq, D)
                dk[..., sl_k, :] += ds.transpose(-2, -1) @ qb * scale  # (..., bk, D)
        return dq, dk, dv, None, None, None, None


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_q: int = 64,
                    block_k: int = 64, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Equal to F.scaled_dot_product_attention(q, k, v, is_causal=causal), values and gradients,
    with extra memory O(T·block) instead of O(T²). Causal = query i sees keys j <= i."""
    check_positive_values("tiled_attention", block_q=block_q, block_k=block_k)  # tile sizes
    if q.size(-1) != k.size(-1) or k.size(-2) != v.size(-2):
        raise ValueError(f"q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v) expected; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    return TiledAttention.apply(q, k, v, block_q, block_k, causal, scale)


# --------------------------------------------------------------------------- sliding window
def sliding_window_attention_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                   window: int) -> torch.Tensor:
    """Full T×T scores, then the band mask: correct, but memory still O(T²)."""
    return scaled_dot_product_attention(q, k, v, sliding_window_mask(q.size(-2), window, q.device))


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             scale: float | None = None) -> torch.Tensor:
    """Each query t attends to keys t-window+1 .. t without a T×T matrix (memory O(T·window)).

    Pad k and v with window-1 zero rows *before* position 0 (the past; padding after would let
    the future in), take overlapping windows as a strided view (unfold: no copy), score each query
    against its own window only, and mask the padded slots.
    """
    check_positive_values("sliding_window_attention", window=window)  # tokens each query sees
    T, tdim = q.size(-2), q.dim() - 2
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    k_win = F.pad(k, (0, 0, window - 1, 0)).unfold(tdim, window, 1)  # (..., T, D, w): slot s = key t-w+1+s
    v_win = F.pad(v, (0, 0, window - 1, 0)).unfold(tdim, window, 1)  # (..., T, D_v, w)
    scores = torch.einsum("...td,...tdw->...tw", q, k_win) * scale  # (..., T, w)
    slot = torch.arange(window, device=q.device)  # (w,)
    real = torch.arange(T, device=q.device)[:, None] + slot[None, :] >= window - 1  # (T, w): not padding
    weights = torch.softmax(scores.masked_fill(~real, float("-inf")), dim=-1)  # (..., T, w)
    return torch.einsum("...tw,...tdw->...td", weights, v_win)  # (..., T, D_v)


# --------------------------------------------------------------------------- sparse patterns (masks)
def strided_mask(T: int, stride: int) -> torch.Tensor:
    """Sparse Transformer, strided (Child et al. 2019, §4.2): the previous `stride` tokens
    (one head) plus every stride-th token before (another head). (T, T) bool, causal."""
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]  # (T, 1), (1, T)
    return (j <= i) & ((i - j < stride) | ((i - j) % stride == 0))


def fixed_mask(T: int, stride: int, c: int = 1) -> torch.Tensor:
    """Sparse Transformer, fixed: tokens in the same block of `stride`, plus the last `c`
    "summary" tokens of every block (GPT-3 alternates dense and such sparse layers). Causal."""
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]  # (T, 1), (1, T)
    return (j <= i) & ((i // stride == j // stride) | (j % stride >= stride - c))


def window_global_random_mask(T: int, window: int, n_global: int = 1, n_random: int = 0,
                              causal: bool = False, seed: int = 0) -> torch.Tensor:
    """Longformer / BigBird: a band of `window` tokens (centred; ending at the token if causal),
    `n_global` first tokens that see and are seen by all, and `n_random` random keys per query."""
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]  # (T, 1), (1, T)
    band = (i - j >= 0) & (i - j < window) if causal else (i - j).abs() <= window // 2
    glob = (i < n_global) | (j < n_global)
    g = torch.Generator().manual_seed(seed)
    rand = torch.zeros(T, T, dtype=torch.bool)
    if n_random:
        picks = torch.rand(T, T, generator=g).argsort(-1)[:, :n_random]  # (T, n_random) random keys
        rand[torch.arange(T)[:, None], picks] = True
    mask = band | glob | rand
    return mask & (j <= i) if causal else mask


def receptive_field(mask: torch.Tensor, n_layers: int) -> torch.Tensor:
    """(T, T) bool: can token j's input reach token i's output through n_layers such layers?
    (With a sliding window w, information travels up to n_layers·(w-1) tokens: Mistral §2.)"""
    reach = torch.eye(mask.size(-1), dtype=torch.bool)
    step = mask.float()
    for _ in range(n_layers):
        reach = (step @ reach.float()) > 0  # (T, T)
    return reach


def block_layout_mask(layout: torch.Tensor, block: int, T: int, causal: bool = False) -> torch.Tensor:
    """(T, T) bool token mask of a block layout: query i may attend to key j when
    layout[i // block, j // block] is True (and j <= i if causal). layout is (n_blocks, n_blocks)
    bool with n_blocks = ceil(T / block). The dense reference for block_sparse_attention."""
    check_positive_values("block_layout_mask", block=block)  # tokens per block
    blk = torch.arange(T, device=layout.device) // block  # (T,): the block of each position
    mask = layout[blk[:, None], blk[None, :]]  # (T, T)
    return mask & causal_mask(T, layout.device) if causal else mask


# --------------------------------------------------------------------------- block-sparse attention (skips work)
def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: torch.Tensor,
                           block: int, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Softmax attention that computes only the (block × block) score tiles a block layout allows
    (the block-sparse kernels of Child et al. 2019 and BigBird, Zaheer et al. 2020, App. D).

    q, k, v (..., T, D) self-attention; layout (n_blocks, n_blocks) bool, n_blocks = ceil(T / block),
    with its diagonal True (every query sees its own block). Equal to dense attention with
    ``block_layout_mask(layout, block, T, causal)``; work and extra memory grow with the number
    P of allowed blocks, P·block², not with T².

    The allowed (query block, key block) pairs are listed once; each pair's keys and values are
    gathered and scored. A query block's pairs then share one softmax: the row maximum over its
    pairs (scatter_reduce), the sum of exponentials and the weighted values summed back per query
    block (index_add). The maximum only keeps exp() in range, so it is taken without gradient.
    """
    check_positive_values("block_sparse_attention", block=block)  # tokens per block
    T, D = q.size(-2), q.size(-1)
    n = -(-T // block)  # blocks, the last one padded
    if layout.shape != (n, n) or layout.dtype != torch.bool or not layout.diagonal().all():
        raise ValueError(f"block_sparse_attention: layout must be ({n}, {n}) bool (T={T}, block={block}) "
                         f"with a True diagonal; got {tuple(layout.shape)} {layout.dtype}.")
    if k.shape[-2:] != (T, D) or v.size(-2) != T:
        raise ValueError(f"block_sparse_attention is self-attention: q (..., T, D), k (..., T, D), "
                         f"v (..., T, D_v); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    pad = n * block - T
    qb, kb, vb = (F.pad(x, (0, 0, 0, pad)).unflatten(-2, (n, block)) for x in (q, k, v))  # (..., n, b, D)
    qi, kj = layout.to(q.device).nonzero(as_tuple=True)  # (P,), (P,): the allowed tiles, row by row

    s = (qb.index_select(-3, qi) @ kb.index_select(-3, kj).transpose(-2, -1)).mul_(scale)  # (..., P, b, b)
    offs = torch.arange(block, device=q.device)  # (b,)
    pos_q, pos_k = qi[:, None] * block + offs, kj[:, None] * block + offs  # (P, b) token positions
    keep = (pos_k < T)[:, None, :]  # (P, 1, b): padded keys never count
    if causal:
        keep = keep & (pos_k[:, None, :] <= pos_q[:, :, None])  # (P, b, b)
    s = s.masked_fill_(~keep, float("-inf"))  # in place: one (..., P, b, b) tensor fewer at the peak

    row_max = s.detach().amax(-1)  # (..., P, b)
    m = s.new_full((*s.shape[:-3], n, block), float("-inf")).scatter_reduce(  # (..., n, b): max over a row's tiles
        -2, qi[:, None].expand_as(row_max), row_max, "amax")
    p = (s - m.index_select(-2, qi)[..., None]).exp_()  # (..., P, b, b); masked slots give 0
    l = s.new_zeros((*s.shape[:-3], n, block)).index_add(-2, qi, p.sum(-1))  # (..., n, b)
    acc = s.new_zeros((*s.shape[:-3], n, block, v.size(-1)))  # (..., n, b, D_v)
    acc = acc.index_add(-3, qi, p @ vb.index_select(-3, kj))
    return (acc / l[..., None]).flatten(-3, -2)[..., :T, :]  # (..., T, D_v)


# --------------------------------------------------------------------------- linear attention
def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1 > 0 (Katharopoulos et al. 2020, Eq. 7)."""
    return F.elu(x) + 1


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal: φ(Q) (φ(K)ᵀ V) / φ(Q) Σφ(K) — the D×D_v summary replaces the T×T matrix (Eq. 5)."""
    fq, fk = elu_feature_map(q), elu_feature_map(k)  # (..., T, D)
    kv = fk.transpose(-2, -1) @ v  # (..., D, D_v)
    z = fk.sum(-2)  # (..., D)
    return (fq @ kv) / (fq @ z[..., None])  # (..., T, D_v) / (..., T, 1)


def causal_linear_attention_parallel(q, k, v) -> torch.Tensor:
    """The quadratic ("parallel") form: similarity φ(q)·φ(k) instead of exp(q·k), causal mask,
    each row divided by its sum. O(T²), the reference the other two forms must equal."""
    fq, fk = elu_feature_map(q), elu_feature_map(k)  # (..., T, D)
    a = (fq @ fk.transpose(-2, -1)).masked_fill(~causal_mask(q.size(-2), q.device), 0.0)  # (..., T, T)
    return (a @ v) / a.sum(-1, keepdim=True)  # (..., T, D_v)


def causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal with prefix sums (Eq. 9-10): S_t = Σ_{j<=t} φ(k_j) v_jᵀ, z_t = Σ_{j<=t} φ(k_j),
    out_t = φ(q_t) S_t / φ(q_t)·z_t. Memory O(T·D·D_v): linear in T."""
    fq, fk = elu_feature_map(q), elu_feature_map(k)  # (..., T, D)
    s = torch.cumsum(fk[..., :, :, None] * v[..., :, None, :], dim=-3)  # (..., T, D, D_v)
    z = torch.cumsum(fk, dim=-2)  # (..., T, D)
    num = torch.einsum("...td,...tde->...te", fq, s)  # (..., T, D_v)
    den = torch.einsum("...td,...td->...t", fq, z)  # (..., T)
    return num / den[..., None]


def linear_attention_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same as an RNN (§3.4): a state (S, z) of fixed size, updated once per token."""
    fq, fk = elu_feature_map(q), elu_feature_map(k)  # (..., T, D)
    s = q.new_zeros((*q.shape[:-2], q.size(-1), v.size(-1)))  # (..., D, D_v)
    z = q.new_zeros((*q.shape[:-2], q.size(-1)))  # (..., D)
    outs = []
    for t in range(q.size(-2)):
        s = s + fk[..., t, :, None] * v[..., t, None, :]  # (..., D, D_v)
        z = z + fk[..., t, :]  # (..., D)
        num = (fq[..., t, None, :] @ s).squeeze(-2)  # (..., 1, D_v) -> (..., D_v)
        outs.append(num / (fq[..., t, :] * z).sum(-1, keepdim=True))
    return torch.stack(outs, dim=-2)  # (..., T, D_v)
