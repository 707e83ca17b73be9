"""tunecell's notebook widgets. Imports nothing heavy until a widget is asked for.

- ``preview(config_or_text, tokenizer=None, data_config=None, namespace=None, ...)``: what the model will be trained
  on (samples, tokens, masks, packed blocks, stats), with controls that write the changed values back as config text.
"""
from __future__ import annotations

from typing import Any

__all__ = ["preview", "PreviewWidget", "StaticPreview"]
# live run progress and the chat widget (progress.py, chat_widget.py): name -> submodule, imported on first use.
# The chat module is chat_widget, not chat: importing a submodule binds its name on this package, which would
# replace the chat() function below with the module.
_LAZY_RUN = {"RunProgress": "progress", "static_summary": "progress", "Chat": "chat_widget"}
__all__ += ["RunProgress", "static_summary", "chat", "Chat"]
# the config form (form.py): config_form() below, the class on first use
_LAZY_RUN["ConfigForm"] = "form"
__all__ += ["config_form", "ConfigForm"]


def __getattr__(name: str) -> Any:
    if name in _LAZY_RUN:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_RUN[name]}"), name)
    if name == "PreviewWidget":
        from .preview_widget import PreviewWidget
        return PreviewWidget
    if name == "StaticPreview":
        from .core import StaticPreview
        return StaticPreview
    raise AttributeError(f"module 'tunecell.widgets' has no attribute {name!r}")


def preview(*args: Any, **kwargs: Any) -> Any:
    """See tunecell.widgets.core.preview."""
    from .core import preview as _preview
    return _preview(*args, **kwargs)


def chat(model: Any, **kwargs: Any) -> Any:
    """See tunecell.widgets.chat_widget.chat: a chat widget over a loaded model, a model folder or a RunResult."""
    from .chat_widget import chat as _chat
    return _chat(model, **kwargs)


def config_form(config_or_text: Any, namespace: Any = None, on_apply: Any = None, **kwargs: Any) -> Any:
    """See tunecell.widgets.form.config_form: a form over a config, with its YAML, plan and cost estimate."""
    from .form import config_form as _config_form
    return _config_form(config_or_text, namespace, on_apply, **kwargs)
