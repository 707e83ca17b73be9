"""Every pass tunecell can run, its own and those other packages add, in one registry.

A package adds a pass with an entry point in the group ``tunecell.passes`` (name -> class). The class declares:
``config_model`` (a pydantic model whose ``type`` field is ``Literal["<name>"]`` and which forbids unknown keys),
``takes`` (the artifact kinds it accepts: hf, adapter, onnx), ``gives`` (the kind it returns), optionally
``packages`` (distributions whose versions belong in its cache key), and ``run(self, input, config, context)``
which fills ``context.out_dir`` and returns a dict of stats. tunecell's own passes are registered the same way.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

from pydantic import BaseModel

from ..config import schema
from ..errors import TunecellError
from .base import Artifact, PassContext

ENTRY_POINT_GROUP = "tunecell.passes"
KINDS = ("hf", "adapter", "onnx")


@dataclass(frozen=True)
class PassSpec:
    type: str
    config_model: type[BaseModel]
    takes: frozenset[str]
    gives: str
    run: Callable[[Artifact, Any, PassContext], dict]
    packages: tuple[str, ...] = ()
    source: str = "tunecell"


# ----------------------------------------------------------------------------------- tunecell's passes
def _lora(source: Artifact, cfg: schema.LoRA, ctx: PassContext) -> dict:
    from .lora import train

    return train(source, cfg, ctx)


def _merge(source: Artifact, cfg: schema.MergeAdapterWeights, ctx: PassContext) -> dict:
    from .merge import merge_adapter

    merge_adapter(source.base.path, source.path, ctx.out_dir,
                  trust_remote_code=ctx.config.input_model.load_kwargs.trust_remote_code)
    return {}


def _model_builder(source: Artifact, cfg: schema.ModelBuilder, ctx: PassContext) -> dict:
    from .model_builder import build_onnx

    # The builder prints a line per tensor: keep that beside the artifact, and show its tail only on failure.
    log_path = ctx.out_dir.parent / "builder.log"
    with open(log_path, "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            build_onnx(source.path, ctx.out_dir, precision=cfg.precision,
                       execution_provider=ctx.config.execution_provider, int4_block_size=cfg.int4_block_size,
                       int4_accuracy_level=cfg.int4_accuracy_level, int4_is_symmetric=cfg.int4_is_symmetric,
                       int4_algo_config=cfg.int4_algo_config,
                       extra_options=cfg.extra_options, scratch_dir=ctx.scratch_dir)
        except Exception:
            log.flush()
            ctx.log("builder output, last lines:\n" + "\n".join(log_path.read_text().splitlines()[-15:]), "error")
            raise
    return {"execution_provider": ctx.config.execution_provider}


TRAINING = ("torch", "transformers", "peft", "datasets")
BUILTIN = (
    PassSpec("LoRA", schema.LoRA, frozenset({"hf"}), "adapter", _lora, TRAINING),
    PassSpec("QLoRA", schema.QLoRA, frozenset({"hf"}), "adapter", _lora, TRAINING + ("bitsandbytes",)),
    PassSpec("MergeAdapterWeights", schema.MergeAdapterWeights, frozenset({"adapter"}), "hf", _merge,
             ("torch", "transformers", "peft")),
    PassSpec("ModelBuilder", schema.ModelBuilder, frozenset({"hf"}), "onnx", _model_builder,
             ("onnxruntime-genai", "onnx", "transformers")),
)


# ----------------------------------------------------------------------------------- the registry
@functools.lru_cache(maxsize=1)
def pass_specs() -> dict[str, PassSpec]:
    """Pass type -> spec: tunecell's passes, then those of installed packages (entry points)."""
    specs = {spec.type: spec for spec in BUILTIN}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        spec = _from_entry_point(ep)
        if spec.type in specs:
            raise TunecellError(f"pass type {spec.type!r} from {spec.source} is already registered by "
                                f"{specs[spec.type].source}")
        specs[spec.type] = spec
    return specs


def _from_entry_point(ep: metadata.EntryPoint) -> PassSpec:
    source = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
    try:
        cls = ep.load()
        model = cls.config_model
        declared = model.model_fields["type"].default
        takes, gives = frozenset(cls.takes), cls.gives
    except Exception as e:
        raise TunecellError(f"the pass {ep.name!r} from {source} ({ep.value}) cannot be loaded: {e}") from e
    if declared != ep.name or model.model_config.get("extra") != "forbid":
        raise TunecellError(f"the pass {ep.name!r} from {source}: its config_model needs "
                            f"type: Literal[{ep.name!r}] and model_config extra='forbid'")
    if not takes <= set(KINDS) or gives not in KINDS:
        raise TunecellError(f"the pass {ep.name!r} from {source}: takes/gives must be among {', '.join(KINDS)}")
    instance = cls()
    own = (ep.dist.name,) if ep.dist else ()  # a new version of the pass's own package runs it again
    packages = tuple(dict.fromkeys(own + tuple(getattr(cls, "packages", ()))))
    return PassSpec(ep.name, model, takes, gives, instance.run, packages, source)


@functools.lru_cache(maxsize=1)
def workflow_model() -> type[schema.WorkflowConfig]:
    """WorkflowConfig whose passes may be any registered pass (validated, located, like the built-in ones)."""
    return schema.with_pass_models(tuple(spec.config_model for spec in pass_specs().values()))


def describe_passes() -> str:
    """Every registered pass with where it came from, what it takes and gives, and its options."""
    lines = []
    for spec in pass_specs().values():
        lines.append(f"{spec.type}  ({'|'.join(sorted(spec.takes))} -> {spec.gives})  from {spec.source}")
        for name, field in spec.config_model.model_fields.items():
            if name != "type":
                default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
                lines.append(f"    {name}: {default}")
    return "\n".join(lines)


def refresh() -> None:
    """Look for newly installed passes (after a pip install in a running kernel)."""
    pass_specs.cache_clear()
    workflow_model.cache_clear()
