"""Exercise 06's checks, both ways: they accept the reference and other correct implementations,
reject the stub, and name each misconception - written here as a learner would write it."""
import pytest
import torch
import torch.nn as nn

from course_lib.attention import CrossAttention, MultiHeadAttention, causal_mask
from course_lib.checks import check_decoder_block, check_gpt_forward, check_mlm_mask, check_shift_right
from course_lib.blocks import Block
from course_lib.checks.models import ReferenceMiniGPT
from course_lib.ffn import FeedForward
from course_lib.models.bert import mlm_mask
from course_lib.models.gpt import GPT, gpt_block
from course_lib.models.t5 import shift_right
from course_lib.norms import LayerNorm

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


# ------------------------------------------------------------------ decoder block
class DecoderBlockBase(nn.Module):  # the exercise's __init__
    def __init__(self, d_model, n_heads, d_ff):
        super().__init__()
        self.attn_norm = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.cross_attn_norm = LayerNorm(d_model)
        self.cross_attn = CrossAttention(d_model, n_heads)
        self.ffn_norm = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff)


class Solution(DecoderBlockBase):
    def forward(self, x, memory, memory_mask=None):
        x = x + self.attn(self.attn_norm(x), is_causal=True)
        x = x + self.cross_attn(self.cross_attn_norm(x), memory, memory_mask)
        return x + self.ffn(self.ffn_norm(x))


class WithExplicitMask(DecoderBlockBase):
    def forward(self, x, memory, memory_mask=None):
        h = self.attn_norm(x)
        y = x + self.attn(h, mask=causal_mask(x.size(1)))
        z = y + self.cross_attn(self.cross_attn_norm(y), memory=memory, mask=memory_mask)
        return z + self.ffn(self.ffn_norm(z))


class CrossOnDecoder(DecoderBlockBase):
    def forward(self, x, memory, memory_mask=None):
        x = x + self.attn(self.attn_norm(x), is_causal=True)
        h = self.cross_attn_norm(x)
        x = x + self.cross_attn(h, h, memory_mask)  # crashes on masked cases: still diagnosed
        return x + self.ffn(self.ffn_norm(x))


class NotCausal(DecoderBlockBase):
    def forward(self, x, memory, memory_mask=None):
        x = x + self.attn(self.attn_norm(x))
        x = x + self.cross_attn(self.cross_attn_norm(x), memory, memory_mask)
        return x + self.ffn(self.ffn_norm(x))


class PostLN(DecoderBlockBase):
    def forward(self, x, memory, memory_mask=None):
        x = self.attn_norm(x + self.attn(x, is_causal=True))
        x = self.cross_attn_norm(x + self.cross_attn(x, memory, memory_mask))
        return self.ffn_norm(x + self.ffn(x))


class MaskIgnored(DecoderBlockBase):
    def forward(self, x, memory, memory_mask=None):
        x = x + self.attn(self.attn_norm(x), is_causal=True)
        x = x + self.cross_attn(self.cross_attn_norm(x), memory)
        return x + self.ffn(self.ffn_norm(x))


@pytest.mark.parametrize("cls", [solved("check_decoder_block", "DecoderBlock"), Solution, WithExplicitMask])
def test_decoder_block_accepts_correct(cls):
    r = check_decoder_block(cls)
    assert r.passed and r.points == 3, r.message


class DecoderViaTorch(DecoderBlockBase):
    def forward(self, x, memory, memory_mask=None):
        layer = nn.TransformerDecoderLayer(x.size(-1), 2, batch_first=True, norm_first=True)
        return layer(x, memory, tgt_is_causal=True)


class DecoderViaLibrary(DecoderBlockBase):
    def forward(self, x, memory, memory_mask=None):
        x = Block(self.attn, self.ffn, x.size(-1))(x, is_causal=True)
        return x + self.cross_attn(self.cross_attn_norm(x), memory, memory_mask)


@pytest.mark.parametrize("cls,used", [(DecoderViaTorch, "torch.nn.TransformerDecoderLayer"),
                                      (DecoderViaLibrary, "course_lib.blocks.Block")])
def test_decoder_block_refuses_delegation(cls, used):
    assert_delegates(check_decoder_block(cls), used)


def test_decoder_block_stub_and_wrong_type():
    class Stub(DecoderBlockBase):
        def forward(self, x, memory, memory_mask=None):
            raise NotImplementedError()
    assert_not_attempted(check_decoder_block(Stub))
    assert "pass the class itself" in check_decoder_block(Solution(8, 2, 8)).message


DECODER_CASES = {"cross_attends_to_decoder": CrossOnDecoder, "no_causal_mask": NotCausal, "post_ln": PostLN,
                 "memory_mask_ignored": MaskIgnored}


@pytest.mark.parametrize("key", DECODER_CASES)
def test_decoder_block_diagnoses(key):
    assert_diagnosed(check_decoder_block(DECODER_CASES[key]), key)


def test_decoder_block_misconceptions_all_tested():
    assert_all_tested("check_decoder_block", DECODER_CASES)


# ------------------------------------------------------------------ MLM mask
def mlm_loop_style(input_ids, mask_token_id, vocab_size, p=0.15, special_ids=()):
    """Another correct version: one uniform number decides 80/10/10 at once."""
    ids, labels = input_ids.clone(), torch.full_like(input_ids, -100)
    chosen = (torch.rand(input_ids.shape) < p)
    for s in special_ids:
        chosen &= input_ids != s
    labels[chosen] = input_ids[chosen]
    u = torch.rand(input_ids.shape)
    ids[chosen & (u < 0.8)] = mask_token_id
    rnd = chosen & (u >= 0.8) & (u < 0.9)
    ids[rnd] = torch.randint(0, vocab_size, (int(rnd.sum()),))
    return ids, labels


def mlm_all_mask(input_ids, mask_token_id, vocab_size, p=0.15, special_ids=()):
    chosen = (torch.rand(input_ids.shape) < p) & ~torch.isin(input_ids, torch.tensor(special_ids))
    return input_ids.masked_fill(chosen, mask_token_id), input_ids.masked_fill(~chosen, -100)


def mlm_labels_everywhere(input_ids, mask_token_id, vocab_size, p=0.15, special_ids=()):
    out, _ = mlm_loop_style(input_ids, mask_token_id, vocab_size, p, special_ids)
    return out, input_ids.clone()


def mlm_specials(input_ids, mask_token_id, vocab_size, p=0.15, special_ids=()):
    return mlm_loop_style(input_ids, mask_token_id, vocab_size, p, ())


def mlm_independent_ten(input_ids, mask_token_id, vocab_size, p=0.15, special_ids=()):
    chosen = (torch.rand(input_ids.shape) < p) & ~torch.isin(input_ids, torch.tensor(special_ids))
    masked = chosen & (torch.rand(input_ids.shape) < 0.8)
    rnd = chosen & ~masked & (torch.rand(input_ids.shape) < 0.1)
    out = torch.where(rnd, torch.randint(0, vocab_size, input_ids.shape), input_ids.masked_fill(masked, mask_token_id))
    return out, input_ids.masked_fill(~chosen, -100)


MLM = solved("check_mlm_mask")


@pytest.mark.parametrize("impl", [MLM, mlm_loop_style])
def test_mlm_accepts_correct(impl):
    r = check_mlm_mask(impl)
    assert r.passed and r.points == 3, r.message


def test_mlm_refuses_delegation():
    assert_delegates(check_mlm_mask(mlm_mask), "course_lib.models.bert.mlm_mask")


def test_mlm_stub_in_place_and_wrong_p():
    def stub(*a, **k):
        raise NotImplementedError()
    assert_not_attempted(check_mlm_mask(stub))

    def in_place(input_ids, mask_token_id, vocab_size, p=0.15, special_ids=()):
        out, labels = MLM(input_ids.clone(), mask_token_id, vocab_size, p, special_ids)
        input_ids.copy_(out)
        return out, labels
    assert "in place" in check_mlm_mask(in_place).message

    def fixed_p(input_ids, mask_token_id, vocab_size, p=0.15, special_ids=()):
        return MLM(input_ids, mask_token_id, vocab_size, 0.15, special_ids)
    r = check_mlm_mask(fixed_p)
    assert not r.passed and "expected p=0.4" in r.message


MLM_CASES = {"all_mask": mlm_all_mask, "labels_not_ignored": mlm_labels_everywhere, "specials_masked": mlm_specials,
             "ten_percent_of_rest": mlm_independent_ten}


@pytest.mark.parametrize("key", MLM_CASES)
def test_mlm_diagnoses(key):
    assert_diagnosed(check_mlm_mask(MLM_CASES[key]), key)


def test_mlm_misconceptions_all_tested():
    assert_all_tested("check_mlm_mask", MLM_CASES)


# ------------------------------------------------------------------ shift_right
def shift_clone_style(labels, decoder_start_token_id, pad_token_id):
    out = torch.empty_like(labels)
    out[:, 0] = decoder_start_token_id
    out[:, 1:] = labels[:, :-1]
    out[out == -100] = pad_token_id
    return out


def shift_keeps_ignore(labels, decoder_start_token_id, pad_token_id):
    start = torch.full((labels.size(0), 1), decoder_start_token_id, dtype=labels.dtype)
    return torch.cat([start, labels[:, :-1]], dim=1)


def shift_left(labels, decoder_start_token_id, pad_token_id):
    out = torch.roll(labels, -1, dims=1)
    out[:, -1] = pad_token_id
    return torch.where(out == -100, torch.full_like(out, pad_token_id), out)


def shift_longer(labels, decoder_start_token_id, pad_token_id):
    start = torch.full((labels.size(0), 1), decoder_start_token_id, dtype=labels.dtype)
    out = torch.cat([start, labels], dim=1)
    return torch.where(out == -100, pad_token_id, out)


def shift_in_place(labels, decoder_start_token_id, pad_token_id):
    labels[labels == -100] = pad_token_id
    return torch.cat([torch.full_like(labels[:, :1], decoder_start_token_id), labels[:, :-1]], dim=1)


@pytest.mark.parametrize("impl", [solved("check_shift_right"), shift_clone_style])
def test_shift_right_accepts_correct(impl):
    r = check_shift_right(impl)
    assert r.passed and r.points == 2, r.message


def shift_import_inside(labels, decoder_start_token_id, pad_token_id):
    from course_lib.models import t5
    return t5.shift_right(labels, decoder_start_token_id, pad_token_id)


@pytest.mark.parametrize("impl", [shift_right, shift_import_inside])
def test_shift_right_refuses_delegation(impl):
    assert_delegates(check_shift_right(impl), "course_lib.models.t5.shift_right")


def test_shift_right_stub():
    def stub(labels, decoder_start_token_id, pad_token_id):
        raise NotImplementedError()
    assert_not_attempted(check_shift_right(stub))


SHIFT_CASES = {"keeps_minus_100": shift_keeps_ignore, "shifted_left": shift_left, "keeps_last_token": shift_longer,
               "mutates_input": shift_in_place}


@pytest.mark.parametrize("key", SHIFT_CASES)
def test_shift_right_diagnoses(key):
    assert_diagnosed(check_shift_right(SHIFT_CASES[key]), key)


def test_shift_right_misconceptions_all_tested():
    assert_all_tested("check_shift_right", SHIFT_CASES)


# ------------------------------------------------------------------ GPT forward
class GPTBase(nn.Module):
    tied = True

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_positions, config.d_model)
        self.blocks = nn.ModuleList([gpt_block(config) for _ in range(config.n_layers)])
        self.final_norm = LayerNorm(config.d_model, eps=config.eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if self.tied:
            self.lm_head.weight = self.tok_emb.weight

    def run(self, ids, positions=True, causal=True, norm=True):
        x = self.tok_emb(ids)
        if positions:
            x = x + self.pos_emb(torch.arange(ids.size(1)))
        for b in self.blocks:
            x = b(x, mask=causal_mask(ids.size(1)) if causal else None)
        return self.lm_head(self.final_norm(x) if norm else x)


class GPTNoHeadModule(nn.Module):
    """Correct without an lm_head module: logits straight from the embedding matrix."""

    def __init__(self, config):
        super().__init__()
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_positions, config.d_model)
        self.blocks = nn.ModuleList([gpt_block(config) for _ in range(config.n_layers)])
        self.final_norm = LayerNorm(config.d_model, eps=config.eps)

    def forward(self, ids):
        x = self.tok_emb(ids) + self.pos_emb.weight[: ids.size(1)]
        for b in self.blocks:
            x = b(x, is_causal=True)
        return torch.einsum("btc,vc->btv", self.final_norm(x), self.tok_emb.weight)


class GoodGPT(GPTBase):
    def forward(self, ids):
        return self.run(ids)


class Untied(GPTBase):
    tied = False

    def forward(self, ids):
        return self.run(ids)


class UntiedCopied(GPTBase):
    tied = False

    def __init__(self, config):
        super().__init__(config)
        self.lm_head.weight.data = self.tok_emb.weight.data.clone()

    def forward(self, ids):
        return self.run(ids)


class NoPositions(GPTBase):
    def forward(self, ids):
        return self.run(ids, positions=False)


class NoFinalNorm(GPTBase):
    def forward(self, ids):
        return self.run(ids, norm=False)


class NotCausalGPT(GPTBase):
    def forward(self, ids):
        return self.run(ids, causal=False)


@pytest.mark.parametrize("cls", [solved("check_gpt_forward", "MiniGPT"), GoodGPT, GPTNoHeadModule])
def test_gpt_forward_accepts_correct(cls):
    r = check_gpt_forward(cls)
    assert r.passed and r.points == 3, r.message


class GPTViaLibrary(GPT):
    def forward(self, ids):
        return super().forward(ids).logits


@pytest.mark.parametrize("cls,used", [(GPTViaLibrary, "course_lib.models.gpt.GPT"),
                                      (ReferenceMiniGPT, "course_lib.checks.models.ReferenceMiniGPT")])
def test_gpt_forward_refuses_delegation(cls, used):
    assert_delegates(check_gpt_forward(cls), used)


def test_gpt_forward_stub_and_names():
    class Stub(nn.Module):
        def __init__(self, config):
            super().__init__()
            raise NotImplementedError()
    assert_not_attempted(check_gpt_forward(Stub))

    class Renamed(GoodGPT):
        def __init__(self, config):
            super().__init__(config)
            self.wte = self.tok_emb
            del self.tok_emb
    assert "tok_emb" in check_gpt_forward(Renamed).message


GPT_CASES = {"head_not_tied": Untied, "no_positions": NoPositions, "no_final_norm": NoFinalNorm,
             "not_causal": NotCausalGPT}


@pytest.mark.parametrize("key", GPT_CASES)
def test_gpt_forward_diagnoses(key):
    assert_diagnosed(check_gpt_forward(GPT_CASES[key]), key)


def test_gpt_forward_untied_copy_is_still_untied():
    assert_diagnosed(check_gpt_forward(UntiedCopied), "head_not_tied")


def test_gpt_forward_misconceptions_all_tested():
    assert_all_tested("check_gpt_forward", GPT_CASES)
