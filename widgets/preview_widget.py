"""PreviewWidget: the interactive preview (ipywidgets). Built by tunecell.widgets.preview()."""
from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Optional

import ipywidgets as W
import traitlets as T

from tunecell.data.explore import DataExplorer
from tunecell.data.templates import TEXT_COLS_JOINER, masking, text_columns, text_source
from tunecell.errors import TunecellError

from . import render as R
from .config_text import write_config
from .core import StaticPreview

EDITABLE = ("max_seq_len", "strategy", "text_template", "train_on_prompt")


class PreviewWidget(W.VBox):
    """The interactive preview. Traits: index, view ('samples'|'blocks'), max_seq_len, strategy, text_template,
    train_on_prompt, error, config_text. Controls: .controls[name]; pager buttons: .buttons[name]."""

    index = T.Int(0)
    view = T.Unicode("samples")
    max_seq_len = T.Int(1024)
    strategy = T.Unicode("join")
    text_template = T.Unicode("")
    train_on_prompt = T.Bool(True)
    error = T.Unicode("")
    config_text = T.Unicode("")

    def __init__(self, explorer: DataExplorer, *, source: Any = None,
                 namespace: Optional[Mapping[str, Any]] = None, on_write: Optional[Callable[[str], Any]] = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.explorer = explorer
        self.source = source if source is not None else explorer.data_config
        self.namespace = namespace
        self.on_write = on_write
        self._rng = random.Random(explorer.seed)
        self._busy = False
        pre = explorer.pre
        self._initial = {"max_seq_len": pre.max_seq_len, "strategy": pre.strategy,
                         "text_template": self._template_of(pre), "train_on_prompt": pre.train_on_prompt}
        chat = text_source(pre) == "chat"
        self.controls = {
            "max_seq_len": W.BoundedIntText(value=pre.max_seq_len, min=8, max=1 << 20, description="max_seq_len",
                                            layout=W.Layout(width="190px"),
                                            style={"description_width": "78px"}),
            "strategy": W.Dropdown(options=["join", "line-by-line"], value=pre.strategy, description="strategy",
                                   layout=W.Layout(width="210px"), style={"description_width": "60px"}),
            "train_on_prompt": W.Checkbox(value=pre.train_on_prompt, description="train_on_prompt",
                                          indent=False, layout=W.Layout(width="150px")),
            "text_template": W.Textarea(value=self._initial["text_template"], description="template",
                                        placeholder="(the tokenizer's chat template)" if chat else "",
                                        disabled=chat, continuous_update=False,
                                        layout=W.Layout(width="98%", height="64px"),
                                        style={"description_width": "60px"}),
            "view": W.ToggleButtons(options=["samples", "blocks"], value="samples",
                                    layout=W.Layout(display="" if pre.strategy == "join" else "none"),
                                    style={"button_width": "70px"}),
            "index": W.BoundedIntText(value=0, min=0, max=max(0, explorer.n_rows - 1), description="#",
                                      layout=W.Layout(width="120px"), style={"description_width": "14px"}),
        }
        self.buttons = {name: W.Button(description=label, tooltip=tip, layout=W.Layout(width="auto"))
                        for name, label, tip in (
                            ("first", "⏮ first", "the first row"), ("prev", "◀ prev", "the previous one"),
                            ("next", "next ▶", "the next one"), ("random", "🎲 random", "a random row"),
                            ("longest", "longest", "the row with the most tokens (tokenizes every row once)"),
                            ("write", "Write config", "new config text with the changed values"))}
        self.buttons["write"].button_style = "primary"
        self.position = W.HTML()
        self.error_box = W.HTML()
        self.sample_box = W.HTML()
        self.stats_box = W.HTML()
        self.config_box = W.HTML()
        with self.hold_trait_notifications():
            self.max_seq_len, self.strategy = pre.max_seq_len, pre.strategy
            self.text_template, self.train_on_prompt = self._initial["text_template"], pre.train_on_prompt
        for name in ("max_seq_len", "strategy", "train_on_prompt", "text_template", "view", "index"):
            W.link((self.controls[name], "value"), (self, name))
        for name, button in self.buttons.items():
            button.on_click(getattr(self, f"_on_{name}"))
        self.observe(self._on_setting, names=list(EDITABLE))
        self.observe(self._on_page, names=["index", "view"])
        title = W.HTML(f"<b>tunecell preview</b> · data config <code>{R._e(explorer.data_config.name)}</code> "
                       f"· {explorer.n_rows:,} rows · columns: {R._e(', '.join(explorer.columns))}")
        controls = W.HBox([self.controls["max_seq_len"], self.controls["strategy"],
                           self.controls["train_on_prompt"], self.controls["view"]])
        pager = W.HBox([self.buttons["first"], self.buttons["prev"], self.buttons["next"], self.buttons["random"],
                        self.buttons["longest"], self.controls["index"], self.position])
        self.children = [title, controls, self.controls["text_template"], W.HTML(R.legend_html(True)), pager,
                         self.error_box, self.sample_box, self.stats_box, W.HBox([self.buttons["write"]]),
                         self.config_box]
        self.render()

    # ----------------------------------------------------------------------------------- helpers
    @staticmethod
    def _template_of(pre) -> str:
        source = text_source(pre)
        if source == "template":
            return pre.text_template
        if source in ("cols", "default"):
            return TEXT_COLS_JOINER.join("{" + c + "}" for c in text_columns(pre))
        return ""

    @property
    def changes(self) -> dict[str, Any]:
        """The values changed in the widget, as pre_process_data_config keys."""
        pre = self.explorer.pre  # what the preview shows (a rejected value in a control is not a change)
        current = {"max_seq_len": pre.max_seq_len, "strategy": pre.strategy,
                   "text_template": self._template_of(pre), "train_on_prompt": pre.train_on_prompt}
        return {k: v for k, v in current.items() if v != self._initial[k]}

    def _pages(self) -> tuple[int, bool]:
        if self.view == "blocks":
            return self.explorer.n_blocks()
        return self.explorer.n_rows, True

    def render(self) -> None:
        ex = self.explorer
        self.controls["view"].layout.display = "" if ex.pre.strategy == "join" else "none"
        if ex.pre.strategy != "join" and self.view == "blocks":
            self.view = "samples"
            return
        total, exact = self._pages()
        self.controls["index"].max = max(0, total - 1) if exact else max(total * 4, 1 << 20)
        self.error_box.value = (f'<div style="color:#c0392b;white-space:pre-wrap">{R._e(self.error)}</div>'
                                if self.error else "")
        try:
            if self.view == "blocks":
                self.sample_box.value = R.block_html(ex.block(self.index), total=total, exact=exact,
                                                     max_seq_len=ex.pre.max_seq_len)
                total, exact = self._pages()
                word = "blocks" if exact else "blocks (estimated)"
            else:
                self.sample_box.value = R.sample_html(ex.sample(self.index), strategy=ex.pre.strategy,
                                                      max_seq_len=ex.pre.max_seq_len, masking=masking(ex.pre),
                                                      total=ex.n_rows)
                word = "rows"
            self.position.value = f"<span style='color:#555'>{self.index + 1:,} of {total:,} {word}</span>"
            self.stats_box.value = R.stats_html(ex.stats())
        except (TunecellError, IndexError, ValueError) as e:
            self.sample_box.value = f'<div style="color:#c0392b">{R._e(e)}</div>'

    # ------------------------------------------------------------------------------------ events
    def _on_setting(self, change: Any) -> None:
        if self._busy:
            return
        values = {"max_seq_len": self.max_seq_len, "strategy": self.strategy,
                  "train_on_prompt": self.train_on_prompt}
        if self.text_template != self._initial["text_template"] or text_source(self.explorer.pre) == "template":
            if self.text_template:
                values["text_template"] = self.text_template
        try:
            self.explorer.update(**values)
            self.error = ""
        except Exception as e:  # a template naming no column, a bad value: show it, keep the old settings
            self.error = f"{type(e).__name__}: {e}" if not isinstance(e, TunecellError) else str(e)
        if self.view == "blocks" and change.name in ("max_seq_len", "strategy"):
            self.index = 0
        self.render()

    def _on_page(self, change: Any) -> None:
        if change.name == "view":
            self._busy = True
            try:
                self.index = 0
            finally:
                self._busy = False
        self.render()

    def _go(self, index: int) -> None:
        total, exact = self._pages()
        index = max(0, index if not exact else min(index, max(0, total - 1)))
        if index == self.index:
            self.render()
        else:
            self.index = index

    def _on_first(self, _: Any = None) -> None:
        self._go(0)

    def _on_prev(self, _: Any = None) -> None:
        self._go(self.index - 1)

    def _on_next(self, _: Any = None) -> None:
        self._go(self.index + 1)

    def _on_random(self, _: Any = None) -> None:
        total, _exact = self._pages()
        self._go(self._rng.randrange(max(1, total)))

    def _on_longest(self, _: Any = None) -> None:
        if self.view == "blocks":
            self.view = "samples"
        self._go(self.explorer.longest_index())

    def _on_write(self, _: Any = None) -> None:
        try:
            text = write_config(self.source, self.explorer.data_config.name, self.changes, self.namespace)
        except Exception as e:
            self.error = f"cannot write the config: {e}"
            self.render()
            return
        self.config_text = text
        note = self.on_write(text) if self.on_write is not None else None  # what to do next, if anything
        self.config_box.value = (f'<div style="{R.BOX}"><b>new config</b>'
                                 + (f' ({R._e(note)})' if isinstance(note, str) else "")
                                 + f'<pre style="{R.PRE}">{R._e(text)}</pre></div>')

    # ------------------------------------------------------------------------------------ static
    def static(self) -> StaticPreview:
        return StaticPreview(self.explorer)

    def _repr_mimebundle_(self, **kwargs: Any):
        data = super()._repr_mimebundle_(**kwargs) or {}
        static = self.static()
        try:
            data["text/html"] = static.to_html()
            data["text/plain"] = static.to_text()
        except Exception as e:  # never let the fallback break the widget's display
            data["text/plain"] = f"tunecell preview ({type(e).__name__}: {e})"
        return data
