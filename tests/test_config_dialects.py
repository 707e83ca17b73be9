"""The four dialect fixtures load to one WorkflowConfig; notes, `tunecell validate`, sources, {{ }} filling."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunecell.cli import main
from tunecell.config import WorkflowConfig, fill_template, load_config
from tunecell.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
DIALECTS = ["cookbook.json", "params_config.json", "olive013.json", "tunecell.yaml"]

EXAMPLE = (Path(__file__).parent / "configs" / "example.yaml").read_text()  # the example of issue 4


def _text(name: str) -> str:
    return (CONFIGS / name).read_text(encoding="utf-8")


def _plan_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if not line.startswith("note:")]


# --------------------------------------------------------------------------------------- one model for all
def test_all_dialects_load_to_the_same_config():
    dumps = {name: load_config(CONFIGS / name).model_dump() for name in DIALECTS}
    reference = dumps["tunecell.yaml"]
    for name, dump in dumps.items():
        assert dump == reference, name


def test_the_normalised_config_is_what_the_cookbook_meant():
    config = load_config(CONFIGS / "cookbook.json")
    assert config.input_model.model_path == "microsoft/Phi-3-mini-4k-instruct"
    assert config.input_model.load_kwargs.trust_remote_code is True
    lora = config.passes["lora"]
    assert lora.type == "QLoRA" and lora.double_quant is True  # double_quant on a LoRA pass means QLoRA
    assert (lora.r, lora.alpha, lora.eval_dataset_size) == (64, 64, 0.3)
    assert lora.training_args.model_extra["eval_strategy"] == "steps"
    pre = config.data_configs[0].pre_process_data_config
    assert (pre.strategy, pre.max_seq_len, pre.text_cols) == ("join", 2048, None)
    assert list(config.passes) == ["lora", "merge_adapter_weights", "builder"]
    assert config.execution_provider == "cuda" and config.target == config.host == "aml"
    assert config.systems["aml"].accelerators[0].execution_providers == ["CUDAExecutionProvider"]
    assert config.data_configs[0].load_dataset_config.data_files.relative_path == "dataset/dataset-classification.json"


def test_dialect_fixtures_load_from_text_and_from_dicts_alike():
    for name in DIALECTS:
        text = _text(name)
        tree = yaml.safe_load(text)
        before = copy.deepcopy(tree)
        assert load_config(text).model_dump() == load_config(tree).model_dump(), name
        assert tree == before, f"{name}: load_config changed the dict it was given"


# ----------------------------------------------------------------------------------------------- notes
COOKBOOK_NOTES = [
    "engine keys are now written at top level",
    "type PyTorchModel with hf_config is now type HfModel",
    "model_name is now model_path",
    "from_pretrained_args is now load_kwargs",
    "corpus_strategy is now strategy",
    "source_max_len is now max_seq_len",
    "dataset_type is an Olive option that tunecell does not use",
    "text_cols is not used when text_template is given",
    "lora_r is now r",
    "lora_alpha is now alpha",
    "evaluation_strategy is now eval_strategy",
    "double_quant is a QLoRA option, so this pass runs as QLoRA",
    'accelerators: ["gpu"] is now accelerators: [{device: gpu}]',
    "execution_providers is now systems.aml.accelerators[].execution_providers",
]
PARAMS_NOTES = [
    "model_loading_args is now load_kwargs",
    "data_configs is now a list of configs, each with a name",
    "params_config and component_kwargs are now load_dataset_config and pre_process_data_config",
    "source_max_len is now max_seq_len",
    "lora_r is now r",
]


@pytest.mark.parametrize("name, expected", [("cookbook.json", COOKBOOK_NOTES), ("params_config.json", PARAMS_NOTES)])
def test_each_legacy_mapping_is_noted_once(name, expected):
    notes = load_config(CONFIGS / name).notes
    assert len(notes) == len(set(notes))
    for fragment in expected:
        assert sum(fragment in note for note in notes) == 1, (fragment, notes)


def test_the_qlora_note_says_what_to_do():
    note = next(n for n in load_config(CONFIGS / "cookbook.json").notes if "double_quant" in n)
    assert note.startswith("passes.lora: ")
    assert "write type: QLoRA" in note and "remove double_quant for plain LoRA" in note
    # params_config.json already says QLoRA: nothing to note
    assert not any("double_quant" in n for n in load_config(CONFIGS / "params_config.json").notes)


def test_notes_name_where_the_mapping_applied():
    notes = load_config(CONFIGS / "cookbook.json").notes
    assert "passes.lora: lora_r is now r" in notes
    assert "data_configs.dataset_default_train.pre_process_data_config: source_max_len is now max_seq_len" in notes


def test_a_mapping_used_twice_is_noted_once():
    text = EXAMPLE.replace("    r: 16\n", "    lora_r: 16\n").replace(
        "  merge: {type: MergeAdapterWeights}\n",
        "  merge: {type: MergeAdapterWeights}\n"
        "  lora2: {type: LoRA, lora_r: 4, train_data_config: tones, eval_dataset_size: 0.2}\n"
        "  merge2: {type: MergeAdapterWeights}\n")
    config = load_config(text)
    assert config.passes["lora"].r == 16 and config.passes["lora2"].r == 4
    assert [n for n in config.notes if "lora_r is now r" in n] == ["passes.lora: lora_r is now r"]


@pytest.mark.parametrize("name", ["olive013.json", "tunecell.yaml"])
def test_current_dialects_need_no_dialect_notes(name):
    notes = load_config(CONFIGS / name).notes
    for fragment in COOKBOOK_NOTES + PARAMS_NOTES:
        assert not any(fragment in note for note in notes), (fragment, notes)


def test_load_kwargs_torch_dtype_is_the_torch_dtype_of_the_lora_passes_that_give_none():
    from tunecell import plan

    text = EXAMPLE.replace("SmolLM2-135M-Instruct}", "SmolLM2-135M-Instruct, load_kwargs: {torch_dtype: bfloat16}}")
    text = text.replace("  merge: {type: MergeAdapterWeights}\n",
                        "  merge: {type: MergeAdapterWeights}\n"
                        "  lora2: {type: LoRA, torch_dtype: float32, train_data_config: tones, eval_dataset_size: 0.2}\n"
                        "  merge2: {type: MergeAdapterWeights}\n")
    config = load_config(text)
    assert (config.passes["lora"].torch_dtype, config.passes["lora2"].torch_dtype) == ("bfloat16", "float32")
    assert plan(config).steps[0].settings["torch_dtype"] == "bfloat16"  # the pass's cache key
    assert "input_model.load_kwargs: torch_dtype is now dtype" in config.notes
    assert any(note.startswith("input_model.load_kwargs: dtype is the torch_dtype of the LoRA and QLoRA passes")
               for note in config.notes)
    again = load_config(config)  # written back without defaults, each pass keeps its own dtype
    assert (again.passes["lora"].torch_dtype, again.passes["lora2"].torch_dtype) == ("bfloat16", "float32")
    from tunecell.widgets.config_text import dump_config

    written = load_config(dump_config(config, "tones", {"max_seq_len": 128}))  # the preview's "Write config"
    assert (written.passes["lora"].torch_dtype, written.passes["lora2"].torch_dtype) == ("bfloat16", "float32")
    for given, trained in (("torch.bfloat16", "bfloat16"), ("fp16", "float16"), ("auto", "float32")):
        # as Olive configs name it; "auto" (the checkpoint's dtype) leaves the passes' own default
        assert load_config(text.replace("torch_dtype: bfloat16}", f"torch_dtype: {given}}}")) \
            .passes["lora"].torch_dtype == trained, given


def test_the_builder_s_former_int4_names_in_extra_options_are_its_current_ones():
    config = load_config(EXAMPLE.replace("precision: int4}", "precision: int4, extra_options: "
                                         "{int4_block_size: 128, int4_is_symmetric: false, int4_algo_config: rtn}}"))
    builder = config.passes["mb"]
    assert builder.extra_options == {"block_size": 128, "is_symmetric": False, "algo_config": "rtn"}
    assert (builder.int4_option("block_size"), builder.int4_method) == (128, "rtn")  # what the estimate reads
    assert "passes.mb.extra_options: int4_block_size is now block_size" in config.notes


# ------------------------------------------------------------------------------------- tunecell validate
def test_validate_prints_the_same_plan_for_every_dialect(capsys, tmp_path):
    """Each is an AzureML run: validate also builds its job offline, which sends the model from here."""
    (tmp_path / "config.json").write_text('{"model_type": "phi3"}')
    plans = {}
    for name in DIALECTS:
        assert main(["validate", str(CONFIGS / name), "--set", f"input_model.model_path={tmp_path}"]) == 0
        out, err = capsys.readouterr()
        assert err == ""
        plans[name] = out
    reference = _plan_lines(plans["tunecell.yaml"])
    for name, out in plans.items():
        assert _plan_lines(out) == reference, name
    assert reference[0] == f"input model: {tmp_path}"
    assert "1. lora [QLoRA] <- input_model: hf -> adapter" in reference
    assert "2. merge_adapter_weights [MergeAdapterWeights] <- lora: adapter -> hf" in reference
    assert "3. builder [ModelBuilder] <- merge_adapter_weights: hf -> onnx" in reference
    assert "     r: 64" in reference and "     precision: int4" in reference
    assert "note: passes.lora: lora_r is now r" in plans["cookbook.json"].splitlines()
    assert "note: passes.lora: lora_r is now r" not in plans["tunecell.yaml"]


def test_validate_in_a_real_process_prints_the_same_plan(capsys, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "phi3"}')
    model = ["--set", f"input_model.model_path={tmp_path}"]  # the model the job would send
    assert main(["validate", str(CONFIGS / "tunecell.yaml"), *model]) == 0
    in_process = capsys.readouterr().out
    for name in ("cookbook.json", "tunecell.yaml"):
        done = subprocess.run([sys.executable, "-m", "tunecell.cli", "validate", str(CONFIGS / name), *model],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert _plan_lines(done.stdout) == _plan_lines(in_process), name


def test_validate_an_invalid_config_exits_2_with_the_error_on_stderr(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    text = _text("olive013.json")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if '"lora_dropout"' in ln)
    bad.write_text(text.replace('"lora_dropout"', '"lora_dropuot"'), encoding="utf-8")
    assert main(["validate", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"error: passes.lora.lora_dropuot (line {line}, column " in err and "unknown key 'lora_dropuot'" in err
    assert "hint: did you mean 'lora_dropout'?" in err
    done = subprocess.run([sys.executable, "-m", "tunecell.cli", "validate", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "" and "unknown key 'lora_dropuot'" in done.stderr


def test_validate_a_missing_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def with_local_data(text: str) -> str:
    """A config whose data path holds wherever the file is written (validate checks that the data is there)."""
    tones = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
    return text.replace("data_files: example_notebooks/data/tones.jsonl", f"data_files: {tones}")


def test_validate_with_set(tmp_path, capsys):
    path = tmp_path / "tones.yaml"
    path.write_text(with_local_data(EXAMPLE), encoding="utf-8")
    assert main(["validate", str(path), "--set", "passes.lora.r=8", "--set",
                 "data_configs.tones.pre_process_data_config.max_seq_len=128"]) == 0
    out = capsys.readouterr().out
    assert "     r: 8" in out.splitlines() and "     r: 16" not in out.splitlines()
    config = load_config(path, overrides=["passes.lora.r=8", "passes.mb.precision=fp32"])
    assert config.passes["lora"].r == 8 and config.passes["mb"].precision == "fp32"
    assert main(["validate", str(path), "--set", "passes.lora.r=0"]) == 2
    assert "passes.lora.r: " in capsys.readouterr().err  # the --set, not line 13 where the file says r: 16


def test_validate_checks_what_a_run_reads_and_writes_here(tmp_path, capsys):
    path = tmp_path / "tones.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")  # its data path is relative to tmp_path: no file there
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "example_notebooks" / "data" / "tones.jsonl") in err and "file not found" in err
    assert "(data_configs[0] 'tones', load_dataset_config)" in err  # its place in the config
    assert f"relative paths start at {tmp_path}" in err
    path.write_text(with_local_data(EXAMPLE), encoding="utf-8")
    (tmp_path / "models" / "tones" / "model").mkdir(parents=True)  # a folder the run would replace
    assert main(["validate", str(path)]) == 2
    assert "was not written by tunecell" in capsys.readouterr().err
    (tmp_path / "models" / "tones" / "model").rmdir()
    assert main(["validate", str(path)]) == 0


# -------------------------------------------------------------------------------------------- sources
def test_dict_and_workflowconfig_sources_round_trip():
    config = load_config(EXAMPLE)
    assert isinstance(config, WorkflowConfig)
    from_dict = load_config(yaml.safe_load(EXAMPLE))
    assert from_dict.model_dump() == config.model_dump()
    again = load_config(config)
    assert again.model_dump() == config.model_dump()
    assert load_config(config.model_dump(mode="json")).model_dump() == config.model_dump()
    assert load_config(json.loads(json.dumps(config.model_dump(mode="json")))).model_dump() == config.model_dump()
    for name in DIALECTS:  # Azure resources (data_files, systems) survive the round trip too
        loaded = load_config(CONFIGS / name)
        again = load_config(loaded)
        assert again.model_dump() == loaded.model_dump(), name
        assert again.base_dir == loaded.base_dir == str(CONFIGS.resolve())  # relative data paths still resolve
        assert again.notes == loaded.notes


def test_set_applies_to_dict_sources_too():
    config = load_config(yaml.safe_load(EXAMPLE), overrides=["passes.lora.r=8"])
    assert config.passes["lora"].r == 8


def test_yaml_and_json_files_load(tmp_path):
    yaml_path, json_path = tmp_path / "a.yaml", tmp_path / "b.json"
    yaml_path.write_text(EXAMPLE, encoding="utf-8")
    json_path.write_text(json.dumps(yaml.safe_load(EXAMPLE), indent="\t"), encoding="utf-8")  # tabs are JSON space
    from_yaml, from_json = load_config(str(yaml_path)), load_config(json_path)
    assert from_yaml.model_dump() == from_json.model_dump() == load_config(EXAMPLE).model_dump()
    assert from_yaml.base_dir == str(tmp_path.resolve())
    assert load_config(EXAMPLE).base_dir is None


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.json")


def test_a_source_of_another_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="not int"):
        load_config(5)


# ------------------------------------------------------------------------------------------ {{ }} filling
def test_template_fills_int_float_and_string():
    text = EXAMPLE.replace("r: 16", "r: {{ rank }}").replace("learning_rate: 3.0e-4", "learning_rate: {{ lr }}") \
        .replace("model_path: HuggingFaceTB/SmolLM2-135M-Instruct", "model_path: {{ model }}") \
        .replace("lora_dropout: 0.1", "lora_dropout: {{dropout}}")
    config = load_config(text, {"rank": 8, "lr": 1e-5, "model": "my-org/tiny-model", "dropout": 0.25})
    lora = config.passes["lora"]
    assert lora.r == 8 and isinstance(lora.r, int)
    assert lora.training_args.learning_rate == 1e-5
    assert lora.lora_dropout == 0.25
    assert config.input_model.model_path == "my-org/tiny-model"
    # single-brace template fields live next to {{ }} and are left alone
    assert config.data_configs[0].pre_process_data_config.text_template == "### Text: {phrase}\n### The tone is:\n{tone}"


def test_template_strict_undefined_names_the_variable_its_line_and_a_close_name():
    text = EXAMPLE.replace("r: 16", "r: {{ rank }}")
    with pytest.raises(ConfigError) as info:
        load_config(text, {"ranks": 8, "lr": 1e-4})
    error = info.value
    assert "{{ rank }} is not defined" in error.message
    assert error.line == 13
    assert error.hint == "did you mean 'ranks'?"
    with pytest.raises(ConfigError, match="rank") as info:
        load_config(text)  # no namespace at all: the command line
    assert info.value.line == 13 and "no notebook namespace" in info.value.message
    assert "define rank in a notebook cell" in info.value.hint and "in place of {{ rank }}" in info.value.hint


def test_template_errors_are_config_errors_with_a_line():
    with pytest.raises(ConfigError, match="template syntax error") as info:
        load_config(EXAMPLE.replace("r: 16", "r: {{ rank }"), {"rank": 1})
    assert info.value.line == 13
    with pytest.raises(ConfigError, match="ZeroDivisionError") as info:
        load_config(EXAMPLE.replace("r: 16", "r: {{ 1 // zero }}"), {"zero": 0})
    assert info.value.line == 13
    with pytest.raises(ConfigError, match="has no attribute 'r'") as info:
        load_config(EXAMPLE.replace("r: 16", "r: {{ cfg.r }}"), {"cfg": {}})
    assert info.value.line == 13


def test_single_brace_text_template_is_untouched():
    config = load_config(EXAMPLE)
    assert config.data_configs[0].pre_process_data_config.text_template == "### Text: {phrase}\n### The tone is:\n{tone}"
    assert fill_template("a: {phrase}\n", {"phrase": "x"}) == "a: {phrase}\n"


def test_text_without_double_braces_never_touches_jinja(monkeypatch):
    monkeypatch.setitem(sys.modules, "jinja2", None)  # any `import jinja2` would now fail
    assert load_config(EXAMPLE, {"unused": 1}).passes["lora"].r == 16
    assert fill_template(EXAMPLE, {}) is EXAMPLE
    with pytest.raises(ImportError):
        fill_template("r: {{ rank }}", {"rank": 1})


# ------------------------------------------------------------------------------------------ export to Olive
def test_olive_export_numbers_priorities_and_writes_settings_whose_defaults_differ(tmp_path):
    from tunecell.config.export import export_config

    text = EXAMPLE.replace("- {name: latency, type: latency}", "- {name: latency, type: latency, priority: 0}")
    config = load_config(text, overrides=["passes.lora.training_args.warmup_steps=0.1"])
    notes = export_config(config, tmp_path / "olive.json")
    olive = json.loads((tmp_path / "olive.json").read_text())
    metrics = {m["name"]: m["sub_types"][0]["priority"] for m in olive["evaluators"]["tone_eval"]["metrics"]}
    assert metrics == {"accuracy": 2, "latency": 1}  # unique, 1..N, in tunecell's order of priority
    args = olive["passes"]["lora"]["training_args"]
    assert (args["warmup_ratio"], args["gradient_checkpointing"], args["num_train_epochs"]) == (0.1, False, 1.0)
    assert "warmup_steps" not in args and olive["passes"]["mb"]["int4_algo_config"] == "k_quant_mixed"
    assert olive["passes"]["lora"]["torch_dtype"] == "float32"
    assert [n.split(":")[0] for n in notes] == ["passes.lora.eval_dataset_size",
                                                "evaluators.tone_eval.metrics.accuracy.label_column",
                                                "evaluators.tone_eval.metrics.accuracy.max_new_tokens"]
    again = load_config(tmp_path / "olive.json")
    assert again.passes == config.passes
    assert again.data_configs[0].pre_process_data_config == config.data_configs[0].pre_process_data_config
    assert [c.resolve(c.data_configs[0].load_dataset_config.data_files) for c in (again, config)] == \
        [Path("example_notebooks/data/tones.jsonl").absolute()] * 2  # rebased to the file's folder
    assert "training_args: warmup_ratio is now warmup_steps" in " ".join(again.notes)


def test_a_yaml_export_elsewhere_loads_to_the_same_files_and_folders(tmp_path, monkeypatch):
    from tunecell.config.export import export_config

    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "tones.jsonl").write_text('{"phrase": "hi", "tone": "Joy"}\n')
    (tmp_path / "project" / "base").mkdir()
    (tmp_path / "project" / "tones.yaml").write_text(EXAMPLE.replace(
        "example_notebooks/data/tones.jsonl", "data/tones.jsonl").replace(
        "model_path: HuggingFaceTB/SmolLM2-135M-Instruct", "model_path: base"))
    config = load_config(tmp_path / "project" / "tones.yaml")
    monkeypatch.chdir(tmp_path)  # neither folder
    export_config(config, tmp_path / "shared" / "runs" / "tones.yaml")
    again = load_config(tmp_path / "shared" / "runs" / "tones.yaml")
    for c in (config, again):
        assert c.resolve(c.data_configs[0].load_dataset_config.data_files) == tmp_path / "project/data/tones.jsonl"
        assert c.resolve(c.input_model.model_path) == tmp_path / "project/base"
        assert c.resolve(c.cache_dir) == tmp_path / "project/.tunecell/cache"  # the default, written out
        assert c.resolve(c.output_dir) == tmp_path / "project/models/tones"
    assert again.data_configs[0].load_dataset_config.data_files == "../../project/data/tones.jsonl"
    assert again.passes == config.passes and again.evaluators == config.evaluators
    assert main(["validate", str(tmp_path / "shared" / "runs" / "tones.yaml")]) == 0
    hub = load_config(EXAMPLE)
    export_config(hub, tmp_path / "hub.yaml")
    assert load_config(tmp_path / "hub.yaml").input_model.model_path == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_an_olive_export_elsewhere_loads_to_the_same_files_folders_and_template(tmp_path, monkeypatch):
    from tunecell.config.export import export_config

    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "tones.jsonl").write_text('{"phrase": "hi", "tone": "Joy"}\n')
    written = """text_template: '{phrase} -> {{ "{{" }}"tone": "{tone}"}}'"""  # literal braces: a JSON answer
    template = '{phrase} -> {{"tone": "{tone}"}}'
    (tmp_path / "project" / "tones.yaml").write_text(
        EXAMPLE.replace("example_notebooks/data/tones.jsonl", "data/tones.jsonl").replace(
            r'text_template: "### Text: {phrase}\n### The tone is:\n{tone}"', written))
    config = load_config(tmp_path / "project" / "tones.yaml")
    assert config.data_configs[0].pre_process_data_config.text_template == template
    monkeypatch.chdir(tmp_path)  # neither folder
    export_config(config, tmp_path / "shared" / "runs" / "olive.json")
    olive = json.loads((tmp_path / "shared" / "runs" / "olive.json").read_text())
    assert olive["data_configs"][0]["pre_process_data_config"]["text_template"] == template  # what Olive reads
    again = load_config(tmp_path / "shared" / "runs" / "olive.json")
    for c in (config, again):
        assert c.resolve(c.data_configs[0].load_dataset_config.data_files) == tmp_path / "project/data/tones.jsonl"
        assert c.resolve(c.cache_dir) == tmp_path / "project/.tunecell/cache"  # the default, written out
        assert c.resolve(c.output_dir) == tmp_path / "project/models/tones"
    assert again.data_configs[0].pre_process_data_config.text_template == template


def test_olive_export_leaves_out_a_gguf_file_with_a_note(tmp_path):
    from tunecell.config.export import export_config

    config = load_config(EXAMPLE.replace("model_path: HuggingFaceTB/SmolLM2-135M-Instruct",
                                         "model_path: models/smol, gguf_file: smol.Q4_1.gguf"))
    notes = export_config(config, tmp_path / "olive.json")
    assert "gguf_file" not in json.loads((tmp_path / "olive.json").read_text())["input_model"]
    assert notes[0].startswith("input_model.gguf_file left out: Olive 0.13 loads no GGUF file")


def test_the_plan_says_whether_the_input_model_is_evaluated():
    from tunecell import plan

    lines = plan(load_config(EXAMPLE)).describe().splitlines()
    assert "evaluate (tone_eval): accuracy, latency on the input model and after each pass" in lines
    lines = plan(load_config(EXAMPLE + "evaluate_input_model: false\n")).describe().splitlines()
    assert "evaluate (tone_eval): accuracy, latency after each pass" in lines


def test_one_data_config_written_as_a_mapping_becomes_the_list_of_one():
    listed = EXAMPLE[EXAMPLE.index("data_configs:"):EXAMPLE.index("passes:")]
    mapping = "\n".join(line.replace("  - ", "  ", 1) if line.startswith("  - ") else line[2:] if line.startswith("    ")
                        else line for line in listed.splitlines()) + "\n"
    assert "  name: tones\n  type: HuggingfaceContainer\n" in mapping
    config = load_config(EXAMPLE.replace(listed, mapping))
    assert [d.name for d in config.data_configs] == ["tones"]
    assert config.data_configs[0].pre_process_data_config.max_seq_len == 64
    assert any("data_configs is a list" in note for note in config.notes)
