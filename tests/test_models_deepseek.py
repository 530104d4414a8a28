"""course_lib.models.deepseek and course_lib.moe_deepseek: DeepSeek-V3 equal to Hugging Face's
DeepseekV3ForCausalLM (padded batch, cached and absorbed decoding, greedy generation, both round
trips through the interop registry), its MoE router and layer equal to HF's, the aux-loss-free
balancing bias, the config errors, and the parameter counts (tiny models against HF, the published
config against the published 671 B / 37 B). Tiny random configs, offline."""
import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
import transformers as hf
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_ds

import course_lib.interop.deepseek  # noqa: F401  registers the family (until interop/__init__ imports it)
from course_lib.config import ConfigError
from course_lib.generation import generate
from course_lib.interop import FAMILIES, from_hf, to_hf
from course_lib.models.common import count_params
from course_lib.models.deepseek import (PUBLISHED_ACTIVE, PUBLISHED_TOTAL, PUBLISHED_WITH_MTP, DeepSeekV3,
                                        DeepSeekV3Config, deepseek_v3_params, mtp_params, published_rope_scaling,
                                        softmax_scale)
from course_lib.moe_deepseek import (DeepSeekMoE, DeepSeekMoEConfig, deepseek_moe_from_hf, deepseek_routing,
                                     group_limited_topk, sequence_balance_loss, update_bias)

sys.path.insert(0, str(Path(__file__).parent))
from helpers import INTEROP_VOCAB as V, assert_same_state, max_err, padded_batch, perturbed  # noqa: E402

TOL = 1e-5
DEEPSEEK = dict(vocab_size=V, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
                topk_group=2, n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=12,
                qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, routed_scaling_factor=2.5, num_mtp_layers=0)
CASES = {  # name -> HF config overrides
    "V3 layout (sdpa, grouped_mm experts)": {},
    "V2-Lite layout, half RoPE (eager)": dict(q_lora_rank=None, rope_interleave=False, attn_implementation="eager",
                                              experts_implementation="eager", norm_topk_prob=False,
                                              n_shared_experts=2, routed_scaling_factor=1.0),
}
OURS = DeepSeekV3Config(vocab_size=V, d_model=32, n_layers=3, n_heads=4, d_ff=48, moe_d_ff=16, n_routed_experts=8,
                        top_k=2, n_group=4, topk_group=2, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=12,
                        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6)


def hf_model(seed=0, **overrides) -> hf.DeepseekV3ForCausalLM:
    """A tiny HF DeepSeek-V3 with every weight moved off its initial value and a non-zero balancing
    bias in every MoE layer (so a model that ignored it, or used it for the weights, would differ)."""
    torch.manual_seed(seed)
    model = perturbed(hf.DeepseekV3ForCausalLM(hf.DeepseekV3Config(**(DEEPSEEK | overrides))), seed)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, hf_ds.DeepseekV3TopkRouter):
            m.e_score_correction_bias.copy_(torch.randn(m.num_experts, generator=g) * 0.3)
    return model


# --------------------------------------------------------------------------- the whole model
@pytest.mark.parametrize("case", CASES)
def test_from_hf_equals_hf_on_a_padded_batch_and_round_trips(case):
    theirs = hf_model(**CASES[case])
    ours = from_hf(theirs)
    assert isinstance(ours, DeepSeekV3)
    assert not isinstance(ours.blocks[0].ffn, DeepSeekMoE) and isinstance(ours.blocks[1].ffn, DeepSeekMoE)
    batch = padded_batch("causal")
    err = max_err(ours, theirs, batch)
    print(f"DeepSeek-V3 {case}: from_hf vs HF logits on the real positions of a padded batch: max abs error {err:.1e}")
    assert err <= TOL
    back = to_hf(ours)
    assert type(back) is hf.DeepseekV3ForCausalLM
    assert_same_state(back, theirs)  # every tensor, the balancing bias included, comes back exactly
    same_kernels = "attn_implementation" not in CASES[case]  # to_hf builds HF's default kernels
    assert max_err(back, theirs, batch) == 0 if same_kernels else max_err(back, theirs, batch) <= TOL


def test_ours_to_hf_to_ours():
    torch.manual_seed(0)
    ours = perturbed(DeepSeekV3(OURS))
    for block in ours.blocks[1:]:
        block.ffn.gate.e_score_correction_bias.normal_(0, 0.3)
    theirs = to_hf(ours)
    back = from_hf(theirs)
    assert back.config == ours.config
    batch = padded_batch("causal")
    err = max_err(ours, theirs, batch)
    print(f"DeepSeek-V3: to_hf vs course_lib logits on a padded batch: max abs error {err:.1e}")
    assert err <= TOL
    assert_same_state(back, ours)


def test_the_balancing_bias_matters_in_the_comparison():
    """Zeroing the bias in ours alone changes the logits: the parity above really checks it."""
    theirs = hf_model()
    ours = from_hf(theirs)
    for block in ours.blocks[1:]:
        block.ffn.gate.e_score_correction_bias.zero_()
    assert max_err(ours, theirs, padded_batch("causal")) > 1e-3


@pytest.mark.parametrize("absorbed", [False, True], ids=["naive", "absorbed"])
def test_cached_decoding_equals_the_full_forward(absorbed):
    ours = from_hf(hf_model())
    ids = torch.randint(0, V, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = ours(ids).logits
        cache = ours.new_cache()
        steps = [ours(ids[:, :4], cache=cache, absorbed=absorbed).logits]
        steps += [ours(ids[:, t:t + 1], cache=cache, absorbed=absorbed).logits for t in range(4, 10)]
        whole_absorbed = ours(ids, absorbed=True).logits
    err = (torch.cat(steps, dim=1) - full).abs().max().item()
    err_abs = (whole_absorbed - full).abs().max().item()
    print(f"DeepSeek-V3 cached decoding ({'absorbed' if absorbed else 'naive'}) vs full forward: {err:.1e}; "
          f"absorbed vs naive full forward: {err_abs:.1e}")
    assert err <= TOL and err_abs <= TOL


def test_greedy_generation_equals_hf_generate():
    theirs = hf_model(**CASES["V2-Lite layout, half RoPE (eager)"])
    ours = from_hf(theirs)
    prompt = torch.randint(1, V, (2, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = theirs.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 8), expected)


def test_the_registry_entry():
    family = FAMILIES["deepseek_v3"]
    assert family.hf_classes == ("DeepseekV3ForCausalLM",) and family.ours == (DeepSeekV3,)


YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=16, beta_fast=32.0,
            beta_slow=1.0, mscale=1.0, mscale_all_dim=0.8)  # mscale != mscale_all_dim: cos/sin and softmax rescaled


def test_yarn_scaling_as_in_the_published_config():
    """DeepSeek-V3's YaRN: the frequencies by band, cos/sin times mscale/mscale_all_dim, the softmax
    scale times mscale(factor, mscale_all_dim)². Positions past the original 16 are compared."""
    theirs = hf_model(max_position_embeddings=64, rope_parameters=YARN)
    ours = from_hf(theirs)
    assert ours.config.rope_scaling.kind == "yarn" and ours.config.rope_scaling.mscale_all_dim == 0.8
    ids = torch.randint(0, V, (2, 40), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        ref = theirs(ids).logits
        err = (ours(ids).logits - ref).abs().max().item()
        plain = dataclasses.replace(ours.config, rope_scaling=None)
        unscaled = DeepSeekV3(plain).eval()
        unscaled.load_state_dict(ours.state_dict())
        err_plain = (unscaled(ids).logits - ref).abs().max().item()
    print(f"DeepSeek-V3 with YaRN: from_hf vs HF logits over 40 positions: max abs error {err:.1e} "
          f"(plain RoPE instead: {err_plain:.1e})")
    assert err <= TOL and err_plain > 1e-3
    assert_same_state(to_hf(ours), theirs)
    assert theirs.config.rope_parameters.items() <= to_hf(ours).config.rope_parameters.items()  # (+ truncate)


def test_the_published_rope_scaling_and_softmax_scale():
    cfg = dataclasses.replace(DeepSeekV3Config(), rope_scaling=published_rope_scaling())
    assert softmax_scale(DeepSeekV3Config()) == 192 ** -0.5
    assert softmax_scale(cfg) == pytest.approx(192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2)  # ≈ 1.874 / sqrt(192)


def test_from_hf_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="rope_type='dynamic' is not supported"):
        from_hf(hf.DeepseekV3ForCausalLM(hf.DeepseekV3Config(**DEEPSEEK, rope_parameters=dict(
            rope_type="dynamic", rope_theta=10000.0, factor=4.0))))
    with pytest.raises(ValueError, match="num_key_value_heads=2 differs"):
        from_hf(hf.DeepseekV3ForCausalLM(hf.DeepseekV3Config(**(DEEPSEEK | dict(num_key_value_heads=2)))))


# --------------------------------------------------------------------------- the MoE layer and its router
def hf_moe(seed=0, **overrides):
    cfg = hf.DeepseekV3Config(**(DEEPSEEK | dict(num_experts_per_tok=3, n_shared_experts=2, routed_scaling_factor=1.7)
                                 | overrides))
    moe = hf_ds.DeepseekV3MoE(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        moe.gate.e_score_correction_bias.copy_(torch.randn(8, generator=g) * 0.2)
    ours = DeepSeekMoE(d_model=32, d_ff=16, n_experts=8, top_k=3, n_group=4, topk_group=2, n_shared_experts=2,
                       routed_scaling_factor=1.7, norm_topk_prob=cfg.norm_topk_prob)
    ours.load_state_dict(deepseek_moe_from_hf(moe.state_dict()))
    return moe, ours.eval()


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_the_router_equals_hf_and_uses_the_bias_for_the_choice_only(norm_topk_prob):
    moe, ours = hf_moe(norm_topk_prob=norm_topk_prob)
    h = torch.randn(40, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, hf_weights, hf_idx = moe.gate(h)
        stats = ours.route(h)
    order_hf, order = hf_idx.argsort(-1), stats.indices.argsort(-1)  # HF's top-k is unsorted
    assert torch.equal(hf_idx.gather(1, order_hf), stats.indices.gather(1, order))
    assert torch.allclose(hf_weights.gather(1, order_hf), stats.weights.gather(1, order), atol=1e-6)
    # the weights are the *unbiased* sigmoid scores of the chosen experts
    scores = logits.sigmoid().gather(1, stats.indices)  # (N, k)
    expected = scores / scores.sum(-1, keepdim=True) if norm_topk_prob else scores
    assert torch.allclose(stats.weights, expected * 1.7, atol=1e-6)


def test_the_moe_layer_equals_hf_both_dispatch_paths():
    moe, ours = hf_moe()
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = moe(x)
        err = (ours(x) - ref).abs().max().item()
        err_naive = (ours(x, naive=True) - ref).abs().max().item()
    print(f"DeepSeekMoE vs HF DeepseekV3MoE: grouped {err:.1e}, naive {err_naive:.1e}")
    assert err <= TOL and err_naive <= TOL


def test_a_large_bias_steers_the_choice_but_not_the_weights():
    cfg = DeepSeekMoEConfig(d_model=8, d_ff=4, n_experts=8, top_k=2, n_group=1, topk_group=1, routed_scaling_factor=1.0,
                            norm_topk_prob=False)
    logits = torch.randn(50, 8, generator=torch.Generator().manual_seed(7))
    bias = torch.zeros(8)
    bias[5] = 10.0  # expert 5 wins every choice ...
    weights, indices, scores = deepseek_routing(logits, bias, cfg)
    assert (indices == 5).any(-1).all()
    assert torch.equal(weights, scores.gather(1, indices))  # ... but is weighted by its plain score (< 1)
    assert (weights < 1).all()


def test_group_limited_topk_keeps_the_best_groups():
    # 4 groups of 2; group scores (sum of the two best) 1.0+0.0, 0.9+0.8, 0.7+0.7, 0.1+0.1
    scores = torch.tensor([[1.0, 0.0, 0.9, 0.8, 0.7, 0.7, 0.1, 0.1]])
    assert sorted(group_limited_topk(scores, 2, n_group=4, topk_group=2)[0].tolist()) == [2, 3]  # groups 1 and 2
    assert sorted(group_limited_topk(scores, 2, n_group=4, topk_group=4)[0].tolist()) == [0, 2]  # no limit: plain top-k
    idx = group_limited_topk(torch.rand(200, 16), 4, n_group=8, topk_group=2)
    assert max(len(set((row // 2).tolist())) for row in idx) <= 2  # never more than topk_group groups


# --------------------------------------------------------------------------- aux-loss-free balancing
def test_update_bias_follows_the_report():
    bias = torch.tensor([0.0, 0.5, -0.5, 0.0])
    load = torch.tensor([10, 2, 4, 4])  # mean 5: expert 0 overloaded, the others underloaded
    assert torch.equal(update_bias(bias, load, 0.1), torch.tensor([-0.1, 0.6, -0.4, 0.1]))
    assert torch.equal(update_bias(bias, torch.tensor([5, 5, 5, 5]), 0.1), bias)  # balanced: unchanged
    with pytest.raises(ValueError, match="one number per routed expert"):
        update_bias(bias, torch.ones(3), 0.1)


def test_updating_the_bias_balances_a_skewed_router():
    """Routers whose logits favour some experts: without the bias the load is very uneven; after
    steps of update_bias (no gradient anywhere) it is close to even."""
    cfg = DeepSeekMoEConfig(d_model=8, d_ff=4, n_experts=16, top_k=2, n_group=4, topk_group=2)
    g = torch.Generator().manual_seed(8)
    preference = torch.linspace(-2, 2, 16)  # expert 15 is liked much more than expert 0
    bias = torch.zeros(16)

    def spread(bias):
        logits = torch.randn(2000, 16, generator=g) + preference
        _, idx, _ = deepseek_routing(logits, bias, cfg)
        load = torch.bincount(idx.flatten(), minlength=16).float()
        return load, (load.max() / load.mean()).item()

    _, before = spread(bias)
    for _ in range(200):
        load, _ = spread(bias)
        bias = update_bias(bias, load, 0.01)
    _, after = spread(bias)
    print(f"aux-loss-free balancing: max load / mean load {before:.2f} -> {after:.2f}")
    assert before > 3 and after < 1.3


def test_the_layer_updates_its_own_bias_from_its_last_routing():
    _, ours = hf_moe()
    with pytest.raises(ValueError, match="forward pass first"):
        DeepSeekMoE(d_model=32, d_ff=16, n_experts=8, top_k=2, n_group=4, topk_group=2).update_bias(0.1)
    with torch.no_grad():
        ours(torch.randn(1, 30, 32))
    load, before = ours.last.load(), ours.gate.e_score_correction_bias.clone()
    after = ours.update_bias(0.05)
    assert torch.equal(after, update_bias(before, load, 0.05))
    assert not any(p is ours.gate.e_score_correction_bias for p in ours.parameters())  # a buffer, never trained


def test_the_complementary_balance_loss_is_the_reports_formula():
    """Σ_i f_i P_i, f_i = E/(k·T)·(tokens choosing i), P_i = mean_t s_i,t / Σ_j s_j,t, written as loops."""
    g = torch.Generator().manual_seed(9)
    scores = torch.rand(6, 4, generator=g)  # (T, E)
    indices = scores.topk(2, dim=-1).indices  # (T, k)
    T, E, k = 6, 4, 2
    expected = 0.0
    for i in range(E):
        f = E / (k * T) * sum(int(i in indices[t].tolist()) for t in range(T))
        P = sum(scores[t, i] / scores[t].sum() for t in range(T)) / T
        expected += f * P
    assert torch.allclose(sequence_balance_loss(scores, indices, E), torch.as_tensor(expected), atol=1e-6)
    uniform = sequence_balance_loss(torch.ones(4, 4), torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3]]), 4)
    assert torch.allclose(uniform, torch.tensor(1.0))  # balanced load and scores: exactly 1


# --------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("fields, message", [
    (dict(n_experts=10, n_group=4), r"n_experts=10 is not divisible by n_group=4"),
    (dict(n_experts=8, n_group=8, topk_group=2), r"leaves 1 expert per group"),
    (dict(n_experts=8, n_group=2, topk_group=3), r"topk_group=3 is more than n_group=2"),
    (dict(n_experts=8, n_group=4, topk_group=1, top_k=3), r"top_k=3: a token chooses among .* 2 experts"),
    (dict(routed_scaling_factor=0.0), r"routed_scaling_factor=0.0"),
])
def test_moe_config_errors_say_how_to_fix_them(fields, message):
    base = dict(d_model=8, d_ff=4, n_experts=8, top_k=2, n_group=4, topk_group=2)
    with pytest.raises(ConfigError, match=message):
        DeepSeekMoEConfig(**(base | fields))


def test_model_config_errors():
    with pytest.raises(ConfigError, match=r"DeepSeekV3Config: DeepSeekMoEConfig.n_experts=6 is not divisible "
                                          r"by n_group=4"):
        dataclasses.replace(OURS, n_routed_experts=6)
    with pytest.raises(ConfigError, match=r"first_k_dense_replace=4"):
        dataclasses.replace(OURS, first_k_dense_replace=4)
    dense_only = dataclasses.replace(OURS, first_k_dense_replace=3, n_routed_experts=6)  # no MoE layer: not checked
    assert not any(isinstance(b.ffn, DeepSeekMoE) for b in DeepSeekV3(dense_only).blocks)


# --------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("case", CASES)
def test_the_count_equals_the_instantiated_models(case):
    theirs = hf_model(**CASES[case])
    ours = from_hf(theirs)
    counted = deepseek_v3_params(ours.config)
    assert counted.total == count_params(ours) == sum(p.numel() for p in theirs.parameters())


def test_the_active_count_is_what_one_token_touches():
    """Parameters that get a gradient from one token's loss = the active count (every weight of
    the embedding table counted, as the total does)."""
    ours = from_hf(hf_model())
    ours.train()
    ours(torch.tensor([[7]])).logits.sum().backward()
    touched = sum(p.numel() for p in ours.parameters() if p.grad is not None)
    counted = deepseek_v3_params(ours.config)
    assert touched == counted.active < counted.total


def test_deepseek_v3_has_671b_parameters_37b_active():
    counts = deepseek_v3_params(DeepSeekV3Config())
    mtp = mtp_params(DeepSeekV3Config())
    print(f"DeepSeek-V3: {counts.total:,} parameters ({counts.total / 1e9:.2f} B), {counts.active:,} active "
          f"({counts.active / 1e9:.2f} B); MTP module as stored {mtp.total / 1e9:.2f} B; "
          f"with it {(counts.total + mtp.total) / 1e9:.2f} B")
    assert counts.total == 671_026_404_352 and round(counts.total / 1e9) == PUBLISHED_TOTAL / 1e9
    assert int(counts.active / 1e9) == PUBLISHED_ACTIVE / 1e9  # 37.55 B
    assert abs((counts.total + mtp.total) - PUBLISHED_WITH_MTP) < 1e9  # 684.5 B: the Hub's "685B" with FP8 scales


def test_the_published_config_equals_hf_defaults():
    """HF's DeepseekV3Config defaults are DeepSeek-V3's config.json (less the YaRN scaling): an
    independent copy of the numbers typed into DeepSeekV3Config."""
    ref = hf.DeepseekV3Config()
    converted = course_lib.interop.deepseek.deepseek_config_from_hf(ref)
    assert dataclasses.replace(converted, max_positions=163840) == DeepSeekV3Config()
