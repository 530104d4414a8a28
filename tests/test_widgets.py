"""Live widgets (outside a browser): every move of a control draws the figure exactly once, even
when the redraw adjusts another control (fewer heads -> the head slider's max shrinks and clamps
its value, which fires that slider's observer from inside the redraw)."""
import matplotlib
import pytest

matplotlib.use("Agg")

from course_lib.widgets import components, core  # noqa: E402


@pytest.fixture
def live(monkeypatch):
    """Pretend to be a live notebook; collect displayed widgets; count figures shown."""
    shown, displayed = [], []
    monkeypatch.setenv("COURSE_LIB_HEADLESS", "0")
    monkeypatch.setattr(core, "display", displayed.append)
    monkeypatch.setattr(components.plt, "show", lambda fig=None: shown.append(fig))
    yield shown, displayed
    matplotlib.pyplot.close("all")


def test_alibi_explorer_draws_once_per_move(live):
    shown, displayed = live
    components.alibi_explorer()
    heads, head = displayed[0].children[0].children  # VBox([HBox([heads, head]), out])
    assert len(shown) == 1  # the first view
    head.value = 7
    assert len(shown) == 2
    heads.value = 4  # head 7 no longer exists: the slider clamps to 3 inside this redraw
    assert head.max == 3 and head.value == 3
    assert len(shown) == 3, "one move of the dropdown must draw one figure"
    heads.value = 16
    assert head.max == 15 and len(shown) == 4


def test_guard_still_lets_later_moves_through(live):
    import ipywidgets as W
    shown, _ = live
    a, b = W.IntSlider(value=5, max=10), W.IntSlider(value=0, max=10)
    calls = []

    def redraw(*_):
        b.max = a.value  # clamps b when a shrinks
        calls.append((a.value, b.value))

    core.show_live_or_static(W.VBox([a, b]), [a, b], redraw, static=lambda: None)
    b.value = 5
    a.value = 2
    b.value = 1
    assert calls == [(5, 0), (5, 5), (2, 2), (2, 1)]
