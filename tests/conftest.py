"""Shared fixtures. At import, before any library reads its cache paths, every cache moves to a session temp
folder and the Hugging Face libraries go offline: the tests never write to the user's home nor reach the hub."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="tunecell-tests-"))
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
os.environ.update({
    "HF_HOME": str(_SESSION_HOME / "hf-home"),
    "HF_DATASETS_CACHE": str(_SESSION_HOME / "hf-datasets"),
    "XDG_CACHE_HOME": str(_SESSION_HOME / "xdg-cache"),  # also where onnxruntime writes its telemetry files
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
})


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Phi-3 HF folder (see tests/tinymodel.py), built once per session."""
    from tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-phi3"))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model: Path) -> Path:
    return tiny_model
