"""The paged KV cache (course_lib.paged_kv_cache).

* the pool: blocks taken as a sequence grows, returned by free(), a clear error when exhausted;
* write/gather: what comes back is exactly what was written, left-padded;
* decoding through course_lib's LLaMA, Mistral (sliding window) and GPT with the paged cache:
  equal to the contiguous KVCache, and to Hugging Face's full forward on the same weights
  (independent), also for a batch of sequences of different lengths in one call;
* the waste of padding, against the closed-form count;
* continuous batching: every request's tokens equal Hugging Face's greedy decoding of that
  request alone, and the pool is empty at the end.
"""
import math

import pytest
import torch
from helpers import LLAMA_VOCAB, hf_gpt2, hf_llama

from course_lib.generation import generate
from course_lib.kv_cache import kv_cache_bytes
from course_lib.models import GPT
from course_lib.paged_kv_cache import (
    PagedKVCache,
    PoolExhausted,
    Request,
    continuous_batching,
    measure_waste,
    paged_forward,
)


# ------------------------------------------------------------------ the pool
def test_blocks_are_taken_as_sequences_grow_and_returned_when_freed():
    cache = PagedKVCache(n_layers=2, n_kv_heads=1, head_dim=2, n_blocks=5, block_size=4)
    cache.add_sequence("a"), cache.add_sequence("b")
    kv = torch.ones(1, 5, 2)  # (H_kv, T, D)
    for layer in range(2):
        cache.write(layer, "a", kv, kv)  # 5 tokens: 2 blocks
    cache.write(0, "b", kv[:, :1], kv[:, :1])
    assert cache.block_tables == {"a": [0, 1], "b": [2]} and cache.length("a") == 5
    assert cache.allocated_bytes == 3 * cache.block_bytes == 3 * 2 * 2 * 4 * 1 * 2 * 4  # blocks x K,V x layers x ...
    with pytest.raises(PoolExhausted, match="needs 3 more blocks of 4 tokens but has 2 free.*n_blocks"):
        cache.write(0, "b", torch.ones(1, 12, 2), torch.ones(1, 12, 2))
    assert cache.block_tables["b"] == [2] and len(cache.free_blocks) == 2  # nothing taken by the failed call
    cache.free("a")
    assert sorted(cache.free_blocks) == [0, 1, 3, 4] and "a" not in cache.block_tables
    cache.add_sequence("c")
    cache.write(0, "c", kv, kv)
    assert cache.block_tables["c"] == [0, 1]  # freed blocks are reused
    with pytest.raises(ValueError, match="already in the cache"):
        cache.add_sequence("c")
    with pytest.raises(KeyError, match="add_sequence"):
        cache.layers(["zzz"])


def test_gather_returns_what_was_written_left_padded():
    g = torch.Generator().manual_seed(0)
    cache = PagedKVCache(n_layers=1, n_kv_heads=2, head_dim=3, n_blocks=20, block_size=3)
    written = {}
    for s, chunks in {"x": [4, 1, 1], "y": [7], "z": [1, 1, 1, 1, 1]}.items():
        cache.add_sequence(s)
        parts = [torch.randn(2, 2, n, 3, generator=g) for n in chunks]  # (K/V, H_kv, n, D)
        for kv in parts:
            cache.write(0, s, kv[0], kv[1])
        written[s] = torch.cat(parts, dim=2)  # (2, H_kv, T, D)
    keys, values, real = cache.gather(0, ["x", "y", "z"], 9)  # (3, H_kv, 9, D), (3, 9)
    for b, s in enumerate(["x", "y", "z"]):
        n = written[s].size(2)
        assert torch.equal(keys[b, :, 9 - n:], written[s][0]) and torch.equal(values[b, :, 9 - n:], written[s][1])
        assert not keys[b, :, :9 - n].any() and real[b].tolist() == [False] * (9 - n) + [True] * n


# ------------------------------------------------------------------ decoding equals the contiguous cache and HF
def _course(hf):
    from course_lib.interop import from_hf
    return from_hf(hf).eval()


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_decoding_with_the_paged_cache_equals_the_contiguous_cache_and_hf(kind):
    extra = {"sliding_window": 5} if kind == "mistral" else {}
    hf = hf_llama(kind, **extra)
    model = _course(hf)
    ids = torch.randint(0, LLAMA_VOCAB, (1, 14), generator=torch.Generator().manual_seed(2))
    paged, contiguous = PagedKVCache.for_model(model, n_blocks=8, block_size=3), model.new_cache()
    paged.add_sequence(0)
    with torch.no_grad():
        steps = [(paged_forward(model, paged, [0], ids[:, :6]).logits, model(ids[:, :6], cache=contiguous).logits)]
        for t in range(6, 14):
            steps.append((paged_forward(model, paged, [0], ids[:, t:t + 1]).logits,
                          model(ids[:, t:t + 1], cache=contiguous).logits))
        reference = hf(ids).logits  # (1, 14, V): one full forward
    ours = torch.cat([a for a, _ in steps], dim=1)  # (1, 14, V)
    assert torch.allclose(ours, torch.cat([b for _, b in steps], dim=1), atol=1e-6, rtol=0)
    assert (ours - reference).abs().max() <= 1e-5
    assert paged.block_tables[0] == [0, 1, 2, 3, 4] and paged.length(0) == 14  # ceil(14 / 3) blocks


def test_a_batch_of_different_lengths_in_one_call_equals_each_sequence_alone():
    hf = hf_llama()
    model = _course(hf)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, LLAMA_VOCAB, (1, n), generator=g) for n in (2, 9, 5)]
    cache = PagedKVCache.for_model(model, n_blocks=12, block_size=4)
    with torch.no_grad():
        for s, p in enumerate(prompts):
            cache.add_sequence(s)
            paged_forward(model, cache, [s], p)  # prefill alone
        nxt = torch.tensor([[7], [8], [9]])  # (3, 1): one more token for each, in one batched call
        batched = paged_forward(model, cache, [0, 1, 2], nxt).logits[:, -1]  # (3, V)
        alone = torch.stack([hf(torch.cat([p, nxt[s:s + 1]], 1)).logits[0, -1] for s, p in enumerate(prompts)])
    assert (batched - alone).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="one token at a time"):
        paged_forward(model, cache, [0, 1], torch.zeros(2, 2, dtype=torch.long))


def test_gpt_through_the_paged_cache_equals_hf_gpt2():
    hf = hf_gpt2()
    model = _course(hf)
    ids = torch.randint(0, 61, (1, 10), generator=torch.Generator().manual_seed(4))
    cache = PagedKVCache.for_model(model, n_blocks=4, block_size=4)
    cache.add_sequence("s")
    with torch.no_grad():
        logits = [paged_forward(model, cache, ["s"], ids[:, :3]).logits]
        logits += [paged_forward(model, cache, ["s"], ids[:, t:t + 1]).logits for t in range(3, 10)]
        assert (torch.cat(logits, 1) - hf(ids).logits).abs().max() <= 1e-5


# ------------------------------------------------------------------ the waste of padding
def test_waste_of_padding_measured_against_the_count():
    lengths, block = [1000, 20, 300, 5, 60], 16
    w = measure_waste(lengths, block_size=block, n_layers=2, n_kv_heads=2, head_dim=8)
    per_token = kv_cache_bytes(n_layers=2, n_kv_heads=2, head_dim=8, bytes_per_value=4)  # fp32
    assert w.used == sum(lengths) * per_token
    assert w.contiguous == len(lengths) * max(lengths) * per_token
    assert w.paged == sum(math.ceil(n / block) for n in lengths) * block * per_token
    assert round(w.contiguous_waste, 3) == 0.723 and round(w.paged_waste, 3) == 0.027
    assert w.paged_waste < (block - 1) * len(lengths) / sum(lengths)  # at most one partly filled block each
    assert "72.3% padding" in str(w)
    with pytest.raises(ValueError, match="at least one sequence"):
        measure_waste([])


# ------------------------------------------------------------------ continuous batching
def _requests(vocab, seed=5):
    g = torch.Generator().manual_seed(seed)
    plan = [(5, 7, 0), (12, 3, 0), (2, 9, 2), (7, 4, 3), (3, 1, 5), (4, 6, 9)]  # prompt length, new tokens, arrival
    return [Request(torch.randint(0, vocab, (n,), generator=g), new, arrival) for n, new, arrival in plan]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_continuous_batching_equals_decoding_each_request_alone(family):
    hf = hf_llama() if family == "llama" else hf_gpt2()
    model = _course(hf)
    requests = _requests(hf.config.vocab_size)
    outputs, log = continuous_batching(model, requests, n_blocks=24, block_size=4)
    for r, out in zip(requests, outputs):
        with torch.no_grad():
            alone = hf.generate(r.prompt[None], max_new_tokens=r.n_new, min_new_tokens=r.n_new, do_sample=False,
                                attention_mask=torch.ones(1, len(r.prompt), dtype=torch.long), pad_token_id=0)
        assert torch.equal(out, alone[0]) and torch.equal(out, generate(model, r.prompt[None], r.n_new)[0])
    # sequences joined and left between steps, and every block went back to the pool
    assert [e["joined"] for e in log.steps[:6]] == [[0, 1], [], [2], [3], [], [4]]
    assert log.steps[2]["left"] == [1] and log.steps[5]["left"] == [4] and log.steps[-1]["blocks"] == 0
    assert max(len(e["running"]) for e in log.steps) == 3
    assert "joined" in log.table()


def test_continuous_batching_with_too_small_a_pool_says_so():
    model = GPT(vocab_size=11, max_positions=32, d_model=16, n_layers=1, n_heads=2)
    requests = [Request(torch.zeros(6, dtype=torch.long), 8), Request(torch.ones(6, dtype=torch.long), 8)]
    with pytest.raises(PoolExhausted, match="free"):
        continuous_batching(model, requests, n_blocks=4, block_size=4)
    with pytest.raises(ValueError, match="1-D prompt"):
        continuous_batching(model, [Request(torch.zeros(1, 3, dtype=torch.long), 2)])
