"""What `solution(name)` prints is the exercise's answer, at the lesson's level: for every registered
check, the printed text is executed in a fresh namespace, the object the exercise asks for is taken
from it and graded by its own check, which must give full points.

The text must also be the code the exercise's stub asks for: the same name and parameters as the
stub in scripts/exercises/ (no later lesson's options), no private helper calls, and no import from
course_lib except the pieces an exercise hands the learner (listed per check below, with why).
"""
from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

from course_lib.checks import REGISTRY, RESULTS, solution

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "scripts" / "exercises"

# check -> the name the exercise's stub gives the learner's function or class
OBJECT = {
    "check_softmax": "softmax",
    "check_scaled_dot_product_attention": "scaled_dot_product_attention",
    "check_causal_mask": "causal_mask",
    "check_multi_head_attention": "MultiHeadAttention",
    "check_sinusoidal_encoding": "sinusoidal_encoding",
    "check_apply_rope": "apply_rope",
    "check_apply_rope_half": "apply_rope_half",
    "check_alibi_slopes": "alibi_slopes",
    "check_relative_position_bucket": "relative_position_bucket",
    "check_gelu": "gelu",
    "check_layer_norm": "LayerNorm",
    "check_rms_norm": "RMSNorm",
    "check_swiglu_ffn": "SwiGLUFFN",
    "check_pre_norm_block": "PreNormBlock",
    "check_repeat_kv": "repeat_kv",
    "check_mha_to_gqa": "mha_to_gqa",
    "check_kv_cache_bytes": "kv_cache_bytes",
    "check_max_batch": "max_batch",
    "check_gqa_attention": "gqa_attention",
    "check_online_softmax_attention": "online_softmax_attention",
    "check_sliding_window_mask": "sliding_window_mask",
    "check_sliding_window_attention": "sliding_window_attention",
    "check_causal_linear_attention": "causal_linear_attention",
    "check_decoder_block": "DecoderBlock",
    "check_mlm_mask": "mlm_mask",
    "check_shift_right": "shift_right",
    "check_gpt_forward": "MiniGPT",
    "check_top_k_routing": "top_k_routing",
    "check_load_balancing_loss": "load_balancing_loss",
    "check_sparse_moe": "SparseMoE",
    "check_bpe_merge": "bpe_merge",
    "check_wordpiece": "wordpiece",
    "check_unigram_viterbi": "unigram_viterbi",
    "check_cosine_lr": "cosine_lr",
    "check_clip_grad_norm": "clip_grad_norm",
    "check_sample_top_p": "sample_top_p",
    "check_generate": "generate",
    "check_previous_token_score": "previous_token_score",
    "check_induction_score": "induction_score",
    "check_attention_rollout": "attention_rollout",
    "check_logit_lens_scores": "logit_lens_scores",
    "check_eval_at_length": "eval_at_length",
    "check_selective_scan": "selective_scan",
    "check_quantize_per_channel": "quantize_per_channel",
    "check_quant_linear": "QuantLinear",
    "check_quantize_per_group": "quantize_per_group",
    "check_mod_route": "mod_route",
    # the from-scratch track (the capstone exercise)
    "check_cross_entropy": "cross_entropy",
    "check_linear": "Linear",
    "check_embedding": "Embedding",
    "check_rope": "apply_rope",
    "check_kv_cache": "KVCache",
    "check_attention_rope_gqa": "Attention",
    "check_swiglu": "SwiGLU",
    "check_block": "Block",
    "check_llama": "LLaMA",
    "check_adamw": "AdamW",
    "check_param_groups": "param_groups",
    "check_train_loop": "train",
    "check_pretokenize": "pretokenize",
    "check_train_bpe": "train_bpe",
    "check_tokenizer": "Tokenizer",
    "check_encode_iterable": "Tokenizer",
    "check_sample_next": "sample_next",
    "check_generate_cached": "generate",
    # deeper lesson exercises: 01's attention backward, 06's span corruption, 03's backward passes, 08's capacity and expert choice, 10's accumulation
    # and loss scaling
    "check_accumulate_gradients": "accumulate_gradients",
    "check_grad_scaler": "GradScaler",
    # 11's beam search and penalties, 13's scaling-law fits, 14's parallel scans and exact discretisation
    "check_beam_search": "beam_search",
    "check_repetition_penalty": "repetition_penalty",
    "check_no_repeat_ngram": "no_repeat_ngram",
    "check_generate_penalized": "generate_penalized",
    "check_fit_power_law": "fit_power_law",
    "check_fit_scaling_law": "fit_scaling_law",
    "check_fit_chinchilla": "fit_chinchilla",
    "check_compute_optimal": "compute_optimal",
    "check_parallel_scan": "parallel_scan",
    "check_scan_function": "ScanFunction",
    "check_chunked_scan": "chunked_scan",
    "check_discretize_zoh": "discretize_zoh",
    "check_selective_scan_zoh": "selective_scan_zoh",
    "check_softmax_backward": "softmax_backward",
    "check_attention_backward": "attention_backward",
    "check_attention_function": "AttentionFunction",
    "check_random_spans_noise_mask": "random_spans_noise_mask",
    "check_span_corruption": "span_corruption",
    "check_t5_collate": "t5_collate",
    "check_rms_norm_backward": "RMSNormFunction",
    "check_layer_norm_backward": "LayerNormFunction",
    "check_swiglu_backward": "SwiGLUFunction",
    "check_capacity_dispatch": "capacity_dispatch",
    "check_dispatch_experts": "dispatch_experts",
    "check_expert_choice_routing": "expert_choice_routing",
    "check_expert_choice_layer": "expert_choice_layer",
    "check_switch_moe": "SwitchMoE",
}
# the capstone's answer is the whole notebook (solutions/16_capstone.ipynb): tests/test_capstone.py grades it
WHOLE_NOTEBOOK = {"check_capstone"}

# course_lib imports a printed solution may use: only what the exercise itself hands the learner
# (an earlier part of the same exercise, or the modules its __init__ is built from). Everything
# else in a solution is plain torch/math.
ALLOWED_COURSE_LIB = {
    # part 2 uses part 1's softmax, part 4 attends with part 2's function
    "check_scaled_dot_product_attention": {("course_lib.attention", "softmax")},
    "check_multi_head_attention": {("course_lib.attention", "scaled_dot_product_attention")},
    # the block exercises give the sub-modules (built from earlier lessons) and grade only forward
    "check_pre_norm_block": {("course_lib.attention", "MultiHeadAttention"), ("course_lib.ffn", "GatedFeedForward"),
                             ("course_lib.norms", "LayerNorm")},
    "check_decoder_block": {("course_lib.attention", "CrossAttention"), ("course_lib.attention", "MultiHeadAttention"),
                            ("course_lib.ffn", "FeedForward"), ("course_lib.norms", "LayerNorm")},
    # the GPT is assembled from lesson 03's blocks and norm, as the exercise says
    "check_gpt_forward": {("course_lib.models.gpt", "GPTConfig"), ("course_lib.models.gpt", "gpt_block"),
                          ("course_lib.norms", "LayerNorm")},
    # the MoE layer routes with part 1's function and the capacity helpers the exercise imports
    "check_sparse_moe": {("course_lib.ffn", "GatedFeedForward"), ("course_lib.moe", "capacity_mask"),
                         ("course_lib.moe", "expert_capacity"), ("course_lib.moe", "top_k_routing")},
    # lesson 10's batcher draws the windows (the exercise says to use it)
    "check_eval_at_length": {("course_lib.data", "get_batch")},
    # the attention backward may use part 1's softmax, as part 2 does
    "check_attention_backward": {("course_lib.attention", "softmax")},
    # the Switch layer's __init__ (given) builds its experts from lesson 03's gated FFN
    "check_switch_moe": {("course_lib.ffn", "GatedFeedForward")},
}
OTHER_IMPORTS = {"torch", "torch.nn", "torch.nn.functional", "math", "os", "regex", "collections"}
PRIVATE_CALL = re.compile(r"(?<!\w)_[A-Za-z]\w*\s*\(")  # _helper( or self._helper(, not __init__(


def printed(name: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        solution(name)
    return buf.getvalue()


def stub(obj_name: str, check_name: str) -> ast.AST:
    """The exercise's stub: the top-level def/class `obj_name` in the exercise that calls the check."""
    for path in sorted(EXERCISES.glob("*.py")):
        text = path.read_text()
        if f"{check_name}(" in text:
            for node in ast.parse(text).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == obj_name:
                    return node
    raise AssertionError(f"no stub called {obj_name} in the exercise that calls {check_name}")


def signature(fn: ast.FunctionDef) -> list:
    """Parameter names with their defaults (annotations may differ)."""
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    kw = [(k.arg, None if d is None else ast.unparse(d)) for k, d in zip(a.kwonlyargs, a.kw_defaults)]
    return [(p.arg, d) for p, d in zip(pos, defaults)] + kw + [("*", a.vararg and a.vararg.arg),
                                                               ("**", a.kwarg and a.kwarg.arg)]


def signatures(node: ast.AST) -> dict:
    if isinstance(node, ast.FunctionDef):
        return {node.name: signature(node)}
    return {f.name: signature(f) for f in node.body if isinstance(f, ast.FunctionDef)}


@pytest.fixture
def keep_results():
    """Grading a solution records a result; leave RESULTS as the other tests found it."""
    before = dict(RESULTS)
    yield
    RESULTS.clear()
    RESULTS.update(before)


def test_every_check_has_an_object_name():
    assert set(OBJECT) | WHOLE_NOTEBOOK == set(REGISTRY), (
        f"missing: {sorted(set(REGISTRY) - set(OBJECT))}; unknown: {sorted(set(OBJECT) - set(REGISTRY))}")
    assert set(ALLOWED_COURSE_LIB) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - WHOLE_NOTEBOOK))
def test_printed_solution_passes_its_check(name, keep_results):
    text = printed(name)
    namespace = {"__name__": f"solution_{name}"}
    exec(compile(text, f"<solution({name!r})>", "exec"), namespace)  # noqa: S102 - our own text
    obj = namespace.get(OBJECT[name])
    assert obj is not None, f"solution({name!r}) defines no {OBJECT[name]!r}"
    result = REGISTRY[name].func(obj, quiet=True)
    assert result.passed and result.points == result.max_points, (result.message, result.detail)


def level_problems(name: str, text: str) -> list[str]:
    """Why `text` is not a lesson-level answer to check `name` (empty when it is)."""
    problems = [f"calls the private helper {c.rstrip('( ')}()" for c in PRIVATE_CALL.findall(text)]
    tree = ast.parse(text)
    allowed, wanted = ALLOWED_COURSE_LIB.get(name, set()), OBJECT[name]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems += [f"imports {a.name}" for a in node.names if a.name not in OTHER_IMPORTS]
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                if wanted in (a.name, a.asname):
                    problems.append(f"imports the {wanted} it should write, from {node.module}")
                elif (node.module, a.name) not in allowed and node.module not in OTHER_IMPORTS:
                    problems.append(f"imports {a.name} from {node.module}, which its exercise does not hand out")
    mine = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == wanted]
    if not mine:
        return problems + [f"defines no {wanted}"]
    theirs = stub(wanted, name)
    if type(mine[0]) is not type(theirs) or signatures(mine[0]) != signatures(theirs):
        problems.append(f"its parameters {signatures(mine[0])} differ from the exercise's stub {signatures(theirs)}")
    return problems


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - WHOLE_NOTEBOOK))
def test_printed_solution_is_at_the_lessons_level(name):
    assert level_problems(name, printed(name)) == []


LIBRARY_STYLE = {  # what solution() printed before: library code with later options and private helpers
    "check_layer_norm": ("import torch\nimport torch.nn as nn\n\n\nclass LayerNorm(nn.Module):\n"
                         "    def __init__(self, d, eps=1e-5, bias=True):\n        super().__init__()\n\n"
                         "    def forward(self, x):\n        _check_width(x, self.d, 'LayerNorm')\n"
                         "        return x.to(_compute_dtype(x))\n",
                         ["private helper _check_width()", "private helper _compute_dtype()", "parameters"]),
    "check_multi_head_attention": ("import torch\nfrom course_lib.attention import MultiHeadAttention\n",
                                   ["imports the MultiHeadAttention it should write", "defines no MultiHeadAttention"]),
    "check_scaled_dot_product_attention": (
        "import torch\nfrom course_lib.attention import attention_weights\n\n\n"
        "def scaled_dot_product_attention(q, k, v, mask=None, scale=None):\n"
        "    return attention_weights(q, k, mask, scale) @ v\n",
        ["imports attention_weights from course_lib.attention", "parameters"]),
    "check_sparse_moe": ("import numpy as np\n", ["imports numpy", "defines no SparseMoE"]),
}


@pytest.mark.parametrize("name", sorted(LIBRARY_STYLE))
def test_library_style_solutions_are_caught(name):
    text, expected = LIBRARY_STYLE[name]
    problems = level_problems(name, text)
    assert len(problems) == len(expected)
    for found, fragment in zip(problems, expected):
        assert fragment in found, (fragment, problems)


def test_solution_of_an_unknown_check_names_the_known_ones(capsys):
    solution("check_no_such_thing")
    out = capsys.readouterr().out
    assert "No check called 'check_no_such_thing'" in out and "check_softmax" in out


# ------------------------------------------------------------------ the notebook's answer is the printed one
SOLUTIONS = ROOT / "scripts" / "solutions"


def _definition_dump(node: ast.AST) -> str:
    """A def/class as code, less docstrings and annotations (the stub keeps those outside the region)."""
    node = ast.parse(ast.unparse(node)).body[0]
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            body = n.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                n.body = body[1:] or [ast.Pass()]
        if isinstance(n, ast.FunctionDef):
            n.returns = None
            for a in n.args.posonlyargs + n.args.args + n.args.kwonlyargs:
                a.annotation = None
    return ast.dump(node)


def _definitions(tree: ast.AST, name: str) -> list[ast.AST]:
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name]


# The lesson exercises' first checks (the ones with written nudges) print a variant of the notebook's
# answer; from the from-scratch track on, a check's printed solution IS the solution notebook's code,
# so the two cannot drift apart (the capstone's parts were written twice before this test).
SAME_AS_NOTEBOOK = sorted(set(OBJECT) - set(__import__("course_lib.checks.nudges", fromlist=["NUDGES"]).NUDGES))


@pytest.mark.parametrize("name", SAME_AS_NOTEBOOK)
def test_printed_solution_is_the_solution_notebooks_code(name):
    obj = OBJECT[name]
    printed_defs = _definitions(ast.parse(printed(name)), obj)
    assert len(printed_defs) == 1, f"solution({name!r}) should define {obj} once"
    notebook_defs = [d for path in sorted(SOLUTIONS.glob("*.py")) if f"{name}(" in path.read_text()
                     for d in _definitions(ast.parse(path.read_text()), obj)]
    assert notebook_defs, f"no solution notebook defines {obj} and calls {name}"
    for d in notebook_defs:
        assert _definition_dump(d) == _definition_dump(printed_defs[0]), (
            f"{obj} in the solution notebook differs from what solution({name!r}) prints: "
            "make the check's reference string the notebook's code")
