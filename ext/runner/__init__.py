"""Running a plan: locally (local.py), with a cache (cache.py), reporting events, leaving a RunResult."""
from .local import run
from .result import PassRecord, RunResult

__all__ = ["run", "RunResult", "PassRecord"]
