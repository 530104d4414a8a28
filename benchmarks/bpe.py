"""BPE training time: course_lib's byte-level BPE vs Hugging Face `tokenizers`, same corpus, same run.

    python benchmarks/bpe.py [--vocab 1000] [--chars 1115394] [--repeats 3]

Prints the training time of each (best of --repeats runs, the two taking turns, so that load on the
machine hits both alike), their ratio against the target (course_lib <= 2.0x HF's time) and bytes
per token on held-out text. A script that prints figures, not a timed test.
"""
from __future__ import annotations

import argparse
import time

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from course_lib.data import CORPUS_CHARS, shakespeare_text, train_val_split
from course_lib.tokenizers import ByteBPETokenizer


def hf_train(text: str, vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


TARGET_RATIO = 2.0  # course_lib's training time may be at most this many times HF's


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--chars", type=int, default=CORPUS_CHARS)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    train, val = train_val_split(shakespeare_text(args.chars))
    times_ours, times_hf = [], []
    for _ in range(args.repeats):  # alternate, so that a busy spell on the machine hits both
        t0 = time.perf_counter()
        ours = ByteBPETokenizer.train(train, args.vocab)
        times_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hf = hf_train(train, args.vocab)
        times_hf.append(time.perf_counter() - t0)
    t_ours, t_hf = min(times_ours), min(times_hf)
    n = len(val.encode())
    bpt_ours, bpt_hf = n / len(ours.encode(val)), n / len(hf.encode(val).ids)
    print(f"corpus: {len(train):,} training characters, vocabulary {args.vocab}, best of {args.repeats} runs")
    print(f"{'':<22}{'train time':>12}{'bytes/token (val)':>20}   all runs")
    for name, t, bpt, runs in (("course_lib (Python)", t_ours, bpt_ours, times_ours),
                               ("HF tokenizers (Rust)", t_hf, bpt_hf, times_hf)):
        print(f"{name:<22}{t:>10.2f} s{bpt:>20.3f}   " + " ".join(f"{x:.2f}" for x in runs))
    ratio = t_ours / t_hf
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"course_lib / HF time ratio: {ratio:.2f}x ({verdict} the target of <= {TARGET_RATIO:.1f}x)")


if __name__ == "__main__":
    main()
