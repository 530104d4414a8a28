"""Lesson 15's check, both ways: check_quantize_per_channel accepts the reference and other correct
implementations (the library's, a row-by-row loop, float64 inside, PyTorch's own quantiser, a
clamp-style zero guard), and rejects the stub and each named misconception — written here as a
learner would write it — with that diagnosis in the message."""
import warnings

import pytest
import torch

from course_lib import quantization
from course_lib.checks import check_quantize_per_channel
from course_lib.checks.efficiency import quantize_per_channel_reference

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


# ------------------------------------------------------------------ correct implementations
def quantize_row_by_row(w):
    qs, scales = [], []
    for row in w:
        m = row.abs().max()
        s = m / 127 if m > 0 else torch.ones((), dtype=w.dtype)
        qs.append(torch.clamp(torch.round(row / s), -127, 127).to(torch.int8))
        scales.append(s)
    return torch.stack(qs), torch.stack(scales)


def quantize_float64_inside(w):
    w64 = w.double()
    amax = w64.abs().max(dim=1, keepdim=True).values
    amax[amax == 0] = 1.0
    q = (w64 * (127.0 / amax)).round().clamp(-127, 127).to(torch.int8)
    return q, (amax.squeeze(1) / 127).to(w.dtype).where(w.abs().amax(1) > 0, torch.ones((), dtype=w.dtype))


QUANTIZE = solved("check_quantize_per_channel")


def quantize_with_torch(w):
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax == 0, torch.ones_like(absmax), absmax / 127)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qt = torch.quantize_per_channel(w.float(), scale.double(), torch.zeros(len(scale), dtype=torch.long),
                                        0, torch.qint8)
    return qt.int_repr(), scale


def quantize_clamped_guard(w):
    scale = w.abs().amax(dim=-1).clamp(min=1e-12) / 127  # a tiny positive scale for zero rows
    return (w / scale.unsqueeze(-1)).round().clamp(-127, 127).to(torch.int8), scale


@pytest.mark.parametrize("impl", [QUANTIZE, quantize_row_by_row, quantize_float64_inside, quantize_clamped_guard])
def test_accepts_correct_implementations(impl):
    r = check_quantize_per_channel(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


@pytest.mark.parametrize("impl,used", [
    (quantize_with_torch, "torch.quantize_per_channel"),
    (quantization.quantize_per_channel, "course_lib.quantization.quantize_per_channel"),
    (quantize_per_channel_reference, "course_lib.checks.efficiency.quantize_per_channel_reference"),
])
def test_refuses_delegation(impl, used):
    w = torch.randn(5, 8)
    q, scale = impl(w)  # each gives the right numbers ...
    assert torch.equal(q, QUANTIZE(w)[0]) and torch.allclose(scale, QUANTIZE(w)[1])
    assert_delegates(check_quantize_per_channel(impl), used)  # ... and is refused


def test_reference_equals_the_library():
    w = torch.randn(7, 9)
    w[2] = 0
    for a, b in zip(quantize_per_channel_reference(w), quantization.quantize_per_channel(w)):
        assert torch.equal(a, b)


def test_stub_is_not_attempted():
    def quantize_per_channel(w):
        raise NotImplementedError()
    assert_not_attempted(check_quantize_per_channel(quantize_per_channel))


def test_not_a_pair_and_wrong_scale_shape_are_explained():
    r = check_quantize_per_channel(lambda w: QUANTIZE(w)[0])
    assert not r.passed and "pair (q, scale)" in r.message
    r = check_quantize_per_channel(lambda w: (QUANTIZE(w)[0], QUANTIZE(w)[1][:, None]))
    assert not r.passed and "shape" in r.message and r.misconception is None


def test_learner_exception_is_reported_with_their_frames():
    def quantize_per_channel(w):
        return w.abs().amax(dim=2)
    r = check_quantize_per_channel(quantize_per_channel)
    assert not r.passed and "IndexError" in r.message and "quantize_per_channel" in r.detail


# ------------------------------------------------------------------ misconceptions, as a learner writes them
def _protected(absmax):
    return torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))


def per_tensor(w):
    scale = w.abs().max() / 127
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def per_input_column(w):
    scale = _protected(w.abs().amax(dim=0))
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def divide_by_128(w):
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / 128, torch.ones_like(absmax))
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def divide_by_128_no_clamp(w):
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / 128, torch.ones_like(absmax))
    return torch.round(w / scale[:, None]).to(torch.int8), scale  # 128 wraps around to -128


def divide_by_255(w):
    absmax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / 255, torch.ones_like(absmax))
    return (w / scale).round().to(torch.int8), scale.squeeze(1)


def truncates(w):
    scale = _protected(w.abs().amax(dim=1))
    return (w / scale[:, None]).to(torch.int8), scale


def floors(w):
    scale = _protected(w.abs().amax(dim=1))
    return torch.floor(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def max_not_absmax(w):
    m = w.max(dim=1).values
    scale = torch.where(m == 0, torch.ones_like(m), m / 127)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def zero_row(w):
    scale = w.abs().amax(dim=1) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def zero_row_float(w):
    scale = w.abs().amax(dim=1) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127), scale  # NaN stays NaN in a float q


def float_dtype(w):
    scale = _protected(w.abs().amax(dim=1))
    return torch.round(w / scale[:, None]).clamp(-127, 127), scale


def inverse_scale(w):
    absmax = w.abs().amax(dim=1)
    inv = torch.where(absmax > 0, 127 / absmax, torch.ones_like(absmax))
    return torch.round(w * inv[:, None]).clamp(-127, 127).to(torch.int8), inv


def mutates_input(w):
    scale = _protected(w.abs().amax(dim=1))
    w /= scale[:, None]
    return w.round().clamp(-127, 127).to(torch.int8), scale


BAD = {"per_tensor": [per_tensor], "per_input_column": [per_input_column],
       "divide_by_128": [divide_by_128, divide_by_128_no_clamp], "divide_by_255": [divide_by_255],
       "no_rounding": [truncates, floors], "max_not_absmax": [max_not_absmax],
       "zero_row": [zero_row, zero_row_float], "float_dtype": [float_dtype],
       "inverse_scale": [inverse_scale], "mutates_input": [mutates_input]}


@pytest.mark.parametrize("key,impl", [(k, f) for k, fs in BAD.items() for f in fs], ids=lambda v: getattr(v, "__name__", v))
def test_diagnoses_each_misconception(key, impl):
    assert_diagnosed(check_quantize_per_channel(impl), key)


def test_named_misconceptions_are_all_tested():
    assert_all_tested("check_quantize_per_channel", BAD)
