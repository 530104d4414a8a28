"""course_lib.positional against the papers' formulas and Hugging Face `transformers`
(GPT-2 wpe, Llama RoPE, BLOOM ALiBi, T5 relative buckets), built from tiny random configs offline."""
import math

import pytest
import torch
from transformers import GPT2Config, GPT2Model, LlamaConfig, T5Config
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.distilbert.modeling_distilbert import _create_sinusoidal_embeddings
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
from transformers.models.t5.modeling_t5 import T5Attention

from course_lib.config import ConfigError
from course_lib.positional import (LearnedPositionalEmbedding, RelativeBiasConfig, RopeScaling, T5RelativeBias,
                                   alibi_bias, alibi_slopes, apply_rope, apply_rope_complex, apply_rotary,
                                   half_to_adjacent_permutation, relative_position_bucket, rope_cos_sin,
                                   sinusoidal_encoding)


# ------------------------------------------------------------------ sinusoidal and learned
def paper_sinusoidal(T, d, base=10000.0):
    """Vaswani et al. 2017 §3.5, one entry at a time."""
    return torch.tensor([[math.sin(p / base ** (k / d)) if k % 2 == 0 else math.cos(p / base ** ((k - 1) / d))
                          for k in range(d)] for p in range(T)], dtype=torch.float64)


@pytest.mark.parametrize("T,d,base", [(50, 16, 10000.0), (7, 2, 10000.0), (33, 64, 100.0)])
def test_sinusoidal_matches_the_paper_formula(T, d, base):
    ours = sinusoidal_encoding(T, d, base, dtype=torch.float64)
    err = (ours - paper_sinusoidal(T, d, base)).abs().max().item()
    print(f"sinusoidal T={T} d={d}: max abs error vs paper formula {err:.1e}")
    assert ours.shape == (T, d) and err <= 1e-12


def test_sinusoidal_matches_distilbert():
    theirs = torch.empty(128, 32)
    _create_sinusoidal_embeddings(128, 32, theirs)
    err = (sinusoidal_encoding(128, 32) - theirs).abs().max().item()
    print(f"sinusoidal vs DistilBERT: max abs error {err:.1e}")
    assert err <= 1e-6


def test_sinusoidal_bad_sizes_are_explained():
    with pytest.raises(ValueError, match="even d"):
        sinusoidal_encoding(5, 7)
    with pytest.raises(ValueError, match="T >= 1"):
        sinusoidal_encoding(0, 8)


def test_learned_embedding_is_gpt2_wpe():
    torch.manual_seed(0)
    hf = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=16, vocab_size=50,
                                bos_token_id=0, eos_token_id=0)).eval()
    ours = LearnedPositionalEmbedding(16, 32)
    ours.load_state_dict(hf.wpe.state_dict())
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        embeddings = hf(ids, output_hidden_states=True).hidden_states[0]  # wte(ids) + wpe(positions)
        mine = hf.wte(ids) + ours(torch.arange(9))
    err = (embeddings - mine).abs().max().item()
    print(f"learned vs GPT-2 embeddings: max abs error {err:.1e}")
    assert err == 0.0
    assert isinstance(ours, torch.nn.Embedding) and ours.weight.shape == (16, 32)


def test_learned_embedding_refuses_to_extrapolate():
    emb = LearnedPositionalEmbedding(8, 4)
    assert emb(torch.arange(8)).shape == (8, 4)
    assert emb(torch.arange(6).view(2, 3)).shape == (2, 3, 4)  # (B, T) -> (B, T, d)
    with pytest.raises(ValueError, match="beyond the 8 learned positions"):
        emb(torch.arange(9))
    with pytest.raises(TypeError, match="integer tensor"):
        emb(torch.arange(3.0))
    with pytest.raises(ConfigError, match="max_positions=0"):
        LearnedPositionalEmbedding(0, 4)


# ------------------------------------------------------------------ RoPE
def _llama_cos_sin(head_dim, theta, position_ids, rope_type="default", factor=None):
    params = {"rope_type": rope_type, "rope_theta": theta}
    if factor is not None:
        params["factor"] = factor
    cfg = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, max_position_embeddings=64,
                      rope_parameters=params)
    x = torch.zeros(1)
    return LlamaRotaryEmbedding(cfg)(x, position_ids)


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
@pytest.mark.parametrize("position_ids", [torch.arange(7)[None], torch.stack([torch.arange(7), torch.arange(20, 27)])])
def test_rope_half_layout_equals_transformers_llama(theta, position_ids):
    g = torch.Generator().manual_seed(0)
    B, H, T, D = position_ids.size(0), 3, 7, 16
    q = torch.randn(B, H, T, D, generator=g)
    k = torch.randn(B, H, T, D, generator=g)
    cos_hf, sin_hf = _llama_cos_sin(D, theta, position_ids)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos_hf, sin_hf)
    cos, sin = rope_cos_sin(position_ids, D, theta, layout="half")  # (B, T, D)
    pos = position_ids if B > 1 else position_ids[0]  # (T,) also works
    errs = [(cos - cos_hf).abs().max().item(), (sin - sin_hf).abs().max().item(),
            (apply_rotary(q, cos, sin, "half") - q_hf).abs().max().item(),
            (apply_rope(k, pos, theta, layout="half") - k_hf).abs().max().item()]
    print(f"RoPE half vs transformers Llama, theta={theta:g}, B={B}: max abs errors {max(errs):.1e}")
    assert max(errs) == 0.0


@pytest.mark.parametrize("kind,hf_type", [("linear", "linear"), ("ntk", "dynamic")])
def test_rope_scaling_equals_transformers(kind, hf_type):
    D, factor, seq_len = 16, 4.0, 200  # HF's dynamic NTK at seq_len uses factor*seq_len/max - (factor-1)
    positions = torch.arange(seq_len)[None]
    cos_hf, sin_hf = _llama_cos_sin(D, 10000.0, positions, hf_type, factor)
    ours_factor = factor if kind == "linear" else factor * seq_len / 64 - (factor - 1)
    cos, sin = rope_cos_sin(positions, D, 10000.0, "half", RopeScaling(kind, ours_factor))
    err = max((cos - cos_hf).abs().max().item(), (sin - sin_hf).abs().max().item())
    print(f"RoPE {kind} scaling vs transformers {hf_type}: max abs error {err:.1e}")
    assert err <= 1e-5


def test_adjacent_layout_equals_meta_complex_form():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 9, 32, generator=g, dtype=torch.float64)
    for pos in (torch.arange(9), torch.arange(100, 109), torch.randint(0, 500, (2, 9), generator=g)):
        err = (apply_rope(x, pos, layout="adjacent") - apply_rope_complex(x, pos)).abs().max().item()
        assert err <= 1e-12, err
    print(f"RoPE adjacent vs view_as_complex form: max abs error {err:.1e}")


def test_two_layouts_are_one_rotation_up_to_a_feature_permutation():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 6, 8, generator=g)
    perm = half_to_adjacent_permutation(8)
    assert perm.tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    pos = torch.arange(3, 9)
    err = (apply_rope(x, pos, layout="half")[..., perm] - apply_rope(x[..., perm], pos, layout="adjacent")).abs().max()
    assert err == 0.0
    # ... and the permutation is what makes them agree: unpermuted they differ
    assert (apply_rope(x, pos, layout="half") - apply_rope(x, pos, layout="adjacent")).abs().max() > 0.1


def test_rope_score_depends_only_on_the_position_difference():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 1, 1, 64, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 64, generator=g, dtype=torch.float64)
    for layout in ("adjacent", "half"):
        def score(m, n):
            qm = apply_rope(q, torch.tensor([m]), layout=layout)
            return (qm * apply_rope(k, torch.tensor([n]), layout=layout)).sum().item()
        same_gap = [score(m, m - 3) for m in (3, 10, 250, 4000)]
        assert max(same_gap) - min(same_gap) <= 1e-9
        assert abs(score(10, 7) - score(10, 6)) > 1e-3
    # a rotation keeps norms
    assert torch.allclose(apply_rope(q, torch.tensor([77])).norm(), q.norm())


def test_rope_bad_inputs_are_explained():
    x = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="one position per token"):
        apply_rope(x, torch.arange(4))
    with pytest.raises(ValueError, match="layout='halves'"):
        apply_rope(x, torch.arange(5), layout="halves")
    with pytest.raises(ValueError, match="head_dim must be even"):
        apply_rope(torch.randn(1, 1, 5, 7), torch.arange(5))
    with pytest.raises(TypeError, match="integer tensor"):
        apply_rope(x, torch.arange(5.0))
    with pytest.raises(ConfigError, match=r"RopeScaling.factor=0.5: expected a number >= 1 \(new context length"):
        RopeScaling("linear", 0.5)
    with pytest.raises(ConfigError, match=r"RopeScaling.kind='dynamic': expected one of \('linear', 'ntk', 'yarn'\)"):
        RopeScaling("dynamic", 2.0)
    RopeScaling("ntk", 1)  # factor 1 = no stretch: allowed


# ------------------------------------------------------------------ ALiBi
def paper_slopes(n):
    """Press et al. 2022 §3 and footnote: geometric 2^(-8/n); otherwise the closest power of two plus
    every other slope of twice that."""
    def geo(m):
        return [2 ** (-8 * (i + 1) / m) for i in range(m)]
    p = 2 ** int(math.log2(n))
    return geo(p) + geo(2 * p)[::2][: n - p]


@pytest.mark.parametrize("n_heads", [1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40])
def test_alibi_slopes_match_paper_and_bloom(n_heads):
    ours = alibi_slopes(n_heads)
    bloom = build_alibi_tensor(torch.ones(1, 3), n_heads, torch.float32)[:, 0, 1]  # slope * position 1
    err = max((ours - bloom).abs().max().item(),
              (ours.double() - torch.tensor(paper_slopes(n_heads), dtype=torch.float64)).abs().max().item())
    print(f"ALiBi slopes, {n_heads} heads: max abs error vs BLOOM and paper {err:.1e}")
    assert ours.shape == (n_heads,) and err <= 1e-7


def test_alibi_bias_gives_bloom_attention_under_a_causal_mask():
    """BLOOM adds slope * j (key position) instead of -slope * (i - j): the two differ by slope * i,
    the same for every key of query i, so softmax gives the same weights."""
    g = torch.Generator().manual_seed(4)
    H, T = 6, 9
    scores = torch.randn(H, T, T, generator=g)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    bloom = build_alibi_tensor(torch.ones(1, T), H, torch.float32).view(H, 1, T)  # (B*H, 1, T) -> (H, 1, T)
    w_ours = torch.softmax((scores + alibi_bias(H, T, T)).masked_fill(~causal, float("-inf")), -1)
    w_bloom = torch.softmax((scores + bloom).masked_fill(~causal, float("-inf")), -1)
    err = (w_ours - w_bloom).abs().max().item()
    print(f"ALiBi attention weights vs BLOOM: max abs error {err:.1e}")
    assert err <= 1e-6


def test_alibi_bias_values_and_kv_cache_rows():
    b = alibi_bias(2, 4, 4)
    assert b.shape == (2, 4, 4)
    assert b[0, 3].tolist() == [-3 * 2 ** -4, -2 * 2 ** -4, -2 ** -4, 0.0]
    assert torch.equal(alibi_bias(2, 1, 4)[:, 0], b[:, 3])  # one new query after 3 cached keys
    with pytest.raises(ConfigError, match="alibi_slopes: n_heads=0: expected a positive integer"):
        alibi_slopes(0)
    with pytest.raises(ValueError, match="T_q=5 > T_k=3"):
        alibi_bias(2, 5, 3)


# ------------------------------------------------------------------ T5 buckets and bias
CONFIGS = [(32, 128), (16, 64), (8, 20), (10, 50), (64, 256)]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", CONFIGS)
def test_t5_buckets_equal_transformers(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-600, 601)
    ours = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    theirs = T5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    assert ours.dtype == theirs.dtype == torch.long and torch.equal(ours, theirs)
    assert 0 <= ours.min() and ours.max() == num_buckets - 1


@pytest.mark.parametrize("is_decoder", [False, True])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20)])
def test_t5_bias_equals_transformers_compute_bias(is_decoder, num_buckets, max_distance):
    torch.manual_seed(0)
    cfg = T5Config(d_model=16, d_kv=4, num_heads=3, relative_attention_num_buckets=num_buckets,
                   relative_attention_max_distance=max_distance, is_decoder=is_decoder)
    hf = T5Attention(cfg, has_relative_attention_bias=True, layer_idx=0)
    ours = T5RelativeBias(3, num_buckets, max_distance, bidirectional=not is_decoder)
    ours.load_state_dict(hf.relative_attention_bias.state_dict(prefix="relative_attention_bias."))
    worst = 0.0
    with torch.no_grad():
        for T_q, T_k, past in [(7, 7, 0), (150, 150, 0), (1, 40, 39), (3, 200, 197)]:
            err = (ours(T_q, T_k, offset=past) - hf.compute_bias(T_q, T_k, past_seen_tokens=past)).abs().max().item()
            worst = max(worst, err)
    print(f"T5 bias vs transformers ({'decoder' if is_decoder else 'encoder'}, {num_buckets}/{max_distance}): "
          f"max abs error {worst:.1e}")
    assert worst == 0.0


def test_t5_causal_buckets_ignore_the_future_and_bad_configs_are_explained():
    b = relative_position_bucket(torch.tensor([-3, -1, 0, 1, 5]), bidirectional=False)
    assert b.tolist() == [3, 1, 0, 0, 0]
    b = relative_position_bucket(torch.tensor([-3, 0, 3]), bidirectional=True)
    assert b.tolist() == [3, 0, 19]
    with pytest.raises(ConfigError, match=r"RelativeBiasConfig.max_distance=4: expected an integer > 8 \(more than "
                                          r"the 8 exactly-bucketed distances, e.g. max_distance=32\)"):
        RelativeBiasConfig(4, 32, 4)
    with pytest.raises(ConfigError, match=r"RelativeBiasConfig.num_buckets=2: expected an integer >= 4 \(half exact, "
                                          r"half logarithmic, per direction"):
        T5RelativeBias(4, 2)
    with pytest.raises(ConfigError, match="RelativeBiasConfig.n_heads=0: expected a positive integer"):
        RelativeBiasConfig(0)
    RelativeBiasConfig(4, 32, 32), RelativeBiasConfig(4, 2, 2, bidirectional=False)  # the smallest that work
