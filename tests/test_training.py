import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from course_lib.attention import MultiHeadAttention
from course_lib.config import ConfigError
from course_lib.training import Trainer, TrainConfig, clip_grad_norm, cosine_lr, param_groups


class TinyLM(nn.Module):
    def __init__(self, vocab=11, d=16, T=16):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(T, d)
        self.norm = nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, 2)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1)))  # (B, T, C)
        x = x + self.attn(self.norm(x), is_causal=True)
        return self.head(x)  # (B, T, V)


def data(n=3000, seed=0):
    rng = np.random.default_rng(seed)  # a learnable sequence: repeating pattern with noise
    base = np.tile(np.arange(10), n // 10)
    noise = rng.random(len(base)) < 0.05
    base[noise] = 10
    return base.astype(np.uint16)


def test_cosine_lr_shape():
    lrs = [cosine_lr(s, 10, 100, 1.0, 0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[100] == pytest.approx(0.1) and lrs[119] == 0.1
    assert lrs[55] == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9)
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))
    assert cosine_lr(0, 0, 10, 1.0, 0.0) == 1.0


def test_clip_grad_norm_matches_torch():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 7), nn.Linear(5, 7)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 5)
    for m in (a, b):
        (m(x) ** 2).sum().backward()
    ours = clip_grad_norm(a.parameters(), 0.5)
    theirs = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
    assert torch.allclose(ours, theirs)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-7)


def test_trainer_step_equals_the_course_pieces_by_hand():
    """The Trainer uses PyTorch's multi-tensor AdamW and clipping for speed; three steps of it
    equal three steps written with the course's own clip_grad_norm and a plain AdamW."""
    from course_lib.data import get_batch
    from course_lib.training import lm_loss
    torch.manual_seed(0)
    a, b = TinyLM(), TinyLM()
    b.load_state_dict(a.state_dict())
    cfg = TrainConfig(max_steps=3, batch_size=4, block_size=16, lr=3e-2, min_lr=3e-3, warmup=1,
                      grad_clip=0.05, weight_decay=0.1, eval_interval=100, eval_iters=1, device="cpu",
                      progress=False, seed=5)
    trainer = Trainer(a, data(), data(600, 1), cfg)
    trainer.train()
    opt = torch.optim.AdamW(param_groups(b, 0.1), lr=cfg.lr, betas=cfg.betas, foreach=False)
    gen = torch.Generator().manual_seed(cfg.seed)
    norms = []
    for step in range(3):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.warmup, cfg.max_steps, cfg.lr, cfg.min_lr)
        x, y = get_batch(data(), 4, 16, gen, torch.device("cpu"))
        lm_loss(b, x, y).backward()
        norms.append(float(clip_grad_norm(b.parameters(), cfg.grad_clip)))
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert norms[0] > cfg.grad_clip  # clipping was active
    assert trainer.history.grad_norm == pytest.approx(norms, rel=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_param_groups_decay_only_matrices_and_count_tied_once():
    m = TinyLM()
    decay, no_decay = param_groups(m, 0.1)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert id(m.tok.weight) in ids(no_decay["params"]) and id(m.pos.weight) in ids(no_decay["params"])
    assert id(m.norm.weight) in ids(no_decay["params"]) and id(m.attn.q_proj.bias) in ids(no_decay["params"])
    assert id(m.attn.q_proj.weight) in ids(decay["params"])
    n = len(decay["params"]) + len(no_decay["params"])
    assert n == len(list(m.parameters()))  # parameters() already yields the tied weight once


def cfg(**kw):
    base = dict(max_steps=20, batch_size=8, block_size=16, warmup=4, eval_interval=10, eval_iters=2,
                device="cpu", progress=False, lr=3e-3, min_lr=3e-4)
    return TrainConfig(**{**base, **kw})


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    tr = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=60))
    first = tr.evaluate()
    tr.train()
    assert tr.history.val_loss[-1] < 0.6 * first
    assert len(tr.history.train_loss) == 60 and tr.history.tokens == 60 * 8 * 16


def test_resume_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    straight = Trainer(TinyLM(), data(), data(seed=1), cfg())
    init = {k: v.clone() for k, v in straight.model.state_dict().items()}
    straight.train()

    torch.manual_seed(123)  # a different global state before resuming must not matter
    m = TinyLM()
    m.load_state_dict(init)
    first = Trainer(m, data(), data(seed=1), cfg())
    first.train(steps=10)
    first.save(tmp_path / "ckpt.pt")
    torch.manual_seed(999)
    m2 = TinyLM()
    resumed = Trainer(m2, data(), data(seed=1), cfg())
    resumed.load(tmp_path / "ckpt.pt")
    resumed.train()
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert straight.history.train_loss == resumed.history.train_loss


def test_grad_accumulation_and_bf16_run():
    torch.manual_seed(0)
    tr = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=4, grad_accum=2, amp="bf16"))
    tr.train()
    assert tr.history.tokens == 4 * 2 * 8 * 16 and all(np.isfinite(tr.history.train_loss))


@pytest.mark.parametrize("kw,match", [(dict(warmup=50), "warmup=50"), (dict(amp="fp8"), "amp='fp8'"),
                                      (dict(min_lr=1.0), "min_lr=1.0"), (dict(grad_clip=0), "grad_clip=0")])
def test_bad_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        cfg(**kw)


def test_fp16_on_cpu_is_explained():
    with pytest.raises(ConfigError, match="fp16' needs a CUDA device"):
        Trainer(TinyLM(), data(), data(seed=1), cfg(amp="fp16"))


def test_gradient_checkpointing_same_gradients_less_memory():
    from course_lib.efficient_attention import peak_memory
    from course_lib.models import GPT
    from course_lib.training import enable_gradient_checkpointing, lm_loss

    def grads_and_peak(ckpt):
        torch.manual_seed(0)
        m = GPT(vocab_size=30, max_positions=128, d_model=64, n_layers=4, n_heads=4)
        if ckpt:
            assert enable_gradient_checkpointing(m) == 4
        x = torch.randint(0, 30, (8, 128), generator=torch.Generator().manual_seed(1))

        def step():
            lm_loss(m, x[:, :-1], x[:, 1:]).backward()
        _, peak = peak_memory(step)
        return [p.grad.clone() for p in m.parameters()], peak, list(m.state_dict())

    g0, p0, k0 = grads_and_peak(False)
    g1, p1, k1 = grads_and_peak(True)
    assert k0 == k1
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g1))
    print(f"peak memory of a training step: {p0 / 2**20:.1f} MiB -> {p1 / 2**20:.1f} MiB with checkpointing")
    assert p1 < 0.7 * p0
    with pytest.raises(ValueError, match="no `.blocks`"):
        enable_gradient_checkpointing(nn.Linear(2, 2))
