"""Measure a model with the configured evaluator, through the cache: a model measured before is not loaded again."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..config import schema
from ..passes.base import Artifact
from .cache import Cache, digest, package_versions

LATENCY_PROMPTS = 8
MEASURED_WITH = ("tunecell", "transformers", "onnxruntime-genai")  # a new version may measure differently
# raised when what a metric measures changes, so that no cached value of the old kind is shown beside new ones
# (2: latency and throughput generate max_new_tokens tokens whether or not the model ends its answer sooner, after
# a warm-up; accuracy chooses among the labels of the whole data file)
DEFINITIONS = 2


def eval_rows(config: schema.WorkflowConfig, data_name: str) -> tuple[list[dict], Optional[dict]]:
    """The rows a metric may score: the held-out split when a training pass uses this data config.

    Returns the rows and a description of the split (part of the metrics' cache key).
    """
    from ..data import load_rows, split_rows
    from ..passes.lora import split_seed

    rows = load_rows(config.data_config(data_name), config.base_dir)
    for p in config.passes.values():
        if isinstance(p, schema.LoRA) and p.train_data_config == data_name and p.eval_dataset_size:
            _, held_out = split_rows(rows, p.eval_dataset_size, split_seed(p))
            return [dict(r) for r in held_out], {"size": p.eval_dataset_size, "seed": split_seed(p)}
    return [dict(r) for r in rows], None


def metrics_key(artifact: Artifact, evaluator: schema.Evaluator, config: schema.WorkflowConfig,
                data_hashes: dict[str, str]) -> str:
    """What the values depend on: the model, each metric's settings (not its goal nor its priority: those judge
    a value, they do not change it), the data each metric reads and how it is split, and the measuring code."""
    used = sorted({name for m in evaluator.metrics if m.type != "size_on_disk"
                   for name in [m.data_config or _first_data_config(config)] if name})
    splits = [[p.train_data_config, p.eval_dataset_size, p.training_args.seed,
               (p.training_args.model_extra or {}).get("data_seed")]
              for p in config.passes.values() if isinstance(p, schema.LoRA)]
    metrics = [m.model_dump(mode="json", exclude={"goal", "priority"}) for m in evaluator.metrics]
    return digest({"model": artifact.identity, "metrics": metrics,
                   "data": {name: data_hashes.get(name) for name in used},
                   "pre": {name: config.data_config(name).pre_process_data_config.model_dump(mode="json") for name in used},
                   "splits": splits, "packages": package_versions(MEASURED_WITH), "definitions": DEFINITIONS})


def measure(artifact: Artifact, evaluator: schema.Evaluator, config: schema.WorkflowConfig, cache: Cache,
            data_hashes: dict[str, str]) -> dict[str, float]:
    key = metrics_key(artifact, evaluator, config, data_hashes)
    cached = cache.load_metrics(key)
    if cached is not None:
        return cached
    from .. import evaluate
    from ..inference import load_model

    base = artifact.base.path if artifact.kind == "adapter" and artifact.base else None  # this run's, not training's
    model = load_model(artifact.path, trust_remote_code=config.input_model.load_kwargs.trust_remote_code, base=base)
    values = {metric.name: _one(metric, model, artifact.path, config, evaluate) for metric in evaluator.metrics}
    cache.save_metrics(key, values)
    return values


def _one(metric: schema.Metric, model: Any, path: Path, config: schema.WorkflowConfig, evaluate: Any) -> float:
    if metric.type == "size_on_disk":
        return round(evaluate.size_on_disk_mb(path), 3)
    if metric.type == "accuracy":
        examples = _examples(metric, config)
        labels = candidate_labels(metric, config)
        return round(evaluate.accuracy(model, examples, labels, metric.max_new_tokens, metric.scoring), 4)
    prompts = speed_prompts(metric, config)
    if metric.type == "latency":
        return round(evaluate.latency_ms(model, prompts, metric.max_new_tokens), 2)
    return round(evaluate.throughput(model, prompts, metric.max_new_tokens), 2)


def candidate_labels(metric: schema.Metric, config: schema.WorkflowConfig) -> list[str]:
    """The labels an accuracy metric chooses among: the metric's, the data config's, else every label of the whole
    data file. Not only those of the rows scored: a held-out split or max_samples may lack a class, and scoring
    among fewer labels makes the task easier (among one label, every answer is right)."""
    data = config.data_config(metric.data_config)
    if metric.labels or data.pre_process_data_config.labels:
        return list(metric.labels or data.pre_process_data_config.labels)
    from ..data import load_rows

    column = metric.label_column or data.pre_process_data_config.label_column
    return sorted({str(label) for label in load_rows(data, config.base_dir)[column] if label is not None})


def _examples(metric: schema.Metric, config: schema.WorkflowConfig) -> list[tuple[str, str]]:
    from ..data import eval_examples

    rows, _ = eval_rows(config, metric.data_config)
    pre = config.data_config(metric.data_config).pre_process_data_config
    examples = eval_examples(rows, pre, metric.label_column or pre.label_column)
    return examples[:metric.max_samples] if metric.max_samples else examples


def speed_prompts(metric: schema.Metric, config: schema.WorkflowConfig) -> list[str]:
    """Up to LATENCY_PROMPTS held-out prompts for latency and throughput: the template up to its label field when
    it has one (what accuracy asks), else the whole texts."""
    from ..data import Template, eval_examples, render

    name = metric.data_config or _first_data_config(config)
    if name is None:
        return ["Hello, how are you today?"]
    rows, _ = eval_rows(config, name)
    rows = rows[:LATENCY_PROMPTS]
    pre = config.data_config(name).pre_process_data_config
    label = metric.label_column or pre.label_column
    if label and pre.text_template and not pre.use_chat_template and label in Template.parse(pre.text_template).fields:
        return [prompt for prompt, _ in eval_examples(rows, pre, label)]
    return [render(row, pre).text for row in rows]


def _first_data_config(config: schema.WorkflowConfig) -> Optional[str]:
    return config.data_configs[0].name if config.data_configs else None


def goal_failures(config: schema.WorkflowConfig, evaluator: schema.Evaluator,
                  metrics: dict[str, dict[str, float]], final: str) -> list[str]:
    """The goals the final model misses, each as a sentence."""
    failures = []
    baseline, result = metrics.get("input", {}), metrics.get(final, {})
    for metric in evaluator.metrics:
        goal, value = metric.goal, result.get(metric.name)
        if goal is None or value is None:
            continue
        sign = 1 if metric.higher_is_better else -1
        if goal.type == "threshold":
            ok = sign * (value - goal.value) >= 0
            wanted = f"{'>=' if sign > 0 else '<='} {goal.value}"
        else:
            if metric.name not in baseline:
                failures.append(f"{metric.name}: a {goal.type} goal needs the input model measured "
                                "(evaluate_input_model: true)")
                continue
            change = sign * (value - baseline[metric.name])
            ok = change >= goal.value if goal.type == "min-improvement" else -change <= goal.value
            wanted = f"{goal.type} {goal.value} against the input model's {baseline[metric.name]}"
        if not ok:
            failures.append(f"{metric.name} = {value}, goal: {wanted}")
    return failures
