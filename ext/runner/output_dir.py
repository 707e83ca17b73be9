"""What a run writes in output_dir, and what it may replace there: the model/, adapter/ and top-<rank>/ folders
and the manifest.json that tunecell published itself. Anything else in their place stops the run before it starts,
so that a user's folder (an input model kept in output_dir/model, say) is never deleted."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from ..scratch import scratch_dir
from .manifest import read as read_manifest

IDENTITY = ".tunecell-identity"  # in each published folder: the cache entry's identity and the run that built it
READ_ONLY_LINKS = os.name == "posix"  # a read-only file on Windows could not be deleted with its cache entry
WEIGHTS = (".safetensors", ".bin", ".data", ".onnx", ".gguf", ".pt", ".pth")  # published as links, the rest copied


def is_published(name: str) -> bool:
    """Whether a run publishes, and so may replace, a folder of this name in output_dir."""
    return name in ("model", "adapter") or name.startswith("top-")


def check(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder", path=("output_dir",),
                          hint="name a folder for the run's outputs (it is created when missing)")
    if not out.is_dir():
        return
    for folder in sorted(out.iterdir()):
        if is_published(folder.name) and not (folder / IDENTITY).is_file():
            raise ConfigError(f"{folder} was not written by tunecell, and the run would replace it",
                              path=("output_dir",), hint="choose another output_dir, or move that folder away")
    manifest = out / "manifest.json"
    if manifest.exists() and read_manifest(manifest) is None:
        raise ConfigError(f"{manifest} is not a tunecell manifest, and the run would replace it",
                          path=("output_dir",), hint="choose another output_dir, or move that file away")


def check_input(out: Path, model: Path) -> None:
    """An input model inside a folder the run replaces (a run's output taken as the next run's input) would be
    replaced by the run's own model, and the next run with the same config would train on that."""
    model, out = model.resolve(), out.resolve()
    if model.is_relative_to(out) and model != out and is_published(model.relative_to(out).parts[0]):
        raise ConfigError(f"the input model {model} is in output_dir, in a folder this run replaces with its own "
                          "output", path=("input_model", "model_path"),
                          hint="choose another output_dir for this run, or copy the model out of output_dir first")


def earlier_outputs(out: Path, published: set[str], this: str = "this one") -> Optional[str]:
    """A warning naming the folders an earlier run published in ``out`` that this one did not (a LoRA run's adapter/
    under a run without LoRA, a larger search's top-3/), if any. They are left in place: with clean_cache they may
    be the only copy."""
    earlier = sorted(f.name + "/" for f in out.iterdir() if f.is_dir() and is_published(f.name)
                     and f.name not in published and (f / IDENTITY).is_file()) if out.is_dir() else []
    if earlier:
        return (f"output_dir {out} also holds {', '.join(earlier)} from an earlier run, not {this}: remove them, or "
                "choose another output_dir")
    return None


def link_tree(source: Path, target: Path, identity: str) -> None:
    """Publish ``source`` as ``target``: ``stage``, then ``place``."""
    place(stage(source, target, identity), target)


def stage(source: Path, target: Path, identity: str) -> Path:
    """A copy of ``source`` in a temp folder beside ``target``, ready to take its place. Weight files are hard links
    into the cache (copies across file systems), read-only where the system allows, so that an edit in place fails
    rather than change the cache entry behind them (root ignores the mode); the files a user edits (configs,
    tokenizer, genai_config.json) are copies."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_dir(target.parent, target.name)  # unique: runs may overlap
    mode = tmp.stat().st_mode  # the umask's, which copytree replaces with the cache entry's
    try:
        shutil.copytree(source, tmp, copy_function=_publish_file, dirs_exist_ok=True)
        (tmp / IDENTITY).write_text(identity)
        tmp.chmod(mode)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def place(staged: Path, target: Path) -> None:
    """``staged`` in ``target``'s place; the old folder is deleted only once the new one is there. Another run
    publishing the same folder at the same time (two cells of one kernel) may replace it in between: the last
    rename stays."""
    aside = scratch_dir(target.parent, target.name, "old")
    try:
        for attempt in range(100):
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, aside / str(attempt))
            try:
                os.rename(staged, target)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # not the other run's folder in the way
                    moved = sorted(aside.iterdir(), key=lambda p: int(p.name))
                    if moved and not target.exists():
                        os.rename(moved[-1], target)
                    raise
        raise OSError(f"{target} was replaced by other runs 100 times while this run published it")
    finally:
        shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(staged, ignore_errors=True)  # left only when it did not take target's place


def _publish_file(src: str, dst: str) -> None:
    if not src.endswith(WEIGHTS):
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no links there
        shutil.copy2(src, dst)
        return
    if READ_ONLY_LINKS:
        with contextlib.suppress(OSError):  # not ours to change (a shared cache): the link stays writable
            os.chmod(dst, os.stat(dst).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
