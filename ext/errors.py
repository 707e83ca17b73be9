"""tunecell's exceptions. Each one names the place (config key and line, data file, row and column, path)."""
from __future__ import annotations

from typing import Optional


class TunecellError(Exception):
    """Base class: an error the user can fix, shown without a traceback."""


class ConfigError(TunecellError):
    """A config that cannot run: names the key path and, when known, the line and column in the original text."""

    def __init__(self, message: str, *, path: tuple = (), line: Optional[int] = None, column: Optional[int] = None,
                 hint: Optional[str] = None):
        self.message, self.path, self.line, self.column, self.hint = message, tuple(path), line, column, hint
        super().__init__(self._format())

    @property
    def key(self) -> str:
        return ".".join(str(p) for p in self.path)

    def _format(self) -> str:
        place = self.key
        if self.line is not None:
            position = f"line {self.line}" + (f", column {self.column}" if self.column is not None else "")
            place = f"{place} ({position})" if place else position
        text = f"{place}: {self.message}" if place else self.message
        return text + (f"\n  hint: {self.hint}" if self.hint else "")


class DataError(TunecellError):
    """Bad training or evaluation data: names the file, row and column when known."""

    def __init__(self, message: str, *, file: Optional[str] = None, row: Optional[int] = None,
                 column: Optional[str] = None, hint: Optional[str] = None):
        self.message, self.file, self.row, self.column, self.hint = message, file, row, column, hint
        where = ", ".join(x for x in (file, f"row {row}" if row is not None else None,
                                      f"column {column!r}" if column else None) if x)
        super().__init__((f"{where}: " if where else "") + message + (f"\n  hint: {hint}" if hint else ""))


class ModelNotFound(TunecellError):
    """input_model names weights that cannot be found on this machine."""


class PassFailed(TunecellError):
    """A pass raised: carries the pass name; the original exception is chained (__cause__)."""

    def __init__(self, pass_name: str, pass_type: str, error: BaseException):
        self.pass_name, self.pass_type, self.error = pass_name, pass_type, error
        super().__init__(f"pass {pass_name!r} ({pass_type}) failed: {type(error).__name__}: {error}")
