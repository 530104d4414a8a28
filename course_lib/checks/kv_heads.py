"""Checks for exercise 04 beyond `repeat_kv`: turning an MHA checkpoint into GQA by mean-pooling
(Ainslie et al. 2023, §2.1), the KV-cache size read off a config.json, the largest batch that fits
in memory, and GQA attention that never copies K and V to every query head.

Each misconception is a tiny re-creation of the mistake; the check names the one whose outputs
equal the learner's. The learner's code is kept here as text (`*_CODE`) and printed as the solution."""
from __future__ import annotations

import math
import numbers

import torch
from torch.overrides import TorchFunctionMode

from course_lib import attention as ref_attn
from course_lib import kv_cache as ref_kv
from .cases import Case, grade_function, randn
from .core import Mismatch, assert_unmodified, call_learner, compare, diagnose, register, snapshot
from .track_tensors import isolated

IMPORTS = "import math\n\nimport torch\n"

MHA_TO_GQA_CODE = '''
def mha_to_gqa(k_proj_weight, v_proj_weight, n_heads, n_kv_heads):
    n_rep = n_heads // n_kv_heads  # query heads per group = MHA heads pooled into one K/V head
    C = k_proj_weight.size(1)
    pooled = []
    for w in (k_proj_weight, v_proj_weight):  # (H*D, C): rows h*D .. h*D+D-1 belong to head h
        w = w.view(n_kv_heads, n_rep, -1, C)  # (H_kv, n_rep, D, C): whole heads, consecutive groups
        w = w.mean(dim=1)  # (H_kv, D, C): the mean of each group's heads
        pooled.append(w.reshape(-1, C))  # (H_kv*D, C)
    return pooled[0], pooled[1]
'''

KV_CACHE_BYTES_CODE = '''
def kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=2):
    n_layers = config["num_hidden_layers"]
    n_heads = config["num_attention_heads"]
    n_kv_heads = config.get("num_key_value_heads") or n_heads  # missing: every query head has its own (MHA)
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads  # the *query* heads split hidden_size
    per_token = 2 * n_layers * n_kv_heads * head_dim  # K and V, in every layer, for every K/V head
    return per_token * seq_len * batch * bytes_per_value
'''

MAX_BATCH_CODE = '''
def max_batch(config, seq_len, memory_bytes, weight_bytes, bytes_per_value=2):
    per_sequence = kv_cache_bytes(config, seq_len, 1, bytes_per_value)  # one sequence's cache
    free = memory_bytes - weight_bytes  # what the weights leave for the cache
    if free < per_sequence:
        return 0  # not even one sequence fits (or not even the weights)
    return int(free // per_sequence)  # whole sequences only: round down
'''

GQA_ATTENTION_CODE = '''
def gqa_attention(q, k, v, mask=None):
    B, H, T, D = q.shape
    H_kv, S = k.size(1), k.size(2)
    n_rep = H // H_kv
    q = q.reshape(B, H_kv, n_rep * T, D)  # (B, H_kv, n_rep*T, D): a group's query heads, one after another
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H_kv, n_rep*T, S): each key read once per group
    scores = scores.view(B, H_kv, n_rep, T, S)  # (B, H_kv, n_rep, T, S): the heads apart again
    if mask is not None:
        scores = scores.masked_fill(~mask[..., None, :, :], float("-inf"))  # mask (.., T, S) -> (.., 1, T, S)
    scores = scores - scores.amax(dim=-1, keepdim=True)  # a stable softmax over the keys
    weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)  # (B, H_kv, n_rep, T, S)
    out = weights.view(B, H_kv, n_rep * T, S) @ v  # (B, H_kv, n_rep*T, D)
    return out.view(B, H, T, D)  # (B, H, T, D): head h = group h // n_rep
'''


def solution_text(*pieces: str) -> str:
    return IMPORTS + "".join("\n" + p for p in pieces)


def _number(out, what: str) -> float:
    """A learner's returned number, or a Mismatch that says what came back instead."""
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        raise Mismatch(f"{what} should be a Python number, got a tensor: return int(...) or a plain expression")
    if isinstance(out, bool) or not isinstance(out, numbers.Real):
        hint = " (did you forget a `return`?)" if out is None else ""
        raise Mismatch(f"{what} should be a number, got {type(out).__name__}{hint}")
    if not math.isfinite(out):
        raise Mismatch(f"{what} is {out}, expected a finite number")
    return out


def _grade_numbers(learner, cases, reference, variants, what, extra=None):
    """Like grade_function, for functions that return one number: exact (integral) answers."""
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    refs = [reference(*c.args, **c.kwargs) for c in cases]
    outs = [_number(call_learner(learner, *c.args, **c.kwargs), what) for c in cases]
    for case, out, want in zip(cases, outs, refs):
        if out != want:
            key = None
            for name, make in {**variants, **(extra or {})}.items():
                try:
                    theirs = [make(*c.args, **c.kwargs) for c in cases]
                except Exception:  # noqa: BLE001 - a variant that cannot run on a case just doesn't match
                    continue
                if theirs != refs and theirs == outs:
                    key = name.split(":")[0]
                    break
            raise Mismatch(f"{what} is {out:,}, expected {want:,}", f"case: {case.label}", key)
    return len(cases)


# ------------------------------------------------------------------ MHA -> GQA by mean-pooling
def _pool(w, n_heads, n_kv_heads, kind="mean"):
    C = w.size(1)
    n_rep = n_heads // n_kv_heads
    if kind == "rows_not_heads":
        return w.reshape(-1, n_rep, C).mean(1)  # (H·D, C) -> (H·D/n_rep, n_rep, C) -> (H_kv·D, C)
    if kind == "strided_groups":
        return w.reshape(n_rep, n_kv_heads, -1, C).mean(0).reshape(-1, C)  # (n_rep, H_kv, D, C) -> (H_kv·D, C)
    heads = w.reshape(n_kv_heads, n_rep, -1, C)  # (H_kv, n_rep, D, C)
    if kind == "sum_not_mean":
        return heads.sum(1).reshape(-1, C)  # (H_kv, n_rep, D, C) -> (H_kv·D, C)
    if kind == "first_head_only":
        return heads[:, 0].reshape(-1, C)  # (H_kv, D, C) -> (H_kv·D, C)
    return heads.mean(1).reshape(-1, C)  # (H_kv, D, C) -> (H_kv·D, C)


def _mha_to_gqa_reference(k_w, v_w, n_heads, n_kv_heads, kind="mean"):
    return _pool(k_w, n_heads, n_kv_heads, kind), _pool(v_w, n_heads, n_kv_heads, kind)


MHA_TO_GQA_MISCONCEPTIONS = {
    "rows_not_heads": "neighbouring *rows* were averaged (w.view(-1, n_rep, C).mean(1)), which mixes the D rows "
                      "inside one head. A head is a block of D consecutive rows: average whole heads, "
                      "w.view(n_kv_heads, n_rep, D, C).mean(1).",
    "strided_groups": "the groups are strided (heads g, g + n_kv_heads, ...), but K/V head j serves the "
                      "*consecutive* query heads j·n_rep .. j·n_rep + n_rep - 1, the order repeat_kv uses.",
    "sum_not_mean": "the heads of a group were summed; Ainslie et al. take their mean, so that a group of "
                    "identical heads pools to that same head.",
    "first_head_only": "each group keeps only its first head. That is one of the alternatives Ainslie et al. "
                       "compared (§2.1 and their ablation); the exercise asks for the mean of the group.",
    "mutates_input": "the MHA weights were changed in place; build new tensors (the checkpoint stays as it was).",
}


@register("check_mha_to_gqa", points=3, minutes=15, reference=solution_text(MHA_TO_GQA_CODE),
          misconceptions=MHA_TO_GQA_MISCONCEPTIONS, forbid=("course_lib",),
          hint="k_proj.weight is (H*D, C): head h owns rows h*D .. h*D + D - 1. Group g pools the n_rep = H // H_kv "
               "consecutive heads g*n_rep .. g*n_rep + n_rep - 1. Return (k, v), each (H_kv*D, C).",
          idea="Give the heads and the groups their own axes: w.view(n_kv_heads, n_rep, D, C) with D = rows // n_heads; "
               "the mean over axis 1 is (H_kv, D, C); reshape to (H_kv*D, C). Same for v.")
@isolated
def check_mha_to_gqa(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    g = torch.Generator().manual_seed(41)
    cases = []
    for label, H, H_kv, D, C, dtype in [("8 heads -> 2 groups, D=4, C=16", 8, 2, 4, 16, torch.float32),
                                        ("6 heads -> 3 groups, D=2, C=5", 6, 3, 2, 5, torch.float32),
                                        ("4 heads -> 1 (MQA), D=3, C=6", 4, 1, 3, 6, torch.float32),
                                        ("4 heads -> 4 (nothing to pool), D=2, C=8", 4, 4, 2, 8, torch.float32),
                                        ("6 heads -> 2 groups, float64", 6, 2, 4, 4, torch.float64)]:
        cases.append(Case(f"k_proj_weight, v_proj_weight ({H * D}, {C}): {label}",
                          (randn(H * D, C, gen=g, dtype=dtype), randn(H * D, C, gen=g, dtype=dtype), H, H_kv)))
    refs, outs = [], []
    for case in cases:
        refs.append(torch.cat(_mha_to_gqa_reference(*case.args)))
        before = snapshot(case.args)
        out = call_learner(learner, *case.args)
        try:
            assert_unmodified(case.args, before, ("k_proj_weight", "v_proj_weight"))
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}", "mutates_input") from None
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            got = "None (did you forget a `return`?)" if out is None else type(out).__name__
            raise Mismatch(f"return the pair (k_weight, v_weight); got {got}", f"case: {case.label}")
        half = refs[-1].size(0) // 2
        for part, want, name in zip(out, (refs[-1][:half], refs[-1][half:]), ("k", "v")):
            try:
                compare(part, want, f"the pooled {name}_proj weight")
            except Mismatch as mm:
                if "values differ" not in mm.reason and "NaN" not in mm.reason and "inf" not in mm.reason:
                    raise Mismatch(mm.reason, f"case: {case.label}") from None  # a type, shape or dtype problem
        outs.append(torch.cat([out[0], out[1]]))
    for case, out, want in zip(cases, outs, refs):
        try:
            half = want.size(0) // 2
            compare(out[:half], want[:half], "the pooled k_proj weight")
            compare(out[half:], want[half:], "the pooled v_proj weight")
        except Mismatch as mm:
            variants = {k: (lambda k=k: [torch.cat(_mha_to_gqa_reference(*c.args, kind=k)) for c in cases])
                        for k in MHA_TO_GQA_MISCONCEPTIONS if k != "mutates_input"}
            raise Mismatch(mm.reason, f"case: {case.label}", diagnose(outs, variants, refs)) from None
    return len(cases)


# ------------------------------------------------------------------ the KV cache, read off a config.json
def _kv_variant(config, seq_len, batch=1, bytes_per_value=2, *, kind=""):
    H = config["num_attention_heads"]
    H_kv = config.get("num_key_value_heads") or H
    D = config.get("head_dim") or config["hidden_size"] // H
    layers = config["num_hidden_layers"]
    if kind == "no_factor_2":
        return ref_kv.kv_cache_bytes(layers, H_kv, D, seq_len, batch, bytes_per_value) // 2
    if kind == "query_heads":
        H_kv = H
    if kind == "head_dim_ignored":
        D = config["hidden_size"] // H
    if kind == "no_layers":
        layers = 1
    return ref_kv.kv_cache_bytes(layers, H_kv, D, seq_len, batch, bytes_per_value)


def _config(layers, hidden, heads, kv_heads=None, head_dim=None):
    c = {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads}
    if kv_heads is not None:
        c["num_key_value_heads"] = kv_heads
    if head_dim is not None:
        c["head_dim"] = head_dim
    return c


# the published config.json numbers (course_lib.kv_cache.PUBLISHED_CONFIGS has the same), plus a
# config that gives head_dim explicitly (Gemma-7B's: 16 heads of 256 in a width of 3072) and an
# old-style one without num_key_value_heads (Hugging Face then uses num_attention_heads)
CONFIGS = {
    "LLaMA-2-7B": _config(32, 4096, 32, 32),
    "LLaMA-2-70B": _config(80, 8192, 64, 8),
    "Mistral-7B-v0.1": _config(32, 4096, 32, 8),
    "Llama-3-8B": _config(32, 4096, 32, 8),
    "Gemma-7B": _config(28, 3072, 16, 16, head_dim=256),
    "no num_key_value_heads (LLaMA-1 style)": _config(2, 64, 4),
}

KV_CACHE_BYTES_MISCONCEPTIONS = {
    "no_factor_2": "the cache holds a key AND a value per token, layer and K/V head: multiply by 2.",
    "query_heads": "the size came out as if every query head had its own K/V head. The cache stores "
                   "num_key_value_heads heads (GQA keeps fewer K/V heads than query heads, that is its point), each "
                   "head_dim = hidden_size // num_attention_heads wide (hidden_size // num_key_value_heads gives the "
                   "same wrong size).",
    "head_dim_ignored": "when config.json gives head_dim, use it: some models have heads of another width than "
                        "hidden_size // num_attention_heads (Gemma-7B: 16 heads of 256 in a width of 3072, not 192).",
    "no_layers": "every layer has its own cache: multiply by num_hidden_layers.",
}


@register("check_kv_cache_bytes", points=2, minutes=10, reference=solution_text(KV_CACHE_BYTES_CODE),
          misconceptions=KV_CACHE_BYTES_MISCONCEPTIONS, forbid=("course_lib",),
          hint="Per token the cache holds, in every layer, one key and one value vector of head_dim numbers for each "
               "K/V head. Read the four numbers from the config dict; mind the two optional keys.",
          idea="2 * num_hidden_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_value, with n_kv_heads = "
               "config.get('num_key_value_heads') or num_attention_heads and head_dim = config.get('head_dim') or "
               "hidden_size // num_attention_heads.")
@isolated
def check_kv_cache_bytes(learner):
    cases = [Case(f"{name}, seq_len=4096, batch=1, fp16", (c, 4096)) for name, c in CONFIGS.items()]
    cases += [
        Case("LLaMA-2-70B, seq_len=1000, batch=8, fp32 (4 bytes)", (CONFIGS["LLaMA-2-70B"], 1000, 8, 4)),
        Case("Mistral-7B-v0.1, seq_len=32768, batch=3, int8 (1 byte)", (CONFIGS["Mistral-7B-v0.1"], 32768),
             {"batch": 3, "bytes_per_value": 1}),
        Case("a tiny GQA config, 7 tokens, batch 2, 4-bit (0.5 bytes)", (_config(3, 48, 6, 2), 7, 2, 0.5)),
    ]
    variants = {k: (lambda *a, k=k, **kw: _kv_variant(*a, **kw, kind=k)) for k in KV_CACHE_BYTES_MISCONCEPTIONS}
    return _grade_numbers(learner, cases, _kv_variant, variants, "the cache size in bytes")


# ------------------------------------------------------------------ the largest batch that fits
def _max_batch_variant(config, seq_len, memory_bytes, weight_bytes, bytes_per_value=2, *, kind="", cache=_kv_variant):
    per = cache(config, seq_len, 1, bytes_per_value)
    free = memory_bytes if kind == "weights_ignored" else memory_bytes - weight_bytes
    if kind == "rounds_up":
        return max(0, int(-(-free // per)))
    if kind == "exact_fit_excluded":  # the largest b with b * per < free
        return max(0, int(-(-free // per)) - 1)
    n = int(free // per)
    return n if kind == "negative_when_full" else max(0, n)


GIB = 2 ** 30
MAX_BATCH_MISCONCEPTIONS = {
    "rounds_up": "a part of a sequence is not a sequence: round the number down (// or math.floor), never up.",
    "weights_ignored": "the weights live in the same memory: subtract weight_bytes before dividing.",
    "negative_when_full": "when the weights alone exceed the memory no sequence fits: return 0, not a negative batch.",
    "exact_fit_excluded": "a batch that fills the memory exactly still fits (<=, not <).",
    "cache_bytes_wrong": "the per-sequence cache size is wrong: pass check_kv_cache_bytes first and use your "
                         "kv_cache_bytes(config, seq_len, 1, bytes_per_value).",
}


@register("check_max_batch", points=2, minutes=10, reference=solution_text(KV_CACHE_BYTES_CODE, MAX_BATCH_CODE),
          misconceptions=MAX_BATCH_MISCONCEPTIONS, forbid=("course_lib",),
          hint="What the weights leave over, divided by what one sequence's cache needs, rounded down; never below 0.",
          idea="per = kv_cache_bytes(config, seq_len, 1, bytes_per_value); free = memory_bytes - weight_bytes; "
               "return 0 if free < per else int(free // per).")
@isolated
def check_max_batch(learner):
    tiny = _config(2, 32, 4, 2)
    per_tiny = _kv_variant(tiny, 10)
    cases = [
        Case("LLaMA-2-7B, 4096 tokens, 80 GiB, 14e9 bytes of weights", (CONFIGS["LLaMA-2-7B"], 4096, 80 * GIB, 14e9)),
        Case("Mistral-7B-v0.1, 4096 tokens, 80 GiB, 14.5e9 bytes of weights",
             (CONFIGS["Mistral-7B-v0.1"], 4096, 80 * GIB, 14.5e9)),
        Case("Llama-3-8B, 8192 tokens, 24 GiB, 16e9 bytes of weights, int8 cache",
             (CONFIGS["Llama-3-8B"], 8192, 24 * GIB, 16e9), {"bytes_per_value": 1}),
        Case(f"a tiny config whose cache fits exactly 5 times ({per_tiny} bytes each)",
             (tiny, 10, 1000 + 5 * per_tiny, 1000)),
        Case("LLaMA-2-70B: 140e9 bytes of weights on 80 GiB (the weights alone do not fit)",
             (CONFIGS["LLaMA-2-70B"], 4096, 80 * GIB, 140e9)),
        Case("Gemma-7B, 8192 tokens, 40 GiB, 17e9 bytes of weights", (CONFIGS["Gemma-7B"], 8192, 40 * GIB, 17e9)),
    ]
    variants = {k: (lambda *a, k=k, **kw: _max_batch_variant(*a, **kw, kind=k))
                for k in MAX_BATCH_MISCONCEPTIONS if k != "cache_bytes_wrong"}
    wrong_cache = {f"cache_bytes_wrong:{k}": (lambda *a, k=k, **kw: _max_batch_variant(
        *a, **kw, cache=lambda *b, **kb: _kv_variant(*b, **kb, kind=k))) for k in KV_CACHE_BYTES_MISCONCEPTIONS}
    return _grade_numbers(learner, cases, _max_batch_variant, variants, "the batch", wrong_cache)


# ------------------------------------------------------------------ GQA attention without copying K and V
def _gqa_reference(q, k, v, mask=None):
    n_rep = q.size(1) // k.size(1)
    return ref_attn.scaled_dot_product_attention(q, ref_attn.repeat_kv(k, n_rep), ref_attn.repeat_kv(v, n_rep), mask)


def _gqa_strided(q, k, v, mask=None):
    n_rep = q.size(1) // k.size(1)
    return ref_attn.scaled_dot_product_attention(q, k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1), mask)


class _LargestNewTensor(TorchFunctionMode):
    """Notes the largest storage any torch call of the learner's code returns (views share their base's)."""

    def __init__(self):
        super().__init__()
        self.nbytes, self.by = 0, ""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                try:
                    n = t.untyped_storage().nbytes()
                except Exception:  # noqa: BLE001 - a tensor without storage holds no copy
                    continue
                if n > self.nbytes:
                    self.nbytes, self.by = n, getattr(func, "__name__", str(func))
        return out


GQA_ATTENTION_MISCONCEPTIONS = {
    "strided_groups": "query head h was paired with K/V head h % H_kv (strided groups, as x.repeat gives), but "
                      "K/V head j serves the consecutive query heads j·n_rep .. j·n_rep + n_rep - 1: group with "
                      "q.view(B, H_kv, n_rep, T, D), H_kv before n_rep.",
    "materialises": "K or V was copied once per query head (expand + reshape, repeat, indexing or repeat_kv make a "
                    "tensor n_rep times the size of k), which is what this exercise avoids. Bring the queries to the "
                    "keys instead: q.reshape(B, H_kv, n_rep * T, D) @ k.transpose(-2, -1).",
    "mutates_input": "an input (q, k, v or mask) was changed in place; compute new tensors instead.",
}


def _causal(T, S):
    """(T, S): the T new queries are the last T of S positions; query i sees keys j <= S - T + i."""
    return torch.ones(T, S, dtype=torch.bool).tril(S - T)


@register("check_gqa_attention", points=3, minutes=25, reference=solution_text(GQA_ATTENTION_CODE),
          misconceptions=GQA_ATTENTION_MISCONCEPTIONS,
          forbid=("torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention",
                  "torch.nn.functional.multi_head_attention_forward", "torch.repeat_interleave",
                  "torch.Tensor.repeat_interleave", "course_lib"),
          hint="Do not bring K and V to the H query heads; bring the query heads to K and V: the n_rep query heads "
               "of group j are consecutive, so q splits into (B, H_kv, n_rep, T, D) without a copy.",
          idea="q.reshape(B, H_kv, n_rep * T, D) @ k.transpose(-2, -1) gives (B, H_kv, n_rep*T, S) scores. View them "
               "as (B, H_kv, n_rep, T, S) to apply mask[..., None, :, :] and the softmax, multiply by v the same "
               "way, and view the result as (B, H, T, D).")
@isolated
def check_gqa_attention(learner):
    g = torch.Generator().manual_seed(44)

    def qkv(B, H, H_kv, T, S, D, dtype=torch.float32):
        return (randn(B, H, T, D, gen=g, dtype=dtype), randn(B, H_kv, S, D, gen=g, dtype=dtype),
                randn(B, H_kv, S, D, gen=g, dtype=dtype))

    padding = torch.ones(2, 1, 1, 9, dtype=torch.bool)  # (B, 1, 1, S): row 1's first 3 keys are padding
    padding[1, :, :, :3] = False
    per_batch = torch.rand(2, 1, 4, 6, generator=g) < 0.6  # (B, 1, T, S): any pattern, the same for every head
    per_batch[..., 0] = True  # every query sees at least one key
    big = qkv(1, 8, 2, 2, 256, 64)
    cases = [
        Case("q (2, 6, 5, 8), k and v (2, 2, 5, 8), causal mask (5, 5)", (*qkv(2, 6, 2, 5, 5, 8), _causal(5, 5))),
        Case("MQA: q (1, 4, 3, 4), k and v (1, 1, 7, 4), mask (3, 7): 3 new tokens after 4 cached",
             (*qkv(1, 4, 1, 3, 7, 4), _causal(3, 7))),
        Case("MHA: q, k, v (1, 3, 4, 4), mask=None", (*qkv(1, 3, 3, 4, 4, 4), None)),
        Case("float64, q (2, 8, 1, 8), k and v (2, 4, 9, 8), padding mask (2, 1, 1, 9)",
             (*qkv(2, 8, 4, 1, 9, 8, torch.float64), padding)),
        Case("q (2, 4, 4, 8), k and v (2, 2, 6, 8), mask (2, 1, 4, 6)", (*qkv(2, 4, 2, 4, 6, 8), per_batch)),
        Case("q (1, 8, 2, 64), k and v (1, 2, 256, 64), mask=None", (*big, None)),
    ]
    variants = {"strided_groups": _gqa_strided}
    n = grade_function(learner, cases, _gqa_reference, variants, ("q", "k", "v", "mask"))
    watch = _LargestNewTensor()
    with watch:
        call_learner(learner, *big, None)
    k_bytes = big[1].untyped_storage().nbytes()
    n_rep = big[0].size(1) // big[1].size(1)
    if watch.nbytes >= n_rep * k_bytes:
        raise Mismatch(f"a tensor of {watch.nbytes // 1024} KiB appeared (from {watch.by}), {n_rep} times the "
                       f"{k_bytes // 1024} KiB of k", "case: q (1, 8, 2, 64), k and v (1, 2, 256, 64)",
                       "materialises")
    return n
