"""Raw rows: read local files with pyarrow (fast, no datasets cache written), check them, shuffle and cut.

Every check names the file, the row (1-based record number in that file) and the column. The checks run on each
file before files are concatenated, so the row numbers are the ones the user sees in an editor.
"""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from ..config.schema import DataConfig, PreProcessDataConfig
from ..errors import DataError
from . import files as _files
from .templates import needed_columns, render, text_source

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    import pyarrow as pa


# ------------------------------------------------------------------------------------------- reading
def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"line {line}, character {column}: not valid UTF-8 (byte 0x{data[e.start]:02x})",
                        file=str(path), hint="save the file as UTF-8") from None


def _nth_line(text: str, record: int, skip_blank: bool = True) -> int:
    """1-based line number of the record-th (0-based) non-blank line."""
    seen = -1
    for number, line in enumerate(text.split("\n"), start=1):
        if skip_blank and not line.strip():
            continue
        seen += 1
        if seen == record:
            return number
    return record + 1


def read_file(path: Path, fmt: str) -> "pa.Table":
    """One local file as an Arrow table; DataError on empty, undecodable or malformed content."""
    return _read(path, fmt)[0]


def _read(path: Path, fmt: str) -> "tuple[pa.Table, Optional[str]]":
    text = None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read the file: {e.strerror or e}", file=str(path)) from None
    if fmt == "parquet":
        if not data:
            raise DataError("file is empty", file=str(path))
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataError(f"not a readable parquet file: {e}", file=str(path)) from None
    else:
        text = _decode(path, data)
        if not text.strip():
            raise DataError("file is empty", file=str(path))
        if text.startswith("\ufeff"):
            text = text[1:]
            data = data[3:]
        try:
            table = {"json": _read_json, "csv": _read_csv, "text": _read_text}[fmt](path, text, data)
        except DataError as e:
            raise _with_format_hint(e, path, fmt) from None
    if table.num_rows == 0:
        raise DataError("file has no rows", file=str(path))
    return table, text


def _with_format_hint(error: DataError, path: Path, fmt: str) -> DataError:
    """A file that fails to parse as ``fmt`` while its name says another format: say which data_name to write."""
    named = _files.EXTENSIONS.get(path.suffix.lower())
    if named is None or named == fmt or error.hint:
        return error
    return DataError(error.message, file=error.file, row=error.row, column=error.column,
                     hint=f"the file's name says {named}, load_dataset_config.data_name says {fmt}: write "
                          f"data_name: {named}")


def _read_json(path: Path, text: str, data: bytes) -> "pa.Table":
    import pyarrow as pa

    head = text.lstrip()[:1]
    lines = path.suffix.lower() == ".jsonl"  # one object per line, even when there is one line
    if head == "[" or (head == "{" and not lines and _is_single_document(text)):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"line {e.lineno}: not valid JSON: {e.msg}", file=str(path)) from None
        if isinstance(doc, dict):  # columnar {"col": [...]} or {"data": [...]}
            lists = [v for v in doc.values() if isinstance(v, list)]
            if len(doc) == 1 and lists and all(isinstance(x, dict) for x in lists[0]):
                doc = lists[0]
            elif lists and len(lists) == len(doc):
                return _arrow(path, lambda: pa.table(doc))
            elif not lists:  # one row
                doc = [doc]
            else:
                raise DataError("a JSON file must hold a list of objects, or one object per line", file=str(path))
        for i, item in enumerate(doc):
            if not isinstance(item, dict):
                raise DataError(f"a JSON object was expected, got {type(item).__name__}", file=str(path), row=i + 1)
        return _arrow(path, lambda: pa.Table.from_pylist(doc), doc)
    # JSON lines: pyarrow's reader is fast; when it refuses, parse line by line to say where
    import pyarrow.json as pj
    try:
        return pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=max(1 << 20, len(data) + 1)))
    except Exception:
        pass
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"line {number}: not valid JSON: {e.msg} (character {e.colno})", file=str(path),
                            row=len(records) + 1) from None
        if not isinstance(item, dict):
            raise DataError(f"line {number}: a JSON object was expected, got {type(item).__name__}",
                            file=str(path), row=len(records) + 1)
        records.append(item)
    return _arrow(path, lambda: pa.Table.from_pylist(records), records)


def _is_single_document(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def _arrow(path: Path, build, rows: Optional[list[dict]] = None):
    try:
        return build()
    except Exception as e:
        hint = "give every row the same columns, each with one type (all text, or all numbers)"
        mixed = _first_mixed_value(rows or [])
        if mixed is not None:
            row, column, was, value = mixed
            raise DataError(f"column {column!r} holds {was} values above, and here {value!r}", file=str(path),
                            row=row, column=column, hint=hint + ": quote numbers to keep them as text") from None
        raise DataError(f"rows do not share one column layout: {e}", file=str(path), hint=hint) from None


def _first_mixed_value(rows: list[dict]) -> Optional[tuple[int, str, str, Any]]:
    """(row, column, the kind of value above, the value) of the first value of another kind than its column's."""
    def kind(value: Any) -> str:
        return "true/false" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else \
            "text" if isinstance(value, str) else type(value).__name__
    kinds: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        for column, value in row.items():
            if value is not None and kinds.setdefault(column, kind(value)) != kind(value):
                return number, column, kinds[column], value
    return None


def _read_csv(path: Path, text: str, data: bytes) -> "pa.Table":
    """CSV values are read as text (no type guessing: '007' stays '007'); an empty cell is a missing value."""
    import pyarrow as pa

    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("file is empty", file=str(path)) from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError("line 1: the header row is empty", file=str(path))
    if len(set(header)) != len(header):
        raise DataError(f"line 1: the header repeats a column name ({', '.join(header)})", file=str(path))
    columns: dict[str, list] = {h: [] for h in header}
    for number, record in enumerate(reader, start=1):
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise DataError(f"line {reader.line_num}: {len(record)} values for {len(header)} columns",
                            file=str(path), row=number)
        for name, cell in zip(header, record):
            columns[name].append(cell if cell != "" else None)
    return pa.table({h: pa.array(v, type=pa.string()) for h, v in columns.items()})


def _read_text(path: Path, text: str, data: bytes) -> "pa.Table":
    """One row per non-blank line, in a column named "text" (blank lines are skipped)."""
    import pyarrow as pa

    return pa.table({"text": pa.array([line for line in text.splitlines() if line.strip()], type=pa.string())})


# ------------------------------------------------------------------------------------------ checking
def check_table(table: "pa.Table", pre: PreProcessDataConfig, where: str, *, fmt: Optional[str] = None,
                text: Optional[str] = None) -> None:
    """Raise DataError for a template field that is not a column, a null in a used column, or a label outside
    the declared labels. `where` names the file (or dataset) in the message."""
    import pyarrow.compute as pc

    columns = list(table.column_names)
    needed = needed_columns(pre, columns)
    for column, role in needed:
        if column not in columns:
            raise DataError(f"{role} {column!r} is not a column (columns: {', '.join(columns) or 'none'})",
                            file=where, column=column)
    for column, _ in needed:
        nulls = pc.is_null(table.column(column))
        if pc.any(nulls).as_py():
            index = pc.index(nulls, True).as_py()
            raise DataError(f"missing value (null){_line_note(fmt, text, index)}", file=where, row=index + 1,
                            column=column, hint="fill or remove that row")
    if pre.response_template is not None and text_source(pre) != "chat":
        _check_response_template(table, pre, where, fmt, text)
    label_column = label_column_of(pre)
    if pre.labels and label_column and label_column in columns:
        import pyarrow as pa
        values = pc.cast(table.column(label_column), pa.string())
        outside = pc.invert(pc.is_in(values, value_set=pa.array([str(x) for x in pre.labels], type=pa.string())))
        outside = pc.fill_null(outside, True)
        if pc.any(outside).as_py():
            index = pc.index(outside, True).as_py()
            value = values[index].as_py()
            raise DataError(f"label {value!r} is not one of the labels {list(pre.labels)}"
                            f"{_line_note(fmt, text, index)}", file=where, row=index + 1, column=label_column,
                            hint="fix the row, or add the label to pre_process_data_config.labels")


def _check_response_template(table: "pa.Table", pre: PreProcessDataConfig, where: str, fmt: Optional[str],
                             text: Optional[str]) -> None:
    """Every row's text must hold the response_template (the loss starts after it)."""
    for index, row in enumerate(table.to_pylist()):
        try:
            render(row, pre)
        except DataError as e:
            raise DataError(f"{e.message}{_line_note(fmt, text, index)}", file=where, row=index + 1,
                            column=e.column, hint=e.hint) from None


def label_column_of(pre: PreProcessDataConfig) -> Optional[str]:
    """label_column, or (when only `labels` is given) the answer field: the template's last field."""
    if pre.label_column:
        return pre.label_column
    if pre.labels and pre.text_template:
        from .templates import Template
        fields = Template.parse(pre.text_template).fields
        return fields[-1] if fields else None
    return None


def _line_note(fmt: Optional[str], text: Optional[str], index: int) -> str:
    if text is None or fmt not in ("json", "csv"):
        return ""
    if fmt == "json" and text.lstrip()[:1] in "[{" and _is_single_document(text):
        return ""
    if fmt == "csv":
        # the header is line 1; quoted cells with line breaks make this an estimate, so say "line" only when plain
        if '"' in text:
            return ""
        return f" (line {_nth_line(text, index + 1)})"
    return f" (line {_nth_line(text, index)})"


# ------------------------------------------------------------------------------------------- loading
@dataclass
class RowOrigins:
    """Where the loaded rows come from, for messages: loaded row i is row start + order[i] (0-based) of the
    sources' rows read one after another."""

    sources: list[tuple[str, int]]  # (file, or the dataset's name or folder; its rows)
    start: int  # the first row the split slice keeps
    order: Sequence[int]  # the rows shuffle and max_samples keep, in their order

    def locate(self, index: int) -> tuple[str, int]:
        """(file, 1-based row in that file) of loaded row `index` (0-based)."""
        position = self.start + self.order[index]
        for where, rows in self.sources:
            if position < rows:
                return where, position + 1
            position -= rows
        raise IndexError(index)


def load_table(data_config: DataConfig, base_dir: Optional[Union[str, Path]] = None) -> "pa.Table":
    """The data config's rows as one Arrow table: read, checked, split-sliced, shuffled and cut to max_samples."""
    return load_located(data_config, base_dir)[0]


def load_located(data_config: DataConfig, base_dir: Optional[Union[str, Path]] = None) \
        -> "tuple[pa.Table, RowOrigins]":
    """load_table's table, and where each of its rows comes from."""
    source = _files.resolve_source(data_config, base_dir)
    pre = data_config.pre_process_data_config
    if source.kind == "files":
        tables = []
        for path in source.files:
            table, text = _read(path, source.format)
            check_table(table, pre, str(path), fmt=source.format, text=text)
            tables.append(table)
        sources = [(str(path), table.num_rows) for path, table in zip(source.files, tables)]
        table = _concat(tables, source.files)
    else:
        table = _load_with_datasets(source, data_config)
        sources = [(source.name or str(source.path), table.num_rows)]
        check_table(table, pre, sources[0][0])
    start, stop = _files.slice_bounds(table.num_rows, source.slice)
    if (start, stop) != (0, table.num_rows):
        table = table.slice(start, stop - start)
    order = _order(table.num_rows, pre)
    return _rows_at(table, order), RowOrigins(sources, start, order)


def _concat(tables: list, paths: list[Path]) -> "pa.Table":
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except Exception as e:
        raise DataError(f"the files do not share one column layout ({e})",
                        file=", ".join(str(p) for p in paths)) from None


def _order(n: int, pre: PreProcessDataConfig) -> Sequence[int]:
    """The rows kept, in their order: shuffled (seeded by data_seed), then the first max_samples."""
    order: Sequence[int] = range(n)
    if pre.shuffle:
        order = list(order)
        random.Random(pre.data_seed).shuffle(order)
    return order[:pre.max_samples]


def _rows_at(table: "pa.Table", order: Sequence[int]) -> "pa.Table":
    if isinstance(order, range):  # the first rows, in order
        return table if len(order) == table.num_rows else table.slice(0, len(order))
    import pyarrow as pa
    return table.take(pa.array(order, type=pa.int64()))


def _load_with_datasets(source: "_files.Source", data_config: DataConfig) -> "pa.Table":
    load = data_config.load_dataset_config
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a train dependency
        raise DataError(f"reading {source.name or source.path} needs the datasets package ({e})",
                        hint="pip install 'tunecell[train]'") from None
    if source.kind == "disk":
        try:
            ds = datasets.load_from_disk(str(source.path))
        except Exception as e:
            raise DataError(f"cannot load the saved dataset: {e}", file=str(source.path)) from None
        if isinstance(ds, datasets.DatasetDict):
            if source.split not in ds:
                raise DataError(f"split {source.split!r} is not in the saved dataset (splits: {', '.join(ds)})",
                                file=str(source.path), hint="set load_dataset_config.split to one of them")
            ds = ds[source.split]
        elif source.split not in ("train", ds.split):
            # a folder of files without split names is all train (as in datasets): so is a single saved Dataset
            saved_from = f" (it was saved from split {str(ds.split)!r})" if ds.split else ""
            raise DataError(f"split {source.split!r}: a single saved Dataset has no splits{saved_from}",
                            file=str(source.path), hint="drop load_dataset_config.split (or write split: train) to "
                                                        "read all its rows, or save a DatasetDict")
        return _table_of(ds)
    if source.kind == "folder":
        kwargs: dict[str, Any] = {"data_files": [str(p) for p in source.files]}
        try:
            ds = datasets.load_dataset(str(source.path), load.subset, split="train", **kwargs)
        except Exception as e:
            raise DataError(f"cannot load the dataset folder: {e}", file=str(source.path)) from None
        return _table_of(ds)
    # the hub
    if _files.hub_offline():
        raise _files.hub_unreachable(source.name)
    try:
        ds = datasets.load_dataset(source.name, load.subset, split=source.split)
    except (ConnectionError, OSError, TimeoutError) as e:
        raise _files.hub_unreachable(source.name, e) from None
    except Exception as e:
        text = f"{type(e).__name__}: {e}"
        if any(s in text.lower() for s in ("connection", "offline", "resolve", "timed out", "unreachable",
                                           "couldn't reach", "max retries", "network")):
            raise _files.hub_unreachable(source.name, e) from None
        raise DataError(f"cannot load dataset {source.name!r}: {text}",
                        hint="or point data_files at local files") from None
    return _table_of(ds)


def _table_of(ds: "datasets.Dataset") -> "pa.Table":
    if ds._indices is not None:  # a selected/shuffled dataset: materialise the rows
        ds = ds.flatten_indices(keep_in_memory=True)
    return ds.data.table


def as_dataset(table: "pa.Table") -> "datasets.Dataset":
    """An in-memory datasets.Dataset over the table (nothing written to the datasets cache)."""
    import datasets
    from datasets.table import InMemoryTable

    return datasets.Dataset(InMemoryTable(table))


def load_rows(data_config: DataConfig, base_dir: Optional[Union[str, Path]] = None) -> "datasets.Dataset":
    """The raw rows of a data config as an in-memory datasets.Dataset.

    Local json/jsonl/csv/parquet/text files (a path, a glob, a list, or a split mapping; relative paths against
    base_dir, default the current folder), a save_to_disk folder, or a hub dataset when the hub can be reached.
    Checks each file (missing, empty, not UTF-8, template field not a column, nulls in used columns, labels outside
    `labels`) and applies shuffle (data_seed) and max_samples. Raises DataError.
    """
    return as_dataset(load_table(data_config, base_dir))
