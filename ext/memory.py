"""Handing freed memory back to the operating system."""
from __future__ import annotations

import ctypes
import gc
import sys


def trim_heap() -> None:
    """Return glibc's free heap pages to the system. glibc keeps them otherwise, and the next large allocation
    (served by mmap) does not reuse them, so the process's resident size grows by what was freed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def release_memory() -> None:
    """Hand the memory a finished pass freed back to the system before the next pass allocates its own: the
    trainer and the models form reference cycles (gc), and glibc keeps freed heap pages unless trimmed. Without it the
    training pass's heap stays resident under the merge and the builder, and the run's peak RSS is their sum."""
    gc.collect()
    trim_heap()
