"""tunecell: fine-tune, merge, convert to ONNX int4, evaluate and try small language models from notebook cells.

Importing tunecell stays light: torch, transformers, datasets and azure are imported only when work needs them.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any

__version__ = "0.1.0"

# peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` on every model it wraps or loads an adapter
# into: a warning about two libraries' versions that a tunecell user can neither act on nor avoid, twice a run.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

_LAZY = {
    "load_config": "tunecell.config",
    "WorkflowConfig": "tunecell.config",
    "plan": "tunecell.planner",
    "run": "tunecell.runner",
    "RunResult": "tunecell.runner",
    "load_model": "tunecell.inference",
    "preview": "tunecell.widgets",
    "ConfigError": "tunecell.errors",
    "DataError": "tunecell.errors",
    "TunecellError": "tunecell.errors",
}

_SUBPACKAGES = ("azureml",)  # `tunecell.azureml.submit(...)` after a plain `import tunecell`

__all__ = sorted(_LAZY) + ["load_ipython_extension", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"tunecell.{name}")
    raise AttributeError(f"module 'tunecell' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import unload_ipython_extension as unload

    unload(ipython)
