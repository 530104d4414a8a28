"""course_lib.models.gemma3: Gemma 3 (text) against Hugging Face's Gemma3ForCausalLM with copied
weights (fp32 logits, padded batches), cached decoding with rolling caches on the local layers,
the from_hf / to_hf round trips, the published sizes and the config errors. Tiny configs, offline."""
import copy

import pytest
import torch
import transformers as hf
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm, Gemma3TextScaledWordEmbedding

import course_lib.interop.gemma_gptoss  # noqa: F401  registers the gemma3 family
from course_lib.config import ConfigError
from course_lib.interop import from_hf
from course_lib.models.gemma3 import (FULL, SLIDING, Gemma3, Gemma3Config, GemmaRMSNorm, embedding_scale,
                                      gemma3_1b_config, gemma3_params, interleaved_layer_types)
from course_lib.positional import RopeScaling

from helpers import (INTEROP_VOCAB, assert_round_trips, cached_decoding_error, greedy_equals_hf_generate,
                     ids_and_mask, logit_error, to_hf_error)

V = INTEROP_VOCAB
TOL = 1e-5
S, F = SLIDING, FULL
BASE = dict(vocab_size=V, hidden_size=24, intermediate_size=40, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=10, sliding_window=3, max_position_embeddings=64,
            layer_types=[S, F, S, F])
CASES = {
    "GQA 4/2, window 3, tied": {},
    "6 layers 5:1 (the default pattern), MQA, untied, soft-capped logits": dict(
        num_hidden_layers=6, layer_types=None, num_key_value_heads=1, tie_word_embeddings=False,
        final_logit_softcapping=2.0),
    "global RoPE linear x4 on base 1e6, local base 1e4, head_dim 12": dict(
        head_dim=12, rope_parameters={F: {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                                      S: {"rope_type": "default", "rope_theta": 1e4}}),
    "all full layers, attention bias": dict(layer_types=[F] * 4, attention_bias=True),
}


def hf_gemma3(seed=0, **kw) -> hf.Gemma3ForCausalLM:
    """A tiny Gemma3ForCausalLM with every weight moved off its initial value (norm weights off 0)."""
    torch.manual_seed(seed)
    model = hf.Gemma3ForCausalLM(hf.Gemma3TextConfig(**(BASE | kw))).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


# ------------------------------------------------ shared with tests/test_models_gpt_oss.py (same checks, other model)
# --------------------------------------------------------------------------- parity with HF
@pytest.mark.parametrize("name", CASES)
def test_logits_match_hugging_face(name):
    theirs = hf_gemma3(**CASES[name])
    ours = from_hf(theirs)
    assert isinstance(ours, Gemma3)
    ids, mask = ids_and_mask(V)
    for am in (None, mask):
        err = logit_error(ours, theirs, ids, am)
        print(f"Gemma 3, {name}, padded={am is not None}: max abs logit error {err:.1e}")
        assert err <= TOL


def test_each_gemma_specific_part_matters():
    """Undo one Gemma detail at a time in our copy: the logits move far beyond the tolerance, so
    the parity above really tests each of them."""
    theirs = hf_gemma3(**CASES["global RoPE linear x4 on base 1e6, local base 1e4, head_dim 12"],
                       final_logit_softcapping=1.0)
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = theirs(input_ids=ids).logits
        variants = {
            "layer types swapped": dict(layer_types=(F, S, F, S)),
            "one RoPE base": dict(rope_local_theta=1e6),
            "no RoPE scaling on the global layers": dict(rope_scaling=None),
            "scale 1/sqrt(head_dim)": dict(query_pre_attn_scalar=12),
            "no soft-capping": dict(final_logit_softcapping=None),
        }
        original = from_hf(theirs)
        for what, change in variants.items():
            ours = copy.deepcopy(original)
            ours.config = Gemma3Config(**(vars(ours.config) | change))
            for block in ours.blocks:
                block.attn.scale = ours.config.query_pre_attn_scalar ** -0.5
            err = (ours(ids).logits - want).abs().max().item()
            print(f"{what}: max abs logit error {err:.2e}")
            assert err > 1e-3, what


def test_gemma_rmsnorm_is_hugging_faces_in_float32_and_bfloat16():
    torch.manual_seed(0)
    theirs, ours = Gemma3RMSNorm(16, eps=1e-6), GemmaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        theirs.weight.normal_()
        ours.weight.copy_(theirs.weight)
    x = torch.randn(3, 5, 16) * 4
    assert (ours(x) - theirs(x)).abs().max() <= 1e-6
    xb = x.bfloat16()  # Gemma multiplies by (1 + w) in float32 and casts after: both round once
    assert torch.equal(ours.bfloat16()(xb), theirs.bfloat16()(xb))
    assert torch.equal(GemmaRMSNorm(16)(x), torch.nn.RMSNorm(16, eps=1e-6)(x))  # w = 0: a gain of 1


def test_embeddings_are_scaled_by_sqrt_d_model_in_the_embedding_dtype():
    assert embedding_scale(3072, torch.bfloat16).item() == 55.5  # sqrt(3072) = 55.43 rounds to 55.5
    for d, dtype in ((24, torch.float32), (3072, torch.bfloat16), (2560, torch.float16)):
        emb = Gemma3TextScaledWordEmbedding(V, d, 0, embed_scale=d ** 0.5).to(dtype)
        ids = torch.arange(V)[None]
        assert torch.equal(torch.nn.functional.embedding(ids, emb.weight) * embedding_scale(d, dtype), emb(ids))


# --------------------------------------------------------------------------- cached decoding
def test_cached_decoding_equals_the_full_forward_with_rolling_local_caches():
    """Prefill 4 tokens, then decode one at a time past the window (3): the sliding layers' caches
    roll (never more than 3 keys), the full layers' grow, and the logits equal one full forward,
    on a padded batch (left and right padding)."""
    ids, mask = ids_and_mask(V)
    err, cache = cached_decoding_error(from_hf(hf_gemma3()), ids, mask)
    print(f"Gemma 3 cached decoding vs full forward (padded batch): max abs logit error {err:.1e}")
    assert err <= TOL
    kept = [c.k.size(2) for c in cache]
    assert kept == [3, ids.size(1), 3, ids.size(1)]  # sliding layers hold the window, full layers everything


def test_cached_decoding_matches_hugging_face_generate():
    theirs = hf_gemma3()
    assert greedy_equals_hf_generate(from_hf(theirs), theirs)


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", ["GQA 4/2, window 3, tied",
                                  "6 layers 5:1 (the default pattern), MQA, untied, soft-capped logits"])
def test_round_trips(name):
    assert_round_trips(hf_gemma3(**CASES[name]))


def test_ours_to_hf_to_ours():
    torch.manual_seed(0)
    ours = Gemma3(Gemma3Config(vocab_size=V, d_model=24, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=6, d_ff=40,
                               max_positions=64, query_pre_attn_scalar=6, sliding_window=2,
                               layer_types=(S, S, F), rope_scaling={"kind": "linear", "factor": 8.0}))
    assert Gemma3Config().rope_scaling == RopeScaling("linear", 8.0)  # the 27B's, by default
    err = to_hf_error(ours)
    print(f"Gemma 3 to_hf vs ours: max abs logit error {err:.1e}")
    assert err <= TOL


def test_unsupported_hf_settings_are_refused():
    with pytest.raises(ValueError, match="attn_logit_softcapping=50.0: course_lib does not implement it"):
        from_hf(hf_gemma3(attn_logit_softcapping=50.0))
    with pytest.raises(ValueError, match="the local layers must be 'default'"):
        from_hf(hf_gemma3(rope_parameters={F: {"rope_type": "default", "rope_theta": 1e6},
                                           S: {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}))


# --------------------------------------------------------------------------- sizes
def test_param_formula_equals_an_instantiated_model():
    for tie in (True, False):
        cfg = Gemma3Config(vocab_size=V, d_model=24, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=6, d_ff=40,
                           sliding_window=4, tie_weights=tie, attention_bias=not tie)
        assert gemma3_params(cfg).total == sum(p.numel() for p in Gemma3(cfg).parameters())
    theirs = hf_gemma3(**CASES["6 layers 5:1 (the default pattern), MQA, untied, soft-capped logits"])
    assert gemma3_params(from_hf(theirs).config).total == sum(p.numel() for p in theirs.parameters())


def test_published_sizes():
    """Gemma 3 Technical Report (arXiv:2503.19786), Table 1, in millions: 1B = 302 embedding + 698
    non-embedding; 27B = 1,416 embedding + 25,600 non-embedding (+ a 417M vision encoder). The
    27B's "embedding" row also holds the image projector (1152 x 5376); its text model is 27.01B
    (with the SigLIP tower and projector: Hugging Face's 27,432,406,640 for gemma-3-27b)."""
    one = gemma3_params(gemma3_1b_config())
    assert (round(one.embeddings / 1e6), round(one.non_embedding / 1e6)) == (302, 698)
    big = gemma3_params(Gemma3Config())
    assert round(big.non_embedding / 1e6) == 25_600
    assert round((big.embeddings + 1152 * 5376) / 1e6) == 1_416
    assert big.total == 27_009_346_304
    assert big.head == 0  # tied


# --------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("kw, match", [
    (dict(n_layers=4, layer_types=(S, F, S)), r"layer_types has 3 entries but n_layers=4: give one type per layer"),
    (dict(n_layers=2, layer_types=(S, "local")), r"layer_types holds \['local'\]: each entry must be one of"),
    (dict(n_layers=2, layer_types="sliding_attention"), r"expected a list with one name per layer"),
    (dict(n_layers=2, layer_types=(S, F), sliding_window=None), r"sliding_window=None but layer_types has "
                                                                 r"'sliding_attention' layers"),
    (dict(n_layers=2, sliding_window=0), r"sliding_window=0: expected a positive integer"),
    (dict(head_dim=7), r"head_dim=7: RoPE rotates pairs"),
    (dict(n_heads=4, n_kv_heads=3), r"n_heads=4 is not divisible by n_kv_heads=3"),
    (dict(query_pre_attn_scalar=0), r"query_pre_attn_scalar=0: expected a positive integer"),
    (dict(final_logit_softcapping=-1.0), r"final_logit_softcapping=-1.0: expected a number > 0"),
    (dict(activation="swiglu"), r"activation='swiglu': expected one of"),
])
def test_bad_configs_say_how_to_fix(kw, match):
    base = dict(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=6, d_ff=40)
    with pytest.raises(ConfigError, match=match):
        Gemma3Config(**(base | kw))


def test_full_layers_need_no_window():
    cfg = Gemma3Config(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=6, d_ff=40,
                       layer_types=[F, F], sliding_window=None)
    assert cfg.layer_types == (F, F)
    assert interleaved_layer_types(7, every=6) == (S, S, S, S, S, F, S)
