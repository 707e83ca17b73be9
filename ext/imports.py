"""Importing transformers without scanning its model sources twice."""
from __future__ import annotations

import sys
from pathlib import Path


def transformers_scanned_once() -> None:
    """Import transformers so that ``transformers.models`` takes its lazy import table from the package's scan.

    Importing transformers reads the source of every model folder (transformers/models/*) to build a table of
    what each module exports, and importing ``transformers.models`` (any model class does) reads them all again:
    the scan is cached, but keyed by path, and the second call names the folder's ``__init__.py`` instead of the
    folder. That second scan is 0.25 s of every run on this project's machine. Here ``transformers.models`` gets
    the first scan's table, its ``models.`` prefix taken off: the same table (tests/test_imports.py compares them).
    Nothing changes once ``transformers.models`` is imported, or where transformers lacks the function.
    """
    import transformers

    if "transformers.models" in sys.modules:
        return
    from transformers.utils import import_utils

    scan = getattr(import_utils, "define_import_structure", None)
    if scan is None or getattr(scan, "shares_models_scan", False):
        return
    models = Path(transformers.__file__).parent / "models"

    def define_import_structure(module_path, *args, **kwargs):
        if not args and not kwargs and Path(module_path) == models / "__init__.py":
            scanned = scan(models, prefix="models")  # the package's own call, cached
            return {backends: {name[len("models."):]: names for name, names in modules.items()
                               if name.startswith("models.")}
                    for backends, modules in scanned.items()}
        return scan(module_path, *args, **kwargs)  # as called: the cache's keys tell positions from keywords

    define_import_structure.shares_models_scan = True
    import_utils.define_import_structure = define_import_structure
