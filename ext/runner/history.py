"""Runs recorded in the cache folder, so `%tunecell runs` still lists them after a kernel restart."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record_run(cache_dir: Path, entry: dict[str, Any]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "runs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def recorded_runs(cache_dir: Path) -> list[dict[str, Any]]:
    path = Path(cache_dir) / "runs.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
