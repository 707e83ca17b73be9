"""Where a workflow runs: on this machine (local.py), or as one AzureML job when its host is an AzureML system."""
from __future__ import annotations

import threading
from typing import Iterable, Optional

from ..config import schema
from ..errors import ConfigError, TunecellError
from ..events import Subscriber
from .result import RunResult


def remote_system(config: schema.WorkflowConfig) -> Optional[str]:
    """The name of the AzureML system the whole workflow runs on, or None to run here.

    The host decides; a config naming only an AzureML target (no host) also runs there. An AzureML target under a
    local host would mean sending each pass on its own, which tunecell does not do: that is an error, not a
    silent local run.
    """
    def is_aml(name: Optional[str]) -> bool:
        return name is not None and isinstance(config.systems.get(name), schema.AzureMLSystem)

    if is_aml(config.host):
        return config.host
    if is_aml(config.target):
        if config.host is None:
            return config.target
        raise ConfigError(f"target {config.target!r} is an AzureML system but host {config.host!r} is not: "
                          "tunecell runs the whole workflow on AzureML or none of it", path=("host",),
                          hint=f"set host: {config.target} as well")
    return None


def run_remote(config: schema.WorkflowConfig, system: str, *, subscribers: Iterable[Subscriber], progress: str,
               stop: Optional[threading.Event], only: Optional[set[str]], start_from: Optional[RunResult]) -> RunResult:
    """Submit the workflow as an AzureML job and follow it to the end (see tunecell.azureml); a pass that failed
    there raises PassFailed like a local one."""
    if only is not None or start_from is not None:
        raise TunecellError(f"--from and a subset of passes are not supported on the AzureML system {system!r} yet: "
                            "run the whole workflow there, or run it locally")
    from ..azureml import submit

    handle = submit(config, system=system, subscribers=subscribers, progress=progress)
    result = handle.follow(stop=stop)
    failed = next((p for p in result.passes if p.status == "failed"), None)
    if failed is not None:  # as a local run does: PassFailed, carrying the result
        from ..azureml.submission import RemotePassFailed

        error = RemotePassFailed(failed.name, failed.type, result.error or f"pass {failed.name!r} failed on AzureML")
        error.result = result
        raise error
    return result
