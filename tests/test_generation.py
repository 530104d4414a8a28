"""Sampling filters against Hugging Face's logits warpers (independent reference)."""
import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from course_lib.generation import sample_next, top_k_filter, top_p_filter


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.95, 1.0])
def test_top_p_matches_hf(p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 50, generator=g) * 3
    ours = top_p_filter(logits, p)
    theirs = TopPLogitsWarper(top_p=p, min_tokens_to_keep=1)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))


@pytest.mark.parametrize("k", [1, 5, 50, 80])
def test_top_k_matches_hf(k):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(top_k=k)(None, logits.clone()))


def test_top_p_keeps_the_token_that_crosses_p():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.4)).tolist() == [[True, False, False, False]]


def test_sample_next_greedy_seeded_and_errors():
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))
    a = sample_next(logits, 1.0, top_k=5, generator=torch.Generator().manual_seed(7))
    b = sample_next(logits, 1.0, top_k=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="temperature=-1"):
        sample_next(logits, -1)
    with pytest.raises(ValueError, match="top_p=1.5"):
        top_p_filter(logits, 1.5)
    with pytest.raises(ValueError, match="top_k=0"):
        top_k_filter(logits, 0)


def _gpt():
    from course_lib.models import GPT
    torch.manual_seed(0)
    return GPT(vocab_size=50, max_positions=96, d_model=48, n_layers=3, n_heads=4).eval()


def test_cached_generation_equals_full_recomputation():
    from course_lib.generation import generate
    model = _gpt()
    idx = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    a, b = generate(model, idx, 40, use_cache=True), generate(model, idx, 40, use_cache=False)
    assert torch.equal(a, b)
    # logits of every generated position: one full forward pass vs the cached steps
    cache = model.new_cache()
    with torch.no_grad():
        steps = [model(a[:, :7], cache=cache).logits[:, -1]]
        for t in range(7, a.size(1) - 1):
            steps.append(model(a[:, t:t + 1], cache=cache).logits[:, -1])
        full = model(a[:, :-1]).logits[:, 6:]
    err = (torch.stack(steps, 1) - full).abs().max().item()
    print(f"GPT cached vs full logits: max abs error {err:.1e}")
    assert err <= 1e-5


def test_generation_sampling_stop_tokens_and_errors():
    from course_lib.generation import generate
    model = _gpt()
    idx = torch.zeros(2, 3, dtype=torch.long)
    a = generate(model, idx, 20, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(3))
    b = generate(model, idx, 20, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (2, 23)
    long_cached = generate(model, torch.zeros(1, 90, dtype=torch.long), 20)  # runs past the context
    assert torch.equal(long_cached, generate(model, torch.zeros(1, 90, dtype=torch.long), 20, use_cache=False))


@pytest.mark.parametrize("window", [None, 6])
def test_cached_generation_equals_full_recomputation_llama(window):
    """LLaMA (RoPE with offsets, GQA) and Mistral (sliding window, rolling cache)."""
    from course_lib.generation import generate
    from course_lib.models.llama import Llama, LlamaConfig
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=50, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2,
                              d_ff=96, max_positions=128, sliding_window=window)).eval()
    idx = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(2))
    a, b = generate(model, idx, 30, use_cache=True), generate(model, idx, 30, use_cache=False)
    assert torch.equal(a, b)
    cache = model.new_cache()
    with torch.no_grad():
        steps = [model(a[:, :5], cache=cache).logits[:, -1]]
        for t in range(5, a.size(1) - 1):
            steps.append(model(a[:, t:t + 1], cache=cache).logits[:, -1])
        full = model(a[:, :-1]).logits[:, 4:]
    err = (torch.stack(steps, 1) - full).abs().max().item()
    print(f"Llama (window={window}) cached vs full logits: max abs error {err:.1e}")
    assert err <= 1e-5


def test_generation_stops_at_a_stop_token_that_greedy_decoding_would_run_past():
    from course_lib.generation import generate
    model = _gpt()
    idx = torch.randint(0, 50, (2, 4), generator=torch.Generator().manual_seed(7))  # two different prompts
    greedy = generate(model, idx, 30)  # (2, 34): no stop token
    new = greedy[:, 4:].tolist()
    stops = {new[0][-1], new[1][-1]}  # tokens each row settles on
    first = [next(i for i, t in enumerate(row) if t in stops) for row in new]  # each row's first stop
    assert first[0] != first[1] and max(first) < 29, first  # rows stop at different steps, before the end
    out = generate(model, idx, 30, stop_tokens=sorted(stops))
    assert out.shape[1] == 4 + max(first) + 1 < greedy.shape[1]  # ends when the last row stops
    for r, f in enumerate(first):
        assert torch.equal(out[r, :4 + f + 1], greedy[r, :4 + f + 1])  # the same tokens up to the stop
        assert (out[r, 4 + f:] == out[r, 4 + f]).all()  # then padded with its stop token


def test_generation_crops_the_prompt_to_the_context_of_an_experiment_model():
    """generate() reads the context length under each config's name (ExperimentLM: `context`)."""
    from course_lib.experiments import ExperimentLM
    from course_lib.generation import context_length, generate
    torch.manual_seed(0)
    model = ExperimentLM(vocab_size=30, max_positions=16, d_model=32, n_layers=1, n_heads=2, position="learned").eval()
    assert context_length(model) == 16 and context_length(_gpt()) == 96
    prompt = torch.randint(0, 30, (1, 40), generator=torch.Generator().manual_seed(1))  # longer than the table
    out = generate(model, prompt, 5, use_cache=False)
    by_hand = prompt
    with torch.no_grad():
        for _ in range(5):
            nxt = model(by_hand[:, -16:])[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            by_hand = torch.cat([by_hand, nxt], 1)
    assert torch.equal(out, by_hand)
    with pytest.raises(TypeError, match="no KV cache.*use_cache=False"):
        generate(model, prompt, 5)
