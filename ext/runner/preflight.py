"""What a run checks on this machine before any work, and `tunecell validate` with it: the data files it reads
are there, and output_dir may be written (runner/output_dir.py). An AzureML run reads its data there."""
from __future__ import annotations

from ..config import schema
from ..data.files import resolve_source
from . import output_dir


def check(config: schema.WorkflowConfig, *, remote: bool) -> None:
    output_dir.check(config.resolve(config.output_dir))
    if remote:
        return
    for data in config.data_configs:
        resolve_source(data, config.base_dir)  # DataError: a file that is not there, a glob matching nothing
