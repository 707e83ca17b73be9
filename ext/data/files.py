"""Where a data config's rows come from: local files (resolved, globbed, split-selected), a saved dataset folder, the
HF hub, or an AzureML datastore (which only the AzureML target can read).

No heavy imports here: this module is also used to hash data files without loading them.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..config.schema import AzureMLDatastore, DataConfig
from ..errors import DataError

# data_name values that name a file format (as datasets' packaged builders do)
FORMATS = {"json": "json", "jsonl": "json", "csv": "csv", "parquet": "parquet", "text": "text", "txt": "text"}
EXTENSIONS = {".json": "json", ".jsonl": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet",
              ".txt": "text", ".text": "text"}
AZUREML_URI = re.compile(r"^azureml://", re.IGNORECASE)
_SPLIT = re.compile(r"^\s*([A-Za-z0-9_.\-]*)\s*(?:\[\s*(-?\d*%?)\s*:\s*(-?\d*%?)\s*\])?\s*$")
_GLOB_CHARS = re.compile(r"[*?\[]")
# datasets' names for the splits of a folder: a file or folder named dev.jsonl, my-valid/ ... holds validation rows
SPLIT_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                  "test": ("test", "testing", "eval", "evaluation")}
_SEP = "[-._ 0-9]"  # what datasets accepts around a split keyword in a name


@dataclass
class Source:
    """A resolved data source for one split.

    kind: "files" (local files of one format), "disk" (a folder written by Dataset.save_to_disk),
    "folder" (a local dataset folder for datasets.load_dataset) or "hub" (a dataset name on the HF hub).
    """

    kind: str
    split: str
    format: Optional[str] = None
    files: list[Path] = field(default_factory=list)
    path: Optional[Path] = None
    name: Optional[str] = None
    slice: Optional[tuple[str, str]] = None  # ("", "100") for train[:100]


def is_azureml(data_files: Any) -> bool:
    if isinstance(data_files, AzureMLDatastore):
        return True
    if isinstance(data_files, str):
        return bool(AZUREML_URI.match(data_files.strip()))
    if isinstance(data_files, (list, tuple)):
        return any(is_azureml(x) for x in data_files)
    if isinstance(data_files, dict):
        return any(is_azureml(x) for x in data_files.values())
    return False


def azureml_uri(data_files: Any) -> str:
    """The azureml:// URI(s) a datastore reference names, for messages and hashing."""
    if isinstance(data_files, AzureMLDatastore):
        return f"azureml://datastores/{data_files.datastore_name}/paths/{data_files.relative_path.lstrip('/')}"
    if isinstance(data_files, (list, tuple)):
        return ",".join(azureml_uri(x) for x in data_files)
    if isinstance(data_files, dict):
        return ",".join(f"{k}={azureml_uri(v)}" for k, v in data_files.items())
    return str(data_files)


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_unreachable(name: str, cause: Optional[BaseException] = None) -> DataError:
    why = "the HF hub cannot be reached" + (" (offline mode is set)" if hub_offline() and cause is None else "")
    if cause is not None:
        why += f" ({type(cause).__name__}: {str(cause).splitlines()[0][:160] if str(cause) else ''})"
    return DataError(f"dataset {name!r} is not a local file or folder and {why}",
                     hint="point data_files at local files, e.g. load_dataset_config: {data_name: json, "
                          "data_files: data/train.jsonl}")


def parse_split(split: str) -> tuple[str, Optional[tuple[str, str]]]:
    """'train' -> ('train', None); 'train[:100]' -> ('train', ('', '100')); 'train[10%:]' -> ('train', ('10%', ''))."""
    m = _SPLIT.match(split or "train")
    if not m:
        raise DataError(f"split {split!r} is not understood",
                        hint="use a split name, optionally sliced: train, train[:100], train[10%:]")
    name = m.group(1) or "train"
    if m.group(2) is None and m.group(3) is None:
        return name, None
    return name, (m.group(2) or "", m.group(3) or "")


def slice_bounds(n: int, sl: Optional[tuple[str, str]]) -> tuple[int, int]:
    if sl is None:
        return 0, n

    def bound(text: str, default: int) -> int:
        if text == "":
            return default
        if text.endswith("%"):
            value = round(n * int(text[:-1]) / 100)
        else:
            value = int(text)
        if value < 0:
            value += n
        return max(0, min(n, value))

    return bound(sl[0], 0), bound(sl[1], n)


def base_path(base_dir: Optional[Union[str, Path]]) -> Path:
    return Path(base_dir) if base_dir is not None else Path.cwd()


def _expand(pattern: str, base: Path) -> list[Path]:
    path = Path(os.path.expanduser(pattern))
    relative = not path.is_absolute()
    if relative:
        path = base / path
    hint = f"relative paths start at {base}" if relative else "check the path"
    if _GLOB_CHARS.search(pattern):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not matches:
            raise DataError(f"no file matches {pattern!r}", file=str(path), hint=hint)
        return matches
    if path.is_dir():
        inside = _data_files_in(path)
        if not inside:
            raise DataError("folder holds no .jsonl/.json/.csv/.parquet/.txt file", file=str(path))
        return inside
    if not path.is_file():
        raise DataError("file not found", file=str(path), hint=hint)
    return [path]


def _file_list(files: Any, base: Path) -> list[Path]:
    items = [files] if isinstance(files, str) else list(files)
    out: list[Path] = []
    for item in items:
        if not isinstance(item, str):
            raise DataError(f"data_files entries must be paths, got {item!r}")
        out.extend(_expand(item, base))
    return out


def resolve_source(data_config: DataConfig, base_dir: Optional[Union[str, Path]] = None) -> Source:
    """Resolve the files (or other source) of the data config's split. Raises DataError, never loads."""
    load = data_config.load_dataset_config
    if is_azureml(load.data_files) or AZUREML_URI.match(load.data_name or ""):
        uri = azureml_uri(load.data_files) if load.data_files is not None else load.data_name
        raise DataError(f"data config {data_config.name!r} reads {uri}: this needs the AzureML target or a local copy",
                        hint="run with target set to an AzureML system, or download the files and point "
                             "data_files at them")
    base = base_path(base_dir)
    split_name, sl = parse_split(load.split)
    data_files = load.data_files
    if isinstance(data_files, dict):
        if split_name not in data_files:
            raise DataError(f"split {split_name!r} is not in data_files (splits: {', '.join(map(str, data_files))})",
                            hint="set load_dataset_config.split to one of them")
        data_files = data_files[split_name]
    name = (load.data_name or "").strip()
    fmt = FORMATS.get(name.lower())
    if data_files is not None:
        files = _file_list(data_files, base)
        if fmt is None:
            local = Path(os.path.expanduser(name))
            local = local if local.is_absolute() else base / local
            if local.is_dir():  # a dataset folder plus data_files inside it: let datasets read it
                return Source("folder", split_name, path=local, slice=sl, files=files)
            fmt = _format_of(files, name)
        return Source("files", split_name, format=fmt, files=files, slice=sl)
    if fmt is not None:
        raise DataError(f"data_name {name!r} needs data_files",
                        hint="give load_dataset_config.data_files: a path, a glob, a list or a split mapping")
    local = Path(os.path.expanduser(name))
    local = local if local.is_absolute() else base / local
    if local.is_file():
        return Source("files", split_name, format=_format_of([local], name), files=[local], slice=sl)
    if local.is_dir():
        if any((local / marker).is_file() for marker in ("dataset_dict.json", "state.json", "dataset_info.json",
                                                           f"{split_name}/state.json")):
            return Source("disk", split_name, path=local, slice=sl)
        files = _split_files(local, split_name)
        return Source("files", split_name, format=_format_of(files, name), files=files, slice=sl)
    if name.startswith((".", "/", "~")) or os.sep in name and not re.match(r"^[\w.\-]+/[\w.\-]+$", name):
        raise DataError("file not found", file=str(local), hint=f"relative paths start at {base}")
    return Source("hub", split_name, name=name, slice=sl)


def _data_files_in(folder: Path) -> list[Path]:
    """The data files under a folder, as datasets finds them: hidden files and folders (.ipynb_checkpoints) and
    folders starting with "__" (__pycache__) are skipped."""
    def skipped(path: Path) -> bool:
        parts = path.relative_to(folder).parts
        return any(p.startswith(".") for p in parts) or any(p.startswith("__") for p in parts[:-1])

    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in EXTENSIONS and not skipped(p))


def _split_files(folder: Path, split: str) -> list[Path]:
    """The files of one split in a dataset folder, sorted into splits by name as datasets does: by folder names if
    any names a split, else by file names (dev.jsonl holds validation rows), else all files are train."""
    files = _data_files_in(folder)
    if not files:
        raise DataError("folder holds no .jsonl/.json/.csv/.parquet/.txt file", file=str(folder))
    wanted = next((name for name, words in SPLIT_KEYWORDS.items() if split.lower() in words), split)
    splits = list(dict.fromkeys([*SPLIT_KEYWORDS, wanted]))
    relative = [p.relative_to(folder) for p in files]
    found = _splits_named(splits, files, [r.parts[:-1] for r in relative]) or \
        _splits_named(splits, files, [r.parts[-1:] for r in relative]) or {"train": files}
    if wanted in found:
        return found[wanted]
    held = "; ".join(f"{name}: {', '.join(str(p.relative_to(folder)) for p in in_split)}"
                     for name, in_split in found.items())
    raise DataError(f"split {split!r} is not in the folder (splits found: {held})", file=str(folder),
                    hint=f"set load_dataset_config.split to {' or '.join(found)}. As in datasets, files go to splits "
                         "by their folder's or their own name (train/training, validation/valid/dev/val, "
                         "test/testing/eval/evaluation), and a folder without such names is all train")


def _splits_named(splits: list[str], files: list[Path], names: list[tuple[str, ...]]) -> dict[str, list[Path]]:
    """{split: the files one of whose names holds that split's name, between separators}, for splits with files."""
    found = {}
    for split in splits:
        words = "|".join(re.escape(w) for w in SPLIT_KEYWORDS.get(split, (split.lower(),)))
        named = re.compile(rf"(?:^|{_SEP})(?:{words})(?:{_SEP}|$)")
        in_split = [p for p, own in zip(files, names) if any(named.search(n) for n in own)]  # case counts
        if in_split:
            found[split] = in_split
    return found


def _format_of(files: list[Path], name: str) -> str:
    formats = {EXTENSIONS.get(p.suffix.lower()) for p in files}
    if None in formats or len(formats) != 1:
        raise DataError(f"cannot tell the file format from data_name {name!r} and the file names "
                        f"({', '.join(sorted({p.suffix or '(none)' for p in files}))})",
                        hint="set data_name to json, csv, parquet or text")
    return formats.pop()
