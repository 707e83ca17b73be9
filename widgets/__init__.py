"""tunecell's notebook widgets. Imports nothing heavy until a widget is asked for.

- ``preview(config_or_text, tokenizer=None, data_config=None, namespace=None, ...)``: what the model will be trained
  on (samples, tokens, masks, packed blocks, stats), with controls that write the changed values back as config text.
"""
from __future__ import annotations

from typing import Any

__all__ = ["preview", "PreviewWidget", "StaticPreview"]
_LAZY = ("PreviewWidget", "StaticPreview")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import preview_widget as _preview_module
        return getattr(_preview_module, name)
    raise AttributeError(f"module 'tunecell.widgets' has no attribute {name!r}")


def preview(*args: Any, **kwargs: Any) -> Any:
    """See tunecell.widgets.preview_widget.preview."""
    from .preview_widget import preview as _preview
    return _preview(*args, **kwargs)
