"""ModelBuilder: convert an HF folder to an onnxruntime-genai model (ONNX + genai_config.json) with its builder."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

OptionValue = Union[str, int, float, bool]


def build_onnx(hf_path: Path, out_dir: Path, *, precision: str, execution_provider: str, int4_block_size: int = 32,
               int4_accuracy_level: Optional[int] = None, int4_is_symmetric: Optional[bool] = None,
               int4_algo_config: Optional[str] = None, extra_options: Optional[dict[str, OptionValue]] = None,
               scratch_dir: Path) -> None:
    """Run the onnxruntime-genai model builder on a local HF folder; out_dir then loads with og.Model.

    extra_options are the builder's own KEY=VALUE options; its int4 ones win over the int4_* arguments. The
    builder never contacts the hub (hf_token=false, and hf_path is a local folder), and its scratch files (its
    cache_dir, HF_HOME, onnxruntime's cache) stay under scratch_dir.
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
    if precision == "int4":  # the builder's own names in extra_options win over the int4_* options
        options.setdefault("block_size", int4_block_size)
        for key, value in (("accuracy_level", int4_accuracy_level), ("is_symmetric", int4_is_symmetric),
                           ("algo_config", int4_algo_config)):
            if value is not None:
                options.setdefault(key, value)
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

    reference_schemas_read_on_use()
    with _environ(HF_HOME=str(scratch_dir / "hf-home"), XDG_CACHE_HOME=str(scratch_dir / "xdg-cache")), \
            _root_logging_kept(), k_quant_in_slices(), weights_read_into_memory(), \
            weights_released_once_serialized():
        builder_imported_without_other_models()  # in scratch_dir's environment: it imports onnxruntime
        from onnxruntime_genai.models.builder import create_model, parse_extra_options

        # parse_extra_options also loads the HF config and tokenizer that create_model needs ("hf_details")
        parsed = parse_extra_options(*args, option_list)
        create_model(*args, **parsed)


def reference_schemas_read_on_use() -> None:
    """Import onnx's reference evaluator with its table of operator schemas left unread until a lookup needs it.

    onnxruntime.quantization imports onnx.reference at module level, for paths the int4 quantizer does not take
    (float8 and checks of the quantized weights), and that module copies the schema of every operator of every
    opset into a dict as it is imported: 9-10 MiB that stayed resident through the int4 build, at its peak
    (the tiny test model's build peaked at 433 MiB with the table read at import, 424 without; the same bytes
    written). The table is read on its first lookup instead, with the same contents. Nothing changes where
    onnx.reference was imported before.
    """
    if "onnx.reference.op_run" in sys.modules:
        return
    import onnx.defs

    read_all = onnx.defs.get_all_schemas_with_history
    onnx.defs.get_all_schemas_with_history = list  # an empty table while the module is imported
    try:
        from onnx.reference import op_run
    finally:
        onnx.defs.get_all_schemas_with_history = read_all
    op_run._schemas = _ReadOnUse(op_run._build_schemas)


# model classes of other model families (multimodal, speech) that the builder's modules import at module level
_BUILDER_MODEL_CLASSES = (
    "AutoModelForSpeechSeq2Seq", "Gemma3ForConditionalGeneration", "Lfm2VlForConditionalGeneration",
    "Mistral3ForConditionalGeneration", "Qwen2ForCausalLM", "Qwen2_5_VLForConditionalGeneration",
    "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration", "Qwen3VLForConditionalGeneration")


def builder_imported_without_other_models() -> None:
    """Import onnxruntime-genai's builder with the model classes it names for other model families imported on
    first use.

    The builder's modules import nine model classes from transformers as they are imported (Gemma 3, Mistral 3,
    the Qwen VL models, Whisper's auto class ...), and with each its modeling code: 0.19 s and 3 MiB at the tiny
    model's int4 build peak, for models a build of another family never loads. The builder gets a stand-in for
    each class transformers has not imported yet, which imports the class when one of its attributes is read (the
    builder only calls their ``from_pretrained``); transformers itself keeps no stand-in. Nothing changes once the
    builder is imported.
    """
    if "onnxruntime_genai.models.builder" in sys.modules:
        return
    import transformers

    stand_ins = {name: _ClassOnUse(name) for name in _BUILDER_MODEL_CLASSES if name not in vars(transformers)}
    for name, stand_in in stand_ins.items():
        setattr(transformers, name, stand_in)
    try:
        import onnxruntime_genai.models.builder  # noqa: F401
    finally:
        for name in stand_ins:
            delattr(transformers, name)


class _ClassOnUse:
    """Stands in for the transformers class ``name`` until one of its attributes is read."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        import transformers

        return getattr(getattr(transformers, self._name), attribute)


class _ReadOnUse(Mapping):
    """A mapping that ``read()`` fills on its first lookup."""

    def __init__(self, read):
        self._read, self._table = read, None

    def _loaded(self) -> dict:
        if self._table is None:
            self._table = self._read()
        return self._table

    def __getitem__(self, key):
        return self._loaded()[key]

    def __iter__(self):
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


@contextmanager
def k_quant_in_slices(blocks_per_slice: int = 1 << 12, workers: Optional[int] = None,
                      parallel_min_blocks: int = 1 << 10) -> Iterator[None]:
    """Make onnxruntime's k_quant quantize a weight a slice of blocks at a time, on every CPU, with the same result.

    Its CPU function quantizes a whole weight in one vectorized call whose temporaries come to about ten times the
    weight's fp32 size: 1.1 GB for SmolLM2's 113 MB lm_head, which made it the int4 build's peak. Each block of
    group_size values is quantized on its own, so slicing changes no output byte (tests/test_passes_model.py).
    The slices are taken by rows of the (transposed, non-contiguous) weight, so the weight is never copied whole.
    Each slice goes through tunecell.passes.k_quant, onnxruntime's arithmetic in a faster layout, which gives the
    quantized values as uint8 rather than float64 (integers from 0 to 2**num_bits - 1 either way; the one caller,
    rtn_quantize's k_quant branch, converts them to uint8).
    The search is numpy on whole arrays, which lets go of the GIL, so ``workers`` threads (default: the CPUs this
    process may use) quantize slices side by side, each weight split over them, in slices of at least
    ``parallel_min_blocks`` blocks (on smaller arrays the threads would mostly wait for the GIL). On SmolLM2's
    lm_head, 2 CPUs, with onnxruntime's function: 5.5 s whole, 4.2 s in slices of 16384 blocks (their temporaries
    stay in cache), 2.5 s in those slices on 2 threads. Slices of 4096 blocks took as long on 2 threads (3.3-3.8 s
    against 3.6-3.7 s in one measurement) with 30 MiB less at the peak; 2048 took 15% longer.
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
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from ..cpus import usable_cpus
    from .k_quant import quantize as k_quant

    workers = workers or usable_cpus()

    def sliced(data, num_bits=4, group_size=32):
        if data.ndim == 2 and data.shape[1] % group_size == 0:
            rows, blocks_per_row = data, data.shape[1] // group_size
        else:
            rows, blocks_per_row = np.reshape(data, (-1, group_size)), 1
        rows_per_slice = max(1, blocks_per_slice // blocks_per_row)
        rows_per_worker = -(-len(rows) // workers)
        if rows_per_worker * blocks_per_row >= parallel_min_blocks:  # spread every weight over the CPUs
            rows_per_slice = min(rows_per_slice, rows_per_worker)
        blocks = len(rows) * blocks_per_row
        # as k_quant gives them: q_weight (blocks, group_size), scale and zero_point (blocks, 1)
        outputs = (np.empty((blocks, group_size), np.uint8), np.empty((blocks, 1), np.float64),
                   np.empty((blocks, 1), np.uint8))

        def quantize(start):
            first = start * blocks_per_row
            for output, part in zip(outputs, k_quant(rows[start:start + rows_per_slice], num_bits, group_size)):
                output[first:first + len(part)] = part

        starts = range(0, len(rows), rows_per_slice)
        if workers > 1 and len(starts) > 1 and rows_per_slice * blocks_per_row >= parallel_min_blocks:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(quantize, starts))  # list(): re-raises a worker's error
        else:
            for start in starts:
                quantize(start)
        return outputs

    weight_only.quant_tensor_k_quant_cpu = sliced
    try:
        yield
    finally:
        weight_only.quant_tensor_k_quant_cpu = whole


@contextmanager
def weights_read_into_memory() -> Iterator[None]:
    """Make transformers read safetensors weights into memory of their own instead of mapping the file.

    A memory-mapped file stays resident, once read, until every tensor taken from it is gone, so releasing the
    weights one by one (weights_released_once_serialized) would free nothing until the last. safetensors' pread
    backend gives each tensor its own buffer; the values are the same (tests/test_passes_model.py).
    """
    import transformers.modeling_utils as modeling

    opened = modeling.safe_open

    def safe_open_pread(filename, framework="pt", device="cpu", backend=None, **kwargs):
        if str(device) == "cpu":
            backend = "pread"
        return opened(filename, framework=framework, device=device, backend=backend, **kwargs)

    modeling.safe_open = safe_open_pread
    try:
        yield
    finally:
        modeling.safe_open = opened


LENT = "tunecell-lent-weight"  # the external-data location marking a MatMul weight left out of a serialized copy


@contextmanager
def weights_released_once_serialized() -> Iterator[None]:
    """Keep one copy of each weight while the builder serializes its ONNX IR graph for int4 quantization.

    For int4 the builder serializes its whole fp32 graph once (onnx_ir.to_proto), hands that copy to onnxruntime's
    quantizer and only uses the quantized result afterwards. Its own graph still points at the torch weights,
    which would otherwise stay in memory next to their copy through the whole quantization: 540 MB for SmolLM2.
    - A weight a MatMul multiplies by is not copied: the copy names it as external data at LENT, and
      onnx.numpy_helper.to_array (how the quantizer reads weights) gives the graph's own values for it. Once the
      quantizer has replaced a weight (it is no longer among the copy's initializers) the weight is let go, so
      the fp32 weights leave memory one by one during quantization: the protobuf runtime (upb) would keep a
      copied weight until the whole copy is freed, even once the quantizer has removed it. A lent weight still
      in the copy when the builder reads the result back (onnx_ir.from_proto) is written into it then, and
      all are written in before any other quantization method runs (they read weights in other ways).
    - Any other weight is dropped from the graph once copied, and the heap trimmed every 64 MB.
    That changes no output byte (tests/test_passes_model.py).
    """
    import numpy as np
    import onnx
    import onnx_ir
    from onnx import numpy_helper
    from onnx_ir import serde
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from ..memory import release_memory, trim_heap

    serialize_model, serialize_tensor = onnx_ir.to_proto, serde.serialize_tensor_into
    read_array, deserialize_model = numpy_helper.to_array, onnx_ir.from_proto
    owners: dict[int, object] = {}  # id(weight) -> the initializer holding it, while a model is serialized
    multiplied: set[int] = set()  # id(weight) of MatMul weights, while a model is serialized
    lent: dict[str, object] = {}  # name -> a MatMul weight the copies leave out
    copies: list = []  # the serialized models lent weights are named in
    untrimmed = 0  # bytes released since the heap was last trimmed

    def release(nbytes: int) -> None:
        nonlocal untrimmed
        untrimmed += nbytes
        if untrimmed >= 64 << 20:  # freed weights stay resident until trimmed (tunecell.memory)
            trim_heap()
            untrimmed = 0

    def is_lent(tensor_proto) -> bool:
        return (tensor_proto.data_location == onnx.TensorProto.EXTERNAL
                and any(entry.key == "location" and entry.value == LENT for entry in tensor_proto.external_data))

    def model_to_proto(ir_object, *args, **kwargs):
        if not isinstance(ir_object, onnx_ir.Model):
            return serialize_model(ir_object, *args, **kwargs)
        graph = ir_object.graph
        owners.update((id(value.const_value), value) for value in graph.initializers.values()
                      if value.const_value is not None)
        multiplied.update(id(weight) for weight in map(_matmul_weight, graph) if weight is not None)
        try:
            copy = serialize_model(ir_object, *args, **kwargs)
        finally:
            owners.clear()
            multiplied.clear()
            release_memory()  # the IR's values and nodes form reference cycles
        copies.append(copy)
        return copy

    def tensor_into_proto(tensor_proto, from_, *args, **kwargs):
        owner = owners.pop(id(from_), None)
        if owner is None:
            return serialize_tensor(tensor_proto, from_, *args, **kwargs)
        owner.const_value = None
        if id(from_) not in multiplied:
            result = serialize_tensor(tensor_proto, from_, *args, **kwargs)
            release(from_.nbytes)
            return result
        lent[from_.name] = from_
        stand_in = onnx_ir.ExternalTensor(LENT, None, None, from_.dtype, shape=onnx_ir.Shape(from_.shape.numpy()),
                                          name=from_.name)
        return serialize_tensor(tensor_proto, stand_in, *args, **kwargs)

    def to_array(tensor, *args, **kwargs):
        if not is_lent(tensor):
            return read_array(tensor, *args, **kwargs)
        present = {initializer.name for copy in copies for initializer in copy.graph.initializer}
        for name in [name for name in lent if name not in present]:  # replaced by the quantizer
            release(lent.pop(name).nbytes)
        return np.array(lent[tensor.name].numpy(), order="C")  # the caller's own array, as read_array gives

    def write_back(copy) -> None:
        for initializer in copy.graph.initializer:
            if is_lent(initializer):
                weight = lent.pop(initializer.name)
                initializer.Clear()
                serialize_tensor(initializer, weight)
        copies[:] = [other for other in copies if other is not copy]

    def model_from_proto(proto, *args, **kwargs):
        if isinstance(proto, onnx.ModelProto):
            write_back(proto)
            if not copies:
                lent.clear()  # what the quantizer replaced since its last read
        return deserialize_model(proto, *args, **kwargs)

    def process(quantizer):
        # only RTN and k_quant (onnxruntime's rtn_quantize) read weights through to_array alone
        if getattr(quantizer.algo_config, "algorithm", None) not in ("RTN", "k_quant"):
            for copy in list(copies):
                write_back(copy)
        return quantize(quantizer)

    quantize = MatMulNBitsQuantizer.process
    onnx_ir.to_proto, serde.serialize_tensor_into = model_to_proto, tensor_into_proto
    numpy_helper.to_array, onnx_ir.from_proto, MatMulNBitsQuantizer.process = to_array, model_from_proto, process
    try:
        yield
    finally:
        onnx_ir.to_proto, serde.serialize_tensor_into = serialize_model, serialize_tensor
        numpy_helper.to_array, onnx_ir.from_proto, MatMulNBitsQuantizer.process = read_array, deserialize_model, quantize
        lent.clear()
        copies.clear()


def _matmul_weight(node):
    """The constant 2-D weight a plain MatMul node multiplies by, or None."""
    if node.op_type != "MatMul" or node.domain != "" or len(node.inputs) != 2:
        return None
    weight = node.inputs[1]
    if weight is None or not weight.is_initializer() or weight.const_value is None:
        return None
    return weight.const_value if len(weight.const_value.shape) == 2 else None


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
