"""course_lib.models.llama: LLaMA and Mistral against Hugging Face with copied weights."""
import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from course_lib.config import ConfigError
from course_lib.interop import from_hf
from course_lib.models.llama import Llama, LlamaConfig, mistral_config

V = 53


def _hf(kind="llama", seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(vocab_size=V, hidden_size=48, intermediate_size=70, num_hidden_layers=2,
                num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                bos_token_id=0, eos_token_id=1, pad_token_id=None)
    base.update(kw)
    if kind == "llama":
        return LlamaForCausalLM(HFLlamaConfig(**base)).eval()
    return MistralForCausalLM(MistralConfig(**base)).eval()


def _ids_and_mask(B=3, T=13, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    mask[2, 9:] = 0  # right padding
    return ids, mask


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
    hf = _hf(kind, **kw)
    ours = from_hf(hf)
    ids, mask = _ids_and_mask()
    with torch.no_grad():
        for am in (None, mask):
            theirs = hf(input_ids=ids, attention_mask=am).logits
            mine = ours(ids, attention_mask=am).logits
            keep = torch.ones_like(ids, dtype=torch.bool) if am is None else am.bool()
            err = (mine - theirs)[keep].abs().max().item()
            print(f"{name} mask={am is not None}: max abs logit error {err:.2e}")
            assert err <= 1e-4


@pytest.mark.parametrize("kind,kw", [("llama", {}), ("mistral", dict(sliding_window=4))])
def test_cached_decoding_matches_hugging_face(kind, kw):
    hf = _hf(kind, **kw)
    ours = from_hf(hf)
    ids, _ = _ids_and_mask(B=3, T=11)
    with torch.no_grad():
        theirs = hf(ids).logits
        cache = ours.new_cache()
        steps = [ours(ids[:, :6], cache=cache).logits]
        steps += [ours(ids[:, t:t + 1], cache=cache).logits for t in range(6, 11)]
    err = (torch.cat(steps, 1) - theirs).abs().max().item()
    assert err <= 1e-4
    if kind == "mistral":  # the rolling cache never holds more than the window
        assert cache[0].k.size(2) == 4


def test_rolling_cache_with_a_full_length_padding_mask():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=V, d_model=32, n_layers=1, n_heads=4, d_ff=40, sliding_window=3)).eval()
    ids = torch.randint(0, V, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, :2] = 0
    full = model(ids, attention_mask=mask).logits
    cache = model.new_cache()
    steps = [model(ids[:, :5], attention_mask=mask[:, :5], cache=cache).logits]
    steps += [model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache).logits for t in range(5, 8)]
    assert (torch.cat(steps, 1) - full)[mask.bool()].abs().max() < 1e-5


def test_published_sizes():
    from course_lib.models.sizes import count_llama_params
    assert count_llama_params(LlamaConfig()) == 6_738_415_616  # LLaMA-2-7B
    assert count_llama_params(mistral_config(vocab_size=32000)) == 7_241_732_096  # Mistral-7B-v0.1


def test_param_formula_equals_an_instantiated_model():
    from course_lib.models.sizes import count_llama_params
    cfg = LlamaConfig(vocab_size=V, d_model=48, n_layers=3, n_heads=6, n_kv_heads=2, d_ff=70)
    assert count_llama_params(cfg) == sum(p.numel() for p in Llama(cfg).parameters())


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
                                      (dict(rope_scaling={"kind": "yarn"}), "'linear' or 'ntk'")])
def test_bad_configs_say_how_to_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        LlamaConfig(**{"vocab_size": V, "d_model": 48, "n_heads": 6, **kw})
