"""What several test files share: verdict -> assertion helpers for the checks, and tiny Hugging Face
models -> the inputs they are compared on. Import them by name: `from helpers import assert_diagnosed`
(tests/conftest.py says why this is a plain module and not a set of fixtures)."""
import torch
import torch.nn as nn

from course_lib.checks import REGISTRY


# ------------------------------------------------------------------ check verdicts
def assert_diagnosed(result, key):
    """The check failed with no points and named misconception `key`, whose explanation is in the message."""
    assert not result.passed and result.points == 0 and result.status == "failed", result
    assert result.misconception == key, (result.misconception, result.message)
    assert REGISTRY[result.name].misconceptions[key] in result.message


def assert_not_attempted(result):
    """The check saw a stub (NotImplementedError): "not attempted", no points."""
    assert result.status == "not_attempted" and not result.passed and result.points == 0, result
    assert "not attempted" in result.message, result.message


def assert_all_tested(check_name, tested):
    """The misconceptions `check_name` can diagnose are exactly `tested` (keys: a set, list or dict),
    so a misconception added to a check without a test here fails, and so does a stale test key."""
    named, tested = set(REGISTRY[check_name].misconceptions), set(tested)
    assert named == tested, (f"{check_name}: named but not tested {sorted(named - tested)}, "
                             f"tested but not named {sorted(tested - named)}")


# ------------------------------------------------------------------ tiny Hugging Face models
GPT2_VOCAB, LLAMA_VOCAB = 61, 53


def hf_gpt2(seed=0, **kw):
    """A 2-layer GPT2LMHeadModel (d_model 36, 3 heads of 12, 24 positions), dropout off, eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=GPT2_VOCAB, n_positions=24, n_embd=36, n_layer=2, n_head=3,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **kw)
    return GPT2LMHeadModel(cfg).eval()


def hf_llama(kind="llama", seed=0, **kw):
    """A 2-layer LlamaForCausalLM (kind="llama") or MistralForCausalLM (kind="mistral"): d_model 48,
    GQA 6 query / 2 key-value heads of 8, d_ff 70, unless `kw` (HF config names) says otherwise."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM
    torch.manual_seed(seed)
    base = dict(vocab_size=LLAMA_VOCAB, hidden_size=48, intermediate_size=70, num_hidden_layers=2,
                num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                bos_token_id=0, eos_token_id=1, pad_token_id=None)
    base.update(kw)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**base)).eval()
    return MistralForCausalLM(MistralConfig(**base)).eval()


def ids_and_mask(vocab_size, B=3, T=13, seed=1):
    """Random ids (B, T) and an attention mask (B, T): row 1 left-padded (4), row 2 right-padded (from 9)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (B, T), generator=g)  # (B, T)
    mask = torch.ones(B, T, dtype=torch.long)  # (B, T)
    mask[1, :4] = 0  # left padding
    mask[2, 9:] = 0  # right padding
    return ids, mask


# ------------------------------------------------------------------ the printed solutions and delegation
def solved(check_name, obj_name=None):
    """The learner-level answer `solution(check_name)` prints, run on its own: the object it defines
    (by default the one whose name the check's function takes, e.g. softmax for check_softmax)."""
    ns = {"__name__": f"solution_{check_name}"}
    ref = REGISTRY[check_name].reference
    exec(compile(ref if isinstance(ref, str) else __import__("inspect").getsource(ref),
                 f"<solution {check_name}>", "exec"), ns)
    if obj_name is None:
        obj_name = check_name.removeprefix("check_")
    return ns[obj_name]


def assert_delegates(result, used):
    """The check refused code that calls `used` (e.g. "torch.softmax"), which the exercise asks the
    learner to write, and said so."""
    assert not result.passed and result.points == 0 and result.status == "failed", result
    assert result.misconception == "delegates", (result.misconception, result.message)
    assert "not allowed here" in result.message and used in result.message, result.message


# ------------------------------------------------------------------ parity with Hugging Face (interop, 2025 families)
INTEROP_VOCAB = 41  # the vocabulary of the tiny models in test_interop.py and the 2025 family tests


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every weight off its initial value (norm gains off 1, biases off 0), so a swapped or
    missing tensor shows; HF Mixtral's fused experts start as torch.empty, so they are drawn anew."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def padded_batch(kind: str):
    """Two rows, one right-padded and one left-padded (attention_mask 0 = padding)."""
    torch.manual_seed(1)
    if kind == "image":
        return {"pixel_values": torch.rand(3, 1, 8, 8)}
    mask = torch.tensor([[1] * 6 + [0] * 3, [0] * 3 + [1] * 6])  # (B, T): right padding, left padding
    batch = {"input_ids": torch.randint(1, INTEROP_VOCAB, (2, 9)) * mask, "attention_mask": mask}  # [PAD] = 0
    if kind == "seq2seq":
        batch |= {"decoder_input_ids": torch.randint(1, INTEROP_VOCAB, (2, 5)),
                  "decoder_attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])}
    return batch


def real_outputs(model: nn.Module, batch: dict) -> torch.Tensor:
    """The model's logits (or hidden states) at the real, unpadded positions only -> (N, V or C)."""
    from transformers import PreTrainedModel
    ours = not isinstance(model, PreTrainedModel)
    with torch.no_grad():
        if "pixel_values" in batch:
            return model(batch["pixel_values"]) if ours else model(**batch).logits
        out = model(**batch)
    y = getattr(out, "logits", None)
    y = out.last_hidden_state if y is None else y  # (B, T, V or C)
    real = batch.get("decoder_attention_mask", batch["attention_mask"]).bool()  # (B, T)
    return y[real]


def max_err(a: nn.Module, b: nn.Module, batch: dict) -> float:
    ya, yb = real_outputs(a, batch), real_outputs(b, batch)
    assert torch.isfinite(ya).all() and torch.isfinite(yb).all()
    return (ya - yb).abs().max().item()


def assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    unequal = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not unequal, f"tensors changed by the round trip: {unequal[:5]}"


def logit_error(ours, theirs, ids, mask=None) -> float:
    """Max abs difference of the logits at the real (unpadded) positions; both must vary."""
    with torch.no_grad():
        want = theirs(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        got = ours(ids, attention_mask=mask).logits  # (B, T, V)
    keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()  # (B, T)
    assert want[keep].std() > 0.1  # the comparison is not between two near-constant outputs
    return (got - want)[keep].abs().max().item()


def cached_decoding_error(model, ids, mask, prefill: int = 4):
    """Prefill `prefill` tokens, then decode one at a time with the padding mask of all tokens so
    far; returns (max abs error against one full forward at the real positions, the caches)."""
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits  # (B, T, V)
        cache = model.new_cache()
        steps = [model(ids[:, :prefill], attention_mask=mask[:, :prefill], cache=cache).logits]
        for t in range(prefill, ids.size(1)):
            steps.append(model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache).logits)
    return (torch.cat(steps, dim=1) - full)[mask.bool()].abs().max().item(), cache  # (B, T, V) compared


def greedy_equals_hf_generate(ours, theirs, n_new: int = 8) -> bool:
    """Our cached greedy decoding (one token per step) produces HF generate's tokens."""
    prompt = torch.randint(1, INTEROP_VOCAB, (1, 5), generator=torch.Generator().manual_seed(2))  # (1, 5)
    with torch.no_grad():
        want = theirs.generate(prompt, max_new_tokens=n_new, do_sample=False, pad_token_id=0)
        ids, cache = prompt, ours.new_cache()
        out = ours(ids, cache=cache)
        for _ in range(n_new):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            ids = torch.cat([ids, nxt], dim=1)  # (1, T + 1)
            out = ours(nxt, cache=cache)
    return torch.equal(ids, want)


def assert_round_trips(theirs) -> None:
    """to_hf(from_hf(hf)) holds exactly hf's tensors and computes exactly its logits; from_hf of
    that gives our config and tensors back."""
    from course_lib.interop import from_hf, to_hf
    ours = from_hf(theirs)
    back = to_hf(ours)
    assert type(back) is type(theirs)
    sa, sb = back.state_dict(), theirs.state_dict()
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sb)
    again = from_hf(back)
    assert again.config == ours.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))
    ids, mask = ids_and_mask(INTEROP_VOCAB)
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids, attention_mask=mask).logits,
                           theirs(input_ids=ids, attention_mask=mask).logits)


def to_hf_error(ours) -> float:
    """Perturb a course_lib model, send it to HF: the logit error on a padded batch; and back."""
    from course_lib.interop import from_hf, to_hf
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    theirs = to_hf(ours.eval())
    assert from_hf(theirs).config == ours.config
    return logit_error(ours, theirs, *ids_and_mask(INTEROP_VOCAB))
