"""DeepSeek-V3 in the interop registry (``course_lib.interop``): Hugging Face's DeepseekV3ForCausalLM
(transformers >= 5) <-> course_lib's ``DeepSeekV3``.

The tensor names are LLaMA's (``LLAMA_KEYS``): the MLA projections keep HF's names inside ``attn``
and the dense FFNs theirs inside ``ffn``. Only the MoE layers (layer index >= first_k_dense_replace)
need more than a rename: HF fuses each layer's experts into ``experts.gate_up_proj`` /
``experts.down_proj`` (converted by ``moe_deepseek.deepseek_moe_from_hf`` and its inverse).
"""
from __future__ import annotations

from course_lib.interop import Family, invert, register, rename
from course_lib.interop.families import LLAMA_KEYS, _act_from_hf, _each_ffn
from course_lib.models.deepseek import DeepSeekV3, DeepSeekV3Config
from course_lib.moe_deepseek import deepseek_moe_from_hf, deepseek_moe_to_hf
from course_lib.positional import RopeScaling


def deepseek_config_from_hf(hf_config) -> DeepSeekV3Config:
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    scaling = RopeScaling.from_hf(rope, hf_config.max_position_embeddings)  # None, linear or YaRN
    if hf_config.num_key_value_heads != hf_config.num_attention_heads:
        raise ValueError(f"num_key_value_heads={hf_config.num_key_value_heads} differs from num_attention_heads="
                         f"{hf_config.num_attention_heads}: MLA rebuilds a key and value for every head from the "
                         "latent, so there are no grouped key/value heads; set them equal.")
    for field, ours in (("scoring_func", "sigmoid"), ("topk_method", "noaux_tc"), ("moe_layer_freq", 1)):
        value = getattr(hf_config, field, ours)  # config.json fields HF itself does not read
        if value != ours:
            raise ValueError(f"{field}={value!r}: course_lib's DeepSeekV3 (like HF's) implements "
                             f"{field}={ours!r} only.")
    return DeepSeekV3Config(
        vocab_size=hf_config.vocab_size, d_model=hf_config.hidden_size, n_layers=hf_config.num_hidden_layers,
        n_heads=hf_config.num_attention_heads, d_ff=hf_config.intermediate_size,
        moe_d_ff=hf_config.moe_intermediate_size, n_routed_experts=hf_config.n_routed_experts,
        n_shared_experts=hf_config.n_shared_experts, top_k=hf_config.num_experts_per_tok,
        n_group=hf_config.n_group, topk_group=hf_config.topk_group,
        routed_scaling_factor=float(hf_config.routed_scaling_factor), norm_topk_prob=bool(hf_config.norm_topk_prob),
        first_k_dense_replace=hf_config.first_k_dense_replace, q_lora_rank=hf_config.q_lora_rank,
        kv_lora_rank=hf_config.kv_lora_rank, qk_nope_head_dim=hf_config.qk_nope_head_dim,
        qk_rope_head_dim=hf_config.qk_rope_head_dim, v_head_dim=hf_config.v_head_dim,
        max_positions=hf_config.max_position_embeddings, rope_theta=float(rope.get("rope_theta", 10000.0)),
        rope_scaling=scaling,
        rope_interleave=bool(hf_config.rope_interleave), eps=float(hf_config.rms_norm_eps),
        activation=_act_from_hf(hf_config.hidden_act), attention_bias=bool(hf_config.attention_bias),
        tie_weights=bool(hf_config.tie_word_embeddings))


def deepseek_config_to_hf(model: DeepSeekV3):
    import transformers as hf
    c = model.config
    rope = {"rope_type": "default"} if c.rope_scaling is None else c.rope_scaling.to_hf()
    return "DeepseekV3ForCausalLM", hf.DeepseekV3Config(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_heads, intermediate_size=c.d_ff, moe_intermediate_size=c.moe_d_ff,
        n_routed_experts=c.n_routed_experts, n_shared_experts=c.n_shared_experts, num_experts_per_tok=c.top_k,
        n_group=c.n_group, topk_group=c.topk_group, routed_scaling_factor=c.routed_scaling_factor,
        norm_topk_prob=c.norm_topk_prob, first_k_dense_replace=c.first_k_dense_replace, q_lora_rank=c.q_lora_rank,
        kv_lora_rank=c.kv_lora_rank, qk_nope_head_dim=c.qk_nope_head_dim, qk_rope_head_dim=c.qk_rope_head_dim,
        v_head_dim=c.v_head_dim, max_position_embeddings=c.max_positions,
        rope_parameters=rope | {"rope_theta": c.rope_theta}, rope_interleave=c.rope_interleave,
        rms_norm_eps=c.eps, hidden_act=c.activation, attention_bias=c.attention_bias,
        tie_word_embeddings=c.tie_weights, attention_dropout=c.dropout, num_mtp_layers=0)


def _moe_only(convert):
    """Apply a MoE-block conversion to the blocks that are MoE (they have a router); dense FFNs pass."""
    return lambda block: convert(block) if "gate.weight" in block else block


def deepseek_key_map(hf_state: dict, cfg: DeepSeekV3Config) -> dict:
    """The LLaMA renames, then each MoE layer's fused experts and shared experts."""
    return _each_ffn(rename(hf_state, LLAMA_KEYS), cfg, _moe_only(deepseek_moe_from_hf))


def deepseek_key_map_to_hf(state: dict, cfg: DeepSeekV3Config) -> dict:
    return rename(_each_ffn(state, cfg, _moe_only(deepseek_moe_to_hf)), invert(LLAMA_KEYS))


register(Family("deepseek_v3", ("DeepseekV3ForCausalLM",), (DeepSeekV3,), deepseek_config_from_hf,
                lambda cfg, *_: DeepSeekV3(cfg), tensors_from_hf=deepseek_key_map,
                tensors_to_hf=deepseek_key_map_to_hf, config_to_hf=deepseek_config_to_hf))
