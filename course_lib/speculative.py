"""Speculative decoding (Leviathan et al. 2023, "Fast Inference from Transformers via
Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding with
Speculative Sampling"): a small draft model guesses k tokens, the large target model checks
all k in one forward pass, and a rejection-sampling rule keeps a prefix of the guesses.

Read top to bottom:

1. ``probabilities``: the distribution a model samples from at a temperature (one-hot at 0).
2. ``speculative_accept``, the acceptance rule (Leviathan et al. Algorithm 1; Chen et al.
   Algorithm 2). Draft token x_i was drawn from the draft's q_i; keep it with probability
   min(1, p_i(x_i) / q_i(x_i)), where p_i is the target's distribution at the same place. At the
   first rejection, draw a replacement from the residual norm(max(0, p_i - q_i)) and stop. If all
   k are kept, draw one bonus token from p_{k+1}, which the target's forward computed anyway.
   Whatever q is, each emitted token is distributed exactly as the target would sample it
   (Leviathan et al. Appendix A.1): the rule changes the speed, not the output distribution.
   At temperature 0 both distributions are one-hot, and the rule keeps a draft token exactly
   when it is the target's argmax, so the output is the target's greedy output.
3. ``speculative_generate``: the loop. Both models keep KV caches (lesson 11); after each round
   both caches are rolled back to the accepted length (``truncate_cache``), because the
   rejected guesses must not stay in them.
4. ``SpeculativeStats``: what a run measured (acceptance rate, tokens per target call), and
   ``truncated_draft``: a draft for free, the target's first layers and its own LM head (the
   early-exit drafts of "self-speculative" decoding, Zhang et al. 2024).

Every round costs k draft steps and one target forward of k + 1 tokens and produces between 1
and k + 1 tokens, so it pays when the draft is cheap and agrees with the target often.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from course_lib.config import ConfigError


# --------------------------------------------------------------------------- 1. distributions
def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits (..., V) -> the distribution sampled from: softmax(logits / T), or at T = 0 the
    one-hot of the argmax (greedy decoding as a distribution)."""
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.size(-1)).float()  # (..., V)
    return F.softmax(logits.float() / temperature, dim=-1)  # (..., V)


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token id (a 0-dim tensor) from probs (V,)."""
    return torch.multinomial(probs, 1, generator=generator)[0]


# --------------------------------------------------------------------------- 2. the acceptance rule
def speculative_accept(p: torch.Tensor, q: torch.Tensor, draft_tokens: torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[int, torch.Tensor]:
    """The rejection-sampling rule for one round.

    p (k+1, V): the target's distributions at the k draft positions and one more;
    q (k, V): the draft's distributions the draft tokens were drawn from; draft_tokens (k,).
    Returns (n, token): the first n draft tokens are kept and `token` follows them (drawn from
    the residual at position n when n < k, or the bonus token from p[k] when n = k)."""
    k = draft_tokens.numel()
    rows = torch.arange(k, device=p.device)
    p_x, q_x = p[rows, draft_tokens], q[rows, draft_tokens]  # (k,), (k,): probability of each guess
    u = torch.rand(k, generator=generator, device=p.device)  # (k,)
    rejected = (u * q_x >= p_x).nonzero()  # u >= p/q, i.e. not accepted with probability min(1, p/q)
    if len(rejected) == 0:
        return k, _draw(p[k], generator)  # all k kept: the bonus token comes from the target
    n = int(rejected[0])
    residual = (p[n] - q[n]).clamp(min=0)  # (V,): where the target wants more than the draft gave
    return n, _draw(residual / residual.sum(), generator)


# --------------------------------------------------------------------------- 3. caches and the loop
def truncate_cache(cache: list, length: int) -> None:
    """Roll back a model's KV caches (one per layer) to their first `length` tokens, in place.
    A cache object may bring its own ``truncate(length)``; a ``KVCache`` is cut here."""
    for layer in cache:
        if hasattr(layer, "truncate"):
            layer.truncate(length)
            continue
        if layer.seq_len <= length:
            continue
        if int(layer.positions[0]) > 0:  # a rolling cache (sliding window) dropped its oldest tokens
            raise ValueError("speculative decoding cannot roll back a rolling (sliding-window) KV cache that "
                             "has already dropped tokens; keep prompt + new tokens within the window, or use "
                             "a draft and target without sliding_window.")
        layer.k, layer.v = layer.k[:, :, :length], layer.v[:, :, :length]  # (B, H_kv, length, D)
        layer.positions = layer.key_positions = layer.positions[:length]
        layer.seq_len = length


@dataclass
class SpeculativeStats:
    """What ``speculative_generate`` measured; pass one in as ``stats=`` and it is filled in
    (it accumulates over calls). ``accepted_per_round`` lists how many guesses each round kept."""
    rounds: int = 0  # = target forward calls
    drafted: int = 0  # draft tokens proposed (= draft forward calls)
    accepted: int = 0  # draft tokens kept
    generated: int = 0  # tokens appended (kept guesses + one target token per round)
    rejected: int = 0  # rounds that ended in a rejection (the guesses after it were never examined)
    accepted_per_round: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """Fraction of draft tokens the target kept (the alpha of Leviathan et al. §3.1, per token)."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def alpha(self) -> float:
        """Estimated probability that one examined guess is kept (Leviathan et al.'s alpha): kept /
        (kept + rejected). Unlike ``acceptance_rate`` it does not fall as k grows."""
        return self.accepted / (self.accepted + self.rejected) if self.accepted + self.rejected else float("nan")

    @property
    def tokens_per_round(self) -> float:
        """New tokens per target forward (plain decoding: 1)."""
        return self.generated / self.rounds if self.rounds else float("nan")

    def __str__(self) -> str:
        return (f"{self.rounds} rounds, {self.accepted}/{self.drafted} draft tokens accepted "
                f"({self.acceptance_rate:.1%}; alpha {self.alpha:.2f}), {self.tokens_per_round:.2f} tokens per target forward")


def truncated_draft(model, n_layers: int):
    """A copy of a course_lib GPT or Llama that keeps only its first `n_layers` blocks (then its
    final norm and LM head): a draft that shares the target's vocabulary and needs no training."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model.config, "n_layers"):
        raise TypeError(f"truncated_draft needs a course_lib model with .blocks and config.n_layers "
                        f"(GPT, Llama), got {type(model).__name__}.")
    if not 1 <= n_layers <= len(blocks):
        raise ValueError(f"n_layers={n_layers}: expected 1 .. {len(blocks)} (the target's layers).")
    draft = copy.deepcopy(model)
    draft.blocks = draft.blocks[:n_layers]
    draft.config = replace(model.config, n_layers=n_layers)
    return draft


def _vocab_size(model) -> int | None:
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _check_models(target, draft, T: int, max_new_tokens: int) -> None:
    for role, model in (("target", target), ("draft", draft)):
        if not hasattr(model, "new_cache"):
            raise TypeError(f"the {role} ({type(model).__name__}) has no KV cache (no new_cache() method); "
                            "speculative decoding needs a cached model such as course_lib's GPT or Llama.")
        window = getattr(getattr(model, "config", None), "sliding_window", None)
        if isinstance(window, int) and T + max_new_tokens - 1 > window:
            raise ValueError(f"the {role} has sliding_window={window}: its rolling KV cache drops old tokens, and "
                             "rejected guesses could then not be rolled back. Keep prompt + max_new_tokens within "
                             f"{window + 1} tokens, or use models without sliding_window.")
        limit = getattr(getattr(model, "config", None), "max_positions", None)
        if isinstance(limit, int) and T + max_new_tokens - 1 > limit:
            raise ValueError(f"prompt ({T} tokens) + max_new_tokens ({max_new_tokens}) needs positions up to "
                             f"{T + max_new_tokens - 2}, but the {role}'s context is max_positions={limit}: "
                             f"ask for at most {limit + 1 - T} new tokens or crop the prompt.")
    v_target, v_draft = _vocab_size(target), _vocab_size(draft)
    if v_target is not None and v_draft is not None and v_target != v_draft:
        raise ConfigError(f"the draft's vocab_size={v_draft} differs from the target's vocab_size={v_target}: "
                          "the acceptance rule compares both models' probabilities token by token, so they must "
                          "share one tokenizer. Train or choose a draft with the target's tokenizer "
                          f"(vocab_size={v_target}).")


def _last_logits(model, ids: torch.Tensor, cache: list, n: int) -> torch.Tensor:
    """Feed ids (1, T_new) through the cached model; logits (n, V) of its last n positions."""
    out = model(ids, cache=cache)
    return getattr(out, "logits", out)[0, -n:]  # (n, V)


def _speculate_one(target, draft, ids: torch.Tensor, max_new_tokens: int, k: int, temperature: float,
                   generator: torch.Generator | None, accept: Callable, stats: SpeculativeStats) -> torch.Tensor:
    """Speculative decoding of one sequence ids (1, T) -> (1, T + max_new_tokens)."""
    target_cache, draft_cache = target.new_cache(), draft.new_cache()
    target_len = draft_len = 0  # tokens each cache holds; both always hold a prefix of `seq`
    seq, goal = ids, ids.size(1) + max_new_tokens
    while seq.size(1) < goal:
        k_now = min(k, goal - seq.size(1) - 1)  # never guess past the end (the round adds k_now + 1 at most)
        q = []
        for _ in range(k_now):  # 1. the draft guesses k_now tokens, one cached step each
            logits = _last_logits(draft, seq[:, draft_len:], draft_cache, 1)[0]  # (V,)
            draft_len = seq.size(1)
            q.append(probabilities(logits, temperature))  # (V,)
            guess = logits.argmax(-1) if temperature == 0 else _draw(q[-1], generator)
            seq = torch.cat([seq, guess.view(1, 1)], dim=1)  # (1, T+1)
        # 2. the target scores the last accepted token and every guess in one forward pass
        logits = _last_logits(target, seq[:, target_len:], target_cache, k_now + 1)  # (k_now + 1, V)
        p = probabilities(logits, temperature)  # (k_now + 1, V)
        guesses = seq[0, seq.size(1) - k_now:]  # (k_now,)
        q = torch.stack(q) if q else p.new_zeros(0, p.size(-1))  # (k_now, V)
        if q.size(-1) != p.size(-1):
            raise ConfigError(f"the draft scores {q.size(-1)} tokens but the target {p.size(-1)}: the draft must "
                              "share the target's tokenizer (vocabulary) for the acceptance rule to compare them.")
        n, token = accept(p, q, guesses, generator)  # 3. the acceptance rule
        n = int(n)
        seq = torch.cat([seq[:, :seq.size(1) - k_now + n], torch.as_tensor(token).view(1, 1).to(seq)], dim=1)  # (1, T')
        # 4. roll both caches back: they keep every token except the newest, which is fed next round
        target_len, draft_len = seq.size(1) - 1, min(draft_len, seq.size(1) - 1)
        truncate_cache(target_cache, target_len)
        truncate_cache(draft_cache, draft_len)
        stats.rounds += 1
        stats.drafted += k_now
        stats.accepted += n
        stats.rejected += n < k_now
        stats.generated += n + 1
        stats.accepted_per_round.append(n)
    return seq


@torch.no_grad()
def speculative_generate(target, draft, input_ids: torch.Tensor, max_new_tokens: int, k: int = 4,
                         temperature: float = 0.0, generator: torch.Generator | None = None, *,
                         stats: SpeculativeStats | None = None, accept: Callable | None = None) -> torch.Tensor:
    """Append `max_new_tokens` tokens to input_ids (B, T) as the target would sample them, using
    `draft` to guess `k` tokens per target forward. Returns (B, T + max_new_tokens), the layout of
    ``course_lib.generation.generate``.

    temperature 0 is greedy: the result equals ``generate(target, input_ids, max_new_tokens)``
    (up to argmax ties that the different shapes of the forward passes could round apart).
    Rows are decoded one after another (each accepts a different number of guesses).
    stats: a ``SpeculativeStats`` to fill in. accept: the acceptance rule, default
    ``speculative_accept`` (an exercise passes its own)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, time) token ids, got shape "
                         f"{tuple(getattr(input_ids, 'shape', ()))}; add a batch axis with ids[None].")
    if input_ids.size(1) == 0:
        raise ValueError("input_ids is empty: give at least one prompt token (e.g. a newline).")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens}: expected the number of tokens to generate (>= 0).")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: expected the number of draft tokens per round, a positive int (e.g. 4).")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: expected >= 0 (0 = greedy).")
    _check_models(target, draft, input_ids.size(1), max_new_tokens)
    if input_ids.size(0) == 0 or max_new_tokens == 0:
        return input_ids.clone()
    accept = speculative_accept if accept is None else accept
    stats = SpeculativeStats() if stats is None else stats
    if temperature == 0 and generator is None:  # greedy needs no randomness: keep the global RNG untouched
        generator = torch.Generator(input_ids.device).manual_seed(0)
    modes = target.training, draft.training
    target.eval(), draft.eval()
    try:
        rows = [_speculate_one(target, draft, input_ids[b:b + 1], max_new_tokens, k, temperature, generator,
                               accept, stats) for b in range(input_ids.size(0))]
    finally:
        target.train(modes[0]), draft.train(modes[1])
    return torch.cat(rows, dim=0)  # (B, T + max_new_tokens)
