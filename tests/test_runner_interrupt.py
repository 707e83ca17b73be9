"""Interrupting training (the stop event, a real SIGINT) saves a checkpoint; running again resumes from it and
ends with the adapter an uninterrupted run trains."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

import tunecell
from tunecell.events import PassFinished, RunFinished, TrainStep

TONES = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
MAX_STEPS, STOP_AT = 6, 2


def lora_config(model: Path, root: Path) -> dict:
    return {
        "input_model": {"model_path": str(model)},
        "data_configs": [{
            "name": "tones",
            "load_dataset_config": {"data_name": "json", "data_files": str(TONES)},
            "pre_process_data_config": {"text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                                        "strategy": "line-by-line", "max_seq_len": 64, "train_on_prompt": False},
        }],
        "passes": {"lora": {
            "type": "LoRA", "r": 4, "alpha": 8, "lora_dropout": 0.1,  # dropout: the RNG state must resume too
            "target_modules": ["qkv_proj", "o_proj"], "train_data_config": "tones", "eval_dataset_size": 0.2,
            "training_args": {"max_steps": MAX_STEPS, "learning_rate": 1.0e-3, "per_device_train_batch_size": 8,
                              "seed": 0, "lr_scheduler_type": "linear"}}},
        "cache_dir": str(root / "cache"),
        "output_dir": str(root / "out"),
    }


def adapter_weights(result) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(result.artifacts["adapter"]) / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory) -> dict:
    """The adapter of an uninterrupted run."""
    result = tunecell.run(lora_config(tiny_model, tmp_path_factory.mktemp("uninterrupted")), progress="none")
    assert result.status == "succeeded"
    return adapter_weights(result)


def interrupted_then_resumed(config: dict, on_step) -> tuple:
    stop = threading.Event()
    events: list = []

    def subscriber(event):
        events.append(event)
        if isinstance(event, TrainStep) and event.step == STOP_AT:
            on_step(stop)

    first = tunecell.run(config, subscribers=[subscriber], progress="none", stop=stop)
    # what the interrupted run leaves, seen before the rerun finishes (and cleans) the entry
    first.kept = sorted(p.name for p in Path(first.checkpoint).iterdir()) if first.checkpoint else []
    first.complete_entries = [p for p in Path(config["cache_dir"]).rglob("run.json")
                              if not p.parent.name.endswith(".partial")]
    first.published = (Path(config["output_dir"]) / "adapter").exists()
    first.written = first.manifest  # the rerun writes its own manifest in the same place
    resumed_events: list = []
    resumed = tunecell.run(config, subscribers=[resumed_events.append], progress="none")
    return first, events, resumed, resumed_events


def check(first, events, resumed, resumed_events, reference, root: Path) -> None:
    # the interrupted run: stopped after the step it was asked to, checkpoint named and kept, nothing published
    assert first.status == "interrupted"
    assert [e.step for e in events if isinstance(e, TrainStep)] == [1, STOP_AT]
    checkpoint = Path(first.checkpoint)
    assert checkpoint.name == f"checkpoint-{STOP_AT}" and ".partial" in checkpoint.parts[-4]
    assert "trainer_state.json" in first.kept and any(name.startswith("optimizer") for name in first.kept)
    assert first.complete_entries == [] and not first.published
    assert any(str(checkpoint) in line for line in first.logs)
    assert str(checkpoint) in repr(first)
    assert [(p.name, p.status) for p in first.passes] == [("lora", "interrupted")]
    assert [e.status for e in events if isinstance(e, PassFinished)] == ["interrupted"]
    assert isinstance(events[-1], RunFinished) and events[-1].status == "interrupted"
    assert first.written["status"] == "interrupted" and first.written["checkpoint"] == str(checkpoint)

    # the rerun resumes from the checkpoint and trains only the remaining steps
    assert resumed.status == "succeeded"
    assert [e.step for e in resumed_events if isinstance(e, TrainStep)] == list(range(STOP_AT + 1, MAX_STEPS + 1))
    assert resumed.passes[0].stats["resumed_from"] == checkpoint.name
    assert resumed.passes[0].stats["steps"] == MAX_STEPS

    weights = adapter_weights(resumed)
    assert set(weights) == set(reference) and weights
    assert not checkpoint.exists()  # the finished entry keeps no training checkpoints
    for name, tensor in reference.items():
        assert (weights[name] - tensor).abs().max().item() <= 1e-6, name
    assert any(t.abs().max().item() > 0 for n, t in weights.items() if "lora_B" in n)  # it did learn something


def test_stop_event_interrupts_and_rerun_resumes_to_the_same_adapter(tiny_model, tmp_path, reference):
    config = lora_config(tiny_model, tmp_path)
    check(*interrupted_then_resumed(config, lambda stop: stop.set()), reference, tmp_path)


def test_sigint_interrupts_and_rerun_resumes_to_the_same_adapter(tiny_model, tmp_path, reference):
    outer: list = []

    def handler(*args):  # a SIGINT that reached past the pass would land here
        outer.append(args)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        results = interrupted_then_resumed(lora_config(tiny_model, tmp_path),
                                           lambda stop: signal.raise_signal(signal.SIGINT))
        assert signal.getsignal(signal.SIGINT) is handler, "the pass did not restore the SIGINT handler"
    finally:
        signal.signal(signal.SIGINT, previous)
    assert outer == [], "the pass's own SIGINT handler was not in place during training"
    check(*results, reference, tmp_path)


def test_a_checkpoint_cut_short_or_a_state_within_a_step_is_never_resumed(tiny_model, tmp_path, reference,
                                                                         monkeypatch):
    """A second Ctrl-C can land within a step, and a run killed while saving leaves a checkpoint without its
    trainer_state.json: neither is resumed from, and the adapter still comes out as an uninterrupted run's."""
    import transformers

    config = lora_config(tiny_model, tmp_path)
    stop = threading.Event()
    first = tunecell.run(config, progress="none", stop=stop, subscribers=[
        lambda e: stop.set() if isinstance(e, TrainStep) and e.step == STOP_AT else None])
    assert Path(first.checkpoint).name == f"checkpoint-{STOP_AT}"

    step = transformers.Trainer.training_step
    calls: list = []

    def interrupted_within_the_second_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after the step began: the state may be half-updated
        return step(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", interrupted_within_the_second_step)
    second = tunecell.run(config, progress="none")
    monkeypatch.setattr(transformers.Trainer, "training_step", step)
    assert second.status == "interrupted" and second.checkpoint == first.checkpoint  # no state saved mid-step
    cut = Path(first.checkpoint).with_name("checkpoint-5")
    cut.mkdir()
    (cut / "adapter_model.safetensors").write_bytes(b"")  # killed while saving: no trainer_state.json

    resumed = tunecell.run(config, progress="none")
    assert resumed.passes[0].stats["resumed_from"] == f"checkpoint-{STOP_AT}"
    weights = adapter_weights(resumed)
    for name, tensor in reference.items():
        assert (weights[name] - tensor).abs().max().item() <= 1e-6, name


def test_each_train_step_event_carries_the_loss_logged_for_that_step(tmp_path):
    """The LoRA pass's progress callback, under a real Trainer (which calls on_step_end before on_log)."""
    from types import SimpleNamespace

    import datasets
    import torch
    import transformers

    from tunecell.events import EventBus
    from tunecell.passes.lora import ProgressCallback

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.0))

        def forward(self, x, labels):
            return {"loss": ((self.w * x - labels) ** 2).mean()}

    def train(logging_steps: int, stop_at: int = 0) -> tuple[list, list, ProgressCallback]:
        bus, stop = EventBus(), threading.Event()
        steps: list = []

        def on_event(event):
            if isinstance(event, TrainStep):
                steps.append(event)
                if event.step == stop_at:
                    stop.set()

        bus.subscribe(on_event)
        progress = ProgressCallback(SimpleNamespace(name="lora", bus=bus, stop=stop), SimpleNamespace(tokens=0))
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / f"out-{logging_steps}-{stop_at}"), max_steps=4, per_device_train_batch_size=2,
            learning_rate=0.1, logging_steps=logging_steps, save_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=True, remove_unused_columns=False)
        data = datasets.Dataset.from_dict({"x": [1.0, 2.0, 3.0, 4.0] * 2, "labels": [2.0, 4.0, 6.0, 8.0] * 2})
        trainer = transformers.Trainer(model=Scale(), args=args, train_dataset=data, callbacks=[progress])
        trainer.train()
        logged = [(h["step"], h["loss"], h["learning_rate"]) for h in trainer.state.log_history if "loss" in h]
        return steps, logged, progress

    steps, logged, _ = train(logging_steps=1)
    assert [(e.step, e.loss, e.lr) for e in steps] == logged and len(logged) == 4
    steps, logged, _ = train(logging_steps=2)  # a step not logged carries the last logged loss
    assert [(e.step, e.loss) for e in steps] == [(1, None), (2, logged[0][1]), (3, logged[0][1]), (4, logged[1][1])]
    steps, _, progress = train(logging_steps=1, stop_at=2)  # asked to stop at step 2: saved there, and stopped
    assert [e.step for e in steps] == [1, 2] and progress.stopped
    assert (tmp_path / "out-1-2" / "checkpoint-2").is_dir()
