"""How big is each family, from its config alone (no weights): parameter counts and a
FLOPs-per-token estimate.

Parameter counts add up the matrices each config implies, part by part; tests check them
against instantiated course_lib models and against the published totals below.

FLOPs per token follow Kaplan et al. 2020 (Table 1): a forward pass costs about 2 FLOPs per
weight a token meets (one multiply, one add), C_fwd ≈ 2·N + 2·n_layers·n_ctx·d_attn, where N
excludes the embedding tables and the second term is attention's QKᵀ and AV over n_ctx keys.
Training (forward + backward) costs three times that: ≈ 6·N + 6·n_layers·n_ctx·d_attn. We add
the LM head's matmul (2·C·V per token), which Kaplan et al. leave out but which is large for
small models with big vocabularies.
"""
from __future__ import annotations

from dataclasses import dataclass

from course_lib.config import check_positive_values
from course_lib.ffn import ffn_params
from course_lib.models.bert import BertConfig
from course_lib.models.gpt import GPTConfig
from course_lib.models.llama import LlamaConfig, mistral_config
from course_lib.models.t5 import T5Config, t5_v1_1_config


@dataclass
class ParamCount:
    """Parameters by part: course_lib's one parameter-count type, for every family, the MoE
    decoders of lesson 08 and the experiments of lesson 13. ``head`` counts only an *untied*
    output matrix (a tied one is the embedding, already counted). ``inactive`` is the part of
    ``blocks`` that one token's forward pass skips: the experts its router does not pick
    (0 for a dense model)."""
    embeddings: int  # token (and learned position) tables
    blocks: int
    head: int = 0
    other: int = 0  # final norms, pooler, MLM transform, relative-bias tables
    inactive: int = 0

    @property
    def total(self) -> int:
        """Every weight the model stores."""
        return self.embeddings + self.blocks + self.head + self.other

    @property
    def non_embedding(self) -> int:
        """Kaplan et al. 2020 §1.1's N: everything but the embedding tables."""
        return self.total - self.embeddings

    @property
    def active(self) -> int:
        """The weights one token's forward pass uses (Mixtral: 12.9 B of 46.7 B)."""
        return self.total - self.inactive


def attention_params(d_model: int, n_heads: int, head_dim: int, n_kv_heads: int | None = None,
                     bias: bool = False) -> int:
    """q and o: d_model × H·D each; k and v: d_model × H_kv·D each (GQA shrinks them)."""
    n_kv = n_heads if n_kv_heads is None else n_kv_heads
    weights = 2 * d_model * n_heads * head_dim + 2 * d_model * n_kv * head_dim
    biases = (n_heads * head_dim + 2 * n_kv * head_dim + d_model) if bias else 0
    return weights + biases


def gpt_params(cfg: GPTConfig) -> ParamCount:
    C = cfg.d_model
    block = attention_params(C, cfg.n_heads, cfg.head_dim, bias=cfg.bias) + ffn_params(C, cfg.d_ff, bias=cfg.bias)
    block += 2 * 2 * C  # two LayerNorms (gain and bias)
    return ParamCount(embeddings=(cfg.vocab_size + cfg.max_positions) * C, blocks=cfg.n_layers * block,
                      head=0 if cfg.tie_weights else cfg.vocab_size * C, other=2 * C)


def bert_params(cfg: BertConfig, pooler: bool = True, mlm_head: bool = False) -> ParamCount:
    C = cfg.d_model
    block = attention_params(C, cfg.n_heads, C // cfg.n_heads, bias=True) + ffn_params(C, cfg.d_ff) + 2 * 2 * C
    embeddings = (cfg.vocab_size + cfg.max_positions + cfg.type_vocab_size) * C + 2 * C  # + embedding LayerNorm
    other = (C * C + C if pooler else 0) + (C * C + C + 2 * C + cfg.vocab_size if mlm_head else 0)
    return ParamCount(embeddings=embeddings, blocks=cfg.n_layers * block, head=0, other=other)


def t5_params(cfg: T5Config) -> ParamCount:
    C, att = cfg.d_model, attention_params(cfg.d_model, cfg.n_heads, cfg.head_dim)
    ffn = ffn_params(C, cfg.d_ff, gated=cfg.gated, bias=False)
    enc = cfg.n_layers * (att + ffn + 2 * C)
    dec = cfg.n_decoder_layers * (2 * att + ffn + 3 * C)  # + cross-attention and its norm
    rel = 2 * cfg.num_buckets * cfg.n_heads  # one table per stack, shared by its layers
    return ParamCount(embeddings=cfg.vocab_size * C, blocks=enc + dec,
                      head=0 if cfg.tie_weights else cfg.vocab_size * C, other=2 * C + rel)


def llama_params(cfg: LlamaConfig) -> ParamCount:
    C = cfg.d_model
    block = attention_params(C, cfg.n_heads, cfg.head_dim, cfg.n_kv_heads, bias=cfg.attention_bias)
    block += ffn_params(C, cfg.d_ff, gated=True, bias=cfg.mlp_bias) + 2 * C  # two RMSNorm gains
    return ParamCount(embeddings=cfg.vocab_size * C, blocks=cfg.n_layers * block,
                      head=0 if cfg.tie_weights else cfg.vocab_size * C, other=C)


def param_count(cfg) -> ParamCount:
    """Parameters implied by any family's config. The 2025 families count themselves in their own
    files (imported here, inside the function: they import ParamCount from this one); Qwen3 and
    OLMo 2 configs are LlamaConfigs too, so they are tried before it."""
    from course_lib.models.deepseek import DeepSeekV3Config, deepseek_v3_params
    from course_lib.models.gemma3 import Gemma3Config, gemma3_params
    from course_lib.models.gpt_oss import GptOssConfig, gpt_oss_params
    from course_lib.models.olmo2 import Olmo2Config, olmo2_params
    from course_lib.models.qwen3 import Qwen3Config, qwen3_params

    families = ((DeepSeekV3Config, deepseek_v3_params), (Gemma3Config, gemma3_params), (GptOssConfig, gpt_oss_params),
                (Olmo2Config, olmo2_params), (Qwen3Config, qwen3_params), (GPTConfig, gpt_params),
                (BertConfig, bert_params), (T5Config, t5_params), (LlamaConfig, llama_params))
    for kind, fn in families:
        if isinstance(cfg, kind):
            return fn(cfg)
    names = ", ".join(kind.__name__ for kind, _ in families)
    raise TypeError(f"param_count knows {names}; got {type(cfg).__name__}.")


def moe_params(vocab_size: int, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int,
               n_experts: int, top_k: int, n_shared_experts: int = 0, tied_embeddings: bool = False,
               head_dim: int | None = None) -> ParamCount:
    """A LLaMA-style decoder whose FFNs are MoE layers (bias-free projections, RMSNorm, SwiGLU
    experts of width d_ff, a router per layer), from its config numbers (lesson 08)."""
    check_positive_values("moe_params", n_experts=n_experts, top_k=top_k)
    D = head_dim or d_model // n_heads
    attn = attention_params(d_model, n_heads, D, n_kv_heads)  # q_proj, o_proj; k_proj, v_proj
    expert = ffn_params(d_model, d_ff, gated=True, bias=False)  # gate_proj, up_proj, down_proj
    per_layer = attn + n_experts * d_model + 2 * d_model  # + router + two RMSNorm gains
    per_layer += (n_experts + n_shared_experts) * expert
    return ParamCount(embeddings=vocab_size * d_model, blocks=n_layers * per_layer,
                      head=0 if tied_embeddings else vocab_size * d_model, other=d_model,  # final norm
                      inactive=n_layers * (n_experts - top_k) * expert)


def moe_params_from_hf(config) -> ParamCount:
    """`moe_params` of a Hugging Face ``MixtralConfig`` (or any config with the same fields)."""
    return moe_params(config.vocab_size, config.hidden_size, config.num_hidden_layers,
                      config.num_attention_heads, config.num_key_value_heads, config.intermediate_size,
                      config.num_local_experts, config.num_experts_per_tok,
                      tied_embeddings=config.tie_word_embeddings, head_dim=getattr(config, "head_dim", None))


def _attention_dims(cfg) -> tuple[int, int, int]:
    """(layers that attend, d_attn = H·D, vocabulary) of a config."""
    if isinstance(cfg, T5Config):  # decoder layers attend twice (self + cross)
        return cfg.n_layers + 2 * cfg.n_decoder_layers, cfg.n_heads * cfg.head_dim, cfg.vocab_size
    head_dim = getattr(cfg, "head_dim", None) or cfg.d_model // cfg.n_heads
    return cfg.n_layers, cfg.n_heads * head_dim, cfg.vocab_size


def flops_per_token(cfg, n_ctx: int, training: bool = True, lm_head: bool = True) -> float:
    """≈ (6 or 2)·(N_non-embedding + n_layers·n_ctx·d_attn) + the head, per token (Kaplan 2020)."""
    check_positive_values("flops_per_token", n_ctx=n_ctx)  # the number of tokens attended to
    counts = param_count(cfg)
    n_layers, d_attn, vocab = _attention_dims(cfg)
    factor = 6 if training else 2
    non_embedding = counts.blocks + counts.other  # an untied head is counted by the head term
    head = cfg.d_model * vocab if lm_head else 0
    return factor * (non_embedding + n_layers * n_ctx * d_attn + head)


# Published configurations (each model's config.json, typed in) and the totals their model
# cards / papers report. BERT-base counts the bare encoder with its pooler (BertModel).
PUBLISHED = {
    "GPT-2 small": (GPTConfig(), 124_439_808),
    "BERT-base": (BertConfig(), 109_482_240),
    "T5-small (v1.0)": (T5Config(), 60_506_624),
    "T5 v1.1-small": (t5_v1_1_config(), 76_961_152),
    "LLaMA-2-7B": (LlamaConfig(), 6_738_415_616),
    "Mistral-7B-v0.1": (mistral_config(), 7_241_732_096),
}
