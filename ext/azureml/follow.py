"""Following a job without blocking on ``jobs.stream``: its log, tailed a poll at a time; its outputs, downloaded;
its manifest, read back into a RunResult that looks like a local run's.

The log tail uses the SDK's own helpers (the ones ``jobs.stream`` loops over): the run details from run history,
the log files listed in the job's artifact store (or the run details' log URLs), and the client's pipeline with
retries, asking each time only for the bytes after those already read. They are private: when a poll fails, the
follow says why once and goes on without the log; the events are replayed from output_dir/events.jsonl at the end.
"""
from __future__ import annotations

import codecs
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from ..runner.result import PassRecord, RunResult

STREAM_LOG = re.compile(r"user_logs/std_log[\D]*[0]*(?:_ps)?\.txt$")  # the SDK's streamable (rank 0) logs
LEGACY_LOG = re.compile(r"azureml-logs/[\d]{2}.+\.txt$")


class LogTail:
    """New lines of the job's main log (rank 0's std_log), each returned once; a partial last line waits."""

    def __init__(self, ml: Any, job_name: str):
        self.ml, self.job_name = ml, job_name
        self.details: Any = None  # the last RunDetails (status, error, log URLs)
        self._store: Optional[tuple[dict, str]] = None  # (datastore info, prefix) of the job's artifact store
        self._store_checked = False
        self._offsets: dict[str, int] = {}  # bytes read of each log
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a read may end mid-character
        self._partial = ""
        self._pipeline: Any = None

    def poll(self, job: Any = None) -> list[str]:
        runs = self.ml.jobs._runs_operations
        self.details = runs.get_run_details(self.job_name)
        if not self._store_checked and job is not None:
            self._store = self._artifact_store(job)
            self._store_checked = True
        if self._store is not None:
            from azure.ai.ml._artifacts._artifact_utilities import list_logs_in_datastore

            logs = list_logs_in_datastore(self._store[0], prefix=self._store[1], legacy_log_folder_name="/azureml-logs/")
        else:
            logs = dict(self.details.log_files or {})
        names = sorted(n for n in logs if STREAM_LOG.search(n)) or sorted(n for n in logs if LEGACY_LOG.search(n))
        if not names:
            return []
        chunk = self._partial + self._read_from(names[0], logs[names[0]])
        lines = chunk.split("\n")
        self._partial = lines.pop()
        return [line.rstrip("\r") for line in lines]

    def _read_from(self, name: str, url: str) -> str:
        """What the log gained since the last poll: a ranged GET (a training log grows to megabytes)."""
        if self._pipeline is None:
            from azure.ai.ml._utils.utils import create_requests_pipeline_with_retry

            self._pipeline = create_requests_pipeline_with_retry(requests_pipeline=self.ml.jobs._requests_pipeline)
        offset = self._offsets.get(name, 0)
        response = self._pipeline.get(url, headers={"Range": f"bytes={offset}-"} if offset else None,
                                      read_timeout=60, connection_timeout=30)
        status = response.status_code
        if status in (404, 416):  # not written yet; nothing new
            return ""
        if status not in (200, 206):
            raise RuntimeError(f"reading the log answered HTTP {status}")
        data = response.body()
        if status == 200:  # the whole file: the range was ignored, or the file was replaced by a shorter one
            if len(data) >= offset:
                data = data[offset:]
            else:
                self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                offset = 0
        self._offsets[name] = offset + len(data)
        return self._decoder.decode(data)

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, ""
        return [rest] if rest.strip() else []

    def _artifact_store(self, job: Any) -> Optional[tuple[dict, str]]:
        """Jobs write their logs to the artifact store their 'default' output names (as jobs.stream reads them)."""
        default = (getattr(job, "outputs", None) or {}).get("default")
        uri = getattr(default, "path", None) or ""
        if "datastores/" not in uri:
            return None
        from azure.ai.ml._artifacts._artifact_utilities import get_datastore_info

        store, prefix = uri.split("datastores/", 1)[1].split("/", 1)
        prefix = prefix.removeprefix("paths/")
        return get_datastore_info(self.ml.jobs._datastore_operations, store), prefix

    def error(self) -> Optional[str]:
        """The job's error from run history, as code: message."""
        error = getattr(self.details, "error", None)
        inner = getattr(error, "error", None) or error
        message = getattr(inner, "message", None)
        if not message:
            return None
        code = getattr(inner, "code", None)
        return f"{code}: {message}" if code else str(message)


def fetch_outputs(ml: Any, job_name: str, output: str, work: Path) -> Path:
    """The job's ``output`` folder, downloaded under ``work``; returns where it landed."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ml.jobs.download(job_name, output_name=output, download_path=str(work))
    source = work / "named-outputs" / output
    if not source.is_dir():
        raise FileNotFoundError(f"the job left no {output} folder")
    return source


def move_into(source: Path, dest: Path, only: Callable[[str], bool] = lambda name: True) -> Path:
    """Each top-level entry of ``source`` that ``only`` accepts put into ``dest``, replacing the one there. Each
    entry is staged next to its target first (a copy when the download is on another file system), then swapped in
    by renames."""
    from ..runner.output_dir import IDENTITY, is_published

    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if not only(entry.name):
            continue
        target = dest / entry.name
        if entry.is_dir() and is_published(entry.name) and not (entry / IDENTITY).exists():
            # the stamp that lets the next run replace it (runner/output_dir.py)
            (entry / IDENTITY).write_text("downloaded from an AzureML job")
        staged, old = dest / f".{entry.name}.tunecell-new", dest / f".{entry.name}.tunecell-old"
        for leftover in (staged, old):
            _remove(leftover)
        shutil.move(str(entry), str(staged))
        if target.exists() or target.is_symlink():
            os.replace(target, old)
        os.replace(staged, target)
        _remove(old)
    return dest


def point_at_base(adapter_config: Path, base: Path) -> None:
    """An adapter's base_model_name_or_path set to ``base`` (rewritten through a temp file)."""
    data = json.loads(adapter_config.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = str(base)
    tmp = adapter_config.with_name(adapter_config.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, adapter_config)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def result_from_manifest(manifest_path: Path, run_id: str, output_dir: Path, *, config: Any, logs: list[str],
                         duration_s: float) -> RunResult:
    """The downloaded manifest as a RunResult: output paths made local; the remote cache's paths dropped."""
    data = json.loads(manifest_path.read_text(encoding="utf-8"))
    fields = set(PassRecord.__dataclass_fields__)
    passes = [PassRecord(**{k: v for k, v in p.items() if k in fields}) for p in data.get("passes", [])]
    for record in passes:
        record.artifact = None  # it was in the job's cache
    artifacts = {name: str(output_dir / name) for name in ("model", "adapter")
                 if name in data.get("artifacts", {}) and (output_dir / name).exists()}
    return RunResult(run_id, data.get("status", "failed"), passes, data.get("metrics", {}), artifacts,
                     data.get("config_hash", ""), data.get("model_source", ""), manifest_path=manifest_path,
                     duration_s=float(data.get("duration_s") or duration_s), failed_goals=data.get("failed_goals", []),
                     error=data.get("error"), logs=logs, config=config)
