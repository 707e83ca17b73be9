"""The example notebooks, executed top to bottom with nbclient on a real kernel (the venv's `python3` kernelspec).

- tone-classifier.ipynb runs twice on the tiny random Phi-3 (its `parameters` cell replaced, as papermill would),
  each time with a clean cache, and must record the same metrics, losses and hashes both times; its saved widget
  state must show every tunecell progress bar at its end, green.
- olive-config.ipynb runs as it is: each pasted Olive config validates, and each exported Olive JSON loads back to
  the same config as the original file.
- azureml.ipynb: the cells that need no workspace run as they are (the dry run, the cells tagged `azureml-job`
  left out); then the whole notebook runs against the fake AzureML (tests/fake_azureml.py) inside the kernel: the
  real azure-ai-ml SDK submits the job, the notebook follows it, downloads its model and generates with it.
- qlora-gpu.ipynb runs on the CPU, on the tiny model.
- The README's two IPython settings (`InteractiveShellApp.extensions`, `MagicsManager.lazy_magics`) make %%finetune
  work in a kernel without %load_ext.
- The committed notebooks carry no outputs, no execution counts and no widget state.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "example_notebooks"
CONFIGS = Path(__file__).resolve().parent / "configs"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
TIMING_METRICS = {"latency", "throughput"}  # wall-clock measurements: never equal twice
TINY_STEPS = 6


def tiny_parameters(tiny_model: Path, work: Path, **extra: Any) -> str:
    """The `parameters` cell for the tiny random Phi-3: its LoRA targets are qkv_proj and o_proj."""
    values = {"model": str(tiny_model), "target_modules": ["qkv_proj", "o_proj"], "max_steps": TINY_STEPS,
              "learning_rate": 3e-4, "lora_r": 4, "eval_samples": 12, "data_files": "data/tones.jsonl",
              "cache_dir": str(work / "cache"), "output_dir": str(work / "out"), **extra}
    return "\n".join(f"{name} = {value!r}" for name, value in values.items()) + "\n"


@contextmanager
def jupyter_home(work: Path) -> Iterator[dict[str, str]]:
    """Jupyter's and IPython's own folders inside ``work`` for this client and its kernel (connection files,
    history, profiles): never the user's home, nor the user's IPython config. Yields the kernel's environment."""
    folders = {"JUPYTER_RUNTIME_DIR": "jupyter-runtime", "JUPYTER_CONFIG_DIR": "jupyter-config",
               "IPYTHONDIR": "ipython"}
    saved = {name: os.environ.get(name) for name in folders}
    os.environ.update({name: str(work / folder) for name, folder in folders.items()})
    try:
        yield dict(os.environ)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_notebook(nb: nbformat.NotebookNode, work: Path, name: str, timeout: int = 600) -> nbformat.NotebookNode:
    """Execute ``nb`` in ``work`` with the venv's python3 kernel; the result is also written to work/NAME."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(work)}})
    started = time.perf_counter()
    try:
        with jupyter_home(work) as env:
            client.execute(env=env)
    finally:
        nbformat.write(nb, work / name)
        print(f"{name}: executed in {time.perf_counter() - started:.1f} s")
    return nb


def execute(name: str, work: Path, parameters: Optional[str] = None, skip_tags: Iterable[str] = (),
            timeout: int = 600) -> nbformat.NotebookNode:
    """Execute example_notebooks/NAME in ``work`` (a copy of the data folder beside it), as a user would.

    ``parameters`` replaces the source of the cell tagged `parameters`; cells with a tag in ``skip_tags`` are left
    out. The executed notebook is written to work/NAME for a look after a failure.
    """
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "data").exists():
        shutil.copytree(NOTEBOOKS / "data", work / "data")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells = [c for c in nb.cells if not set(c.metadata.get("tags", [])) & set(skip_tags)]
    if parameters is not None:
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        cell.source = parameters
    return run_notebook(nb, work, name, timeout)


def outputs_of(cell: Any, kind: str = "text/plain") -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
        elif kind in output.get("data", {}):
            parts.append(output.data[kind])
    return "\n".join(parts)


def cell_starting(nb: Any, prefix: str) -> Any:
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(prefix))


def progress_bars(nb: Any) -> list[dict[str, Any]]:
    """The IntProgress widgets of the saved widget state: tunecell's bars (the libraries' tqdm bars are Float)."""
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    return [model["state"] for model in state.values() if model["model_name"] == "IntProgressModel"]


def no_errors(nb: Any) -> None:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{cell.source[:60]!r}: {output.ename}: {output.evalue}"


# ======================================================================================= tone-classifier
@pytest.fixture(scope="module")
def tone_runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """tone-classifier.ipynb executed twice in the same folder, the cache and the outputs removed before each."""
    work = tmp_path_factory.mktemp("tone-classifier")
    runs = []
    for _ in range(2):
        for folder in ("cache", "out"):
            shutil.rmtree(work / folder, ignore_errors=True)
        nb = execute("tone-classifier.ipynb", work, tiny_parameters(tiny_model, work))
        manifests = {name: json.loads((work / "out" / name / "manifest.json").read_text()) for name in ("ft", "int4")}
        runs.append({"nb": nb, "manifests": manifests, "work": work})
    return runs


def reproducible(manifest: dict[str, Any]) -> dict[str, Any]:
    """What two executions of the notebook must agree on: everything but wall times and run ids."""
    return {
        "metrics": {model: {k: v for k, v in values.items() if k not in TIMING_METRICS}
                    for model, values in manifest["metrics"].items()},
        "passes": [(p["name"], p["type"], p["status"], p["stats"].get("train_loss"), p["stats"].get("steps"))
                   for p in manifest["passes"]],
        "config_hash": manifest["config_hash"], "data_hashes": manifest["data_hashes"], "seed": manifest["seed"],
        "model_source": manifest["model_source"], "packages": manifest["packages"],
    }


def test_tone_classifier_reproduces_its_metrics(tone_runs: list[dict[str, Any]]) -> None:
    first, second = ([reproducible(m) for m in (run["manifests"]["ft"], run["manifests"]["int4"])]
                     for run in tone_runs)
    assert first == second
    ft, opt = first
    # ft measured the model as it came and the adapter; opt carried those over and measured merge and int4
    assert list(ft["metrics"]) == ["input", "lora"]
    assert list(opt["metrics"]) == ["input", "lora", "merge", "int4"]
    assert {k: opt["metrics"][k] for k in ft["metrics"]} == ft["metrics"]
    assert all(set(values) == {"accuracy"} for values in opt["metrics"].values())
    assert [p[:3] for p in opt["passes"]] == [("lora", "LoRA", "done"), ("merge", "MergeAdapterWeights", "done"),
                                              ("int4", "ModelBuilder", "done")]
    assert opt["passes"][0] == ft["passes"][0] and ft["passes"][0][4] == TINY_STEPS
    assert ft["passes"][0][3] is not None  # a training loss, the same to the last bit both times
    # the wall-clock metrics were measured, they just differ between runs
    assert set(tone_runs[0]["manifests"]["int4"]["metrics"]["int4"]) == {"accuracy", "latency"}


def test_tone_classifier_summary_and_outputs(tone_runs: list[dict[str, Any]]) -> None:
    nb = tone_runs[-1]["nb"]
    no_errors(nb)
    summary = nb.cells[-1]
    assert summary.source == "opt"
    html = outputs_of(summary, "text/html")
    assert "tunecell-summary" in html and "succeeded" in html
    for header in ("<th>metric</th>", "<th>input</th>", "<th>lora</th>", "<th>int4</th>", "<td>accuracy</td>"):
        assert header in html, header
    preview = outputs_of(cell_starting(nb, "%%finetune --preview"), "text/html")
    assert 'class="tc-tok"' in preview and "background:#d8f0d8" in preview  # tokens that carry the loss, green
    generated = outputs_of(cell_starting(nb, "%%generate"))
    assert generated.count(">>> ### Text: ") == 4 and "tokens/s" in generated


def test_tone_classifier_widget_state_shows_finished_bars(tone_runs: list[dict[str, Any]]) -> None:
    for run in tone_runs:
        bars = progress_bars(run["nb"])
        # ft: the run's bar and lora's; opt: the run's bar, merge's and int4's
        assert len(bars) == 5, bars
        for bar in bars:
            assert bar["value"] == bar["max"] and bar["bar_style"] == "success", bar
        assert any(bar["max"] == TINY_STEPS for bar in bars)  # lora's bar counted the training steps


# ===================================================================================== the other notebooks
def test_olive_config_notebook_exports_configs_that_load_back(tmp_path: Path) -> None:
    import tunecell

    nb = execute("olive-config.ipynb", tmp_path)
    no_errors(nb)
    for name in ("cookbook", "params_config", "olive013"):
        original = tunecell.load_config((CONFIGS / name).with_suffix(".json").read_text(encoding="utf-8"))
        exported = tmp_path / "exported" / f"{name}.json"
        data = json.loads(exported.read_text(encoding="utf-8"))
        assert data["input_model"]["type"] == "HfModel" and "engine" not in data, name  # Olive 0.13's layout
        again = tunecell.load_config(exported)
        # QLoRA's optimizer is written out, as Olive's QLoRA default differs: the same optimizer, now explicit
        assert again.passes["lora"].training_args.model_extra.pop("optim") == "adamw_torch_fused"
        # Olive 0.13 reads no AzureML datastore: data_files is the file's path inside it
        datastore = original.data_configs[0].load_dataset_config.data_files
        original.data_configs[0].load_dataset_config.data_files = datastore.relative_path
        assert data["data_configs"][0]["load_dataset_config"]["data_files"] == datastore.relative_path
        # relative folders are rebased to the export's folder: the same folders, next to the notebook
        for key in ("cache_dir", "output_dir"):
            assert again.resolve(getattr(again, key)) == (tmp_path / getattr(original, key)).resolve(), name
        same = {"systems", "cache_dir", "output_dir"}
        assert again.model_dump(exclude=same) == original.model_dump(exclude=same), name
        # and it has no AzureML system: the same accelerators on a local one
        assert data["systems"]["aml"] == {"type": "LocalSystem", "accelerators": [
            {"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}]}, name
        assert again.systems["aml"].accelerators == original.systems["aml"].accelerators
    dry_runs = [outputs_of(c) for c in nb.cells if c.source.startswith("%%finetune --dry-run")]
    assert len(dry_runs) == 3
    for text in dry_runs:
        assert "1. lora [QLoRA]" in text and "3. builder [ModelBuilder]" in text and "host: aml" in text
    assert "note: passes.lora: lora_r is now r" in dry_runs[0]
    export = outputs_of(cell_starting(nb, "%%finetune --export exported/cookbook.json"))
    assert "note: systems.aml: Olive 0.13 has no AzureML system" in export


def test_azureml_notebook_dry_run(tmp_path: Path) -> None:
    source = nbformat.read(NOTEBOOKS / "azureml.ipynb", as_version=4)
    jobs = [c for c in source.cells if "azureml-job" in c.metadata.get("tags", [])]
    dry_run = cell_starting(source, "%%finetune --dry-run")
    submit = cell_starting(source, "%%finetune -o aml_run")
    assert submit in jobs and dry_run not in jobs
    # the job cell runs exactly the config that the dry run checked
    assert submit.source.split("\n", 1)[1] == dry_run.source.split("\n", 1)[1]
    parameters = next(c for c in source.cells if "parameters" in c.metadata.get("tags", []))
    for placeholder in ("<your-subscription-id>", "<your-resource-group>", "<your-workspace-name>",
                        "<your-gpu-cluster>"):
        assert placeholder in parameters.source

    nb = execute("azureml.ipynb", tmp_path, skip_tags=["azureml-job"])
    no_errors(nb)
    plan = outputs_of(cell_starting(nb, "%%finetune --dry-run"))
    for text in ("target: aml (cpu); host: aml", "1. lora [LoRA]", "2. merge [MergeAdapterWeights]",
                 "3. int4 [ModelBuilder]", "evaluate (tone_eval): accuracy, latency"):
        assert text in plan, text
    assert not (tmp_path / "models").exists()  # a dry run writes nothing


# The AzureML job cells, run against the fake AzureML of tests/fake_azureml.py inside the kernel: the real
# azure-ai-ml SDK creates the job; the fake job's log replays the events of a local run of the same passes and its
# output_dir is that run's (tone-classifier.ipynb's int4 output), so %%generate then runs the downloaded model.
FAKE_AZUREML_CELL = """\
# test plumbing, not part of the example: the fake AzureML in this kernel
import base64, json, os, sys
os.environ["AZUREML_CURRENT_CLOUD"] = "AzureCloud"
sys.path.insert(0, {tests!r})
from fake_azureml import FakeAzureML, FakeCredential, make_transport, patch_all_requests
from tunecell.azureml import client as aml_client, submission as aml_submission
from tunecell.config.schema import AzureMLClient
fake = FakeAzureML()
fake_requests = patch_all_requests(fake)  # kept: a dropped context manager would undo the patch when collected
fake_requests.__enter__()
aml_submission.POLL_INTERVAL_S = 0.0
fake_ml = aml_client.ml_client(AzureMLClient(subscription_id=fake.sub, resource_group=fake.rg,
                                             workspace_name=fake.ws),
                               credential=FakeCredential(), transport=make_transport(fake), retry_backoff_factor=0)
aml_client.ml_client = lambda *args, **kwargs: fake_ml
job = json.load(open({job!r}))
half = len(job["lines"]) // 2
fake.script = [("Queued", []), ("Running", job["lines"][:half]), ("Running", job["lines"][half:]),
               ("Completed", [])]
fake.outputs = {{path: base64.b64decode(data) for path, data in job["files"].items()}}
"""


def fake_job(output_dir: Path, target: Path) -> Path:
    """The fake job's log (the runner's events, as the remote runner echoes them) and output_dir files, from the
    manifest and outputs of a local run."""
    import base64

    from tunecell.cli import EVENT_PREFIX
    from tunecell.events import MetricResult, PassFinished, PassStarted, RunFinished, RunStarted, TrainStep

    m = json.loads((output_dir / "manifest.json").read_text())
    steps = [[p["name"], p["type"]] for p in m["passes"]]
    events: list[Any] = [RunStarted(m["run_id"], steps, m["config_hash"], m["model_source"])]
    events += [MetricResult("input", k, v) for k, v in m["metrics"].get("input", {}).items()]
    for i, p in enumerate(m["passes"]):
        events.append(PassStarted(p["name"], p["type"], i, len(steps)))
        n = p["stats"].get("steps") or 0
        events += [TrainStep(p["name"], k, n, 3.0 / k, 3e-4, 1000.0) for k in range(1, n + 1)]
        events.append(PassFinished(p["name"], p["type"], "done", p["duration_s"], False, "/mnt/cache/" + p["name"]))
        events += [MetricResult(p["name"], k, v) for k, v in m["metrics"].get(p["name"], {}).items()]
    events.append(RunFinished("succeeded", "/mnt/azureml/outputs/output_dir/manifest.json", m["duration_s"]))
    files = {str(f.relative_to(output_dir)): base64.b64encode(f.read_bytes()).decode()
             for f in sorted(output_dir.rglob("*")) if f.is_file() and not f.name.startswith(".")}
    target.write_text(json.dumps({"lines": [EVENT_PREFIX + e.to_json() for e in events], "files": files}))
    return target


def test_azureml_notebook_runs_against_the_fake_azureml(tone_runs: list[dict[str, Any]], tiny_model: Path,
                                                        tmp_path: Path) -> None:
    pytest.importorskip("azure.ai.ml")
    nb_source = nbformat.read(NOTEBOOKS / "azureml.ipynb", as_version=4)
    job = fake_job(tone_runs[-1]["work"] / "out" / "int4", tmp_path / "fake-job.json")
    parameters = tiny_parameters(tiny_model, tmp_path, subscription_id="00000000-0000-0000-0000-000000000000",
                                 resource_group="rg", workspace_name="ws", compute="gpu-cluster")
    (tmp_path / "data").mkdir()
    shutil.copy(NOTEBOOKS / "data" / "tones.jsonl", tmp_path / "data" / "tones.jsonl")
    at = next(i for i, c in enumerate(nb_source.cells) if "parameters" in c.metadata.get("tags", []))
    nb_source.cells[at].source = parameters
    plumbing = FAKE_AZUREML_CELL.format(tests=str(Path(__file__).resolve().parent), job=str(job))
    nb_source.cells.insert(at + 1, nbformat.v4.new_code_cell(plumbing))
    nb = run_notebook(nb_source, tmp_path, "azureml.ipynb")
    no_errors(nb)
    submit = cell_starting(nb, "%%finetune -o aml_run")
    shown = outputs_of(submit) + outputs_of(submit, "text/html")
    assert "AzureML job" in shown and "ml.azure.com" in shown
    summary = outputs_of(nb.cells[-1], "text/html")
    assert "tunecell-summary" in summary and "succeeded" in summary and "<th>int4</th>" in summary
    assert (tmp_path / "out" / "model" / "genai_config.json").is_file()  # downloaded from the job's output_dir
    generated = outputs_of(cell_starting(nb, "%%generate"))
    assert generated.count(">>> ### Text: ") == 4 and "tokens/s" in generated
    bars = progress_bars(nb)
    assert bars and all(b["value"] == b["max"] and b["bar_style"] == "success" for b in bars), bars


def test_qlora_notebook_runs_on_the_cpu(tiny_model: Path, tmp_path: Path) -> None:
    nb = execute("qlora-gpu.ipynb", tmp_path,
                 tiny_parameters(tiny_model, tmp_path, max_steps=2, eval_samples=4, learning_rate=2e-4))
    no_errors(nb)
    assert "no CUDA GPU: QLoRA trains on the CPU" in outputs_of(nb.cells[3])
    manifest = json.loads((tmp_path / "out" / "int4" / "manifest.json").read_text())
    assert [(p["name"], p["type"], p["status"]) for p in manifest["passes"]] == [
        ("lora", "QLoRA", "done"), ("merge", "MergeAdapterWeights", "done"), ("int4", "ModelBuilder", "done")]
    assert manifest["config"]["passes"]["lora"]["double_quant"] is True
    assert list(manifest["metrics"]) == ["input", "lora", "merge", "int4"]
    assert "tunecell-summary" in outputs_of(nb.cells[-1], "text/html")


# ============================================================================ %%finetune without %load_ext
LOAD_WITHOUT_LOAD_EXT = {
    "extensions": 'c.InteractiveShellApp.extensions = ["tunecell"]\n',
    "lazy_magics": 'c.MagicsManager.lazy_magics = {"finetune": "tunecell.magics", "optimize": "tunecell.magics",\n'
                   '                              "generate": "tunecell.magics", "tunecell": "tunecell.magics"}\n',
}


@pytest.mark.parametrize("setting", sorted(LOAD_WITHOUT_LOAD_EXT))
def test_magics_work_without_load_ext(setting: str, tmp_path: Path) -> None:
    """The README's two ways to have %%finetune in every notebook, in the kernel's IPython profile."""
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text(LOAD_WITHOUT_LOAD_EXT[setting], encoding="utf-8")
    config = (NOTEBOOKS / "tones.yaml").read_text(encoding="utf-8").replace("data/tones.jsonl",
                                                                            str(NOTEBOOKS / "data" / "tones.jsonl"))
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(f"%%finetune --dry-run\n{config}"),
                nbformat.v4.new_code_cell("%tunecell version")]
    nb = run_notebook(nb, tmp_path, "no-load-ext.ipynb", timeout=120)
    no_errors(nb)
    assert "1. lora [LoRA]" in outputs_of(nb.cells[0]) and "3. mb [ModelBuilder]" in outputs_of(nb.cells[0])
    assert outputs_of(nb.cells[1]).startswith("tunecell ")


# ======================================================================================= as committed
@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_committed_notebooks_are_stripped(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
            assert not set(cell.metadata) - {"tags"}, cell.metadata  # no execution timings, no collapsed/scrolled
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == (0 if name == "olive-config.ipynb" else 1)
    for cell in parameters:
        compile(cell.source, "parameters", "exec")  # plain Python assignments, as papermill expects
