"""Matplotlib pictures used across the lessons. Every function returns the Figure and
draws on a given `ax` when one is passed, so widgets and static cells share them."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


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
