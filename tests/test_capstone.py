"""check_capstone, both ways. Full marks for the solved notebook is tested where every solution is
graded (tests/test_pipeline.py: the grader runs solutions/16_capstone.ipynb, training included);
here the check refuses what is not a trained model of the learner's own with an exact cache."""
import math

import pytest
import torch

from course_lib.checks import REGISTRY, check_capstone
from course_lib.checks.capstone import TARGET, _validation_text

from helpers import assert_delegates, assert_diagnosed

pytestmark = pytest.mark.usefixtures("quiet_checks")

PIECES = ["check_softmax", "check_cross_entropy", "check_linear", "check_embedding", "check_rope", "check_kv_cache",
          "check_attention_rope_gqa", "check_rms_norm", "check_swiglu", "check_block", "check_llama",
          "check_sample_next", "check_generate_cached"]


@pytest.fixture(scope="module")
def learner():
    """The printed solutions of parts 1-3 and 6, run in one namespace as a learner's notebook would hold them."""
    ns = {"__name__": "capstone_learner"}
    for name in PIECES:
        exec(compile(REGISTRY[name].reference, f"<solution {name}>", "exec"), ns)  # noqa: S102 - our own text
    chars = sorted(set(_validation_text()) | set("ROMEO:\n"))
    stoi = {c: i for i, c in enumerate(chars)}
    ns["encode"] = lambda s: [stoi[c] for c in s]
    torch.manual_seed(0)
    ns["model"] = ns["LLaMA"](vocab_size=len(chars), d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64)
    return ns


def test_an_untrained_model_is_refused_with_its_loss(learner):
    r = check_capstone(learner["model"], learner["encode"], learner["generate"])
    assert_diagnosed(r, "untrained")
    loss = float(r.message.split("validation loss ")[1].split()[0])
    assert loss > TARGET and abs(loss - math.log(learner["model"].lm_head.weight.shape[0])) < 0.5


def test_a_cache_that_is_not_exact_is_refused(learner, monkeypatch):
    generate = learner["generate"]

    def generate_cached_differently(model, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                                    generator=None, use_cache=True):
        out = generate(model, ids, max_new_tokens, temperature, top_k, top_p, generator, use_cache)
        if use_cache:  # a cache that loses track of positions: every token after the 10th differs
            out = out.clone()
            out[:, ids.shape[1] + 10:] = (out[:, ids.shape[1] + 10:] + 1) % model.lm_head.weight.shape[0]
        return out

    monkeypatch.setattr("course_lib.checks.capstone.TARGET", 100.0)  # any loss passes: only the cache is judged
    r = check_capstone(learner["model"], learner["encode"], generate_cached_differently)
    assert_diagnosed(r, "cache_differs")
    assert "from position 17" in r.message  # the 7-character prompt, then 10 equal tokens


def test_the_learners_own_pieces_pass_when_the_loss_is_met(learner, monkeypatch):
    monkeypatch.setattr("course_lib.checks.capstone.TARGET", 100.0)
    r = check_capstone(learner["model"], learner["encode"], learner["generate"])
    assert r.passed and r.points == r.max_points == 10, r.message


def test_the_course_model_or_generate_is_not_the_learners(learner, monkeypatch):
    from course_lib.generation import generate as course_generate
    from course_lib.models.llama import Llama, LlamaConfig
    monkeypatch.setattr("course_lib.checks.capstone.TARGET", 100.0)
    course = Llama(LlamaConfig(vocab_size=70, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64,
                               tie_weights=True))
    assert_delegates(check_capstone(course, learner["encode"], learner["generate"]), "course_lib.models")

    def generate(model, ids, max_new_tokens, **kw):
        return course_generate(model, ids, max_new_tokens)
    r = check_capstone(learner["model"], learner["encode"], generate)
    assert not r.passed and "course_lib.generation.generate" in r.message, r.message


def test_wrong_arguments_get_a_verdict_not_an_exception(learner):
    assert "pass three things" in check_capstone(learner["model"]).message
    assert "nn.Module" in check_capstone("model", learner["encode"], learner["generate"]).message
    r = check_capstone(learner["model"], learner["encode"], learner["generate"], 5)
    assert not r.passed and "wrong arguments" in r.message
