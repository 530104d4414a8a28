"""Hugging Face ``transformers`` <-> course_lib: one registry of model families -> ``from_hf`` / ``to_hf``.

This file holds the registry and the copying machinery; ``interop/families.py`` holds the entries,
one section per family (GPT-2, LLaMA/Mistral, Mixtral, BERT, T5, ViT).

Each family is one ``Family`` entry in ``FAMILIES`` that says, in one place:
  * which HF classes it reads (``hf_classes``) and which course_lib classes it writes back (``ours``);
  * how an HF config becomes a course_lib config (``config_from_hf``) and back (``config_to_hf``);
  * the *key map*: a table {HF name prefix: course_lib name prefix}, ``{i}`` standing for a layer
    index and ``None`` for an HF alias of a tied tensor. Renames are all most families need, and the
    way back is the same table read right to left.
Only two things are more than a rename, so only they have key maps written both ways as code:
  * GPT-2 stores its linear layers as ``Conv1D`` with weights (in, out) and fuses q, k, v into one
    ``c_attn``: transpose, and split in three along the output axis (concatenate on the way back);
  * Mixtral (transformers >= 5) fuses each layer's experts into ``gate_up_proj`` / ``down_proj``
    tensors (see ``course_lib.moe.mixtral_block_state_dict`` and its inverse).

``from_hf(hf_model)`` finds the family by ``type(hf_model).__name__``; ``from_hf_weights`` does the
same from a class name, a config and a state dict (how ``models/minilm.py`` loads files without
``transformers``). ``to_hf(model)`` finds it by the course_lib class and dispatches through the same
table. Both copy through ``load_mapped``: every tensor on the source side must match a rule, every
tensor on the target side must be filled (tied tensors count once), or loading fails loudly.

Nothing is downloaded: pass a model you already have (built from a config, or loaded from local
files with ``from_pretrained(path, local_files_only=True)``).

Adding a family
  1. Put ``hf.state_dict().keys()`` of a tiny HF model next to ``model.state_dict().keys()`` of
     the matching course_lib model; every HF tensor needs a place.
  2. Write ``<family>_config_from_hf(hf_config)``: read the HF fields into the course_lib config
     and raise ValueError, naming the field, for any setting course_lib does not implement.
  3. Write the key map as a dict of prefixes (or a function of the course_lib config returning one),
     like ``LLAMA_KEYS``. Only if a tensor must be reshaped, write ``tensors_from_hf`` /
     ``tensors_to_hf`` functions instead, like GPT-2's.
  4. For ``to_hf``, write ``<family>_config_to_hf(model) -> (HF class name, HF config)`` (plus a
     dict of constructor keywords if the HF class needs one, like BertModel's add_pooling_layer).
  5. ``register(Family(name, hf_classes, ours, config_from_hf, build, key_map=...,
     config_to_hf=...))`` at the end of ``interop/families.py``, below the others.
  6. Add a tiny example to ``EXAMPLES`` in ``tests/test_interop.py``: the registry test fails until
     every family has one, and then checks parity and both round trips with a padded batch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn


KeyMap = dict[str, "str | None"]
HF_BUFFERS = ("position_ids", "token_type_ids")  # index buffers some HF models save; not weights


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Family:
    """One model family: HF class names, config conversion and key map, both directions."""
    name: str
    hf_classes: tuple[str, ...]  # transformers classes from_hf reads
    ours: tuple[type, ...]  # course_lib classes to_hf writes back
    config_from_hf: Callable[[Any], Any]  # HF config -> course_lib config
    build: Callable[[Any, str, dict], nn.Module]  # (config, HF class name, HF state) -> course_lib model
    key_map: KeyMap | Callable[[Any], KeyMap] | None = None  # pure renames (a table, or config -> table)
    tensors_from_hf: Callable[[dict, Any], dict] | None = None  # (HF state, config) -> ours, if not renames
    tensors_to_hf: Callable[[dict, Any], dict] | None = None  # (ours, config) -> HF state, if not renames
    config_to_hf: Callable[[nn.Module], tuple] | None = None  # model -> (HF class, config[, init kw]) or None
    owns: Callable[[nn.Module], bool] = lambda model: True  # to_hf: which of `ours` belong here

    def __post_init__(self):
        if (self.key_map is None) == (self.tensors_from_hf is None):
            raise ValueError(f"Family {self.name!r}: give exactly one of key_map (renames) or tensors_from_hf.")
        if self.config_to_hf is not None and self.key_map is None and self.tensors_to_hf is None:
            raise ValueError(f"Family {self.name!r}: config_to_hf needs key_map or tensors_to_hf for the tensors.")

    def table(self, cfg) -> KeyMap:
        return self.key_map(cfg) if callable(self.key_map) else self.key_map


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add `family` to FAMILIES; an HF class may belong to one family only."""
    taken = {c: f.name for f in FAMILIES.values() for c in f.hf_classes if f.name != family.name}
    clash = [c for c in family.hf_classes if c in taken]
    if clash:
        raise ValueError(f"register({family.name!r}): {clash} already belong to family {taken[clash[0]]!r}.")
    FAMILIES[family.name] = family
    return family


def supported_hf_classes() -> list[str]:
    return [c for f in FAMILIES.values() for c in f.hf_classes]


def family_of_hf(hf_class: str) -> Family:
    for family in FAMILIES.values():
        if hf_class in family.hf_classes:
            return family
    raise TypeError(f"from_hf does not know the Hugging Face class {hf_class!r}; supported: "
                    f"{', '.join(supported_hf_classes())}. A new family is one register(Family(...)) "
                    "entry in course_lib/interop/families.py (see 'Adding a family' in its docstring).")


def family_of(model: nn.Module) -> Family:
    for family in FAMILIES.values():
        if isinstance(model, family.ours) and family.owns(model) and family.config_to_hf is not None:
            return family
    known = sorted({c.__name__ for f in FAMILIES.values() if f.config_to_hf for c in f.ours})
    raise TypeError(f"to_hf knows the course_lib classes {', '.join(known)}; got {type(model).__name__}.")


# --------------------------------------------------------------------------- renaming and copying
def _pattern(prefix: str) -> re.Pattern:
    return re.compile(r"(\d+)".join(re.escape(part) for part in prefix.split("{i}")))


def rename(state: dict[str, torch.Tensor], table: KeyMap) -> dict[str, torch.Tensor]:
    """Rename every key of `state` by the first table prefix it starts with ("{i}" = a layer index);
    a None target drops the tensor. A key that no rule matches is an error, so nothing is lost."""
    rules = [(_pattern(old), new) for old, new in table.items()]
    out = {}
    for key, value in state.items():
        for pattern, new in rules:
            m = pattern.match(key)
            if m:
                if new is not None:
                    out[new.replace("{i}", m.group(1) if m.groups() else "") + key[m.end():]] = value
                break
        else:
            raise KeyError(f"no key-map rule for {key!r}: add its prefix to the family's key map "
                           "(target None if it is an alias of a tied tensor).")
    return out


def invert(table: KeyMap) -> KeyMap:
    """The same renames read right to left (the rules that drop an alias have no way back)."""
    back = {new: old for old, new in table.items() if new is not None}
    if len(back) != sum(new is not None for new in table.values()):
        raise ValueError("this key map sends two HF prefixes to one course_lib prefix; it cannot be inverted.")
    return back


def load_mapped(model: nn.Module, tensors: dict[str, torch.Tensor], ignore: tuple[str, ...] = ()) -> nn.Module:
    """Copy `tensors` into `model` by name; every tensor must be known and every model tensor
    filled. A tied tensor (one storage under two names) counts as filled through either name."""
    own = model.state_dict()
    filled = {own[k].data_ptr() for k in tensors if k in own}
    missing = [k for k in own if k not in tensors and own[k].data_ptr() not in filled and not k.endswith(ignore)]
    unknown = [k for k in tensors if k not in own]
    if missing or unknown:
        raise KeyError(f"weight maps disagree: missing {missing[:5]}, unexpected {unknown[:5]}.")
    with torch.no_grad():
        for name, value in tensors.items():
            if own[name].shape != value.shape:
                raise ValueError(f"{name}: the model's tensor has shape {tuple(own[name].shape)} but the mapped "
                                 f"one is {tuple(value.shape)}; does the config conversion read every size?")
            own[name].copy_(value)
        tied = [k for k, v in tensors.items() if not torch.equal(own[k], v.to(own[k]))]
    if tied:
        raise ValueError(f"{tied[:3]}: this model ties them to another tensor, but the values given differ "
                         "(an untied head cannot be stored in a tied model).")
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def _float_like(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return next(v for v in state.values() if v.is_floating_point())


# --------------------------------------------------------------------------- the two directions
def from_hf(hf_model: nn.Module) -> nn.Module:
    """The course_lib model equal to `hf_model` (same config, same weights), in eval mode."""
    hf_class = type(hf_model).__name__
    family_of_hf(hf_class)  # an unknown class fails here, naming the supported ones
    return from_hf_weights(hf_class, hf_model.config, _state(hf_model))


def from_hf_weights(hf_class: str, hf_config, hf_state: dict[str, torch.Tensor]) -> nn.Module:
    """from_hf without a transformers object: an HF class name (config.json's "architectures"),
    a config with the HF attribute names, and the state dict (e.g. read from model.safetensors)."""
    family = family_of_hf(hf_class)
    cfg = family.config_from_hf(hf_config)
    like = _float_like(hf_state)
    model = family.build(cfg, hf_class, hf_state).to(device=like.device, dtype=like.dtype)
    tensors = family.tensors_from_hf(hf_state, cfg) if family.tensors_from_hf else rename(hf_state, family.table(cfg))
    return load_mapped(model, tensors).eval()


def to_hf(model: nn.Module) -> nn.Module:
    """The Hugging Face model equal to a course_lib model (the round trip of from_hf), in eval mode."""
    import transformers
    family = family_of(model)
    hf_class, hf_config, *init = family.config_to_hf(model)  # init: constructor keywords, if any
    like = next(model.parameters())
    hf_model = getattr(transformers, hf_class)(hf_config, **(init[0] if init else {}))
    hf_model = hf_model.to(device=like.device, dtype=like.dtype).eval()
    ours, cfg = _state(model), model.config
    tensors = family.tensors_to_hf(ours, cfg) if family.tensors_to_hf else rename(ours, invert(family.table(cfg)))
    return load_mapped(hf_model, tensors, ignore=HF_BUFFERS)


# every family's entry registers itself on import
from course_lib.interop.families import BERT_KEYS, LLAMA_KEYS, VIT_KEYS  # noqa: E402,F401
from course_lib.interop import deepseek as _deepseek  # noqa: E402,F401  (DeepSeek-V3)
from course_lib.interop import gemma_gptoss as _gemma_gptoss  # noqa: E402,F401  (Gemma 3, GPT-OSS)
from course_lib.interop import qwen_olmo as _qwen_olmo  # noqa: E402,F401  (Qwen3, Qwen3-MoE, OLMo 2)
