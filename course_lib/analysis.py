"""Looking inside attention, read top to bottom: record the maps -> score each head's pattern
-> ablate heads -> roll attention out through the layers.

Nothing here edits a model: ``record_attention`` asks the course's ``MultiHeadAttention``
modules to hand over their weights (``attention.recording``) and ``ablate_heads`` puts a hook
on them and takes it off again, so both work on any course model (GPT, Bert/MiniLM, Llama, T5).

  * record:   every self-attention's weights (B, H, T_q, T_k), in the order the layers ran;
  * patterns: per head, the mean weight on the previous token, the first token (a "sink",
              Clark et al. 2019 §3), itself, nearby tokens, and how broad (entropy) it is,
              averaged over many examples: the measured version of "head 0 = previous token";
  * ablate:   zero one head's output before the output projection and see what the loss does
              (Michel et al. 2019 "Are Sixteen Heads Really Better than One?", §3);
  * rollout:  Abnar & Zuidema 2020 §3: average the heads, add the residual as 0.5·I, renormalise
              and multiply the layers, to ask "how much of token j reaches position i";
  * keys chosen by content: the weight each query puts on one key picked per query from the
              tokens themselves (the last space, the last newline, the token after the
              previous occurrence in a repeated string: an *induction* head, Olsson et al. 2022);
  * logit lens: nostalgebraist 2020: read the residual stream after every block through the
              model's own final norm and tied head, as if the model stopped there.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.attention import CrossAttention, MultiHeadAttention, recording
from course_lib.config import ConfigError, check_positive, check_range

PATTERNS = ("previous", "next", "first", "self", "local", "delimiter", "broad")
N_POSITIONAL = 6  # the patterns that are weights on chosen keys; "broad" is an entropy


# --------------------------------------------------------------------------- which modules
def attention_modules(model: nn.Module, kind: str = "self") -> list[MultiHeadAttention]:
    """The model's attention modules in registration (= layer) order. kind: 'self' or 'cross'."""
    if kind not in ("self", "cross"):
        raise ValueError(f"kind={kind!r}: expected 'self' or 'cross'.")
    want_cross = kind == "cross"
    mods = [m for m in model.modules()
            if isinstance(m, MultiHeadAttention) and isinstance(m, CrossAttention) == want_cross]
    if not mods:
        raise ValueError(f"{type(model).__name__} has no course_lib {kind}-attention modules "
                         "(MultiHeadAttention / CrossAttention); these tools only see course models.")
    return mods


# --------------------------------------------------------------------------- record
@contextmanager
def record_attention(model: nn.Module, kind: str = "self"):
    """``with record_attention(model) as maps: model(ids)`` fills the list ``maps`` with one
    (B, H, T_q, T_k) tensor per attention call, detached, in the order the layers ran. The
    model's outputs are unchanged. (``course_lib.attention.recording`` on the model's layers.)"""
    with recording(attention_modules(model, kind)) as maps:
        yield maps


@torch.no_grad()
def attention_maps(model: nn.Module, *args, kind: str = "self", **kwargs) -> list[torch.Tensor]:
    """Run ``model(*args, **kwargs)`` in eval mode; return its attention maps, one per layer."""
    was_training = model.training
    model.eval()
    try:
        with record_attention(model, kind) as maps:
            model(*args, **kwargs)
    finally:
        model.train(was_training)
    return maps


# --------------------------------------------------------------------------- head patterns
def previous_token_score(attn: torch.Tensor) -> torch.Tensor:
    """attn (..., T, T) -> (...): the mean over queries i = 1..T-1 of attn[..., i, i-1], the
    weight each token puts on the one just before it. Query 0 has no previous token, so it is
    left out of the mean (it would drag every score down by a factor (T-1)/T)."""
    return attn.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # (..., T-1) -> (...)


@dataclass
class PatternConfig:
    """window: "local" = keys 2..window positions away, either side (distances 0 and ±1 are
    "self", "previous" and "next"). broad_below: a head whose strongest positional pattern has a mean weight
    below this is called "broad" (its weight is spread out; see its entropy score)."""
    window: int = 3
    broad_below: float = 0.3

    def __post_init__(self):
        check_positive(self, "window")
        if self.window < 2:
            raise ConfigError(f"PatternConfig.window={self.window}: expected >= 2 (distances 0 and 1 "
                              "are the 'self' and 'previous' patterns).")
        check_range(self, "broad_below", 0.0, 1.0)


def pattern_selectors(T: int, window: int, lengths: torch.Tensor | None = None, causal: bool = False,
                      B: int = 1) -> torch.Tensor:
    """(6, B, T, T) bool: which keys (columns) count for each query (row), for the patterns
    previous, next, first, self, local, delimiter (PATTERNS order). "delimiter" is the sequence's
    last token ([SEP] in BERT). A causal model never sees a later token, so there "next" and
    "delimiter" are empty."""
    pos = torch.arange(T)  # (T,)
    d = pos[:, None] - pos[None, :]  # (T, T) query minus key
    first = (pos[None, :] == 0).expand(T, T)  # (T, T)
    local = (d.abs() >= 2) & (d.abs() <= window)
    nxt = (d == -1) & (not causal)  # (T, T)
    fixed = torch.stack([d == 1, nxt, first, d == 0, local])[:, None].expand(5, B, T, T)  # (5, B, T, T)
    last = torch.full((B,), T) if lengths is None else lengths.cpu()
    delim = (pos[None, :] == last[:, None] - 1)[:, None, :].expand(B, T, T)  # (B, T, T)
    if causal:
        delim = torch.zeros_like(delim)
    return torch.cat([fixed, delim[None]])  # (6, B, T, T)


def visible_keys(T: int, lengths: torch.Tensor | None, causal: bool, B: int = 1) -> torch.Tensor:
    """(B, T, T) bool: key k is visible to query q (inside the sequence, and k <= q if causal).
    Rows of padding queries are all False."""
    pos = torch.arange(T)  # (T,)
    lengths = torch.full((B,), T) if lengths is None else lengths.cpu()
    inside = pos[None, :] < lengths[:, None]  # (B, T)
    vis = inside[:, :, None] & inside[:, None, :]  # (B, T_q, T_k)
    if causal:
        vis = vis & (pos[:, None] >= pos[None, :])  # (B, T, T)
    return vis


def pattern_sums(attn: torch.Tensor, lengths: torch.Tensor | None = None, causal: bool = False,
                 window: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's maps attn (B, H, T, T) -> (sums, counts), each (7, H), in PATTERNS order.
    A query counts for a pattern when it sees >= 2 keys and >= 1 of them is in the pattern
    (query 0 has no previous token; a causal query 0 sees only itself and tells us nothing).
    "broad" is the entropy of the query's weights divided by log(number of visible keys):
    0 = all weight on one key, 1 = uniform."""
    B, H, T, _ = attn.shape
    a = attn.detach().float().cpu()  # (B, H, T, T)
    vis = visible_keys(T, lengths, causal, B)  # (B, T, T)
    n_vis = vis.sum(-1)  # (B, T)
    sel = pattern_selectors(T, window, lengths, causal, B) & vis[None]  # (6, B, T, T)
    ok = sel.any(-1) & (n_vis >= 2)[None]  # (6, B, T)
    weight = torch.einsum("bhqk,pbqk->pbhq", a, sel.float())  # (6, B, H, T)
    sums = (weight * ok[:, :, None]).sum((1, 3)).double()  # (6, H)
    counts = ok.sum((1, 2)).double()[:, None].expand(6, H)  # (6, H)
    ent = -torch.xlogy(a, a).sum(-1)  # (B, H, T), with 0·log 0 = 0
    broad_ok = (n_vis >= 2)[:, None, :]  # (B, 1, T)
    norm_ent = ent / n_vis.clamp_min(2).float().log()[:, None, :]  # (B, H, T)
    b_sum = (norm_ent * broad_ok).sum((0, 2)).double()[None]  # (1, H)
    b_cnt = broad_ok.sum((0, 2)).double().expand(1, H)  # (1, H)
    return torch.cat([sums, b_sum]), torch.cat([counts, b_cnt])  # (7, H) each


class HeadPatterns:
    """Accumulate pattern scores over many batches: ``hp.update(maps, lengths)`` per batch,
    then ``hp.scores`` (L, H, 7) and ``hp.table()``. Each score is a mean over every counted
    (example, query) pair, so long and short sentences weigh by their number of tokens."""

    def __init__(self, causal: bool, config: PatternConfig | None = None):
        self.causal, self.config = causal, config or PatternConfig()
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.n_examples = 0

    def update(self, maps: list[torch.Tensor], lengths: torch.Tensor | None = None) -> None:
        parts = [pattern_sums(m, lengths, self.causal, self.config.window) for m in maps]
        s = torch.stack([p[0] for p in parts])  # (L, 7, H)
        c = torch.stack([p[1] for p in parts])  # (L, 7, H)
        self.sums = s if self.sums is None else self.sums + s
        self.counts = c if self.counts is None else self.counts + c
        self.n_examples += maps[0].size(0)

    @property
    def scores(self) -> torch.Tensor:
        """(L, H, 7) mean scores in PATTERNS order; NaN for a pattern no query could show
        (e.g. "next" in a causal model)."""
        if self.sums is None:
            raise ValueError("no maps yet: call update(maps) with some attention maps first.")
        mean = self.sums / self.counts.masked_fill(self.counts == 0, float("nan"))  # (L, 7, H)
        return mean.transpose(1, 2).float()  # (L, 7, H) -> (L, H, 7)

    def dominant(self) -> list[list[tuple[str, float]]]:
        """Per layer, per head: (pattern, mean weight) of the strongest positional pattern,
        or ("broad", normalised entropy) when even that one is below config.broad_below."""
        out = []
        for layer in self.scores:
            row = []
            for head in layer:
                i = int(head[:N_POSITIONAL].nan_to_num(-1.0).argmax())
                if head[i] < self.config.broad_below:
                    row.append(("broad", float(head[N_POSITIONAL])))
                else:
                    row.append((PATTERNS[i], float(head[i])))
            out.append(row)
        return out

    def table(self) -> str:
        """A layer × head table of the dominant pattern and its score, e.g. 'previous 0.83'."""
        dom = self.dominant()
        H = len(dom[0])
        lines = ["layer  " + "".join(f"head {h:<10d}" for h in range(H))]
        for l, row in enumerate(dom):
            lines.append(f"{l:5d}  " + "".join(f"{name:<10s}{score:.2f} " for name, score in row))
        return "\n".join(lines)


# --------------------------------------------------------------------------- ablation
@contextmanager
def ablate_heads(model: nn.Module, heads, kind: str = "self"):
    """``with ablate_heads(model, [(layer, head), ...]): ...`` zeroes those heads' outputs: the
    head's slice of the concatenated head outputs (B, T, H·D) is set to 0 just before the
    output projection o_proj, so the head contributes nothing (not even through o_proj's
    weights); o_proj's bias and every other head are untouched."""
    mods = attention_modules(model, kind)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not 0 <= layer < len(mods):
            raise ValueError(f"layer {layer} out of range: the model has {len(mods)} {kind}-attention layers.")
        if not 0 <= head < mods[layer].n_heads:
            raise ValueError(f"head {head} out of range: layer {layer} has {mods[layer].n_heads} heads.")
        by_layer.setdefault(layer, []).append(head)

    def zeroer(hs: list[int], D: int):
        def pre(module, args):
            y = args[0].clone()  # (B, T, H*D)
            for h in hs:
                y[..., h * D:(h + 1) * D] = 0.0
            return (y,) + args[1:]
        return pre

    handles = [mods[l].o_proj.register_forward_pre_hook(zeroer(hs, mods[l].head_dim)) for l, hs in by_layer.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def head_ablation(model: nn.Module, loss_fn) -> tuple[float, torch.Tensor]:
    """Zero each head in turn; ``loss_fn(model) -> float`` on fixed data. Returns (the
    un-ablated loss, (L, H) loss change when that head alone is removed)."""
    mods = attention_modules(model)
    base = float(loss_fn(model))
    delta = torch.zeros(len(mods), max(m.n_heads for m in mods))  # (L, H)
    for l, m in enumerate(mods):
        for h in range(m.n_heads):
            with ablate_heads(model, [(l, h)]):
                delta[l, h] = float(loss_fn(model)) - base
    return base, delta


# --------------------------------------------------------------------------- rollout
def attention_rollout(maps: list[torch.Tensor], residual: float = 0.5, head_fusion: str = "mean") -> torch.Tensor:
    """Abnar & Zuidema 2020, §3 (Eq. 1): Ã_l = residual·I + (1 - residual)·fuse_h(A_l), each
    row renormalised to sum to 1; rollout = Ã_L · ... · Ã_1. maps: per layer (B, H, T, T) ->
    (B, T, T), row i = how much each input token j reaches position i at the top.
    The 0.5·I is the residual connection: half of what leaves a layer is what came in."""
    if not maps:
        raise ValueError("maps is empty: pass one (B, H, T, T) attention tensor per layer.")
    if not 0.0 <= residual < 1.0:
        raise ValueError(f"residual={residual!r}: expected a weight in [0, 1) (the paper uses 0.5).")
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion={head_fusion!r}: expected one of {sorted(fuse)}.")
    T = maps[0].size(-1)
    eye = torch.eye(T, dtype=maps[0].dtype, device=maps[0].device)  # (T, T)
    out = None
    for a in maps:
        a_hat = residual * eye + (1.0 - residual) * fuse[head_fusion](a)  # (B, T, T)
        a_hat = a_hat / a_hat.sum(-1, keepdim=True)  # rows sum to 1 again
        out = a_hat if out is None else a_hat @ out  # (B, T, T): the new layer on the left
    return out


# --------------------------------------------------------------------------- keys chosen by content
def last_occurrence(ids: torch.Tensor, token_ids, min_distance: int = 1) -> torch.Tensor:
    """ids (B, T) -> (B, T) long: for query i, the latest key j <= i - min_distance whose token is
    one of ``token_ids`` (e.g. the ids of " " and "\\n"), or -1 when there is none."""
    if ids.dim() != 2:
        raise ValueError(f"ids must be (batch, time) token ids, got shape {tuple(ids.shape)}.")
    if min_distance < 0:
        raise ValueError(f"min_distance={min_distance}: expected >= 0 (0 lets a query pick itself).")
    B, T = ids.shape
    pos = torch.arange(T, device=ids.device).expand(B, T)  # (B, T)
    hit = torch.isin(ids, torch.as_tensor(list(token_ids), device=ids.device))  # (B, T)
    latest = torch.where(hit, pos, torch.full_like(pos, -1)).cummax(1).values  # (B, T): latest j <= i
    if min_distance == 0:
        return latest
    shifted = torch.full_like(latest, -1)
    shifted[:, min_distance:] = latest[:, :T - min_distance]  # latest j <= i - min_distance
    return shifted


def repeat_keys(T: int, period: int) -> torch.Tensor:
    """(T,) long, the key an *induction* head attends to in a sequence that repeats with this
    period (x_i = x_{i-period}): query i looks at i - period + 1, the token that followed the
    previous occurrence of its own token; -1 for the first period (no earlier occurrence)."""
    if not 1 <= period < T:
        raise ValueError(f"period={period}: expected 1 <= period < T={T} (the sequence must repeat).")
    i = torch.arange(T)  # (T,)
    return torch.where(i >= period, i - period + 1, torch.full_like(i, -1))


def weight_on_keys(attn: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """attn (B, H, T, T), keys (B, T) or (T,) long with one key per query (-1 = skip the query)
    -> (H,): the mean, over every query that has a key, of the weight the head puts on it."""
    B, H, T, _ = attn.shape
    keys = keys.to(attn.device).expand(B, T)  # (B, T)
    counted = keys >= 0  # (B, T)
    if not counted.any():
        raise ValueError("no query has a key (all -1): nothing to average.")
    idx = keys.clamp_min(0)[:, None, :, None].expand(B, H, T, 1)  # (B, H, T, 1)
    w = attn.gather(-1, idx).squeeze(-1).double()  # (B, H, T): weight on the chosen key
    return ((w * counted[:, None]).sum((0, 2)) / counted.sum()).float()  # (H,)


# --------------------------------------------------------------------------- logit lens
def _lens_parts(model: nn.Module):
    parts = [getattr(model, n, None) for n in ("blocks", "final_norm", "lm_head")]
    if any(p is None for p in parts):
        raise ValueError(f"{type(model).__name__} has no blocks / final_norm / lm_head: the logit lens needs "
                         "a decoder-only course model (GPT, Llama).")
    return parts


@torch.no_grad()
def logit_lens(model: nn.Module, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    """nostalgebraist 2020: (L+1, B, T, V) logits read from the residual stream after the
    embeddings (row 0) and after each of the L blocks (rows 1..L), each put through the model's
    own final norm and LM head, as if the model ended there. Row L equals the model's logits."""
    blocks, final_norm, lm_head = _lens_parts(model)
    streams: list[torch.Tensor] = []
    hooks = [blocks[0].register_forward_pre_hook(lambda m, args: streams.append(args[0]))]
    hooks += [b.register_forward_hook(lambda m, args, out: streams.append(out[0] if isinstance(out, tuple) else out))
              for b in blocks]
    was_training = model.training
    model.eval()
    try:
        model(input_ids, **kwargs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return torch.stack([lm_head(final_norm(x)) for x in streams])  # (L+1, B, T, V)


def lens_scores(lens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lens (L+1, B, T, V), targets (B, T) -> (loss, top-1 accuracy), each (L+1,): the mean
    next-token cross-entropy (nats) and the fraction of targets that are the top logit."""
    if lens.shape[1:3] != targets.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must be (B, T) = {tuple(lens.shape[1:3])}.")
    logp = lens.float().log_softmax(-1)  # (L+1, B, T, V)
    tgt = targets[None, ..., None].expand(lens.size(0), *targets.shape, 1)  # (L+1, B, T, 1)
    loss = -logp.gather(-1, tgt).squeeze(-1).mean((1, 2))  # (L+1,)
    acc = (lens.argmax(-1) == targets[None]).float().mean((1, 2))  # (L+1,)
    return loss, acc
