"""The normalised config: one typed model per section, whatever Olive dialect the user pasted.

Every model forbids unknown keys: Olive silently drops unknown training_args and only warns on unknown
preprocessing keys, so users train with defaults they never chose. Here a typo is an error.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
import string
import typing
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

from .training_args import TRAINING_ARGUMENT_NAMES


def _takes_a_number(annotation: Any) -> bool:
    """int, float or a Literal of numbers (int4_accuracy_level: Literal[0, 1, 2, 3, 4]), maybe Optional: a field
    where pydantic reads true as 1."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if origin is Union:
        others = [a for a in args if a is not type(None)]
        return len(others) == 1 and _takes_a_number(others[0])
    if origin is Annotated:
        return _takes_a_number(args[0])
    return annotation in (int, float)


class Model(BaseModel):
    # allow_inf_nan=False: `.inf` or `.nan` is never a sensible setting, and inf broke range checks (int(inf)).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """pydantic reads YAML's true as the number 1 (`r: true` would train with r=1). The loader turns the
        marker into a located message (a field validator cannot do this: `type` fields are union tags)."""
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field is not None and _takes_a_number(field.annotation):
                    raise ValueError(f"bool_for_number:{key}:{str(value).lower()}")
        return data


def bool_for_number(error: dict) -> Optional[tuple[str, str]]:
    """(key, message) of a pydantic error that is Model's marker for a boolean given for a number, else None."""
    if "bool_for_number:" not in error["msg"]:
        return None
    key, value = error["msg"].split("bool_for_number:")[1].split(":")
    return key, f"expected a number, not {value}"


# ---------------------------------------------------------------------------------------------- models
class AzureMLRegistryModel(Model):
    type: Literal["azureml_registry_model"] = "azureml_registry_model"
    registry_name: str
    name: str
    version: Union[str, int]


def _resource_or_plain(value: Any) -> str:
    """A mapping with a `type` (or a resource object) is an Azure resource; anything else is a plain value.

    Deciding up front keeps errors about the resource's own keys (a misspelt datastore_name) from being lost in,
    or silently accepted by, the plain member of the union (data_files also takes a mapping of split -> files).
    """
    if isinstance(value, BaseModel) or (isinstance(value, dict) and "type" in value):
        return "Resource"
    return "Plain"


TorchDtype = Literal["float32", "bfloat16", "float16"]


class LoadKwargs(Model):
    trust_remote_code: bool = False
    revision: Optional[str] = None
    attn_implementation: Optional[str] = None  # the LoRA passes load the model with it (a key of theirs)
    # the torch_dtype of the LoRA passes that give none (WorkflowConfig); "auto" (the checkpoint's) leaves them
    dtype: Optional[Literal[TorchDtype, "auto"]] = None

    @field_validator("dtype", mode="before")
    @classmethod
    def _torch_name(cls, v: Any) -> Any:
        """Olive configs name it as torch does, or short: torch.bfloat16, bf16, half, fp32."""
        if isinstance(v, str):
            name = v.removeprefix("torch.")
            return {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
                    "float": "float32"}.get(name, name)
        return v


class InputModel(Model):
    type: Literal["HfModel"] = "HfModel"
    model_path: Annotated[Union[Annotated[str, Tag("Plain")], Annotated[AzureMLRegistryModel, Tag("Resource")]],
                          Discriminator(_resource_or_plain)]
    task: str = "text-generation"
    gguf_file: Optional[str] = None
    adapter_path: Optional[str] = None
    load_kwargs: LoadKwargs = Field(default_factory=LoadKwargs)


# ------------------------------------------------------------------------------------------------ data
class AzureMLDatastore(Model):
    type: Literal["azureml_datastore"] = "azureml_datastore"
    datastore_name: str
    relative_path: str
    azureml_client: Optional["AzureMLClient"] = None


DataFiles = Annotated[Union[Annotated[Union[str, list[str], dict[str, Union[str, list[str]]]], Tag("Plain")],
                            Annotated[AzureMLDatastore, Tag("Resource")]], Discriminator(_resource_or_plain)]


class LoadDatasetConfig(Model):
    data_name: str
    data_files: Optional[DataFiles] = None
    split: str = "train"
    subset: Optional[str] = None


STRATEGIES = ("join", "line-by-line")


class PreProcessDataConfig(Model):
    text_template: Optional[str] = None
    text_cols: Optional[list[str]] = None
    use_chat_template: bool = False
    strategy: Literal["join", "line-by-line"] = "join"
    max_seq_len: int = Field(1024, ge=8)
    pad_to_max_len: bool = False
    add_special_tokens: bool = True
    use_attention_mask: bool = True
    max_samples: Optional[int] = Field(None, ge=1)
    shuffle: bool = False
    data_seed: int = 42
    # tunecell's own: prompt masking (loss on the answer only), and the label set of a classification task
    train_on_prompt: bool = True
    response_template: Optional[str] = None
    label_column: Optional[str] = None
    labels: Optional[list[str]] = None

    @field_validator("text_template")
    @classmethod
    def _template(cls, v: Optional[str]) -> Optional[str]:
        """The template is applied with str.format(**row): it must parse, and each field must name a column."""
        if v is None:
            return v
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(v) if field is not None]
        except ValueError as e:
            raise ValueError(f"text_template is not a valid template ({e}): each {{field}} names a column, "
                             "and a literal brace is written twice ({{ or }}; in config text, where {{ }} is "
                             "filled from the notebook, write {{ '{{' }} to get {{)") from None
        if any(not field or field.isdigit() for field in fields):
            raise ValueError("text_template fields name the data's columns, like {phrase}; {} and {0} name none")
        return v

    @field_validator("text_cols", mode="before")
    @classmethod
    def _one_col(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _text_source(self) -> "PreProcessDataConfig":
        sources = [self.text_template is not None, self.text_cols is not None, self.use_chat_template]
        if sum(sources) > 1:
            raise ValueError("give only one of text_template, text_cols or use_chat_template")
        return self


class DataloaderConfig(Model):
    batch_size: int = Field(1, ge=1)


class DataConfig(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]+$")]
    type: Literal["HuggingfaceContainer"] = "HuggingfaceContainer"
    load_dataset_config: LoadDatasetConfig
    pre_process_data_config: PreProcessDataConfig = Field(default_factory=PreProcessDataConfig)
    dataloader_config: DataloaderConfig = Field(default_factory=DataloaderConfig)


# ---------------------------------------------------------------------------------------------- passes
class TrainingArgs(Model):
    """The common transformers TrainingArguments, typed; any other real TrainingArguments field passes through."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    learning_rate: float = Field(2e-4, gt=0)
    max_steps: int = -1
    num_train_epochs: float = Field(1.0, gt=0)
    per_device_train_batch_size: int = Field(8, ge=1)
    per_device_eval_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    lr_scheduler_type: str = "constant"
    warmup_steps: float = Field(0, ge=0)  # transformers 5: below 1 it is a fraction of the steps (was warmup_ratio)
    weight_decay: float = Field(0.0, ge=0)
    logging_steps: float = Field(10, gt=0)
    seed: int = 42

    @model_validator(mode="after")
    def _known_extras(self) -> "TrainingArgs":
        for key in (self.model_extra or {}):
            if key not in TRAINING_ARGUMENT_NAMES:
                raise ValueError(f"extra_forbidden:{key}")
        return self


class LoRA(Model):
    type: Literal["LoRA"] = "LoRA"
    r: int = Field(64, ge=1)
    alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Optional[Union[list[str], Literal["all-linear"]]] = None
    modules_to_save: Optional[list[str]] = None
    torch_dtype: TorchDtype = "float32"
    train_data_config: str
    eval_data_config: Optional[str] = None
    eval_dataset_size: Optional[float] = Field(None, gt=0)
    training_args: TrainingArgs = Field(default_factory=TrainingArgs)

    @field_validator("eval_dataset_size")
    @classmethod
    def _size(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and v >= 1 and v != int(v):
            raise ValueError("eval_dataset_size is a fraction below 1 (0.2) or a whole row count (100)")
        return v


class QLoRA(LoRA):
    type: Literal["QLoRA"] = "QLoRA"  # type: ignore[assignment]
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = False
    compute_dtype: TorchDtype = "float32"


class MergeAdapterWeights(Model):
    type: Literal["MergeAdapterWeights"] = "MergeAdapterWeights"


class ModelBuilder(Model):
    type: Literal["ModelBuilder"] = "ModelBuilder"
    precision: Literal["fp32", "fp16", "bf16", "int4"] = "fp32"
    int4_block_size: Literal[16, 32, 64, 128, 256] = 32
    int4_accuracy_level: Optional[Literal[0, 1, 2, 3, 4]] = None
    int4_is_symmetric: Optional[bool] = None
    # the builder's int4 weight quantization method (its algo_config; Olive's ModelBuilder calls it
    # int4_algo_config). tunecell's default is k_quant_mixed (k_quant, with the lm_head and the attention and
    # down projections of some layers in int8), not the builder's "default": on the demo (SmolLM2-135M, tone task,
    # 98 held-out rows) against the merged fp32 model, "default" lost 10 points, rtn 2 to 4, k_quant -1 to 4 (1.8
    # on average over four trainings), k_quant_mixed 0.25 on average (at most 2), for 28% more bytes than k_quant
    # and 5% slower decoding (bench/README.md, rows 5 and 7). k_quant's search costs build time: about 20 s against
    # rtn's 10 on the demo. The *_last and *_mixed names are the builder's own. The builder's names in extra_options
    # (algo_config, block_size, accuracy_level, is_symmetric; its former int4_* names there are renamed to these
    # by the dialects) win over the int4_* fields.
    int4_algo_config: Literal["default", "rtn", "k_quant", "rtn_last", "k_quant_last", "k_quant_mixed"] = \
        "k_quant_mixed"
    extra_options: dict[str, Union[str, int, float, bool]] = Field(default_factory=dict)

    def int4_option(self, name: str) -> Any:
        """What the builder gets for one of its int4 options (block_size, accuracy_level, is_symmetric,
        algo_config): extra_options' value, else the int4_<name> field. extra_options may hold the builder's
        command-line forms ("false", "64"), which it converts as here."""
        value = self.extra_options.get(name, getattr(self, f"int4_{name}"))
        if isinstance(value, str) and name == "is_symmetric":
            return value not in ("false", "False", "0")
        if isinstance(value, str) and name in ("block_size", "accuracy_level") and value.isdigit():
            return int(value)
        return value

    @property
    def int4_method(self) -> str:
        return str(self.int4_option("algo_config"))


Pass = Annotated[Union[LoRA, QLoRA, MergeAdapterWeights, ModelBuilder], Field(discriminator="type")]


# ------------------------------------------------------------------------------------------ evaluation
class Goal(Model):
    type: Literal["threshold", "min-improvement", "max-degradation"]
    value: float


class Metric(Model):
    name: str
    type: Literal["accuracy", "latency", "throughput", "size_on_disk"]
    data_config: Optional[str] = None
    label_column: Optional[str] = None
    labels: Optional[list[str]] = None
    max_new_tokens: int = Field(8, ge=1)
    # accuracy only. generate: the first label word in max_new_tokens greedy tokens; loglikelihood: the label the
    # model finds most likely after the prompt (tunecell.inference.LoadedModel.classify)
    scoring: Literal["generate", "loglikelihood"] = "generate"
    max_samples: Optional[int] = Field(None, ge=1)
    goal: Optional[Goal] = None
    priority: int = 1

    @model_validator(mode="after")
    def _scoring_is_for_accuracy(self) -> "Metric":
        if self.scoring != "generate" and self.type != "accuracy":
            raise ValueError(f"scoring applies to accuracy metrics, not to {self.type}")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.type in ("accuracy", "throughput")


class Evaluator(Model):
    metrics: list[Metric] = Field(min_length=1)


# --------------------------------------------------------------------------------------------- systems
class Accelerator(Model):
    device: Literal["cpu", "gpu"] = "cpu"
    execution_providers: list[Literal["CPUExecutionProvider", "CUDAExecutionProvider"]] = Field(
        default_factory=list, min_length=0, max_length=1)

    @model_validator(mode="after")
    def _default_provider(self) -> "Accelerator":
        if not self.execution_providers:
            provider = "CUDAExecutionProvider" if self.device == "gpu" else "CPUExecutionProvider"
            self.__dict__["execution_providers"] = [provider]
        elif self.device == "cpu" and self.execution_providers[0] == "CUDAExecutionProvider":
            raise ValueError("CUDAExecutionProvider needs device: gpu")
        return self


class LocalSystem(Model):
    type: Literal["LocalSystem"] = "LocalSystem"
    accelerators: list[Accelerator] = Field(default_factory=lambda: [Accelerator()], min_length=1)


class AzureMLDockerConfig(Model):
    base_image: str
    conda_file_path: Optional[str] = None


class AzureMLSystem(Model):
    type: Literal["AzureML"] = "AzureML"
    accelerators: list[Accelerator] = Field(default_factory=lambda: [Accelerator(device="gpu")], min_length=1)
    aml_compute: str
    aml_docker_config: Optional[AzureMLDockerConfig] = None
    environment: Optional[str] = None  # a registered environment, "name:version"
    hf_token: Union[bool, str] = False  # True: secret "hf-token" of the workspace Key Vault; str: a named vault
    instance_count: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_environment(self) -> "AzureMLSystem":
        if self.aml_docker_config and self.environment:
            raise ValueError("give either aml_docker_config or environment, not both")
        return self


System = Annotated[Union[LocalSystem, AzureMLSystem], Field(discriminator="type")]
SYSTEM_TYPES = ("LocalSystem", "AzureML")


class AzureMLClient(Model):
    subscription_id: Optional[str] = None
    resource_group: Optional[str] = None
    workspace_name: Optional[str] = None
    aml_config_path: Optional[str] = None

    @model_validator(mode="after")
    def _complete(self) -> "AzureMLClient":
        named = [self.subscription_id, self.resource_group, self.workspace_name]
        if self.aml_config_path is None and not all(named):
            raise ValueError("give subscription_id, resource_group and workspace_name, or aml_config_path")
        return self


# -------------------------------------------------------------------------------------------- workflow
DEFAULT_CACHE_DIR = ".tunecell/cache"  # relative: next to the config file (a notebook's: its folder)
CACHE_DIR_SHARED = ("azureml", "estimates", "models", "runs.jsonl", "scratch")  # beside the workflows' folders


class SearchStrategy(Model):
    execution_order: Literal["joint", "pass-by-pass"] = "joint"
    sampler: Literal["sequential", "random"] = "sequential"
    max_samples: Optional[int] = Field(None, ge=1)
    seed: int = 0
    output_model_num: int = Field(1, ge=1)


class WorkflowConfig(Model):
    """A whole run, in tunecell's normalised dialect (Olive 0.13's names, engine keys at top level)."""

    workflow_id: str = "default_workflow"
    input_model: InputModel
    data_configs: list[DataConfig] = Field(default_factory=list)
    passes: dict[str, Pass] = Field(default_factory=dict)
    evaluators: dict[str, Evaluator] = Field(default_factory=dict)
    evaluator: Optional[str] = None
    evaluate_input_model: bool = True
    systems: dict[str, System] = Field(default_factory=dict)
    azureml_client: Optional[AzureMLClient] = None
    host: Optional[str] = None
    target: Optional[str] = None
    search_strategy: Optional[SearchStrategy] = None
    clean_cache: bool = False
    cache_dir: str = DEFAULT_CACHE_DIR
    output_dir: str = "models/output"
    log_severity_level: int = Field(1, ge=0, le=4)

    # What the loader learned: the dialect notes, and the folder relative data paths start from (a config file's).
    _notes: list[str] = PrivateAttr(default_factory=list)
    _base_dir: Optional[str] = PrivateAttr(default=None)
    _search_space: dict = PrivateAttr(default_factory=dict)  # pass -> dotted option -> candidate values

    @field_validator("workflow_id")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        # it names the workflow's folder in cache_dir, which clean_cache deletes: never a path out of it
        if v.strip() in ("", ".", "..") or re.search(r"[/\\\0]", v):
            raise ValueError("must name one folder inside cache_dir (clean_cache deletes it), not a path: no '/', "
                             "'\\', '.' or '..'")
        if v in CACHE_DIR_SHARED:
            raise ValueError(f"{v!r} is cache_dir's own folder for all workflows: choose another name")
        return v

    @model_validator(mode="after")
    def _load_dtype_to_passes(self) -> "WorkflowConfig":
        """Olive loads the input model in load_kwargs' dtype; tunecell loads it in a chosen dtype only to train
        it (it merges and evaluates in float32). So load_kwargs.dtype is the torch_dtype of each LoRA pass that
        gives none, and is then cleared: a config written back without its defaults (export.minimal_dict) would
        otherwise hand it to a pass that chose torch_dtype: float32."""
        load_kwargs = self.input_model.load_kwargs
        if load_kwargs.dtype is None:
            return self
        for p in self.passes.values():
            if load_kwargs.dtype != "auto" and isinstance(p, LoRA) and "torch_dtype" not in p.model_fields_set:
                p.__dict__["torch_dtype"] = load_kwargs.dtype
                p.__pydantic_fields_set__.add("torch_dtype")  # written back (exclude_unset) as the pass's own
        load_kwargs.__dict__["dtype"] = None
        load_kwargs.__pydantic_fields_set__.discard("dtype")
        return self

    @property
    def notes(self) -> list[str]:
        return self._notes

    @property
    def search_space(self) -> dict:
        return self._search_space

    @property
    def base_dir(self) -> Optional[str]:
        return self._base_dir

    def resolve(self, path: str) -> Path:
        """A path from the config: relative ones start at the config file's folder (or the current folder)."""
        p = Path(path).expanduser()
        return Path(os.path.normpath((p if p.is_absolute() or self._base_dir is None else Path(self._base_dir) / p)
                                     .absolute()))

    def data_config(self, name: str) -> DataConfig:
        return next(d for d in self.data_configs if d.name == name)

    @property
    def target_system(self) -> Union[LocalSystem, AzureMLSystem]:
        return self.systems[self.target] if self.target else LocalSystem()

    @property
    def execution_provider(self) -> str:
        """The onnxruntime-genai name of the target's execution provider: cpu or cuda."""
        providers = self.target_system.accelerators[0].execution_providers
        return "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"


AzureMLDatastore.model_rebuild()


def with_pass_models(models: tuple[type[BaseModel], ...]) -> type[WorkflowConfig]:
    """A WorkflowConfig whose passes may be any of ``models`` (tunecell's and third-party passes)."""
    if set(models) == {LoRA, QLoRA, MergeAdapterWeights, ModelBuilder}:
        return WorkflowConfig
    from pydantic import create_model

    union = Annotated[Union[models], Field(discriminator="type")]  # type: ignore[valid-type]
    return create_model("WorkflowConfig", __base__=WorkflowConfig,
                        passes=(dict[str, union], Field(default_factory=dict)))
