"""Training speed of course_lib against plain, independent models, and the Shakespeare recipe's loss.

    python benchmarks/train_shakespeare.py                 # everything (about 15 minutes on 2 CPU cores)
    python benchmarks/train_shakespeare.py --speed-only    # only the throughput tables (about 3 minutes)
    python benchmarks/train_shakespeare.py --threads 1 2 --speed-steps 200 --device cpu

The recipe is nanoGPT's CPU "shakespeare_char" one: 4 layers, 4 heads, 128 wide, context 64,
batch 12, no dropout, no biases, AdamW (betas 0.9/0.99, weight decay 0.1 on matrices), lr 1e-3
with 100 warm-up steps and cosine decay to 1e-4, gradient clipping at 1.0, character tokens.

**Baselines written here, independent of course_lib's model code** (they share only the corpus
and the batch sampler, so that both sides see the same batches):

* ``NanoGPT``: the nanoGPT layout, one fused ``c_attn`` projection for q, k and v,
  ``F.scaled_dot_product_attention(is_causal=True)``, ``nn.LayerNorm``, exact GELU, tied head,
  trained by a bare loop with foreach AdamW;
* ``PlainLlama``: RMSNorm (``nn.RMSNorm``), rotary embeddings from a cos/sin table, fused qkv,
  SDPA, SwiGLU, untied head, the same loop.

Against them: course_lib's ``GPT`` and ``Llama`` trained by ``Trainer`` with the same settings.
Each pair trains from its own initialisation on the same batches, in **alternating 10-step
chunks** in one process (so a change of machine load hits both alike), at each thread count,
after one warm-up chunk each. Printed: tokens/s of each and the ratio (target >= 1.0).

**Fast mode** (``TrainConfig(fast=True)``, see `course_lib.training.fast_mode`): the same
comparison, with its ratio to the baseline (target >= 1.3), then the validation loss of a full
2,000-step run with and without it (target: within 0.02).
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.data import encoded_corpus, get_batch, shakespeare_text
from course_lib.device import get_device
from course_lib.models import GPT, Llama
from course_lib.tokenizers import CharTokenizer
from course_lib.training import Trainer, TrainConfig, cosine_lr, fast_mode

WIDTH, LAYERS, HEADS, CONTEXT, BATCH, LLAMA_FF = 128, 4, 4, 64, 12, 384
LR, MIN_LR, WARMUP, DECAY, BETAS, CLIP = 1e-3, 1e-4, 100, 0.1, (0.9, 0.99), 1.0


# --------------------------------------------------------------------------- the baselines
class NanoBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width, bias=False), nn.LayerNorm(width, bias=False)
        self.c_attn = nn.Linear(width, 3 * width, bias=False)
        self.c_proj = nn.Linear(width, width, bias=False)
        self.c_fc = nn.Linear(width, 4 * width, bias=False)
        self.mlp_proj = nn.Linear(4 * width, width, bias=False)

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)  # 3 × (B, T, C)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    """nanoGPT's layout: token + learned position embeddings, pre-LN blocks, final LN, tied head."""

    def __init__(self, vocab: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, WIDTH), nn.Embedding(CONTEXT, WIDTH)
        self.blocks = nn.ModuleList(NanoBlock(WIDTH, HEADS) for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(WIDTH, bias=False)
        self.head = nn.Linear(WIDTH, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids):  # (B, T) -> (B, T, V)
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class LlamaBlock(nn.Module):
    def __init__(self, width: int, heads: int, ff: int):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.ffn_norm = nn.RMSNorm(width, eps=1e-5), nn.RMSNorm(width, eps=1e-5)
        self.wqkv = nn.Linear(width, 3 * width, bias=False)
        self.wo = nn.Linear(width, width, bias=False)
        self.w_gate, self.w_up = nn.Linear(width, ff, bias=False), nn.Linear(width, ff, bias=False)
        self.w_down = nn.Linear(ff, width, bias=False)

    def forward(self, x, cos, sin):  # x (B, T, C); cos, sin (T, D)
        B, T, C = x.shape
        q, k, v = self.wqkv(self.attn_norm(x)).view(B, T, 3, self.heads, C // self.heads).transpose(1, 3).unbind(2)
        q, k = (t * cos + torch.cat((-t[..., t.shape[-1] // 2:], t[..., : t.shape[-1] // 2]), -1) * sin
                for t in (q, k))  # rotate each (first half, second half) pair, (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, C))
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class PlainLlama(nn.Module):
    """RoPE + RMSNorm + SwiGLU, no biases, untied head: LLaMA's layout at the recipe's size."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, WIDTH)
        self.blocks = nn.ModuleList(LlamaBlock(WIDTH, HEADS, LLAMA_FF) for _ in range(LAYERS))
        self.norm = nn.RMSNorm(WIDTH, eps=1e-5)
        self.head = nn.Linear(WIDTH, vocab, bias=False)
        head_dim = WIDTH // HEADS
        inv_freq = 10000.0 ** (-torch.arange(0, head_dim, 2).float() / head_dim)  # (D/2,)
        angles = torch.arange(CONTEXT).float()[:, None] * inv_freq  # (T, D/2)
        self.register_buffer("cos", angles.cos().repeat(1, 2), persistent=False)  # (T, D)
        self.register_buffer("sin", angles.sin().repeat(1, 2), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, ids):  # (B, T) -> (B, T, V)
        T = ids.shape[1]
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, self.cos[:T], self.sin[:T])
        return self.head(self.norm(x))


class PlainLoop:
    """nanoGPT's loop: schedule, batch, forward, loss, backward, clip, foreach AdamW step."""

    def __init__(self, model: nn.Module, data, device, max_steps: int):
        self.model, self.data, self.device, self.max_steps = model.to(device).train(), data, device, max_steps
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": DECAY},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=LR, betas=BETAS, foreach=device.type != "cuda" or None,
                                     fused=True if device.type == "cuda" else None)
        self.gen = torch.Generator().manual_seed(1337)
        self.step = 0

    def run(self, steps: int) -> None:
        for _ in range(steps):
            lr = cosine_lr(self.step, WARMUP, self.max_steps, LR, MIN_LR)
            for group in self.opt.param_groups:
                group["lr"] = lr
            x, y = get_batch(self.data, BATCH, CONTEXT, self.gen, self.device)
            logits = self.model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP, foreach=True)
            self.opt.step()
            self.step += 1


# --------------------------------------------------------------------------- course_lib's side
def course_model(kind: str, vocab: int):
    if kind == "gpt":  # nanoGPT's choices: exact GELU, no biases
        return GPT(vocab_size=vocab, max_positions=CONTEXT, d_model=WIDTH, n_layers=LAYERS, n_heads=HEADS,
                   activation="gelu", bias=False, dropout=0.0)
    return Llama(vocab_size=vocab, max_positions=CONTEXT, d_model=WIDTH, n_layers=LAYERS, n_heads=HEADS,
                 d_ff=LLAMA_FF)


def course_config(max_steps: int, device, fast: bool = False, eval_interval: int | None = None) -> TrainConfig:
    return TrainConfig(max_steps=max_steps, batch_size=BATCH, seq_len=CONTEXT, lr=LR, min_lr=MIN_LR,
                       warmup=min(WARMUP, max_steps), weight_decay=DECAY, betas=BETAS, grad_clip=CLIP,
                       eval_interval=eval_interval or 10**6, eval_iters=200 if eval_interval else 1,
                       device=str(device), progress=False, fast=fast)


class TrainerLoop:
    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def run(self, steps: int) -> None:
        self.trainer.train(steps=steps)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(loops: dict, rounds: int, chunk: int, device) -> dict[str, float]:
    """tokens/s of each loop, run in alternating chunks after one warm-up chunk each."""
    for loop in loops.values():
        loop.run(chunk)
    sync(device)
    seconds = dict.fromkeys(loops, 0.0)
    for _ in range(rounds):
        for name, loop in loops.items():
            start = time.perf_counter()
            loop.run(chunk)
            sync(device)
            seconds[name] += time.perf_counter() - start
    return {name: rounds * chunk * BATCH * CONTEXT / s for name, s in seconds.items()}


def speed_table(train, vocab, device, threads, rounds, chunk, fast_ok):
    total = (rounds + 1) * chunk + 1
    print(f"\n{'model':<8}{'threads':>8}{'baseline tok/s':>16}{'course tok/s':>14}{'ratio':>7}"
          + (f"{'fast tok/s':>12}{'ratio':>7}" if fast_ok else ""))
    for kind, baseline in (("gpt", NanoGPT), ("llama", PlainLlama)):
        for n in threads:
            torch.set_num_threads(n)
            torch.manual_seed(0)
            loops = {"baseline": PlainLoop(baseline(vocab), train, device, total)}
            torch.manual_seed(0)
            loops["course"] = TrainerLoop(Trainer(course_model(kind, vocab), train, train, course_config(total, device)))
            if fast_ok and kind == "gpt":
                torch.manual_seed(0)
                loops["fast"] = TrainerLoop(Trainer(course_model(kind, vocab), train, train,
                                                    course_config(total, device, fast=True)))
            tps = compare(loops, rounds, chunk, device)
            line = (f"{kind:<8}{n:>8}{tps['baseline']:>16,.0f}{tps['course']:>14,.0f}"
                    f"{tps['course'] / tps['baseline']:>7.2f}")
            if "fast" in tps:
                line += f"{tps['fast']:>12,.0f}{tps['fast'] / tps['baseline']:>7.2f}"
            print(line, flush=True)
    print("targets: course / baseline >= 1.0; fast / baseline >= 1.3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=2000, help="steps of the full runs (validation loss)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to compare at")
    ap.add_argument("--speed-steps", type=int, default=100, help="timed steps per model and thread count")
    ap.add_argument("--speed-only", action="store_true", help="skip the full runs; only compare throughput")
    args = ap.parse_args()
    device = torch.device(args.device) if args.device else get_device()
    tok = CharTokenizer.train(shakespeare_text())
    train, val = encoded_corpus(tok, "char")
    mode = fast_mode(device)
    print(f"device {device}; corpus {len(train):,} train / {len(val):,} val characters; vocab {tok.vocab_size}")
    print(f"fast mode here: {mode.describe()}")
    chunk = 10
    speed_table(train, tok.vocab_size, device, args.threads if device.type == "cpu" else [torch.get_num_threads()],
                max(1, args.speed_steps // chunk), chunk, mode.kind != "none")
    if args.speed_only:
        return
    torch.set_num_threads(max(args.threads))
    print(f"\nfull {args.iters}-step runs of course_lib's GPT, validation loss on 200 batches:")
    losses = {}
    for fast in ((False, True) if mode.kind != "none" else (False,)):
        torch.manual_seed(0)
        trainer = Trainer(course_model("gpt", tok.vocab_size), train, val,
                          course_config(args.iters, device, fast=fast, eval_interval=max(1, args.iters // 4)))
        start = time.perf_counter()
        hist = trainer.train()
        secs = time.perf_counter() - start
        losses[fast] = hist.val_loss[-1]
        print(f"  {'fast' if fast else 'default':<8} val loss " + ", ".join(
            f"{s}: {v:.4f}" for s, v in zip(hist.eval_steps, hist.val_loss)) + f"  ({secs:.0f} s)", flush=True)
    if True in losses:
        print(f"fast - default final val loss: {losses[True] - losses[False]:+.4f} (target: within ±0.02)")


if __name__ == "__main__":
    main()
