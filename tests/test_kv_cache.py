"""MHA/GQA/MQA with RoPE against Hugging Face's LlamaAttention (copied weights), the KV cache
(cached decoding equals one full pass: for one attention layer, and for whole GPT-2, LLaMA and
Mistral models against Hugging Face) and the cache-size calculator."""
import pytest
import torch

from course_lib.attention import position_mask, sliding_window_mask
from course_lib.positional_attention import PositionalAttention as MultiHeadAttention
from course_lib.config import ConfigError
from course_lib.interop import from_hf
from course_lib.kv_cache import PUBLISHED_CONFIGS, KVCache, ModelShape, format_bytes, kv_cache_bytes
from course_lib.positional import alibi_bias, apply_rope, rope_cos_sin

from helpers import hf_gpt2, hf_llama, ids_and_mask

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding  # noqa: E402


def _hf_llama_attention(C, H, H_kv, dtype, theta=10000.0):
    cfg = LlamaConfig(hidden_size=C, num_attention_heads=H, num_key_value_heads=H_kv, intermediate_size=4 * C,
                      num_hidden_layers=1, vocab_size=16, max_position_embeddings=64, attention_bias=False,
                      rope_theta=theta)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return cfg, LlamaAttention(cfg, layer_idx=0).to(dtype).eval(), LlamaRotaryEmbedding(cfg)


def _ours_from(hf, C, H, H_kv, dtype):
    ours = MultiHeadAttention(C, H, n_kv_heads=H_kv, bias=False).to(dtype).eval()
    ours.load_state_dict(hf.state_dict())  # same names: q_proj, k_proj, v_proj, o_proj
    return ours


# HF computes the softmax and the RoPE angles in float32 even for float64 inputs, hence 1e-6 there
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-6)])
@pytest.mark.parametrize("H,H_kv", [(4, 4), (4, 2), (4, 1)], ids=["MHA", "GQA", "MQA"])
def test_equals_hf_llama_attention_with_rope(H, H_kv, dtype, tol):
    C, B, T = 32, 2, 9
    cfg, hf, rope = _hf_llama_attention(C, H, H_kv, dtype)
    ours = _ours_from(hf, C, H, H_kv, dtype)
    x = torch.randn(B, T, C, dtype=dtype)
    pos = torch.arange(T)[None].expand(B, T)
    cos, sin = rope(x, pos)  # (B, T, D) in HF's "half" layout
    causal = torch.zeros(T, T, dtype=dtype).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    with torch.no_grad():
        theirs, _ = hf(x, position_embeddings=(cos, sin), attention_mask=causal[None, None])
        ours_cs = ours(x, is_causal=True, rotary=(cos, sin))
        ours_fn = ours(x, is_causal=True, rotary=lambda t, p: apply_rope(t, p, cfg.rope_parameters["rope_theta"],
                                                                        layout="half"))
    e1, e2 = (ours_cs - theirs).abs().max().item(), (ours_fn - theirs).abs().max().item()
    print(f"LlamaAttention H={H} H_kv={H_kv} {dtype}: max abs error {e1:.2e} (cos/sin), {e2:.2e} (callable)")
    assert e1 <= tol and e2 <= tol


@pytest.mark.parametrize("H_kv", [4, 2, 1])
def test_cached_decoding_equals_full_forward(H_kv):
    torch.manual_seed(1)
    C, H, T = 32, 4, 11
    m = MultiHeadAttention(C, H, n_kv_heads=H_kv).eval()
    rot = lambda t, p: apply_rope(t, p, layout="half")  # noqa: E731
    x = torch.randn(2, T, C)
    with torch.no_grad():
        full = m(x, is_causal=True, rotary=rot)
        cache = KVCache()
        parts = [m(x[:, :4], is_causal=True, rotary=rot, cache=cache)]  # prefill 4 tokens
        parts += [m(x[:, t:t + 1], is_causal=True, rotary=rot, cache=cache) for t in range(4, T)]
    err = (torch.cat(parts, 1) - full).abs().max().item()
    print(f"cached vs full, H_kv={H_kv}: max abs error {err:.2e}")
    assert err <= 1e-6
    assert cache.seq_len == T and cache.k.shape == (2, H_kv, T, C // H)
    assert cache.nbytes == 2 * 2 * H_kv * T * (C // H) * 4


def test_rolling_window_cache_equals_full_sliding_window():
    torch.manual_seed(2)
    m = MultiHeadAttention(16, 2, n_kv_heads=1).eval()
    x, w = torch.randn(1, 12, 16), 3
    with torch.no_grad():
        full = m(x, window=w)
        assert torch.allclose(full, m(x, mask=sliding_window_mask(12, w)), atol=1e-6)
        cache = KVCache(window=w)
        steps = torch.cat([m(x[:, t:t + 1], window=w, cache=cache) for t in range(12)], 1)
    assert (steps - full).abs().max() <= 1e-6
    assert cache.k.size(2) == w and cache.positions.tolist() == [9, 10, 11] and cache.seq_len == 12


# ------------------------------------------------------------------ whole models: cached decoding = one pass
# Every family with a KV cache (T5's decoder has none), fed the same 11 tokens in pieces. The
# references: Hugging Face's one pass (independent code, copied weights) and our own one pass
# (the cache must change nothing). Mistral's rolling cache holds fewer tokens than the prompt.
FAMILIES = {
    "GPT-2": ("gpt2", {}),
    "LLaMA MHA 6/6": ("llama", dict(num_key_value_heads=6)),
    "LLaMA GQA 6/2": ("llama", {}),
    "Mistral GQA 6/2, rolling cache of 4": ("mistral", dict(sliding_window=4)),
}
SCHEDULES = {"prompt, then one token at a time": (6, 1, 1, 1, 1, 1), "chunks": (4, 3, 4)}  # tokens per call


@pytest.mark.parametrize("padded", [False, True], ids=["no padding", "left and right padding"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_equals_one_pass(family, schedule, padded):
    kind, kw = FAMILIES[family]
    hf = hf_gpt2() if kind == "gpt2" else hf_llama(kind, **kw)
    ours = from_hf(hf)
    ids, mask = ids_and_mask(hf.config.vocab_size, B=3, T=11)  # (B, T) each
    mask = mask if padded else None
    keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()  # padding has no reference
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        one_pass = ours(ids, attention_mask=mask).logits  # (B, T, V)
        cache, steps, t = ours.new_cache(), [], 0
        for n in SCHEDULES[schedule]:
            seen = None if mask is None else mask[:, :t + n]  # (B, t + n): the cached tokens' mask too
            steps.append(ours(ids[:, t:t + n], attention_mask=seen, cache=cache).logits)  # (B, n, V)
            t += n
    cached = torch.cat(steps, 1)  # (B, T, V)
    err_hf = (cached - theirs)[keep].abs().max().item()
    err_self = (cached - one_pass)[keep].abs().max().item()
    print(f"{family}, {schedule}, padded={padded}: max abs logit error {err_hf:.2e} vs HF, {err_self:.2e} vs one pass")
    assert err_hf <= 1e-5 and err_self <= 1e-5
    H, D = hf.config.num_attention_heads, hf.config.hidden_size // hf.config.num_attention_heads
    kept = kw.get("sliding_window", 11)  # a rolling cache never holds more than the window
    assert all(c.seq_len == 11 and c.k.shape == (3, getattr(hf.config, "num_key_value_heads", H), kept, D)
               for c in cache)


def test_bias_argument_equals_alibi_added_by_hand():
    torch.manual_seed(3)
    m = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    bias = alibi_bias(4, 6, 6)
    with torch.no_grad():
        y, w = m(x, is_causal=True, bias=bias, return_weights=True)
        q = m.split_heads(m.q_proj(x), 4)  # (B, H, T, D)
        k = m.split_heads(m.k_proj(x), 4)  # (B, H, T, D)
        s = q @ k.transpose(-1, -2) / 2.0 + bias  # (B, H, T, T); D = 4
        expected = s.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    assert (w - expected).abs().max() <= 1e-6
    with pytest.raises(TypeError, match="float tensor"):
        m(x, bias=torch.ones(6, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match="rotary must be"):
        m(x, rotary="rope")


def test_position_mask_with_offset():
    pm = position_mask(torch.tensor([5]), torch.arange(6), window=3)
    assert pm.tolist() == [[False, False, False, True, True, True]]
    assert torch.equal(position_mask(torch.arange(4), torch.arange(4)), torch.ones(4, 4, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match="window=0"):
        position_mask(torch.arange(2), torch.arange(2), window=0)


def test_rope_cos_sin_matches_hf_rotary_embedding():
    cfg, _, rope = _hf_llama_attention(32, 4, 2, torch.float32)
    pos = torch.arange(7)
    cos, sin = rope(torch.zeros(1), pos[None])
    ours = rope_cos_sin(pos, 8, layout="half")
    assert torch.allclose(cos[0], ours[0], atol=1e-6) and torch.allclose(sin[0], ours[1], atol=1e-6)


# ------------------------------------------------------------------ the calculator
def test_kv_cache_bytes_of_published_models():
    per_token = {n: s.bytes_per_token() for n, s in PUBLISHED_CONFIGS.items()}
    assert per_token["LLaMA-2-7B"] == 2 * 32 * 32 * 128 * 2 == 512 * 1024
    assert per_token["LLaMA-2-70B"] == 2 * 80 * 8 * 128 * 2 == 320 * 1024
    assert per_token["Mistral-7B-v0.1"] == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert per_token["Falcon-7B"] == 2 * 32 * 1 * 64 * 2
    assert PUBLISHED_CONFIGS["LLaMA-2-7B"].cache_bytes(4096) == 2 * 2**30  # 2 GiB at full context
    mistral = PUBLISHED_CONFIGS["Mistral-7B-v0.1"]
    assert mistral.cache_bytes(32768) == mistral.cache_bytes(4096)  # the rolling window caps it
    assert PUBLISHED_CONFIGS["LLaMA-2-70B"].attention.startswith("GQA (8")
    assert PUBLISHED_CONFIGS["Falcon-7B"].attention == "MQA"
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(12) == "12 B"


def test_calculator_errors_say_what_to_fix():
    with pytest.raises(ValueError, match="n_layers=-1"):
        kv_cache_bytes(-1, 8, 128)
    with pytest.raises(ValueError, match="bytes_per_value=0"):
        kv_cache_bytes(1, 8, 128, bytes_per_value=0)
    with pytest.raises(ConfigError, match="n_heads=32 is not divisible by n_kv_heads=5"):
        ModelShape("bad", 32, 4096, 32, 5, 4096)
    with pytest.raises(ConfigError, match="n_layers=0"):
        ModelShape("bad", 0, 4096, 32, 8, 4096)
    with pytest.raises(ValueError, match="window=0"):
        KVCache(window=0)
    cache = KVCache()
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="one cache per layer"):
        cache.update(torch.zeros(1, 4, 1, 4), torch.zeros(1, 4, 1, 4))
    with pytest.raises(ValueError, match=r"\(B, H_kv, T_new, D\)"):
        cache.update(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
