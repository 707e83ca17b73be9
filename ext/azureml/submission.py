"""Submit a workflow to AzureML and follow it: the handle a notebook, the CLI and ``tunecell.run`` share.

``submit(config)`` checks the workspace and the compute (errors name the wrong one), builds the job (job.py),
creates it, records it in <cache_dir>/runs.jsonl and says its name and Studio link at once. ``AzureMLRun.follow()``
polls ``jobs.get(name).status`` (never ``jobs.stream``, which blocks and prints), says each status change, tails
the job's log and replays the remote runner's events (``tunecell-event:`` lines) to the subscribers, so a
RunProgress widget shows a remote run like a local one. At the end it downloads output_dir, reads the manifest and
returns a RunResult; a failed or canceled job gives a failed RunResult with the remote error.

Stopping: ``stop`` (the widget's Cancel, ``%tunecell cancel``) cancels the job; a KeyboardInterrupt (the kernel's
interrupt) only stops following: the job runs on, ``reconnect(run_id)`` picks it up again, even after a restart.
"""
from __future__ import annotations

import contextlib
import html
import io
import json
import re
import shutil
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..config import schema
from ..errors import PassFailed, TunecellError
from ..events import Event, EventBus, Log, RunFinished, RunStarted, Subscriber
from ..runner.history import record_run, recorded_runs
from ..runner.output_dir import is_published
from ..runner.result import RunResult
from . import client as aml_client
from .follow import LogTail, fetch_outputs, move_into, point_at_base, result_from_manifest
from .job import OUTPUT, build_job

TERMINAL = ("Completed", "Failed", "Canceled", "NotResponding", "Paused")
LOGGING = ("Running", "Finalizing", "CancelRequested") + TERMINAL  # states in which the job may have a log
POLL_INTERVAL_S = 5.0
MAX_POLL_FAILURES = 5


class RemotePassFailed(PassFailed):
    """A pass failed in the AzureML job: the remote runner's message, as a local PassFailed would read."""

    def __init__(self, pass_name: str, pass_type: str, message: str):
        self.pass_name, self.pass_type, self.error = pass_name, pass_type, None
        TunecellError.__init__(self, message)


class AzureMLRun:
    """A submitted job: ``follow()`` to watch it to the end, ``cancel()`` to stop it. ``run_id`` is the job name."""

    def __init__(self, ml: Any, job_name: str, *, config: Optional[schema.WorkflowConfig], output_dir: Path,
                 cache_dir: Path, studio_url: Optional[str] = None, bus: Optional[EventBus] = None,
                 submitted_at: Optional[float] = None):
        self.ml, self.job_name, self.config = ml, job_name, config
        self.output_dir, self.cache_dir, self.studio_url = Path(output_dir), Path(cache_dir), studio_url
        self.bus = bus or EventBus()
        self.status = "Submitted"  # AzureML's status while it runs; the RunResult's once followed to the end
        self.result: Optional[RunResult] = None
        self.poll_interval = POLL_INTERVAL_S
        self.submitted_at = submitted_at or time.time()
        self.events_seen = 0
        self._tail: Optional[LogTail] = None
        self._tail_broken = False
        self._cancel_requested = False
        self._following = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.job_name

    @property
    def logs(self) -> list[str]:
        return [e.line for e in self.bus.history if isinstance(e, Log)]

    # ------------------------------------------------------------------------------------------------ control
    def cancel(self) -> None:
        """Cancel the job on AzureML (its status goes CancelRequested, then Canceled)."""
        from azure.core.exceptions import HttpResponseError

        try:
            self.ml.jobs.begin_cancel(self.job_name)
        except HttpResponseError as e:
            raise TunecellError(f"cannot cancel AzureML job {self.job_name}: {aml_client._first_line(e)}") from None
        self._cancel_requested = True
        self.bus.log(f"AzureML job {self.job_name}: cancel requested", "warning")

    def refresh(self) -> str:
        """The job's status now (one request)."""
        self.status = _status(self._get())
        return self.status

    def fetch_logs(self) -> list[str]:
        """The job's log so far (one poll), for ``%tunecell logs``: status, then the lines, events shown as such."""
        job = self._get()
        lines = [f"AzureML job {self.job_name}: {_status(job)}" + (f"  {self.studio_url}" if self.studio_url else "")]
        try:
            tail = LogTail(self.ml, self.job_name)
            raw = tail.poll(job) + tail.flush()
        except Exception as e:
            return lines + [f"(the log cannot be read: {type(e).__name__}: {aml_client._first_line(e)})"]
        for line in raw:
            event = _parse_event(line)
            lines.append(line if event is None else _describe(event))
        error = tail.error()
        return lines + ([f"error: {error}"] if error else [])

    # ------------------------------------------------------------------------------------------------ follow
    def follow(self, subscribers: Iterable[Subscriber] = (), *, progress: Optional[str] = None,
               stop: Optional[threading.Event] = None, poll_interval: Optional[float] = None) -> RunResult:
        """Watch the job to its end; returns its RunResult (see the module doc for stop and interrupts)."""
        if self.result is not None:
            return self.result
        if not self._following.acquire(blocking=False):
            raise TunecellError(f"AzureML job {self.job_name} is already being followed (a background cell?)")
        try:
            return self._follow(subscribers, progress, stop, poll_interval)
        finally:
            self._following.release()

    def _follow(self, subscribers: Iterable[Subscriber], progress: Optional[str], stop: Optional[threading.Event],
                poll_interval: Optional[float]) -> RunResult:
        for subscriber in subscribers:
            self.bus.subscribe(subscriber)
        if progress == "text":
            from ..runner.progress import TextProgress

            self.bus.subscribe(TextProgress())
        interval = self.poll_interval if poll_interval is None else poll_interval
        failures = 0
        try:
            while True:
                if stop is not None and stop.is_set() and not self._cancel_requested:
                    self.cancel()
                try:
                    job = self._get()
                    failures = 0
                except TunecellError:
                    raise
                except Exception as e:  # the retry policy gave up: say so, keep following a while
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        raise TunecellError(f"lost contact with AzureML while following job {self.job_name} "
                                            f"({type(e).__name__}: {aml_client._first_line(e)}); it may still be "
                                            f"running: %tunecell follow {self.job_name}") from None
                    self.bus.log(f"AzureML did not answer ({type(e).__name__}); trying again", "warning")
                    self._wait(interval, stop)
                    continue
                status = _status(job)
                if status != self.status:
                    self.status = status
                    self.bus.log(f"AzureML job {self.job_name}: {status}")
                if status in LOGGING:
                    self._pump(job)
                if status in TERMINAL:
                    self._pump(job, final=True)
                    return self._finish(status)
                self._wait(interval, stop)
        except KeyboardInterrupt:
            where = cache_dir_option(self.cache_dir)
            self.bus.log(f"stopped following AzureML job {self.job_name}; it keeps running. "
                         f"%tunecell follow {self.job_name}{where} picks it up again, %tunecell cancel "
                         f"{self.job_name}{where} stops it (tunecell follow / cancel in a shell)", "warning")
            return RunResult(self.job_name, "running", [], {}, {}, "", self._source(),
                             duration_s=round(time.time() - self.submitted_at, 1), logs=self.logs, config=self.config)

    def _get(self) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.ml.jobs.get(self.job_name)
        except ResourceNotFoundError:
            raise TunecellError(f"AzureML job {self.job_name} is not in workspace {self.ml.workspace_name!r}") from None

    def _wait(self, seconds: float, stop: Optional[threading.Event]) -> None:
        if stop is not None and not self._cancel_requested:
            stop.wait(seconds)
        elif seconds > 0:
            time.sleep(seconds)

    def _pump(self, job: Any, final: bool = False) -> None:
        """New log lines: events replayed as they were emitted remotely, other lines as Log events."""
        if self._tail_broken:
            return
        if self._tail is None:
            self._tail = LogTail(self.ml, self.job_name)
        try:
            lines = self._tail.poll(job)
        except Exception as e:  # the SDK's private helpers moved, or storage refused: events come at the end
            self._tail_broken = True
            self.bus.log(f"cannot read the job's log ({type(e).__name__}: {aml_client._first_line(e)}); progress "
                         "will show when the job ends", "warning")
            return
        if final:
            lines += self._tail.flush()
        for line in lines:
            event = _parse_event(line)
            if event is None:
                if line.strip():
                    self.bus.log(line)
                continue
            self.events_seen += 1
            self._emit_remote(event)

    def _emit_remote(self, event: Event) -> None:
        if isinstance(event, RunFinished):  # the local one follows, with the downloaded manifest's path
            return
        if isinstance(event, RunStarted):
            event = replace(event, run_id=self.job_name)
        self.bus.emit(event)

    # ------------------------------------------------------------------------------------------------ the end
    def _finish(self, status: str) -> RunResult:
        duration = round(time.time() - self.submitted_at, 1)
        error = self._tail.error() if self._tail is not None else None
        if error is None and status != "Completed":
            error = self._run_error()
        job_dir = self.cache_dir / "azureml" / self.job_name
        manifest, where = None, None
        if status in ("Completed", "Failed"):
            try:
                fetched = fetch_outputs(self.ml, self.job_name, OUTPUT, job_dir / "download")
            except Exception as e:
                fetched = None
                self.bus.log(f"cannot download the job's outputs: {type(e).__name__}: {aml_client._first_line(e)}",
                             "error" if status == "Completed" else "warning")
            if fetched is not None:
                # into output_dir when the run went through (goals missed included), what a local run replaces
                # there and nothing else; the rest (events.jsonl, other ranks' outputs), and all of a failed run's
                # outputs, go aside with the job's record, so what output_dir holds is not lost
                where = self.output_dir if _went_through(status, fetched / "manifest.json") else job_dir / "outputs"
                if where == self.output_dir:
                    move_into(fetched, where, only=lambda name: is_published(name) or name == "manifest.json")
                move_into(fetched, job_dir / "outputs")
                shutil.rmtree(job_dir / "download", ignore_errors=True)
                manifest = where / "manifest.json" if (where / "manifest.json").is_file() else None
                if (job_dir / "outputs" / "events.jsonl").is_file():
                    self._replay(job_dir / "outputs" / "events.jsonl")
        if manifest is not None:
            result = result_from_manifest(manifest, self.job_name, where, config=self.config, logs=[],
                                          duration_s=duration)
            if where == self.output_dir:
                result.final = self._downloaded_model(result)
            if status != "Completed" and result.status == "succeeded":
                result.status = "failed"
            if result.status != "succeeded" and not result.error and not result.failed_goals:
                result.error = error or f"AzureML job {self.job_name} ended {status}"
        else:
            result = RunResult(self.job_name, "succeeded" if status == "Completed" else "failed", [], {}, {}, "",
                               self._source(), duration_s=duration, config=self.config)
            if status == "Canceled":
                result.error = f"AzureML job {self.job_name} was canceled"
            elif status != "Completed":
                result.error = error or f"AzureML job {self.job_name} ended {status}"
            else:
                result.status, result.error = "failed", f"AzureML job {self.job_name} completed without a manifest"
        if result.error:
            self.bus.log(result.error if status == "Canceled" else f"the AzureML job failed: {result.error}", "error")
        self.bus.emit(RunFinished(result.status, str(result.manifest_path) if result.manifest_path else None,
                                  result.duration_s))
        result.logs = self.logs
        record_run(self.cache_dir, _record(self, status=result.status,
                                           manifest=str(result.manifest_path) if result.manifest_path else None,
                                           azureml_status=status, config_hash=result.config_hash))
        self.result, self.status = result, result.status
        return result

    def _replay(self, events_file: Path) -> None:
        """The events the log did not show (it was cut short, or unreadable), from the job's events.jsonl."""
        lines = [line for line in events_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        for line in lines[self.events_seen:]:
            try:
                event = Event.from_json(line)
            except Exception:
                continue
            self.events_seen += 1
            self._emit_remote(event)

    def _run_error(self) -> Optional[str]:
        try:
            tail = self._tail or LogTail(self.ml, self.job_name)
            tail.details = tail.details or self.ml.jobs._runs_operations.get_run_details(self.job_name)
            return tail.error()
        except Exception:
            return None

    def _downloaded_model(self, result: RunResult) -> Optional[dict[str, Any]]:
        """output_dir/model as the artifact `%%optimize --from` starts at. A downloaded adapter names its base by
        its path on the compute: it is pointed at this machine's copy of the input model, when there is one."""
        from ..passes.base import Artifact
        from ..passes.registry import pass_specs

        model = self.output_dir / "model"
        spec = pass_specs().get(result.passes[-1].type) if result.passes else None
        if spec is None or not model.is_dir() or self.config is None:
            return None
        adapters = [f / "adapter_config.json" for f in (model, self.output_dir / "adapter")
                    if (f / "adapter_config.json").is_file()]
        base = self._local_input_model() if adapters else None
        for settings in adapters if base is not None else ():
            point_at_base(settings, base.path)
        if spec.gives == "adapter" and base is None:
            return None
        return Artifact(spec.gives, model, f"AzureML job {self.job_name}",
                        Artifact("hf", base.path, base.identity) if spec.gives == "adapter" else None).to_dict()

    def _local_input_model(self) -> Any:
        """This machine's copy of the input model (a ResolvedModel), or None, said as a warning."""
        try:
            from ..models import resolve_model

            return resolve_model(self.config.input_model, self.cache_dir)
        except Exception as e:  # not here (a hub model never downloaded), or no local stack to look with
            self.bus.log("the downloaded adapter names its base model by its path on AzureML, as this machine has "
                         f"no copy of it ({str(e).splitlines()[0]})", "warning")
            return None

    def _source(self) -> str:
        return f"AzureML job {self.job_name}" + (f" ({self.studio_url})" if self.studio_url else "")

    # ------------------------------------------------------------------------------------------------ display
    def __repr__(self) -> str:
        return f"<AzureML job {self.job_name}: {self.status}" + (f" {self.studio_url}" if self.studio_url else "") + ">"

    def _repr_html_(self) -> str:
        e = html.escape
        link = (f" · <a href='{e(self.studio_url, quote=True)}' target='_blank'>open in Azure ML Studio</a>"
                if self.studio_url else "")
        return f"<div class='tunecell-azureml'>AzureML job <b>{e(self.job_name)}</b> · {e(self.status)}{link}</div>"


# ---------------------------------------------------------------------------------------------------- submit
def submit(config: schema.WorkflowConfig, *, system: Optional[str] = None, subscribers: Iterable[Subscriber] = (),
           progress: str = "text", credential: Any = None, client: Any = None, name: Optional[str] = None,
           **client_kwargs: Any) -> AzureMLRun:
    """Create the job for ``config`` on its AzureML system and return its handle (the job runs on its own).

    ``client``: an MLClient to use (else one is made from azureml_client, with ``credential`` or the kernel's
    login and ``client_kwargs`` such as retry_total). ``progress``: "text" prints the events as they come.
    """
    from ..runner.dispatch import remote_system

    system = system or remote_system(config)
    if system is None:
        raise TunecellError("the config runs locally: set host (or --target) to an AzureML system to submit it")
    bus = EventBus(tuple(subscribers))
    if progress == "text":
        from ..runner.progress import TextProgress

        bus.subscribe(TextProgress())
    say = _sayer(bus, show=progress != "text")
    ml = client if client is not None else aml_client.ml_client(config.azureml_client, credential=credential,
                                                                base_dir=config.base_dir, say=say, **client_kwargs)
    aml_client.require_sdk()
    aml = config.systems[system]
    workspace = aml_client.check_workspace(ml)
    aml_client.check_compute(ml, aml.aml_compute)
    vault = aml_client.keyvault_name(workspace) if aml.hf_token is True else None
    cache_dir = config.resolve(config.cache_dir)
    spec = build_job(config, system=system, name=name, keyvault_name=vault)
    bus.log(f"submitting {spec.name} to AzureML workspace {ml.workspace_name} (compute {aml.aml_compute}; "
            f"{spec.environment})")
    job = _create(ml, spec)
    handle = AzureMLRun(ml, job.name, config=config, output_dir=config.resolve(config.output_dir), cache_dir=cache_dir,
                        studio_url=getattr(job, "studio_url", None), bus=bus)
    handle.status = _status(job) or "Submitted"
    from ..config.export import minimal_dict

    saved = cache_dir / "azureml" / spec.name / "submitted-config.json"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(minimal_dict(config), indent=2), encoding="utf-8")
    record_run(cache_dir, _record(handle, status="submitted", config=str(saved), system=system,
                                  workspace={"subscription_id": ml.subscription_id,
                                             "resource_group": ml.resource_group_name,
                                             "workspace_name": ml.workspace_name}))
    say(f"AzureML job {job.name}: {handle.studio_url or '(no Studio link)'}")
    return handle


def _create(ml: Any, spec: Any) -> Any:
    from azure.core.exceptions import HttpResponseError

    noise = io.StringIO()
    try:
        with contextlib.redirect_stderr(noise):  # the SDK prints colour codes around each upload
            return ml.jobs.create_or_update(spec.job)
    except HttpResponseError as e:
        raise TunecellError(f"AzureML refused job {spec.name}: {aml_client.error_code(e) or e.status_code}: "
                            f"{aml_client._first_line(e)}") from None
    finally:
        text = re.sub(r"\x1b\[[0-9;]*m", "", noise.getvalue()).strip()
        if text:
            print(text, file=sys.stderr)


def _sayer(bus: EventBus, show: bool) -> Callable[[str], None]:
    """A message the user must see now (a device code, the Studio link): a Log event, and printed in the cell when
    no text progress prints the events already."""
    def say(text: str) -> None:
        bus.log(text)
        if show:
            print(text, flush=True)
    return say


def _record(handle: AzureMLRun, **fields: Any) -> dict[str, Any]:
    return {"run_id": handle.job_name, "backend": "azureml", "job_name": handle.job_name,
            "studio_url": handle.studio_url, "output_dir": str(handle.output_dir), **fields}


# ---------------------------------------------------------------------------------------------- after restart
def find_record(run_id: str, cache_dir: Path) -> Optional[dict[str, Any]]:
    """The AzureML run ``run_id`` (its job name) as recorded in <cache_dir>/runs.jsonl, later lines merged in."""
    merged: Optional[dict[str, Any]] = None
    for record in recorded_runs(Path(cache_dir)):
        if record.get("run_id") == run_id and record.get("backend") == "azureml":
            merged = {**(merged or {}), **{k: v for k, v in record.items() if v is not None}}
    return merged


def cache_dir_option(cache_dir: Path) -> str:
    """`` --cache-dir DIR`` for the follow and cancel commands, or nothing for the default folder."""
    import shlex

    default = Path(cache_dir).absolute() == Path(schema.DEFAULT_CACHE_DIR).absolute()
    return "" if default else f" --cache-dir {shlex.quote(str(cache_dir))}"


def reconnect(run_id: str, cache_dir: Any = schema.DEFAULT_CACHE_DIR, *, subscribers: Iterable[Subscriber] = (),
              credential: Any = None, client: Any = None, **client_kwargs: Any) -> AzureMLRun:
    """A handle on a recorded AzureML run (this kernel's or an earlier one's): follow(), cancel(), fetch_logs()."""
    cache_dir = Path(cache_dir)
    record = find_record(run_id, cache_dir)
    if record is None:
        raise TunecellError(f"no AzureML run {run_id!r} is recorded in {cache_dir / 'runs.jsonl'}")
    config = _saved_config(record.get("config"))
    bus = EventBus(tuple(subscribers))
    if client is None:
        ws = record.get("workspace") or {}
        settings = schema.AzureMLClient(subscription_id=ws.get("subscription_id"),
                                        resource_group=ws.get("resource_group"),
                                        workspace_name=ws.get("workspace_name"))
        client = aml_client.ml_client(settings, credential=credential, say=_sayer(bus, show=True), **client_kwargs)
    aml_client.require_sdk()
    return AzureMLRun(client, record["job_name"], config=config, output_dir=Path(record["output_dir"]),
                      cache_dir=cache_dir, studio_url=record.get("studio_url"), bus=bus)


def cancel(run: Any, cache_dir: Any = schema.DEFAULT_CACHE_DIR, **kwargs: Any) -> AzureMLRun:
    """Cancel an AzureML run: a handle, or a recorded run id (then ``kwargs`` go to reconnect)."""
    handle = run if isinstance(run, AzureMLRun) else reconnect(str(run), cache_dir, **kwargs)
    handle.cancel()
    return handle


def _saved_config(path: Optional[str]) -> Optional[schema.WorkflowConfig]:
    if not path or not Path(path).is_file():
        return None
    from ..config import load_config

    try:
        return load_config(json.loads(Path(path).read_text(encoding="utf-8")))
    except (TunecellError, ValueError):
        return None


def _went_through(status: str, manifest: Path) -> bool:
    """Completed, or failed only because goals were missed (no pass failed): a local run publishes those too."""
    if status == "Completed":
        return True
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(data.get("failed_goals")) and not data.get("error") and \
        not any(p.get("status") == "failed" for p in data.get("passes", []))


def _status(job: Any) -> str:
    """A job's status as AzureML spells it ("Running"): the SDK gives a str enum whose str() is its member name."""
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status) or "")


# ---------------------------------------------------------------------------------------------------- events
def _parse_event(line: str) -> Optional[Event]:
    from ..cli import EVENT_PREFIX

    at = line.find(EVENT_PREFIX)
    if at < 0:
        return None
    try:
        return Event.from_json(line[at + len(EVENT_PREFIX):])
    except Exception:
        return None


def _describe(event: Event) -> str:
    data = json.loads(event.to_json())
    kind = data.pop("event")
    return f"[{kind}] " + ", ".join(f"{k}={v}" for k, v in data.items() if v is not None)
