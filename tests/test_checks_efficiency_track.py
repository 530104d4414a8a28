"""Exercise 15's from-scratch checks (QuantLinear, per-group quantisation, Mixture-of-Depths routing),
both ways: they accept the printed solution and correct code written differently, and reject the stub,
delegation to course_lib, bad output and each named misconception. A wrong version is the printed
solution with one thing changed, as a learner would write it. The references themselves are checked
against independent computations (nn.Linear, a loop over groups, a loop over tokens)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.checks import REGISTRY
from course_lib.checks import efficiency_track as et
from course_lib.checks.efficiency_track import check_mod_route, check_quant_linear, check_quantize_per_group

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted

pytestmark = pytest.mark.usefixtures("quiet_checks")

OBJECT = {"check_quant_linear": "QuantLinear", "check_quantize_per_group": "quantize_per_group",
          "check_mod_route": "mod_route"}


def learner(check_name, *edits, extra=""):
    """The printed solution of `check_name` with each (old, new) text edit applied (each must occur
    exactly once), plus `extra` code, run as a learner's notebook: returns the object asked for."""
    text = REGISTRY[check_name].reference
    for old, new in edits:
        assert text.count(old) == 1, (check_name, old, text.count(old))
        text = text.replace(old, new)
    ns = {"__name__": f"learner_{check_name}"}
    exec(compile(text + extra, f"<learner {check_name}>", "exec"), ns)  # noqa: S102 - our own text
    return ns[OBJECT[check_name]]


def own(code, name):
    """A learner's notebook cell defining `name`, written here from scratch."""
    ns = {"__name__": "learner_own"}
    exec(compile("import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n" + code,  # noqa: S102
                 "<learner own>", "exec"), ns)
    return ns[name]


def passes(result):
    assert result.passed and result.points == result.max_points, (result.message, result.detail)


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_the_printed_solution_passes(name):
    passes(REGISTRY[name].func(learner(name)))


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_a_stub_is_not_attempted(name):
    if name == "check_quant_linear":
        class QuantLinear(nn.Module):
            def __init__(self, linear):
                super().__init__()
                raise NotImplementedError()
        stub = QuantLinear
    else:
        def stub(*args):
            raise NotImplementedError()
    assert_not_attempted(REGISTRY[name].func(stub))


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_every_check_has_hint_idea_forbid_and_minutes(name):
    spec = REGISTRY[name]
    assert spec.hint and spec.idea and spec.forbid and spec.minutes > 0
    assert "course_lib" in spec.forbid.names


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_learner_errors_become_verdicts(name):
    """An exception, a missing return, a wrong type: a failed verdict, never an exception out of the check."""
    if name == "check_quant_linear":
        broken = [own("class QuantLinear(nn.Module):\n    def __init__(self, linear):\n        super().__init__()\n"
                      "        raise ValueError('oops')\n", "QuantLinear"),
                  learner(name, ("        return y\n", "        return None\n")), "QuantLinear"]
    else:
        broken = [lambda *a: 1 / 0, lambda *a: None, lambda *a: "text", 42]
    for b in broken:
        r = REGISTRY[name].func(b)
        assert not r.passed and r.points == 0 and r.status == "failed", r
        assert "checker itself failed" not in r.message, r.message


# ------------------------------------------------------------------ QuantLinear
def test_quant_linear_reference_equals_an_independent_dequantised_linear():
    torch.manual_seed(0)
    lin = nn.Linear(9, 4)
    w = lin.weight.detach()
    s = w.abs().max(dim=1).values / 127  # (out,)
    w_hat = torch.stack([torch.round(w[j] / s[j]) * s[j] for j in range(4)])  # row by row
    x = torch.randn(3, 9)
    m = learner("check_quant_linear")(lin)
    torch.testing.assert_close(m(x), nn.functional.linear(x, w_hat, lin.bias.detach()))
    assert m.weight_int8.dtype == torch.int8 and "weight_int8" in m.state_dict()


def test_quant_linear_written_differently_passes():
    """The library's order: int8 matmul first, scale per output afterwards; the bias a frozen Parameter."""
    QuantLinear = own('''
class QuantLinear(nn.Module):
    def __init__(self, linear):
        super().__init__()
        w = linear.weight.detach().double()
        s = w.abs().max(dim=1).values.clamp_min(1e-30) / 127
        self.register_buffer("q", (w / s[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("s", s.to(linear.weight.dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x):
        y = F.linear(x, self.q.to(x.dtype)) * self.s.to(x.dtype)
        return y if self.bias is None else y + self.bias
''', "QuantLinear")
    passes(check_quant_linear(QuantLinear))


QUANT_LINEAR_WRONG = {
    "stores_float_weight": [("        super().__init__()\n", "        super().__init__()\n        self.linear = linear\n")],
    "not_int8": [(".clamp(-127, 127).to(torch.int8)", ".clamp(-127, 127)")],
    "not_buffers": [('self.register_buffer("weight_int8", q)', "self.weight_int8 = q"),
                    ('self.register_buffer("scale", scale)', "self.scale = scale")],
    "scale_per_column": [("w.abs().amax(dim=1)", "w.abs().amax(dim=0)"), ("w / scale[:, None]", "w / scale"),
                         ("self.scale[:, None].to(x.dtype)", "self.scale.to(x.dtype)")],
    "uses_float_weight": [("        super().__init__()\n",
                           "        super().__init__()\n        self.w = linear.weight.detach().clone()\n"),
                          ("y = x @ w_hat.T", "y = x @ self.w.T")],
    "scale_not_applied": [("self.weight_int8.to(x.dtype) * self.scale[:, None].to(x.dtype)",
                           "self.weight_int8.to(x.dtype)")],
    "forgot_bias": [("            y = y + self.bias.to(x.dtype)", "            pass")],
    "mutates_input": [("    q = torch.round(w / scale[:, None])", "    w /= scale[:, None]\n    q = torch.round(w)")],
}


@pytest.mark.parametrize("key", sorted(QUANT_LINEAR_WRONG))
def test_quant_linear_misconceptions_are_named(key):
    assert_diagnosed(check_quant_linear(learner("check_quant_linear", *QUANT_LINEAR_WRONG[key])), key)


def test_quant_linear_misconceptions_are_all_tested():
    assert_all_tested("check_quant_linear", QUANT_LINEAR_WRONG)


def test_quant_linear_delegation_is_rejected():
    delegating = learner("check_quant_linear", ("q, scale = quantize_per_channel(linear.weight.detach())",
                                                "q, scale = lib_quant(linear.weight.detach())"),
                         extra="from course_lib.quantization import quantize_per_channel as lib_quant\n")
    assert_delegates(check_quant_linear(delegating), "course_lib.quantization.quantize_per_channel")
    subclass = own("import course_lib.quantization as cq\n\n\nclass QuantLinear(cq.QuantLinear):\n"
                   "    def __init__(self, linear):\n        q, s = cq.quantize_per_channel(linear.weight.detach())\n"
                   "        super().__init__(q, s, linear.bias)\n", "QuantLinear")
    assert_delegates(check_quant_linear(subclass), "course_lib.quantization")


# ------------------------------------------------------------------ per-group quantisation
def test_quantize_per_group_reference_equals_a_loop_over_groups():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 12, generator=g)
    q, scale = et.quantize_per_group_reference(w, 4)
    for r in range(3):
        for j in range(3):
            block = w[r, 4 * j: 4 * j + 4]
            s = block.abs().max() / 127
            assert torch.isclose(scale[r, j], s)
            assert torch.equal(q[r, 4 * j: 4 * j + 4], torch.round(block / s).to(torch.int8))


def test_quantize_per_group_written_differently_passes():
    """Per-channel quantisation (the learner's part 1) on the groups as rows, and a plain loop."""
    reuse = own('''
def quantize_per_channel(w):
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def quantize_per_group(w, group_size):
    q, s = quantize_per_channel(w.reshape(-1, group_size))
    return q.reshape(w.shape), s.reshape(w.shape[0], -1)
''', "quantize_per_group")
    passes(check_quantize_per_group(reuse))
    loop = own('''
def quantize_per_group(w, group_size):
    q = torch.zeros(w.shape, dtype=torch.int8)
    scale = torch.ones(w.shape[0], w.shape[1] // group_size, dtype=w.dtype)
    for r in range(w.shape[0]):
        for j in range(scale.shape[1]):
            part = w[r, j * group_size:(j + 1) * group_size].double()
            if part.abs().max() > 0:
                scale[r, j] = part.abs().max() / 127
            q[r, j * group_size:(j + 1) * group_size] = (part / scale[r, j].double()).round().to(torch.int8)
    return q, scale
''', "quantize_per_group")
    passes(check_quantize_per_group(loop))


STRIDED = '''
def quantize_per_group(w, group_size):
    out_features, in_features = w.shape
    groups = w.reshape(out_features, group_size, in_features // group_size)  # (out, gs, G)
    absmax = groups.abs().amax(dim=1)  # (out, G)
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
    q = torch.round(groups / scale[:, None, :]).clamp(-127, 127).to(torch.int8)
    return q.reshape(out_features, in_features), scale
'''
DOWN_COLUMNS = '''
def quantize_per_group(w, group_size):
    out_features, in_features = w.shape
    groups = w.reshape(out_features // group_size, group_size, in_features)  # groups of rows
    absmax = groups.abs().amax(dim=1)  # (out / gs, in)
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
    q = torch.round(groups / scale[:, None, :]).clamp(-127, 127).to(torch.int8)
    return q.reshape(out_features, in_features), scale
'''
GROUP_WRONG = {
    "row_absmax": [("absmax = groups.abs().amax(dim=-1)",
                    "absmax = w.abs().amax(dim=1, keepdim=True).expand(out_features, n_groups)")],
    "zero_group": [("torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))", "absmax / 127")],
    "float_dtype": [(".clamp(-127, 127).to(torch.int8)", ".clamp(-127, 127)")],
    "mutates_input": [("    q = torch.round(groups / scale[..., None])", "    groups /= scale[..., None]\n"
                                                                         "    q = torch.round(groups)")],
}


@pytest.mark.parametrize("key", sorted(GROUP_WRONG))
def test_quantize_per_group_misconceptions_are_named(key):
    assert_diagnosed(check_quantize_per_group(learner("check_quantize_per_group", *GROUP_WRONG[key])), key)


def test_quantize_per_group_layout_misconceptions_are_named():
    assert_diagnosed(check_quantize_per_group(own(STRIDED, "quantize_per_group")), "strided_groups")
    assert_diagnosed(check_quantize_per_group(own(DOWN_COLUMNS, "quantize_per_group")), "groups_down_columns")


def test_quantize_per_group_misconceptions_are_all_tested():
    assert_all_tested("check_quantize_per_group", set(GROUP_WRONG) | {"strided_groups", "groups_down_columns"})


def test_quantize_per_group_delegation_is_rejected():
    delegating = own("import course_lib.quantization as cq\n\n\ndef quantize_per_group(w, group_size):\n"
                     "    q, s = cq.quantize_per_channel(w.reshape(-1, group_size))\n"
                     "    return q.reshape(w.shape), s.reshape(w.shape[0], -1)\n", "quantize_per_group")
    assert_delegates(check_quantize_per_group(delegating), "course_lib.quantization.quantize_per_channel")


# ------------------------------------------------------------------ Mixture-of-Depths routing
def test_mod_reference_equals_a_loop_over_tokens():
    g = torch.Generator().manual_seed(4)
    x, scores = torch.randn(2, 7, 3, generator=g), torch.randn(2, 7, generator=g)
    block = et._causal_block(3, torch.float32, 0)
    out = et._mod_reference(x, scores, 3, block)
    for b in range(2):
        chosen = sorted(sorted(range(7), key=lambda t: -scores[b, t].item())[:3])  # positions, in order
        new = block(x[b:b + 1, chosen])[0]  # (k, C): the block sees the chosen tokens only
        for t in range(7):
            want = x[b, t]
            if t in chosen:
                i = chosen.index(t)
                want = x[b, t] + torch.sigmoid(scores[b, t]) * (new[i] - x[b, t])
            torch.testing.assert_close(out[b, t], want)


def test_mod_route_written_differently_passes():
    """argsort and a boolean mask with torch.where, one sequence at a time."""
    loop = own('''
def mod_route(x, scores, k, block):
    rows = []
    for b in range(x.shape[0]):
        order = torch.argsort(scores[b], descending=True)[:k]
        keep = torch.zeros(x.shape[1], dtype=torch.bool)
        keep[order] = True
        pos = keep.nonzero().squeeze(1)  # ascending positions
        sel = x[b, pos]
        g = 1 / (1 + torch.exp(-scores[b, pos]))
        new = torch.zeros_like(x[b])
        new[pos] = sel + g[:, None] * (block(sel[None])[0] - sel)
        rows.append(torch.where(keep[:, None], new, x[b]))
    return torch.stack(rows)
''', "mod_route")
    passes(check_mod_route(loop))


def test_mod_route_accepts_the_papers_raw_gate():
    r = check_mod_route(learner("check_mod_route", ("gate = torch.sigmoid(scores.gather(1, idx))",
                                                    "gate = scores.gather(1, idx)")))
    passes(r)
    assert "paper" in r.message


MOD_WRONG = {
    "score_order": [("    idx = idx.sort(dim=-1).values  # (B, k): back in sequence order, so causal attention "
                     "stays causal\n", "")],
    "block_sees_all_tokens": [("update = block(x_sel) - x_sel", "update = block(x).gather(1, idx_c) - x_sel")],
    "no_gate": [("x_sel + gate[:, :, None] * update", "x_sel + update")],
    "gate_on_output": [("x_sel + gate[:, :, None] * update", "gate[:, :, None] * block(x_sel)")],
    "gate_detached": [("gate = torch.sigmoid(scores.gather(1, idx))",
                       "gate = torch.sigmoid(scores.gather(1, idx)).detach()")],
    "mutates_input": [("return x.scatter(1, idx_c,", "return x.scatter_(1, idx_c,")],
}


@pytest.mark.parametrize("key", sorted(MOD_WRONG))
def test_mod_route_misconceptions_are_named(key):
    assert_diagnosed(check_mod_route(learner("check_mod_route", *MOD_WRONG[key])), key)


def test_mod_route_misconceptions_are_all_tested():
    assert_all_tested("check_mod_route", MOD_WRONG)


def test_mod_route_delegation_is_rejected():
    delegating = learner("check_mod_route", ("idx = scores.topk(k, dim=-1).indices", "idx = top_k_indices(scores, k)"),
                         extra="from course_lib.mod import top_k_indices\n")
    assert_delegates(check_mod_route(delegating), "course_lib.mod.top_k_indices")
