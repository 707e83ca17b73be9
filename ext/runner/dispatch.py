"""Where a workflow runs: on this machine (local.py), or as one AzureML job when its host is an AzureML system."""
from __future__ import annotations

import threading
from typing import Iterable, Optional

from ..config import schema
from ..errors import TunecellError
from ..events import Subscriber
from .result import RunResult


def remote_system(config: schema.WorkflowConfig) -> Optional[str]:
    """The name of the AzureML system the whole workflow runs on, or None to run here.

    A host naming an AzureML system decides. So does a target naming one under no host or a local host: Olive's
    ``host: local_system, target: <aml>`` sent each pass there; tunecell sends the whole workflow as one job, so the
    same passes run on the same compute.
    """
    for name in (config.host, config.target):
        if name is not None and isinstance(config.systems.get(name), schema.AzureMLSystem):
            return name
    return None


def run_remote(config: schema.WorkflowConfig, system: str, *, subscribers: Iterable[Subscriber], progress: str,
               stop: Optional[threading.Event], only: Optional[set[str]], start_from: Optional[RunResult]) -> RunResult:
    """Submit the workflow as an AzureML job and follow it to the end (see tunecell.azureml)."""
    if only is not None or start_from is not None:
        raise TunecellError(f"--from and a subset of passes are not supported on the AzureML system {system!r} yet: "
                            "run the whole workflow there, or run it locally")
    from ..azureml import submit

    return follow_remote(submit(config, system=system, subscribers=subscribers, progress=progress), stop)


def follow_remote(handle, stop: Optional[threading.Event] = None) -> RunResult:
    """Follow a submitted AzureML run to its end; a pass that failed there raises PassFailed, as a local one does."""
    result = handle.follow(stop=stop)
    failed = next((p for p in result.passes if p.status == "failed"), None)
    if failed is not None:
        from ..azureml.submission import RemotePassFailed

        error = RemotePassFailed(failed.name, failed.type, result.error or f"pass {failed.name!r} failed on AzureML")
        error.result = result
        raise error
    return result
