"""tunecell.magics: %%finetune, %%optimize, %%generate and %tunecell, registered by `%load_ext tunecell`."""
from __future__ import annotations

from typing import Any

from .magic import TuneCell


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(TuneCell(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    magics = ipython.magics_manager.registry.pop("TuneCell", None)
    if magics is not None:
        for kind, names in magics.magics.items():
            for name in names:
                ipython.magics_manager.magics[kind].pop(name, None)
