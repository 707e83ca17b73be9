"""The CPUs this process may use (its affinity mask: a container or taskset may allow fewer than the machine has)."""
from __future__ import annotations

import os


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
