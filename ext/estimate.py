"""What a workflow will cost before it runs: trainable parameters, tokens, steps, time, memory and output sizes.

Everything here is a plain function of the config (no widgets); the config form shows the result live.

- The model's shape comes from its config alone: the model is instantiated on the "meta" device (no weights are read
  or allocated), which gives the exact parameter count and the shapes of the layers LoRA can target. Trainable
  parameters follow peft's own rules (target matching, "all-linear", modules_to_save): r * (in + out) per targeted
  module.
- Tokens come from the data with the tokenizer only, through the data pipeline's own functions (load_rows,
  split_rows, render, encode, sequences): the counts equal what training will see (DataStats).
- Time is an overhead plus calibrated seconds per token times the tokens the run will process. ``calibrate()``
  times a short training run of the actual model as the LoRA pass trains it (same loading, adapter, Trainer and
  collator, the configured batch size and sequence length, the real data); the result is cached as JSON in the
  cache folder, per model architecture and machine. After a run, ``record_run()`` (or ``learn_from_runs()``, which
  reads the runs recorded in the cache folder) stores the measured time and tokens of the LoRA pass
  (train_runtime_s, tokens), which then take precedence: the estimate improves with every run.
- Peak memory and the ONNX size are estimates from the shapes (formulas below); adapter and merged sizes are exact up
  to file headers.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import statistics
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .config import schema
from .errors import ModelNotFound, TunecellError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp32": 4, "fp16": 2, "bf16": 2}
ESTIMATES_DIR = "estimates"
MEASURED_KEPT = 8  # measured runs kept per shape


# ================================================================================ the model's shape (meta device)
@dataclass(frozen=True)
class Layer:
    """A module LoRA can adapt: a linear layer (or transformers' Conv1D) or an embedding."""

    name: str  # full module name, e.g. model.layers.0.self_attn.qkv_proj
    kind: str  # linear | embedding
    in_features: int
    out_features: int

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def params(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class Skeleton:
    """The parameter shapes of a model, read from its config on the meta device."""

    key: str  # architecture identity: a digest of the model config (weights play no part in cost)
    model_type: str
    total_params: int  # unique parameters (tied weights once)
    layers: tuple[Layer, ...]
    linear_names: tuple[str, ...]  # leaf names of the linear layers (tunecell.passes.lora.linear_module_names)
    output_embedding: Optional[str]  # the lm_head module's name
    module_params: dict[str, int]  # every module's parameter count (its children's included)
    hidden_size: int
    num_layers: int
    num_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_positions: int

    def linear_params(self, include_output: bool = True) -> int:
        return sum(l.params for l in self.layers if l.kind == "linear"
                   and (include_output or l.name != self.output_embedding))


def load_model_config(input_model: schema.InputModel) -> Any:
    """The transformers config of ``input_model`` (config.json or GGUF metadata only; never the weights, never the
    network). Raises ModelNotFound when no local copy is known."""
    from transformers import AutoConfig

    spec = input_model.model_path
    if not isinstance(spec, str):
        raise ModelNotFound(f"{spec.registry_name}/{spec.name}:{spec.version} is an AzureML registry model: its "
                            "shape is not known here")
    kwargs: dict[str, Any] = {"local_files_only": True,
                              "trust_remote_code": input_model.load_kwargs.trust_remote_code}
    local = Path(spec).expanduser()
    if local.is_dir():
        if input_model.gguf_file:
            return AutoConfig.from_pretrained(local, gguf_file=input_model.gguf_file, **kwargs)
        if (local / "config.json").is_file():
            return AutoConfig.from_pretrained(local, **kwargs)
        raise ModelNotFound(f"{local} is not a Hugging Face model folder (no config.json)")
    if local.is_file() and local.suffix.lower() == ".gguf":
        return AutoConfig.from_pretrained(local.parent, gguf_file=local.name, **kwargs)
    from .models.resolve import EMBEDDED_NAMES, EMBEDDED_REPO_ID, _embedded_gguf, _hf_cache_snapshot

    for repo_id in [spec] + ([EMBEDDED_REPO_ID] if spec.lower() in EMBEDDED_NAMES else []):
        snapshot = _hf_cache_snapshot(repo_id, input_model.gguf_file or "config.json",
                                      input_model.load_kwargs.revision)
        if snapshot is not None:
            if input_model.gguf_file:
                return AutoConfig.from_pretrained(snapshot, gguf_file=input_model.gguf_file, **kwargs)
            return AutoConfig.from_pretrained(snapshot, **kwargs)
    if spec.lower() in EMBEDDED_NAMES:
        gguf = _embedded_gguf()
        if gguf is not None:
            return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, **kwargs)
    raise ModelNotFound(f"model {spec!r} is not on this machine (no local folder, .gguf or Hugging Face cache "
                        "snapshot): its shape is unknown")


def config_key(model_config: Any) -> str:
    """A digest of the architecture: the model config without names, paths and versions."""
    data = model_config.to_dict()
    for key in ("_name_or_path", "transformers_version", "name_or_path", "_commit_hash", "architectures",
                "torch_dtype", "dtype", "use_cache", "auto_map"):
        data.pop(key, None)
    text = json.dumps(data, sort_keys=True, default=str)
    return f"{getattr(model_config, 'model_type', 'model')}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


_SKELETONS: "OrderedDict[str, Skeleton]" = OrderedDict()


def skeleton(model_config: Any, trust_remote_code: bool = False) -> Skeleton:
    """Instantiate the model on the meta device (shapes only, no memory) and read its layers. Cached by config."""
    key = config_key(model_config)
    if key in _SKELETONS:
        _SKELETONS.move_to_end(key)
        return _SKELETONS[key]
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    from .passes.lora import linear_module_names

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, trust_remote_code=trust_remote_code)
    layers, module_params = [], {}
    for name, module in model.named_modules():
        if name:
            module_params[name] = sum(p.numel() for p in module.parameters())
        if isinstance(module, torch.nn.Linear):
            layers.append(Layer(name, "linear", module.in_features, module.out_features))
        elif isinstance(module, Conv1D):  # GPT-2 style: weight is (in, out)
            layers.append(Layer(name, "linear", module.weight.shape[0], module.weight.shape[1]))
        elif isinstance(module, torch.nn.Embedding):
            layers.append(Layer(name, "embedding", module.num_embeddings, module.embedding_dim))
    output = model.get_output_embeddings()
    output_name = next((n for n, m in model.named_modules() if m is output), None) if output is not None else None
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    hidden = int(getattr(text_config, "hidden_size", 0) or getattr(text_config, "n_embd", 0) or 0)
    heads = int(getattr(text_config, "num_attention_heads", 0) or getattr(text_config, "n_head", 0) or 1)
    result = Skeleton(
        key=key, model_type=str(getattr(model_config, "model_type", "")),
        total_params=sum(p.numel() for p in model.parameters()),
        layers=tuple(layers), linear_names=tuple(linear_module_names(model)), output_embedding=output_name,
        module_params=module_params, hidden_size=hidden,
        num_layers=int(getattr(text_config, "num_hidden_layers", 0) or getattr(text_config, "n_layer", 0) or 0),
        num_heads=heads, head_dim=int(getattr(text_config, "head_dim", 0) or (hidden // heads if heads else 0)),
        intermediate_size=int(getattr(text_config, "intermediate_size", 0) or 4 * hidden),
        vocab_size=int(getattr(text_config, "vocab_size", 0) or 0),
        max_positions=int(getattr(text_config, "max_position_embeddings", 0) or 0))
    _SKELETONS[key] = result
    while len(_SKELETONS) > 8:
        _SKELETONS.popitem(last=False)
    return result


def model_skeleton(input_model: schema.InputModel) -> Skeleton:
    return skeleton(load_model_config(input_model), input_model.load_kwargs.trust_remote_code)


# =================================================================================== LoRA: what is trained
def lora_targets(skel: Skeleton, target_modules: Union[None, str, list[str]],
                 modules_to_save: Optional[list[str]] = None) -> list[Layer]:
    """The layers peft puts an adapter on, by peft's rules: a list matches a module whose name is the key or ends
    with ".key"; "all-linear" is every linear layer but the output layer; None is peft's default for the model
    type. Modules listed in modules_to_save get no adapter."""
    if target_modules is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

        target_modules = defaults.get(skel.model_type)
        if target_modules is None:
            raise TunecellError(f"peft has no default target_modules for model type {skel.model_type!r}: "
                                "set target_modules (or all-linear)")
    if target_modules == "all-linear":
        chosen = [l for l in skel.layers if l.kind == "linear" and l.name != skel.output_embedding]
    elif isinstance(target_modules, str):  # a regular expression, matched against the full name
        chosen = [l for l in skel.layers if re.fullmatch(target_modules, l.name)]
    else:
        from .passes.lora import targets

        chosen = [l for l in skel.layers if any(targets(k, l.name) for k in target_modules)]
    if modules_to_save:
        chosen = [l for l in chosen if not any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", l.name)
                                               for m in modules_to_save)]
    return chosen


def saved_module_params(skel: Skeleton, modules_to_save: Optional[list[str]]) -> int:
    """Parameters of the modules_to_save copies (peft trains a full copy of each module whose name ends so)."""
    if not modules_to_save:
        return 0
    matched = sorted(n for n in skel.module_params if any(n.endswith(m) for m in modules_to_save))
    top = [n for n in matched if not any(n.startswith(o + ".") for o in matched if o != n)]
    return sum(skel.module_params[n] for n in top)


def trainable_params(skel: Skeleton, lora: schema.LoRA) -> int:
    """What peft reports as trainable: r * (in + out) per adapted layer, plus the modules_to_save copies."""
    adapters = sum(lora.r * (l.in_features + l.out_features)
                   for l in lora_targets(skel, lora.target_modules, lora.modules_to_save))
    return adapters + saved_module_params(skel, lora.modules_to_save)


# ============================================================================================ data: the tokens
@dataclass
class TokenCounts:
    """The training set as the LoRA pass will build it (the fields of DataStats, same functions)."""

    rows: int
    train_rows: int
    eval_rows: Optional[int]
    sequences: int
    tokens: int  # positions, padding included (DataStats.tokens)
    non_pad_tokens: int
    loss_tokens: int
    truncated_rows: int
    dropped_rows: int
    counted_per_sequence: list[int] = field(default_factory=list, repr=False)  # what the collator counts per seq

    @property
    def counted_tokens(self) -> int:
        """Tokens per epoch as the training run counts them (Collator.tokens): non-pad with an attention mask."""
        return sum(self.counted_per_sequence)


_ENCODED: "OrderedDict[str, tuple[Any, Any, Any]]" = OrderedDict()  # key -> (tokenizer, encoded, (rows, ...))

# pre_process_data_config keys that only change packing: changing them re-packs without re-tokenizing
_PACKING_KEYS = ("max_seq_len", "strategy", "pad_to_max_len", "use_attention_mask")


def _files_state(data_config: schema.DataConfig, base_dir: Optional[str]) -> list:
    """Each data file's path, size and time: a file written again since is encoded again."""
    from .data.files import resolve_source

    try:
        files = resolve_source(data_config, base_dir).files
    except TunecellError:  # not a local source: loading it says why
        return []
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


def training_sequences(config: schema.WorkflowConfig, lora: schema.LoRA, tokenizer: Any) -> tuple[list, TokenCounts]:
    """(TokenSequence list, counts) of the LoRA pass's training set, built like build_training_data builds it.

    The encoded rows are cached (by data settings and tokenizer), so changing max_seq_len or strategy re-packs only.
    """
    from .data.loading import load_rows
    from .data.split import split_rows
    from .data.templates import check_prompt_template
    from .data.tokenize import TokenStats, encode, render_rows, sequences
    from .passes.lora import split_seed

    dc = config.data_config(lora.train_data_config)
    pre = dc.pre_process_data_config
    key_data = dc.model_dump(mode="json")
    for k in _PACKING_KEYS:
        key_data["pre_process_data_config"].pop(k, None)
    key = json.dumps([key_data, lora.eval_data_config, lora.eval_dataset_size, split_seed(lora),
                      config.base_dir, id(tokenizer), _files_state(dc, config.base_dir)], sort_keys=True, default=str)
    cached = _ENCODED.get(key)
    if cached is not None and cached[0] is tokenizer:
        _ENCODED.move_to_end(key)
        encoded, (rows, train_rows, eval_rows) = cached[1], cached[2]
    else:
        check_prompt_template(pre)
        loaded = load_rows(dc, config.base_dir)
        if lora.eval_data_config:
            train, eval_n = loaded, None  # a separate eval data config: the training rows are all the rows
        else:
            train, held = split_rows(loaded, lora.eval_dataset_size, split_seed(lora))
            eval_n = len(held) if held is not None else None
        encoded = encode(render_rows(train, pre, tokenizer), pre, tokenizer)
        rows, train_rows, eval_rows = len(loaded), len(train), eval_n
        _ENCODED[key] = (tokenizer, encoded, (rows, train_rows, eval_rows))
        while len(_ENCODED) > 4:
            _ENCODED.popitem(last=False)
    stats = TokenStats()
    seqs = sequences(encoded, pre, tokenizer, stats)
    counted = [sum(s.attention_mask) if pre.use_attention_mask else len(s.input_ids) for s in seqs]
    return seqs, TokenCounts(rows, train_rows, eval_rows, stats.sequences, stats.tokens, stats.non_pad_tokens,
                             stats.loss_tokens, stats.truncated_rows, stats.dropped_rows, counted)


def count_tokens(config: schema.WorkflowConfig, lora: schema.LoRA, tokenizer: Any) -> TokenCounts:
    return training_sequences(config, lora, tokenizer)[1]


# =========================================================================================== steps, as Trainer
@dataclass
class Steps:
    steps: int  # optimizer steps (trainer.state.max_steps)
    micro_batches: int  # forward/backward passes
    epochs: float  # passes over the training set (fractional with max_steps)
    sequences_seen: int  # sequences trained on
    sequences_collated: int  # what the collator sees: one more batch when training stops inside an epoch



def training_steps(sequences: int, batch_size: int, grad_accum: int = 1, max_steps: int = -1,
                   epochs: float = 1.0, drop_last: bool = False) -> Steps:
    """Steps as transformers' Trainer counts them (Trainer.set_initial_training_values and its epoch loop)."""
    batches = sequences // batch_size if drop_last else math.ceil(sequences / batch_size)
    batches = max(batches, 0)
    if batches == 0:
        return Steps(0, 0, 0.0, 0, 0)
    per_epoch = max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    total = max_steps if max_steps > 0 else math.ceil(epochs * per_epoch)
    full, rest = divmod(total, per_epoch)
    micro = full * batches + min(rest * grad_accum, batches)
    whole, part = divmod(micro, batches)  # epochs completed, micro-batches into the next one (never its last)
    per_epoch_seqs = batches * batch_size if drop_last else sequences
    seen = whole * per_epoch_seqs + part * batch_size
    # accelerate's dataloader fetches one batch ahead (to know which batch is the last): stopping inside an epoch,
    # one batch more has been collated (and counted in the run's tokens) than trained on
    last = batch_size if drop_last else sequences - (batches - 1) * batch_size
    lookahead = 0 if not part else batch_size if part < batches - 1 else last
    return Steps(total, micro, micro / batches, seen, seen + lookahead)


# ================================================================================================== the machine
def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What step time depends on here: the CPU, its threads, the accelerator, torch."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "device": device,
            "torch": torch.__version__.split("+")[0]}


def machine_key(info: Optional[dict[str, Any]] = None) -> str:
    info = info or machine()
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12]


def shape_of(config: schema.WorkflowConfig, lora: schema.LoRA, skel: Optional[Skeleton] = None) -> dict[str, Any]:
    """The settings step time per token depends on (the key of a calibration)."""
    pre = config.data_config(lora.train_data_config).pre_process_data_config
    args = lora.training_args
    targets: Any = lora.target_modules
    if skel is not None:
        try:
            targets = sorted({l.leaf for l in lora_targets(skel, lora.target_modules, lora.modules_to_save)})
        except TunecellError:
            pass
    shape = {"type": lora.type, "dtype": lora.torch_dtype,
             "quant": f"{lora.quant_type}/{lora.compute_dtype}" if isinstance(lora, schema.QLoRA) else None,
             "r": lora.r, "targets": targets, "batch": args.per_device_train_batch_size,
             "max_seq_len": pre.max_seq_len, "strategy": pre.strategy, "pad_to_max_len": pre.pad_to_max_len,
             "gradient_checkpointing": args.gradient_checkpointing}
    attention = config.input_model.load_kwargs.attn_implementation
    if attention:  # only when set: the calibrations stored before it keep their keys
        shape["attn_implementation"] = attention
    return shape


def _shape_key(shape: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ============================================================================================ calibration store
def calibration_file(cache_dir: Union[str, Path], model_key: str, machine_id: Optional[str] = None) -> Path:
    return Path(cache_dir) / ESTIMATES_DIR / f"{model_key}--{machine_id or machine_key()}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _update(path: Path, change) -> dict[str, Any]:
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        data = _read(path)
        change(data)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    return data


@dataclass
class Rate:
    """How long training takes for one shape: overhead_s + s_per_token x tokens, and where that comes from."""

    s_per_token: float
    overhead_s: float
    source: str  # "measured" (runs) | "calibration"
    exact: bool  # calibrated or measured for this very shape (else: the nearest one)
    detail: str
    peak_memory_bytes: Optional[int] = None

    def seconds(self, tokens: int) -> float:
        return self.overhead_s + self.s_per_token * tokens


def lookup_rate(cache_dir: Union[str, Path], model_key: str, shape: dict[str, Any],
                machine_id: Optional[str] = None) -> Optional[Rate]:
    """The best known seconds per token: measured runs of this shape, else its calibration, else the nearest shape
    (by batch size x sequence length) of the same model on this machine."""
    data = _read(calibration_file(cache_dir, model_key, machine_id))
    shapes = data.get("shapes", {})
    if not shapes:
        return None
    key = _shape_key(shape)

    def rate_of(entry: dict[str, Any], exact: bool) -> Optional[Rate]:
        measured = entry.get("measured") or []
        cal = entry.get("calibration")
        peak = (cal or {}).get("peak_memory_bytes")
        overhead = float((cal or {}).get("overhead_s", 0.0))
        s = entry["shape"]
        where = "" if exact else f" (nearest shape: batch {s['batch']}, max_seq_len {s['max_seq_len']})"
        if measured:  # a measured run's time beyond the calibrated overhead, per token
            net = [(m["seconds"] - overhead) / m["tokens"] for m in measured if m["seconds"] > overhead]
            if len(net) < len(measured):  # runs shorter than the overhead: the overhead was measured under load
                net, overhead = [m["seconds"] / m["tokens"] for m in measured], 0.0
            return Rate(statistics.median(net), overhead, "measured", exact,
                        f"median of {len(net)} measured run{'s' * (len(net) > 1)}{where}", peak)
        if cal:
            return Rate(cal["s_per_token"], overhead, "calibration", exact,
                        f"calibrated {cal.get('at', '')[:16]} over {cal.get('steps', '?')} steps{where}", peak)
        return None

    if key in shapes:
        found = rate_of(shapes[key], True)
        if found:
            return found
    size = shape["batch"] * shape["max_seq_len"]
    near = sorted((abs(math.log((e["shape"]["batch"] * e["shape"]["max_seq_len"]) / size)), k)
                  for k, e in shapes.items() if e["shape"].get("type") == shape.get("type"))
    for _, k in near:
        found = rate_of(shapes[k], False)
        if found:
            return found
    return None


def store_rate(cache_dir: Union[str, Path], model_key: str, shape: dict[str, Any], *,
               calibration: Optional[dict[str, Any]] = None, measured: Optional[dict[str, Any]] = None,
               model_info: Optional[dict[str, Any]] = None) -> Path:
    path = calibration_file(cache_dir, model_key)
    info = machine()

    def change(data: dict[str, Any]) -> None:
        data["model"] = {"key": model_key, **(model_info or data.get("model", {}))}
        data["machine"] = info
        entry = data.setdefault("shapes", {}).setdefault(_shape_key(shape), {"shape": shape})
        if calibration is not None:
            entry["calibration"] = calibration
        if measured is not None:
            runs = [m for m in entry.get("measured", []) if m.get("run_id") != measured.get("run_id")]
            entry["measured"] = (runs + [measured])[-MEASURED_KEPT:]

    _update(path, change)
    return path


# ================================================================================================= the estimate
@dataclass
class Estimate:
    """The cost of a workflow's training and its outputs; None where a number is unknown (see notes)."""

    pass_name: Optional[str] = None
    model: str = ""
    total_params: Optional[int] = None
    trainable_params: Optional[int] = None
    adapted_layers: Optional[int] = None
    tokens_per_epoch: Optional[int] = None  # DataStats.tokens (positions, padding included)
    non_pad_tokens_per_epoch: Optional[int] = None
    loss_tokens_per_epoch: Optional[int] = None
    sequences_per_epoch: Optional[int] = None
    train_rows: Optional[int] = None
    eval_rows: Optional[int] = None
    steps: Optional[int] = None
    epochs: Optional[float] = None
    tokens: Optional[int] = None  # tokens of the whole training, as the run counts them (Collator.tokens)
    seconds: Optional[float] = None
    s_per_token: Optional[float] = None
    overhead_s: Optional[float] = None  # start-up, warm-up and saving, on top of s_per_token x tokens
    time_source: Optional[str] = None
    peak_memory_bytes: Optional[int] = None
    peak_memory_source: str = "estimate"
    adapter_bytes: Optional[int] = None
    merged_bytes: Optional[int] = None
    onnx_bytes: Optional[int] = None
    onnx_precision: Optional[str] = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) lines for display."""
        out = [("model", self.model or "?")]
        if self.total_params is not None:
            out.append(("parameters", f"{self.total_params:,}"))
        if self.pass_name is not None:
            tp = self.trainable_params
            share = f" ({100 * tp / self.total_params:.2f}%)" if tp is not None and self.total_params else ""
            out.append(("trainable", f"{tp:,}{share} in {self.adapted_layers} layers" if tp is not None else "?"))
            out.append(("tokens per epoch", _count(self.tokens_per_epoch) + (
                f" ({self.sequences_per_epoch:,} sequences, {self.train_rows:,} rows; "
                f"{_count(self.loss_tokens_per_epoch)} carry loss)" if self.sequences_per_epoch is not None else "")))
            out.append(("steps", f"{self.steps:,} ({self.epochs:.2f} epochs)" if self.steps is not None else "?"))
            time_text = human_seconds(self.seconds) if self.seconds is not None else "not calibrated"
            if self.seconds is not None:
                time_text += (f" ({self.overhead_s:.3g} s + {self.tokens:,} tokens × {self.s_per_token * 1e3:.3g} "
                              f"ms/token; {self.time_source})")
            out.append(("training time", time_text))  # the LoRA pass's train_runtime_s: no loading, merge or export
            if self.peak_memory_bytes is not None:
                out.append(("peak memory", f"{human_bytes(self.peak_memory_bytes)} ({self.peak_memory_source})"))
            if self.adapter_bytes is not None:
                out.append(("adapter", human_bytes(self.adapter_bytes)))
        if self.merged_bytes is not None:
            out.append(("merged model", human_bytes(self.merged_bytes) + " (fp32)"))
        if self.onnx_bytes is not None:
            out.append((f"ONNX {self.onnx_precision}", "≈ " + human_bytes(self.onnx_bytes)))
        return out

    def describe(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        lines = [f"{k.ljust(width)}  {v}" for k, v in self.rows()]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def estimate(config: schema.WorkflowConfig, pass_name: Optional[str] = None, *, tokenizer: Any = None,
             skel: Optional[Skeleton] = None, learn: bool = True) -> Estimate:
    """The estimate for ``config``'s LoRA/QLoRA pass (``pass_name``, default the first one) and its outputs.

    Never raises for what it cannot know (a model or data not on this machine): those numbers stay None and
    ``notes`` says why. ``learn``: first fold in the runs recorded in the cache folder since the last estimate.
    """
    out = Estimate()
    model = config.input_model.model_path
    out.model = model if isinstance(model, str) else f"{model.registry_name}/{model.name}:{model.version}"
    name, lora = _lora_pass(config, pass_name)
    out.pass_name = name
    if skel is None:
        try:
            skel = model_skeleton(config.input_model)
        except Exception as e:  # ModelNotFound, a config transformers cannot build
            out.notes.append(_why(e))
    if skel is not None:
        out.total_params = skel.total_params
    if learn and skel is not None:
        try:
            learn_from_runs(config)
        except Exception as e:  # a damaged manifest never stops the estimate
            out.notes.append(f"could not read earlier runs: {_why(e)}")
    cache_dir = config.resolve(config.cache_dir)
    counts = None
    if lora is not None:
        args = lora.training_args
        if skel is not None:
            try:
                targets = lora_targets(skel, lora.target_modules, lora.modules_to_save)
                out.trainable_params, out.adapted_layers = trainable_params(skel, lora), len(targets)
                if not targets:
                    out.notes.append("target_modules matches no layer of this model")
            except TunecellError as e:
                out.notes.append(_why(e))
        try:
            tok = tokenizer if tokenizer is not None else cached_tokenizer(config)
            counts = count_tokens(config, lora, tok)
        except Exception as e:
            out.notes.append(f"tokens: {_why(e)}")
        if counts is not None:
            out.tokens_per_epoch, out.non_pad_tokens_per_epoch = counts.tokens, counts.non_pad_tokens
            out.loss_tokens_per_epoch, out.sequences_per_epoch = counts.loss_tokens, counts.sequences
            out.train_rows, out.eval_rows = counts.train_rows, counts.eval_rows
            extra = args.model_extra or {}
            steps = training_steps(counts.sequences, args.per_device_train_batch_size,
                                   args.gradient_accumulation_steps, args.max_steps, args.num_train_epochs,
                                   bool(extra.get("dataloader_drop_last", False)))
            out.steps, out.epochs = steps.steps, steps.epochs
            per_seq = counts.counted_tokens / counts.sequences if counts.sequences else 0
            out.tokens = round(steps.sequences_collated * per_seq)
        if skel is not None:
            rate = lookup_rate(cache_dir, skel.key, shape_of(config, lora, skel))
            if rate is not None and out.tokens is not None:
                out.s_per_token, out.overhead_s = rate.s_per_token, rate.overhead_s
                out.seconds, out.time_source = rate.seconds(out.tokens), rate.detail
                remote = _remote(config)
                if remote is not None:
                    out.notes.append(f"the training time is this machine's: the workflow runs on AzureML system "
                                     f"{remote!r}")
            elif out.tokens is not None:
                out.notes.append("training time: not calibrated on this machine yet (calibrate: a few real steps)")
            seq_len = _typical_length(counts, config.data_config(lora.train_data_config).pre_process_data_config)
            out.peak_memory_bytes = peak_memory(skel, lora, seq_len, _device(config))
            if rate is not None and rate.exact and rate.peak_memory_bytes:
                out.peak_memory_bytes, out.peak_memory_source = rate.peak_memory_bytes, "measured in calibration"
            if out.trainable_params is not None:
                out.adapter_bytes = adapter_bytes(out.trainable_params)
    if skel is not None:
        out.merged_bytes = merged_bytes(skel)
        builder = next((p for p in config.passes.values() if isinstance(p, schema.ModelBuilder)),
                       schema.ModelBuilder(precision="int4"))
        out.onnx_precision = builder.precision
        out.onnx_bytes = onnx_bytes(skel, builder.precision, config.execution_provider,
                                    block_size=int(builder.int4_option("block_size")),
                                    symmetric=builder.int4_option("is_symmetric"),
                                    algo=builder.int4_method)
    return out


def _lora_pass(config: schema.WorkflowConfig, pass_name: Optional[str]) -> tuple[Optional[str], Optional[schema.LoRA]]:
    if pass_name is not None:
        p = config.passes[pass_name]
        if not isinstance(p, schema.LoRA):
            raise TunecellError(f"pass {pass_name!r} is {p.type}, not LoRA or QLoRA")
        return pass_name, p
    return next(((n, p) for n, p in config.passes.items() if isinstance(p, schema.LoRA)), (None, None))


def _why(error: BaseException) -> str:
    text = str(error).split("\n")[0]
    return text if isinstance(error, TunecellError) else f"{type(error).__name__}: {text}"


def _remote(config: schema.WorkflowConfig) -> Optional[str]:
    from .runner.dispatch import remote_system

    try:
        return remote_system(config)
    except TunecellError:
        return None


def _device(config: schema.WorkflowConfig) -> str:
    """Where training would run: this machine's accelerator for a local run, the system's for AzureML."""
    remote = _remote(config)
    if remote is not None:
        return config.systems[remote].accelerators[0].device
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


_TOKENIZERS: "OrderedDict[str, Any]" = OrderedDict()


def cached_tokenizer(config: schema.WorkflowConfig) -> Any:
    """The input model's tokenizer (tokenizer files only), loaded once per model."""
    from .data.tokenizer import load_tokenizer

    key = config.input_model.model_dump_json()
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(None, config)
        while len(_TOKENIZERS) > 4:
            _TOKENIZERS.popitem(last=False)
    return _TOKENIZERS[key]


# ============================================================================================ memory and sizes
def _typical_length(counts: Optional[TokenCounts], pre: schema.PreProcessDataConfig) -> int:
    """The padded width of a typical batch: max_seq_len when packing or padding, else the longest rows' length."""
    if pre.strategy == "join" or pre.pad_to_max_len or counts is None or not counts.counted_per_sequence:
        return pre.max_seq_len
    lengths = sorted(counts.counted_per_sequence)
    return lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]


def peak_memory(skel: Skeleton, lora: schema.LoRA, seq_len: int, device: str = "cpu") -> int:
    """Bytes at the peak of a training step (an estimate):

    weights (QLoRA: 4-bit linear layers, 0.5 byte + a scale per 64) + LoRA parameters with their gradients and
    AdamW's two moments (16 bytes each) + activations kept for backward (per layer and token about 10·hidden +
    4·intermediate values, plus the attention scores when they are materialised; with gradient checkpointing one
    hidden state per layer plus one layer's worth) + the logits (their fp32 copy for the loss and its gradient).
    """
    b = lora.training_args.per_device_train_batch_size
    act_bytes = DTYPE_BYTES[lora.compute_dtype if isinstance(lora, schema.QLoRA) else lora.torch_dtype]
    weight_bytes = DTYPE_BYTES[lora.torch_dtype]
    if isinstance(lora, schema.QLoRA):
        quantized = skel.linear_params(include_output=False)
        weights = quantized * (0.5 + 4 / 64) + (skel.total_params - quantized) * weight_bytes
    else:
        weights = skel.total_params * weight_bytes
    try:
        trainable = trainable_params(skel, lora)
    except TunecellError:
        trainable = 0
    h, inter, layers = skel.hidden_size, skel.intermediate_size, skel.num_layers
    tokens = b * seq_len
    per_layer = tokens * (10 * h + 4 * inter) * act_bytes
    if device == "cpu":  # sdpa's math path keeps the attention probabilities
        per_layer += b * skel.num_heads * seq_len * seq_len * act_bytes * 2
    if lora.training_args.gradient_checkpointing:
        activations = layers * tokens * h * act_bytes + per_layer
    else:
        activations = layers * per_layer
    logits = tokens * skel.vocab_size * (act_bytes + 4 + 4)
    return int(weights + trainable * 16 + activations + logits)


def adapter_bytes(trainable: int) -> int:
    """The saved adapter: its fp32 weights (adapter_model.safetensors), plus a few kB of config."""
    return trainable * 4 + 4096


def merged_bytes(skel: Skeleton) -> int:
    """The merged model as MergeAdapterWeights saves it: every parameter in fp32 (tied weights once)."""
    return skel.total_params * 4


def onnx_bytes(skel: Skeleton, precision: str = "int4", execution_provider: str = "cpu", block_size: int = 32,
               symmetric: Optional[bool] = None, algo: Optional[str] = None) -> int:
    """The onnxruntime-genai builder's output. int4: each MatMul weight (lm_head included) in blocks of
    ``block_size`` values, each block 4 bits a value (8 for the layers ``int8_matmuls`` names) plus a scale in the
    I/O precision (fp32 on CPU, fp16 on CUDA) and, when asymmetric (k_quant always; other methods when
    ``symmetric`` is False), a zero point of the same bit width; norms and an untied input embedding in the I/O
    precision; plus the rotary cos/sin caches. ``algo``: the int4 method, tunecell's default unless given."""
    io_bytes = 2 if execution_provider == "cuda" or precision in ("fp16", "bf16") else 4
    linear = skel.linear_params(include_output=True)
    rest = skel.total_params - linear  # tied embeddings: the builder stores the lm_head's (quantized) matrix once
    rope = skel.max_positions * skel.head_dim * io_bytes if skel.head_dim else 0  # cos + sin, head_dim/2 each
    if precision != "int4":
        return int((linear + rest) * DTYPE_BYTES[precision] + rope)
    algo = algo or schema.ModelBuilder.model_fields["int4_algo_config"].default
    asymmetric = algo.startswith("k_quant") or symmetric is False
    int8 = int8_matmuls(skel, algo)
    weights = 0
    for layer in skel.layers:
        if layer.kind != "linear":
            continue
        bits = 8 if layer.name in int8 else 4
        blocks = -(-layer.in_features // block_size)
        weights += layer.out_features * (blocks * block_size * bits // 8 + blocks * io_bytes
                                         + (-(-blocks * bits // 8) if asymmetric else 0))
    return int(weights + rest * io_bytes + rope)


_INT8_IN_MIXED_LAYERS = ("qkv_proj", "q_proj", "k_proj", "v_proj", "down_proj")


def int8_matmuls(skel: Skeleton, algo: str) -> set[str]:
    """The linear layers the builder's mixed-precision methods keep in int8 (onnxruntime-genai 0.18,
    make_matmul_mixed_precision): the lm_head for *_last and *_mixed; for *_mixed also the attention's input
    projections and down_proj of the first and last eighth of the layers and of every third layer between,
    llama.cpp's choice of the most quantization-sensitive MatMuls. The builder packs q/k/v into one MatMul for
    the common decoders (Llama, Phi-3, Mistral, Qwen2); where it keeps them apart (some Qwen variants, the DML
    provider) only v_proj goes to int8, and this counts q_proj and k_proj as int8 too."""
    chosen = set()
    if algo.endswith(("_last", "_mixed")) and skel.output_embedding is not None:
        chosen.add(skel.output_embedding)
    if algo.endswith("_mixed"):
        n = skel.num_layers
        upgraded = {i for i in range(n) if i < n / 8 or i >= 7 * n / 8 or (i - round(n / 8)) % 3 == 2}
        for layer in skel.layers:
            index = re.search(r"\.layers\.(\d+)\.", layer.name)
            if index and int(index.group(1)) in upgraded and layer.leaf in _INT8_IN_MIXED_LAYERS:
                chosen.add(layer.name)
    return chosen


# ================================================================================== calibration: real steps
@dataclass
class Calibration:
    s_per_token: float  # the steady rate: the median step's seconds per token
    overhead_s: float  # the rest of a training run's time: trainer start-up, the first steps' warm-up, saving
    tokens: int
    seconds: float  # the whole calibration run, as train_runtime_s counts it
    steps: int
    shape: dict[str, Any]
    peak_memory_bytes: Optional[int]
    path: Path


def calibrate(config: schema.WorkflowConfig, pass_name: Optional[str] = None, *, steps: int = 6, warmup: int = 2,
              tokenizer: Any = None, save: bool = True) -> Calibration:
    """Time a short training run of the actual model, as the LoRA pass trains it: the same base model loading
    (dtype, QLoRA), peft adapter, training arguments, Collator and transformers Trainer, on the real training
    sequences, for ``warmup`` + ``steps`` optimizer steps (evaluation off).

    The steady rate is the median over the last ``steps`` steps of seconds per token (a step slowed by another
    process on the machine does not skew it); the overhead is what the run took beyond that rate (start-up,
    warm-up, saving the adapter). A run of N tokens is then estimated at overhead + rate x N. Stored in the cache
    folder per (model architecture, machine, shape).
    """
    import tempfile
    from types import SimpleNamespace

    import torch
    import transformers
    from transformers.trainer_callback import PrinterCallback, TrainerCallback

    from .data.tokenize import to_dataset
    from .models import resolve_model
    from .passes.lora import _load_base, _training_arguments, with_adapter

    name, lora = _lora_pass(config, pass_name)
    if lora is None:
        raise TunecellError("nothing to calibrate: the config has no LoRA or QLoRA pass")
    cache_dir = config.resolve(config.cache_dir)
    resolved = resolve_model(config.input_model, cache_dir)
    skel = model_skeleton(config.input_model)
    tok = tokenizer if tokenizer is not None else transformers.AutoTokenizer.from_pretrained(resolved.path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    seqs, _ = training_sequences(config, lora, tok)
    dataset = to_dataset(seqs, config.data_config(lora.train_data_config).pre_process_data_config)
    transformers.set_seed(lora.training_args.seed)
    model = with_adapter(_load_base(resolved.path, lora, config.input_model.load_kwargs), lora)
    marks: list[tuple[float, int]] = []  # (time, tokens so far) at the start and at each step's end

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), collator.tokens))

        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), collator.tokens))

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="tunecell-calibrate-") as tmp:
        args = _training_arguments(lora, SimpleNamespace(work_dir=Path(tmp)), has_eval=False)
        args.update(max_steps=warmup + steps, save_strategy="no")
        targs = transformers.TrainingArguments(**args)
        collator = _collator_as_trained(model, tok, dataset, targs)
        trainer = transformers.Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collator,
                                       callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()  # from here to the saved adapter: what the LoRA pass's train_runtime_s counts
        trainer.train()
        model.save_pretrained(Path(tmp) / "adapter")
        tok.save_pretrained(Path(tmp) / "adapter")
        seconds = time.perf_counter() - started
    peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    steady = [(t1 - t0, n1 - n0) for (t0, n0), (t1, n1) in zip(marks[warmup:], marks[warmup + 1:]) if n1 > n0]
    if not steady:
        raise TunecellError("calibration measured no training step")
    s_per_token = statistics.median(dt / dn for dt, dn in steady)
    tokens = collator.tokens
    overhead = max(0.0, seconds - s_per_token * tokens)
    shape = shape_of(config, lora, skel)
    record = {"s_per_token": s_per_token, "overhead_s": round(overhead, 4), "tokens": tokens,
              "seconds": round(seconds, 4), "steps": warmup + steps, "peak_memory_bytes": peak,
              "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = calibration_file(cache_dir, skel.key)
    if save:
        path = store_rate(cache_dir, skel.key, shape, calibration=record,
                          model_info={"model_type": skel.model_type, "source": resolved.source})
    del trainer, model
    return Calibration(s_per_token, overhead, tokens, seconds, warmup + steps, shape, peak, path)


def _collator_as_trained(model: Any, tokenizer: Any, dataset: Any, args: Any) -> Any:
    """The batch collator the LoRA pass uses: the model's cheapest checked layout where tunecell.data.collate picks
    one (for_model), else padded batches."""
    from .data import collate

    if hasattr(collate, "for_model"):
        sample = [dataset[i] for i in range(min(4, len(dataset)))]
        return collate.for_model(model, tokenizer, sample, allow_packing=not getattr(args, "use_cache", False))
    return collate.Collator.for_tokenizer(tokenizer)


# ===================================================================================== after a run: learn from it
@dataclass
class Comparison:
    run_id: str
    pass_name: str
    estimated_s: Optional[float]
    measured_s: float
    estimated_tokens: Optional[int]
    measured_tokens: int
    estimated_steps: Optional[int]
    measured_steps: Optional[int]

    @property
    def ratio(self) -> Optional[float]:
        """measured / estimated time (1.0 = exact)."""
        return self.measured_s / self.estimated_s if self.estimated_s else None

    def describe(self) -> str:
        est = human_seconds(self.estimated_s) if self.estimated_s is not None else "no estimate"
        ratio = f" ({(self.ratio - 1) * 100:+.0f}%)" if self.ratio else ""
        return (f"{self.pass_name}: estimated {est}, measured {human_seconds(self.measured_s)}{ratio}; tokens "
                f"{_count(self.estimated_tokens)} estimated, {self.measured_tokens:,} measured")


def record_run(result: Any, config: Optional[schema.WorkflowConfig] = None) -> list[Comparison]:
    """Compare a finished run's LoRA passes with their estimates, then store the measured seconds per token (used
    from then on for this model, machine and shape). ``result``: a RunResult (or a manifest dict)."""
    config = config if config is not None else getattr(result, "config", None)
    if isinstance(result, dict):
        passes = [(p["name"], p["type"], p.get("status"), p.get("stats") or {}) for p in result.get("passes", [])]
        run_id = result.get("run_id", "")
        if config is None and result.get("config"):
            config = _manifest_config(result)
    else:
        passes = [(p.name, p.type, p.status, p.stats or {}) for p in result.passes]
        run_id = result.run_id
    if config is None:
        raise TunecellError("record_run needs the config that ran (result.config is empty)")
    out = []
    for name, kind, status, stats in passes:
        if kind not in ("LoRA", "QLoRA") or status != "done" or stats.get("resumed_from"):
            continue
        seconds, tokens = stats.get("train_runtime_s"), stats.get("tokens")
        if not seconds or not tokens:
            continue
        before = estimate(config, name, learn=False)
        skel = model_skeleton(config.input_model)
        lora = config.passes[name]
        assert isinstance(lora, schema.LoRA)
        store_rate(config.resolve(config.cache_dir), skel.key, shape_of(config, lora, skel), measured={
            "run_id": run_id, "s_per_token": seconds / tokens, "tokens": tokens, "seconds": seconds,
            "steps": stats.get("steps"), "estimated_s": before.seconds, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        out.append(Comparison(run_id, name, before.seconds, float(seconds), before.tokens, int(tokens), before.steps,
                              stats.get("steps")))
    return out


def _manifest_config(manifest: dict[str, Any]) -> schema.WorkflowConfig:
    """The config a manifest records (written without defaults, so without the `type` of a pass or system: the
    pass records and the system's keys say which)."""
    import copy

    from .config import load_config

    data = copy.deepcopy(manifest["config"])
    types = {p["name"]: p["type"] for p in manifest.get("passes", [])}
    for name, p in (data.get("passes") or {}).items():
        if "type" not in p and name in types:
            p["type"] = types[name]
    for system in (data.get("systems") or {}).values():
        system.setdefault("type", "AzureML" if "aml_compute" in system else "LocalSystem")
    return load_config(data)


def learn_from_runs(config: schema.WorkflowConfig) -> list[Comparison]:
    """Record the local runs listed in the cache folder (runs.jsonl -> manifest.json) not learned from yet."""
    cache_dir = config.resolve(config.cache_dir)
    from .runner.history import recorded_runs

    runs = [r for r in recorded_runs(cache_dir) if r.get("backend") != "azureml" and r.get("manifest")
            and r.get("status") == "succeeded"]
    if not runs:
        return []
    seen_path = cache_dir / ESTIMATES_DIR / f"learned--{machine_key()}.json"
    seen = set(_read(seen_path).get("runs", []))
    fresh = [r for r in runs if r["run_id"] not in seen]
    out = []
    for record in fresh:
        try:
            manifest = json.loads(Path(record["manifest"]).read_text(encoding="utf-8"))
            out += record_run(manifest)
        except Exception:  # a manifest moved away, a model no longer here: skip it
            pass
    if fresh:
        _update(seen_path, lambda d: d.__setitem__("runs", sorted(set(d.get("runs", [])) | {r["run_id"]
                                                                                            for r in fresh})))
    return out


# ======================================================================================================= format
def human_bytes(n: Optional[float]) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n} B"


def human_seconds(s: Optional[float]) -> str:
    if s is None:
        return "?"
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _count(n: Optional[int]) -> str:
    return f"{n:,}" if n is not None else "?"


__all__ = ["Estimate", "Skeleton", "Layer", "TokenCounts", "Steps", "Rate", "Calibration", "Comparison",
           "estimate", "calibrate", "record_run", "learn_from_runs", "load_model_config", "skeleton",
           "model_skeleton", "lora_targets", "trainable_params", "count_tokens", "training_sequences",
           "training_steps", "peak_memory", "adapter_bytes", "merged_bytes", "onnx_bytes", "machine", "machine_key",
           "shape_of", "lookup_rate", "store_rate", "calibration_file", "human_bytes", "human_seconds"]
