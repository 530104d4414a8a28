"""Checks for part 6 of the from-scratch track (the capstone): decoding with the learner's own
sampling and KV-cached generation.

* `check_sample_next(sample_next)`: greedy exactly; temperature, top-k, top-p judged by the
  frequencies of thousands of draws.
* `check_generate_cached(generate)`: a small reference model that follows the track's protocol
  (`model(ids, caches=None)`, `model.blocks`, `model.window`; each cache one of the learner's
  `KVCache`s: it calls `cache.update(k, v)` and reads `cache.pos`), so it depends on no other
  part's code. (`check_generate` is lesson 11's check, with course_lib's GPT.)

The learner's code is kept here as text (`*_CODE`); each check prints the pieces it needs.
"""
from __future__ import annotations

import functools
import inspect
import math

import torch
import torch.nn as nn

from course_lib.device import single_thread
from course_lib.generation import top_k_filter, top_p_filter
from .core import LearnerError, Mismatch, NotAttempted, call_learner, register
from .track_tensors import KV_CACHE_CODE  # part 2's cache: the printed generate runs on its own
from .track_tokenizer import solution_text

# ------------------------------------------------------------------ the learner's code, as text
SAMPLE_NEXT_CODE = '''
def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,): greedy
    logits = logits / temperature  # (B, V): the temperature divides the logits, before softmax
    if top_k is not None:
        kth_largest = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, -math.inf)  # keep the k largest
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V): the mass strictly before each token
        drop_sorted = before >= top_p  # keeps the token that crosses top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # (B, V): back to vocabulary order
        logits = logits.masked_fill(drop, -math.inf)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)
'''

GENERATE_CODE = '''
@torch.no_grad()
def generate(model, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
             use_cache=True):
    caches = [KVCache(model.window) for _ in model.blocks] if use_cache else None
    logits = model(ids, caches=caches)[:, -1]  # (B, V): the prompt once; its last position predicts
    for step in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
        ids = torch.cat([ids, next_id[:, None]], dim=1)  # (B, T + step + 1)
        if step == max_new_tokens - 1:
            break  # no need to run the model for a token nobody asks for
        if use_cache:
            logits = model(ids[:, -1:], caches=caches)[:, -1]  # (B, V): only the new token; the caches hold the rest
        else:
            logits = model(ids)[:, -1]  # (B, V): the whole sequence again
    return ids  # (B, T + max_new_tokens)
'''


def _one_thread(body):
    """Run a check body on one thread: its tensors are tiny, and on a busy machine more threads
    only wait for each other (measured: 12 s instead of 0.5 s for check_generate_cached)."""
    @functools.wraps(body)
    def run(learner):
        with single_thread():
            return body(learner)
    return run


# ------------------------------------------------------------------ part 6a: sample_next
N_DRAWS = 4000  # per row kind; each case has two kinds of rows


def _ref_probs(row, temperature=1.0, top_k=None, top_p=None, order=("k", "p")):
    z = row.double() / temperature
    for f in order:
        if f == "k" and top_k is not None:
            z = top_k_filter(z, top_k)
        if f == "p" and top_p is not None:
            z = top_p_filter(z, top_p)
    return z.softmax(-1)


def _variant_probs(kind, row, temperature=1.0, top_k=None, top_p=None):
    if kind == "temperature_after_softmax":
        return _ref_probs(row, 1.0, top_k, top_p)
    if kind == "top_k_keeps_k_plus_1":
        return _ref_probs(row, temperature, None if top_k is None else top_k + 1, top_p)
    if kind == "top_p_drops_crossing_token":
        z = row.double() / temperature
        if top_k is not None:
            z = top_k_filter(z, top_k)
        if top_p is not None:
            probs = z.softmax(-1)
            sp, order = probs.sort(descending=True)
            keep_sorted = sp.cumsum(-1) <= top_p
            keep_sorted[0] = True
            keep = keep_sorted.scatter(-1, order, keep_sorted)
            z = z.masked_fill(~keep, -math.inf)
        return z.softmax(-1)
    raise KeyError(kind)


_ROW = torch.tensor([2.0, 1.4, 1.0, 0.3, -0.5, -1.2, -2.0])
_SAMPLE_CASES = [  # (label, kwargs); each case draws rows of _ROW and of a permutation of it
    ("temperature 1", dict(temperature=1.0)),
    ("temperature 0.5", dict(temperature=0.5)),
    ("temperature 2", dict(temperature=2.0)),
    ("top_k=3", dict(temperature=1.0, top_k=3)),
    ("top_k=2, temperature 0.7", dict(temperature=0.7, top_k=2)),
    ("top_p=0.7 (the third token crosses it)", dict(temperature=1.0, top_p=0.7)),
    ("top_p=0.5", dict(temperature=1.0, top_p=0.5)),
    ("top_k=4 and top_p=0.8", dict(temperature=1.0, top_k=4, top_p=0.8)),
]
SAMPLE_VARIANTS = ("temperature_after_softmax", "top_k_keeps_k_plus_1", "top_p_drops_crossing_token")

SAMPLE_NEXT_MISCONCEPTIONS = {
    "temperature_after_softmax": "the temperature had no effect: dividing the probabilities by it is undone when "
                                 "they are renormalised. Divide the *logits* by the temperature, then softmax.",
    "top_k_keeps_k_plus_1": "top-k kept k + 1 tokens (an index off by one: the k-th largest logit is "
                            "torch.topk(logits, k).values[:, -1], i.e. sorted position k - 1).",
    "top_p_drops_crossing_token": "the token whose probability crosses top_p was dropped. The nucleus is the "
                                  "smallest set whose total reaches top_p, so it includes that token (keep a token "
                                  "when the mass *before* it is < top_p).",
    "ignores_generator": "two calls with generators seeded alike gave different tokens: pass `generator` to "
                         "torch.multinomial (generate relies on it to give the same sample with and without the cache).",
    "greedy_not_argmax": "temperature=0 should be greedy: the argmax of each row, with no sampling.",
}


def _empirical(ids: torch.Tensor, V: int) -> torch.Tensor:
    return torch.bincount(ids.long(), minlength=V).double() / ids.numel()  # (N,) -> (V,)


def _close(emp, probs, n):
    tol = 5 * (probs * (1 - probs) / n).sqrt() + 2e-3  # about 5 standard errors
    return bool((((emp - probs).abs() <= tol) & ~((probs == 0) & (emp > 0))).all())


@register("check_sample_next", points=3, minutes=25, timeout=30, reference=solution_text("import math\n\nimport torch\n", SAMPLE_NEXT_CODE),
          misconceptions=SAMPLE_NEXT_MISCONCEPTIONS, forbid=("course_lib", "transformers"),
          hint="temperature 0: argmax. Otherwise divide the logits by the temperature; top-k: set logits below the k-th "
               "largest to -inf; top-p: sort, softmax, keep tokens whose mass *before* them is < p; softmax; "
               "torch.multinomial(probs, 1, generator=generator).squeeze(-1).",
          idea="Every filter works on logits by setting the tokens it removes to -inf, so that one softmax at the end "
               "renormalises whatever is left. Keep the batch dimension: every row is filtered on its own.")
@_one_thread
def check_sample_next(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    V = _ROW.numel()
    perm = torch.tensor([3, 6, 0, 5, 1, 4, 2])
    rows = torch.stack([_ROW, _ROW[perm]])  # (2, V): two different rows
    # greedy
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=g)  # (5, 11)
    before = logits.clone()
    for kw in (dict(temperature=0.0), dict(temperature=0.0, top_k=3, top_p=0.5)):
        out = call_learner(learner, logits, **kw)
        _check_ids(out, 5, 11, f"greedy, {kw}")
        if not torch.equal(logits, before):
            raise Mismatch("your function changed the logits it was given", f"case: {kw}")
        if not torch.equal(out.long(), logits.argmax(-1)):
            raise Mismatch(f"with temperature=0 expected the argmax {logits.argmax(-1).tolist()}, got {out.tolist()}",
                           f"case: {kw}", "greedy_not_argmax")
    n = 2
    # the generator
    big = rows.repeat_interleave(N_DRAWS // 4, dim=0)  # (N/2, V)
    a = call_learner(learner, big.clone(), temperature=1.0, generator=torch.Generator().manual_seed(7))
    b = call_learner(learner, big.clone(), temperature=1.0, generator=torch.Generator().manual_seed(7))
    _check_ids(a, big.size(0), V, "temperature 1, generator seeded 7")
    _check_ids(b, big.size(0), V, "temperature 1, generator seeded 7")
    if not torch.equal(a, b):
        raise Mismatch("two calls with generators seeded alike gave different tokens",
                       "case: temperature 1, generator seeded 7, twice", "ignores_generator")
    n += 1
    # distributions: N_DRAWS rows of each kind
    batch = rows.repeat_interleave(N_DRAWS, dim=0)  # (2N, V): first N rows of one kind, then the other
    emps = []
    for k, (label, kw) in enumerate(_SAMPLE_CASES):
        out = call_learner(learner, batch.clone(), generator=torch.Generator().manual_seed(100 + k), **kw)
        _check_ids(out, batch.size(0), V, label)
        emps.append([_empirical(out[:N_DRAWS], V), _empirical(out[N_DRAWS:], V)])
    for (label, kw), emp in zip(_SAMPLE_CASES, emps):
        orders = [("k", "p"), ("p", "k")]  # top-k then top-p (Hugging Face) or the other way: both accepted
        ok = any(all(_close(e, _ref_probs(r, order=o, **kw), N_DRAWS) for e, r in zip(emp, rows)) for o in orders)
        if not ok:
            key = None
            for name in SAMPLE_VARIANTS:
                probs = [[_variant_probs(name, r, **kw) for r in rows] for _, kw in _SAMPLE_CASES]
                differs = any(not torch.allclose(p, _ref_probs(r, **kw), atol=1e-3)
                              for ps, (_, kw) in zip(probs, _SAMPLE_CASES) for p, r in zip(ps, rows))
                if differs and all(_close(e, p, N_DRAWS) for es, ps in zip(emps, probs) for e, p in zip(es, ps)):
                    key = name
                    break
            expected = _ref_probs(rows[0], **kw)
            raise Mismatch("the sampled frequencies differ from the expected distribution",
                           f"case: {label}, logits {[round(x, 2) for x in rows[0].tolist()]}\n"
                           f"   expected {[round(x, 3) for x in expected.tolist()]}\n"
                           f"   sampled  {[round(x, 3) for x in emp[0].tolist()]}", key)
        n += 1
    return n


def _check_ids(out, B, V, label):
    if not isinstance(out, torch.Tensor):
        hint = " (did you forget a `return`?)" if out is None else ""
        raise Mismatch(f"expected a tensor of token ids, got {type(out).__name__}{hint}", f"case: {label}")
    if out.shape != (B,):
        extra = " (squeeze the last dimension of torch.multinomial's (B, 1))" if out.shape == (B, 1) else ""
        raise Mismatch(f"expected shape ({B},) for logits ({B}, {V}), got {tuple(out.shape)}{extra}", f"case: {label}")
    if out.dtype != torch.long:
        raise Mismatch(f"expected dtype torch.int64 (long) token ids, got {out.dtype}", f"case: {label}")
    if out.numel() and (out.min() < 0 or out.max() >= V):
        raise Mismatch(f"token ids outside 0..{V - 1}", f"case: {label}")


# ------------------------------------------------------------------ part 6b: generate with the learner's KVCache
class _BrokenCache(Exception):
    pass


class ReferenceModel(nn.Module):
    """A small decoder that follows the track's protocol: forward(ids, caches=None) -> logits (B, T, V);
    caches: one cache per block, with update(k, v) -> (k_all, v_all) and pos (tokens seen so far).
    Learned absolute positions (large, so that a wrong position changes the tokens), float64 (so
    cached and full computations agree to ~1e-15 and greedy choices never flip), sliding window if
    `window` is set. It records every call: the input length, whether caches came, the position
    it started at, and the longest stored context a cache handed back."""

    def __init__(self, vocab_size=29, d_model=32, n_layers=2, n_heads=2, max_positions=128, window=None, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def p(*shape, scale):
            return nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64) * scale)

        self.window, self.n_heads, self.vocab_size = window, n_heads, vocab_size
        self.tok_emb = p(vocab_size, d_model, scale=1.0)
        self.pos_emb = p(max_positions, d_model, scale=1.0)
        self.blocks = nn.ModuleList()
        for _ in range(n_layers):
            block = nn.Module()
            block.qkv = p(d_model, 3 * d_model, scale=3.0 / math.sqrt(d_model))  # sharp attention
            block.out = p(d_model, d_model, scale=1.0 / math.sqrt(d_model))
            block.up = p(d_model, 2 * d_model, scale=1.0 / math.sqrt(d_model))
            block.down = p(2 * d_model, d_model, scale=1.0 / math.sqrt(2 * d_model))
            self.blocks.append(block)
        self.head = p(d_model, vocab_size, scale=2.0 / math.sqrt(d_model))
        self.calls: list[dict] = []

    @staticmethod
    def _norm(x):
        return x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()

    @torch.no_grad()
    def forward(self, ids, caches=None):
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise TypeError(f"the model takes ids of shape (B, T), got {getattr(ids, 'shape', type(ids).__name__)}")
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"caches has {len(caches)} entries, the model has {len(self.blocks)} blocks")
        B, T = ids.shape
        start = int(caches[0].pos) if caches is not None else 0
        call = {"T": T, "cached": caches is not None, "start": start, "stored": 0}
        self.calls.append(call)
        H = self.n_heads
        x = self.tok_emb[ids] + self.pos_emb[start:start + T]  # (B, T, C)
        q_pos = torch.arange(start, start + T)  # (T,)
        for i, block in enumerate(self.blocks):
            h = self._norm(x)
            q, k, v = (h @ block.qkv).split(x.size(-1), dim=-1)  # (B, T, C) each
            q, k, v = (t.view(B, T, H, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
            if caches is not None:
                before = int(caches[i].pos)
                out = caches[i].update(k, v)
                if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
                    raise _BrokenCache(f"update(k, v) returned {type(out).__name__}, not a (keys, values) pair")
                k, v = out
                if k.shape[:2] != (B, H) or k.shape != v.shape or k.size(2) < T:
                    raise _BrokenCache(f"update(k, v) with k of shape {(B, H, T, q.size(-1))} returned keys of shape "
                                       f"{tuple(k.shape)} (values {tuple(v.shape)})")
                if int(caches[i].pos) != before + T:
                    raise _BrokenCache(f"pos went from {before} to {caches[i].pos} after update() with {T} new tokens")
                call["stored"] = max(call["stored"], k.size(2) - T)
            L = k.size(2)
            k_pos = torch.arange(start + T - L, start + T)  # (L,): absolute positions of the keys
            visible = k_pos[None, :] <= q_pos[:, None]  # (T, L)
            if self.window is not None:
                visible = visible & (k_pos[None, :] > q_pos[:, None] - self.window)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, L)
            att = att.masked_fill(~visible, -math.inf).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, -1)  # (B, T, C)
            x = x + y @ block.out
            x = x + torch.relu(self._norm(x) @ block.up) @ block.down
        return self._norm(x) @ self.head  # (B, T, V)


def _greedy_reference(model, ids, n):
    for _ in range(n):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


GENERATE_MISCONCEPTIONS = {
    "kv_cache_broken": "your KVCache does not do what generate needs (see the case); run check_kv_cache(KVCache) "
                       "and fix it first.",
    "ignores_cache": "with use_cache=True the model still saw the whole sequence every step (the tokens are right but "
                     "nothing was saved). Run the prompt once through the caches, then feed only the newest token.",
    "refeeds_whole_sequence": "the whole sequence went through the caches every step, so they hold every earlier "
                              "token several times. After the prompt, feed only the newest token: ids[:, -1:].",
    "caches_recreated": "new, empty caches were made during generation, so the model saw a token at position 0 "
                        "with nothing before it. Make the caches once, before the prompt, and reuse them.",
    "window_not_passed": "the caches were made without the model's window, so they kept every position. Make "
                         "them with KVCache(model.window) (a rolling cache keeps only the last `window`).",
    "off_by_one": "one token too few: return the prompt followed by exactly max_new_tokens new tokens.",
    "drops_prompt": "return the prompt followed by the new tokens, shape (B, T + max_new_tokens).",
}


def _learner_kv_cache(learner):
    glb = getattr(inspect.unwrap(learner), "__globals__", {})  # (through @torch.no_grad())
    cls = glb.get("KVCache")
    return cls if isinstance(cls, type) else None


def _self_test_cache(cls):
    """The learner's KVCache inside the reference model: chunked prefill and single steps must give the
    logits of the full computation (with and without a window)."""
    g = torch.Generator().manual_seed(3)
    for window in (None, 3):
        model = ReferenceModel(window=window)
        ids = torch.randint(0, model.vocab_size, (2, 9), generator=g)  # (B, T)
        full = model(ids)
        caches = [call_learner(cls, window) for _ in model.blocks]
        parts = [ids[:, :4], ids[:, 4:6], ids[:, 6:7], ids[:, 7:8], ids[:, 8:9]]
        got = []
        try:
            for part in parts:
                got.append(call_learner(model, part, caches=caches))
        except LearnerError as err:
            if isinstance(err.exc, _BrokenCache):
                raise Mismatch(f"KVCache: {err.exc}", f"case: the reference model with window={window}",
                               "kv_cache_broken") from None
            raise
        got = torch.cat(got, dim=1)
        if not torch.allclose(got, full, atol=1e-9):
            raise Mismatch("with your KVCache the model's logits differ from the full computation",
                           f"case: a 9-token prompt fed as 4 + 2 + 1 + 1 + 1 tokens, window={window}", "kv_cache_broken")


@register("check_generate_cached", points=4, minutes=30, timeout=30,
          reference=solution_text("import math\n\nimport torch\n", KV_CACHE_CODE, SAMPLE_NEXT_CODE, GENERATE_CODE),
          misconceptions=GENERATE_MISCONCEPTIONS, forbid=("course_lib", "transformers"),
          hint="caches = [KVCache(model.window) for _ in model.blocks] if use_cache else None; logits = model(ids, "
               "caches=caches)[:, -1]; then max_new_tokens times: next_id = sample_next(logits, ...); append it; "
               "logits = model(ids[:, -1:], caches=caches)[:, -1] (or model(ids)[:, -1] without the cache).",
          idea="The caches remember every earlier token's keys and values, and their pos tells the model where the "
               "next token sits; so after the prompt the model needs only the newest token. Without the cache the "
               "model must see the whole sequence each step. Both give the same tokens.")
@_one_thread
def check_generate_cached(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cls = _learner_kv_cache(learner)
    if cls is not None:
        try:
            _self_test_cache(cls)
        except NotAttempted:
            raise Mismatch("your KVCache is not written yet: generate uses it (write it and pass check_kv_cache first)",
                           "", "kv_cache_broken") from None
        except LearnerError as err:
            raise Mismatch(f"your KVCache raised {err.summary}", err.report, "kv_cache_broken") from None
    g = torch.Generator().manual_seed(5)
    n = 0
    for window, B, T, steps in [(None, 2, 5, 9), (None, 1, 3, 1), (4, 2, 6, 10)]:
        model = ReferenceModel(window=window)
        ids = torch.randint(0, model.vocab_size, (B, T), generator=g)  # (B, T)
        expected = _greedy_reference(model, ids, steps)
        for use_cache in (False, True):
            label = f"greedy (temperature=0), prompt ({B}, {T}), max_new_tokens={steps}, window={window}, use_cache={use_cache}"
            model.calls.clear()
            out = _run_generate(learner, model, ids, steps, label, temperature=0.0, use_cache=use_cache)
            _compare_generated(out, expected, model, steps, use_cache, label)
            n += 1
    # sampling: cached == uncached with the same seed, and every token inside the top-k set
    model = ReferenceModel(seed=1)
    ids = torch.randint(0, model.vocab_size, (3, 4), generator=g)
    for kw in (dict(temperature=1.0, top_k=5), dict(temperature=0.8, top_p=0.6)):
        runs = []
        for use_cache in (False, True):
            label = f"sampling {kw}, generator seeded 11, use_cache={use_cache}"
            model.calls.clear()
            out = _run_generate(learner, model, ids, 12, label, generator=torch.Generator().manual_seed(11),
                                use_cache=use_cache, **kw)
            _check_shape(out, ids, 12, label)
            runs.append(out)
        if not torch.equal(runs[0], runs[1]):
            raise Mismatch("with the same generator seed, generation with the cache gave other tokens than without",
                           f"case: sampling {kw}\n   without {runs[0][0].tolist()}\n   with    {runs[1][0].tolist()}")
        logits = model(runs[0][:, :-1])[:, ids.size(1) - 1:]  # (B, 12, V): what predicted each new token
        new = runs[0][:, ids.size(1):]  # (B, 12)
        if "top_k" in kw:
            allowed = logits >= logits.topk(kw["top_k"], dim=-1).values[..., -1:]
        else:
            allowed = torch.isfinite(top_p_filter(logits / kw["temperature"], kw["top_p"]))
        if not allowed.gather(-1, new[..., None]).all():
            raise Mismatch(f"a sampled token lies outside the {'top-k' if 'top_k' in kw else 'top-p'} set",
                           f"case: sampling {kw}: pass temperature, top_k, top_p and generator on to sample_next")
        if len(set(map(tuple, new.tolist()))) == 1 and new.size(0) > 1 and kw["temperature"] > 0.5:
            raise Mismatch("every row sampled the same tokens", f"case: sampling {kw}")
        n += 1
    return n


def _run_generate(learner, model, ids, steps, label, **kw):
    try:
        return call_learner(learner, model, ids.clone(), steps, **kw)
    except LearnerError as err:
        if isinstance(err.exc, _BrokenCache):
            raise Mismatch(f"KVCache: {err.exc}", f"case: {label}", "kv_cache_broken") from None
        raise


def _check_shape(out, ids, steps, label):
    B, T = ids.shape
    if not isinstance(out, torch.Tensor):
        hint = " (did you forget a `return`?)" if out is None else ""
        raise Mismatch(f"expected a tensor of token ids, got {type(out).__name__}{hint}", f"case: {label}")
    if out.shape == (B, steps):
        raise Mismatch(f"returned shape {tuple(out.shape)}, expected {(B, T + steps)}", f"case: {label}", "drops_prompt")
    if out.shape == (B, T + steps - 1):
        raise Mismatch(f"returned shape {tuple(out.shape)}, expected {(B, T + steps)}", f"case: {label}", "off_by_one")
    if out.shape != (B, T + steps):
        raise Mismatch(f"returned shape {tuple(out.shape)}, expected {(B, T + steps)}", f"case: {label}")
    if out.dtype != ids.dtype:
        raise Mismatch(f"expected token ids of dtype {ids.dtype} (the prompt's), got {out.dtype}", f"case: {label}")
    if not torch.equal(out[:, :T], ids):
        raise Mismatch("the output does not start with the prompt", f"case: {label}")


def _compare_generated(out, expected, model, steps, use_cache, label):
    _check_shape(out, expected[:, :expected.size(1) - steps], steps, label)
    calls = model.calls
    key = None
    if use_cache:
        if not calls or not calls[0]["cached"]:
            key = "ignores_cache"
        elif any(c["cached"] and c["start"] == 0 for c in calls[1:]):
            key = "caches_recreated"
        elif any(c["T"] > 1 for c in calls[1:]):
            key = "refeeds_whole_sequence" if all(c["cached"] for c in calls) else "ignores_cache"
        elif model.window is not None and any(c["stored"] > model.window for c in calls):
            key = "window_not_passed"
    if not torch.equal(out, expected):
        raise Mismatch("different tokens than greedy decoding", f"case: {label}\n   expected {expected[0].tolist()}\n"
                                                                 f"   got      {out[0].tolist()}", key)
    if key is not None:
        lengths = [c["T"] for c in calls][:6]
        raise Mismatch("the tokens are right, but the cache was not used as it should be",
                       f"case: {label}; input lengths of the model's calls: {lengths}...", key)
