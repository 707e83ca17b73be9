"""A normalised config back to text: tunecell YAML (minimal) or Olive 0.13-style JSON; both load back the same."""
from __future__ import annotations

import json
import os
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


SUB_TYPE = {"accuracy": "accuracy_score", "latency": "avg", "throughput": "avg", "size_on_disk": "avg"}


def olive_dict(config: schema.WorkflowConfig) -> dict[str, Any]:
    """Olive 0.13's layout: metric goal and priority inside sub_types, and the settings whose defaults differ
    between the two (torch_dtype, gradient_checkpointing, pad_to_max_len) written out; the rest as tunecell
    writes it (tunecell-only keys included: Olive rejects those, and AzureML systems)."""
    data = minimal_dict(config)
    for name, p in config.passes.items():
        if isinstance(p, schema.LoRA):
            out = data["passes"][name]
            out["torch_dtype"] = p.torch_dtype
            out.setdefault("training_args", {})["gradient_checkpointing"] = p.training_args.gradient_checkpointing
    for i, dc in enumerate(config.data_configs):
        pre = data["data_configs"][i].setdefault("pre_process_data_config", {})
        pre["pad_to_max_len"] = dc.pre_process_data_config.pad_to_max_len
    for evaluator in data.get("evaluators", {}).values():
        for metric in evaluator["metrics"]:
            sub = {"name": SUB_TYPE[metric["type"]], "priority": metric.pop("priority", 1)}
            if "goal" in metric:
                sub["goal"] = metric.pop("goal")
            metric["sub_types"] = [sub]
    return data


def export_config(config: schema.WorkflowConfig, path: Union[str, os.PathLike]) -> Path:
    """Write ``config`` to ``path``: .json as Olive-style JSON, .yaml/.yml as tunecell YAML. Atomic."""
    import yaml

    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps(olive_dict(config), indent=2) + "\n"
    elif path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(minimal_dict(config), sort_keys=False, allow_unicode=True)
    else:
        raise ValueError(f"export to .json (Olive-style) or .yaml (tunecell), not {path.suffix or 'no suffix'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
