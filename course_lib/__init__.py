"""Transformers from Scratch: reference implementations and teaching tools.

The package is built in layers. A module imports only from its own layer and the layers above
it in this list, never from a later one, so each layer can be read (and tested) without the
ones after it (``tests/test_layering.py`` enforces it):

1. **foundations** -- ``config`` (validation), ``kernels`` (the fused / from-scratch switch),
   ``device``, ``data`` (the corpus, batches), ``tokenizers``, ``unigram``
2. **components** -- ``attention``, ``positional``, ``positional_attention``, ``ffn``, ``norms``,
   ``efficient_attention``, ``kv_cache``, ``moe``, ``ssm``, ``quantization``, and the 2025
   decoder's pieces: ``mla`` (multi-head latent attention), ``moe_deepseek``, ``qk_norm``,
   ``attention_sinks``, ``paged_kv_cache``
3. **blocks** -- ``blocks``, ``parallel_block``
4. **models** -- ``models`` (GPT, BERT, T5, LLaMA/Mistral, DeepSeek-V3, Qwen3, OLMo 2, Gemma 3,
   GPT-OSS, sizes), ``vit``, ``mod``
5. **training, generation, interop** -- ``training``, ``generation``, ``speculative`` (speculative
   decoding), ``interop`` (Hugging Face in and out), ``models.minilm`` (a pretrained BERT, read
   through interop), ``experiments``, ``analysis``, ``distributed``, ``export``, ``pretrained``
   (the shipped Shakespeare GPT)
6. **teaching tools** -- ``checks`` (the graders), ``grade``, ``widgets``, ``viz``,
   ``course_map``, ``envcheck``, ``tools`` (building and checking the notebooks)

Layers 1-5 are the reference implementation: what a lesson points to and a test proves equal
to PyTorch and Hugging Face. Layer 6 serves the course itself; no reference module needs it.
"""
from course_lib.device import describe_device, get_device, seed_everything  # noqa: F401

__version__ = "0.1.0"
REPO_URL = "https://github.com/transformers-from-scratch/course"  # the one place that names it
