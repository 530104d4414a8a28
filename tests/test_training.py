import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from course_lib.attention import MultiHeadAttention
from course_lib.config import ConfigError
from course_lib import training
from course_lib.training import AdamW, Trainer, TrainConfig, clip_grad_norm, cosine_lr, param_groups


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
    """The Trainer uses PyTorch's fused AdamW and multi-tensor clipping for speed; three steps of
    it equal three steps written with the course's own clip_grad_norm and AdamW."""
    from course_lib.data import get_batch
    from course_lib.training import lm_loss
    torch.manual_seed(0)
    a, b = TinyLM(), TinyLM()
    b.load_state_dict(a.state_dict())
    cfg = TrainConfig(max_steps=3, batch_size=4, seq_len=16, lr=3e-2, min_lr=3e-3, warmup=1,
                      grad_clip=0.05, weight_decay=0.1, eval_interval=100, eval_iters=1, device="cpu",
                      progress=False, seed=5)
    trainer = Trainer(a, data(), data(600, 1), cfg)
    trainer.train()
    opt = AdamW(param_groups(b, 0.1), lr=cfg.lr, betas=cfg.betas)  # the course's AdamW, written out
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
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if name == "attn.k_proj.bias":
            # softmax ignores a shift shared by a query's scores, so the key bias's gradient is zero
            # up to rounding noise (~1e-10), and Adam scales noise up to full-size steps: two
            # correct implementations move it differently. Nothing downstream depends on it.
            assert p.grad is None or p.grad.abs().max() < 1e-6
            continue
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ AdamW written out
class Small(nn.Module):
    """Matrices, biases and a norm weight: what the decay and no-decay groups hold in a transformer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(6, 16), nn.LayerNorm(16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))  # (N, 3)


def twins(seed=0):
    torch.manual_seed(seed)
    a = Small()
    b = Small()
    b.load_state_dict(a.state_dict())
    return a, b


def groups(model, lr):
    """Two groups with their own lr and weight_decay, as `param_groups` plus a per-group lr."""
    decay, no_decay = param_groups(model, 0.1)
    return [decay, {**no_decay, "lr": 2 * lr}]


def run_steps(model, opt, steps, start=0, base_lrs=None):
    """`steps` steps on a fixed regression task; before each one every group's lr is rescaled by a
    warm-up + cosine schedule, as a scheduler does."""
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)
    base_lrs = base_lrs or [group["lr"] for group in opt.param_groups]
    for step in range(start, start + steps):
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = cosine_lr(step, 10, 100, base, 0.1 * base)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return base_lrs


def max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("impl", ["for-loop", "foreach", "fused"])
def test_adamw_equals_torch_over_100_steps(impl):
    """Two groups (decay 0.1 / none, lr and 2·lr), betas (0.9, 0.95), lr changed before every
    step: 100 steps of the course's AdamW equal torch.optim.AdamW's within 1e-6 (float32; measured:
    0 against the for-loop and foreach versions, which round the same way, 3.6e-7 against fused)."""
    a, b = twins()
    ours = AdamW(groups(a, 1e-2), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    kw = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[impl]
    theirs = torch.optim.AdamW(groups(b, 1e-2), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                               amsgrad=False, maximize=False, **kw)
    run_steps(a, ours, 100)
    run_steps(b, theirs, 100)
    assert max_diff(a, b) < 1e-6
    moved = max((p - q).abs().max().item() for p, q in zip(a.parameters(), twins()[0].parameters()))
    assert moved > 0.1  # the parameters really travelled, so the agreement is not trivial


def test_adamw_defaults_equal_torch():
    a, b = twins(1)
    ours, theirs = AdamW(a.parameters()), torch.optim.AdamW(b.parameters(), foreach=False)
    assert ours.defaults == {k: theirs.defaults[k] for k in ours.defaults}  # lr 1e-3, wd 0.01, ...
    run_steps(a, ours, 30)
    run_steps(b, theirs, 30)
    assert max_diff(a, b) < 1e-6


def test_adamw_first_step_is_bias_corrected_and_decay_is_decoupled():
    """Step 1: m_hat = g and v_hat = g², so every entry moves by lr·g/(|g| + eps) ≈ ±lr whatever
    the gradient's size (without bias correction it would be (1-β1)/sqrt(1-β2) ≈ 3.2 times that).
    A zero gradient moves p only by the decay, p·(1 - lr·wd) exactly: the decay never enters m or v."""
    p = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    q = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = AdamW([{"params": [p], "weight_decay": 0.0}, {"params": [q], "weight_decay": 0.5}], lr=0.1)
    p.grad = torch.tensor([1e-3, -5.0, 200.0])
    q.grad = torch.zeros(3)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9, 2.9]), rtol=0, atol=1e-5)
    torch.testing.assert_close(q.detach(), torch.tensor([1.0, -2.0, 3.0]) * (1 - 0.1 * 0.5), rtol=0, atol=0)
    assert opt.state[p]["step"] == 1 and set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}


def test_adamw_skips_parameters_without_gradients_like_torch():
    p, q = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt, ref = AdamW([p], weight_decay=0.5), torch.optim.AdamW([q], weight_decay=0.5)
    opt.step()
    ref.step()
    assert torch.equal(p, q) and torch.equal(p.detach(), torch.ones(2)) and not opt.state


def test_adamw_closure_returns_the_loss():
    p = nn.Parameter(torch.tensor([2.0]))
    opt = AdamW([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 4.0 and p.item() < 2.0


def _saved(opt):
    """The optimiser's state dict through a file, as a checkpoint stores it."""
    import io
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("first,second", [(AdamW, AdamW), (AdamW, torch.optim.AdamW), (torch.optim.AdamW, AdamW)])
def test_adamw_state_dict_resumes(first, second):
    """60 steps, a state dict saved through a file, a fresh model and optimiser that load it, 40 more
    steps: the parameters equal 100 steps in one go of torch.optim.AdamW. The state keys are torch's,
    so a checkpoint moves between the course's AdamW and PyTorch's in both directions."""
    straight, part = twins(2)
    fresh = Small()
    ref = torch.optim.AdamW(groups(straight, 1e-2), lr=1e-2, weight_decay=0.1, foreach=False)
    run_steps(straight, ref, 100)
    opt = first(groups(part, 1e-2), lr=1e-2, weight_decay=0.1)
    base = run_steps(part, opt, 60)
    fresh.load_state_dict(part.state_dict())
    resumed = second(groups(fresh, 1e-2), lr=1e-2, weight_decay=0.1)
    resumed.load_state_dict(_saved(opt))
    run_steps(fresh, resumed, 40, start=60, base_lrs=base)
    assert max_diff(fresh, straight) < 1e-6


@pytest.mark.parametrize("kw,match", [(dict(lr=-1.0), "lr=-1.0"), (dict(betas=(0.9, 1.0)), "betas"),
                                      (dict(eps=-1e-8), "eps"), (dict(weight_decay=-0.1), "weight_decay")])
def test_adamw_bad_arguments_are_explained(kw, match):
    with pytest.raises(ValueError, match=match):
        AdamW([nn.Parameter(torch.ones(1))], **kw)


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
    base = dict(max_steps=20, batch_size=8, seq_len=16, warmup=4, eval_interval=10, eval_iters=2,
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


# --------------------------------------------------------------------------- accumulation and hooks
def grads_at_first_step(trainer):
    """Run one Trainer step; return the gradients it hands the optimiser (after accumulation)."""
    seen = {}
    step = trainer.opt.step

    def capture(*args, **kwargs):
        seen.update({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        return step(*args, **kwargs)
    trainer.opt.step = capture
    trainer.train_step()
    return seen


def test_grad_accumulation_equals_one_big_batch():
    """k micro-batches of b, accumulated, give the gradient (and the step) of the one batch of k·b that
    concatenates them, computed here with plain autograd and a plain AdamW, in float64."""
    from course_lib.data import get_batch
    from course_lib.training import lm_loss
    k, b = 3, 4
    torch.manual_seed(0)
    model, ref = TinyLM().double(), TinyLM().double()
    ref.load_state_dict(model.state_dict())
    tr = Trainer(model, data(), data(seed=1), cfg(max_steps=5, batch_size=b, grad_accum=k, grad_clip=None, seed=7))
    grads = grads_at_first_step(tr)

    gen = torch.Generator().manual_seed(7)  # the Trainer's sampler: the same k micro-batches, in order
    micro = [get_batch(data(), b, 16, gen) for _ in range(k)]
    x, y = torch.cat([m[0] for m in micro]), torch.cat([m[1] for m in micro])  # (k·b, T) each
    lm_loss(ref, x, y).backward()
    for n, p in ref.named_parameters():
        # a summed (not averaged) accumulation would be k times too large here
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-12, msg=n)
    opt = torch.optim.AdamW(param_groups(ref, 0.1), lr=tr.history.lr[0], betas=tr.cfg.betas, foreach=False)
    opt.step()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=n)
    assert tr.history.tokens == k * b * 16


def test_loss_fn_adds_exactly_its_terms_gradient_and_logs_its_parts():
    """An aux term c·||W_tok||² must change the gradient by exactly 2c·W_tok (analytic) and nothing
    else; its parts are logged per step and the evaluation stays the plain LM loss."""
    from course_lib.training import lm_loss
    c = 0.3

    def with_aux(model, x, y):
        lm = lm_loss(model, x, y)
        aux = c * model.tok.weight.pow(2).sum()
        return lm + aux, {"lm": lm.item(), "aux": aux}

    torch.manual_seed(0)
    plain_model, aux_model = TinyLM().double(), TinyLM().double()
    aux_model.load_state_dict(plain_model.state_dict())
    w_tok = aux_model.tok.weight.detach().clone()
    kw = dict(max_steps=5, grad_accum=2, grad_clip=None)
    plain = Trainer(plain_model, data(), data(seed=1), cfg(**kw))
    aux = Trainer(aux_model, data(), data(seed=1), cfg(**kw), loss_fn=with_aux)
    assert aux.evaluate() == plain.evaluate()  # evaluate ignores the loss_fn
    g_plain, g_aux = grads_at_first_step(plain), grads_at_first_step(aux)
    for n in g_plain:
        expected = 2 * c * w_tok if n == "tok.weight" else torch.zeros_like(g_plain[n])  # d(c·||W||²)/dW = 2cW
        torch.testing.assert_close(g_aux[n] - g_plain[n], expected, rtol=1e-9, atol=1e-12, msg=n)
    h = aux.history
    assert set(h.parts) == {"lm", "aux"} and len(h.parts["lm"]) == 1
    assert h.parts["lm"][0] == pytest.approx(plain.history.train_loss[0], rel=1e-12)
    assert h.train_loss[0] == pytest.approx(h.parts["lm"][0] + h.parts["aux"][0], rel=1e-12)
    assert h.parts["aux"][0] == pytest.approx(c * float(w_tok.pow(2).sum()), rel=1e-12)
    assert plain.history.parts == {}


def test_on_step_sees_every_step_before_its_evaluation_callback_only_evaluations():
    seen, evals = [], []

    def on_step(trainer, info):
        assert trainer.step == info.step + 1 and trainer.step not in trainer.history.eval_steps  # not evaluated yet
        seen.append(info)

    torch.manual_seed(0)
    tr = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=7, eval_interval=3, grad_accum=2), on_step=on_step)
    tr.train(steps=4, callback=lambda t: evals.append(t.step))
    tr.train(callback=lambda t: evals.append(t.step))
    h = tr.history
    assert [i.step for i in seen] == list(range(7)) == h.steps
    assert [i.loss for i in seen] == h.train_loss and [i.lr for i in seen] == h.lr
    assert [i.grad_norm for i in seen] == h.grad_norm and all(i.parts == {} for i in seen)
    assert evals == h.eval_steps == [3, 6, 7]


@pytest.mark.parametrize("bad,match", [(lambda m, x, y: 1.0, "returned float"),
                                       (lambda m, x, y: torch.ones(2, requires_grad=True), r"shape \(2,\)"),
                                       (lambda m, x, y: (torch.ones((), requires_grad=True), [1.0]),
                                        r"returned \(Tensor, list\)")])
def test_a_bad_loss_fn_is_explained(bad, match):
    tr = Trainer(TinyLM(), data(), data(seed=1), cfg(), loss_fn=bad)
    with pytest.raises(TypeError, match=match):
        tr.train_step()


# --------------------------------------------------------------------------- fast mode
@pytest.mark.parametrize("bf16,compiler,kind", [(True, "/usr/bin/c++", "bf16"), (True, None, "bf16"),
                                                (False, "/usr/bin/c++", "compile"), (False, None, "none")])
def test_fast_mode_picks_what_the_cpu_supports(monkeypatch, bf16, compiler, kind):
    monkeypatch.setattr(training, "cpu_computes_bf16", lambda: bf16)
    monkeypatch.setattr(training, "cxx_compiler", lambda: compiler)
    mode = training.fast_mode("cpu")
    assert mode.kind == kind
    assert ("AVX512-BF16/AMX" in mode.why) == bf16
    assert ("no C++ compiler" in mode.why) == (compiler is None and not bf16)


def test_cpu_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    import builtins
    real_open = builtins.open
    for flags, expected in [("fpu avx2 avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True),
                            ("fpu avx2 avx512f", False)]:
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(
            tmp_path / "cpuinfo" if p == "/proc/cpuinfo" else p, *a, **k))
        assert training.cpu_computes_bf16() is expected


def test_fast_mode_without_bf16_or_compiler_falls_back_with_a_message(monkeypatch):
    monkeypatch.setattr(training, "cpu_computes_bf16", lambda: False)
    monkeypatch.setattr(training, "cxx_compiler", lambda: None)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"fast=True\): the CPU has no bf16 arithmetic; no C\+\+ compiler.*"
                                         r"default speed.*apt install g\+\+"):
        tr = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=5, fast=True))
    torch.manual_seed(0)
    plain = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=5))
    tr.train(), plain.train()
    assert tr.history.train_loss == plain.history.train_loss  # nothing changed


def test_fast_mode_bf16_trains_close_to_float32(monkeypatch):
    monkeypatch.setattr(training, "cpu_computes_bf16", lambda: True)
    monkeypatch.setattr(training, "cxx_compiler", lambda: None)
    runs = []
    for fast in (False, True):
        torch.manual_seed(0)
        tr = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=30, fast=fast))
        tr.train()
        runs.append(tr)
    assert runs[1].amp_dtype is torch.bfloat16 and runs[0].amp_dtype is None
    assert runs[1].history.train_loss != runs[0].history.train_loss  # bf16 really ran
    assert abs(runs[1].history.val_loss[-1] - runs[0].history.val_loss[-1]) < 0.05


def test_fast_mode_survives_a_failing_compiler(monkeypatch):
    monkeypatch.setattr(training, "cpu_computes_bf16", lambda: False)
    monkeypatch.setattr(training, "cxx_compiler", lambda: "/usr/bin/c++")

    def broken_compile(model):
        def call(*args, **kwargs):
            raise RuntimeError("InductorError: fatal error: Python.h: No such file or directory")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    tr = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=5, fast=True))
    with pytest.warns(UserWarning, match=r"torch.compile failed \(RuntimeError: InductorError.*Python.h.*\); "
                                         "training goes on without it"):
        tr.train()
    torch.manual_seed(0)
    plain = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=5))
    plain.train()
    assert tr.history.train_loss == plain.history.train_loss and tr.forward_model is tr.model


def test_fast_mode_does_not_hide_a_real_error(monkeypatch):
    monkeypatch.setattr(training, "cxx_compiler", lambda: "/usr/bin/c++")
    monkeypatch.setattr(torch, "compile", lambda model: lambda *a, **k: model(*a, **k))  # a working "compiler"

    def bad_loss(model, x, y):
        raise ValueError("the learner's loss is broken")

    tr = Trainer(TinyLM(), data(), data(seed=1), cfg(max_steps=5, fast=True), loss_fn=bad_loss)
    with pytest.raises(ValueError, match="the learner's loss is broken"):
        tr.train()


def test_fast_and_amp_together_is_explained():
    with pytest.raises(ConfigError, match=r"fast=True, amp='bf16'.*pass one of them, not both"):
        cfg(fast=True, amp="bf16")
