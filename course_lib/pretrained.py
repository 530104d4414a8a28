"""A GPT trained on the course's Shakespeare, shipped with the course and loaded offline.

    from course_lib.pretrained import shakespeare_gpt
    model, tok = shakespeare_gpt()          # eval mode, float32, on the CPU

The weights (float16, under ``course_lib/weights/``) were produced by this module's own recipe,

    python -m course_lib.pretrained --train          # rebuilds the file and its manifest

and the manifest next to them (``shakespeare_gpt.json``) records everything needed to redo and
to check it: the model and training configs, the seed, the character vocabulary, the measured
validation loss, the training time and threads, and the sha256 of the weights file. The loader
refuses a file whose sha256 differs from the manifest, or whose tensors do not fit the recorded
config, and says how to rebuild it.

The validation loss is `validation_loss`: the mean next-character cross-entropy (nats) over the
*whole* held-out last 10 % of the corpus (`course_lib.data.train_val_split`), read as
consecutive windows of ``max_positions`` characters. Every character of the split is predicted
exactly once, from the characters before it in its window (at least 0, at most
``max_positions - 1`` of them), which is the same average a training batch computes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from course_lib.data import cache_dir, encoded_corpus, shakespeare_text
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.tokenizers import CharTokenizer
from course_lib.training import Trainer, TrainConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
NAME = "shakespeare_gpt"
REBUILD = "python -m course_lib.pretrained --train"

# The recipe. A GPT-2-style decoder, 6 layers x 256 wide (4.8M parameters), characters in,
# context 128; trained with course_lib's Trainer in fast mode (bf16 autocast on CPUs that have
# it) for 3,600 steps of 32 x 128 characters (14.7M characters seen, about 15 passes over the
# 1.0M training characters, hence dropout 0.1).
MODEL = dict(max_positions=128, d_model=256, n_layers=6, n_heads=4, dropout=0.1, bias=False)
TRAIN = dict(max_steps=3600, batch_size=32, seq_len=128, lr=1e-3, min_lr=1e-4, warmup=200,
             weight_decay=0.1, betas=(0.9, 0.99), grad_clip=1.0, eval_interval=200, eval_iters=20,
             seed=1337, fast=True)


class PretrainedError(RuntimeError):
    """The shipped weights are missing, corrupted, or do not fit their manifest."""


def paths(directory: Path | str | None = None) -> tuple[Path, Path]:
    d = Path(directory) if directory is not None else WEIGHTS_DIR
    return d / f"{NAME}.pt", d / f"{NAME}.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def validation_loss(model: torch.nn.Module, val_ids, window: int | None = None, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over all of `val_ids`, in consecutive windows of
    `window` tokens (default: the model's max_positions). Each token after the first is
    predicted once; the last partial window counts too."""
    ids = torch.as_tensor(np.asarray(val_ids, dtype=np.int64))
    window = window or model.config.max_positions  # (a model without .config needs window=)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    starts = list(range(0, len(ids) - 1, window))
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        full = [s for s in chunk if s + window + 1 <= len(ids)]
        parts = [(torch.stack([ids[s:s + window] for s in full]),  # (B, window) inputs
                  torch.stack([ids[s + 1:s + window + 1] for s in full]))] if full else []  # (B, window) targets
        parts += [(ids[s:-1][None], ids[s + 1:][None]) for s in chunk if s + window + 1 > len(ids)]  # (1, rest)
        for x, y in parts:
            out = model(x.to(device))
            logits = getattr(out, "logits", out).float()  # (B, T, V); course models return .logits
            total += F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(),  # (B·T, V) vs (B·T,)
                                     reduction="sum").item()
            count += y.numel()
    model.train(was_training)
    return total / count


def _corpus():
    tok = CharTokenizer.train(shakespeare_text())
    train_ids, val_ids = encoded_corpus(tok, "char")
    return tok, train_ids, val_ids


def shakespeare_gpt(device: torch.device | str = "cpu", directory: Path | str | None = None):
    """(model, tokenizer): the shipped Shakespeare GPT in eval mode (float32) and its CharTokenizer.

    Raises PretrainedError, saying what is wrong and how to rebuild, when the weights file is
    missing, its sha256 differs from the manifest, or its tensors do not fit the recorded config."""
    weights, manifest_path = paths(directory)
    for p in (manifest_path, weights):
        if not p.exists():
            raise PretrainedError(f"{p} is missing. The course ships it in course_lib/weights/; restore it "
                                  f"from the repository (git checkout -- {p.name}) or rebuild it with `{REBUILD}`.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = manifest["sha256"]
    except (json.JSONDecodeError, KeyError) as err:
        raise PretrainedError(f"{manifest_path} is not a valid manifest ({err}); restore it from the "
                              f"repository or rebuild both files with `{REBUILD}`.") from None
    actual = sha256(weights)
    if actual != expected:
        raise PretrainedError(f"{weights} is corrupted or was replaced: its sha256 is {actual}, the manifest "
                              f"records {expected}. Restore it from the repository (git checkout -- "
                              f"{weights.name}; with git-lfs, git lfs pull) or rebuild it with `{REBUILD}`.")
    cfg = GPTConfig(**manifest["model"])
    model = GPT(cfg)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    mine = model.state_dict()
    missing = sorted(set(mine) - set(state))
    extra = sorted(set(state) - set(mine))
    wrong = [f"{k}: file {tuple(state[k].shape)}, config {tuple(v.shape)}"
             for k, v in mine.items() if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        raise PretrainedError(f"{weights.name} does not fit the config in {manifest_path.name} "
                              f"({manifest['model']}): missing {missing[:3]}, unexpected {extra[:3]}, "
                              f"wrong shapes {wrong[:3]}. Rebuild both files together with `{REBUILD}`.")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    tok = CharTokenizer(manifest["vocab"])
    return model.to(device).eval(), tok


def manifest() -> dict:
    """The shipped manifest (config, seed, vocabulary, validation loss, time, sha256)."""
    return json.loads(paths()[1].read_text(encoding="utf-8"))


def train(directory: Path | str | None = None, steps: int | None = None, threads: int | None = None,
          resume: bool = True) -> dict:
    """The recipe above, end to end: train, measure, write weights (float16) and manifest.
    Saves a resumable trainer checkpoint every eval_interval steps under the course cache."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(TRAIN["seed"])
    tok, train_ids, val_ids = _corpus()
    cfg = GPTConfig(vocab_size=tok.vocab_size, **MODEL)
    tcfg = TrainConfig(**{**TRAIN, **({"max_steps": steps, "warmup": min(TRAIN["warmup"], steps // 10),
                                             "eval_interval": max(1, min(TRAIN["eval_interval"], steps // 2))}
                                            if steps else {})}, progress=False, device="cpu")
    model = GPT(cfg)
    trainer = Trainer(model, train_ids, val_ids, tcfg)
    run = cache_dir() / f"{NAME}-run-{hashlib.sha1(json.dumps([MODEL, asdict(tcfg)], default=str).encode()).hexdigest()[:10]}.pt"
    spent = 0.0
    if resume and run.exists():
        trainer.load(run)
        spent = float(json.loads(run.with_suffix(".json").read_text())["seconds"])
        print(f"resumed from {run} at step {trainer.step} ({spent:.0f} s already spent)", flush=True)
    t0 = time.perf_counter() - spent

    def report(t: Trainer):
        elapsed = time.perf_counter() - t0
        print(f"step {t.step:5d}  train {t.history.train_loss[-1]:.4f}  val(batches) {t.history.val_loss[-1]:.4f}  "
              f"{elapsed / 60:.1f} min", flush=True)
        t.save(run)
        run.with_suffix(".json").write_text(json.dumps({"seconds": elapsed}))

    trainer.train(callback=report)
    seconds = time.perf_counter() - t0
    val = validation_loss(model, val_ids)
    out_weights, out_manifest = paths(directory)
    out_weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}, out_weights)
    model16 = GPT(cfg)
    model16.load_state_dict({k: v.float() for k, v in torch.load(out_weights, weights_only=True).items()})
    val16 = validation_loss(model16, val_ids)
    info = {
        "model": asdict(cfg), "train": {k: v for k, v in asdict(tcfg).items() if k not in ("progress", "device")},
        "seed": tcfg.seed, "vocab": tok.itos, "parameters": sum(p.numel() for p in model.parameters()),
        "val_loss": round(val16, 5), "val_loss_float32": round(val, 5),
        "val_tokens": int(len(val_ids) - 1), "train_seconds": round(seconds, 1), "threads": threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
        "fast_mode": trainer.fast.describe() if trainer.fast is not None else "off",
        "history": {"eval_steps": trainer.history.eval_steps, "val_loss": [round(v, 4) for v in trainer.history.val_loss]},
        "weights": out_weights.name, "bytes": out_weights.stat().st_size, "sha256": sha256(out_weights),
    }
    out_manifest.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m course_lib.pretrained",
                                 description="Rebuild (--train) or check (default) the shipped Shakespeare GPT.")
    ap.add_argument("--train", action="store_true", help="train it from scratch and write weights + manifest")
    ap.add_argument("--out", default=None, help="directory for the files (default: course_lib/weights)")
    ap.add_argument("--steps", type=int, default=None, help="override max_steps (a shorter trial run)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ap.add_argument("--no-resume", action="store_true", help="ignore a half-finished run in the cache")
    args = ap.parse_args(argv)
    if args.train:
        info = train(args.out, args.steps, args.threads, resume=not args.no_resume)
    else:
        model, tok = shakespeare_gpt(directory=args.out)
        info = dict(manifest() if args.out is None else json.loads(paths(args.out)[1].read_text()))
        info["val_loss_now"] = round(validation_loss(model, _corpus()[2]), 5)
    for k in ("parameters", "val_loss", "val_loss_now", "train_seconds", "threads", "bytes", "sha256"):
        if k in info:
            print(f"{k:>14}: {info[k]}")


if __name__ == "__main__":
    main()
