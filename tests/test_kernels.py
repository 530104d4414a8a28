"""The two paths of course_lib.kernels: PyTorch's fused kernels (the default) and the lessons'
from-scratch forms agree, forward and gradients: float64 within 1e-12, float32 within 1e-6.
Bad input raises the same error on both paths."""
import pytest
import torch

from course_lib import kernels
from course_lib.attention import CrossAttention, MultiHeadAttention, attend, causal_mask, padding_mask
from course_lib.ffn import ACTIVATIONS, FUSED, get_activation, make_ffn
from course_lib.kernels import from_scratch, fused
from course_lib.norms import LayerNorm, RMSNorm
from course_lib.positional import rope_cos_sin
from course_lib.positional_attention import PositionalAttention
from course_lib.kv_cache import KVCache

TOL = {torch.float64: 1e-12, torch.float32: 1e-6}
DTYPES = [torch.float64, torch.float32]


def both_paths(fn, *inputs):
    """fn(*inputs) on the fused and the from-scratch path -> [(output, grads of inputs), ...]."""
    results = []
    for scratch in (False, True):
        leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        with from_scratch(scratch):
            out = fn(*leaves)
        (out.double() * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        results.append((out.detach(), [None if t.grad is None else t.grad.clone() for t in leaves]))
    return results


def assert_paths_equal(fn, *inputs, dtype, module=None):
    if module is not None:
        module.zero_grad(set_to_none=True)
    (a, ga), (b, gb) = both_paths(fn, *inputs)
    tol = TOL[dtype]
    assert torch.isfinite(a).all()
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, a.abs().max().item()), f"forward differs by {err:.2e}"
    for x, y in zip(ga, gb):
        if x is not None:
            assert (x - y).abs().max().item() <= tol * max(1.0, x.abs().max().item())
    if module is not None:  # the parameters' gradients, accumulated over both passes, split by path
        grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
        assert grads, "no parameter received a gradient"
        module.zero_grad(set_to_none=True)
        with from_scratch():
            out = fn(*[t.detach() for t in inputs])
        (out.double() * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        scratch = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        for n, g in grads.items():
            fused_g = g - scratch[n]  # both passes accumulated into .grad
            err = (fused_g - scratch[n]).abs().max().item()
            assert err <= 10 * tol * max(1.0, scratch[n].abs().max().item()), f"{n}: gradients differ by {err:.2e}"


# --------------------------------------------------------------------------- the switch
def test_switch_is_read_at_call_time_nests_and_restores():
    assert fused()
    with from_scratch():
        assert not fused()
        with from_scratch(False):
            assert fused()
        assert not fused()
    assert fused()
    with pytest.raises(RuntimeError):
        with from_scratch():
            raise RuntimeError("boom")
    assert fused()  # restored after an exception
    with pytest.raises(TypeError, match="True or False"):
        with from_scratch("yes"):
            pass


def test_the_fused_path_really_calls_the_kernels(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    q = torch.randn(1, 2, 4, 8)
    attend(q, q, q, is_causal=True)
    assert calls == [1]
    with from_scratch():
        attend(q, q, q, is_causal=True)
    assert calls == [1]  # the from-scratch path never calls it
    assert kernels.fused()


# --------------------------------------------------------------------------- norms, activations
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [lambda: LayerNorm(24), lambda: LayerNorm(24, bias=False), lambda: RMSNorm(24, 1e-5)],
                         ids=["layernorm", "layernorm_nobias", "rmsnorm"])
def test_norms(make, dtype):
    torch.manual_seed(0)
    norm = make().to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        if getattr(norm, "bias", None) is not None:
            norm.bias.normal_()
    x = torch.randn(3, 5, 24, dtype=dtype) * 3 + 1
    assert_paths_equal(norm, x, dtype=dtype, module=norm)


def test_norms_in_bfloat16_agree_to_bfloat16_rounding():
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    for norm in (LayerNorm(64), RMSNorm(64)):
        a = norm(x)
        with from_scratch():
            b = norm(x)
        assert a.dtype == b.dtype  # bf16 for LayerNorm; RMSNorm multiplies by its float32 weight last, as HF does
        assert (a.float() - b.float()).abs().max() <= 2 ** -7 * a.float().abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations(name, dtype):
    x = torch.randn(200, dtype=dtype) * 4
    assert_paths_equal(get_activation(name), x, dtype=dtype)
    assert get_activation(name).from_scratch is ACTIVATIONS[name]
    assert set(FUSED) == set(ACTIVATIONS)


@pytest.mark.parametrize("gated,act", [(False, "gelu_tanh"), (False, "gelu"), (True, "silu"), (False, "relu")])
def test_ffn(gated, act):
    torch.manual_seed(0)
    ffn = make_ffn(16, 40, act, gated=gated).double()
    assert_paths_equal(ffn, torch.randn(2, 3, 16, dtype=torch.float64), dtype=torch.float64, module=ffn)


# --------------------------------------------------------------------------- attention
def _qkv(B, H, H_kv, T_q, T_k, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T_q, D, generator=g, dtype=dtype), torch.randn(B, H_kv, T_k, D, generator=g, dtype=dtype),
            torch.randn(B, H_kv, T_k, D, generator=g, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["plain", "causal", "padding", "padding+causal", "bias", "bias+causal+padding",
                                  "gqa", "mqa+causal", "cross_lengths", "fully_masked_row", "scale"])
def test_attend(case, dtype):
    B, H, T, D = 2, 4, 6, 8
    H_kv = {"gqa": 2, "mqa+causal": 1}.get(case, H)
    T_k = 9 if case == "cross_lengths" else T
    q, k, v = _qkv(B, H, H_kv, T, T_k, D, dtype)
    pad = padding_mask(torch.tensor([[1] * T_k, [1] * (T_k - 2) + [0] * 2]))  # (B, 1, 1, T_k)
    bias = torch.randn(1, H, T, T_k, dtype=dtype)
    kw = {"plain": {}, "causal": {"is_causal": True}, "padding": {"mask": pad},
          "padding+causal": {"mask": pad, "is_causal": True}, "bias": {"bias": bias},
          "bias+causal+padding": {"bias": bias, "mask": pad, "is_causal": True}, "gqa": {"mask": pad},
          "mqa+causal": {"is_causal": True}, "cross_lengths": {"mask": pad},
          "fully_masked_row": {"mask": torch.ones(B, 1, T, T_k, dtype=torch.bool).index_fill_(2, torch.tensor([1]), False)},
          "scale": {"scale": 1.0, "is_causal": True}}[case]
    assert_paths_equal(lambda q, k, v: attend(q, k, v, **kw), q, k, v, dtype=dtype)
    if case == "fully_masked_row":  # both paths: a query that may see nothing gets zeros
        assert attend(q, k, v, **kw)[:, :, 1].abs().max() == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_multi_head_attention_module(n_kv, dtype):
    torch.manual_seed(0)
    m = MultiHeadAttention(32, 4, n_kv_heads=n_kv).to(dtype)
    x = torch.randn(2, 7, 32, dtype=dtype)
    mask = padding_mask(torch.tensor([[1] * 7, [1] * 5 + [0] * 2]))
    assert_paths_equal(lambda x: m(x, mask, is_causal=True), x, dtype=dtype, module=m)


def test_positional_attention_with_rope_cache_and_window():
    torch.manual_seed(0)
    m = PositionalAttention(32, 4, n_kv_heads=2, bias=False).double()
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    outs = {}
    for scratch in (False, True):
        with from_scratch(scratch):
            cache, ys = KVCache(window=4), []
            for chunk in x.split([3, 1, 4, 2], dim=1):  # prompt, then pieces, through a rolling cache
                pos = torch.arange(cache.seq_len, cache.seq_len + chunk.size(1))
                rotary = tuple(t.double() for t in rope_cos_sin(pos, 8, 10000.0, "half"))
                ys.append(m(chunk, is_causal=True, rotary=rotary, cache=cache, window=4))
            outs[scratch] = torch.cat(ys, 1)
    assert (outs[False] - outs[True]).abs().max() <= 1e-12
    bias = torch.randn(1, 4, 10, 10, dtype=torch.float64)
    assert_paths_equal(lambda x: m(x, is_causal=True, bias=bias), x, dtype=torch.float64, module=m)


def test_cross_attention():
    torch.manual_seed(0)
    m = CrossAttention(16, 2).double()
    x, mem = torch.randn(2, 3, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    mask = padding_mask(torch.tensor([[1] * 5, [1, 1, 0, 0, 0]]))
    assert_paths_equal(lambda x, mem: m(x, mem, mask), x, mem, dtype=torch.float64, module=m)


# --------------------------------------------------------------------------- whole models
def _models():
    from course_lib.experiments import ExperimentConfig, ExperimentLM
    from course_lib.models import GPT, T5, Bert, Llama
    return {
        "gpt": lambda: GPT(vocab_size=50, max_positions=16, d_model=32, n_layers=2, n_heads=4),
        "llama_gqa": lambda: Llama(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                                   max_positions=16),
        "mistral_window": lambda: Llama(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, d_ff=48,
                                        max_positions=16, sliding_window=3),
        "bert": lambda: Bert(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_positions=16),
        "t5": lambda: T5(vocab_size=50, d_model=32, head_dim=8, d_ff=48, n_layers=2, n_heads=4, dropout=0.0),
        "alibi_postln_rms": lambda: ExperimentLM(ExperimentConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4,
                                                                  position="alibi", norm_placement="post",
                                                                  norm="rmsnorm")),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(_models()))
def test_whole_models(name, dtype):
    torch.manual_seed(0)
    model = _models()[name]().to(dtype).eval()
    ids = torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1] * 8, [1] * 6 + [0] * 2])

    def run(_):
        if name == "t5":
            return model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :5]).logits
        if name == "bert":
            return model(ids, mask).last_hidden_state
        if name == "alibi_postln_rms":
            return model(ids)
        return model(ids, mask).logits[0]  # the unpadded row: padded rows' last queries see only padding
    dummy = torch.zeros(1, dtype=dtype)
    assert_paths_equal(run, dummy, dtype=dtype, module=model)


# --------------------------------------------------------------------------- bad input, same errors
def _error(fn):
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - we compare what each path raises
        return type(err), str(err)
    return None


@pytest.mark.parametrize("bad", ["wrong_width", "int_mask", "float_mask_attend", "bad_heads", "norm_width",
                                 "unknown_activation", "causal_lengths"])
def test_bad_input_raises_the_same_error_on_both_paths(bad):
    m = MultiHeadAttention(16, 4)
    q = torch.randn(1, 4, 3, 4)
    fns = {"wrong_width": lambda: m(torch.randn(1, 3, 12)),
           "int_mask": lambda: m(torch.randn(1, 3, 16), torch.ones(3, 3, dtype=torch.long)),
           "float_mask_attend": lambda: attend(q, q, q, torch.zeros(3, 3)),
           "bad_heads": lambda: attend(q, torch.randn(1, 3, 3, 4), torch.randn(1, 3, 3, 4)),
           "norm_width": lambda: RMSNorm(8)(torch.randn(2, 6)),
           "unknown_activation": lambda: get_activation("gelu_fast")(torch.randn(3)),
           "causal_lengths": lambda: attend(q, torch.randn(1, 4, 5, 4), torch.randn(1, 4, 5, 4), is_causal=True)}
    fused_err = _error(fns[bad])
    with from_scratch():
        scratch_err = _error(fns[bad])
    assert fused_err is not None and fused_err == scratch_err
    assert len(fused_err[1]) > 30  # a sentence that says what to do, not a bare assertion


def test_causal_mask_helper_matches_is_causal():
    q, k, v = _qkv(1, 2, 2, 5, 5, 4, torch.float64)
    assert torch.allclose(attend(q, k, v, is_causal=True), attend(q, k, v, causal_mask(5)), atol=1e-12)


def test_bf16_attention_on_the_cpu_runs_in_float32_when_it_will_be_backpropagated():
    """The fused path computes bf16 CPU attention in float32 when gradients are on (PyTorch's
    bf16 CPU flash-attention backward is several times slower): same result as float32 attention
    rounded to bf16, gradients flow back in bf16, and autocast does not undo the upcast."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 8, generator=g) for _ in range(3))
    mask = torch.rand(1, 1, 9, 9, generator=g) > 0.3
    for kwargs in (dict(is_causal=True), dict(mask=mask), dict(bias=torch.randn(1, 4, 9, 9, generator=g))):
        want = attend(q, k, v, **kwargs).bfloat16()
        qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = attend(qb, kb, vb, **kwargs)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), atol=0.02, rtol=0.02)
        got.float().sum().backward()
        assert qb.grad.dtype == torch.bfloat16 and torch.isfinite(qb.grad.float()).all()
        with torch.no_grad():  # inference: PyTorch's bf16 kernel as it is
            assert attend(qb, kb, vb, **kwargs).dtype == torch.bfloat16
