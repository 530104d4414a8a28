"""course_lib.mla: multi-head latent attention equal to Hugging Face's DeepseekV3Attention with copied
weights, the absorbed form equal to the naive one, the latent cache (what it holds, decoding with it),
the config errors, and the cache-bytes table of course_lib.models.deepseek. Tiny configs, offline."""
import pytest
import torch
import transformers as hf
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_ds

from course_lib.config import ConfigError
from course_lib.kv_cache import kv_cache_bytes
from course_lib.mla import LatentCache, MLAConfig, MultiHeadLatentAttention
from course_lib.models.deepseek import (GPT2_XL, LLAMA_3_70B, DeepSeekV3, DeepSeekV3Config, cache_table,
                                        format_cache_table, mla_cache_bytes_per_token)
from course_lib.positional import rope_cos_sin

C, H, R, DN, DR, DV = 32, 4, 12, 8, 4, 6  # d_model, heads, kv_lora_rank, qk_nope, qk_rope, v head dims
TOL = 1e-5


def hf_config(q_lora_rank=16, rope_interleave=True, attention_bias=False, **kw):
    return hf.DeepseekV3Config(
        vocab_size=41, hidden_size=C, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=H, num_key_value_heads=H, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
        topk_group=2, q_lora_rank=q_lora_rank, kv_lora_rank=R, qk_nope_head_dim=DN, qk_rope_head_dim=DR,
        v_head_dim=DV, rope_interleave=rope_interleave, attention_bias=attention_bias, num_mtp_layers=0,
        attn_implementation="eager", **kw)


def ours_like(cfg) -> MultiHeadLatentAttention:
    return MultiHeadLatentAttention(C, H, q_lora_rank=cfg.q_lora_rank, kv_lora_rank=R, qk_nope_head_dim=DN,
                                    qk_rope_head_dim=DR, v_head_dim=DV, bias=cfg.attention_bias,
                                    rope_layout="adjacent" if cfg.rope_interleave else "half")


def perturb(module, seed=0, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)  # norm gains off 1, biases off 0
    return module.eval()


def pair(seed=0, **kw):
    """An HF DeepseekV3Attention and ours with the same weights."""
    cfg = hf_config(**kw)
    theirs = perturb(hf_ds.DeepseekV3Attention(cfg, layer_idx=0), seed)
    ours = ours_like(cfg)
    ours.load_state_dict(theirs.state_dict())  # the same parameter names, nothing to rename
    return cfg, theirs, ours.eval()


def rotary(layer, positions):
    return rope_cos_sin(positions, DR, 10000.0, layer.config.rope_layout)


VARIANTS = [dict(), dict(q_lora_rank=None), dict(rope_interleave=False), dict(attention_bias=True)]
IDS = ["q_lora+interleaved RoPE (V3)", "no q compression (V2-Lite)", "half-split RoPE", "attention_bias"]


# --------------------------------------------------------------------------- parity with Hugging Face
@pytest.mark.parametrize("kw", VARIANTS, ids=IDS)
def test_mla_equals_hf_deepseek_v3_attention(kw):
    cfg, theirs, ours = pair(**kw)
    torch.manual_seed(1)
    x = torch.randn(2, 7, C)
    positions = torch.arange(7)
    cos_sin = hf_ds.DeepseekV3RotaryEmbedding(cfg)(x, positions[None])
    pad = torch.tensor([[1] * 7, [0, 0] + [1] * 5]).bool()  # row 1 left-padded
    allowed = torch.ones(7, 7).tril().bool()[None, None] & pad[:, None, None, :]  # (B, 1, T, T)
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    with torch.no_grad():
        ref = theirs(x, cos_sin, additive)[0]
        y = ours(x, pad[:, None, None, :], is_causal=True, rotary=rotary(ours, positions))
    real = torch.tensor([[True] * 7, [False, False] + [True] * 5])  # fully masked rows are not compared
    err = (y - ref)[real].abs().max().item()
    print(f"MLA vs HF DeepseekV3Attention ({kw or 'V3'}): max abs error {err:.1e}")
    assert err <= TOL
    assert (y - ref)[real].abs().max() < (ref[real].abs().max() * 1e-3)  # a real comparison, not two zeros


def test_the_parity_test_notices_a_wrong_rope_layout():
    """The two RoPE layouts give different outputs, so the parity above really checks the layout."""
    cfg, theirs, ours = pair()
    x = torch.randn(1, 6, C)
    with torch.no_grad():
        ref = theirs(x, hf_ds.DeepseekV3RotaryEmbedding(cfg)(x, torch.arange(6)[None]),
                     torch.zeros(6, 6).masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf")))[0]
        wrong = ours(x, is_causal=True, rotary=rope_cos_sin(torch.arange(6), DR, 10000.0, "half"))
    assert (wrong - ref).abs().max() > 1e-3


# --------------------------------------------------------------------------- absorbed = naive
@pytest.mark.parametrize("kw", VARIANTS, ids=IDS)
def test_the_absorbed_form_equals_the_naive_form(kw):
    _, _, ours = pair(**kw)
    x = torch.randn(2, 9, C)
    r = rotary(ours, torch.arange(9))
    with torch.no_grad():
        naive, w_naive = ours(x, is_causal=True, rotary=r, return_weights=True)
        absorbed, w_abs = ours(x, is_causal=True, rotary=r, return_weights=True, absorbed=True)
        ours64 = ours.double()
        err64 = (ours64(x.double(), is_causal=True, rotary=r) - ours64(x.double(), is_causal=True, rotary=r,
                                                                      absorbed=True)).abs().max().item()
    err = (naive - absorbed).abs().max().item()
    print(f"absorbed vs naive ({kw or 'V3'}): float32 {err:.1e}, float64 {err64:.1e}")
    assert err <= TOL and err64 <= 1e-12  # the same function; only rounding differs
    assert (w_naive - w_abs).abs().max() <= TOL  # the same attention weights too


def test_the_absorbed_form_attends_over_the_latent_with_one_shared_key_head():
    _, _, ours = pair()
    w_q_latent, w_o_latent = ours.absorbed_weights()
    assert w_q_latent.shape == (H, R, 16) and w_o_latent.shape == (C, H, R)
    # folding W_UK into the query: q_nope·k_nope == (W_q_latent c_Q)·c_KV, per head
    x = torch.randn(1, 3, C)
    with torch.no_grad():
        q_nope, _ = ours.queries(x)  # (1, H, 3, DN)
        latent, _ = ours.latent(x)  # (1, 3, R)
        k_nope = ours.kv_b_proj(latent).view(1, 3, H, DN + DV).transpose(1, 2)[..., :DN]  # (1, H, 3, DN)
        q_latent = torch.einsum("btc,hrc->bhtr", ours.query_input(x), w_q_latent)  # (1, H, 3, R)
        assert torch.allclose(q_nope @ k_nope.transpose(-1, -2), q_latent @ latent[:, None].transpose(-1, -2),
                              atol=1e-5)


# --------------------------------------------------------------------------- the latent cache
@pytest.mark.parametrize("absorbed", [False, True], ids=["naive", "absorbed"])
def test_cached_decoding_equals_the_full_forward(absorbed):
    _, _, ours = pair(q_lora_rank=None)
    x = torch.randn(2, 8, C)
    with torch.no_grad():
        full = ours(x, is_causal=True, rotary=rotary(ours, torch.arange(8)))
        cache = LatentCache()
        steps = [ours(x[:, :3], is_causal=True, rotary=rotary(ours, torch.arange(3)), cache=cache, absorbed=absorbed)]
        for t in range(3, 8):  # then one token at a time
            steps.append(ours(x[:, t:t + 1], is_causal=True, rotary=rotary(ours, torch.arange(t, t + 1)),
                              cache=cache, absorbed=absorbed))
    err = (torch.cat(steps, dim=1) - full).abs().max().item()
    print(f"cached decoding ({'absorbed' if absorbed else 'naive'}) vs full forward: max abs error {err:.1e}")
    assert err <= TOL


def test_the_cache_holds_only_the_latent_and_the_rope_key_like_hf():
    cfg, theirs, ours = pair(rope_interleave=False)  # the "half" layout: HF's cached RoPE key is comparable as is
    x = torch.randn(2, 5, C)
    positions = torch.arange(5)
    hf_cache = hf.DynamicCache(config=cfg)
    cache = LatentCache()
    with torch.no_grad():
        theirs(x, hf_ds.DeepseekV3RotaryEmbedding(cfg)(x, positions[None]), None, cache=hf_cache)
        ours(x, is_causal=True, rotary=rotary(ours, positions), cache=cache)
    assert cache.latent.shape == (2, 5, R) and cache.k_rope.shape == (2, 1, 5, DR)
    assert cache.nbytes == 2 * 5 * (R + DR) * 4  # float32: B·T·(r + d_r)·4 bytes, nothing per head
    layer = hf_cache.layers[0]
    assert torch.allclose(cache.latent, layer.keys[:, 0], atol=1e-6)  # HF keeps the same two tensors
    assert torch.allclose(cache.k_rope, layer.values, atol=1e-6)
    # one layer of plain multi-head attention would cache a key and a value of d_qk per head and token
    assert cache.nbytes < kv_cache_bytes(1, H, DN + DR, seq_len=5, batch=2, bytes_per_value=4)


def test_the_latent_cache_rejects_per_head_tensors():
    with pytest.raises(ValueError, match=r"latent \(B, T, r\)"):
        LatentCache().update(torch.zeros(1, H, 3, R), torch.zeros(1, 1, 3, DR))


# --------------------------------------------------------------------------- bad configs
def test_kv_lora_rank_wider_than_the_model_is_a_config_error():
    with pytest.raises(ConfigError, match=r"kv_lora_rank=40 is larger than the model width d_model=32.*"
                                          r"kv_lora_rank <= 32"):
        MLAConfig(d_model=32, n_heads=4, q_lora_rank=None, kv_lora_rank=40)
    with pytest.raises(ConfigError, match=r"q_lora_rank=64 .*q_lora_rank=None"):
        MLAConfig(d_model=32, n_heads=4, q_lora_rank=64, kv_lora_rank=8)
    with pytest.raises(ConfigError, match="DeepSeekV3Config: MLAConfig.kv_lora_rank"):
        DeepSeekV3Config(d_model=32, n_layers=1, n_heads=4, q_lora_rank=None, kv_lora_rank=33,
                         first_k_dense_replace=1)
    with pytest.raises(ConfigError, match="qk_rope_head_dim=5: RoPE rotates pairs"):
        MLAConfig(d_model=32, n_heads=4, q_lora_rank=None, kv_lora_rank=8, qk_rope_head_dim=5)
    MLAConfig(d_model=32, n_heads=4, kv_lora_rank=32, q_lora_rank=None)  # as wide as the model: allowed


# --------------------------------------------------------------------------- the cache-bytes table
def test_the_published_deepseek_v3_attention_numbers_match_hf_defaults():
    """HF's DeepseekV3Config defaults are DeepSeek-V3's published config: an independent copy of ours."""
    ref, ours = hf.DeepseekV3Config(), DeepSeekV3Config()
    for theirs, mine in (("hidden_size", "d_model"), ("num_hidden_layers", "n_layers"),
                         ("num_attention_heads", "n_heads"),
                         ("q_lora_rank", "q_lora_rank"), ("kv_lora_rank", "kv_lora_rank"),
                         ("qk_nope_head_dim", "qk_nope_head_dim"), ("qk_rope_head_dim", "qk_rope_head_dim"),
                         ("v_head_dim", "v_head_dim")):
        assert getattr(ref, theirs) == getattr(ours, mine), mine


def test_the_cache_bytes_table():
    rows = {row.model: row for row in cache_table()}
    print("\n" + format_cache_table(cache_table()))
    assert rows["DeepSeek-V3"].bytes_per_token == 61 * (512 + 64) * 2 == mla_cache_bytes_per_token(DeepSeekV3Config())
    assert rows["DeepSeek-V3 as MHA"].bytes_per_token == 61 * 128 * (192 + 128) * 2
    assert rows["Llama-3-70B"].bytes_per_token == LLAMA_3_70B.bytes_per_token() == 2 * 80 * 8 * 128 * 2
    assert rows["GPT-2 XL"].bytes_per_token == GPT2_XL.bytes_per_token() == 2 * 48 * 1600 * 2
    assert [r.model for r in sorted(rows.values(), key=lambda r: r.bytes_per_token)] == [
        "DeepSeek-V3", "GPT-2 XL", "Llama-3-70B", "DeepSeek-V3 as MHA"]


def test_the_mla_row_is_what_a_latent_cache_really_holds():
    """The formula of the table against bytes measured in real caches of a tiny bf16 model."""
    cfg = DeepSeekV3Config(vocab_size=41, d_model=C, n_layers=3, n_heads=H, d_ff=48, moe_d_ff=16, n_routed_experts=8,
                           top_k=2, n_group=4, topk_group=2, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=R,
                           qk_nope_head_dim=DN, qk_rope_head_dim=DR, v_head_dim=DV)
    model = DeepSeekV3(cfg).to(torch.bfloat16).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, 41, (2, 7)), cache=cache)
    measured = sum(c.nbytes for c in cache) / (2 * 7)  # bytes per token
    assert measured == mla_cache_bytes_per_token(cfg, bytes_per_value=2) == 3 * (R + DR) * 2
