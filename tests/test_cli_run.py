"""`tunecell run --config FILE [--set k=v]`: exit 0 when the run succeeds, 2 for an invalid config, 1 when a pass
fails; run as a user would, in a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TONES = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"


def write_config(path: Path, model: Path, passes: dict) -> Path:
    config = {
        "input_model": {"model_path": str(model)},
        "data_configs": [{
            "name": "tones",
            "load_dataset_config": {"data_name": "json", "data_files": str(TONES)},
            "pre_process_data_config": {"text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                                        "strategy": "line-by-line", "max_seq_len": 64},
        }],
        "passes": passes,
        "cache_dir": "cache",  # relative paths start from the config file's folder
        "output_dir": "out",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunecell.cli", *args], capture_output=True, text=True, timeout=300)


def test_successful_run_exits_0_and_writes_the_manifest(tiny_model, tmp_path):
    path = write_config(tmp_path / "build.yaml", tiny_model, {"mb": {"type": "ModelBuilder", "precision": "int4"}})
    proc = cli("run", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "succeeded" in proc.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and [p["name"] for p in manifest["passes"]] == ["mb"]
    assert (tmp_path / "out" / "model" / "genai_config.json").is_file()
    assert (tmp_path / "cache" / "default_workflow").is_dir()


def test_a_training_run_prints_no_library_warnings(tiny_model, tmp_path):
    """peft and transformers warn about each other's versions (is_gradient_checkpointing); the user sees none."""
    path = write_config(tmp_path / "lora.yaml", tiny_model, {
        "lora": {"type": "LoRA", "r": 4, "alpha": 8, "target_modules": ["qkv_proj"], "train_data_config": "tones",
                 "training_args": {"max_steps": 2}},
        "merge": {"type": "MergeAdapterWeights"}})
    proc = cli("run", "--config", str(path), "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


def test_invalid_config_exits_2_and_names_the_key(tiny_model, tmp_path):
    path = write_config(tmp_path / "bad.yaml", tiny_model, {"mb": {"type": "ModelBuilder", "precison": "int4"}})
    proc = cli("run", "--config", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "precison" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_invalid_override_exits_2(tiny_model, tmp_path):
    path = write_config(tmp_path / "build.yaml", tiny_model, {"mb": {"type": "ModelBuilder", "precision": "int4"}})
    proc = cli("run", "--config", str(path), "--set", "passes.mb.precision=fp16")  # fp16 has no CPU kernels
    assert proc.returncode == 2, proc.stderr
    assert "passes.mb.precision" in proc.stderr and "Traceback" not in proc.stderr


def test_an_output_dir_that_is_a_file_exits_2_before_any_pass(tiny_model, tmp_path):
    path = write_config(tmp_path / "build.yaml", tiny_model, {"mb": {"type": "ModelBuilder", "precision": "int4"}})
    (tmp_path / "out").write_text("not a folder")
    proc = cli("run", "--config", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "output_dir" in proc.stderr and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "default_workflow").exists()  # nothing ran


@pytest.mark.parametrize("extra, named", [
    (["--set", "data_configs.tones.load_dataset_config.data_files=nope.jsonl"], "nope.jsonl"),  # a missing file
    (["--events", "events"], "--events"),  # a folder
    (["--set", "passes.lora.training_args.optim=adamw_torchh"], "did you mean 'adamw_torch'?"),
    (["--set", "input_model.adapter_path=."], "adapter_path"),  # Olive's; the passes here would not see it
    (["--set", "passes.lora.training_args.max_grad_norm=[0.5, 1.0]"], "max_grad_norm takes one value, not a list")])
def test_what_a_run_refuses_before_any_work_exits_2(tiny_model, tmp_path, monkeypatch, extra, named):
    path = write_config(tmp_path / "lora.yaml", tiny_model, {"lora": {
        "type": "LoRA", "r": 4, "alpha": 8, "target_modules": ["qkv_proj"], "train_data_config": "tones",
        "training_args": {"max_steps": 2}}})
    (tmp_path / "events").mkdir()
    monkeypatch.chdir(tmp_path)
    proc = cli("run", "--config", str(path), "--progress", "none", *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and named in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "default_workflow").exists()


def test_missing_config_file_exits_2(tmp_path):
    proc = cli("run", "--config", str(tmp_path / "nowhere.yaml"))
    assert proc.returncode == 2, proc.stderr


def test_failed_pass_exits_1_and_shows_the_error(tiny_model, tmp_path):
    path = write_config(tmp_path / "lora.yaml", tiny_model, {"lora": {
        "type": "LoRA", "r": 4, "alpha": 8, "target_modules": ["q_proj"], "train_data_config": "tones",
        "training_args": {"max_steps": 2}}})
    proc = cli("run", "--config", str(path))
    assert proc.returncode == 1, proc.stderr
    assert "lora" in proc.stderr and "q_proj" in proc.stderr and "qkv_proj" in proc.stderr
    assert "failed" in proc.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "failed"


ENTRY = """
import atexit, sys, threading
from tunecell.cli import entry

class Teardown:
    def __del__(self):
        print("teardown ran")

kept = Teardown()  # freed as the interpreter clears this module, at its teardown
atexit.register(print, "atexit ran")
if sys.argv[1] == "with-thread":
    threading.Thread(target=threading.Event().wait, args=(1,)).start()
sys.stdout.write("buffered")  # a pipe: block-buffered, so this is still in the buffer at the end
sys.argv[1:] = ["validate", sys.argv[2]]
sys.exit(entry())
"""


def test_the_console_command_is_entry():
    from importlib.metadata import entry_points

    (command,) = entry_points(group="console_scripts", name="tunecell")
    assert command.value == "tunecell.cli:entry"


@pytest.mark.parametrize("case, teardown", [("alone", False), ("with-thread", True)])
def test_the_console_command_ends_without_teardown_unless_a_thread_runs_on(tmp_path, case, teardown):
    """entry() ends the process with main()'s exit code, atexit handlers run and output flushed, but skips the
    interpreter's teardown (bench/ measures the time it saves); with another thread still running, it ends as
    sys.exit would, once that thread is done."""
    proc = subprocess.run([sys.executable, "-c", ENTRY, case, str(tmp_path / "nowhere.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "nowhere.yaml" in proc.stderr
    assert proc.stdout.startswith("buffered") and "atexit ran" in proc.stdout
    assert ("teardown ran" in proc.stdout) is teardown


BITSANDBYTES_STATE = """
import sys
from tunecell.cli import main
code = main(sys.argv[2:], whole_process=sys.argv[1] == "whole")
import peft.import_utils
blocked = "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None
print("bitsandbytes:", "blocked" if blocked else "importable", "peft sees it:", peft.import_utils.is_bnb_available())
sys.exit(code)
"""


@pytest.mark.parametrize("process, expected", [
    ("whole", "bitsandbytes: blocked peft sees it: False"),
    ("shared", "bitsandbytes: importable peft sees it: True")])
def test_a_command_without_qlora_trains_with_bitsandbytes_blocked_only_in_a_process_of_its_own(
        tiny_model, tmp_path, process, expected):
    """bitsandbytes costs a second and 45 MB to import. The `tunecell` command, whose process runs one config, never
    loads it when the config cannot use it: peft and the Trainer take the blocked import as "not installed". Called
    from Python (a notebook, a test), main() leaves it alone, as peft caches that answer for the process."""
    path = write_config(tmp_path / "lora.yaml", tiny_model, {
        "lora": {"type": "LoRA", "r": 4, "alpha": 8, "target_modules": ["qkv_proj"], "train_data_config": "tones",
                 "training_args": {"max_steps": 2}},
        "merge": {"type": "MergeAdapterWeights"}})
    proc = subprocess.run([sys.executable, "-c", BITSANDBYTES_STATE, process, "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "succeeded"


def test_bitsandbytes_stays_importable_for_qlora_and_quantized_input_folders(tiny_model, tmp_path):
    import shutil

    from tunecell.cli import uses_bitsandbytes
    from tunecell.config import load_config

    def config(passes: dict, model: Path = tiny_model):
        return load_config(write_config(tmp_path / "c.yaml", model, passes))

    lora = {"type": "LoRA", "target_modules": ["qkv_proj"], "train_data_config": "tones"}
    assert not uses_bitsandbytes(config({"lora": lora}))
    assert uses_bitsandbytes(config({"qlora": {**lora, "type": "QLoRA"}}))
    quantized = shutil.copytree(tiny_model, tmp_path / "quantized")
    settings = json.loads((quantized / "config.json").read_text())
    settings["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(settings))
    assert uses_bitsandbytes(config({"lora": lora}, quantized))
