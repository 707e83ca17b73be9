"""Pass type -> the function that runs it. The runner looks passes up here and nowhere else."""
from __future__ import annotations

import contextlib
from typing import Any, Callable

from ..config import schema
from .base import Artifact, PassContext

PassFunction = Callable[[Artifact, Any, PassContext], dict]


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
                       extra_options=cfg.extra_options, scratch_dir=ctx.scratch_dir)
        except Exception:
            log.flush()
            ctx.log("builder output, last lines:\n" + "\n".join(log_path.read_text().splitlines()[-15:]), "error")
            raise
    return {"execution_provider": ctx.config.execution_provider}


PASSES: dict[str, PassFunction] = {
    "LoRA": _lora,
    "QLoRA": _lora,
    "MergeAdapterWeights": _merge,
    "ModelBuilder": _model_builder,
}
