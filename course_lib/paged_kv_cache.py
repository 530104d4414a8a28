"""A paged KV cache (Kwon et al. 2023, "Efficient Memory Management for Large Language Model
Serving with PagedAttention", §4.1-4.2): keys and values live in fixed-size blocks of one
preallocated pool, and each sequence owns a *block table*, the list of its blocks in order,
the way an operating system maps a process's virtual pages to physical frames.

Why: a contiguous cache (``course_lib.kv_cache.KVCache``) for a batch is one (B, H_kv, T, D)
tensor, so every sequence is padded to the longest one, and a server must reserve room for the
longest sequence it might produce. With blocks, a sequence holds at most one partly filled
block, memory is taken as it grows, and returned to the pool the moment it finishes, so
sequences can join and leave a running batch between steps (continuous batching, Yu et al.
2022, "Orca", §3).

Read top to bottom:
1. ``PagedKVCache``: the pool (n_layers, n_blocks, block_size, H_kv, D) for keys and one for
   values, the free list, the block tables; ``add_sequence`` / ``free``; ``PoolExhausted``.
2. ``PagedLayer``: what a model's attention layer sees, the ``update(k, v)`` interface of
   ``KVCache``. It writes the new keys into each sequence's blocks and *gathers* every
   sequence's keys back into one (B, H_kv, T_k, D) tensor, left-padded to the longest.
3. ``paged_forward``: one model call on a batch of sequences of different lengths through the
   paged cache (padding mask and per-sequence positions filled in).
4. ``measure_waste``: bytes a padded contiguous cache and a paged one hold for the same batch.
5. ``continuous_batching``: greedy decoding where requests arrive and finish between steps.

The gather copies the keys into a padded tensor so that the course's attention can run
unchanged; a serving kernel (vLLM's PagedAttention) reads the blocks in place instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from course_lib.config import check_positive_values
from course_lib.kv_cache import KVCache


class PoolExhausted(RuntimeError):
    """The pool has no free block left for the tokens asked for."""


# --------------------------------------------------------------------------- 1. the pool and block tables
class PagedKVCache:
    """Keys and values of every layer for many sequences, in ``n_blocks`` blocks of
    ``block_size`` tokens. ``block_tables[seq_id]`` lists a sequence's blocks in order: token t
    of the sequence sits in block ``block_tables[seq_id][t // block_size]``, slot ``t % block_size``."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, n_blocks: int, block_size: int = 16,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        check_positive_values("PagedKVCache", n_layers=n_layers, n_kv_heads=n_kv_heads, head_dim=head_dim,
                              n_blocks=n_blocks, block_size=block_size)
        self.n_layers, self.n_blocks, self.block_size = n_layers, n_blocks, block_size
        shape = (n_layers, n_blocks, block_size, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # the pool, allocated once
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.free_blocks = list(range(n_blocks - 1, -1, -1))  # a stack: pop() hands out block 0 first
        self.block_tables: dict = {}  # seq_id -> [block, block, ...]
        self.written: list[dict] = [{} for _ in range(n_layers)]  # per layer: seq_id -> tokens stored

    @classmethod
    def for_model(cls, model, n_blocks: int, block_size: int = 16) -> PagedKVCache:
        """A pool shaped for a course_lib GPT or Llama (its layers, key/value heads, head size, dtype)."""
        cfg = model.config
        param = next(model.parameters())
        n_kv_heads = getattr(cfg, "n_kv_heads", None) or cfg.n_heads
        return cls(cfg.n_layers, n_kv_heads, cfg.head_dim, n_blocks, block_size, param.dtype, param.device)

    # ----------------------------------------------------------- allocation and freeing
    def add_sequence(self, seq_id) -> None:
        """Register a new sequence with an empty block table (blocks come as it grows)."""
        if seq_id in self.block_tables:
            raise ValueError(f"sequence {seq_id!r} is already in the cache; free it first or use a new id.")
        self.block_tables[seq_id] = []
        for layer in self.written:
            layer[seq_id] = 0

    def free(self, seq_id) -> None:
        """Return a finished sequence's blocks to the pool."""
        self._check_known([seq_id])
        self.free_blocks.extend(reversed(self.block_tables.pop(seq_id)))
        for layer in self.written:
            del layer[seq_id]

    def length(self, seq_id) -> int:
        """Tokens stored for the sequence (in every layer, once a forward pass is complete)."""
        self._check_known([seq_id])
        return self.written[-1][seq_id]

    def reserve(self, seq_ids, new_lengths) -> None:
        """Make sure each sequence has blocks for `new_lengths` tokens; allocates nothing unless
        the pool has enough free blocks for all of them."""
        needed = {s: math.ceil(n / self.block_size) - len(self.block_tables[s]) for s, n in zip(seq_ids, new_lengths)}
        total = sum(max(0, n) for n in needed.values())
        if total > len(self.free_blocks):
            raise PoolExhausted(f"the KV pool needs {total} more blocks of {self.block_size} tokens but has "
                                f"{len(self.free_blocks)} free (of {self.n_blocks}). Free finished sequences "
                                "(free(seq_id)), run fewer at once, or build the cache with more n_blocks.")
        for s, n in needed.items():
            self.block_tables[s].extend(self.free_blocks.pop() for _ in range(n))

    # ----------------------------------------------------------- reading and writing slots
    def slots(self, seq_id, start: int, stop: int) -> torch.Tensor:
        """Flat pool slots (block * block_size + offset) of tokens start .. stop-1 of a sequence."""
        t = torch.arange(start, stop)  # (T,)
        table = torch.tensor(self.block_tables[seq_id], dtype=torch.long)
        return (table[t // self.block_size] * self.block_size + t % self.block_size).to(self.k.device)  # (T,)

    def write(self, layer: int, seq_id, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append k, v (H_kv, T_new, D) of one sequence to its blocks in `layer`."""
        start = self.written[layer][seq_id]
        self.reserve([seq_id], [start + k.size(1)])
        where = self.slots(seq_id, start, start + k.size(1))  # (T_new,)
        self.k[layer].view(-1, *self.k.shape[-2:])[where] = k.transpose(0, 1).to(self.k.dtype)  # (T_new, H_kv, D)
        self.v[layer].view(-1, *self.v.shape[-2:])[where] = v.transpose(0, 1).to(self.v.dtype)  # (T_new, H_kv, D)
        self.written[layer][seq_id] = start + k.size(1)

    def gather(self, layer: int, seq_ids, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys and values of `seq_ids` in `layer`, each (B, H_kv, length, D), the sequence's tokens
        right-aligned (left padding with zeros); and the (B, length) mask of real tokens."""
        H, D = self.k.shape[-2:]
        flat_k, flat_v = self.k[layer].view(-1, H, D), self.v[layer].view(-1, H, D)  # (n_blocks·block_size, H, D)
        keys = flat_k.new_zeros(len(seq_ids), length, H, D)  # (B, length, H_kv, D)
        values = flat_v.new_zeros(len(seq_ids), length, H, D)
        real = torch.zeros(len(seq_ids), length, dtype=torch.bool, device=self.k.device)  # (B, length)
        for b, s in enumerate(seq_ids):
            n = self.written[layer][s]
            where = self.slots(s, 0, n)  # (n,)
            keys[b, length - n:], values[b, length - n:] = flat_k[where], flat_v[where]  # (n, H_kv, D)
            real[b, length - n:] = True
        return keys.transpose(1, 2), values.transpose(1, 2), real  # (B, H_kv, length, D) x 2, (B, length)

    # ----------------------------------------------------------- what it holds
    @property
    def block_bytes(self) -> int:
        """Bytes of one block across all layers, keys and values."""
        return 2 * self.k[:, 0].nelement() * self.k.element_size()

    @property
    def allocated_bytes(self) -> int:
        """Bytes of the blocks that sequences hold now."""
        return (self.n_blocks - len(self.free_blocks)) * self.block_bytes

    @property
    def used_bytes(self) -> int:
        """Bytes of the tokens actually stored (the rest of the allocated blocks is waste)."""
        return sum(self.written[-1].values()) * self.block_bytes // self.block_size

    def layers(self, seq_ids) -> list[PagedLayer]:
        """One ``PagedLayer`` per model layer for this batch of sequences: pass as ``cache=``."""
        self._check_known(seq_ids)
        return [PagedLayer(self, i, list(seq_ids)) for i in range(self.n_layers)]

    def _check_known(self, seq_ids) -> None:
        unknown = [s for s in seq_ids if s not in self.block_tables]
        if unknown:
            raise KeyError(f"sequences {unknown} are not in the paged cache; add_sequence(seq_id) first.")


# --------------------------------------------------------------------------- 2. the layer view
class PagedLayer:
    """One layer of a batch of sequences, with the interface attention uses on a ``KVCache``:
    ``update(k, v)`` stores the new keys and values and returns all of them; ``seq_len`` is the
    position of the first new token in the batch's shared (left-padded) timeline, the length of
    the longest sequence; ``key_positions`` the timeline positions of the keys returned."""

    def __init__(self, cache: PagedKVCache, layer: int, seq_ids: list):
        self.cache, self.layer, self.seq_ids = cache, layer, seq_ids
        self.seq_len = max((cache.written[layer][s] for s in seq_ids), default=0)
        self.key_positions = torch.arange(self.seq_len)  # (T_k,)

    @property
    def k(self) -> torch.Tensor | None:
        """The cached keys (B, H_kv, seq_len, D), gathered; None before the first token."""
        return self.cache.gather(self.layer, self.seq_ids, self.seq_len)[0] if self.seq_len else None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, H_kv, T_new, D), one row per sequence -> every key and value (B, H_kv, T_k, D)."""
        if k.dim() != 4 or k.size(0) != len(self.seq_ids) or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"expected k and v of shape (B={len(self.seq_ids)}, H_kv, T_new, D), one row per "
                             f"sequence of this batch; got {tuple(k.shape)} and {tuple(v.shape)}.")
        if any(self.cache.written[self.layer][s] != self.seq_len for s in self.seq_ids) and k.size(2) > 1:
            raise ValueError("sequences of different lengths can only be extended one token at a time in one "
                             "batch; run a prompt (prefill) through its own batch of one.")
        for b, s in enumerate(self.seq_ids):
            self.cache.write(self.layer, s, k[b], v[b])
        T_k = self.seq_len + k.size(2)
        self.key_positions = torch.arange(T_k)  # (T_k,)
        keys, values, _ = self.cache.gather(self.layer, self.seq_ids, T_k)  # (B, H_kv, T_k, D) x 2
        self.seq_len = T_k
        return keys, values


# --------------------------------------------------------------------------- 3. a model call through it
def paged_forward(model, cache: PagedKVCache, seq_ids, input_ids: torch.Tensor):
    """Run input_ids (B, T), row b continuing sequence seq_ids[b], through a course_lib GPT or
    Llama with the paged cache; returns the model's output (logits (B, T, V)).

    The sequences may have different lengths: their keys come back left-padded to the longest,
    so the padding mask hides the pad and ``position_ids`` gives each row its own positions
    (RoPE and learned positions depend only on them; causality by the shared timeline is right
    for every row, since left padding shifts a row's queries and keys alike)."""
    seq_ids = list(seq_ids)
    if input_ids.dim() != 2 or input_ids.size(0) != len(seq_ids):
        raise ValueError(f"input_ids must be (B, T) with one row per sequence ({len(seq_ids)}), "
                         f"got {tuple(input_ids.shape)}.")
    layers = cache.layers(seq_ids)
    T = input_ids.size(1)
    lengths = torch.tensor([cache.length(s) for s in seq_ids], device=input_ids.device)  # (B,)
    position_ids = lengths[:, None] + torch.arange(T, device=input_ids.device)  # (B, T)
    S = layers[0].seq_len
    timeline = torch.arange(S + T, device=input_ids.device)  # (S + T,)
    attention_mask = (timeline[None, :] >= (S - lengths)[:, None]).long()  # (B, S + T): 0 = left pad
    return model(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=layers)


# --------------------------------------------------------------------------- 4. what padding wastes
@dataclass
class CacheWaste:
    """Bytes held for one batch: the tokens themselves, a contiguous cache padded to the longest
    sequence, and a paged cache (whole blocks)."""
    lengths: list[int]
    block_size: int
    used: int
    contiguous: int
    paged: int

    @property
    def contiguous_waste(self) -> float:
        return 1 - self.used / self.contiguous

    @property
    def paged_waste(self) -> float:
        return 1 - self.used / self.paged

    def __str__(self) -> str:
        return (f"{len(self.lengths)} sequences, {sum(self.lengths)} tokens: contiguous {self.contiguous:,} bytes "
                f"({self.contiguous_waste:.1%} padding), paged ({self.block_size}-token blocks) {self.paged:,} bytes "
                f"({self.paged_waste:.1%} unfilled)")


def measure_waste(lengths, block_size: int = 16, n_layers: int = 1, n_kv_heads: int = 1, head_dim: int = 8,
                  dtype: torch.dtype = torch.float32) -> CacheWaste:
    """Fill both caches with a batch of sequences of `lengths` tokens and read the bytes they hold:
    ``KVCache`` (one (B, H_kv, max(lengths), D) tensor per layer) against ``PagedKVCache``."""
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths={lengths}: expected at least one sequence, each of >= 1 token.")
    B, T = len(lengths), max(lengths)
    contiguous = 0
    for _ in range(n_layers):
        layer = KVCache()
        kv = torch.zeros(B, n_kv_heads, T, head_dim, dtype=dtype)  # (B, H_kv, T_max, D): padded to the longest
        layer.update(kv, kv)
        contiguous += layer.nbytes
    paged = PagedKVCache(n_layers, n_kv_heads, head_dim, sum(math.ceil(n / block_size) for n in lengths),
                         block_size, dtype)
    for s, n in enumerate(lengths):
        paged.add_sequence(s)
        kv = torch.zeros(n_kv_heads, n, head_dim, dtype=dtype)  # (H_kv, n, D)
        for i in range(n_layers):
            paged.write(i, s, kv, kv)
    return CacheWaste(lengths, block_size, paged.used_bytes, contiguous, paged.allocated_bytes)


# --------------------------------------------------------------------------- 5. continuous batching
@dataclass
class Request:
    """A prompt (1-D token ids) that arrives before decoding step `arrival` and wants `n_new` tokens."""
    prompt: torch.Tensor
    n_new: int
    arrival: int = 0


@dataclass
class BatchingLog:
    """What ``continuous_batching`` did: per step, the sequences decoded in the batched call, those
    that joined (prefill) and left, and the blocks still held at the end of the step."""
    steps: list[dict] = field(default_factory=list)

    def table(self) -> str:
        rows = ["step  running          joined  left    blocks"]
        for e in self.steps:
            rows.append(f"{e['step']:>4}  {e['running']!s:<16} {e['joined']!s:<7} {e['left']!s:<7} "
                        f"{e['blocks']:>6}")
        return "\n".join(rows)


@torch.no_grad()
def continuous_batching(model, requests, n_blocks: int = 64, block_size: int = 4) -> tuple[list[torch.Tensor], BatchingLog]:
    """Greedy decoding of many requests that share one paged cache and one running batch.

    Each step: requests that have arrived join (their prompt runs alone, the prefill, giving
    their first token), then every running sequence gets its next token from one batched model
    call, then sequences with all their tokens leave and their blocks go back to the pool.
    Returns each request's prompt + new tokens (1-D, in request order) and the step log."""
    for r in requests:
        if r.prompt.dim() != 1 or r.prompt.numel() == 0 or r.n_new < 1:
            raise ValueError("each Request needs a non-empty 1-D prompt of token ids and n_new >= 1.")
    was_training = model.training
    model.eval()
    cache = PagedKVCache.for_model(model, n_blocks, block_size)
    tokens = [r.prompt.tolist() for r in requests]
    waiting, running, log, step = list(range(len(requests))), [], BatchingLog(), 0
    while waiting or running:
        joined = [i for i in waiting if requests[i].arrival <= step]
        for i in joined:  # prefill alone: a prompt is many tokens, the running batch takes one each
            waiting.remove(i)
            cache.add_sequence(i)
            logits = paged_forward(model, cache, [i], requests[i].prompt[None]).logits[0, -1]  # (V,)
            tokens[i].append(int(logits.argmax()))
        decode = [i for i in running if len(tokens[i]) - len(requests[i].prompt) < requests[i].n_new]
        if decode:  # one token for every running sequence, whatever its length
            last = torch.tensor([[tokens[i][-1]] for i in decode])  # (B, 1)
            logits = paged_forward(model, cache, decode, last).logits[:, -1]  # (B, V)
            for i, nxt in zip(decode, logits.argmax(-1).tolist()):
                tokens[i].append(nxt)
        running += joined
        left = [i for i in running if len(tokens[i]) - len(requests[i].prompt) == requests[i].n_new]
        for i in left:
            cache.free(i)
            running.remove(i)
        log.steps.append({"step": step, "running": sorted(decode), "joined": joined, "left": left,
                          "blocks": cache.n_blocks - len(cache.free_blocks)})
        step += 1
    model.train(was_training)
    return [torch.tensor(t) for t in tokens], log
