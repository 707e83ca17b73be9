"""Importing transformers, peft and bitsandbytes without work a run does not use."""
from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path


def lean_imports() -> None:
    """The runner calls this before the first pass (or check) that imports transformers."""
    transformers_scanned_once()
    bitsandbytes_compiled_on_first_use()


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


def bitsandbytes_compiled_on_first_use() -> None:
    """Import bitsandbytes with each ``torch.compile`` it makes on import deferred to the function's first call.

    peft imports bitsandbytes wherever it is installed (``peft.helpers``, and LoRA's layer dispatch), and
    bitsandbytes' default backend wraps four functions in ``torch.compile`` as it is imported. Resolving the
    compiler imports torch's inductor: 0.9 s of every run on this project's machine, LoRA runs that never touch a
    quantized layer included. Compiling happens at the first call either way; a ``torch.compile`` that fails gives
    the function uncompiled, as bitsandbytes' own wrapper does. Nothing changes once bitsandbytes is imported.
    """
    if "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return
    import torch

    compile_now = torch.compile

    def compile_on_first_call(model=None, **options):
        if model is None:  # the decorator form, @torch.compile(...)
            return functools.partial(compile_on_first_call, **options)
        compiled = None

        @functools.wraps(model)
        def call(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                try:
                    compiled = compile_now(model, **options)
                except Exception:  # noqa: BLE001 - where torch cannot compile (a Python it does not support)
                    compiled = model
            return compiled(*args, **kwargs)

        return call

    torch.compile = compile_on_first_call
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:  # a broken install: peft reports it as it would have
        pass
    finally:
        torch.compile = compile_now
