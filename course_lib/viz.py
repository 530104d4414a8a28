"""Matplotlib pictures used across the lessons. Every function returns the Figure and
draws on a given `ax` when one is passed, so widgets and static cells share them."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


# Colour-blind-safe colours (Okabe & Ito's palette) for every plot with several series; heat maps use
# single-hue or blue-red maps (Blues, Greens, viridis, RdBu), never a red-green pair.
SAFE_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


def _safe(*axes):
    """Use the colour-blind-safe colours for the next series drawn on these axes."""
    for ax in axes:
        ax.set_prop_cycle(color=SAFE_COLOURS)


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=float)


def plot_attention(weights, keys: list[str] | None = None, queries: list[str] | None = None,
                   ax=None, title: str | None = None, annotate: bool = True):
    """Heat map of one (T_q, T_k) attention matrix: row = query, column = key."""
    w = _np(weights)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.45 * w.shape[1] + 2.2, 0.45 * w.shape[0] + 1.2))
    fig = ax.figure
    ax.imshow(w, cmap="Blues", vmin=0.0, vmax=max(1e-9, float(np.nanmax(w))))
    keys = keys or [str(j) for j in range(w.shape[1])]
    queries = queries or (keys if w.shape[0] == w.shape[1] else [str(i) for i in range(w.shape[0])])
    ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right")
    ax.set_yticks(range(len(queries)), queries)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if annotate and w.size <= 400:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                if w[i, j] >= 0.05:
                    ax.text(j, i, f"{w[i, j]:.2f}"[1:] if w[i, j] < 1 else "1", ha="center",
                            va="center", fontsize=7, color="white" if w[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    return fig


def plot_mask(mask, title: str = "mask (True = may attend)", ax=None, labels: list[str] | None = None):
    """Show a boolean mask: filled = may attend, empty = blocked."""
    m = _np(mask).astype(bool)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.35 * m.shape[1] + 1.5, 0.35 * m.shape[0] + 1.2))
    ax.imshow(m, cmap="Greens", vmin=0, vmax=1.4)
    ax.set_title(title, fontsize=10)
    if labels:
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
        ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    return ax.figure


def plot_heads(weights, tokens: list[str], titles: list[str] | None = None, annotate: bool = False):
    """One heat map per head: weights of shape (H, T, T)."""
    w = _np(weights)
    H = w.shape[0]
    fig, axes = plt.subplots(1, H, figsize=(3.2 * H, 3.4), squeeze=False)
    for h in range(H):
        plot_attention(w[h], tokens, ax=axes[0, h], annotate=annotate,
                       title=titles[h] if titles else f"head {h}")
        if h:
            axes[0, h].set_ylabel("")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ positional encodings (lesson 02)
def plot_encoding(pe, ax=None, title: str = "positional encoding"):
    """Heat map of a (T, d) position table: row = position, column = dimension."""
    p = _np(pe)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.6))
    im = ax.imshow(p, cmap="RdBu", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, fraction=0.03)
    ax.set_xlabel("dimension")
    ax.set_ylabel("position")
    ax.set_title(title, fontsize=10)
    return ax.figure


def plot_bias_heads(bias, titles: list[str] | None = None, cmap: str = "viridis"):
    """One heat map per head of an additive (H, T_q, T_k) score bias, with a shared colour scale."""
    b = _np(bias)
    H = b.shape[0]
    fig, axes = plt.subplots(1, H, figsize=(2.3 * H, 2.6), squeeze=False)
    lo, hi = float(b.min()), float(b.max())
    for h in range(H):
        im = axes[0, h].imshow(b[h], cmap=cmap, vmin=lo, vmax=hi)
        axes[0, h].set_title(titles[h] if titles else f"head {h}", fontsize=9)
        axes[0, h].set_xlabel("key")
        axes[0, h].set_ylabel("query" if h == 0 else "")
    fig.colorbar(im, ax=axes[0, :].tolist(), fraction=0.02)
    return fig


def plot_buckets(relative_position, curves: dict, ax=None, title: str = "T5 relative position buckets"):
    """Bucket id against relative position (key - query), one line per labelled bucket tensor."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.2))
    x = _np(relative_position)
    _safe(ax)
    for label, buckets in curves.items():
        ax.step(x, _np(buckets), where="mid", label=label)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("relative position (key − query)")
    ax.set_ylabel("bucket id")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax.figure


def plot_rotation_2d(q, k, m: int, n: int, freq: float, ax=None):
    """A 2-D query and key, rotated by m·freq and n·freq (one RoPE pair); arrows from the origin."""
    import math
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.6, 3.6))

    def rot(v, a):
        return (v[0] * math.cos(a) - v[1] * math.sin(a), v[0] * math.sin(a) + v[1] * math.cos(a))

    qm, kn = rot(q, m * freq), rot(k, n * freq)
    for v, style, label in ((q, dict(color="tab:blue", alpha=0.3), "q"), (k, dict(color="tab:orange", alpha=0.3), "k"),
                            (qm, dict(color="tab:blue"), f"q at m={m}"), (kn, dict(color="tab:orange"), f"k at n={n}")):
        ax.annotate("", xy=v, xytext=(0, 0), arrowprops=dict(arrowstyle="->", lw=2, **style))
        ax.text(v[0] * 1.12, v[1] * 1.12, label, fontsize=8, ha="center", va="center", color=style["color"])
    r = 1.35 * max(math.hypot(*q), math.hypot(*k))
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    score = qm[0] * kn[0] + qm[1] * kn[1]
    ax.set_title(f"m={m}, n={n}, m−n={m - n}: q·k = {score:.3f}", fontsize=9)
    return ax.figure


# ------------------------------------------------------------------ lesson 03: activations, norms, depth
def plot_activations(fns: dict, x_range: tuple[float, float] = (-4.0, 4.0), derivative: bool = True, axes=None):
    """Each activation (name -> function of a tensor) and, when `derivative`, its slope by autograd."""
    x = torch.linspace(*x_range, 401, dtype=torch.float64, requires_grad=True)
    if axes is None:
        _, axes = plt.subplots(1, 2 if derivative else 1, figsize=(11 if derivative else 5.5, 3.6), squeeze=False)
        axes = axes[0]
    _safe(*axes)
    for name, f in fns.items():
        y = f(x)
        (dy,) = torch.autograd.grad(y.sum(), x)
        axes[0].plot(_np(x), _np(y), label=name)
        if derivative:
            axes[1].plot(_np(x), _np(dy), label=name)
    axes[0].set_title("activation f(x)")
    if derivative:
        axes[1].set_title("derivative f'(x) (autograd)")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("x")
        ax.legend(fontsize=8)
    return axes[0].figure


def plot_token_stats(stats: dict, axes=None):
    """stats: label -> (mean per token, variance per token), each (T,). Two bar panels."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    n = len(stats)
    _safe(*axes)
    for i, (label, (mean, var)) in enumerate(stats.items()):
        T = len(_np(mean))
        pos = np.arange(T) + (i - (n - 1) / 2) * 0.8 / n
        axes[0].bar(pos, _np(mean), width=0.8 / n, label=label)
        axes[1].bar(pos, _np(var), width=0.8 / n, label=label)
    for ax, title in zip(axes, ("mean over channels, per token", "variance over channels, per token")):
        ax.set_title(title)
        ax.set_xlabel("token")
        ax.axhline(0, color="grey", lw=0.5)
    axes[1].axhline(1, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    return axes[0].figure


def plot_per_layer(curves: dict, ylabel: str, title: str, ax=None, logy: bool = True):
    """One line per setting (name -> values per layer, bottom layer first)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    _safe(ax)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, "o-", ms=3, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("layer (1 = next to the embeddings)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax.figure


def plot_scaling(Ts, series: dict, ylabel: str, ax=None, title: str | None = None):
    """Log-log plot of measurements against sequence length T, one line per method, with a
    T and a T² guide through the first point so the slope can be read off by eye."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.6))
    Ts = np.asarray(Ts, dtype=float)
    _safe(ax)
    for name, ys in series.items():
        ax.plot(Ts, ys, "o-", label=name)
    y0 = min(float(np.asarray(ys, dtype=float)[0]) for ys in series.values())
    ax.plot(Ts, y0 * Ts / Ts[0], ":", color="grey", label="∝ T")
    ax.plot(Ts, y0 * (Ts / Ts[0]) ** 2, "--", color="grey", label="∝ T²")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax.figure


# ------------------------------------------------------------------ lesson 08: mixture of experts
def plot_routing(weights, dropped=None, tokens: list[str] | None = None, ax=None, title: str = "routing weights"):
    """Tokens × experts heat map of the combine weights (N, E), 0 where a token did not pick the
    expert; `dropped` (N, E) bool marks assignments that overflowed their expert's capacity with ×."""
    w = _np(weights)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 * w.shape[1] + 2, 0.28 * w.shape[0] + 1.2))
    im = ax.imshow(w, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    if dropped is not None:
        rows, cols = np.nonzero(_np(dropped))
        ax.scatter(cols, rows, marker="x", color="crimson", s=30)
        title += "\n(× = dropped: the expert was full)"
    ax.set_xlabel("expert")
    ax.set_ylabel("token")
    ax.set_xticks(range(w.shape[1]))
    if tokens is not None:
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(im, ax=ax, fraction=0.05)
    return ax.figure


def plot_expert_load(load, capacity: int | None = None, ax=None, title: str = "expert load"):
    """Bar chart of assignments per expert (E,), with the capacity as a dashed line."""
    load = _np(load)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    ax.bar(range(len(load)), load, color="steelblue")
    if capacity is not None:
        ax.axhline(capacity, color="crimson", ls="--", label=f"capacity = {capacity}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(load)))
    ax.set_xlabel("expert")
    ax.set_ylabel("tokens routed")
    ax.set_title(title, fontsize=9)
    return ax.figure


def plot_expert_shares(shares, ax=None, title: str = "share of assignments per expert"):
    """Stacked area of each expert's share of the assignments over training, shares (steps, E)."""
    s = _np(shares)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    ax.stackplot(np.arange(len(s)), s.T, colors=SAFE_COLOURS[:s.shape[1]] if s.shape[1] <= 8 else None, labels=[f"expert {e}" for e in range(s.shape[1])])
    ax.set_ylim(0, 1)
    ax.set_xlim(0, len(s) - 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("share")
    ax.set_title(title, fontsize=9)
    return ax.figure


def plot_history(history, title: str = "training", ax=None, label: str = ""):
    """Train loss (thin, every step) and validation loss (dots, every evaluation) of a Trainer."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        _safe(ax)
    ax.plot(history.steps, history.train_loss, lw=0.8, alpha=0.6, label=f"{label} train".strip())
    ax.plot(history.eval_steps, history.val_loss, "o-", label=f"{label} validation".strip())
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(title)
    ax.legend()
    ax.figure.tight_layout()
    return ax.figure


# ------------------------------------------------------------------ lesson 06: model families
_ARCH_COLOURS = {"emb": "#f6d8ae", "norm": "#d6e9f8", "attn": "#f4b6b6", "cross": "#e8b6f4", "ffn": "#f9e3a3",
                 "head": "#eeeeee"}


def _stack(ax, x: float, items: list[tuple[str, str]], n_layers: str, block_range: tuple[int, int], title: str):
    """Boxes bottom -> top at column x; items[block_range] are framed as the repeated block."""
    for i, (text, kind) in enumerate(items):
        ax.add_patch(plt.Rectangle((x - 1.3, i * 0.8), 2.6, 0.62, fc=_ARCH_COLOURS[kind], ec="#555555", lw=0.8))
        ax.text(x, i * 0.8 + 0.31, text, ha="center", va="center", fontsize=7.5)
        if i:
            ax.annotate("", (x, i * 0.8), (x, i * 0.8 - 0.18), arrowprops=dict(arrowstyle="->", lw=0.7))
    lo, hi = block_range
    ax.add_patch(plt.Rectangle((x - 1.45, lo * 0.8 - 0.1), 2.9, (hi - lo) * 0.8 + 0.02, fill=False, ec="k",
                               lw=1.2, ls="--"))
    ax.text(x + 1.55, (lo + hi) * 0.4, f"× {n_layers}", va="center", fontsize=9, fontweight="bold")
    ax.text(x, len(items) * 0.8 + 0.1, title, ha="center", fontsize=9, fontweight="bold")


def _sublayers(desc: dict, cross: bool = False) -> list[tuple[str, str]]:
    norm, post = desc["norm"], desc["placement"].startswith("post")
    masked = "causal" in desc["attention"] and not desc["layout"].startswith("encoder")
    attn = "window self-attn" if "window" in desc["attention"] else ("masked " if masked else "") + "self-attn"
    extra = {"R": ", RoPE on q, k", "r": ", + rel. bias"}.get(desc["positions"][0], "")
    parts = [(f"{attn} + residual\n{desc['heads']}{extra}", "attn")]
    if cross:
        parts.append(("cross-attn + residual\nK, V from the encoder", "cross"))
    parts.append((f"FFN + residual\n{desc['ffn']}", "ffn"))
    out = []
    for text, kind in parts:
        out += [(text, kind), (norm, "norm")] if post else [(norm, "norm"), (text, kind)]
    return out


def plot_architecture(desc: dict, ax=None):
    """A block diagram drawn from ``course_lib.models.compare.describe(config)``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6 if desc["layout"] != "encoder-decoder" else 6.6, 5.2))
    pos = "" if desc["positions"].startswith(("RoPE", "relative")) else f" + {desc['positions']}"
    emb = [(f"token embedding{pos}", "emb")]
    final = [] if desc["placement"].startswith("post") else [(f"final {desc['norm']}", "norm")]
    if desc["layout"] == "encoder-decoder":
        n_enc, n_dec = desc["layers"].split("+")
        enc, dec = _sublayers({**desc, "attention": "bidir"}), _sublayers(desc, cross=True)
        _stack(ax, 0, emb + enc + final, n_enc, (1, 1 + len(enc)), "encoder")
        _stack(ax, 3.6, emb + dec + final + [(f"LM head ({desc['lm head']})", "head")], n_dec,
               (1, 1 + len(dec)), "decoder")
        ax.annotate("", (2.3, 4 * 0.8 + 0.31), (1.3, (len(enc) + 1) * 0.8 + 0.31),
                    arrowprops=dict(arrowstyle="->", color="purple", lw=1.2, connectionstyle="arc3,rad=-0.2"))
        ax.set_xlim(-1.6, 5.6)
    else:
        body = _sublayers(desc)
        head = (f"LM head ({desc['lm head']})", "head")
        _stack(ax, 0, emb + body + final + [head], desc["layers"], (1, 1 + len(body)), desc["layout"])
        ax.set_xlim(-1.6, 2.1)
    ax.set_ylim(-0.2, 9.8 * 0.8)
    ax.set_title(f"{desc['name']} ({desc['params']} parameters)", fontsize=10)
    ax.axis("off")
    return ax.figure


def plot_layer_head_grid(values, title: str, ax=None, labels=None, cmap: str = "Blues", center: bool = False,
                         fmt: str = "{:.2f}"):
    """A layer × head heat map of `values` (L, H); `labels` (L lists of H strings) printed in
    the cells (e.g. each head's dominant pattern). center=True: a diverging map around 0."""
    v = _np(values)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.7 * v.shape[1] + 2.0, 0.55 * v.shape[0] + 1.4))
    lim = float(np.nanmax(np.abs(v))) or 1.0
    im = ax.imshow(v, cmap="RdBu_r" if center else cmap, vmin=-lim if center else 0.0, vmax=lim, aspect="auto")
    ax.figure.colorbar(im, ax=ax, fraction=0.04)
    for l in range(v.shape[0]):
        for h in range(v.shape[1]):
            text = fmt.format(v[l, h]) if labels is None else f"{labels[l][h]}\n{fmt.format(v[l, h])}"
            ax.text(h, l, text, ha="center", va="center", fontsize=6.5,
                    color="white" if abs(v[l, h]) > 0.6 * lim else "black")
    ax.set_xticks(range(v.shape[1]))
    ax.set_yticks(range(v.shape[0]))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    return ax.figure
