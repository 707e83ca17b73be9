"""Checks across sections: names that must exist, passes that must chain, settings that cannot run together."""
from __future__ import annotations

import re
import string

from ..errors import ConfigError
from . import schema

_VAULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")


def template_fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def check(config: schema.WorkflowConfig) -> None:
    data_names = [d.name for d in config.data_configs]
    for i, name in enumerate(data_names):
        if name in data_names[:i]:
            raise ConfigError(f"two data configs are called {name!r}", path=("data_configs", i, "name"))
    for key in ("host", "target"):  # first: the pass checks read the target's execution provider
        name = getattr(config, key)
        if name is not None and name not in config.systems:
            raise ConfigError(f"{key} names system {name!r}, which is not in systems",
                              path=(key,), hint=_known("systems", config.systems))
    for name, system in config.systems.items():  # every system: one not used by this run is still exported
        if isinstance(system, schema.AzureMLSystem):
            _check_vault_name(system, name)
    for name, p in config.passes.items():
        if isinstance(p, schema.LoRA) and "hub_token" in (p.training_args.model_extra or {}):
            raise ConfigError("a token in the config would be written to the run's manifest, its cache records and "
                              "any job it submits (the value is not shown: if it is a real token, revoke it)",
                              path=("passes", name, "training_args", "hub_token"),
                              hint="remove hub_token; the Hugging Face libraries read a token from the HF_TOKEN "
                                   "environment variable (on AzureML: the system's hf_token: true)")
    _check_chain(config, data_names)
    _check_evaluation(config, data_names)
    if isinstance(config.input_model.model_path, schema.AzureMLRegistryModel) and \
            not isinstance(config.systems.get(config.host or ""), schema.AzureMLSystem):
        raise ConfigError("an AzureML registry model needs an AzureML host", path=("input_model", "model_path"),
                          hint="set host: to an AzureML system, or point model_path at a local copy")


def _check_chain(config: schema.WorkflowConfig, data_names: list[str]) -> None:
    from ..passes.registry import pass_specs

    kind = "hf"
    for name, p in config.passes.items():
        spec = pass_specs()[p.type]
        takes, gives = spec.takes, spec.gives
        if kind not in takes:
            raise ConfigError(_chain_message(p.type, kind), path=("passes", name, "type"))
        kind = gives
        if isinstance(p, schema.LoRA):
            for key in ("train_data_config", "eval_data_config"):
                ref = getattr(p, key)
                if ref is not None and ref not in data_names:
                    raise ConfigError(f"{key} names {ref!r}, which is not in data_configs",
                                      path=("passes", name, key), hint=_known("data configs", data_names))
            if p.eval_data_config and p.eval_dataset_size:
                raise ConfigError("give eval_data_config or eval_dataset_size, not both",
                                  path=("passes", name, "eval_dataset_size"))
        if isinstance(p, schema.ModelBuilder):
            if p.precision in ("fp16", "bf16") and config.execution_provider == "cpu":
                raise ConfigError(f"precision {p.precision} runs only on a CUDA target: the CPU execution provider "
                                  "has no fast half-precision kernels", path=("passes", name, "precision"),
                                  hint="use int4 or fp32 on CPU, or target a system with CUDAExecutionProvider")


def _chain_message(pass_type: str, kind: str) -> str:
    given = {"hf": "a model", "adapter": "a LoRA adapter", "onnx": "an ONNX model"}[kind]
    if pass_type == "MergeAdapterWeights":
        return "MergeAdapterWeights needs a LoRA or QLoRA pass before it"
    if kind == "adapter":
        return f"{pass_type} gets {given}: add a MergeAdapterWeights pass before it"
    return f"{pass_type} cannot take {given}: check the order of the passes"


def _check_evaluation(config: schema.WorkflowConfig, data_names: list[str]) -> None:
    if config.evaluator is not None and config.evaluator not in config.evaluators:
        raise ConfigError(f"evaluator names {config.evaluator!r}, which is not in evaluators", path=("evaluator",),
                          hint=_known("evaluators", config.evaluators))
    for pass_name, options in config.search_space.items():
        if config.search_strategy is None:
            key = next(iter(options))
            raise ConfigError(f"{key} lists candidate values ({options[key]}), which need a search_strategy",
                              path=("passes", pass_name, *key.split(".")),
                              hint="add search_strategy: {execution_order: joint, sampler: sequential} and an "
                                   "evaluator, or give one value")
    if config.search_strategy is not None and config.evaluator is None:
        raise ConfigError("search_strategy needs an evaluator to rank candidates", path=("search_strategy",),
                          hint="add evaluators: and evaluator:, or remove search_strategy")
    training = [(n, p) for n, p in config.passes.items() if isinstance(p, schema.LoRA)]
    for ev_name, ev in config.evaluators.items():
        for i, metric in enumerate(ev.metrics):
            path = ("evaluators", ev_name, "metrics", i)
            if metric.name in [m.name for m in ev.metrics[:i]]:
                raise ConfigError(f"two metrics of evaluator {ev_name!r} are called {metric.name!r}",
                                  path=path + ("name",), hint="give each metric its own name: results are kept by name")
            if metric.goal is not None and metric.goal.type != "threshold" and not config.evaluate_input_model:
                raise ConfigError(f"a {metric.goal.type} goal is judged against the input model's value, which "
                                  "evaluate_input_model: false leaves unmeasured", path=path + ("goal",),
                                  hint="set evaluate_input_model: true, or give a threshold goal")
            if metric.data_config is not None and metric.data_config not in data_names:
                raise ConfigError(f"data_config names {metric.data_config!r}, which is not in data_configs",
                                  path=path + ("data_config",), hint=_known("data configs", data_names))
            if metric.type != "accuracy":
                continue
            if metric.data_config is None:
                raise ConfigError("an accuracy metric needs data_config", path=path,
                                  hint=_known("data configs", data_names))
            pre = config.data_config(metric.data_config).pre_process_data_config
            label = metric.label_column or pre.label_column
            if label is None:
                raise ConfigError("an accuracy metric needs label_column (the template field holding the answer)",
                                  path=path)
            if pre.text_template is None or label not in template_fields(pre.text_template):
                fields = template_fields(pre.text_template) if pre.text_template is not None else []
                raise ConfigError(f"label_column {label!r} is not a field of the text_template of data config "
                                  f"{metric.data_config!r} (its fields: {', '.join(fields) or 'none'})",
                                  path=path + ("label_column",) if metric.label_column is not None else
                                  ("data_configs", data_names.index(metric.data_config), "pre_process_data_config",
                                   "label_column"),
                                  hint="the prompt is the template up to the label field, e.g. '...{phrase}\\n{tone}'")
            for pass_name, p in training:
                if p.train_data_config == metric.data_config and not p.eval_dataset_size:
                    raise ConfigError(f"accuracy on {metric.data_config!r} would be measured on rows that pass "
                                      f"{pass_name!r} trains on", path=path + ("data_config",),
                                      hint=f"set passes.{pass_name}.eval_dataset_size (e.g. 0.2) to hold rows out, "
                                           "or name a separate data config")


def _check_vault_name(aml: schema.AzureMLSystem, system: str) -> None:
    """hf_token is true or a Key Vault's name. Anything else (a token pasted by mistake) is refused, unechoed."""
    if isinstance(aml.hf_token, str) and not _VAULT_NAME.match(aml.hf_token):
        raise ConfigError("hf_token is true (the workspace's Key Vault) or the name of a Key Vault holding the secret "
                          "hf-token; this value is neither (it is not shown: if it is a token, remove it from the "
                          "config and revoke it)", path=("systems", system, "hf_token"))


def _known(what: str, names) -> str:
    names = list(names)
    return f"known {what}: {', '.join(names)}" if names else f"no {what} are defined"
