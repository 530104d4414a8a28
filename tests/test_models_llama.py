"""course_lib.models.llama: LLaMA and Mistral against Hugging Face with copied weights (cached
decoding, the rolling cache included: tests/test_kv_cache.py)."""
import pytest
import torch

from course_lib.config import ConfigError
from course_lib.interop import from_hf
from course_lib.models.llama import Llama, LlamaConfig, mistral_config

from helpers import LLAMA_VOCAB, hf_llama, ids_and_mask

V = LLAMA_VOCAB


CASES = {
    "llama GQA 6/2, D=8": ("llama", {}),
    "llama MHA, D=12 (not a power of 2), theta 500k, biases": (
        "llama", dict(num_attention_heads=4, num_key_value_heads=4, attention_bias=True, mlp_bias=True,
                      rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
    "llama MQA, head_dim 10 set explicitly, tied, linear RoPE x2": (
        "llama", dict(num_attention_heads=3, num_key_value_heads=1, head_dim=10, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
    "mistral window 4, GQA 6/3": ("mistral", dict(num_key_value_heads=3, sliding_window=4)),
}


@pytest.mark.parametrize("name", CASES)
def test_logits_match_hugging_face(name):
    kind, kw = CASES[name]
    hf = hf_llama(kind, **kw)
    ours = from_hf(hf)
    ids, mask = ids_and_mask(V)
    with torch.no_grad():
        for am in (None, mask):
            theirs = hf(input_ids=ids, attention_mask=am).logits
            mine = ours(ids, attention_mask=am).logits
            keep = torch.ones_like(ids, dtype=torch.bool) if am is None else am.bool()
            err = (mine - theirs)[keep].abs().max().item()
            print(f"{name} mask={am is not None}: max abs logit error {err:.2e}")
            assert err <= 1e-4


def test_published_sizes():
    from course_lib.models.sizes import llama_params
    assert llama_params(LlamaConfig()).total == 6_738_415_616  # LLaMA-2-7B
    assert llama_params(mistral_config(vocab_size=32000)).total == 7_241_732_096  # Mistral-7B-v0.1


def test_param_formula_equals_an_instantiated_model():
    from course_lib.models.sizes import llama_params
    cfg = LlamaConfig(vocab_size=V, d_model=48, n_layers=3, n_heads=6, n_kv_heads=2, d_ff=70)
    assert llama_params(cfg).total == sum(p.numel() for p in Llama(cfg).parameters())


def test_moe_hook_replaces_the_feed_forward():
    class FakeMoE:  # what the MoE issue plugs in: build(config, layer_idx) -> module
        def build(self, cfg, layer_idx):
            return torch.nn.Linear(cfg.d_model, cfg.d_model, bias=False)
    model = Llama(LlamaConfig(vocab_size=V, d_model=16, n_layers=2, n_heads=2, d_ff=24, moe=FakeMoE()))
    assert isinstance(model.blocks[1].ffn, torch.nn.Linear)
    assert model(torch.zeros(1, 3, dtype=torch.long)).logits.shape == (1, 3, V)


@pytest.mark.parametrize("kw,match", [(dict(n_heads=6, n_kv_heads=4), "divisors of 6"),
                                      (dict(d_model=30, n_heads=4), "not divisible"),
                                      (dict(head_dim=7), "must be even"),
                                      (dict(sliding_window=0), "positive integer"),
                                      (dict(moe="yes"), "build"),
                                      (dict(rope_scaling={"kind": "dynamic"}),
                                       r"RopeScaling.kind='dynamic': expected one of \('linear', 'ntk', 'yarn'\)")])
def test_bad_configs_say_how_to_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        LlamaConfig(**{"vocab_size": V, "d_model": 48, "n_heads": 6, **kw})
