"""Events: the seam between the work (runner, passes) and what shows it (widgets, terminal bars, a remote log).

Plain dataclasses; each turns into one JSON line and back, so a remote run's event log replays exactly like
a local run's events.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, fields
from typing import Callable, Optional


@dataclass(frozen=True)
class Event:
    def to_json(self) -> str:
        return json.dumps({"event": type(self).__name__, **asdict(self)})

    @staticmethod
    def from_json(line: str) -> "Event":
        data = json.loads(line)
        cls = EVENT_TYPES[data.pop("event")]
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class RunStarted(Event):
    run_id: str
    steps: list  # [[name, type], ...] in order
    config_hash: str
    model_source: str


@dataclass(frozen=True)
class PassStarted(Event):
    name: str
    type: str
    index: int
    total: int


@dataclass(frozen=True)
class PassFinished(Event):
    name: str
    type: str
    status: str  # done | cached | failed | interrupted
    duration_s: float
    cache_hit: bool
    artifact: Optional[str] = None
    error: Optional[str] = None


@dataclass(frozen=True)
class TrainStep(Event):
    name: str
    step: int
    total: int
    loss: Optional[float]
    lr: Optional[float]
    tokens_per_s: Optional[float]


@dataclass(frozen=True)
class MetricResult(Event):
    model: str  # "input" or the name of the pass whose output was measured
    name: str
    value: float


@dataclass(frozen=True)
class Log(Event):
    level: str  # info | warning | error
    text: str

    @property
    def line(self) -> str:
        """The event as a run's log (RunResult.logs, %tunecell logs) shows it."""
        return f"{self.level}: {self.text}"


@dataclass(frozen=True)
class RunFinished(Event):
    status: str  # succeeded | failed | interrupted | goals-missed
    manifest_path: Optional[str]
    duration_s: float


EVENT_TYPES = {cls.__name__: cls for cls in (RunStarted, PassStarted, PassFinished, TrainStep, MetricResult, Log,
                                             RunFinished)}

Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers each event to every subscriber, in order; a failing subscriber never stops the run."""

    def __init__(self, subscribers: tuple[Subscriber, ...] = ()):
        self._subscribers = list(subscribers)
        self._lock = threading.Lock()
        self.history: list[Event] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        with self._lock:
            self.history.append(event)
            for subscriber in self._subscribers:
                try:
                    subscriber(event)
                except Exception as e:  # a broken display must not lose the training run
                    self.history.append(Log("warning", f"a progress display failed: {e!r}"))

    def log(self, text: str, level: str = "info") -> None:
        self.emit(Log(level, text))
