"""The local runner: a plan's passes in order, each through the cache, every step reported as an event."""
from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

from ..config import load_config, schema
from ..errors import ConfigError, PassFailed, TunecellError
from ..events import EventBus, Log, MetricResult, PassFinished, PassStarted, RunFinished, RunStarted, Subscriber
from ..imports import lean_imports
from ..memory import full_collections_deferred, release_memory
from ..passes.base import Artifact, Interrupted, PassContext
from ..passes.registry import pass_specs
from ..planner import Plan, plan as make_plan
from . import manifest, output_dir, preflight
from .dispatch import remote_system, run_remote
from .cache import Cache, Entry, digest, package_versions
from .evaluation import check_held_out, goal_failures, measure
from .history import record_run
from .result import PassRecord, RunResult


def run(config: Any, namespace: Optional[Mapping[str, Any]] = None, *, overrides: Iterable[str] = (),
        only: Optional[set[str]] = None, subscribers: Iterable[Subscriber] = (), progress: str = "text",
        stop: Optional[threading.Event] = None, start_from: Optional[RunResult] = None) -> RunResult:
    """Run a workflow on this machine (or, when its host is an AzureML system, as a job there: runner/dispatch.py).

    ``config``: text, a path, a dict or a WorkflowConfig. ``only``: the names of the passes to run.
    ``progress``: "text" (tqdm bars), or "none". ``stop``: set it to stop at the next safe point.
    ``start_from``: an earlier run whose final model is the input (its passes and metrics carry over).
    Raises ConfigError for a bad config and PassFailed (with ``.result``) when a pass fails; an interrupted
    run returns a result whose status is "interrupted".
    """
    if not isinstance(config, schema.WorkflowConfig) or overrides:
        config = load_config(config, namespace, overrides)
    system = remote_system(config)
    preflight.check(config, remote=system is not None)
    if system is not None:  # an AzureML host: one job there, followed from here
        return run_remote(config, system, subscribers=subscribers, progress=progress, stop=stop, only=only,
                          start_from=start_from)
    bus = EventBus(tuple(subscribers))
    if progress == "text":
        from .progress import TextProgress

        bus.subscribe(TextProgress())
    if only is None:
        only = remaining_passes(config, start_from)
    stop = stop or threading.Event()
    if config.search_space:
        from .search import run_search

        if config.clean_cache:
            Cache(config.resolve(config.cache_dir), config.workflow_id).clear()

        result = run_search(config, bus, stop,
                            lambda c, b, s: LocalRun(c, make_plan(c, only), b, s, start_from).execute())
        manifest.publish_search(config, result)
        return result
    return LocalRun(config, make_plan(config, only), bus, stop, start_from).execute()


def remaining_passes(config: schema.WorkflowConfig, start_from: Optional[RunResult]) -> Optional[set[str]]:
    """The passes of ``config`` that a run from ``start_from`` runs: those that run did not (None: all of them).
    One it ran with other settings, or none left, is a ConfigError: the earlier run's model would be taken for
    what this config asks."""
    if start_from is None:
        return None
    ran = {p.name for p in start_from.passes}
    earlier = start_from.config.passes if start_from.config is not None else {}
    for name in sorted(ran & set(config.passes) & set(earlier)):
        if config.passes[name] != earlier[name]:
            raise ConfigError(f"pass {name!r} already ran in run {start_from.run_id} with other settings, and --from "
                              "starts from that run's model", path=("passes", name),
                              hint="rerun the earlier run's cell with the change, or give this pass a new name")
    left = {name for name in config.passes if name not in ran}
    if not left:
        raise ConfigError(f"run {start_from.run_id} already ran every pass of this config: nothing to run",
                          path=("passes",), hint="add the passes to run after it (ModelBuilder ...)")
    return left


class LocalRun:
    def __init__(self, config: schema.WorkflowConfig, plan: Plan, bus: EventBus, stop: threading.Event,
                 start_from: Optional[RunResult]):
        self.config, self.plan, self.bus, self.stop = config, plan, bus, stop
        self.cache = Cache(config.resolve(config.cache_dir), config.workflow_id)
        self.scratch = config.resolve(config.cache_dir) / "scratch"
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.config_hash = digest(config.model_dump(mode="json"))
        self.start_from = start_from
        self.records: list[PassRecord] = list(start_from.passes) if start_from else []
        self.metrics: dict[str, dict[str, float]] = dict(start_from.metrics) if start_from else {}
        self.artifacts: dict[str, str] = {k: v for k, v in (start_from.artifacts if start_from else {}).items()
                                          if k not in ("model", "adapter")}
        self.final: Optional[Artifact] = None
        self.data_hashes: dict[str, str] = {}
        self.model_source = ""
        # collections skip what earlier passes left (tunecell.memory), unless something else froze objects already
        self.freezes = gc.get_freeze_count() == 0

    def execute(self) -> RunResult:
        started = time.perf_counter()
        result = None
        try:
            # the libraries a pass imports would otherwise be walked by every full collection on the way
            with _scratch_env(self.scratch), full_collections_deferred():
                if self.config.clean_cache:
                    self.cache.clear()
                artifact = self._input()
                self.data_hashes = self._data_hashes()
                self._check_settings(artifact)
                if self.freezes:  # the libraries imported so far live as long as the process: collections skip them
                    gc.freeze()
                self.bus.emit(RunStarted(self.run_id, [[s.name, s.type] for s in self.plan.steps],
                                         self.config_hash, self.model_source))
                self.bus.log(f"input model: {self.model_source}")  # after RunStarted: every event is in a run
                self._evaluate("input", artifact, only_if=self.config.evaluate_input_model and not self.start_from)
                final, adapter = artifact, None
                for index, step in enumerate(self.plan.steps):
                    final = self.final = self._run_step(index, step, final)
                    if final.kind == "adapter":
                        adapter = final
                    self._evaluate(step.name, final, only_if=not self._merged_next(index, final))
                status, failed = self._finish_status(final)
                self._publish(final, adapter)
                result = self._result(status, started, failed_goals=failed)
        except (Interrupted, KeyboardInterrupt) as e:  # a Ctrl-C while evaluating is one too
            checkpoint = getattr(e, "checkpoint", None)
            again = "set clean_cache: false and run again" if self.config.clean_cache else "run the same config again"
            # logged first, so that the result's logs carry the way to resume
            self.bus.log(f"interrupted: {again} to resume" + (f" from {checkpoint}" if checkpoint else ""), "warning")
            result = self._result("interrupted", started, checkpoint=str(checkpoint) if checkpoint else None)
        except PassFailed as e:
            e.result = result = self._result("failed", started, error=str(e))
            raise
        finally:
            if self.freezes:
                gc.unfreeze()
            if result is not None:
                result.manifest_path = manifest.write(self, result)
                record_run(self.config.resolve(self.config.cache_dir), {
                    "run_id": result.run_id, "status": result.status, "manifest": str(result.manifest_path),
                    "config_hash": result.config_hash})
                self.bus.emit(RunFinished(result.status, str(result.manifest_path), result.duration_s))
        return result

    # ------------------------------------------------------------------------------------------ steps
    def _check_settings(self, source: Artifact) -> None:
        """What only transformers can judge (a misspelt optimizer name), for each LoRA pass this run will train:
        before any work, the input model's evaluation included. Not for a cached pass: a fully cached run imports
        no torch. A pass's key is its output's identity, so the keys chain without running anything. And, from
        start_from, that accuracy is not to be measured on rows the earlier run's LoRA pass trained on."""
        from ..passes.lora import check_training_args

        if self.start_from is not None and self.plan.evaluator is not None:
            check_held_out(source, self.plan.evaluator, self.config)
        identity = source.identity
        for step in self.plan.steps:
            identity, settings = self._key(step, identity), self.config.passes[step.name]
            if isinstance(settings, schema.LoRA) and not self.cache.entry(step.name, identity).complete:
                lean_imports()
                check_training_args(settings, step.name)

    def _input(self) -> Artifact:
        if self.start_from is not None:
            if self.start_from.final is None:
                raise TunecellError(f"run {self.start_from.run_id} produced no model to start from")
            self.model_source = self.start_from.model_source
            return Artifact.from_dict(self.start_from.final)
        from ..models import resolve_model

        resolved = resolve_model(self.config.input_model, self.config.resolve(self.config.cache_dir))
        self.model_source = resolved.source
        return Artifact("hf", resolved.path, resolved.identity)

    def _data_hashes(self) -> dict[str, str]:
        from ..data import data_hash
        from ..data.files import is_azureml

        hashes = {}
        for dc in self.config.data_configs:
            files = dc.load_dataset_config.data_files
            hashes[dc.name] = "azureml" if is_azureml(files) else data_hash(dc, self.config.base_dir)
        return hashes

    def _key(self, step, source_identity: str) -> str:
        cfg = self.config.passes[step.name]
        data = [getattr(cfg, k) for k in ("train_data_config", "eval_data_config") if getattr(cfg, k, None)]
        return digest({
            "input": source_identity, "type": step.type, "settings": step.settings,
            "data": {name: [self.data_hashes[name],
                            self.config.data_config(name).model_dump(mode="json", exclude={"name"})]
                     for name in data},
            "packages": package_versions(("tunecell",) + pass_specs()[step.type].packages),
        })

    def _run_step(self, index: int, step, source: Artifact) -> Artifact:
        key = self._key(step, source.identity)
        entry = self.cache.entry(step.name, key)
        self.bus.emit(PassStarted(step.name, step.type, index, len(self.plan.steps)))
        started = time.perf_counter()
        base = source if step.gives == "adapter" else None
        if entry.complete:
            return self._done(step, entry, key, base, started, cache_hit=True)
        if self.stop.is_set():
            raise Interrupted(None)
        cfg = self.config.passes[step.name]
        try:
            with entry.building() as folder:  # None: another run built it while this one waited for the lock
                built = folder is not None
                if built:
                    if "transformers" in pass_specs()[step.type].packages:
                        lean_imports()
                    ctx = PassContext(step.name, self.config, folder / "artifact", folder / "work", self.scratch,
                                      self.bus, self.stop)
                    stats = pass_specs()[step.type].run(source, cfg, ctx)
                    entry.write_record(folder, {
                        "pass": step.name, "type": step.type, "key": key, "status": "done", "run_id": self.run_id,
                        "settings": step.settings, "input": source.to_dict(), "stats": stats,
                        "duration_s": round(time.perf_counter() - started, 2),
                        "packages": package_versions(pass_specs()[step.type].packages)})
        except (Interrupted, KeyboardInterrupt) as e:  # a pass other than training has no checkpoint to keep
            self._record(step, "interrupted", started)
            raise e if isinstance(e, Interrupted) else Interrupted(None) from None
        except TunecellError as e:
            self._record(step, "failed", started, error=str(e))
            raise PassFailed(step.name, step.type, e) from e
        except Exception as e:
            self._record(step, "failed", started, error=f"{type(e).__name__}: {e}")
            raise PassFailed(step.name, step.type, e) from e
        # the pass's heap would otherwise stay resident under the next pass, and the run's peak be their sum;
        # what survives is frozen (unfrozen when the run ends), so that later collections skip the libraries
        release_memory(freeze_survivors=self.freezes)
        return self._done(step, entry, key, base, started, cache_hit=not built)

    def _done(self, step, entry, key: str, base: Optional[Artifact], started: float, cache_hit: bool) -> Artifact:
        record = entry.record()
        duration = round(time.perf_counter() - started, 2)
        self.records.append(PassRecord(step.name, step.type, "cached" if cache_hit else "done", duration, cache_hit,
                                       str(entry.artifact_dir), record.get("stats", {})))
        self.artifacts[step.name] = str(entry.path)
        self.bus.emit(PassFinished(step.name, step.type, "cached" if cache_hit else "done", duration, cache_hit,
                                   str(entry.artifact_dir)))
        return Artifact(step.gives, entry.artifact_dir, key, base)

    def _record(self, step, status: str, started: float, error: Optional[str] = None) -> None:
        duration = round(time.perf_counter() - started, 2)
        self.records.append(PassRecord(step.name, step.type, status, duration))
        self.bus.emit(PassFinished(step.name, step.type, status, duration, False, None, error))

    # -------------------------------------------------------------------------------------- evaluation
    def _evaluate(self, label: str, artifact: Artifact, only_if: bool = True) -> None:
        if self.plan.evaluator is None or not only_if:
            return
        try:
            values = measure(artifact, self.plan.evaluator, self.config, self.cache, self.data_hashes)
        except TunecellError as e:
            raise PassFailed(f"evaluate {label}", "evaluation", e) from e
        except Exception as e:
            raise PassFailed(f"evaluate {label}", "evaluation", e) from e
        self.metrics[label] = values
        for name, value in values.items():
            self.bus.emit(MetricResult(label, name, value))

    def _merged_next(self, index: int, artifact: Artifact) -> bool:
        """An adapter that the next pass merges is measured once, as the merged model."""
        steps = self.plan.steps
        return artifact.kind == "adapter" and index + 1 < len(steps) and steps[index + 1].type == "MergeAdapterWeights"

    def _finish_status(self, final: Artifact) -> tuple[str, list[str]]:
        if self.plan.evaluator is None or not self.plan.steps:
            return "succeeded", []
        failed = goal_failures(self.config, self.plan.evaluator, self.metrics, self.plan.steps[-1].name)
        for text in failed:
            self.bus.log(f"goal missed: {text}", "error")
        return ("failed" if failed else "succeeded"), failed

    # ----------------------------------------------------------------------------------------- outputs
    def _publish(self, final: Artifact, adapter: Optional[Artifact]) -> None:
        """Place the final model (and the adapter) in output_dir: both are staged before either replaces what an
        earlier run left, so a failure (a full disk) leaves that run's folders together, and the run failed."""
        out = self.config.resolve(self.config.output_dir)
        staged: list[tuple[str, Path, Path]] = []
        try:
            for name, artifact in (("model", final if self.plan.steps else None), ("adapter", adapter)):
                if artifact is None:
                    continue
                target = out / name
                stamp = target / output_dir.IDENTITY
                # the key and the run that built the entry: an entry rebuilt under the same key (a cleared cache,
                # another tunecell) is published again
                identity = f"{artifact.identity} built by {Entry(artifact.path.parent).record().get('run_id')}"
                if not (stamp.is_file() and stamp.read_text() == identity):
                    staged.append((name, output_dir.stage(artifact.path, target, identity), target))
                else:
                    self.artifacts[name] = str(target)
            while staged:
                name, tmp, target = staged.pop(0)
                output_dir.place(tmp, target)
                self.artifacts[name] = str(target)
        except OSError as e:
            for _, tmp, _ in staged:
                shutil.rmtree(tmp, ignore_errors=True)
            raise PassFailed("publish", "output_dir", e) from e
        earlier = output_dir.earlier_outputs(out, {name for name in ("model", "adapter") if name in self.artifacts})
        if earlier:
            self.bus.log(earlier, "warning")

    def _result(self, status: str, started: float, **extra: Any) -> RunResult:
        logs = [e.line for e in self.bus.history if isinstance(e, Log)]
        return RunResult(self.run_id, status, list(self.records), dict(self.metrics), dict(self.artifacts),
                         self.config_hash, self.model_source, duration_s=round(time.perf_counter() - started, 2),
                         final=self.final.to_dict() if self.final else None, logs=logs, config=self.config,
                         **extra)


@contextmanager
def _scratch_env(scratch: Path) -> Iterator[None]:
    """Keep the libraries' caches (datasets, onnxruntime, the builder) inside the run's cache folder."""
    scratch.mkdir(parents=True, exist_ok=True)
    # Library chatter that our own progress replaces: transformers' weight-loading bars (decided at its import,
    # which a preview may have done already) and bitsandbytes' note that an optional CPU kernel package is absent.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    values = {"HF_DATASETS_CACHE": str(scratch / "datasets"), "TOKENIZERS_PARALLELISM": "false",
              "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # our own progress replaces the libraries' bars
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
