"""Exercise 08's capacity parts, both ways: the references equal independent ones (a plain loop written
here, course_lib's capacity_mask, Hugging Face's Switch Transformers router, the paper's definition of
expert choice); the checks accept the printed solutions and other correct implementations, and reject
the stub, the library's helpers and each named misconception — written here as a learner would write
it, independently of the grader's own re-creations — with that diagnosis in the message."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import moe as library
from course_lib.checks import check_capacity_dispatch, check_dispatch_experts, check_expert_choice_routing
from course_lib.checks.moe_track08 import (_dispatch_cases, _expert_choice_cases, _experts_cases,
                                           capacity_dispatch_reference, dispatch_experts_reference,
                                           expert_choice_reference)

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

DISPATCH = solved("check_capacity_dispatch")
EXPERTS = solved("check_dispatch_experts")
EXPERT_CHOICE = solved("check_expert_choice_routing")


# ------------------------------------------------------------------ the references, against independent ones
def loop_dispatch(weights, indices, n_experts, capacity_factor):
    """Switch §2.2 / GShard Algorithm 1 read literally: a counter per expert, the first choices of the
    tokens in order, then their second choices."""
    N, k = indices.shape
    S = math.ceil(capacity_factor * N * k / n_experts)
    dispatch = torch.zeros(N, n_experts, S, dtype=torch.bool)
    combine = torch.zeros(N, n_experts, S, dtype=weights.dtype)
    filled = {e: 0 for e in range(n_experts)}
    dropped = 0
    for choice in range(k):
        for n in range(N):
            e = indices[n, choice].item()
            if filled[e] == S:
                dropped += 1
                continue
            dispatch[n, e, filled[e]] = True
            combine[n, e, filled[e]] = weights[n, choice]
            filled[e] += 1
    return dispatch, combine, dropped / (N * k)


@pytest.mark.parametrize("case", range(len(_dispatch_cases())))
def test_dispatch_reference_is_the_loop_and_the_library(case):
    label, (w, idx, E, cf) = _dispatch_cases()[case]
    d, c, f = capacity_dispatch_reference(w, idx, E, cf)
    d2, c2, f2 = loop_dispatch(w, idx, E, cf)
    assert torch.equal(d, d2) and torch.equal(c, c2) and f == pytest.approx(f2)
    S = library.expert_capacity(idx.shape[0], E, idx.shape[1], cf)
    kept = library.capacity_mask(idx, E, S)  # (N, k): which assignments got a slot
    assert d.shape[-1] == S
    assert torch.equal(d.any(-1).sum(-1), kept.sum(-1))
    assert f == pytest.approx(1 - kept.float().mean().item())


def test_dispatch_reference_equals_hugging_face_switch_router():
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersTop1Router
    torch.manual_seed(0)
    N, E, C, cf = 20, 4, 8, 1.0
    S = math.ceil(cf * N / E)
    router = SwitchTransformersTop1Router(SwitchTransformersConfig(
        num_experts=E, expert_capacity=S, d_model=C, router_jitter_noise=0.0, router_dtype="float32")).eval()
    with torch.no_grad():
        router.classifier.weight.mul_(4.0)  # a confident router: some experts overflow
        router.classifier.weight[0] += 1.0
        h = torch.randn(1, N, C)
        hf_mask, hf_prob, logits = router(h)  # (1, N, E), (1, N, 1), (1, N, E)
    probs = torch.softmax(logits[0], -1)
    p, idx = probs.max(-1, keepdim=True)  # (N, 1): Switch weights by the unnormalised top-1 probability
    d, c, f = capacity_dispatch_reference(p, idx, E, cf)
    assert hf_mask.sum() < N  # something was dropped
    assert torch.equal(d.any(-1).long(), hf_mask[0])
    torch.testing.assert_close(c.sum(-1), hf_prob[0] * hf_mask[0])
    assert f == pytest.approx(1 - hf_mask.sum().item() / N)


def test_experts_reference_equals_the_library_moe_with_capacity():
    """The dispatch/combine path gives course_lib's SparseMoE (top-2, capacity factor 1) output."""
    torch.manual_seed(1)
    m = library.SparseMoE(8, 16, n_experts=4, top_k=2, capacity_factor=1.0).eval()
    with torch.no_grad():
        m.gate.weight.mul_(3.0)
        x = torch.randn(1, 12, 8)
        y = m(x)[0]
        h = x[0]
        w, idx = library.top_k_routing(m.gate(h), 2)
        d, c, _ = capacity_dispatch_reference(w, idx, 4, 1.0)
        assert m.last.overflow > 0
        torch.testing.assert_close(dispatch_experts_reference(h, d, c, m.experts), y)
        torch.testing.assert_close(EXPERTS(h, d, c, m.experts), y)


def test_expert_choice_reference_is_the_papers_definition():
    """Zhou et al. 2022 §3.1 by brute force: expert e takes the c tokens with the largest S[:, e]."""
    for label, (logits, cf) in _expert_choice_cases():
        gates, index, unchosen = expert_choice_reference(logits, cf)
        N, E = logits.shape
        S = torch.softmax(logits.double(), -1)
        c = min(N, math.ceil(cf * N / E))
        for e in range(E):
            order = sorted(range(N), key=lambda n: -S[n, e].item())[:c]
            assert index[e].tolist() == order, label
            torch.testing.assert_close(gates[e].double(), S[order, e], rtol=1e-6, atol=1e-7)
        assert unchosen == pytest.approx(1 - len(set(index.reshape(-1).tolist())) / N)


# ------------------------------------------------------------------ capacity dispatch: correct answers
def dispatch_sorting(weights, indices, n_experts, capacity_factor):
    """A stable sort by expert keeps the priority order inside each expert's group."""
    N, k = indices.shape
    S = -(-capacity_factor * N * k // n_experts)
    S = int(S)
    flat = indices.T.flatten()
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=n_experts)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(flat)
    slot[order] = torch.arange(flat.numel()) - starts[flat[order]]
    keep = slot < S
    tok = torch.arange(N).repeat(k)
    dispatch = torch.zeros(N, n_experts, S, dtype=torch.bool)
    combine = torch.zeros(N, n_experts, S, dtype=weights.dtype)
    dispatch[tok[keep], flat[keep], slot[keep]] = True
    combine[tok[keep], flat[keep], slot[keep]] = weights.T.flatten()[keep]
    return dispatch, combine, torch.tensor(1.0) - keep.double().mean()  # a 0-d tensor is fine too


def dispatch_float64_inside(weights, indices, n_experts, capacity_factor):
    d, c, f = loop_dispatch(weights.double(), indices, n_experts, capacity_factor)
    return d, c.to(weights.dtype), f


@pytest.mark.parametrize("impl", [DISPATCH, loop_dispatch, dispatch_sorting, dispatch_float64_inside])
def test_dispatch_accepts_correct_implementations(impl):
    r = check_capacity_dispatch(impl)
    assert r.passed and r.points == r.max_points == 4, r.message


mask = library.capacity_mask  # an alias made before the check runs


def dispatch_with_library_mask(weights, indices, n_experts, capacity_factor):
    S = math.ceil(capacity_factor * indices.numel() / n_experts)
    kept = mask(indices, n_experts, S)
    return DISPATCH(weights, indices, n_experts, capacity_factor)[:2] + (1 - kept.float().mean().item(),)


def dispatch_with_library_capacity(weights, indices, n_experts, capacity_factor):
    S = library.expert_capacity(indices.shape[0], n_experts, indices.shape[1], capacity_factor)
    return loop_dispatch(weights, indices, n_experts, S * n_experts / indices.numel())


@pytest.mark.parametrize("impl,used", [(dispatch_with_library_mask, "course_lib.moe.capacity_mask"),
                                       (dispatch_with_library_capacity, "course_lib.moe.expert_capacity"),
                                       (lambda w, i, E, cf: (mask(i, E, 2), None, 0.0), "course_lib.moe.capacity_mask")])
def test_dispatch_refuses_delegation(impl, used):
    assert_delegates(check_capacity_dispatch(impl), used)


def test_dispatch_stub_and_bad_outputs():
    def capacity_dispatch(weights, indices, n_experts, capacity_factor):
        raise NotImplementedError()
    assert_not_attempted(check_capacity_dispatch(capacity_dispatch))
    r = check_capacity_dispatch(lambda w, i, E, cf: DISPATCH(w, i, E, cf)[:2])
    assert not r.passed and "return a tuple (dispatch, combine, dropped fraction)" in r.message
    r = check_capacity_dispatch(lambda w, i, E, cf: DISPATCH(w, i, E, cf)[:2] + ("none",))
    assert not r.passed and "should be a number" in r.message
    r = check_capacity_dispatch(lambda w, i, E, cf: (DISPATCH(w, i, E, cf)[0].float(),) + DISPATCH(w, i, E, cf)[1:])
    assert not r.passed and "dtype torch.float32, expected torch.bool" in r.message
    r = check_capacity_dispatch(lambda w, i, E, cf: DISPATCH(w, i[:, :1], E, cf))
    assert not r.passed and "shape" in r.message


# ------------------------------------------------------------------ capacity dispatch: misconceptions
def _learner_dispatch(weights, indices, n_experts, S, priority, *, weighted=True, renorm=False, per_token=False):
    """A learner's loop: `priority` is the list of (token, choice) in the order they are served."""
    N, k = indices.shape
    dispatch = torch.zeros(N, n_experts, S, dtype=torch.bool)
    combine = torch.zeros(N, n_experts, S, dtype=weights.dtype)
    count = [0] * n_experts
    for n, j in priority:
        e = int(indices[n, j])
        if count[e] < S:
            dispatch[n, e, count[e]] = True
            combine[n, e, count[e]] = weights[n, j] if weighted else 1
            count[e] += 1
    if renorm:
        s = combine.sum((1, 2), keepdim=True)
        combine = torch.where(s > 0, combine / s, combine)
    if per_token:
        return dispatch, combine, (~dispatch.flatten(1).any(1)).float().mean().item()
    return dispatch, combine, 1 - dispatch.sum().item() / (N * k)


def _in_order(indices):
    N, k = indices.shape
    return [(n, j) for j in range(k) for n in range(N)]


def no_k_factor(w, i, E, cf):
    return _learner_dispatch(w, i, E, math.ceil(cf * i.shape[0] / E), _in_order(i))


def floor_capacity(w, i, E, cf):
    return _learner_dispatch(w, i, E, int(cf * i.numel() / E), _in_order(i))


def batch_priority(w, i, E, cf):  # V-MoE: the most confident tokens first
    ranked = sorted(range(i.shape[0]), key=lambda n: -w[n, 0].item())
    return _learner_dispatch(w, i, E, math.ceil(cf * i.numel() / E),
                             [(n, j) for j in range(i.shape[1]) for n in ranked])


def token_major_order(w, i, E, cf):
    return _learner_dispatch(w, i, E, math.ceil(cf * i.numel() / E),
                             [(n, j) for n in range(i.shape[0]) for j in range(i.shape[1])])


def renormalised_after_drop(w, i, E, cf):
    return _learner_dispatch(w, i, E, math.ceil(cf * i.numel() / E), _in_order(i), renorm=True)


def combine_unweighted(w, i, E, cf):
    return _learner_dispatch(w, i, E, math.ceil(cf * i.numel() / E), _in_order(i), weighted=False)


def dropped_per_token(w, i, E, cf):
    return _learner_dispatch(w, i, E, math.ceil(cf * i.numel() / E), _in_order(i), per_token=True)


def dispatch_mutates(w, i, E, cf):
    w.mul_(2)  # in place
    return DISPATCH(w / 2, i, E, cf)


DISPATCH_BAD = {"no_k_factor": no_k_factor, "floor_capacity": floor_capacity, "batch_priority": batch_priority,
                "token_major_order": token_major_order, "renormalised_after_drop": renormalised_after_drop,
                "combine_unweighted": combine_unweighted, "dropped_per_token": dropped_per_token,
                "mutates_input": dispatch_mutates}


@pytest.mark.parametrize("key", list(DISPATCH_BAD))
def test_dispatch_diagnoses_each_misconception(key):
    r = check_capacity_dispatch(DISPATCH_BAD[key])
    assert_diagnosed(r, key)


def test_dispatch_named_misconceptions_are_all_tested():
    assert_all_tested("check_capacity_dispatch", DISPATCH_BAD)


# ------------------------------------------------------------------ experts on their buffers
def experts_loop(x, dispatch, combine, experts):
    y = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        token, slot = dispatch[:, e].nonzero(as_tuple=True)
        if len(token):
            y = y.index_add(0, token, expert(x[token]) * combine[token, e, slot][:, None])
    return y


def experts_matmul(x, dispatch, combine, experts):
    N, E, S = dispatch.shape
    d = dispatch.to(x.dtype).reshape(N, E * S)
    buf = (d.T @ x).reshape(E, S, -1)
    out = torch.cat([experts[e](buf[e]) for e in range(E)])  # (E·S, C)
    return combine.reshape(N, E * S).to(x.dtype) @ out


@pytest.mark.parametrize("impl", [EXPERTS, experts_loop, experts_matmul])
def test_experts_accepts_correct_implementations(impl):
    r = check_dispatch_experts(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


def experts_swapped(x, dispatch, combine, experts):
    buf = torch.einsum("nes,nc->esc", combine.to(x.dtype), x)
    out = torch.stack([ex(buf[e]) for e, ex in enumerate(experts)])
    return torch.einsum("nes,esc->nc", dispatch.to(x.dtype), out)


def experts_unweighted(x, dispatch, combine, experts):
    d = dispatch.to(x.dtype)
    buf = torch.einsum("nes,nc->esc", d, x)
    return torch.einsum("nes,esc->nc", d, torch.stack([ex(buf[e]) for e, ex in enumerate(experts)]))


def experts_mutates(x, dispatch, combine, experts):
    combine.mul_(1.0).add_(0.0)
    x.mul_(1.0).add_(0.1)
    return EXPERTS(x, dispatch, combine, experts)


EXPERTS_BAD = {"weights_on_input": experts_swapped, "combine_unweighted": experts_unweighted,
               "mutates_input": experts_mutates}


@pytest.mark.parametrize("key", list(EXPERTS_BAD))
def test_experts_diagnoses_each_misconception(key):
    assert_diagnosed(check_dispatch_experts(EXPERTS_BAD[key]), key)


def test_experts_named_misconceptions_are_all_tested():
    assert_all_tested("check_dispatch_experts", EXPERTS_BAD)


def test_experts_stub_delegation_and_errors():
    def dispatch_experts(x, dispatch, combine, experts):
        raise NotImplementedError()
    assert_not_attempted(check_dispatch_experts(dispatch_experts))

    def via_library(x, dispatch, combine, experts):
        token, e, s = dispatch.nonzero(as_tuple=True)
        return library.SparseMoE.combine_naive(None, x, combine.sum(-1), torch.arange(dispatch.shape[1]).expand(len(x), -1),
                                               dispatch.any(-1))
    assert_delegates(check_dispatch_experts(via_library), "course_lib.moe.SparseMoE")
    r = check_dispatch_experts(lambda x, d, c, ex: x @ x)
    assert not r.passed and "your code raised RuntimeError" in r.message


# ------------------------------------------------------------------ expert choice
def expert_choice_sorting(router_logits, capacity_factor):
    N, E = router_logits.shape
    c = min(N, -int(-capacity_factor * N // E))
    p = F.softmax(router_logits.double(), dim=1)
    vals, idx = p.sort(dim=0, descending=True)
    gates, index = vals[:c].T.to(router_logits.dtype), idx[:c].T.contiguous()
    return gates, index, 1 - torch.unique(index).numel() / N


@pytest.mark.parametrize("impl", [EXPERT_CHOICE, expert_choice_sorting])
def test_expert_choice_accepts_correct_implementations(impl):
    r = check_expert_choice_routing(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


def _ec(router_logits, capacity_factor, scores, c, by_token=False):
    N = router_logits.shape[0]
    g, i = scores.topk(c, dim=1) if by_token else scores.T.topk(c, dim=1)
    return g, i, 1 - len(set(i.flatten().tolist())) / N


def ec_softmax_over_tokens(x, cf):
    return _ec(x, cf, x.softmax(0), math.ceil(cf * x.shape[0] / x.shape[1]))


def ec_token_choice(x, cf):
    return _ec(x, cf, x.softmax(1), math.ceil(cf * x.shape[0] / x.shape[1]), by_token=True)


def ec_floor(x, cf):
    return _ec(x, cf, x.softmax(1), int(cf * x.shape[0] / x.shape[1]))


def ec_raw_logits(x, cf):
    return _ec(x, cf, x, math.ceil(cf * x.shape[0] / x.shape[1]))


def ec_mutates(x, cf):
    x.sub_(x.max())
    return EXPERT_CHOICE(x, cf)


EC_BAD = {"softmax_over_tokens": ec_softmax_over_tokens, "token_choice": ec_token_choice,
          "floor_capacity": ec_floor, "raw_logits": ec_raw_logits, "mutates_input": ec_mutates}


@pytest.mark.parametrize("key", list(EC_BAD))
def test_expert_choice_diagnoses_each_misconception(key):
    assert_diagnosed(check_expert_choice_routing(EC_BAD[key]), key)


def test_expert_choice_named_misconceptions_are_all_tested():
    assert_all_tested("check_expert_choice_routing", EC_BAD)


def test_expert_choice_stub_and_delegation():
    def expert_choice_routing(router_logits, capacity_factor):
        raise NotImplementedError()
    assert_not_attempted(check_expert_choice_routing(expert_choice_routing))

    def counts_with_library(router_logits, capacity_factor):
        gates, index, _ = EXPERT_CHOICE(router_logits, capacity_factor)
        load = library.expert_load(index, router_logits.shape[0])  # picks per token
        return gates, index, (load == 0).float().mean().item()
    assert_delegates(check_expert_choice_routing(counts_with_library), "course_lib.moe.expert_load")


# ------------------------------------------------------------------ the expert-choice layer
from course_lib.checks import check_expert_choice_layer  # noqa: E402
from course_lib.checks.moe_track08 import _expert_choice_layer_cases, expert_choice_layer_reference  # noqa: E402

EC_LAYER = solved("check_expert_choice_layer")


def test_expert_choice_layer_reference_is_the_dense_definition():
    """Every expert on every token, weighted by a dense (N, E) gate matrix that is 0 where not chosen."""
    with torch.no_grad():
        for label, (x, gates, index, experts) in _expert_choice_layer_cases():
            dense = torch.zeros(x.shape[0], len(experts), dtype=x.dtype)
            for e in range(len(experts)):
                dense[index[e], e] = gates[e]
            y = sum(dense[:, e:e + 1] * experts[e](x) for e in range(len(experts)))
            torch.testing.assert_close(expert_choice_layer_reference(x, gates, index, experts), y)
            torch.testing.assert_close(EC_LAYER(x, gates, index, experts), y)


def ec_layer_loop(x, gates, token_index, experts):
    y = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        y.index_put_((token_index[e],), expert(x[token_index[e]]) * gates[e, :, None], accumulate=True)
    return y


def ec_layer_one_hot(x, gates, token_index, experts):
    P = F.one_hot(token_index, x.shape[0]).to(x.dtype)  # (E, c, N)
    out = torch.stack([ex(P[e] @ x) for e, ex in enumerate(experts)])  # (E, c, C)
    return torch.einsum("ecn,ec,ecd->nd", P, gates.to(x.dtype), out)


@pytest.mark.parametrize("impl", [EC_LAYER, ec_layer_loop, ec_layer_one_hot])
def test_expert_choice_layer_accepts_correct_implementations(impl):
    r = check_expert_choice_layer(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


def ec_layer_overwrites(x, gates, token_index, experts):
    y = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        y[token_index[e]] = expert(x[token_index[e]]) * gates[e, :, None]  # the last expert wins
    return y


def ec_layer_gates_ignored(x, gates, token_index, experts):
    y = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        y = y.index_add(0, token_index[e], expert(x[token_index[e]]))
    return y


def ec_layer_mutates(x, gates, token_index, experts):
    gates.mul_(1.0).add_(0.5)
    return EC_LAYER(x, gates, token_index, experts)


EC_LAYER_BAD = {"overwrites": ec_layer_overwrites, "gates_ignored": ec_layer_gates_ignored,
                "mutates_input": ec_layer_mutates}


@pytest.mark.parametrize("key", list(EC_LAYER_BAD))
def test_expert_choice_layer_diagnoses_each_misconception(key):
    assert_diagnosed(check_expert_choice_layer(EC_LAYER_BAD[key]), key)


def test_expert_choice_layer_named_misconceptions_are_all_tested():
    assert_all_tested("check_expert_choice_layer", EC_LAYER_BAD)


def test_expert_choice_layer_stub_delegation_and_shape():
    def expert_choice_layer(x, gates, token_index, experts):
        raise NotImplementedError()
    assert_not_attempted(check_expert_choice_layer(expert_choice_layer))

    def via_library(x, gates, token_index, experts):
        dense = torch.zeros(x.shape[0], len(experts), dtype=x.dtype)
        for e in range(len(experts)):
            dense[token_index[e], e] = gates[e]
        moe = library.SparseMoE(x.shape[1], 4, n_experts=len(experts), top_k=1)
        moe.experts = experts
        return moe.combine_naive(x, dense, torch.arange(len(experts)).expand(x.shape[0], -1),
                                 torch.ones_like(dense, dtype=torch.bool))
    assert_delegates(check_expert_choice_layer(via_library), "course_lib.moe.SparseMoE")
    r = check_expert_choice_layer(lambda x, g, i, ex: EC_LAYER(x, g, i, ex)[None])
    assert not r.passed and "shape" in r.message


# ------------------------------------------------------------------ the Switch layer
from course_lib.checks import check_switch_moe  # noqa: E402
from course_lib.checks.moe_track08 import _switch_forward  # noqa: E402
from course_lib.ffn import GatedFeedForward  # noqa: E402

SWITCH = solved("check_switch_moe", "SwitchMoE")


def test_switch_reference_equals_the_library_layer():
    """course_lib's SparseMoE with top-1, no renormalisation and a capacity is the Switch layer."""
    torch.manual_seed(2)
    lib = library.SparseMoE(8, 16, n_experts=4, top_k=1, capacity_factor=1.0, normalize=False).eval()
    mine = SWITCH(8, 16, 4, 1.0).eval()
    mine.load_state_dict(lib.state_dict())
    with torch.no_grad():
        for m in (lib, mine):
            m.gate.weight.mul_(3.0)
        x = torch.randn(2, 10, 8)
        y, loss, dropped = _switch_forward(mine, x)
        torch.testing.assert_close(y, x + lib(x))
        assert lib.last.overflow > 0 and dropped.item() == pytest.approx(lib.last.overflow / 20)
        torch.testing.assert_close(loss, lib.last.balance_loss)


class SwitchLoops(torch.nn.Module):
    """Written from scratch with loops, no dispatch tensors at all."""
    def __init__(self, d_model, d_ff, n_experts=4, capacity_factor=1.25):
        super().__init__()
        self.n_experts, self.capacity_factor = n_experts, capacity_factor
        self.gate = torch.nn.Linear(d_model, n_experts, bias=False)
        self.experts = torch.nn.ModuleList(GatedFeedForward(d_model, d_ff) for _ in range(n_experts))

    def forward(self, x):
        h = x.flatten(0, 1)
        p = self.gate(h).softmax(-1)
        cap = math.ceil(self.capacity_factor * len(h) / self.n_experts)
        rows = []
        used = [0] * self.n_experts
        for n in range(len(h)):
            e = int(p[n].argmax())
            if used[e] < cap:
                used[e] += 1
                rows.append(h[n] + p[n, e] * self.experts[e](h[n:n + 1])[0])
            else:
                rows.append(h[n])
        counts = torch.bincount(p.argmax(-1), minlength=self.n_experts).to(h.dtype) / len(h)
        dropped = 1 - sum(used) / len(h)
        return torch.stack(rows).view_as(x), self.n_experts * (counts * p.mean(0)).sum(), dropped


@pytest.mark.parametrize("impl", [SWITCH, SwitchLoops])
def test_switch_accepts_correct_implementations(impl):
    r = check_switch_moe(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


def _switch_learner(kind):
    class Switch(SwitchLoops):
        def forward(self, x):
            if kind == "mutates_input":
                x.mul_(1.0).add_(0.01)
            h = x.flatten(0, 1)
            p = self.gate(h).softmax(-1)
            top_p, top_i = p.topk(1, dim=-1)
            if kind == "renormalised_top1":
                top_p = top_p / top_p.sum(-1, keepdim=True)  # Mixtral's habit: here every weight becomes 1
            cf = float(self.n_experts) if kind == "capacity_ignored" else self.capacity_factor  # room for all
            d, c, dropped = DISPATCH(top_p, top_i, self.n_experts, cf)
            y = EXPERTS(h, d, c, self.experts)
            loss = self.n_experts * (F.one_hot(top_i[:, 0], self.n_experts).to(h.dtype).mean(0) * p.mean(0)).sum()
            out = y if kind == "no_residual" else h + y
            return out.view_as(x), loss, dropped
    return Switch


SWITCH_BAD = {k: _switch_learner(k) for k in ("renormalised_top1", "no_residual", "capacity_ignored", "mutates_input")}


@pytest.mark.parametrize("key", list(SWITCH_BAD))
def test_switch_diagnoses_each_misconception(key):
    assert_diagnosed(check_switch_moe(SWITCH_BAD[key]), key)


def test_switch_named_misconceptions_are_all_tested():
    assert_all_tested("check_switch_moe", SWITCH_BAD)


def test_switch_stub_delegation_detached_and_bad_return():
    class SwitchMoE(SwitchLoops):
        def forward(self, x):
            raise NotImplementedError()
    assert_not_attempted(check_switch_moe(SwitchMoE))

    class ViaLibrary(SwitchLoops):
        def forward(self, x):
            lib = library.SparseMoE(x.shape[-1], 16, self.n_experts, 1, capacity_factor=self.capacity_factor,
                                    normalize=False)
            return x + lib(x), lib.last.balance_loss, lib.last.overflow / x.shape[0] / x.shape[1]
    assert_delegates(check_switch_moe(ViaLibrary), "course_lib.moe.SparseMoE")

    class Detached(SwitchLoops):
        def forward(self, x):
            y, loss, dropped = SWITCH.forward(self, x)
            return y.detach(), loss.detach(), dropped
    r = check_switch_moe(Detached)
    assert not r.passed and "no gradient" in r.message

    class OnlyY(SwitchLoops):
        def forward(self, x):
            return SWITCH.forward(self, x)[0]
    r = check_switch_moe(OnlyY)
    assert not r.passed and "should return a tuple (y, balance_loss, dropped)" in r.message
