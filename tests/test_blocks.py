"""course_lib.blocks: one Block, three norm placements, checked against PyTorch's own
nn.TransformerEncoderLayer / nn.TransformerDecoderLayer (norm_first=False is post-LN,
True is pre-LN) with copied weights, and the parallel block against its formula."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from course_lib.blocks import (Block, BlockConfig, TinyTransformer, per_layer_grad_norms, reverse_task,
                               transformer_block)
from course_lib.config import ConfigError
from course_lib.ffn import FeedForward, GatedFeedForward
from course_lib.norms import LayerNorm, RMSNorm

C, H, FF = 32, 4, 64


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from the encoder output (memory)."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj, self.k_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.v_proj, self.o_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x, memory, mask=None):
        B, T, C_ = x.shape
        S, D = memory.size(1), C_ // self.n_heads
        q = self.q_proj(x).view(B, T, self.n_heads, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(memory).view(B, S, self.n_heads, D).transpose(1, 2)  # (B, H, S, D)
        v = self.v_proj(memory).view(B, S, self.n_heads, D).transpose(1, 2)  # (B, H, S, D)
        y = scaled_dot_product_attention(q, k, v, mask).transpose(1, 2).reshape(B, T, C_)  # (B, T, C)
        return self.o_proj(y)


def _copy_attn(ours, theirs: nn.MultiheadAttention):
    theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
    theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    theirs.out_proj.weight.copy_(ours.o_proj.weight)
    theirs.out_proj.bias.copy_(ours.o_proj.bias)


def _copy_norm_ffn(block, ref, norms):
    ref.linear1.load_state_dict(block.ffn.up_proj.state_dict())
    ref.linear2.load_state_dict(block.ffn.down_proj.state_dict())
    for ours, name in zip(norms, ("norm1", "norm2", "norm3")):
        getattr(ref, name).load_state_dict(ours.state_dict())


def _randomise_norms(block, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in block.modules():
        if isinstance(m, (LayerNorm, RMSNorm)):
            for p in m.parameters():
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("placement,norm_first", [("post", False), ("pre", True)])
def test_encoder_block_matches_nn_transformer_encoder_layer(placement, norm_first):
    torch.manual_seed(0)
    block = transformer_block(C, H, FF, norm_placement=placement).eval()
    ref = nn.TransformerEncoderLayer(C, H, FF, dropout=0.0, activation="gelu", batch_first=True,
                                     norm_first=norm_first).eval()
    x = torch.randn(2, 7, C)
    with torch.no_grad():
        _randomise_norms(block)
        _copy_attn(block.attn, ref.self_attn)
        _copy_norm_ffn(block, ref, [block.attn_norm, block.ffn_norm])
        worst = 0.0
        for mask in (None, causal_mask(7)):
            ours = block(x, mask=mask)
            theirs = ref(x, src_mask=None if mask is None else ~mask)  # torch: True = blocked
            worst = max(worst, (ours - theirs).abs().max().item())
    print(f"Block({placement}) vs nn.TransformerEncoderLayer(norm_first={norm_first}): max abs error {worst:.2e}")
    assert worst <= 1e-5


@pytest.mark.parametrize("placement,norm_first", [("post", False), ("pre", True)])
def test_decoder_block_with_cross_attention_matches_nn_transformer_decoder_layer(placement, norm_first):
    torch.manual_seed(0)
    block = Block(MultiHeadAttention(C, H), FeedForward(C, FF, "relu"), C, norm_placement=placement,
                  cross_attn=CrossAttention(C, H)).eval()
    ref = nn.TransformerDecoderLayer(C, H, FF, dropout=0.0, activation="relu", batch_first=True,
                                     norm_first=norm_first).eval()
    x, memory = torch.randn(2, 5, C), torch.randn(2, 9, C)
    with torch.no_grad():
        _randomise_norms(block)
        _copy_attn(block.attn, ref.self_attn)
        _copy_attn(block.cross_attn, ref.multihead_attn)
        _copy_norm_ffn(block, ref, [block.attn_norm, block.cross_attn_norm, block.ffn_norm])
        ours = block(x, memory=memory, is_causal=True)
        theirs = ref(x, memory, tgt_mask=~causal_mask(5), tgt_is_causal=True)
        err = (ours - theirs).abs().max().item()
    print(f"decoder Block({placement}) vs nn.TransformerDecoderLayer: max abs error {err:.2e}")
    assert err <= 1e-5


def test_memory_and_cross_attn_must_come_together():
    dec = Block(MultiHeadAttention(C, H), FeedForward(C, FF), C, cross_attn=CrossAttention(C, H))
    enc = transformer_block(C, H, FF)
    x = torch.randn(1, 3, C)
    with pytest.raises(ValueError, match="it is missing"):
        dec(x)
    with pytest.raises(ValueError, match="this one has none"):
        enc(x, memory=x)


@pytest.mark.parametrize("shared", [True, False])
def test_parallel_block_is_x_plus_attn_plus_ffn(shared):
    torch.manual_seed(0)
    attn, ffn = MultiHeadAttention(C, H, bias=False), GatedFeedForward(C, FF)
    block = Block(attn, ffn, C, norm_placement="parallel", norm="rmsnorm", shared_parallel_norm=shared).eval()
    with torch.no_grad():
        _randomise_norms(block)
    x = torch.randn(2, 6, C)
    n2 = block.attn_norm if shared else block.ffn_norm
    expected = x + attn(block.attn_norm(x), is_causal=True) + ffn(n2(x))
    assert (block.ffn_norm is None) == shared
    assert torch.allclose(block(x, is_causal=True), expected, atol=1e-6)


def test_pre_ln_block_by_hand_with_rmsnorm_and_swiglu():
    torch.manual_seed(0)
    attn, ffn = MultiHeadAttention(C, H, n_kv_heads=2, bias=False), GatedFeedForward(C, FF)
    block = Block(attn, ffn, C, norm="rmsnorm")
    x = torch.randn(2, 6, C)
    h = x + attn(block.attn_norm(x), is_causal=True)
    assert torch.allclose(block(x, is_causal=True), h + ffn(block.ffn_norm(h)), atol=1e-6)


def test_attention_returning_a_tuple_is_accepted():
    class WithWeights(MultiHeadAttention):
        def forward(self, x, **kw):
            return super().forward(x, return_weights=True, **kw)

    torch.manual_seed(0)
    a = WithWeights(C, H)
    b = Block(a, FeedForward(C, FF), C)
    x = torch.randn(1, 4, C)
    assert b(x).shape == (1, 4, C)


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm_placement="sandwich"), r"norm_placement='sandwich': expected one of \('pre', 'post', 'parallel'\)"),
    (dict(norm="batchnorm"), "norm='batchnorm': expected one of"),
    (dict(norm_placement="parallel", cross_attention=True), "a 'parallel' block has no cross-attention"),
    (dict(dropout=-0.1), "dropout=-0.1"),
])
def test_bad_block_config_says_what_and_how_to_fix(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BlockConfig(**kwargs)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    b = transformer_block(C, H, FF, dropout=0.5)
    x = torch.randn(2, 5, C)
    b.eval()
    assert torch.equal(b(x), b(x))
    b.train()
    assert not torch.equal(b(x), b(x))


def test_tiny_transformer_and_grad_norms():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = reverse_task(4, 6, 10, g)
    assert x.shape == y.shape == (4, 6) and torch.equal(y, x.flip(1))
    for placement in ("pre", "post", "parallel"):
        model = TinyTransformer(10, 6, 16, 3, 2, norm_placement=placement, causal=placement == "pre")
        logits = model(x)
        assert logits.shape == (4, 6, 10)
        with pytest.raises(ValueError, match="call loss.backward"):
            per_layer_grad_norms(model)
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()  # (B*T, V)
        norms = per_layer_grad_norms(model)
        assert len(norms) == 3 and all(math.isfinite(n) and n > 0 for n in norms)
    assert isinstance(TinyTransformer(10, 6, 16, 2, 2, norm_placement="post").final_norm, nn.Identity)
