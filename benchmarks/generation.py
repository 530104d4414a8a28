"""Generation speed with and without the KV cache.

    python benchmarks/generation.py [--new-tokens 512] [--device cpu|cuda]

Greedy decoding of 512 new tokens from a 16-token prompt with a GPT of the lesson-10 size
(4 layers, 128 wide) and a context of 1024. Prints tokens/s for both and the speed-up
(target >= 5x on CPU), and checks that both produce the same tokens.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib.device import get_device
from course_lib.generation import generate
from course_lib.models import GPT


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: one-token steps are too small to split across cores, "
                         "and extra threads only add synchronisation)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    torch.manual_seed(0)
    model = GPT(vocab_size=65, max_positions=1024, d_model=128, n_layers=4, n_heads=4).to(device).eval()
    prompt = torch.randint(0, 65, (1, 16), device=device)
    generate(model, prompt, 8)  # warm-up
    cached, t_cache = timed(lambda: generate(model, prompt, args.new_tokens, use_cache=True))
    full, t_full = timed(lambda: generate(model, prompt, args.new_tokens, use_cache=False))
    n = args.new_tokens
    print(f"device {device}, {torch.get_num_threads()} CPU thread(s); {n} new tokens, greedy")
    print(f"without cache: {n / t_full:8.1f} tokens/s ({t_full:.2f} s)")
    print(f"with cache:    {n / t_cache:8.1f} tokens/s ({t_cache:.2f} s)")
    print(f"speed-up {t_full / t_cache:.1f}x (target >= 5x); same tokens: {torch.equal(cached, full)}")


if __name__ == "__main__":
    main()
