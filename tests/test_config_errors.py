"""Malformed configs: each one is a ConfigError with a useful message, its key path, its line (and column).

Most cases edit the tones example of issue 4 (line numbers below refer to EXAMPLE); the dialect cases edit the
JSON fixtures in tests/configs, and find their line by searching the text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from tunecell.cli import main
from tunecell.config import load_config
from tunecell.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"

EXAMPLE = (Path(__file__).parent / "configs" / "example.yaml").read_text()  # the example of issue 4
ACC = ("evaluators", "tone_eval", "metrics", "accuracy")  # metrics are labelled by their name
LAT = ("evaluators", "tone_eval", "metrics", "latency")
PRE = ("data_configs", "tones", "pre_process_data_config")
COOKBOOK = (CONFIGS / "cookbook.json").read_text(encoding="utf-8")
PARAMS = (CONFIGS / "params_config.json").read_text(encoding="utf-8")
OLIVE013 = (CONFIGS / "olive013.json").read_text(encoding="utf-8")
SYSTEMS = "systems:\n  local:\n    type: LocalSystem\n"  # appended to EXAMPLE: lines 30-32


def edit(old: str, new: str, text: str = EXAMPLE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


def case(id: str, text: str, message: str, path: tuple, line: int, column: Optional[int] = None,
         hint: Optional[str] = None):
    return pytest.param(text, message, path, line, column, hint, id=id)


CASES = [
    # ---- unknown keys, at every level, with a did-you-mean
    case("unknown-top", edit("cache_dir:", "cache_dri:"), "unknown key 'cache_dri'", ("cache_dri",), 28, 1,
         "did you mean 'cache_dir'?"),
    case("unknown-input_model", edit("model_path: Hugging", "model_pth: Hugging"), "unknown key 'model_pth'",
         ("input_model", "model_pth"), 1, 30, "did you mean 'model_path'?"),
    case("unknown-data-config", edit("    type: HuggingfaceContainer", "    typo: HuggingfaceContainer"),
         "unknown key 'typo'", ("data_configs", "tones", "typo"), 4, 5, "did you mean 'type'?"),
    case("unknown-data-config-known-keys", edit("    type: HuggingfaceContainer\n",
                                                "    type: HuggingfaceContainer\n    shufle: true\n"),
         "unknown key 'shufle'", ("data_configs", "tones", "shufle"), 5, 5, "known keys here: dataloader_config"),
    case("unknown-load_dataset_config", edit("split: train", "splt: train"), "unknown key 'splt'",
         ("data_configs", "tones", "load_dataset_config", "splt"), 5, 92, "did you mean 'split'?"),
    case("unknown-pre_process_data_config", edit("max_seq_len: 64", "max_seq_lne: 64"), "unknown key 'max_seq_lne'",
         PRE + ("max_seq_lne",), 9, 7, "did you mean 'max_seq_len'?"),
    case("unknown-pass", edit("lora_dropout: 0.1", "lora_dropuot: 0.1"), "unknown key 'lora_dropuot'",
         ("passes", "lora", "lora_dropuot"), 15, 5, "did you mean 'lora_dropout'?"),
    case("unknown-training_args", edit("max_steps: 100", "max_step: 100"), "unknown key 'max_step'",
         ("passes", "lora", "training_args", "max_step"), 19, 21, "did you mean 'max_steps'?"),
    case("unknown-metric", edit("max_new_tokens: 4", "max_new_token: 4"), "unknown key 'max_new_token'",
         ACC + ("max_new_token",), 25, 82, "did you mean 'max_new_tokens'?"),
    case("unknown-system", EXAMPLE + SYSTEMS + "    acelerators: [{device: cpu}]\n", "unknown key 'acelerators'",
         ("systems", "local", "acelerators"), 33, 5, "did you mean 'accelerators'?"),
    case("unknown-datastore-key", edit("data_files: example_notebooks/data/tones.jsonl",
                                       "data_files: {type: azureml_datastore, datastore_nam: ws, relative_path: x}"),
         "unknown key 'datastore_nam'", ("data_configs", "tones", "load_dataset_config", "data_files", "datastore_nam"),
         5, 82, "did you mean 'datastore_name'?"),
    case("unknown-yaml11-bool-key", edit("cache_dir:", "on:"), "unknown key 'on'", ("on",), 28, 1),
    case("unknown-engine-key-cookbook", COOKBOOK.replace('"log_severity_level"', '"log_severity_levle"'),
         "unknown key 'log_severity_levle'", ("log_severity_levle",), line_of(COOKBOOK, '"log_severity_level"'), 9,
         "did you mean 'log_severity_level'?"),
    # ---- legacy names misspelt: the hint gives the current name
    case("legacy-typo-lora_r", edit("    r: 16", "    lora_rr: 16"), "unknown key 'lora_rr'",
         ("passes", "lora", "lora_rr"), 13, 5, "did you mean 'r'?"),
    case("legacy-typo-source_max_len", COOKBOOK.replace('"source_max_len"', '"source_max_lne"'),
         "unknown key 'source_max_lne'", ("data_configs", "dataset_default_train", "pre_process_data_config",
                                          "source_max_lne"), line_of(COOKBOOK, '"source_max_len"'), 21,
         "did you mean 'max_seq_len'?"),
    case("legacy-typo-model_name", COOKBOOK.replace('"model_name"', '"model_nme"'), "unknown key 'model_nme'",
         ("input_model", "model_nme"), line_of(COOKBOOK, '"model_name"'), 17, "did you mean 'model_path'?"),
    case("legacy-component_kwargs-typo", PARAMS.replace('"pre_process_data"', '"pre_process_dat"'),
         "unknown component 'pre_process_dat'", ("data_configs", "dataset_default_train", "params_config",
                                                 "component_kwargs", "pre_process_dat"),
         line_of(PARAMS, '"pre_process_data"'), 21, "did you mean 'pre_process_data'?"),
    # ---- wrong types
    case("type-r-string", edit("r: 16", "r: sixteen"), "valid integer", ("passes", "lora", "r"), 13, 5),
    case("type-r-fraction", edit("r: 16", "r: 16.5"), "fractional part", ("passes", "lora", "r"), 13, 5),
    case("type-target_modules", edit("target_modules: [q_proj, k_proj, v_proj, o_proj]", "target_modules: 5"),
         "has the wrong type or value (got 5)", ("passes", "lora", "target_modules"), 16, 5),
    case("type-training_args", edit("training_args: {max_steps: 100, learning_rate: 3.0e-4, "
                                    "per_device_train_batch_size: 8, seed: 0}", "training_args: 5"),
         "valid dictionary (got 5)", ("passes", "lora", "training_args"), 19, 5),
    case("type-evaluator-list", edit("evaluator: tone_eval", "evaluator: [tone_eval]"), "valid string",
         ("evaluator",), 27, 1),
    case("type-number-for-text", edit("evaluator: tone_eval", "evaluator: 0"), "valid string (got 0)",
         ("evaluator",), 27, 1, hint="quote it to keep it as text: YAML reads 0, 1.5, yes/no and true/false as "
                                     "numbers and booleans"),
    case("type-pass-not-mapping", edit("merge: {type: MergeAdapterWeights}", "merge: 5"), "valid dictionary (got 5)",
         ("passes", "merge"), 20, 3),
    case("type-strategy", edit("strategy: line-by-line", "strategy: lines"), "'join' or 'line-by-line'",
         PRE + ("strategy",), 8, 7),
    case("type-metric-type", edit("{name: latency, type: latency}", "{name: latency, type: latenc}"),
         "'accuracy', 'latency', 'throughput' or 'size_on_disk' (got 'latenc')", LAT + ("type",), 26, 25),
    case("type-infinite", edit("eval_dataset_size: 0.2", "eval_dataset_size: .inf"), "finite number",
         ("passes", "lora", "eval_dataset_size"), 18, 5),
    # ---- out of range
    case("range-r-0", edit("r: 16", "r: 0"), "greater than or equal to 1 (got 0)", ("passes", "lora", "r"), 13, 5),
    case("range-lora_dropout", edit("lora_dropout: 0.1", "lora_dropout: 1.5"), "less than 1 (got 1.5)",
         ("passes", "lora", "lora_dropout"), 15, 5),
    case("range-max_seq_len", edit("max_seq_len: 64", "max_seq_len: 2"), "greater than or equal to 8 (got 2)",
         PRE + ("max_seq_len",), 9, 7),
    case("range-eval_dataset_size", edit("eval_dataset_size: 0.2", "eval_dataset_size: 1.5"),
         "eval_dataset_size is a fraction below 1", ("passes", "lora", "eval_dataset_size"), 18, 5),
    case("range-accelerators-empty", EXAMPLE + SYSTEMS + "    accelerators: []\n", "at least 1 item",
         ("systems", "local", "accelerators"), 33, 5),
    # ---- pass types
    case("pass-type-unsupported", edit("{type: MergeAdapterWeights}", "{type: OnnxConversion}"),
         "pass type 'OnnxConversion' is not supported yet (supported: LoRA, QLoRA, MergeAdapterWeights, ModelBuilder)",
         ("passes", "merge", "type"), 20, 11),
    case("pass-type-close", edit("{type: MergeAdapterWeights}", "{type: MergeAdapterWeight}"),
         "is not supported yet", ("passes", "merge", "type"), 20, 11, "did you mean 'MergeAdapterWeights'?"),
    case("pass-type-missing", edit("{type: MergeAdapterWeights}", "{}"), "this entry has no 'type'",
         ("passes", "merge"), 20, 3, "LoRA, QLoRA, MergeAdapterWeights, ModelBuilder"),
    case("system-type-unsupported", EXAMPLE + SYSTEMS.replace("LocalSystem", "Local"),
         "system type 'Local' is not supported yet (supported: LocalSystem, AzureML)", ("systems", "local", "type"),
         32, 5, "did you mean 'LocalSystem'?"),
    # ---- required keys
    case("missing-model_path", edit("{type: HfModel, model_path: HuggingFaceTB/SmolLM2-135M-Instruct}",
                                    "{type: HfModel}"), "'model_path' is required here",
         ("input_model", "model_path"), 1, 1),
    case("missing-input_model", EXAMPLE.split("\n", 1)[1], "'input_model' is required here", ("input_model",), 1),
    case("missing-train_data_config", edit("    train_data_config: tones\n", ""),
         "'train_data_config' is required here", ("passes", "lora", "train_data_config"), 11, 3),
    case("missing-data_name", edit("data_name: json, ", ""), "'data_name' is required here",
         ("data_configs", "tones", "load_dataset_config", "data_name"), 5, 5),
    case("missing-aml_compute", EXAMPLE + SYSTEMS.replace("local:", "aml:").replace("LocalSystem", "AzureML"),
         "'aml_compute' is required here", ("systems", "aml", "aml_compute"), 31, 3),
    # ---- references
    case("ref-train_data_config", edit("train_data_config: tones", "train_data_config: tone"),
         "train_data_config names 'tone', which is not in data_configs", ("passes", "lora", "train_data_config"),
         17, 5, "known data configs: tones"),
    case("ref-metric-data_config", edit("data_config: tones, label", "data_config: tone, label"),
         "data_config names 'tone', which is not in data_configs", ACC + ("data_config",), 25, 42),
    case("scoring-unknown", edit("max_new_tokens: 4}", "max_new_tokens: 4, scoring: logprob}"),
         "'generate' or 'loglikelihood' (got 'logprob')", ACC + ("scoring",), 25, 101),
    case("scoring-not-accuracy", edit("{name: latency, type: latency}",
                                      "{name: latency, type: latency, scoring: loglikelihood}"),
         "scoring applies to accuracy metrics, not to latency", LAT, 26, 9),
    case("ref-latency-data_config", edit("{name: latency, type: latency}",
                                         "{name: latency, type: latency, data_config: nope}"),
         "data_config names 'nope'", LAT + ("data_config",), 26, 40),
    case("ref-evaluator", edit("evaluator: tone_eval", "evaluator: tone_evl"),
         "evaluator names 'tone_evl', which is not in evaluators", ("evaluator",), 27, 1, "known evaluators: tone_eval"),
    case("ref-host", EXAMPLE + "host: aml\n", "host names system 'aml', which is not in systems", ("host",), 30, 1),
    case("ref-target-before-precision", edit("precision: int4", "precision: fp16") + "target: gpu_box\n",
         "target names system 'gpu_box'", ("target",), 30, 1),
    # ---- pass chain
    case("chain-merge-without-lora", edit("passes:\n", "passes:\n  m0: {type: MergeAdapterWeights}\n"),
         "MergeAdapterWeights needs a LoRA or QLoRA pass before it", ("passes", "m0", "type"), 11, 8),
    case("chain-modelbuilder-after-lora", edit("  merge: {type: MergeAdapterWeights}\n", ""),
         "ModelBuilder gets a LoRA adapter: add a MergeAdapterWeights pass before it", ("passes", "mb", "type"), 20, 8),
    case("precision-fp16-on-cpu", edit("precision: int4", "precision: fp16"), "precision fp16 runs only on a CUDA",
         ("passes", "mb", "precision"), 21, 28, "use int4 or fp32 on CPU"),
    case("precision-bf16-on-cpu", edit("precision: int4", "precision: bf16"), "precision bf16 runs only on a CUDA",
         ("passes", "mb", "precision"), 21, 28),
    case("eval-both", edit("eval_dataset_size: 0.2", "eval_dataset_size: 0.2\n    eval_data_config: tones"),
         "give eval_data_config or eval_dataset_size, not both", ("passes", "lora", "eval_dataset_size"), 18, 5),
    # ---- evaluation
    case("accuracy-no-label", edit("label_column: tone, ", ""), "an accuracy metric needs label_column", ACC, 25, 9),
    case("accuracy-label-not-in-template", edit("label_column: tone", "label_column: mood"),
         "label_column 'mood' is not a field of the text_template of data config 'tones' (its fields: phrase, tone)",
         ACC + ("label_column",), 25, 62),
    case("accuracy-label-from-data-config", edit("label_column: tone, ", "").replace(
        "max_seq_len: 64", "max_seq_len: 64\n      label_column: mood"), "label_column 'mood' is not a field",
         PRE + ("label_column",), 10, 7),
    case("accuracy-on-training-rows", edit("    eval_dataset_size: 0.2\n", ""),
         "accuracy on 'tones' would be measured on rows that pass 'lora' trains on", ACC + ("data_config",), 24, 42,
         "eval_dataset_size"),
    case("search-without-evaluator", edit("evaluator: tone_eval\n", "search_strategy: {sampler: random}\n"),
         "search_strategy needs an evaluator", ("search_strategy",), 27, 1),
    case("sub_types-two", edit("{name: latency, type: latency}",
                               "{name: latency, type: latency, sub_types: [{name: avg}, {name: max}]}"),
         "exactly one sub_type per metric", LAT + ("sub_types",), 26, 40),
    case("sub_type-unsupported", edit("{name: latency, type: latency}",
                                      "{name: latency, type: latency, sub_types: [{name: p99}]}"),
         "sub_type 'p99' is not supported yet for 'latency' metrics (supported: avg, mean)",
         LAT + ("sub_types", "p99", "name"), 26, 53),
    # ---- data
    case("data-duplicate-names", edit("passes:", "  - name: tones\n    load_dataset_config: {data_name: json}\npasses:"),
         "two data configs are called 'tones'", ("data_configs", "tones", "name"), 10, 5),
    case("data-template-and-chat", edit("strategy: line-by-line", "strategy: line-by-line\n      use_chat_template: true"),
         "give only one of text_template, text_cols or use_chat_template", PRE, 6, 5),
    case("data-template-unbalanced", edit('{tone}"', '{tone"'), "text_template is not a valid template",
         PRE + ("text_template",), 7, 7),
    # ---- dialect conflicts
    case("both-lora_r-and-r", edit("r: 16", "r: 16\n    lora_r: 8"), "both 'lora_r' (its old name) and 'r' are given",
         ("passes", "lora", "lora_r"), 14, 5, "keep only 'r'"),
    case("both-config-and-flat", edit("merge: {type: MergeAdapterWeights}",
                                      "merge: {type: MergeAdapterWeights, x: 1, config: {x: 2}}"),
         "'x' is given both inside 'config' and beside it", ("passes", "merge", "x"), 20, 38),
    case("execution-provider-unknown", EXAMPLE + "execution_providers: [TensorrtExecutionProvider]\n",
         "execution provider 'TensorrtExecutionProvider' is not supported (supported: CPUExecutionProvider, "
         "CUDAExecutionProvider)", ("execution_providers", 0), 30, 23),
    # ---- syntax
    case("yaml-duplicate-key", edit("    r: 16\n", "    r: 16\n    r: 8\n"), "'r' is given twice in the same mapping",
         ("passes", "lora", "r"), 14, 5),
    case("yaml-bad-indentation", edit("    alpha: 32", "     alpha: 32"), "invalid YAML: mapping values are not allowed",
         (), 14, 11, "indentation"),
    case("yaml-tab", edit("    alpha: 32", "\talpha: 32"), "invalid YAML", (), 14, 1, "not tabs"),
    case("yaml-unclosed-flow", edit("[q_proj, k_proj, v_proj, o_proj]", "[q_proj, k_proj"), "invalid YAML", (), 17),
    case("yaml-control-character", edit("alpha: 32", "alpha: 3\x072"), "character '\\x07' is not allowed", (), 14, 13),
    case("json-trailing-comma", OLIVE013.replace('"precision": "int4"}', '"precision": "int4"},'),
         "invalid JSON", (), line_of(OLIVE013, '"builder"') + 1, None, "trailing commas"),
    case("json-missing-comma", OLIVE013.replace('"r": 64, ', '"r": 64 '), "invalid JSON: Expecting ',' delimiter", (),
         line_of(OLIVE013, '"r": 64')),
    case("template-undefined", edit("r: 16", "r: {{ rank }}"), "{{ rank }} is not defined", (), 13),
    case("bool-for-int", edit("r: 16", "r: true"), "expected a number, not true", ("passes", "lora", "r"), 13, 5),
    case("bool-for-float", edit("learning_rate: 3.0e-4", "learning_rate: false"), "expected a number, not false",
         ("passes", "lora", "training_args", "learning_rate"), 19),
    # ---- candidate lists: an error elsewhere in the pass is not the candidate's
    case("candidate-and-bad-sibling", edit("r: 16", "r: [8, 16]").replace("lora_dropout: 0.1", "lora_dropout: 1.5"),
         "Input should be less than 1", ("passes", "lora", "lora_dropout"), 15, 5),
    case("candidate-and-misspelt-sibling", edit("precision: int4}", "precision: [int4, fp32], int4_blocksize: 64}"),
         "unknown key 'int4_blocksize'", ("passes", "mb", "int4_blocksize"), 21, 53, "did you mean 'int4_block_size'?"),
    case("candidate-and-bool-sibling", edit("r: 16", "r: [8, 16]").replace("alpha: 32", "alpha: true"),
         "expected a number, not true", ("passes", "lora", "alpha"), 14, 5),
    case("candidate-bool", edit("r: 16", "r: [8, true]"), "candidate True: expected a number, not true",
         ("passes", "lora", "r", 1), 13, 5),
    case("candidate-inside-a-list", edit("target_modules: [q_proj, k_proj, v_proj, o_proj]",
                                         "target_modules: [[q_proj], [1]]"),
         "candidate [1]: Input should be a valid string", ("passes", "lora", "target_modules", 1), 16, 5),
    case("bool-for-literal-number", edit("precision: int4}", "precision: int4, int4_accuracy_level: true}"),
         "expected a number, not true", ("passes", "mb", "int4_accuracy_level"), 21, 45),
    case("load-dtype-not-a-torch-dtype",
         edit("SmolLM2-135M-Instruct}", "SmolLM2-135M-Instruct, load_kwargs: {torch_dtype: int8}}"),
         "Input should be 'float32', 'bfloat16', 'float16' or 'auto'", ("input_model", "load_kwargs", "dtype"), 1),
    case("builder-option-by-both-names", edit("precision: int4}", "precision: int4, extra_options: "
                                              "{int4_block_size: 64, block_size: 128}}"),
         "both 'int4_block_size' (its old name) and 'block_size' are given",
         ("passes", "mb", "extra_options", "int4_block_size"), 21, hint="keep only 'block_size'"),
    # ---- not a mapping
    case("not-mapping-list", "- input_model: x\n- passes: {}\n", "not a list", (), 1),
    case("not-mapping-scalar", "# a comment\ninput_model\n", "not a single value ('input_model')", (), 2),
    case("empty-text", "", "the config is empty", (), 1),
    case("empty-only-comments", "# nothing yet\n\n", "the config is empty", (), 1),
]


@pytest.mark.parametrize("text, message, path, line, column, hint", CASES)
def test_malformed_config(text, message, path, line, column, hint):
    with pytest.raises(ConfigError) as info:
        load_config(text)
    error = info.value
    assert message in error.message
    assert error.path == path
    assert error.line == line
    if column is not None:
        assert error.column == column
    if hint is not None:
        assert hint in (error.hint or "")
    shown = str(error)
    assert f"line {line}" in shown and (error.key in shown)
    for jargon in ("Value error", "instance of", "object to extract fields", "extra_forbidden", "union_tag"):
        assert jargon not in shown


def test_at_least_35_cases():
    assert len(CASES) >= 35


def test_dict_source_errors_name_the_key_path():
    """A config given as a dict has no lines: the key path alone must say where."""
    import yaml

    tree = yaml.safe_load(EXAMPLE)
    tree["passes"]["lora"]["lora_dropuot"] = tree["passes"]["lora"].pop("lora_dropout")
    with pytest.raises(ConfigError) as info:
        load_config(tree)
    assert info.value.path == ("passes", "lora", "lora_dropuot") and info.value.line is None
    assert info.value.hint == "did you mean 'lora_dropout'?"


def test_set_errors_are_config_errors():
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(EXAMPLE, overrides=["passes.lora.r=[1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(EXAMPLE, overrides=["passes.lora.r"])
    with pytest.raises(ConfigError, match="is not a mapping") as info:
        load_config(EXAMPLE, overrides=["passes.lora.r.x=1"])
    assert info.value.path == ("passes", "lora", "r") and info.value.line == 13
    with pytest.raises(ConfigError, match="there is no passes entry 'lroa' \\(there are: lora, merge, mb\\)") as info:
        load_config(EXAMPLE, overrides=["passes.lroa.r=8"])  # a typo must not add a pass
    assert info.value.hint == "did you mean 'lora'?" and info.value.path == ("passes",)
    config = load_config(EXAMPLE, overrides=["passes.lora.training_args.warmup_steps=5"])  # new keys still can
    assert config.passes["lora"].training_args.warmup_steps == 5


def test_cli_reports_the_error_with_its_place(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit("lora_dropout: 0.1", "lora_dropout: 1.5"), encoding="utf-8")
    assert main(["validate", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: passes.lora.lora_dropout (line 15, column 5): Input should be less than 1")


@pytest.mark.parametrize("item, message, path", [
    ("passes.lora.r=abc", "valid integer", ("passes", "lora", "r")),
    ("passes.lora.lora_dropout=2", "less than 1", ("passes", "lora", "lora_dropout")),
    ("passes.lora.rr=8", "unknown key 'rr'", ("passes", "lora", "rr")),
    ("passes.lora.train_data_config=nope", "'nope'", ("passes", "lora", "train_data_config")),
    ("engine.cache_dir=cache", "unknown key 'engine'", ("engine",)),  # keys the override created
    ("passes.lora.config.r=4", "unknown key 'config'", ("passes", "lora", "config"))])
def test_an_error_in_a_set_value_names_the_set_not_a_line_of_the_file(item, message, path):
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, overrides=[item])
    assert message in info.value.message and f"(from the override {item})" in info.value.message
    assert info.value.path == path and info.value.line is None


@pytest.mark.parametrize("item", ["passes.lora.config.hub_token=hf_secret", "engine.hf_token=hf_secret"])
def test_a_token_in_a_set_that_created_a_key_is_not_echoed(item):
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, overrides=[item])
    assert info.value.message.endswith(f"(from the override {item.partition('=')[0]}=...)")
    assert "hf_secret" not in str(info.value)


def test_a_config_path_is_read_whatever_its_name_and_a_folder_is_refused(tmp_path):
    named = tmp_path / "tones-config"  # no .yaml: still the file, not one line of YAML
    named.write_text(EXAMPLE)
    assert load_config(str(named)).passes["lora"].r == 16
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(str(tmp_path))
    assert load_config('{"input_model": {"model_path": "' + "m" * 5000 + '"}}').input_model.model_path == "m" * 5000


def test_an_error_in_text_laid_over_a_file_is_at_its_own_line_and_one_in_the_file_names_the_file(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(edit("lora_dropout: 0.1", "lora_dropout: 1.5"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:  # r is line 13 of the file, line 3 of the text over it
        load_config("passes:\n  lora:\n    r: eight\n    lora_dropout: 0.2\n", base=base)
    assert info.value.path == ("passes", "lora", "r") and (info.value.line, info.value.column) == (3, 5)
    assert " of " not in info.value.message
    with pytest.raises(ConfigError) as info:  # a dict over the file (the form's): no line at all
        load_config({"passes": {"lora": {"r": "eight"}}}, base=base)
    assert info.value.path == ("passes", "lora", "r") and info.value.line is None and " of " not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config("passes:\n  lora:\n    r: 8\n", base=base)
    assert info.value.path == ("passes", "lora", "lora_dropout") and info.value.line == 15
    assert info.value.message.endswith(f"(line 15 of {base})")
    with pytest.raises(ConfigError) as info:  # an override replaces the file's value: its line is not shown
        load_config("passes:\n  lora:\n    lora_dropout: 0.2\n", base=base, overrides=["passes.lora.r=true"])
    assert info.value.message == "expected a number, not true (from the override passes.lora.r=true)"


def test_a_base_file_that_cannot_be_read_or_normalised_is_named_with_its_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("passes:\n  lora:\n    type: LoRA\n    r: [1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config("passes:\n  lora:\n    r: 8\n", base=broken)
    assert info.value.message.endswith(f"(line {info.value.line} of {broken})")
    both = tmp_path / "both.yaml"  # an old name and its new one: the dialects' normalisation refuses it
    both.write_text("passes:\n  lora:\n    type: LoRA\n    lora_r: 8\n    r: 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="both 'lora_r'") as info:
        load_config("passes:\n  lora:\n    lora_dropout: 0.2\n", base=both)
    assert info.value.line == 4 and info.value.message.endswith(f"(line 4 of {both})")
    with pytest.raises(ConfigError) as info:  # the file's name is in the message already: not twice
        load_config("passes: {}\n", base=tmp_path / "missing.yaml")
    assert str(info.value).count("missing.yaml") == 1


def test_a_second_metric_of_the_same_name_is_refused_at_its_name():
    with pytest.raises(ConfigError, match="two metrics of evaluator 'tone_eval' are called 'accuracy'") as info:
        load_config(edit("{name: latency, type: latency}", "{name: accuracy, type: latency}"))
    assert info.value.path == ACC + ("name",) and info.value.line == 26


def test_a_relative_goal_without_the_input_model_measured_is_refused_at_load():
    goal = edit("max_new_tokens: 4}", "max_new_tokens: 4, goal: {type: min-improvement, value: 0.05}}")
    with pytest.raises(ConfigError, match="judged against the input model's value") as info:
        load_config(goal + "evaluate_input_model: false\n")
    assert info.value.path == ACC + ("goal",) and info.value.line == 25
    assert "evaluate_input_model: true" in info.value.hint
    load_config(goal)
    load_config(edit("min-improvement", "threshold", goal) + "evaluate_input_model: false\n")
