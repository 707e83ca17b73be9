"""A run on a worker thread: the cell returns at once; the handle reports status, waits, cancels."""
from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Optional


class BackgroundRun:
    def __init__(self, run: Callable[..., Any], config: Any, kwargs: dict[str, Any], stop: threading.Event,
                 on_done: Callable[[BackgroundRun], None]):
        self.id = "bg-" + uuid.uuid4().hex[:8]
        self.config = config
        self.status = "running"
        self.result: Optional[Any] = None
        self.error: Optional[BaseException] = None
        self._stop = stop
        self._thread = threading.Thread(target=self._main, args=(run, config, kwargs, on_done), name=self.id,
                                        daemon=True)
        self._thread.start()

    def _main(self, run: Callable[..., Any], config: Any, kwargs: dict[str, Any], on_done) -> None:
        try:
            self.result = run(config, **kwargs)
        except Exception as e:  # kept on the handle and shown by wait(): a background failure is never lost
            self.error = e
            self.result = getattr(e, "result", None)
        self.status = self.result.status if self.result is not None else "failed"
        on_done(self)

    @property
    def run_id(self) -> str:
        return self.result.run_id if self.result is not None else self.id

    @property
    def logs(self) -> list[str]:
        """The run's log, then the error that ended it (all there is of a run that failed before it started)."""
        return (self.result.logs if self.result is not None else []) + ([f"error: {self.error}"] if self.error else [])

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def cancel(self) -> None:
        """Ask the run to stop at its next step (training saves a checkpoint; a rerun resumes from it)."""
        self._stop.set()

    def wait(self, timeout: Optional[float] = None) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.id} is still running")
        if self.error is not None:
            raise self.error
        return self.result

    def __repr__(self) -> str:
        return repr(self.result) if self.result is not None else f"<tunecell background run {self.id}: {self.status}>"

    def _repr_html_(self) -> Optional[str]:
        return self.result._repr_html_() if self.result is not None else None
