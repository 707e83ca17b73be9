"""What a run writes in output_dir, and what it may replace there: the model/, adapter/ and top-<rank>/ folders
and the manifest.json that tunecell published itself. Anything else in their place stops the run before it starts,
so that a user's folder (an input model kept in output_dir/model, say) is never deleted."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ConfigError
from .manifest import read as read_manifest

IDENTITY = ".tunecell-identity"  # in each published folder: the cache entry's identity and the run that built it


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


def link_tree(source: Path, target: Path, identity: str) -> None:
    """Publish ``source`` as ``target``: hard links (copies across file systems) in a temp folder, renamed into
    place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, copy_function=_link_or_copy)
    (tmp / IDENTITY).write_text(identity)
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
