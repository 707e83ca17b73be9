"""A pass that fails stops the run and says why; the cache never takes a half-built folder for a finished one; a
change in the data's content or in how the input model loads retrains, one that makes the same model does not."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import tunecell
from tunecell.errors import ConfigError, PassFailed
from tunecell.events import Log, PassFinished, PassStarted, RunFinished, RunStarted

TONES = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
PHI3_LINEAR = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def config(model: Path, root: Path, passes: dict, data_files: Path = TONES) -> dict:
    return {
        "input_model": {"model_path": str(model)},
        "data_configs": [{
            "name": "tones",
            "load_dataset_config": {"data_name": "json", "data_files": str(data_files)},
            "pre_process_data_config": {"text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                                        "strategy": "line-by-line", "max_seq_len": 64, "train_on_prompt": False},
        }],
        "passes": passes,
        "cache_dir": str(root / "cache"),
        "output_dir": str(root / "out"),
    }


def lora(max_steps: int = 6, **settings) -> dict:
    return {"type": "LoRA", "r": 4, "alpha": 8, "target_modules": ["qkv_proj", "o_proj"],
            "train_data_config": "tones", "eval_dataset_size": 0.2,
            "training_args": {"max_steps": max_steps, "learning_rate": 1.0e-3, "per_device_train_batch_size": 8,
                              "seed": 0}, **settings}


def complete_entries(cache_dir: Path, prefix: str) -> list[Path]:
    return [p for p in (cache_dir / "default_workflow").glob(f"{prefix}-*")
            if p.is_dir() and not p.name.endswith(".partial") and (p / "run.json").is_file()]


def run(cfg: dict, **kwargs):
    events: list = []
    return tunecell.run(cfg, subscribers=[events.append], progress="none", **kwargs), events


# -------------------------------------------------------------------------------------------- failures
def test_missing_target_module_fails_the_lora_pass_and_lists_the_modules(tiny_model, tmp_path):
    cfg = config(tiny_model, tmp_path, {"lora": lora(target_modules=["q_proj", "v_proj"]),
                                        "merge": {"type": "MergeAdapterWeights"},
                                        "mb": {"type": "ModelBuilder", "precision": "int4"}})
    events: list = []
    with pytest.raises(PassFailed) as caught:
        tunecell.run(cfg, subscribers=[events.append], progress="none")
    error = caught.value
    assert error.pass_name == "lora" and error.pass_type == "LoRA"
    assert isinstance(error.__cause__, ConfigError)
    message = str(error)
    assert "'lora'" in message and "q_proj" in message
    for name in PHI3_LINEAR:
        assert name in message, f"{name} missing from: {message}"
    assert "lm_head" not in message.split("linear modules are:")[1]

    result = error.result
    assert result.status == "failed" and "q_proj" in result.error
    assert [(p.name, p.status) for p in result.passes] == [("lora", "failed")]
    assert [e.name for e in events if isinstance(e, PassStarted)] == ["lora"]  # the run stopped there
    failed = [e for e in events if isinstance(e, PassFinished)]
    assert [(e.name, e.status) for e in failed] == [("lora", "failed")] and "qkv_proj" in failed[0].error
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunFinished) and events[-1].status == "failed"

    manifest = result.manifest
    assert result.manifest_path == tmp_path / "out" / "manifest.json"
    assert manifest["status"] == "failed" and "qkv_proj" in manifest["error"]
    assert [(p["name"], p["status"]) for p in manifest["passes"]] == [("lora", "failed")]
    assert complete_entries(tmp_path / "cache", "lora") == []
    assert not (tmp_path / "out" / "model").exists() and not (tmp_path / "out" / "adapter").exists()


def test_a_target_module_named_with_its_parent_trains_as_peft_matches_it(tiny_model, tmp_path):
    """peft matches a target_modules key against the end of the full module name (self_attn.o_proj)."""
    from safetensors import safe_open

    result, _ = run(config(tiny_model, tmp_path, {"lora": lora(max_steps=1, target_modules=["self_attn.o_proj"])}))
    assert result.status == "succeeded"
    with safe_open(str(Path(result.artifacts["lora"]) / "artifact" / "adapter_model.safetensors"), "pt") as f:
        adapted = {re.sub(r"\.lora_[AB]\.weight$", "", key).split("layers.")[1] for key in f.keys()}
    assert adapted == {f"{layer}.self_attn.o_proj" for layer in range(4)}  # the tiny model's 4 layers
    with pytest.raises(PassFailed, match="no modules named mlp.o_proj"):  # a name no module ends with still fails
        run(config(tiny_model, tmp_path, {"lora": lora(max_steps=1, target_modules=["mlp.o_proj"])}))


def test_partial_folder_of_a_crashed_build_is_rebuilt(tiny_model, tmp_path):
    cfg = config(tiny_model, tmp_path, {"mb": {"type": "ModelBuilder", "precision": "int4"}})
    first, _ = run(cfg)
    assert first.status == "succeeded"
    entry = Path(first.artifacts["mb"])
    assert (entry / "run.json").is_file()

    # what a build that crashed mid-way leaves: the entry's .partial folder, a record included, files missing
    partial = entry.with_name(entry.name + ".partial")
    shutil.move(entry, partial)
    (partial / "artifact" / "model.onnx.data").unlink()
    (partial / "artifact" / "model.onnx").write_bytes(b"half written")
    (partial / "artifact" / "stray.bin").write_bytes(b"junk")

    cfg["output_dir"] = str(tmp_path / "out-again")
    second, events = run(cfg)
    assert second.status == "succeeded"
    assert [(e.name, e.status, e.cache_hit) for e in events if isinstance(e, PassFinished)] == [
        ("mb", "done", False)]
    assert Path(second.artifacts["mb"]) == entry and (entry / "run.json").is_file()
    assert not partial.exists()
    assert not (entry / "artifact" / "stray.bin").exists()
    assert (entry / "artifact" / "model.onnx.data").is_file()
    model = tunecell.load_model(tmp_path / "out-again" / "model")
    assert isinstance(model.generate("hello there", max_new_tokens=3), str)


# --------------------------------------------------------------------------------------- data changes
def test_changing_the_data_content_retrains(tiny_model, tmp_path):
    data = tmp_path / "tones.jsonl"
    lines = TONES.read_text().splitlines()[:60]
    data.write_text("\n".join(lines) + "\n")
    cfg = config(tiny_model, tmp_path, {"lora": lora(max_steps=2)}, data_files=data)

    first, events = run(cfg)
    assert first.status == "succeeded"
    assert [(e.name, e.cache_hit) for e in events if isinstance(e, PassFinished)] == [("lora", False)]
    first_hash = first.manifest["data_hashes"]["tones"]
    again, events = run(cfg)
    assert [(e.name, e.cache_hit) for e in events if isinstance(e, PassFinished)] == [("lora", True)]

    data.write_text("\n".join(lines[:-1] + [lines[-1].replace('"tone": "', '"tone": "Very ')]) + "\n")
    changed, events = run(cfg)
    assert changed.status == "succeeded"
    assert [(e.name, e.cache_hit) for e in events if isinstance(e, PassFinished)] == [("lora", False)]
    assert changed.manifest["data_hashes"]["tones"] != first_hash
    assert Path(changed.artifacts["lora"]) != Path(first.artifacts["lora"])
    assert len(complete_entries(tmp_path / "cache", "lora")) == 2


def test_the_lora_pass_loads_the_model_as_input_model_load_kwargs_say_and_trains_again_when_they_change(
        tiny_model, tmp_path, monkeypatch):
    import torch
    import transformers

    loads: list[dict] = []
    from_pretrained = transformers.AutoModelForCausalLM.from_pretrained

    def recorded(path, *args, **kwargs):
        loads.append(kwargs)
        return from_pretrained(path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", recorded)
    cfg = config(tiny_model, tmp_path, {"lora": lora(max_steps=1)})
    cfg["input_model"]["load_kwargs"] = {"torch_dtype": "bfloat16", "attn_implementation": "eager"}  # Olive's name
    result, _ = run(cfg)
    assert result.status == "succeeded"
    assert [(k["dtype"], k["attn_implementation"]) for k in loads] == [(torch.bfloat16, "eager")]

    cfg["input_model"]["load_kwargs"]["attn_implementation"] = "sdpa"
    again, events = run(cfg)
    assert [(e.name, e.cache_hit) for e in events if isinstance(e, PassFinished)] == [("lora", False)]
    assert loads[-1]["attn_implementation"] == "sdpa"


def test_a_model_builder_pass_in_another_precision_is_not_built_again_for_other_int4_options(tiny_model, tmp_path):
    from tunecell.config import load_config

    fp32 = {"type": "ModelBuilder", "precision": "fp32", "int4_block_size": 32}
    assert run(config(tiny_model, tmp_path, {"mb": fp32}))[0].status == "succeeded"
    other_int4_options = {**fp32, "int4_block_size": 64, "int4_algo_config": "rtn"}
    again, events = run(config(tiny_model, tmp_path, {"mb": other_int4_options}))
    assert [(e.name, e.cache_hit) for e in events if isinstance(e, PassFinished)] == [("mb", True)]
    recorded = json.loads((Path(again.artifacts["mb"]) / "run.json").read_text())["settings"]
    # the int4 options' defaults: the key of an fp32 pass written before this rule (all defaults) is the same
    assert recorded["precision"] == "fp32" and recorded["int4_block_size"] == 32
    assert recorded["int4_algo_config"] == "k_quant_mixed"
    # in int4 they make another model
    int4 = [tunecell.plan(load_config(config(tiny_model, tmp_path, {"mb": {**fp32, "precision": "int4",
                                                                          "int4_block_size": size}})))
            for size in (32, 64)]
    assert [p.steps[0].settings["int4_block_size"] for p in int4] == [32, 64]


def test_a_folder_in_output_dir_that_tunecell_did_not_write_stops_the_run_before_it_starts(tiny_model, tmp_path):
    """A run replaces output_dir/model and adapter: when one of them is the user's (here: the input model itself),
    it refuses at once, and the folder is left whole."""
    out = tmp_path / "out"
    mine = shutil.copytree(tiny_model, out / "model")
    files = sorted(p.name for p in mine.iterdir())
    cfg = config(mine, tmp_path, {"mb": {"type": "ModelBuilder", "precision": "int4"}})
    with pytest.raises(ConfigError, match="was not written by tunecell") as error:
        tunecell.run(cfg, progress="none")
    assert error.value.path == ("output_dir",)
    assert sorted(p.name for p in mine.iterdir()) == files and not (out / "manifest.json").exists()

    shutil.rmtree(out)
    out.write_text("a file where the folder goes")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        tunecell.run(config(tiny_model, tmp_path, {"mb": {"type": "ModelBuilder", "precision": "int4"}}),
                     progress="none")
    assert out.read_text() == "a file where the folder goes"


def test_an_input_model_in_a_folder_the_run_would_replace_stops_the_run_before_it_starts(tiny_model, tmp_path):
    """A run's output taken as the next run's input, into the same output_dir: the run would replace its own input
    (and the same config run again would train on its own output)."""
    earlier = shutil.copytree(tiny_model, tmp_path / "out" / "model")
    (earlier / ".tunecell-identity").write_text("a run's output")  # what a run leaves in the folders it publishes
    files = sorted(p.name for p in earlier.iterdir())
    with pytest.raises(ConfigError, match="in a folder this run replaces") as error:
        tunecell.run(config(earlier, tmp_path, {"lora": lora(), "merge": {"type": "MergeAdapterWeights"}}),
                     progress="none")
    assert error.value.path == ("input_model", "model_path") and "another output_dir" in str(error.value)
    assert sorted(p.name for p in earlier.iterdir()) == files and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("workflow_id", ["..", "../..", "a/b", "", "models"])
def test_a_workflow_id_that_is_not_one_folder_of_its_own_in_cache_dir_is_refused(tiny_model, tmp_path, workflow_id):
    """clean_cache deletes cache_dir/<workflow_id>: a path out of it, or a folder all workflows share, never."""
    (tmp_path / "cache" / "models").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("the user's")
    cfg = {**config(tiny_model, tmp_path, {"lora": lora()}), "workflow_id": workflow_id, "clean_cache": True}
    with pytest.raises(ConfigError, match="cache_dir") as error:
        tunecell.run(cfg, progress="none")
    assert error.value.path == ("workflow_id",)
    assert (tmp_path / "notes.txt").is_file() and (tmp_path / "cache" / "models").is_dir()


def test_a_cached_adapter_is_measured_over_this_run_s_base_not_the_folder_it_was_trained_from(tiny_model, tmp_path):
    """The adapter's entry is found by the base's content: after the base moved, metrics measured again load the
    base from where it is now (its adapter_config.json still names the old folder)."""
    first = shutil.copytree(tiny_model, tmp_path / "m1")
    cfg = config(first, tmp_path, {"lora": lora(max_steps=2)})
    cfg["evaluators"] = {"ev": {"metrics": [{"name": "size", "type": "size_on_disk"}]}}
    cfg["evaluator"] = "ev"
    assert run(cfg)[0].status == "succeeded"
    moved = first.rename(tmp_path / "m2")
    cfg["input_model"]["model_path"] = str(moved)
    cfg["evaluators"]["ev"]["metrics"][0]["name"] = "size_again"  # not in the metrics cache: measured again
    result, events = run(cfg)
    assert result.status == "succeeded" and result.metrics["lora"]["size_again"] > 0
    assert [e.cache_hit for e in events if isinstance(e, PassFinished)] == [True]
    assert result.model().path == result.model_path  # the result's adapter loads over m2 too


def test_a_run_that_fails_keeps_the_record_of_the_model_output_dir_still_holds(tiny_model, tmp_path):
    good, _ = run(config(tiny_model, tmp_path, {"mb": {"type": "ModelBuilder", "precision": "int4"}}))
    assert good.status == "succeeded"
    bad = config(tiny_model, tmp_path, {"lora": {"type": "LoRA", "r": 4, "target_modules": ["q_proj"],
                                                  "train_data_config": "tones", "training_args": {"max_steps": 2}}})
    with pytest.raises(PassFailed):
        run(bad)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["published"]["run_id"] == good.run_id and manifest["published"]["status"] == "succeeded"
    assert (tmp_path / "out" / "model" / "genai_config.json").is_file()
    with pytest.raises(PassFailed):  # a second failure still points at the same model
        run(bad)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["published"]["run_id"] == good.run_id


def test_a_run_that_only_misses_a_goal_publishes_its_model_and_says_so(tiny_model, tmp_path):
    passes = {"mb": {"type": "ModelBuilder", "precision": "int4"}}
    good, _ = run(config(tiny_model, tmp_path, passes))
    missed = config(tiny_model, tmp_path, {"mb": {"type": "ModelBuilder", "precision": "int4", "int4_block_size": 16}})
    missed["evaluators"] = {"ev": {"metrics": [{"name": "size", "type": "size_on_disk",
                                                "goal": {"type": "threshold", "value": 1}}]}}
    missed["evaluator"] = "ev"
    result, _ = run(missed)
    assert result.status == "failed" and result.failed_goals
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "published" not in manifest  # output_dir holds this run's model, not good's
    assert result.run_id in (tmp_path / "out" / "model" / ".tunecell-identity").read_text()
    bad = config(tiny_model, tmp_path, {"lora": lora(target_modules=["q_proj"])})
    with pytest.raises(PassFailed):
        run(bad)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["published"]["run_id"] == result.run_id


def test_a_ctrl_c_in_a_pass_without_checkpoints_ends_the_run_as_interrupted(tiny_model, tmp_path, monkeypatch):
    from tunecell.passes import model_builder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model_builder, "build_onnx", interrupted)
    result, events = run(config(tiny_model, tmp_path, {"mb": {"type": "ModelBuilder", "precision": "int4"}}))
    assert result.status == "interrupted" and [(p.name, p.status) for p in result.passes] == [("mb", "interrupted")]
    assert isinstance(events[-1], RunFinished) and events[-1].status == "interrupted"
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "interrupted"
    assert any("interrupted: run the same config again to resume" in line for line in result.logs)


def test_a_pass_another_run_built_while_this_one_waited_for_the_lock_is_reported_as_cached(tiny_model, tmp_path,
                                                                                          monkeypatch):
    from tunecell.runner.cache import Entry

    cfg = config(tiny_model, tmp_path, {"mb": {"type": "ModelBuilder", "precision": "int4"}})
    run(cfg)
    complete, looks = Entry.complete, []

    def not_yet_at_first_look(self):  # the other run finishes while this one waits for the entry's lock
        looks.append(self)
        return len(looks) > 1 and complete.fget(self)

    monkeypatch.setattr(Entry, "complete", property(not_yet_at_first_look))
    result, events = run(cfg)
    assert [(p.status, p.cache_hit) for p in result.passes] == [("cached", True)]
    assert [e.cache_hit for e in events if isinstance(e, PassFinished)] == [True]
    assert result.model().path == result.model_path  # the result's adapter loads over m2 too


def test_rows_cut_at_max_seq_len_are_reported_as_a_warning(tiny_model, tmp_path):
    cfg = config(tiny_model, tmp_path, {"lora": lora(max_steps=1)})
    cfg["data_configs"][0]["pre_process_data_config"]["max_seq_len"] = 24
    result, events = run(cfg)
    assert result.status == "succeeded"
    stats = result.passes[0].stats["data"]
    assert stats["truncated_rows"] > 0
    warnings = [e.text for e in events if isinstance(e, Log) and e.level == "warning"]
    assert any(f"{stats['truncated_rows']} of {stats['train_rows']} training rows were cut at max_seq_len 24" in w
               and f"the longest has {stats['length_max']} tokens" in w for w in warnings), warnings


@pytest.mark.parametrize("key, value, close", [("optim", "adamw_torchh", "adamw_torch"),
                                               ("lr_scheduler_type", "cosien", "cosine"),
                                               ("eval_strategy", "step", "steps")])
def test_a_misspelt_training_args_choice_fails_before_any_work_with_the_closest_name(tiny_model, tmp_path, key,
                                                                                      value, close):
    settings = lora(max_steps=1)
    settings["training_args"][key] = value
    cfg = config(tiny_model, tmp_path, {"lora": settings})
    cfg["evaluators"] = {"ev": {"metrics": [{"name": "size", "type": "size_on_disk"}]}}
    cfg["evaluator"] = "ev"
    events: list = []
    with pytest.raises(ConfigError) as error:
        tunecell.run(cfg, subscribers=[events.append], progress="none")
    assert error.value.path == ("passes", "lora", "training_args", key)
    assert f"{value!r} is not a name transformers knows" in error.value.message
    assert error.value.hint == f"did you mean {close!r}?"
    assert events == [] and not (tmp_path / "out").exists()  # not even the input model was measured


def test_a_measurement_that_cannot_fit_the_context_names_the_metric_and_its_setting(tiny_model, tmp_path):
    cfg = config(tiny_model, tmp_path, {"mb": {"type": "ModelBuilder", "precision": "fp32"}})
    cfg.update(evaluators={"ev": {"metrics": [{"name": "size", "type": "size_on_disk"},
                                              {"name": "speed", "type": "latency", "max_new_tokens": 600}]}},
               evaluator="ev")  # the tiny model's context holds 512 tokens
    with pytest.raises(PassFailed) as failed:
        run(cfg)
    message = str(failed.value)
    assert message.startswith("pass 'evaluate input' (evaluation) failed: ConfigError: "
                              "evaluators.ev.metrics.1.max_new_tokens: metric 'speed': the prompt is ")
    assert "hint: lower max_new_tokens" in message
