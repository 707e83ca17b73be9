"""Olive's config dialects (the Phi-3 cookbook, params_config, Olive 0.13 flat) mapped onto tunecell's one dialect.

Every legacy name lives in the tables below; each mapping applied is reported once as a note the user sees.
The functions rewrite a Located tree in place, so every key keeps the line it came from.
"""
from __future__ import annotations

import difflib
from typing import Any

from ..errors import ConfigError
from .located import LocatedDict, LocatedList

# section -> {legacy key: current key}
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "input_model": {"model_name": "model_path", "model_loading_args": "load_kwargs",
                    "from_pretrained_args": "load_kwargs"},
    "load_dataset_config": {"subset_name": "subset"},
    "pre_process_data_config": {"corpus_strategy": "strategy", "source_max_len": "max_seq_len"},
    "pass": {"lora_r": "r", "lora_alpha": "alpha"},
    "training_args": {"evaluation_strategy": "eval_strategy", "warmup_ratio": "warmup_steps"},
    "search_strategy": {"search_algorithm": "sampler"},
    "load_kwargs": {"torch_dtype": "dtype"},
    # the model builder's former names of its int4 options, which onnxruntime-genai 0.18 reads no more
    "extra_options": {"int4_block_size": "block_size", "int4_accuracy_level": "accuracy_level",
                      "int4_is_symmetric": "is_symmetric", "int4_algo_config": "algo_config",
                      "int4_op_types_to_quantize": "op_types_to_quantize",
                      "int4_nodes_to_exclude": "nodes_to_exclude"},
}
RENAMED_VALUES: dict[tuple[str, str], dict[Any, Any]] = {
    ("search_strategy", "sampler"): {"exhaustive": "sequential", "random": "random"},
    ("pre_process_data_config", "strategy"): {"line-by-line-random": "line-by-line", "join-random": "join"},
}
# Olive keys that tunecell accepts but does not use: dropped with a note, never silently.
IGNORED_KEYS: dict[str, set[str]] = {
    "workflow": {"log_to_file", "ort_log_severity_level", "ort_py_log_severity_level", "no_artifacts",
                 "plot_pareto_frontier", "enable_shared_cache", "clean_evaluation_cache", "packaging_config"},
    "pre_process_data_config": {"dataset_type"},
}
# Olive 0.5 params_config.component_kwargs.<component> -> the section it is now
COMPONENT_KWARGS = {"load_dataset": "load_dataset_config", "pre_process_data": "pre_process_data_config",
                    "dataloader": "dataloader_config"}
QLORA_ONLY_KEYS = ("double_quant", "quant_type", "compute_dtype")
EXECUTION_PROVIDER_DEVICE = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "gpu"}


class Notes:
    """Dialect notes, each message once (with the first place it applied)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._seen: set[str] = set()

    def add(self, message: str, where: str = "") -> None:
        if message not in self._seen:
            self._seen.add(message)
            self.items.append(f"{where}: {message}" if where else message)


def normalise(raw: Any) -> tuple[LocatedDict, list[str]]:
    """Rewrite any supported dialect into tunecell's; returns the tree and the notes."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of keys (input_model, data_configs, passes, ...)",
                          hint="start the cell with 'input_model:'")
    if not isinstance(raw, LocatedDict):
        raw = _located(raw)
    notes = Notes()
    _flatten_engine(raw, notes)
    _ignore(raw, "workflow", "", notes)
    for name in ("input_model", "search_strategy"):
        if isinstance(raw.get(name), dict):
            _unnest(raw[name], "config", (name,))
    if raw.get("search_strategy") is False:
        del raw["search_strategy"]
        notes.add("search_strategy: false is the default and was dropped")
    _input_model(raw, notes)
    _data_configs(raw, notes)
    _passes(raw, notes)
    _evaluators(raw, notes)
    _systems(raw, notes)
    if isinstance(raw.get("search_strategy"), dict):
        _rename_all(raw["search_strategy"], "search_strategy", "search_strategy", notes, ("search_strategy",))
        _unnest(raw["search_strategy"], "search_algorithm_config", ("search_strategy",))
    return raw, notes.items


# ---------------------------------------------------------------------------------------------- helpers
def _located(value: Any) -> Any:
    """Wrap plain dicts and lists (a config given as a Python object) so the same rewrites apply."""
    if isinstance(value, dict):
        out = LocatedDict()
        out.update({k: _located(v) for k, v in value.items()})
        return out
    if isinstance(value, list):
        return LocatedList([_located(v) for v in value])
    return value


def _merge(target: dict, source: dict, path: tuple, what: str) -> None:
    """Move the keys of ``source`` into ``target`` with their positions; a key given in both is an error."""
    for k, v in source.items():
        if k in target:
            raise ConfigError(f"{k!r} is given both {what} and beside it", path=path + (k,),
                              hint="keep only one of the two")
        if isinstance(target, LocatedDict):
            target.put(k, v, getattr(source, "key_pos", {}).get(k))
        else:
            target[k] = v


def _unnest(d: LocatedDict, key: str, path: tuple = ()) -> None:
    """Olive's NestedConfig: {type: X, config: {...}} and {type: X, ...} mean the same thing."""
    inner = d.get(key)
    if not isinstance(inner, dict):
        return
    for k in inner:  # check before moving anything, while both keys are still in the tree
        if k in d:
            raise ConfigError(f"{k!r} is given both inside '{key}' and beside it", path=path + (k,),
                              hint=f"keep only one of the two (the keys inside '{key}' may sit beside it)")
    del d[key]
    _merge(d, inner, path, f"inside '{key}'")


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def _rename_all(d: LocatedDict, section: str, where: str, notes: Notes, path: tuple = ()) -> None:
    for old, new in RENAMED_KEYS.get(section, {}).items():
        if old not in d:
            continue
        if new in d:
            raise ConfigError(f"both {old!r} (its old name) and {new!r} are given", path=path + (old,),
                              hint=f"keep only {new!r}")
        d.move(old, new)
        notes.add(f"{old} is now {new}", where)
    for (sec, key), mapping in RENAMED_VALUES.items():
        value = d.get(key)
        if sec == section and _hashable(value) and value in mapping and mapping[value] != value:
            notes.add(f"{key}: {value} is now {mapping[value]}", where)
            d[key] = mapping[value]


def _ignore(d: LocatedDict, section: str, where: str, notes: Notes) -> None:
    for key in sorted(IGNORED_KEYS.get(section, set()) & set(d)):
        del d[key]
        notes.add(f"{key} is an Olive option that tunecell does not use; ignored", where)


def _each(d: Any) -> list[tuple[Any, Any]]:
    return list(d.items()) if isinstance(d, dict) else []


# ----------------------------------------------------------------------------------------------- rewrites
def _flatten_engine(raw: LocatedDict, notes: Notes) -> None:
    engine = raw.get("engine")
    if engine is None:
        return
    if not isinstance(engine, dict):
        raise ConfigError("engine must be a mapping", path=("engine",))
    for key in engine:
        if key in raw:
            raise ConfigError(f"{key!r} is given both under engine and at top level", path=(key,),
                              hint="keep only one of the two (engine keys may be written at top level)")
    del raw["engine"]
    _merge(raw, engine, (), "under engine")
    notes.add("engine keys are now written at top level")


def _input_model(raw: LocatedDict, notes: Notes) -> None:
    model = raw.get("input_model")
    if not isinstance(model, dict):
        return
    hf_config = model.get("hf_config")
    if model.get("type") == "PyTorchModel" and isinstance(hf_config, dict):
        _unnest(hf_config, "config", ("input_model", "hf_config"))
        for k in hf_config:
            if k in model:
                raise ConfigError(f"{k!r} is given both inside 'hf_config' and beside it",
                                  path=("input_model", "hf_config", k), hint="keep only one of the two")
        del model["hf_config"]
        _merge(model, hf_config, ("input_model",), "inside 'hf_config'")
        model["type"] = "HfModel"
        notes.add("type PyTorchModel with hf_config is now type HfModel", "input_model")
    _rename_all(model, "input_model", "input_model", notes, ("input_model",))
    if isinstance(model.get("load_kwargs"), dict):
        _rename_all(model["load_kwargs"], "load_kwargs", "input_model.load_kwargs", notes,
                    ("input_model", "load_kwargs"))
        if "dtype" in model["load_kwargs"]:  # schema.WorkflowConfig hands it on
            notes.add("dtype is the torch_dtype of the LoRA and QLoRA passes that give none: tunecell loads the "
                      "model in a chosen dtype only to train it (it merges and evaluates in float32)",
                      "input_model.load_kwargs")
    if isinstance(model.get("model_path"), dict):
        _unnest(model["model_path"], "config", ("input_model", "model_path"))


def _data_configs(raw: LocatedDict, notes: Notes) -> None:
    configs = raw.get("data_configs")
    if isinstance(configs, dict) and isinstance(configs.get("name"), str):  # one data config, not in a list
        one = LocatedList([configs], pos=getattr(configs, "pos", None))
        one.item_pos.append(getattr(configs, "pos", None))
        raw["data_configs"] = configs = one
        notes.add("data_configs is a list: the one data config written as a mapping is now its only entry")
    if isinstance(configs, dict):  # Olive < 0.6: a mapping name -> config
        as_list = LocatedList(pos=getattr(configs, "pos", None))
        for name, dc in configs.items():
            if isinstance(dc, dict):
                dc.setdefault("name", name)
            as_list.append(dc)
            as_list.item_pos.append(configs.key_pos.get(name) if isinstance(configs, LocatedDict) else None)
        raw["data_configs"] = configs = as_list
        notes.add("data_configs is now a list of configs, each with a name")
    if not isinstance(configs, list):
        return
    for i, dc in enumerate(configs):
        if isinstance(dc, dict):
            _data_config(dc, notes, ("data_configs", i))


def _data_config(dc: LocatedDict, notes: Notes, path: tuple) -> None:
    where = f"data_configs.{dc.get('name', '?')}"
    params = dc.get("params_config")
    if isinstance(params, dict):  # Olive 0.5: one params_config + component_kwargs
        kwargs = params.get("component_kwargs")
        kwargs_path = path + ("params_config", "component_kwargs")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ConfigError("component_kwargs must be a mapping", path=kwargs_path)
        sources = [("load_dataset_config", {k: v for k, v in params.items() if k != "component_kwargs"}, params)]
        for component, values in (kwargs or {}).items():
            if component not in COMPONENT_KWARGS:
                close = difflib.get_close_matches(str(component), list(COMPONENT_KWARGS), n=1)
                raise ConfigError(f"unknown component {component!r} in component_kwargs",
                                  path=kwargs_path + (component,),
                                  hint=f"did you mean {close[0]!r}?" if close else
                                  f"known components: {', '.join(COMPONENT_KWARGS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"component_kwargs.{component} must be a mapping", path=kwargs_path + (component,))
            sources.append((COMPONENT_KWARGS[component], values, values))
        for target, _, origin in sources:
            if target in dc and not isinstance(dc[target], dict):
                raise ConfigError(f"{target} must be a mapping", path=path + (target,))
        del dc["params_config"]
        for target, values, origin in sources:
            section = dc.setdefault(target, LocatedDict(pos=getattr(origin, "pos", None)))
            for k, v in values.items():
                if k in section:
                    raise ConfigError(f"{k!r} is given both in params_config and in {target}",
                                      path=path + (target, k), hint="keep only one of the two")
                section.put(k, v, origin.key_pos.get(k) if isinstance(origin, LocatedDict) else None)
        notes.add("params_config and component_kwargs are now load_dataset_config and pre_process_data_config",
                  where)
    for section in ("load_dataset_config", "pre_process_data_config", "dataloader_config"):
        if isinstance(dc.get(section), dict):
            _unnest(dc[section], "params", path + (section,))
            _rename_all(dc[section], section, f"{where}.{section}", notes, path + (section,))
            _ignore(dc[section], section, f"{where}.{section}", notes)
    load = dc.get("load_dataset_config")
    if isinstance(load, dict) and isinstance(load.get("data_files"), dict) and "type" in load["data_files"]:
        _unnest(load["data_files"], "config", path + ("load_dataset_config", "data_files"))
    pre = dc.get("pre_process_data_config")
    if isinstance(pre, dict) and pre.get("text_template") is not None and pre.get("text_cols") is not None:
        del pre["text_cols"]
        notes.add("text_cols is not used when text_template is given; dropped", f"{where}.pre_process_data_config")


def _passes(raw: LocatedDict, notes: Notes) -> None:
    for name, p in _each(raw.get("passes")):
        if not isinstance(p, dict):
            continue
        path = ("passes", name)
        _unnest(p, "config", path)
        where = f"passes.{name}"
        _rename_all(p, "pass", where, notes, path)
        if isinstance(p.get("training_args"), dict):
            _unnest(p["training_args"], "extra_args", path + ("training_args",))
            _rename_all(p["training_args"], "training_args", f"{where}.training_args", notes,
                        path + ("training_args",))
            _group_by_length(p["training_args"], f"{where}.training_args", notes, path + ("training_args",))
        # (a pass without a type is laid over a base config's pass)
        if p.get("type") in ("ModelBuilder", None) and isinstance(p.get("extra_options"), dict):
            _rename_all(p["extra_options"], "extra_options", f"{where}.extra_options", notes,
                        path + ("extra_options",))
        if p.get("type") == "LoRA" and any(k in p for k in QLORA_ONLY_KEYS):
            p["type"] = "QLoRA"
            given = ", ".join(k for k in QLORA_ONLY_KEYS if k in p)
            notes.add(f"{given} is a QLoRA option, so this pass runs as QLoRA (4-bit base); write type: QLoRA "
                      f"to say so, or remove {given} for plain LoRA", where)


def _group_by_length(args: LocatedDict, where: str, notes: Notes, path: tuple) -> None:
    """transformers 5 replaced group_by_length: bool with train_sampling_strategy."""
    if "group_by_length" not in args:
        return
    grouped = args["group_by_length"]
    if "train_sampling_strategy" in args:
        raise ConfigError("both group_by_length (its old name) and train_sampling_strategy are given",
                          path=path + ("group_by_length",), hint="keep only train_sampling_strategy")
    args.move("group_by_length", "train_sampling_strategy")
    args["train_sampling_strategy"] = "group_by_length" if grouped is True else "random" if grouped is False else grouped
    notes.add("group_by_length: true is now train_sampling_strategy: group_by_length", where)


def _evaluators(raw: LocatedDict, notes: Notes) -> None:
    for name, ev in _each(raw.get("evaluators")):
        if not isinstance(ev, dict):
            continue
        _unnest(ev, "config", ("evaluators", name))
        metrics = ev.get("metrics")
        for i, metric in enumerate(metrics if isinstance(metrics, list) else []):
            if isinstance(metric, dict) and "sub_types" in metric:
                _sub_types(metric, ("evaluators", name, "metrics", i), notes)


SUB_TYPE_NAMES = {"accuracy": {"accuracy_score", "accuracy"}, "latency": {"avg", "mean"},
                  "throughput": {"avg", "mean"}, "size_on_disk": {"bytes", "size_on_disk", "avg"}}


def _sub_types(metric: LocatedDict, path: tuple, notes: Notes) -> None:
    """Olive's sub_types list (one measure each, with goal and priority) folds into the metric itself."""
    subs = metric["sub_types"]
    if not isinstance(subs, list) or len(subs) != 1 or not isinstance(subs[0], dict):
        raise ConfigError("tunecell takes exactly one sub_type per metric", path=path + ("sub_types",),
                          hint="write one metric per measure, each with its own name")
    sub = subs[0]
    kind, name = metric.get("type"), sub.get("name")
    allowed = SUB_TYPE_NAMES.get(kind, set()) if _hashable(kind) else set()
    if not _hashable(name) or name not in allowed:
        raise ConfigError(f"sub_type {name!r} is not supported yet for {kind!r} metrics "
                          f"(supported: {', '.join(sorted(allowed)) or 'none'})", path=path + ("sub_types", 0, "name"))
    unknown = set(sub) - {"name", "goal", "priority", "higher_is_better"}
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise ConfigError(f"unknown sub_type key {key!r}", path=path + ("sub_types", 0, key),
                          hint="a sub_type takes name, goal, priority and higher_is_better")
    for key in ("goal", "priority"):
        if key in sub:
            if key in metric:
                raise ConfigError(f"{key!r} is given both in sub_types and on the metric", path=path + (key,),
                                  hint="keep only one of the two")
            metric.put(key, sub[key], getattr(sub, "key_pos", {}).get(key))
    del metric["sub_types"]
    notes.add("metric sub_types are now written on the metric (goal, priority)")


def _systems(raw: LocatedDict, notes: Notes) -> None:
    for name, system in _each(raw.get("systems")):
        if not isinstance(system, dict):
            continue
        _unnest(system, "config", ("systems", name))
        accelerators = system.get("accelerators")
        if isinstance(accelerators, list):
            for i, acc in enumerate(accelerators):
                if isinstance(acc, str):
                    accelerators[i] = LocatedDict({"device": acc.lower()})
                    notes.add("accelerators: [\"gpu\"] is now accelerators: [{device: gpu}]", f"systems.{name}")
    providers = raw.get("execution_providers")
    if providers is None:
        return
    supported = ", ".join(EXECUTION_PROVIDER_DEVICE)
    if not isinstance(providers, list) or not providers:
        raise ConfigError(f"execution_providers must be a list of execution providers (supported: {supported})",
                          path=("execution_providers",), hint="for example execution_providers: [CPUExecutionProvider]")
    for i, provider in enumerate(providers):
        if not isinstance(provider, str) or provider not in EXECUTION_PROVIDER_DEVICE:
            close = difflib.get_close_matches(str(provider), list(EXECUTION_PROVIDER_DEVICE), n=1)
            raise ConfigError(f"execution provider {provider!r} is not supported (supported: {supported})",
                              path=("execution_providers", i), hint=f"did you mean {close[0]!r}?" if close else None)
    del raw["execution_providers"]
    systems = raw.get("systems")
    if systems is not None and not isinstance(systems, dict):
        return  # the schema reports systems itself
    if systems is None:
        systems = raw["systems"] = LocatedDict()
    target = raw.get("target") or raw.get("host")
    if target is None:
        target = raw["target"] = raw.setdefault("host", "local_system")
        systems.setdefault("local_system", LocatedDict({"type": "LocalSystem"}))
    system = systems.get(target) if isinstance(target, str) else None
    if isinstance(system, dict):
        accs = system.get("accelerators") or LocatedList([LocatedDict({"device": EXECUTION_PROVIDER_DEVICE[providers[0]]})])
        system["accelerators"] = accs
        for acc in accs if isinstance(accs, list) else []:
            if isinstance(acc, dict):
                acc["execution_providers"] = list(providers)
    notes.add(f"execution_providers is now systems.{target}.accelerators[].execution_providers")
