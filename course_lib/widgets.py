"""ipywidgets explorers. Each builds its controls, draws the default view at once, and
redraws on every change. Run headlessly (CI, `course_lib.tools.notebooks`; the environment
variable COURSE_LIB_HEADLESS=1) there is no front end to move the controls, so instead of
drawing into the widget it shows the default view as a plain figure below it: the stored
notebook then shows a picture wherever it is read, and nbval compares a stable output."""
from __future__ import annotations

import math
import os

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from course_lib.attention import attention_weights, causal_mask
from course_lib.viz import plot_attention


def is_headless() -> bool:
    return os.environ.get("COURSE_LIB_HEADLESS") == "1"


def show_live_or_static(box: W.Widget, controls: list[W.Widget], redraw, static) -> None:
    """Display `box`; live, draw now and on every change of `controls`; headless, call
    `static()` to show the default view as an ordinary figure instead."""
    display(box)
    if is_headless():
        static()
        return
    for c in controls:
        c.observe(redraw, names="value")
    redraw()


# ------------------------------------------------------------------ a toy sentence with hand-made heads
TOY_TOKENS = ["the", "cat", "sat", "on", "the", "mat", "because", "it", "was", "tired"]
TOY_HEADS = ["previous token", "'it' looks for a noun", "same word", "first token"]


def toy_attention_heads(d_head: int = 16) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Queries and keys (H=4, T=10, D) for the toy sentence, built by hand so that each head
    has one readable job. Returns (tokens, q, k)."""
    T, toks = len(TOY_TOKENS), TOY_TOKENS
    g = torch.Generator().manual_seed(0)
    q = torch.zeros(4, T, d_head)
    k = torch.zeros(4, T, d_head)
    a = 3.0 * math.sqrt(d_head)  # strength: a clear but not one-hot pattern at the standard scale
    # head 0: query i matches key i-1 (position codes in dims 0..T-1)
    for i in range(T):
        k[0, i, i % d_head] = 1.0
        q[0, i, (i - 1) % d_head] = a if i else 0.0
    # head 1: nouns carry a "noun" feature in their keys; the pronoun asks for it
    noun = {"cat": 1.0, "mat": 0.75}
    for i, t in enumerate(toks):
        k[1, i, 0] = noun.get(t, 0.0)
        q[1, i, 0] = a if t == "it" else 0.0
    # head 2: a random code per word type; a query finds keys of the same word
    codes = {t: torch.randn(d_head, generator=g) for t in dict.fromkeys(toks)}
    for i, t in enumerate(toks):
        c = codes[t] / codes[t].norm()
        q[2, i], k[2, i] = a * c, c
    # head 3: every query is drawn to the first position (an "attention sink")
    k[3, 0, 0] = 1.0
    q[3, :, 0] = 0.6 * a
    return list(toks), q, k


def attention_explorer(tokens: list[str] | None = None, q: torch.Tensor | None = None,
                       k: torch.Tensor | None = None, head_names: list[str] | None = None):
    """Pick a head, scale the scores (temperature) and toggle the causal mask; see the weights."""
    if q is None:
        tokens, q, k = toy_attention_heads()
        head_names = TOY_HEADS
    H, T, D = q.shape
    head_names = head_names or [f"head {h}" for h in range(H)]
    head = W.Dropdown(options=[(n, h) for h, n in enumerate(head_names)], value=0, description="head")
    temp = W.FloatLogSlider(value=1.0, base=10, min=-1.5, max=1.5, step=0.05,
                            description="× 1/√d scale", style={"description_width": "initial"})
    causal = W.Checkbox(value=False, description="causal mask")
    out = W.Output()

    def draw(h: int, mult: float, is_causal: bool, ax=None):
        mask = causal_mask(T) if is_causal else None
        w = attention_weights(q[h], k[h], mask, scale=mult / math.sqrt(D))  # (T, T)
        ent = -(w.clamp_min(1e-12).log() * w).sum(-1).mean().item()
        return plot_attention(w, tokens, ax=ax, title=f"{head_names[h]} — scale ×{mult:.2f}, "
                                                      f"mean entropy {ent:.2f} nats")

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig = draw(head.value, temp.value, causal.value)
            plt.show(fig)

    def static_view():  # a static view of every head at the default settings
        fig, axes = plt.subplots(1, H, figsize=(3.6 * H, 3.6))
        for h in range(H):
            draw(h, 1.0, False, ax=axes[h])
            axes[h].set_title(head_names[h], fontsize=9)
        fig.suptitle("static view (default settings); run the notebook to use the controls")
        fig.tight_layout()
        plt.show(fig)

    box = W.VBox([W.HBox([head, temp, causal]), out])
    show_live_or_static(box, [head, temp, causal], redraw, static=static_view)
