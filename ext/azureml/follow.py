"""Following a job without blocking on ``jobs.stream``: its log, tailed a poll at a time; its outputs, downloaded;
its manifest, read back into a RunResult that looks like a local run's.

The log tail uses the SDK's own helpers (the ones ``jobs.stream`` loops over): the run details from run history,
the log files listed in the job's artifact store (or the run details' log URLs), and their text through the
client's pipeline with retries. They are private, so each poll that fails says why once and the follow goes on:
the event stream is replayed from output_dir/events.jsonl at the end in any case.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

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
        self._offsets: dict[str, int] = {}
        self._partial = ""
        self._pipeline: Any = None

    def poll(self, job: Any = None) -> list[str]:
        from azure.ai.ml._utils.utils import create_requests_pipeline_with_retry, download_text_from_url

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
        name = names[0]
        if self._pipeline is None:
            self._pipeline = create_requests_pipeline_with_retry(requests_pipeline=self.ml.jobs._requests_pipeline)
        text = download_text_from_url(logs[name], self._pipeline, timeout=60) or ""
        start = self._offsets.get(name, 0)
        if len(text) < start:  # the file was replaced: read it again from the start
            start = 0
        self._offsets[name] = len(text)
        chunk = self._partial + text[start:]
        lines = chunk.split("\n")
        self._partial = lines.pop()
        return [line.rstrip("\r") for line in lines]

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


def download_outputs(ml: Any, job_name: str, output: str, dest: Path, work: Path) -> Path:
    """The job's ``output`` folder into ``dest``: downloaded under ``work`` first, then each top-level entry renamed
    into place (a local run also replaces only model/, adapter/ and manifest.json, keeping the rest)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ml.jobs.download(job_name, output_name=output, download_path=str(work))
    source = work / "named-outputs" / output
    if not source.is_dir():
        raise FileNotFoundError(f"the job left no {output} folder")
    dest.mkdir(parents=True, exist_ok=True)
    trash = work / "replaced"
    trash.mkdir()
    for entry in sorted(source.iterdir()):
        target = dest / entry.name
        if target.exists() or target.is_symlink():
            os.replace(target, trash / entry.name)
        os.replace(entry, target)
    shutil.rmtree(work, ignore_errors=True)
    return dest


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
