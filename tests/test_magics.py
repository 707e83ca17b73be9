"""The magics through a real IPython InteractiveShell with `%load_ext tunecell`, on the tiny random Phi-3.

One shell for the module (history off, as jupysql's TestingShell), and the expensive runs shared by module-scoped
fixtures: the main `%%finetune -o ft` (LoRA + merge + evaluation, widgets progress), `%%optimize --from ft` (the
int4 ONNX build), an interrupted-then-resumed training and a background run stopped with its Cancel button.
Everything else (flags, errors, %config, %tunecell) is a dry run, an export or a cache hit.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output
from traitlets.config import Config

from fake_kernel import in_a_kernel
import tunecell
from tunecell.errors import PassFailed, TunecellError
from tunecell.runner import RunResult

DATA = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
STEPS = 4
FLAGS = ["-f", "--file", "-o", "--out", "--from", "--set", "--target", "--dry-run", "--preview", "--export",
         "--background"]

LORA_CONFIG = """\
input_model: {type: HfModel, model_path: @MODEL@}
data_configs:
  - name: tones
    type: HuggingfaceContainer
    load_dataset_config: {data_name: json, data_files: @DATA@, split: train}
    pre_process_data_config:
      text_template: "### Text: {phrase}\\n### The tone is:\\n{tone}"
      strategy: line-by-line
      max_seq_len: 64
      train_on_prompt: false
      labels: [Sad, Joy, Fear, Surprise]
passes:
  lora:
    type: LoRA
    r: @RANK@
    alpha: 8
    target_modules: [@TARGETS@]
    train_data_config: tones
    eval_dataset_size: 0.2
    training_args: {max_steps: @STEPS@, per_device_train_batch_size: 8, seed: @SEED@, logging_steps: 1}
"""
MERGE = "  merge: {type: MergeAdapterWeights}\n"
EVALUATION = """\
evaluators:
  tones_eval:
    metrics:
      - {name: accuracy, type: accuracy, data_config: tones, label_column: tone, max_new_tokens: 2, max_samples: 4}
      - {name: size, type: size_on_disk}
evaluator: tones_eval
"""


def workflow(model: Path, out: Path, *, seed: int = 0, rank: Any = 4, merge: bool = False, evaluate: bool = False,
             targets: str = "qkv_proj, o_proj", extra: str = "") -> str:
    """A tiny LoRA workflow (r 4, 4 steps of 8, max_seq_len 64) on tones.jsonl; no cache_dir (TuneCell's is used)."""
    text = (LORA_CONFIG.replace("@MODEL@", str(model)).replace("@DATA@", str(DATA)).replace("@RANK@", str(rank))
            .replace("@STEPS@", str(STEPS)).replace("@SEED@", str(seed)).replace("@TARGETS@", targets))
    return text + (MERGE if merge else "") + (EVALUATION if evaluate else "") + f"output_dir: {out}\n" + extra


# ------------------------------------------------------------------------------------------------ the shell
@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("magics")
    return {"root": root, "cache": root / "cache", "out": root / "out"}


@pytest.fixture(scope="module")
def ip(paths: dict[str, Path]) -> Iterator[InteractiveShell]:
    """A fresh InteractiveShell singleton (display() publishes through the singleton) with tunecell loaded."""
    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryAccessor.enabled = False  # no sqlite history: no "too many open files" over many shells
    shell = InteractiveShell.instance(config=config)
    shell.displayhook.flush = lambda: None  # jupysql's TestingShell: avoids a hang at exit
    shell.run_line_magic("load_ext", "tunecell")
    shell.run_line_magic("config", f"TuneCell.cache_dir = {str(paths['cache'])!r}")
    shell.run_line_magic("config", "TuneCell.progress = 'none'")
    yield shell
    shell.run_line_magic("unload_ext", "tunecell")
    InteractiveShell.clear_instance()


def magics(ip: InteractiveShell) -> Any:
    return ip.magics_manager.registry["TuneCell"]


def run(ip: InteractiveShell, line: str, body: str = "") -> tuple[Any, CapturedIO]:
    """Run `line` (a %%magic line) with `body` as one notebook cell; (ExecutionResult, captured output)."""
    with capture_output() as captured:
        result = ip.run_cell(line + "\n" + body if body else line)
    return result, captured


@contextmanager
def progress_mode(ip: InteractiveShell, mode: str) -> Iterator[None]:
    ip.run_line_magic("config", f"TuneCell.progress = {mode!r}")
    try:
        yield
    finally:
        ip.run_line_magic("config", "TuneCell.progress = 'none'")


def short_usage_error(result: Any, captured: CapturedIO) -> str:
    """The cell failed with a plain UsageError, shown as one message without a traceback; return the message."""
    assert type(result.error_in_exec) is UsageError, result.error_in_exec
    shown = captured.stdout + captured.stderr
    assert "Traceback" not in shown and "UsageError: " in shown, shown
    return str(result.error_in_exec)


# ---------------------------------------------------------------------------------------- the progress view
def widget(model_id: str) -> Any:
    from ipywidgets.widgets.widget import _instances  # model_id -> widget, what a frontend resolves too

    return _instances[model_id]


def displayed_widgets(captured: CapturedIO) -> list[Any]:
    return [widget(o.data[WIDGET_MIME]["model_id"]) for o in captured.outputs if WIDGET_MIME in o.data]


def displayed_summaries(captured: CapturedIO) -> list[dict[str, str]]:
    return [o.data for o in captured.outputs if WIDGET_MIME not in o.data and "text/html" in o.data]


class View:
    """The RunProgress view as displayed (a VBox): [HBox(header, overall bar, Cancel), passes, curve, metrics,
    log, summary]; each pass row is HBox(label, status, bar, info)."""

    def __init__(self, box: Any):
        self.box = box
        self.header, self.overall, self.cancel = box.children[0].children
        self.passes, self.curve, self.metrics, self.log, self.summary = box.children[1:6]

    def rows(self) -> dict[str, Any]:
        return {re.search(r"<b>(.*?)</b>", row.children[0].value).group(1): row for row in self.passes.children}

    def status(self, name: str) -> str:
        return re.search(r">([^<>]+)</span>", self.rows()[name].children[1].value).group(1)

    def bar(self, name: str) -> Any:
        return self.rows()[name].children[2]

    def at_step(self, name: str, step: int, action: Callable[[], None]) -> threading.Event:
        """Call ``action`` once, when pass ``name``'s bar first reaches ``step``: synchronously, in the thread that
        renders the step (the training thread, inside the Trainer's on_step_end), so the run stops at that step."""
        fired, lock, attached = threading.Event(), threading.Lock(), []

        def fire() -> None:
            with lock:
                if fired.is_set():
                    return
                fired.set()
            action()

        def on_value(change: dict) -> None:
            if change["new"] >= step:
                fire()

        def attach(_change: Any = None) -> None:
            row = self.rows().get(name)
            with lock:
                if row is None or attached:
                    return
                attached.append(row)
            bar = row.children[2]
            bar.observe(on_value, "value")
            if bar.value >= step:
                fire()

        self.passes.observe(attach, "children")
        attach()
        return fired


@contextmanager
def on_display(ip: InteractiveShell, callback: Callable[[Any], None]) -> Iterator[CapturedIO]:
    """capture_output, also calling ``callback(widget)`` the moment a widget is displayed (before the run starts)."""
    with capture_output() as captured:
        publisher = ip.display_pub
        publish = publisher.publish

        def publish_and_call(data: dict, *args: Any, **kwargs: Any) -> None:
            publish(data, *args, **kwargs)
            if WIDGET_MIME in data:
                callback(widget(data[WIDGET_MIME]["model_id"]))

        publisher.publish = publish_and_call
        yield captured


def sigint(times: int = 1) -> Callable[[], None]:
    """A kernel interrupt (SIGINT, what Jupyter sends), ``times`` times: once asks training to stop at the step's
    end; twice raises KeyboardInterrupt at once. Only while training's own SIGINT handler is installed: anywhere
    else the default handler would raise KeyboardInterrupt into the test instead."""
    def interrupt() -> None:
        for _ in range(times):
            handler = signal.getsignal(signal.SIGINT)
            if callable(handler) and handler is not signal.default_int_handler:
                signal.raise_signal(signal.SIGINT)
    return interrupt


# ------------------------------------------------------------------------------------------- shared runs
@pytest.fixture(scope="module")
def main_cell(tiny_model: Path, paths: dict[str, Path]) -> str:
    return workflow(tiny_model, paths["out"] / "main", rank="{{ lora_rank }}", merge=True, evaluate=True)


@pytest.fixture(scope="module")
def main_run(ip: InteractiveShell, main_cell: str) -> tuple[Any, CapturedIO]:
    """`%%finetune -o ft` in widgets mode, r filled from the namespace: LoRA (4 steps), merge, evaluation."""
    ip.user_ns["lora_rank"] = 4
    with progress_mode(ip, "widgets"):
        result, captured = run(ip, "%%finetune -o ft", main_cell)
    assert result.error_in_exec is None, captured.stdout + captured.stderr
    return result, captured


@pytest.fixture(scope="module")
def ft(main_run: Any, ip: InteractiveShell) -> RunResult:
    return ip.user_ns["ft"]


@pytest.fixture(scope="module")
def optimized(ip: InteractiveShell, ft: RunResult, paths: dict[str, Path]) -> tuple[RunResult, CapturedIO]:
    """`%%optimize --from ft -o opt` in text mode: only the int4 ModelBuilder pass runs."""
    body = f"passes:\n  mb: {{type: ModelBuilder, precision: int4}}\noutput_dir: {paths['out'] / 'onnx'}\n"
    with progress_mode(ip, "text"):
        result, captured = run(ip, "%%optimize --from ft -o opt", body)
    assert result.error_in_exec is None, captured.stdout + captured.stderr
    return ip.user_ns["opt"], captured


# ====================================================================================== loading and help
def test_load_ext_imports_nothing_heavy(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import json, sys, time
        from traitlets.config import Config
        from IPython.core.interactiveshell import InteractiveShell
        config = Config()
        config.HistoryAccessor.enabled = False
        ip = InteractiveShell.instance(config=config)
        started = time.perf_counter()
        ip.run_line_magic("load_ext", "tunecell")
        took = time.perf_counter() - started
        ip.run_cell_magic("finetune", "--dry-run", sys.argv[1])
        ip.run_line_magic("tunecell", "status")
        ip.run_line_magic("unload_ext", "tunecell")
        unloaded = ip.find_cell_magic("finetune") is None and ip.find_line_magic("tunecell") is None
        ip.run_line_magic("load_ext", "tunecell")
        heavy = ("torch", "transformers", "datasets", "peft", "accelerate", "onnxruntime", "onnxruntime_genai",
                 "azure")
        print(json.dumps({"took": took, "unloaded": unloaded, "magics": sorted(ip.magics_manager.magics["cell"]),
                          "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
    """)
    cell = workflow(Path("HuggingFaceTB/SmolLM2-135M-Instruct"), tmp_path / "out", merge=True, evaluate=True)
    done = subprocess.run([sys.executable, "-c", script, cell], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and report["unloaded"]
    assert {"finetune", "optimize", "generate"} <= set(report["magics"])
    assert "1. lora [LoRA]" in done.stdout  # the dry run ran
    print(f"%load_ext tunecell: {report['took'] * 1000:.0f} ms")


def test_magics_are_registered(ip: InteractiveShell) -> None:
    for name in ("finetune", "optimize", "generate"):
        assert ip.find_cell_magic(name) is not None
    for name in ("tunecell", "finetune", "optimize"):  # %finetune -f FILE, %optimize --from NAME
        assert ip.find_line_magic(name) is not None


@pytest.mark.parametrize("magic", ["finetune", "optimize"])
def test_help_lists_every_flag(ip: InteractiveShell, magic: str) -> None:
    doc = ip.find_cell_magic(magic).__doc__
    assert f"%%{magic} [-f FILE]" in doc
    for flag in FLAGS:
        assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", doc), flag
    result, captured = run(ip, f"%%{magic}?")
    assert result.error_in_exec is None
    for flag in FLAGS:
        assert flag in captured.stdout, flag
    assert "--dry-run             validate, show the plan" in captured.stdout


def test_generate_and_tunecell_help(ip: InteractiveShell) -> None:
    doc = ip.find_cell_magic("generate").__doc__
    assert "%%generate" in doc and "--model" in doc and "--max-new-tokens" in doc
    doc = ip.find_line_magic("tunecell").__doc__
    for word in ("status", "runs", "cancel", "logs", "export", "cache", "version"):
        assert word in doc


@pytest.mark.parametrize("line", ["%%finetune --bogus", "%%optimize --dry-run --nope 3", "%%finetune -x",
                                  "%%generate --model x --temperature 2", "%%finetune extra words"])
def test_unknown_flags_are_a_usage_error(ip: InteractiveShell, main_cell: str, line: str) -> None:
    message = short_usage_error(*run(ip, line, main_cell))
    assert "unrecognized arguments" in message
    with pytest.raises(UsageError, match="unrecognized arguments"):
        ip.run_cell_magic(line[2:].split()[0], line.split(" ", 1)[1], main_cell)


# ================================================================================ flags that run nothing
def test_dry_run_prints_the_plan_and_runs_nothing(ip: InteractiveShell, main_cell: str, tiny_model, paths) -> None:
    ip.user_ns["lora_rank"] = 4
    runs = dict(magics(ip).runs)
    result, captured = run(ip, "%%finetune --dry-run", main_cell)
    assert result.error_in_exec is None and result.result is None
    out = captured.stdout
    for text in (f"input model: {tiny_model}", "target: local (cpu); host: local",
                 "1. lora [LoRA] <- input_model: hf -> adapter", "     r: 4",
                 "training_args.max_steps: 4", "2. merge [MergeAdapterWeights] <- lora: adapter -> hf",
                 "evaluate (tones_eval): accuracy, size", f"cache: {paths['cache']}"):
        assert text in out, text
    assert magics(ip).runs == runs and captured.outputs == [] and captured.stderr == ""


def test_dry_run_from_a_run_plans_only_the_passes_left(ip: InteractiveShell, ft: RunResult, paths) -> None:
    body = f"passes:\n  mb: {{type: ModelBuilder, precision: int4}}\noutput_dir: {paths['out'] / 'onnx'}\n"
    result, captured = run(ip, "%%optimize --dry-run --from ft", body)
    assert result.error_in_exec is None, captured.stderr
    out = captured.stdout
    assert out.startswith(f"input model: the model of ft (run {ft.run_id}): {ft.model_path}\n"), out
    assert "1. mb [ModelBuilder] <- merge: " in out and "[LoRA]" not in out and "[MergeAdapterWeights]" not in out


def test_set_overrides_keys(ip: InteractiveShell, main_cell: str) -> None:
    ip.user_ns["lora_rank"] = 4
    line = ("%%finetune --dry-run --set passes.lora.r=8 --set passes.lora.training_args.max_steps=2 "
            "--set clean_cache=true")
    result, captured = run(ip, line, main_cell)
    assert result.error_in_exec is None
    assert "     r: 8" in captured.stdout and "training_args.max_steps: 2" in captured.stdout
    for bad, expected in [("--set passes.lora.nope=1", "passes.lora.nope"), ("--set passes.lora.r", "key.path=value"),
                          ("--set passes.lora.r=-3", "passes.lora.r"), ("--set passes.nothere.r=1", "nothere")]:
        message = short_usage_error(*run(ip, f"%%finetune --dry-run {bad}", main_cell))
        assert expected in message, message


def test_the_line_is_split_as_a_shell_splits_it(ip: InteractiveShell, main_cell: str, paths) -> None:
    ip.user_ns["lora_rank"] = 4
    target = paths["root"] / "quoted export" / "my file.yaml"
    line = (f"%%finetune --export '{target}' --set 'passes.lora.target_modules=[q_proj, v_proj]' "
            "--set workflow_id='my run' --set \"passes.lora.training_args.lr_scheduler_type=cosine\"")
    result, captured = run(ip, line, main_cell)
    assert result.error_in_exec is None, captured.stderr
    config = tunecell.load_config(target)
    assert config.passes["lora"].target_modules == ["q_proj", "v_proj"] and config.workflow_id == "my run"
    assert config.passes["lora"].training_args.lr_scheduler_type == "cosine"
    out = run(ip, "%%finetune --dry-run --set 'passes.lora.training_args.optim=\"adamw_torch\"'", main_cell)[1].stdout
    assert "optim: adamw_torch" in out, out  # the quoting the --set hint suggests
    assert "No closing quotation" in short_usage_error(*run(ip, "%%finetune --dry-run --set 'x=1", main_cell))


def test_on_windows_a_backslash_in_the_line_is_a_path_s_not_an_escape(monkeypatch) -> None:
    import os

    from tunecell.magics.magic import TuneCell, _arguments

    line = r'-f "C:\my dir\c.yaml" --set "k=[a, b]" --set d=C:\data\x.jsonl'
    monkeypatch.setattr(os, "name", "nt")
    args = _arguments(TuneCell.finetune, line)
    assert args.file == r"C:\my dir\c.yaml" and args.set == ["k=[a, b]", r"d=C:\data\x.jsonl"]
    monkeypatch.undo()
    assert _arguments(TuneCell.finetune, line).set[1] == "d=C:datax.jsonl"  # POSIX: an escape, as in a shell


def test_target_overrides_host_and_target(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    systems = "systems:\n  aml: {type: AzureML, aml_compute: gpu}\n  other: {type: AzureML, aml_compute: big}\n"
    remote = workflow(tiny_model, paths["out"] / "t", extra=systems + "host: aml\ntarget: aml\n")
    plain = workflow(tiny_model, paths["out"] / "t", extra=systems)
    out = run(ip, "%%finetune --dry-run", remote)[1].stdout
    assert "target: aml (cuda); host: aml" in out
    out = run(ip, "%%finetune --dry-run --target local", remote)[1].stdout
    assert "target: local (cpu); host: local" in out
    out = run(ip, "%%finetune --dry-run --target other", plain)[1].stdout
    assert "target: other (cuda); host: other" in out
    message = short_usage_error(*run(ip, "%%finetune --dry-run --target nowhere", plain))
    assert "host" in message and "'nowhere'" in message and "known systems: aml, other" in message
    # %config TuneCell.default_target applies where the config names no target, never over one it names
    ip.run_line_magic("config", "TuneCell.default_target = 'other'")
    try:
        assert "host: other" in run(ip, "%%finetune --dry-run", plain)[1].stdout
        assert "host: aml" in run(ip, "%%finetune --dry-run", remote)[1].stdout
        assert "host: local" in run(ip, "%%finetune --dry-run --target local", remote)[1].stdout
    finally:
        ip.run_line_magic("config", "TuneCell.default_target = 'local'")


def test_export_yaml_loads_back_the_same_and_json_is_olive_013_with_notes(ip, main_cell: str, paths) -> None:
    ip.user_ns["lora_rank"] = 4
    runs = dict(magics(ip).runs)
    expected = tunecell.load_config(main_cell, ip.user_ns)
    expected.cache_dir = str(paths["cache"])  # %config TuneCell.cache_dir, the config naming none
    target = paths["root"] / "export/tones.yaml"
    result, captured = run(ip, f"%%finetune --export {target}", main_cell)
    assert result.error_in_exec is None and captured.stdout.strip() == f"wrote {target}"
    assert tunecell.load_config(target).model_dump() == expected.model_dump()

    target = paths["root"] / "export/tones.json"
    result, captured = run(ip, f"%%finetune --export {target}", main_cell)
    assert result.error_in_exec is None
    lines = captured.stdout.strip().splitlines()
    assert lines[0] == f"wrote {target}"
    ignored = [line.split(": Olive 0.13 ignores it;")[0] for line in lines[1:]]
    assert ignored == ["note: passes.lora.eval_dataset_size",
                       "note: data_configs.tones.pre_process_data_config.train_on_prompt",
                       "note: data_configs.tones.pre_process_data_config.labels",
                       "note: evaluators.tones_eval.metrics.accuracy.label_column",
                       "note: evaluators.tones_eval.metrics.accuracy.max_new_tokens",
                       "note: evaluators.tones_eval.metrics.accuracy.max_samples"], lines
    assert "no prompt masking" in lines[2]
    olive = json.loads(target.read_text())
    assert olive["passes"]["lora"]["type"] == "LoRA" and olive["input_model"]["type"] == "HfModel"
    metrics = olive["evaluators"]["tones_eval"]["metrics"]
    assert [m["sub_types"] for m in metrics] == [[{"name": "accuracy_score", "priority": 1}],
                                                 [{"name": "bytes", "priority": 2}]]  # Olive: unique, 1..N
    assert olive["passes"]["lora"]["training_args"]["warmup_ratio"] == 0  # Olive's default is 0.03
    again = tunecell.load_config(target)  # the keys Olive ignores stay in the file: tunecell reads the same run
    assert again.passes == expected.passes and again.data_configs == expected.data_configs
    assert [m.priority for m in again.evaluators["tones_eval"].metrics] == [1, 2]
    assert magics(ip).runs == runs  # exporting runs nothing
    message = short_usage_error(*run(ip, f"%%finetune --export {paths['root'] / 'tones.txt'}", main_cell))
    assert ".json" in message and ".yaml" in message


def test_file_with_body_overriding_keys(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    base = paths["root"] / "base.yaml"
    base.write_text(workflow(tiny_model, paths["out"] / "f", rank=16, merge=True), encoding="utf-8")
    out = run(ip, f"%%finetune --dry-run -f {base}", "passes:\n  lora: {r: 2}\n")[1].stdout
    assert "     r: 2" in out and "training_args.max_steps: 4" in out and "2. merge" in out
    out = run(ip, f"%%finetune --dry-run --file {base} --set passes.lora.alpha=3", "passes: {lora: {r: 5}}")[1].stdout
    assert "     r: 5" in out and "alpha: 3.0" in out
    # no body: the line magic runs the file as it is (IPython refuses a %%cell magic with an empty body)
    result, captured = run(ip, f"%finetune --dry-run -f {base}")
    assert result.error_in_exec is None and "     r: 16" in captured.stdout
    message = short_usage_error(*run(ip, f"%%finetune --dry-run -f {paths['root'] / 'missing.yaml'}", "passes: {}"))
    assert "config file not found" in message
    message = short_usage_error(*run(ip, "%finetune --dry-run"))
    assert "the cell has no config" in message


def test_preview_returns_the_preview_widget_and_trains_nothing(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    from tunecell.widgets import PreviewWidget

    result, captured = run(ip, "%%finetune --preview", workflow(tiny_model, paths["out"] / "preview"))
    assert result.error_in_exec is None, captured.stderr
    assert isinstance(result.result, PreviewWidget)
    assert "tones" in result.result.children[0].value
    assert not (paths["out"] / "preview").exists()


def test_preview_applies_set_and_writes_a_cell_that_runs(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    body = workflow(tiny_model, paths["out"] / "preview")
    result, captured = run(ip, "%%finetune --preview -o p", body)
    assert result.error_in_exec is None, captured.stderr
    result.result.buttons["write"].click()
    line, text = ip.rl_next_input.split("\n", 1)
    assert line == "%%finetune -o p" and text.startswith("input_model:")  # trains when run; the body as written

    key = "data_configs.tones.pre_process_data_config.max_seq_len"
    result, captured = run(ip, f"%%finetune --preview --set {key}=16 -o p", body)
    assert result.error_in_exec is None, captured.stderr
    shown = result.result
    assert shown.max_seq_len == 16  # the override, not the body's 64
    shown.max_seq_len = 32
    shown.buttons["write"].click()
    line, text = ip.rl_next_input.split("\n", 1)
    assert line == "%%finetune -o p"  # the written config has --set applied: kept, it would undo the change to 32
    assert tunecell.load_config(text).data_configs[0].pre_process_data_config.max_seq_len == 32


def test_preview_write_clicked_after_the_cell_ran_waits_for_that_cell(ip: InteractiveShell, tiny_model: Path, paths,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """In Jupyter the click is a comm message: a set_next_input payload would ride on the reply of whichever cell
    runs next, and the config land below that one. As the form's Apply, it waits for the preview's own cell."""
    kernel, written = in_a_kernel(ip, monkeypatch)
    body = workflow(tiny_model, paths["out"] / "preview-later")
    shown = run(ip, "%%finetune --preview", body)[0].result
    kernel.header = {"msg_type": "comm_msg", "msg_id": "click-1"}  # Write config, clicked later
    shown.buttons["write"].click()
    assert written == [] and "run this cell again" in shown.config_box.value
    kernel.header = {"msg_type": "execute_request", "msg_id": "run-2"}
    result, captured = run(ip, "%%finetune --preview", body)  # the preview's cell, run again
    assert written == [(f"%%finetune\n{shown.config_text}", False)]  # a new cell below it
    assert "the cell below holds the config" in captured.stdout


def test_magic_line_is_not_brace_expanded(ip: InteractiveShell, main_cell: str, paths) -> None:
    ip.user_ns.update(lora_rank=4, x="EXPANDED")
    folder = paths["root"] / "literal"
    for line in (f"%%finetune --export {folder}/{{x}}.yaml", f"%%optimize --export {folder}/$x.json"):
        result, captured = run(ip, line, main_cell)
        assert result.error_in_exec is None, captured.stderr
    ip.run_cell_magic("finetune", f"--export {folder}/{{x}}-direct.yaml", main_cell)
    assert sorted(p.name for p in folder.iterdir()) == ["$x.json", "{x}-direct.yaml", "{x}.yaml"]


def test_body_is_filled_from_the_namespace(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    ip.user_ns.update(lora_rank=12, steps=3, modules=["qkv_proj"])
    body = workflow(tiny_model, paths["out"] / "ns", rank="{{ lora_rank * 2 }}", targets="{{ modules | join(', ') }}")
    body = body.replace(f"max_steps: {STEPS}", "max_steps: {{ steps }}")
    out = run(ip, "%%finetune --dry-run", body)[1].stdout
    assert "     r: 24" in out and "training_args.max_steps: 3" in out and "target_modules: ['qkv_proj']" in out
    del ip.user_ns["steps"]
    message = short_usage_error(*run(ip, "%%finetune --dry-run", body))
    assert "{{ steps }} is not defined in the notebook namespace" in message
    assert re.search(r"line \d+", message) and "hint" in message


# ============================================================================================ error paths
def test_config_errors_are_short_usage_errors_with_key_and_line(ip: InteractiveShell, main_cell: str) -> None:
    ip.user_ns["lora_rank"] = 4
    cases = [
        (main_cell.replace("alpha: 8", "alpah: 8"), r"passes\.lora\.alpah \(line 16, column 5\): unknown key",
         "did you mean 'alpha'"),
        (main_cell.replace("max_seq_len: 64", "max_seq_len: 2"),
         r"max_seq_len \(line 9, column 7\): Input should be greater than or equal to 8", None),
        (main_cell.replace("    eval_dataset_size: 0.2\n", ""), r"accuracy on 'tones' would be measured on rows",
         "eval_dataset_size"),
        ("- a\n- b\n", r"line 1: the config must be a mapping", "input_model"),
        ("input_model: {model_path: [unclosed\n", r"line \d", None),
    ]
    for body, pattern, hint in cases:
        message = short_usage_error(*run(ip, "%%finetune", body))
        assert re.search(pattern, message), message
        if hint:
            assert hint in message, message
        with pytest.raises(UsageError, match=pattern):
            ip.run_cell_magic("finetune", "", body)


def test_missing_data_and_model_are_short_usage_errors(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    body = workflow(tiny_model, paths["out"] / "err").replace("tones.jsonl", "no-such-file.jsonl")
    message = short_usage_error(*run(ip, "%%finetune", body))
    assert "no-such-file.jsonl: file not found" in message
    assert "relative paths" not in message  # the path was absolute
    body = workflow(paths["root"] / "no-model", paths["out"] / "err")
    message = short_usage_error(*run(ip, "%%finetune", body))
    assert "no-model" in message and "was not found" in message
    message = short_usage_error(*run(ip, "%%optimize --from nothing", "passes: {}"))
    assert "no run result called 'nothing'" in message


def test_config_error_inside_a_pass_names_the_key(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    body = workflow(tiny_model, paths["out"] / "modules", targets="q_proj")
    with progress_mode(ip, "none"):
        result, captured = run(ip, "%%finetune -o bad_modules", body)
    message = short_usage_error(result, captured)
    assert "pass 'lora' (LoRA) failed" in message and "passes.lora.target_modules" in message
    assert "qkv_proj" in message  # the modules the model has
    assert displayed_widgets(captured) == [] and "[1/1]" not in captured.stderr  # progress 'none': nothing shown
    assert ip.user_ns["bad_modules"].status == "failed"


def test_a_failed_pass_leaves_the_summary_then_the_short_error(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    body = workflow(tiny_model, paths["out"] / "modules", targets="q_proj")
    result, captured = run(ip, "%%finetune", body)
    assert "pass 'lora' (LoRA) failed" in short_usage_error(result, captured)
    (summary,) = displayed_summaries(captured)  # what a saved notebook keeps of the run
    assert re.match(r"tunecell run \S+: failed", summary["text/plain"])
    assert re.search(r"lora\s+LoRA\s+failed", summary["text/plain"]) and "target_modules" in summary["text/html"]


def test_a_run_that_fails_before_it_starts_shows_why_in_its_view(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    body = workflow(tiny_model, paths["out"] / "err").replace("tones.jsonl", "no-such-file.jsonl")
    with progress_mode(ip, "widgets"):
        result, captured = run(ip, "%%finetune", body)
    assert "no-such-file.jsonl: file not found" in short_usage_error(result, captured)
    view = View(displayed_widgets(captured)[0])
    assert "failed" in view.header.value and view.overall.bar_style == "danger"
    assert "no-such-file.jsonl: file not found" in view.summary.value

    with progress_mode(ip, "widgets"):
        result, captured = run(ip, "%%finetune --background", body)
    handle = result.result
    with pytest.raises(TunecellError, match="file not found"):
        handle.wait(timeout=60)
    view = View(displayed_widgets(captured)[0])
    assert "failed" in view.header.value and view.cancel.disabled
    assert "no-such-file.jsonl: file not found" in view.summary.value
    logs = run(ip, f"%tunecell logs {handle.id}")[1].stdout
    assert logs.startswith("error: ") and "no-such-file.jsonl: file not found" in logs


def test_a_ctrl_c_before_the_run_starts_shows_interrupted_not_failed(ip: InteractiveShell, tiny_model: Path, paths,
                                                                     monkeypatch) -> None:
    from tunecell.runner import preflight

    def ctrl_c(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(preflight, "check", ctrl_c)  # the user's Ctrl-C while the run checks its files
    with progress_mode(ip, "widgets"):
        result, captured = run(ip, "%%finetune", workflow(tiny_model, paths["out"] / "ctrl-c"))
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    view = View(displayed_widgets(captured)[0])
    assert "interrupted" in view.header.value and "failed" not in view.header.value
    assert "interrupted before the run started" in view.summary.value


def test_failed_pass_is_short_then_real_with_short_errors_off(ip: InteractiveShell, ft: RunResult, paths) -> None:
    gone = paths["root"] / "deleted-model"
    ip.user_ns["broken"] = replace(ft, final={**ft.final, "path": str(gone), "identity": "deleted"})
    body = f"passes:\n  mb: {{type: ModelBuilder, precision: int4}}\noutput_dir: {paths['out'] / 'broken'}\n"
    result, captured = run(ip, "%%optimize --from broken -o failed", body)
    message = short_usage_error(result, captured)
    assert message.startswith("pass 'mb' (ModelBuilder) failed: ")
    assert "%config TuneCell.short_errors = False" in message and len(message.splitlines()) <= 6
    failed = ip.user_ns["failed"]
    assert failed.status == "failed" and failed.error and [p.status for p in failed.passes][-1] == "failed"

    ip.run_line_magic("config", "TuneCell.short_errors = False")
    try:
        result, captured = run(ip, "%%optimize --from broken", body)
        error = result.error_in_exec
        assert isinstance(error, PassFailed) and error.pass_name == "mb"
        real = type(error.__cause__).__name__
        assert error.__cause__ is error.error and real not in ("PassFailed", "UsageError")
        shown = captured.stdout + captured.stderr
        assert "Traceback" in shown and real in shown and "PassFailed" in shown
        with pytest.raises(PassFailed) as raised:
            ip.run_cell_magic("optimize", "--from broken", body)
        assert type(raised.value.__cause__).__name__ == real
    finally:
        ip.run_line_magic("config", "TuneCell.short_errors = True")


# ================================================================================= the main run and its view
def test_finetune_stores_its_result_in_the_namespace(ft: RunResult, ip: InteractiveShell, paths) -> None:
    assert isinstance(ft, RunResult) and ft.status == "succeeded"
    assert [(p.name, p.status) for p in ft.passes] == [("lora", "done"), ("merge", "done")]
    assert ft.config.passes["lora"].r == 4  # {{ lora_rank }} filled from the namespace
    assert ft.config.cache_dir == str(paths["cache"])  # %config TuneCell.cache_dir
    assert ft.passes[0].stats["steps"] == STEPS and ft.passes[0].stats["resumed_from"] is None
    assert set(ft.metrics) == {"input", "merge"} and set(ft.metrics["merge"]) == {"accuracy", "size"}
    for name in ("model", "adapter"):
        assert Path(ft.artifacts[name]).is_dir()
    assert ft.manifest["run_id"] == ft.run_id
    assert magics(ip).runs[ft.run_id] is ft


def test_progress_widget_at_the_end_of_a_run(main_run: Any) -> None:
    _, captured = main_run
    (box,) = displayed_widgets(captured)
    view = View(box)
    assert list(view.rows()) == ["lora", "merge"]
    for name in ("lora", "merge"):
        bar = view.bar(name)
        assert view.status(name) == "done"
        assert bar.value == bar.max and bar.bar_style == "success", name
    assert view.bar("lora").max == STEPS
    assert view.overall.value == view.overall.max == 2 and view.overall.bar_style == "success"
    assert "succeeded" in view.header.value and view.cancel.disabled
    assert "<svg" in view.curve.value and "lora" in view.curve.value  # the loss curve
    assert "accuracy" in view.metrics.value and "merge" in view.metrics.value
    assert "resuming" not in view.log.children[0].value


def test_a_run_in_the_cell_has_no_cancel_button(main_run: Any) -> None:
    """The kernel would handle a click only once the cell has ended: the kernel interrupt stops such a run."""
    (box,) = displayed_widgets(main_run[1])
    assert View(box).cancel.layout.display == "none"


def test_a_missed_goal_fails_the_cell_after_the_summary(ip: InteractiveShell, main_cell: str, ft, paths) -> None:
    ip.user_ns["lora_rank"] = 4
    body = main_cell.replace("type: size_on_disk}", "type: size_on_disk, goal: {type: threshold, value: 0.001}}")
    body = body.replace(str(paths["out"] / "main"), str(paths["out"] / "goal"))
    result, captured = run(ip, "%%finetune -o missed", body)
    assert re.match(r"goal missed: size = [\d.]+, goal: <= 0\.001$", short_usage_error(result, captured))
    assert ip.user_ns["missed"].status == "failed"
    (summary,) = displayed_summaries(captured)
    assert "goal missed: size" in summary["text/plain"]


def test_static_summary_text_plain_and_html(main_run: Any, ft: RunResult) -> None:
    _, captured = main_run
    kinds = ["widget" if WIDGET_MIME in o.data else "summary" for o in captured.outputs]
    assert kinds == ["widget", "summary"]  # the live view, then the summary that a saved notebook keeps
    assert captured.outputs[0].data["text/plain"].startswith("tunecell run: live progress")  # not VBox(children=...
    (summary,) = displayed_summaries(captured)
    text = summary["text/plain"]
    assert text.startswith(f"tunecell run {ft.run_id}: succeeded")
    assert re.search(r"lora\s+LoRA\s+done", text) and re.search(r"merge\s+MergeAdapterWeights\s+done", text)
    training = rf"loss [\d.]+, {STEPS} steps, [\d,]+ tokens/s"  # the LoRA pass's final numbers
    assert re.search(rf"lora\s+LoRA\s+done\s+[\d.]+ s  {training}$", text, re.M)
    assert re.search(rf"<td>{training}</td>", summary["text/html"])
    assert re.search(r"metric\s+input\s+merge", text) and re.search(r"accuracy\s+\S+\s+\S+", text)
    assert re.search(r"size\s+[\d.]+\s+[\d.]+", text)
    assert f"config hash: {ft.config_hash[:16]}" in text and "model: " in text and "weights: local folder" in text
    html = summary["text/html"]
    assert "<table>" in html and "succeeded" in html and "accuracy" in html and ft.config_hash[:16] in html


def test_cached_rerun_in_the_background(ip: InteractiveShell, main_cell: str, ft: RunResult) -> None:
    from tunecell.magics.background import BackgroundRun

    with progress_mode(ip, "widgets"):
        result, captured = run(ip, "%%finetune --background -o again", main_cell)
    handle = result.result
    assert isinstance(handle, BackgroundRun) and ip.user_ns["again"] is handle
    assert re.search(rf"running in the background as {handle.id}", captured.stdout)
    rerun = handle.wait(timeout=120)
    assert handle.done and handle.status == "succeeded" and handle.run_id == rerun.run_id
    assert [(p.status, p.cache_hit) for p in rerun.passes] == [("cached", True), ("cached", True)]
    assert rerun.metrics == ft.metrics and rerun.config_hash == ft.config_hash
    assert repr(handle) == repr(rerun)
    view = View(displayed_widgets(captured)[0])
    for name in ("lora", "merge"):
        assert view.status(name) == "cached" and view.bar(name).value == view.bar(name).max
        assert view.bar(name).bar_style == "success"
    assert view.overall.bar_style == "success"
    status = run(ip, "%tunecell status")[1].stdout
    assert f"{handle.id}: succeeded (run {rerun.run_id})" in status.splitlines()
    assert status.count(rerun.run_id) == 1  # not a second line under the run's own id


def test_optimize_from_runs_only_the_remaining_passes(optimized: Any, ft: RunResult) -> None:
    opt, captured = optimized
    assert opt.status == "succeeded"
    assert [(p.name, p.status) for p in opt.passes] == [("lora", "done"), ("merge", "done"), ("mb", "done")]
    assert opt.passes[:2] == ft.passes  # carried over, not rerun
    err = captured.stderr  # progress 'text': a line per pass on stderr, only the one pass that ran
    assert "[1/1] mb (ModelBuilder) ..." in err and "lora (LoRA)" not in err and "run succeeded" in err
    assert displayed_widgets(captured) == [] and len(displayed_summaries(captured)) == 1
    assert set(opt.metrics) == {"input", "merge", "mb"} and opt.metrics["merge"] == ft.metrics["merge"]
    assert (Path(opt.artifacts["model"]) / "genai_config.json").is_file()


def test_generate_from_a_run_result_and_from_a_path(ip: InteractiveShell, ft: RunResult, optimized: Any) -> None:
    opt, _ = optimized
    result, captured = run(ip, "%%generate --model ft --max-new-tokens 3", "hello there\n\nThe module provides\n")
    assert result.error_in_exec is None, captured.stderr
    out = captured.stdout
    assert out.count(">>> ") == 2 and ">>> hello there" in out and ">>> The module provides" in out
    counts = [int(n) for n in re.findall(r"\((\d+) tokens, [\d.]+ tokens/s\)", out)]
    assert len(counts) == 2 and all(0 <= n <= 3 for n in counts), out

    onnx = opt.artifacts["model"]
    result, captured = run(ip, f"%%generate --model {onnx} --max-new-tokens 2", "### Text: we won\\n### The tone is:")
    assert result.error_in_exec is None, captured.stderr
    assert ">>> ### Text: we won\n### The tone is:" in captured.stdout  # \n in a prompt line is a newline
    assert re.search(r"\([0-2] tokens, [\d.]+ tokens/s\)", captured.stdout)
    assert any(m.kind == "onnx" for _, m in magics(ip)._models.values())

    result, captured = run(ip, "%%generate --max-new-tokens 1", "café\\nnaïve")  # no --model: the session's last run
    assert result.error_in_exec is None and ">>> café\nnaïve\n" in captured.stdout, captured.stdout
    message = short_usage_error(*run(ip, "%%generate --model nowhere", "hi"))
    assert "--model nowhere" in message
    with pytest.raises(UsageError, match="produced no model"):
        ip.user_ns["no_model"] = replace(ft, artifacts={}, final=None, run_id="x")
        ip.run_cell_magic("generate", "--model no_model", "hi")


def test_generate_reloads_a_model_folder_written_again(ip: InteractiveShell, tiny_model: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from tunecell import inference

    loaded, load = [], inference.load_model
    monkeypatch.setattr(inference, "load_model", lambda path: loaded.append(path) or load(path))
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder, copy_function=shutil.copy)
    for _ in range(2):
        result, captured = run(ip, f"%%generate --model {folder} --max-new-tokens 1", "hello")
        assert result.error_in_exec is None, captured.stderr
    assert len(loaded) == 1  # unchanged: loaded once
    shutil.rmtree(folder)
    shutil.copytree(tiny_model, folder, copy_function=shutil.copy)  # a retrain writes a new model there
    run(ip, f"%%generate --model {folder} --max-new-tokens 1", "hello")
    assert len(loaded) == 2


def test_generate_from_an_output_folder_and_its_short_errors(ip: InteractiveShell, ft: RunResult, optimized: Any,
                                                             tmp_path: Path) -> None:
    output_dir = Path(ft.artifacts["model"]).parent  # holds model/, adapter/ and manifest.json
    result, captured = run(ip, f"%%generate --model {output_dir} --max-new-tokens 1", "hello")
    assert result.error_in_exec is None and ">>> hello" in captured.stdout, captured.stderr
    message = short_usage_error(*run(ip, f"%%generate --model {tmp_path}", "hello"))
    assert message.startswith(f"--model {tmp_path}: ") and "holds neither an ONNX model" in message
    for n in (0, -2):
        assert f"--max-new-tokens {n}: give 1 or more" in short_usage_error(
            *run(ip, f"%%generate --model ft --max-new-tokens {n}", "hello"))
    message = short_usage_error(*run(ip, "%%generate --model opt", "word " * 600))  # int4 ONNX: 512 positions
    assert re.match(r"the prompt is \d+ tokens and 1 new one must follow it; the model's context holds 512", message)


# ======================================================================================== stop and resume
@pytest.fixture(scope="module")
def interrupt_cell(tiny_model: Path, paths) -> str:
    return workflow(tiny_model, paths["out"] / "interrupt", seed=7)


def interrupt_at(ip: InteractiveShell, cell: str, step: int, times: int) -> tuple[Any, CapturedIO, View, Any]:
    """Run `%%finetune -o resumed` in widgets mode, sending SIGINT ``times`` times when training reaches ``step``."""
    views: list[View] = []

    def watch(box: Any) -> None:
        views.append(View(box))
        views[-1].fired = views[-1].at_step("lora", step, sigint(times))

    handler = signal.getsignal(signal.SIGINT)
    with progress_mode(ip, "widgets"), on_display(ip, watch) as captured:
        result = ip.run_cell("%%finetune -o resumed\n" + cell)
    assert views[0].fired.is_set()
    return result, captured, views[0], handler


@pytest.fixture(scope="module")
def interrupted(ip: InteractiveShell, interrupt_cell: str) -> tuple[Any, CapturedIO, View, Any]:
    """Interrupted once at step 1: training stops cleanly at the end of the step and keeps a checkpoint."""
    return interrupt_at(ip, interrupt_cell, step=1, times=1)


@pytest.fixture(scope="module")
def interrupted_twice(ip: InteractiveShell, interrupt_cell: str, interrupted: Any) -> tuple[Any, CapturedIO, View, Any]:
    """The same cell again: it resumes from checkpoint-1; then two interrupts at step 2 (a KeyboardInterrupt inside
    the Trainer's step callback) still leave a checkpoint."""
    return interrupt_at(ip, interrupt_cell, step=2, times=2)


def test_interrupt_during_training_keeps_a_checkpoint(interrupted: Any, ip: InteractiveShell) -> None:
    result, captured, view, handler = interrupted
    message = short_usage_error(result, captured)
    assert re.match(r"interrupted; checkpoint saved in .*checkpoint-1\. Run the cell again to resume\.$", message)
    first = ip.user_ns["resumed"]
    assert first.status == "interrupted" and first.checkpoint.endswith("checkpoint-1")
    assert [(p.name, p.status) for p in first.passes] == [("lora", "interrupted")]
    assert view.status("lora") == "interrupted" and view.bar("lora").bar_style == "warning"
    assert view.bar("lora").value == 1 and view.overall.bar_style == "warning"
    (summary,) = displayed_summaries(captured)
    assert "interrupted" in summary["text/plain"] and f"checkpoint: {first.checkpoint}" in summary["text/plain"]
    assert signal.getsignal(signal.SIGINT) is handler  # training put the SIGINT handler back


def test_a_second_interrupt_stops_at_once_and_keeps_a_checkpoint(interrupted_twice: Any, ip) -> None:
    result, captured, view, handler = interrupted_twice
    message = short_usage_error(result, captured)
    assert re.match(r"interrupted; checkpoint saved in .*checkpoint-2\. Run the cell again to resume\.$", message)
    second = ip.user_ns["resumed"]
    assert second.status == "interrupted" and second.checkpoint.endswith("checkpoint-2")
    assert "info: lora: resuming from checkpoint-1" in second.logs
    assert view.status("lora") == "interrupted" and view.bar("lora").value == 2
    assert signal.getsignal(signal.SIGINT) is handler


def test_running_the_cell_again_resumes(interrupted_twice: Any, ip: InteractiveShell, interrupt_cell: str) -> None:
    second = ip.user_ns["resumed"]
    result, captured = run(ip, "%%finetune -o resumed", interrupt_cell)
    assert result.error_in_exec is None, captured.stderr
    again = ip.user_ns["resumed"]
    assert again.status == "succeeded" and again.run_id != second.run_id
    (lora,) = again.passes
    assert lora.status == "done" and lora.stats["resumed_from"] == "checkpoint-2" and lora.stats["steps"] == STEPS
    assert "info: lora: resuming from checkpoint-2" in again.logs
    logs = run(ip, f"%tunecell logs {again.run_id}")[1].stdout
    assert "lora: resuming from checkpoint-2" in logs
    assert Path(again.artifacts["adapter"], "adapter_config.json").is_file()


def test_background_run_cancelled_with_its_button(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    body = workflow(tiny_model, paths["out"] / "cancel", seed=8)
    with progress_mode(ip, "widgets"):
        result, captured = run(ip, "%%finetune --background -o bg", body)
    handle = result.result
    view = View(displayed_widgets(captured)[0])
    assert not view.cancel.disabled and view.cancel.layout.display != "none"
    clicked = view.at_step("lora", 1, view.cancel.click)  # the user clicks Cancel once training is under way
    interrupted = handle.wait(timeout=300)
    assert clicked.is_set() and interrupted is handle.result and handle.status == "interrupted"
    # stopped at the step where Cancel was clicked (step 1: the click runs inside that step's callback)
    assert re.search(r"checkpoint-1$", interrupted.checkpoint or ""), interrupted.checkpoint
    assert [(p.name, p.status) for p in interrupted.passes] == [("lora", "interrupted")]
    assert view.cancel.disabled and view.status("lora") == "interrupted"
    assert "interrupted" in view.header.value and view.overall.bar_style == "warning"
    assert "warning: interrupted: run the same config again to resume from" in view.log.children[0].value
    assert f"{handle.id}: interrupted" in run(ip, "%tunecell status")[1].stdout
    message = short_usage_error(*run(ip, f"%tunecell cancel {handle.id}"))
    assert "has finished" in message


def test_tunecell_cancel_stops_a_background_run(ip: InteractiveShell, tiny_model: Path, paths) -> None:
    body = workflow(tiny_model, paths["out"] / "cancel-cmd", seed=9)
    result, _ = run(ip, "%%finetune --background", body)
    handle = result.result
    out = run(ip, "%tunecell cancel")[1].stdout  # the last run of the session: this one
    assert out.strip() == f"cancelling {handle.id}: it stops at the next step"
    stopped = handle.wait(timeout=300)
    assert stopped.status == "interrupted" and handle.status == "interrupted"


def test_a_background_run_logs_as_it_goes_and_its_output_becomes_the_summary(ip: InteractiveShell, tiny_model: Path,
                                                                               paths) -> None:
    body = workflow(tiny_model, paths["out"] / "bg-log", seed=10)
    reached, resume = threading.Event(), threading.Event()

    def pause() -> None:  # training waits at step 1 while the test looks at the run under way
        reached.set()
        resume.wait(120)

    try:
        with progress_mode(ip, "widgets"), on_display(ip, lambda box: View(box).at_step("lora", 1, pause)) as captured:
            handle = ip.run_cell("%%finetune --background\n" + body).result
            assert reached.wait(120) and handle.status == "running"
            logs = run(ip, f"%tunecell logs {handle.id}")[1].stdout
            exported = run(ip, f"%tunecell export {handle.id} {paths['out'] / 'bg-log.yaml'}")[1].stdout
            resume.set()
            done = handle.wait(timeout=300)
    finally:
        resume.set()
    assert re.search(r"^info: lora: \d+ training samples", logs, re.M), logs  # the lines so far
    assert handle.logs == done.logs  # then the result's
    assert exported.startswith("wrote ")  # while the run was going: its config is known from its start

    # the cell's output: the handle while it runs, updated in place with the summary that a saved notebook keeps
    (shown, update) = [o for o in captured.outputs if o.transient.get("display_id")]
    assert shown.data == {"text/plain": f"<tunecell background run {handle.id}: running>"} and not shown.update
    assert update.update and update.transient == shown.transient
    assert update.data == {"text/plain": repr(done), "text/html": done._repr_html_()}
    assert done.status == "succeeded" and done.run_id in update.data["text/html"]
    view = View(displayed_widgets(captured)[0])
    assert view.cancel.disabled and view.summary.value == ""  # the summary once, below the view, not in it too


def test_a_command_that_needs_a_background_run_s_result_says_it_waits(capsys) -> None:
    from tunecell.magics.background import BackgroundRun
    from tunecell.magics.magic import _ended

    go, result = threading.Event(), SimpleNamespace(status="succeeded", logs=[])
    handle = BackgroundRun(lambda config, **_: go.wait(60) and result, None, {}, threading.Event(),
                           on_done=lambda _: None)
    threading.Timer(0.3, go.set).start()
    assert _ended(handle) is result
    assert capsys.readouterr().out == f"waiting for {handle.id} to end (interrupt the kernel to stop waiting; " \
                                      "the run goes on)\n"
    assert _ended(handle) is result and capsys.readouterr().out == ""  # ended: no word


# ============================================================================================= %config
def test_config_lists_and_validates_the_traits(ip: InteractiveShell, paths) -> None:
    out = run(ip, "%config TuneCell")[1].stdout
    for trait in ("cache_dir", "default_target", "short_errors", "progress"):
        assert f"TuneCell.{trait}" in out, trait
    run(ip, "%config TuneCell.progress = 'fancy'")
    assert magics(ip).progress == "none"  # refused: widgets | text | none | auto
    with progress_mode(ip, "auto"):
        assert magics(ip)._progress_mode() == "text"  # auto outside a kernel (no ZMQInteractiveShell): text
    import ipykernel.zmqshell
    from tunecell.magics.magic import in_kernel

    class Shell(ipykernel.zmqshell.ZMQInteractiveShell):  # Colab's kernel shell: a subclass of another name
        pass
    assert in_kernel(Shell.__new__(Shell)) and not in_kernel(ip)
    for mode in ("widgets", "text", "none"):
        ip.run_line_magic("config", f"TuneCell.progress = {mode!r}")
        assert magics(ip).progress == magics(ip)._progress_mode() == mode
    assert magics(ip).cache_dir == str(paths["cache"])


def test_cache_dir_applies_only_where_the_config_names_none(ip: InteractiveShell, main_cell: str, paths) -> None:
    ip.user_ns["lora_rank"] = 4
    out = run(ip, "%%finetune --dry-run", main_cell)[1].stdout
    assert f"cache: {paths['cache']}" in out
    own = paths["root"] / "own-cache"
    out = run(ip, "%%finetune --dry-run", main_cell + f"cache_dir: {own}\n")[1].stdout
    assert f"cache: {own}" in out


# ============================================================================================ %tunecell
def test_tunecell_without_runs(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(magics(ip), "runs", {})
    assert run(ip, "%tunecell status")[1].stdout.strip() == "no runs in this session"
    for line in ("%tunecell logs", "%tunecell export x.yaml", "%tunecell cancel"):
        assert "no runs in this session yet" in short_usage_error(*run(ip, line))


@pytest.mark.parametrize("line", ["%tunecell", "%tunecell bogus", "%tunecell cache bogus", "%tunecell export",
                                  "%tunecell status now", "%tunecell export ft a.yaml b.yaml", "%tunecell logs 'ft",
                                  "%tunecell version --cache-dir x", "%tunecell runs --cache-dir",
                                  "%tunecell logs --bogus", "%tunecell cache clear victim", "%tunecell runs victim"])
def test_tunecell_usage_errors(ip: InteractiveShell, ft: RunResult, line: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "victim").mkdir()  # an extra word is not a folder to clear
    assert "usage: %tunecell" in short_usage_error(*run(ip, line))
    assert (tmp_path / "victim").is_dir()


def test_tunecell_passes_lists_the_pass_types(ip: InteractiveShell) -> None:
    result, captured = run(ip, "%tunecell passes")
    assert result.error_in_exec is None, captured.stderr
    for name in ("LoRA", "QLoRA", "MergeAdapterWeights", "ModelBuilder"):
        assert name in captured.stdout, name


def test_tunecell_version(ip: InteractiveShell) -> None:
    out = run(ip, "%tunecell version")[1].stdout
    assert out.startswith(f"tunecell {tunecell.__version__}\n")
    assert re.search(r"^  transformers \S+", out, re.M) and re.search(r"^  peft \S+", out, re.M)


def test_tunecell_status_runs_logs_export(ip: InteractiveShell, ft: RunResult, paths) -> None:
    status = run(ip, "%tunecell status")[1].stdout
    assert f"{ft.run_id}: succeeded" in status
    runs = run(ip, "%tunecell runs")[1].stdout  # recorded in the cache folder: survives a kernel restart
    assert re.search(rf"^{ft.run_id}: succeeded\s+{re.escape(str(ft.manifest_path))}$", runs, re.M)
    logs = run(ip, "%tunecell logs ft")[1].stdout
    assert "info: input model: local folder" in logs and "training samples" in logs
    assert run(ip, f"%tunecell logs {ft.run_id}")[1].stdout == logs
    assert "no run 'nope'" in short_usage_error(*run(ip, "%tunecell logs nope"))
    target = paths["root"] / "ft-export.yaml"
    out = run(ip, f"%tunecell export ft {target}")[1].stdout
    assert out.strip() == f"wrote {target}"
    assert tunecell.load_config(target).model_dump() == ft.config.model_dump()
    last = paths["root"] / "last.json"
    assert run(ip, f"%tunecell export {last}")[1].stdout.startswith(f"wrote {last}\nnote: ")
    assert tunecell.load_config(last).input_model == ft.config.input_model
    assert ".json" in short_usage_error(*run(ip, f"%tunecell export ft {paths['root'] / 'x.txt'}"))
    assert "has finished" in short_usage_error(*run(ip, "%tunecell cancel ft"))
    assert "is not an AzureML job" in short_usage_error(*run(ip, "%tunecell follow ft"))


def test_tunecell_cache_and_cache_clear(ip: InteractiveShell, tmp_path: Path, paths,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(magics(ip), "runs", {})  # no run of this session used another folder
    assert re.fullmatch(rf"{re.escape(str(paths['cache']))}: \d+\.\d MB\n", run(ip, "%tunecell cache")[1].stdout)
    scratch = tmp_path / "scratch-cache"
    (scratch / "entry").mkdir(parents=True)
    (scratch / "entry" / "blob").write_bytes(b"x" * 300_000)
    ip.run_line_magic("config", f"TuneCell.cache_dir = {str(scratch)!r}")
    try:
        assert run(ip, "%tunecell cache")[1].stdout == f"{scratch}: 0.3 MB\n"
        assert run(ip, "%tunecell runs")[1].stdout.strip() == f"no runs recorded under {scratch}"
        assert run(ip, "%tunecell cache clear")[1].stdout.strip() == f"cleared {scratch}"
        assert not scratch.exists()
        assert run(ip, "%tunecell cache")[1].stdout == f"{scratch}: 0.0 MB\n"
    finally:
        ip.run_line_magic("config", f"TuneCell.cache_dir = {str(paths['cache'])!r}")


def test_tunecell_looks_in_the_cache_folders_the_runs_used(ip: InteractiveShell, tiny_model: Path, tmp_path: Path,
                                                           paths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(magics(ip), "runs", {})  # this test's runs only
    config = tmp_path / "sub" / "cfg.yaml"  # its relative cache_dir starts at its folder, not the current one
    config.parent.mkdir()
    config.write_text(f"input_model: {{model_path: {tiny_model}}}\npasses: {{}}\noutput_dir: out\ncache_dir: own\n")
    result, captured = run(ip, f"%finetune -f {config} -o own")
    assert result.error_in_exec is None, captured.stderr
    own, folder = ip.user_ns["own"], config.parent / "own"
    assert re.search(rf"^{own.run_id}: succeeded", run(ip, "%tunecell runs")[1].stdout, re.M)
    sizes = run(ip, "%tunecell cache")[1].stdout.splitlines()
    assert [line.split(": ")[0] for line in sizes] == [str(paths["cache"]), str(folder)]  # configured, then used

    monkeypatch.setattr(magics(ip), "runs", {})  # a restarted kernel: --cache-dir names the folder
    assert own.run_id not in run(ip, "%tunecell runs")[1].stdout
    assert re.search(rf"^{own.run_id}: succeeded", run(ip, f"%tunecell runs --cache-dir {folder}")[1].stdout, re.M)
    assert run(ip, f"%tunecell cache clear --cache-dir {folder}")[1].stdout == f"cleared {folder}\n"
    assert not folder.exists()
