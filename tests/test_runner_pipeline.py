"""The local runner end to end on the tiny random Phi-3: LoRA -> merge -> ModelBuilder, its events, manifest, cache,
goals and `start_from`. One full run (``main``) is shared; the other runs reuse its cache folder, so they retrain
only what their change invalidates. The tiny model is random: these tests check plumbing, never quality."""
from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import tunecell
from tunecell.events import MetricResult, PassFinished, PassStarted, RunFinished, RunStarted, TrainStep

TONES = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
MAX_STEPS = 6
METRIC_NAMES = {"accuracy", "latency", "size"}
PROMPTS = ["### Text: I lost my dog today\n### The tone is:\n", "### Text: we won the big prize\n### The tone is:\n",
           "Return the sum of"]


def tiny_config(model: Path, cache_dir: Path, output_dir: Path, data_files: Path = TONES) -> dict:
    return {
        "input_model": {"model_path": str(model)},
        "data_configs": [{
            "name": "tones",
            "load_dataset_config": {"data_name": "json", "data_files": str(data_files)},
            "pre_process_data_config": {"text_template": TEMPLATE, "strategy": "line-by-line", "max_seq_len": 64,
                                        "train_on_prompt": False},
        }],
        "passes": {
            "lora": {"type": "LoRA", "r": 4, "alpha": 8, "target_modules": ["qkv_proj", "o_proj"],
                     "train_data_config": "tones", "eval_dataset_size": 0.2,
                     "training_args": {"max_steps": MAX_STEPS, "learning_rate": 1.0e-3,
                                       "per_device_train_batch_size": 8, "seed": 0,
                                       "logging_steps": 1}},
            "merge": {"type": "MergeAdapterWeights"},
            "mb": {"type": "ModelBuilder", "precision": "int4"},
        },
        "evaluators": {"ev": {"metrics": [
            {"name": "accuracy", "type": "accuracy", "data_config": "tones", "label_column": "tone",
             "max_new_tokens": 3, "max_samples": 10},
            {"name": "latency", "type": "latency", "max_new_tokens": 4},
            {"name": "size", "type": "size_on_disk"},
        ]}},
        "evaluator": "ev",
        "cache_dir": str(cache_dir),
        "output_dir": str(output_dir),
    }


def run(config: dict, subscribers: tuple = (), **kwargs) -> tuple[tunecell.RunResult, list]:
    events: list = []
    result = tunecell.run(config, subscribers=[events.append, *subscribers], progress="none", **kwargs)
    return result, events


def finished(events: list) -> dict[str, PassFinished]:
    return {e.name: e for e in events if isinstance(e, PassFinished)}


@pytest.fixture(scope="module")
def main(tiny_model, tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("runner-main")
    config = tiny_config(tiny_model, root / "cache", root / "out")
    frozen: dict[str, int] = {}  # objects out of the collector's reach when each pass starts
    full_every: dict[str, int] = {}  # the collector's gen-2 threshold then

    def watch(event) -> None:
        if isinstance(event, PassStarted):
            frozen[event.name], full_every[event.name] = gc.get_freeze_count(), gc.get_threshold()[2]
        elif isinstance(event, TrainStep):
            frozen.setdefault("training", gc.get_freeze_count())
            full_every.setdefault("training", gc.get_threshold()[2])

    thresholds = gc.get_threshold()
    result, events = run(config, subscribers=[watch])
    return SimpleNamespace(root=root, config=config, result=result, events=events, frozen=frozen,
                           full_every=full_every, thresholds_before=thresholds)


def variant(main: SimpleNamespace, output: str, evaluate: bool = False) -> dict:
    """The main config with its own output folder (the cache is shared); without evaluation unless asked."""
    config = copy.deepcopy(main.config)
    config["output_dir"] = str(main.root / output)
    if not evaluate:
        config["evaluator"] = None
    return config


# ---------------------------------------------------------------------------------------------- the run
def test_lora_merge_int4_succeeds_and_publishes_its_artifacts(main):
    result = main.result
    assert result.status == "succeeded", result
    assert [(p.name, p.type, p.status, p.cache_hit) for p in result.passes] == [
        ("lora", "LoRA", "done", False), ("merge", "MergeAdapterWeights", "done", False),
        ("mb", "ModelBuilder", "done", False)]
    lora = result.passes[0]
    assert lora.stats["steps"] == MAX_STEPS and lora.stats["trainable_params"] > 0
    assert lora.stats["data"]["train_rows"] > lora.stats["data"]["eval_rows"] > 0
    import torch

    assert lora.stats["device"].startswith("cuda:0 (" if torch.cuda.is_available() else "cpu")
    for name in ("lora", "merge", "mb", "model", "adapter"):
        assert Path(result.artifacts[name]).is_dir(), name
    out = main.root / "out"
    assert Path(result.artifacts["model"]) == out / "model"
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert {"genai_config.json", "model.onnx", "tokenizer.json"} <= {p.name for p in (out / "model").iterdir()}
    assert (Path(result.artifacts["merge"]) / "artifact" / "config.json").is_file()
    assert result.final["kind"] == "onnx"
    text = repr(result)
    assert "succeeded" in text and "mb" in text and str(result.manifest_path) in text


def test_collections_skip_the_libraries_and_what_earlier_passes_left_until_the_run_ends(main):
    # from the first pass on, the imported libraries are out of the collector's walks, then what each pass left
    # (a frozen object that dies leaves the count); the run unfreezes them
    assert main.frozen["lora"] > 100_000 and main.frozen["training"] > 100_000
    assert main.frozen["training"] < main.frozen["merge"] <= main.frozen["mb"]
    assert gc.get_freeze_count() == 0


def test_full_collections_wait_for_pass_ends_but_run_as_usual_in_training(main):
    usual = main.thresholds_before[2]
    assert all(main.full_every[name] > 1000 * usual for name in ("lora", "merge", "mb"))
    assert main.full_every["training"] == usual
    assert gc.get_threshold() == main.thresholds_before


def test_published_model_loads_and_generates(main):
    model = tunecell.load_model(main.root / "out" / "model")
    assert model.kind == "onnx"
    text, tokens, seconds = model.generate_with_stats(PROMPTS[0], max_new_tokens=5)
    assert isinstance(text, str) and 1 <= tokens <= 5 and seconds > 0
    assert model.classify("I lost my dog today", ["Sad", "Joy"], "### Text: {text}\n### The tone is:\n") in (
        None, "Sad", "Joy")


def test_every_column_of_the_metrics_table_loads(main):
    result = main.result
    assert [result.model(name).kind for name in ("input", "merge", "mb", "model")] == ["hf", "hf", "onnx", "onnx"]
    assert result.model("input").generate(PROMPTS[0], max_new_tokens=2) == \
        tunecell.load_model(result.config.input_model.model_path).generate(PROMPTS[0], max_new_tokens=2)
    with pytest.raises(KeyError, match="this run has input, lora"):
        result.model("nope")


def test_metrics_cover_input_and_each_produced_model(main):
    metrics = main.result.metrics
    # the adapter is measured once, as the merged model
    assert set(metrics) == {"input", "merge", "mb"}
    for model, values in metrics.items():
        assert set(values) == METRIC_NAMES, model
        assert 0.0 <= values["accuracy"] <= 1.0 and values["latency"] > 0 and values["size"] > 0
    assert metrics["mb"]["size"] < metrics["merge"]["size"] / 2  # int4 weights are much smaller than fp32


def test_manifest_records_what_ran(main, tiny_model):
    manifest = main.result.manifest
    assert main.result.manifest_path == main.root / "out" / "manifest.json"
    assert manifest["status"] == "succeeded"
    assert manifest["run_id"] == main.result.run_id
    assert len(manifest["config_hash"]) == 64 and manifest["config_hash"] == main.result.config_hash
    assert set(manifest["data_hashes"]) == {"tones"} and len(manifest["data_hashes"]["tones"]) == 64
    packages = manifest["packages"]
    for name in ("torch", "transformers", "peft", "onnxruntime-genai"):
        assert packages[name] and packages[name][0].isdigit(), name
    assert manifest["seed"] == 0
    assert str(tiny_model) in manifest["model_source"]
    assert [p["name"] for p in manifest["passes"]] == ["lora", "merge", "mb"]
    for entry in manifest["passes"]:
        assert {"name", "type", "status", "duration_s", "cache_hit", "artifact"} <= set(entry)
        assert entry["status"] == "done" and entry["cache_hit"] is False and entry["duration_s"] >= 0
        assert Path(entry["artifact"]).is_dir()
    assert set(manifest["metrics"]) == {"input", "merge", "mb"}
    assert all(set(values) == METRIC_NAMES for values in manifest["metrics"].values())
    assert manifest["metrics"] == main.result.metrics


def test_events_come_in_order(main):
    events = main.events
    assert isinstance(events[0], RunStarted)
    assert events[0].steps == [["lora", "LoRA"], ["merge", "MergeAdapterWeights"], ["mb", "ModelBuilder"]]
    assert isinstance(events[-1], RunFinished)
    assert events[-1].status == "succeeded" and events[-1].manifest_path == str(main.result.manifest_path)
    assert sum(isinstance(e, (RunStarted, RunFinished)) for e in events) == 2

    position = {}
    for i, e in enumerate(events):
        if isinstance(e, (PassStarted, PassFinished)):
            position[(type(e).__name__, e.name)] = i
    order = [position[(kind, name)] for name in ("lora", "merge", "mb") for kind in ("PassStarted", "PassFinished")]
    assert order == sorted(order), "each pass starts after the one before it finished"
    assert [(e.index, e.total) for e in events if isinstance(e, PassStarted)] == [(0, 3), (1, 3), (2, 3)]

    steps = [(i, e) for i, e in enumerate(events) if isinstance(e, TrainStep)]
    assert [e.step for _, e in steps] == list(range(1, MAX_STEPS + 1))
    assert all(e.total == MAX_STEPS and e.name == "lora" for _, e in steps)
    assert all(position[("PassStarted", "lora")] < i < position[("PassFinished", "lora")] for i, _ in steps)
    # the loss Trainer logs (every logging_steps) rides on the next step's event
    assert all(e.loss is not None and e.loss > 0 for _, e in steps[1:])

    measured = [(i, e.model) for i, e in enumerate(events) if isinstance(e, MetricResult)]
    assert sorted({m for _, m in measured}) == ["input", "mb", "merge"]
    for i, model in measured:
        if model == "input":
            assert i < position[("PassStarted", "lora")]
        elif model == "merge":
            assert position[("PassFinished", "merge")] < i < position[("PassStarted", "mb")]
        else:
            assert position[("PassFinished", "mb")] < i
    values = {(e.model, e.name): e.value for e in events if isinstance(e, MetricResult)}
    assert values == {(m, n): v for m, vs in main.result.metrics.items() for n, v in vs.items()}


# -------------------------------------------------------------------------------------------- the cache
CACHED_RUN = """
import json, sys
import tunecell
from tunecell.events import PassFinished

passes = []
result = tunecell.run(json.loads(sys.argv[1]), progress="none",
                      subscribers=[lambda e: passes.append([e.name, e.status, e.cache_hit])
                                   if isinstance(e, PassFinished) else None])
heavy = [m for m in ("torch", "transformers", "peft", "datasets", "onnxruntime_genai") if m in sys.modules]
print("RESULT " + json.dumps({"status": result.status, "passes": passes, "metrics": result.metrics, "heavy": heavy}))
"""


def test_rerun_is_all_cache_hits_and_loads_no_model(main):
    config = variant(main, "out-cached", evaluate=True)
    proc = subprocess.run([sys.executable, "-c", CACHED_RUN, json.dumps(config)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    report = json.loads(line[len("RESULT "):])
    assert report["status"] == "succeeded"
    assert report["passes"] == [["lora", "cached", True], ["merge", "cached", True], ["mb", "cached", True]]
    assert report["heavy"] == [], "a fully cached run imported " + ", ".join(report["heavy"])
    assert report["metrics"] == main.result.metrics  # remembered, not measured again
    assert (main.root / "out-cached" / "model" / "genai_config.json").is_file()


@pytest.fixture(scope="module")
def fp32(main):
    config = variant(main, "out-fp32")
    config["passes"]["mb"]["precision"] = "fp32"
    return run(config)


def test_changing_builder_precision_reruns_only_the_builder(fp32):
    result, events = fp32
    assert result.status == "succeeded"
    assert {name: e.cache_hit for name, e in finished(events).items()} == {"lora": True, "merge": True, "mb": False}
    assert not any(isinstance(e, TrainStep) for e in events)


def test_fp32_onnx_generates_what_the_merged_model_generates(main, fp32):
    result, _ = fp32
    onnx, merged = result.model("model"), main.result.model("merge")
    assert (onnx.kind, merged.kind) == ("onnx", "hf")
    for prompt in PROMPTS:
        assert onnx.generate(prompt, max_new_tokens=12) == merged.generate(prompt, max_new_tokens=12), prompt


def test_changing_a_lora_setting_reruns_every_pass(main):
    config = variant(main, "out-lr")
    config["passes"]["lora"]["training_args"]["learning_rate"] = 2.0e-3
    result, events = run(config)
    assert result.status == "succeeded"
    assert {n: (e.status, e.cache_hit) for n, e in finished(events).items()} == {
        "lora": ("done", False), "merge": ("done", False), "mb": ("done", False)}
    assert [e.step for e in events if isinstance(e, TrainStep)] == list(range(1, MAX_STEPS + 1))
    for name in ("lora", "merge", "mb"):
        assert result.artifacts[name] != main.result.artifacts[name]


# ----------------------------------------------------------------------------------------------- goals
def _with_goals(main: SimpleNamespace, output: str, accuracy_goal: bool) -> dict:
    config = variant(main, output, evaluate=True)
    config["evaluate_input_model"] = False
    metrics = [{"name": "latency", "type": "latency", "max_new_tokens": 2,
                "goal": {"type": "threshold", "value": 1.0e6}}]  # ms: met by any model
    if accuracy_goal:
        metrics.insert(0, {"name": "accuracy", "type": "accuracy", "data_config": "tones", "label_column": "tone",
                           "max_new_tokens": 2, "max_samples": 8, "goal": {"type": "threshold", "value": 0.95}})
    config["evaluators"] = {"ev": {"metrics": metrics}}
    return config


def test_missed_goal_fails_the_run_and_names_the_goal(main):
    result, events = run(_with_goals(main, "out-goal-missed", accuracy_goal=True))
    assert result.metrics["mb"]["accuracy"] < 0.95  # a random model: the goal cannot be met
    assert result.status == "failed"
    assert len(result.failed_goals) == 1 and "accuracy" in result.failed_goals[0]
    assert all(p.status == "cached" for p in result.passes)
    assert events[-1].status == "failed"
    assert result.manifest["status"] == "failed" and result.manifest["failed_goals"] == result.failed_goals
    assert "input" not in result.metrics


def test_met_goal_succeeds(main):
    result, _ = run(_with_goals(main, "out-goal-met", accuracy_goal=False))
    assert result.status == "succeeded" and result.failed_goals == []
    assert result.metrics["mb"]["latency"] < 1.0e6


# ---------------------------------------------------------------------------------------- start_from
def test_start_from_runs_only_the_remaining_passes(main):
    config = variant(main, "out-from", evaluate=True)
    config["passes"]["mb"]["int4_block_size"] = 64  # a builder setting main did not build
    first, _ = run(config, only={"lora", "merge"})
    assert first.status == "succeeded"
    assert [p.name for p in first.passes] == ["lora", "merge"] and all(p.cache_hit for p in first.passes)
    assert set(first.metrics) == {"input", "merge"}
    assert first.final["kind"] == "hf"

    second, events = run(config, start_from=first)
    assert second.status == "succeeded"
    assert [e.name for e in events if isinstance(e, PassStarted)] == ["mb"]
    assert finished(events)["mb"].cache_hit is False
    assert [p.name for p in second.passes] == ["lora", "merge", "mb"]
    assert second.metrics["input"] == first.metrics["input"] and second.metrics["merge"] == first.metrics["merge"]
    assert set(second.metrics["mb"]) == METRIC_NAMES
    assert not any(isinstance(e, MetricResult) and e.model != "mb" for e in events)  # earlier ones carried over
    record = json.loads((Path(second.artifacts["mb"]) / "run.json").read_text())
    assert record["input"]["path"] == first.final["path"]  # built from the first run's merged model
    assert (Path(second.artifacts["model"]) / "genai_config.json").is_file()
    assert set(second.manifest["metrics"]) == {"input", "merge", "mb"}


def test_start_from_refuses_a_pass_it_ran_with_other_settings_or_nothing_left_to_run(main):
    from tunecell.errors import ConfigError

    config = variant(main, "out-from-refused")
    first, _ = run(config, only={"lora", "merge"})
    changed = copy.deepcopy(config)
    changed["passes"]["lora"]["r"] = 2 * config["passes"]["lora"]["r"]
    with pytest.raises(ConfigError, match=f"pass 'lora' already ran in run {first.run_id} with other settings"):
        run(changed, start_from=first)
    done = copy.deepcopy(config)
    done["passes"] = {name: config["passes"][name] for name in ("lora", "merge")}
    with pytest.raises(ConfigError, match="already ran every pass of this config: nothing to run"):
        run(done, start_from=first)
    assert json.loads((main.root / "out-from-refused" / "manifest.json").read_text())["run_id"] == first.run_id


def test_an_entry_rebuilt_under_the_same_key_is_published_again(tiny_model, tmp_path):
    # clean_cache empties the cache first: the builder's entry is built again under the same key, and output_dir
    # must then hold that build, not the one before
    config = tiny_config(tiny_model, tmp_path / "cache", tmp_path / "out")
    config.update(passes={"mb": {"type": "ModelBuilder", "precision": "fp32"}}, evaluator=None, clean_cache=True)
    published = tmp_path / "out" / "model" / "model.onnx"
    builds = []
    for _ in range(2):
        result, _ = run(config)
        assert result.status == "succeeded" and not result.passes[0].cache_hit
        built = Path(result.artifacts["mb"]) / "artifact" / "model.onnx"
        assert published.read_bytes() == built.read_bytes()
        builds.append((published.parent / ".tunecell-identity").read_text())
    assert builds[0] != builds[1]  # the stamp names the run that built the entry


def test_a_run_says_which_folders_in_output_dir_an_earlier_run_left(main):
    config = variant(main, "out-earlier")
    assert run(config)[0].status == "succeeded"  # cache hits: model/ and adapter/
    config["passes"] = {"mb": config["passes"]["mb"]}  # no LoRA pass: no adapter
    result, _ = run(config)
    out = main.root / "out-earlier"
    assert result.status == "succeeded" and set(result.artifacts) == {"mb", "model"}
    warning = next(line for line in result.logs if "from an earlier run" in line)
    assert warning.startswith(f"warning: output_dir {out} also holds adapter/ from an earlier run, not this one")
    assert (out / "adapter" / "adapter_config.json").is_file()  # left: with clean_cache it may be the only copy


def test_weights_are_published_as_read_only_links_and_the_files_users_edit_as_copies(main):
    config = variant(main, "out-links")
    result, _ = run(config)
    published, built = main.root / "out-links" / "model", Path(result.artifacts["mb"]) / "artifact"
    for path in built.iterdir():
        copy = published / path.name
        linked = path.suffix in (".onnx", ".data")
        assert os.path.samefile(copy, path) == linked, path.name
        assert (copy.stat().st_mode & 0o222 == 0) == linked, path.name  # no write bit on a shared file
    assert os.path.samefile(published / "model.onnx.data", built / "model.onnx.data")
    # a common edit of the published model leaves the cache entry, which the next run publishes, as built
    genai = json.loads((published / "genai_config.json").read_text())
    genai["search"]["max_length"] = 7
    (published / "genai_config.json").write_text(json.dumps(genai))
    assert json.loads((built / "genai_config.json").read_text())["search"]["max_length"] != 7
    assert not [p.name for p in published.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_metrics_are_measured_again_when_the_scoring_or_the_measuring_packages_change(monkeypatch):
    from tunecell.config import load_config
    from tunecell.passes.base import Artifact
    from tunecell.runner import evaluation

    config = load_config(Path(__file__).parent / "configs" / "example.yaml")
    model = Artifact("hf", Path("model"), "sha256:0123")

    def key(scoring: str = "generate") -> str:
        evaluator = config.evaluators[config.evaluator].model_copy(deep=True)
        evaluator.metrics[0] = evaluator.metrics[0].model_copy(update={"scoring": scoring})
        return evaluation.metrics_key(model, evaluator, config, {"tones": "sha256:data"})

    assert evaluation.metrics_key(model, config.evaluators[config.evaluator], config, {"tones": "sha256:data"}) == key()
    assert key("loglikelihood") != key()
    before = key()
    versions = evaluation.package_versions
    monkeypatch.setattr(evaluation, "package_versions",
                        lambda names: {**versions(names), "tunecell": "999.0"})
    assert key() != before


def evaluation_config(tmp_path: Path, **changes) -> "tunecell.WorkflowConfig":
    """tiny_config's evaluation on the tone data, validated; ``changes`` replace top-level keys."""
    config = tiny_config(Path("unused-model"), tmp_path / "cache", tmp_path / "out")
    config.update(changes)
    return tunecell.load_config(config)


def test_accuracy_chooses_among_every_label_of_the_data_file_even_when_the_rows_scored_lack_some(tmp_path):
    """The data file is ordered so that its first held-out rows may share one tone: among the labels of only the
    rows scored (max_samples 1: one label), every answer would be right."""
    from tunecell.runner import evaluation

    config = evaluation_config(tmp_path)
    accuracy = config.evaluators["ev"].metrics[0].model_copy(update={"max_samples": 1})
    assert len(evaluation._examples(accuracy, config)) == 1
    assert evaluation.candidate_labels(accuracy, config) == ["Fear", "Joy", "Sad", "Surprise"]
    named = accuracy.model_copy(update={"labels": ["Sad", "Joy"]})
    assert evaluation.candidate_labels(named, config) == ["Sad", "Joy"]


def test_speed_prompts_are_held_out_prompts_or_whole_texts_without_a_template(tmp_path):
    from tunecell.runner import evaluation

    config = evaluation_config(tmp_path)
    latency = config.evaluators["ev"].metrics[1]
    held_out = evaluation.eval_rows(config, "tones")[0][:evaluation.LATENCY_PROMPTS]
    assert evaluation.speed_prompts(latency, config) == [TEMPLATE.format(**row) for row in held_out]
    prompts = evaluation.speed_prompts(latency.model_copy(update={"label_column": "tone"}), config)
    assert prompts == [TEMPLATE.format(**row)[:-len(row["tone"])] for row in held_out]
    columns = tiny_config(Path("unused-model"), tmp_path, tmp_path)["data_configs"]
    columns[0]["pre_process_data_config"] = {"text_cols": ["phrase"], "label_column": "tone",
                                              "strategy": "line-by-line", "max_seq_len": 64}
    texts = evaluation.speed_prompts(latency, evaluation_config(
        tmp_path, data_configs=columns, evaluators={"ev": {"metrics": [{"name": "latency", "type": "latency"}]}}))
    assert texts == [row["phrase"] for row in held_out]


def test_the_metrics_key_follows_what_changes_values_and_ignores_goals(tmp_path):
    from tunecell.passes.base import Artifact
    from tunecell.runner import evaluation

    model = Artifact("hf", Path("model"), "sha256:0123")
    config = evaluation_config(tmp_path)

    def key(config=config, data="sha256:data", goal=None, latency_only=False) -> str:
        evaluator = config.evaluators["ev"].model_copy(deep=True)
        if latency_only:  # a metric without data_config reads the first data config
            evaluator.metrics = [m for m in evaluator.metrics if m.type == "latency"]
        if goal:
            evaluator.metrics[0] = evaluator.metrics[0].model_copy(update={"goal": goal, "priority": 2})
        return evaluation.metrics_key(model, evaluator, config, {"tones": data})

    assert key(goal={"type": "threshold", "value": 0.9}) == key()
    assert key(latency_only=True, data="sha256:other") != key(latency_only=True)
    passes = tiny_config(Path("unused-model"), tmp_path, tmp_path)["passes"]
    second = {**passes["lora"], "training_args": {**passes["lora"]["training_args"], "seed": 1}}
    two_loras = evaluation_config(tmp_path, passes={"lora": passes["lora"], "merge": passes["merge"],
                                                   "lora2": second, "merge2": passes["merge"]})
    changed = {**second, "training_args": {**second["training_args"], "seed": 2}}
    other = evaluation_config(tmp_path, passes={"lora": passes["lora"], "merge": passes["merge"],
                                               "lora2": changed, "merge2": passes["merge"]})
    assert key(two_loras) != key(other)


def test_two_runs_publishing_the_same_folder_at_once_both_succeed(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tunecell.runner.output_dir import IDENTITY, link_tree

    sources = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(name * 1000)
        sources.append(tmp_path / name)
    target = tmp_path / "out" / "model"
    for _ in range(5):  # the temp folders were named by process: two threads of one kernel shared one
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: link_tree(s, target, s.name), sources))
        assert (target / IDENTITY).read_text() in ("a", "b")
        assert (target / "config.json").read_text() == (target / IDENTITY).read_text() * 1000
        assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_a_failure_while_publishing_fails_the_run_and_leaves_the_earlier_outputs_together(main, monkeypatch):
    from tunecell.errors import PassFailed
    from tunecell.runner import output_dir

    config = variant(main, "out-full-disk")
    first, _ = run(config)
    out = main.root / "out-full-disk"
    for name in ("model", "adapter"):  # as if another build were published there: both are published again
        (out / name / output_dir.IDENTITY).write_text(f"earlier {name}")
    publish_file = output_dir._publish_file

    def full_disk(src: str, dst: str) -> None:
        if "/.adapter.tmp-" in dst:
            raise OSError(28, "No space left on device")
        publish_file(src, dst)

    monkeypatch.setattr(output_dir, "_publish_file", full_disk)
    with pytest.raises(PassFailed, match="No space left on device") as failed:
        run(config)
    assert failed.value.result.status == "failed" and "model" not in failed.value.result.artifacts
    assert [(out / n / output_dir.IDENTITY).read_text() for n in ("model", "adapter")] == \
        ["earlier model", "earlier adapter"]  # neither replaced: the earlier run's folders stay together
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "manifest.json", "model"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["published"]["run_id"] == first.run_id


def test_a_run_from_start_from_scores_accuracy_on_the_rows_the_earlier_run_held_out(main, monkeypatch):
    # the second config has no LoRA pass of its own: the held-out split is the earlier run's
    from tunecell import evaluate
    from tunecell.runner import evaluation

    config = variant(main, "out-from-held-out", evaluate=True)
    config["evaluators"] = {"ev": {"metrics": [{"name": "accuracy", "type": "accuracy", "data_config": "tones",
                                                "label_column": "tone", "max_new_tokens": 1, "max_samples": 8}]}}
    config["evaluate_input_model"] = False
    first, _ = run(config, only={"lora", "merge"})
    scored = []
    accuracy = evaluate.accuracy
    monkeypatch.setattr(evaluate, "accuracy", lambda model, examples, *args, **kwargs: scored.append(
        (model.kind, examples)) or accuracy(model, examples, *args, **kwargs))
    optimize = copy.deepcopy(config)
    optimize["passes"] = {"mb": config["passes"]["mb"]}
    result, _ = run(optimize, start_from=first)
    assert result.status == "succeeded"
    loaded = tunecell.load_config(config)
    held_out = evaluation._examples(loaded.evaluators["ev"].metrics[0], loaded)
    assert scored == [("onnx", held_out)]


def test_publishing_links_weights_where_it_may_and_keeps_the_umask(tmp_path, monkeypatch):
    from tunecell.runner import output_dir

    source = tmp_path / "entry"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"w" * 100)
    (source / "tokenizer.json").write_text("{}")

    def published(name: str) -> Path:
        output_dir.link_tree(source, tmp_path / name / "model", name)
        return tmp_path / name / "model"

    old = os.umask(0o077)  # a private umask: what is published stays private
    try:
        private = published("private")
    finally:
        os.umask(old)
    assert private.stat().st_mode & 0o777 == 0o700
    assert os.path.samefile(private / "model.safetensors", source / "model.safetensors")
    assert not os.path.samefile(private / "tokenizer.json", source / "tokenizer.json")

    chmod = os.chmod

    def refused(path, *args, **kwargs):
        if str(path).endswith(".safetensors"):
            raise PermissionError("not the owner")  # a shared cache's file belongs to another user
        chmod(path, *args, **kwargs)

    monkeypatch.setattr(output_dir.os, "chmod", refused)
    shared = published("shared")
    assert os.path.samefile(shared / "model.safetensors", source / "model.safetensors")  # the link stays
    monkeypatch.undo()
    monkeypatch.setattr(output_dir, "READ_ONLY_LINKS", False)  # Windows: links too (the cache must delete them)
    os.chmod(source / "model.safetensors", 0o644)  # the first publish made the shared file read-only
    windows = published("windows") / "model.safetensors"
    assert os.path.samefile(windows, source / "model.safetensors") and windows.stat().st_mode & 0o200
