"""Hugging Face ``transformers`` models -> course_lib models with the same config and weights.

``from_hf(hf_model)`` reads the HF config, builds the course_lib config of the same family,
then copies every tensor through a *key map* (HF name -> course_lib name). Only two things are
more than a rename:
  * GPT-2 stores its linear layers as ``Conv1D`` with weights (in, out): transpose them;
  * GPT-2 fuses q, k, v into one ``c_attn``: split it in three along the output axis.
Every HF tensor must be used and every course_lib tensor filled, or loading fails loudly.

Nothing is downloaded: pass a model you already have (built from a config, or loaded from
local files with ``from_pretrained(path, local_files_only=True)``).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from course_lib.models.bert import Bert, BertConfig, BertForMaskedLM
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.models.llama import Llama, LlamaConfig
from course_lib.models.t5 import T5, T5Config
from course_lib.moe import LlamaMoE, mixtral_block_state_dict


# --------------------------------------------------------------------------- copying
def load_mapped(model: nn.Module, tensors: dict[str, torch.Tensor], ignore: tuple[str, ...] = ()) -> nn.Module:
    """Copy `tensors` (course_lib names) into `model`; every parameter must be covered."""
    own = model.state_dict()
    missing = [k for k in own if k not in tensors and not k.endswith(ignore)]
    unknown = [k for k in tensors if k not in own]
    if missing or unknown:
        raise KeyError(f"weight maps disagree: missing {missing[:5]}, unexpected {unknown[:5]}.")
    with torch.no_grad():
        for name, value in tensors.items():
            if own[name].shape != value.shape:
                raise ValueError(f"{name}: course_lib shape {tuple(own[name].shape)} but the HF tensor "
                                 f"is {tuple(value.shape)}.")
            own[name].copy_(value)
    return model


def _hf_state(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in hf_model.state_dict().items()}


def _dtype(hf_model: nn.Module) -> torch.dtype:
    return next(hf_model.parameters()).dtype


# --------------------------------------------------------------------------- GPT-2
def gpt_config_from_hf(hf_config) -> GPTConfig:
    if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False) or not getattr(hf_config, "scale_attn_weights", True):
        raise ValueError("this GPT-2 config changes the attention scale (scale_attn_by_inverse_layer_idx / "
                         "scale_attn_weights); course_lib's GPT uses the standard 1/sqrt(D).")
    return GPTConfig(vocab_size=hf_config.vocab_size, max_positions=hf_config.n_positions,
                     d_model=hf_config.n_embd, n_layers=hf_config.n_layer, n_heads=hf_config.n_head,
                     d_ff=hf_config.n_inner, activation=hf_config.activation_function,
                     eps=float(hf_config.layer_norm_epsilon),
                     tie_weights=bool(getattr(hf_config, "tie_word_embeddings", True)))


def gpt2_key_map(hf: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel state dict -> course_lib GPT state dict."""
    t = lambda w: w.t().contiguous()  # noqa: E731  Conv1D (in, out) -> Linear (out, in)
    p = "transformer."
    out = {"tok_emb.weight": hf[p + "wte.weight"], "pos_emb.weight": hf[p + "wpe.weight"],
           "final_norm.weight": hf[p + "ln_f.weight"], "final_norm.bias": hf[p + "ln_f.bias"],
           "lm_head.weight": hf.get("lm_head.weight", hf[p + "wte.weight"])}
    for i in range(n_layers):
        h, b = f"{p}h.{i}.", f"blocks.{i}."
        q, k, v = t(hf[h + "attn.c_attn.weight"]).chunk(3, dim=0)  # (3C, C) -> 3 x (C, C)
        qb, kb, vb = hf[h + "attn.c_attn.bias"].chunk(3)  # (3C,) -> 3 x (C,)
        out |= {b + "attn.q_proj.weight": q, b + "attn.k_proj.weight": k, b + "attn.v_proj.weight": v,
                b + "attn.q_proj.bias": qb, b + "attn.k_proj.bias": kb, b + "attn.v_proj.bias": vb,
                b + "attn.o_proj.weight": t(hf[h + "attn.c_proj.weight"]),
                b + "attn.o_proj.bias": hf[h + "attn.c_proj.bias"],
                b + "ffn.up_proj.weight": t(hf[h + "mlp.c_fc.weight"]), b + "ffn.up_proj.bias": hf[h + "mlp.c_fc.bias"],
                b + "ffn.down_proj.weight": t(hf[h + "mlp.c_proj.weight"]),
                b + "ffn.down_proj.bias": hf[h + "mlp.c_proj.bias"]}
        for ours, theirs in (("attn_norm", "ln_1"), ("ffn_norm", "ln_2")):
            out |= {b + f"{ours}.weight": hf[h + f"{theirs}.weight"], b + f"{ours}.bias": hf[h + f"{theirs}.bias"]}
    return out


def gpt_from_hf(hf_model) -> GPT:
    cfg = gpt_config_from_hf(hf_model.config)
    model = GPT(cfg).to(_dtype(hf_model))
    return load_mapped(model, gpt2_key_map(_hf_state(hf_model), cfg.n_layers)).eval()


# --------------------------------------------------------------------------- LLaMA / Mistral
def _rope_scaling(hf_config):
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    kind = params.get("rope_type", "default")
    if kind == "default":
        return params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0)), None
    if kind == "linear":
        return params["rope_theta"], {"kind": "linear", "factor": params["factor"]}
    raise ValueError(f"rope_type={kind!r} is not supported by course_lib (only 'default' and 'linear').")


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


def llama_key_map(hf: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM / MistralForCausalLM state dict -> course_lib Llama: renames only."""
    out = {"tok_emb.weight": hf["model.embed_tokens.weight"], "final_norm.weight": hf["model.norm.weight"],
           "lm_head.weight": hf.get("lm_head.weight", hf["model.embed_tokens.weight"])}
    renames = {"self_attn.": "attn.", "mlp.": "ffn.", "input_layernorm.": "attn_norm.",
               "post_attention_layernorm.": "ffn_norm."}
    for key, value in hf.items():
        if key.startswith("model.layers."):
            i, rest = key[len("model.layers."):].split(".", 1)
            for theirs, ours in renames.items():
                if rest.startswith(theirs):
                    out[f"blocks.{i}.{ours}{rest[len(theirs):]}"] = value
    return out


def llama_from_hf(hf_model) -> Llama:
    cfg = llama_config_from_hf(hf_model.config)
    model = Llama(cfg).to(_dtype(hf_model))
    return load_mapped(model, llama_key_map(_hf_state(hf_model), cfg.n_layers)).eval()


# --------------------------------------------------------------------------- Mixtral
def mixtral_from_hf(hf_model) -> Llama:
    """Mixtral = Mistral whose FFNs are sparse MoE layers: the LLaMA key map, then each block's
    router and fused experts (``mlp.gate``, ``mlp.experts.*``) through moe.mixtral_block_state_dict."""
    hf_cfg = hf_model.config
    moe = LlamaMoE(n_experts=hf_cfg.num_local_experts, top_k=hf_cfg.num_experts_per_tok)
    cfg = dataclasses.replace(llama_config_from_hf(hf_cfg), moe=moe)
    model = Llama(cfg).to(_dtype(hf_model))
    tensors = llama_key_map(_hf_state(hf_model), cfg.n_layers)
    for i in range(cfg.n_layers):
        prefix = f"blocks.{i}.ffn."
        block = {k[len(prefix):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(prefix)]}
        tensors |= {prefix + k: v for k, v in mixtral_block_state_dict(block).items()}
    return load_mapped(model, tensors).eval()


# --------------------------------------------------------------------------- BERT
def bert_config_from_hf(hf_config) -> BertConfig:
    if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type={hf_config.position_embedding_type!r}: course_lib's BERT "
                         "has absolute learned positions only.")
    return BertConfig(vocab_size=hf_config.vocab_size, d_model=hf_config.hidden_size,
                      n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
                      d_ff=hf_config.intermediate_size, max_positions=hf_config.max_position_embeddings,
                      type_vocab_size=hf_config.type_vocab_size, activation=hf_config.hidden_act,
                      eps=float(hf_config.layer_norm_eps), dropout=float(hf_config.hidden_dropout_prob),
                      pad_token_id=hf_config.pad_token_id or 0)


BERT_RENAMES = {"attention.self.query.": "attn.q_proj.", "attention.self.key.": "attn.k_proj.",
                "attention.self.value.": "attn.v_proj.", "attention.output.dense.": "attn.o_proj.",
                "attention.output.LayerNorm.": "attn_norm.", "intermediate.dense.": "ffn.up_proj.",
                "output.dense.": "ffn.down_proj.", "output.LayerNorm.": "ffn_norm."}
BERT_TOP = {"embeddings.word_embeddings.": "embeddings.tok_emb.", "embeddings.position_embeddings.": "embeddings.pos_emb.",
            "embeddings.token_type_embeddings.": "embeddings.type_emb.", "embeddings.LayerNorm.": "embeddings.norm.",
            "pooler.dense.": "pooler.", "cls.predictions.transform.dense.": "mlm_head.dense.",
            "cls.predictions.transform.LayerNorm.": "mlm_head.norm.", "cls.predictions.decoder.": "mlm_head.decoder."}


def bert_key_map(hf: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """BertModel (prefix "") or BertForMaskedLM (encoder under "bert.") -> course_lib names."""
    out = {}
    for key, value in hf.items():
        ours_prefix = prefix if key.startswith(prefix) else ""
        k = key[len(ours_prefix):]
        if k.startswith("encoder.layer."):
            i, rest = k[len("encoder.layer."):].split(".", 1)
            new = next(f"blocks.{i}.{o}{rest[len(t):]}" for t, o in BERT_RENAMES.items() if rest.startswith(t))
        elif k == "cls.predictions.bias":
            continue  # the same tensor as cls.predictions.decoder.bias
        else:
            new = next(o + k[len(t):] for t, o in BERT_TOP.items() if k.startswith(t))
        out[ours_prefix + new] = value
    return out


def bert_from_hf(hf_model) -> nn.Module:
    cfg = bert_config_from_hf(hf_model.config)
    if type(hf_model).__name__ == "BertForMaskedLM":
        model, prefix = BertForMaskedLM(cfg), "bert."
    else:
        model, prefix = Bert(cfg, add_pooler=hf_model.pooler is not None), ""
    model = model.to(_dtype(hf_model))
    return load_mapped(model, bert_key_map(_hf_state(hf_model), prefix)).eval()


# --------------------------------------------------------------------------- T5
def t5_config_from_hf(hf_config) -> T5Config:
    # transformers 5 always ties T5's head to `shared` and keeps the v1.0/v1.1 difference in
    # `scale_decoder_outputs`; older versions said it with tie_word_embeddings.
    tied = getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)
    return T5Config(vocab_size=hf_config.vocab_size, d_model=hf_config.d_model, d_kv=hf_config.d_kv,
                    d_ff=hf_config.d_ff, n_layers=hf_config.num_layers, n_decoder_layers=hf_config.num_decoder_layers,
                    n_heads=hf_config.num_heads, num_buckets=hf_config.relative_attention_num_buckets,
                    max_distance=hf_config.relative_attention_max_distance, eps=float(hf_config.layer_norm_epsilon),
                    dropout=float(hf_config.dropout_rate), activation=hf_config.dense_act_fn,
                    gated=bool(hf_config.is_gated_act), tie_weights=bool(tied),
                    pad_token_id=hf_config.pad_token_id or 0,
                    decoder_start_token_id=getattr(hf_config, "decoder_start_token_id", None) or 0)


T5_RENAMES = {"layer.0.SelfAttention.q.": "attn.q_proj.", "layer.0.SelfAttention.k.": "attn.k_proj.",
              "layer.0.SelfAttention.v.": "attn.v_proj.", "layer.0.SelfAttention.o.": "attn.o_proj.",
              "layer.0.layer_norm.": "attn_norm.", "layer.1.EncDecAttention.q.": "cross_attn.q_proj.",
              "layer.1.EncDecAttention.k.": "cross_attn.k_proj.", "layer.1.EncDecAttention.v.": "cross_attn.v_proj.",
              "layer.1.EncDecAttention.o.": "cross_attn.o_proj.", "layer.1.layer_norm.": "cross_attn_norm."}
T5_FFN = {"DenseReluDense.wi.": "ffn.up_proj.", "DenseReluDense.wi_0.": "ffn.gate_proj.",
          "DenseReluDense.wi_1.": "ffn.up_proj.", "DenseReluDense.wo.": "ffn.down_proj.", "layer_norm.": "ffn_norm."}


def t5_key_map(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """T5ForConditionalGeneration -> course_lib T5. The relative bias lives in HF's first block;
    course_lib keeps it on the stack (``encoder.rel_bias``), which is where it is used."""
    out = {"shared.weight": hf["shared.weight"], "lm_head.weight": hf.get("lm_head.weight", hf["shared.weight"])}
    for stack in ("encoder", "decoder"):
        ffn_layer = "layer.2." if stack == "decoder" else "layer.1."
        out[f"{stack}.final_norm.weight"] = hf[f"{stack}.final_layer_norm.weight"]
        bias_key = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        out[f"{stack}.rel_bias.relative_attention_bias.weight"] = hf[bias_key]
        for key, value in hf.items():
            if not key.startswith(f"{stack}.block.") or key == bias_key:
                continue
            i, rest = key[len(f"{stack}.block."):].split(".", 1)
            renames = T5_RENAMES | {ffn_layer + t: o for t, o in T5_FFN.items()}  # encoder: layer.1 is the FFN
            new = next(o + rest[len(t):] for t, o in renames.items() if rest.startswith(t))
            out[f"{stack}.blocks.{i}.{new}"] = value
    return out


def t5_from_hf(hf_model) -> T5:
    model = T5(t5_config_from_hf(hf_model.config)).to(_dtype(hf_model))
    return load_mapped(model, t5_key_map(_hf_state(hf_model))).eval()


# --------------------------------------------------------------------------- dispatch
CONVERTERS = {
    "GPT2LMHeadModel": gpt_from_hf,
    "BertModel": bert_from_hf,
    "BertForMaskedLM": bert_from_hf,
    "LlamaForCausalLM": llama_from_hf,
    "MistralForCausalLM": llama_from_hf,
    "T5ForConditionalGeneration": t5_from_hf,
    "MixtralForCausalLM": mixtral_from_hf,
}


def from_hf(hf_model: nn.Module) -> nn.Module:
    """The course_lib model equal to `hf_model` (same config, same weights), in eval mode."""
    name = type(hf_model).__name__
    if name not in CONVERTERS:
        raise TypeError(f"from_hf does not know {name}; supported: {', '.join(CONVERTERS)}.")
    return CONVERTERS[name](hf_model)


# --------------------------------------------------------------------------- the way back
def _hf_config(model: nn.Module):
    """The Hugging Face config of a course_lib model (dropout 0: both sides in eval behave alike)."""
    import transformers as hf
    act = lambda a: "gelu_new" if a == "gelu_tanh" else a  # noqa: E731
    c = getattr(model, "config", None)
    if isinstance(model, GPT):
        return hf.GPT2LMHeadModel, hf.GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.max_positions, n_embd=c.d_model, n_layer=c.n_layers,
            n_head=c.n_heads, n_inner=c.d_ff, activation_function=act(c.activation), layer_norm_epsilon=c.eps,
            tie_word_embeddings=c.tie_weights, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if isinstance(model, Llama):
        if c.rope_scaling is not None and c.rope_scaling.kind != "linear":
            raise ValueError(f"to_hf: rope_scaling kind {c.rope_scaling.kind!r} has no Hugging Face equivalent here.")
        rope = {"rope_type": "default", "rope_theta": c.rope_theta}
        if c.rope_scaling is not None:
            rope = {"rope_type": "linear", "rope_theta": c.rope_theta, "factor": float(c.rope_scaling.factor)}
        kw = dict(vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff,
                  num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
                  head_dim=c.head_dim, max_position_embeddings=c.max_positions, rms_norm_eps=c.eps,
                  tie_word_embeddings=c.tie_weights, rope_parameters=rope, hidden_act=c.activation)
        if c.sliding_window is not None:
            return hf.MistralForCausalLM, hf.MistralConfig(sliding_window=c.sliding_window, **kw)
        return hf.LlamaForCausalLM, hf.LlamaConfig(attention_bias=c.attention_bias, mlp_bias=c.mlp_bias, **kw)
    if isinstance(model, (Bert, BertForMaskedLM)):
        cls = hf.BertForMaskedLM if isinstance(model, BertForMaskedLM) else hf.BertModel
        return cls, hf.BertConfig(
            vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers,
            num_attention_heads=c.n_heads, intermediate_size=c.d_ff, max_position_embeddings=c.max_positions,
            type_vocab_size=c.type_vocab_size, hidden_act=act(c.activation), layer_norm_eps=c.eps,
            pad_token_id=c.pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if isinstance(model, T5):
        ffn = ("gated-" if c.gated else "") + ("gelu" if c.activation == "gelu_tanh" else c.activation)
        return hf.T5ForConditionalGeneration, hf.T5Config(
            vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff, num_layers=c.n_layers,
            num_decoder_layers=c.n_decoder_layers, num_heads=c.n_heads, relative_attention_num_buckets=c.num_buckets,
            relative_attention_max_distance=c.max_distance, layer_norm_epsilon=c.eps, dropout_rate=0.0,
            feed_forward_proj=ffn, tie_word_embeddings=c.tie_weights, pad_token_id=c.pad_token_id,
            decoder_start_token_id=c.decoder_start_token_id)
    raise TypeError(f"to_hf knows GPT, Llama, Bert, BertForMaskedLM and T5, got {type(model).__name__}.")


def _gpt2_to_hf(ours: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """The inverse of gpt2_key_map: fuse q, k, v back into c_attn and transpose to Conv1D."""
    t = lambda w: w.t().contiguous()  # noqa: E731
    p = "transformer."
    out = {p + "wte.weight": ours["tok_emb.weight"], p + "wpe.weight": ours["pos_emb.weight"],
           p + "ln_f.weight": ours["final_norm.weight"], p + "ln_f.bias": ours["final_norm.bias"],
           "lm_head.weight": ours["lm_head.weight"]}
    for i in range(n_layers):
        h, b = f"{p}h.{i}.", f"blocks.{i}."
        qkv = [b + f"attn.{x}_proj" for x in "qkv"]
        out[h + "attn.c_attn.weight"] = t(torch.cat([ours[k + ".weight"] for k in qkv], dim=0))  # (C, 3C)
        out[h + "attn.c_attn.bias"] = torch.cat([ours[k + ".bias"] for k in qkv])  # (3C,)
        for theirs, mine in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "ffn.up_proj"), ("mlp.c_proj", "ffn.down_proj")):
            out[h + theirs + ".weight"], out[h + theirs + ".bias"] = t(ours[b + mine + ".weight"]), ours[b + mine + ".bias"]
        for theirs, mine in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm")):
            out[h + theirs + ".weight"], out[h + theirs + ".bias"] = ours[b + mine + ".weight"], ours[b + mine + ".bias"]
    return out


def to_hf(model: nn.Module) -> nn.Module:
    """The Hugging Face model equal to a course_lib model (the round trip of from_hf), in eval mode."""
    cls, config = _hf_config(model)
    hf_model = cls(config).to(next(model.parameters()).dtype).eval()
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    if isinstance(model, GPT):
        tensors = _gpt2_to_hf(ours, model.config.n_layers)
    else:  # rename-only families: run the forward key map on HF's names and invert it
        hf_state = hf_model.state_dict()
        forward = {Llama: llama_key_map, T5: t5_key_map}.get(type(model))
        mapped = forward(hf_state, *(() if forward is t5_key_map else (model.config.n_layers,))) if forward else \
            bert_key_map(hf_state, "bert." if isinstance(model, BertForMaskedLM) else "")
        where = lambda t: (t.data_ptr(), tuple(t.shape))  # noqa: E731  tied tensors share their storage
        owners: dict[tuple, list[str]] = {}
        for k, v in hf_state.items():
            owners.setdefault(where(v), []).append(k)  # a tied tensor appears under several names
        tensors = {k: ours[name] for name, v in mapped.items() for k in owners[where(v)]}
    if isinstance(model, T5) and hf_model.lm_head.weight is hf_model.shared.weight \
            and not torch.equal(ours["lm_head.weight"], ours["shared.weight"]):
        raise ValueError("this transformers version always ties T5's lm_head to `shared`, so an untied "
                         "(v1.1) head with its own values cannot be represented.")
    missing, unexpected = hf_model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise KeyError(f"to_hf: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    return hf_model
