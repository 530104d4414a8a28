"""Registry entries (``course_lib.interop``) for Gemma 3 (text) and GPT-OSS: how a Hugging Face
config becomes a course_lib config and back, and how tensor names map. Gemma 3 is pure renames;
GPT-OSS fuses each layer's experts into four tensors, split here into one module per expert."""
from __future__ import annotations

import torch

from course_lib.interop import Family, invert, register, rename
from course_lib.models.gemma3 import FULL, SLIDING, Gemma3, Gemma3Config
from course_lib.models.gpt_oss import GptOss, GptOssConfig
from course_lib.positional import RopeScaling


def _rope(params: dict | None, max_positions: int) -> tuple[float, RopeScaling | None]:
    """One Hugging Face rope_parameters dict -> (theta, course_lib rope_scaling or None)."""
    params = dict(params or {})
    return float(params["rope_theta"]), RopeScaling.from_hf(params, max_positions)


def _rope_to_hf(theta: float, scaling: RopeScaling | None) -> dict:
    return {"rope_type": "default", "rope_theta": theta} if scaling is None else scaling.to_hf() | {"rope_theta": theta}


def _refuse(hf_config, *fields: str) -> None:
    """Raise for an HF setting course_lib does not implement: each named field must be off (None, False, 0)."""
    for field in fields:
        value = getattr(hf_config, field, None)
        if value:
            raise ValueError(f"{field}={value!r}: course_lib does not implement it; it must be None, False or 0.")


# --------------------------------------------------------------------------- Gemma 3
def gemma3_config_from_hf(hf_config) -> Gemma3Config:
    _refuse(hf_config, "attn_logit_softcapping", "use_bidirectional_attention", "attention_dropout")
    if hf_config.hidden_activation not in ("gelu_pytorch_tanh", "gelu_new", "gelu_tanh"):
        raise ValueError(f"hidden_activation={hf_config.hidden_activation!r}: Gemma 3 uses GeGLU with the tanh "
                         "GELU ('gelu_pytorch_tanh').")
    rope, n = hf_config.rope_parameters, hf_config.max_position_embeddings
    theta, scaling = _rope(rope[FULL], n)
    local_theta, local_scaling = _rope(rope[SLIDING], n)
    if local_scaling is not None:
        raise ValueError("rope_parameters['sliding_attention']: course_lib scales RoPE on the global layers only "
                         "(as Gemma 3 does); the local layers must be 'default'.")
    return Gemma3Config(vocab_size=hf_config.vocab_size, d_model=hf_config.hidden_size,
                        n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
                        n_kv_heads=hf_config.num_key_value_heads, head_dim=hf_config.head_dim,
                        d_ff=hf_config.intermediate_size, max_positions=hf_config.max_position_embeddings,
                        query_pre_attn_scalar=int(hf_config.query_pre_attn_scalar),
                        sliding_window=hf_config.sliding_window, layer_types=tuple(hf_config.layer_types),
                        rope_theta=theta, rope_local_theta=local_theta, rope_scaling=scaling,
                        eps=float(hf_config.rms_norm_eps), final_logit_softcapping=hf_config.final_logit_softcapping,
                        attention_bias=bool(hf_config.attention_bias), tie_weights=bool(hf_config.tie_word_embeddings))


def gemma3_config_to_hf(model: Gemma3):
    import transformers as hf
    c = model.config
    return "Gemma3ForCausalLM", hf.Gemma3TextConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, intermediate_size=c.d_ff,
        max_position_embeddings=c.max_positions, query_pre_attn_scalar=c.query_pre_attn_scalar,
        sliding_window=c.sliding_window, layer_types=list(c.layer_types), rms_norm_eps=c.eps,
        rope_parameters={FULL: _rope_to_hf(c.rope_theta, c.rope_scaling),
                         SLIDING: _rope_to_hf(c.rope_local_theta, None)},
        final_logit_softcapping=c.final_logit_softcapping, attn_logit_softcapping=None,
        hidden_activation="gelu_pytorch_tanh", attention_bias=c.attention_bias, tie_word_embeddings=c.tie_weights)


GEMMA3_KEYS = {  # Gemma3ForCausalLM -> course_lib Gemma3
    "model.embed_tokens.": "tok_emb.",
    "model.layers.{i}.input_layernorm.": "blocks.{i}.attn_norm.",
    "model.layers.{i}.self_attn.": "blocks.{i}.attn.",  # q_proj, k_proj, v_proj, o_proj, q_norm, k_norm
    "model.layers.{i}.post_attention_layernorm.": "blocks.{i}.post_attn_norm.",
    "model.layers.{i}.pre_feedforward_layernorm.": "blocks.{i}.ffn_norm.",
    "model.layers.{i}.post_feedforward_layernorm.": "blocks.{i}.post_ffn_norm.",
    "model.layers.{i}.mlp.": "blocks.{i}.ffn.",  # gate_proj, up_proj, down_proj
    "model.norm.": "final_norm.",
    "lm_head.": "lm_head.",
}


# --------------------------------------------------------------------------- GPT-OSS
def gpt_oss_config_from_hf(hf_config) -> GptOssConfig:
    _refuse(hf_config, "attention_dropout")
    theta, scaling = _rope(hf_config.rope_parameters, hf_config.max_position_embeddings)  # released: YaRN x32
    return GptOssConfig(vocab_size=hf_config.vocab_size, d_model=hf_config.hidden_size,
                        n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
                        n_kv_heads=hf_config.num_key_value_heads, head_dim=hf_config.head_dim,
                        d_ff=hf_config.intermediate_size, n_experts=hf_config.num_local_experts,
                        top_k=hf_config.num_experts_per_tok, sliding_window=hf_config.sliding_window,
                        layer_types=tuple(hf_config.layer_types), max_positions=hf_config.max_position_embeddings,
                        rope_theta=theta, rope_scaling=scaling, eps=float(hf_config.rms_norm_eps),
                        swiglu_alpha=float(hf_config.swiglu_alpha), swiglu_limit=float(hf_config.swiglu_limit),
                        attention_bias=bool(hf_config.attention_bias), tie_weights=bool(hf_config.tie_word_embeddings))


def gpt_oss_config_to_hf(model: GptOss):
    import transformers as hf
    c = model.config
    return "GptOssForCausalLM", hf.GptOssConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, intermediate_size=c.d_ff,
        num_local_experts=c.n_experts, num_experts_per_tok=c.top_k, sliding_window=c.sliding_window,
        layer_types=list(c.layer_types), max_position_embeddings=c.max_positions, rms_norm_eps=c.eps,
        rope_parameters=_rope_to_hf(c.rope_theta, c.rope_scaling), swiglu_alpha=c.swiglu_alpha,
        swiglu_limit=c.swiglu_limit, attention_bias=c.attention_bias, tie_word_embeddings=c.tie_weights)


GPT_OSS_KEYS = {  # GptOssForCausalLM -> course_lib GptOss, all but the fused experts
    "model.embed_tokens.": "tok_emb.",
    "model.layers.{i}.input_layernorm.": "blocks.{i}.attn_norm.",
    "model.layers.{i}.self_attn.": "blocks.{i}.attn.",  # q_proj, k_proj, v_proj, o_proj (+ biases), sinks
    "model.layers.{i}.post_attention_layernorm.": "blocks.{i}.ffn_norm.",
    "model.layers.{i}.mlp.router.": "blocks.{i}.ffn.gate.",  # weight (E, C), bias (E,)
    "model.layers.{i}.mlp.experts.": "blocks.{i}.ffn.experts.",  # fused: split by the functions below
    "model.norm.": "final_norm.",
    "lm_head.": "lm_head.",
}


def experts_from_hf(fused: dict) -> dict:
    """One layer's fused experts -> one ClampedSwiGLU per expert. HF keeps them as (in, out)
    matrices: gate_up_proj (E, C, 2F) with gate and up *interleaved* along the last axis (gate in
    the even columns, up in the odd ones), gate_up_proj_bias (E, 2F), down_proj (E, F, C),
    down_proj_bias (E, C). nn.Linear stores (out, in): transpose."""
    gate_up, gate_up_bias = fused["gate_up_proj"], fused["gate_up_proj_bias"]  # (E, C, 2F), (E, 2F)
    out = {}
    for e in range(gate_up.size(0)):
        out |= {f"{e}.gate_proj.weight": gate_up[e, :, 0::2].t().contiguous(),  # (C, F) -> (F, C)
                f"{e}.gate_proj.bias": gate_up_bias[e, 0::2].contiguous(),  # (F,)
                f"{e}.up_proj.weight": gate_up[e, :, 1::2].t().contiguous(),  # (C, F) -> (F, C)
                f"{e}.up_proj.bias": gate_up_bias[e, 1::2].contiguous(),  # (F,)
                f"{e}.down_proj.weight": fused["down_proj"][e].t().contiguous(),  # (F, C) -> (C, F)
                f"{e}.down_proj.bias": fused["down_proj_bias"][e]}  # (C,)
    return out


def experts_to_hf(experts: dict) -> dict:
    """The inverse of experts_from_hf: interleave gate and up again, transpose back to (in, out)."""
    E = sum(k.endswith(".gate_proj.weight") for k in experts)
    w = lambda e, name: experts[f"{e}.{name}"]  # noqa: E731
    gate_up = torch.stack([torch.stack([w(e, "gate_proj.weight").t(), w(e, "up_proj.weight").t()], dim=-1)
                           .flatten(-2) for e in range(E)])  # (E, C, F, 2) -> (E, C, 2F): g0 u0 g1 u1 ...
    gate_up_bias = torch.stack([torch.stack([w(e, "gate_proj.bias"), w(e, "up_proj.bias")], dim=-1).flatten()  # (2F,)
                                for e in range(E)])  # (E, 2F)
    down = torch.stack([w(e, "down_proj.weight").t() for e in range(E)])  # (E, F, C)
    down_bias = torch.stack([w(e, "down_proj.bias") for e in range(E)])  # (E, C)
    return {"gate_up_proj": gate_up.contiguous(), "gate_up_proj_bias": gate_up_bias,
            "down_proj": down.contiguous(), "down_proj_bias": down_bias}


def _each_layer_experts(state: dict, n_layers: int, convert) -> dict:
    """Apply `convert` to each layer's ``blocks.{i}.ffn.experts.*`` tensors (names without that prefix)."""
    out = dict(state)
    for i in range(n_layers):
        prefix = f"blocks.{i}.ffn.experts."
        block = {k[len(prefix):]: out.pop(k) for k in [k for k in out if k.startswith(prefix)]}
        out |= {prefix + k: v for k, v in convert(block).items()}
    return out


def gpt_oss_tensors_from_hf(hf_state: dict, cfg: GptOssConfig) -> dict:
    return _each_layer_experts(rename(hf_state, GPT_OSS_KEYS), cfg.n_layers, experts_from_hf)


def gpt_oss_tensors_to_hf(ours: dict, cfg: GptOssConfig) -> dict:
    return rename(_each_layer_experts(ours, cfg.n_layers, experts_to_hf), invert(GPT_OSS_KEYS))


# --------------------------------------------------------------------------- the entries
register(Family("gemma3", ("Gemma3ForCausalLM",), (Gemma3,), gemma3_config_from_hf, lambda cfg, *_: Gemma3(cfg),
                key_map=GEMMA3_KEYS, config_to_hf=gemma3_config_to_hf))
register(Family("gpt_oss", ("GptOssForCausalLM",), (GptOss,), gpt_oss_config_from_hf, lambda cfg, *_: GptOss(cfg),
                tensors_from_hf=gpt_oss_tensors_from_hf, tensors_to_hf=gpt_oss_tensors_to_hf,
                config_to_hf=gpt_oss_config_to_hf))
