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


# ------------------------------------------------------------------ positional encodings (lesson 02)
def rope_rotation_explorer(q=(1.0, 0.3), k=(0.8, -0.5), freq: float = 0.5):
    """One RoPE pair: move the query position m and key position n, or shift both by s. The score
    changes with m - n only."""
    from course_lib.viz import plot_rotation_2d
    m = W.IntSlider(value=2, min=0, max=12, description="m (query)")
    n = W.IntSlider(value=5, min=0, max=12, description="n (key)")
    s = W.IntSlider(value=0, min=0, max=20, description="shift both")
    out = W.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig = plot_rotation_2d(q, k, m.value + s.value, n.value + s.value, freq)
            plt.show(fig)

    def static_view():
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
        for ax, (mm, nn_) in zip(axes, [(2, 5), (9, 12), (2, 8)]):
            plot_rotation_2d(q, k, mm, nn_, freq, ax=ax)
        fig.suptitle("static view: the same gap gives the same score; run the notebook to move m, n and the shift",
                     fontsize=9)
        fig.tight_layout()
        plt.show(fig)

    box = W.VBox([W.HBox([m, n, s]), out])
    show_live_or_static(box, [m, n, s], redraw, static=static_view)


def alibi_explorer(T: int = 12):
    """ALiBi: pick the number of heads and a head; see its bias and how far a uniform query looks."""
    from course_lib.positional import alibi_bias, alibi_slopes
    heads = W.Dropdown(options=[4, 6, 8, 12, 16], value=8, description="n_heads")
    head = W.IntSlider(value=0, min=0, max=7, description="head")
    out = W.Output()

    def draw(H: int, h: int, axes):
        bias = alibi_bias(H, T, T)[h]  # (T, T)
        scores = bias.masked_fill(~causal_mask(T), float("-inf"))  # equal content scores (0) + bias, causal
        w = torch.softmax(scores, dim=-1)  # (T, T)
        slope = alibi_slopes(H)[h].item()
        axes[0].imshow(bias.masked_fill(~causal_mask(T), float("nan")), cmap="viridis")
        axes[0].set_title(f"bias of head {h} (slope {slope:.4f})", fontsize=9)
        axes[1].bar(range(T), w[-1].numpy())
        axes[1].set_title("weights of the last query (equal content scores)", fontsize=9)
        axes[1].set_xlabel("key position")

    def redraw(*_):
        head.max = heads.value - 1
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
            draw(heads.value, head.value, axes)
            fig.tight_layout()
            plt.show(fig)

    def static_view():
        fig, axes = plt.subplots(2, 2, figsize=(8, 6))
        draw(8, 0, axes[0])
        draw(8, 7, axes[1])
        fig.suptitle("static view: 8 heads, the steepest and the flattest head", fontsize=9)
        fig.tight_layout()
        plt.show(fig)

    box = W.VBox([W.HBox([heads, head]), out])
    show_live_or_static(box, [heads, head], redraw, static=static_view)


def t5_bucket_explorer(span: int = 300):
    """T5 buckets: change the number of buckets and max_distance; compare bidirectional and causal."""
    from course_lib.positional import relative_position_bucket
    from course_lib.viz import plot_buckets
    nb = W.IntSlider(value=32, min=4, max=64, step=2, description="num_buckets")
    md = W.IntSlider(value=128, min=16, max=256, step=8, description="max_distance")
    out = W.Output()
    rel = torch.arange(-span, span + 1)

    def draw(num_buckets: int, max_distance: int, ax=None):
        curves = {"bidirectional (encoder)": relative_position_bucket(rel, True, num_buckets, max_distance),
                  "causal (decoder)": relative_position_bucket(rel, False, num_buckets, max_distance)}
        return plot_buckets(rel, curves, ax=ax, title=f"{num_buckets} buckets, max_distance {max_distance}")

    def redraw(*_):
        md.min = max(16, nb.value // 2 + 1)
        with out:
            out.clear_output(wait=True)
            plt.show(draw(nb.value, md.value))

    def static_view():
        fig = draw(32, 128)
        fig.axes[0].set_title("static view: 32 buckets, max_distance 128; run the notebook to change them",
                              fontsize=9)
        plt.show(fig)

    box = W.VBox([W.HBox([nb, md]), out])
    show_live_or_static(box, [nb, md], redraw, static=static_view)


# ------------------------------------------------------------------ lesson 03: activations and norms
def activation_explorer(names: tuple[str, ...] = ("relu", "gelu", "gelu_tanh", "silu", "mish")):
    """Tick activations to compare them and their derivatives; Swish's β and the x range are sliders."""
    from course_lib.ffn import get_activation, silu
    from course_lib.viz import plot_activations

    boxes = [W.Checkbox(value=n in ("relu", "gelu", "silu"), description=n, indent=False,
                        layout=W.Layout(width="110px")) for n in names]
    beta = W.FloatSlider(value=1.0, min=0.1, max=5.0, step=0.1, description="swish β")
    span = W.FloatSlider(value=4.0, min=1.0, max=10.0, step=0.5, description="x range ±")
    out = W.Output()

    def fns(chosen, b):
        f = {n: get_activation(n) for n in chosen}
        if b != 1.0:
            f[f"swish β={b:.1f}"] = lambda x: silu(x, beta=b)
        return f

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            chosen = [c.description for c in boxes if c.value]
            plt.show(plot_activations(fns(chosen, beta.value), (-span.value, span.value)))

    def static_view():
        fig = plot_activations(fns(list(names), 1.0), (-4.0, 4.0))
        fig.suptitle("static view (all activations); run the notebook to use the controls", fontsize=9)
        plt.show(fig)

    box = W.VBox([W.HBox(boxes), W.HBox([beta, span]), out])
    show_live_or_static(box, [*boxes, beta, span], redraw, static=static_view)


def norm_explorer(T: int = 6, C: int = 16):
    """Per-token mean and variance of a toy (T, C) activation before and after LayerNorm and
    RMSNorm. Sliders add a common offset (a mean) and a spread to every token."""
    from course_lib.norms import LayerNorm, RMSNorm
    from course_lib.viz import plot_token_stats

    shift = W.FloatSlider(value=2.0, min=-5.0, max=5.0, step=0.25, description="mean offset")
    scale = W.FloatLogSlider(value=3.0, base=10, min=-2, max=1.5, step=0.05, description="spread")
    out = W.Output()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(T, C, generator=g)  # (T, C)
    per_token = torch.linspace(0.5, 2.0, T)[:, None]  # (T, 1) each token a different size

    def stats(s, k):
        x = (base * per_token * k + s * per_token)  # (T, C)
        ln, rms = LayerNorm(C), RMSNorm(C)
        with torch.no_grad():
            ys = {"input": x, "LayerNorm": ln(x), "RMSNorm": rms(x)}
        return {n: (y.mean(-1), y.var(-1, unbiased=False)) for n, y in ys.items()}

    def draw(s, k):
        fig = plot_token_stats(stats(s, k))
        fig.suptitle(f"mean offset {s:+.2f}, spread {k:.2f}: LayerNorm gives mean 0 / variance 1; "
                     "RMSNorm gives mean² + variance = 1", fontsize=9)
        return fig

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            plt.show(draw(shift.value, scale.value))

    def static_view():
        fig = draw(shift.value, scale.value)
        fig.text(0.5, -0.02, "static view (default settings); run the notebook to use the sliders",
                 ha="center", fontsize=8)
        plt.show(fig)

    box = W.VBox([W.HBox([shift, scale]), out])
    show_live_or_static(box, [shift, scale], redraw, static=static_view)


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


# ------------------------------------------------------------------ lesson 08: mixture of experts
def routing_picture(n_experts: int = 8, k: int = 2, capacity_factor: float = 1.25, skew: float = 0.0,
                    n_tokens: int = 16, d_model: int = 16, seed: int = 0):
    """Route `n_tokens` random tokens through a random router: heat map of the combine weights
    (× = dropped for lack of capacity) and the load per expert against its capacity."""
    from course_lib.moe import capacity_mask, expert_capacity, expert_load, top_k_routing
    from course_lib.viz import plot_expert_load, plot_routing
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, d_model, generator=g)  # (N, C)
    router = torch.randn(n_experts, d_model, generator=g) / math.sqrt(d_model)  # (E, C)
    logits = x @ router.T  # (N, E)
    logits[:, 0] += skew  # a router that favours expert 0
    weights, idx = top_k_routing(logits, k)  # (N, k)
    capacity = expert_capacity(n_tokens, n_experts, k, capacity_factor)
    kept = capacity_mask(idx, n_experts, capacity)  # (N, k)
    dense = torch.zeros(n_tokens, n_experts).scatter(1, idx, weights * kept)  # (N, E)
    dropped = torch.zeros(n_tokens, n_experts, dtype=torch.bool).scatter(1, idx, ~kept)  # (N, E)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    plot_routing(dense, dropped, ax=a, title=f"{n_tokens} tokens, top-{k} of {n_experts} experts")
    plot_expert_load(expert_load(idx, n_experts), capacity, ax=b,
                     title=f"{int((~kept).sum())} of {kept.numel()} assignments dropped\n"
                           f"{int((~kept.any(-1)).sum())} tokens skip every expert")
    fig.tight_layout()
    return fig


def routing_explorer():
    """Top-k routing live: the number of experts, k, the capacity factor and a skew towards expert 0."""
    n_exp = W.IntSlider(value=8, min=2, max=16, description="experts")
    k = W.IntSlider(value=2, min=1, max=4, description="top-k")
    cf = W.FloatSlider(value=1.25, min=0.25, max=3.0, step=0.25, description="capacity ×")
    skew = W.FloatSlider(value=0.0, min=0.0, max=4.0, step=0.25, description="skew → e0")
    out = W.Output()

    def redraw(*_):
        k.max = n_exp.value
        with out:
            out.clear_output(wait=True)
            plt.show(routing_picture(n_exp.value, min(k.value, n_exp.value), cf.value, skew.value))

    def static_view():
        fig = routing_picture()
        fig.suptitle("static view: 8 experts, top-2, capacity factor 1.25; run the notebook to change them",
                     fontsize=9)
        plt.show(fig)

    box = W.VBox([W.HBox([n_exp, k]), W.HBox([cf, skew]), out])
    show_live_or_static(box, [n_exp, k, cf, skew], redraw, static=static_view)


# ------------------------------------------------------------------ training: a live loss plot
def live_loss_plot(title: str = "training"):
    """A callback for `Trainer.train(callback=...)`: live, it redraws the train/val loss curves at
    every evaluation; headless it draws nothing (call `plot_history` once training is done)."""
    from course_lib.viz import plot_history
    out = W.Output()
    if not is_headless():
        display(out)

    def callback(trainer):
        if is_headless():
            return
        with out:
            out.clear_output(wait=True)
            plt.show(plot_history(trainer.history, title=title))

    return callback


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
