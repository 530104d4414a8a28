"""The capstone check: the learner's own LLaMA-style model, trained by their own loop, graded end
to end. It asks three things of what the notebook built:

1. **their architecture** is the reference one: the model's class passes `check_llama`, which
   loads the course's reference weights into it and compares logits (and its pieces pass
   their own checks earlier in the notebook);
2. **their training worked**: the course's evaluator (`course_lib.pretrained.validation_loss`,
   the same one that scores the shipped GPT) measures the trained model's mean cross-entropy on
   the held-out last 10 % of the Shakespeare corpus, encoded by their tokenizer, per character;
   it must reach `TARGET`;
3. **their KV cache is exact**: a sample drawn with the cache equals one drawn without it, for
   the same seed, and greedy decoding agrees too.
"""
from __future__ import annotations

import math

import torch

from course_lib.data import shakespeare_text, train_val_split
from course_lib.pretrained import validation_loss

from .core import REGISTRY, Mismatch, call_learner, register

TARGET = 2.0  # nats per character on the validation text
WINDOW = 128  # the evaluator's window (the notebook trains at this context length)
PROMPT = "ROMEO:\n"

CAPSTONE_MISCONCEPTIONS = {
    "untrained": "the validation loss is near log(vocab size): the model has not learned (was the "
                 "training cell run, and does `train` update the parameters?)",
    "cache_differs": "the sample drawn with your KV cache differs from the one drawn without it: the "
                     "cache path is not exact (positions after the prompt, or the keys it returns).",
}

CAPSTONE_SOLUTION = """# The capstone has no single solution: it is your parts 1-6 put together. Part 7 of
# solutions/16_capstone.ipynb shows one run:
model = LLaMA(vocab_size=len(chars), d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=352)
optimizer = AdamW(param_groups(model, weight_decay=0.1), lr=3e-3, betas=(0.9, 0.95))
losses = train(model, optimizer, get_batch, steps=STEPS,
               lr_at=lambda s: cosine_lr(s, 100, STEPS, 3e-3, 3e-4), ckpt_path="capstone.pt")
check_capstone(model, encode, generate)
"""


def _validation_text() -> str:
    return train_val_split(shakespeare_text())[1]


@register("check_capstone", points=10, minutes=30, reference=CAPSTONE_SOLUTION,
          misconceptions=CAPSTONE_MISCONCEPTIONS, timeout=300,
          hint="Run part 7 top to bottom: build the model from your classes, train it with your AdamW and "
               "`train`, then pass the trained model, your `encode` and your `generate`.",
          idea="check_capstone(model, encode, generate) evaluates `model` on the last 10 % of the corpus "
               f"(windows of {WINDOW} characters) and needs <= {TARGET} nats per character; then it draws "
               "the same sample with and without your cache.",
          forbid=("course_lib.models", "course_lib.pretrained", "course_lib.generation", "course_lib.attention",
                  "course_lib.training", "torch.nn.functional.scaled_dot_product_attention",
                  "torch.nn.MultiheadAttention", "torch.nn.Transformer", "torch.nn.TransformerDecoderLayer",
                  "torch.nn.TransformerEncoderLayer", "transformers", "course_lib.checks"))
def check_capstone(model, encode=None, generate=None):
    if not isinstance(model, torch.nn.Module):
        raise Mismatch(f"pass your trained model (an nn.Module), got {type(model).__name__}")
    if encode is None or generate is None:
        raise Mismatch("pass three things: check_capstone(model, encode, generate)")
    for what, obj in (("encode", encode), ("generate", generate)):
        uses = REGISTRY["check_capstone"].forbid.static_uses(obj)
        if uses:
            raise Mismatch(f"your {what} uses {', '.join(uses)}; the capstone is built from your own parts",
                           misconception="delegates")
    n = 0
    llama = REGISTRY.get("check_llama")
    if llama is not None:  # 1. the architecture, against the reference weights
        r = llama.func(type(model), quiet=True)
        if not r.passed:
            raise Mismatch(f"your model's class does not pass check_llama yet: {r.message}",
                           "fix part 3 first (run its check cell)")
        n += r.cases

    text = _validation_text()  # 2. the trained model, by the course's evaluator
    ids = call_learner(encode, text)
    try:
        ids = [int(i) for i in ids]
    except (TypeError, ValueError):
        raise Mismatch(f"encode(text) should return a list of ints, got {type(ids).__name__}") from None
    vocab = model.lm_head.weight.shape[0] if hasattr(model, "lm_head") else None
    if vocab is not None and ids and not 0 <= min(ids) <= max(ids) < vocab:
        raise Mismatch(f"encode gives ids outside your model's vocabulary (0..{vocab - 1})")
    device = next(model.parameters()).device
    with torch.no_grad():
        per_token = call_learner(validation_loss, model.to(device), ids, window=WINDOW)
    per_char = per_token * (len(ids) - 1) / max(1, len(text) - 1)  # = per_token for characters
    if not math.isfinite(per_char) or per_char > TARGET:
        key = "untrained" if vocab and per_char > 0.8 * math.log(vocab) else None
        raise Mismatch(f"validation loss {per_char:.3f} nats per character; the target is <= {TARGET}",
                       f"{len(text):,} held-out characters, windows of {WINDOW}", key)
    n += 1

    prompt = torch.tensor([call_learner(encode, PROMPT)], dtype=torch.long, device=device)  # 3. the cache
    for temperature, top_k in ((0.0, None), (0.8, 20)):
        outs = []
        for use_cache in (True, False):
            g = torch.Generator(device=device).manual_seed(1234)
            with torch.no_grad():
                outs.append(call_learner(generate, model, prompt, 60, temperature=temperature, top_k=top_k,
                                         generator=g, use_cache=use_cache))
        for o in outs:
            if not isinstance(o, torch.Tensor) or tuple(o.shape) != (1, prompt.shape[1] + 60):
                raise Mismatch(f"generate should return a (1, {prompt.shape[1] + 60}) tensor of ids, got "
                               f"{tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__}")
        if not torch.equal(outs[0], outs[1]):
            first = int((outs[0] != outs[1]).nonzero()[0, 1])
            raise Mismatch(f"with temperature={temperature}, the cached and uncached samples differ from "
                           f"position {first}", "", "cache_differs")
        n += 1
    return n, f"validation loss {per_char:.2f} nats per character; the target is {TARGET}"
