"""Checks for the from-scratch track, parts 2-3 (the capstone): attention with RoPE, GQA, a KV cache
and a sliding window; SwiGLU; a pre-norm block; the whole LLaMA-style model. RMSNorm is graded by
lesson 03's check_rms_norm.

How the checks reach the learner's code: each receives one class (Attention, SwiGLU, Block, LLaMA)
and builds it with the track's signature; the class builds its own parts. A cache is the grader's
`ReferenceCache` (the same protocol as the learner's KVCache: `pos` and `update`), so a bug in the
learner's KVCache is reported by check_kv_cache and does not fail these checks.

Weights: the checks copy random weights into the learner's module and the same weights into
course_lib's LLaMA pieces (proven equal to Hugging Face's LlamaForCausalLM by the tests). RoPE may
pair features either way: when the half-split pairing (Hugging Face) does not match, the q and k
weights are loaded permuted for adjacent pairs (Meta's original code) and compared again."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import positional as ref_pos
from course_lib.models.llama import Llama, LlamaConfig, llama_block
from course_lib.positional_attention import PositionalAttention
from .core import Mismatch, _same_nan_aware, call_learner, compare, register
from .ffn_norms import SWIGLU_MISCONCEPTIONS, _grade_modules, _swiglu_variant
from .track_tensors import (EMBEDDING_CODE, LINEAR_CODE, ROPE_CODE, SOFTMAX_CODE, LAYOUT_NAMES, ReferenceCache,
                            instantiate, isolated, solution_text)

ATTENTION_CODE = '''
class Attention(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads, rope_base=10000.0, window=None):
        super().__init__()
        assert d_model % n_heads == 0 and n_heads % n_kv_heads == 0
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.rope_base, self.window = rope_base, window
        self.q_proj = Linear(d_model, n_heads * self.head_dim, bias=False)
        self.k_proj = Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        H, H_kv, D = self.n_heads, self.n_kv_heads, self.head_dim
        start = 0 if cache is None else cache.pos  # the absolute position of x's first token
        positions = torch.arange(start, start + T, device=x.device)  # (T,)
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, H_kv, D).transpose(1, 2)  # (B, H_kv, T, D)
        v = self.v_proj(x).view(B, T, H_kv, D).transpose(1, 2)  # (B, H_kv, T, D)
        q = apply_rope(q, positions, self.rope_base)  # rotate queries and keys by their positions
        k = apply_rope(k, positions, self.rope_base)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H_kv, T_k, D): the cached keys, then the new ones
        T_k = k.size(2)
        key_positions = torch.arange(start + T - T_k, start + T, device=x.device)  # (T_k,)
        k = k.repeat_interleave(H // H_kv, dim=1)  # (B, H, T_k, D): kv head j serves query heads j*r .. j*r+r-1
        v = v.repeat_interleave(H // H_kv, dim=1)  # (B, H, T_k, D)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T_k)
        distance = positions[:, None] - key_positions[None, :]  # (T, T_k): how far back each key is
        allowed = distance >= 0  # causal: no key from the future
        if self.window is not None:
            allowed = allowed & (distance < self.window)  # sliding window: the last `window` tokens
        scores = scores.masked_fill(~allowed, float("-inf"))  # (B, H, T, T_k)
        weights = softmax(scores, dim=-1)  # (B, H, T, T_k): each row sums to 1
        out = weights @ v  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, H * D)  # (B, T, C): the heads side by side
        return self.o_proj(out)  # (B, T, C)
'''

RMSNORM_CODE = '''
class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # the gain; RMSNorm has no bias

    def forward(self, x):
        h = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # half inputs: compute in float32
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)  # (B, T, C): root mean square 1
        return self.weight * h.to(x.dtype)  # (B, T, C)
'''

SWIGLU_CODE = '''
class SwiGLU(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_proj = Linear(d_model, d_ff, bias=False)
        self.up_proj = Linear(d_model, d_ff, bias=False)
        self.down_proj = Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        gate = self.gate_proj(x)  # (B, T, d_ff)
        h = gate * torch.sigmoid(gate) * self.up_proj(x)  # (B, T, d_ff): SiLU(gate) times up
        return self.down_proj(h)  # (B, T, C)
'''

BLOCK_CODE = '''
class Block(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads, d_ff, rope_base=10000.0, window=None, eps=1e-5):
        super().__init__()
        self.attn_norm = RMSNorm(d_model, eps)
        self.attn = Attention(d_model, n_heads, n_kv_heads, rope_base, window)
        self.ffn_norm = RMSNorm(d_model, eps)
        self.ffn = SwiGLU(d_model, d_ff)

    def forward(self, x, cache=None):
        x = x + self.attn(self.attn_norm(x), cache)  # (B, T, C): the residual stream is never normalised
        x = x + self.ffn(self.ffn_norm(x))  # (B, T, C)
        return x
'''

LLAMA_CODE = '''
class LLaMA(nn.Module):
    def __init__(self, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, rope_base=10000.0,
                 window=None, eps=1e-5):
        super().__init__()
        self.window = window  # generate() makes KVCache(model.window) for each block
        self.tok_emb = Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_heads, n_kv_heads, d_ff, rope_base, window, eps)
                                 for _ in range(n_layers)])
        self.final_norm = RMSNorm(d_model, eps)
        self.lm_head = Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one (V, C) matrix reads and writes tokens
        for p in self.parameters():  # small weights (std 0.02, as GPT-2 and LLaMA): calm logits at the start
            if p.dim() == 2:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def forward(self, ids, caches=None):
        x = self.tok_emb(ids)  # (B, T) -> (B, T, C); positions enter inside attention (RoPE)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])  # (B, T, C)
        return self.lm_head(self.final_norm(x))  # (B, T, V)
'''

ATTENTION_FORBID = ("torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention",
                    "torch.nn.functional.multi_head_attention_forward", "course_lib", "transformers")
MODEL_FORBID = ATTENTION_FORBID + ("torch.nn.TransformerDecoderLayer", "torch.nn.TransformerEncoderLayer",
                                   "torch.nn.Transformer", "torch.nn.functional.rms_norm", "torch.rms_norm",
                                   "torch.nn.RMSNorm")


# ------------------------------------------------------------------ weights in, either RoPE pairing
def permute_qk(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """q/k rows (n * D, C) of a half-split model -> the rows an adjacent-pairs model needs."""
    p = ref_pos.half_to_adjacent_permutation(head_dim)
    return w.reshape(-1, head_dim, w.size(-1))[:, p].reshape(w.shape)  # (heads, D, C) with rows permuted in each head -> (out, C)


def _load(m: nn.Module, state: dict, head_dim: int, layout: str, what: str) -> None:
    """Copy `state` (course_lib names) into the learner's module, q/k permuted for adjacent pairs."""
    params = dict(m.named_parameters(remove_duplicate=False))
    missing = [k for k in state if k not in params]
    if missing:
        plain = [k for k in missing if isinstance(_get(m, k), torch.Tensor)]
        if plain:
            raise Mismatch(f"`{plain[0]}` is a plain tensor; wrap it in nn.Parameter so it is trained and loaded")
        raise Mismatch(f"{what} has no parameter called {', '.join(missing[:3])}"
                       f"{' ...' if len(missing) > 3 else ''}; name the parts as the track does "
                       "(q_proj, k_proj, v_proj, o_proj; attn_norm, attn, ffn_norm, ffn; gate_proj, up_proj, "
                       "down_proj; tok_emb, blocks, final_norm, lm_head)")
    extra = [k for k in params if k not in state]
    if extra:
        bias = [k for k in extra if k.endswith("bias")]
        raise Mismatch(f"{what} has {'a bias ' + bias[0] if bias else 'an unexpected parameter ' + extra[0]}"
                       "; the LLaMA architecture has no biases and no other parameters"
                       + (" (use Linear(..., bias=False))" if bias else ""))
    with torch.no_grad():
        for name, value in state.items():
            p = params[name]
            if tuple(p.shape) != tuple(value.shape):
                raise Mismatch(f"`{name}` has shape {tuple(p.shape)}, expected {tuple(value.shape)}")
            if layout == "adjacent" and name.split(".")[-2] in ("q_proj", "k_proj"):
                value = permute_qk(value, head_dim)
            p.copy_(value)


def _get(m, dotted):
    for part in dotted.split("."):
        m = getattr(m, part, None)
    return m


def _randomise(state: dict, seed: int, scale: float = 0.3) -> dict:
    """Random weights for every tensor in a state dict: norms around 1, matrices N(0, scale²)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        noise = torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.dtype)
        out[k] = 1.0 + 0.3 * noise if v.dim() == 1 else scale * noise
    return out


def _rotary(base: float, layout: str):
    return lambda t, positions: ref_pos.apply_rope(t, positions, base, layout=layout)


# ------------------------------------------------------------------ a functional attention with knobs
def attention_run(w: dict, x: torch.Tensor, chunks: list[int], cfg: dict, layout: str, kind: str | None = None,
                  cached: bool = True, prefix: str = "") -> torch.Tensor:
    """The track's Attention, written by the grader as one function over chunks of x, with a
    rolling store when cached and cfg["window"] is set. `kind` re-creates one misconception."""
    H, H_kv, base, window = cfg["n_heads"], cfg["n_kv_heads"], cfg["rope_base"], cfg["window"]
    B, T, C = x.shape
    D = C // H
    rope = _rotary(10000.0 if kind == "ignores_base" else base, layout)
    outs, k_store, v_store, start = [], None, None, 0
    for n in chunks:
        xc = x[:, start:start + n]  # (B, n, C)

        def heads(t, h):
            if kind == "heads_without_transpose":
                return t.reshape(B, h, n, D)  # (B, h, n, D)
            return t.reshape(B, n, h, D).transpose(1, 2)  # (B, h, n, D)

        q, k, v = heads(xc @ w[prefix + "q_proj.weight"].T, H), heads(xc @ w[prefix + "k_proj.weight"].T, H_kv), \
            heads(xc @ w[prefix + "v_proj.weight"].T, H_kv)
        first = 0 if kind == "cache_not_passed" else start  # the absolute position of the chunk's first token
        rope_positions = torch.arange(n) if kind == "positions_ignore_cache" else torch.arange(first, first + n)
        q, k = rope(q, rope_positions), rope(k, rope_positions)
        if kind == "rope_on_v":
            v = rope(v, rope_positions)
        if cached and kind != "cache_not_passed" and k_store is not None:
            k, v = torch.cat([k_store, k], 2), torch.cat([v_store, v], 2)  # (B, H_kv, T_k, D)
        if cached and kind != "cache_not_passed":
            keep = k.size(2) if window is None else window
            k_store, v_store = k[:, :, -keep:], v[:, :, -keep:]
        T_k = k.size(2)
        end = first + n
        q_pos, k_pos = torch.arange(first, end), torch.arange(end - T_k, end)
        rep = H // H_kv
        if kind == "gqa_tiled":
            k, v = k.repeat(1, rep, 1, 1), v.repeat(1, rep, 1, 1)
        else:
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)  # (B, H, T_k, D)
        scale = {"no_scale": 1.0, "scale_by_d_model": 1 / math.sqrt(C)}.get(kind, 1 / math.sqrt(D))
        scores = q @ k.transpose(-2, -1) * scale  # (B, H, n, T_k)
        dist = q_pos[:, None] - k_pos[None, :]  # (n, T_k)
        if kind == "mask_without_offset":
            allowed = torch.ones(n, T_k).tril().bool()
        elif kind == "no_causal_mask":
            allowed = torch.ones(n, T_k, dtype=torch.bool)
        else:
            allowed = dist >= 0
        if window is not None and kind != "window_ignored":
            allowed = allowed & ((dist <= window) if kind == "window_off_by_one" else (dist < window))
        scores = scores.masked_fill(~allowed, float("-inf"))
        p = torch.softmax(scores, dim=-2 if kind == "softmax_wrong_axis" else -1)
        o = p @ v  # (B, H, n, D); a row with every key masked is NaN, as the learner's softmax gives
        o = o.reshape(B, n, C) if kind == "heads_without_transpose" else o.transpose(1, 2).reshape(B, n, C)  # (B, n, C)
        outs.append(o @ w[prefix + "o_proj.weight"].T)  # (B, n, C)
        start += n
    return torch.cat(outs, 1)  # (B, T, C)


def _scenarios(T: int, window) -> list[tuple[str, list[int], bool]]:
    """(label, chunk sizes, with a cache): full recomputation, then decoding token by token, then a
    chunked prefill (a chunk longer than the window, when there is one)."""
    return [("the whole sequence, no cache", [T], False), ("one token at a time through a cache", [1] * T, True),
            ("chunks of 4, 1 and the rest through a cache", [4, 1, T - 5], True)]


def _run_learner(m, x, scenarios, window, call_with_cache):
    outs = []
    for label, chunks, cached in scenarios:
        cache, parts, start = (ReferenceCache(window) if cached else None), [], 0
        for n in chunks:
            xc = x[:, start:start + n].clone()
            out = call_with_cache(m, xc, cache) if cached else call_learner(m, xc)
            if not torch.equal(xc, x[:, start:start + n]):
                raise Mismatch("forward modified its input in place; compute a new tensor instead", f"case: {label}")
            if not isinstance(out, torch.Tensor):
                raise Mismatch(f"forward should return a tensor, got {type(out).__name__}", f"case: {label}")
            parts.append(out.detach())
            start += n
        outs.append(_join(parts, label))
    return outs


def _join(parts: list, label: str) -> torch.Tensor:
    """The outputs of consecutive chunks as one (B, T, ...) tensor."""
    if len(parts) == 1:
        return parts[0]
    if any(p.dim() < 2 or p.shape[0] != parts[0].shape[0] or p.shape[2:] != parts[0].shape[2:] for p in parts):
        raise Mismatch(f"forward returned shapes {[tuple(p.shape) for p in parts[:3]]} for chunks of the input; "
                       "expected (B, T_chunk, ...) each", f"case: {label}")
    return torch.cat(parts, 1)


def _grade_either_layout(configs, build, run, reference, variants, what):
    """configs: list of (label, cfg). build(cfg) -> (learner module, half-layout state, head_dim);
    run(module, cfg) -> list of outputs (one per scenario); reference(cfg, state) -> the expected output
    of every scenario; variants[key](cfg, half-layout state, layout) -> the outputs of a misconception
    for a learner pairing RoPE features `layout`'s way."""
    built = [(label, cfg, *build(cfg)) for label, cfg in configs]
    refs = [reference(cfg, state) for _, cfg, _, state, _ in built]
    traces, first_fail = {}, {}
    for layout in ("half", "adjacent"):
        traces[layout] = []
        for (label, cfg, m, state, D), expected in zip(built, refs):
            _load(m, state, D, layout, what)
            outs = run(m, cfg)
            traces[layout].append(outs)
            for (scenario, *_), out, want in zip(_scenarios(cfg["T"], cfg["window"]), outs, expected):
                try:
                    compare(out, want)
                except Mismatch as mm:
                    first_fail.setdefault(layout, (f"{label}, {scenario}", mm))
        if layout not in first_fail:
            return sum(len(t) for t in traces[layout])
    key = None
    for layout in ("half", "adjacent"):
        key = key or _diagnose_lazily(traces[layout], refs, built, variants, layout)
    label, mm = first_fail["half"]
    raise Mismatch(f"{mm.reason} (tried both RoPE pairings)", f"case: {label}; the q/k weights were loaded for "
                   f"{LAYOUT_NAMES['half']}, then permuted for {LAYOUT_NAMES['adjacent']}", key)


def _diagnose_lazily(traces, refs, built, variants, layout) -> str | None:
    """core.diagnose, one configuration at a time: a variant is dropped at its first configuration
    that differs from the learner's outputs (most differ at once), or that equals the reference
    everywhere (it cannot be told apart)."""
    with torch.no_grad():
        for key, f in variants.items():
            told_apart = False
            for outs, expected, (_, cfg, _, state, _) in zip(traces, refs, built):
                try:
                    theirs = f(cfg, state, layout)
                except Exception:  # noqa: BLE001 - a variant that cannot run here just doesn't match
                    break
                if not all(_same_nan_aware(o, t) for o, t in zip(outs, theirs)):
                    break
                told_apart = told_apart or not all(_same_nan_aware(t, e) for t, e in zip(theirs, expected))
            else:
                if told_apart:
                    return key
    return None


def _state_as(state: dict, D: int, layout: str) -> dict:
    """The weights as loaded into a learner's module that pairs RoPE features `layout`'s way."""
    if layout == "half":
        return state
    return {k: permute_qk(v, D) if k.split(".")[-2] in ("q_proj", "k_proj") else v for k, v in state.items()}


# ------------------------------------------------------------------ attention
ATTENTION_MISCONCEPTIONS = {
    "no_scale": "the scores are not divided by sqrt(head_dim): scores = q @ k.transpose(-2, -1) / math.sqrt(D).",
    "scale_by_d_model": "the scores are divided by sqrt(d_model); the scale is sqrt(head_dim), D = d_model // "
                        "n_heads.",
    "no_causal_mask": "there is no causal mask: a query sees keys from the future.",
    "mask_without_offset": "the causal mask ignores where the new tokens are: with a cache, query i of the "
                           "chunk is at position cache.pos + i and sees every key up to there. Compare absolute "
                           "positions (queries: pos .. pos + T - 1; keys: the last T_k positions).",
    "positions_ignore_cache": "RoPE rotates the new tokens by positions 0 .. T - 1 even after cached tokens; "
                              "they start at cache.pos.",
    "rope_on_v": "RoPE is applied to the values too; it rotates queries and keys only.",
    "gqa_tiled": "the key/value heads are tiled (repeat) instead of interleaved: query head h must use kv head "
                 "h // (n_heads // n_kv_heads), as repeat_interleave(n_rep, dim=1) gives (Hugging Face's "
                 "repeat_kv).",
    "heads_without_transpose": "the heads are split with view(B, H, T, D) directly; view as (B, T, H, D) first "
                               "and then transpose(1, 2), and undo it the same way.",
    "softmax_wrong_axis": "the softmax runs over the queries (dim=-2); each query's weights over the keys must "
                          "sum to 1 (dim=-1).",
    "window_ignored": "the sliding window is not applied: with window w a query at position i sees keys "
                      "i - w + 1 .. i only.",
    "window_off_by_one": "the window lets w + 1 keys through (flash-attn's inclusive convention); this "
                         "exercise asks for Mistral's: a query at position i sees keys j with "
                         "i - w < j <= i (w keys, itself included).",
    "ignores_base": "rope_base is ignored (RoPE always uses 10000).",
}


def _attention_configs():
    return [("d_model=32, 4 heads, 2 kv heads (GQA), T=9", dict(d_model=32, n_heads=4, n_kv_heads=2,
                                                           rope_base=10000.0, window=None, T=9)),
            ("d_model=24, 3 heads, 1 kv head (MQA), rope_base=500000, T=8",
             dict(d_model=24, n_heads=3, n_kv_heads=1, rope_base=500000.0, window=None, T=8)),
            ("d_model=32, 4 heads (MHA), window=3, T=9", dict(d_model=32, n_heads=4, n_kv_heads=4,
                                                        rope_base=10000.0, window=3, T=9)),
            ("d_model=16, 2 heads, 1 kv head, float64, window=5, T=8",
             dict(d_model=16, n_heads=2, n_kv_heads=1, rope_base=10000.0, window=5, T=8, dtype=torch.float64))]


def _inputs(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, cfg["T"], cfg["d_model"], generator=g, dtype=cfg.get("dtype", torch.float32))


def reference_attention(cfg: dict, state: dict, x: torch.Tensor) -> torch.Tensor:
    """course_lib's attention (LLaMA's, half-split RoPE) with the given weights, the whole sequence."""
    r = PositionalAttention(cfg["d_model"], cfg["n_heads"], n_kv_heads=cfg["n_kv_heads"], bias=False)
    r.load_state_dict(state)
    r = r.to(x.dtype).eval()
    with torch.no_grad():
        return r(x, is_causal=True, rotary=_rotary(cfg["rope_base"], "half"), window=cfg["window"])


@register("check_attention_rope_gqa", points=5, minutes=45,
          reference=solution_text(SOFTMAX_CODE, LINEAR_CODE, ROPE_CODE, ATTENTION_CODE),
          misconceptions=ATTENTION_MISCONCEPTIONS, forbid=ATTENTION_FORBID,
          hint="Project, split into heads (B, H, T, D), rotate q and k with apply_rope at positions cache.pos .. "
               "cache.pos + T - 1, let the cache append k and v, repeat each kv head for its query heads, then "
               "masked softmax attention and o_proj. Mask by absolute positions: key j is visible to query i "
               "when j <= i (and i - j < window with a window).",
          idea="start = cache.pos if cache else 0; positions = torch.arange(start, start + T). After k, v = "
               "cache.update(k, v) the keys cover positions start + T - T_k .. start + T - 1. distance = "
               "positions[:, None] - key_positions[None, :]; allowed = distance >= 0 (& distance < window); "
               "k.repeat_interleave(n_heads // n_kv_heads, dim=1); scores / math.sqrt(D); masked_fill(~allowed, "
               "-inf); softmax over the keys; (B, H, T, D) -> transpose(1, 2) -> (B, T, C) -> o_proj.")
@isolated
def check_attention_rope_gqa(learner):
    def build(cfg):
        torch.manual_seed(0)
        m = instantiate(learner, "Attention", cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["rope_base"],
                        cfg["window"])
        dtype = cfg.get("dtype", torch.float32)
        r = PositionalAttention(cfg["d_model"], cfg["n_heads"], n_kv_heads=cfg["n_kv_heads"], bias=False)
        state = _randomise({k: v.to(dtype) for k, v in r.state_dict().items()}, 40 + cfg["T"])
        return m.to(dtype).eval(), state, cfg["d_model"] // cfg["n_heads"]

    def run(m, cfg):
        return _run_learner(m, _inputs(cfg, cfg["T"]), _scenarios(cfg["T"], cfg["window"]), cfg["window"],
                            lambda m, xc, cache: call_learner(m, xc, cache))

    def reference(cfg, state):
        return [reference_attention(cfg, state, _inputs(cfg, cfg["T"]))] * 3

    def variant(kind):
        def outputs(cfg, state, layout):
            x, s = _inputs(cfg, cfg["T"]), _state_as(state, cfg["d_model"] // cfg["n_heads"], layout)
            return [attention_run(s, x, chunks, cfg, layout, kind, cached)
                    for _, chunks, cached in _scenarios(cfg["T"], cfg["window"])]
        return outputs

    return _grade_either_layout(_attention_configs(), build, run, reference,
                                {k: variant(k) for k in ATTENTION_MISCONCEPTIONS}, "Attention")


# ------------------------------------------------------------------ SwiGLU
@register("check_swiglu", points=2, minutes=10, reference=solution_text(LINEAR_CODE, SWIGLU_CODE),
          misconceptions=SWIGLU_MISCONCEPTIONS, forbid=("course_lib", "transformers"),
          hint="Three bias-free projections: gate_proj and up_proj (d_model -> d_ff), down_proj (d_ff -> d_model). "
               "Only the gate goes through SiLU; multiply it with up, then project down.",
          idea="forward: gate = self.gate_proj(x); h = gate * torch.sigmoid(gate) * self.up_proj(x) (SiLU(z) = "
               "z·sigmoid(z)); return self.down_proj(h).")
@isolated
def check_swiglu(learner):
    from course_lib.ffn import GatedFeedForward
    g = torch.Generator().manual_seed(24)
    cases = []
    for i, (d, d_ff, dtype) in enumerate([(16, 40, torch.float32), (12, 20, torch.float64)]):
        torch.manual_seed(i)
        m = instantiate(learner, "SwiGLU", d, d_ff)
        r = GatedFeedForward(d, d_ff, "silu", bias=False)
        state = _randomise(r.state_dict(), 50 + i, scale=0.5)
        r.load_state_dict(state)
        _load(m, state, 2, "half", "SwiGLU")
        x = torch.randn(2, 5, d, generator=g, dtype=dtype)
        cases.append((f"d_model={d}, d_ff={d_ff}, x {tuple(x.shape)} {dtype}", m.to(dtype), r.to(dtype), (x,)))
    variants = {k: (lambda r, x, k=k: _swiglu_variant(r, x, k)) for k in SWIGLU_MISCONCEPTIONS}
    return _grade_modules(cases, variants)


# ------------------------------------------------------------------ block
def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def block_run(s: dict, x, chunks, cfg, layout, kind=None, cached=True, prefix=""):
    """The track's Block as one function (see attention_run); `kind` re-creates a wiring mistake."""
    eps = cfg["eps"]

    def attn(h, attn_kind=None):
        return attention_run(s, h, chunks, cfg, layout, attn_kind, cached, prefix + "attn.")

    def norm(h, which):
        return _rms(h, s[prefix + which + ".weight"], eps)

    def ffn(h):
        gate = h @ s[prefix + "ffn.gate_proj.weight"].T
        return (F.silu(gate) * (h @ s[prefix + "ffn.up_proj.weight"].T)) @ s[prefix + "ffn.down_proj.weight"].T

    ffn_norm = "attn_norm" if kind == "shared_norm" else "ffn_norm"
    if kind == "no_residual":
        return ffn(norm(attn(norm(x, "attn_norm")), ffn_norm))
    if kind == "norm_after_add":
        h = norm(x + attn(x), "attn_norm")
        return norm(h + ffn(h), ffn_norm)
    if kind == "residual_from_normed":
        h = norm(x, "attn_norm")
        h = h + attn(h)
        h2 = norm(h, ffn_norm)
        return h2 + ffn(h2)
    if kind == "parallel":
        return x + attn(norm(x, "attn_norm")) + ffn(norm(x, ffn_norm))
    h = x + attn(norm(x, "attn_norm"), "cache_not_passed" if kind == "cache_not_passed" else None)
    return h + ffn(norm(h, ffn_norm))


BLOCK_MISCONCEPTIONS = {
    "no_residual": "the residual connections are missing: x = x + self.attn(self.attn_norm(x), cache), then "
                   "x = x + self.ffn(self.ffn_norm(x)).",
    "norm_after_add": "the norm comes after the residual add (post-norm, the 2017 Transformer). LLaMA is "
                      "pre-norm: x + sublayer(norm(x)).",
    "residual_from_normed": "the residual adds the normalised x; keep the un-normalised x on the residual "
                            "stream: x = x + attn(norm(x)).",
    "parallel": "the FFN reads the block's input instead of x after attention (that is GPT-J's parallel block).",
    "shared_norm": "attn_norm is used for both sub-layers; the FFN has its own ffn_norm.",
    "cache_not_passed": "the cache is not passed to the attention: self.attn(self.attn_norm(x), cache).",
}


def _llama_config(cfg: dict, n_layers: int = 1, vocab_size: int = 8) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, d_model=cfg["d_model"], n_layers=n_layers, n_heads=cfg["n_heads"],
                       n_kv_heads=cfg["n_kv_heads"], d_ff=cfg["d_ff"], rope_theta=cfg["rope_base"],
                       eps=cfg["eps"], sliding_window=cfg["window"], tie_weights=True, max_positions=64)


def _block_configs():
    return [("d_model=32, 4 heads, 2 kv heads, d_ff=48, T=9",
             dict(d_model=32, n_heads=4, n_kv_heads=2, d_ff=48, rope_base=10000.0, window=None, eps=1e-5, T=9)),
            ("d_model=24, 3 heads, 1 kv head, d_ff=40, window=3, eps=1e-6, rope_base=500000, T=8",
             dict(d_model=24, n_heads=3, n_kv_heads=1, d_ff=40, rope_base=500000.0, window=3, eps=1e-6, T=8))]


@register("check_block", points=3, minutes=15,
          reference=solution_text(SOFTMAX_CODE, LINEAR_CODE, ROPE_CODE, ATTENTION_CODE, RMSNORM_CODE, SWIGLU_CODE,
                                  BLOCK_CODE),
          misconceptions=BLOCK_MISCONCEPTIONS, forbid=MODEL_FORBID,
          hint="Pre-norm, two residual steps: x = x + self.attn(self.attn_norm(x), cache), then "
               "x = x + self.ffn(self.ffn_norm(x)). The norms touch only the sub-layers' inputs.",
          idea="__init__ builds RMSNorm(d_model, eps), Attention(d_model, n_heads, n_kv_heads, rope_base, window), "
               "RMSNorm(d_model, eps), SwiGLU(d_model, d_ff) under the names attn_norm, attn, ffn_norm, ffn. "
               "forward passes the cache on to the attention.")
@isolated
def check_block(learner):
    def build(cfg):
        torch.manual_seed(0)
        m = instantiate(learner, "Block", cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["d_ff"],
                        cfg["rope_base"], cfg["window"], cfg["eps"])
        state = _randomise(llama_block(_llama_config(cfg), 0).state_dict(), 60 + cfg["T"])
        return m.eval(), state, cfg["d_model"] // cfg["n_heads"]

    def run(m, cfg):
        return _run_learner(m, _inputs(cfg, cfg["T"]), _scenarios(cfg["T"], cfg["window"]), cfg["window"],
                            lambda m, xc, cache: call_learner(m, xc, cache))

    def reference(cfg, state):
        r = llama_block(_llama_config(cfg), 0)
        r.load_state_dict(state)
        with torch.no_grad():
            y = r.eval()(_inputs(cfg, cfg["T"]), is_causal=True, rotary=_rotary(cfg["rope_base"], "half"),
                         window=cfg["window"])
        return [y] * 3

    def variant(kind):
        def outputs(cfg, state, layout):
            x, s = _inputs(cfg, cfg["T"]), _state_as(state, cfg["d_model"] // cfg["n_heads"], layout)
            return [block_run(s, x, chunks, cfg, layout, kind, cached)
                    for _, chunks, cached in _scenarios(cfg["T"], cfg["window"])]
        return outputs

    return _grade_either_layout(_block_configs(), build, run, reference,
                                {k: variant(k) for k in BLOCK_MISCONCEPTIONS}, "Block")


# ------------------------------------------------------------------ the whole model
LLAMA_MISCONCEPTIONS = {
    "head_not_tied": "lm_head has its own weight; tie it to the embedding: self.lm_head.weight = "
                     "self.tok_emb.weight (one (V, C) matrix, as the track's model asks).",
    "scaled_embedding": "the embeddings are multiplied by sqrt(d_model) (the 2017 Transformer, Gemma); LLaMA "
                        "feeds tok_emb(ids) to the first block as it is.",
    "no_final_norm": "final_norm is not applied before lm_head: logits = lm_head(final_norm(x)).",
    "returns_probabilities": "forward returns probabilities (softmax); return the logits, the loss and the "
                             "sampler take it from there.",
    "one_cache_for_all_blocks": "every block gets the same cache; block i needs its own caches[i].",
    "caches_ignored": "the caches are never passed to the blocks, so decoding one token at a time forgets the "
                      "earlier tokens: block(x, caches[i]).",
}


def _model_configs():
    return [("vocab 41, d_model=32, 2 layers, 4 heads, 2 kv heads, d_ff=48, T=9",
             dict(vocab_size=41, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, rope_base=10000.0,
                  window=None, eps=1e-5, T=9)),
            ("vocab 29, d_model=24, 2 layers, 3 heads, 1 kv head, d_ff=40, window=3, eps=1e-6, rope_base=500000, T=8",
             dict(vocab_size=29, d_model=24, n_layers=2, n_heads=3, n_kv_heads=1, d_ff=40, rope_base=500000.0,
                  window=3, eps=1e-6, T=8))]


def model_ids(cfg: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(cfg["T"])
    return torch.randint(0, cfg["vocab_size"], (2, cfg["T"]), generator=g)  # (B, T)


def reference_model(cfg: dict, state: dict) -> Llama:
    r = Llama(_llama_config(cfg, cfg["n_layers"], cfg["vocab_size"]))
    r.load_state_dict(state)
    return r.eval()


def _model_variant(kind):
    def outputs(cfg, state, layout):  # position-wise mistakes: the same for either RoPE pairing
        r = reference_model(cfg, state)
        with torch.no_grad():
            x = r.tok_emb(model_ids(cfg))  # (B, T, C)
            if kind == "scaled_embedding":
                x = x * math.sqrt(cfg["d_model"])
            rotary = _rotary(cfg["rope_base"], "half")
            for block in r.blocks:
                x = block(x, is_causal=True, rotary=rotary, window=cfg["window"])
            logits = r.lm_head(x if kind == "no_final_norm" else r.final_norm(x))
            if kind == "returns_probabilities":
                logits = logits.softmax(-1)
        return [logits] * 3
    return outputs


@register("check_llama", points=5, minutes=25,
          reference=solution_text(SOFTMAX_CODE, LINEAR_CODE, EMBEDDING_CODE, ROPE_CODE, ATTENTION_CODE, RMSNORM_CODE,
                                  SWIGLU_CODE, BLOCK_CODE, LLAMA_CODE),
          misconceptions=LLAMA_MISCONCEPTIONS, forbid=MODEL_FORBID,
          hint="tok_emb -> each block (with its own cache) -> final_norm -> lm_head, and lm_head shares its weight "
               "with tok_emb. Keep the names tok_emb, blocks (an nn.ModuleList), final_norm, lm_head.",
          idea="__init__: self.window = window; self.tok_emb = Embedding(vocab_size, d_model); self.blocks = "
               "nn.ModuleList([Block(...) for _ in range(n_layers)]); self.final_norm = RMSNorm(d_model, eps); "
               "self.lm_head = Linear(d_model, vocab_size, bias=False); self.lm_head.weight = self.tok_emb.weight. "
               "forward: x = self.tok_emb(ids); x = block(x, None if caches is None else caches[i]) for each "
               "block i; return self.lm_head(self.final_norm(x)).")
@isolated
def check_llama(learner):
    def build(cfg):
        torch.manual_seed(0)
        m = instantiate(learner, "LLaMA", cfg["vocab_size"], cfg["d_model"], cfg["n_layers"], cfg["n_heads"],
                        cfg["n_kv_heads"], cfg["d_ff"], cfg["rope_base"], cfg["window"], cfg["eps"])
        for name in ("tok_emb", "blocks", "final_norm", "lm_head"):
            if not isinstance(getattr(m, name, None), nn.Module):
                raise Mismatch(f"LLaMA has no sub-module called `{name}`")
        if not isinstance(m.blocks, nn.ModuleList) or len(m.blocks) != cfg["n_layers"]:
            raise Mismatch(f"`blocks` should be an nn.ModuleList of n_layers={cfg['n_layers']} Blocks")
        if getattr(m, "window", "missing") != cfg["window"]:
            raise Mismatch(f"model.window should be the window it was built with ({cfg['window']}), got "
                           f"{getattr(m, 'window', 'no attribute window')!r}")
        if getattr(m.lm_head, "weight", None) is not getattr(m.tok_emb, "weight", 0):
            raise Mismatch("lm_head.weight is not tok_emb.weight", misconception="head_not_tied")
        state = _randomise(Llama(_llama_config(cfg, cfg["n_layers"], cfg["vocab_size"])).state_dict(),
                           70 + cfg["T"])
        state["lm_head.weight"] = state["tok_emb.weight"]
        return m.eval(), state, cfg["d_model"] // cfg["n_heads"]

    def run(m, cfg):
        ids, outs = model_ids(cfg), []
        for label, chunks, cached in _scenarios(cfg["T"], cfg["window"]):
            caches = [ReferenceCache(cfg["window"]) for _ in range(cfg["n_layers"])] if cached else None
            parts, start = [], 0
            for n in chunks:
                out = call_learner(m, ids[:, start:start + n], caches) if cached else call_learner(m, ids[:, :n])
                if not isinstance(out, torch.Tensor):
                    raise Mismatch(f"forward should return the logits tensor, got {type(out).__name__}",
                                   f"case: {label}")
                parts.append(out.detach())
                start += n
            if cached and outs[0].shape == (*ids.shape, cfg["vocab_size"]) and bool(torch.isfinite(outs[0]).all()):
                _check_caches(caches, cfg, label)  # (when the whole sequence's logits are wrong, say that first)
            outs.append(_join(parts, label))
        return outs

    def reference(cfg, state):
        with torch.no_grad():
            return [reference_model(cfg, state)(model_ids(cfg)).logits] * 3

    return _grade_either_layout(_model_configs(), build, run, reference,
                                {k: _model_variant(k) for k in ("scaled_embedding", "no_final_norm",
                                                                "returns_probabilities")}, "LLaMA")


def _check_caches(caches, cfg, label):
    T = cfg["T"]
    if all(c.calls == 0 for c in caches):
        raise Mismatch("forward(ids, caches) never used the caches", f"case: {label}", "caches_ignored")
    if caches[0].calls > 0 and any(c.calls == 0 for c in caches[1:]):
        raise Mismatch(f"only caches[0] was used (it saw {caches[0].pos} tokens for a {T}-token input)",
                       f"case: {label}", "one_cache_for_all_blocks")
    if any(c.pos != T for c in caches):
        raise Mismatch(f"after the {T} tokens each cache should hold {T} positions; they hold "
                       f"{[c.pos for c in caches]}", f"case: {label}")
