"""<output_dir>/manifest.json: what ran, on which weights and data, with which packages, and what it measured."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .cache import package_versions

if TYPE_CHECKING:
    from .local import LocalRun
    from .result import RunResult

PACKAGES = ("tunecell", "torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "onnx",
            "onnxruntime", "onnxruntime-genai")


def write(run: "LocalRun", result: "RunResult") -> Path:
    config = run.config
    data = {
        "run_id": result.run_id,
        "status": result.status,
        "error": result.error,
        "failed_goals": result.failed_goals,
        "checkpoint": result.checkpoint,
        "config_hash": result.config_hash,
        "data_hashes": run.data_hashes,
        "packages": package_versions(PACKAGES),
        "python": platform.python_version(),
        "seed": _seed(config),
        "model_source": result.model_source,
        "git_sha": _git_sha(config.base_dir),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": result.duration_s,
        "passes": [vars(p) for p in result.passes],
        "metrics": result.metrics,
        "artifacts": result.artifacts,
        "notes": config.notes,
        "config": config.model_dump(mode="json", exclude_defaults=True),
    }
    out = config.resolve(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    if not _published_its_model(data):
        # keep the record of the run whose model/ and adapter/ are still there
        data["published"] = _published(path)
    _write_json(path, data)
    return path


def read(path: Path) -> Optional[dict]:
    """A run's manifest (local, remote or a search's: each has a status), or None for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "status" in data else None


def _published_its_model(data: dict) -> bool:
    """A run publishes its model when it went through: it succeeded, or it only missed a goal."""
    return data.get("status") == "succeeded" or bool(data.get("failed_goals"))


def _published(path: Path) -> Optional[dict]:
    """The manifest of the run that published what output_dir holds, read from the manifest there now."""
    previous = read(path) or {}
    return previous if _published_its_model(previous) else previous.get("published")


def _seed(config) -> Optional[int]:
    seeds = [p.training_args.seed for p in config.passes.values() if hasattr(p, "training_args")]
    return seeds[0] if seeds else None


def _git_sha(base_dir: Optional[str]) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=base_dir or None, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def publish_search(config, result: "RunResult") -> None:
    """A search's output_dir: the best model in model/, the top N (output_model_num) in top-<rank>/, and a
    manifest listing every candidate."""
    from .output_dir import earlier_outputs, link_tree

    out = config.resolve(config.output_dir)
    ranked = sorted(result.candidates, key=lambda c: c["rank"])
    keep = config.search_strategy.output_model_num
    published = [c for c in ranked[:keep] if c["published"]]  # not a folder an earlier search left there
    folders = ["model" if c["rank"] == 1 else f"top-{c['rank']}" for c in published]
    for c, folder in zip(published, folders):
        link_tree(out / "candidates" / str(c["index"]) / "model", out / folder, f"candidate-{c['index']}")
    best_published = bool(published) and published[0]["rank"] == 1
    if best_published:
        result.artifacts["model"] = str(out / "model")
    earlier = earlier_outputs(out, set(folders), "this search")
    if earlier:
        result.logs.append(f"warning: {earlier}")
    data = {"status": result.status, "best": result.best, "candidates": result.candidates,
            "search_strategy": config.search_strategy.model_dump(), "packages": package_versions(PACKAGES),
            "config": config.model_dump(mode="json", exclude_defaults=True)}
    if not best_published:
        data["published"] = _published(out / "manifest.json")  # the run whose model/ is still there
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "manifest.json", data)
    result.manifest_path = out / "manifest.json"


def _write_json(path: Path, data: dict) -> None:
    """Written whole or not at all; a temp name of its own, as two runs of one kernel may write at once."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
