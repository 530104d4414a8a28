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
