"""course_lib.ffn against PyTorch's activations and Hugging Face's MLPs with copied weights."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import ConfigError
from course_lib.ffn import (ACTIVATIONS, FeedForward, FFNConfig, GatedFeedForward, ffn_params, gelu, gelu_tanh,
                            get_activation, glu_ffn, llama_hidden_size, make_ffn, matched_gated_d_ff, mish, relu,
                            silu)

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def _x(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 7, 33, generator=g, dtype=dtype) * 4
    return torch.cat([x.flatten(), torch.tensor([0.0, -30.0, 30.0, 1e-4], dtype=dtype)])  # (N,) plus edge values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ours,theirs", [
    (relu, F.relu), (gelu, F.gelu), (gelu_tanh, lambda x: F.gelu(x, approximate="tanh")),
    (silu, F.silu), (mish, F.mish), (lambda x: silu(x, beta=1.702), lambda x: x * torch.sigmoid(1.702 * x)),
])
def test_activations_match_torch(ours, theirs, dtype):
    x = _x(dtype)
    err = (ours(x) - theirs(x)).abs().max().item()
    assert err <= TOL[dtype] * 10, err


def test_activations_match_hugging_face_names():
    from transformers.activations import ACT2FN
    x = _x(torch.float64)
    for hf_name in ("gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish", "relu", "mish", "sigmoid"):
        err = (get_activation(hf_name)(x) - ACT2FN[hf_name](x)).abs().max().item()
        assert err <= 1e-12, (hf_name, err)


def test_gelu_tanh_is_close_to_but_not_exact_gelu():
    x = torch.linspace(-6, 6, 10001, dtype=torch.float64)
    diff = (gelu(x) - gelu_tanh(x)).abs().max().item()
    print(f"max |GELU - tanh approximation| on [-6, 6]: {diff:.2e}")
    assert 1e-5 < diff < 1e-3


def test_silu_beta_limits():
    x = _x(torch.float64)
    assert torch.allclose(silu(x, beta=0.0), x / 2)
    assert torch.allclose(silu(x, beta=50.0), F.relu(x), atol=1e-2)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown activation 'gleu'; choose one of: .*gelu_tanh.*swish"):
        get_activation("gleu")
    with pytest.raises(ConfigError, match=r"FFNConfig.activation='tanhh': expected one of .*gelu_tanh"):
        FeedForward(8, 32, activation="tanhh")
    assert set(ACTIVATIONS) >= {"relu", "gelu", "gelu_tanh", "silu", "mish", "sigmoid"}


def test_feedforward_is_position_wise_and_matches_nn_sequential():
    torch.manual_seed(0)
    ffn = FeedForward(16, 64, activation="relu")
    seq = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16))
    seq[0].load_state_dict(ffn.up_proj.state_dict())
    seq[2].load_state_dict(ffn.down_proj.state_dict())
    x = torch.randn(2, 5, 16)
    assert (ffn(x) - seq(x)).abs().max() <= 1e-6
    one_token = ffn(x[:, 2:3])  # each position on its own gives the same answer
    assert torch.allclose(one_token[:, 0], ffn(x)[:, 2], atol=1e-6)


def test_feedforward_matches_hf_gpt2_mlp():
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
    cfg = GPT2Config(n_embd=32, n_layer=1, n_head=2, activation_function="gelu_new", resid_pdrop=0.0)
    torch.manual_seed(0)
    hf = GPT2MLP(4 * 32, cfg).eval()
    ours = FeedForward(32, 128, activation="gelu_tanh").eval()
    with torch.no_grad():  # GPT-2's Conv1D stores weights as (in, out): transpose
        ours.up_proj.weight.copy_(hf.c_fc.weight.T)
        ours.up_proj.bias.copy_(hf.c_fc.bias)
        ours.down_proj.weight.copy_(hf.c_proj.weight.T)
        ours.down_proj.bias.copy_(hf.c_proj.bias)
        x = torch.randn(2, 6, 32)
        err = (ours(x) - hf(x)).abs().max().item()
    print(f"FeedForward vs HF GPT2MLP: max abs error {err:.2e}")
    assert err <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gated_feedforward_matches_hf_llama_mlp(dtype):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP
    cfg = LlamaConfig(hidden_size=32, intermediate_size=88, hidden_act="silu", mlp_bias=False)
    torch.manual_seed(0)
    hf = LlamaMLP(cfg).to(dtype).eval()
    ours = GatedFeedForward(32, 88).to(dtype).eval()
    ours.load_state_dict(hf.state_dict())  # same names: gate_proj, up_proj, down_proj
    with torch.no_grad():
        x = torch.randn(2, 6, 32, dtype=dtype)
        err = (ours(x) - hf(x)).abs().max().item()
    print(f"GatedFeedForward(silu) vs HF LlamaMLP {dtype}: max abs error {err:.2e}")
    assert err <= TOL[dtype] * 10


def test_gated_feedforward_matches_hf_t5_v1_1_gated_gelu():
    from transformers import T5Config
    from transformers.models.t5.modeling_t5 import T5DenseGatedActDense
    cfg = T5Config(d_model=32, d_ff=80, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    assert cfg.dense_act_fn == "gelu_new"
    torch.manual_seed(0)
    hf = T5DenseGatedActDense(cfg).eval()
    ours = GatedFeedForward(32, 80, activation=cfg.dense_act_fn).eval()
    ours.load_state_dict({"gate_proj.weight": hf.wi_0.weight, "up_proj.weight": hf.wi_1.weight,
                          "down_proj.weight": hf.wo.weight})
    with torch.no_grad():
        x = torch.randn(2, 6, 32)
        err = (ours(x) - hf(x)).abs().max().item()
    print(f"GatedFeedForward(gelu_tanh) vs HF T5DenseGatedActDense: max abs error {err:.2e}")
    assert err <= 1e-5


@pytest.mark.parametrize("variant,act", [("glu", torch.sigmoid), ("reglu", F.relu), ("geglu", F.gelu),
                                         ("swiglu", F.silu)])
def test_glu_family_by_shazeers_names(variant, act):
    torch.manual_seed(0)
    m = glu_ffn(variant, 8, 24)
    x = torch.randn(3, 8)
    expected = (act(x @ m.gate_proj.weight.T) * (x @ m.up_proj.weight.T)) @ m.down_proj.weight.T
    assert torch.allclose(m(x), expected, atol=1e-6)
    assert m.gate_proj.bias is None
    with pytest.raises(ValueError, match="unknown GLU variant 'swishglu'"):
        glu_ffn("swishglu", 8, 24)


def test_parameter_counts_and_the_matched_hidden_size():
    for d, bias in [(64, True), (48, False)]:
        plain = FeedForward(d, 4 * d, bias=bias)
        gated = GatedFeedForward(d, matched_gated_d_ff(4 * d), bias=bias)
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert count(plain) == ffn_params(d, 4 * d, bias=bias) == plain.config.n_params
        assert count(gated) == ffn_params(d, matched_gated_d_ff(4 * d), gated=True, bias=bias)
        assert abs(count(gated) / count(plain) - 1) < 0.02
    assert matched_gated_d_ff(3072) == 2048


@pytest.mark.parametrize("kwargs,expected", [
    (dict(d_model=4096), 11008),  # LLaMA-7B
    (dict(d_model=5120), 13824),  # LLaMA-13B
    (dict(d_model=8192), 22016),  # LLaMA-65B
    (dict(d_model=8192, multiple_of=4096, ffn_dim_multiplier=1.3), 28672),  # LLaMA-2-70B
    (dict(d_model=64, multiple_of=32), 192),
])
def test_llama_hidden_size(kwargs, expected):
    assert llama_hidden_size(**kwargs) == expected


def test_size_helpers_reject_bad_values():
    with pytest.raises(ConfigError, match="llama_hidden_size: multiple_of=0: expected a positive integer"):
        llama_hidden_size(64, multiple_of=0)
    with pytest.raises(ConfigError, match="ffn_dim_multiplier=-1"):
        llama_hidden_size(64, ffn_dim_multiplier=-1)
    with pytest.raises(ConfigError, match="FFNConfig.d_ff=0: expected a positive integer"):
        FFNConfig(d_model=8, d_ff=0)
    with pytest.raises(ConfigError, match=r"dropout=1.0: expected a number in \[0.0, 1.0\)"):
        make_ffn(8, 16, dropout=1.0)


def test_make_ffn_picks_the_class():
    assert isinstance(make_ffn(8, 16, "silu", gated=True, bias=False), GatedFeedForward)
    assert isinstance(make_ffn(8, 16), FeedForward)
