"""Lesson 08's checks, both ways: they accept the reference and other correct implementations,
and reject the stub and each named misconception — written here as a learner would write it,
independently of the grader's own re-creations — with that diagnosis in the message."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.checks import check_load_balancing_loss, check_sparse_moe, check_top_k_routing, solution
from course_lib import moe as library
from course_lib.ffn import GatedFeedForward
from course_lib.moe import SparseMoE as LibrarySparseMoE
from course_lib.moe import capacity_mask, expert_capacity, load_balancing_loss, top_k_routing

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


# ------------------------------------------------------------------ top-k routing
def routing_topk_first(router_logits, k):  # Shazeer's order: the same numbers
    vals, idx = torch.topk(router_logits, k, dim=1)
    return F.softmax(vals, dim=1), idx


def routing_float64_inside(router_logits, k):
    p = torch.exp(router_logits.double() - router_logits.double().logsumexp(-1, keepdim=True))
    w, i = p.sort(-1, descending=True)
    w, i = w[:, :k], i[:, :k]
    return (w / w.sum(-1, keepdim=True)).to(router_logits.dtype), i


ROUTING = solved("check_top_k_routing")


@pytest.mark.parametrize("impl", [ROUTING, routing_topk_first, routing_float64_inside])
def test_routing_accepts_correct_implementations(impl):
    r = check_top_k_routing(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


route = top_k_routing  # the course's answer under an alias


def routing_via_getattr(router_logits, k):  # looked up by a computed name: caught while it runs
    return getattr(library, "top_k_" + "routing")(router_logits, k)


@pytest.mark.parametrize("impl", [top_k_routing, lambda x, k: route(x, k), routing_via_getattr])
def test_routing_refuses_delegation(impl):
    assert_delegates(check_top_k_routing(impl), "course_lib.moe.top_k_routing")


def test_routing_stub_is_not_attempted():
    def top_k(router_logits, k):
        raise NotImplementedError()
    assert_not_attempted(check_top_k_routing(top_k))


def _routing_in_place(router_logits, k):
    router_logits.sub_(router_logits.max())  # "for stability", on the caller's tensor
    w, i = router_logits.softmax(-1).topk(k, -1)
    return w / w.sum(-1, keepdim=True), i


ROUTING_BAD = {
    "token_axis": lambda x, k: (lambda w, i: (w / w.sum(1, keepdim=True), i))(*torch.softmax(x, 0).topk(k)),
    "no_renormalisation": lambda x, k: tuple(x.softmax(-1).topk(k, -1)),
    "raw_logits": lambda x, k: tuple(torch.topk(x, k)),
    "mutates_input": _routing_in_place,
}


@pytest.mark.parametrize("key", list(ROUTING_BAD))
def test_routing_diagnoses_each_misconception(key):
    assert_diagnosed(check_top_k_routing(ROUTING_BAD[key]), key)


def test_routing_named_misconceptions_are_all_tested():
    assert_all_tested("check_top_k_routing", ROUTING_BAD)


def test_routing_wrong_return_type_is_explained():
    r = check_top_k_routing(lambda x, k: x.softmax(-1).topk(k).values)
    assert not r.passed and "return a tuple (weights, indices)" in r.message


# ------------------------------------------------------------------ load-balancing loss
def balance_loop(router_probs, expert_indices, n_experts):
    N = router_probs.shape[0]
    loss = 0
    for i in range(n_experts):
        f_i = (expert_indices == i).any(-1).sum() / N
        loss = loss + f_i * router_probs[:, i].mean()
    return n_experts * loss


def balance_bincount(router_probs, expert_indices, n_experts):
    counts = torch.bincount(expert_indices.flatten(), minlength=n_experts).to(router_probs.dtype)
    return n_experts * torch.dot(counts / router_probs.size(0), router_probs.mean(0))


@pytest.mark.parametrize("impl", [solved("check_load_balancing_loss"), balance_loop, balance_bincount])
def test_balance_accepts_correct_implementations(impl):
    r = check_load_balancing_loss(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


def balance_import_inside(router_probs, expert_indices, n_experts):
    from course_lib.moe import load_balancing_loss as loss
    return loss(router_probs, expert_indices, n_experts)


@pytest.mark.parametrize("impl", [load_balancing_loss, balance_import_inside])
def test_balance_refuses_delegation(impl):
    assert_delegates(check_load_balancing_loss(impl), "course_lib.moe.load_balancing_loss")


def test_balance_stub_is_not_attempted():
    def loss(router_probs, expert_indices, n_experts):
        raise NotImplementedError()
    assert_not_attempted(check_load_balancing_loss(loss))


def _mask_only(router_probs, expert_indices, n_experts):
    mask = F.one_hot(expert_indices, n_experts).sum(1).to(router_probs.dtype)  # (N, E)
    f = mask.mean(0)
    return n_experts * (f * f).sum()


def _detached(router_probs, expert_indices, n_experts):
    return balance_bincount(router_probs.detach(), expert_indices, n_experts)


def _balance_in_place(router_probs, expert_indices, n_experts):
    out = balance_bincount(router_probs, expert_indices, n_experts)
    router_probs.mul_(1.0).add_(1e-3)
    return out


BALANCE_BAD = {
    "mask_only": _mask_only,
    "no_scale": lambda p, i, E: balance_bincount(p, i, E) / E,
    "fraction_of_assignments": lambda p, i, E: balance_bincount(p, i, E) / i.shape[1],
    "detached": _detached,
    "mutates_input": _balance_in_place,
}


@pytest.mark.parametrize("key", list(BALANCE_BAD))
def test_balance_diagnoses_each_misconception(key):
    assert_diagnosed(check_load_balancing_loss(BALANCE_BAD[key]), key)


def test_balance_named_misconceptions_are_all_tested():
    assert_all_tested("check_load_balancing_loss", BALANCE_BAD)


# ------------------------------------------------------------------ sparse MoE sub-layer
class ExerciseMoE(nn.Module):
    """The exercise's __init__; subclasses supply forward()."""

    def __init__(self, d_model, d_ff, n_experts=4, top_k=2, capacity_factor=None):
        super().__init__()
        self.n_experts, self.top_k, self.capacity_factor = n_experts, top_k, capacity_factor
        self.gate = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(GatedFeedForward(d_model, d_ff) for _ in range(n_experts))

    def routed(self, x):
        B, T, C = x.shape
        h = x.reshape(-1, C)
        w, idx = top_k_routing(self.gate(h), self.top_k)
        kept = torch.ones_like(idx, dtype=torch.bool)
        if self.capacity_factor is not None:
            kept = capacity_mask(idx, self.n_experts, expert_capacity(len(h), self.n_experts, self.top_k,
                                                                      self.capacity_factor))
        return h, w, idx, kept


Reference = solved("check_sparse_moe", "SparseMoE")


class LearnerMoE(ExerciseMoE):
    """The printed answer's loop over experts, written out; flags switch on one mistake each."""
    residual, in_place = True, False

    def forward(self, x):
        B, T, C = x.shape
        h, w, idx, kept = self.routed(x)
        y = torch.zeros_like(h)  # (N, C)
        for e, expert in enumerate(self.experts):
            token, choice = torch.where((idx == e) & kept)
            y = y.index_add(0, token, expert(h[token]) * w[token, choice, None])
        out = x + y.view(B, T, C) if self.residual else y.view(B, T, C)
        if self.in_place:
            x.add_(0.0).mul_(2.0)
        return out


class DenseLoop(ExerciseMoE):  # every expert on every token, weights 0 where unused: the definition
    def forward(self, x):
        h, w, idx, kept = self.routed(x)
        out = h.clone()
        for e in range(self.n_experts):
            out = out + ((idx == e) & kept).to(w.dtype).mul(w).sum(1, keepdim=True) * self.experts[e](h)
        return out.view_as(x)


class Stub(ExerciseMoE):
    def forward(self, x):
        raise NotImplementedError()


@pytest.mark.parametrize("impl", [Reference, LearnerMoE, DenseLoop])
def test_moe_accepts_correct_implementations(impl):
    r = check_sparse_moe(impl)
    assert r.passed and r.points == r.max_points == 4, r.message


class ViaLibrary(ExerciseMoE):  # the course's own layer, loaded with the same weights
    def forward(self, x):
        lib = LibrarySparseMoE(self.gate.in_features, self.experts[0].up_proj.out_features, self.n_experts,
                               self.top_k, capacity_factor=self.capacity_factor).to(x.dtype)
        lib.load_state_dict(self.state_dict())
        return x + lib(x)


def test_moe_refuses_delegation():
    assert_delegates(check_sparse_moe(ViaLibrary), "course_lib.moe.SparseMoE")


def test_moe_stub_is_not_attempted():
    assert_not_attempted(check_sparse_moe(Stub))


class WeightsIgnored(ExerciseMoE):
    def forward(self, x):
        h, w, idx, kept = self.routed(x)
        y = torch.zeros_like(h)
        for n in range(len(h)):
            for j in range(self.top_k):
                if kept[n, j]:
                    y[n] += self.experts[int(idx[n, j])](h[n])
        return x + y.view_as(x)


class DroppedZeroed(ExerciseMoE):
    def forward(self, x):
        h, w, idx, kept = self.routed(x)
        out = torch.zeros_like(h)
        for n in range(len(h)):
            if kept[n].any():  # tokens with no room are "dropped": left at zero
                out[n] = h[n] + sum(w[n, j] * self.experts[int(idx[n, j])](h[n])
                                    for j in range(self.top_k) if kept[n, j])
        return out.view_as(x)


class NoResidual(LearnerMoE):
    residual = False


class CapacityIgnored(ExerciseMoE):
    def forward(self, x):
        h, w, idx, _ = self.routed(x)
        y = torch.zeros_like(h)
        for e in range(self.n_experts):
            tok, j = torch.where(idx == e)
            y.index_add_(0, tok, self.experts[e](h[tok]) * w[tok, j].unsqueeze(-1))
        return x + y.view_as(x)


class InPlace(LearnerMoE):
    in_place = True


MOE_BAD = {"weights_ignored": WeightsIgnored, "dropped_zeroed": DroppedZeroed, "no_residual": NoResidual,
           "capacity_ignored": CapacityIgnored, "mutates_input": InPlace}


@pytest.mark.parametrize("key", list(MOE_BAD))
def test_moe_diagnoses_each_misconception(key):
    assert_diagnosed(check_sparse_moe(MOE_BAD[key]), key)


def test_moe_named_misconceptions_are_all_tested():
    assert_all_tested("check_sparse_moe", MOE_BAD)


def test_moe_wrong_layout_and_instance_are_explained():
    r = check_sparse_moe(Reference(8, 16))
    assert not r.passed and "pass the class itself" in r.message

    class NoGate(nn.Module):
        def __init__(self, *a):
            super().__init__()

    r = check_sparse_moe(NoGate)
    assert not r.passed and "no sub-module called `gate`" in r.message


def test_reference_forward_equals_the_library_layer():
    torch.manual_seed(0)
    for k, cf in [(2, None), (1, 1.0), (2, 0.75)]:
        m = Reference(12, 20, 4, k, cf)
        lib = LibrarySparseMoE(12, 20, 4, k, capacity_factor=cf)
        lib.load_state_dict(m.state_dict())
        x = torch.randn(2, 7, 12)
        with torch.no_grad():
            torch.testing.assert_close(m(x), x + lib(x))


def test_solutions_print(capsys):
    for name in ("check_top_k_routing", "check_load_balancing_loss", "check_sparse_moe"):
        solution(name)
    assert "class SparseMoE" in capsys.readouterr().out
