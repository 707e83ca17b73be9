"""Search: try the candidate combinations, each through the cache, rank them by the evaluator's metrics and goals."""
from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any, Optional

from ..config import schema
from ..events import EventBus, Log
from ..errors import ConfigError, PassFailed
from .evaluation import goal_failures
from .result import RunResult

Options = dict[str, dict[str, Any]]  # pass name -> dotted option -> the value tried


def run_search(config: schema.WorkflowConfig, bus: EventBus, stop: threading.Event,
               make_run: Any) -> RunResult:
    """``make_run(config, bus, stop) -> RunResult`` runs one concrete candidate (the local runner)."""
    strategy, evaluator = config.search_strategy, config.evaluators[config.evaluator]
    started = time.perf_counter()
    tried: list[dict[str, Any]] = []
    chosen: Options = {}
    groups = [config.search_space] if strategy.execution_order == "joint" else \
        [{name: options} for name, options in config.search_space.items()]  # pass-by-pass: one pass at a time
    interrupted = False  # a Ctrl-C outside training ends a candidate's run without setting stop
    for group in groups:
        combos = _combinations(group, strategy)
        results = []
        for options in combos:
            if stop.is_set() or interrupted:
                break
            index = len(tried) + 1
            merged = {**chosen, **options}
            bus.emit(Log("info", f"candidate {index} (of {len(combos)} in this round): {_label(merged)}"))
            candidate = concrete(config, merged, index)
            try:
                result = make_run(candidate, bus, stop)
            except (PassFailed, ConfigError) as e:  # a failing candidate is ranked last; the search goes on
                result = getattr(e, "result", None)  # a ConfigError (a misspelt optimizer) comes before any work
                bus.emit(Log("warning", f"candidate {index} failed: {e}"))
            entry = _entry(index, merged, result, config, evaluator)
            tried.append(entry)
            results.append((entry, options))
            interrupted = entry["status"] == "interrupted"
        ranked = sorted(results, key=lambda pair: rank_key(pair[0], evaluator))
        if ranked:
            chosen.update(ranked[0][1])
    ordered = sorted(tried, key=lambda e: rank_key(e, evaluator))
    for rank, entry in enumerate(ordered, 1):
        entry["rank"] = rank
    best = ordered[0] if ordered and _ran(ordered[0]) else None
    status = "interrupted" if stop.is_set() or interrupted else \
        "succeeded" if best and best["goals_met"] and best["status"] == "succeeded" else "failed"
    return _summary(config, tried, best, status, time.perf_counter() - started)


def concrete(config: schema.WorkflowConfig, options: Options, index: int) -> schema.WorkflowConfig:
    """One candidate: the config with each option set to one value, its outputs in their own folder."""
    passes = {}
    for name, p in config.passes.items():
        values = options.get(name, {})
        passes[name] = _set(p, values) if values else p
    out = config.model_copy(update={"passes": passes, "output_dir": f"{config.output_dir}/candidates/{index}",
                                    "search_strategy": None, "clean_cache": False})  # cleaned once, before all
    out._notes, out._base_dir, out._search_space = list(config.notes), config.base_dir, {}
    return out


def _set(p: Any, values: dict[str, Any]) -> Any:
    data = p.model_dump()
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return type(p).model_validate(data)


def _combinations(space: dict[str, dict[str, list]], strategy: schema.SearchStrategy) -> list[Options]:
    keys = [(name, key) for name, options in space.items() for key in options]
    product = [dict(zip(keys, values)) for values in itertools.product(*(space[n][k] for n, k in keys))]
    if strategy.sampler == "random":
        random.Random(strategy.seed).shuffle(product)
    if strategy.max_samples:
        product = product[:strategy.max_samples]
    combos = []
    for flat in product:
        options: Options = {}
        for (name, key), value in flat.items():
            options.setdefault(name, {})[key] = value
        combos.append(options)
    return combos


def _entry(index: int, options: Options, result: Optional[RunResult], config: schema.WorkflowConfig,
           evaluator: schema.Evaluator) -> dict[str, Any]:
    final = list(config.passes)[-1]
    metrics = result.metrics.get(final, {}) if result else {}
    failed = goal_failures(config, evaluator, result.metrics, final) if result else ["did not run"]
    return {"index": index, "options": options, "label": _label(options), "metrics": metrics,
            "status": result.status if result else "failed", "goals_met": not failed and bool(metrics),
            "failed_goals": failed, "published": bool(result and "model" in result.artifacts), "result": result}


def _ran(entry: dict[str, Any]) -> bool:
    return entry["status"] == "succeeded" or bool(entry["metrics"])


def rank_key(entry: dict[str, Any], evaluator: schema.Evaluator) -> tuple:
    """Candidates that ran and met every goal first; then by each metric in priority order (best first)."""
    key: list[Any] = [not _ran(entry), not entry["goals_met"]]
    for metric in sorted(evaluator.metrics, key=lambda m: m.priority):
        value = entry["metrics"].get(metric.name)
        key.append(float("inf") if value is None else (-value if metric.higher_is_better else value))
    return tuple(key + [entry["index"]])


def _label(options: Options) -> str:
    return ", ".join(f"{name}.{key}={value}" for name, values in options.items() for key, value in values.items())


def _summary(config: schema.WorkflowConfig, tried: list[dict], best: Optional[dict], status: str,
             seconds: float) -> RunResult:
    """The search's RunResult: the best candidate's passes and artifacts, every candidate in `candidates`."""
    base = best["result"] if best and best["result"] is not None else None
    candidates = [{k: v for k, v in e.items() if k != "result"} for e in tried]
    if base is None:
        return RunResult("search", status, [], {}, {}, "", "", duration_s=round(seconds, 2),
                         candidates=candidates, config=config)
    summary = RunResult(base.run_id, status, base.passes, base.metrics, dict(base.artifacts), base.config_hash,
                        base.model_source, duration_s=round(seconds, 2), failed_goals=best["failed_goals"],
                        final=base.final, logs=base.logs, config=config, candidates=candidates,
                        best=best["index"])
    return summary

