"""Folders written beside their final place, then renamed into it (a published model, a converted GGUF). Their names
carry the host and process that made them, so that the ones a killed process left behind (a kernel restarted while
it published) are recognised, and deleted by the next process that writes there."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from pathlib import Path


def scratch_dir(parent: Path, name: str, kind: str = "tmp") -> Path:
    """A new folder ``.<name>.<kind>-<host>.<pid>-<random>`` in parent (made under the process's umask, as the folder
    it will replace was), after deleting the folders of that name which ended processes of this host left there."""
    _remove_orphans(parent, name)
    while True:
        folder = parent / f".{name}.{kind}-{socket.gethostname()}.{os.getpid()}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _remove_orphans(parent: Path, name: str) -> None:
    """Delete the scratch folders for name in parent whose process has ended. Folders of other hosts (a shared file
    system) are left alone: their processes cannot be checked from here."""
    if os.name != "posix" or not parent.is_dir():  # on Windows, os.kill(pid, 0) would end the process
        return
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z]+-{re.escape(socket.gethostname())}\.(\d+)-\w+")
    for entry in parent.iterdir():
        found = pattern.fullmatch(entry.name)
        if found and entry.is_dir() and not _running(int(found[1])):
            shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
