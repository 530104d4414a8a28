"""Mixture-of-Depths (Raposo et al. 2024), read top to bottom:
router -> top-k over the sequence -> the wrapped block on the chosen tokens only -> scatter back
-> a GPT that alternates MoD and dense blocks -> a causal predictor for sampling -> FLOPs.

A MoD block spends its compute on only k = capacity·T tokens of each sequence (§3.1-3.3). A
linear *router* scores every token, r_i = w·x_i; the k best go through the wrapped block, in
their original order; every other token skips it along the residual stream, unchanged:

    x_i' = x_i + g(r_i) · (f(X̃)_i)   if token i is among the top k,     x_i' = x_i   otherwise

where f(X̃) is what the block adds to the residual stream, computed on the selected tokens X̃
alone (they attend only to one another). Multiplying by the router weight (§3.4) is what puts
the router on the gradient path: without it, top-k is a hard choice with no gradient. The
paper multiplies by r itself; we squash it with a sigmoid by default (gate="sigmoid"), so the
multiplier stays in (0, 1); gate="raw" is the paper's, gate="none" switches it off.

Sampling caveat (§3.5): whether token i is in the top k depends on the scores of tokens that
come *after* it, which an autoregressive model has not seen yet. The paper's fixes: an
auxiliary BCE loss that pushes the router's own output above/below 0 for in/out tokens, or a
small auxiliary MLP *predictor* trained (with stop-gradient) to guess "is this token in the
top k?" from the token alone. We implement the predictor (``fit_predictors``) and route with
it at inference (``model.set_routing("predictor")``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.config import ConfigError, check_choice, check_positive
from course_lib.models.gpt import GPT, GPTConfig

GATES = ("sigmoid", "raw", "none")
ROUTINGS = ("topk", "predictor")


# --------------------------------------------------------------------------- capacity and top-k
def check_capacity(capacity: float) -> float:
    """Capacity is the fraction of tokens a MoD block processes: a number in (0, 1]."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or not 0 < capacity <= 1:
        raise ConfigError(f"capacity={capacity!r}: expected the fraction of tokens the block processes, "
                          "a number in (0, 1] (the paper uses 0.125; 1.0 is a dense block).")
    return float(capacity)


def capacity_tokens(T: int, capacity: float) -> int:
    """k = capacity·T rounded to the nearest integer, at least 1 (a 1e-9 nudge keeps 0.3·10 at 3)."""
    return max(1, min(T, math.floor(check_capacity(capacity) * T + 0.5 + 1e-9)))


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores (B, T) -> indices (B, k) of the k highest scores of each row, in *sequence order*
    (sorted by position, not by score), so causal attention among them stays causal."""
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values  # (B, k)


# --------------------------------------------------------------------------- the MoD block
class MoDBlock(nn.Module):
    """Wrap any residual block ``block(x, **kwargs) = x + f(x)`` (B, T, C) -> (B, T, C) so that
    only the router's top ``capacity``·T tokens of each sequence go through it."""

    def __init__(self, block: nn.Module, d_model: int, capacity: float = 0.125, *, gate: str = "sigmoid",
                 predictor_hidden: int | None = None):
        super().__init__()
        self.capacity, self.gate = check_capacity(capacity), gate
        check_choice(self, "gate", GATES, hint="'sigmoid' squashes the router weight into (0, 1); 'raw' is the "
                     "paper's r; 'none' gives the router no gradient")
        self.block = block
        self.router = nn.Linear(d_model, 1, bias=False)  # r_i = w·x_i, one score per token
        nn.init.normal_(self.router.weight, std=0.02)
        hidden = predictor_hidden or d_model
        # §3.5: a small MLP guessing "is token i in the top k?" from x_i alone (causal)
        self.predictor = nn.Sequential(nn.Linear(d_model, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.routing = "topk"
        self.last_scores: torch.Tensor | None = None  # (B, T) router scores of the last call
        self.last_selected: torch.Tensor | None = None  # (B, T) bool: which tokens went through

    def gate_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """The multiplier g(r) of the block's contribution, (B, k) -> (B, k)."""
        if self.gate == "sigmoid":
            return torch.sigmoid(scores)
        return scores if self.gate == "raw" else torch.ones_like(scores)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, cache=None, **kwargs) -> torch.Tensor:
        if cache is not None:
            raise ValueError("a MoD block has no KV-cached decoding here: which tokens it processes changes "
                             "with the tokens that follow. Call the model without a cache.")
        B, T, C = x.shape
        scores = self.router(x).squeeze(-1)  # (B, T)
        self.last_scores = scores.detach()
        if self.routing == "topk":
            idx = top_k_indices(scores, capacity_tokens(T, self.capacity))  # (B, k)
            self.last_selected = torch.zeros(B, T, dtype=torch.bool, device=x.device).scatter(1, idx, True)
            return self._process(x, idx, scores, mask, kwargs)
        chosen = self.predictor(x.detach()).squeeze(-1) > 0  # (B, T): a causal decision per token
        self.last_selected = chosen
        rows = []  # each sequence keeps its own number of tokens: one sequence at a time
        for b in range(B):
            idx = chosen[b].nonzero().squeeze(-1)[None]  # (1, k_b), in sequence order
            m = None if mask is None else mask[b:b + 1]
            rows.append(self._process(x[b:b + 1], idx, scores[b:b + 1], m, kwargs) if idx.numel() else x[b:b + 1])
        return torch.cat(rows, dim=0)  # (B, T, C)

    def _process(self, x: torch.Tensor, idx: torch.Tensor, scores: torch.Tensor,
                 mask: torch.Tensor | None, kwargs: dict) -> torch.Tensor:
        """Gather the tokens `idx` (B, k), run the block on them, scatter the gated update back."""
        B, T, C = x.shape
        idx_c = idx[..., None].expand(B, idx.size(1), C)  # (B, k, C)
        x_sel = x.gather(1, idx_c)  # (B, k, C): the chosen tokens, in sequence order
        if mask is not None:
            kwargs = {**kwargs, "mask": _gather_key_mask(mask, idx, T)}
        update = self.block(x_sel, **kwargs) - x_sel  # (B, k, C): f(X̃), what the block adds
        g = self.gate_weights(scores.gather(1, idx))  # (B, k)
        return x.scatter(1, idx_c, x_sel + g[..., None] * update)  # (B, T, C): others untouched


def _gather_key_mask(mask: torch.Tensor, idx: torch.Tensor, T: int) -> torch.Tensor:
    """A key-padding mask (B, 1, 1, T) restricted to the chosen keys -> (B, 1, 1, k)."""
    if mask.dim() != 4 or mask.shape[1:3] != (1, 1) or mask.size(-1) != T:
        raise ValueError(f"a MoD block takes only a key-padding mask of shape (B, 1, 1, {T}), got "
                         f"{tuple(mask.shape)}; causal masking is the block's own is_causal=True.")
    return mask.expand(idx.size(0), 1, 1, T).gather(-1, idx[:, None, None, :])  # (B, 1, 1, k)


# --------------------------------------------------------------------------- a MoD GPT
class MoDGPT(GPT):
    """The course GPT with every other block (1, 3, 5, ...) wrapped in a MoDBlock, as the paper
    interleaves routed and dense blocks (its experiments route every other block). With the same seed its
    blocks start from exactly the weights of ``GPT(config)``: only the routers are new."""

    def __init__(self, config: GPTConfig | None = None, *, capacity: float = 0.125, every: int = 2,
                 gate: str = "sigmoid", **overrides):
        super().__init__(config, **overrides)
        self.every = every  # 2 = every other block is MoD
        check_positive(self, "every")
        self.capacity = check_capacity(capacity)
        for i in range(every - 1, len(self.blocks), every):
            self.blocks[i] = MoDBlock(self.blocks[i], self.config.d_model, capacity, gate=gate)

    def mod_blocks(self) -> list[MoDBlock]:
        return [b for b in self.blocks if isinstance(b, MoDBlock)]

    def set_routing(self, routing: str) -> None:
        """"topk" (training; looks at the whole sequence) or "predictor" (causal, for sampling)."""
        if routing not in ROUTINGS:
            raise ValueError(f"routing={routing!r}: expected one of {ROUTINGS}.")
        for b in self.mod_blocks():
            b.routing = routing

    def new_cache(self, batch_size: int | None = None) -> list:
        raise ValueError("MoDGPT has no KV cache in this course: generate by re-running the whole prefix.")


# --------------------------------------------------------------------------- the causal predictor
def collect_routing(model: MoDGPT, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run `batches` (an iterable of id tensors (B, T)) with top-k routing; return, for each MoD
    block, (its inputs (N, C), whether top-k chose each token (N,) bool), N = all tokens seen."""
    blocks = model.mod_blocks()
    inputs: list[list[torch.Tensor]] = [[] for _ in blocks]
    chosen: list[list[torch.Tensor]] = [[] for _ in blocks]

    def record(j: int):
        def hook(module, args, output):  # returns None: the block's output is left as it is
            inputs[j].append(args[0].detach().flatten(0, 1))  # (B·T, C)
            chosen[j].append(module.last_selected.flatten())  # (B·T,)
        return hook

    hooks = [b.register_forward_hook(record(j)) for j, b in enumerate(blocks)]
    was_training = model.training
    model.eval()
    model.set_routing("topk")
    try:
        with torch.no_grad():
            for ids in batches:
                model(ids)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [(torch.cat(i), torch.cat(c)) for i, c in zip(inputs, chosen)]


def fit_predictors(model: MoDGPT, batches, steps: int = 300, lr: float = 3e-3) -> list[float]:
    """Train each MoD block's predictor with BCE on "was this token in the top k?" (§3.5).

    Its input is detached, so — as in the paper — its loss never changes the language model; we
    therefore fit it after training, on the trained router's choices. Returns each block's final
    BCE loss."""
    losses = []
    for block, (x, target) in zip(model.mod_blocks(), collect_routing(model, batches)):
        opt = torch.optim.AdamW(block.predictor.parameters(), lr=lr)
        for _ in range(steps):
            logits = block.predictor(x).squeeze(-1)  # (N,)
            loss = F.binary_cross_entropy_with_logits(logits, target.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
    return losses


def predictor_agreement(model: MoDGPT, batches) -> list[dict[str, float]]:
    """Per MoD block: how often the causal predictor (logit > 0) agrees with top-k, its recall of
    the top-k tokens, and the fraction of tokens it would send through the block."""
    out = []
    for block, (x, target) in zip(model.mod_blocks(), collect_routing(model, batches)):
        with torch.no_grad():
            guess = block.predictor(x).squeeze(-1) > 0  # (N,)
        out.append({"accuracy": (guess == target).float().mean().item(),
                    "recall": (guess & target).sum().item() / max(1, target.sum().item()),
                    "fraction_processed": guess.float().mean().item()})
    return out


# --------------------------------------------------------------------------- FLOPs
def block_flops(n_tokens: int, d_model: int, d_ff: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one pre-LN GPT block on n tokens that attend to each
    other: q, k, v, o projections 4·C² per token; FFN 2·C·F per token; attention scores QKᵀ and
    the weighted sum AV, n² · C each (the course computes the full n × n matrix and masks it)."""
    n, C, F_ = n_tokens, d_model, d_ff
    return 2 * n * (4 * C * C + 2 * C * F_) + 2 * 2 * n * n * C


def gpt_forward_flops(cfg: GPTConfig, T: int, capacity: float | None = None, every: int = 2) -> dict[str, int]:
    """Forward matmul FLOPs of one sequence of T tokens through a GPT or (with `capacity`) a
    MoDGPT: {"blocks", "router", "head", "total"}. Norms, softmax and GELU are not counted."""
    per_block = []
    router = 0
    for i in range(cfg.n_layers):
        if capacity is not None and i % every == every - 1:
            per_block.append(block_flops(capacity_tokens(T, capacity), cfg.d_model, cfg.d_ff))
            router += 2 * T * cfg.d_model  # the router's C -> 1 projection, on every token
        else:
            per_block.append(block_flops(T, cfg.d_model, cfg.d_ff))
    head = 2 * T * cfg.d_model * cfg.vocab_size
    return {"blocks": sum(per_block), "router": router, "head": head, "total": sum(per_block) + router + head}
