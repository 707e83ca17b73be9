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
            _root_logging_kept(), k_quant_in_slices():
        from onnxruntime_genai.models.builder import create_model, parse_extra_options

        # parse_extra_options also loads the HF config and tokenizer that create_model needs ("hf_details")
        parsed = parse_extra_options(*args, option_list)
        create_model(*args, **parsed)


@contextmanager
def k_quant_in_slices(blocks_per_slice: int = 1 << 16) -> Iterator[None]:
    """Make onnxruntime's k_quant quantize a weight a slice of blocks at a time, with the same result.

    Its CPU function quantizes a whole weight in one vectorized call whose temporaries come to about ten times the
    weight's fp32 size: 1.1 GB for SmolLM2's 113 MB lm_head, which made it the int4 build's peak. Each block of
    group_size values is quantized on its own, so slicing changes no output byte (tests/test_passes_model.py).
    Where onnxruntime lacks the function (another version), nothing is changed.
    """
    try:
        from onnxruntime.quantization.neural_compressor import weight_only
    except ImportError:
        weight_only = None
    whole = getattr(weight_only, "quant_tensor_k_quant_cpu", None)
    if whole is None:
        yield
        return
    import numpy as np

    def sliced(data, num_bits=4, group_size=32):
        blocks = np.reshape(data, (-1, group_size))
        if len(blocks) <= blocks_per_slice:
            return whole(blocks, num_bits, group_size)
        outputs = None
        for start in range(0, len(blocks), blocks_per_slice):
            parts = whole(blocks[start:start + blocks_per_slice], num_bits, group_size)
            if outputs is None:  # q_weight (blocks, group_size), scale and zero_point (blocks, 1)
                outputs = [np.empty((len(blocks),) + part.shape[1:], part.dtype) for part in parts]
            for output, part in zip(outputs, parts):
                output[start:start + len(part)] = part
        return tuple(outputs)

    weight_only.quant_tensor_k_quant_cpu = sliced
    try:
        yield
    finally:
        weight_only.quant_tensor_k_quant_cpu = whole


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
