"""Shared by every explorer: headless detection and live-or-static display."""
from __future__ import annotations

import os

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display


def is_headless() -> bool:
    return os.environ.get("COURSE_LIB_HEADLESS") == "1"


def show_live_or_static(box: W.Widget, controls: list[W.Widget], redraw, static) -> None:
    """Display `box`; live, draw now and on every change of `controls`; headless, call
    `static()` to show the default view as an ordinary figure instead."""
    display(box)
    if is_headless():
        static()
        return
    guarded = _once(redraw)  # one guard shared by every control
    for c in controls:
        c.observe(guarded, names="value")
    guarded()


def _once(redraw):
    """A redraw that ignores calls made while it runs. A redraw often adjusts a dependent control
    (fewer heads -> a smaller `head.max`, which clamps its value); that change fires the observer
    again from inside the redraw, and without this guard the figure would be drawn twice per
    move, which is what made the dropdowns feel slow."""
    busy = False

    def guarded(*args):
        nonlocal busy
        if busy:
            return
        busy = True
        try:
            redraw(*args)
        finally:
            busy = False

    return guarded


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
