"""The shipped Shakespeare GPT (course_lib.pretrained): the file is the one its manifest records,
it reaches the validation loss it claims (recomputed here, and through Hugging Face's GPT-2 with
the same weights), and a missing, corrupted or mismatched file is refused with a message that
says how to rebuild it."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import pretrained
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.pretrained import PretrainedError, manifest, shakespeare_gpt, validation_loss

TARGET = 1.60  # nats per character on the last 10 % of the corpus (issue 18)


@pytest.fixture(scope="module")
def shipped():
    return shakespeare_gpt()


@pytest.fixture(scope="module")
def val_ids():
    return pretrained._corpus()[2]


def test_manifest_records_the_recipe_and_the_file():
    info = manifest()
    weights, _ = pretrained.paths()
    assert info["sha256"] == pretrained.sha256(weights)
    assert info["bytes"] == weights.stat().st_size <= 10 * 2**20
    assert info["model"] == {**info["model"], **pretrained.MODEL}  # the module's recipe made this file
    assert info["train"]["max_steps"] == pretrained.TRAIN["max_steps"]
    assert info["train"]["seed"] == info["seed"] == pretrained.TRAIN["seed"]
    assert info["train_seconds"] <= 90 * 60
    assert info["val_loss"] <= TARGET
    assert len(info["history"]["eval_steps"]) == len(info["history"]["val_loss"])


def test_loads_offline_with_the_recorded_size_and_vocabulary(shipped):
    model, tok = shipped
    info = manifest()
    assert isinstance(model, GPT) and not model.training
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert tok.itos == info["vocab"] and tok.vocab_size == model.config.vocab_size
    assert tok.decode(tok.encode("ROMEO:\nO, she doth teach the torches!")) == "ROMEO:\nO, she doth teach the torches!"


def test_validation_loss_recomputed_meets_the_target(shipped, val_ids):
    model, _ = shipped
    loss = validation_loss(model, val_ids)
    assert loss <= TARGET
    assert loss == pytest.approx(manifest()["val_loss"], abs=2e-3)  # summation order differs by CPU


def test_validation_loss_equals_hugging_face_gpt2_with_the_same_weights(shipped, val_ids):
    """An independent forward pass: the weights copied into transformers' GPT2LMHeadModel, the
    loss computed by hand over the same consecutive windows."""
    from course_lib.interop import to_hf
    model, _ = shipped
    hf = to_hf(model)
    ids = torch.as_tensor(np.asarray(val_ids[:8 * 128 + 50], dtype=np.int64))  # 8 full windows + a tail
    window = model.config.max_positions
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, window):
            x, y = ids[s:s + window][: len(ids) - 1 - s], ids[s + 1:s + window + 1]
            logits = hf(x[None]).logits[0]  # (T, V)
            total += F.cross_entropy(logits, y, reduction="sum").item()
            count += len(y)
    assert validation_loss(model, ids) == pytest.approx(total / count, abs=1e-5)


def test_validation_loss_counts_every_token_once():
    """A model that predicts uniformly has loss ln V whatever the windowing; a bigram-like model
    checks that each target is paired with its own input (ragged tail included)."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, max_positions=8, d_model=16, n_layers=1, n_heads=2)
    model = GPT(cfg)
    ids = torch.randint(0, 11, (8 * 5 + 3,))
    by_hand = []
    with torch.no_grad():
        for s in range(0, len(ids) - 1, 8):
            x, y = ids[s:min(s + 8, len(ids) - 1)], ids[s + 1:s + 9]
            by_hand.append(F.cross_entropy(model(x[None]).logits[0], y, reduction="none"))
    by_hand = torch.cat(by_hand)
    assert len(by_hand) == len(ids) - 1
    assert validation_loss(model, ids, batch_size=2) == pytest.approx(by_hand.mean().item(), abs=1e-6)


def copy_files(tmp_path):
    for p in pretrained.paths():
        shutil.copy(p, tmp_path / p.name)
    return pretrained.paths(tmp_path)


def test_missing_file_says_how_to_restore(tmp_path):
    weights, _ = copy_files(tmp_path)
    weights.unlink()
    with pytest.raises(PretrainedError, match="is missing.*python -m course_lib.pretrained --train"):
        shakespeare_gpt(directory=tmp_path)


def test_corrupted_file_is_refused_by_its_sha256(tmp_path):
    weights, _ = copy_files(tmp_path)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match="sha256.*python -m course_lib.pretrained --train"):
        shakespeare_gpt(directory=tmp_path)


def test_broken_manifest_is_refused(tmp_path):
    _, man = copy_files(tmp_path)
    man.write_text("{not json", encoding="utf-8")
    with pytest.raises(PretrainedError, match="not a valid manifest"):
        shakespeare_gpt(directory=tmp_path)


def test_config_that_does_not_fit_the_weights_is_refused(tmp_path):
    _, man = copy_files(tmp_path)
    info = json.loads(man.read_text())
    info["model"]["d_model"] = 128  # the sha256 still matches: the file is intact, the config is wrong
    man.write_text(json.dumps(info))
    with pytest.raises(PretrainedError, match="does not fit the config.*wrong shapes"):
        shakespeare_gpt(directory=tmp_path)


def test_training_script_writes_a_loadable_file_and_manifest(tmp_path, monkeypatch):
    """`python -m course_lib.pretrained --train --steps 2` end to end, in a temporary directory
    (a short run: the full recipe takes over an hour). The loader accepts what it wrote."""
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "validation_loss", lambda model, ids, **kw: 4.0)  # skip the 2 x 15 s pass
    threads = torch.get_num_threads()
    try:
        info = pretrained.train(tmp_path, steps=2, threads=1, resume=False)
    finally:
        torch.set_num_threads(threads)
    assert info["train"]["max_steps"] == 2 and info["seed"] == pretrained.TRAIN["seed"]
    model, tok = shakespeare_gpt(directory=tmp_path)
    assert model.config.d_model == pretrained.MODEL["d_model"] and tok.vocab_size == model.config.vocab_size
    assert json.loads((tmp_path / "shakespeare_gpt.json").read_text())["sha256"] == pretrained.sha256(
        tmp_path / "shakespeare_gpt.pt")
