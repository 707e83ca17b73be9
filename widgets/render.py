"""HTML and plain-text views of the preview's samples, blocks and stats. Pure Python: no ipywidgets, no transformers.

HTML uses inline styles only, so that it survives a saved notebook, nbconvert and GitHub's renderer.
"""
from __future__ import annotations

import html
from typing import Any, Optional

from tunecell.data.explore import BlockView, SampleView, StatsView, TokenView

CHIP = ("display:inline-block;border:1px solid #c8c8c8;border-radius:3px;padding:0 3px;margin:1px;"
        "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre;line-height:1.5;")
STYLES = {
    "loss": "background:#d8f0d8;border-color:#86c286;color:#1b5e20;",
    "masked": "background:#eeeeee;border-color:#d0d0d0;color:#8a8a8a;",
    "special": "font-weight:bold;border-style:dashed;border-color:#8e44ad;",
    "pad": "background:#fafafa;color:#b0b0b0;border-style:dotted;",
    "beyond": "opacity:.35;text-decoration:line-through;",
    "row_start": "border-left:3px solid #1f77b4;",
}
CUT = ("display:inline-block;color:#c0392b;font-weight:bold;margin:0 4px;padding:0 4px;border-left:2px solid #c0392b;"
       "font-size:12px;")
BOX = "font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.4;"
PRE = ("white-space:pre-wrap;background:#f7f7f7;border:1px solid #e3e3e3;border-radius:4px;padding:6px 8px;margin:4px 0;"
       "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;")


def show(text: str) -> str:
    """A token's text with whitespace made visible."""
    if text == "":
        return "∅"
    return text.replace(" ", "·").replace("\n", "↵").replace("\t", "→").replace("\r", "␍")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def token_chip(t: TokenView) -> str:
    style = CHIP + (STYLES["pad"] if t.pad else STYLES["loss"] if t.loss else STYLES["masked"])
    if t.special and not t.pad:
        style += STYLES["special"]
    if t.beyond:
        style += STYLES["beyond"]
    if t.row_start:
        style += STYLES["row_start"]
    label = t.id if t.loss else -100
    title = f"id {t.id} · label {label}" + (" · special" if t.special else "") + (" · padding" if t.pad else "") + \
            (" · cut by max_seq_len" if t.beyond else "") + (f" · row {t.row}" if t.row is not None else "")
    row_mark = (f'<sup style="color:#1f77b4;font-size:10px">r{t.row}</sup>' if t.row_start else "")
    return f'{row_mark}<span class="tc-tok" style="{style}" title="{_e(title)}">{_e(show(t.text))}</span>'


def tokens_html(tokens: list[TokenView], cut_at: Optional[int] = None, max_seq_len: Optional[int] = None) -> str:
    parts = []
    for k, t in enumerate(tokens):
        if cut_at is not None and k == cut_at:
            parts.append(f'<span class="tc-cut" style="{CUT}" title="max_seq_len: tokens after this are cut">'
                         f'✂ max_seq_len {max_seq_len}</span>')
        parts.append(token_chip(t))
    return f'<div class="tc-tokens" style="line-height:1.9">{"".join(parts)}</div>'


def legend_html(masking: bool) -> str:
    items = [("loss", "carries loss"), ("masked", "masked (label -100)" if masking else "masked (-100)"),
             ("special", "special token"), ("pad", "padding")]
    chips = []
    for kind, label in items:
        style = CHIP + (STYLES["masked"] + STYLES["special"] if kind == "special" else STYLES[kind])
        chips.append(f'<span style="{style}">{_e(label)}</span>')
    chips.append(f'<span style="{CUT}">✂ max_seq_len cut</span>')
    return f'<div style="margin:2px 0;color:#555;font-size:12px">{" ".join(chips)}</div>'


def rendered_text_html(view: SampleView, masking: bool) -> str:
    text = view.text
    if masking and view.prompt is not None and text.startswith(view.prompt):
        prompt, answer = view.prompt, text[len(view.prompt):]
        body = (f'<span style="color:#8a8a8a" title="prompt: masked, no loss">{_e(prompt)}</span>'
                f'<span style="color:#1b5e20;font-weight:600" title="answer: carries loss">{_e(answer)}</span>')
    else:
        body = _e(text)
    return f'<pre class="tc-text" style="{PRE}">{body}</pre>'


def sample_html(view: SampleView, *, strategy: str, max_seq_len: int, masking: bool, total: int) -> str:
    head = (f"<b>row {view.index}</b> of {total:,} · <span style='color:{'#1f77b4' if view.split == 'train' else '#d35400'}'>"
            f"{view.split}</span> · {view.n_tokens} tokens · {view.loss_tokens} carry loss")
    notes = []
    if view.cut_at is not None:
        notes.append(f"<span style='color:#c0392b'>cut at max_seq_len {max_seq_len}: "
                     f"{view.n_tokens - view.cut_at} tokens dropped</span>")
    if view.dropped:
        dropped_by = "the eval loss leaves this row out" if view.split == "eval" else "training drops this row"
        notes.append(f"<span style='color:#c0392b'>no answer token is left after the cut: {dropped_by}</span>")
    if strategy == "join":
        if view.split == "eval":
            notes.append("eval row: packed into the eval blocks")
        elif view.blocks is not None:
            notes.append(f"packed into block{'s' if len(view.blocks) > 1 else ''} "
                         f"{', '.join(str(b) for b in view.blocks)}")
    note = f"<div style='font-size:12px;color:#555'>{' · '.join(notes)}</div>" if notes else ""
    return (f'<div class="tc-sample" style="{BOX}"><div>{head}</div>{note}{rendered_text_html(view, masking)}'
            f'{tokens_html(view.tokens, view.cut_at, max_seq_len)}</div>')


def block_html(view: BlockView, *, total: Optional[int], exact: bool, max_seq_len: int) -> str:
    of = f" of {total:,}" if total and exact else f" of ~{total:,} (estimated)" if total else ""
    rows = ", ".join(str(r) for r in view.rows)
    head = (f"<b>block {view.index}</b>{of} · {max_seq_len} tokens · rows {rows} · {view.loss_tokens} carry loss" +
            (f" · {view.padded} padding" if view.padded else ""))
    if not view.trained:
        head += ("<div style='font-size:12px;color:#c0392b'>prompt tokens only (train_on_prompt: false): "
                 "training leaves this block out</div>")
    return (f'<div class="tc-block" style="{BOX}"><div>{head}</div>'
            f'<div style="font-size:12px;color:#555">a blue bar and r<i>n</i> mark where row <i>n</i> starts</div>'
            f'{tokens_html(view.tokens)}</div>')


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.1f}" if x != int(x) else f"{int(x):,}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def stats_rows(stats: StatsView) -> list[tuple[str, str]]:
    scope = "all rows" if stats.exact else f"a random sample of {stats.sampled:,} of {stats.rows:,} rows"
    out = [("rows", _fmt(stats.rows)), ("train rows", _fmt(stats.train_rows))]
    if stats.eval_rows is not None:
        src = "held out by eval_dataset_size" if stats.eval_source == "split" else f"data config {stats.eval_source}"
        out.append(("eval rows", f"{_fmt(stats.eval_rows)} ({src})"))
    else:
        out.append(("eval rows", "none (no eval_dataset_size or eval_data_config)"))
    L = stats.lengths
    out.append((f"tokens per row ({scope})", f"min {_fmt(L['length_min'])} · median {_fmt(L['length_median'])} · "
                                              f"p95 {_fmt(L['length_p95'])} · max {_fmt(L['length_max'])}"))
    if stats.strategy == "line-by-line":
        pct = 100 * stats.truncated / stats.sampled if stats.sampled else 0
        out.append((f"rows cut at max_seq_len {stats.max_seq_len} ({scope})", f"{stats.truncated:,} ({pct:.1f}%)"))
        if stats.dropped:
            out.append(("rows left with no answer token (dropped)", _fmt(stats.dropped)))
        out.append(("training sequences" + ("" if stats.exact else " (estimated)"), _fmt(stats.sequences)))
    else:
        trained = " trained on" if stats.no_loss_blocks else ""
        out.append((f"join blocks of {stats.max_seq_len} tokens{trained}" + ("" if stats.exact else " (estimated)"),
                    _fmt(stats.sequences)))
        if stats.no_loss_blocks:
            out.append(("blocks of prompt tokens only (left out)", _fmt(stats.no_loss_blocks)))
    if stats.loss_fraction is not None:
        out.append(("tokens carrying loss", f"{100 * stats.loss_fraction:.1f}%"))
    if stats.label_counts:
        out.append((f"labels ({stats.label_column}, all rows)",
                    " · ".join(f"{label}: {count:,}" for label, count in stats.label_counts)))
    return out


def histogram_html(stats: StatsView) -> str:
    if not stats.histogram:
        return ""
    peak = max(c for _, _, c in stats.histogram) or 1
    bars = []
    for low, high, count in stats.histogram:
        over = low > stats.max_seq_len
        color = "#e6a19a" if over else "#9ec5e8"
        width = max(1, round(160 * count / peak))
        label = f"{low}" if low == high else f"{low}–{high}"
        bars.append(f'<div style="display:flex;align-items:center;gap:6px;font-size:11px">'
                    f'<span style="width:72px;text-align:right;color:#555">{label}</span>'
                    f'<span style="display:inline-block;height:9px;width:{width}px;background:{color}"></span>'
                    f'<span style="color:#777">{count:,}</span></div>')
    return f'<div class="tc-hist" style="margin-top:4px">{"".join(bars)}</div>'


def stats_html(stats: StatsView) -> str:
    rows = "".join(f'<tr><td style="padding:1px 10px 1px 0;color:#555;text-align:left">{_e(k)}</td>'
                   f'<td style="text-align:left">{_e(v)}</td></tr>' for k, v in stats_rows(stats))
    return (f'<div class="tc-stats" style="{BOX}"><b>stats</b> <span style="color:#777;font-size:12px">'
            f'({stats.strategy}, max_seq_len {stats.max_seq_len})</span>'
            f'<table style="border-collapse:collapse;margin-top:2px">{rows}</table>{histogram_html(stats)}</div>')


# ---------------------------------------------------------------------------------------------- text
def tokens_text(tokens: list[TokenView], cut_at: Optional[int] = None) -> str:
    parts = []
    for k, t in enumerate(tokens):
        if cut_at is not None and k == cut_at:
            parts.append("✂")
        s = show(t.text)
        parts.append(s if t.loss else f"[{s}]")
    return " ".join(parts)


def sample_text(view: SampleView, *, max_seq_len: int, total: int) -> str:
    lines = [f"row {view.index} of {total:,} ({view.split}): {view.n_tokens} tokens, {view.loss_tokens} carry loss"
             + (f", cut at max_seq_len {max_seq_len}" if view.cut_at is not None else "")]
    lines += ["  | " + line for line in view.text.split("\n")]
    lines.append("  tokens: " + tokens_text(view.tokens, view.cut_at))
    return "\n".join(lines)


def stats_text(stats: StatsView) -> str:
    return "\n".join(f"  {k}: {v}" for k, v in stats_rows(stats))
