"""What several test files share: verdict -> assertion helpers for the checks, and tiny Hugging Face
models -> the inputs they are compared on. Import them by name: `from helpers import assert_diagnosed`
(tests/conftest.py says why this is a plain module and not a set of fixtures)."""
import torch

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
