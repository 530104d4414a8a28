"""The families of the interop registry (``course_lib.interop``): for each, how an HF config
becomes a course_lib config and back, and how tensor names map. Read top to bottom, one family
per section; the ``register`` calls at the end put them in ``FAMILIES``."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn as nn

from course_lib.ffn import ALIASES
from course_lib.interop import Family, KeyMap, invert, register, rename
from course_lib.models.bert import Bert, BertConfig, BertForMaskedLM
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.models.llama import Llama, LlamaConfig
from course_lib.models.t5 import T5, T5Config
from course_lib.moe import LlamaMoE, mixtral_block_state_dict, mixtral_block_to_hf
from course_lib.positional import RopeScaling
from course_lib.vit import ViTConfig, VisionTransformer


def _act_to_hf(activation: str) -> str:
    return "gelu_new" if activation == "gelu_tanh" else activation  # HF's name for tanh-GELU


def _act_from_hf(activation: str) -> str:
    return ALIASES.get(activation, activation)  # "gelu_new" -> "gelu_tanh", "swish" -> "silu"


# --------------------------------------------------------------------------- GPT-2
def gpt_config_from_hf(hf_config) -> GPTConfig:
    if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False) or not getattr(hf_config, "scale_attn_weights", True):
        raise ValueError("this GPT-2 config changes the attention scale (scale_attn_by_inverse_layer_idx / "
                         "scale_attn_weights); course_lib's GPT uses the standard 1/sqrt(D).")
    return GPTConfig(vocab_size=hf_config.vocab_size, max_positions=hf_config.n_positions,
                     d_model=hf_config.n_embd, n_layers=hf_config.n_layer, n_heads=hf_config.n_head,
                     d_ff=hf_config.n_inner, activation=_act_from_hf(hf_config.activation_function),
                     eps=float(hf_config.layer_norm_epsilon),
                     tie_weights=bool(getattr(hf_config, "tie_word_embeddings", True)))


def gpt_config_to_hf(model: GPT):
    import transformers as hf
    c = model.config
    return "GPT2LMHeadModel", hf.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.max_positions, n_embd=c.d_model, n_layer=c.n_layers,
        n_head=c.n_heads, n_inner=c.d_ff, activation_function=_act_to_hf(c.activation), layer_norm_epsilon=c.eps,
        tie_word_embeddings=c.tie_weights, resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout)


GPT2_LAYER = {"attn.c_proj": "attn.o_proj", "mlp.c_fc": "ffn.up_proj", "mlp.c_proj": "ffn.down_proj",
              "ln_1": "attn_norm", "ln_2": "ffn_norm"}  # + attn.c_attn -> q_proj, k_proj, v_proj
CONV1D = ("attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # weights stored (in, out)


def gpt2_key_map(hf: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel state dict -> course_lib GPT state dict."""
    t = lambda w: w.t().contiguous()  # noqa: E731  Conv1D (in, out) -> Linear (out, in)
    p = "transformer."
    out = {"tok_emb.weight": hf[p + "wte.weight"], "pos_emb.weight": hf[p + "wpe.weight"],
           "final_norm.weight": hf[p + "ln_f.weight"], "final_norm.bias": hf[p + "ln_f.bias"],
           "lm_head.weight": hf.get("lm_head.weight", hf[p + "wte.weight"])}
    for i in range(cfg.n_layers):
        h, b = f"{p}h.{i}.", f"blocks.{i}."
        q, k, v = t(hf[h + "attn.c_attn.weight"]).chunk(3, dim=0)  # (3C, C) -> 3 x (C, C)
        qb, kb, vb = hf[h + "attn.c_attn.bias"].chunk(3)  # (3C,) -> 3 x (C,)
        out |= {b + "attn.q_proj.weight": q, b + "attn.k_proj.weight": k, b + "attn.v_proj.weight": v,
                b + "attn.q_proj.bias": qb, b + "attn.k_proj.bias": kb, b + "attn.v_proj.bias": vb}
        for theirs, mine in GPT2_LAYER.items():
            w = hf[h + theirs + ".weight"]
            out[b + mine + ".weight"] = t(w) if theirs in CONV1D else w
            out[b + mine + ".bias"] = hf[h + theirs + ".bias"]
    return out


def gpt2_key_map_to_hf(ours: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """The inverse of gpt2_key_map: fuse q, k, v back into c_attn and transpose to Conv1D.
    GPT-2 always has biases; a course GPT built with bias=False gets zero biases, which is the
    same function."""
    t = lambda w: w.t().contiguous()  # noqa: E731  Linear (out, in) -> Conv1D (in, out)
    bias = lambda name: ours.get(name + ".bias", ours[name + ".weight"].new_zeros(ours[name + ".weight"].shape[0]))  # noqa: E731
    p = "transformer."
    out = {p + "wte.weight": ours["tok_emb.weight"], p + "wpe.weight": ours["pos_emb.weight"],
           p + "ln_f.weight": ours["final_norm.weight"], p + "ln_f.bias": bias("final_norm"),
           "lm_head.weight": ours["lm_head.weight"]}
    for i in range(cfg.n_layers):
        h, b = f"{p}h.{i}.", f"blocks.{i}."
        qkv = [b + f"attn.{x}_proj" for x in "qkv"]
        out[h + "attn.c_attn.weight"] = t(torch.cat([ours[k + ".weight"] for k in qkv], dim=0))  # (C, 3C)
        out[h + "attn.c_attn.bias"] = torch.cat([bias(k) for k in qkv])  # (3C,)
        for theirs, mine in GPT2_LAYER.items():
            w = ours[b + mine + ".weight"]
            out[h + theirs + ".weight"] = t(w) if theirs in CONV1D else w
            out[h + theirs + ".bias"] = bias(b + mine)
    return out


# --------------------------------------------------------------------------- LLaMA / Mistral
def _rope_scaling(hf_config):
    """(theta, RopeScaling or None) from HF's rope_parameters: default, linear or YaRN."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    return theta, RopeScaling.from_hf(params, hf_config.max_position_embeddings)


def llama_config_from_hf(hf_config) -> LlamaConfig:
    theta, scaling = _rope_scaling(hf_config)
    if getattr(hf_config, "hidden_act", "silu") not in ("silu", "swish"):
        raise ValueError(f"hidden_act={hf_config.hidden_act!r}: LLaMA/Mistral use SwiGLU ('silu').")
    return LlamaConfig(vocab_size=hf_config.vocab_size, d_model=hf_config.hidden_size,
                       n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
                       n_kv_heads=hf_config.num_key_value_heads, head_dim=getattr(hf_config, "head_dim", None),
                       d_ff=hf_config.intermediate_size, max_positions=hf_config.max_position_embeddings,
                       rope_theta=float(theta), rope_scaling=scaling, eps=float(hf_config.rms_norm_eps),
                       attention_bias=bool(getattr(hf_config, "attention_bias", False)),
                       mlp_bias=bool(getattr(hf_config, "mlp_bias", False)),
                       tie_weights=bool(hf_config.tie_word_embeddings),
                       sliding_window=getattr(hf_config, "sliding_window", None))


def _llama_hf_kwargs(c: LlamaConfig) -> dict:
    """The config fields LLaMA, Mistral and Mixtral share."""
    rope = {"rope_type": "default"} if c.rope_scaling is None else c.rope_scaling.to_hf()
    rope = {"rope_theta": c.rope_theta, **rope}
    return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff,
                num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
                head_dim=c.head_dim, max_position_embeddings=c.max_positions, rms_norm_eps=c.eps,
                tie_word_embeddings=c.tie_weights, rope_parameters=rope, hidden_act=c.activation)


def llama_config_to_hf(model: Llama):
    import transformers as hf
    c = model.config
    if c.sliding_window is not None:
        if c.attention_bias or c.mlp_bias:
            raise ValueError("to_hf: Mistral has no attention_bias / mlp_bias; set them False or drop sliding_window.")
        return "MistralForCausalLM", hf.MistralConfig(sliding_window=c.sliding_window, **_llama_hf_kwargs(c))
    return "LlamaForCausalLM", hf.LlamaConfig(attention_bias=c.attention_bias, mlp_bias=c.mlp_bias,
                                              **_llama_hf_kwargs(c))


LLAMA_KEYS = {  # LlamaForCausalLM / MistralForCausalLM / MixtralForCausalLM -> course_lib Llama
    "model.embed_tokens.": "tok_emb.",
    "model.layers.{i}.input_layernorm.": "blocks.{i}.attn_norm.",
    "model.layers.{i}.self_attn.": "blocks.{i}.attn.",  # q_proj, k_proj, v_proj, o_proj: same names
    "model.layers.{i}.post_attention_layernorm.": "blocks.{i}.ffn_norm.",
    "model.layers.{i}.mlp.": "blocks.{i}.ffn.",  # gate_proj, up_proj, down_proj (Mixtral: gate, experts)
    "model.norm.": "final_norm.",
    "lm_head.": "lm_head.",
}


# --------------------------------------------------------------------------- Mixtral
def mixtral_config_from_hf(hf_config) -> LlamaConfig:
    """Mixtral = Mistral whose FFNs are sparse MoE layers of num_local_experts SwiGLU experts."""
    moe = LlamaMoE(n_experts=hf_config.num_local_experts, top_k=hf_config.num_experts_per_tok)
    return dataclasses.replace(llama_config_from_hf(hf_config), moe=moe)


def mixtral_config_to_hf(model: Llama):
    import transformers as hf
    c, moe = model.config, model.config.moe
    if moe.capacity_factor is not None or moe.n_shared_experts or c.attention_bias or c.mlp_bias:
        raise ValueError("to_hf: Mixtral has no expert capacity, shared experts or biases; this LlamaMoE "
                         "config (capacity_factor / n_shared_experts / attention_bias / mlp_bias) has no HF twin.")
    kw = _llama_hf_kwargs(c) | {"intermediate_size": moe.d_ff or c.d_ff}  # Mixtral's d_ff is each expert's
    return "MixtralForCausalLM", hf.MixtralConfig(sliding_window=c.sliding_window, num_local_experts=moe.n_experts,
                                                  num_experts_per_tok=moe.top_k, router_jitter_noise=0.0, **kw)


def _each_ffn(state: dict, cfg: LlamaConfig, convert: Callable[[dict], dict]) -> dict:
    """Apply `convert` to each block's ``blocks.{i}.ffn.*`` tensors (names without that prefix)."""
    out = dict(state)
    for i in range(cfg.n_layers):
        prefix = f"blocks.{i}.ffn."
        block = {k[len(prefix):]: out.pop(k) for k in [k for k in out if k.startswith(prefix)]}
        out |= {prefix + k: v for k, v in convert(block).items()}
    return out


def mixtral_key_map(hf: dict, cfg: LlamaConfig) -> dict:
    """The LLaMA renames, then each block's router and fused experts through moe.mixtral_block_state_dict."""
    return _each_ffn(rename(hf, LLAMA_KEYS), cfg, mixtral_block_state_dict)


def mixtral_key_map_to_hf(ours: dict, cfg: LlamaConfig) -> dict:
    return rename(_each_ffn(ours, cfg, mixtral_block_to_hf), invert(LLAMA_KEYS))


# --------------------------------------------------------------------------- BERT
def bert_config_from_hf(hf_config) -> BertConfig:
    if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type={hf_config.position_embedding_type!r}: course_lib's BERT "
                         "has absolute learned positions only.")
    return BertConfig(vocab_size=hf_config.vocab_size, d_model=hf_config.hidden_size,
                      n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
                      d_ff=hf_config.intermediate_size, max_positions=hf_config.max_position_embeddings,
                      type_vocab_size=hf_config.type_vocab_size, activation=_act_from_hf(hf_config.hidden_act),
                      eps=float(hf_config.layer_norm_eps), dropout=float(hf_config.hidden_dropout_prob),
                      pad_token_id=hf_config.pad_token_id or 0)


def bert_config_to_hf(model: Bert | BertForMaskedLM):
    import transformers as hf
    c = model.config
    config = hf.BertConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, intermediate_size=c.d_ff, max_position_embeddings=c.max_positions,
        type_vocab_size=c.type_vocab_size, hidden_act=_act_to_hf(c.activation), layer_norm_eps=c.eps,
        pad_token_id=c.pad_token_id, hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout)
    if isinstance(model, BertForMaskedLM):
        return "BertForMaskedLM", config
    return "BertModel", config, {"add_pooling_layer": model.pooler is not None}


def _build_bert(cfg: BertConfig, hf_class: str, hf_state: dict) -> nn.Module:
    if hf_class == "BertForMaskedLM":
        return BertForMaskedLM(cfg)
    return Bert(cfg, add_pooler="pooler.dense.weight" in hf_state)


_BERT_ENCODER = {  # BertModel -> course_lib Bert
    "embeddings.word_embeddings.": "embeddings.tok_emb.",
    "embeddings.position_embeddings.": "embeddings.pos_emb.",
    "embeddings.token_type_embeddings.": "embeddings.type_emb.",
    "embeddings.LayerNorm.": "embeddings.norm.",
    "embeddings.position_ids": None,  # a buffer (0, 1, ..., T-1) older checkpoints saved
    "encoder.layer.{i}.attention.self.query.": "blocks.{i}.attn.q_proj.",
    "encoder.layer.{i}.attention.self.key.": "blocks.{i}.attn.k_proj.",
    "encoder.layer.{i}.attention.self.value.": "blocks.{i}.attn.v_proj.",
    "encoder.layer.{i}.attention.output.dense.": "blocks.{i}.attn.o_proj.",
    "encoder.layer.{i}.attention.output.LayerNorm.": "blocks.{i}.attn_norm.",
    "encoder.layer.{i}.intermediate.dense.": "blocks.{i}.ffn.up_proj.",
    "encoder.layer.{i}.output.dense.": "blocks.{i}.ffn.down_proj.",
    "encoder.layer.{i}.output.LayerNorm.": "blocks.{i}.ffn_norm.",
    "pooler.dense.": "pooler.",
}
BERT_KEYS = _BERT_ENCODER | {"bert." + k: v and "bert." + v for k, v in _BERT_ENCODER.items()} | {
    # BertForMaskedLM: the encoder under "bert.", then the MLM head
    "cls.predictions.transform.dense.": "mlm_head.dense.",
    "cls.predictions.transform.LayerNorm.": "mlm_head.norm.",
    "cls.predictions.decoder.": "mlm_head.decoder.",
    "cls.predictions.bias": None,  # the same tensor as cls.predictions.decoder.bias
}


# --------------------------------------------------------------------------- T5
def t5_config_from_hf(hf_config) -> T5Config:
    # transformers 5 always ties T5's head to `shared` and keeps the v1.0/v1.1 difference in
    # `scale_decoder_outputs`; older versions said it with tie_word_embeddings.
    tied = getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)
    return T5Config(vocab_size=hf_config.vocab_size, d_model=hf_config.d_model, head_dim=hf_config.d_kv,
                    d_ff=hf_config.d_ff, n_layers=hf_config.num_layers, n_decoder_layers=hf_config.num_decoder_layers,
                    n_heads=hf_config.num_heads, num_buckets=hf_config.relative_attention_num_buckets,
                    max_distance=hf_config.relative_attention_max_distance, eps=float(hf_config.layer_norm_epsilon),
                    dropout=float(hf_config.dropout_rate), activation=_act_from_hf(hf_config.dense_act_fn),
                    gated=bool(hf_config.is_gated_act), tie_weights=bool(tied),
                    pad_token_id=hf_config.pad_token_id or 0,
                    decoder_start_token_id=getattr(hf_config, "decoder_start_token_id", None) or 0)


def t5_config_to_hf(model: T5):
    import transformers as hf
    c = model.config
    ffn = ("gated-" if c.gated else "") + ("gelu" if c.activation == "gelu_tanh" else c.activation)
    return "T5ForConditionalGeneration", hf.T5Config(
        vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.head_dim, d_ff=c.d_ff, num_layers=c.n_layers,
        num_decoder_layers=c.n_decoder_layers, num_heads=c.n_heads, relative_attention_num_buckets=c.num_buckets,
        relative_attention_max_distance=c.max_distance, layer_norm_epsilon=c.eps, dropout_rate=c.dropout,
        feed_forward_proj=ffn, tie_word_embeddings=c.tie_weights, pad_token_id=c.pad_token_id,
        decoder_start_token_id=c.decoder_start_token_id)


def t5_keys(cfg: T5Config) -> KeyMap:
    """T5ForConditionalGeneration -> course_lib T5. HF keeps each stack's relative position bias in
    its block 0; course_lib keeps it on the stack (``encoder.rel_bias``), where it is used."""
    ffn = {"wi_0.": "gate_proj.", "wi_1.": "up_proj."} if cfg.gated else {"wi.": "up_proj."}
    keys = {"shared.": "shared.", "lm_head.": "lm_head.",
            "encoder.embed_tokens.": None, "decoder.embed_tokens.": None}  # both the same tensor as shared
    for stack, ffn_layer in (("encoder", 1), ("decoder", 2)):  # the decoder's layer.1 is cross-attention
        hf, ours = f"{stack}.block.{{i}}.layer.", f"{stack}.blocks.{{i}}."
        keys |= {f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.":
                 f"{stack}.rel_bias.relative_attention_bias."}
        keys |= {f"{hf}0.SelfAttention.{x}.": f"{ours}attn.{x}_proj." for x in "qkvo"}
        keys |= {f"{hf}0.layer_norm.": f"{ours}attn_norm.",
                 f"{hf}{ffn_layer}.layer_norm.": f"{ours}ffn_norm.",
                 f"{hf}{ffn_layer}.DenseReluDense.wo.": f"{ours}ffn.down_proj."}
        keys |= {f"{hf}{ffn_layer}.DenseReluDense.{a}": f"{ours}ffn.{b}" for a, b in ffn.items()}
        keys |= {f"{stack}.final_layer_norm.": f"{stack}.final_norm."}
    keys |= {f"decoder.block.{{i}}.layer.1.EncDecAttention.{x}.": f"decoder.blocks.{{i}}.cross_attn.{x}_proj."
             for x in "qkvo"}
    keys |= {"decoder.block.{i}.layer.1.layer_norm.": "decoder.blocks.{i}.cross_attn_norm."}
    return keys


# --------------------------------------------------------------------------- ViT
VIT_EPS = 1e-5  # ViTConfig has no eps: course_lib's ViT uses LayerNorm's default


def vit_config_from_hf(hf_config) -> ViTConfig:
    for field, ours in (("hidden_act", "gelu"), ("qkv_bias", True), ("layer_norm_eps", VIT_EPS)):
        if getattr(hf_config, field) != ours:
            raise ValueError(f"{field}={getattr(hf_config, field)!r}: course_lib's ViT has {field} {ours!r} "
                             "only (ViTConfig has no field for it).")
    return ViTConfig(image_size=hf_config.image_size, patch_size=hf_config.patch_size,
                     channels=hf_config.num_channels, n_classes=hf_config.num_labels, d_model=hf_config.hidden_size,
                     n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
                     d_ff=hf_config.intermediate_size, dropout=float(hf_config.hidden_dropout_prob))


def vit_config_to_hf(model: VisionTransformer):
    import transformers as hf
    c = model.config
    return "ViTForImageClassification", hf.ViTConfig(
        image_size=c.image_size, patch_size=c.patch_size, num_channels=c.channels, num_labels=c.n_classes,
        hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        intermediate_size=c.d_ff, hidden_act="gelu", layer_norm_eps=VIT_EPS, qkv_bias=True,
        hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout)


VIT_KEYS = {  # ViTForImageClassification (transformers >= 5 names) -> course_lib VisionTransformer
    "vit.embeddings.cls_token": "cls_token",
    "vit.embeddings.position_embeddings": "pos_embed",
    "vit.embeddings.patch_embeddings.projection.": "patch_embed.projection.",
    "vit.layers.{i}.layernorm_before.": "blocks.{i}.attn_norm.",
    "vit.layers.{i}.attention.": "blocks.{i}.attn.",  # q_proj, k_proj, v_proj, o_proj: same names
    "vit.layers.{i}.layernorm_after.": "blocks.{i}.ffn_norm.",
    "vit.layers.{i}.mlp.fc1.": "blocks.{i}.ffn.up_proj.",
    "vit.layers.{i}.mlp.fc2.": "blocks.{i}.ffn.down_proj.",
    "vit.layernorm.": "norm.",
    "classifier.": "head.",
}


# --------------------------------------------------------------------------- the entries
register(Family("gpt2", ("GPT2LMHeadModel",), (GPT,), gpt_config_from_hf, lambda cfg, *_: GPT(cfg),
                tensors_from_hf=gpt2_key_map, tensors_to_hf=gpt2_key_map_to_hf, config_to_hf=gpt_config_to_hf))
register(Family("llama", ("LlamaForCausalLM", "MistralForCausalLM"), (Llama,), llama_config_from_hf,
                lambda cfg, *_: Llama(cfg), key_map=LLAMA_KEYS, config_to_hf=llama_config_to_hf,
                owns=lambda model: type(model) is Llama and model.config.moe is None))
register(Family("mixtral", ("MixtralForCausalLM",), (Llama,), mixtral_config_from_hf, lambda cfg, *_: Llama(cfg),
                tensors_from_hf=mixtral_key_map, tensors_to_hf=mixtral_key_map_to_hf,
                config_to_hf=mixtral_config_to_hf, owns=lambda model: type(model) is Llama and model.config.moe is not None))
register(Family("bert", ("BertModel", "BertForMaskedLM"), (Bert, BertForMaskedLM), bert_config_from_hf,
                _build_bert, key_map=BERT_KEYS, config_to_hf=bert_config_to_hf))
register(Family("t5", ("T5ForConditionalGeneration",), (T5,), t5_config_from_hf, lambda cfg, *_: T5(cfg),
                key_map=t5_keys, config_to_hf=t5_config_to_hf))
register(Family("vit", ("ViTForImageClassification",), (VisionTransformer,), vit_config_from_hf,
                lambda cfg, *_: VisionTransformer(cfg), key_map=VIT_KEYS, config_to_hf=vit_config_to_hf))
