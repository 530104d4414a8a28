"""The course map: one list, read by the start notebook, README (a test keeps README's
table equal to `markdown_table()`) and the tests."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from course_lib.tools import repo_root


@dataclass(frozen=True)
class Lesson:
    number: str
    title: str
    lesson: str  # path of the lesson notebook
    exercise: str | None  # path of the exercise notebook, if there is one
    covers: str

    @property
    def status(self) -> str:
        root = repo_root()
        have = (root / self.lesson).exists() and (self.exercise is None or (root / self.exercise).exists())
        return "ready" if have else "planned"


LESSONS = [
    Lesson("00", "Start here", "notebooks/00_start_here.ipynb", None,
           "course map, environment check, device, how widgets and checks work"),
    Lesson("01", "Attention", "notebooks/01_attention.ipynb", "exercises/01_attention.ipynb",
           "scores, softmax, why 1/√d, causal and padding masks, multi-head attention"),
    Lesson("02", "Positional encodings", "notebooks/02_positional_encodings.ipynb",
           "exercises/02_positional_encodings.ipynb", "sinusoidal, learned, RoPE, ALiBi, T5 buckets"),
    Lesson("03", "FFN, activations and norms", "notebooks/03_ffn_and_norms.ipynb",
           "exercises/03_ffn_and_norms.ipynb", "GELU, GLU family, LayerNorm, RMSNorm, pre-/post-LN"),
    Lesson("04", "KV heads and the KV cache", "notebooks/04_kv_heads_and_cache.ipynb",
           "exercises/04_kv_heads_and_cache.ipynb",
           "MHA → GQA → MQA, repeat_kv, caching keys and values"),
    Lesson("05", "Long context", "notebooks/05_long_context_attention.ipynb",
           "exercises/05_long_context_attention.ipynb",
           "tiled online softmax, sliding window, sparse and linear attention"),
    Lesson("06", "Model families", "notebooks/06_model_families.ipynb", "exercises/06_model_families.ipynb",
           "GPT, BERT, T5, LLaMA/Mistral"),
    Lesson("07", "A real pretrained BERT", "notebooks/07_pretrained_bert.ipynb", None,
           "all-MiniLM-L6-v2 loaded offline into course_lib"),
    Lesson("08", "Mixture of experts", "notebooks/08_mixture_of_experts.ipynb",
           "exercises/08_mixture_of_experts.ipynb",
           "routing, load balancing, capacity"),
    Lesson("09", "Tokenization", "notebooks/09_tokenization.ipynb", "exercises/09_tokenization.ipynb",
           "characters, bytes, BPE, WordPiece, SentencePiece/Unigram, byte fallback"),
    Lesson("10", "Training a GPT on Shakespeare", "notebooks/10_training_a_gpt.ipynb",
           "exercises/10_training_a_gpt.ipynb",
           "a ladder from bigram to GPT, AdamW, schedules, clipping, mixed precision, checkpointing"),
    Lesson("11", "Generation and the KV cache", "notebooks/11_generation.ipynb", "exercises/11_generation.ipynb",
           "sampling, top-k/top-p, cached decoding, on the shipped Shakespeare GPT"),
    Lesson("12", "Inside attention", "notebooks/12_inside_attention.ipynb", "exercises/12_inside_attention.ipynb",
           "head patterns, ablation, logit lens, rollout"),
    Lesson("13", "Experiments", "notebooks/13_experiments.ipynb", "exercises/13_experiments.ipynb",
           "length extrapolation, RoPE scaling (PI, NTK), scaling laws, ablations"),
    Lesson("14", "Beyond the standard block", "notebooks/14_beyond.ipynb", "exercises/14_beyond.ipynb",
           "selective state spaces (Mamba), a Vision Transformer"),
    Lesson("15", "Efficiency: routing, parallel blocks, int8, export", "notebooks/15_efficiency.ipynb",
           "exercises/15_efficiency.ipynb",
           "mixture-of-depths, parallel attention+FFN, int8 per-channel quantisation, ONNX export"),
    Lesson("16", "Capstone: your own LLaMA, trained", "exercises/16_capstone.ipynb", "exercises/16_capstone.ipynb",
           "you write softmax, cross-entropy, Linear, RoPE, a KV cache, GQA attention, the block and model, "
           "AdamW, a resumable training loop, byte-level BPE and cached sampling; then train your model "
           "on Shakespeare and make it talk"),
]


def markdown_table() -> str:
    rows = ["| # | lesson | covers | exercise | status |", "|---|---|---|---|---|"]
    for l in LESSONS:
        ex = f"[{Path(l.exercise).name}]({l.exercise})" if l.exercise else "—"
        rows.append(f"| {l.number} | [{l.title}]({l.lesson}) | {l.covers} | {ex} | {l.status} |")
    return "\n".join(rows)
