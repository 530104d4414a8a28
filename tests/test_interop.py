"""course_lib.interop: the loading machinery, its errors, and the round trip to Hugging Face."""
import pytest
import torch

from course_lib.interop import CONVERTERS, from_hf, load_mapped, to_hf
from course_lib.models.bert import Bert, BertConfig, BertForMaskedLM
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.models.llama import Llama, LlamaConfig
from course_lib.models.t5 import T5, T5Config

V = 41
MODELS = {
    "GPT (untied, d_ff 50)": lambda: GPT(GPTConfig(vocab_size=V, max_positions=16, d_model=24, n_layers=2,
                                                   n_heads=3, d_ff=50, tie_weights=False)),
    "GPT (tied)": lambda: GPT(GPTConfig(vocab_size=V, max_positions=16, d_model=24, n_layers=2, n_heads=3)),
    "LLaMA GQA": lambda: Llama(LlamaConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=6, n_kv_heads=2, d_ff=40)),
    "Mistral": lambda: Llama(LlamaConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40,
                                         sliding_window=3)),
    "BERT": lambda: Bert(BertConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=3, d_ff=40, max_positions=16)),
    "BERT MLM": lambda: BertForMaskedLM(BertConfig(vocab_size=V, d_model=24, n_layers=2, n_heads=3, d_ff=40,
                                                   max_positions=16)),
    "T5 v1.0": lambda: T5(T5Config(vocab_size=V, d_model=24, d_kv=6, d_ff=40, n_layers=2, n_heads=3, num_buckets=8,
                                   max_distance=16)),
}


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_through_hugging_face(name):
    torch.manual_seed(0)
    ours = MODELS[name]().eval()
    theirs = to_hf(ours)
    back = from_hf(theirs)
    ids = torch.randint(1, V, (2, 9))
    kw = {"decoder_input_ids": ids[:, :5]} if name.startswith("T5") else {}
    with torch.no_grad():
        a, b, c = ours(ids, **kw), theirs(input_ids=ids, **kw), back(ids, **kw)
    key = "logits" if a.logits is not None else "last_hidden_state"
    assert (a[key] - b[key]).abs().max() <= 1e-5
    assert (a[key] - c[key]).abs().max() == 0


def test_every_class_of_the_contract_is_supported():
    assert set(CONVERTERS) >= {"GPT2LMHeadModel", "BertModel", "BertForMaskedLM", "T5ForConditionalGeneration",
                               "LlamaForCausalLM", "MistralForCausalLM"}


def test_load_mapped_names_missing_and_unexpected_keys():
    model = torch.nn.Linear(2, 3)
    with pytest.raises(KeyError, match=r"missing \['bias'\], unexpected \['extra'\]"):
        load_mapped(model, {"weight": torch.zeros(3, 2), "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"course_lib shape \(3, 2\) but the HF tensor is \(2, 3\)"):
        load_mapped(model, {"weight": torch.zeros(2, 3), "bias": torch.zeros(3)})


def test_unsupported_settings_are_refused():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig as HFLlama, LlamaForCausalLM
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=8, n_embd=12, n_layer=1, n_head=2,
                                    scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="attention scale"):
        from_hf(hf)
    llama = LlamaForCausalLM(HFLlama(vocab_size=V, hidden_size=16, intermediate_size=20, num_hidden_layers=1,
                                     num_attention_heads=2, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                            "rope_theta": 10000.0}))
    with pytest.raises(ValueError, match="rope_type='dynamic' is not supported"):
        from_hf(llama)
    with pytest.raises(TypeError, match="to_hf knows"):
        to_hf(torch.nn.Linear(2, 2))
