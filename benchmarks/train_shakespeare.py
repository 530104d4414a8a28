"""Train course_lib's GPT on the Shakespeare corpus with nanoGPT's CPU recipe and print figures.

    python benchmarks/train_shakespeare.py [--iters 2000] [--device cpu|cuda]

Recipe (nanoGPT's "shakespeare_char" CPU settings): 4 layers, 4 heads, 128 wide, context 64,
batch 12, 2000 iterations, lr 1e-3 with 100 warm-up steps and cosine decay to 1e-4, no dropout,
character tokens. Prints the final validation loss (target <= 1.96) and the throughput of the
course Trainer and of a plain minimal loop written here on the same model and batches, as a
ratio measured in the same run (target >= 1.0).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from course_lib.data import encoded_corpus, get_batch, shakespeare_text
from course_lib.device import get_device
from course_lib.generation import generate
from course_lib.models import GPT
from course_lib.tokenizers import CharTokenizer
from course_lib.training import Trainer, TrainConfig


def make_model(vocab: int, seed: int = 1337) -> GPT:
    torch.manual_seed(seed)
    return GPT(vocab_size=vocab, max_positions=64, d_model=128, n_layers=4, n_heads=4, dropout=0.0)


class PlainLoop:
    """The smallest honest loop: batch, forward, loss, backward, AdamW step (no schedule, no clipping)."""

    def __init__(self, model, data, device):
        self.model, self.data, self.device = model.train(), data, device
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.gen = torch.Generator().manual_seed(0)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            x, y = get_batch(self.data, 12, 64, self.gen, self.device)
            loss = F.cross_entropy(self.model(x).logits.flatten(0, 1), y.flatten())  # (B*T, V)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


def timed(fn, device) -> float:
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--device", default=None)
    ap.add_argument("--speed-steps", type=int, default=100, help="steps for the throughput comparison")
    ap.add_argument("--speed-only", action="store_true", help="skip the 2,000-step run; only compare throughput")
    args = ap.parse_args()
    device = torch.device(args.device) if args.device else get_device()
    tok = CharTokenizer.train(shakespeare_text())
    train, val = encoded_corpus(tok, "char")
    print(f"device {device}; corpus {len(train):,} train / {len(val):,} val characters; vocab {tok.vocab_size}")

    cfg = TrainConfig(max_steps=args.iters, batch_size=12, block_size=64, lr=1e-3, min_lr=1e-4, warmup=100,
                      weight_decay=0.1, grad_clip=1.0, eval_interval=max(1, args.iters // 4), eval_iters=200,
                      device=str(device), progress=True)
    trainer = Trainer(make_model(tok.vocab_size), train, val, cfg)
    if not args.speed_only:
        t0 = time.perf_counter()
        hist = trainer.train()
        secs = time.perf_counter() - t0
        for s, v in zip(hist.eval_steps, hist.val_loss):
            print(f"step {s:5d}  val loss {v:.4f}")
        print(f"final val loss {hist.val_loss[-1]:.4f} (target <= 1.96) in {secs:.0f} s")

    # throughput, same run: the course Trainer vs a plain loop, same model size and batches,
    # measured in alternating chunks so that a change in machine load hits both alike
    chunk, rounds = 10, max(1, args.speed_steps // 10)
    speed = Trainer(make_model(tok.vocab_size), train, val,
                    TrainConfig(max_steps=chunk * rounds + 1, warmup=10, eval_interval=10**6, eval_iters=1,
                                device=str(device), progress=False))
    plain = PlainLoop(make_model(tok.vocab_size).to(device), train, device)
    t_trainer = t_plain = 0.0
    for _ in range(rounds):
        t_trainer += timed(lambda: speed.train(steps=chunk), device)
        t_plain += timed(lambda: plain.run(chunk), device)
    n_tokens = rounds * chunk * 12 * 64
    trainer_tps, plain_tps = n_tokens / t_trainer, n_tokens / t_plain
    print(f"throughput: course Trainer {trainer_tps:,.0f} tokens/s, plain loop {plain_tps:,.0f} tokens/s, "
          f"ratio {trainer_tps / plain_tps:.3f} (target >= 1.0)")
    sample = generate(trainer.model, torch.tensor([tok.encode("ROMEO:\n")], device=device), 200,
                      use_cache=False, temperature=0.8, generator=torch.Generator(device=device).manual_seed(0))
    print("sample:\n" + tok.decode(sample[0].tolist()))


if __name__ == "__main__":
    main()
