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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-from-scratch/course/blob/main/solutions/14_beyond.ipynb)

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
# # Exercise 14 · The selective scan, sequential and parallel
#
# Replace each `raise NotImplementedError()` with your code and run the check cell: ✅ means it
# matches the reference on every case; ❌ says which case failed and, for common mistakes,
# *why*. `hint("check_selective_scan")` gives a nudge, `hint("check_selective_scan", 2)` the idea,
# `solution("check_selective_scan")` the answer (likewise for every check). Read
# `notebooks/14_beyond.ipynb` first. Part 1 is the scan as the paper's Algorithm 2 writes it;
# parts 2-6 make it parallel, differentiable, chunked and exact.

# %%
import time

import torch
import torch.nn.functional as F

from course_lib.checks import (check_chunked_scan, check_discretize_zoh, check_parallel_scan, check_scan_function,
                               check_selective_scan, check_selective_scan_zoh, hint, solution)

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Mamba's selective scan, one step at a time (4 points)
#
# Inputs, with B batch, T time, E channels and N states per channel:
# * `x` (B, T, E) — the input stream; `delta` (B, T, E) — the positive step sizes Δ;
# * `A` (E, N) — the continuous, negative, diagonal state matrix (one row per channel);
# * `B`, `C` (B, T, N) — the input-dependent input and output matrices, shared by the channels;
# * `D` (E,) — the skip connection.
#
# For every time step t, starting from a state h = 0 of shape (B, E, N):
#
# $$\bar A_t = \exp(\Delta_t A), \qquad \bar B_t = \Delta_t B_t, \qquad
# h_t = \bar A_t \, h_{t-1} + \bar B_t \, x_t, \qquad y_t = C_t \cdot h_t + D\, x_t$$
#
# (Δₜ is one number per channel, Bₜ and Cₜ one vector of N per sequence; `C_t · h_t` sums over
# the N states.) Return y, of shape (B, T, E). Write the loop over t: the parallel scan is the
# lesson's business.

# %%
def selective_scan(x, delta, A, B, C, D):
    ### BEGIN SOLUTION
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])  # (B, E, N)
    ys = []
    for t in range(x.shape[1]):
        dt = delta[:, t].unsqueeze(-1)  # (B, E, 1)
        A_bar = torch.exp(dt * A)  # (B, E, N)
        B_bar = dt * B[:, t].unsqueeze(1)  # (B, E, N)
        h = A_bar * h + B_bar * x[:, t].unsqueeze(-1)  # (B, E, N)
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1) + D * x[:, t])  # (B, E)
    return torch.stack(ys, dim=1)  # (B, T, E)
    ### END SOLUTION


check_selective_scan(selective_scan)

# %% [markdown]
# ## 2. The parallel scan (3 points)
# Your loop does T steps one after the other. Each step is an affine map h ↦ aₜ·h + bₜ, and doing
# (a₁, b₁) and then (a₂, b₂) is again one affine map:
#
# $$(a_1, b_1) \text{ then } (a_2, b_2) \;=\; (a_1 a_2,\; a_2 b_1 + b_2).$$
#
# This composition is associative, so the T maps can be combined in a tree of depth ⌈log₂ T⌉
# instead of a chain of length T. Write `parallel_scan(a, b)`: `a` and `b` have the same shape
# (B, T, ...) (any number of trailing axes); return every state h of that shape, where
# h_t = a_t·h_{t−1} + b_t and h_{−1} = 0, in O(log T) rounds of whole-tensor operations, for any
# T ≥ 1 (not only powers of two). Either classic form is fine:
# * **Hillis–Steele** (the lesson's `scan_parallel`): for offsets s = 1, 2, 4, … < T, combine
#   every position with the one s steps earlier (the identity (1, 0) before the start);
#   T·log₂T combines.
# * **Work-efficient** (Blelloch 1990's idea, written recursively): combine the steps in pairs
#   (2k, 2k+1), scan the T/2 pairs (that gives the odd states), then fill in
#   h_2k = a_2k·h_{2k−1} + b_2k; pad one identity step when T is odd. About 2T combines.
#
# The check compares with the loop on lengths from 1 to 4096, and counts the torch operations your
# function runs at T = 256 and at T = 4096: a log-depth scan needs a few more for the 16 times
# longer sequence, a Python loop over time 16 times as many.
#
# **Not allowed:** `course_lib.ssm` (it has `scan_parallel`).

# %%
def parallel_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    T = b.size(1)
    if T == 1:
        return b  # h_0 = a_0·0 + b_0
    if T % 2:  # pad one identity step (h -> 1·h + 0) so that the steps pair up
        a = torch.cat([a, torch.ones_like(a[:, :1])], dim=1)  # (B, T+1, ...)
        b = torch.cat([b, torch.zeros_like(b[:, :1])], dim=1)  # (B, T+1, ...)
    a_even, a_odd = a[:, 0::2], a[:, 1::2]  # (B, T'/2, ...) steps 0, 2, 4, ... and 1, 3, 5, ...
    b_even, b_odd = b[:, 0::2], b[:, 1::2]
    # step 2k then step 2k+1 is one affine map: h -> a_odd·(a_even·h + b_even) + b_odd
    h_odd = parallel_scan(a_even * a_odd, a_odd * b_even + b_odd)  # (B, T'/2, ...) h_1, h_3, h_5, ...
    h_before = torch.cat([torch.zeros_like(h_odd[:, :1]), h_odd[:, :-1]], dim=1)  # h_-1 = 0, h_1, h_3, ...
    h_even = a_even * h_before + b_even  # (B, T'/2, ...) h_0, h_2, h_4, ...
    h = torch.stack([h_even, h_odd], dim=2).flatten(1, 2)  # (B, T'/2, 2, ...) -> (B, T', ...) interleaved
    return h[:, :T]  # drop the padding step
    ### END SOLUTION


scan_result = check_parallel_scan(parallel_scan)

# %% [markdown]
# Your scan and a loop over time, on one sequence of T steps with 16 channels (median of 5 runs;
# the loop does T dependent steps, the scan about 2·log₂T rounds):

# %%
def median_ms(fn, *args, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1000


def loop_scan(a, b):
    h, states = torch.zeros_like(b[:, 0]), []
    for t in range(b.size(1)):
        h = a[:, t] * h + b[:, t]  # (B, 16)
        states.append(h)
    return torch.stack(states, dim=1)  # (B, T, 16)


if scan_result.passed:
    g = torch.Generator().manual_seed(1)
    for T in (256, 4096):
        a = torch.rand(1, T, 16, generator=g) * 0.5 + 0.5  # (B, T, 16)
        b = torch.randn(1, T, 16, generator=g, dtype=torch.float64).float()  # (B, T, 16)
        err = (parallel_scan(a, b) - loop_scan(a, b)).abs().max().item()
        print(f"T = {T:>4}: loop {median_ms(loop_scan, a, b):.1f} ms, parallel scan {median_ms(parallel_scan, a, b):.1f} ms; "
              f"{'agree to 1e-4' if err < 1e-4 else f'differ by {err:.0e}'}")

# %% [markdown]
# ## 3. The scan's backward pass (3 points)
# Autograd can differentiate your `parallel_scan` as it is, but it keeps every intermediate of
# every round. Mamba's kernel writes its own backward pass, and there is a neat reason it can:
# h_t reaches the loss directly (grad_h_t) and through the next state, h_{t+1} = a_{t+1}·h_t + b_{t+1},
# so its total gradient g_t = ∂L/∂h_t obeys
#
# $$g_t = \text{grad\_h}_t + a_{t+1}\, g_{t+1}, \qquad g_{T-1} = \text{grad\_h}_{T-1}:$$
#
# the same linear recurrence, run backwards in time. Then ∂L/∂b_t = g_t and
# ∂L/∂a_t = g_t·h_{t−1} (with h_{−1} = 0). Write `ScanFunction`, a `torch.autograd.Function`
# whose `forward(ctx, a, b)` returns `parallel_scan(a, b)` (and saves what backward needs with
# `ctx.save_for_backward`) and whose `backward(ctx, grad_h)` returns (∂L/∂a, ∂L/∂b) using your
# `parallel_scan` on the flipped sequences. The check compares h and both gradients with autograd
# through the plain loop, and counts operations as in part 2.

# %%
class ScanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ### BEGIN SOLUTION
        h = parallel_scan(a, b)  # (B, T, ...)
        ctx.save_for_backward(a, h)
        return h
        ### END SOLUTION

    @staticmethod
    def backward(ctx, grad_h):
        ### BEGIN SOLUTION
        a, h = ctx.saved_tensors
        # g_t = dL/dh_t counts h_t's own gradient and what it passes on through h_{t+1} = a_{t+1}·h_t + b_{t+1}:
        # g_t = grad_h_t + a_{t+1}·g_{t+1}, the same recurrence run backwards in time
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # (B, T, ...) a_{t+1}, 0 after the end
        g = parallel_scan(a_next.flip(1), grad_h.flip(1)).flip(1)  # (B, T, ...)
        h_before = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)  # (B, T, ...) h_{t-1}, h_{-1} = 0
        return g * h_before, g  # dL/da_t = g_t·h_{t-1}, dL/db_t = g_t
        ### END SOLUTION


check_scan_function(ScanFunction)

# %% [markdown]
# ## 4. Chunks, and the state passed between them (3 points)
# A GPU kernel cannot hold a whole long sequence in its fast memory, so Mamba's kernel (and
# Mamba-2's) cuts the sequence into chunks of L steps and passes a state from chunk to chunk.
# Done in parallel, that is a scan in two levels:
# 1. scan every chunk **as if it started from h = 0**, all chunks at once (reshape (B, T, ...) to
#    (B·K, L, ...) for K chunks): h_local;
# 2. each chunk as a whole is one affine map, (product of its a's, its h_local at the end); scan
#    those K maps (part 2 again, on K steps) to get the true state at the end of every chunk, and
#    shift it by one chunk to get h_start, the state entering each chunk (0 for the first);
# 3. inside a chunk the entering state decays step by step: h_t = h_local_t + (a_first···a_t)·h_start,
#    with the products from `torch.cumprod` of the chunk's a's.
#
# Write `chunked_scan(a, b, chunk)` for any T and chunk ≥ 1 (pad the last chunk with identity steps
# (1, 0) and drop them at the end); it returns the same states as `parallel_scan(a, b)`. The check
# compares with the loop and counts operations with chunks of 16, as in part 2.
#
# **Not allowed:** `course_lib.ssm`.

# %%
def chunked_scan(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    ### BEGIN SOLUTION
    Bsz, T, rest = b.size(0), b.size(1), b.shape[2:]
    pad = -T % chunk  # identity steps (1, 0) that fill the last chunk
    if pad:
        a = torch.cat([a, torch.ones_like(a[:, :1]).expand(-1, pad, *rest)], dim=1)  # (B, T + pad, ...)
        b = torch.cat([b, torch.zeros_like(b[:, :1]).expand(-1, pad, *rest)], dim=1)  # (B, T + pad, ...)
    K = a.size(1) // chunk
    a_c = a.reshape(Bsz * K, chunk, *rest)  # (B·K, L, ...): every chunk a sequence of its own
    b_c = b.reshape(Bsz * K, chunk, *rest)
    h_local = parallel_scan(a_c, b_c).reshape(Bsz, K, chunk, *rest)  # (B, K, L, ...) each chunk from h = 0
    decay = torch.cumprod(a_c, dim=1).reshape(Bsz, K, chunk, *rest)  # (B, K, L, ...) a_first···a_t in its chunk
    h_end = parallel_scan(decay[:, :, -1], h_local[:, :, -1])  # (B, K, ...) the true state at each chunk's end
    h_start = torch.cat([torch.zeros_like(h_end[:, :1]), h_end[:, :-1]], dim=1)  # (B, K, ...) entering each chunk
    h = h_local + decay * h_start.unsqueeze(2)  # (B, K, L, ...)
    return h.reshape(Bsz, K * chunk, *rest)[:, :T]  # (B, T, ...) without the padding
    ### END SOLUTION


check_chunked_scan(chunked_scan)

# %% [markdown]
# ## 5. The exact zero-order hold for B̄ (3 points)
# Part 1 used Ā = exp(ΔA) and **B̄ = ΔB**: Mamba's simplification (what its code does, and what
# part 1 asks for). Holding x constant over a step of length Δ and solving h' = Ah + Bx exactly
# gives the zero-order hold of the paper's eq. 4:
#
# $$\bar A = \exp(\Delta A), \qquad \bar B = (\Delta A)^{-1}\bigl(\exp(\Delta A) - I\bigr)\,\Delta B.$$
#
# A is diagonal, so for each channel e and state n this is a division of numbers:
# B̄ = (exp(ΔA) − 1)/(ΔA) · ΔB. Write `discretize_zoh(delta, A, B)` with delta (B, T, E), A (E, N),
# B (B, T, N), returning `(A_bar, B_bar)`, both (B, T, E, N). Two details make it exact in floating
# point:
# * where ΔA = 0 (a state that only integrates), (exp(x) − 1)/x → 1, so B̄ = ΔB; no NaN may appear;
# * for tiny ΔA, exp(ΔA) − 1 cancels almost every digit (1.0000010 − 1 in float32): use
#   `torch.expm1`, which computes exp(x) − 1 directly.
#
# The check compares with the matrix exponential of the 2×2 block matrix [[ΔA, ΔB], [0, 0]],
# whose top-right entry is exactly B̄ (`torch.linalg.matrix_exp` in float64), on A with a 0 and a
# −10⁻⁶ among its entries.
#
# **Not allowed:** `torch.linalg.matrix_exp` (the check's reference), `course_lib.ssm`
# (its `discretize` has both forms).

# %%
def discretize_zoh(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor):
    ### BEGIN SOLUTION
    dA = delta.unsqueeze(-1) * A  # (B, T, E, 1) * (E, N) -> (B, T, E, N)
    dB = delta.unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E, 1) * (B, T, 1, N) -> (B, T, E, N)
    # (exp(ΔA) - 1) / ΔA -> 1 as ΔA -> 0; expm1 keeps the digits that exp(ΔA) - 1 would cancel
    safe = torch.where(dA == 0, torch.ones_like(dA), dA)  # no 0/0, not even in the branch not taken
    ratio = torch.where(dA == 0, torch.ones_like(dA), torch.expm1(safe) / safe)  # (B, T, E, N)
    return torch.exp(dA), ratio * dB
    ### END SOLUTION


zoh_result = check_discretize_zoh(discretize_zoh)

# %% [markdown]
# How far is Mamba's B̄ = ΔB from the exact one? Their ratio is (exp(ΔA) − 1)/(ΔA), which depends
# only on ΔA: close to 1 for small steps, far from it once |ΔA| reaches 1.

# %%
if zoh_result.passed:
    A_demo = torch.tensor([[-1.0]])  # (E=1, N=1)
    B_demo = torch.ones(1, 1, 1)  # (B=1, T=1, N=1)
    for dt in (0.001, 0.01, 0.1, 1.0, 3.0):
        _, B_exact = discretize_zoh(torch.full((1, 1, 1), dt), A_demo, B_demo)  # (1, 1, 1, 1)
        print(f"Δ = {dt:<5}  ΔA = {-dt:<6}  B̄ zoh / B̄ euler = {B_exact.item() / dt:.4f}")

# %% [markdown]
# ## 6. Put together: the exact, parallel selective scan (2 points)
# Write `selective_scan_zoh(x, delta, A, B, C, D)`: part 1's scan (same inputs and output) with the
# exact B̄ of part 5, all states at once with part 3's `ScanFunction.apply`:
# h = scan of the pairs (Āₜ, B̄ₜ·xₜ), then yₜ = Cₜ·hₜ + D·xₜ. The check compares y with the loop
# and the gradients of y.sum() for every input with autograd through the matrix-exponential
# reference.

# %%
def selective_scan_zoh(x, delta, A, B, C, D):
    ### BEGIN SOLUTION
    A_bar, B_bar = discretize_zoh(delta, A, B)  # (B, T, E, N) each
    h = ScanFunction.apply(A_bar, B_bar * x.unsqueeze(-1))  # (B, T, E, N): every state at once
    return (h * C.unsqueeze(2)).sum(-1) + D * x  # (B, T, E): C_t · h_t over the N states, plus the skip
    ### END SOLUTION


check_selective_scan_zoh(selective_scan_zoh)

# %% [markdown]
# ## Done?
# ✅ everywhere means 18/18: the loop, the parallel scan, its backward pass and its chunked form,
# the exact discretisation, and the layer built from them. Mamba's kernel adds what this notebook cannot:
# it keeps the states in the GPU's on-chip memory and never writes them out (the lesson, §3.3).
