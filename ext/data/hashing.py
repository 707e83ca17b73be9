"""A content hash of a data config's data: the files' bytes (sorted by path) plus the load config.

The files are hashed directly (never loaded as a dataset), each once per process while its size and mtime stay the
same. Hub datasets hash their name and load config (their content is not on this machine); AzureML datastores hash
their URI (the AzureML target resolves them).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Union

from ..config.schema import DataConfig
from . import files as _files

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digest = _FILE_DIGESTS[key] = h.hexdigest()
    return digest


def data_hash(data_config: DataConfig, base_dir: Optional[Union[str, Path]] = None, *,
              include_preprocess: bool = False) -> str:
    """sha256 hex digest of the data config's data. Stable across runs and machines (file paths enter relative to
    base_dir); changes when a file's content changes. include_preprocess adds pre_process_data_config."""
    load = data_config.load_dataset_config
    h = hashlib.sha256()
    # data_files enter as the files they resolve to (names relative to base_dir, and bytes), not as written
    h.update(json.dumps({"load_dataset_config": load.model_dump(mode="json", exclude={"data_files"})},
                        sort_keys=True).encode())
    if include_preprocess:
        h.update(json.dumps({"pre_process_data_config": data_config.pre_process_data_config.model_dump(mode="json")},
                            sort_keys=True).encode())
    if _files.is_azureml(load.data_files) or _files.AZUREML_URI.match(load.data_name or ""):
        h.update(b"azureml:" + _files.azureml_uri(load.data_files or load.data_name).encode())
        return h.hexdigest()
    source = _files.resolve_source(data_config, base_dir)
    base = _files.base_path(base_dir).resolve()
    paths: list[Path] = list(source.files)
    if source.kind == "disk":
        paths = sorted(p for p in source.path.rglob("*") if p.is_file())
    elif source.kind == "hub":
        h.update(b"hub:" + source.name.encode())
        return h.hexdigest()
    for path in sorted(paths, key=lambda p: str(p)):
        resolved = path.resolve()
        try:
            name = resolved.relative_to(base).as_posix()
        except ValueError:
            name = resolved.as_posix()
        h.update(f"\0{name}\0{resolved.stat().st_size}\0".encode())
        h.update(file_digest(resolved).encode())
    return h.hexdigest()
