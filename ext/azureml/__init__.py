"""Run a workflow as one AzureML command job and follow it from the notebook as if it ran here.

Needs the ``[azureml]`` extra (azure-ai-ml, azure-identity), imported only when a job is built or followed: this
package's own import is light, and ``tunecell.azureml.remote`` (what runs inside the job) needs none of it.

- ``submit(config, ...) -> AzureMLRun``: build and create the job; the handle knows its name and Studio link.
- ``AzureMLRun.follow(...) -> RunResult``: poll the status, replay the remote events (progress rows, loss curve),
  download the outputs into output_dir and read the manifest, like a local run's result.
- ``reconnect(run_id, cache_dir)``: a handle on a job recorded in <cache_dir>/runs.jsonl (after a kernel restart).
- ``cancel(run_id_or_handle, cache_dir)``: cancel the job on AzureML.
- ``build_job(config, ...)``: the azure.ai.ml command job alone (for checks, or to submit it yourself).
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "submit": "submission", "AzureMLRun": "submission", "reconnect": "submission", "cancel": "submission",
    "find_record": "submission", "build_job": "job", "JobSpec": "job", "ml_client": "client",
    "get_credential": "client",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tunecell.azureml' has no attribute {name!r}")
