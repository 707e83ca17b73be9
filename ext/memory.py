"""Handing freed memory back to the operating system, and keeping long-lived objects out of the garbage
collector's full walks."""
from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from typing import Iterator


def trim_heap() -> None:
    """Return glibc's free heap pages to the system. glibc keeps them otherwise, and the next large allocation
    (served by mmap) does not reuse them, so the process's resident size grows by what was freed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def release_memory(freeze_survivors: bool = False) -> None:
    """Hand freed memory back to the system: objects in reference cycles (a Trainer, its callbacks and its model;
    an ONNX IR graph) wait for the collector, and glibc keeps freed heap pages unless trimmed.

    ``freeze_survivors``: move what survived the collection out of later ones until ``gc.unfreeze()``. Once torch
    and transformers are imported that is over a million objects, which every full collection walks again
    (0.25 s each on this project's machine)."""
    gc.collect()
    if freeze_survivors:
        gc.freeze()
    trim_heap()


@contextlib.contextmanager
def older_objects_frozen() -> Iterator[None]:
    """Keep the objects that exist now (torch's, transformers', the notebook's) out of the collector's full walks
    until the block ends: Trainer ends with accelerate's gc.collect(), 0.2 s over all of them on this project's
    machine. They are handed back afterwards, so that reference cycles made in the block can be collected. Objects
    frozen already (by the runner after an earlier pass, or by the caller) are left as they are."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
