"""LoRA and QLoRA: peft adapters trained with the transformers Trainer, seeded, resumable, reporting each step."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from ..config import schema
from ..errors import ConfigError
from ..events import TrainStep
from ..memory import full_collections_resumed
from .base import Artifact, Interrupted, PassContext


def train(source: Artifact, cfg: schema.LoRA, ctx: PassContext) -> dict[str, Any]:
    """Train an adapter on ``source`` into ``ctx.out_dir``; returns the training stats for the run record."""
    import torch
    import transformers
    from transformers.trainer_callback import PrinterCallback

    from ..data import build_training_data
    from ..data.collate import for_model

    seed = cfg.training_args.seed
    transformers.set_seed(seed)
    load_kwargs = ctx.config.input_model.load_kwargs
    tokenizer = transformers.AutoTokenizer.from_pretrained(source.path, trust_remote_code=load_kwargs.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = _load_base(source.path, cfg, load_kwargs)
    _check_target_modules(model, cfg, ctx.name)
    model = with_adapter(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    device = training_device(model)

    data = build_training_data(
        ctx.config.data_config(cfg.train_data_config), tokenizer,
        eval_dataset_size=cfg.eval_dataset_size,
        eval_data_config=ctx.config.data_config(cfg.eval_data_config) if cfg.eval_data_config else None,
        seed=split_seed(cfg), base_dir=ctx.config.base_dir)
    ctx.log(f"{len(data.train)} training samples, {len(data.eval) if data.eval is not None else 0} held out; "
            f"{trainable:,} trainable parameters; training on {device}")
    _warn_about_truncation(data.stats, ctx)
    if data.stats.no_loss_blocks:
        ctx.log(f"{data.stats.no_loss_blocks} join blocks hold prompt tokens only (train_on_prompt: false) and are "
                f"left out; {data.stats.train_sequences} blocks carry loss")

    args = transformers.TrainingArguments(**_training_arguments(cfg, ctx, has_eval=data.eval is not None))
    # packed batches and loss-position-only logits when the model gives the same loss with them (checked here)
    collator = for_model(model, tokenizer, [data.train[i] for i in range(min(4, len(data.train)))],
                         allow_packing=not getattr(args, "use_cache", False))
    ctx.log(f"batches: {collator.layout}")
    progress = ProgressCallback(ctx, collator)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data.train,
        eval_dataset=data.eval if args.eval_strategy != "no" else None,
        data_collator=collator, callbacks=[progress])
    trainer.remove_callback(PrinterCallback)  # our events replace Trainer's console output

    resume = last_checkpoint(ctx.work_dir)
    if resume:
        ctx.log(f"resuming from {resume.name}")
    started = time.perf_counter()
    try:
        with _interrupt_sets(ctx.stop), full_collections_resumed():
            result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except KeyboardInterrupt:
        # Raised between steps (by a callback) the state is a whole step: keep it. A second Ctrl-C may land within
        # a step: its state is half-updated, and the run resumes from the last whole checkpoint, if any.
        if progress.between_steps:
            trainer._save_checkpoint(trainer.model, trial=None)
        raise Interrupted(last_checkpoint(ctx.work_dir)) from None
    if progress.stopped:
        raise Interrupted(last_checkpoint(ctx.work_dir))

    model.save_pretrained(ctx.out_dir)
    tokenizer.save_pretrained(ctx.out_dir)
    seconds = time.perf_counter() - started
    return {
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "trainable_params": trainable,
        "train_runtime_s": round(seconds, 2),
        "tokens": collator.tokens,
        "tokens_per_s": round(collator.tokens / seconds, 1) if seconds else None,
        "batch_layout": collator.layout,
        "device": device,
        "data": data.stats.as_dict(),  # a dict in run.json and the manifest, not the dataclass repr
        "resumed_from": resume.name if resume else None,
    }


def check_training_args(cfg: schema.LoRA, pass_name: str) -> None:
    """What only transformers can judge, before a run does any work (not at load: it imports torch):
    - a name among transformers' choices: a misspelt one fails with the closest name (transformers' own error lists
      all forty optimizers);
    - a list given to a key tunecell passes through to a single-valued TrainingArguments field: candidate lists
      search tunecell's own keys only, and transformers would fail on it mid-way with a TypeError."""
    import dataclasses
    import difflib

    from transformers import TrainingArguments
    from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType
    from transformers.training_args import OptimizerNames

    types = {f.name: str(f.type) for f in dataclasses.fields(TrainingArguments)}
    for key, value in (cfg.training_args.model_extra or {}).items():
        if isinstance(value, list) and key in types and "list" not in types[key]:
            raise ConfigError(f"{key} takes one value, not a list", path=("passes", pass_name, "training_args", key),
                              hint="candidate lists search tunecell's own settings (learning_rate, r ...): give one "
                                   "value here")

    choices = {"optim": OptimizerNames, "lr_scheduler_type": SchedulerType, "eval_strategy": IntervalStrategy,
               "logging_strategy": IntervalStrategy, "save_strategy": SaveStrategy}
    args = cfg.training_args.model_dump()
    for key, names in choices.items():
        value = args.get(key)
        allowed = [member.value for member in names]
        if value is None or getattr(value, "value", value) in allowed:
            continue
        close = difflib.get_close_matches(str(value), allowed, n=1)
        raise ConfigError(f"{key} {value!r} is not a name transformers knows",
                          path=("passes", pass_name, "training_args", key),
                          hint=f"did you mean {close[0]!r}?" if close else f"one of: {', '.join(allowed)}")


def _warn_about_truncation(stats: Any, ctx: PassContext) -> None:
    """Rows longer than max_seq_len lose their end (the answer's end-of-text, or all of the answer: those rows are
    dropped): the run goes on, and says so."""
    if not stats.truncated_rows:
        return
    dropped = f", {stats.dropped_rows} of them dropped as no answer token was left" if stats.dropped_rows else ""
    ctx.log(f"{stats.truncated_rows} of {stats.train_rows} training rows were cut at max_seq_len {stats.max_seq_len}"
            f"{dropped}; the longest has {stats.length_max} tokens: raise max_seq_len to keep them whole", "warning")


def split_seed(cfg: schema.LoRA) -> int:
    """The seed of the train/eval split; evaluation uses it too, so it never scores rows the model trained on."""
    extra = cfg.training_args.model_extra or {}
    return int(extra.get("data_seed", cfg.training_args.seed))


def last_checkpoint(work_dir: Path) -> Optional[Path]:
    """The last whole checkpoint: Trainer writes trainer_state.json last, so one without it was cut short (a run
    killed while saving)."""
    checkpoints = sorted((p for p in (work_dir / "checkpoints").glob("checkpoint-*")
                          if (p / "trainer_state.json").is_file()), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def linear_modules(model: Any) -> list[str]:
    """Full names of the linear layers LoRA can target (lm_head left out)."""
    return [name for name, module in model.named_modules()
            if type(module).__name__ in ("Linear", "Linear4bit", "Linear8bitLt")
            and name.rsplit(".", 1)[-1] != "lm_head"]


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of the linear layers LoRA can target (lm_head left out)."""
    return sorted({name.rsplit(".", 1)[-1] for name in linear_modules(model)})


def training_device(model: Any) -> str:
    """Where the model's weights are: "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    import torch

    device = next(model.parameters()).device
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def targets(key: str, name: str) -> bool:
    """peft's rule: a target_modules key names each module whose full name is the key or ends with "." + key."""
    return name == key or name.endswith("." + key)


def _check_target_modules(model: Any, cfg: schema.LoRA, pass_name: str) -> None:
    if not isinstance(cfg.target_modules, list):
        return
    names = linear_modules(model)
    missing = [m for m in cfg.target_modules if not any(targets(m, n) for n in names)]
    if missing:
        raise ConfigError(f"this model has no modules named {', '.join(missing)}; its linear modules are: "
                          f"{', '.join(linear_module_names(model))}", path=("passes", pass_name, "target_modules"),
                          hint="pick from that list, or write target_modules: all-linear")


def with_adapter(base: Any, cfg: schema.LoRA) -> Any:
    """``base`` with a new LoRA adapter as ``cfg`` describes it (peft); on the CPU its dropout is drawn by
    BitsDropout and its linear layers train as MatmulLoRALinear."""
    from peft import LoraConfig, get_peft_model

    from .dropout import use_bits_dropout
    from .lora_linear import use_matmul_lora

    model = get_peft_model(base, LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.lora_dropout, target_modules=cfg.target_modules,
        modules_to_save=cfg.modules_to_save, bias="none", task_type="CAUSAL_LM"))
    use_bits_dropout(model)
    use_matmul_lora(model)
    return model


def _load_base(path: Path, cfg: schema.LoRA, load_kwargs: schema.LoadKwargs) -> Any:
    """The model to train, in the pass's torch_dtype, with the input model's attn_implementation (None: the
    model's default) and trust_remote_code."""
    import torch
    import transformers

    dtype = getattr(torch, cfg.torch_dtype)
    options = {"attn_implementation": load_kwargs.attn_implementation,
               "trust_remote_code": load_kwargs.trust_remote_code}
    if not isinstance(cfg, schema.QLoRA):
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **options)
        return model.to("cuda") if torch.cuda.is_available() else model
    from peft import prepare_model_for_kbit_training

    quantization = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=cfg.quant_type, bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, cfg.compute_dtype))
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quantization, device_map={"": device}, dtype=dtype, **options)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.training_args.gradient_checkpointing)


def _training_arguments(cfg: schema.LoRA, ctx: PassContext, has_eval: bool) -> dict[str, Any]:
    import torch

    args = cfg.training_args.model_dump()
    args.setdefault("save_strategy", "no")  # checkpoints are written when a run is interrupted, not on a timer
    if not has_eval:
        args["eval_strategy"] = "no"
    # transformers 5 calls it activation checkpointing; Olive configs say gradient_checkpointing
    args["activation_checkpointing"] = args.pop("gradient_checkpointing")
    if args["activation_checkpointing"]:
        args["activation_checkpointing_kwargs"] = args.pop("gradient_checkpointing_kwargs", {"use_reentrant": False})
    args.update(output_dir=str(ctx.work_dir / "checkpoints"), report_to="none", disable_tqdm=True,
                use_cpu=not torch.cuda.is_available(), remove_unused_columns=False)
    return args


class ProgressCallback:
    """A TrainerCallback that reports each step as an event and stops, with a checkpoint, when asked to."""

    def __init__(self, ctx: PassContext, collator: Any):
        self.ctx, self.collator = ctx, collator
        self.loss: Optional[float] = None
        self.lr: Optional[float] = None
        self.stopped = False
        self.between_steps = True  # False from a step's start to its end
        self._logging_step: Optional[int] = None  # a step whose loss the Trainer logs after on_step_end
        self._started = time.perf_counter()
        self._tokens_at_start = 0

    # transformers calls every on_* hook; the ones not written here do nothing
    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, **kwargs):
        self._started, self._tokens_at_start = time.perf_counter(), self.collator.tokens

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        self.loss = logs.get("loss", self.loss)
        self.lr = logs.get("learning_rate", self.lr)
        if self._logging_step == state.global_step:
            return self._step_done(state, control)

    def on_step_begin(self, args, state, control, **kwargs):
        self.between_steps = False

    def on_step_end(self, args, state, control, **kwargs):
        self.between_steps = True  # the optimizer has stepped: the state is a whole step from here
        if control.should_log:  # the Trainer logs this step's loss next: report the step with it, in on_log
            self._logging_step = state.global_step
            return control
        return self._step_done(state, control)

    def _step_done(self, state, control):
        """Report the step; when asked to stop, save a checkpoint (the Trainer saves after on_log) and stop."""
        self._logging_step = None
        elapsed = time.perf_counter() - self._started
        rate = (self.collator.tokens - self._tokens_at_start) / elapsed if elapsed > 0 else None
        self.ctx.bus.emit(TrainStep(self.ctx.name, state.global_step, state.max_steps, self.loss, self.lr,
                                    round(rate, 1) if rate else None))
        if self.ctx.stop.is_set() and state.global_step < state.max_steps:
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
        return control


@contextlib.contextmanager
def _interrupt_sets(stop: threading.Event) -> Iterator[None]:
    """In the main thread, a first Ctrl-C (or kernel interrupt) asks for a clean stop at the next step;
    a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

