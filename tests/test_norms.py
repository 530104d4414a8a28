"""course_lib.norms against nn.LayerNorm, nn.RMSNorm, nn.GroupNorm and Hugging Face's
LlamaRMSNorm / T5LayerNorm (including their float32 upcast for half-precision inputs)."""
import pytest
import torch
import torch.nn as nn

from course_lib.config import ConfigError
from course_lib.norms import GroupNorm, LayerNorm, RMSNorm, StdEpsLayerNorm, T5LayerNorm, make_norm

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _randomise(*modules, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            for other in modules[1:]:
                other.load_state_dict(modules[0].state_dict())
    return modules


def _x(*shape, dtype=torch.float32, scale=3.0, shift=1.0):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_layernorm_matches_nn_layernorm(dtype, bias, eps):
    ours, theirs = _randomise(LayerNorm(24, eps, bias=bias), nn.LayerNorm(24, eps=eps, bias=bias))
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    for scale in (3.0, 1e-3):  # tiny variance: where eps inside/outside the root matters
        x = _x(2, 5, 24, dtype=dtype, scale=scale)
        err = (ours(x) - theirs(x)).abs().max().item()
        assert err <= TOL[dtype] * (10 if scale < 1 else 1), err
    print(f"LayerNorm vs nn.LayerNorm {dtype} bias={bias} eps={eps}: max abs error {err:.2e}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_layernorm_half_precision_close_to_nn_layernorm(dtype):
    ours, theirs = _randomise(LayerNorm(64), nn.LayerNorm(64))
    x = _x(4, 64, dtype=dtype)
    a, b = ours.to(dtype)(x), theirs.to(dtype)(x)
    assert a.dtype == dtype
    assert torch.allclose(a.float(), b.float(), rtol=1.6e-2, atol=1e-2)


def test_layernorm_output_has_mean_0_variance_1_per_token():
    x = _x(3, 7, 32, scale=5.0, shift=-2.0)
    y = LayerNorm(32)(x)
    assert y.mean(-1).abs().max() < 1e-5 and (y.var(-1, unbiased=False) - 1).abs().max() < 1e-3


def test_std_eps_variant_differs_measurably():
    x = _x(4, 8, scale=1e-3)
    a, b = StdEpsLayerNorm(8)(x), nn.LayerNorm(8)(x)
    assert (a - b).abs().max() > 0.05  # unbiased std + eps outside the root: not LayerNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_rmsnorm_matches_nn_rmsnorm(dtype, eps):
    ours, theirs = _randomise(RMSNorm(24, eps), nn.RMSNorm(24, eps=eps))
    x = _x(2, 5, 24, dtype=dtype)
    err = (ours.to(dtype)(x) - theirs.to(dtype)(x)).abs().max().item()
    print(f"RMSNorm vs nn.RMSNorm {dtype} eps={eps}: max abs error {err:.2e}")
    assert err <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rmsnorm_equals_hf_llama_rmsnorm_bit_for_bit(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    ours, theirs = _randomise(RMSNorm(64, 1e-6), LlamaRMSNorm(64, eps=1e-6))
    x = _x(3, 5, 64, dtype=dtype, scale=40.0)  # large values: half-precision squares need the upcast
    a, b = ours.to(dtype)(x), theirs.to(dtype)(x)
    assert a.dtype == b.dtype == dtype and torch.equal(a, b)


def test_rmsnorm_keeps_float64_where_hf_llama_computes_in_float32():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    ours, theirs = _randomise(RMSNorm(64), LlamaRMSNorm(64))
    x = _x(3, 64, dtype=torch.float64)
    a, b = ours.double()(x), theirs.double()(x)
    assert a.dtype == b.dtype == torch.float64
    assert (a - b).abs().max() <= 1e-5  # HF always goes through float32, even from float64


def test_the_float32_upcast_matters_in_half_precision():
    x = _x(4, 4096, dtype=torch.float16, scale=300.0)  # x² overflows float16 (max 65504)
    naive = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert not torch.isfinite(naive).all() or (naive == 0).all()
    assert torch.isfinite(RMSNorm(4096)(x)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_t5_layernorm_equals_hf_t5_layernorm_bit_for_bit(dtype):
    from transformers.models.t5.modeling_t5 import T5LayerNorm as HFT5LayerNorm
    ours, theirs = _randomise(T5LayerNorm(48), HFT5LayerNorm(48))
    x = _x(2, 6, 48, dtype=dtype)
    a, b = ours.to(dtype)(x), theirs.to(dtype)(x)
    assert a.dtype == b.dtype and torch.equal(a, b)


def test_t5_layernorm_equals_rmsnorm_in_float32():
    t5, rms = _randomise(T5LayerNorm(16), RMSNorm(16))
    x = _x(3, 16)
    assert torch.allclose(t5(x), rms(x), atol=1e-6)


@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("shape", [(2, 8, 5), (2, 8, 3, 4), (3, 8)])
def test_groupnorm_matches_nn_groupnorm(groups, shape):
    if groups == 8 and len(shape) == 2:
        pytest.skip("one value per group: variance 0, the output is just the bias up to rounding")
    ours, theirs = _randomise(GroupNorm(groups, 8), nn.GroupNorm(groups, 8))
    x = _x(*shape)
    err = (ours(x) - theirs(x)).abs().max().item()
    assert err <= 1e-5, err


def test_groupnorm_without_affine_and_errors():
    x = _x(2, 6, 4)
    assert torch.allclose(GroupNorm(3, 6, affine=False)(x), nn.GroupNorm(3, 6, affine=False)(x), atol=1e-5)
    with pytest.raises(ConfigError, match="num_channels=6 is not divisible by num_groups=4"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 6, ...\)"):
        GroupNorm(3, 6)(torch.randn(2, 4, 6))


def test_make_norm_and_errors():
    assert isinstance(make_norm("layernorm", 8), LayerNorm) and make_norm("layernorm", 8).eps == 1e-5
    assert isinstance(make_norm("rmsnorm", 8), RMSNorm) and make_norm("rmsnorm", 8).eps == 1e-6
    assert isinstance(make_norm("t5", 8), T5LayerNorm)
    assert make_norm("layernorm", 8, bias=False).bias is None
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'; choose one of: layernorm, rmsnorm, t5"):
        make_norm("batchnorm", 8)
    with pytest.raises(ValueError, match=r"built for 8 channels .* build it with LayerNorm\(6\)"):
        LayerNorm(8)(torch.randn(2, 6))
