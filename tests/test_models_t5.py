"""course_lib.models.t5 (v1.0 and v1.1) against Hugging Face T5 with copied weights."""
import pytest
import torch
from transformers import T5Config as HFT5Config, T5ForConditionalGeneration

from course_lib.config import ConfigError
from course_lib.interop import from_hf
from course_lib.models.t5 import T5, T5Config, shift_right, t5_v1_1_config

V = 45
CONFIGS = {
    "v1.0 (ReLU, tied, rescaled head)": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "v1.1 (gated-GELU, untied head)": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "v1.1, head_dim=7 with 5 heads, 3+2 layers": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                                   d_kv=7, num_heads=5, num_layers=3, num_decoder_layers=2),
}


def _hf(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(vocab_size=V, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(HFT5Config(**{**base, **kw})).eval()


def _inputs():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(2, V, (3, 25), generator=g)  # longer than max_distance: the last bucket is used
    mask = torch.ones(3, 25, dtype=torch.long)
    mask[1, 18:] = 0
    mask[2, 6:] = 0
    labels = torch.randint(2, V, (3, 9), generator=g)
    labels[1, 6:] = -100
    return ids.masked_fill(mask == 0, 0), mask, labels


@pytest.mark.parametrize("name", CONFIGS)
def test_t5_logits_and_loss_match_hugging_face(name):
    hf = _hf(**CONFIGS[name])
    ours = from_hf(hf)
    ids, mask, labels = _inputs()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)
        mine = ours(ids, attention_mask=mask, labels=labels)
    err = (mine.logits - theirs.logits).abs().max().item()
    err_enc = (mine.encoder_last_hidden_state - theirs.encoder_last_hidden_state)[mask.bool()].abs().max().item()
    print(f"T5 {name}: logits {err:.2e}, encoder {err_enc:.2e}, loss {abs(mine.loss - theirs.loss).item():.2e}")
    assert err <= 1e-4 and err_enc <= 1e-4 and abs(mine.loss - theirs.loss) <= 1e-4
    assert ours.config.version == name[:4]


def test_v1_0_head_is_tied_and_v1_1_is_not():
    assert from_hf(_hf(**CONFIGS["v1.0 (ReLU, tied, rescaled head)"])).config.tie_weights
    assert not from_hf(_hf(**CONFIGS["v1.1 (gated-GELU, untied head)"])).config.tie_weights
    v10 = T5(T5Config(vocab_size=V, d_model=16, head_dim=4, d_ff=20, n_layers=1, n_heads=2))
    v11 = T5(t5_v1_1_config(vocab_size=V, d_model=16, head_dim=4, d_ff=20, n_layers=1, n_heads=2))
    assert v10.lm_head.weight is v10.shared.weight
    assert v11.lm_head.weight is not v11.shared.weight


def test_cached_decoding_equals_one_pass():
    hf = _hf(**CONFIGS["v1.1 (gated-GELU, untied head)"])
    ours = from_hf(hf)
    ids, mask, labels = _inputs()
    dec = shift_right(labels.clamp(min=0), 0, 0)
    with torch.no_grad():
        full = ours(ids, mask, decoder_input_ids=dec).logits
        memory = ours.encode(ids, mask)
        cache = ours.new_cache()
        steps = [ours.decode(dec[:, t:t + 1], memory, mask, cache=cache)[0] for t in range(dec.size(1))]
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5


def test_shift_right_matches_hugging_face():
    hf = _hf()
    labels = torch.tensor([[5, 6, 7, -100], [8, -100, -100, -100]])
    assert torch.equal(shift_right(labels, 0, 0), hf._shift_right(labels))
    assert torch.equal(shift_right(labels, 3, 2), torch.tensor([[3, 5, 6, 7], [3, 8, 2, 2]]))


def test_forward_without_decoder_inputs_or_labels_is_explained():
    model = T5(T5Config(vocab_size=V, d_model=16, head_dim=4, d_ff=20, n_layers=1, n_heads=2))
    with pytest.raises(ValueError, match="decoder_input_ids, or labels"):
        model(torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("kw,match", [
    (dict(head_dim=0), r"T5Config.head_dim=0: expected a positive integer \(e.g. head_dim=4\)"),
    (dict(n_decoder_layers=0), "T5Config.n_decoder_layers=0: expected a positive integer"),
    (dict(decoder_start_token_id=50), r"T5Config.decoder_start_token_id=50: expected an integer in \[0, 45\)"),
    (dict(pad_token_id=-1), r"T5Config.pad_token_id=-1: expected an integer in \[0, 45\) \(a token id"),
    (dict(pad_token_id=0.0), r"T5Config.pad_token_id=0.0: expected an integer"),
    (dict(dropout=-0.1), r"T5Config.dropout=-0.1: expected a number in \[0.0, 1.0\)"),
    (dict(activation="gelu2"), r"T5Config.activation='gelu2': expected one of \('relu', .*'gelu_new'.*\) \(T5 v1.0"),
])
def test_bad_configs_say_how_to_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        T5Config(**{"vocab_size": V, **kw})


def test_model_takes_a_config_or_overrides_not_both():
    cfg = T5Config(vocab_size=V, d_model=16, head_dim=4, d_ff=32, n_layers=1, n_heads=2)
    assert T5(cfg).config is cfg
    with pytest.raises(TypeError, match=r"either a T5Config or keyword overrides to T5, not both.*\['n_heads'\]"):
        T5(cfg, n_heads=4)
    with pytest.raises(TypeError, match="T5 expects a T5Config, got BertConfig"):
        from course_lib.models.bert import BertConfig
        T5(BertConfig())
