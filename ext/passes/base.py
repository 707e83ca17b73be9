"""What every pass gets and gives: a function of (input artifact, its own config, context) -> output artifact."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config.schema import WorkflowConfig
from ..events import EventBus


@dataclass(frozen=True)
class Artifact:
    kind: str  # hf (a model folder) | adapter (a LoRA adapter over `base`) | onnx (an onnxruntime-genai folder)
    path: Path
    identity: str  # what cache keys of later passes build on
    base: Optional["Artifact"] = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "identity": self.identity,
                "base": self.base.to_dict() if self.base else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Artifact":
        base = cls.from_dict(data["base"]) if data.get("base") else None
        return cls(data["kind"], Path(data["path"]), data["identity"], base)


@dataclass
class PassContext:
    name: str  # the pass's name in the config
    config: WorkflowConfig  # the whole workflow, for references (data configs, target)
    out_dir: Path  # the pass fills this folder; the runner renames it into the cache when the pass succeeds
    work_dir: Path  # kept across an interrupted run (training checkpoints live here)
    scratch_dir: Path  # caches of the libraries (HF_HOME and the like) for this run
    bus: EventBus
    stop: threading.Event  # set by a Cancel button or an interrupt: stop at the next safe point

    def log(self, text: str, level: str = "info") -> None:
        self.bus.log(f"{self.name}: {text}", level)


class Interrupted(Exception):
    """A pass stopped early on request; ``checkpoint`` is where a rerun resumes from."""

    def __init__(self, checkpoint: Optional[Path]):
        self.checkpoint = checkpoint
        super().__init__(f"interrupted; checkpoint saved in {checkpoint}" if checkpoint else "interrupted")
