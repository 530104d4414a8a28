"""Exercise 04's checks beyond repeat_kv, both ways: mha_to_gqa (mean-pooling an MHA checkpoint into GQA),
kv_cache_bytes (from a config.json), max_batch, and gqa_attention without copying K/V. They accept the
printed solution and correct code written differently, and reject the stub, delegation, bad output and
each named misconception, written as a learner would (a text edit of the solution or a small function
here). The references are checked against independent ones: Hugging Face's cache and attention,
PyTorch's GQA attention, course_lib.kv_cache, a brute-force search."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import REGISTRY
from course_lib.checks import kv_heads as kh
from course_lib.checks.kv_heads import (check_gqa_attention, check_kv_cache_bytes, check_max_batch,
                                        check_mha_to_gqa)
from course_lib.kv_cache import PUBLISHED_CONFIGS

from helpers import (assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, hf_llama,
                     solved)

pytestmark = pytest.mark.usefixtures("quiet_checks")

OBJECT = {"check_mha_to_gqa": "mha_to_gqa", "check_kv_cache_bytes": "kv_cache_bytes",
          "check_max_batch": "max_batch", "check_gqa_attention": "gqa_attention"}


def learner(check_name, *edits, extra=""):
    """The printed solution of `check_name` with each (old, new) text edit applied (each must occur exactly
    once), plus `extra` code, run as a learner's notebook: returns its namespace."""
    text = REGISTRY[check_name].reference
    for old, new in edits:
        assert text.count(old) == 1, (check_name, old, text.count(old))
        text = text.replace(old, new)
    ns = {"__name__": f"learner_{check_name}"}
    exec(compile(text + extra, f"<learner {check_name}>", "exec"), ns)  # noqa: S102 - our own text
    return ns


def obj(check_name, *edits, extra=""):
    return learner(check_name, *edits, extra=extra)[OBJECT[check_name]]


def passes(result):
    assert result.passed and result.points == result.max_points, (result.message, result.detail)


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_the_printed_solution_passes(name):
    passes(REGISTRY[name].func(solved(name, OBJECT[name])))


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_a_stub_is_not_attempted(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()
    assert_not_attempted(REGISTRY[name].func(stub))


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_every_check_has_hint_idea_forbid_and_minutes(name):
    spec = REGISTRY[name]
    assert spec.hint and spec.idea and spec.forbid and spec.minutes > 0
    assert "course_lib" in spec.forbid.names


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_learner_errors_and_wrong_types_are_one_line_verdicts(name):
    for bad, fragment in [(lambda *a, **k: 1 / 0, "ZeroDivisionError"), (lambda *a, **k: None, "return"),
                          (lambda *a, **k: "text", "str")]:
        r = REGISTRY[name].func(bad)
        assert not r.passed and fragment in r.message and "\n" not in r.message, r.message
    assert not REGISTRY[name].func(None).passed
    assert "expected a function" in REGISTRY[name].func(42).message


# ------------------------------------------------------------------ mha_to_gqa
def pool_with_a_loop(k_proj_weight, v_proj_weight, n_heads, n_kv_heads):
    """Another correct form: group by group, head by head, in float64."""
    n_rep, D = n_heads // n_kv_heads, k_proj_weight.size(0) // n_heads
    out = []
    for w in (k_proj_weight, v_proj_weight):
        groups = []
        for g in range(n_kv_heads):
            heads = [w[h * D:(h + 1) * D].double() for h in range(g * n_rep, (g + 1) * n_rep)]
            groups.append(sum(heads) / n_rep)
        out.append(torch.cat(groups).to(w.dtype))
    return tuple(out)


def pool_with_a_matrix(k_proj_weight, v_proj_weight, n_heads, n_kv_heads):
    """Another correct form: an averaging matrix (H_kv, H) applied with einsum."""
    n_rep = n_heads // n_kv_heads
    avg = torch.eye(n_kv_heads, dtype=k_proj_weight.dtype).repeat_interleave(n_rep, dim=1) / n_rep  # (H_kv, H)
    C = k_proj_weight.size(1)
    return [torch.einsum("gh,hdc->gdc", avg, w.view(n_heads, -1, C)).reshape(-1, C)
            for w in (k_proj_weight, v_proj_weight)]


@pytest.mark.parametrize("impl", [pool_with_a_loop, pool_with_a_matrix])
def test_mha_to_gqa_accepts_other_correct_forms(impl):
    passes(check_mha_to_gqa(impl))


def test_mha_to_gqa_reference_undoes_copying_gqa_heads_into_mha():
    """GQA -> MHA (each K/V head copied to its group, as lesson 04's as_mha does) -> mean-pool: the GQA
    weights come back exactly, and an MHA layer whose groups really are alike keeps its output."""
    torch.manual_seed(0)
    H, H_kv, D, C = 8, 2, 4, 16
    k_gqa, v_gqa = torch.randn(H_kv * D, C), torch.randn(H_kv * D, C)
    k_mha = k_gqa.view(H_kv, D, C).repeat_interleave(H // H_kv, dim=0).reshape(H * D, C)  # (H*D, C)
    v_mha = v_gqa.view(H_kv, D, C).repeat_interleave(H // H_kv, dim=0).reshape(H * D, C)
    k, v = solved("check_mha_to_gqa")(k_mha, v_mha, H, H_kv)
    torch.testing.assert_close(k, k_gqa)
    torch.testing.assert_close(v, v_gqa)
    q, x = torch.randn(1, H, 5, D), torch.randn(1, 5, C)
    kg, vg = (x @ k.T).view(1, 5, H_kv, D).transpose(1, 2), (x @ v.T).view(1, 5, H_kv, D).transpose(1, 2)
    km, vm = (x @ k_mha.T).view(1, 5, H, D).transpose(1, 2), (x @ v_mha.T).view(1, 5, H, D).transpose(1, 2)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, kg, vg, enable_gqa=True),
                               F.scaled_dot_product_attention(q, km, vm))
    torch.testing.assert_close(kh._pool(k_mha, H, H_kv), pool_with_a_loop(k_mha, v_mha, H, H_kv)[0])


MHA_BAD = {
    "rows_not_heads": [("        w = w.view(n_kv_heads, n_rep, -1, C)", "        w = w.view(-1, n_rep, C)")],
    "strided_groups": [("w.view(n_kv_heads, n_rep, -1, C)", "w.view(n_rep, n_kv_heads, -1, C)"),
                       ("w = w.mean(dim=1)", "w = w.mean(dim=0)")],
    "sum_not_mean": [("w = w.mean(dim=1)", "w = w.sum(dim=1)")],
    "first_head_only": [("w = w.mean(dim=1)", "w = w[:, 0]")],
    "mutates_input": [("        w = w.view(n_kv_heads", "        w.mul_(2.0)\n        w = w.view(n_kv_heads")],
}


@pytest.mark.parametrize("key", sorted(MHA_BAD))
def test_mha_to_gqa_diagnoses(key):
    assert_diagnosed(check_mha_to_gqa(obj("check_mha_to_gqa", *MHA_BAD[key])), key)


def test_mha_to_gqa_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_mha_to_gqa", MHA_BAD)


def test_mha_to_gqa_rejects_the_course_version_and_odd_returns():
    ns = learner("check_mha_to_gqa", extra="\nfrom course_lib.checks.kv_heads import _mha_to_gqa_reference\n"
                 "def mha_to_gqa(k_proj_weight, v_proj_weight, n_heads, n_kv_heads):\n"
                 "    return _mha_to_gqa_reference(k_proj_weight, v_proj_weight, n_heads, n_kv_heads)\n")
    assert_delegates(check_mha_to_gqa(ns["mha_to_gqa"]), "course_lib")
    r = check_mha_to_gqa(lambda k, v, H, H_kv: torch.cat(pool_with_a_loop(k, v, H, H_kv)))
    assert not r.passed and "pair" in r.message
    r = check_mha_to_gqa(lambda k, v, H, H_kv: (k, v))
    assert not r.passed and "shape" in r.message and r.misconception is None
    r = check_mha_to_gqa(lambda k, v, H, H_kv: tuple(t * float("nan") for t in pool_with_a_loop(k, v, H, H_kv)))
    assert not r.passed and "NaN" in r.message


# ------------------------------------------------------------------ kv_cache_bytes
def kv_bytes_other_form(config, seq_len, batch=1, bytes_per_value=2):
    """Another correct form: defaults spelled out, the product in another order, a float back as int."""
    heads = config["num_attention_heads"]
    kv_heads = config["num_key_value_heads"] if "num_key_value_heads" in config else heads
    head_dim = config["head_dim"] if config.get("head_dim") is not None else config["hidden_size"] / heads
    return int(bytes_per_value * batch * seq_len * config["num_hidden_layers"] * kv_heads * head_dim * 2)


def test_kv_cache_bytes_accepts_another_correct_form():
    passes(check_kv_cache_bytes(kv_bytes_other_form))


def test_kv_cache_bytes_reference_equals_course_lib_and_hugging_faces_cache():
    for name, config in kh.CONFIGS.items():
        if name in PUBLISHED_CONFIGS:
            assert kh._kv_variant(config, 3000, 2, 2) == PUBLISHED_CONFIGS[name].cache_bytes(3000, 2), name
    kv_cache_bytes = solved("check_kv_cache_bytes")
    for kw in ({}, {"head_dim": 12}, {"num_key_value_heads": 6}):  # GQA 6/2 of 8, wider heads, MHA
        model = hf_llama(**kw)
        ids = torch.randint(0, 50, (3, 11))
        with torch.no_grad():
            cache = model(ids, use_cache=True).past_key_values
        layers = getattr(cache, "layers", None)
        pairs = [(l.keys, l.values) for l in layers] if layers is not None else cache.to_legacy_cache()
        held = sum(t.nelement() * t.element_size() for pair in pairs for t in pair)
        assert kv_cache_bytes(model.config.to_dict(), 11, 3, 4) == held, kw


KV_BAD = {
    "no_factor_2": [("per_token = 2 * n_layers", "per_token = n_layers")],
    "query_heads": [('n_kv_heads = config.get("num_key_value_heads") or n_heads', "n_kv_heads = n_heads")],
    "head_dim_ignored": [('config.get("head_dim") or config["hidden_size"]', 'config["hidden_size"]')],
    "no_layers": [("2 * n_layers * n_kv_heads", "2 * n_kv_heads")],
}


@pytest.mark.parametrize("key", sorted(KV_BAD))
def test_kv_cache_bytes_diagnoses(key):
    assert_diagnosed(check_kv_cache_bytes(obj("check_kv_cache_bytes", *KV_BAD[key])), key)


def test_kv_cache_bytes_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_kv_cache_bytes", KV_BAD)


def test_kv_cache_bytes_rejects_course_lib_and_tensors():
    ns = learner("check_kv_cache_bytes", extra="\nfrom course_lib.kv_cache import kv_cache_bytes as theirs\n"
                 "def kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=2):\n"
                 "    H = config['num_attention_heads']\n"
                 "    return theirs(config['num_hidden_layers'], config.get('num_key_value_heads') or H,\n"
                 "                  config.get('head_dim') or config['hidden_size'] // H, seq_len, batch, bytes_per_value)\n")
    assert_delegates(check_kv_cache_bytes(ns["kv_cache_bytes"]), "course_lib")
    good = solved("check_kv_cache_bytes")
    r = check_kv_cache_bytes(lambda *a, **k: torch.tensor(good(*a, **k)))
    assert not r.passed and "Python number" in r.message
    r = check_kv_cache_bytes(lambda *a, **k: float("inf"))
    assert not r.passed and "finite" in r.message


# ------------------------------------------------------------------ max_batch
def max_batch_by_search(config, seq_len, memory_bytes, weight_bytes, bytes_per_value=2):
    """Another correct form: count up while the next sequence still fits (its own cache formula, inline)."""
    H = config["num_attention_heads"]
    per = (2 * config["num_hidden_layers"] * (config.get("num_key_value_heads") or H)
           * (config.get("head_dim") or config["hidden_size"] // H) * seq_len * bytes_per_value)
    batch = 0
    while weight_bytes + (batch + 1) * per <= memory_bytes:
        batch += 1
    return batch


def test_max_batch_accepts_another_correct_form_and_agrees_with_the_search():
    passes(check_max_batch(max_batch_by_search))
    ns = learner("check_max_batch")
    for config in kh.CONFIGS.values():
        for memory, weights in ((80 * kh.GIB, 14e9), (24 * kh.GIB, 16e9), (10 ** 9, 2 * 10 ** 9)):
            assert ns["max_batch"](config, 2048, memory, weights) == max_batch_by_search(config, 2048, memory, weights)


MAX_BAD = {
    "rounds_up": [("return int(free // per_sequence)", "return math.ceil(free / per_sequence)")],
    "weights_ignored": [("free = memory_bytes - weight_bytes", "free = memory_bytes")],
    "negative_when_full": [("    if free < per_sequence:\n        return 0  # not even one sequence fits (or not even "
                            "the weights)\n", "")],
    "exact_fit_excluded": [("return int(free // per_sequence)", "return int((free - 1) // per_sequence)")],
    "cache_bytes_wrong": [("per_token = 2 * n_layers", "per_token = n_layers")],
}


@pytest.mark.parametrize("key", sorted(MAX_BAD))
def test_max_batch_diagnoses(key):
    assert_diagnosed(check_max_batch(obj("check_max_batch", *MAX_BAD[key])), key)


def test_max_batch_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_max_batch", MAX_BAD)


def test_max_batch_rejects_course_lib():
    ns = learner("check_max_batch", extra="\nfrom course_lib.kv_cache import ModelShape\n"
                 "def max_batch(config, seq_len, memory_bytes, weight_bytes, bytes_per_value=2):\n"
                 "    s = ModelShape('m', config['num_hidden_layers'], config['hidden_size'], "
                 "config['num_attention_heads'], config.get('num_key_value_heads') or config['num_attention_heads'], "
                 "seq_len, head_dim=config.get('head_dim'))\n"
                 "    return max(0, int((memory_bytes - weight_bytes) // s.cache_bytes(seq_len, 1, bytes_per_value)))\n")
    assert_delegates(check_max_batch(ns["max_batch"]), "course_lib")


# ------------------------------------------------------------------ gqa_attention
def gqa_five_dims(q, k, v, mask=None):
    """Another correct form: 5-D broadcasting (k gets a size-1 group axis), float64 inside, torch.softmax."""
    B, H, T, D = q.shape
    H_kv = k.size(1)
    qg = q.double().view(B, H_kv, H // H_kv, T, D)  # (B, H_kv, n_rep, T, D)
    scores = qg @ k.double()[:, :, None].transpose(-2, -1) / math.sqrt(D)  # (B, H_kv, n_rep, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask.unsqueeze(-3), float("-inf"))
    w = torch.softmax(scores, dim=-1)
    return (w @ v.double()[:, :, None]).reshape(B, H, T, D).to(q.dtype)  # (B, H, T, D)


def gqa_einsum(q, k, v, mask=None):
    """Another correct form: einsum with named group axes."""
    B, H, T, D = q.shape
    H_kv = k.size(1)
    qg = q.reshape(B, H_kv, H // H_kv, T, D)
    scores = torch.einsum("bgrtd,bgsd->bgrts", qg, k) * D ** -0.5
    if mask is not None:
        scores = torch.where(mask[..., None, :, :], scores, torch.tensor(float("-inf"), dtype=scores.dtype))
    w = (scores - scores.amax(-1, keepdim=True)).exp()
    w = w / w.sum(-1, keepdim=True)
    return torch.einsum("bgrts,bgsd->bgrtd", w, v).reshape(B, H, T, D)


@pytest.mark.parametrize("impl", [gqa_five_dims, gqa_einsum])
def test_gqa_attention_accepts_other_correct_forms(impl):
    passes(check_gqa_attention(impl))


def test_gqa_reference_equals_pytorchs_gqa_attention():
    torch.manual_seed(3)
    q, k, v = torch.randn(2, 6, 4, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    mask = kh._causal(4, 7)
    torch.testing.assert_close(kh._gqa_reference(q, k, v, mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True))
    torch.testing.assert_close(solved("check_gqa_attention")(q, k, v, mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True))


def materialise_by_expand(q, k, v, mask=None):
    B, H, T, D = q.shape
    B, H_kv, S, D = k.shape
    k = k[:, :, None].expand(B, H_kv, H // H_kv, S, D).reshape(B, H, S, D)  # (B, H, S, D): a copy
    v = v[:, :, None].expand(B, H_kv, H // H_kv, S, D).reshape(B, H, S, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, -1) @ v


def materialise_by_indexing(q, k, v, mask=None):
    H, H_kv = q.size(1), k.size(1)
    heads = torch.arange(H) // (H // H_kv)  # (H,): the K/V head of each query head
    scores = q @ k[:, heads].transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, -1) @ v[:, heads]


GQA_BAD = {
    "strided_groups": [("q = q.reshape(B, H_kv, n_rep * T, D)",
                        "q = q.reshape(B, n_rep, H_kv, T, D).transpose(1, 2).reshape(B, H_kv, n_rep * T, D)"),
                       ("return out.view(B, H, T, D)",
                        "return out.view(B, H_kv, n_rep, T, D).transpose(1, 2).reshape(B, H, T, D)")],
    "materialises": [],  # the functions above
    "mutates_input": [("    q = q.reshape(B, H_kv, n_rep * T, D)", "    q /= math.sqrt(D)\n    q = q.reshape(B, H_kv, n_rep * T, D)"),
                      ("scores = q @ k.transpose(-2, -1) / math.sqrt(D)", "scores = q @ k.transpose(-2, -1)")],
}


@pytest.mark.parametrize("key", sorted(set(GQA_BAD) - {"materialises"}))
def test_gqa_attention_diagnoses(key):
    assert_diagnosed(check_gqa_attention(obj("check_gqa_attention", *GQA_BAD[key])), key)


def test_gqa_attention_diagnoses_copies_of_k_and_v():
    for impl in (materialise_by_expand, materialise_by_indexing):
        assert_diagnosed(check_gqa_attention(impl), "materialises")
    ns = {"__name__": "learner_repeat_kv", "repeat_kv": solved("check_repeat_kv")}
    exec("import math\nimport torch\n\ndef gqa_attention(q, k, v, mask=None):\n"  # noqa: S102 - our own text
         "    n_rep = q.size(1) // k.size(1)\n    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)\n"
         "    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))\n"
         "    if mask is not None:\n        scores = scores.masked_fill(~mask, float('-inf'))\n"
         "    return torch.softmax(scores, -1) @ v\n", ns)
    assert_diagnosed(check_gqa_attention(ns["gqa_attention"]), "materialises")


def test_gqa_attention_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_gqa_attention", GQA_BAD)


def test_gqa_attention_rejects_delegation():
    assert_delegates(check_gqa_attention(lambda q, k, v, mask=None: F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, enable_gqa=True)), "torch.nn.functional.scaled_dot_product_attention")

    def with_repeat_interleave(q, k, v, mask=None):
        n_rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, -1) @ v
    assert_delegates(check_gqa_attention(with_repeat_interleave), "repeat_interleave")
    ns = learner("check_gqa_attention", extra="\nfrom course_lib.attention import attend\n"
                 "def gqa_attention(q, k, v, mask=None):\n    return attend(q, k, v, mask)\n")
    assert_delegates(check_gqa_attention(ns["gqa_attention"]), "course_lib")


def test_gqa_attention_wrong_shape_and_dtype_are_explained():
    r = check_gqa_attention(lambda q, k, v, mask=None: gqa_einsum(q, k, v, mask).transpose(1, 2))
    assert not r.passed and "shape" in r.message
    r = check_gqa_attention(lambda q, k, v, mask=None: gqa_einsum(q, k, v, mask).double())
    assert not r.passed and "dtype" in r.message
