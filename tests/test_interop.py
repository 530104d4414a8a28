"""course_lib.interop: the family registry, parity with Hugging Face on a padded batch, both round
trips (HF -> ours -> HF and ours -> HF -> ours), and the errors. Tiny random configs, offline."""
import dataclasses

import pytest
import torch
import torch.nn as nn
import transformers as hf

from course_lib.interop import (FAMILIES, Family, from_hf, from_hf_weights, load_mapped, register, rename,
                                supported_hf_classes, to_hf)
from course_lib.models.bert import Bert, BertConfig, BertForMaskedLM
from course_lib.models.deepseek import DeepSeekV3, DeepSeekV3Config
from course_lib.models.gemma3 import Gemma3, Gemma3Config
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.models.gpt_oss import GptOss, GptOssConfig
from course_lib.models.llama import Llama, LlamaConfig
from course_lib.models.olmo2 import Olmo2, Olmo2Config
from course_lib.models.qwen3 import Qwen3, Qwen3Config, Qwen3MoE
from course_lib.models.t5 import T5, T5Config
from course_lib.moe import LlamaMoE
from course_lib.positional import RopeScaling
from course_lib.vit import ViTConfig, VisionTransformer

from helpers import INTEROP_VOCAB, assert_same_state, max_err, padded_batch, perturbed, real_outputs

V = INTEROP_VOCAB
LLAMA = dict(vocab_size=V, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)
BERT = dict(vocab_size=V, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
            max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
T5_HF = dict(vocab_size=V, d_model=24, d_kv=6, d_ff=40, num_layers=2, num_heads=3, relative_attention_num_buckets=8,
             relative_attention_max_distance=16, dropout_rate=0.0)
VIT = dict(image_size=8, patch_size=2, num_channels=1, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
           intermediate_size=24, layer_norm_eps=1e-5, num_labels=10, hidden_dropout_prob=0.0,
           attention_probs_dropout_prob=0.0)
MIXTRAL = LLAMA | dict(num_local_experts=4, num_experts_per_tok=2)
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 8}
QWEN3_MOE = LLAMA | dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, norm_topk_prob=True)
DEEPSEEK = dict(vocab_size=V, hidden_size=24, intermediate_size=40, moe_intermediate_size=12, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
                topk_group=2, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=12, qk_nope_head_dim=8,
                qk_rope_head_dim=4, v_head_dim=6, num_mtp_layers=0)
GEMMA3 = dict(vocab_size=V, hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=6, query_pre_attn_scalar=6, sliding_window=3,
              layer_types=["sliding_attention", "sliding_attention", "full_attention"])
GPT_OSS = dict(vocab_size=V, hidden_size=24, intermediate_size=8, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=6, num_local_experts=4, num_experts_per_tok=2, sliding_window=3,
               rope_parameters={"rope_type": "default", "rope_theta": 150000.0})

# family -> {case: (kind, a tiny HF model, a tiny course_lib model)}. Every registered family needs one.
EXAMPLES = {
    "gpt2": {"GPT-2": ("causal", lambda: hf.GPT2LMHeadModel(hf.GPT2Config(
                 vocab_size=V, n_positions=16, n_embd=24, n_layer=2, n_head=3, n_inner=50, resid_pdrop=0.0,
                 embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)),
                 lambda: GPT(GPTConfig(vocab_size=V, max_positions=16, d_model=24, n_layers=2, n_heads=3, d_ff=50,
                                       tie_weights=False)))},
    "llama": {"LLaMA GQA": ("causal", lambda: hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA, tie_word_embeddings=True)),
                            lambda: Llama(LlamaConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=6, n_kv_heads=2,
                                                      d_ff=40))),
              "Mistral": ("causal", lambda: hf.MistralForCausalLM(hf.MistralConfig(**LLAMA, sliding_window=3)),
                          lambda: Llama(LlamaConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2,
                                                    d_ff=40, sliding_window=3))),
              "LLaMA YaRN": ("causal", lambda: hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA, max_position_embeddings=32,
                                                                                   rope_parameters=YARN)),
                             lambda: Llama(LlamaConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2,
                                                       d_ff=40, max_positions=32,
                                                       rope_scaling=RopeScaling("yarn", 4.0, 8))))},
    "mixtral": {"Mixtral": ("causal", lambda: hf.MixtralForCausalLM(hf.MixtralConfig(**MIXTRAL, sliding_window=4)),
                            lambda: Llama(LlamaConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2,
                                                      d_ff=40, moe=LlamaMoE(n_experts=4, top_k=2))))},
    "bert": {"BERT": ("encoder", lambda: hf.BertModel(hf.BertConfig(**BERT)),
                      lambda: Bert(BertConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=3, d_ff=40,
                                              max_positions=16))),
             "BERT MLM": ("encoder", lambda: hf.BertForMaskedLM(hf.BertConfig(**BERT)),
                          lambda: BertForMaskedLM(BertConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=3,
                                                             d_ff=40, max_positions=16)))},
    "t5": {"T5 v1.0": ("seq2seq", lambda: hf.T5ForConditionalGeneration(hf.T5Config(**T5_HF)),
                       lambda: T5(T5Config(vocab_size=V, d_model=24, head_dim=6, d_ff=40, n_layers=2, n_heads=3,
                                           num_buckets=8, max_distance=16))),
           "T5 gated-GELU": ("seq2seq", lambda: hf.T5ForConditionalGeneration(hf.T5Config(
                                 **T5_HF, feed_forward_proj="gated-gelu")),
                             lambda: T5(T5Config(vocab_size=V, d_model=24, head_dim=6, d_ff=40, n_layers=2, n_heads=3,
                                                 num_buckets=8, max_distance=16, gated=True,
                                                 activation="gelu_tanh")))},
    "vit": {"ViT": ("image", lambda: hf.ViTForImageClassification(hf.ViTConfig(**VIT)),
                    lambda: VisionTransformer(ViTConfig(image_size=8, patch_size=2, channels=1, d_model=16,
                                                        n_layers=2, n_heads=4, d_ff=24)))},
    # the 2025 decoders
    "deepseek_v3": {"DeepSeek-V3": ("causal", lambda: hf.DeepseekV3ForCausalLM(hf.DeepseekV3Config(**DEEPSEEK)),
                                    lambda: DeepSeekV3(DeepSeekV3Config(
                                        vocab_size=V, d_model=24, n_layers=2, n_heads=4, d_ff=40, moe_d_ff=12,
                                        n_routed_experts=8, top_k=2, n_group=4, topk_group=2, first_k_dense_replace=1,
                                        q_lora_rank=16, kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4,
                                        v_head_dim=6)))},
    "qwen3": {"Qwen3": ("causal", lambda: hf.Qwen3ForCausalLM(hf.Qwen3Config(**LLAMA, head_dim=8)),
                        lambda: Qwen3(Qwen3Config(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2,
                                                  head_dim=8, d_ff=40)))},
    "qwen3_moe": {"Qwen3-MoE": ("causal", lambda: hf.Qwen3MoeForCausalLM(hf.Qwen3MoeConfig(**QWEN3_MOE,
                                                                                          mlp_only_layers=[1])),
                                lambda: Qwen3(Qwen3Config(vocab_size=V, d_model=24, n_layers=2, n_heads=4,
                                                          n_kv_heads=2, d_ff=40,
                                                          moe=Qwen3MoE(n_experts=4, top_k=2, d_ff=16,
                                                                       dense_layers=(1,)))))},
    "olmo2": {"OLMo 2": ("causal", lambda: hf.Olmo2ForCausalLM(hf.Olmo2Config(**LLAMA)),
                         lambda: Olmo2(Olmo2Config(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2,
                                                   d_ff=40)))},
    "gemma3": {"Gemma 3": ("causal", lambda: hf.Gemma3ForCausalLM(hf.Gemma3TextConfig(**GEMMA3)),
                           lambda: Gemma3(Gemma3Config(vocab_size=V, d_model=24, n_layers=3, n_heads=4, n_kv_heads=2,
                                                       head_dim=6, d_ff=40, query_pre_attn_scalar=6,
                                                       sliding_window=3)))},
    "gpt_oss": {"GPT-OSS": ("causal", lambda: hf.GptOssForCausalLM(hf.GptOssConfig(**GPT_OSS)),
                            lambda: GptOss(GptOssConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2,
                                                        head_dim=6, d_ff=8, n_experts=4, top_k=2,
                                                        sliding_window=3)))},
}
CASES = [(family, case) for family, cases in EXAMPLES.items() for case in cases]
TOL = 1e-5  # fp32 logits / hidden states, max abs difference


# --------------------------------------------------------------------------- the registry
def test_the_registry_holds_every_family_and_each_has_an_example():
    assert set(FAMILIES) == {"gpt2", "llama", "mixtral", "bert", "t5", "vit", "deepseek_v3", "qwen3", "qwen3_moe",
                             "olmo2", "gemma3", "gpt_oss"}
    assert set(EXAMPLES) == set(FAMILIES), "add a tiny example for every registered family to EXAMPLES"
    covered = {type(make_hf()).__name__ for cases in EXAMPLES.values() for _, make_hf, _ in cases.values()}
    assert covered == set(supported_hf_classes())
    assert covered >= {"GPT2LMHeadModel", "BertModel", "BertForMaskedLM", "T5ForConditionalGeneration",
                       "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "ViTForImageClassification"}
    assert all(f.config_to_hf is not None for f in FAMILIES.values()), "every family today has a to_hf"


@pytest.mark.parametrize("family, case", CASES)
def test_hf_to_ours_to_hf_with_padding(family, case):
    kind, make_hf, _ = EXAMPLES[family][case]
    torch.manual_seed(0)
    theirs = perturbed(make_hf())
    ours = from_hf(theirs)
    back = to_hf(ours)
    assert type(back) is type(theirs) and FAMILIES[family].owns(ours)
    batch = padded_batch(kind)
    err = max_err(ours, theirs, batch)
    print(f"{case}: from_hf vs HF on the real positions of a padded batch: max abs error {err:.1e}")
    assert err <= TOL
    assert_same_state(back, theirs)  # to_hf(from_hf(hf)) holds exactly hf's tensors ...
    assert max_err(back, theirs, batch) == 0  # ... and computes exactly what hf computes


@pytest.mark.parametrize("family, case", CASES)
def test_ours_to_hf_to_ours_with_padding(family, case):
    kind, _, make_ours = EXAMPLES[family][case]
    torch.manual_seed(0)
    ours = perturbed(make_ours())
    theirs = to_hf(ours)
    back = from_hf(theirs)
    assert type(back) is type(ours) and back.config == ours.config
    batch = padded_batch(kind)
    err = max_err(ours, theirs, batch)
    print(f"{case}: to_hf vs course_lib on the real positions of a padded batch: max abs error {err:.1e}")
    assert err <= TOL
    assert_same_state(back, ours)
    assert max_err(back, ours, batch) == 0


def test_the_padded_positions_really_are_ignored():
    """The round-trip tests compare real positions only; here: changing a padded token changes
    nothing at the real positions, and changing a real token does (so the mask is in effect)."""
    ours = perturbed(from_hf(hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA))))
    batch = padded_batch("causal")
    base = real_outputs(ours, batch)
    pad_changed = dict(batch, input_ids=batch["input_ids"].clone())
    pad_changed["input_ids"][1, 0] = 7  # row 1's first position is left padding
    assert torch.allclose(real_outputs(ours, pad_changed), base, atol=1e-6)
    pad_changed["input_ids"][1, 3] = 7 if batch["input_ids"][1, 3] != 7 else 8  # its first real token
    assert not torch.allclose(real_outputs(ours, pad_changed), base, atol=1e-3)


def test_from_hf_weights_reads_a_checkpoint_without_tied_copies():
    """Checkpoint files store a tied tensor once (no lm_head.weight when it is the embedding)."""
    theirs = perturbed(hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA, tie_word_embeddings=True)))
    state = {k: v for k, v in theirs.state_dict().items() if k != "lm_head.weight"}
    ours = from_hf_weights("LlamaForCausalLM", theirs.config, state)
    assert ours.lm_head.weight is ours.tok_emb.weight
    assert max_err(ours, theirs, padded_batch("causal")) <= 1e-5


def test_a_bias_free_gpt_goes_to_hf_gpt2_with_zero_biases():
    """GPT-2 always has biases; a course GPT with bias=False (the shipped Shakespeare model) maps
    to zero biases and computes the same logits."""
    torch.manual_seed(0)
    ours = perturbed(GPT(GPTConfig(vocab_size=V, max_positions=16, d_model=24, n_layers=2, n_heads=3,
                                   bias=False))).eval()
    theirs = to_hf(ours)
    assert all(v.abs().max() == 0 for k, v in theirs.state_dict().items() if k.endswith(".bias") and "ln_" in k)
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        assert (ours(ids).logits - theirs(ids).logits).abs().max() <= 1e-5


# --------------------------------------------------------------------------- errors
def test_an_unknown_model_gets_a_clear_error():
    unknown = hf.BertForSequenceClassification(hf.BertConfig(**BERT))
    with pytest.raises(TypeError, match=r"does not know the Hugging Face class 'BertForSequenceClassification'; "
                                        r"supported: GPT2LMHeadModel, LlamaForCausalLM, .*ViTForImageClassification"):
        from_hf(unknown)
    with pytest.raises(TypeError, match=r"to_hf knows the course_lib classes Bert, BertForMaskedLM, DeepSeekV3, GPT, "
                                        r"Gemma3, GptOss, Llama, Olmo2, Qwen3, T5, VisionTransformer; got Linear"):
        to_hf(nn.Linear(2, 2))


def test_registering_a_clashing_or_incomplete_family_is_refused():
    with pytest.raises(ValueError, match=r"\['BertModel', 'BertForMaskedLM'\] already belong to family 'bert'"):
        register(dataclasses.replace(FAMILIES["bert"], name="bert2"))
    with pytest.raises(ValueError, match="exactly one of key_map .* or tensors_from_hf"):
        Family("x", ("X",), (nn.Linear,), lambda c: c, lambda *a: None)
    assert set(FAMILIES) == set(EXAMPLES)


def test_a_tensor_without_a_rule_is_named():
    with pytest.raises(KeyError, match="no key-map rule for 'model.layers.0.extra.weight'"):
        rename({"model.layers.0.extra.weight": torch.zeros(1)}, {"model.layers.{i}.mlp.": "blocks.{i}.ffn."})
    assert set(rename({"a.3.x.w": 0, "a.12.y": 1, "skip.me": 2}, {"a.{i}.": "b.{i}.", "skip.": None})) == {"b.3.x.w",
                                                                                                         "b.12.y"}


def test_load_mapped_names_missing_unexpected_and_conflicting_tensors():
    model = nn.Linear(2, 3)
    with pytest.raises(KeyError, match=r"missing \['bias'\], unexpected \['extra'\]"):
        load_mapped(model, {"weight": torch.zeros(3, 2), "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"weight: the model's tensor has shape \(3, 2\) but the mapped one is "
                                         r"\(2, 3\)"):
        load_mapped(model, {"weight": torch.zeros(2, 3), "bias": torch.zeros(3)})
    tied = GPT(GPTConfig(vocab_size=V, max_positions=8, d_model=12, n_layers=1, n_heads=2))  # lm_head = tok_emb
    state = {k: v.clone() for k, v in tied.state_dict().items()}
    state["lm_head.weight"] += 1.0  # an untied head cannot live in a tied model
    with pytest.raises(ValueError, match=r"\['tok_emb.weight'\]: this model ties them to another tensor"):
        load_mapped(tied, state)


def test_unsupported_settings_are_refused():
    gpt = hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=V, n_positions=8, n_embd=12, n_layer=1, n_head=2,
                                           scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="attention scale"):
        from_hf(gpt)
    llama = hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                         "rope_theta": 10000.0}))
    with pytest.raises(ValueError, match="rope_type='dynamic' is not supported"):
        from_hf(llama)
    vit = hf.ViTForImageClassification(hf.ViTConfig(**(VIT | {"layer_norm_eps": 1e-12})))
    with pytest.raises(ValueError, match=r"layer_norm_eps=1e-12: course_lib's ViT has layer_norm_eps 1e-05 only"):
        from_hf(vit)
    shared = Llama(LlamaConfig(vocab_size=V, d_model=24, n_layers=1, n_heads=4, d_ff=40,
                               moe=LlamaMoE(n_experts=4, top_k=2, n_shared_experts=1)))
    with pytest.raises(ValueError, match="Mixtral has no expert capacity, shared experts"):
        to_hf(shared)
