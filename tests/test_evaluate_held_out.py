"""Which rows evaluation scores when the model's LoRA pass ran in an earlier run (start_from): the cache records
along the model's inputs say which data it trained on and what it held out."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tunecell
from tunecell.errors import ConfigError
from tunecell.passes.base import Artifact
from tunecell.runner import evaluation
from tunecell.runner.cache import Cache

TONES = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"


def config(tmp_path: Path, passes: dict) -> tunecell.WorkflowConfig:
    return tunecell.load_config({
        "input_model": {"model_path": str(tmp_path / "model")},
        "data_configs": [{"name": "tones", "load_dataset_config": {"data_name": "json", "data_files": str(TONES)},
                          "pre_process_data_config": {"text_template": "{phrase}\n{tone}"}}],
        "passes": passes,
        "evaluators": {"ev": {"metrics": [
            {"name": "speed", "type": "latency"},
            {"name": "accuracy", "type": "accuracy", "data_config": "tones", "label_column": "tone"}]}},
        "evaluator": "ev", "cache_dir": str(tmp_path / "cache")})


def lora(eval_dataset_size=None) -> dict:
    return {"type": "LoRA", "train_data_config": "tones", "eval_dataset_size": eval_dataset_size,
            "training_args": {"seed": 3}}


def built(cache: Path, name: str, type_: str, settings: dict, source: Artifact) -> Artifact:
    """A cache entry as the runner records it: its pass, its settings and its input."""
    key = f"{name}-key"
    (cache / name / "artifact").mkdir(parents=True)
    (cache / name / "run.json").write_text(json.dumps(
        {"pass": name, "type": type_, "key": key, "settings": settings, "input": source.to_dict()}))
    return Artifact("hf", cache / name / "artifact", key)


def merged(tmp_path: Path, eval_dataset_size) -> Artifact:
    """The merged model of an earlier run: LoRA (with eval_dataset_size) -> merge."""
    trained = config(tmp_path, {"lora": lora(0.2)}).passes["lora"].model_copy(
        update={"eval_dataset_size": eval_dataset_size})
    adapter = built(tmp_path / "cache", "lora", "LoRA", trained.model_dump(mode="json", exclude={"type"}),
                    Artifact("hf", tmp_path / "model", "sha256:input"))
    return built(tmp_path / "cache", "merge", "MergeAdapterWeights", {}, adapter)


def test_the_rows_held_out_by_an_earlier_run_s_lora_pass_are_the_ones_scored(tmp_path):
    model = merged(tmp_path, 0.2)
    optimize = config(tmp_path, {"mb": {"type": "ModelBuilder"}})
    held_out = evaluation.eval_rows(config(tmp_path, {"lora": lora(0.2)}), "tones")[0]
    assert len(held_out) < len(evaluation.eval_rows(optimize, "tones")[0])
    assert evaluation.eval_rows(optimize, "tones", model)[0] == held_out


def test_accuracy_on_the_rows_an_earlier_run_trained_on_is_refused_before_the_model_loads(tmp_path):
    model = merged(tmp_path, None)
    optimize = config(tmp_path, {"mb": {"type": "ModelBuilder"}})
    with pytest.raises(ConfigError, match="accuracy on 'tones' would be measured on rows that pass 'lora' trained "
                                          "on") as error:
        evaluation.measure(model, optimize.evaluators["ev"], optimize, Cache(tmp_path / "cache", "w"), {})
    assert error.value.path == ("evaluators", "ev", "metrics", 1, "data_config")
    assert "passes.lora.eval_dataset_size" in error.value.hint


@pytest.mark.parametrize("beside", ['{"step": 1}\n{"step": 2}\n', "[1, 2]", '{"key": "other"}'])
def test_a_run_json_of_another_tool_beside_the_input_model_is_not_read_as_a_pass(tmp_path, beside):
    (tmp_path / "exp" / "model").mkdir(parents=True)
    (tmp_path / "exp" / "run.json").write_text(beside)  # the walk back ends at the input model's folder
    source = Artifact("hf", tmp_path / "exp" / "model", "sha256:input")
    adapter = built(tmp_path / "cache", "lora", "LoRA", config(tmp_path, {"lora": lora(0.2)}).passes["lora"]
                    .model_dump(mode="json", exclude={"type"}), source)
    assert [t.pass_name for t in evaluation.trainings(config(tmp_path, {}), adapter)] == ["lora"]
    assert evaluation.trainings(config(tmp_path, {}), source) == []


def test_a_run_from_start_from_refuses_accuracy_on_training_rows_before_its_first_pass(tiny_model, tmp_path):
    from tunecell.events import PassStarted

    data = [{"name": "tones", "load_dataset_config": {"data_name": "json", "data_files": str(TONES)},
             "pre_process_data_config": {"text_template": "{phrase}\n{tone}"}}]
    trained = {"input_model": {"model_path": str(tiny_model)}, "data_configs": data, "cache_dir": str(tmp_path / "c"),
               "output_dir": str(tmp_path / "out1"),
               "passes": {"lora": {"type": "LoRA", "train_data_config": "tones", "r": 4, "target_modules": ["qkv_proj"],
                                   "training_args": {"max_steps": 2, "per_device_train_batch_size": 4}},
                          "merge": {"type": "MergeAdapterWeights"}}}  # no rows held out
    first = tunecell.run(trained, progress="none")
    optimize = {**trained, "output_dir": str(tmp_path / "out2"), "passes": {"mb": {"type": "ModelBuilder"}},
                "evaluators": {"ev": {"metrics": [{"name": "accuracy", "type": "accuracy", "data_config": "tones",
                                                   "label_column": "tone"}]}}, "evaluator": "ev"}
    events: list = []
    with pytest.raises(ConfigError, match="would be measured on rows that pass 'lora' trained on"):
        tunecell.run(optimize, start_from=first, progress="none", subscribers=[events.append])
    assert not [e for e in events if isinstance(e, PassStarted)]  # before the builder's minute of work
