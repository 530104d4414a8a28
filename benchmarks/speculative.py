"""Speculative decoding on the course's Shakespeare GPT: acceptance rate and wall-clock speed-up
of `course_lib.generation.speculative_generate` over the target's own KV-cached `generate`.

    python benchmarks/speculative.py [--new-tokens 100] [--prompts 8] [--k 2 4 6] [--draft-layers 1 2]
                                     [--temperatures 0 0.8] [--train-draft 0] [--rounds 2] [--threads 1]

The target is the shipped model (`course_lib.pretrained.shakespeare_gpt`: 6 layers, 256 wide,
context 128). The drafts need no training: the target's first 1 or 2 layers with its final norm
and tied LM head (`course_lib.speculative.truncated_draft`). With `--train-draft STEPS`, a
small GPT (2 layers, 64 wide, the same characters) is also trained for STEPS steps here and
used as a draft (about 1 s per 10 steps on 2 CPU threads).

Prompts are `--prompts` windows of 16 characters from the held-out part of the corpus; each
generates `--new-tokens` characters (16 + 100 - 1 stays inside the context of 128). Timings are
the best of `--rounds` alternating rounds, over all prompts. Printed per draft, k and
temperature: the acceptance rate (draft tokens kept / proposed), tokens per target forward,
the time of each and the speed-up; at temperature 0 also whether the output equals `generate`.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib.data import encoded_corpus
from course_lib.generation import SpeculativeStats, generate, speculative_generate
from course_lib.models import GPT
from course_lib.pretrained import shakespeare_gpt
from course_lib.speculative import truncated_draft
from course_lib.training import TrainConfig, Trainer


def seconds(device, fn, *args) -> float:
    """Wall-clock seconds of fn(*args) (waiting for the GPU to finish, on CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn(*args)
    sync()
    return time.perf_counter() - start


def run_plain(target, prompts, n, temperature):
    g = torch.Generator(prompts[0].device).manual_seed(0)
    return [generate(target, p, n, temperature=temperature, generator=g) for p in prompts]


def run_speculative(target, draft, prompts, n, k, temperature, stats=None):
    g = torch.Generator(prompts[0].device).manual_seed(0)
    return [speculative_generate(target, draft, p, n, k=k, temperature=temperature, generator=g, stats=stats)
            for p in prompts]


def trained_draft(tok, steps: int, device) -> GPT:
    """A 2-layer, 64-wide GPT on the same characters, trained for `steps` steps."""
    train_ids, val_ids = encoded_corpus(tok, "char")
    torch.manual_seed(0)
    model = GPT(vocab_size=tok.vocab_size, max_positions=128, d_model=64, n_layers=2, n_heads=4, bias=False)
    cfg = TrainConfig(max_steps=steps, batch_size=32, seq_len=128, lr=2e-3, min_lr=2e-4, warmup=min(50, steps),
                      eval_interval=steps, eval_iters=10, device=str(device), progress=False)
    loss = Trainer(model, train_ids, val_ids, cfg).train().val_loss[-1]
    print(f"trained draft: {sum(p.numel() for p in model.parameters()):,} parameters, {steps} steps, "
          f"validation loss {loss:.2f} nats/char")
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4, 6])
    ap.add_argument("--draft-layers", type=int, nargs="*", default=[1, 2], help="truncated drafts (none: skip)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.8])
    ap.add_argument("--train-draft", type=int, default=0, metavar="STEPS", help="also train a small draft (0: no)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    target, tok = shakespeare_gpt(device)
    _, val_ids = encoded_corpus(tok, "char")
    val = torch.as_tensor(val_ids.astype("int64"))
    starts = torch.linspace(0, len(val) - 1000, args.prompts).long().tolist()
    prompts = [val[s:s + 16][None].to(device) for s in starts]  # each (1, 16)
    n = args.new_tokens

    drafts = {f"first {L} of 6 layers": truncated_draft(target, L) for L in args.draft_layers}
    if args.train_draft:
        drafts["trained 2x64 GPT"] = trained_draft(tok, args.train_draft, device).to(device)
    print(f"device {device}, {torch.get_num_threads()} CPU thread(s); target: the shipped Shakespeare GPT "
          f"(6 layers, 256 wide); {len(prompts)} prompts of 16 characters, {n} new characters each")
    print(f"{'draft':<22} {'T':>4} {'k':>2}  {'accepted':>8}  {'alpha':>5}  {'tokens/fwd':>10}  {'generate':>9}  "
          f"{'speculative':>11}  {'speed-up':>8}  same as generate")
    # accepted: draft tokens kept / proposed; alpha: kept / examined (a guess after a rejection is not examined)
    for temperature in args.temperatures:
        for name, draft in drafts.items():
            for k in args.k:
                stats = SpeculativeStats()
                spec = run_speculative(target, draft, prompts, n, k, temperature, stats)  # also the warm-up
                plain = run_plain(target, prompts, n, temperature)
                best_plain = best_spec = float("inf")
                for _ in range(args.rounds):  # alternating, so a change of machine load hits both alike
                    best_plain = min(best_plain, seconds(device, run_plain, target, prompts, n, temperature))
                    best_spec = min(best_spec, seconds(device, run_speculative, target, draft, prompts, n, k,
                                                       temperature))
                same = all(torch.equal(a, b) for a, b in zip(spec, plain)) if temperature == 0 else "(sampled)"
                print(f"{name:<22} {temperature:>4.1f} {k:>2}  {stats.acceptance_rate:>8.1%}  {stats.alpha:>5.2f}  "
                      f"{stats.tokens_per_round:>10.2f}  {best_plain:>8.2f}s  {best_spec:>10.2f}s  "
                      f"{best_plain / best_spec:>7.2f}x  {same}")

if __name__ == "__main__":
    main()
