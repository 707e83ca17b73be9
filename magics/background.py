"""A run on a worker thread: the cell returns at once; the handle reports status, keeps the log, waits, cancels."""
from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Optional

from IPython.display import display

from tunecell.events import Event, Log


class BackgroundRun:
    def __init__(self, run: Callable[..., Any], config: Any, kwargs: dict[str, Any], stop: threading.Event,
                 on_done: Callable[[BackgroundRun], None]):
        self.id = "bg-" + uuid.uuid4().hex[:8]
        self.config = config
        self.status = "running"
        self.result: Optional[Any] = None
        self.error: Optional[BaseException] = None
        self._stop = stop
        self._log: list[str] = []  # the run's log lines so far, as RunResult.logs has them
        self._displays: list[Any] = []  # where the handle is shown while running: updated with the summary at the end
        self._display_lock = threading.Lock()
        kwargs = {**kwargs, "subscribers": [*kwargs.get("subscribers", ()), self._keep_log]}
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
        with self._display_lock:
            for shown in self._displays:
                shown.update(self._bundle(), raw=True)

    def _keep_log(self, event: Event) -> None:
        if isinstance(event, Log):
            self._log.append(event.line)

    @property
    def run_id(self) -> str:
        return self.result.run_id if self.result is not None else self.id

    @property
    def logs(self) -> list[str]:
        """The run's log (so far, while it runs), then the error that ended it."""
        lines = self.result.logs if self.result is not None else list(self._log)
        return lines + ([f"error: {self.error}"] if self.error else [])

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

    def _bundle(self) -> dict[str, str]:
        if self.result is None:
            return {"text/plain": repr(self)}
        return {"text/plain": repr(self.result), "text/html": self.result._repr_html_()}

    def _ipython_display_(self) -> None:
        """The handle as its cell shows it, replaced by the run's summary when the run ends: the static output that a
        saved notebook keeps (JupyterLab does not save the live view's widget state by default)."""
        with self._display_lock:  # else the run could end between the display and its registration
            shown = display(self._bundle(), raw=True, display_id=True)
            if self.status == "running":
                self._displays.append(shown)
