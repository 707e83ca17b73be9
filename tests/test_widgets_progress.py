"""RunProgress: the live notebook view of a run, driven by events only (no kernel: widgets use a dummy comm)."""
from __future__ import annotations

import re
import sys
import threading
import time

import pytest

from tunecell.events import EventBus, Log, MetricResult, PassFinished, PassStarted, RunFinished, RunStarted, TrainStep
from tunecell.runner.result import PassRecord, RunResult
from tunecell.widgets.progress import RunProgress, loss_curve_svg, static_summary

LOSSES = [2.5, 2.1, 1.9, 1.7, 1.6, 1.45, 1.3, 1.22, 1.1, 1.05]


def polyline_points(svg: str) -> list[tuple[float, float]]:
    match = re.search(r"<polyline[^>]*points='([^']*)'", svg)
    assert match, svg
    return [tuple(float(c) for c in p.split(",")) for p in match.group(1).split()]


def realistic_events() -> list:
    steps = [["train", "LoRA"], ["merge", "MergeAdapterWeights"], ["convert", "ModelBuilder"]]
    events = [RunStarted("run-42", steps, "abc123" * 8, "tests/tiny-phi3"),
              PassStarted("train", "LoRA", 0, 3)]
    events += [TrainStep("train", i + 1, 10, loss, 1e-4, 1200.0 + i) for i, loss in enumerate(LOSSES)]
    events += [Log("info", "saved adapter"),
               PassFinished("train", "LoRA", "done", 12.5, False, "/cache/train-1"),
               PassStarted("merge", "MergeAdapterWeights", 1, 3),
               PassFinished("merge", "MergeAdapterWeights", "done", 0.1, True, "/cache/merge-1"),
               Log("warning", "the tokenizer has no chat template"),
               PassStarted("convert", "ModelBuilder", 2, 3),
               PassFinished("convert", "ModelBuilder", "failed", 3.0, False, None,
                            "RuntimeError: int4 quantisation needs onnx\nTraceback ..."),
               MetricResult("input", "accuracy", 0.25),
               MetricResult("train", "accuracy", 0.75),
               MetricResult("train", "latency_ms", 12.5),
               RunFinished("failed", "/cache/run-42/manifest.json", 16.0)]
    return events


def test_realistic_run_end_state() -> None:
    stop = threading.Event()
    progress = RunProgress(stop_event=stop)
    for event in realistic_events():
        progress(event)

    rows = progress.rows
    assert list(rows) == ["train", "merge", "convert"]
    assert [r.status for r in rows.values()] == ["done", "cached", "failed"]
    assert "done" in rows["train"].status_label.value and "cached" in rows["merge"].status_label.value

    train, merge, convert = rows["train"], rows["merge"], rows["convert"]
    assert (train.bar.value, train.bar.max) == (10, 10)
    assert merge.bar.value == merge.bar.max
    assert train.bar.bar_style == "success" and merge.bar.bar_style == "success"
    assert convert.bar.bar_style == "danger"
    assert "int4 quantisation needs onnx" in convert.info.value
    assert "step 10/10" in train.info.value and "loss 1.0500" in train.info.value

    points = polyline_points(progress.curve.value)
    assert len(points) == 10
    assert points[0][1] < points[-1][1]  # the loss fell: the last point is lower (larger SVG y)
    assert "loss 1.0500 at step 10" in progress.curve.value

    table = progress.metrics_html.value
    assert "<th>input</th>" in table and "<th>train</th>" in table
    assert "accuracy" in table and "0.25" in table and "0.75" in table and "latency_ms" in table

    log = progress.log_html.value
    assert "saved adapter" in log
    assert "the tokenizer has no chat template" in log
    assert re.search(r"tunecell-log-warning'[^>]*color:#9a6700[^>]*>warning: the tokenizer", log)
    assert "tunecell-log-error" in log  # the failed pass is logged as an error, and opens the log
    assert progress.log_area.selected_index == 0
    assert "warning" in progress.log_area.get_title(0)

    assert progress.status == "failed" and "failed" in progress.header.value and "run-42" in progress.header.value
    assert progress.overall_bar.bar_style == "danger"
    assert progress.cancel_button.disabled
    assert not stop.is_set()


def test_succeeded_run_bars_full_and_success() -> None:
    progress = RunProgress()
    progress(RunStarted("r", [["train", "LoRA"], ["merge", "MergeAdapterWeights"]], "h", "m"))
    assert [r.status for r in progress.rows.values()] == ["queued", "queued"]
    progress(PassStarted("train", "LoRA", 0, 2))
    assert progress.rows["train"].status == "running"
    progress(TrainStep("train", 1, 3, 1.0, None, None))
    progress(TrainStep("train", 3, 3, 0.5, None, None))
    progress(PassFinished("train", "LoRA", "done", 1.0, False))
    progress(PassStarted("merge", "MergeAdapterWeights", 1, 2))
    progress(PassFinished("merge", "MergeAdapterWeights", "done", 1.0, False))
    progress(RunFinished("succeeded", None, 2.0))
    assert all(r.bar.value == r.bar.max for r in progress.rows.values())
    assert all(r.bar.bar_style == "success" for r in progress.rows.values())
    assert progress.overall_bar.value == progress.overall_bar.max == 2
    assert progress.overall_bar.bar_style == "success"
    # with nothing to cancel, no Cancel button is offered
    assert progress.cancel_button.layout.display == "none"


def test_interrupted_run_marks_running_pass_and_skips_the_rest() -> None:
    progress = RunProgress()
    progress(RunStarted("r", [["train", "LoRA"], ["merge", "MergeAdapterWeights"]], "h", "m"))
    progress(PassStarted("train", "LoRA", 0, 2))
    progress(TrainStep("train", 4, 10, 1.0, None, None))
    progress(RunFinished("interrupted", None, 2.0))
    train, merge = progress.rows.values()
    assert train.status == "interrupted" and train.bar.bar_style == "warning"
    assert train.bar.value == 4 and train.bar.max == 10
    assert merge.status == "skipped"
    assert progress.overall_bar.bar_style == "warning"


def test_cancel_button_sets_the_event_and_calls_back() -> None:
    stop = threading.Event()
    called = []
    progress = RunProgress(stop_event=stop, on_cancel=lambda: called.append(True))
    progress(RunStarted("r", [["train", "LoRA"]], "h", "m"))
    assert not progress.cancel_button.disabled and progress.cancel_button.layout.display != "none"
    progress.cancel_button.click()
    assert stop.is_set() and called == [True]
    assert progress.cancel_button.disabled and "cancelling" in progress.header.value
    progress.cancel_button.click()  # a second click does nothing more
    assert called == [True]
    progress(RunFinished("interrupted", None, 1.0))
    assert progress.cancel_button.disabled and progress.status == "interrupted"


def test_pass_without_run_started_and_unknown_total() -> None:
    progress = RunProgress(step_interval=0, curve_interval=0)
    progress(PassStarted("train", "LoRA", 0, 1))
    assert progress.rows["train"].status == "running" and progress.status == "running"
    for step in range(1, 6):
        progress(TrainStep("train", step, -1, 1.0 / step, None, 50.0))
    progress(TrainStep("train", 6, 0, None, None, None))  # no loss, total 0
    row = progress.rows["train"]
    assert row.bar.value == 0 and "step 6" in row.info.value and "/" not in row.info.value.split("·")[0]
    assert "ETA" not in row.info.value
    assert len(polyline_points(progress.curve.value)) == 5
    progress(PassFinished("train", "LoRA", "done", 1.0, False))
    assert row.bar.value == row.bar.max and row.bar.bar_style == "success"
    # a TrainStep for a pass nobody announced also gets a row
    progress(TrainStep("other", 1, 2, 0.3, None, None))
    assert progress.rows["other"].status == "running" and progress.rows["other"].bar.value == 1


def test_eta_from_the_step_rate() -> None:
    now = [100.0]
    progress = RunProgress(clock=lambda: now[0], step_interval=0, curve_interval=0)
    progress(PassStarted("train", "LoRA", 0, 1))
    progress(TrainStep("train", 1, 101, 1.0, None, 2000.0))
    now[0] += 10.0
    progress(TrainStep("train", 11, 101, 0.9, None, 2000.0))  # 1 step/s, 90 steps left
    info = progress.rows["train"].info.value
    assert "ETA 1:30" in info and "2000 tok/s" in info and "step 11/101" in info


def test_header_elapsed_time_moves_with_the_steps_and_keeps_the_pass() -> None:
    now = [1000.0]
    progress = RunProgress(stop_event=threading.Event(), clock=lambda: now[0], step_interval=1.0)
    progress(RunStarted("run-42", [["train", "LoRA"], ["merge", "MergeAdapterWeights"]], "h", "m"))
    progress(PassStarted("train", "LoRA", 0, 2))
    for step in range(1, 101):
        now[0] += 30.0
        progress(TrainStep("train", step, 100, 2.0 - step / 100, None, 500.0))
    assert "pass 1/2: train" in progress.header.value and "elapsed 50:00" in progress.header.value

    now[0] += 0.5  # within step_interval: the header is throttled with the rows
    progress(TrainStep("train", 100, 100, 1.0, None, 500.0))
    assert "elapsed 50:00" in progress.header.value

    progress.cancel()
    assert "cancelling" in progress.header.value and "pass 1/2: train" in progress.header.value
    progress(RunFinished("interrupted", None, 3000.0))
    assert "pass 1/2" not in progress.header.value and "3000.0 s" in progress.header.value


def test_events_from_a_background_thread_are_applied() -> None:
    progress = RunProgress(stop_event=threading.Event())
    bus = EventBus((progress,))

    def work() -> None:
        for event in realistic_events():
            bus.emit(event)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert not [e for e in bus.history if isinstance(e, Log) and "display failed" in e.text]
    assert [r.status for r in progress.rows.values()] == ["done", "cached", "failed"]
    assert len(polyline_points(progress.curve.value)) == 10
    assert progress.cancel_button.disabled


def test_throttling_renders_few_times_but_ends_with_the_last_point() -> None:
    progress = RunProgress()
    progress(PassStarted("train", "LoRA", 0, 1))
    for step in range(1, 1001):
        progress(TrainStep("train", step, 1000, 3.0 - step / 1000, None, None))
    assert progress.curve_renders < 50 and progress.step_renders < 100
    progress(PassFinished("train", "LoRA", "done", 1.0, False))
    svg = progress.curve.value
    assert "data-last-step='1000'" in svg and "loss 2.0000 at step 1000" in svg
    points = polyline_points(svg)
    assert len(points) <= 400
    assert points[-1] == max(points)  # the last step is the right-most point and the lowest loss (largest y)
    assert progress.rows["train"].bar.value == 1000


def test_trailing_render_catches_up_without_further_events() -> None:
    progress = RunProgress(step_interval=0.05, curve_interval=0.05)
    progress(PassStarted("train", "LoRA", 0, 1))
    progress(TrainStep("train", 1, 10, 1.0, None, None))
    progress(TrainStep("train", 2, 10, 0.8, None, None))  # throttled
    assert "step 1/10" in progress.rows["train"].info.value
    deadline = time.monotonic() + 5
    while "step 2/10" not in progress.rows["train"].info.value and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "step 2/10" in progress.rows["train"].info.value
    assert "at step 2" in progress.curve.value


def make_result() -> RunResult:
    return RunResult(run_id="run-42", status="succeeded",
                     passes=[PassRecord("train", "LoRA", "done", 12.5), PassRecord("merge", "MergeAdapterWeights",
                                                                                   "cached", 0.1, True)],
                     metrics={"input": {"accuracy": 0.25}, "train": {"accuracy": 0.75}},
                     artifacts={"model": "/out/model"}, config_hash="abc123" * 8, model_source="tests/tiny-phi3",
                     duration_s=13.0)


def test_finish_shows_the_static_summary() -> None:
    stop = threading.Event()
    progress = RunProgress(stop_event=stop)
    progress(RunStarted("run-42", [["train", "LoRA"]], "h", "m"))
    assert not progress.cancel_button.disabled
    result = make_result()
    assert progress.finish(result) is None
    assert progress.summary.value == result._repr_html_()
    assert "tunecell-summary" in progress.summary.value and "/out/model" in progress.summary.value
    assert progress.summary in progress.widget.children
    assert progress.cancel_button.disabled and progress.overall_bar.bar_style == "success"
    assert "succeeded" in progress.header.value


def test_static_summary_bundle() -> None:
    result = make_result()
    bundle = static_summary(result)
    assert set(bundle) == {"text/plain", "text/html"}
    assert bundle["text/plain"] == repr(result) and bundle["text/plain"].startswith("tunecell run run-42: succeeded")
    assert bundle["text/html"] == result._repr_html_()


def test_static_summary_shows_the_training_numbers() -> None:
    result = make_result()
    assert "training" not in result._repr_html_() and "steps" not in repr(result)  # no pass with training stats
    result.passes[0].stats = {"train_loss": 1.234567, "steps": 40, "tokens_per_s": 12345.6, "device": "cpu"}
    result.passes.append(PassRecord("odd", "Plugin", "done", 1.0, stats={"steps": "<i>3</i>"}))
    text, page = repr(result), result._repr_html_()
    assert re.search(r"^  train\s+LoRA\s+done\s+12\.5 s  loss 1\.235, 40 steps, 12,346 tokens/s$", text, re.M)
    assert re.search(r"^  merge\s+MergeAdapterWeights\s+cached\s+0\.1 s$", text, re.M)
    assert "<th>time</th><th>training</th>" in page
    assert "<td>12.5 s</td><td>loss 1.235, 40 steps, 12,346 tokens/s</td>" in page
    assert "<td>0.1 s</td><td></td>" in page  # the merge has none
    assert "<i>" not in page and "<td>&lt;i&gt;3&lt;/i&gt; steps</td>" in page


def test_widget_displays_and_html_is_escaped() -> None:
    progress = RunProgress()
    progress(RunStarted("<run>", [["<b>x</b>", "LoRA"]], "h", "m"))
    progress(Log("error", "<script>alert(1)</script>"))
    assert "<script>" not in progress.log_html.value and "&lt;script&gt;" in progress.log_html.value
    assert "<b>x</b>" not in progress.rows["<b>x</b>"].label.value
    bundle = progress._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("tunecell run: live progress")  # saved without widget state: no VBox(...)


def test_loss_curve_svg_edge_cases() -> None:
    assert loss_curve_svg([]) == ""
    assert loss_curve_svg([(1, float("nan"))]) == ""
    one = loss_curve_svg([(1, 0.5)])
    assert len(polyline_points(one)) == 1
    flat = polyline_points(loss_curve_svg([(1, 0.5), (2, 0.5), (3, 0.5)]))
    assert len({y for _, y in flat}) == 1


def test_widgets_do_not_import_torch() -> None:
    import subprocess

    code = ("import sys, tunecell.widgets.progress, tunecell.widgets.chat_widget; "
            "bad = [m for m in ('torch', 'transformers', 'onnxruntime_genai') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("status,style", [("done", "success"), ("cached", "success"), ("failed", "danger"),
                                          ("interrupted", "warning")])
def test_pass_status_bar_styles(status: str, style: str) -> None:
    progress = RunProgress()
    progress(PassStarted("p", "T", 0, 1))
    progress(PassFinished("p", "T", status, 1.0, status == "cached"))
    assert progress.rows["p"].status == status and progress.rows["p"].bar.bar_style == style


def test_repeated_logged_loss_is_plotted_once() -> None:
    # the LoRA pass reports the last logged loss on every step: the curve keeps one point per logged value
    progress = RunProgress(step_interval=0, curve_interval=0)
    progress(PassStarted("train", "LoRA", 0, 1))
    for step in range(1, 13):
        progress(TrainStep("train", step, 12, [2.0, 1.5, 1.2][(step - 1) // 4], None, None))
    assert len(polyline_points(progress.curve.value)) == 3
    assert "step 12/12" in progress.rows["train"].info.value
