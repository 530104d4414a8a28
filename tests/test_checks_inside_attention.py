"""Exercise 12's from-scratch checks (induction score, attention rollout, the logit lens's losses), both
ways: the printed solution and correct code written differently pass; the stub is not attempted; each
named misconception, written as a learner would write it, is diagnosed; calling the course's own
function is refused; bad output gets a one-line verdict and never an exception. The references
themselves are checked against independent computations here too."""
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.analysis import attention_rollout as library_rollout
from course_lib.analysis import lens_scores, repeat_keys, weight_on_keys
from course_lib.checks import REGISTRY
from course_lib.checks.inside_attention import (_lens_case, _perfect_heads, check_attention_rollout,
                                                check_induction_score, check_logit_lens_scores)

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

CHECKS = {"check_induction_score": check_induction_score, "check_attention_rollout": check_attention_rollout,
          "check_logit_lens_scores": check_logit_lens_scores}


def passes(result):
    assert result.passed and result.points == result.max_points, (result.message, result.detail)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_inside_the_printed_solution_passes_quickly(name):
    start = time.perf_counter()
    passes(CHECKS[name](solved(name)))
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_inside_a_stub_is_not_attempted(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()
    assert_not_attempted(CHECKS[name](stub))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_inside_every_check_has_hint_idea_forbid_and_minutes(name):
    spec = REGISTRY[name]
    assert spec.hint and spec.idea and spec.minutes > 0
    assert "course_lib.checks" in spec.forbid.names
    assert any(n.startswith("course_lib.analysis.") for n in spec.forbid.names)


def nan_scores(streams, final_norm, unembed, targets):
    return torch.full((len(streams),), float("nan")), torch.zeros(len(streams))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_inside_bad_output_gets_a_one_line_verdict(name):
    one = name != "check_logit_lens_scores"  # that one returns a tuple (losses, accuracy)
    for bad, words in [(lambda *a, **k: None, "forget a `return`"), (lambda *a, **k: 1 / 0, "ZeroDivisionError"),
                       (lambda *a, **k: [0.5], "torch.Tensor" if one else "tuple of 2 tensors"),
                       (lambda *a, **k: torch.full((7, 7), float("nan")), "shape" if one else "got Tensor")]:
        r = CHECKS[name](bad)
        assert not r.passed and r.points == 0 and words in r.message and "\n" not in r.message, r.message
    r = CHECKS[name](42)
    assert not r.passed and "function" in r.message
    if not one:
        r = CHECKS[name](nan_scores)
        assert not r.passed and "losses contains NaN" in r.message, r.message


# ------------------------------------------------------------------ the references, independently
def test_induction_reference_on_perfect_heads_and_by_a_loop():
    a = _perfect_heads(12, 5)
    assert torch.equal(weight_on_keys(a, repeat_keys(12, 5)), torch.tensor([1.0, 0.0]))
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(2, 3, 9, 9, generator=g)
    by_loop = sum(attn[:, :, i, i - 2] for i in range(3, 9)).mean(0) / 6  # period 3: key i - 3 + 1
    torch.testing.assert_close(weight_on_keys(attn, repeat_keys(9, 3)), by_loop)


def test_rollout_reference_equals_a_matrix_product_written_out():
    g = torch.Generator().manual_seed(1)
    maps = [torch.softmax(torch.randn(1, 2, 4, 4, generator=g), -1) for _ in range(3)]
    mixed = [0.3 * torch.eye(4) + 0.7 * m[0].mean(0) for m in maps]  # rows already sum to 1
    torch.testing.assert_close(library_rollout(maps, 0.3)[0], mixed[2] @ mixed[1] @ mixed[0])


def test_lens_reference_equals_torch_cross_entropy():
    streams, norm, W, targets = _lens_case(2, 2, 5, 8, 11, gen=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = torch.stack([F.cross_entropy((norm(x) @ W.T).flatten(0, 1), targets.flatten()) for x in streams])
        got = lens_scores(torch.stack([norm(x) @ W.T for x in streams]), targets)[0]
    torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ induction score
def induction_loop(attn, period):
    B, H, T, _ = attn.shape
    total = torch.zeros(H, dtype=attn.dtype)
    for i in range(period, T):
        total = total + attn[:, :, i, i - period + 1].sum(0)
    return total / (B * (T - period))


def induction_diagonal(attn, period):
    d = torch.diagonal(attn, offset=-(period - 1), dim1=2, dim2=3)  # (B, H, T - period + 1)
    return d[..., 1:].double().mean(dim=(0, 2)).to(attn.dtype)  # query period - 1 has no earlier copy


def induction_mask(attn, period):
    T = attn.size(-1)
    i = torch.arange(T)
    chosen = (i[:, None] >= period) & (i[None, :] == i[:, None] - period + 1)  # (T, T)
    return torch.einsum("bhqk,qk->h", attn, chosen.to(attn.dtype)) / (attn.size(0) * (T - period))


@pytest.mark.parametrize("impl", [induction_loop, induction_diagonal, induction_mask])
def test_induction_accepts_other_correct_forms(impl):
    passes(check_induction_score(impl))


def same_token(attn, period):
    q = torch.arange(period, attn.size(-1))
    return attn[:, :, q, q - period].mean(dim=(0, 2))


def diagonal_with_its_first_entry(attn, period):
    return attn.diagonal(offset=1 - period, dim1=-2, dim2=-1).mean(dim=(0, 2))


def divided_by_T(attn, period):
    T = attn.size(-1)
    q = torch.arange(period, T)
    return attn[:, :, q, q - period + 1].sum(-1).mean(0) / T


def per_example(attn, period):
    q = torch.arange(period, attn.size(-1))
    return attn[:, :, q, q - period + 1].mean(-1)


def zeroes_first_period(attn, period):
    attn[:, :, :period] = 0.0  # "those queries do not count", written on the caller's tensor
    q = torch.arange(period, attn.size(-1))
    return attn[:, :, q, q - period + 1].mean(dim=(0, 2))


INDUCTION_BAD = {"same_token": same_token, "diagonal_includes_first": diagonal_with_its_first_entry,
                 "counts_first_period": divided_by_T, "per_example": per_example,
                 "mutates_input": zeroes_first_period}


@pytest.mark.parametrize("key", sorted(INDUCTION_BAD))
def test_induction_diagnoses(key):
    assert_diagnosed(check_induction_score(INDUCTION_BAD[key]), key)


def test_induction_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_induction_score", INDUCTION_BAD)


def test_induction_refuses_the_course_functions_even_through_an_alias():
    keys = repeat_keys
    assert_delegates(check_induction_score(lambda attn, period: weight_on_keys(attn, keys(attn.size(-1), period))),
                     "course_lib.analysis.weight_on_keys")

    def own_weights(attn, period):  # its own weighting, the course's keys
        k = keys(attn.size(-1), period)
        q = torch.arange(attn.size(-1))[k >= 0]
        return attn[:, :, q, k[k >= 0]].mean(dim=(0, 2))
    assert_delegates(check_induction_score(own_weights), "course_lib.analysis.repeat_keys")


# ------------------------------------------------------------------ attention rollout
FUSE = {"mean": lambda a: a.mean(1), "max": lambda a: a.max(dim=1).values, "min": lambda a: a.min(dim=1).values}


def rollout_from_the_top(maps, residual=0.5, head_fusion="mean"):
    T = maps[-1].size(-1)
    out = torch.eye(T, dtype=maps[0].dtype).expand(maps[0].size(0), T, T)
    for attn in reversed(maps):  # the top layer first: out = Ã_L, then Ã_L Ã_(L-1), ...
        a = FUSE[head_fusion](attn.double())
        a = (1 - residual) * a + residual * torch.eye(T, dtype=torch.float64)
        out = out.double() @ (a / a.sum(-1, keepdim=True))
    return out.to(maps[0].dtype)


def rollout_stacked(maps, residual=0.5, head_fusion="mean"):
    A = torch.stack([FUSE[head_fusion](m) for m in maps])  # (L, B, T, T)
    A = A * (1 - residual) + torch.diag_embed(torch.full(A.shape[:-1], residual, dtype=A.dtype))
    A = A / A.sum(-1, keepdim=True)
    out = A[0]
    for layer in A[1:]:
        out = torch.bmm(layer, out)
    return out


@pytest.mark.parametrize("impl", [rollout_from_the_top, rollout_stacked])
def test_rollout_accepts_other_correct_forms(impl):
    passes(check_attention_rollout(impl))


def rollout_learner(*, order="left", mix="weighted", renorm=True, heads="mean", fixed=False, inplace=False):
    """The printed solution with one thing changed, as a learner would write it."""
    def attention_rollout(maps, residual=0.5, head_fusion="mean"):
        r = 0.5 if fixed else residual
        eye = torch.eye(maps[0].size(-1), dtype=maps[0].dtype)
        rollout = None
        for attn in maps:
            if head_fusion == "max":
                a = attn.amax(1)
            elif head_fusion == "min":
                a = attn.amin(1)
            elif inplace:
                attn.mul_(1 - r)  # the (1 - residual) weighting done on the caller's maps
                a = attn.mean(1) + r * eye
            else:
                a = attn.mean(1) if heads == "mean" else attn.sum(1)
            if mix == "weighted" and not (inplace and head_fusion == "mean"):
                a = r * eye + (1 - r) * a
            elif mix == "added":
                a = a + r * eye
            elif mix == "swapped":
                a = (1 - r) * eye + r * a
            if renorm:
                a = a / a.sum(-1, keepdim=True)
            rollout = a if rollout is None else (a @ rollout if order == "left" else rollout @ a)
        return rollout
    return attention_rollout


ROLLOUT_BAD = {"wrong_order": dict(order="right"), "no_residual": dict(mix="none"),
               "not_renormalised": dict(renorm=False), "identity_added": dict(mix="added", renorm=False),
               "residual_swapped": dict(mix="swapped"), "fixed_half": dict(fixed=True),
               "heads_summed": dict(heads="sum"), "mutates_input": dict(inplace=True)}


def test_the_rollout_learner_without_changes_passes():
    passes(check_attention_rollout(rollout_learner()))


@pytest.mark.parametrize("key", sorted(ROLLOUT_BAD))
def test_rollout_diagnoses(key):
    assert_diagnosed(check_attention_rollout(rollout_learner(**ROLLOUT_BAD[key])), key)


def test_rollout_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_attention_rollout", ROLLOUT_BAD)


def test_rollout_without_renormalising_passes_mean_fusion_only():
    r = check_attention_rollout(rollout_learner(renorm=False))
    assert "head_fusion='max'" in r.detail  # the first case where the rows stop summing to 1


roll = library_rollout  # the course's answer under another name


def test_rollout_refuses_the_course_function():
    assert_delegates(check_attention_rollout(lambda maps, residual=0.5: roll(maps, residual)),
                     "course_lib.analysis.attention_rollout")
    assert_delegates(check_attention_rollout(library_rollout), "course_lib.analysis.attention_rollout")


# ------------------------------------------------------------------ the logit lens's losses
def lens_with_cross_entropy(streams, final_norm, unembed, targets):
    V = unembed.size(0)
    logits = [(final_norm(x) @ unembed.T).reshape(-1, V) for x in streams]
    losses = torch.stack([F.cross_entropy(z, targets.reshape(-1)) for z in logits])
    hits = torch.stack([(z.max(-1).indices == targets.reshape(-1)).sum() for z in logits])
    return losses, hits / targets.numel()


def lens_all_at_once(streams, final_norm, unembed, targets):
    h = final_norm(torch.stack(streams)).double()  # (L+1, B, T, C): a norm works on the last axis
    logits = torch.einsum("lbtc,vc->lbtv", h, unembed.double())
    picked = logits.gather(-1, targets.expand(len(streams), *targets.shape)[..., None]).squeeze(-1)
    top = (logits.argmax(-1) == targets).double().mean(dim=(1, 2))
    return (torch.logsumexp(logits, -1) - picked).mean(dim=(1, 2)).float(), top.float()


@pytest.mark.parametrize("impl", [lens_with_cross_entropy, lens_all_at_once])
def test_lens_accepts_other_correct_forms(impl):
    passes(check_logit_lens_scores(impl))


def lens_learner(*, norm=True, shift=False, sign=1, reduce="positions", percent=False, inplace=False):
    def logit_lens_scores(streams, final_norm, unembed, targets):
        losses, accuracies = [], []
        for x in streams:
            if inplace:
                x.sub_(x.mean(-1, keepdim=True))  # "centre it first", on the caller's stream
            logits = (final_norm(x) if norm else x) @ unembed.T
            t = targets
            if shift:
                logits, t = logits[:, :-1], targets[:, 1:]
            nll = -logits.log_softmax(-1).gather(-1, t[..., None]).squeeze(-1)
            right = (logits.argmax(-1) == t).float() * (100 if percent else 1)
            losses.append(sign * (nll if reduce == "none" else nll.mean()))
            accuracies.append(right if reduce == "none" else right.mean())
        losses, accuracies = torch.stack(losses), torch.stack(accuracies)
        return (losses.mean(), accuracies.mean()) if reduce == "all" else (losses, accuracies)
    return logit_lens_scores


LENS_BAD = {"skips_final_norm": dict(norm=False), "shifted_again": dict(shift=True), "sign_flipped": dict(sign=-1),
            "per_position": dict(reduce="none"), "one_number": dict(reduce="all"),
            "accuracy_in_percent": dict(percent=True), "mutates_input": dict(inplace=True)}


def test_the_lens_learner_without_changes_passes():
    passes(check_logit_lens_scores(lens_learner()))


@pytest.mark.parametrize("key", sorted(LENS_BAD))
def test_lens_diagnoses(key):
    assert_diagnosed(check_logit_lens_scores(lens_learner(**LENS_BAD[key])), key)


def test_lens_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_logit_lens_scores", LENS_BAD)


def test_lens_asks_for_both_scores():
    r = check_logit_lens_scores(lambda *args: lens_learner()(*args)[0])  # the losses only
    assert not r.passed and "tuple of 2 tensors (losses, accuracy)" in r.message


def test_lens_refuses_the_course_scores():
    def via_course(streams, final_norm, unembed, targets):
        return lens_scores(torch.stack([final_norm(x) @ unembed.T for x in streams]), targets)
    assert_delegates(check_logit_lens_scores(via_course), "course_lib.analysis.lens_scores")


def test_lens_learner_with_no_grad_and_a_module_norm_passes():
    @torch.no_grad()
    def logit_lens_scores(streams, final_norm, unembed, targets):
        head = nn.Linear(unembed.size(1), unembed.size(0), bias=False)
        head.weight.data = unembed
        logits = [head(final_norm(x)) for x in streams]
        return (torch.stack([F.cross_entropy(z.transpose(1, 2), targets) for z in logits]),
                torch.stack([(z.argmax(-1) == targets).float().mean() for z in logits]))
    passes(check_logit_lens_scores(logit_lens_scores))
