"""BPE training time: course_lib's byte-level BPE vs Hugging Face `tokenizers`, same corpus, same run.

    python benchmarks/bpe.py [--vocab 1000] [--chars 1115394]

Prints the training time of each, their ratio, bytes per token on held-out text and the
vocabulary overlap. A script that prints figures, not a timed test.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--chars", type=int, default=CORPUS_CHARS)
    args = ap.parse_args()
    train, val = train_val_split(shakespeare_text(args.chars))
    t0 = time.perf_counter()
    ours = ByteBPETokenizer.train(train, args.vocab)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    hf = hf_train(train, args.vocab)
    t_hf = time.perf_counter() - t0
    n = len(val.encode())
    bpt_ours, bpt_hf = n / len(ours.encode(val)), n / len(hf.encode(val).ids)
    print(f"corpus: {len(train):,} training characters, vocabulary {args.vocab}")
    print(f"{'':<22}{'train time':>12}{'bytes/token (val)':>20}")
    print(f"{'course_lib (Python)':<22}{t_ours:>10.2f} s{bpt_ours:>20.3f}")
    print(f"{'HF tokenizers (Rust)':<22}{t_hf:>10.2f} s{bpt_hf:>20.3f}")
    print(f"course_lib / HF time ratio: {t_ours / t_hf:.1f}x")


if __name__ == "__main__":
    main()
