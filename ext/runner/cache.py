"""The pass cache: one folder per (input, pass, settings, data, package versions), written atomically.

Layout: <cache_dir>/<workflow_id>/<pass name>-<key>/{artifact/, run.json}. While a pass runs, its files live in
<pass name>-<key>.partial/ (training checkpoints survive an interrupt there); on success the folder is renamed
into place, so a complete-looking entry is always complete. A file lock guards each entry against two runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

def package_versions(names) -> dict[str, Optional[str]]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    path: Path

    @property
    def artifact_dir(self) -> Path:
        return self.path / "artifact"

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    @property
    def complete(self) -> bool:
        return (self.path / "run.json").is_file()

    def record(self) -> dict[str, Any]:
        return json.loads((self.path / "run.json").read_text())

    @contextlib.contextmanager
    def building(self) -> Iterator[Path]:
        """Yield the partial folder to fill (``artifact/`` inside it); on success it becomes the entry."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            if self.complete:  # another run finished it while we waited for the lock
                yield None
                return
            artifact = self.partial / "artifact"
            if artifact.exists():  # a half-written artifact from a failed or interrupted run
                shutil.rmtree(artifact)
            artifact.mkdir(parents=True)
            yield self.partial
            shutil.rmtree(self.partial / "work", ignore_errors=True)
            if self.path.exists():
                shutil.rmtree(self.path)
            os.rename(self.partial, self.path)

    def write_record(self, folder: Path, record: dict[str, Any]) -> None:
        tmp = folder / "run.json.tmp"
        tmp.write_text(json.dumps(record, indent=2, default=str))
        os.replace(tmp, folder / "run.json")


class Cache:
    def __init__(self, root: Path, workflow_id: str):
        self.root = Path(root)
        self.folder = self.root / workflow_id

    def entry(self, pass_name: str, key: str) -> Entry:
        return Entry(self.folder / f"{pass_name}-{key[:16]}")

    def metrics_path(self, key: str) -> Path:
        return self.folder / "metrics" / f"{key[:16]}.json"

    def load_metrics(self, key: str) -> Optional[dict[str, float]]:
        path = self.metrics_path(key)
        return json.loads(path.read_text()) if path.is_file() else None

    def save_metrics(self, key: str, metrics: dict[str, float]) -> None:
        path = self.metrics_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(metrics, indent=2))
        os.replace(tmp, path)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
