"""The families side by side, described from their configs: what each choice is, as data, so
lesson 06 can print a difference table and draw each architecture from the config itself."""
from __future__ import annotations

from course_lib.models.bert import BertConfig
from course_lib.models.gpt import GPTConfig
from course_lib.models.llama import LlamaConfig
from course_lib.models.sizes import param_count
from course_lib.models.t5 import T5Config

ROWS = ("layout", "layers", "attention", "heads", "positions", "norm", "placement", "ffn", "biases", "lm head")


def _heads(n_heads: int, n_kv: int, head_dim: int) -> str:
    if n_kv == n_heads:
        return f"MHA {n_heads}×{head_dim}"
    return f"{'MQA' if n_kv == 1 else 'GQA'} {n_heads}q/{n_kv}kv ×{head_dim}"


def describe(cfg) -> dict[str, str]:
    """One string per design choice (the keys of ROWS) plus 'name' and 'params'."""
    if isinstance(cfg, GPTConfig):
        d = dict(name="GPT-2", layout="decoder-only", layers=f"{cfg.n_layers}", attention="causal self",
                 heads=_heads(cfg.n_heads, cfg.n_heads, cfg.head_dim), positions="learned absolute",
                 norm="LayerNorm", placement="pre-LN + final", ffn=f"{cfg.activation} {cfg.d_ff}",
                 biases="yes" if cfg.bias else "no", **{"lm head": "tied" if cfg.tie_weights else "untied"})
    elif isinstance(cfg, BertConfig):
        d = dict(name="BERT", layout="encoder-only", layers=f"{cfg.n_layers}", attention="bidirectional self",
                 heads=_heads(cfg.n_heads, cfg.n_heads, cfg.d_model // cfg.n_heads),
                 positions="learned absolute + segment", norm="LayerNorm", placement="post-LN",
                 ffn=f"{cfg.activation} {cfg.d_ff}", biases="yes", **{"lm head": "MLM, tied (+ pooler)"})
    elif isinstance(cfg, T5Config):
        ffn = f"{'gated-' if cfg.gated else ''}{cfg.activation} {cfg.d_ff}"
        d = dict(name=f"T5 {cfg.version}", layout="encoder-decoder", layers=f"{cfg.n_layers}+{cfg.n_decoder_layers}",
                 attention="enc bidir; dec causal + cross", heads=_heads(cfg.n_heads, cfg.n_heads, cfg.head_dim),
                 positions="relative bias (buckets)", norm="RMS (T5)", placement="pre-LN + final", ffn=ffn,
                 biases="no", **{"lm head": "tied, ×d^-0.5" if cfg.tie_weights else "untied"})
    elif isinstance(cfg, LlamaConfig):
        window = "" if cfg.sliding_window is None else f", window {cfg.sliding_window}"
        d = dict(name=cfg.family, layout="decoder-only", layers=f"{cfg.n_layers}", attention=f"causal self{window}",
                 heads=_heads(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim), positions=f"RoPE θ={cfg.rope_theta:g}",
                 norm="RMSNorm", placement="pre-LN + final", ffn=f"SwiGLU {cfg.d_ff}" + (" (MoE)" if cfg.moe else ""),
                 biases="yes" if cfg.attention_bias or cfg.mlp_bias else "no",
                 **{"lm head": "tied" if cfg.tie_weights else "untied"})
    else:
        raise TypeError(f"describe knows GPTConfig, BertConfig, T5Config and LlamaConfig, got {type(cfg).__name__}.")
    d["params"] = f"{param_count(cfg).total / 1e6:,.1f}M"
    return d


def difference_table(configs: dict) -> str:
    """A fixed-width text table, one column per named config, one row per design choice."""
    descs = {name: describe(cfg) for name, cfg in configs.items()}
    rows = ("params",) + ROWS
    widths = [max(len(r) for r in rows)] + [max(len(n), *(len(d[r]) for r in rows)) for n, d in descs.items()]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(["", *descs]), line(["-" * w for w in widths])]
    out += [line([r, *(d[r] for d in descs.values())]) for r in rows]
    return "\n".join(out)
