import numpy as np
import pytest
import torch

from course_lib import data
from course_lib.tokenizers import CharTokenizer


def test_corpus_is_tiny_shakespeare_sized_plain_text():
    text = data.shakespeare_text()
    assert len(text) == 1_115_394 == data.CORPUS_CHARS
    lines = text.splitlines()
    assert lines[0].endswith(":") and lines[0][:-1].isupper()
    assert not any(l.startswith(("#", "**", "_")) for l in lines)
    assert sum("_" in l or "*" in l for l in lines) <= 2
    speakers = sum(1 for l in lines if l.endswith(":") and l[:-1].replace(" ", "").isalpha())
    assert speakers > 8_000  # tiny-shakespeare has about 7,200 speeches
    with pytest.raises(ValueError, match="more than"):
        data.shakespeare_text(10**9)


def test_clean_play_rules():
    md = ("# Play\n\n## ACT I\n\n### SCENE I. A place.\n\n_Enter A and B,\nwith others_\n\n"
          "**FIRST LORD**  \nHail, _Aside_ friend \\[sic]!  \nWell met.\n\n*Sound a horn.*\n\n"
          "[Within]_  \n**B**  \nAnon.\n")
    assert data.clean_play(md) == "FIRST LORD:\nHail, friend [sic]!\nWell met.\n\nB:\nAnon.\n"


def test_split_and_batches():
    arr = np.arange(1000, dtype=np.uint16)
    train, val = data.train_val_split(arr)
    assert len(train) == 900 and len(val) == 100 and val[0] == 900
    x, y = data.get_batch(train, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    with pytest.raises(ValueError, match="seq_len=8 needs more"):
        data.get_batch(arr[:8], 2, 8)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.train_val_split(arr, 1.5)


def test_encoded_corpus_is_cached_as_uint16(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    tok = CharTokenizer.train(data.shakespeare_text())
    train, val = data.encoded_corpus(tok, "char")
    assert train.dtype == np.uint16 and len(train) + len(val) == data.CORPUS_CHARS
    assert tok.decode(val[:50]) == data.shakespeare_text()[len(train):len(train) + 50]
    assert len(list(tmp_path.glob("char-*.bin"))) == 2
    again, _ = data.encoded_corpus(tok, "char")
    assert np.array_equal(again, train)
