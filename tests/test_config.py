"""config.py's validation helpers: one rule each, one form of message (field, value, what was
expected, how to fix it), and the configs that use them say the same thing."""
import math
from dataclasses import dataclass

import pytest

from course_lib.config import (ConfigError, check_choice, check_divisible, check_positive, check_positive_values,
                               check_range, make_config)
from course_lib.kv_cache import ModelShape
from course_lib.moe import MoEConfig
from course_lib.vit import ViTConfig


@dataclass
class Cfg:
    d_model: object = 64
    n_heads: object = 4
    norm: object = "pre"
    dropout: object = 0.1
    token: object = 3
    extra: object = None


def raises(fn, match):
    with pytest.raises(ConfigError, match=match):
        fn()


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "8", None])
def test_check_positive_names_the_field_and_gives_an_example(bad):
    raises(lambda: check_positive(Cfg(d_model=bad), "d_model"),
           rf"^Cfg\.d_model={bad!r}: expected a positive integer \(e\.g\. d_model=4\)\.$")


def test_check_positive_accepts_positive_ints_and_none_only_when_allowed():
    check_positive(Cfg(), "d_model", "n_heads")
    check_positive(Cfg(extra=None), "extra", allow_none=True)
    raises(lambda: check_positive(Cfg(extra=None), "extra"), "Cfg.extra=None")
    raises(lambda: check_positive_values("llama_hidden_size", d_model=0),
           r"^llama_hidden_size: d_model=0: expected a positive integer \(e\.g\. d_model=256\)\.$")


def test_check_divisible_proposes_the_nearest_multiple_and_the_divisors():
    check_divisible(Cfg(d_model=64, n_heads=8), "d_model", "n_heads")
    with pytest.raises(ConfigError) as err:
        check_divisible(Cfg(d_model=100, n_heads=12), "d_model", "n_heads", why="each head gets d_model // n_heads")
    assert str(err.value) == ("Cfg.d_model=100 is not divisible by n_heads=12: each head gets d_model // n_heads. "
                              "Choose d_model as a multiple of n_heads (e.g. d_model=96) or n_heads among the "
                              "divisors of 100 (1, 2, 4, 5, 10, 20, 25, 50, ...).")
    raises(lambda: check_divisible(Cfg(n_heads=0), "d_model", "n_heads"), "Cfg.n_heads=0: expected a positive")


def test_check_choice_lists_the_choices_and_the_hint():
    check_choice(Cfg(norm="post"), "norm", ("pre", "post"))
    raises(lambda: check_choice(Cfg(norm="Pre"), "norm", ("pre", "post"), hint="'pre' for GPT-2"),
           r"^Cfg\.norm='Pre': expected one of \('pre', 'post'\) \('pre' for GPT-2\)\.$")


@pytest.mark.parametrize("kw,value,match", [
    (dict(low=0.0, high=1.0, high_inclusive=False), 1.0, r"expected a number in \[0.0, 1.0\)"),
    (dict(low=0.0, high=1.0), -0.1, r"expected a number in \[0.0, 1.0\]"),
    (dict(low=0, high=math.inf, low_inclusive=False), 0, r"expected a number > 0"),
    (dict(low=0, high=math.inf), -1, r"expected a number >= 0"),
    (dict(low=0, high=10, integer=True, hint="a token id"), 2.5, r"expected an integer in \[0, 10\] \(a token id\)"),
    (dict(low=0.0, high=1.0), True, r"expected a number in \[0.0, 1.0\]"),
    (dict(low=0.0, high=1.0), "0.1", r"expected a number in \[0.0, 1.0\]"),
])
def test_check_range_says_which_interval(kw, value, match):
    raises(lambda: check_range(Cfg(dropout=value), "dropout", **kw), rf"^Cfg\.dropout={value!r}: {match}")


def test_check_range_accepts_the_edges_it_says_it_accepts():
    check_range(Cfg(dropout=0.0), "dropout", 0.0, 1.0, high_inclusive=False)
    check_range(Cfg(dropout=1.0), "dropout", 0.0, 1.0)
    check_range(Cfg(token=9), "token", 0, 10, high_inclusive=False, integer=True)


def test_make_config_takes_a_config_or_overrides_not_both():
    assert make_config(Cfg, None, {"d_model": 8}).d_model == 8
    cfg = Cfg()
    assert make_config(Cfg, cfg, {}) is cfg
    with pytest.raises(TypeError, match=r"pass either a Cfg or keyword overrides to Cfg, not both \(got a config "
                                        r"and \['n_heads'\]\); use dataclasses.replace"):
        make_config(Cfg, cfg, {"n_heads": 2})
    with pytest.raises(TypeError, match="Cfg expects a Cfg, got dict"):
        make_config(Cfg, {"d_model": 8}, {})


# --------------------------------------------------------------------------- the configs that use them
@pytest.mark.parametrize("kw,match", [
    (dict(image_size=9, patch_size=2), r"ViTConfig.image_size=9 is not divisible by patch_size=2: patch_size must "
                                       r"be a divisor of image_size so the patches tile the image"),
    (dict(d_model=30, n_heads=4), r"ViTConfig.d_model=30 is not divisible by n_heads=4"),
    (dict(n_layers=0), r"ViTConfig.n_layers=0: expected a positive integer"),
    (dict(dropout=1.0), r"ViTConfig.dropout=1.0: expected a number in \[0.0, 1.0\)"),
])
def test_vit_config_messages(kw, match):
    raises(lambda: ViTConfig(**kw), match)


@pytest.mark.parametrize("kw,match", [
    (dict(top_k=3, n_experts=2), r"MoEConfig.top_k=3 is more than n_experts=2.*Use top_k <= 2"),
    (dict(capacity_factor=0), r"MoEConfig.capacity_factor=0: expected a number > 0 \(e.g. 1.25, or None"),
    (dict(n_shared_experts=-1), r"MoEConfig.n_shared_experts=-1: expected an integer >= 0"),
    (dict(order="top"), r"MoEConfig.order='top': expected one of .*'softmax_topk' = Mixtral"),
    (dict(activation="swiglu"), r"MoEConfig.activation='swiglu': expected one of .*silu.*\(Mixtral: 'silu'\)"),
    (dict(order="topk_softmax", normalize=False), r"always normalised; set normalize=True"),
])
def test_moe_config_messages(kw, match):
    raises(lambda: MoEConfig(**kw), match)


@pytest.mark.parametrize("args,kw,match", [
    ((32, 4096, 32, 5, 4096), {}, r"^bad: ModelShape.n_heads=32 is not divisible by n_kv_heads=5: each key/value "
                                  r"head serves the same number of query heads"),
    ((0, 4096, 32, 8, 4096), {}, r"^bad: ModelShape.n_layers=0: expected a positive integer"),
    ((32, 4000, 48, 8, 4096), {}, r"^bad: ModelShape.d_model=4000 is not divisible by n_heads=48: head_dim=None"),
    ((32, 4096, 32, 8, 4096), dict(sliding_window=0), r"^bad: ModelShape.sliding_window=0: expected a positive"),
])
def test_model_shape_messages_name_the_published_model(args, kw, match):
    raises(lambda: ModelShape("bad", *args, **kw), match)
    assert ModelShape("ok", 32, 4000, 48, 8, 4096, head_dim=128).bytes_per_token() > 0  # explicit head_dim is fine
