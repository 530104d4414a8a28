"""course_lib.models.qwen3 (Qwen3, Qwen3-MoE) and course_lib.models.olmo2 against Hugging Face with
copied weights through the interop registry: fp32 logits on a padded batch, cached decoding equal
to a full forward, both round trips, parameter counts of the published configs, bad configs.
Tiny random configs, offline."""
import pytest
import torch
import transformers as hf

import course_lib.interop.qwen_olmo  # noqa: F401  registers the three families
from course_lib.config import ConfigError
from course_lib.interop import FAMILIES, from_hf, to_hf
from course_lib.models.olmo2 import Olmo2, Olmo2Config, olmo2_params
from course_lib.models.qwen3 import Qwen3, Qwen3Config, Qwen3MoE, qwen3_8b_config, qwen3_moe_config, qwen3_params

from helpers import assert_same_state, perturbed  # weights off their defaults; tensor-by-tensor equality

V = 41
BASE = dict(vocab_size=V, hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=32)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)

# case -> a tiny HF model (the family of each is the registry's)
CASES = {
    "Qwen3 GQA 4/2, D=8 (H·D = 32 != d_model 24)": lambda: hf.Qwen3ForCausalLM(hf.Qwen3Config(**BASE)),
    "Qwen3 MQA, tied, attention bias, theta 1e6": lambda: hf.Qwen3ForCausalLM(hf.Qwen3Config(
        **BASE | dict(num_key_value_heads=1, tie_word_embeddings=True, attention_bias=True,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e6}))),
    "Qwen3-MoE norm_topk_prob, layer 1 dense": lambda: hf.Qwen3MoeForCausalLM(hf.Qwen3MoeConfig(
        **BASE, **MOE, norm_topk_prob=True, mlp_only_layers=[1])),
    "Qwen3-MoE unnormalised top-k, every 2nd layer sparse": lambda: hf.Qwen3MoeForCausalLM(hf.Qwen3MoeConfig(
        **BASE, **MOE, norm_topk_prob=False, decoder_sparse_step=2)),
    "OLMo 2 GQA 4/2": lambda: hf.Olmo2ForCausalLM(hf.Olmo2Config(**BASE)),
    "OLMo 2 MHA, D=6": lambda: hf.Olmo2ForCausalLM(hf.Olmo2Config(
        **BASE | dict(num_key_value_heads=4, head_dim=6), rope_parameters={"rope_type": "default",
                                                                          "rope_theta": 500000.0})),
}
TOL = 1e-5


def padded_batch():
    """Row 0 right-padded, row 1 left-padded, row 2 full."""
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1] * 7 + [0] * 3, [0] * 4 + [1] * 6, [1] * 10])  # (B, T)
    return torch.randint(1, V, (3, 10), generator=g) * mask, mask


def real_logits_error(ours, theirs, ids, mask):
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits  # (B, T, V)
        b = theirs(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
    assert torch.isfinite(a).all()
    return (a - b)[mask.bool()].abs().max().item()


@pytest.mark.parametrize("case", CASES)
def test_from_hf_equals_transformers_on_a_padded_batch_and_round_trips(case):
    torch.manual_seed(0)
    theirs = perturbed(CASES[case]())
    ours = from_hf(theirs)
    assert type(ours) is (Olmo2 if "OLMo" in case else Qwen3)
    ids, mask = padded_batch()
    err = real_logits_error(ours, theirs, ids, mask)
    print(f"{case}: from_hf vs transformers, padded batch: max abs logit error {err:.1e}")
    assert err <= TOL
    back = to_hf(ours)  # HF -> ours -> HF holds exactly the same tensors
    assert type(back) is type(theirs)
    assert_same_state(back, theirs)
    again = from_hf(back)  # ... and ours -> HF -> ours the same config
    assert again.config == ours.config
    assert_same_state(again, ours)


@pytest.mark.parametrize("model", [
    Qwen3(Qwen3Config(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=40,
                      max_positions=32)),
    Qwen3(Qwen3Config(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40, max_positions=32,
                      moe=Qwen3MoE(n_experts=4, top_k=2, d_ff=16, dense_layers=(0,)))),
    Olmo2(Olmo2Config(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40, max_positions=32)),
], ids=["Qwen3", "Qwen3-MoE", "OLMo 2"])
def test_ours_to_hf_to_ours(model):
    torch.manual_seed(0)
    ours = perturbed(model)
    theirs = to_hf(ours)
    ids, mask = padded_batch()
    err = real_logits_error(ours, theirs, ids, mask)
    print(f"{ours.config.family}: to_hf vs course_lib, padded batch: max abs logit error {err:.1e}")
    assert err <= TOL
    back = from_hf(theirs)
    assert type(back) is type(ours) and back.config == ours.config
    assert_same_state(back, ours)


@pytest.mark.parametrize("case", [c for c in CASES if "GQA" in c or "norm_topk" in c])
def test_cached_decoding_equals_a_full_forward(case):
    torch.manual_seed(0)
    ours = from_hf(perturbed(CASES[case]()))
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(2))  # (B, T)
    with torch.no_grad():
        full = ours(ids).logits  # (B, T, V)
        cache = ours.new_cache()
        steps = [ours(ids[:, :4], cache=cache).logits]  # a 4-token prompt, then one token at a time
        steps += [ours(ids[:, t:t + 1], cache=cache).logits for t in range(4, 9)]
    err = (torch.cat(steps, dim=1) - full).abs().max().item()
    print(f"{case}: cached decoding vs full forward: max abs logit error {err:.1e}")
    assert err <= 1e-5


def test_the_families_are_registered_and_owned_apart():
    assert {"qwen3", "qwen3_moe", "olmo2"} <= set(FAMILIES)
    dense = Qwen3(Qwen3Config(vocab_size=V, d_model=16, n_layers=1, n_heads=2, head_dim=8, d_ff=24))
    sparse = Qwen3(Qwen3Config(vocab_size=V, d_model=16, n_layers=1, n_heads=2, head_dim=8, d_ff=24,
                               moe=Qwen3MoE(n_experts=2, top_k=1, d_ff=8)))
    assert type(to_hf(dense)).__name__ == "Qwen3ForCausalLM"
    assert type(to_hf(sparse)).__name__ == "Qwen3MoeForCausalLM"


# --------------------------------------------------------------------------- what differs from LLaMA
def test_olmo2_norms_sit_after_the_sublayers():
    """Zeroing the gain of OLMo 2's post-attention norm removes the attention branch entirely
    (x + Norm(Attn(x)) = x); in a pre-norm block the same gain only zeroes attention's *input*."""
    torch.manual_seed(0)
    model = Olmo2(Olmo2Config(vocab_size=V, d_model=24, n_layers=1, n_heads=4, d_ff=40, max_positions=32)).eval()
    block = model.blocks[0]
    x = torch.randn(2, 5, 24)
    with torch.no_grad():
        block.attn_norm.weight.zero_()
        block.ffn_norm.weight.zero_()
        assert torch.equal(block(x, is_causal=True), x)


def test_qwen3_without_qk_norm_is_llama():
    from course_lib.models.llama import Llama, LlamaConfig
    kw = dict(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=40, max_positions=32,
              eps=1e-6, rope_theta=1e6)
    qwen = Qwen3(Qwen3Config(**kw, qk_norm=None)).eval()
    llama = Llama(LlamaConfig(**kw)).eval()
    llama.load_state_dict(qwen.state_dict())  # the same tensor names: no q_norm / k_norm left
    ids = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        assert torch.equal(qwen(ids).logits, llama(ids).logits)


# --------------------------------------------------------------------------- parameter counts
def _hf_count(hf_class, hf_config):
    with torch.device("meta"):  # shapes only: nothing is allocated
        return sum(p.numel() for p in getattr(hf, hf_class)(hf_config).parameters())


def test_qwen3_8b_parameter_count_equals_the_published_total():
    """Qwen/Qwen3-8B's config.json (huggingface.co/Qwen/Qwen3-8B) -> qwen3_8b_config(); its model
    card: "Number of Parameters: 8.2B; Number of Paramaters (Non-Embedding): 6.95B"."""
    cfg = qwen3_8b_config()
    count = qwen3_params(cfg)
    hf_config = hf.Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                               max_position_embeddings=40960, tie_word_embeddings=False)
    assert count.total == 8_190_735_360 == _hf_count("Qwen3ForCausalLM", hf_config)
    qwen_non_embedding = count.blocks + count.other  # Qwen leaves out the embedding table and the LM head
    print(f"Qwen3-8B: {count.total / 1e9:.2f} B total, {qwen_non_embedding / 1e9:.3f} B non-embedding")
    assert round(count.total / 1e9, 1) == 8.2 and round(qwen_non_embedding / 1e9, 2) == 6.95


def test_qwen3_30b_a3b_parameter_count_equals_the_published_total():
    """Qwen/Qwen3-30B-A3B's card: "30.5B in total and 3.3B activated", 29.9B non-embedding."""
    cfg = qwen3_moe_config()
    count = qwen3_params(cfg)
    hf_config = hf.Qwen3MoeConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                                  moe_intermediate_size=768, num_hidden_layers=48, num_attention_heads=32,
                                  num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
                                  max_position_embeddings=40960, tie_word_embeddings=False)
    assert count.total == _hf_count("Qwen3MoeForCausalLM", hf_config)
    print(f"Qwen3-30B-A3B: {count.total / 1e9:.2f} B total, {count.active / 1e9:.3f} B active")
    assert round(count.total / 1e9, 1) == 30.5 and round((count.blocks + count.other) / 1e9, 1) == 29.9
    assert 3.3e9 <= count.active < 3.4e9  # 3.35 B: Qwen's "3.3B" drops the second decimal


@pytest.mark.parametrize("cfg", [
    Qwen3Config(vocab_size=V, d_model=24, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=40),
    Qwen3Config(vocab_size=V, d_model=24, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=40, tie_weights=True,
                moe=Qwen3MoE(n_experts=4, top_k=2, d_ff=16, sparse_step=2)),
], ids=["dense", "moe"])
def test_param_formula_equals_an_instantiated_model(cfg):
    assert qwen3_params(cfg).total == sum(p.numel() for p in Qwen3(cfg).parameters())


def test_olmo2_param_formula_equals_transformers():
    """OLMo-2-1124-7B's config.json (huggingface.co/allenai/OLMo-2-1124-7B) = Olmo2Config's defaults."""
    tiny = Olmo2Config(vocab_size=V, d_model=24, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=40)
    assert olmo2_params(tiny).total == sum(p.numel() for p in Olmo2(tiny).parameters())
    hf_config = hf.Olmo2Config(vocab_size=100352, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    count = olmo2_params(Olmo2Config())
    print(f"OLMo-2-1124-7B: {count.total / 1e9:.3f} B")
    assert count.total == _hf_count("Olmo2ForCausalLM", hf_config)


# --------------------------------------------------------------------------- bad input
def test_bad_configs_are_explained():
    with pytest.raises(ConfigError, match=r"Qwen3Config.qk_norm='per-head'.*one of \('head', 'projection', None\)"):
        Qwen3Config(d_model=64, n_heads=4, qk_norm="per-head")
    with pytest.raises(ConfigError, match=r"Qwen3MoE.top_k=9.*at most|Qwen3MoE.top_k=9"):
        Qwen3MoE(n_experts=8, top_k=9)
    with pytest.raises(ConfigError, match="OLMo 2 has no sliding window"):
        Olmo2Config(sliding_window=4)
    with pytest.raises(ValueError, match="use_sliding_window=True"):
        from_hf(hf.Qwen3ForCausalLM(hf.Qwen3Config(**BASE, use_sliding_window=True, sliding_window=4)))
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        from_hf(hf.Olmo2ForCausalLM(hf.Olmo2Config(**BASE, hidden_act="gelu")))
    small = dict(vocab_size=V, d_model=16, n_layers=1, n_heads=2, head_dim=8, d_ff=24)
    with pytest.raises(ValueError, match="qk_norm=None has no Hugging Face twin"):
        to_hf(Qwen3(Qwen3Config(**small, qk_norm=None)))
    with pytest.raises(ValueError, match="no mlp_bias"):
        to_hf(Olmo2(Olmo2Config(**small, mlp_bias=True)))
