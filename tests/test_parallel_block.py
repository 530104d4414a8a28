"""course_lib.parallel_block: the fused parallel block equals the course's unfused
Block(norm_placement="parallel") with copied weights, and both equal the formula
x + Attn(LN(x)) + FFN(LN(x)) written with PyTorch's own modules; same FLOPs, fewer matmuls."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from course_lib.blocks import transformer_block
from course_lib.config import ConfigError
from course_lib.parallel_block import FusedParallelBlock, linear_calls
from course_lib.kernels import from_scratch


def parallel_block(C=32, H=4, d_ff=None, seed=0, **kw):
    torch.manual_seed(seed)
    return transformer_block(C, H, d_ff or 4 * C, norm_placement="parallel", activation="gelu_tanh", **kw)


def torch_reference(block, x):
    """The parallel formula with torch's LayerNorm, SDPA and tanh-GELU."""
    attn, ffn, norm = block.attn, block.ffn, block.attn_norm
    h = F.layer_norm(x, (x.size(-1),), norm.weight, norm.bias, norm.eps)
    B, T, C = x.shape
    H = attn.n_heads
    q, k, v = (p(h).view(B, T, H, C // H).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
    return x + attn.o_proj(a) + ffn.down_proj(F.gelu(ffn.up_proj(h), approximate="tanh"))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("C,H,d_ff", [(32, 4, 128), (24, 3, 40)])
def test_fused_equals_unfused_parallel_block(C, H, d_ff, bias):
    block = parallel_block(C, H, d_ff, bias=bias).double()
    fused = FusedParallelBlock.from_block(block)
    x = torch.randn(2, 11, C, dtype=torch.float64)
    err = (fused(x, is_causal=True) - block(x, is_causal=True)).abs().max().item()
    print(f"fused vs unfused parallel block (float64): {err:.1e}")
    assert err <= 1e-12
    assert (block(x, is_causal=True) - torch_reference(block, x)).abs().max() <= 1e-12


def test_fused_equals_unfused_in_float32_and_with_a_padding_mask():
    block = parallel_block()
    fused = FusedParallelBlock.from_block(block)
    x = torch.randn(3, 9, 32)
    mask = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., 6:] = False
    err = (fused(x, mask=mask, is_causal=True) - block(x, mask=mask, is_causal=True)).abs().max().item()
    assert err <= 1e-6
    assert (fused(x) - block(x)).abs().max() <= 1e-6  # bidirectional too


def test_fused_block_has_the_same_gradients_for_the_input():
    block = parallel_block().double()
    fused = FusedParallelBlock.from_block(block)
    x1 = torch.randn(2, 7, 32, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    block(x1, is_causal=True).pow(2).sum().backward()
    fused(x2, is_causal=True).pow(2).sum().backward()
    assert (x1.grad - x2.grad).abs().max() <= 1e-10


def test_same_flops_fewer_matmuls():
    C = 32
    block, seq = parallel_block(C), transformer_block(C, 4, 4 * C, norm_placement="pre")
    fused = FusedParallelBlock.from_block(block)
    x = torch.randn(2, 16, C)
    flops = []
    for b in (seq, block, fused):
        with FlopCounterMode(display=False) as counter, from_scratch():  # the counter cannot see inside fused attention
            b(x, is_causal=True)
        flops.append(counter.get_total_flops())
    assert flops[0] == flops[1] == flops[2]
    assert linear_calls(block, x, is_causal=True) == [(C, C)] * 4 + [(4 * C, C), (C, 4 * C)]
    assert linear_calls(fused, x, is_causal=True) == [(3 * C + 4 * C, C), (C, C + 4 * C)]


def test_from_block_refuses_what_it_cannot_fuse():
    with pytest.raises(ValueError, match="parallel"):
        FusedParallelBlock.from_block(transformer_block(32, 4, 128, norm_placement="pre"))
    with pytest.raises(ValueError, match="n_kv_heads"):
        FusedParallelBlock.from_block(parallel_block(n_kv_heads=2))
    with pytest.raises(ValueError, match="FeedForward"):
        FusedParallelBlock.from_block(transformer_block(32, 4, 128, norm_placement="parallel", gated=True))
    with pytest.raises(ConfigError, match=r"FusedParallelBlock.d_model=30 is not divisible by n_heads=4: .*"
                                          r"\(e.g. d_model=32\)"):
        FusedParallelBlock(30, 4, 64)
    with pytest.raises(ConfigError, match="FusedParallelBlock.n_heads=0: expected a positive integer"):
        FusedParallelBlock(32, 0, 64)  # a clear message, not a ZeroDivisionError
    with pytest.raises(ConfigError, match="FusedParallelBlock.d_ff=0: expected a positive integer"):
        FusedParallelBlock(32, 4, 0)
