"""Time and peak memory of the attention variants of lesson 05, against T.

    python benchmarks/attention.py                   # T = 256 .. 8192, window 256 (about 1-2 min, 2 CPU cores)
    python benchmarks/attention.py --T 512 1024 --window 64 --heads 4

Prints one table (time, peak memory, both as a ratio to PyTorch's SDPA) and, for each method,
the exponent p of a least-squares fit  memory ∝ T^p  and  time ∝ T^p  over the measured T:
≈ 2 for anything that builds the T×T matrix, ≈ 1 for tiled, sliding-window and linear attention
(fitted over the larger half of the T values, where fixed costs matter less).

Peak memory = the most bytes allocated at once *during* the call, above what was allocated
before it: on CUDA torch.cuda.max_memory_allocated; on the CPU the allocator's events recorded
by PyTorch's profiler (profile_memory=True), replayed in time order (course_lib.efficient_attention
.peak_memory). Inputs are not counted; the output is.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from course_lib.attention import scaled_dot_product_attention
from course_lib.device import describe_device, get_device
from course_lib.efficient_attention import (causal_linear_attention, peak_memory, sliding_window_attention,
                                            sliding_window_attention_naive, tiled_attention)


def methods(window: int) -> dict:
    return {
        "naive softmax (causal)": lambda q, k, v: scaled_dot_product_attention(q, k, v, _causal(q)),
        "SDPA (causal)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "tiled, block 64 (causal)": lambda q, k, v: tiled_attention(q, k, v, 64, 64, causal=True),
        f"sliding naive w={window}": lambda q, k, v: sliding_window_attention_naive(q, k, v, window),
        f"sliding vectorised w={window}": lambda q, k, v: sliding_window_attention(q, k, v, window),
        "linear (causal, cumsum)": causal_linear_attention,
    }


def _causal(q):
    T = q.size(-2)
    return torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T)


def timed(fn, *args, repeats: int) -> float:
    """Median wall time in seconds over `repeats` calls (after one warm-up call)."""
    sync = torch.cuda.synchronize if args[0].is_cuda else (lambda: None)
    start = time.perf_counter()
    fn(*args)  # warm-up; a slow method (over a second) is then timed once
    first = time.perf_counter() - start
    repeats = 1 if first > 1.0 else (2 * repeats if first < 0.05 else repeats)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn(*args)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_exponent(Ts: list[int], ys: list[float]) -> float:
    """Slope of log y against log T (least squares)."""
    lx, ly = [math.log(t) for t in Ts], [math.log(max(y, 1e-12)) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def run(Ts: list[int], window: int, heads: int, head_dim: int, repeats: int) -> None:
    device = get_device()
    print(f"device: {describe_device(device)}; B=1, H={heads}, D={head_dim}, float32, window={window}")
    results = {}
    with torch.no_grad():
        for T in Ts:
            g = torch.Generator().manual_seed(T)
            q, k, v = (torch.randn(1, heads, T, head_dim, generator=g).to(device) for _ in range(3))  # (B, H, T, D)
            for name, fn in methods(window).items():
                _, peak = peak_memory(fn, q, k, v)
                results[name, T] = (timed(fn, q, k, v, repeats=repeats), peak)
    print(f"\n{'T':>6}  {'method':<28} {'time':>10} {'peak memory':>12} {'time/SDPA':>10} {'mem/SDPA':>9}")
    for T in Ts:
        t_ref, m_ref = results["SDPA (causal)", T]
        for name in methods(window):
            t, m = results[name, T]
            print(f"{T:>6}  {name:<28} {t * 1e3:>7.1f} ms {m / 2**20:>8.2f} MiB {t / t_ref:>10.2f} {m / max(m_ref, 1):>9.2f}")
        print()
    fit_T = Ts[len(Ts) // 2:] if len(Ts) >= 4 else Ts  # the large-T end: constants matter less there
    print(f"fitted exponents over T = {fit_T[0]} .. {fit_T[-1]}  (y ∝ T^p)")
    print(f"{'method':<28} {'memory p':>9} {'time p':>7}")
    for name in methods(window):
        mem = fit_exponent(fit_T, [results[name, T][1] for T in fit_T])
        tim = fit_exponent(fit_T, [results[name, T][0] for T in fit_T])
        print(f"{name:<28} {mem:>9.2f} {tim:>7.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    run(sorted(args.T), args.window, args.heads, args.head_dim, args.repeats)


if __name__ == "__main__":
    main()
