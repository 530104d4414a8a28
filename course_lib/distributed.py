"""Data-parallel training on a real engine: torch.distributed + DistributedDataParallel.

    torchrun --nproc_per_node 2 -m course_lib.distributed --steps 20      # 2 processes (gloo on CPU)
    python -m course_lib.distributed --steps 20                           # 1 process, same global batch

Every process holds a full copy of the model and takes its own slice of each *global* batch;
backward() all-reduces (averages) the gradients across processes, so every copy takes the
same optimiser step as one process training on the whole batch. The backend is NCCL on CUDA
and gloo on CPU; nothing else changes. Printed: one line per step with the global mean loss.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from course_lib.data import encoded_corpus, get_batch
from course_lib.tokenizers import CharTokenizer


def setup() -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (RANK/WORLD_SIZE env vars); 1 process without it."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cpu")
    cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def train(steps: int, global_batch: int, seq_len: int, lr: float, seed: int = 0) -> list[float]:
    from course_lib.models import GPT
    rank, world, device = setup()
    if global_batch % world:
        raise ValueError(f"global_batch={global_batch} must be divisible by the {world} processes.")
    text_tok = CharTokenizer.train(_corpus_text())
    train_data, _ = encoded_corpus(text_tok, "char")
    torch.manual_seed(seed)  # the same initial weights in every process (DDP also broadcasts them)
    model = GPT(vocab_size=text_tok.vocab_size, max_positions=seq_len, d_model=64, n_layers=2,
                n_heads=4).to(device)
    ddp = DDP(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    per_rank = global_batch // world
    losses = []
    for step in range(steps):
        gen = torch.Generator().manual_seed(seed * 100_003 + step)  # the same global batch everywhere
        x, y = get_batch(train_data, global_batch, seq_len, gen, device)  # (B_global, T)
        x, y = x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]  # my slice
        logits = ddp(x).logits  # (B_rank, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B_rank*T, V) -> mean over my slice
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages gradients over processes here
        opt.step()
        global_loss = loss.detach().clone()
        if world > 1:
            dist.all_reduce(global_loss)
            global_loss /= world
        losses.append(global_loss.item())
    if world > 1:
        # Every process reaches this point before any tears down gloo: a process that exits while
        # another's gloo threads still talk to it can abort that other process at shutdown.
        dist.barrier()
        dist.destroy_process_group()
    return losses if rank == 0 else []


def _corpus_text() -> str:
    from course_lib.data import shakespeare_text
    return shakespeare_text()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--json", help="write the per-step losses here (rank 0)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    losses = train(args.steps, args.global_batch, args.seq_len, args.lr)
    if losses:
        for i, l in enumerate(losses):
            print(f"step {i:4d}  loss {l:.6f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(losses, f)


if __name__ == "__main__":
    main()
