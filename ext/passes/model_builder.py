"""ModelBuilder: convert an HF folder to an onnxruntime-genai model (ONNX + genai_config.json) with its builder."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

OptionValue = Union[str, int, float, bool]


def build_onnx(hf_path: Path, out_dir: Path, *, precision: str, execution_provider: str, int4_block_size: int = 32,
               int4_accuracy_level: Optional[int] = None, int4_is_symmetric: Optional[bool] = None,
               int4_algo_config: Optional[str] = None, extra_options: Optional[dict[str, OptionValue]] = None,
               scratch_dir: Path) -> None:
    """Run the onnxruntime-genai model builder on a local HF folder; out_dir then loads with og.Model.

    extra_options are the builder's own KEY=VALUE options. The builder never contacts the hub (hf_token=false,
    and hf_path is a local folder), and its scratch files (its cache_dir, HF_HOME, onnxruntime's cache) stay under
    scratch_dir.
    """
    if precision in ("fp16", "bf16") and execution_provider == "cpu":
        raise ValueError(
            f"precision {precision} does not suit the cpu execution provider: onnxruntime's CPU kernels lack "
            "bf16 (the model fails to load) and run fp16 slower than fp32. Use int4 (smallest and fastest on "
            "CPU) or fp32, or target CUDA (CUDAExecutionProvider) for fp16/bf16.")
    if not (Path(hf_path) / "config.json").is_file():
        # the builder would take anything else for a hub name and try to download it
        raise FileNotFoundError(f"{hf_path} is not a local Hugging Face model folder (no config.json)")
    options: dict[str, OptionValue] = dict(extra_options or {})
    if precision == "int4":
        options["block_size"] = int4_block_size
        if int4_accuracy_level is not None:
            options["accuracy_level"] = int4_accuracy_level
        if int4_is_symmetric is not None:
            options["is_symmetric"] = int4_is_symmetric
        if int4_algo_config is not None:
            options.setdefault("algo_config", int4_algo_config)  # extra_options win
    options["hf_token"] = False
    option_list = [f"{key}={str(value).lower() if isinstance(value, bool) else value}"
                   for key, value in options.items()]

    scratch_dir = Path(scratch_dir)
    cache_dir = scratch_dir / "builder-cache"
    args = (None, str(hf_path), str(out_dir), precision, execution_provider, str(cache_dir))
    # huggingface_hub and transformers fix their cache paths at import: import them first, so that the
    # redirection below cannot leak into the rest of the process. onnxruntime reads XDG_CACHE_HOME when it
    # writes its device id and telemetry files, so those land in scratch_dir instead of ~/.cache/Microsoft.
    import huggingface_hub  # noqa: F401
    import transformers  # noqa: F401

    with _environ(HF_HOME=str(scratch_dir / "hf-home"), XDG_CACHE_HOME=str(scratch_dir / "xdg-cache")), \
            _root_logging_kept():
        from onnxruntime_genai.models.builder import create_model, parse_extra_options

        # parse_extra_options also loads the HF config and tokenizer that create_model needs ("hf_details")
        parsed = parse_extra_options(*args, option_list)
        create_model(*args, **parsed)


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Undo onnxruntime's import-time logging.basicConfig(level=INFO), which would otherwise print every INFO
    record of every library in the process from then on; its quantizer's per-node INFO lines are silenced too."""
    root, quantizer = logging.getLogger(), logging.getLogger("onnxruntime.quantization")
    handlers, level, quantizer_level = root.handlers[:], root.level, quantizer.level
    quantizer.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        quantizer.setLevel(quantizer_level)
