"""A small driver for one notebook open in JupyterLab (the server runs with
--LabApp.expose_app_in_browser, so `window.jupyterapp` reaches the notebook's model and kernel).
The model tells what ran and what each output is; the DOM tells what the learner sees."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# Finds the notebook panel open on `path` in the main area.
_PANEL = """const panel = (path) => { for (const w of window.jupyterapp.shell.widgets('main')) {
  if (w.context && w.context.path === path && w.content && w.content.widgets) return w; } return null; };"""

_READY = _PANEL + """([path]) => { const p = panel(path);
  const k = p && p.context.isReady && p.sessionContext.session && p.sessionContext.session.kernel;
  return !!(k && k.status === 'idle' && k.connectionStatus === 'connected'); }"""

_RUN_ALL = _PANEL + """async ([path, ms]) => { const app = window.jupyterapp, p = panel(path);
  app.shell.activateById(p.id);
  await app.commands.execute('notebook:clear-all-cell-outputs');
  const done = app.commands.execute('notebook:run-all-cells');
  return String(await Promise.race([done, new Promise(r => setTimeout(() => r('timeout'), ms))])); }"""

_IDLE = _PANEL + """([path]) => { const p = panel(path);
  return p.sessionContext.session.kernel.status === 'idle'; }"""

# One entry per code cell: execution count and a summary of each output (no image data).
_CELLS = _PANEL + """([path]) => panel(path).content.widgets.filter(c => c.model.type === 'code').map(c => ({
  source: c.model.sharedModel.getSource().slice(0, 200), count: c.model.executionCount,
  outputs: c.model.outputs.toJSON().map(o => ({type: o.output_type, mimes: Object.keys(o.data || {}),
    text: o.output_type === 'stream' ? String(o.text) : (o.data && o.data['text/plain'] ? String(o.data['text/plain']) : ''),
    ename: o.ename || '', evalue: o.evalue || ''})) }))"""

# Tags the page element of each widget output in the model with data-course-view="n" (the cell's
# output children follow its model outputs one to one); returns what each element shows.
_VIEWS = _PANEL + """([path]) => { let n = 0; const views = [];
  for (const c of panel(path).content.widgets) {
    if (c.model.type !== 'code') continue;
    const kids = c.node.querySelectorAll('.jp-Cell-outputArea > .jp-OutputArea-child');
    c.model.outputs.toJSON().forEach((o, i) => {
      if (!(o.data && o.data['""" + WIDGET_MIME + """'])) return;
      const el = kids[i] && kids[i].querySelector('.jp-OutputArea-output');
      if (!el) { views.push({rendered: false, text: 'no element in the page'}); n++; return; }
      el.setAttribute('data-course-view', String(n++));
      views.push({rendered: !!el.querySelector('.jupyter-widgets, [class*="widget-"]'),
                  text: el.innerText.slice(0, 200)});
    }); }
  return views; }"""

# What a widget view shows besides its controls: images, Output-widget text, HTML widgets.
_CONTENT = """(n) => { const v = document.querySelector(`[data-course-view="${n}"]`);
  const parts = [...v.querySelectorAll('img')].map(i => i.src)
    .concat([...v.querySelectorAll('.widget-output')].map(o => o.innerText))
    .concat([...v.querySelectorAll('.widget-html-content')].map(h => h.innerHTML));
  let h = 5381; const s = parts.join('|');
  for (let i = 0; i < s.length; i++) h = ((h * 33) ^ s.charCodeAt(i)) >>> 0;
  return `${parts.length}:${s.length}:${h}`; }"""

CONTROLS = "select, .noUi-handle, .widget-toggle-buttons button, .widget-checkbox input"


@dataclass
class Lab:
    page: object
    base: str
    token: str
    path: str

    def open(self, timeout_s: float = 240) -> None:
        self.page.goto(f"{self.base}/lab/tree/{self.path}?reset&token={self.token}")
        self.page.wait_for_function("() => !!window.jupyterapp", timeout=timeout_s * 1000)
        self.page.wait_for_function(_READY, arg=[self.path], timeout=timeout_s * 1000, polling=500)

    def run_all(self, timeout_s: float = 600) -> str:
        result = self.page.evaluate(_RUN_ALL, [self.path, int(timeout_s * 1000)])
        self.wait_idle(timeout_s)
        return result

    def wait_idle(self, timeout_s: float = 120) -> None:
        self.page.wait_for_function(_IDLE, arg=[self.path], timeout=timeout_s * 1000, polling=250)

    def cells(self) -> list[dict]:
        return self.page.evaluate(_CELLS, [self.path])

    def views(self) -> list[dict]:
        return self.page.evaluate(_VIEWS, [self.path])

    def view(self, n: int):
        return self.page.locator(f'[data-course-view="{n}"]')

    def content(self, n: int) -> str:
        return self.page.evaluate(_CONTENT, n)

    def wait_rendered(self, expected: int, timeout_s: float = 90) -> list[dict]:
        """Views once every widget output has finished rendering (or the time is up)."""
        deadline = time.monotonic() + timeout_s
        while True:
            views = self.views()
            done = len(views) >= expected and all(v["rendered"] and "Loading widget" not in v["text"]
                                                  for v in views)
            if done or time.monotonic() > deadline:
                return views
            time.sleep(0.5)

    def move_a_control(self, n: int, timeout_s: float = 45) -> tuple[str | None, list[str]]:
        """Move the view's controls one at a time until its output changes. Returns what changed
        it (e.g. 'slider 1 -> 1.1'; None when nothing did) and the moves that changed nothing."""
        controls, idle = self.view(n).locator(CONTROLS), []
        for i in range(min(controls.count(), 4)):
            before = self.content(n)
            moved = _move(controls.nth(i))
            if moved is None:
                continue
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.content(n) != before:
                    self.wait_idle(timeout_s)
                    return moved, idle
                time.sleep(0.25)
            idle.append(moved)
        return None, idle

    def close_without_saving(self) -> None:
        self.page.evaluate(_PANEL + """async ([path]) => { const p = panel(path);
            if (!p) return; p.context.model.dirty = false;
            await p.sessionContext.shutdown(); p.dispose(); }""", [self.path])


def _move(control) -> str | None:
    """One step of a dropdown, slider, toggle-buttons or checkbox; None if it cannot move."""
    tag = control.evaluate("e => e.tagName.toLowerCase()")
    cls = control.get_attribute("class") or ""
    if tag == "select":
        options = control.locator("option").all_inner_texts()
        current = control.evaluate("e => e.selectedIndex")
        if len(options) < 2:
            return None
        target = (current + 1) % len(options)
        control.select_option(index=target)
        return f"dropdown {options[current]!r} -> {options[target]!r}"
    if "noUi-handle" in cls:
        now, top = (float(control.get_attribute(a) or 0) for a in ("aria-valuenow", "aria-valuemax"))
        control.focus()
        control.press("ArrowLeft" if now >= top else "ArrowRight")
        return f"slider {now:g} -> {control.get_attribute('aria-valuenow')}"
    if tag == "button":
        if "mod-active" in cls:
            return None
        control.click()
        return f"toggle button {control.inner_text()!r}"
    if tag == "input":
        control.click()
        return "checkbox"
    return None


def summary(cells: list[dict]) -> str:
    return json.dumps([{k: c[k] for k in ("count", "source")} for c in cells], indent=1)[:3000]
