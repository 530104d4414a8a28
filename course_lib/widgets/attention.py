"""Attention explorers: lesson 01's hand-made heads, lesson 05's sparse patterns, lesson 07's real BERT, lesson 12's browser."""
from __future__ import annotations

import math

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from course_lib.widgets.core import show_live_or_static
from course_lib.attention import attention_weights, causal_mask
from course_lib.viz import plot_attention


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


# ------------------------------------------------------------------ sparse attention patterns (lesson 05)
def _pattern(name: str, T: int, window: int, stride: int):
    from course_lib.attention import sliding_window_mask
    from course_lib import efficient_attention as eff
    return {"full": lambda: torch.ones(T, T, dtype=torch.bool),
            "causal": lambda: causal_mask(T),
            "sliding window": lambda: sliding_window_mask(T, window),
            "strided (Sparse Transformer)": lambda: eff.strided_mask(T, stride),
            "fixed (Sparse Transformer)": lambda: eff.fixed_mask(T, stride),
            "window + global + random": lambda: eff.window_global_random_mask(T, window, 1, 2)}[name]()


PATTERNS = ["full", "causal", "sliding window", "strided (Sparse Transformer)", "fixed (Sparse Transformer)",
            "window + global + random"]


def pattern_explorer(T: int = 32):
    """Pick a sparse pattern, its window / stride and a number of layers L; see the mask (what one
    layer may attend to) and the receptive field after L layers (what can reach each token)."""
    from course_lib.efficient_attention import receptive_field
    from course_lib.viz import plot_mask
    pattern = W.Dropdown(options=PATTERNS, value="sliding window", description="pattern",
                         style={"description_width": "initial"})
    window = W.IntSlider(value=4, min=1, max=T, description="window w")
    stride = W.IntSlider(value=4, min=2, max=T // 2, description="stride")
    layers = W.IntSlider(value=3, min=1, max=8, description="layers L")
    out = W.Output()

    def draw(name, w, s, L, axes):
        mask = _pattern(name, T, w, s)  # (T, T)
        reach = receptive_field(mask, L)  # (T, T)
        plot_mask(mask, f"{name}: {mask.float().mean().item():.0%} of T² entries", ax=axes[0])
        plot_mask(reach, f"receptive field after L={L} layers", ax=axes[1])
        if name == "sliding window":
            axes[1].set_xlabel(f"key (last token reaches back L·(w−1) = {L * (w - 1)} tokens)")

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
            draw(pattern.value, window.value, stride.value, layers.value, axes)
            fig.tight_layout()
            plt.show(fig)

    def static_view():
        fig, axes = plt.subplots(2, len(PATTERNS) - 1, figsize=(3.2 * (len(PATTERNS) - 1), 6.6))
        for col, name in enumerate(PATTERNS[1:]):
            draw(name, 4, 4, 3, axes[:, col])
            for ax in axes[:, col]:
                ax.title.set_fontsize(8)
        fig.suptitle("static view (T=32, w=4, stride 4, L=3): top = one layer's mask, bottom = receptive field")
        fig.tight_layout()
        plt.show(fig)

    box = W.VBox([W.HBox([pattern, layers]), W.HBox([window, stride]), out])
    show_live_or_static(box, [pattern, window, stride, layers], redraw, static=static_view)


# ------------------------------------------------------------------ lesson 07: a real BERT's attention
def attention_map_explorer(tokens: list[str], maps: dict[str, tuple], static_heads: tuple = ((0, 0), (2, 5), (5, 9))):
    """Attention of every layer and head of one or more models on one sentence.
    `maps[name]` = one (H, T, T) tensor per layer (e.g. Bert(..., output_attentions=True).attentions
    of a single sentence). Pick the model, layer and head; headless, a few (layer, head) pairs
    are shown side by side for every model."""
    names = list(maps)
    L, H = len(maps[names[0]]), maps[names[0]][0].shape[0]
    model = W.ToggleButtons(options=names, value=names[0], description="model")
    layer = W.IntSlider(value=0, min=0, max=L - 1, description="layer")
    head = W.IntSlider(value=0, min=0, max=H - 1, description="head")
    out = W.Output()

    def draw(name: str, l: int, h: int, ax):
        plot_attention(maps[name][l][h], tokens, ax=ax, annotate=False, title=f"{name}: layer {l}, head {h}")

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(0.42 * len(tokens) + 2.4, 0.42 * len(tokens) + 1.6))
            draw(model.value, layer.value, head.value, ax)
            fig.tight_layout()
            plt.show(fig)

    def static_view():
        fig, axes = plt.subplots(len(names), len(static_heads), squeeze=False,
                                 figsize=(4.2 * len(static_heads), 4.2 * len(names)))
        for i, name in enumerate(names):
            for j, (l, h) in enumerate(static_heads):
                draw(name, min(l, L - 1), min(h, H - 1), axes[i, j])
        fig.suptitle("static view: the same (layer, head) pairs in each model", fontsize=9)
        fig.tight_layout()
        plt.show(fig)

    box = W.VBox([model, W.HBox([layer, head]), out])
    show_live_or_static(box, [model, layer, head], redraw, static=static_view)


# ------------------------------------------------------------------ lesson 12: browse many models and sentences
def attention_browser(examples: list[tuple[str, list[str], list]], static: tuple = ()):
    """Pick an example (a model and a sentence), a layer and a head. `examples` = a list of
    (label, tokens, maps) with maps one (H, T, T) tensor per layer; models may differ in layers
    and heads (the sliders follow). Headless: `static` = (example index, layer, head) triples
    drawn side by side (default: layer 0, head 0 of every example)."""
    labels = [e[0] for e in examples]
    pick = W.Dropdown(options=list(range(len(examples))), value=0, description="example",
                      layout=W.Layout(width="460px"))
    pick.options = [(lab, i) for i, lab in enumerate(labels)]
    layer = W.IntSlider(value=0, min=0, max=len(examples[0][2]) - 1, description="layer")
    head = W.IntSlider(value=0, min=0, max=examples[0][2][0].shape[0] - 1, description="head")
    out = W.Output()

    def draw(i: int, l: int, h: int, ax):
        label, tokens, maps = examples[i]
        plot_attention(maps[l][h], tokens, ax=ax, annotate=False, title=f"{label}\nlayer {l}, head {h}")

    def redraw(*_):
        _, tokens, maps = examples[pick.value]
        layer.max, head.max = len(maps) - 1, maps[0].shape[0] - 1  # sliders clamp their values
        with out:
            out.clear_output(wait=True)
            side = 0.28 * len(tokens) + 2.4
            fig, ax = plt.subplots(figsize=(side, side))
            draw(pick.value, layer.value, head.value, ax)
            fig.tight_layout()
            plt.show(fig)

    def static_view():
        triples = static or tuple((i, 0, 0) for i in range(len(examples)))
        fig, axes = plt.subplots(1, len(triples), squeeze=False, figsize=(5.2 * len(triples), 5.4))
        for ax, (i, l, h) in zip(axes[0], triples):
            draw(i, l, h, ax)
        fig.tight_layout()
        plt.show(fig)

    box = W.VBox([pick, W.HBox([layer, head]), out])
    show_live_or_static(box, [pick, layer, head], redraw, static=static_view)
