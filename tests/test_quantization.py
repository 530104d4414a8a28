"""course_lib.quantization against PyTorch's own quantiser (torch.quantize_per_channel /
quantize_per_tensor with the same scales), the rounding bound |w - ŵ| <= scale / 2, F.linear with
the dequantised weight, and a whole GPT before and after."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.models.gpt import GPT
from course_lib.quantization import (QuantLinear, dequantize, model_size_bytes, quantize_model,
                                     quantize_per_channel, quantize_per_tensor, tied_linears)


def weights(seed=0, shape=(12, 20), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g, dtype=dtype) * torch.rand(shape[0], 1, generator=g, dtype=dtype)
    w[3] *= 25.0  # an outlier row
    w[5] = 0.0  # an all-zero row
    w[7] = -w[7].abs()  # a row with no positive entry
    return w


def torch_int_repr(w, scale, per_channel=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's quantized tensors are deprecated, still fine as a reference
        if per_channel:
            return torch.quantize_per_channel(w.float(), scale.double(), torch.zeros(w.size(0), dtype=torch.long),
                                              0, torch.qint8).int_repr()
        return torch.quantize_per_tensor(w.float(), float(scale), 0, torch.qint8).int_repr()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_channel_int8_equals_torch_quantize_per_channel(seed):
    w = weights(seed)
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (w.size(0),)
    assert torch.equal(q, torch_int_repr(w, scale))
    assert torch.allclose(scale[torch.arange(12) != 5], w.abs().amax(1)[torch.arange(12) != 5] / 127)


def test_per_tensor_int8_equals_torch_quantize_per_tensor():
    w = weights()
    q, scale = quantize_per_tensor(w)
    assert scale.dim() == 0 and torch.isclose(scale, w.abs().max() / 127)
    assert torch.equal(q, torch_int_repr(w, scale, per_channel=False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reconstruction_error_is_at_most_half_a_step_per_row(dtype):
    w = weights(dtype=dtype)
    q, scale = quantize_per_channel(w)
    err = (dequantize(q, scale) - w).abs().amax(1)  # (out,)
    assert scale.dtype == dtype
    assert bool((err <= scale / 2 * (1 + 1e-6)).all())
    assert torch.equal(q.abs().amax(1)[torch.arange(12) != 5], torch.full((11,), 127, dtype=torch.int8))
    assert torch.equal(q[5], torch.zeros(20, dtype=torch.int8)) and torch.isfinite(scale).all()
    assert int(q.min()) >= -127  # the grid is symmetric: -128 is never used


def test_per_channel_beats_per_tensor_when_one_row_is_an_outlier():
    w = weights()
    e_channel = (dequantize(*quantize_per_channel(w)) - w).pow(2).mean()
    e_tensor = (dequantize(*quantize_per_tensor(w)) - w).pow(2).mean()
    assert e_channel < e_tensor / 10


@pytest.mark.parametrize("bias", [True, False])
def test_quant_linear_equals_f_linear_with_the_dequantised_weight(bias):
    torch.manual_seed(0)
    lin = nn.Linear(20, 12, bias=bias)
    for per_channel in (True, False):
        ql = QuantLinear.from_linear(lin, per_channel=per_channel)
        x = torch.randn(3, 5, 20)
        ref = F.linear(x, ql.dequantized_weight(), lin.bias)
        assert torch.allclose(ql(x), ref, rtol=1e-5, atol=1e-6)
        assert (ql(x) - lin(x)).abs().max() < 0.02  # and close to the float layer
    assert ql.weight_int8.dtype == torch.int8


def test_bad_weights_are_clear_errors():
    with pytest.raises(ValueError, match="linear.weight"):
        quantize_per_channel(torch.randn(5))
    with pytest.raises(ValueError, match="2-D float"):
        quantize_per_channel(torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="int8"):
        QuantLinear(torch.ones(3, 3), torch.ones(3))


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(vocab_size=40, max_positions=32, d_model=32, n_layers=2, n_heads=4).eval()


def test_quantize_model_swaps_every_linear_but_the_tied_head():
    model = tiny_gpt()
    assert tied_linears(model) == {"lm_head"}
    qmodel = quantize_model(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 6 + 1
    for name in linears:
        expected = nn.Linear if name == "lm_head" else QuantLinear
        assert type(qmodel.get_submodule(name)) is expected, name
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, (nn.Linear, QuantLinear)))
    assert qmodel.lm_head.weight is qmodel.tok_emb.weight  # still tied in the copy
    every = quantize_model(model, skip_tied=False)
    assert isinstance(every.lm_head, QuantLinear)


def test_model_size_counts_each_tensor_once_and_int8_saves_3_bytes_per_weight():
    model = tiny_gpt()
    n_params = sum(p.numel() for p in model.parameters())  # tied weight once
    assert model_size_bytes(model) == 4 * n_params
    qmodel = quantize_model(model)
    swapped = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not model.lm_head]
    w = sum(m.weight.numel() for m in swapped)
    rows = sum(m.weight.size(0) for m in swapped)
    assert model_size_bytes(qmodel) == 4 * n_params - 4 * w + w + 4 * rows


def test_quantised_gpt_logits_stay_close():
    model = tiny_gpt()
    qmodel = quantize_model(model)
    ids = torch.randint(0, 40, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(ids).logits, qmodel(ids).logits
    rel = ((a - b).norm() / a.norm()).item()
    print(f"int8 per-channel GPT: relative logit error {rel:.2e}")
    assert rel < 0.02
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.95
