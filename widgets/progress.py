"""Live run progress in a notebook: an event subscriber that owns an ipywidgets view.

`RunProgress` consumes the runner's events (tunecell.events) and nothing else: it knows no Trainer, no torch. It
may be called from a worker thread (a `--background` run, a Trainer callback), so it only ever sets widget traits
(which ipykernel publishes from any thread) and never prints nor enters an `Output` context; its state is guarded
by a lock. Training updates (bar, step text, the header's elapsed time, loss curve) are throttled by time, with a
trailing render so the view never stays behind the last step, and PassFinished / RunFinished always render the final
state.

At the end, `finish(result)` adds the static summary to the live view (`fail(error)` the error of a run that ended
without a result), and `static_summary(result)` gives the mimebundle (text/plain + text/html) the magic displays so
a saved notebook keeps the summary without widget state.
"""
from __future__ import annotations

import html
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import ipywidgets as widgets

from tunecell.events import Event, Log, MetricResult, PassFinished, PassStarted, RunFinished, RunStarted, TrainStep

__all__ = ["RunProgress", "PassRow", "static_summary", "loss_curve_svg", "STATUS_COLOURS"]

STATUS_COLOURS = {
    "queued": "#57606a",
    "running": "#0969da",
    "done": "#1a7f37",
    "cached": "#8250df",
    "failed": "#cf222e",
    "interrupted": "#9a6700",
    "skipped": "#57606a",
    # run statuses
    "succeeded": "#1a7f37",
    "goals-missed": "#9a6700",
    "cancelling": "#9a6700",
}
# like tqdm: green when complete, red on failure, amber when stopped early
_PASS_BAR_STYLE = {"done": "success", "cached": "success", "failed": "danger", "interrupted": "warning",
                   "running": "info", "queued": "", "skipped": ""}
_RUN_BAR_STYLE = {"succeeded": "success", "failed": "danger", "interrupted": "warning", "goals-missed": "warning"}
_LOG_COLOURS = {"warning": "#9a6700", "error": "#cf222e"}


def static_summary(result: Any) -> dict[str, str]:
    """The summary as a raw mimebundle, for `display(static_summary(result), raw=True)`."""
    return {"text/plain": repr(result), "text/html": result._repr_html_()}


# ------------------------------------------------------------------------------------------------ formatting
def _fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_rate(tokens_per_s: Optional[float]) -> str:
    if tokens_per_s is None or not math.isfinite(tokens_per_s):
        return ""
    return f"{tokens_per_s / 1000:.1f}k tok/s" if tokens_per_s >= 10_000 else f"{tokens_per_s:.0f} tok/s"


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _status_html(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#57606a")
    return f"<span style='color:{colour};font-weight:bold'>{html.escape(status)}</span>"


def loss_curve_svg(points: list[tuple[int, float]], *, width: int = 360, height: int = 90, max_points: int = 400,
                   title: str = "") -> str:
    """A small inline SVG: one polyline of (step, loss), scaled to the box; the last point is always kept."""
    pts = [(s, v) for s, v in points if v is not None and math.isfinite(v)]
    if not pts:
        return ""
    if len(pts) > max_points:  # keep the shape, the first and the last point
        stride = len(pts) / (max_points - 1)
        pts = [pts[int(i * stride)] for i in range(max_points - 1)] + [pts[-1]]
    pad = 4
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    xspan = (x1 - x0) or 1
    yspan = (y1 - y0) or 1
    inner_w, inner_h = width - 2 * pad, height - 2 * pad - 12  # 12 px for the caption

    def xy(s: float, v: float) -> str:
        x = pad + (s - x0) / xspan * inner_w if x1 > x0 else pad + inner_w
        y = pad + 12 + (y1 - v) / yspan * inner_h if y1 > y0 else pad + 12 + inner_h / 2
        return f"{x:.1f},{y:.1f}"

    coords = " ".join(xy(s, v) for s, v in pts)
    last_step, last_loss = pts[-1]
    caption = f"{title + ' ' if title else ''}loss {last_loss:.4f} at step {last_step} (min {y0:.4f}, max {y1:.4f})"
    last_xy = xy(*pts[-1]).split(",")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' class='tunecell-loss' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' data-last-step='{pts[-1][0]}' data-points='{len(pts)}'>"
            f"<rect x='0' y='0' width='{width}' height='{height}' fill='none' stroke='#d0d7de'/>"
            f"<text x='{pad}' y='{pad + 9}' font-size='10' fill='#57606a'>{html.escape(caption)}</text>"
            f"<polyline fill='none' stroke='#0969da' stroke-width='1.5' points='{coords}'/>"
            f"<circle cx='{last_xy[0]}' cy='{last_xy[1]}' r='2' fill='#0969da'/></svg>")


# ------------------------------------------------------------------------------------------------ one pass
@dataclass
class PassRow:
    """The widgets and state of one pass's row."""

    name: str
    type: str
    status: str = "queued"
    step: int = 0
    total: int = 0
    loss: Optional[float] = None
    tokens_per_s: Optional[float] = None
    eta_s: Optional[float] = None
    error: Optional[str] = None
    duration_s: Optional[float] = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    first_step: Optional[tuple[int, float]] = None  # (step, clock) of the first step seen, for the ETA
    label: widgets.HTML = field(init=False)
    status_label: widgets.HTML = field(init=False)
    bar: widgets.IntProgress = field(init=False)
    info: widgets.HTML = field(init=False)
    box: widgets.HBox = field(init=False)

    def __post_init__(self) -> None:
        self.label = widgets.HTML(f"<b>{html.escape(self.name)}</b> <span style='color:#57606a'>"
                                  f"{html.escape(self.type)}</span>", layout=widgets.Layout(width="260px"))
        self.status_label = widgets.HTML(_status_html(self.status), layout=widgets.Layout(width="90px"))
        self.bar = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="220px"))
        self.info = widgets.HTML("")
        self.box = widgets.HBox([self.label, self.status_label, self.bar, self.info])

    def set_status(self, status: str) -> None:
        self.status = status
        self.status_label.value = _status_html(status)
        self.bar.bar_style = _PASS_BAR_STYLE.get(status, "")

    def render_step(self) -> None:
        if self.total > 0:
            self.bar.max = self.total
            self.bar.value = max(0, min(self.step, self.total))
            parts = [f"step {self.step}/{self.total}"]
        else:  # unknown length: the bar stays empty, the step count still moves
            parts = [f"step {self.step}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        rate = _fmt_rate(self.tokens_per_s)
        if rate:
            parts.append(rate)
        if self.total > 0 and self.eta_s is not None:
            parts.append(f"ETA {_fmt_duration(self.eta_s)}")
        self.info.value = " · ".join(parts)

    def render_end(self) -> None:
        if self.status in ("done", "cached"):
            self.bar.max = self.total if self.total > 0 else max(self.bar.max, 1)
            self.bar.value = self.bar.max
        parts = []
        if self.step:
            parts.append(f"step {self.step}/{self.total}" if self.total > 0 else f"{self.step} steps")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.duration_s is not None:
            parts.append(f"{self.duration_s:.1f} s")
        text = html.escape(" · ".join(parts))
        if self.error:
            first = self.error.strip().splitlines()[0] if self.error.strip() else self.error
            text += (f" <span style='color:#cf222e' title='{html.escape(self.error, quote=True)}'>"
                     f"{html.escape(first[:300])}</span>")
        self.info.value = text


# ------------------------------------------------------------------------------------------------ the view
class RunProgress:
    """An event subscriber showing one run: header, a row per pass, a loss curve, metrics, a log and Cancel.

    `RunProgress(stop_event=None, on_cancel=None)`: the Cancel button sets `stop_event` (a threading.Event the
    runner checks between steps) and calls `on_cancel()`; with neither, the button is hidden (a synchronous run is
    stopped with the kernel interrupt). Display it with `display(progress)` or `display(progress.widget)`.
    """

    def __init__(self, stop_event: Optional[threading.Event] = None, on_cancel: Optional[Callable[[], Any]] = None,
                 *, step_interval: float = 0.1, curve_interval: float = 0.25, max_log_lines: int = 500,
                 clock: Callable[[], float] = time.monotonic):
        self.stop_event = stop_event
        self.on_cancel = on_cancel
        self.step_interval = step_interval
        self.curve_interval = curve_interval
        self.max_log_lines = max_log_lines
        self._clock = clock
        self._lock = threading.RLock()

        self.run_id: Optional[str] = None
        self.status = "waiting"
        self.started_at: Optional[float] = None
        self.rows: dict[str, PassRow] = {}
        self.current: Optional[PassStarted] = None  # the pass under way, for the header's "pass i/n"
        self.metrics: dict[str, dict[str, float]] = {}
        self.log_lines: list[tuple[str, str]] = []
        self.cancelled = False
        self.finished = False
        self.curve_renders = 0  # how many times the loss curve was re-rendered (the throttle's effect)
        self.step_renders = 0
        self._curve_pass: Optional[str] = None
        self._last_step_render = -math.inf
        self._last_curve_render = -math.inf
        self._step_dirty: set[str] = set()
        self._curve_dirty = False
        self._timer: Optional[threading.Timer] = None

        self.header = widgets.HTML(self._header_html())
        self.overall_bar = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="220px"))
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                            tooltip="stop after the current step (a checkpoint is kept)")
        self.cancel_button.on_click(lambda _b: self.cancel())
        if stop_event is None and on_cancel is None:
            self.cancel_button.layout.display = "none"
        self.passes_box = widgets.VBox([])
        self.curve = widgets.HTML("")
        self.metrics_html = widgets.HTML("")
        self.log_html = widgets.HTML("")
        self.log_area = widgets.Accordion(children=[self.log_html], selected_index=None)
        self.log_area.set_title(0, "log")
        self.summary = widgets.HTML("")
        self.widget = widgets.VBox([
            widgets.HBox([self.header, self.overall_bar, self.cancel_button]),
            self.passes_box, self.curve, self.metrics_html, self.log_area, self.summary,
        ])

    # ------------------------------------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        # what a saved notebook shows without the widget state (GitHub, nbconvert): not the widget's repr
        data["text/plain"] = "tunecell run: live progress (the run's summary follows it)"
        return data

    def __repr__(self) -> str:
        done = sum(r.status in ("done", "cached") for r in self.rows.values())
        return f"<RunProgress {self.run_id or '?'} {self.status}: {done}/{len(self.rows)} passes>"

    # ------------------------------------------------------------------------------------------- events
    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, TrainStep):
                self._on_step(event)
            elif isinstance(event, PassStarted):
                self._on_pass_started(event)
            elif isinstance(event, PassFinished):
                self._on_pass_finished(event)
            elif isinstance(event, MetricResult):
                self.metrics.setdefault(event.model, {})[event.name] = event.value
                self._render_metrics()
            elif isinstance(event, Log):
                self._on_log(event)
            elif isinstance(event, RunStarted):
                self._on_run_started(event)
            elif isinstance(event, RunFinished):
                self._on_run_finished(event)

    def _on_run_started(self, event: RunStarted) -> None:
        self.run_id = event.run_id
        self.status = "running"
        self.started_at = self._clock()
        for step in event.steps or []:
            name, type_ = (step[0], step[1]) if isinstance(step, (list, tuple)) else (str(step), "")
            self._row(name, type_)
        self._render_header()

    def _row(self, name: str, type_: str = "") -> PassRow:
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = PassRow(name, type_)
            self.passes_box.children = tuple(r.box for r in self.rows.values())
            self.overall_bar.max = max(1, len(self.rows))
        elif type_ and not row.type:
            row.type = type_
        return row

    def _on_pass_started(self, event: PassStarted) -> None:
        if self.status == "waiting":  # no RunStarted (a replayed log, a single pass): still a working view
            self.status = "running"
            self.started_at = self._clock()
        row = self._row(event.name, event.type)
        row.set_status("running")
        row.info.value = ""
        self.current = event
        self._render_header()

    def _on_step(self, event: TrainStep) -> None:
        row = self._row(event.name)
        if row.status in ("queued", "waiting"):
            row.set_status("running")
        now = self._clock()
        row.step = int(event.step or 0)
        row.total = int(event.total) if event.total and event.total > 0 else 0
        row.tokens_per_s = event.tokens_per_s
        if row.first_step is None or row.step < row.first_step[0]:
            row.first_step = (row.step, now)
        first, t0 = row.first_step
        if row.total > 0 and row.step > first and now > t0:
            rate = (row.step - first) / (now - t0)
            row.eta_s = (row.total - row.step) / rate if rate > 0 else None
        if event.loss is not None:
            row.loss = float(event.loss)
            # a TrainStep carries the last *logged* loss, repeated until the next log: plot each value once
            if not row.losses or row.losses[-1][1] != row.loss:
                row.losses.append((row.step, row.loss))
            if self._curve_pass != row.name:
                self._curve_pass = row.name
            self._curve_dirty = True
        self._step_dirty.add(row.name)
        self._flush(now)

    def _flush(self, now: Optional[float] = None, force: bool = False) -> None:
        """Render what changed, unless the last render is too recent; then a timer renders it later."""
        now = self._clock() if now is None else now
        if self._step_dirty and (force or now - self._last_step_render >= self.step_interval):
            for name in self._step_dirty:
                self.rows[name].render_step()
            self._step_dirty.clear()
            self._last_step_render = now
            self.step_renders += 1
            self._render_header()  # its elapsed time, which no other event moves during a long training pass
        if self._curve_dirty and (force or now - self._last_curve_render >= self.curve_interval):
            self._render_curve()
            self._last_curve_render = now
        if (self._step_dirty or self._curve_dirty) and self._timer is None and not self.finished:
            wait = min(self.step_interval, self.curve_interval)
            self._timer = threading.Timer(wait, self._trailing_render)
            self._timer.daemon = True
            self._timer.start()

    def _trailing_render(self) -> None:
        with self._lock:
            self._timer = None
            if not self.finished:
                self._flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _render_curve(self) -> None:
        row = self.rows.get(self._curve_pass) if self._curve_pass else None
        self._curve_dirty = False
        if row is None or not row.losses:
            return
        self.curve.value = loss_curve_svg(row.losses, title=row.name)
        self.curve_renders += 1

    def _on_pass_finished(self, event: PassFinished) -> None:
        row = self._row(event.name, event.type)
        if row.name in self._step_dirty:  # the last steps, unthrottled
            row.render_step()
            self._step_dirty.discard(row.name)
        if self._curve_dirty and self._curve_pass == row.name:
            self._render_curve()
        status = event.status or "done"
        if status == "done" and event.cache_hit:
            status = "cached"
        row.duration_s = event.duration_s
        row.error = event.error
        row.set_status(status)
        row.render_end()
        self.overall_bar.value = sum(r.status in ("done", "cached") for r in self.rows.values())
        if status == "failed" and event.error:
            self._append_log("error", f"{event.name}: {event.error}")
        self._render_header()

    def _on_log(self, event: Log) -> None:
        self._append_log(event.level or "info", event.text or "")

    def _append_log(self, level: str, text: str) -> None:
        self.log_lines.append((level, text))
        if len(self.log_lines) > self.max_log_lines:
            del self.log_lines[: len(self.log_lines) - self.max_log_lines]
        lines = []
        for lvl, txt in self.log_lines:
            colour = _LOG_COLOURS.get(lvl)
            prefix = f"{lvl}: " if lvl != "info" else ""
            style = f" style='color:{colour};font-weight:bold'" if colour else ""
            lines.append(f"<div class='tunecell-log-{html.escape(lvl)}'{style}>{html.escape(prefix + txt)}</div>")
        self.log_html.value = ("<div style='font-family:monospace;font-size:12px;white-space:pre-wrap;"
                               "max-height:240px;overflow-y:auto'>" + "".join(lines) + "</div>")
        n_warn = sum(lvl == "warning" for lvl, _ in self.log_lines)
        n_err = sum(lvl == "error" for lvl, _ in self.log_lines)
        extra = ", ".join(f"{n} {w}{'s' if n > 1 else ''}" for n, w in ((n_err, "error"), (n_warn, "warning")) if n)
        self.log_area.set_title(0, f"log ({len(self.log_lines)} lines{', ' + extra if extra else ''})")
        if level == "error":
            self.log_area.selected_index = 0

    def _on_run_finished(self, event: RunFinished) -> None:
        self._cancel_timer()
        self._flush(force=True)
        self.status = event.status or "finished"
        self.finished = True
        for row in self.rows.values():
            if row.status == "running":  # no PassFinished came: it ended with the run
                row.set_status("interrupted" if self.status == "interrupted" else "failed"
                               if self.status == "failed" else "done")
                row.render_end()
            elif row.status == "queued":  # never reached: the run stopped before it
                row.set_status("skipped")
        self.overall_bar.value = sum(r.status in ("done", "cached") for r in self.rows.values())
        if self.status == "succeeded":
            self.overall_bar.value = self.overall_bar.max
        self.overall_bar.bar_style = _RUN_BAR_STYLE.get(self.status, "warning")
        self._disable_cancel()
        self._render_header(duration_s=event.duration_s, manifest=event.manifest_path)

    # ------------------------------------------------------------------------------------------- render
    def _header_html(self, duration_s: Optional[float] = None, manifest: Optional[str] = None) -> str:
        run = html.escape(self.run_id) if self.run_id else "…"
        parts = [f"<b>tunecell run {run}</b>", _status_html(self.status)]
        current = self.current
        if current is not None and current.total and not self.finished:
            parts.append(f"pass {current.index + 1}/{current.total}: {html.escape(current.name)}")
        if duration_s is not None:
            parts.append(f"{duration_s:.1f} s")
        elif self.started_at is not None:
            parts.append(f"elapsed {_fmt_duration(self._clock() - self.started_at)}")
        if manifest:
            parts.append(f"manifest <code>{html.escape(str(manifest))}</code>")
        return " · ".join(parts)

    def _render_header(self, **kwargs: Any) -> None:
        self.header.value = self._header_html(**kwargs)

    def _render_metrics(self) -> None:
        models = list(self.metrics)
        names: list[str] = []
        for values in self.metrics.values():
            names += [n for n in values if n not in names]
        e = html.escape
        rows = "".join("<tr><td>" + e(n) + "</td>" + "".join(
            f"<td>{e(_fmt_value(self.metrics[m].get(n)))}</td>" for m in models) + "</tr>" for n in names)
        self.metrics_html.value = ("<table class='tunecell-metrics'><tr><th>metric</th>" +
                                   "".join(f"<th>{e(m)}</th>" for m in models) + "</tr>" + rows + "</table>")

    # ------------------------------------------------------------------------------------------- control
    def cancel(self) -> None:
        """What the Cancel button does: ask the run to stop (it stops after the current step)."""
        with self._lock:
            if self.finished or self.cancelled:
                return
            self.cancelled = True
            self.cancel_button.disabled = True
            self.cancel_button.description = "Cancelling…"
            self.status = "cancelling"
            self._render_header()
        if self.stop_event is not None:
            self.stop_event.set()
        if self.on_cancel is not None:
            self.on_cancel()

    def _disable_cancel(self) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancel"

    def fail(self, error: str, status: str = "failed") -> None:
        """The run raised ``error`` before its end was reported (a missing data file; a Ctrl-C before the first
        pass, status "interrupted"): show it, close the controls. After a reported end (a failed pass), the view
        shows the failure already."""
        with self._lock:
            if self.finished:
                return
            self._on_run_finished(RunFinished(status, None, None))
            self.summary.value = f"<pre style='color:#cf222e'>{html.escape(error)}</pre>"

    def finish(self, result: Any, summary: bool = True) -> None:
        """Add the static summary of `result` (a RunResult) below the live view and close the controls; without it
        (summary=False) where the cell shows the summary itself (a background run's handle)."""
        with self._lock:
            self._cancel_timer()
            self._flush(force=True)
            self.finished = True
            self.status = result.status
            self.run_id = self.run_id or result.run_id
            self._render_header(duration_s=result.duration_s, manifest=result.manifest_path)
            self.overall_bar.bar_style = _RUN_BAR_STYLE.get(result.status, "warning")
            self._disable_cancel()
            if summary:
                self.summary.value = result._repr_html_()
