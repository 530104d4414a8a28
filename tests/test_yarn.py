"""YaRN RoPE scaling (course_lib.positional, kind "yarn"): frequencies and attention factor equal to
Hugging Face's rope_type "yarn"; the by-band rule of the paper checked on its own; LLaMA and Qwen3
with YaRN equal to transformers with copied weights (beyond the trained context), cached decoding,
round trips and the errors. Tiny random configs, offline."""
import dataclasses
import math

import pytest
import torch
import transformers as hf
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

import course_lib.interop.qwen_olmo  # noqa: F401  registers Qwen3
from course_lib.config import ConfigError
from course_lib.interop import from_hf, rename, to_hf
from course_lib.interop.families import LLAMA_KEYS
from course_lib.models.llama import Llama, LlamaConfig
from course_lib.positional import RopeScaling, rope_attention_factor, rope_cos_sin, rope_inv_freq, yarn_band

# (head_dim, theta, rope_parameters beyond rope_type/rope_theta): the defaults; a LLaMA-3-like long base;
# GPT-OSS's untruncated band (factor 32, original 4096); DeepSeek-V3's mscale ratio; every knob set
HF_CASES = [
    (16, 10000.0, dict(factor=4.0, original_max_position_embeddings=64)),
    (128, 500000.0, dict(factor=8.0, original_max_position_embeddings=8192)),
    (64, 150000.0, dict(factor=32.0, original_max_position_embeddings=4096, beta_fast=32.0, beta_slow=1.0,
                        truncate=False)),
    (64, 10000.0, dict(factor=40.0, original_max_position_embeddings=4096, mscale=1.0, mscale_all_dim=1.0)),
    (64, 10000.0, dict(factor=40.0, original_max_position_embeddings=4096, mscale=0.707, mscale_all_dim=1.0)),
    (32, 10000.0, dict(factor=2.0, original_max_position_embeddings=128, beta_fast=8.0, beta_slow=2.0,
                       attention_factor=1.3)),
]
OURS_NAMES = {"original_max_position_embeddings": "original_max_positions"}


def _hf_config(head_dim, theta, params, max_positions=None):
    params = {"rope_type": "yarn", "rope_theta": theta, **params}
    max_positions = max_positions or int(params["original_max_position_embeddings"] * params["factor"])
    return hf.LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
                          max_position_embeddings=max_positions, rope_parameters=params)


def _ours(params) -> RopeScaling:
    return RopeScaling("yarn", **{OURS_NAMES.get(k, k): v for k, v in params.items()})


@pytest.mark.parametrize("head_dim, theta, params", HF_CASES)
def test_inv_freq_and_attention_factor_equal_transformers(head_dim, theta, params):
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](_hf_config(head_dim, theta, params), "cpu")
    scaling = _ours(params)
    ours = rope_inv_freq(head_dim, theta, scaling)
    print(f"YaRN D={head_dim} {params}: inv_freq max abs error {(ours - inv_freq).abs().max().item():.1e}, "
          f"attention factor {rope_attention_factor(scaling):.6f} vs {attention_factor:.6f}")
    assert torch.equal(ours, inv_freq)  # the same operations: bit for bit in float32
    assert rope_attention_factor(scaling) == pytest.approx(attention_factor, rel=1e-12)


@pytest.mark.parametrize("head_dim, theta, params", HF_CASES[:3])
def test_cos_sin_equal_transformers_rotary_embedding(head_dim, theta, params):
    """HF multiplies cos and sin by the attention factor; so does rope_cos_sin."""
    rotary = LlamaRotaryEmbedding(_hf_config(head_dim, theta, params))
    positions = torch.arange(0, 3 * params["original_max_position_embeddings"], 7)[None]  # (1, T) past the trained L
    cos_hf, sin_hf = rotary(torch.zeros(1, dtype=torch.float32), positions)
    cos, sin = rope_cos_sin(positions, head_dim, theta, "half", _ours(params))
    err = max((cos - cos_hf).abs().max().item(), (sin - sin_hf).abs().max().item())
    print(f"YaRN cos/sin D={head_dim}, positions up to {int(positions.max())}: max abs error {err:.1e}")
    assert err <= 1e-5  # HF multiplies positions by frequencies as a matmul: the last bit of a large angle may differ
    assert cos.abs().max() > 1.0  # the factor is really applied (cos alone never exceeds 1)


def test_the_bands_follow_the_paper():
    """YaRN §3.2, checked without HF: a dimension that turns more than beta_fast times over the
    trained context keeps its frequency, one that turns fewer than beta_slow times is divided by
    the factor (position interpolation), and those in between lie between the two."""
    D, theta, L, s = 64, 10000.0, 2048, 8.0
    scaling = RopeScaling("yarn", s, L, beta_fast=32.0, beta_slow=1.0)
    original = rope_inv_freq(D, theta, dtype=torch.float64)  # (D/2,)
    ours = rope_inv_freq(D, theta, scaling, dtype=torch.float64)  # (D/2,)
    turns = L * original / (2 * math.pi)  # (D/2,) full rotations over the trained context
    fast, slow = turns > 32.0, turns < 1.0
    assert fast.sum() >= 5 and slow.sum() >= 5 and (~fast & ~slow).sum() >= 5  # all three bands are populated
    assert torch.allclose(ours[fast], original[fast], rtol=1e-12)
    assert torch.allclose(ours[slow], original[slow] / s, rtol=1e-12)
    middle = ~fast & ~slow
    assert ((ours[middle] <= original[middle]) & (ours[middle] >= original[middle] / s)).all()
    low, high = yarn_band(D, theta, scaling)
    print(f"D={D}, L={L}: {int(fast.sum())} dimensions kept, {int(slow.sum())} interpolated, ramp over "
          f"dimensions {low}..{high}")


def test_attention_factor_is_the_papers_formula():
    for s in (1.0, 2.0, 4.0, 16.0, 40.0):
        assert rope_attention_factor(RopeScaling("yarn", s, 4096)) == pytest.approx(0.1 * math.log(s) + 1)
    assert rope_attention_factor(RopeScaling("yarn", 40.0, 4096, mscale=1.0, mscale_all_dim=1.0)) == 1.0
    assert rope_attention_factor(RopeScaling("yarn", 4.0, 4096, attention_factor=1.5)) == 1.5
    assert rope_attention_factor(RopeScaling("linear", 4.0)) == rope_attention_factor(None) == 1.0
    cos, sin = rope_cos_sin(torch.arange(50), 16, 10000.0, "half", RopeScaling("yarn", 4.0, 16))
    assert torch.allclose(cos ** 2 + sin ** 2, torch.full_like(cos, (0.1 * math.log(4.0) + 1) ** 2))


# --------------------------------------------------------------------------- whole models
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}
LLAMA = dict(vocab_size=41, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rope_parameters=YARN)


def _perturbed(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _long_batch():
    """40 tokens, past the 16 trained positions; row 1 left-padded."""
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :5] = 0
    return torch.randint(1, 41, (2, 40), generator=g) * mask, mask


def _err(ours, theirs, ids, mask):
    with torch.no_grad():
        a, b = ours(ids, attention_mask=mask).logits, theirs(input_ids=ids, attention_mask=mask).logits
    return (a - b)[mask.bool()].abs().max().item()


def test_llama_with_yarn_equals_transformers():
    torch.manual_seed(0)
    theirs = _perturbed(hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA)))
    ours = Llama(LlamaConfig(vocab_size=41, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40, max_positions=64,
                             eps=theirs.config.rms_norm_eps, rope_scaling=RopeScaling("yarn", 4.0, 16))).eval()
    ours.load_state_dict(rename(theirs.state_dict(), LLAMA_KEYS))
    ids, mask = _long_batch()
    err = _err(ours, theirs, ids, mask)
    print(f"LLaMA with YaRN (x4 of 16 positions, 40 tokens): max abs logit error {err:.1e}")
    assert err <= 1e-5
    plain = Llama(dataclasses.replace(ours.config, rope_scaling=None)).eval()
    plain.load_state_dict(ours.state_dict())
    assert _err(plain, theirs, ids, mask) > 1e-3  # the scaling matters at these positions


def test_llama_with_yarn_round_trips_through_the_llama_entry():
    """from_hf / to_hf read and write rope_type "yarn" (the llama entry of interop/families.py)."""
    torch.manual_seed(0)
    theirs = _perturbed(hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA)))
    ours = from_hf(theirs)
    assert ours.config.rope_scaling == RopeScaling("yarn", 4.0, 16)
    ids, mask = _long_batch()
    err = _err(ours, theirs, ids, mask)
    print(f"LLaMA with YaRN through from_hf: max abs logit error {err:.1e}")
    assert err <= 1e-5
    back = to_hf(ours)
    assert type(back) is hf.LlamaForCausalLM and back.config.rope_parameters["rope_type"] == "yarn"
    assert _err(ours, back, ids, mask) <= 1e-5
    assert from_hf(back).config == ours.config


def test_qwen3_with_yarn_equals_transformers_and_decodes_with_a_cache():
    """Qwen3's model card extends 32,768 trained positions to 131,072 with YaRN factor 4; here 16 -> 64."""
    torch.manual_seed(0)
    cfg = LLAMA | {"head_dim": 8}
    theirs = _perturbed(hf.Qwen3ForCausalLM(hf.Qwen3Config(**cfg)))
    ours = from_hf(theirs)
    ids, mask = _long_batch()
    err = _err(ours, theirs, ids, mask)
    print(f"Qwen3 with YaRN: max abs logit error {err:.1e}")
    assert err <= 1e-5
    assert from_hf(to_hf(ours)).config == ours.config
    with torch.no_grad():
        full = ours(ids[:1]).logits  # (1, 40, V)
        cache = ours.new_cache()
        steps = [ours(ids[:1, :20], cache=cache).logits] + [ours(ids[:1, t:t + 1], cache=cache).logits
                                                            for t in range(20, 40)]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------- the HF dict and bad input
def test_rope_scaling_reads_and_writes_hugging_face_dicts():
    for scaling in (RopeScaling("linear", 2.0), RopeScaling("yarn", 4.0, 16),
                    RopeScaling("yarn", 32.0, 4096, beta_fast=16.0, truncate=False, attention_factor=1.2),
                    RopeScaling("yarn", 40.0, 4096, mscale=1.0, mscale_all_dim=1.0)):
        assert RopeScaling.from_hf(scaling.to_hf()) == scaling
    assert RopeScaling.from_hf({"rope_type": "default", "rope_theta": 1e4}) is None
    assert RopeScaling.from_hf(None) is None
    # HF's fallbacks: no original length -> max_position_embeddings; no factor -> their ratio
    assert RopeScaling.from_hf({"rope_type": "yarn", "factor": 2.0}, 512) == RopeScaling("yarn", 2.0, 512)
    assert RopeScaling.from_hf({"rope_type": "yarn", "original_max_position_embeddings": 128}, 512).factor == 4.0


def test_bad_yarn_settings_are_explained():
    with pytest.raises(ConfigError, match="needs original_max_positions"):
        RopeScaling("yarn", 4.0)
    with pytest.raises(ConfigError, match=r"RopeScaling.beta_fast=1.0.*above beta_slow=2.0"):
        RopeScaling("yarn", 4.0, 4096, beta_fast=1.0, beta_slow=2.0)
    with pytest.raises(ConfigError, match=r"RopeScaling.factor=0.5"):
        RopeScaling("yarn", 0.5, 4096)
    with pytest.raises(ConfigError, match=r"RopeScaling.kind='dynamic': expected one of \('linear', 'ntk', 'yarn'\)"):
        RopeScaling("dynamic", 2.0)
    with pytest.raises(ValueError, match="rope_type='longrope' is not supported"):
        RopeScaling.from_hf({"rope_type": "longrope", "factor": 2.0})
    with pytest.raises(ValueError, match="kind='ntk'.*no Hugging Face rope_type"):
        RopeScaling("ntk", 2.0).to_hf()
