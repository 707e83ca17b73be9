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

    ``freeze_survivors``: move what survived the collection out of later ones until ``gc.unfreeze()``, as the
    runner did with the imported libraries before the first pass: later collections walk only what the next pass
    makes."""
    gc.collect()
    if freeze_survivors:
        gc.freeze()
    trim_heap()


_NEVER = 10**9  # a gen-2 threshold no run reaches: it counts young collections
_usual: list[int] = []  # the gen-2 thresholds full_collections_deferred replaced, outermost first


@contextlib.contextmanager
def _full_collections_every(count: int) -> Iterator[None]:
    young, middle, full = gc.get_threshold()
    gc.set_threshold(young, middle, count)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, full)


@contextlib.contextmanager
def full_collections_deferred() -> Iterator[None]:
    """In the block the collector starts only young collections by itself; full ones run when called
    (release_memory after each pass). Importing torch, transformers, peft and datasets makes about 400,000 objects
    that live as long as the process, and each full collection the collector started on the way walked all of them
    again: 1.2 s of a 14 s run of the tiny model on this project's machine, against 0.3 s for the young ones. The
    cost: reference cycles that outlive the young generations wait for the next explicit collection. Process-wide,
    as the collector is (a notebook's other threads too), until the block ends."""
    _usual.append(gc.get_threshold()[2])
    try:
        with _full_collections_every(_NEVER):
            yield
    finally:
        _usual.pop()


@contextlib.contextmanager
def full_collections_resumed() -> Iterator[None]:
    """Full collections run as usual in the block, also where they were deferred: a long training's cyclic garbage
    would otherwise wait for the pass's end. Once the runner froze the libraries they walk only what the block
    makes."""
    with _full_collections_every(_usual[0] if _usual else gc.get_threshold()[2]):
        yield
