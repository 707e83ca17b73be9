"""The AzureML command job for a workflow: one job runs the whole workflow with tunecell's own runner.

What is sent (``build_job``):
- code: a folder holding tunecell's source (the installed package's files, importable as is: no build step on the
  compute) and ``config.json``, the normalised config with every data file and model the job reads replaced by an
  ``${{inputs.NAME}}`` placeholder, host/target turned into a local system with the same accelerators, and no
  cache_dir, output_dir nor azureml_client.
- inputs: local files and folders (uploaded by the SDK with the job, once: it skips what the datastore holds),
  ``azureml://datastores/...`` paths and ``azureml_datastore`` resources (mounted), an ``azureml_registry_model``
  (a custom_model input). A model named by its hub id is sent from where this machine has it (the HF cache, or the
  embedded SmolLM2 GGUF): tunecell's resolver never reaches the hub, here or in the job.
- outputs: ``output_dir`` (uri_folder): the models, manifest.json and events.jsonl.
- command: ``python -m tunecell.azureml.remote --input NAME=${{inputs.NAME}} ... -- run --config config.json
  --events ${{outputs.output_dir}}/events.jsonl --events - --progress none --set output_dir=${{outputs.output_dir}}``:
  the remote bootstrap fills the mounted paths into the config, reads the HF token from Key Vault, and runs
  ``tunecell run``; ``--events -`` echoes each event into the job's log, which the notebook tails.
- environment: aml_docker_config's base image + conda file with tunecell's stack added (pinned to the versions
  installed here where there are some), or a registered environment ("name:version") used as it is.
- compute, instance_count, and for instance_count > 1 a PyTorch distribution (one process per node: AzureML sets
  MASTER_ADDR/RANK/WORLD_SIZE and the Trainer joins torch.distributed from them).
- environment variables: no secret ever. hf_token names the Key Vault (KEYVAULT_NAME) and the secret
  (HF_TOKEN_SECRET = hf-token); the job reads the token itself.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Union

from ..config import schema
from ..config.export import minimal_dict
from ..errors import ConfigError, DataError, ModelNotFound

OUTPUT = "output_dir"
CONFIG_NAME = "config.json"
HF_SECRET = "hf-token"
DEFAULT_IMAGES = {"gpu": "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04",
                  "cpu": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"}
# what the job itself needs on top of tunecell's stack: torch (installed apart from the extras, see README) and,
# when hf_token is set, what reads the Key Vault
JOB_EXTRAS = ("torch",)
NOTEBOOK_ONLY = {"ipython", "ipywidgets"}
KEYVAULT_PACKAGES = ("azure-identity>=1.15", "azure-keyvault-secrets>=4.7")
_GLOB = re.compile(r"[*?\[]")
_PLACEHOLDER = "${{{{inputs.{}}}}}"


@dataclass
class JobSpec:
    job: Any  # the azure.ai.ml command job (a Command node), ready for ml.jobs.create_or_update
    name: str
    system: str
    code_dir: Path
    remote_config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> the local path or azureml:// uri it reads
    environment: str = ""  # in words

    @property
    def command(self) -> str:
        return self.job.command


def new_job_name() -> str:
    """A job name AzureML accepts (letters, digits, - and _), unique, and readable in Studio's list."""
    return f"tunecell-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def build_job(config: schema.WorkflowConfig, *, system: Optional[str] = None, name: Optional[str] = None,
              code_dir: Optional[Union[str, Path]] = None, keyvault_name: Optional[str] = None) -> JobSpec:
    """The command job for ``config`` (see the module doc). Builds offline: no request is made.

    ``system``: the AzureML system's name (default: the host's, else the target's). ``code_dir``: where the code
    folder is staged (default: <cache_dir>/azureml/<name>/code). ``keyvault_name``: the vault holding the
    ``hf-token`` secret when hf_token is true (submit() passes the workspace's own).
    """
    from .client import require_sdk

    require_sdk()
    from azure.ai.ml import Output, PyTorchDistribution, command

    from ..runner.dispatch import remote_system

    system = system or remote_system(config)
    aml = config.systems.get(system or "")
    if not isinstance(aml, schema.AzureMLSystem):
        what = f"system {system!r} is not" if system else "neither host nor target names"
        raise ConfigError(f"{what} an AzureML system", path=("host",),
                          hint="set host (or --target) to a system of type AzureML")
    name = name or new_job_name()
    inputs = _Inputs(config)
    remote = remote_config(config, system, inputs)
    code_dir = Path(code_dir) if code_dir else config.resolve(config.cache_dir) / "azureml" / name / "code"
    stage_code(remote, code_dir)
    environment, described = _environment(config, aml, system)
    job = command(
        name=name,
        display_name=config.workflow_id,
        experiment_name=_experiment(config.workflow_id),
        description=f"tunecell workflow {config.workflow_id!r}: " + ", ".join(
            f"{n} ({p.type})" for n, p in config.passes.items()),
        code=str(code_dir),
        command=_command(inputs),
        environment=environment,
        compute=aml.aml_compute,
        inputs=inputs.sdk_inputs(),
        outputs={OUTPUT: Output(type="uri_folder", mode="rw_mount")},
        environment_variables=_environment_variables(aml, system, keyvault_name),
        instance_count=aml.instance_count,
        distribution=PyTorchDistribution(process_count_per_instance=1) if aml.instance_count > 1 else None,
        tags={"tunecell": _version(), "workflow_id": config.workflow_id},
    )
    return JobSpec(job, name, system, code_dir, remote, inputs.described, described)


# ------------------------------------------------------------------------------------------------- the config
def remote_config(config: schema.WorkflowConfig, system: str, inputs: "_Inputs") -> dict[str, Any]:
    """The config the job runs: paths into ${{inputs.x}}, the AzureML system made local (same accelerators)."""
    data = minimal_dict(config)
    for key in ("host", "azureml_client", "cache_dir", "output_dir"):
        data.pop(key, None)
    aml = config.systems[system]
    data["systems"][system] = {"type": "LocalSystem",
                               "accelerators": [a.model_dump(mode="json") for a in aml.accelerators]}
    model = config.input_model
    if isinstance(model.model_path, schema.AzureMLRegistryModel):
        m = model.model_path
        data["input_model"]["model_path"] = inputs.add(
            "model", "custom_model", f"azureml://registries/{m.registry_name}/models/{m.name}/versions/{m.version}")
    else:
        local = inputs.local_path(model.model_path)
        gguf_file = model.gguf_file
        if local is None:  # the job resolves models as this machine does, without the hub: send the weights
            local, gguf_file = local_weights(model)
        data["input_model"]["model_path"] = inputs.add_local("model", local)
        if gguf_file is None:
            data["input_model"].pop("gguf_file", None)
    for i, dc in enumerate(config.data_configs):
        load = dc.load_dataset_config
        out = data["data_configs"][i]["load_dataset_config"]
        if load.data_files is not None:
            out["data_files"] = inputs.data_files(load.data_files, f"data_{dc.name}", dc.name)
        if load.data_name and (load.data_name.startswith("azureml://") or inputs.local_path(load.data_name)):
            out["data_name"] = inputs.data_files(load.data_name, f"data_{dc.name}_name", dc.name)
    # the job's config must load as it is (the placeholders are plain strings until the job fills them in)
    from ..config import load_config

    load_config(data)
    return data


def local_weights(model: schema.InputModel) -> tuple[Path, Optional[str]]:
    """Where this machine keeps a model named by its hub id: (the HF cache snapshot, gguf_file) or (the embedded
    SmolLM2 .gguf, None). Never the network, never a conversion: the job converts a GGUF itself."""
    from ..models.resolve import EMBEDDED_NAMES, EMBEDDED_REPO_ID, _embedded_gguf, _hf_cache_snapshot

    spec = model.model_path
    repo_ids = [spec] + ([EMBEDDED_REPO_ID] if spec.lower() in EMBEDDED_NAMES and spec != EMBEDDED_REPO_ID else [])
    for repo_id in repo_ids:
        try:
            snapshot = _hf_cache_snapshot(repo_id, model.gguf_file or "config.json", model.load_kwargs.revision)
        except ImportError:  # no huggingface_hub here: no cache to look in
            snapshot = None
        if snapshot is not None:
            return snapshot, model.gguf_file
    if spec.lower() in EMBEDDED_NAMES and not model.gguf_file:
        embedded = _embedded_gguf()
        if embedded is not None:
            return embedded, None
    raise ModelNotFound(f"model {spec!r} is neither a local folder or .gguf file, nor in the local Hugging Face cache, "
                        "so it cannot be sent with the job (the job reaches no hub either)\n  hint: download it "
                        "here first, or use an AzureML registry model: {type: azureml_registry_model, registry_name, "
                        "name, version}")


class _Inputs:
    """The job's inputs, one per distinct path, named after what reads them."""

    def __init__(self, config: schema.WorkflowConfig):
        self.config = config
        self.items: dict[str, tuple[str, str]] = {}  # name -> (type, path)
        self._by_path: dict[tuple[str, str], str] = {}

    @property
    def described(self) -> dict[str, str]:
        return {name: path for name, (_, path) in self.items.items()}

    def sdk_inputs(self) -> dict[str, Any]:
        from azure.ai.ml import Input

        return {name: Input(type=type_, path=path, mode="ro_mount" if type_ != "custom_model" else None)
                for name, (type_, path) in self.items.items()}

    def add(self, base: str, type_: str, path: str) -> str:
        key = (type_, path)
        if key not in self._by_path:
            name = stem = re.sub(r"\W", "_", base).lower().strip("_") or "input"
            n = 1
            while name in self.items:
                n += 1
                name = f"{stem}_{n}"
            self.items[name] = key
            self._by_path[key] = name
        return _PLACEHOLDER.format(self._by_path[key])

    def local_path(self, value: str) -> Optional[Path]:
        """The local file or folder a path-like value names, or None (a hub name, a format name ...)."""
        if value.startswith("azureml://"):
            return None
        path = self.config.resolve(value)
        return path.resolve() if path.exists() else None

    def add_local(self, base: str, path: Path) -> str:
        return self.add(base, "uri_folder" if path.is_dir() else "uri_file", str(path))

    def data_files(self, value: Any, base: str, data_name: str) -> Any:
        """data_files with each path made an input; lists and split mappings keep their shape."""
        if isinstance(value, schema.AzureMLDatastore):
            return self._uri(_datastore_uri(value, self.config.azureml_client), base)
        if isinstance(value, list):
            return [self.data_files(v, f"{base}_{i}", data_name) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.data_files(v, f"{base}_{k}", data_name) for k, v in value.items()}
        if value.startswith("azureml://"):
            return self._uri(value, base)
        directory, rest = _split_glob(value)
        path = self.config.resolve(directory)
        if not path.exists():
            raise DataError(f"data config {data_name!r}: {value!r} does not exist here, so it cannot be uploaded "
                            "with the job", file=str(path),
                            hint="point data_files at local files, or at azureml://datastores/<store>/paths/<path>")
        placeholder = self.add_local(base, path.resolve())
        return f"{placeholder}/{rest}" if rest else placeholder

    def _uri(self, uri: str, base: str) -> str:
        directory, rest = _split_glob(uri)
        if rest:
            return self.add(base, "uri_folder", directory.rstrip("/") + "/") + "/" + rest
        type_ = "uri_folder" if uri.endswith("/") or not Path(uri).suffix else "uri_file"
        return self.add(base, type_, uri)


def _datastore_uri(store: schema.AzureMLDatastore, default: Optional[schema.AzureMLClient]) -> str:
    """Olive's azureml_datastore as a URI: the short form in the job's workspace, the long form in another."""
    path = store.relative_path.lstrip("/")
    client = store.azureml_client
    if client is not None and client.subscription_id and client.resource_group and client.workspace_name and (
            default is None or (client.subscription_id, client.resource_group, client.workspace_name) !=
            (default.subscription_id, default.resource_group, default.workspace_name)):
        return (f"azureml://subscriptions/{client.subscription_id}/resourcegroups/{client.resource_group}/"
                f"workspaces/{client.workspace_name}/datastores/{store.datastore_name}/paths/{path}")
    return f"azureml://datastores/{store.datastore_name}/paths/{path}"


def _split_glob(path: str) -> tuple[str, str]:
    """'data/**/*.jsonl' -> ('data', '**/*.jsonl'): the folder to send, and the pattern inside it."""
    if not _GLOB.search(path):
        return path, ""
    parts = path.split("/")
    first = next(i for i, p in enumerate(parts) if _GLOB.search(p))
    return "/".join(parts[:first]) or ".", "/".join(parts[first:])


# --------------------------------------------------------------------------------------------------- the code
def stage_code(remote: dict[str, Any], dest: Path) -> Path:
    """``dest``: tunecell's source (importable from the folder: ``python -m tunecell...``), its metadata (so the
    manifest names the version) and config.json. Deterministic, so an unchanged workflow reuses the uploaded code."""
    import importlib.util

    import tunecell

    if dest.exists():
        shutil.rmtree(dest)
    package = dest / "tunecell"
    root = Path(tunecell.__path__[0])
    _copy_tree(root, package)
    for sub in ("magics", "widgets"):  # installed from their own folders (pyproject's package-dir)
        spec = importlib.util.find_spec(f"tunecell.{sub}")  # finds it without importing it (IPython, ipywidgets)
        folder = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
        if folder is not None and root not in folder.parents:
            _copy_tree(folder, package / sub)
    info = dest / f"tunecell-{_version()}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tunecell\nVersion: {_version()}\n")
    (dest / CONFIG_NAME).write_text(json.dumps(remote, indent=2) + "\n", encoding="utf-8")
    return dest


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints",
                                                                  "*.egg-info"))


# ------------------------------------------------------------------------------------------- the command line
def _command(inputs: _Inputs) -> str:
    out = "${{outputs.%s}}" % OUTPUT
    words = ["python", "-m", "tunecell.azureml.remote"]
    for name in inputs.items:
        words += ["--input", f"{name}={_PLACEHOLDER.format(name)}"]
    words += ["--", "run", "--config", CONFIG_NAME, "--events", f"{out}/events.jsonl", "--events", "-",
              "--progress", "none", "--set", f"output_dir={out}"]
    return " ".join(words)


def _environment_variables(aml: schema.AzureMLSystem, system: str, keyvault_name: Optional[str]) -> dict[str, str]:
    values = {"PYTHONUNBUFFERED": "1",  # the log (and so the notebook) sees each event as it happens
              "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if aml.hf_token:
        vault = aml.hf_token if isinstance(aml.hf_token, str) else keyvault_name
        if vault is None:
            raise ConfigError("hf_token: true reads the secret hf-token from the workspace's Key Vault, and the "
                              "workspace names none", path=("systems", system, "hf_token"),
                              hint="give the vault's name instead: hf_token: my-vault")
        values.update({"KEYVAULT_NAME": vault, "HF_TOKEN_SECRET": HF_SECRET})
    return values


# ------------------------------------------------------------------------------------------- the environment
def _environment(config: schema.WorkflowConfig, aml: schema.AzureMLSystem, system: str) -> tuple[Any, str]:
    from azure.ai.ml.entities import Environment

    if aml.environment:
        name, _, version = aml.environment.removeprefix("azureml:").partition(":")
        if not name or not version:
            raise ConfigError(f"environment names a registered environment as name:version, not "
                              f"{aml.environment!r}", path=("systems", system, "environment"))
        return f"azureml:{name}:{version}", f"registered environment {name}:{version} (used as it is)"
    device = aml.accelerators[0].device
    docker = aml.aml_docker_config
    image = docker.base_image if docker else DEFAULT_IMAGES[device]
    conda_path = config.resolve(docker.conda_file_path) if docker and docker.conda_file_path else None
    spec = _read_conda(conda_path, system)
    python = next((re.sub(r"^python\s*=*\s*", "", d) for d in spec.get("dependencies", [])
                   if isinstance(d, str) and _name(d) == "python"), None)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    # this machine's versions only fit the job's Python if it is the same minor version
    pin = python is None or python == here or python.startswith(here + ".")
    conda = conda_spec(spec, job_requirements(device, bool(aml.hf_token), pin=pin))
    where = f" + {conda_path.name}" if conda_path else ""
    return Environment(image=image, conda_file=conda), f"{image}{where} + tunecell's {device} stack"


def _read_conda(path: Optional[Path], system: str) -> dict[str, Any]:
    import yaml

    if path is None:
        return {"name": "tunecell", "channels": ["conda-forge"], "dependencies": []}
    if not path.is_file():
        raise ConfigError(f"{path} does not exist",
                          path=("systems", system, "aml_docker_config", "conda_file_path"))
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(spec, dict) or not isinstance(spec.setdefault("dependencies", []), list):
        raise ConfigError(f"{path} is not a conda environment file "
                          "(a mapping with a dependencies list)",
                          path=("systems", system, "aml_docker_config", "conda_file_path"))
    return spec


def conda_spec(spec: dict[str, Any], requirements: list[str]) -> dict[str, Any]:
    """The conda environment ``spec`` with ``requirements`` added to its pip list (and python and pip when it
    lacks them); a package the file already names keeps the user's line."""
    deps = spec.setdefault("dependencies", [])
    names = {_name(d) for d in deps if isinstance(d, str)}
    if "python" not in names:
        deps.insert(0, f"python={sys.version_info.major}.{sys.version_info.minor}")
    if "pip" not in names:
        deps.append("pip")
    pip = next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), None)
    if pip is None:
        pip = []
        deps.append({"pip": pip})
    have = names | {_name(p) for p in pip if isinstance(p, str)}
    pip += [r for r in requirements if _name(r) not in have]
    return spec


def job_requirements(device: str, keyvault: bool, pin: bool = True) -> list[str]:
    """tunecell's dependencies with the extra for ``device`` (gpu or cpu), plus torch, less the notebook's own
    (IPython, ipywidgets): with ``pin``, each at the version installed here if there is one (the job runs what was
    validated here), else as tunecell declares it."""
    wanted: dict[str, str] = {}
    for requirement in _requirements({"", "gpu" if device == "gpu" else "cpu"}) + list(JOB_EXTRAS):
        if _name(requirement) not in NOTEBOOK_ONLY:
            wanted.setdefault(_name(requirement), requirement)
    out = []
    for name, requirement in wanted.items():
        if not pin:
            out.append(requirement)
            continue
        try:
            version = metadata.version(name).split("+")[0]
            out.append(f"{name}=={version}")
        except metadata.PackageNotFoundError:
            out.append(requirement)
    return out + (list(KEYVAULT_PACKAGES) if keyvault else [])


def _requirements(extras: set[str]) -> list[str]:
    try:
        declared = metadata.requires("tunecell") or []
    except metadata.PackageNotFoundError:
        return []
    out: list[str] = []
    for line in declared:
        spec, _, marker = line.partition(";")
        match = re.search(r"""extra\s*==\s*["']([\w-]+)["']""", marker)
        extra = match.group(1) if match else ""
        if extra not in extras:
            continue
        inner = re.match(r"\s*tunecell\[([^\]]+)\]", spec)
        if inner:  # tunecell[train] inside the gpu extra
            out += _requirements({e.strip() for e in inner.group(1).split(",")})
        else:
            out.append(spec.strip().replace(" ", ""))
    return out


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement


def _experiment(workflow_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", workflow_id)[:255] or "tunecell"


def _version() -> str:
    from tunecell import __version__

    return __version__
