"""course_lib.models.gpt: the model itself, its KV cache, and parity with Hugging Face GPT-2
(cached decoding against one pass, for every model family: tests/test_kv_cache.py)."""
import pytest
import torch

from course_lib.config import ConfigError
from course_lib.interop import from_hf
from course_lib.models.gpt import GPT, GPTConfig

from helpers import hf_gpt2

TINY = dict(vocab_size=61, max_positions=24, d_model=36, n_layers=2, n_heads=3)  # head size 12


@pytest.mark.parametrize("kw", [{}, {"n_inner": 50, "activation_function": "gelu"}])
def test_gpt2_logits_match_hugging_face(kw):
    hf = hf_gpt2(**kw)
    ours = from_hf(hf)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 61, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 8:] = 0  # right padding
    mask[2, 5:] = 0
    with torch.no_grad():
        for am in (None, mask):
            theirs = hf(input_ids=ids, attention_mask=am).logits
            mine = ours(ids, attention_mask=am).logits
            keep = torch.ones(3, 11, dtype=torch.bool) if am is None else am.bool()
            err = (mine - theirs)[keep].abs().max().item()
            print(f"GPT-2 {kw or 'default'} mask={am is not None}: max abs logit error {err:.2e}")
            assert err <= 1e-4


def test_gpt2_tied_head_is_the_embedding():
    ours = from_hf(hf_gpt2())
    assert ours.lm_head.weight is ours.tok_emb.weight


def test_cached_decoding_matches_hf_past_key_values():
    hf = hf_gpt2()
    ours = from_hf(hf)
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = hf(ids[:, :6], use_cache=True)
        theirs = hf(ids[:, 6:], cache=out.past_key_values).logits
        cache = ours.new_cache()
        ours(ids[:, :6], cache=cache)
        mine = ours(ids[:, 6:], cache=cache).logits
    assert (mine - theirs).abs().max() <= 1e-4


def test_gpt2_small_has_124m_parameters():
    n = sum(p.numel() for p in GPT(GPTConfig()).parameters())
    assert n == 124_439_808


def test_output_works_with_the_trainer_idiom():
    model = GPT(**TINY)
    out = model(torch.zeros(1, 4, dtype=torch.long))
    logits = getattr(out, "logits", out)
    assert logits.shape == (1, 4, 61) and out["logits"] is logits


@pytest.mark.parametrize("kw,match", [(dict(d_model=30, n_heads=4), "not divisible"),
                                      (dict(n_layers=0), "positive integer"),
                                      (dict(activation="gelu_fast"), r"GPTConfig.activation=.gelu_fast.: expected one of .*GPT-2: .gelu_tanh."),
                                      (dict(dropout=1.5), r"\[0.0, 1.0\)")])
def test_bad_configs_say_how_to_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        GPTConfig(**{**TINY, **kw})


def test_bad_inputs_are_explained():
    model = GPT(**TINY)
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 61\)"):
        model(torch.full((1, 3), 61))
    with pytest.raises(ValueError, match="beyond the 24 learned positions"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 4))


def test_from_hf_rejects_unknown_models():
    with pytest.raises(TypeError, match="supported: GPT2LMHeadModel"):
        from_hf(torch.nn.Linear(2, 2))
