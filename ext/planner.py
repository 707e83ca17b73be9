"""config -> plan: the passes in order, each with its effective settings and where its input comes from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .config import schema


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    settings: dict[str, Any]
    input_from: str  # "input_model" or the name of the step before
    takes: str  # artifact kind: hf | adapter | onnx
    gives: str


@dataclass(frozen=True)
class Plan:
    config: schema.WorkflowConfig
    steps: list[Step]
    evaluator: Optional[schema.Evaluator]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A plain-text account of what will run, for `tunecell validate` and `--dry-run`."""
        cfg = self.config
        model = cfg.input_model.model_path
        lines = [f"input model: {model if isinstance(model, str) else model.name}",
                 f"target: {cfg.target or 'local'} ({cfg.execution_provider}); host: {cfg.host or 'local'}"]
        for i, step in enumerate(self.steps, 1):
            lines.append(f"{i}. {step.name} [{step.type}] <- {step.input_from}: {step.takes} -> {step.gives}")
            lines += [f"     {key}: {value}" for key, value in _flat(step.settings)]
        if self.evaluator is not None:
            names = ", ".join(m.name for m in self.evaluator.metrics)
            where = "on the input model and after each pass" if cfg.evaluate_input_model else "after each pass"
            lines.append(f"evaluate ({cfg.evaluator}): {names} {where}")
        lines.append(f"cache: {cfg.cache_dir}   output: {cfg.output_dir}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def plan(config: schema.WorkflowConfig, only: Optional[set[str]] = None) -> Plan:
    """The ordered steps of ``config``; ``only`` keeps the passes of those names (`%%optimize --from` runs the
    passes an earlier run did not)."""
    from .passes.registry import pass_specs

    steps, previous = [], "input_model"
    for name, p in config.passes.items():
        spec = pass_specs()[p.type]
        takes, gives = spec.takes, spec.gives
        settings = p.model_dump(exclude={"type"}, mode="json")
        if isinstance(p, schema.ModelBuilder):
            settings["execution_provider"] = config.execution_provider
            if p.precision != "int4":  # the int4 options change no other precision's model: their defaults in its key
                defaults = schema.ModelBuilder().model_dump(mode="json")
                settings.update({key: defaults[key] for key in settings if key.startswith("int4_")})
        if isinstance(p, schema.LoRA) and config.input_model.load_kwargs.attn_implementation:
            settings["attn_implementation"] = config.input_model.load_kwargs.attn_implementation  # trained with it
        if only is None or name in only:
            steps.append(Step(name, p.type, settings, previous, "|".join(sorted(takes)), gives))
        previous = name
    evaluator = config.evaluators[config.evaluator] if config.evaluator else None
    return Plan(config, steps, evaluator, list(config.notes))


def _flat(settings: dict[str, Any], prefix: str = ""):
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            yield from _flat(value, f"{prefix}{key}.")
        elif value is not None and value != {}:
            yield f"{prefix}{key}", value
