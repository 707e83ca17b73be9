"""Measure a model with the configured evaluator, through the cache: a model measured before is not loaded again."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Optional

from ..config import schema
from ..errors import ConfigError
from ..passes.base import Artifact
from .cache import Cache, Entry, digest, package_versions

LATENCY_PROMPTS = 8
MEASURED_WITH = ("tunecell", "transformers", "onnxruntime-genai")  # a new version may measure differently
# raised when what a metric measures changes, so that no cached value of the old kind is shown beside new ones
# (2: latency and throughput generate max_new_tokens tokens whether or not the model ends its answer sooner, after
# a warm-up; accuracy chooses among the labels of the whole data file. 3: prompts are tokenized as training
# tokenizes them (add_special_tokens, on ONNX models too), an ONNX model's answers end with the tokenizer's eos, and
# labels are compared as the template renders them; max_samples takes rows spread over the file. 4: loglikelihood
# scores each label with the template's text after it, and prompts that write their own bos keep one)
DEFINITIONS = 4


class Training(NamedTuple):
    """A LoRA pass as evaluation sees it: the data config it trains on and the rows it holds out of it."""
    pass_name: str
    data_config: str
    eval_dataset_size: Optional[float]
    seed: int
    data_seed: Optional[int]

    @property
    def split_seed(self) -> int:  # as passes.lora.split_seed
        return self.seed if self.data_seed is None else self.data_seed


def trainings(config: schema.WorkflowConfig, artifact: Optional[Artifact] = None) -> list[Training]:
    """The LoRA passes whose training rows evaluation keeps out: this config's, then those in the making of
    ``artifact`` that it lacks (a run from start_from has only the model of the earlier run's passes)."""
    found = [_training(name, p.model_dump(mode="json")) for name, p in config.passes.items()
             if isinstance(p, schema.LoRA)]
    found += [t for t in (_made_by(str(artifact.path), artifact.identity) if artifact is not None else ())
              if t not in found]
    return found


@lru_cache(maxsize=64)
def _made_by(path: str, identity: str) -> tuple[Training, ...]:
    """The LoRA passes that made a cached artifact, first to last, read back along the inputs of the cache
    records. Read once per artifact (a measurement asks several times): a record never changes under its key."""
    found, record = [], _record_of({"path": path, "identity": identity})
    while record is not None:
        if record["type"] in ("LoRA", "QLoRA"):
            found.append(_training(record["pass"], record["settings"]))
        record = _record_of(record["input"])
    return tuple(found[::-1])


def _record_of(source: dict) -> Optional[dict]:
    """The cache record of a pass's output (<entry>/artifact); None for anything else: the input model, whatever
    its folder holds (another tool's run.json)."""
    path = Path(source["path"])
    if path.name != "artifact":
        return None
    try:
        record = Entry(path.parent).record()
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == source.get("identity") else None


def _training(pass_name: str, settings: dict) -> Training:
    args = settings["training_args"]
    return Training(pass_name, settings["train_data_config"], settings["eval_dataset_size"], args["seed"],
                    args.get("data_seed"))


def eval_rows(config: schema.WorkflowConfig, data_name: str,
              artifact: Optional[Artifact] = None) -> tuple[list[dict], Optional[dict]]:
    """The rows a metric may score: the held-out split when a training pass uses this data config.

    Returns the rows and a description of the split (part of the metrics' cache key).
    """
    from ..data import load_rows, split_rows

    rows = load_rows(config.data_config(data_name), config.base_dir)
    for t in trainings(config, artifact):
        if t.data_config == data_name and t.eval_dataset_size:
            _, held_out = split_rows(rows, t.eval_dataset_size, t.split_seed)
            return [dict(r) for r in held_out], {"size": t.eval_dataset_size, "seed": t.split_seed}
    return [dict(r) for r in rows], None


def metrics_key(artifact: Artifact, evaluator: schema.Evaluator, config: schema.WorkflowConfig,
                data_hashes: dict[str, str]) -> str:
    """What the values depend on: the model, each metric's settings (not its goal nor its priority: those judge
    a value, they do not change it), the data each metric reads and how it is split, and the measuring code."""
    used = sorted({name for m in evaluator.metrics if m.type != "size_on_disk"
                   for name in [m.data_config or _first_data_config(config)] if name})
    splits = [[t.data_config, t.eval_dataset_size, t.seed, t.data_seed] for t in trainings(config, artifact)]
    metrics = [m.model_dump(mode="json", exclude={"goal", "priority"}) for m in evaluator.metrics]
    return digest({"model": artifact.identity, "metrics": metrics,
                   "data": {name: data_hashes.get(name) for name in used},
                   "pre": {name: config.data_config(name).pre_process_data_config.model_dump(mode="json") for name in used},
                   "splits": splits, "packages": package_versions(MEASURED_WITH), "definitions": DEFINITIONS})


def measure(artifact: Artifact, evaluator: schema.Evaluator, config: schema.WorkflowConfig, cache: Cache,
            data_hashes: dict[str, str]) -> dict[str, float]:
    check_held_out(artifact, evaluator, config)
    key = metrics_key(artifact, evaluator, config, data_hashes)
    cached = cache.load_metrics(key)
    if cached is not None:
        return cached
    from .. import evaluate
    from ..inference import ContextFull, load_model

    base = artifact.base.path if artifact.kind == "adapter" and artifact.base else None  # this run's, not training's
    model = load_model(artifact.path, trust_remote_code=config.input_model.load_kwargs.trust_remote_code, base=base)
    values = {}
    for i, metric in enumerate(evaluator.metrics):
        try:
            values[metric.name] = _one(metric, model, artifact, config, evaluate)
        except ContextFull as e:  # named by the setting that asked for it
            raise ConfigError(f"metric {metric.name!r}: {e}", path=("evaluators", config.evaluator, "metrics", i,
                                                                      "max_new_tokens"),
                              hint="lower max_new_tokens, or max_seq_len of its data config") from None
    cache.save_metrics(key, values)
    return values


def check_held_out(artifact: Artifact, evaluator: schema.Evaluator, config: schema.WorkflowConfig) -> None:
    """config.references' check that accuracy is not measured on training rows, for the passes of the earlier run
    that a run from start_from continues (not in this config, so not checked at load)."""
    found = trainings(config, artifact)
    for i, metric in enumerate(evaluator.metrics):
        for t in found:
            if metric.type == "accuracy" and t.data_config == metric.data_config and not t.eval_dataset_size:
                raise ConfigError(f"accuracy on {metric.data_config!r} would be measured on rows that pass "
                                  f"{t.pass_name!r} trained on",
                                  path=("evaluators", config.evaluator, "metrics", i, "data_config"),
                                  hint=f"set passes.{t.pass_name}.eval_dataset_size (e.g. 0.2) in the run that "
                                       "trains it, or name a separate data config")


def _one(metric: schema.Metric, model: Any, artifact: Artifact, config: schema.WorkflowConfig,
         evaluate: Any) -> float:
    if metric.type == "size_on_disk":
        return round(evaluate.size_on_disk_mb(artifact.path), 3)
    data = metric.data_config or _first_data_config(config)
    pre = config.data_config(data).pre_process_data_config if data else None
    with model.special_tokens(pre.add_special_tokens if pre else True):
        if metric.type == "accuracy":
            from ..data import after_label

            examples = _examples(metric, config, artifact)
            labels = candidate_labels(metric, config)
            after = after_label(pre, metric.label_column or pre.label_column)
            return round(evaluate.accuracy(model, examples, labels, metric.max_new_tokens, metric.scoring, after), 4)
        prompts = speed_prompts(metric, config, artifact)
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
    from ..data import Template, load_rows

    column = metric.label_column or data.pre_process_data_config.label_column
    template = Template.parse(data.pre_process_data_config.text_template)
    piece = template.answer_piece(column)  # each label as the template renders it, as eval_examples expects it
    return sorted({template.format_field(piece, {column: label})
                   for label in load_rows(data, config.base_dir)[column] if label is not None})


def _examples(metric: schema.Metric, config: schema.WorkflowConfig,
              artifact: Optional[Artifact] = None) -> list[tuple[str, str]]:
    from ..data import eval_examples

    rows, _ = eval_rows(config, metric.data_config, artifact)
    pre = config.data_config(metric.data_config).pre_process_data_config
    examples = eval_examples(rows, pre, metric.label_column or pre.label_column)
    n = metric.max_samples
    if not n or n >= len(examples):
        return examples
    # spread over the rows, not the first n: a file sorted by label would give one or two labels
    return [examples[i * len(examples) // n] for i in range(n)]


def speed_prompts(metric: schema.Metric, config: schema.WorkflowConfig,
                  artifact: Optional[Artifact] = None) -> list[str]:
    """Up to LATENCY_PROMPTS held-out prompts for latency and throughput: the template up to its label field when
    it has one (what accuracy asks), a conversation up to its last answer (what a chat model is asked), else the
    whole texts."""
    from ..data import Template, eval_examples, load_tokenizer, render

    name = metric.data_config or _first_data_config(config)
    if name is None:
        return ["Hello, how are you today?"]
    rows, _ = eval_rows(config, name, artifact)
    rows = rows[:LATENCY_PROMPTS]
    pre = config.data_config(name).pre_process_data_config
    label = metric.label_column or pre.label_column
    if pre.use_chat_template:
        tokenizer = load_tokenizer(None, config)  # the one training renders the conversations with
        return [_chat_prompt(row, tokenizer) for row in rows]
    if label and pre.text_template and label in Template.parse(pre.text_template).fields:
        return [prompt for prompt, _ in eval_examples(rows, pre, label)]
    return [render(row, pre).text for row in rows]


def _chat_prompt(row: dict, tokenizer: Any) -> str:
    from ..data.templates import chat_messages

    messages = chat_messages(row)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    if last == 0:  # the assistant speaks first: the whole conversation is the prompt
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)


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
            # values have 4 decimals at most: 0.15 - 0.1 is 0.04999999999999999, which must meet a goal of 0.05
            change = round(sign * (value - baseline[metric.name]), 9)
            ok = change >= goal.value if goal.type == "min-improvement" else -change <= goal.value
            wanted = f"{goal.type} {goal.value} against the input model's {baseline[metric.name]}"
        if not ok:
            failures.append(f"{metric.name} = {value}, goal: {wanted}")
    return failures
