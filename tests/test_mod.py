"""course_lib.mod (Mixture-of-Depths) against independent references: the dense block it wraps,
a brute-force loop that runs the block token by token on the chosen tokens that came before,
PyTorch's FlopCounterMode for the FLOPs formula, and perturbation tests for causality."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from course_lib.config import ConfigError
from course_lib.device import single_thread
from course_lib.models.gpt import GPT, GPTConfig, gpt_block
from course_lib.mod import (MoDBlock, MoDGPT, capacity_tokens, fit_predictors, gpt_forward_flops,
                            predictor_agreement, top_k_indices)
from course_lib.kernels import from_scratch

CFG = dict(vocab_size=23, max_positions=32, d_model=16, n_layers=4, n_heads=2)


def small_block(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return gpt_block(GPTConfig(**CFG)).to(dtype)


def brute_force(mod: MoDBlock, x: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Token by token: a chosen token i goes through the block together with the chosen tokens
    before it (and nothing else); we keep the block's output for i. Others are copied."""
    out = x.clone()
    for b in range(x.size(0)):
        chosen = [t for t in range(x.size(1)) if selected[b, t]]
        for n, t in enumerate(chosen):
            prefix = x[b, chosen[:n + 1]][None]  # (1, n+1, C): the chosen tokens up to t
            y_t = mod.block(prefix, is_causal=True)[0, -1]  # (C,)
            r = (x[b, t] @ mod.router.weight[0]).reshape(1)
            out[b, t] = x[b, t] + mod.gate_weights(r)[0] * (y_t - x[b, t])
    return out


def topk_mask_by_sorting(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k written differently: sort each row in Python, keep the k largest positions."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for b, row in enumerate(scores.tolist()):
        for t in sorted(range(len(row)), key=lambda t: -row[t])[:k]:
            mask[b, t] = True
    return mask


# ------------------------------------------------------------------ capacity
@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, 2, True, "0.5", None])
def test_capacity_outside_0_1_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        MoDBlock(small_block(), 16, capacity=bad)


def test_capacity_tokens_rounds_to_nearest_and_keeps_one():
    assert capacity_tokens(10, 0.3) == 3
    assert capacity_tokens(64, 0.125) == 8
    assert capacity_tokens(7, 0.5) == 4  # 3.5 rounds up
    assert capacity_tokens(5, 0.01) == 1
    assert capacity_tokens(9, 1.0) == 9


def test_top_k_indices_are_the_k_best_in_sequence_order():
    scores = torch.randn(3, 11, generator=torch.Generator().manual_seed(0))
    idx = top_k_indices(scores, 4)
    assert torch.equal(idx, idx.sort(-1).values)
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter(1, idx, True)
    assert torch.equal(mask, topk_mask_by_sorting(scores, 4))


# ------------------------------------------------------------------ the block
def test_capacity_one_without_gate_is_the_dense_block():
    block = small_block()
    mod = MoDBlock(block, 16, capacity=1.0, gate="none").double()
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    err = (mod(x, is_causal=True) - block(x, is_causal=True)).abs().max().item()
    print(f"MoD(capacity=1, no gate) vs dense block: max abs error {err:.1e}")
    assert err <= 1e-6


def test_capacity_one_without_gate_gpt_equals_the_dense_gpt():
    torch.manual_seed(0)
    dense = GPT(**CFG)
    torch.manual_seed(0)
    mod = MoDGPT(capacity=1.0, gate="none", **CFG)
    ids = torch.randint(0, 23, (2, 13))
    err = (mod(ids).logits - dense(ids).logits).abs().max().item()
    assert err <= 1e-6


def test_mod_gpt_starts_from_the_dense_gpt_weights():
    torch.manual_seed(0)
    dense = GPT(**CFG)
    torch.manual_seed(0)
    mod = MoDGPT(capacity=0.25, **CFG)
    assert [type(b).__name__ for b in mod.blocks] == ["Block", "MoDBlock", "Block", "MoDBlock"]
    mod_state = {k.replace(".block.", "."): v for k, v in mod.state_dict().items()
                 if ".router." not in k and ".predictor." not in k}
    assert mod_state.keys() == dense.state_dict().keys()
    assert all(torch.equal(v, mod_state[k]) for k, v in dense.state_dict().items())


@pytest.mark.parametrize("gate", ["sigmoid", "raw", "none"])
@pytest.mark.parametrize("capacity", [0.125, 0.3, 0.5, 1.0])
def test_vectorised_gather_scatter_equals_the_token_by_token_loop(gate, capacity):
    mod = MoDBlock(small_block(), 16, capacity=capacity, gate=gate).double()
    torch.nn.init.normal_(mod.router.weight, std=0.5)
    x = torch.randn(3, 17, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = mod(x, is_causal=True)
    k = capacity_tokens(17, capacity)
    selected = topk_mask_by_sorting(x @ mod.router.weight[0], k)
    assert torch.equal(mod.last_selected, selected) and int(selected[0].sum()) == k
    err = (out - brute_force(mod, x, selected)).abs().max().item()
    assert err <= 1e-10


def test_unselected_tokens_pass_exactly_unchanged():
    mod = MoDBlock(small_block(dtype=torch.float32), 16, capacity=0.25)
    x = torch.randn(2, 16, 16)
    out = mod(x, is_causal=True)
    skip = ~mod.last_selected  # (B, T)
    assert int(skip.sum()) == 2 * 12
    assert torch.equal(out[skip], x[skip])
    assert not torch.equal(out[~skip], x[~skip])


@pytest.mark.parametrize("gate", ["sigmoid", "raw"])
def test_gradients_reach_the_router(gate):
    mod = MoDBlock(small_block(dtype=torch.float32), 16, capacity=0.25, gate=gate)
    x = torch.randn(2, 16, 16)
    mod(x, is_causal=True).pow(2).sum().backward()
    g = mod.router.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert all(p.grad is None for p in mod.predictor.parameters())  # the predictor is not trained here


def test_without_the_gate_the_router_gets_no_gradient():
    mod = MoDBlock(small_block(dtype=torch.float32), 16, capacity=0.25, gate="none")
    mod(torch.randn(2, 16, 16), is_causal=True).sum().backward()
    assert mod.router.weight.grad is None


def test_attention_among_the_chosen_tokens_is_causal():
    """Perturb a late chosen token orthogonally to the router's weight vector (so the same
    tokens are chosen): outputs at every earlier position stay the same."""
    mod = MoDBlock(small_block(), 16, capacity=0.5).double()
    torch.nn.init.normal_(mod.router.weight, std=0.5)
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    out = mod(x, is_causal=True)
    chosen = mod.last_selected[0].nonzero().squeeze(-1).tolist()
    j = chosen[-2]
    w = mod.router.weight[0]
    v = torch.randn(16, dtype=torch.float64)
    v = v - (v @ w) / (w @ w) * w  # orthogonal to w: the router scores do not move
    x2 = x.clone()
    x2[0, j] += 3 * v
    out2 = mod(x2, is_causal=True)
    assert torch.equal(mod.last_selected[0].nonzero().squeeze(-1), torch.tensor(chosen))
    assert (out2[0, :j] - out[0, :j]).abs().max() <= 1e-12
    assert (out2[0, chosen[-1]] - out[0, chosen[-1]]).abs().max() > 1e-3  # a later chosen token sees it


def test_key_padding_mask_is_gathered_with_the_tokens():
    torch.manual_seed(0)
    model = MoDGPT(capacity=0.5, **CFG)
    ids = torch.randint(0, 23, (2, 10))
    ones = torch.ones(2, 10, dtype=torch.long)
    assert torch.allclose(model(ids, attention_mask=ones).logits, model(ids).logits, atol=1e-6)
    with pytest.raises(ValueError, match="key-padding mask"):
        model.blocks[1](torch.randn(2, 10, 16), mask=torch.ones(10, 10, dtype=torch.bool), is_causal=True)


def test_a_cache_is_refused_with_a_reason():
    torch.manual_seed(0)
    model = MoDGPT(capacity=0.5, **CFG)
    with pytest.raises(ValueError, match="cache"):
        model.new_cache()
    with pytest.raises(ValueError, match="cache"):
        model.blocks[1](torch.randn(1, 4, 16), cache=object())


def test_bad_gate_and_routing_are_clear_errors():
    with pytest.raises(ConfigError, match=r"MoDBlock.gate='softmax': expected one of \('sigmoid', 'raw', 'none'\) "
                                          r"\('sigmoid' squashes"):
        MoDBlock(small_block(), 16, gate="softmax")
    for every in (0, 1.5):
        with pytest.raises(ConfigError, match=f"MoDGPT.every={every}: expected a positive integer"):
            MoDGPT(every=every, **CFG)
    with pytest.raises(ValueError, match="routing='causal'"):
        MoDGPT(**CFG).set_routing("causal")


# ------------------------------------------------------------------ the causal predictor
def test_top_k_routing_looks_at_the_future_but_predictor_routing_does_not():
    torch.manual_seed(0)
    model = MoDGPT(capacity=0.25, **CFG).eval()
    for b in model.mod_blocks():
        torch.nn.init.normal_(b.router.weight, std=1.0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 23, (8, 24), generator=g)
    ids2 = ids.clone()
    ids2[:, 12:] = torch.randint(0, 23, (8, 12), generator=g)  # change only the future
    with torch.no_grad():
        topk_diff = (model(ids).logits[:, :12] - model(ids2).logits[:, :12]).abs().max().item()
        model.set_routing("predictor")
        pred_diff = (model(ids).logits[:, :12] - model(ids2).logits[:, :12]).abs().max().item()
    assert topk_diff > 1e-3  # top-k: the past's outputs changed because the future did
    assert pred_diff <= 1e-6


def test_predictor_routing_equals_the_token_by_token_loop():
    mod = MoDBlock(small_block(), 16, capacity=0.25).double()
    mod.routing = "predictor"
    x = torch.randn(3, 15, 16, dtype=torch.float64)
    with torch.no_grad():
        mod.predictor[-1].bias.fill_(0.1)
        out = mod(x, is_causal=True)
    selected = mod.predictor(x).squeeze(-1) > 0
    assert torch.equal(mod.last_selected, selected) and 0 < int(selected.sum()) < selected.numel()
    assert (out - brute_force(mod, x, selected)).abs().max() <= 1e-10


def test_fitted_predictor_agrees_with_top_k():
    torch.manual_seed(0)
    model = MoDGPT(capacity=0.25, **CFG)
    for b in model.mod_blocks():
        torch.nn.init.normal_(b.router.weight, std=1.0)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 23, (8, 32), generator=g) for _ in range(4)]
    with single_thread():
        before = predictor_agreement(model, batches)
        fit_predictors(model, batches, steps=300, lr=1e-2)
        after = predictor_agreement(model, [torch.randint(0, 23, (8, 32), generator=g) for _ in range(2)])
    for a in after:
        print(f"predictor vs top-k: accuracy {a['accuracy']:.3f}, recall {a['recall']:.3f}")
        assert a["accuracy"] >= 0.85 and a["recall"] >= 0.6
    assert all(a["accuracy"] > b["accuracy"] for a, b in zip(after, before))


# ------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize("capacity", [None, 0.125, 0.5])
def test_flops_formula_matches_pytorchs_flop_counter(capacity):
    cfg = GPTConfig(**{**CFG, "max_positions": 64})
    torch.manual_seed(0)
    model = (GPT(cfg) if capacity is None else MoDGPT(cfg, capacity=capacity)).eval()
    ids = torch.randint(0, 23, (3, 64))
    with FlopCounterMode(display=False) as counter, torch.no_grad(), from_scratch():  # the counter cannot see inside the fused attention kernel
        model(ids)
    assert counter.get_total_flops() == 3 * gpt_forward_flops(cfg, 64, capacity)["total"]


def test_mod_saves_the_expected_share_of_block_flops():
    cfg = GPTConfig(**{**CFG, "max_positions": 64})
    dense, mod = gpt_forward_flops(cfg, 64), gpt_forward_flops(cfg, 64, 0.125)
    # half the blocks run on 1/8 of the tokens: projections and FFN 1/8, attention 1/64
    assert mod["blocks"] < 0.6 * dense["blocks"] and mod["head"] == dense["head"]
