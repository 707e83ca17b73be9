"""Folders written beside their final place, then renamed into it (a published model, a converted GGUF). Their names
carry the host and process that made them, so that the ones a killed process left behind (a kernel restarted while
it published) are recognised, and deleted by the next process that writes there."""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path


def scratch_dir(parent: Path, name: str, kind: str = "tmp") -> Path:
    """A new private folder ``.<name>.<kind>-<host>.<pid>-<random>`` in parent, made after deleting the folders of
    that name which processes of this host that are no longer running left there."""
    remove_orphans(parent, name)
    return Path(tempfile.mkdtemp(prefix=f".{name}.{kind}-{socket.gethostname()}.{os.getpid()}-", dir=parent))


def remove_orphans(parent: Path, name: str) -> list[Path]:
    """Delete, and return, the scratch folders for name in parent whose process has ended. Folders of other hosts
    (a shared file system) are left alone: their processes cannot be checked from here."""
    if os.name != "posix" or not parent.is_dir():  # on Windows, os.kill(pid, 0) would end the process
        return []
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:tmp|old)-{re.escape(socket.gethostname())}\.(\d+)-[^.]+")
    removed = []
    for entry in parent.iterdir():
        found = pattern.fullmatch(entry.name)
        if found and entry.is_dir() and not _running(int(found[1])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
