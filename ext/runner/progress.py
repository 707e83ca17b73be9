"""Terminal and plain-notebook progress: one tqdm bar per training pass, a line per finished pass."""
from __future__ import annotations

import sys
from typing import Any, Optional

from ..events import Event, Log, MetricResult, PassFinished, PassStarted, RunFinished, TrainStep


class TextProgress:
    def __init__(self, file: Any = None):
        self.file = file or sys.stderr
        self.bar: Optional[Any] = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, TrainStep):
            self._step(event)
        elif isinstance(event, PassStarted):
            self._print(f"[{event.index + 1}/{event.total}] {event.name} ({event.type}) ...")
        elif isinstance(event, PassFinished):
            self._close()
            tail = f": {event.error}" if event.error else ""
            self._print(f"    {event.name}: {event.status} in {event.duration_s:.1f} s{tail}")
        elif isinstance(event, MetricResult):
            self._print(f"    {event.model} {event.name} = {event.value}")
        elif isinstance(event, Log):
            self._print(f"    {event.level}: {event.text}" if event.level != "info" else f"    {event.text}")
        elif isinstance(event, RunFinished):
            self._close()
            self._print(f"run {event.status} in {event.duration_s:.1f} s; manifest: {event.manifest_path}")

    def _step(self, event: TrainStep) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=event.total, desc=event.name, unit="step", file=self.file, leave=True)
        self.bar.update(event.step - self.bar.n)
        post = {}
        if event.loss is not None:
            post["loss"] = f"{event.loss:.4f}"
        if event.tokens_per_s:
            post["tok/s"] = f"{event.tokens_per_s:.0f}"
        self.bar.set_postfix(post, refresh=False)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)
