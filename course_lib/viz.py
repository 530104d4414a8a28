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
