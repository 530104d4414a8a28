"""The from-scratch track's checks for parts 1-3 (tensors, attention, model), both ways: they accept the
printed solution and correct code written differently (einsum, float64 inside, the other RoPE pairing,
torch's own Linear inside attention), and reject the stub, delegation, bad output and each named
misconception. A wrong version is the learner's own code with one thing changed (a text edit of the
solution, or a small class written here), never the grader's re-creation. The references are checked
against Hugging Face's LlamaForCausalLM / MistralForCausalLM with copied weights."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.checks import REGISTRY
from course_lib.checks import track_model as tm
from course_lib.checks import track_tensors as tt
from course_lib.checks.track_model import (check_attention_rope_gqa, check_block, check_llama, check_swiglu)
from course_lib.checks.track_tensors import (check_cross_entropy, check_embedding, check_kv_cache, check_linear,
                                             check_rope)

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted

pytestmark = pytest.mark.usefixtures("quiet_checks")

OBJECT = {"check_cross_entropy": "cross_entropy", "check_linear": "Linear", "check_embedding": "Embedding",
          "check_rope": "apply_rope", "check_kv_cache": "KVCache", "check_attention_rope_gqa": "Attention",
          "check_swiglu": "SwiGLU", "check_block": "Block", "check_llama": "LLaMA"}


def learner(check_name, *edits, extra=""):
    """The printed solution of `check_name` with each (old, new) text edit applied (each must occur
    exactly once), plus `extra` code, run as a learner's notebook: returns its namespace."""
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
    passes(REGISTRY[name].func(obj(name)))


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_a_stub_is_not_attempted(name):
    if isinstance(obj(name), type):
        stub = type(OBJECT[name], (nn.Module,) if OBJECT[name] != "KVCache" else (),
                    {"__init__": lambda self, *a, **k: (_ for _ in ()).throw(NotImplementedError())})
    else:
        def stub(*args, **kwargs):
            raise NotImplementedError()
    assert_not_attempted(REGISTRY[name].func(stub))


@pytest.mark.parametrize("name", sorted(OBJECT))
def test_every_check_has_hint_idea_forbid_and_minutes(name):
    spec = REGISTRY[name]
    assert spec.hint and spec.idea and spec.forbid and spec.minutes > 0
    assert "course_lib" in spec.forbid.names


# ------------------------------------------------------------------ cross-entropy
def ce_float64_inside(logits, targets, ignore_index=-100):
    z = logits.double().flatten(0, -2)  # (N, V)
    t = targets.flatten()
    keep = t != ignore_index
    z, t = z[keep], t[keep]
    lse = z.max(-1).values + (z - z.max(-1, keepdim=True).values).exp().sum(-1).log()
    return (lse - z[torch.arange(len(t)), t]).mean().to(logits.dtype)


def ce_one_hot(logits, targets, ignore_index=-100):
    V = logits.shape[-1]
    z, t = logits.reshape(-1, V), targets.reshape(-1)
    mask = (t != ignore_index).to(z.dtype)
    one_hot = F.one_hot(t.clamp(min=0), V).to(z.dtype)  # an ignored target becomes class 0, masked below
    m = z.max(dim=1, keepdim=True).values
    log_probs = z - m - torch.log(torch.exp(z - m).sum(1, keepdim=True))
    return -(torch.einsum("nv,nv->n", log_probs, one_hot) * mask).sum() / mask.sum()


@pytest.mark.parametrize("impl", [ce_float64_inside, ce_one_hot])
def test_cross_entropy_accepts_other_correct_forms(impl):
    passes(check_cross_entropy(impl))


CE_BAD = {
    "unstable": [("    m = logits.amax(dim=-1, keepdim=True)  # (N, 1)\n", "    m = torch.zeros_like(logits[:, :1])\n")],
    "log_of_softmax": [("    losses = log_sum_exp - target_logit  # (N,): -log p(target) = log sum exp - z_target\n",
                        "    p = torch.exp(logits - m) / torch.exp(logits - m).sum(-1, keepdim=True)\n"
                        "    losses = -torch.log(p.gather(-1, safe_targets[:, None]).squeeze(-1))\n")],
    "max_not_added_back": [("m.squeeze(-1) + torch.log(", "torch.log(")],
    "sum_not_mean": [("    return losses.sum() / keep.sum()", "    return losses.sum()")],
    "mean_counts_ignored": [("    return losses.sum() / keep.sum()", "    return losses.mean()")],
    "sign_flipped": [("    losses = log_sum_exp - target_logit", "    losses = target_logit - log_sum_exp")],
    "mutates_input": [("    logits = logits.reshape(-1, V)  # (N, V): every position is one row\n",
                       "    logits = logits.reshape(-1, V)\n    logits -= 0.0 * logits + 1.0\n")],
}


@pytest.mark.parametrize("key", sorted(CE_BAD))
def test_cross_entropy_diagnoses(key):
    assert_diagnosed(check_cross_entropy(obj("check_cross_entropy", *CE_BAD[key])), key)


def test_cross_entropy_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_cross_entropy", CE_BAD)


def test_cross_entropy_rejects_delegation_through_an_alias():
    lse = learner("check_cross_entropy", extra="\nlse_builtin = torch.logsumexp\n"
                  "def cross_entropy(logits, targets, ignore_index=-100):\n"
                  "    z, t = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)\n"
                  "    keep = t != ignore_index\n"
                  "    return (lse_builtin(z[keep], -1) - z[keep].gather(-1, t[keep][:, None]).squeeze(-1)).mean()\n")
    assert_delegates(check_cross_entropy(lse["cross_entropy"]), "torch.logsumexp")
    assert_delegates(check_cross_entropy(lambda z, t, ignore_index=-100: F.cross_entropy(
        z.reshape(-1, z.size(-1)), t.reshape(-1), ignore_index=ignore_index)), "torch.nn.functional.cross_entropy")


def test_cross_entropy_without_gradient_and_bad_outputs_get_one_line_verdicts():
    r = check_cross_entropy(obj("check_cross_entropy", ("    return losses.sum() / keep.sum()",
                                                        "    return (losses.sum() / keep.sum()).detach()")))
    assert not r.passed and "no gradient" in r.message
    r = check_cross_entropy(obj("check_cross_entropy", ("    return losses.sum() / keep.sum()",
                                                        "    return (losses.sum() / keep.sum()).item()")))
    assert not r.passed and "torch.Tensor" in r.message and "\n" not in r.message
    r = check_cross_entropy(lambda z, t, ignore_index=-100: torch.full((), float("nan")))
    assert not r.passed and "NaN" in r.message
    r = check_cross_entropy(lambda z, t, ignore_index=-100: 1 / 0)
    assert not r.passed and "ZeroDivisionError" in r.message


# ------------------------------------------------------------------ Linear and Embedding
class LinearWithKaimingBoundWrittenOut(nn.Module):
    """Another correct Linear: the bound as nn.Linear derives it, rand scaled by hand, zero bias (GPT-2)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        gain = math.sqrt(2.0 / (1 + 5))  # kaiming_uniform_ with a = sqrt(5)
        bound = gain * math.sqrt(3.0 / in_features)  # = 1 / sqrt(in_features)
        self.weight = nn.Parameter((torch.rand(out_features, in_features) * 2 - 1) * bound)
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_features)) if bias else None)

    def forward(self, x):
        out = torch.einsum("...i,oi->...o", x.double(), self.weight.double()).to(x.dtype)
        return out if self.bias is None else out + self.bias


def test_linear_accepts_other_correct_forms():
    passes(check_linear(LinearWithKaimingBoundWrittenOut))


LINEAR_BAD = {
    "transposed_weight": [("torch.empty(out_features, in_features).uniform_", "torch.empty(in_features, out_features).uniform_"),
                          ("y = x @ self.weight.T", "y = x @ self.weight")],
    "plain_tensor": [("self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))",
                      "self.weight = torch.empty(out_features, in_features).uniform_(-bound, bound)")],
    "bias_flag_ignored": [("        if bias:\n", "        if True:\n"), ("        else:\n            self.bias = None\n", "")],
    "zero_init": [("torch.empty(out_features, in_features).uniform_(-bound, bound)",
                   "torch.zeros(out_features, in_features)")],
    "not_centred": [("torch.empty(out_features, in_features).uniform_(-bound, bound)",
                     "torch.rand(out_features, in_features) * bound")],
    "randn_init": [("torch.empty(out_features, in_features).uniform_(-bound, bound)",
                    "torch.randn(out_features, in_features)")],
    "bound_from_out_features": [("bound = 1.0 / math.sqrt(in_features)", "bound = 1.0 / math.sqrt(out_features)")],
    "bias_not_added": [("            y = y + self.bias", "            pass")],
    "mutates_input": [("        y = x @ self.weight.T", "        x.mul_(1.0).add_(0.5)\n        y = x @ self.weight.T")],
}


@pytest.mark.parametrize("key", sorted(LINEAR_BAD))
def test_linear_diagnoses(key):
    assert_diagnosed(check_linear(obj("check_linear", *LINEAR_BAD[key])), key)


def test_linear_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_linear", LINEAR_BAD)


def test_linear_rejects_delegation():
    class Linear(nn.Linear):  # a learner who subclasses torch's layer
        def __init__(self, in_features, out_features, bias=True):
            super().__init__(in_features, out_features, bias)
    assert_delegates(check_linear(Linear), "torch.nn.Linear")
    wrapped = obj("check_linear", ("y = x @ self.weight.T", "y = F.linear(x, self.weight)"),
                  extra="\nimport torch.nn.functional as F\n")
    assert_delegates(check_linear(wrapped), "torch.nn.functional.linear")


def test_linear_bad_input():
    r = check_linear(lambda i, o, b=True: None)
    assert not r.passed and "class" in r.message
    r = check_linear(obj("check_linear", ("        return y", "        return None")))
    assert not r.passed and "forget a `return`" in r.message


EMB_BAD = {
    "transposed_weight": [("torch.randn(num_embeddings, embedding_dim)", "torch.randn(embedding_dim, num_embeddings)"),
                          ("self.weight[ids]", "self.weight.T[ids]")],
    "plain_tensor": [("nn.Parameter(torch.randn(num_embeddings, embedding_dim))",
                      "torch.randn(num_embeddings, embedding_dim)")],
    "uniform_init": [("torch.randn(num_embeddings, embedding_dim)", "torch.rand(num_embeddings, embedding_dim)")],
    "scaled_init": [("torch.randn(num_embeddings, embedding_dim)", "torch.randn(num_embeddings, embedding_dim) * 0.02")],
}


@pytest.mark.parametrize("key", sorted(EMB_BAD))
def test_embedding_diagnoses(key):
    assert_diagnosed(check_embedding(obj("check_embedding", *EMB_BAD[key])), key)


def test_embedding_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_embedding", EMB_BAD)


def test_embedding_accepts_one_hot_matmul_and_rejects_delegation():
    passes(check_embedding(obj("check_embedding", ("return self.weight[ids]",
                                                   "return F.one_hot(ids, self.weight.size(0)).to(self.weight.dtype) "
                                                   "@ self.weight"), extra="\nimport torch.nn.functional as F\n")))
    assert_delegates(check_embedding(obj("check_embedding", ("return self.weight[ids]",
                                                             "return F.embedding(ids, self.weight)"),
                                         extra="\nimport torch.nn.functional as F\n")),
                     "torch.nn.functional.embedding")
    r = check_embedding(obj("check_embedding", ("return self.weight[ids]", "return self.weight[ids.flatten()]")))
    assert not r.passed and "shape" in r.message


# ------------------------------------------------------------------ RoPE
ROPE_ADJACENT = [("    angles = torch.cat([angles, angles], dim=-1)  # (T, D): feature j and j + D/2 share an angle\n",
                  "    angles = angles.repeat_interleave(2, dim=-1)  # (T, D): pairs (2i, 2i + 1)\n"),
                 ("    x1, x2 = x[..., : D // 2], x[..., D // 2:]  # (B, H, T, D/2) each: the two members of every pair\n"
                  "    rotated = torch.cat([-x2, x1], dim=-1)  # (B, H, T, D): each pair turned by 90 degrees\n",
                  "    x1, x2 = x[..., 0::2], x[..., 1::2]\n"
                  "    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)\n")]


def rope_complex(x, positions, base=10000.0):
    """Meta's original form: adjacent pairs as complex numbers, times e^(i m theta)."""
    D = x.size(-1)
    theta = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    rot = torch.polar(torch.ones(len(positions), D // 2, dtype=torch.float64), positions.double()[:, None] * theta)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], D // 2, 2).contiguous())
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)


def test_rope_accepts_both_pairings():
    passes(check_rope(obj("check_rope", *ROPE_ADJACENT)))
    passes(check_rope(rope_complex))


ROPE_BAD = {
    "mixed_layout": [ROPE_ADJACENT[0]],
    "ignores_positions": [("positions.to(x.device, dtype)[:, None]", "torch.arange(x.size(-2), dtype=dtype)[:, None]")],
    "negative_rotation": [("torch.cat([-x2, x1], dim=-1)", "torch.cat([x2, -x1], dim=-1)")],
    "exponent_i_over_d": [("torch.arange(0, D, 2, dtype=dtype, device=x.device) / D",
                           "torch.arange(0, D // 2, dtype=dtype, device=x.device) / D")],
    "ignores_base": [("    inv_freq = base ** (", "    inv_freq = 10000.0 ** (")],
    "mutates_input": [("    return x * cos + rotated * sin", "    x.mul_(cos)\n    return x + rotated * sin")],
}


@pytest.mark.parametrize("key", sorted(ROPE_BAD))
def test_rope_diagnoses(key):
    assert_diagnosed(check_rope(obj("check_rope", *ROPE_BAD[key])), key)


def test_rope_diagnoses_with_the_adjacent_pairing_too():
    assert_diagnosed(check_rope(obj("check_rope", *ROPE_ADJACENT, ("[-x2, x1]", "[x2, -x1]"))), "negative_rotation")


def test_rope_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_rope", ROPE_BAD)


def test_rope_rejects_delegation_and_bad_output():
    from course_lib.positional import apply_rope as library_rope
    assert_delegates(check_rope(lambda x, p, base=10000.0: library_rope(x, p, base, layout="half")), "course_lib")
    r = check_rope(lambda x, p, base=10000.0: x[..., :-1])
    assert not r.passed and "shape" in r.message


# ------------------------------------------------------------------ KV cache
class PreallocatedCache:
    """Another correct cache: a buffer that grows by doubling, returning copies."""

    def __init__(self, window=None):
        self.window, self.pos, self.buf_k, self.buf_v, self.n = window, 0, None, None, 0

    def update(self, k, v):
        if self.buf_k is None:
            self.buf_k = k.new_zeros(*k.shape[:2], 2, k.shape[3])
            self.buf_v = v.new_zeros(*v.shape[:2], 2, v.shape[3])
        while self.n + k.shape[2] > self.buf_k.shape[2]:
            self.buf_k = torch.cat([self.buf_k, torch.zeros_like(self.buf_k)], 2)
            self.buf_v = torch.cat([self.buf_v, torch.zeros_like(self.buf_v)], 2)
        self.buf_k[:, :, self.n:self.n + k.shape[2]] = k
        self.buf_v[:, :, self.n:self.n + k.shape[2]] = v
        self.n += k.shape[2]
        self.pos += k.shape[2]
        k_all, v_all = self.buf_k[:, :, :self.n].clone(), self.buf_v[:, :, :self.n].clone()
        if self.window is not None and self.n > self.window:
            self.buf_k = self.buf_k[:, :, self.n - self.window:self.n].clone()
            self.buf_v = self.buf_v[:, :, self.n - self.window:self.n].clone()
            self.n = self.window
        return k_all, v_all


def test_kv_cache_accepts_a_preallocated_buffer():
    passes(check_kv_cache(PreallocatedCache))


class SharedListCache:
    keys, values = [], []  # class attributes: every cache shares them

    def __init__(self, window=None):
        self.window, self.pos = window, 0

    def update(self, k, v):
        self.keys.append(k)
        self.values.append(v)
        self.pos += k.size(2)
        return torch.cat(self.keys, 2), torch.cat(self.values, 2)


KV_BAD = {
    "returns_only_new": [("        return k, v  # everything", "        return k[:, :, -T_new:], v[:, :, -T_new:]  #")],
    "new_before_stored": [("torch.cat([self.k, k], dim=2)", "torch.cat([k, self.k], dim=2)"),
                          ("torch.cat([self.v, v], dim=2)", "torch.cat([v, self.v], dim=2)")],
    "pos_counts_updates": [("        self.pos += T_new", "        self.pos += 1")],
    "window_ignored": [("        if self.window is None:\n", "        if True:\n")],
    "trims_before_returning": [("            self.k, self.v = k[:, :, -self.window:], v[:, :, -self.window:]",
                                "            k, v = k[:, :, -self.window:], v[:, :, -self.window:]\n"
                                "            self.k, self.v = k, v")],
}


@pytest.mark.parametrize("key", sorted(KV_BAD))
def test_kv_cache_diagnoses(key):
    assert_diagnosed(check_kv_cache(obj("check_kv_cache", *KV_BAD[key])), key)


def test_kv_cache_diagnoses_shared_state():
    assert_diagnosed(check_kv_cache(SharedListCache), "shared_state")


def test_kv_cache_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_kv_cache", [*KV_BAD, "shared_state"])


def test_kv_cache_bad_input_and_delegation():
    from course_lib.kv_cache import KVCache as LibraryCache
    r = check_kv_cache(obj("check_kv_cache", ("        return k, v  # everything", "        return k  #")))
    assert not r.passed and "tuple" in r.message
    r = check_kv_cache(obj("check_kv_cache", ("torch.cat([self.k, k], dim=2)", "torch.cat([self.k, k], dim=1)")))
    assert not r.passed and r.message.startswith("your code raised RuntimeError")
    r = check_kv_cache(obj("check_kv_cache", ("        self.pos = 0 ", "        self.position = 0 ")))
    assert not r.passed and "pos" in r.message

    class KVCache(LibraryCache):
        @property
        def pos(self):
            return self.seq_len
    assert_delegates(check_kv_cache(KVCache), "course_lib")


# ------------------------------------------------------------------ attention
ATTENTION_ADJACENT = ROPE_ADJACENT


def test_attention_accepts_the_adjacent_pairing_nn_linear_and_a_boolean_mask_helper():
    passes(check_attention_rope_gqa(obj("check_attention_rope_gqa", *ATTENTION_ADJACENT)))
    passes(check_attention_rope_gqa(obj("check_attention_rope_gqa", *[
        (f"self.{p}_proj = Linear(", f"self.{p}_proj = nn.Linear(") for p in "qkvo"])))
    passes(check_attention_rope_gqa(obj("check_attention_rope_gqa", (
        "        scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T_k)\n",
        "        scores = torch.einsum('bhtd,bhsd->bhts', q.double(), k.double()).float() / math.sqrt(D)\n"
        "        scores = scores.to(q.dtype)\n"))))


ATT_BAD = {
    "no_scale": [(" / math.sqrt(D)  # (B, H, T, T_k)", "  # (B, H, T, T_k)")],
    "scale_by_d_model": [(" / math.sqrt(D)  # (B, H, T, T_k)", " / math.sqrt(C)")],
    "no_causal_mask": [("        allowed = distance >= 0  # causal: no key from the future",
                        "        allowed = distance > -1000")],
    "mask_without_offset": [("        allowed = distance >= 0  # causal: no key from the future",
                             "        allowed = torch.ones(T, T_k, dtype=torch.bool).tril()")],
    "positions_ignore_cache": [("apply_rope(q, positions, self.rope_base)", "apply_rope(q, torch.arange(T), self.rope_base)"),
                               ("apply_rope(k, positions, self.rope_base)", "apply_rope(k, torch.arange(T), self.rope_base)")],
    "rope_on_v": [("        k = apply_rope(k, positions, self.rope_base)\n",
                   "        k = apply_rope(k, positions, self.rope_base)\n"
                   "        v = apply_rope(v, positions, self.rope_base)\n")],
    "gqa_tiled": [("k = k.repeat_interleave(H // H_kv, dim=1)", "k = k.repeat(1, H // H_kv, 1, 1)"),
                  ("v = v.repeat_interleave(H // H_kv, dim=1)", "v = v.repeat(1, H // H_kv, 1, 1)")],
    "heads_without_transpose": [("self.q_proj(x).view(B, T, H, D).transpose(1, 2)", "self.q_proj(x).view(B, H, T, D)"),
                                ("self.k_proj(x).view(B, T, H_kv, D).transpose(1, 2)",
                                 "self.k_proj(x).view(B, H_kv, T, D)"),
                                ("self.v_proj(x).view(B, T, H_kv, D).transpose(1, 2)",
                                 "self.v_proj(x).view(B, H_kv, T, D)"),
                                ("out.transpose(1, 2).reshape(B, T, H * D)", "out.reshape(B, T, H * D)")],
    "softmax_wrong_axis": [("weights = softmax(scores, dim=-1)", "weights = softmax(scores, dim=-2)")],
    "window_ignored": [("            allowed = allowed & (distance < self.window)", "            pass")],
    "window_off_by_one": [("(distance < self.window)", "(distance <= self.window)")],
    "ignores_base": [("apply_rope(q, positions, self.rope_base)", "apply_rope(q, positions)"),
                     ("apply_rope(k, positions, self.rope_base)", "apply_rope(k, positions)")],
}


@pytest.mark.parametrize("key", sorted(ATT_BAD))
def test_attention_diagnoses(key):
    assert_diagnosed(check_attention_rope_gqa(obj("check_attention_rope_gqa", *ATT_BAD[key])), key)


def test_attention_diagnoses_with_the_adjacent_pairing_too():
    assert_diagnosed(check_attention_rope_gqa(obj("check_attention_rope_gqa", *ATTENTION_ADJACENT, *ATT_BAD["gqa_tiled"])),
                     "gqa_tiled")


def test_attention_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_attention_rope_gqa", ATT_BAD)


def test_attention_rejects_sdpa_and_reports_bad_output():
    sdpa = obj("check_attention_rope_gqa", (
        "        scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T_k)\n",
        "        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None)\n"
        "        scores = q @ k.transpose(-2, -1) / math.sqrt(D)\n"), extra="\nimport torch.nn.functional as F\n")
    assert_delegates(check_attention_rope_gqa(sdpa), "torch.nn.functional.scaled_dot_product_attention")
    r = check_attention_rope_gqa(obj("check_attention_rope_gqa", ("        return self.o_proj(out)  # (B, T, C)",
                                                                  "        return self.o_proj(out)[:, -1]")))
    assert not r.passed and "shape" in r.message and "\n" not in r.message
    r = check_attention_rope_gqa(obj("check_attention_rope_gqa", ("self.q_proj = Linear(d_model, n_heads * self.head_dim, bias=False)",
                                                                  "self.q_proj = Linear(d_model, n_heads * self.head_dim)")))
    assert not r.passed and "bias" in r.message


def test_the_graders_functional_attention_equals_course_lib_cached_and_windowed():
    for _, cfg in tm._attention_configs():
        from course_lib.positional_attention import PositionalAttention
        r = PositionalAttention(cfg["d_model"], cfg["n_heads"], n_kv_heads=cfg["n_kv_heads"], bias=False)
        state = tm._randomise({k: v.to(cfg.get("dtype", torch.float32)) for k, v in r.state_dict().items()}, 1)
        x = tm._inputs(cfg, 3)
        want = tm.reference_attention(cfg, state, x)
        for _, chunks, cached in tm._scenarios(cfg["T"], cfg["window"]):
            for layout in ("half", "adjacent"):
                got = tm.attention_run(tm._state_as(state, cfg["d_model"] // cfg["n_heads"], layout), x, chunks, cfg,
                                       layout, None, cached)
                torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ SwiGLU
SWIGLU_BAD = {
    "gate_up_swapped": [("        h = gate * torch.sigmoid(gate) * self.up_proj(x)",
                         "        up = self.up_proj(x)\n        h = up * torch.sigmoid(up) * gate")],
    "silu_on_product": [("        h = gate * torch.sigmoid(gate) * self.up_proj(x)",
                         "        h = gate * self.up_proj(x)\n        h = h * torch.sigmoid(h)")],
    "silu_on_output": [("        h = gate * torch.sigmoid(gate) * self.up_proj(x)", "        h = gate * self.up_proj(x)"),
                       ("        return self.down_proj(h)", "        y = self.down_proj(h)\n        return y * torch.sigmoid(y)")],
    "sigmoid_gate": [("gate * torch.sigmoid(gate) * self.up_proj(x)", "torch.sigmoid(gate) * self.up_proj(x)")],
    "no_activation": [("gate * torch.sigmoid(gate) * self.up_proj(x)", "gate * self.up_proj(x)")],
}


@pytest.mark.parametrize("key", sorted(SWIGLU_BAD))
def test_swiglu_diagnoses(key):
    assert_diagnosed(check_swiglu(obj("check_swiglu", *SWIGLU_BAD[key])), key)


def test_swiglu_names_exactly_the_tested_misconceptions_and_accepts_nn_linear_and_f_silu():
    assert_all_tested("check_swiglu", SWIGLU_BAD)
    passes(check_swiglu(obj("check_swiglu", *[(f"self.{p}_proj = Linear(", f"self.{p}_proj = nn.Linear(")
                                              for p in ("gate", "up", "down")],
                            ("gate * torch.sigmoid(gate)", "F.silu(gate)"), extra="\nimport torch.nn.functional as F\n")))


def test_swiglu_rejects_course_lib():
    from course_lib.ffn import GatedFeedForward

    class SwiGLU(GatedFeedForward):
        def __init__(self, d_model, d_ff):
            super().__init__(d_model, d_ff, "silu", bias=False)
    assert_delegates(check_swiglu(SwiGLU), "course_lib")


# ------------------------------------------------------------------ block
BLOCK_BAD = {
    "no_residual": [("        x = x + self.attn(self.attn_norm(x), cache)", "        x = self.attn(self.attn_norm(x), cache)"),
                    ("        x = x + self.ffn(self.ffn_norm(x))", "        x = self.ffn(self.ffn_norm(x))")],
    "norm_after_add": [("        x = x + self.attn(self.attn_norm(x), cache)",
                        "        x = self.attn_norm(x + self.attn(x, cache))"),
                       ("        x = x + self.ffn(self.ffn_norm(x))", "        x = self.ffn_norm(x + self.ffn(x))")],
    "residual_from_normed": [("        x = x + self.attn(self.attn_norm(x), cache)",
                              "        x = self.attn_norm(x)\n        x = x + self.attn(x, cache)"),
                             ("        x = x + self.ffn(self.ffn_norm(x))",
                              "        x = self.ffn_norm(x)\n        x = x + self.ffn(x)")],
    "parallel": [("        x = x + self.attn(self.attn_norm(x), cache)  # (B, T, C): the residual stream is never normalised\n"
                  "        x = x + self.ffn(self.ffn_norm(x))  # (B, T, C)\n",
                  "        x = x + self.attn(self.attn_norm(x), cache) + self.ffn(self.ffn_norm(x))\n")],
    "shared_norm": [("        x = x + self.ffn(self.ffn_norm(x))", "        x = x + self.ffn(self.attn_norm(x))")],
    "cache_not_passed": [("        x = x + self.attn(self.attn_norm(x), cache)", "        x = x + self.attn(self.attn_norm(x))")],
}


@pytest.mark.parametrize("key", sorted(BLOCK_BAD))
def test_block_diagnoses(key):
    assert_diagnosed(check_block(obj("check_block", *BLOCK_BAD[key])), key)


def test_block_names_exactly_the_tested_misconceptions_and_accepts_the_adjacent_pairing():
    assert_all_tested("check_block", BLOCK_BAD)
    passes(check_block(obj("check_block", *ROPE_ADJACENT)))


def test_block_rejects_torch_rms_norm():
    r = check_block(obj("check_block", ("        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)",
                                        "        h = F.rms_norm(h, (h.size(-1),), eps=self.eps)"),
                        extra="\nimport torch.nn.functional as F\n"))
    assert_delegates(r, "torch.nn.functional.rms_norm")


# ------------------------------------------------------------------ the whole model
LLAMA_BAD = {
    "head_not_tied": [("        self.lm_head.weight = self.tok_emb.weight  # tied", "        # untied")],
    "scaled_embedding": [("        x = self.tok_emb(ids)  #", "        x = self.tok_emb(ids) * math.sqrt(self.tok_emb.weight.size(1))  #")],
    "no_final_norm": [("        return self.lm_head(self.final_norm(x))", "        return self.lm_head(x)")],
    "returns_probabilities": [("        return self.lm_head(self.final_norm(x))",
                               "        return softmax(self.lm_head(self.final_norm(x)), dim=-1)")],
    "one_cache_for_all_blocks": [("None if caches is None else caches[i])", "None if caches is None else caches[0])")],
    "caches_ignored": [("            x = block(x, None if caches is None else caches[i])", "            x = block(x)")],
}


@pytest.mark.parametrize("key", sorted(LLAMA_BAD))
def test_llama_diagnoses(key):
    assert_diagnosed(check_llama(obj("check_llama", *LLAMA_BAD[key])), key)


def test_llama_names_exactly_the_tested_misconceptions():
    assert_all_tested("check_llama", LLAMA_BAD)


def test_llama_accepts_the_adjacent_pairing_and_nn_modules_for_the_tables():
    passes(check_llama(obj("check_llama", *ROPE_ADJACENT)))
    passes(check_llama(obj("check_llama", ("self.tok_emb = Embedding(vocab_size, d_model)",
                                           "self.tok_emb = nn.Embedding(vocab_size, d_model)"),
                           ("self.lm_head = Linear(d_model, vocab_size, bias=False)",
                            "self.lm_head = nn.Linear(d_model, vocab_size, bias=False)"))))


def test_llama_bad_names_and_delegation():
    r = check_llama(obj("check_llama", ("self.final_norm = RMSNorm(d_model, eps)", "self.norm = RMSNorm(d_model, eps)"),
                        ("self.lm_head(self.final_norm(x))", "self.lm_head(self.norm(x))")))
    assert not r.passed and "final_norm" in r.message
    r = check_llama(obj("check_llama", ("self.attn_norm = RMSNorm(d_model, eps)", "self.input_layernorm = RMSNorm(d_model, eps)"),
                        ("self.attn(self.attn_norm(x), cache)", "self.attn(self.input_layernorm(x), cache)")))
    assert not r.passed and "attn_norm" in r.message
    from course_lib.models.llama import Llama

    class LLaMA(nn.Module):
        def __init__(self, *args):
            super().__init__()
            raise NotImplementedError
    assert_not_attempted(check_llama(LLaMA))
    assert_delegates(check_llama(obj("check_llama", extra="\nfrom course_lib.models.llama import Llama\n"
                                     "LLaMA = type('LLaMA', (LLaMA,), {'forward': lambda self, ids, caches=None: "
                                     "Llama.forward(self, ids).logits})\n")), "course_lib")
    del Llama


# ------------------------------------------------------------------ independent references: Hugging Face
def _hf_state(ours: dict, n_layers: int) -> dict:
    """course_lib/track names -> Hugging Face LlamaForCausalLM names, written out here."""
    names = {"tok_emb.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
             "lm_head.weight": "lm_head.weight"}
    for i in range(n_layers):
        for a, b in (("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")):
            names[f"blocks.{i}.{a}.weight"] = f"model.layers.{i}.{b}.weight"
        for p in "qkvo":
            names[f"blocks.{i}.attn.{p}_proj.weight"] = f"model.layers.{i}.self_attn.{p}_proj.weight"
        for p in ("gate", "up", "down"):
            names[f"blocks.{i}.ffn.{p}_proj.weight"] = f"model.layers.{i}.mlp.{p}_proj.weight"
    return {names[k]: v for k, v in ours.items()}


@pytest.mark.parametrize("config", [0, 1])
def test_the_solution_and_the_checks_reference_equal_hugging_face(config):
    """Logits of Hugging Face's LlamaForCausalLM (MistralForCausalLM for the sliding window) with the
    check's weights equal the check's course_lib reference and the printed solution's LLaMA, whose
    caches (the grader's) give the same logits token by token."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM
    _, cfg = tm._model_configs()[config]
    ours = tm._randomise(tm.Llama(tm._llama_config(cfg, cfg["n_layers"], cfg["vocab_size"])).state_dict(), 5)
    ours["lm_head.weight"] = ours["tok_emb.weight"]
    kw = dict(vocab_size=cfg["vocab_size"], hidden_size=cfg["d_model"], intermediate_size=cfg["d_ff"],
              num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
              num_key_value_heads=cfg["n_kv_heads"], rms_norm_eps=cfg["eps"], rope_theta=cfg["rope_base"],
              tie_word_embeddings=True, max_position_embeddings=64, attn_implementation="eager")
    if cfg["window"] is None:
        hf = LlamaForCausalLM(LlamaConfig(**kw))
    else:
        hf = MistralForCausalLM(MistralConfig(sliding_window=cfg["window"], **kw))
    missing, unexpected = hf.load_state_dict(_hf_state(ours, cfg["n_layers"]), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    hf.tie_weights()
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    ids = tm.model_ids(cfg)
    with torch.no_grad():
        want = hf.eval()(ids).logits
        torch.testing.assert_close(tm.reference_model(cfg, ours)(ids).logits, want, rtol=1e-4, atol=1e-4)
        mine = obj("check_llama")(cfg["vocab_size"], cfg["d_model"], cfg["n_layers"], cfg["n_heads"],
                                  cfg["n_kv_heads"], cfg["d_ff"], cfg["rope_base"], cfg["window"], cfg["eps"])
        mine.load_state_dict(ours)
        torch.testing.assert_close(mine(ids), want, rtol=1e-4, atol=1e-4)
        caches = [tt.ReferenceCache(cfg["window"]) for _ in range(cfg["n_layers"])]
        steps = torch.cat([mine(ids[:, t:t + 1], caches) for t in range(ids.size(1))], 1)
        torch.testing.assert_close(steps, want, rtol=1e-4, atol=1e-4)


def test_the_checks_run_fast():
    import time
    for name in OBJECT:
        o = obj(name)
        t = time.perf_counter()
        REGISTRY[name].func(o)
        assert time.perf_counter() - t < 5.0, name


def test_init_statistics_never_fail_a_correct_draw():
    """The init checks use six standard errors: many independent correct draws all pass, and the
    misconception draws all fail."""
    g = torch.Generator().manual_seed(0)
    b = 1 / math.sqrt(512)
    for i in range(300):
        tt._uniform_init((torch.rand(256, generator=g) * 2 - 1) * b, b, "bias", wrong_bound=1 / 16)
        if i < 10:
            tt._uniform_init((torch.rand(256, 512, generator=g) * 2 - 1) * b, b, "weight", wrong_bound=1 / 16)
    for bad in (torch.randn(256, 512) * b, (torch.rand(256, 512) * 2 - 1) / 512, torch.rand(256, 512) * b):
        with pytest.raises(tt.Mismatch):
            tt._uniform_init(bad, b, "weight")


@pytest.mark.parametrize("name", ["check_attention_rope_gqa", "check_block", "check_llama", "check_swiglu"])
@pytest.mark.parametrize("bad", ["raises", "nan", "none"])
def test_modules_that_raise_or_return_nan_or_none_get_one_line_verdicts(name, bad):
    nan = ("torch.full((*x.shape, self.lm_head.weight.size(0)), float('nan'))" if name == "check_llama"
           else "torch.full_like(x, float('nan'))")
    ret = {"raises": "        raise ValueError('oops')\n", "nan": f"        return {nan}\n", "none": "        return None\n"}[bad]
    cls = obj(name)
    patched = type(cls.__name__, (cls,), {})
    src = f"def forward(self, x, *args):\n{ret}"
    ns = {"torch": torch}
    exec(src, ns)  # noqa: S102 - our own text
    patched.forward = ns["forward"]
    r = REGISTRY[name].func(patched)
    assert not r.passed and r.status == "failed" and "\n" not in r.message, r.message
    assert {"raises": "ValueError: oops", "nan": "NaN", "none": "return"}[bad] in r.message, r.message


@pytest.mark.parametrize("config", range(len(tm._attention_configs())))
def test_the_attention_checks_reference_equals_hugging_face_llama_attention(config):
    """Each attention configuration of the check (GQA, MQA with base 500000, a window, float64): Hugging
    Face's LlamaAttention (eager) with the same weights and an explicit causal/window mask gives the
    check's reference output."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding
    from course_lib.positional_attention import PositionalAttention
    _, cfg = tm._attention_configs()[config]
    dtype = cfg.get("dtype", torch.float32)
    r = PositionalAttention(cfg["d_model"], cfg["n_heads"], n_kv_heads=cfg["n_kv_heads"], bias=False)
    state = tm._randomise({k: v.to(dtype) for k, v in r.state_dict().items()}, 7)
    hf_cfg = LlamaConfig(hidden_size=cfg["d_model"], num_attention_heads=cfg["n_heads"],
                         num_key_value_heads=cfg["n_kv_heads"], rope_theta=cfg["rope_base"], attention_bias=False,
                         max_position_embeddings=64, attn_implementation="eager")
    hf = LlamaAttention(hf_cfg, layer_idx=0).to(dtype).eval()
    hf.load_state_dict(state)
    x = tm._inputs(cfg, 11)
    T = x.size(1)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & ((i - j < cfg["window"]) if cfg["window"] else True)
    mask = torch.zeros(T, T, dtype=dtype).masked_fill(~allowed, float("-inf"))[None, None]  # (1, 1, T, T)
    cos, sin = LlamaRotaryEmbedding(hf_cfg)(x, torch.arange(T)[None])
    with torch.no_grad():
        want = hf(x, position_embeddings=(cos.to(dtype), sin.to(dtype)), attention_mask=mask)[0]
    # (Hugging Face computes its cos/sin table in float32 even for a float64 model)
    torch.testing.assert_close(tm.reference_attention(cfg, state, x), want, rtol=1e-5, atol=1e-5)
