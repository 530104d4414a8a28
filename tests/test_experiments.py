"""course_lib.experiments against independent references: a from-scratch forward pass written
with torch.nn.functional (scaled_dot_product_attention, layer_norm, rms_norm) and Hugging Face's
Llama RoPE and its RoPE-scaling init functions, brute-force loss computations, numpy.polyfit and
the published Chinchilla numbers."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from course_lib.config import ConfigError
from course_lib.models.common import count_params
from course_lib.positional import RopeScaling
from course_lib.experiments import (POSITIONS, ExperimentConfig, ExperimentLM, LengthError, PowerLaw,
                                    compute_optimal, eval_at_length, experiment_params, fit_power_law,
                                    loss_by_position, run_experiment, training_flops)

V = 11


def make(seed=0, **kw) -> ExperimentLM:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, max_positions=8, d_model=16, n_layers=2, n_heads=4)
    model = ExperimentLM(**{**cfg, **kw}).double().eval()
    with torch.no_grad():  # random, non-trivial weights everywhere (norm gains included)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


# ------------------------------------------------------------------ an independent forward pass
def sinusoid_table(T: int, d: int) -> torch.Tensor:
    pe = torch.zeros(T, d, dtype=torch.float64)
    for pos in range(T):
        for i in range(0, d, 2):
            pe[pos, i] = math.sin(pos / 10000 ** (i / d))
            pe[pos, i + 1] = math.cos(pos / 10000 ** (i / d))
    return pe


def alibi_slopes_power_of_two(H: int) -> torch.Tensor:
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], dtype=torch.float64)


def norm(x, mod, kind):
    if kind == "layernorm":
        return F.layer_norm(x, (x.size(-1),), mod.weight, mod.bias, eps=1e-5)
    return F.rms_norm(x, (x.size(-1),), mod.weight, eps=1e-6)


def reference_attention(block, h, cfg: ExperimentConfig):
    a = block.attn
    B, T, C = h.shape
    H, Hkv, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    q = F.linear(h, a.q_proj.weight, a.q_proj.bias).view(B, T, H, D).transpose(1, 2)
    k = F.linear(h, a.k_proj.weight, a.k_proj.bias).view(B, T, Hkv, D).transpose(1, 2)
    v = F.linear(h, a.v_proj.weight, a.v_proj.bias).view(B, T, Hkv, D).transpose(1, 2)
    if cfg.position == "rope":  # Hugging Face Llama's rotation, angles computed here
        theta, stretch = cfg.rope_theta, 1.0
        if cfg.rope_scaling is not None and cfg.rope_scaling.kind == "ntk":  # a larger base (bloc97 2023)
            theta = theta * cfg.rope_scaling.factor ** (D / (D - 2))
        if cfg.rope_scaling is not None and cfg.rope_scaling.kind == "linear":  # positions m / s (Chen et al. 2023)
            stretch = cfg.rope_scaling.factor
        inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)) / stretch
        freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq  # (T, D/2)
        emb = torch.cat([freqs, freqs], -1)[None]  # (1, T, D)
        q, k = apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    k = k.repeat_interleave(H // Hkv, dim=1)  # consecutive query heads share a key/value head
    v = v.repeat_interleave(H // Hkv, dim=1)
    if cfg.position == "alibi":
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        bias = -alibi_slopes_power_of_two(H)[:, None, None] * (i - j)  # (H, T, T)
        bias = bias.masked_fill(j > i, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    else:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    y = y.transpose(1, 2).reshape(B, T, H * D)
    return F.linear(y, a.o_proj.weight, a.o_proj.bias)


def reference_ffn(block, h, cfg):
    f = block.ffn
    if cfg.ffn == "gelu":
        return F.linear(F.gelu(F.linear(h, f.up_proj.weight, f.up_proj.bias)), f.down_proj.weight, f.down_proj.bias)
    gate = F.silu(F.linear(h, f.gate_proj.weight, f.gate_proj.bias))
    return F.linear(gate * F.linear(h, f.up_proj.weight, f.up_proj.bias), f.down_proj.weight, f.down_proj.bias)


def reference_forward(model: ExperimentLM, ids: torch.Tensor) -> torch.Tensor:
    cfg = model.config
    T = ids.size(1)
    E = model.tok_emb.weight
    x = E[ids]
    if cfg.position == "learned":
        x = x + model.pos_emb.weight[:T]
    elif cfg.position == "sinusoidal":
        x = x * math.sqrt(cfg.d_model) + sinusoid_table(T, cfg.d_model)
    for b in model.blocks:
        if cfg.norm_placement == "pre":
            x = x + reference_attention(b, norm(x, b.attn_norm, cfg.norm), cfg)
            x = x + reference_ffn(b, norm(x, b.ffn_norm, cfg.norm), cfg)
        else:
            x = norm(x + reference_attention(b, x, cfg), b.attn_norm, cfg.norm)
            x = norm(x + reference_ffn(b, x, cfg), b.ffn_norm, cfg.norm)
    if cfg.norm_placement == "pre":
        x = norm(x, model.final_norm, cfg.norm)
    return x @ E.T  # the tied head


VARIANTS = [dict(position=p) for p in POSITIONS] + [
    dict(position="rope", norm="rmsnorm", ffn="swiglu", n_kv_heads=2),
    dict(position="alibi", norm_placement="post", n_kv_heads=1),
    dict(position="none", norm_placement="post", norm="rmsnorm", bias=True),
    dict(position="sinusoidal", ffn="swiglu", bias=True, n_kv_heads=2),
    dict(position="learned", norm="rmsnorm", n_kv_heads=1, ffn="swiglu"),
    dict(position="rope", rope_scaling={"kind": "linear", "factor": 4.0}),
    dict(position="rope", n_kv_heads=2, rope_scaling={"kind": "ntk", "factor": 4.0}),
]


def variant_id(kw) -> str:
    return "-".join(f"{v['kind']}{v['factor']:g}" if isinstance(v, dict) else f"{v}" for v in kw.values())


@pytest.mark.parametrize("kw", VARIANTS, ids=variant_id)
def test_forward_equals_an_independent_computation(kw):
    model = make(**kw)
    lengths = [5, 8] + ([20] if kw["position"] != "learned" else [])  # 20 > the trained context of 8
    for T in lengths:
        ids = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(T))
        with torch.no_grad():
            err = (model(ids) - reference_forward(model, ids)).abs().max().item()
        assert err < 1e-10, (kw, T, err)


def variant_id(kw) -> str:
    return "-".join(f"{v['kind']}{v['factor']:g}" if isinstance(v, dict) else f"{v}" for v in kw.values())


@pytest.mark.parametrize("kw", VARIANTS, ids=variant_id)
def test_causal_for_every_variant(kw):
    model = make(**kw)
    T = 8 if kw["position"] == "learned" else 24
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(ids)
        for t in (0, 3, T - 1):
            changed = ids.clone()
            changed[:, t] = (changed[:, t] + 1) % V
            out = model(changed)
            assert torch.equal(out[:, :t], base[:, :t]), (kw, t)  # the past cannot see the future
            assert not torch.allclose(out[:, t], base[:, t])  # ... but position t sees itself


def test_order_of_the_past_is_invisible_only_without_positions():
    """One layer: the last position attends over a *set* of earlier tokens. Without positions,
    swapping two earlier tokens leaves its output unchanged; every scheme makes it depend on order."""
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    swapped = torch.tensor([[2, 1, 3, 4, 5]])
    for p in POSITIONS:
        model = make(position=p, n_layers=1)
        with torch.no_grad():
            same = torch.allclose(model(ids)[0, -1], model(swapped)[0, -1])
        assert same == (p == "none"), p


def test_learned_positions_refuse_longer_inputs():
    model = make(position="learned")
    model(torch.zeros(1, 8, dtype=torch.long))  # exactly the table: fine
    with pytest.raises(LengthError, match="no embedding for position >= 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    assert issubclass(LengthError, ValueError)


# ------------------------------------------------------------------ RoPE scaling
def rope_cfg(**kw) -> ExperimentConfig:
    return ExperimentConfig(**{**dict(vocab_size=V, max_positions=8, d_model=16, n_heads=4, position="rope"), **kw})


@pytest.mark.parametrize("kind", ["linear", "ntk"])
def test_rope_scaling_at_factor_one_changes_nothing(kind):
    model = make(position="rope")
    same = ExperimentLM(replace(model.config, rope_scaling=RopeScaling(kind, 1.0))).double().eval()
    same.load_state_dict(model.state_dict())
    ids = torch.randint(0, V, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(same(ids), model(ids))


def test_a_scaled_model_loads_the_trained_state_dict():
    model = make(position="rope")
    for scaling in ({"kind": "linear", "factor": 4.0}, RopeScaling("ntk", 4.0)):
        scaled = ExperimentLM(replace(model.config, rope_scaling=scaling)).double().eval()
        assert isinstance(scaled.config.rope_scaling, RopeScaling)  # the dict became a RopeScaling
        assert scaled.load_state_dict(model.state_dict()) is not None  # strict: no missing or unexpected key
        assert all(torch.equal(a, b) for a, b in zip(scaled.state_dict().values(), model.state_dict().values()))
        assert experiment_params(scaled.config) == experiment_params(model.config)  # no weights added
        ids = torch.randint(0, V, (2, 20), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            first, rest = (scaled(ids) - model(ids)).abs().amax(-1)[0].split([1, 19])
        assert first.item() == 0.0 and rest.min().item() > 1e-6  # position 0 has no angle; the rest change


@pytest.mark.parametrize("s", [2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_scaling_at_s_on_positions_s_m_is_no_scaling_at_m(s, dtype):
    """Position interpolation: position s·m of the stretched model rotates exactly like position m of
    the trained one (bit for bit: s is a power of two, so m·θ = (s·m)·(θ/s) has no rounding)."""
    plain = ExperimentLM(rope_cfg())
    linear = ExperimentLM(rope_cfg(rope_scaling=RopeScaling("linear", float(s))))
    T = 40
    cos, sin = plain.position_inputs(T, torch.device("cpu"), dtype)["rotary"]  # (T, D) each
    cos_s, sin_s = linear.position_inputs(s * T, torch.device("cpu"), dtype)["rotary"]  # (s·T, D) each
    assert torch.equal(cos_s[::s], cos) and torch.equal(sin_s[::s], sin)
    assert not torch.allclose(cos_s[1::s], cos)  # the positions in between are new angles


@pytest.mark.parametrize("kind,hf_type,hf_factor,seq_len", [
    ("linear", "linear", 4.0, None), ("linear", "linear", 2.5, None),
    # HF's dynamic NTK at seq_len L raises the base by (f·L/M − (f − 1))^(D/(D−2)): our static factor
    ("ntk", "dynamic", 4.0, 32), ("ntk", "dynamic", 1.0, 32), ("ntk", "dynamic", 2.0, 20)])
def test_scaled_rope_angles_equal_transformers_init_functions(kind, hf_type, hf_factor, seq_len):
    M, D, H = 8, 16, 4
    hf_cfg = LlamaConfig(hidden_size=D * H, num_attention_heads=H, max_position_embeddings=M,
                         rope_parameters={"rope_type": hf_type, "rope_theta": 10000.0, "factor": hf_factor})
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[hf_type](hf_cfg, "cpu", seq_len)  # (D/2,)
    assert attention_factor == 1.0
    factor = hf_factor if kind == "linear" else hf_factor * seq_len / M - (hf_factor - 1)
    model = ExperimentLM(rope_cfg(max_positions=M, d_model=D * H, rope_scaling=RopeScaling(kind, factor)))
    T = 50
    freqs = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq  # (T, D/2)
    emb = torch.cat([freqs, freqs], -1)  # (T, D)
    cos, sin = model.position_inputs(T, torch.device("cpu"))["rotary"]  # (T, D) each
    err = max((cos - emb.cos()).abs().max().item(), (sin - emb.sin()).abs().max().item())
    print(f"{kind} x{factor:g} vs transformers {hf_type}: max abs error {err:.1e}")
    assert err <= 1e-6
    if factor > 1:  # and the scaling did something
        plain = ExperimentLM(rope_cfg(max_positions=M, d_model=D * H))
        assert not torch.allclose(cos, plain.position_inputs(T, torch.device("cpu"))["rotary"][0])


# ------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("kw", VARIANTS + [dict(position="rope", d_ff=40, ffn="swiglu"),
                                           dict(position="none", n_layers=3, d_model=24, n_heads=3)],
                         ids=str)
def test_parameter_formula_equals_the_model(kw):
    torch.manual_seed(0)
    model = ExperimentLM(vocab_size=V, max_positions=8, d_model=kw.pop("d_model", 16), n_heads=kw.pop("n_heads", 4), **kw)
    counts = experiment_params(model.config)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert counts.total == sum(unique.values())
    assert counts.non_embedding == count_params(model, embeddings=False)
    embedding = model.tok_emb.weight.numel() + (model.pos_emb.weight.numel() if model.pos_emb is not None else 0)
    assert count_params(model, embeddings=False) == sum(unique.values()) - embedding


def test_replace_resolves_defaults_for_the_new_size():
    base = ExperimentConfig(d_model=64, n_heads=4)
    small = replace(base, d_model=16, n_heads=2)
    assert small.ffn_hidden == 64 and small.kv_heads == 2
    assert replace(base, n_kv_heads=1).kv_heads == 1 and replace(base, d_ff=100).ffn_hidden == 100


def test_swiglu_is_parameter_matched():
    gelu, swiglu = ExperimentConfig(d_model=64, ffn="gelu"), ExperimentConfig(d_model=64, ffn="swiglu")
    assert swiglu.ffn_hidden == round(2 * 256 / 3) == 171
    a, b = experiment_params(gelu).non_embedding, experiment_params(swiglu).non_embedding
    assert abs(a - b) / a < 0.005  # 3·64·171 vs 2·64·256 weights per FFN: within half a percent


def test_gqa_and_mqa_shrink_only_k_and_v():
    mha, gqa, mqa = (experiment_params(ExperimentConfig(d_model=64, n_heads=4, n_kv_heads=k)) for k in (4, 2, 1))
    per_head = 2 * 64 * 16  # k_proj and v_proj columns of one head
    assert mha.blocks - gqa.blocks == 2 * 2 * per_head  # two layers, two heads fewer
    assert mha.blocks - mqa.blocks == 2 * 3 * per_head


@pytest.mark.parametrize("bad,match", [
    # one of a few names: the field, the value and the choices
    (dict(position="relative"), r"ExperimentConfig.position='relative': expected one of \('sinusoidal'"),
    (dict(norm_placement="sandwich"), "ExperimentConfig.norm_placement='sandwich': expected one of"),
    (dict(norm="batchnorm"), "ExperimentConfig.norm='batchnorm': expected one of"),
    (dict(ffn="relu"), r"ExperimentConfig.ffn='relu': expected one of \('gelu', 'swiglu'\)"),
    # divisible: the field, both values and a fix
    (dict(n_kv_heads=3), "ExperimentConfig.n_heads=4 is not divisible by n_kv_heads=3: .*divisors of 4"),
    (dict(d_model=30), r"ExperimentConfig.d_model=30 is not divisible by n_heads=4: .*\(e.g. d_model=32\)"),
    # positive integers (None allowed where it means "the default")
    (dict(n_kv_heads=0), "ExperimentConfig.n_kv_heads=0: expected a positive integer"),
    (dict(d_ff=0), "ExperimentConfig.d_ff=0: expected a positive integer"),
    (dict(max_positions=0), "ExperimentConfig.max_positions=0: expected a positive integer"),
    (dict(n_layers=2.0), r"ExperimentConfig.n_layers=2.0: expected a positive integer"),
    # ranges
    (dict(dropout=1.0), r"ExperimentConfig.dropout=1.0: expected a number in \[0.0, 1.0\)"),
    (dict(rope_theta=-1.0), r"ExperimentConfig.rope_theta=-1.0: expected a number > 0 \(e.g. rope_theta=10000.0\)"),
    (dict(rope_theta=0), "ExperimentConfig.rope_theta=0: expected a number > 0"),
    # the special rules of two position schemes
    (dict(d_model=12, n_heads=4, position="rope"), r"ExperimentConfig.d_model=12: expected an even head size .*"
                                                   r"RoPE.*\(got 3\); e.g. d_model=16"),
    (dict(d_model=15, n_heads=3, position="sinusoidal"), r"ExperimentConfig.d_model=15: expected an even d_model .*"
                                                         r"sin/cos pairs \(e.g. d_model=18\)"),
    # RoPE scaling: only for RoPE, and a valid RopeScaling
    (dict(position="learned", rope_scaling={"kind": "linear", "factor": 2.0}),
     r"ExperimentConfig.rope_scaling=RopeScaling\(kind='linear', factor=2.0\): only RoPE has angles to scale, "
     r"but position='learned'; use position='rope' or rope_scaling=None"),
    (dict(position="alibi", rope_scaling=RopeScaling("ntk", 4.0)),
     "only RoPE has angles to scale, but position='alibi'"),
    (dict(position="rope", rope_scaling=4.0), r"ExperimentConfig.rope_scaling=4.0: expected None, a RopeScaling or "
                                              r"its dict, e.g. rope_scaling=\{'kind': 'ntk', 'factor': 4.0\}"),
    (dict(position="rope", rope_scaling={"kind": "dynamic", "factor": 4.0}), r"RopeScaling.kind='dynamic': expected one of"),
    (dict(position="rope", rope_scaling={"kind": "linear", "factor": 0.5}),
     r"RopeScaling.factor=0.5: expected a number >= 1"),
])
def test_bad_configs_say_what_to_fix(bad, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig(**bad)


def test_good_edge_values_pass_and_the_fixes_proposed_are_valid():
    ExperimentConfig(n_kv_heads=None, d_ff=None, dropout=0.0, rope_theta=1e6)  # None = the defaults
    ExperimentConfig(d_model=12, n_heads=3, position="sinusoidal")  # odd head size: fine without RoPE
    ExperimentConfig(d_model=16, n_heads=4, position="rope")  # the d_model the RoPE message proposes
    ExperimentConfig(d_model=18, n_heads=3, position="sinusoidal")  # the d_model the sinusoidal message proposes


def test_model_takes_a_config_or_overrides_not_both():
    cfg = ExperimentConfig(vocab_size=V, max_positions=8, d_model=16, n_heads=4)
    assert ExperimentLM(cfg).config is cfg and ExperimentLM(**vars(cfg)).config == cfg
    with pytest.raises(TypeError, match=r"either an ExperimentConfig or keyword overrides to ExperimentLM, not both "
                                        r"\(got a config and \['d_model'\]\)"):
        ExperimentLM(cfg, d_model=32)
    with pytest.raises(TypeError, match="ExperimentLM expects an ExperimentConfig, got dict"):
        ExperimentLM(vars(cfg))


# ------------------------------------------------------------------ evaluation at a length
def brute_force_loss(model, data, length, n_batches, batch_size, seed):
    gen = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(np.asarray(data, dtype=np.int64))
    nll = []
    for _ in range(n_batches):
        starts = torch.randint(len(data) - length, (batch_size,), generator=gen)
        for s in starts.tolist():
            window = data[s: s + length + 1]
            with torch.no_grad():
                logp = torch.log_softmax(model(window[None, :-1])[0].double(), -1)  # (T, V)
            nll += [-logp[t, window[t + 1]].item() for t in range(length)]
    return sum(nll) / len(nll)


@pytest.mark.parametrize("position,length", [("rope", 8), ("alibi", 20), ("learned", 6), ("none", 30)])
def test_eval_at_length_equals_brute_force(position, length):
    model = make(position=position, dropout=0.2).float()
    data = np.random.default_rng(0).integers(0, V, 500).astype(np.uint16)  # as encoded_corpus stores it
    model.train()
    got = eval_at_length(model, data, length, 3, 4, torch.Generator().manual_seed(7))
    assert model.training  # the mode it was found in
    model.eval()
    expected = brute_force_loss(model, data, length, 3, 4, 7)
    assert isinstance(got, float) and got == pytest.approx(expected, rel=1e-5)
    by_pos = loss_by_position(model, data, length, 3, 4, torch.Generator().manual_seed(7))
    assert by_pos.shape == (length,) and by_pos.mean().item() == pytest.approx(expected, rel=1e-5)


def test_loss_by_position_on_pieces_of_one_window():
    """window=W: every length predicts the same tokens; brute force feeds each piece on its own."""
    model = make(position="alibi").float()
    data = np.random.default_rng(1).integers(0, V, 400)
    W = 24
    gen = torch.Generator().manual_seed(3)
    starts = [torch.randint(len(data) - W, (2,), generator=gen) for _ in range(2)]  # get_batch's draws
    for length in (6, 12, 24):
        got = loss_by_position(model, data, length, 2, 2, torch.Generator().manual_seed(3), window=W)
        per_pos = torch.zeros(length, dtype=torch.float64)
        n = 0
        for batch in starts:
            for s in batch.tolist():
                for piece in range(W // length):
                    a = s + piece * length
                    ids = torch.as_tensor(data[a: a + length + 1])
                    with torch.no_grad():
                        logp = torch.log_softmax(model(ids[None, :-1])[0].double(), -1)
                    per_pos += -logp[torch.arange(length), ids[1:]]
                    n += 1
        assert torch.allclose(got.double(), per_pos / n, atol=1e-5), length
    with pytest.raises(ValueError, match="divides the window"):
        loss_by_position(model, data, 5, 1, 1, window=W)


def test_eval_at_length_tracks_no_gradients_and_is_repeatable():
    model = make(position="alibi").float()
    data = torch.randint(0, V, (300,), generator=torch.Generator().manual_seed(0))
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(torch.is_grad_enabled()))
    a = eval_at_length(model, data, 16, 2, 3, torch.Generator().manual_seed(1))
    b = eval_at_length(model, data, 16, 2, 3, torch.Generator().manual_seed(1))
    assert a == b and seen == [False] * 4
    with pytest.raises(LengthError):
        eval_at_length(make(position="learned").float(), data, 16, 1, 2, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="length"):
        eval_at_length(model, data, 0, 1, 2)


# ------------------------------------------------------------------ scaling arithmetic
def test_fit_power_law_recovers_a_known_exponent():
    n = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5])
    exact = fit_power_law(n, 7.0 * n ** -0.3)
    assert exact.coefficient == pytest.approx(7.0) and exact.exponent == pytest.approx(0.3) and exact.r2 == pytest.approx(1.0)
    noisy_loss = 7.0 * n ** -0.3 * np.exp(np.random.default_rng(0).normal(0, 0.05, n.size))
    fit = fit_power_law(n, noisy_loss)
    slope, intercept = np.polyfit(np.log(n), np.log(noisy_loss), 1)
    assert fit.exponent == pytest.approx(-slope, rel=1e-12) and fit.coefficient == pytest.approx(np.exp(intercept))
    r = np.corrcoef(np.log(n), np.log(noisy_loss))[0, 1]
    assert fit.r2 == pytest.approx(r ** 2, rel=1e-12) and 0.9 < fit.r2 < 1  # R² of a line = r²
    assert isinstance(fit, PowerLaw) and fit(n).shape == n.shape
    a, alpha, r2 = fit  # unpacks as (coefficient, exponent, r²)
    assert (a, alpha, r2) == (fit.coefficient, fit.exponent, fit.r2)


@pytest.mark.parametrize("n,loss,match", [([1, 2], [1.0], "one loss per size"), ([5, 5], [1.0, 2.0], "two different"),
                                          ([1, 2], [1.0, -1.0], "> 0"), ([0, 2], [1.0, 1.0], "> 0")])
def test_fit_power_law_rejects_bad_input(n, loss, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(n, loss)


def test_compute_optimal_matches_chinchilla():
    # Hoffmann et al. 2022: Chinchilla, 70B parameters on 1.4T tokens (20 per parameter)
    c = training_flops(70e9, 1.4e12)
    assert c == pytest.approx(5.88e23)
    n, d = compute_optimal(c)
    assert n == pytest.approx(70e9) and d == pytest.approx(1.4e12)
    n2, d2 = compute_optimal(1e20, tokens_per_param=5)
    assert training_flops(n2, d2) == pytest.approx(1e20) and d2 == pytest.approx(5 * n2)
    with pytest.raises(ValueError):
        compute_optimal(0)
    with pytest.raises(ValueError):
        training_flops(-1, 10)


def test_run_experiment_is_reproducible():
    data = np.random.default_rng(0).integers(0, V, 2000).astype(np.uint16)
    cfg = ExperimentConfig(vocab_size=V, max_positions=8, d_model=16, n_layers=1, n_heads=2, position="rope")
    a = run_experiment(cfg, data[:1500], data[1500:], 4, batch_size=4, eval_iters=2, device="cpu")
    b = run_experiment(cfg, data[:1500], data[1500:], 4, batch_size=4, eval_iters=2, device="cpu")
    assert a.val_loss == b.val_loss and math.isfinite(a.val_loss) and not a.model.training
    assert a.tokens == 4 * 4 * 8 and a.n_params == experiment_params(cfg).total
    assert a.non_embedding == experiment_params(cfg).non_embedding and a.seconds_per_step > 0
    with pytest.raises(ConfigError, match="run_experiment: steps=0: expected a positive integer"):
        run_experiment(cfg, data[:1500], data[1500:], 0)
    with pytest.raises(ConfigError, match="run_experiment: batch_size=0: expected a positive integer"):
        run_experiment(cfg, data[:1500], data[1500:], 4, batch_size=0)


def test_run_experiment_fine_tunes_from_init():
    data = np.random.default_rng(0).integers(0, V, 2000).astype(np.uint16)
    cfg = ExperimentConfig(vocab_size=V, max_positions=8, d_model=16, n_layers=1, n_heads=2, position="rope")
    base = run_experiment(cfg, data[:1500], data[1500:], 4, batch_size=4, eval_iters=2, eval_interval=2, device="cpu")
    assert base.history.eval_steps == [2, 4] and base.history.val_loss[-1] == base.val_loss
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    longer = replace(cfg, max_positions=16, rope_scaling={"kind": "linear", "factor": 2.0})
    # a learning rate so small that the weights stay where init put them (Adam moves each by ~lr)
    ft = run_experiment(longer, data[:1500], data[1500:], 1, batch_size=4, lr=1e-9, eval_iters=2, seed=5,
                        init=base.model, device="cpu")
    fresh = run_experiment(longer, data[:1500], data[1500:], 1, batch_size=4, lr=1e-9, eval_iters=2, seed=5,
                           device="cpu")
    for k, v in base.model.state_dict().items():
        assert torch.equal(v, before[k])  # the init model itself is not changed
        assert torch.allclose(ft.model.state_dict()[k], v, atol=1e-6), k
    assert not torch.allclose(fresh.model.tok_emb.weight, base.model.tok_emb.weight, atol=1e-3)
    assert ft.model.config.rope_scaling == RopeScaling("linear", 2.0) and ft.tokens == 4 * 16
    from_dict = run_experiment(longer, data[:1500], data[1500:], 1, batch_size=4, lr=1e-9, eval_iters=2, seed=5,
                               init=base.model.state_dict(), device="cpu")
    assert from_dict.val_loss == ft.val_loss
    with pytest.raises(ValueError, match=r"run_experiment: init does not fit ExperimentLM.*Fine-tune with a config "
                                         r"that changes no weight shape"):
        run_experiment(replace(cfg, d_model=32), data[:1500], data[1500:], 1, init=base.model, device="cpu")
    with pytest.raises(ConfigError, match="run_experiment: eval_interval=0: expected a positive integer"):
        run_experiment(cfg, data[:1500], data[1500:], 4, eval_interval=0)
