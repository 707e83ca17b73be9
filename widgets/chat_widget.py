"""A small chat widget over a loaded model: type a prompt, Send, read the answer with its tokens/s.

The widget's contract is one method: `model.generate_with_stats(prompt, max_new_tokens) -> (text, n_tokens,
seconds)`, which tunecell.inference.LoadedModel implements. A path string loads one with tunecell.load_model
(imported only then, so this module stays free of torch and onnxruntime); an object with a `.model()` method (a
RunResult) gives its final model. Generation is greedy and synchronous, like `%%generate`: each prompt is answered
on its own (no conversation state is fed back to the model).
"""
from __future__ import annotations

import html
import os
import threading
from dataclasses import dataclass
from typing import Any, Optional

import ipywidgets as widgets

__all__ = ["chat", "Chat", "Exchange"]


@dataclass
class Exchange:
    prompt: str
    answer: str = ""
    n_tokens: int = 0
    seconds: float = 0.0
    error: Optional[str] = None

    @property
    def tokens_per_s(self) -> Optional[float]:
        return self.n_tokens / self.seconds if self.seconds > 0 else None


def _resolve(model: Any) -> Any:
    if isinstance(model, (str, os.PathLike)):
        from tunecell.inference import load_model

        return load_model(model)
    if not hasattr(model, "generate_with_stats") and callable(getattr(model, "model", None)):
        return model.model()  # a RunResult: its final model
    if not hasattr(model, "generate_with_stats"):
        raise TypeError(f"chat() needs a model folder, a loaded model or a RunResult, not {type(model).__name__}")
    return model


class Chat:
    """The chat view: `.widget` (a VBox), `.input`, `.send_button`, `.max_new_tokens`, `.history_html`; `.history`
    holds the exchanges. `send(prompt)` answers one prompt and returns the answer text."""

    def __init__(self, model: Any, *, max_new_tokens: int = 64, max_limit: int = 1024):
        self.model = _resolve(model)
        self.history: list[Exchange] = []
        self._lock = threading.Lock()  # one generation at a time, whichever thread clicks
        self.input = widgets.Text(placeholder="prompt", layout=widgets.Layout(width="60%"))
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane")
        self.max_new_tokens = widgets.IntSlider(value=max_new_tokens, min=1, max=max(max_limit, max_new_tokens),
                                                description="max tokens", continuous_update=False)
        self.history_html = widgets.HTML(self._render())
        self.send_button.on_click(self._on_click)
        label = html.escape(str(getattr(self.model, "path", "") or type(self.model).__name__))
        self.widget = widgets.VBox([
            widgets.HTML(f"<b>chat</b> <span style='color:#57606a'>{label}</span>"),
            self.history_html,
            widgets.HBox([self.input, self.send_button]),
            self.max_new_tokens,
        ])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<Chat {getattr(self.model, 'path', type(self.model).__name__)}: {len(self.history)} exchanges>"

    def send(self, prompt: str) -> Optional[str]:
        """Answer `prompt` (blank prompts are ignored and give None); errors show in the history and are raised."""
        if not prompt or not prompt.strip():
            return None
        with self._lock:
            exchange = Exchange(prompt)
            self.history.append(exchange)
            self.send_button.disabled = True
            self.history_html.value = self._render(pending=True)
            try:
                text, n_tokens, seconds = self.model.generate_with_stats(prompt, self.max_new_tokens.value)
                exchange.answer, exchange.n_tokens, exchange.seconds = text, int(n_tokens), float(seconds)
                return text
            except Exception as e:
                exchange.error = f"{type(e).__name__}: {e}"
                raise
            finally:
                self.history_html.value = self._render()
                self.send_button.disabled = False

    def clear(self) -> None:
        with self._lock:
            self.history.clear()
            self.history_html.value = self._render()

    def _on_click(self, _button: Any) -> None:
        prompt = self.input.value
        self.input.value = ""
        try:
            self.send(prompt)
        except Exception:  # already shown in the history; a click handler has nowhere better to report it
            pass

    def _render(self, pending: bool = False) -> str:
        e = html.escape
        if not self.history:
            return "<div class='tunecell-chat' style='color:#57606a'>no messages yet</div>"
        parts = ["<div class='tunecell-chat'>"]
        for i, x in enumerate(self.history):
            parts.append(f"<div style='margin-top:6px'><b>you:</b> <span style='white-space:pre-wrap'>"
                         f"{e(x.prompt)}</span></div>")
            if x.error:
                parts.append(f"<div style='color:#cf222e'>{e(x.error)}</div>")
            elif pending and i == len(self.history) - 1:
                parts.append("<div style='color:#57606a'>model: …</div>")
            else:
                rate = x.tokens_per_s
                stats = f"{x.n_tokens} tokens · {x.seconds:.2f} s" + (f" · {rate:.1f} tok/s" if rate else "")
                parts.append(f"<div><b>model:</b> <span style='white-space:pre-wrap'>{e(x.answer)}</span></div>"
                             f"<div style='color:#57606a;font-size:11px'>{e(stats)}</div>")
        parts.append("</div>")
        return "".join(parts)


def chat(model: Any, *, max_new_tokens: int = 64) -> Chat:
    """A chat widget over `model`: a LoadedModel (anything with generate_with_stats), a model folder, or a RunResult.
    Show it as the cell's last expression or with display()."""
    return Chat(model, max_new_tokens=max_new_tokens)
