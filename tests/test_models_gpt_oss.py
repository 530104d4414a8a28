"""course_lib.models.gpt_oss and course_lib.attention_sinks: attention with sinks against PyTorch's
SDPA, the clamped-SwiGLU MoE against Hugging Face's GptOssMLP, the whole model against
GptOssForCausalLM with copied weights (fp32 logits, padded batches), cached decoding with rolling
caches on the sliding layers, the round trips, the published sizes and the config errors."""
import math

import pytest
import torch
import torch.nn.functional as F
import transformers as hf
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

import course_lib.interop.gemma_gptoss  # noqa: F401  registers the gpt_oss family
from course_lib.attention_sinks import SinkAttention, sink_attention
from course_lib.config import ConfigError
from course_lib.interop import from_hf, to_hf
from course_lib.interop.gemma_gptoss import experts_from_hf, experts_to_hf
from course_lib.models.gemma3 import FULL, SLIDING
from course_lib.models.gpt_oss import GptOss, GptOssConfig, GptOssMoE, gpt_oss_20b_config, gpt_oss_params
from course_lib.positional import RopeScaling

from helpers import (INTEROP_VOCAB as V, assert_round_trips, cached_decoding_error, greedy_equals_hf_generate,
                     ids_and_mask, logit_error, to_hf_error)

TOL = 1e-5  # fp32 logits, max abs difference

S, F_ = SLIDING, FULL
ROPE = {"rope_type": "default", "rope_theta": 150000.0}
YARN = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
        "original_max_position_embeddings": 6, "rope_theta": 150000.0}  # the release's form, on 13 tokens
BASE = dict(vocab_size=V, hidden_size=24, intermediate_size=16, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=3,
            max_position_embeddings=64, rope_parameters=ROPE)
CASES = {
    "GQA 4/2, window 3, top-2 of 4 experts": {},
    "clamps active (limit 0.5), MHA, top-1, tied": dict(swiglu_limit=0.5, num_key_value_heads=4,
                                                        num_experts_per_tok=1, tie_word_embeddings=True),
    "full, sliding, sliding, full; no attention bias; alpha 1.0": dict(layer_types=[F_, S, S, F_],
                                                                       attention_bias=False, swiglu_alpha=1.0),
    "YaRN x4 over 6 positions, truncate=False": dict(rope_parameters=YARN),
}


def perturb(model, seed=0):
    """Every weight drawn anew (HF's experts start as torch.empty): norm gains near 1, sinks and
    biases of either sign, so a swapped or missing tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if ("sinks" in name or "experts" in name or "router" in name) else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name else 0.0))
    return model.eval()


def hf_gpt_oss(seed=0, **kw) -> hf.GptOssForCausalLM:
    torch.manual_seed(seed)
    return perturb(hf.GptOssForCausalLM(hf.GptOssConfig(**(BASE | kw))), seed)


# --------------------------------------------------------------------------- attention sinks
def test_sink_attention_is_sdpa_scaled_by_the_mass_left_for_the_keys():
    """softmax over [scores, s] = softmax(scores) · σ(logsumexp(scores) - s), so the output is
    PyTorch's SDPA times that factor; with s = -inf the sink vanishes and it is SDPA itself."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    sinks = torch.randn(4) * 2
    mask = torch.ones(5, 5, dtype=torch.bool).tril()  # (T, T)
    y, w = sink_attention(q, k, v, sinks, mask, return_weights=True)
    plain = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)  # (B, H, T, D)
    scores = (q @ k.repeat_interleave(2, dim=1).transpose(-2, -1) / math.sqrt(8)).masked_fill(~mask, -math.inf)
    kept = torch.sigmoid(torch.logsumexp(scores, -1, keepdim=True) - sinks.view(1, 4, 1, 1))  # (B, H, T, 1)
    assert (y - plain * kept).abs().max() <= 1e-6
    assert (w.sum(-1, keepdim=True) - kept).abs().max() <= 1e-6 and (kept < 1).all()
    y_no_sink = sink_attention(q, k, v, torch.full((4,), -math.inf), mask)
    assert (y_no_sink - plain).abs().max() <= 1e-6


def test_a_large_sink_lets_a_head_attend_to_nothing():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    y = sink_attention(q, k, v, torch.tensor([30.0, -30.0]))
    assert y[:, 0].abs().max() < 1e-9  # head 0: all weight on the sink, output 0
    assert (y[:, 1] - F.scaled_dot_product_attention(q, k, v)[:, 1]).abs().max() < 1e-6


def test_sink_attention_layer_records_its_weights_and_checks_the_sinks():
    layer = SinkAttention(16, 4, n_kv_heads=2).eval()
    x = torch.randn(2, 5, 16)
    y, w = layer(x, is_causal=True, return_weights=True)
    assert y.shape == (2, 5, 16) and w.shape == (2, 4, 5, 5)
    assert torch.all(w.triu(1) == 0)  # causal
    assert torch.all(w.sum(-1) < 1)  # some weight always goes to the sink (0 = one extra key)
    with pytest.raises(ValueError, match=r"sinks must hold one logit per query head, shape \(4,\)"):
        sink_attention(torch.randn(1, 4, 2, 4), torch.randn(1, 4, 2, 4), torch.randn(1, 4, 2, 4), torch.zeros(2))


# --------------------------------------------------------------------------- the MoE
def test_moe_equals_hugging_face_gpt_oss_mlp():
    """Router with bias, softmax over the top-k logits, clamped SwiGLU with the (up + 1) term."""
    config = hf.GptOssConfig(**(BASE | dict(swiglu_limit=0.7)))
    theirs = perturb(GptOssMLP(config))
    ours = GptOssMoE(24, 16, 4, 2, alpha=config.swiglu_alpha, limit=config.swiglu_limit)
    state = theirs.state_dict()
    experts = experts_from_hf({k.removeprefix("experts."): v for k, v in state.items() if k.startswith("experts.")})
    ours.load_state_dict({"gate.weight": state["router.weight"], "gate.bias": state["router.bias"]}
                         | {"experts." + k: v for k, v in experts.items()})
    x = torch.randn(3, 7, 24) * 2
    with torch.no_grad():
        want, _ = theirs(x)
        got = ours(x)
        pre = ours.experts[0].up_proj(x)
    err = (got - want).abs().max().item()
    print(f"GPT-OSS MoE vs GptOssMLP: max abs error {err:.1e}")
    assert err <= TOL and want.std() > 0.1
    assert (pre.abs() > 0.7).float().mean() > 0.1  # the clamp really acts on this input
    fused = experts_to_hf(experts)
    assert all(torch.equal(fused[k], state["experts." + k]) for k in fused)


# --------------------------------------------------------------------------- the model
@pytest.mark.parametrize("name", CASES)
def test_logits_match_hugging_face(name):
    theirs = hf_gpt_oss(**CASES[name])
    ours = from_hf(theirs)
    assert isinstance(ours, GptOss)
    ids, mask = ids_and_mask(V)
    for am in (None, mask):
        err = logit_error(ours, theirs, ids, am)
        print(f"GPT-OSS, {name}, padded={am is not None}: max abs logit error {err:.1e}")
        assert err <= TOL


def test_sinks_and_layer_types_matter():
    """Zeroing the sinks or swapping the layer types moves the logits far beyond the tolerance."""
    theirs = hf_gpt_oss()
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = theirs(input_ids=ids).logits
        ours = from_hf(theirs)
        for block in ours.blocks:
            block.attn.sinks.zero_()
        assert (ours(ids).logits - want).abs().max() > 1e-3
        ours = from_hf(theirs)
        ours.config.layer_types = (F_, S, F_, S)
        assert (ours(ids).logits - want).abs().max() > 1e-3


def test_cached_decoding_equals_the_full_forward_with_rolling_caches():
    ids, mask = ids_and_mask(V)
    err, cache = cached_decoding_error(from_hf(hf_gpt_oss()), ids, mask)
    print(f"GPT-OSS cached decoding vs full forward (padded batch): max abs logit error {err:.1e}")
    assert err <= TOL
    assert [c.k.size(2) for c in cache] == [3, ids.size(1), 3, ids.size(1)]  # rolling on the sliding layers


def test_cached_decoding_matches_hugging_face_generate():
    theirs = hf_gpt_oss()
    assert greedy_equals_hf_generate(from_hf(theirs), theirs)


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", [list(CASES)[0], list(CASES)[1], list(CASES)[3]])
def test_round_trips(name):
    assert_round_trips(hf_gpt_oss(**CASES[name]))


def test_ours_to_hf_to_ours():
    """(d_ff a multiple of 4: HF's CPU experts use torch._grouped_mm, whose rows must be 16-byte aligned.)
    The default rope_scaling is the release's YaRN x32 over 4096 positions."""
    torch.manual_seed(0)
    ours = GptOss(GptOssConfig(vocab_size=V, d_model=24, n_layers=3, n_heads=4, n_kv_heads=1, head_dim=6, d_ff=8,
                               n_experts=3, top_k=2, sliding_window=2, max_positions=64, layer_types=(S, F_, S)))
    err = to_hf_error(ours)
    print(f"GPT-OSS to_hf vs ours: max abs logit error {err:.1e}")
    assert err <= TOL


def test_yarn_matters_and_round_trips():
    """The YaRN case above really differs from plain RoPE, and its parameters survive to_hf."""
    theirs = hf_gpt_oss(rope_parameters=YARN)
    ours = from_hf(theirs)
    assert ours.config.rope_scaling == RopeScaling("yarn", 4.0, original_max_positions=6, truncate=False)
    ids = torch.randint(0, V, (2, 13), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = theirs(input_ids=ids).logits
        plain = from_hf(theirs)
        plain.config.rope_scaling = None
        assert (plain(ids).logits - want).abs().max() > 1e-3
    assert from_hf(to_hf(ours)).config == ours.config
    assert GptOssConfig().rope_scaling == RopeScaling("yarn", 32.0, original_max_positions=4096, truncate=False)


def test_unsupported_hf_settings_are_refused():
    with pytest.raises(ValueError, match="rope_type='dynamic' is not supported"):
        from_hf(hf_gpt_oss(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 150000.0}))
    with pytest.raises(ValueError, match="attention_dropout=0.1: course_lib does not implement it"):
        from_hf(hf_gpt_oss(attention_dropout=0.1))


# --------------------------------------------------------------------------- sizes
def test_param_formula_equals_an_instantiated_model():
    theirs = hf_gpt_oss()
    assert gpt_oss_params(from_hf(theirs).config).total == sum(p.numel() for p in theirs.parameters())
    cfg = GptOssConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=6, d_ff=10,
                       n_experts=5, top_k=2, attention_bias=False, tie_weights=True)
    assert gpt_oss_params(cfg).total == sum(p.numel() for p in GptOss(cfg).parameters())


def test_published_sizes():
    """OpenAI, "gpt-oss-120b & gpt-oss-20b Model Card" (arXiv:2508.10925), Table 1: 120b has 116.83B
    parameters, 5.13B active per token; 20b has 20.91B, 3.61B active. The card's active count
    leaves out the token-embedding table (the unembedding stays in)."""
    for cfg, total, active in ((GptOssConfig(), 116.83, 5.13), (gpt_oss_20b_config(), 20.91, 3.61)):
        n = gpt_oss_params(cfg)
        assert round(n.total / 1e9, 2) == total
        assert round((n.active - n.embeddings) / 1e9, 2) == active
    assert gpt_oss_params(GptOssConfig()).total == 116_829_156_672


# --------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("kw, match", [
    (dict(layer_types=(S, F_, S)), r"GptOssConfig.layer_types has 3 entries but n_layers=2"),
    (dict(layer_types=(S, "banded")), r"layer_types holds \['banded'\]: each entry must be one of"),
    (dict(sliding_window=None), r"sliding_window=None but layer_types has 'sliding_attention' layers"),
    (dict(top_k=5), r"top_k=5 is more than n_experts=4"),
    (dict(head_dim=5), r"head_dim=5: RoPE rotates pairs"),
    (dict(swiglu_limit=0.0), r"swiglu_limit=0.0: expected a number > 0"),
    (dict(n_experts=0), r"n_experts=0: expected a positive integer"),
])
def test_bad_configs_say_how_to_fix(kw, match):
    base = dict(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=6, d_ff=10, n_experts=4,
                top_k=2, sliding_window=4)
    with pytest.raises(ConfigError, match=match):
        GptOssConfig(**(base | kw))
