"""Registry entries for Qwen3, Qwen3-MoE and OLMo 2 (see ``course_lib.interop``, "Adding a family").

All three are LLaMA with a few more tensors, so their key maps are LLaMA's renames:
  * Qwen3: ``self_attn.q_norm`` / ``k_norm`` (one gain of width head_dim each) travel with the
    rest of ``self_attn.`` - LLaMA's table as it is;
  * Qwen3-MoE: LLaMA's renames, then each sparse layer's router and fused experts as Mixtral's
    (``moe.mixtral_block_state_dict``); layers listed in ``mlp_only_layers`` keep a dense SwiGLU;
  * OLMo 2: its norms sit *after* the sub-layers, so HF's ``post_attention_layernorm`` is the
    attention sub-layer's norm (``attn_norm``), not the FFN's input norm as in LLaMA, and
    ``post_feedforward_layernorm`` is ``ffn_norm``.
RoPE scaling ("linear", "yarn") is read and written by ``RopeScaling.from_hf`` / ``to_hf``.
"""
from __future__ import annotations

from course_lib.interop import Family, invert, register, rename
from course_lib.interop.families import LLAMA_KEYS, _each_ffn
from course_lib.models.olmo2 import Olmo2, Olmo2Config
from course_lib.models.qwen3 import Qwen3, Qwen3Config, Qwen3MoE
from course_lib.moe import mixtral_block_state_dict, mixtral_block_to_hf
from course_lib.positional import RopeScaling


# --------------------------------------------------------------------------- shared by the three
def _decoder_fields(hf_config, family: str) -> dict:
    """The LlamaConfig fields every LLaMA-like HF config holds under the same names."""
    if getattr(hf_config, "hidden_act", "silu") not in ("silu", "swish"):
        raise ValueError(f"hidden_act={hf_config.hidden_act!r}: {family} uses SwiGLU ('silu').")
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    return dict(vocab_size=hf_config.vocab_size, d_model=hf_config.hidden_size, n_layers=hf_config.num_hidden_layers,
                n_heads=hf_config.num_attention_heads, n_kv_heads=hf_config.num_key_value_heads,
                head_dim=getattr(hf_config, "head_dim", None), d_ff=hf_config.intermediate_size,
                max_positions=hf_config.max_position_embeddings,
                rope_theta=float(params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))),
                rope_scaling=RopeScaling.from_hf(params, hf_config.max_position_embeddings),
                eps=float(hf_config.rms_norm_eps), attention_bias=bool(getattr(hf_config, "attention_bias", False)),
                tie_weights=bool(hf_config.tie_word_embeddings))


def _decoder_hf_kwargs(c) -> dict:
    """The HF config fields of a Qwen3Config / Olmo2Config (the inverse of _decoder_fields)."""
    rope = {"rope_type": "default"} if c.rope_scaling is None else c.rope_scaling.to_hf()
    return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff,
                num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
                head_dim=c.head_dim, max_position_embeddings=c.max_positions, rms_norm_eps=c.eps,
                tie_word_embeddings=c.tie_weights, rope_parameters={"rope_theta": c.rope_theta, **rope},
                hidden_act=c.activation, attention_bias=c.attention_bias, attention_dropout=c.dropout)


def _check_no_sliding_window(hf_config, family: str) -> None:
    if getattr(hf_config, "use_sliding_window", False):
        raise ValueError(f"use_sliding_window=True: course_lib's {family} has full attention in every layer "
                         "(HF applies the window only from layer max_window_layers on); set it False.")


def _check_ours(c, family: str) -> None:
    if c.mlp_bias or c.sliding_window is not None:
        raise ValueError(f"to_hf: {family} has no mlp_bias and no sliding window; this config (mlp_bias={c.mlp_bias}, "
                         f"sliding_window={c.sliding_window}) has no Hugging Face twin.")
    if family.startswith("Qwen3") and c.qk_norm != "head":
        raise ValueError(f"to_hf: {family} normalises q and k per head; qk_norm={c.qk_norm!r} has no Hugging Face "
                         "twin (None is LLaMA's attention: use a LlamaConfig; 'projection' is OLMo 2's).")


# --------------------------------------------------------------------------- Qwen3
def qwen3_config_from_hf(hf_config) -> Qwen3Config:
    _check_no_sliding_window(hf_config, "Qwen3")
    return Qwen3Config(**_decoder_fields(hf_config, "Qwen3"))


def qwen3_config_to_hf(model: Qwen3):
    import transformers as hf
    c = model.config
    _check_ours(c, "Qwen3")
    return "Qwen3ForCausalLM", hf.Qwen3Config(use_sliding_window=False, **_decoder_hf_kwargs(c))


# --------------------------------------------------------------------------- Qwen3-MoE
def qwen3_moe_config_from_hf(hf_config) -> Qwen3Config:
    _check_no_sliding_window(hf_config, "Qwen3-MoE")
    moe = Qwen3MoE(n_experts=hf_config.num_experts, top_k=hf_config.num_experts_per_tok,
                   d_ff=hf_config.moe_intermediate_size, norm_topk_prob=bool(hf_config.norm_topk_prob),
                   sparse_step=hf_config.decoder_sparse_step, dense_layers=tuple(hf_config.mlp_only_layers or ()))
    return Qwen3Config(**_decoder_fields(hf_config, "Qwen3-MoE"), moe=moe)


def qwen3_moe_config_to_hf(model: Qwen3):
    import transformers as hf
    c, moe = model.config, model.config.moe
    _check_ours(c, "Qwen3-MoE")
    return "Qwen3MoeForCausalLM", hf.Qwen3MoeConfig(
        use_sliding_window=False, num_experts=moe.n_experts, num_experts_per_tok=moe.top_k,
        moe_intermediate_size=moe.d_ff, norm_topk_prob=moe.norm_topk_prob, decoder_sparse_step=moe.sparse_step,
        mlp_only_layers=list(moe.dense_layers), output_router_logits=False, **_decoder_hf_kwargs(c))


def _sparse_only(convert):
    """Apply a sparse-block conversion to MoE layers (they have a router, ``gate.weight``) only."""
    return lambda block: convert(block) if "gate.weight" in block else block


def qwen3_moe_key_map(hf: dict, cfg: Qwen3Config) -> dict:
    return _each_ffn(rename(hf, LLAMA_KEYS), cfg, _sparse_only(mixtral_block_state_dict))


def qwen3_moe_key_map_to_hf(ours: dict, cfg: Qwen3Config) -> dict:
    return rename(_each_ffn(ours, cfg, _sparse_only(mixtral_block_to_hf)), invert(LLAMA_KEYS))


# --------------------------------------------------------------------------- OLMo 2
def olmo2_config_from_hf(hf_config) -> Olmo2Config:
    return Olmo2Config(**_decoder_fields(hf_config, "OLMo 2"))


def olmo2_config_to_hf(model: Olmo2):
    import transformers as hf
    c = model.config
    _check_ours(c, "OLMo 2")
    return "Olmo2ForCausalLM", hf.Olmo2Config(**_decoder_hf_kwargs(c))


OLMO2_KEYS = LLAMA_KEYS | {  # Olmo2ForCausalLM -> course_lib Olmo2: the norms come after the sub-layers
    "model.layers.{i}.post_attention_layernorm.": "blocks.{i}.attn_norm.",
    "model.layers.{i}.post_feedforward_layernorm.": "blocks.{i}.ffn_norm.",
}
del OLMO2_KEYS["model.layers.{i}.input_layernorm."]  # OLMo 2 does not normalise a sub-layer's input


# --------------------------------------------------------------------------- the entries
register(Family("qwen3", ("Qwen3ForCausalLM",), (Qwen3,), qwen3_config_from_hf, lambda cfg, *_: Qwen3(cfg),
                key_map=LLAMA_KEYS, config_to_hf=qwen3_config_to_hf, owns=lambda model: model.config.moe is None))
register(Family("qwen3_moe", ("Qwen3MoeForCausalLM",), (Qwen3,), qwen3_moe_config_from_hf,
                lambda cfg, *_: Qwen3(cfg), tensors_from_hf=qwen3_moe_key_map, tensors_to_hf=qwen3_moe_key_map_to_hf,
                config_to_hf=qwen3_moe_config_to_hf, owns=lambda model: model.config.moe is not None))
register(Family("olmo2", ("Olmo2ForCausalLM",), (Olmo2,), olmo2_config_from_hf, lambda cfg, *_: Olmo2(cfg),
                key_map=OLMO2_KEYS, config_to_hf=olmo2_config_to_hf))
