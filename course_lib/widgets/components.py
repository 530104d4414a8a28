"""Component explorers: positional encodings (02), activations and norms (03), expert routing (08)."""
from __future__ import annotations

import math

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from course_lib.attention import causal_mask
from course_lib.widgets.core import show_live_or_static


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
