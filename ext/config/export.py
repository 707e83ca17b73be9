"""A normalised config back to text: tunecell YAML (minimal; it loads back to the same config) or Olive 0.13 JSON."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Union

from . import schema


def minimal_dict(config: schema.WorkflowConfig) -> dict[str, Any]:
    """Only what differs from the defaults, plus the `type` keys that tell sections apart."""
    data = config.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("input_model", {})["type"] = config.input_model.type
    for name, p in config.passes.items():
        data.setdefault("passes", {}).setdefault(name, {})["type"] = p.type
    for name, system in config.systems.items():
        data.setdefault("systems", {}).setdefault(name, {})["type"] = system.type
    for i, dc in enumerate(config.data_configs):
        data["data_configs"][i]["type"] = dc.type
        files = dc.load_dataset_config.data_files
        if isinstance(files, schema.AzureMLDatastore):
            data["data_configs"][i]["load_dataset_config"]["data_files"]["type"] = files.type
    for name, options in config.search_space.items():  # candidate lists go back where they were written
        for key, values in options.items():
            node = data["passes"][name]
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = values
    if isinstance(config.input_model.model_path, schema.AzureMLRegistryModel):
        data["input_model"]["model_path"]["type"] = config.input_model.model_path.type
    return data


OLIVE_SEARCHABLE = {"LoRA": ("r",), "QLoRA": ("r",),  # the options with search defaults in Olive 0.13
                    "ModelBuilder": ("int4_algo_config", "int4_block_size", "int4_is_symmetric")}
TRANSFORMERS_OPTIM = "adamw_torch_fused"  # TrainingArguments' default optimizer, which tunecell leaves in place
SUB_TYPE = {"accuracy": "accuracy_score", "latency": "avg", "throughput": "avg", "size_on_disk": "bytes"}
SAME_TEXT_AS_OLIVE = "it trains on the whole text (it has no prompt masking)"
OLIVE_MATCHES_NO_LABEL_WORDS = "its accuracy compares model outputs with dataloader labels, not generated label words"
# tunecell's settings that Olive 0.13 has no key for. It loads a config holding them (with a warning) and ignores
# them, so the Olive export keeps them (the file still records the run, and loads back into tunecell the same) and
# says what Olive does instead.
OLIVE_IGNORES: dict[str, dict[str, str]] = {
    "pre_process_data_config": {
        "train_on_prompt": SAME_TEXT_AS_OLIVE, "response_template": SAME_TEXT_AS_OLIVE,
        "labels": "it keeps no label set with the data", "label_column": "it keeps no label set with the data",
        "shuffle": "it takes max_samples from the top, unshuffled", "data_seed": "it does not shuffle the rows",
        "use_chat_template": "it formats rows with its own chat_template and message_col keys"},
    "pass": {"eval_dataset_size": "its LoRA holds no rows out (give it an eval_data_config)"},
    "metric": {"label_column": OLIVE_MATCHES_NO_LABEL_WORDS, "labels": OLIVE_MATCHES_NO_LABEL_WORDS,
               "max_new_tokens": OLIVE_MATCHES_NO_LABEL_WORDS, "max_samples": "it scores every evaluation row",
               "scoring": "it has no likelihood scoring of label words"},
}


def olive_dict(config: schema.WorkflowConfig, folder: Path) -> tuple[dict[str, Any], list[str]]:
    """The config in Olive 0.13's schema, which a real Olive 0.13 loads (bench/olive_export_check.py), and notes
    on each setting Olive ignores or cannot express. Settings whose defaults differ between the two are written
    out; priorities are numbered 1..N in their order; AzureML systems become local ones (Olive 0.13 has none).
    Relative paths start at ``folder``, where the file goes (as in the YAML export)."""
    data, notes = _rebased(minimal_dict(config), config, folder), []

    def note_ignored(section: str, node: dict, where: str) -> None:
        for key, why in OLIVE_IGNORES[section].items():
            if key in node:
                notes.append(f"{where}.{key}: Olive 0.13 ignores it; {why}")

    # first, so that the settings converted below (warmup_steps) see the candidate the run starts with
    for name, options in config.search_space.items():  # Olive reads a candidate list in its own form
        for key, values in options.items():
            node = data["passes"][name]
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            if key in OLIVE_SEARCHABLE.get(config.passes[name].type, ()):
                node[leaf] = {"olive_parameter_type": "SearchParameter", "type": "Categorical", "support": values}
            else:
                node[leaf] = values[0]
                notes.append(f"passes.{name}.{key}: Olive 0.13 searches no such option; exported with the first "
                             f"candidate, {values[0]!r} (one Olive config per candidate would try the others)")
    if data["input_model"].pop("gguf_file", None) is not None:  # Olive's HfModel would fail on the key
        notes.append("input_model.gguf_file left out: Olive 0.13 loads no GGUF file (point model_path at an HF "
                     "folder: tunecell's converted copy is under its cache_dir/models)")
    for name, p in config.passes.items():
        out = data["passes"][name]
        if isinstance(p, schema.LoRA):
            note_ignored("pass", out, f"passes.{name}")
            out["torch_dtype"] = p.torch_dtype
            args, ours = out.setdefault("training_args", {}), p.training_args
            for key in ("gradient_checkpointing", "num_train_epochs", "logging_steps"):  # Olive: True, 3, 500
                args[key] = getattr(ours, key)
            if isinstance(p, schema.QLoRA):  # Olive's QLoRA default is paged_adamw_32bit
                args["optim"] = (ours.model_extra or {}).get("optim", TRANSFORMERS_OPTIM)
            if p.training_args.warmup_steps < 1:  # Olive's own default is warmup_ratio 0.03
                args.pop("warmup_steps", None)
                args["warmup_ratio"] = p.training_args.warmup_steps
        if isinstance(p, schema.ModelBuilder) and p.precision == "int4":
            out.setdefault("int4_algo_config", p.int4_algo_config)  # Olive leaves the builder's own default
    for i, dc in enumerate(config.data_configs):
        out = data["data_configs"][i]
        pre = out.setdefault("pre_process_data_config", {})
        note_ignored("pre_process_data_config", pre, f"data_configs.{dc.name}.pre_process_data_config")
        pre["pad_to_max_len"] = dc.pre_process_data_config.pad_to_max_len
        files = dc.load_dataset_config.data_files
        if isinstance(files, schema.AzureMLDatastore):
            out["load_dataset_config"]["data_files"] = files.relative_path
            notes.append(f"data_configs.{dc.name}: Olive 0.13 reads no AzureML datastore; data_files is its "
                         f"relative_path {files.relative_path!r}: download the file there")
    for name, evaluator in data.get("evaluators", {}).items():
        metrics = evaluator["metrics"]
        ranked = sorted(range(len(metrics)), key=lambda i: metrics[i].get("priority", 1))
        for rank, i in enumerate(ranked, 1):  # Olive wants priorities 1..N, each once
            metric = metrics[i]
            metric.pop("priority", None)
            note_ignored("metric", metric, f"evaluators.{name}.metrics.{metric['name']}")
            sub = {"name": SUB_TYPE[metric["type"]], "priority": rank}
            if "goal" in metric:
                sub["goal"] = metric.pop("goal")
            metric["sub_types"] = [sub]
    for name, system in config.systems.items():
        if isinstance(system, schema.AzureMLSystem):
            accelerators = [a.model_dump(mode="json") for a in system.accelerators]
            data["systems"][name] = {"type": "LocalSystem", "accelerators": accelerators}
            notes.append(f"systems.{name}: Olive 0.13 has no AzureML system; exported as a LocalSystem with the "
                         "same accelerators (run it where they are, or submit the tunecell YAML export)")
    if data.pop("azureml_client", None) is not None:
        notes.append("azureml_client left out: Olive 0.13 has no AzureML support")
    if config.search_strategy is not None:  # Olive has no default execution order nor sampler
        data["search_strategy"] = config.search_strategy.model_dump(mode="json", exclude_none=True)
    return data, notes


def export_config(config: schema.WorkflowConfig, path: Union[str, os.PathLike]) -> list[str]:
    """Write ``config`` to ``path``, atomically: .yaml/.yml as tunecell YAML (it loads back to the same config),
    .json as Olive 0.13 JSON. Returns the notes on what the Olive file leaves out (none for YAML)."""
    import yaml

    path, notes = Path(path), []
    if path.suffix == ".json":
        data, notes = olive_dict(config, path.parent.absolute())
        # literal {{ in a value (a text_template's) as \u007b{: JSON reads it back as {{, and tunecell's {{ }}
        # filling, which runs on the text, does not see it (Olive reads no {{ }}: literal_braces would garble it)
        text = re.sub(r"\{(?=[{%#])", r"\\u007b", json.dumps(data, indent=2)) + "\n"
    elif path.suffix in (".yaml", ".yml"):
        from .loader import literal_braces

        data = _rebased(minimal_dict(config), config, path.parent.absolute())
        text = literal_braces(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        raise ValueError(f"export to .yaml (tunecell, runs the same) or .json (Olive 0.13), "
                         f"not {path.suffix or 'no suffix'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return notes


def _rebased(data: dict[str, Any], config: schema.WorkflowConfig, folder: Path) -> dict[str, Any]:
    """Relative paths rewritten to start at ``folder``, where the file goes (a config's relative paths start at its
    own folder), so that it loads there to the same files, cache and output folders."""
    def moved(value: Any, only_if_there: bool = False) -> Any:
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, dict):  # data_files per split; an AzureML datastore or registry model has a type
            return value if "type" in value else {k: moved(v, only_if_there) for k, v in value.items()}
        if not isinstance(value, str) or "://" in value or Path(value).expanduser().is_absolute():
            return value
        here = config.resolve(value)
        return os.path.relpath(here, folder) if here.exists() or not only_if_there else value

    for key in ("cache_dir", "output_dir"):  # their defaults are relative too
        data[key] = moved(getattr(config, key))
    model = data["input_model"]
    for key in ("model_path", "adapter_path"):  # a hub name stays one
        if key in model:
            model[key] = moved(model[key], only_if_there=True)
    for dc in data.get("data_configs", []):
        load = dc.get("load_dataset_config", {})
        if "data_files" in load:
            load["data_files"] = moved(load["data_files"])
        if "data_name" in load:  # a folder, or a builder's name (json)
            load["data_name"] = moved(load["data_name"], only_if_there=True)
    for system in data.get("systems", {}).values():
        docker = system.get("aml_docker_config") or {}
        if "conda_file_path" in docker:
            docker["conda_file_path"] = moved(docker["conda_file_path"])
    if "aml_config_path" in (data.get("azureml_client") or {}):
        data["azureml_client"]["aml_config_path"] = moved(data["azureml_client"]["aml_config_path"])
    return data
