"""Speculative decoding (course_lib.speculative, re-exported by course_lib.generation).

* greedy: the output equals the target's own greedy decoding, checked against Hugging Face's
  `generate` on the same weights (independent) and against course_lib's `generate`;
* sampling: the joint frequencies of the first three new tokens over 4,000 seeded draws match
  the target's exact distribution (a chi-square test from scipy at alpha = 0.001), and the same
  test rejects two wrong acceptance rules (negative controls), so it can fail;
* bad input: a draft with another vocabulary, too long a request, k < 1.
"""
import itertools
from types import SimpleNamespace

import pytest
import torch
from helpers import hf_llama
from scipy.stats import chisquare
from torch import nn

from course_lib.config import ConfigError
from course_lib.generation import (
    SpeculativeStats,
    generate,
    speculative_accept,
    speculative_generate,
)
from course_lib.models import GPT, Llama
from course_lib.speculative import truncated_draft

ALPHA = 0.001  # the significance level of every distribution test here


# ------------------------------------------------------------------ greedy: exactly the target's output
def _course_llama_pair():
    """HF's tiny LLaMA (3 layers), the same weights in course_lib, and its first layer as the draft."""
    from course_lib.interop import from_hf
    hf_target = hf_llama(seed=0, num_hidden_layers=3)
    target = from_hf(hf_target).eval()
    return hf_target, target, truncated_draft(target, 1)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_equals_hugging_face_greedy_of_the_target(k):
    hf_target, target, draft = _course_llama_pair()
    ids = torch.randint(2, 53, (2, 5), generator=torch.Generator().manual_seed(k))
    stats = SpeculativeStats()
    ours = speculative_generate(target, draft, ids, 40, k=k, stats=stats)
    with torch.no_grad():
        theirs = hf_target.generate(ids, max_new_tokens=40, min_new_tokens=40, do_sample=False,
                                    attention_mask=torch.ones_like(ids), pad_token_id=0)
    assert ours.shape == (2, 45) and torch.equal(ours, theirs)
    assert torch.equal(ours, generate(target, ids, 40))  # and course_lib's own greedy decoding
    assert stats.generated == 2 * 40 == stats.accepted + stats.rounds
    assert sum(stats.accepted_per_round) == stats.accepted and max(stats.accepted_per_round) <= k
    assert 0 < stats.acceptance_rate < 1  # a different draft: some guesses kept, some rejected
    assert stats.rejected == sum(n < min(k, 40 - done - 1) for n, done in _rounds(stats, 2))
    assert stats.acceptance_rate <= stats.alpha < 1


def _rounds(stats, rows):
    """(kept guesses, tokens generated before the round) of every round, rows decoded one after another."""
    done = 0
    for n in stats.accepted_per_round:
        yield n, done
        done = (done + n + 1) % 40  # each row makes 40 tokens, then the next row starts from 0


def test_greedy_gpt_with_itself_as_draft_accepts_everything():
    torch.manual_seed(0)
    target = GPT(vocab_size=11, max_positions=64, d_model=32, n_layers=2, n_heads=4).eval()
    ids = torch.randint(0, 11, (3, 4), generator=torch.Generator().manual_seed(0))
    stats = SpeculativeStats()
    out = speculative_generate(target, target, ids, 30, k=4, stats=stats)
    assert torch.equal(out, generate(target, ids, 30))
    # every round but the last ones guesses k and keeps them all: k + 1 tokens per target forward
    assert stats.acceptance_rate == 1.0 and stats.rounds == 3 * 6 and stats.tokens_per_round == 30 / 6
    assert "100.0%" in str(stats)


def test_sampling_is_seeded_and_leaves_the_models_mode_alone():
    torch.manual_seed(0)
    target = GPT(vocab_size=11, max_positions=64, d_model=32, n_layers=2, n_heads=4)
    draft = GPT(vocab_size=11, max_positions=64, d_model=16, n_layers=1, n_heads=2)
    ids = torch.zeros(2, 3, dtype=torch.long)
    a = speculative_generate(target, draft, ids, 20, temperature=0.8, generator=torch.Generator().manual_seed(5))
    b = speculative_generate(target, draft, ids, 20, temperature=0.8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (2, 23) and target.training and draft.training
    assert torch.equal(speculative_generate(target, draft, ids, 0), ids)


# ------------------------------------------------------------------ sampling: the target's distribution
class CountingCache:
    """A cache that only counts the tokens it has seen (what the toy model needs for positions)."""

    def __init__(self):
        self.seq_len = 0

    def truncate(self, length: int) -> None:
        self.seq_len = min(self.seq_len, length)


class ToyLM(nn.Module):
    """logits of the token after position t = table[t, token at t]: a model whose next-token
    distribution depends on the previous token *and* on the position (so a cache rolled back to
    the wrong length changes what it predicts), cheap enough for thousands of draws, and whose exact
    sequence distribution we can enumerate."""

    def __init__(self, vocab_size=4, positions=12, seed=0, scale=1.5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(positions, vocab_size, vocab_size, generator=g) * scale)
        self.config = SimpleNamespace(vocab_size=vocab_size, max_positions=positions)

    def new_cache(self):
        return [CountingCache()]

    def forward(self, ids, cache=None):
        offset = 0 if cache is None else cache[0].seq_len
        if cache is not None:
            cache[0].seq_len += ids.size(1)
        positions = torch.arange(offset, offset + ids.size(1))  # (T,)
        return SimpleNamespace(logits=self.table[positions[None, :], ids])  # (B, T, V)


def exact_distribution(model, prompt, n, temperature):
    """P(x_1 .. x_n | prompt) of the model sampling alone, for every continuation: (V**n,)."""
    V = model.config.vocab_size
    conts = torch.tensor(list(itertools.product(range(V), repeat=n)))  # (V**n, n)
    seqs = torch.cat([prompt.expand(len(conts), -1), conts], dim=1)  # (V**n, T + n)
    with torch.no_grad():
        logp = torch.log_softmax(model(seqs).logits.double() / temperature, dim=-1)  # (V**n, T + n, V)
    T = prompt.size(1)
    steps = logp[:, T - 1:T - 1 + n].gather(-1, conts[..., None])[..., 0]  # (V**n, n)
    return steps.sum(-1).exp()  # (V**n,), in itertools.product order


def chi_square(samples, probs, V):
    """Pearson's chi-square of the observed continuations (N, n) against probs (V**n,); cells
    expected to hold fewer than 5 draws are pooled into one, as the test requires."""
    n = samples.size(1)
    cells = (samples * V ** torch.arange(n - 1, -1, -1)).sum(-1)  # (N,): index in product order
    observed = torch.bincount(cells, minlength=V ** n).double()
    expected = probs * len(samples) / probs.sum()
    small = expected < 5
    observed = torch.cat([observed[~small], observed[small].sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    return chisquare(observed.numpy(), expected.numpy())


def always_accept(p, q, draft_tokens, generator=None):
    """Wrong rule: keep every guess (the output then follows the draft)."""
    k = draft_tokens.numel()
    return k, torch.multinomial(p[k], 1, generator=generator)[0]


def resample_from_target(p, q, draft_tokens, generator=None):
    """Wrong rule: the right acceptance test, but a rejected guess is replaced by a draw from p
    instead of the residual max(0, p - q) (biased towards the draft's favourite tokens)."""
    n, _ = speculative_accept(p, q, draft_tokens, generator)
    return n, torch.multinomial(p[n], 1, generator=generator)[0]


N_DRAWS, N_NEW = 4_000, 3  # 64 cells of about 60 draws each (power: see the negative controls)


def _draws(rule, k, temperature, seed=0):
    target, draft = ToyLM(seed=0), ToyLM(seed=1)
    prompt = torch.tensor([[1, 3]])
    stats = SpeculativeStats()
    out = speculative_generate(target, draft, prompt.expand(N_DRAWS, -1), N_NEW, k=k, temperature=temperature,
                               generator=torch.Generator().manual_seed(seed), stats=stats, accept=rule)
    return out[:, prompt.size(1):], exact_distribution(target, prompt, N_NEW, temperature), stats


@pytest.mark.parametrize("k,temperature", [(2, 1.0), (1, 0.7)])
def test_sampled_sequences_follow_the_target_distribution(k, temperature):
    samples, probs, stats = _draws(None, k, temperature)
    result = chi_square(samples, probs, V=4)
    print(f"k={k}, T={temperature}: chi2={result.statistic:.1f}, p={result.pvalue:.3f}, {stats}")
    assert result.pvalue > ALPHA, result
    assert 0.2 < stats.acceptance_rate < 0.9  # the draft differs from the target: the rule had work to do


@pytest.mark.parametrize("rule", [always_accept, resample_from_target])
def test_the_distribution_test_rejects_a_wrong_rule(rule):
    samples, probs, _ = _draws(rule, 2, 1.0)
    result = chi_square(samples, probs, V=4)
    assert result.pvalue < ALPHA, result


def test_acceptance_rule_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    q = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    # guess 1 (p = q) is always kept; guess 2 has p = 0: always rejected, replaced from max(0, p - q) = token 1
    for seed in range(5):
        assert speculative_accept(p, q, torch.tensor([0, 2]), torch.Generator().manual_seed(seed)) == (1, 1)
    # greedy = one-hot distributions: a guess is kept exactly when it is the target's argmax
    onehot = torch.eye(3)
    assert speculative_accept(onehot[[1, 2, 0]], onehot[[1, 2]], torch.tensor([1, 2])) == (2, 0)
    assert speculative_accept(onehot[[1, 0, 0]], onehot[[1, 2]], torch.tensor([1, 2])) == (1, 0)


# ------------------------------------------------------------------ bad input
def test_a_draft_with_another_vocabulary_is_a_config_error():
    target = GPT(vocab_size=11, max_positions=32, d_model=16, n_layers=1, n_heads=2)
    draft = GPT(vocab_size=12, max_positions=32, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(ConfigError, match="vocab_size=12 differs from the target's vocab_size=11.*tokenizer"):
        speculative_generate(target, draft, torch.zeros(1, 2, dtype=torch.long), 5)


def test_other_bad_input_says_how_to_fix_it():
    model = GPT(vocab_size=11, max_positions=16, d_model=16, n_layers=1, n_heads=2)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="ask for at most 13 new tokens"):
        speculative_generate(model, model, ids, 14)
    assert speculative_generate(model, model, ids, 13).shape == (1, 17)
    with pytest.raises(ValueError, match="k=0"):
        speculative_generate(model, model, ids, 5, k=0)
    with pytest.raises(ValueError, match=r"ids\[None\]"):
        speculative_generate(model, model, ids[0], 5)
    windowed = Llama(vocab_size=11, max_positions=32, d_model=16, n_layers=1, n_heads=2, sliding_window=6)
    assert speculative_generate(windowed, model, ids[:, :2], 5).shape == (1, 7)  # within the window: fine
    with pytest.raises(ValueError, match="sliding_window=6.*within 7 tokens"):
        speculative_generate(windowed, model, ids[:, :2], 6)
    with pytest.raises(TypeError, match="new_cache"):
        speculative_generate(model, nn.Linear(2, 2), ids, 5)
