"""course_lib.ssm against independent references: a naive per-channel, per-state loop written
from the paper's equations (scalar arithmetic, no broadcasting), the closed form of the
recurrence as a sum of decayed inputs, the parallel scan against the sequential one in fp64,
and Hugging Face's MambaMixer (tiny random config, copied weights, nothing downloaded)."""
import math

import pytest
import torch
from transformers import MambaConfig as HFMambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer

from course_lib.config import ConfigError
from course_lib.ssm import (MambaBlock, MambaConfig, MambaLM, discretize, scan_parallel, scan_sequential, selective_copying,
                            selective_scan)


def random_scan_inputs(Bsz=2, T=13, E=3, N=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(Bsz, T, E, generator=g, dtype=dtype)
    delta = torch.nn.functional.softplus(torch.randn(Bsz, T, E, generator=g, dtype=dtype))
    A = -torch.rand(E, N, generator=g, dtype=dtype) * 3 - 0.1
    B = torch.randn(Bsz, T, N, generator=g, dtype=dtype)
    C = torch.randn(Bsz, T, N, generator=g, dtype=dtype)
    D = torch.randn(E, generator=g, dtype=dtype)
    return x, delta, A, B, C, D


def naive_scan(x, delta, A, B, C, D, zoh=False):
    """The paper's equations one scalar at a time: for each batch b, channel e, state n."""
    Bsz, T, E = x.shape
    N = A.shape[1]
    y = torch.zeros(Bsz, T, E, dtype=torch.float64)
    for b in range(Bsz):
        for e in range(E):
            h = [0.0] * N
            for t in range(T):
                d = float(delta[b, t, e])
                acc = 0.0
                for n in range(N):
                    a = float(A[e, n])
                    a_bar = math.exp(d * a)
                    b_bar = (a_bar - 1) / a * float(B[b, t, n]) if zoh else d * float(B[b, t, n])
                    h[n] = a_bar * h[n] + b_bar * float(x[b, t, e])
                    acc += float(C[b, t, n]) * h[n]
                y[b, t, e] = acc + float(D[e]) * float(x[b, t, e])
    return y


@pytest.mark.parametrize("method", ["euler", "zoh"])
def test_sequential_scan_matches_a_naive_scalar_loop(method):
    args = random_scan_inputs()
    ours = selective_scan(*args, mode="sequential", method=method)
    ref = naive_scan(*args, zoh=method == "zoh")
    err = (ours - ref).abs().max().item()
    print(f"sequential vs naive loop ({method}): max abs error {err:.2e}")
    assert err <= 1e-12


@pytest.mark.parametrize("T", [1, 2, 7, 16, 33, 100])
def test_parallel_scan_equals_sequential_in_fp64(T):
    args = random_scan_inputs(T=T, seed=T)
    seq = selective_scan(*args, mode="sequential")
    par = selective_scan(*args, mode="parallel")
    err = (seq - par).abs().max().item()
    print(f"T={T}: parallel vs sequential max abs error {err:.2e}")
    assert err <= 1e-10


def test_scan_closed_form():
    """h_t = Σ_{s<=t} (Π_{s<r<=t} a_r) b_s, computed with cumulative log-sums (a > 0)."""
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 20, 5, generator=g, dtype=torch.float64) * 0.9 + 0.05
    b = torch.randn(2, 20, 5, generator=g, dtype=torch.float64)
    L = torch.cumsum(torch.log(a), dim=1)  # (B, T, E)
    decay = torch.exp(L[:, :, None] - L[:, None, :])  # (B, t, s, E) = Π_{s<r<=t} a_r
    mask = torch.ones(20, 20, dtype=torch.bool).tril()[None, :, :, None]  # s <= t
    ref = (decay * mask * b[:, None]).sum(2)  # (B, T, E)
    for fn in (scan_sequential, scan_parallel):
        err = (fn(a, b) - ref).abs().max().item()
        assert err <= 1e-10, (fn.__name__, err)


def test_discretize_shapes_and_limits():
    x, delta, A, B, C, D = random_scan_inputs()
    A_bar, B_bar = discretize(delta, A, B, "zoh")
    assert A_bar.shape == B_bar.shape == (2, 13, 3, 4)
    assert (A_bar > 0).all() and (A_bar < 1).all()  # negative A: the state decays
    # a tiny step: ZOH and Euler agree to first order
    small = delta * 1e-6
    _, Bz = discretize(small, A, B, "zoh")
    _, Be = discretize(small, A, B, "euler")
    assert ((Bz - Be).abs() / Be.abs().clamp_min(1e-30)).max() < 1e-5
    with pytest.raises(ValueError, match="expected one of"):
        discretize(delta, A, B, "bilinear")


def test_scan_input_errors_name_the_shapes():
    x, delta, A, B, C, D = random_scan_inputs()
    with pytest.raises(ValueError, match=r"A must be \(E, N\)"):
        selective_scan(x, delta, A.T, B, C)
    with pytest.raises(ValueError, match="C must be"):
        selective_scan(x, delta, A, B, C[:, :, :2])
    with pytest.raises(ValueError, match="mode="):
        selective_scan(x, delta, A, B, C, mode="blelloch")


def test_config_validation():
    with pytest.raises(ConfigError, match="MambaConfig.d_state=0: expected a positive integer"):
        MambaConfig(d_state=0)
    with pytest.raises(ConfigError, match=r"MambaConfig.scan='fast': expected one of \('sequential', 'parallel'\)"):
        MambaConfig(scan="fast")
    with pytest.raises(ConfigError, match=r"MambaConfig.discretisation='rk4': expected one of \('euler', 'zoh'\)"):
        MambaConfig(discretisation="rk4")
    with pytest.raises(ConfigError, match=r"MambaConfig.dt_max=0.1: expected a number >= 0.5 \(dt_max >= dt_min"):
        MambaConfig(dt_min=0.5, dt_max=0.1)
    with pytest.raises(ConfigError, match="MambaConfig.dt_min=0.0: expected a number > 0"):
        MambaConfig(dt_min=0.0)
    with pytest.raises(ConfigError, match="MambaLM: n_layers=0: expected a positive integer"):
        MambaLM(10, MambaConfig(d_model=8), n_layers=0)
    MambaConfig(dt_min=0.1, dt_max=0.1)  # equal bounds are allowed
    assert MambaConfig(d_model=40).dt_rank == 3


def test_block_matches_hugging_face_mamba_mixer():
    hf_cfg = HFMambaConfig(hidden_size=16, state_size=4, conv_kernel=3, expand=2, time_step_rank=2,
                           use_bias=True, use_conv_bias=True, hidden_act="silu", num_hidden_layers=1,
                           vocab_size=10)
    torch.manual_seed(0)
    hf = MambaMixer(hf_cfg, layer_idx=0).double().eval()
    for p in hf.parameters():  # random values everywhere, not only the initialisation
        torch.nn.init.normal_(p, std=0.3)
    ours = MambaBlock(MambaConfig(d_model=16, d_state=4, d_conv=3, expand=2, dt_rank=2, bias=True)).double()
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = hf(x)
        errs = {mode: (ours(x, scan=mode) - ref).abs().max().item() for mode in ("sequential", "parallel")}
    print("MambaBlock vs HF MambaMixer max abs error:", {k: f"{v:.2e}" for k, v in errs.items()})
    # HF casts A and B̄x to float32 inside (A_log.float(), .float()), so fp32-level agreement
    assert max(errs.values()) <= 1e-6


def test_block_is_causal_and_lm_trains():
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=16, d_state=4)
    block = MambaBlock(cfg)
    x = torch.randn(1, 10, 16)
    y = block(x)
    x2 = x.clone()
    x2[:, 6:] += 1.0
    assert torch.allclose(block(x2)[:, :6], y[:, :6], atol=1e-6)  # the future cannot leak back
    lm = MambaLM(12, cfg, n_layers=1)
    ids = torch.randint(0, 12, (4, 9))
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(lm(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())  # (B*T, V)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7


def test_selection_off_uses_the_same_parameters_at_every_step():
    block = MambaBlock(MambaConfig(d_model=8, d_state=4, selective=False))
    delta, B, C = block.ssm_parameters(torch.randn(2, 5, block.config.d_inner))
    for m in (delta, B, C):
        assert torch.equal(m, m[:1, :1].expand_as(m))  # no dependence on batch or time


def test_selective_copying_layout():
    ids, targets = selective_copying(3, n_data=4, length=10, generator=torch.Generator().manual_seed(0))
    assert ids.shape == targets.shape == (3, 14)
    for b in range(3):
        data = ids[b, :10][ids[b, :10] > 0]
        assert len(data) == 4 and ids[b, 10] == 9  # four colours, then the marker
        assert torch.equal(targets[b, 10:14], data) and (targets[b, :10] == -100).all()
        assert torch.equal(ids[b, 11:14], data[:3])  # teacher forcing
    with pytest.raises(ValueError, match="n_data"):
        selective_copying(1, n_data=5, length=4)
