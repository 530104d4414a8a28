"""Greedy decoding speed: course_lib's KV-cached `generate` against Hugging Face `generate`,
on the same tiny GPT-2 weights, and against course_lib without its cache.

    python benchmarks/generation.py [--new-tokens 512] [--rounds 3] [--threads 1] [--device cpu|cuda]

A GPT-2 of the lesson-10 size (4 layers, 4 heads, 128 wide, context 1024, GPT-2's vocabulary of
50,257) is built with random weights by `transformers` and copied into course_lib's `GPT`
(`course_lib.interop.from_hf`). Both decode `--new-tokens` tokens greedily from the same
16-token prompt, batch 1, in alternating rounds (the best round of each is kept). Printed:
tokens/s of each, the ratio course / HF (target >= 1.0), whether the tokens are identical, and
the speed-up of the cache over recomputing the whole sequence each step (target >= 5x).
"""
from __future__ import annotations

import argparse
import time

import torch
import transformers

from course_lib.device import get_device
from course_lib.generation import generate
from course_lib.interop import from_hf


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timed rounds; the best of each is kept")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: one-token steps are too small to split across cores, "
                         "and extra threads only add synchronisation)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(n_layer=4, n_head=4, n_embd=128, n_positions=1024, vocab_size=50257,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_config).to(device).eval()
    ours = from_hf(hf).to(device).eval()
    prompt = torch.randint(0, hf_config.vocab_size, (1, 16), device=device)
    n = args.new_tokens

    def run_hf():
        with torch.no_grad():
            return hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=0, attention_mask=torch.ones_like(prompt))

    def run_ours():
        return generate(ours, prompt, n, use_cache=True)

    run_hf(), run_ours()  # warm-up
    best = {"hf": float("inf"), "ours": float("inf")}
    for _ in range(args.rounds):
        theirs, t = timed(run_hf, device)
        best["hf"] = min(best["hf"], t)
        mine, t = timed(run_ours, device)
        best["ours"] = min(best["ours"], t)
    full, t_full = timed(lambda: generate(ours, prompt, n, use_cache=False), device)
    print(f"device {device}, {torch.get_num_threads()} CPU thread(s); {n} new tokens after a 16-token prompt, "
          f"greedy, batch 1; transformers {transformers.__version__}")
    print(f"HF generate (KV cache):         {n / best['hf']:8.1f} tokens/s ({best['hf']:.2f} s)")
    print(f"course_lib generate (KV cache): {n / best['ours']:8.1f} tokens/s ({best['ours']:.2f} s)")
    print(f"course_lib / HF: {best['hf'] / best['ours']:.2f} (target >= 1.0); "
          f"same tokens as HF: {torch.equal(mine, theirs)}")
    print(f"course_lib without its cache:   {n / t_full:8.1f} tokens/s ({t_full:.2f} s); the cache's speed-up "
          f"{t_full / best['ours']:.1f}x (target >= 5x); same tokens: {torch.equal(full, mine)}")


if __name__ == "__main__":
    main()
