"""course_lib.models.bert against Hugging Face BERT with copied weights."""
import pytest
import torch
from transformers import BertConfig as HFBertConfig, BertForMaskedLM as HFBertForMaskedLM, BertModel

from course_lib.config import ConfigError
from course_lib.interop import from_hf
from course_lib.models.bert import Bert, BertConfig, BertForMaskedLM, mean_pool

V = 57


def _hf_config(**kw):
    base = dict(vocab_size=V, hidden_size=30, num_hidden_layers=2, num_attention_heads=3, intermediate_size=44,
                max_position_embeddings=20, type_vocab_size=2, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
    return HFBertConfig(**{**base, **kw})


def _inputs(B=3, T=12):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, V, (B, T), generator=g)
    types = (torch.arange(T) >= T // 2).long().expand(B, T)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask, types


@pytest.mark.parametrize("kw", [{}, {"hidden_act": "gelu_new", "layer_norm_eps": 1e-5, "num_attention_heads": 5}])
def test_bert_model_matches_hugging_face(kw):
    torch.manual_seed(0)
    hf = BertModel(_hf_config(**kw)).eval()
    ours = from_hf(hf)
    ids, mask, types = _inputs()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        mine = ours(ids, attention_mask=mask, token_type_ids=types)
    keep = mask.bool()
    err_h = (mine.last_hidden_state - theirs.last_hidden_state)[keep].abs().max().item()
    err_p = (mine.pooler_output - theirs.pooler_output).abs().max().item()
    print(f"BertModel {kw or 'default'}: hidden {err_h:.2e}, pooler {err_p:.2e}")
    assert err_h <= 1e-4 and err_p <= 1e-4


def test_bert_mlm_matches_hugging_face_and_is_tied():
    torch.manual_seed(0)
    hf = HFBertForMaskedLM(_hf_config()).eval()
    ours = from_hf(hf)
    assert isinstance(ours, BertForMaskedLM)
    assert ours.mlm_head.decoder.weight is ours.bert.embeddings.tok_emb.weight
    ids, mask, types = _inputs()
    with torch.no_grad():
        err = (ours(ids, mask, types).logits - hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits)
    err = err[mask.bool()].abs().max().item()
    print(f"BertForMaskedLM: max abs logit error {err:.2e}")
    assert err <= 1e-4


def test_attention_maps_are_returned_per_layer():
    model = Bert(BertConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=4, d_ff=32)).eval()
    ids, mask, _ = _inputs()
    out = model(ids, mask, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (3, 4, 12, 12)
    assert out.attentions[1][2, :, :, 3:].abs().max() == 0  # nobody attends to padding
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(3, 4, 12))


def test_mean_pool_ignores_padding():
    h = torch.arange(12.0).view(1, 4, 3)
    assert torch.equal(mean_pool(h, torch.tensor([[1, 1, 0, 0]])), h[0, :2].mean(0, keepdim=True))


def test_bert_base_has_110m_parameters():
    assert sum(p.numel() for p in Bert(BertConfig()).parameters()) == 109_482_240


@pytest.mark.parametrize("kw,match", [
    (dict(d_model=30, n_heads=4), r"BertConfig.d_model=30 is not divisible by n_heads=4: each head gets .*"
                                  r"\(e.g. d_model=32\)"),
    (dict(n_heads=0), "BertConfig.n_heads=0: expected a positive integer"),
    (dict(type_vocab_size=0), "BertConfig.type_vocab_size=0: expected a positive integer"),
    (dict(pad_token_id=99), r"BertConfig.pad_token_id=99: expected an integer in \[0, 57\)"),
    (dict(dropout=1.0), r"BertConfig.dropout=1.0: expected a number in \[0.0, 1.0\)"),
    (dict(activation="tanhh"), r"BertConfig.activation='tanhh': expected one of \(.*'gelu'.*\) \(BERT: 'gelu'\)"),
])
def test_bad_configs_say_how_to_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        BertConfig(**{"vocab_size": V, **kw})


@pytest.mark.parametrize("model", [Bert, BertForMaskedLM])
def test_models_take_a_config_or_overrides_not_both(model):
    cfg = BertConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_positions=8)
    assert model(cfg).config is cfg and model(**vars(cfg)).config == cfg
    with pytest.raises(TypeError, match=rf"either a BertConfig or keyword overrides to {model.__name__}, not both"):
        model(cfg, n_layers=2)
    with pytest.raises(TypeError, match=f"{model.__name__} expects a BertConfig, got dict"):
        model(vars(cfg))
