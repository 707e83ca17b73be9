"""RunResult: what a run leaves behind, with a summary that reads the same in a terminal and a saved notebook."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class PassRecord:
    name: str
    type: str
    status: str  # done | cached | failed | interrupted | skipped
    duration_s: float = 0.0
    cache_hit: bool = False
    artifact: Optional[str] = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    run_id: str
    status: str  # succeeded | failed | interrupted
    passes: list[PassRecord]
    metrics: dict[str, dict[str, float]]  # "input" or pass name -> metric name -> value
    artifacts: dict[str, str]  # pass name -> cache folder; "model" / "adapter" -> output folder
    config_hash: str
    model_source: str
    manifest_path: Optional[Path] = None
    duration_s: float = 0.0
    failed_goals: list[str] = field(default_factory=list)
    error: Optional[str] = None  # the short form; the exception itself is chained on the raised PassFailed
    checkpoint: Optional[str] = None  # where an interrupted training run resumes from
    final: Optional[dict[str, Any]] = None  # the last pass's artifact (Artifact.to_dict()), for `--from`
    logs: list[str] = field(default_factory=list)
    config: Optional[Any] = None  # the WorkflowConfig that ran
    candidates: list[dict[str, Any]] = field(default_factory=list)  # a search's candidates, with rank and metrics
    best: Optional[int] = None  # the index of the best candidate

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(Path(self.manifest_path).read_text()) if self.manifest_path else {}

    @property
    def model_path(self) -> Optional[Path]:
        """The final model in the cache: unlike output_dir/model, a later run into the same output_dir never
        replaces it."""
        return Path(self.final["path"]) if self.final else None

    def model(self, which: str = "model"):
        """Load a model for generation: "model" (the final one), "adapter", "input" or a pass name."""
        from ..inference import load_model

        trust = bool(self.config and self.config.input_model.load_kwargs.trust_remote_code)
        if which == "model" and self.model_path is not None:
            base = (self.final.get("base") or {}).get("path") if self.final["kind"] == "adapter" else None
            return load_model(self.model_path, base=base, trust_remote_code=trust)
        if which == "input" and self.config is not None:  # a column of the metrics table too
            from ..models import resolve_model

            model = resolve_model(self.config.input_model, self.config.resolve(self.config.cache_dir))
            return load_model(model.path, trust_remote_code=trust)
        if which not in self.artifacts:
            raise KeyError(f"no artifact {which!r}; this run has {', '.join(['input', *self.artifacts])}")
        path = Path(self.artifacts[which])
        return load_model(path / "artifact" if (path / "artifact").is_dir() else path, trust_remote_code=trust)

    # ---------------------------------------------------------------------------------------- summary
    def metric_table(self) -> tuple[list[str], list[list[str]]]:
        """Rows of (metric, value for each measured model), models in run order."""
        models = list(self.metrics)
        names: list[str] = []
        for values in self.metrics.values():
            names += [n for n in values if n not in names]
        rows = [[n] + [_fmt(self.metrics[m].get(n)) for m in models] for n in names]
        return ["metric"] + models, rows

    def __repr__(self) -> str:
        lines = [f"tunecell run {self.run_id}: {self.status} in {self.duration_s:.1f} s"]
        if self.error:
            lines.append(f"  error: {self.error}")
        for p in self.passes:
            training = _training(p.stats)
            lines.append(f"  {p.name:<16} {p.type:<24} {p.status:<12} {p.duration_s:.1f} s" +
                         (f"  {training}" if training else ""))
        header, rows = self.metric_table()
        if rows:
            widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
            for row in [header] + rows:
                lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        lines += [f"  goal missed: {g}" for g in self.failed_goals]
        if self.candidates:
            lines.append(f"  candidates (best: {self.best}):")
            lines += [f"    #{c['index']} rank {c.get('rank', '-')}: {c['label']}  "
                      + "  ".join(f"{k}={_fmt(v)}" for k, v in c["metrics"].items())
                      + ("" if c["goals_met"] else "  (goal missed)") for c in self.candidates]
        if self.checkpoint:
            lines.append(f"  checkpoint: {self.checkpoint} (run the same config again to resume)")
        lines += [f"  {name}: {path}" for name, path in self.artifacts.items() if name in ("model", "adapter")]
        lines.append(f"  weights: {self.model_source}")
        lines.append(f"  config hash: {self.config_hash[:16]}" +
                     (f"   manifest: {self.manifest_path}" if self.manifest_path else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"succeeded": "#1a7f37", "failed": "#cf222e", "interrupted": "#9a6700"}.get(self.status, "#57606a")
        e = html.escape
        parts = [f"<div class='tunecell-summary'><b>tunecell run {e(self.run_id)}</b>: "
                 f"<span style='color:{colour}'><b>{e(self.status)}</b></span> in {self.duration_s:.1f} s"]
        if self.error:
            parts.append(f"<pre style='color:#cf222e'>{e(self.error)}</pre>")
        training = [_training(p.stats) for p in self.passes]
        trained = any(training)  # the column only where a pass has training stats
        parts.append("<table><tr><th>pass</th><th>type</th><th>status</th><th>time</th>"
                     + ("<th>training</th>" if trained else "") + "</tr>")
        for p, stats in zip(self.passes, training):
            parts.append(f"<tr><td>{e(p.name)}</td><td>{e(p.type)}</td><td>{e(p.status)}</td>"
                         f"<td>{p.duration_s:.1f} s</td>"
                         + (f"<td>{e(stats)}</td>" if trained else "") + "</tr>")
        parts.append("</table>")
        header, rows = self.metric_table()
        if rows:
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        parts += [f"<div style='color:#cf222e'>goal missed: {e(g)}</div>" for g in self.failed_goals]
        if self.candidates:
            parts.append(_candidates_html(self.candidates, self.best))
        if self.checkpoint:
            parts.append(f"<div>checkpoint: <code>{e(self.checkpoint)}</code> (run again to resume)</div>")
        parts += [f"<div>{e(n)}: <code>{e(p)}</code></div>" for n, p in self.artifacts.items()
                  if n in ("model", "adapter")]
        parts.append(f"<div>weights: {e(self.model_source)}</div><div>config hash: <code>{e(self.config_hash[:16])}"
                     "</code></div></div>")
        return "".join(parts)


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _training(stats: dict[str, Any]) -> str:
    """A training pass's final loss, steps and speed (what a LoRA pass records); "" for a pass without them."""
    parts = []
    if stats.get("train_loss") is not None:
        parts.append(f"loss {_fmt(stats['train_loss'])}")
    if stats.get("steps") is not None:
        parts.append(f"{stats['steps']} steps")
    rate = stats.get("tokens_per_s")
    if rate is not None:
        parts.append(f"{rate:,.0f} tokens/s" if isinstance(rate, (int, float)) else f"{rate} tokens/s")
    return ", ".join(parts)


def _candidates_html(candidates: list[dict[str, Any]], best: Optional[int]) -> str:
    e = html.escape
    names: list[str] = []
    for c in candidates:
        names += [n for n in c["metrics"] if n not in names]
    rows = ["<table><tr><th>#</th><th>rank</th><th>options</th>" + "".join(f"<th>{e(n)}</th>" for n in names)
            + "<th>goals</th></tr>"]
    for c in sorted(candidates, key=lambda c: c.get("rank", 0)):
        style = " style='font-weight:bold'" if c["index"] == best else ""
        goals = "met" if c["goals_met"] else "missed: " + "; ".join(c["failed_goals"])
        rows.append(f"<tr{style}><td>{c['index']}</td><td>{c.get('rank', '-')}</td><td>{e(c['label'])}</td>"
                    + "".join(f"<td>{e(_fmt(c['metrics'].get(n)))}</td>" for n in names)
                    + f"<td>{e(goals)}</td></tr>")
    rows.append("</table>")
    svg = pareto_svg(candidates, best)
    return "".join(rows) + (svg or "")


def pareto_svg(candidates: list[dict[str, Any]], best: Optional[int], x: str = "latency",
               y: str = "accuracy") -> Optional[str]:
    """Accuracy against latency, one dot per candidate, the Pareto front joined; a static SVG that a saved
    notebook keeps. None when the candidates lack either metric."""
    points = [(c["metrics"][x], c["metrics"][y], c) for c in candidates
              if isinstance(c["metrics"].get(x), (int, float)) and isinstance(c["metrics"].get(y), (int, float))]
    if len(points) < 2:
        return None
    w, h, pad = 360, 220, 40
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = min(ys), max(ys)

    def sx(v: float) -> float:
        return pad + (v - x0) / ((x1 - x0) or 1) * (w - 2 * pad)

    def sy(v: float) -> float:
        return h - pad - (v - y0) / ((y1 - y0) or 1) * (h - 2 * pad)

    front = sorted((p for p in points if not any(q[0] <= p[0] and q[1] >= p[1] and q != p and
                                                  (q[0] < p[0] or q[1] > p[1]) for q in points)),
                   key=lambda p: p[0])
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' class='tunecell-pareto'>",
             f"<text x='{w / 2}' y='{h - 8}' text-anchor='middle' font-size='11'>{x} (lower is better)</text>",
             f"<text x='12' y='{h / 2}' font-size='11' transform='rotate(-90 12 {h / 2})' "
             f"text-anchor='middle'>{y}</text>",
             "<polyline fill='none' stroke='#57606a' stroke-dasharray='4 2' points='"
             + " ".join(f"{sx(p[0]):.1f},{sy(p[1]):.1f}" for p in front) + "'/>"]
    for vx, vy, c in points:
        colour = "#1a7f37" if c["goals_met"] else "#cf222e"
        radius = 6 if c["index"] == best else 4
        parts.append(f"<circle cx='{sx(vx):.1f}' cy='{sy(vy):.1f}' r='{radius}' fill='{colour}'>"
                     f"<title>#{c['index']} {html.escape(c['label'])}</title></circle>"
                     f"<text x='{sx(vx) + 7:.1f}' y='{sy(vy) - 5:.1f}' font-size='10'>#{c['index']}</text>")
    parts.append("</svg>")
    return "".join(parts)
