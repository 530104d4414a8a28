"""course_lib.qk_norm: QKNormAttention equal to Hugging Face's Qwen3 (per-head) and OLMo 2 (whole
projection) attention with copied weights; the logit bound QK-norm gives; the max-logit recorder;
the high-learning-rate demo. Tiny random configs, offline."""
import math

import pytest
import torch
import transformers as hf
from transformers.models.olmo2.modeling_olmo2 import Olmo2Attention, Olmo2RotaryEmbedding
from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3RotaryEmbedding

from course_lib.config import ConfigError
from course_lib.positional import rope_cos_sin
from course_lib.positional_attention import PositionalAttention
from course_lib.qk_norm import QKNormAttention, max_attention_logit

C, H, H_KV, D, T = 32, 4, 2, 8, 7


def _hf_attention(kind: str):
    """A Qwen3 ("head") or OLMo 2 ("projection") attention layer with every weight off its default."""
    cfg_cls, attn_cls, rope_cls = ((hf.Qwen3Config, Qwen3Attention, Qwen3RotaryEmbedding) if kind == "head"
                                   else (hf.Olmo2Config, Olmo2Attention, Olmo2RotaryEmbedding))
    cfg = cfg_cls(hidden_size=C, num_attention_heads=H, num_key_value_heads=H_KV, head_dim=D, rms_norm_eps=1e-6,
                  attention_bias=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    cfg._attn_implementation = "sdpa"  # no mask given: causal, as in the model
    torch.manual_seed(0)
    attn = attn_cls(cfg, layer_idx=0).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    return attn, rope_cls(cfg)


def _ours_from(theirs, kind: str) -> QKNormAttention:
    ours = QKNormAttention(C, H, qk_norm=kind, eps=1e-6, n_kv_heads=H_KV, head_dim=D).eval()
    ours.load_state_dict(theirs.state_dict())  # q_proj k_proj v_proj o_proj q_norm k_norm: the same names
    return ours


@pytest.mark.parametrize("kind", ["head", "projection"])
def test_qk_norm_attention_equals_transformers(kind):
    theirs, rope = _hf_attention(kind)
    ours = _ours_from(theirs, kind)
    assert ours.q_norm.weight.shape == ((D,) if kind == "head" else (H * D,))
    assert ours.k_norm.weight.shape == ((D,) if kind == "head" else (H_KV * D,))
    x = torch.randn(2, T, C, generator=torch.Generator().manual_seed(1))
    positions = torch.arange(T)[None].expand(2, T)  # (B, T)
    with torch.no_grad():
        expected = theirs(x, position_embeddings=rope(x, positions), attention_mask=None)[0]
        got = ours(x, is_causal=True, rotary=rope_cos_sin(torch.arange(T), D, 10000.0, "half"))
    err = (got - expected).abs().max().item()
    print(f"QK-norm ({kind}) attention vs transformers {type(theirs).__name__}: max abs error {err:.1e}")
    assert err <= 1e-6


def test_the_two_placements_differ_and_none_is_plain_attention():
    """Per-head and whole-projection norms are different functions (one RMS per head vs one per
    token), and qk_norm=None is PositionalAttention with the same weights."""
    torch.manual_seed(0)
    head = QKNormAttention(C, H, qk_norm="head", n_kv_heads=H_KV).eval()
    proj = QKNormAttention(C, H, qk_norm="projection", n_kv_heads=H_KV).eval()
    plain = QKNormAttention(C, H, qk_norm=None, n_kv_heads=H_KV).eval()
    ref = PositionalAttention(C, H, n_kv_heads=H_KV, bias=False).eval()
    shared = {k: v for k, v in head.state_dict().items() if "norm" not in k}
    proj.load_state_dict(shared, strict=False)
    plain.load_state_dict(shared)
    ref.load_state_dict(shared)
    assert plain.q_norm is None and plain.k_norm is None
    x = torch.randn(2, T, C) * torch.linspace(0.1, 3.0, C)  # features of very different scales
    with torch.no_grad():
        assert (head(x, is_causal=True) - proj(x, is_causal=True)).abs().max() > 1e-3
        assert torch.equal(plain(x, is_causal=True), ref(x, is_causal=True))


@pytest.mark.parametrize("kind", ["head", "projection"])
def test_qk_norm_bounds_the_logits_whatever_the_input_scale(kind):
    """With unit gains every head's q and k have RMS at most 1 (per head, or over all heads, so
    |q|, |k| <= sqrt(H·D) at worst), so the logit cannot follow the input's scale; without the
    norms it grows with the square of it."""
    torch.manual_seed(0)
    normed = QKNormAttention(C, H, qk_norm=kind, n_kv_heads=H_KV).eval()
    plain = QKNormAttention(C, H, qk_norm=None, n_kv_heads=H_KV).eval()
    plain.load_state_dict({k: v for k, v in normed.state_dict().items() if "norm" not in k})
    bound = math.sqrt(D) if kind == "head" else math.sqrt(H * D * H_KV * D) / math.sqrt(D)  # Cauchy-Schwarz
    for layer in (normed, plain):
        layer.max_logits = []
    for scale in (1.0, 100.0, 10000.0):
        x = torch.randn(2, T, C, generator=torch.Generator().manual_seed(2)) * scale
        with torch.no_grad():
            normed(x, is_causal=True)
            plain(x, is_causal=True)
    print(f"max logits, {kind} QK-norm: {[round(v, 2) for v in normed.max_logits]}, "
          f"none: {[f'{v:.3g}' for v in plain.max_logits]}")
    assert max(normed.max_logits) <= bound + 1e-4
    assert normed.max_logits[2] == pytest.approx(normed.max_logits[0], rel=1e-3)  # scale-invariant
    assert plain.max_logits[2] > 1e7 * plain.max_logits[0] > 0  # quadratic in the scale


def test_max_attention_logit_equals_the_masked_scores():
    """An independent reference: eager scores with an explicit causal mask and repeated kv heads."""
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, H, 5, D, generator=g), torch.randn(2, H_KV, 9, D, generator=g)  # queries = last 5 of 9
    k_full = k.repeat_interleave(H // H_KV, dim=1)  # (2, H, 9, D)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k_full) / math.sqrt(D)  # (2, H, 5, 9)
    causal = torch.arange(9)[None, :] <= torch.arange(4, 9)[:, None]  # (5, 9) key position <= query position
    assert max_attention_logit(q, k, is_causal=True) == pytest.approx(scores[..., causal].max().item(), abs=1e-6)
    pad = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    pad[0, ..., :3] = False  # row 0: the first three keys are padding
    allowed = causal & pad  # (2, 1, 5, 9)
    expected = scores.masked_fill(~allowed, -math.inf).max().item()
    assert max_attention_logit(q, k, mask=pad, is_causal=True, scale=None) == pytest.approx(expected, abs=1e-6)
    assert max_attention_logit(q, k, scale=2.0) == pytest.approx(2 * math.sqrt(D) * scores.max().item(), rel=1e-6)


def test_recording_leaves_the_output_unchanged_and_works_with_a_cache():
    from course_lib.kv_cache import KVCache
    torch.manual_seed(0)
    attn = QKNormAttention(C, H, n_kv_heads=H_KV).eval()
    x = torch.randn(1, T, C)
    rot = rope_cos_sin(torch.arange(T), attn.head_dim, 10000.0, "half")
    with torch.no_grad():
        before = attn(x, is_causal=True, rotary=rot)
        attn.max_logits = []
        after = attn(x, is_causal=True, rotary=rot)
        cache = KVCache()
        steps = [attn(x[:, t:t + 1], is_causal=True, cache=cache,
                      rotary=tuple(r[t:t + 1] for r in rot)) for t in range(T)]  # one token at a time
    assert torch.equal(before, after) and len(attn.max_logits) == 1 + T
    assert (torch.cat(steps, dim=1) - before).abs().max() <= 1e-6
    assert max(attn.max_logits[1:]) == pytest.approx(attn.max_logits[0], abs=1e-5)  # the same scores, row by row


def test_bad_placement_is_explained():
    with pytest.raises(ConfigError, match=r"qk_norm='heads'.*'head'.*'projection'.*None"):
        QKNormAttention(C, H, qk_norm="heads")


def test_high_learning_rate_demo_shows_logit_growth_without_qk_norm():
    from course_lib.models.qwen3 import qk_norm_logit_growth
    curves = qk_norm_logit_growth()
    steps = len(curves["steps"])
    assert set(curves["max_logit"]) == {"qk-norm", "none"}
    assert all(len(v) == steps for v in (*curves["max_logit"].values(), *curves["loss"].values()))
    normed, plain = curves["max_logit"]["qk-norm"], curves["max_logit"]["none"]
    print(f"max attention logit after {steps} steps: QK-norm {normed[-1]:.1f}, none {plain[-1]:.1f}")
    assert plain[-1] > 10 * normed[-1]
    assert plain[-1] > 10 * plain[0]  # it grew during training, not from the start
