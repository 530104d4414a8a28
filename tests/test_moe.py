"""course_lib.moe against independent references: Hugging Face Mixtral's router, sparse block and
balancing loss (tiny random configs, copied weights, nothing downloaded), the dense definition
of a mixture, and parameter counts of a real Mixtral-8x7B built on the meta device."""
import math

import pytest
import torch
import torch.nn as nn
from transformers import MixtralConfig, MixtralForCausalLM
from transformers.models.mixtral.modeling_mixtral import (MixtralSparseMoeBlock, MixtralTopKRouter,
                                                          load_balancing_loss_func)

from course_lib.attention import MultiHeadAttention
from course_lib.blocks import Block
from course_lib.config import ConfigError
from course_lib.models.sizes import moe_params, moe_params_from_hf
from course_lib.moe import (MoEConfig, SparseMoE, capacity_mask, expert_capacity, expert_load,
                            from_hf_mixtral_block, load_balancing_loss, mixtral_block_state_dict, mixtral_block_to_hf,
                            moe_aux_loss, router_z_loss,
                            top_k_routing)


def tiny_mixtral_config(**kw):
    base = dict(hidden_size=16, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=50, num_hidden_layers=2,
                experts_implementation="eager")
    return MixtralConfig(**{**base, **kw})


def random_hf_block(seed=0, **kw):
    torch.manual_seed(seed)
    block = MixtralSparseMoeBlock(tiny_mixtral_config(**kw)).eval()
    for p in block.parameters():  # the fused expert tensors start uninitialised (torch.empty)
        nn.init.normal_(p, std=0.3)
    return block


# --------------------------------------------------------------------------- routing
@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_both_orders_agree_when_renormalised(k):
    logits = torch.randn(50, 8, dtype=torch.float64)
    w1, i1 = top_k_routing(logits, k, order="softmax_topk")
    w2, i2 = top_k_routing(logits, k, order="topk_softmax")
    assert torch.equal(i1, i2)
    err = (w1 - w2).abs().max().item()
    print(f"k={k}: max |softmax→top-k→renorm − top-k→softmax| = {err:.1e}")
    assert err < 1e-12
    torch.testing.assert_close(w1.sum(-1), torch.ones(50, dtype=torch.float64))


def test_orders_differ_without_renormalisation_unless_k_is_all_experts():
    logits = torch.randn(20, 8)
    w_raw, _ = top_k_routing(logits, 2, normalize=False)
    w_norm, _ = top_k_routing(logits, 2, order="topk_softmax")
    assert (w_raw.sum(-1) < 1).all() and not torch.allclose(w_raw, w_norm)
    w_raw8, _ = top_k_routing(logits, 8, normalize=False)
    torch.testing.assert_close(w_raw8, top_k_routing(logits, 8, order="topk_softmax")[0])


def test_routing_equals_hf_mixtral_router():
    cfg = tiny_mixtral_config()
    hf = MixtralTopKRouter(cfg)
    nn.init.normal_(hf.weight)
    h = torch.randn(30, cfg.hidden_size)
    with torch.no_grad():
        logits, scores, idx = hf(h)
        w, i = top_k_routing(h @ hf.weight.T, cfg.num_experts_per_tok)
    assert torch.equal(i, idx)
    err = (w - scores).abs().max().item()
    print(f"router weights vs HF MixtralTopKRouter: max abs error {err:.1e}")
    assert err < 1e-6


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k=0"), (dict(k=5), "between 1 and the number of experts"),
    (dict(k=2, order="sorted"), "order='sorted'"), (dict(k=2, order="topk_softmax", normalize=False), "normalised"),
])
def test_routing_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        top_k_routing(torch.randn(3, 4), **kwargs)


def test_routing_rejects_unflattened_logits():
    with pytest.raises(ValueError, match="flatten"):
        top_k_routing(torch.randn(2, 3, 4), 2)


# --------------------------------------------------------------------------- auxiliary losses
@pytest.mark.parametrize("k", [1, 2])
def test_balancing_loss_equals_hf(k):
    logits = torch.randn(40, 6) * 2
    probs = torch.softmax(logits, -1)
    ours = load_balancing_loss(probs, probs.topk(k, -1).indices, 6)
    theirs = load_balancing_loss_func((logits,), 6, top_k=k)
    print(f"k={k}: balancing loss {ours.item():.4f} vs HF {theirs.item():.4f}")
    torch.testing.assert_close(ours, theirs)


def test_balancing_loss_extremes_and_gradient():
    E, N = 4, 8
    uniform = torch.full((N, E), 1 / E, requires_grad=True)
    spread = torch.arange(N * 2).view(N, 2) % E  # every expert chosen equally often, k=2
    loss = load_balancing_loss(uniform, spread, E)
    torch.testing.assert_close(loss, torch.tensor(2.0))  # balanced: k
    loss.backward()
    assert uniform.grad is not None and uniform.grad.abs().sum() > 0  # through P only
    collapsed = torch.zeros(N, E)
    collapsed[:, 0] = 1.0
    torch.testing.assert_close(load_balancing_loss(collapsed, torch.zeros(N, 1, dtype=torch.long), E),
                               torch.tensor(float(E)))  # everything on one expert: N_E


def test_router_z_loss():
    logits = torch.randn(10, 5)
    expected = (torch.log(torch.exp(logits).sum(-1)) ** 2).mean()
    torch.testing.assert_close(router_z_loss(logits), expected)
    assert router_z_loss(logits * 10) > router_z_loss(logits)


# --------------------------------------------------------------------------- capacity
def test_expert_capacity():
    assert expert_capacity(16, 4, 1, 1.0) == 4
    assert expert_capacity(16, 4, 2, 1.25) == 10
    assert expert_capacity(3, 8, 1, 1.0) == 1  # ceil
    with pytest.raises(ValueError, match="capacity_factor=0"):
        expert_capacity(16, 4, 1, 0)


def test_capacity_mask_priority():
    # 4 tokens, k=2. Expert 0 is every token's first choice; capacity 2 keeps tokens 0 and 1.
    idx = torch.tensor([[0, 1], [0, 2], [0, 1], [0, 1]])
    kept = capacity_mask(idx, 3, capacity=2)
    expected = torch.tensor([[True, True], [True, True], [False, True], [False, False]])
    assert torch.equal(kept, expected)  # token 3's second choice loses to token 0 and 2's
    # first choices beat second choices even from earlier tokens
    idx = torch.tensor([[1, 0], [0, 1]])
    assert torch.equal(capacity_mask(idx, 2, capacity=1), torch.tensor([[True, False], [True, False]]))


def test_capacity_never_exceeded():
    idx = torch.randn(100, 4).topk(2, -1).indices
    for cap in (1, 10, 30, 200):
        kept = capacity_mask(idx, 4, cap)
        assert (expert_load(idx[kept][:, None], 4) <= cap).all()
    assert capacity_mask(idx, 4, 200).all()


# --------------------------------------------------------------------------- the layer
def test_sparse_moe_equals_hf_mixtral_block():
    hf = random_hf_block()
    moe = from_hf_mixtral_block(hf)
    x = torch.randn(3, 7, 16)
    with torch.no_grad():
        expected = hf(x.clone())
        hf_logits = hf.gate(x.reshape(-1, 16))[0]
        out = moe(x)
    err = (out - expected).abs().max().item()
    err_logits = (moe.last.router_logits - hf_logits).abs().max().item()
    print(f"SparseMoE vs HF MixtralSparseMoeBlock: output max abs error {err:.1e}, router logits {err_logits:.1e}")
    assert err < 1e-5 and err_logits < 1e-6


def test_mixtral_old_checkpoint_layout():
    hf = random_hf_block(1)
    fused = mixtral_block_state_dict(hf.state_dict())
    old = {"gate.weight": fused["gate.weight"]}
    for e in range(4):  # the per-expert w1/w3/w2 names of the original Mixtral checkpoints
        old[f"experts.{e}.w1.weight"] = fused[f"experts.{e}.gate_proj.weight"]
        old[f"experts.{e}.w3.weight"] = fused[f"experts.{e}.up_proj.weight"]
        old[f"experts.{e}.w2.weight"] = fused[f"experts.{e}.down_proj.weight"]
    moe = SparseMoE(16, 24, 4, 2)
    moe.load_state_dict(mixtral_block_state_dict(old))
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(moe(x), hf(x.clone()))


def test_mixtral_block_to_hf_inverts_the_fused_layout():
    hf = random_hf_block(2)
    back = mixtral_block_to_hf(mixtral_block_state_dict(hf.state_dict()))
    assert set(back) == set(hf.state_dict()) and all(torch.equal(back[k], v) for k, v in hf.state_dict().items())
    with pytest.raises(ValueError, match="no shared experts"):
        mixtral_block_to_hf(SparseMoE(16, 24, 4, 2, n_shared_experts=1).state_dict())


@pytest.mark.parametrize("k, cf, shared", [(2, None, 0), (1, 1.0, 0), (2, 0.5, 1), (3, 1.25, 2)])
def test_grouped_dispatch_equals_naive_loop(k, cf, shared):
    torch.manual_seed(2)
    moe = SparseMoE(16, 24, 6, k, capacity_factor=cf, n_shared_experts=shared).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    y_fast = moe(x)
    (g_fast,) = torch.autograd.grad(y_fast.square().sum(), x)
    y_slow = moe(x, naive=True)
    (g_slow,) = torch.autograd.grad(y_slow.square().sum(), x)
    torch.testing.assert_close(y_fast, y_slow)
    torch.testing.assert_close(g_fast, g_slow)


def test_dense_definition_and_dropped_tokens():
    torch.manual_seed(3)
    moe = SparseMoE(8, 16, 4, 1, capacity_factor=0.5)
    with torch.no_grad():
        moe.gate.weight.mul_(5)
        x = torch.randn(1, 16, 8)
        y = moe(x)[0]
        stats = moe.last
    assert stats.capacity == 2 and stats.overflow > 0
    assert stats.dropped_tokens == int((~stats.kept[:, 0]).sum())
    dropped = ~stats.kept[:, 0]
    assert torch.equal(y[dropped], torch.zeros_like(y[dropped]))  # nothing added: the residual carries them
    for n in torch.where(~dropped)[0]:  # a kept token: its one expert, weight 1 (k=1, renormalised)
        torch.testing.assert_close(y[n], moe.experts[int(stats.indices[n, 0])](x[0, n]))


def test_shared_expert_is_added_to_every_token():
    torch.manual_seed(4)
    moe = SparseMoE(8, 16, 4, 2, n_shared_experts=2)
    assert moe.shared_expert.up_proj.out_features == 32
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        full = moe(x)
        shared, moe.shared_expert = moe.shared_expert, None  # the routed experts alone
        routed = moe(x)
        torch.testing.assert_close(full, routed + shared(x))


def test_moe_in_a_block_and_aux_loss():
    torch.manual_seed(5)
    blocks = nn.Sequential(*[Block(MultiHeadAttention(16, 4), SparseMoE(16, 32, 4, 2), 16, norm="rmsnorm")
                             for _ in range(2)])
    with pytest.raises(ValueError, match="forward pass first"):
        moe_aux_loss(blocks)
    x = torch.randn(2, 5, 16, requires_grad=True)
    y = blocks(x)
    assert y.shape == x.shape
    aux = moe_aux_loss(blocks, balance_coef=0.01, z_coef=0.001)
    expected = sum(0.01 * b.ffn.last.balance_loss + 0.001 * b.ffn.last.z_loss for b in blocks)
    torch.testing.assert_close(aux, expected)
    aux.backward()
    assert blocks[0].ffn.gate.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=9), "top_k=9 is more than n_experts=8"), (dict(capacity_factor=-1.0), "capacity_factor=-1.0"),
    (dict(n_shared_experts=-1), "n_shared_experts=-1"), (dict(order="x"), "order='x'"),
    (dict(n_experts=0), "n_experts=0"), (dict(order="topk_softmax", normalize=False), "always normalised"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MoEConfig(**kwargs)


def test_wrong_width_is_explained():
    with pytest.raises(ValueError, match="d_model=8"):
        SparseMoE(8, 16, 4, 2)(torch.randn(1, 2, 6))


# --------------------------------------------------------------------------- parameter counts
MIXTRAL_8X7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
                    tie_word_embeddings=False)


@pytest.mark.parametrize("kw", [MIXTRAL_8X7B, dict(tie_word_embeddings=False), dict(tie_word_embeddings=True)])
def test_param_counts_match_a_real_model(kw):
    cfg = tiny_mixtral_config(**kw) if "vocab_size" not in kw else MixtralConfig(**kw)
    with torch.device("meta"):  # shapes only: Mixtral-8x7B's 46.7 B weights cost no memory here
        model = MixtralForCausalLM(cfg)
    stored = sum(p.numel() for p in model.parameters())  # a tied head is counted once
    counts = moe_params_from_hf(cfg)
    expert = 3 * cfg.hidden_size * cfg.intermediate_size
    unused = cfg.num_hidden_layers * (cfg.num_local_experts - cfg.num_experts_per_tok) * expert
    assert counts.total == stored
    assert counts.active == stored - unused


def test_mixtral_8x7b_published_sizes():
    counts = moe_params(32000, 4096, 32, 32, 8, 14336, n_experts=8, top_k=2)
    assert round(counts.total / 1e9, 1) == 46.7  # "46.7B total parameters" (Mistral AI, 2023)
    assert round(counts.active / 1e9, 1) == 12.9  # "12.9B parameters per token"
    assert (counts.embeddings, counts.head, counts.other) == (32000 * 4096, 32000 * 4096, 4096)  # untied head
    assert counts.inactive == 32 * 6 * 3 * 4096 * 14336  # 6 of 8 experts skipped in each of 32 layers
    assert math.isclose(counts.active / counts.total, 0.276, abs_tol=1e-3)


# --------------------------------------------------------------------------- the whole Mixtral model
@pytest.mark.parametrize("window", [None, 4])
def test_mixtral_for_causal_lm_parity(window):
    from course_lib.interop import from_hf
    torch.manual_seed(6)
    hf = MixtralForCausalLM(tiny_mixtral_config(sliding_window=window, output_router_logits=True)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "experts" in name:  # fused expert tensors: give them a visible scale
                nn.init.normal_(p, std=0.1)
    ours = from_hf(hf)
    assert ours.config.moe.n_experts == 4 and ours.config.sliding_window == window
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        expected = hf(ids)
        out = ours(ids)
    err = (out.logits - expected.logits).abs().max().item()
    layers = [b.ffn for b in ours.blocks]
    err_router = max((m.last.router_logits - r).abs().max().item() for m, r in zip(layers, expected.router_logits))
    print(f"Llama(moe) vs HF MixtralForCausalLM (window={window}): logits max abs error {err:.1e}, "
          f"router logits {err_router:.1e}")
    assert err <= 1e-4 and err_router <= 1e-4


def test_llama_moe_option_builds_sparse_layers():
    from course_lib.models.llama import Llama, LlamaConfig
    from course_lib.moe import LlamaMoE
    cfg = LlamaConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=4, d_ff=24, moe=LlamaMoE(4, 1, d_ff=12))
    model = Llama(cfg)
    assert all(isinstance(b.ffn, SparseMoE) and b.ffn.config.d_ff == 12 for b in model.blocks)
    model(torch.randint(0, 40, (1, 5)))
    assert moe_aux_loss(model).item() > 0
    with pytest.raises(ConfigError, match="top_k=0"):
        LlamaMoE(4, 0)
