"""Model families built from course_lib's parts: GPT-2, BERT, T5 (v1.0 / v1.1), LLaMA / Mistral.

    from course_lib.models import GPT, GPTConfig, Llama, LlamaConfig, Bert, BertConfig, T5, T5Config

``course_lib.interop.from_hf`` / ``to_hf`` convert from / to Hugging Face ``transformers``;
``course_lib.models.sizes`` counts parameters and FLOPs from a config; ``course_lib.models.minilm``
loads the real all-MiniLM-L6-v2 offline.
"""
from course_lib.models.bert import Bert, BertConfig, BertForMaskedLM, mean_pool, mlm_mask, sentence_embedding
from course_lib.models.common import ModelOutput, count_params
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.models.llama import Llama, LlamaConfig, mistral_config
from course_lib.models.t5 import T5, T5Config, shift_right, t5_v1_1_config

__all__ = ["Bert", "BertConfig", "BertForMaskedLM", "GPT", "GPTConfig", "Llama", "LlamaConfig", "ModelOutput", "T5",
           "T5Config", "count_params", "mean_pool", "mistral_config", "mlm_mask", "sentence_embedding", "shift_right",
           "t5_v1_1_config"]
