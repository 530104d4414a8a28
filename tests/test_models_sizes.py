"""Parameter counts and FLOPs from configs: equal to instantiated models and to published totals."""
import pytest

from course_lib.models import bert, deepseek, gemma3, gpt, gpt_oss, llama, olmo2, qwen3, t5
from course_lib.models.sizes import PUBLISHED, flops_per_token, param_count

TINY = {
    "gpt tied": (gpt.GPTConfig(vocab_size=50, max_positions=16, d_model=24, n_layers=2, n_heads=3), gpt.GPT),
    "gpt untied, d_ff 40": (gpt.GPTConfig(vocab_size=50, max_positions=16, d_model=24, n_layers=2, n_heads=3,
                                          d_ff=40, tie_weights=False), gpt.GPT),
    "bert": (bert.BertConfig(vocab_size=50, d_model=24, n_layers=2, n_heads=3, d_ff=40, max_positions=16), bert.Bert),
    "t5 v1.0": (t5.T5Config(vocab_size=50, d_model=24, head_dim=5, d_ff=40, n_layers=2, n_decoder_layers=3, n_heads=3,
                            num_buckets=8), t5.T5),
    "t5 v1.1": (t5.t5_v1_1_config(vocab_size=50, d_model=24, head_dim=5, d_ff=40, n_layers=2, n_heads=3), t5.T5),
    "llama GQA": (llama.LlamaConfig(vocab_size=50, d_model=24, n_layers=2, n_heads=6, n_kv_heads=2, d_ff=40), llama.Llama),
    "llama biases, tied": (llama.LlamaConfig(vocab_size=50, d_model=24, n_layers=2, n_heads=2, d_ff=40,
                                             attention_bias=True, mlp_bias=True, tie_weights=True), llama.Llama),
    # the 2025 families: param_count dispatches to each family's own counter
    "deepseek-v3": (deepseek.DeepSeekV3Config(vocab_size=50, d_model=24, n_layers=2, n_heads=4, d_ff=40, moe_d_ff=12,
                                              n_routed_experts=8, top_k=2, n_group=4, topk_group=2,
                                              first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=12,
                                              qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6),
                    deepseek.DeepSeekV3),
    "qwen3": (qwen3.Qwen3Config(vocab_size=50, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=40),
              qwen3.Qwen3),
    "qwen3-moe": (qwen3.Qwen3Config(vocab_size=50, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40,
                                    moe=qwen3.Qwen3MoE(n_experts=4, top_k=2, d_ff=16, dense_layers=(1,))), qwen3.Qwen3),
    "olmo2": (olmo2.Olmo2Config(vocab_size=50, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40), olmo2.Olmo2),
    "gemma3": (gemma3.Gemma3Config(vocab_size=50, d_model=24, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=6, d_ff=40,
                                   query_pre_attn_scalar=6, sliding_window=3), gemma3.Gemma3),
    "gpt-oss": (gpt_oss.GptOssConfig(vocab_size=50, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=6, d_ff=8,
                                     n_experts=4, top_k=2, sliding_window=3), gpt_oss.GptOss),
}


@pytest.mark.parametrize("name", TINY)
def test_formula_equals_the_instantiated_model(name):
    cfg, cls = TINY[name]
    assert param_count(cfg).total == sum(p.numel() for p in cls(cfg).parameters())


def test_mlm_head_formula():
    cfg = TINY["bert"][0]
    from course_lib.models.sizes import bert_params
    n = sum(p.numel() for p in bert.BertForMaskedLM(cfg).parameters())
    assert bert_params(cfg, pooler=False, mlm_head=True).total == n


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_totals(name):
    cfg, published = PUBLISHED[name]
    print(f"{name}: {param_count(cfg).total:,} (published {published:,})")
    assert param_count(cfg).total == published


def test_t5_small_instantiated_equals_published():
    cfg, published = PUBLISHED["T5-small (v1.0)"]
    assert sum(p.numel() for p in t5.T5(cfg).parameters()) == published


def test_flops_is_six_n_plus_attention():
    cfg = PUBLISHED["GPT-2 small"][0]
    n = param_count(cfg).non_embedding
    expected = 6 * (n + 12 * 1024 * 768 + 768 * 50257)
    assert flops_per_token(cfg, 1024) == expected
    assert flops_per_token(cfg, 1024, training=False) == expected / 3
    with pytest.raises(ValueError, match="n_ctx"):
        flops_per_token(cfg, 0)


def test_param_count_rejects_other_objects():
    with pytest.raises(TypeError, match="GPTConfig, BertConfig"):
        param_count(object())
