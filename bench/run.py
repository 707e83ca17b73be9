"""The benchmark rows of issue 9. `python -m bench <row> [--runs N]` or `python bench/run.py <row>`.

Rows: e2e (1), train (2), cached (3), loadext (4), gen (5), preview (6), accuracy (7), all; `seeds` (issue 4's
accuracy over training seeds, against the plain script); `prepare` makes the models and data the rows share. Each
row prints a summary and saves its raw numbers to bench/results/<row>-*.json.
Timings on a shared machine are noise: `--wait-idle` waits until the 1-minute load average is below 1.0.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import (DATA, DEFAULT_VARIANT, LABELS, MODEL_CACHE, OLIVE, PY, RESULTS, ROOT,  # noqa: E402
                          SMOL_ID, TEMPLATE, TUNECELL, WORK, env, last_json_line, load1, machine, median, py, save,
                          timed)

WORKLOADS = {
    "smollm2": {"targets": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "tinyphi3": {"targets": ["qkv_proj", "o_proj"]},  # Phi-3 fuses q/k/v into qkv_proj
}
PLAIN_SCRIPT = str(ROOT / "bench" / "plain_pipeline.py")
STEPS, BATCH, LR, R, ALPHA, DROPOUT, SEED, MAX_LEN, EVAL_SIZE = 100, 8, 3e-4, 16, 32, 0.1, 0, 64, 0.2


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')} load {load1():.2f}] {msg}", flush=True)


def probe(*args: str, timeout: float = 3600) -> dict:
    p = py(["-m", "bench.probes", *args], timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"probe {args} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return last_json_line(p.stdout)


# ------------------------------------------------------------------------------------------ preparation
def base_model(workload: str) -> Path:
    """The HF folder every tool trains from: tunecell's dequantized cache folder of the embedded SmolLM2 GGUF
    (resolved with tunecell.models.resolve_model), or the tiny random Phi-3 of tests/tinymodel.py."""
    if workload == "smollm2":
        code = ("from tunecell.config.schema import InputModel; from tunecell.models import resolve_model; "
                f"print(resolve_model(InputModel(model_path={SMOL_ID!r}), {str(MODEL_CACHE)!r}).path)")
        p = py(["-c", code])
        if p.returncode != 0:
            raise RuntimeError(p.stderr)
        return Path(p.stdout.strip().splitlines()[-1])
    folder = WORK / "tiny-phi3"
    if not (folder / "config.json").is_file():
        code = ("import sys; sys.path.insert(0, 'tests'); from tinymodel import make_tiny_model; "
                f"make_tiny_model({str(folder)!r})")
        p = py(["-c", code])
        if p.returncode != 0:
            raise RuntimeError(p.stderr)
    return folder


def split_files(seed: int = SEED) -> tuple[Path, Path]:
    """train.jsonl / eval.jsonl: tunecell's seeded split (eval_dataset_size 0.2, the training seed), for Olive and
    the plain script; tunecell splits the full file itself and gets the same rows."""
    sys.path.insert(0, str(ROOT))
    from tunecell.data.split import split_indices

    lines = [line for line in DATA.read_text().splitlines() if line.strip()]
    train_idx, eval_idx = split_indices(len(lines), EVAL_SIZE, seed)
    folder = WORK / "data" if seed == SEED else WORK / "data" / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("\n".join(lines[i] for i in train_idx) + "\n")
    (folder / "eval.jsonl").write_text("\n".join(lines[i] for i in eval_idx) + "\n")
    return folder / "train.jsonl", folder / "eval.jsonl"


def cache_dir(workload: str) -> Path:
    return MODEL_CACHE if workload == "smollm2" else WORK / "cache-tinyphi3"


def tunecell_config(workload: str, *, evaluate: bool, name: str, seed: int = SEED, loss_on: str = "answer",
                    build: bool = True) -> Path:
    """The demo config (example_notebooks/tones.yaml) with absolute paths; without evaluators for timing.
    loss_on "text" is issue 4's config as written (train_on_prompt left at Olive's way); build False stops after
    the merge."""
    model_path = SMOL_ID if workload == "smollm2" else str(base_model(workload))
    cfg = {
        "input_model": {"type": "HfModel", "model_path": model_path},
        "data_configs": [{
            "name": "tones", "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": str(DATA), "split": "train"},
            "pre_process_data_config": {"text_template": TEMPLATE, "strategy": "line-by-line", "max_seq_len": MAX_LEN,
                                        "train_on_prompt": loss_on == "text", "labels": LABELS}}],
        "passes": {
            "lora": {"type": "LoRA", "r": R, "alpha": ALPHA, "lora_dropout": DROPOUT,
                     "target_modules": WORKLOADS[workload]["targets"], "train_data_config": "tones",
                     "eval_dataset_size": EVAL_SIZE,
                     "training_args": {"max_steps": STEPS, "learning_rate": LR, "per_device_train_batch_size": BATCH,
                                       "seed": seed}},
            "merge": {"type": "MergeAdapterWeights"},
            **({"mb": {"type": "ModelBuilder", "precision": "int4"}} if build else {})},
        "cache_dir": str(cache_dir(workload)),
        "output_dir": str(WORK / "out" / f"tunecell-{workload}-{name}"),
    }
    if evaluate:
        cfg["evaluators"] = {"tone_eval": {"metrics": [
            {"name": "accuracy", "type": "accuracy", "data_config": "tones", "label_column": "tone",
             "max_new_tokens": 4}]}}
        cfg["evaluator"] = "tone_eval"
    path = WORK / "configs" / f"tunecell-{workload}-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=1))
    return path


def clear_pass_cache(workload: str) -> None:
    """Everything in the cache folder but the dequantized models and their file hashes: every pass runs again."""
    folder = cache_dir(workload)
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name != "models":
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def olive_config(workload: str, base: Path, train: Path, out: Path, cache: Path) -> Path:
    cfg = {
        "input_model": {"type": "HfModel", "model_path": str(base)},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": [{
            "name": "train_data", "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "split": "train", "data_files": [str(train)]},
            "pre_process_data_config": {"text_template": TEMPLATE, "strategy": "line-by-line",
                                        "max_seq_len": MAX_LEN}}],
        "passes": {
            "lora": {"type": "LoRA", "train_data_config": "train_data", "torch_dtype": "float32", "r": R,
                     "alpha": ALPHA, "lora_dropout": DROPOUT, "target_modules": WORKLOADS[workload]["targets"],
                     "training_args": {"per_device_train_batch_size": BATCH, "max_steps": STEPS, "learning_rate": LR,
                                       "lr_scheduler_type": "constant", "seed": SEED, "logging_steps": 10}},
            "merge": {"type": "MergeAdapterWeights"},
            "builder": {"type": "ModelBuilder", "precision": "int4"}},
        "host": "local_system", "target": "local_system",
        "cache_dir": str(cache), "output_dir": str(out), "log_severity_level": 1, "no_artifacts": True,
    }
    path = WORK / "configs" / f"olive-{workload}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=1))
    return path


def plain_spec(workload: str, base: Path, train: Path, out: Path, build: bool = True, merge: bool = True,
               seed: int = SEED, loss_on: str = "answer") -> Path:
    spec = {"base": str(base), "train": str(train), "out": str(out), "template": TEMPLATE,
            "target_modules": WORKLOADS[workload]["targets"], "steps": STEPS, "batch": BATCH, "lr": LR, "r": R,
            "alpha": ALPHA, "dropout": DROPOUT, "seed": seed, "max_seq_len": MAX_LEN, "precision": "int4",
            "build": build, "merge": merge or build, "loss_on": loss_on}
    path = WORK / "configs" / f"plain-{workload}{'' if build else '-train'}-{seed}-{loss_on}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1))
    return path


def find_onnx(folder: Path) -> Path | None:
    found = sorted(folder.rglob("genai_config.json"))
    return found[0].parent if found else None


def accuracy_of(model_dir: Path | None, eval_file: Path) -> float | None:
    if model_dir is None:
        return None
    return probe("accuracy", str(model_dir), str(eval_file))["accuracy"]


def events_summary(path: Path) -> dict:
    out = {"passes": {}, "train_tokens_per_s": None}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "PassFinished":
            out["passes"][e["name"]] = e["duration_s"]
        elif e["event"] == "TrainStep" and e.get("tokens_per_s"):
            out["train_tokens_per_s"] = e["tokens_per_s"]
    return out


def prepare(args) -> dict:
    info = {w: str(base_model(w)) for w in WORKLOADS}
    info["split"] = [str(p) for p in split_files()]
    log(f"prepared {info}")
    return info


# ------------------------------------------------------------------------------------------------ row 1
def row_e2e(args) -> dict:
    """tunecell run --config vs olive run --config vs the plain script: wall, peak RSS, held-out accuracy."""
    train, evalf = split_files()
    data = {"machine": machine(), "runs": {}, "settings": {
        "steps": STEPS, "batch": BATCH, "lr": LR, "r": R, "alpha": ALPHA, "dropout": DROPOUT, "max_seq_len": MAX_LEN,
        "strategy": "line-by-line", "precision": "int4", "evaluation": "excluded from the timed runs"}}
    tools = args.tools.split(",")
    for workload in args.workloads.split(","):
        base = base_model(workload)
        runs = data["runs"][workload] = []
        for i in range(args.runs):
            order = tools[i % len(tools):] + tools[:i % len(tools)]  # rotate, so no tool always runs first
            one = {}
            if workload == "smollm2":  # row 2 from the same runs: the GEMM rate of this repetition
                one["gemm_gflops"] = probe("gemm", "--threads", "2")["gflops_median"]
            for tool in order:
                settle(args)
                log(f"e2e {workload} run {i + 1}/{args.runs}: {tool}")
                logs = RESULTS / "logs" / f"e2e-{workload}-{tool}-{i}.log"
                if tool == "tunecell":
                    clear_pass_cache(workload)
                    cfg = tunecell_config(workload, evaluate=False, name="e2e")
                    events = logs.with_suffix(".events")
                    events.unlink(missing_ok=True)
                    m = timed([TUNECELL, "run", "--config", str(cfg), "--progress", "none", "--events", str(events)],
                              logs)
                    m.update(events_summary(events))
                    out = find_onnx(WORK / "out" / f"tunecell-{workload}-e2e" / "model")
                elif tool == "olive":
                    out_dir, cache = WORK / "out" / f"olive-{workload}", WORK / f"olive-cache-{workload}"
                    shutil.rmtree(out_dir, ignore_errors=True)
                    shutil.rmtree(cache, ignore_errors=True)
                    cfg = olive_config(workload, base, train, out_dir, cache)
                    m = timed([OLIVE, "run", "--config", str(cfg)], logs)
                    out = find_onnx(out_dir)
                else:
                    out_dir = WORK / "out" / f"plain-{workload}"
                    shutil.rmtree(out_dir, ignore_errors=True)
                    m = timed([PY, PLAIN_SCRIPT, str(plain_spec(workload, base, train, out_dir))], logs)
                    try:
                        m["plain"] = last_json_line(Path(logs).read_text())
                    except RuntimeError:
                        pass
                    out = find_onnx(out_dir / "onnx")
                m["onnx"] = str(out) if out else None
                m["accuracy"] = accuracy_of(out, evalf) if m["rc"] == 0 else None
                log(f"   {tool}: rc {m['rc']} wall {m['wall_s']} s peak {m['peak_rss_mb']} MB acc {m['accuracy']}")
                one[tool] = m
            runs.append(one)
            data["summary"] = summarize_e2e(data["runs"], tools)  # partial results survive an interrupted row
            data["summary"]["training_throughput"] = throughput_from_e2e(data["runs"])
            save("e2e", data)
    data["summary"] = summarize_e2e(data["runs"], tools)
    data["summary"]["training_throughput"] = throughput_from_e2e(data["runs"])
    print(json.dumps(data["summary"], indent=1))
    return data


def summarize_e2e(runs: dict, tools: list[str]) -> dict:
    summary = {}
    for workload, reps in runs.items():
        s = summary[workload] = {}
        for tool in tools:
            ok = [r[tool] for r in reps if tool in r and r[tool]["rc"] == 0]
            s[tool] = {"wall_s": median([r["wall_s"] for r in ok]), "peak_rss_mb": median([r["peak_rss_mb"] for r in ok]),
                       "cpu_s": median([r.get("cpu_s") for r in ok]), "load1_at_start": [r.get("load1_at_start") for r in ok],
                       "accuracy": median([r["accuracy"] for r in ok]), "runs_ok": len(ok)}
        for a, b in (("tunecell", "olive"), ("tunecell", "plain"), ("plain", "olive")):
            pairs = [r for r in reps if a in r and b in r and r[a]["rc"] == 0 and r[b]["rc"] == 0]
            s[f"{a}/{b}"] = {
                "wall": median([r[a]["wall_s"] / r[b]["wall_s"] for r in pairs]),
                "cpu": median([r[a]["cpu_s"] / r[b]["cpu_s"] for r in pairs if r[a].get("cpu_s") and r[b].get("cpu_s")]),
                "peak_rss": median([r[a]["peak_rss_mb"] / r[b]["peak_rss_mb"] for r in pairs])}
    return summary


def throughput_from_e2e(runs: dict) -> dict:
    """Row 2 from row 1's runs: tunecell's rate (its TrainStep events: real tokens since the first step over the
    time since) and the plain script's (real tokens collated over train time), with the GEMM rate measured in the
    same repetition."""
    out = {}
    for workload, reps in runs.items():
        rows = []
        for r in reps:
            t, p = r.get("tunecell", {}), r.get("plain", {})
            if t.get("train_tokens_per_s") and p.get("plain"):
                row = {"tunecell": t["train_tokens_per_s"], "plain": p["plain"]["tokens_per_s"],
                       "params": p["plain"]["params"]}
                row["ratio"] = row["tunecell"] / row["plain"]
                if r.get("gemm_gflops"):
                    row["gemm_gflops"] = r["gemm_gflops"]
                    for tool in ("tunecell", "plain"):
                        row[f"{tool}_fraction_of_gemm"] = 4 * row["params"] * row[tool] / 1e9 / r["gemm_gflops"]
                rows.append(row)
        if rows:
            out[workload] = {"runs": rows, **{k: median([x.get(k) for x in rows]) for k in rows[0] if k != "params"},
                             "params": rows[0]["params"]}
    return out


# ------------------------------------------------------------------------------------------------ row 2
def row_train(args) -> dict:
    """Training throughput in real (non-pad) tokens/s: tunecell's LoRA pass vs the plain script, same data; achieved
    FLOP/s = 4 x parameters x tokens / time against the fp32 GEMM FLOP/s measured in the same invocation."""
    train, _ = split_files()
    workload = args.workloads.split(",")[0]
    base = base_model(workload)
    data = {"machine": machine(), "workload": workload, "runs": [], "steps": STEPS,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    for i in range(args.runs):
        settle(args)
        log(f"train run {i + 1}/{args.runs}")
        g = probe("gemm", "--threads", os.environ.get("OMP_NUM_THREADS", "2"))
        clear_pass_cache(workload)
        t = probe("train-tunecell", str(tunecell_config(workload, evaluate=False, name="train")))
        out_dir = WORK / "out" / f"plain-train-{workload}"
        shutil.rmtree(out_dir, ignore_errors=True)
        p = py([PLAIN_SCRIPT, str(plain_spec(workload, base, train, out_dir, build=False, merge=False))])
        plain = last_json_line(p.stdout)
        g2 = probe("gemm", "--threads", os.environ.get("OMP_NUM_THREADS", "2"))
        gemm = (g["gflops_median"] + g2["gflops_median"]) / 2
        params = plain["params"]
        one = {"gemm_gflops": gemm, "gemm_before_after": [g["gflops_median"], g2["gflops_median"]],
               "params": params,
               "tunecell": {"tokens_per_s": t["tokens_per_s"], "stats": t["stats"]},
               "plain": {"tokens_per_s": plain["tokens_per_s"], "tokens": plain["tokens"],
                         "padded_positions": plain["padded_positions"], "train_s": plain["train_s"]}}
        for tool in ("tunecell", "plain"):
            flops = 4 * params * one[tool]["tokens_per_s"]
            one[tool]["achieved_gflops"] = flops / 1e9
            one[tool]["fraction_of_gemm"] = flops / 1e9 / gemm
        one["tunecell/plain"] = t["tokens_per_s"] / plain["tokens_per_s"]
        log(f"   tunecell {t['tokens_per_s']:.0f} tok/s, plain {plain['tokens_per_s']:.0f} tok/s, "
            f"ratio {one['tunecell/plain']:.2f}; GEMM {gemm:.0f} GFLOP/s; tunecell "
            f"{one['tunecell']['fraction_of_gemm']:.0%} of it, plain {one['plain']['fraction_of_gemm']:.0%}")
        data["runs"].append(one)
    data["summary"] = {
        "tunecell_tokens_per_s": median([r["tunecell"]["tokens_per_s"] for r in data["runs"]]),
        "plain_tokens_per_s": median([r["plain"]["tokens_per_s"] for r in data["runs"]]),
        "tunecell/plain": median([r["tunecell/plain"] for r in data["runs"]]),
        "gemm_gflops": median([r["gemm_gflops"] for r in data["runs"]]),
        "tunecell_fraction_of_gemm": median([r["tunecell"]["fraction_of_gemm"] for r in data["runs"]]),
        "plain_fraction_of_gemm": median([r["plain"]["fraction_of_gemm"] for r in data["runs"]]),
        "params": data["runs"][0]["params"] if data["runs"] else None,
        "flops_formula": "4 x (all base-model parameters, embedding/tied lm_head counted once) x real tokens"}
    print(json.dumps(data["summary"], indent=1))
    return data


# ------------------------------------------------------------------------------------------------ seeds
def row_seeds(args) -> dict:
    """Issue 4's held-out accuracy over training seeds (each seed also draws the 80/20 split): tunecell and the
    plain script, each with the loss on the whole text (the issue's config as written) and on the answer only,
    LoRA and merge on the embedded SmolLM2; the merged fp32 model's accuracy on that seed's held-out rows."""
    base = base_model("smollm2")
    tools = [t for t in args.tools.split(",") if t in ("tunecell", "plain")]
    data = {"machine": machine(), "runs": [], "settings": {
        "steps": STEPS, "batch": BATCH, "lr": LR, "r": R, "alpha": ALPHA, "dropout": DROPOUT, "max_seq_len": MAX_LEN,
        "metric": "merged fp32, first label word in 4 greedy tokens, the seed's held-out 20%"}}
    for seed in (int(s) for s in args.seeds.split(",")):
        train, evalf = split_files(seed)
        for loss_on in ("text", "answer"):
            for tool in tools:
                settle(args)
                log(f"seeds: seed {seed}, loss on the {loss_on}, {tool}")
                name = f"seed{seed}-{loss_on}"
                logs = RESULTS / "logs" / f"seeds-{tool}-{name}.log"
                if tool == "tunecell":
                    clear_pass_cache("smollm2")
                    cfg = tunecell_config("smollm2", evaluate=False, name=name, seed=seed, loss_on=loss_on,
                                          build=False)
                    m = timed([TUNECELL, "run", "--config", str(cfg), "--progress", "none"], logs)
                    merged = WORK / "out" / f"tunecell-smollm2-{name}" / "model"
                else:
                    out_dir = WORK / "out" / f"plain-smollm2-{name}"
                    shutil.rmtree(out_dir, ignore_errors=True)
                    spec = plain_spec("smollm2", base, train, out_dir, build=False, seed=seed, loss_on=loss_on)
                    m = timed([PY, PLAIN_SCRIPT, str(spec)], logs)
                    merged = out_dir / "merged"
                acc = accuracy_of(merged, evalf) if m["rc"] == 0 else None
                log(f"   rc {m['rc']} wall {m['wall_s']} s accuracy {acc}")
                data["runs"].append({"seed": seed, "loss_on": loss_on, "tool": tool, "accuracy": acc,
                                     "wall_s": m["wall_s"], "rc": m["rc"]})
                save("seeds", data)
    by_variant: dict[str, list] = {}
    for r in data["runs"]:
        by_variant.setdefault(f"{r['tool']}, loss on the {r['loss_on']}", []).append(r["accuracy"])
    data["summary"] = {}
    for variant, accs in by_variant.items():
        scored = [a for a in accs if a is not None]
        data["summary"][variant] = {"accuracy_by_seed": accs, "mean": statistics.fmean(scored) if scored else None}
    print(json.dumps(data["summary"], indent=1))
    return data


# ------------------------------------------------------------------------------------------------ row 3 and 7
def full_run(workload: str) -> tuple[Path, dict]:
    """The demo config with its evaluator, run once (passes reused from the cache when there)."""
    cfg = tunecell_config(workload, evaluate=True, name="full")
    logs = RESULTS / "logs" / f"full-{workload}.log"
    m = timed([TUNECELL, "run", "--config", str(cfg), "--progress", "none"], logs)
    if m["rc"] != 0:
        raise RuntimeError(f"the full run failed, see {logs}")
    return cfg, m


def row_cached(args) -> dict:
    """An unchanged config run again: in process (< 1 s) and from the CLI (no torch import)."""
    workload = args.workloads.split(",")[0]
    cfg, first = full_run(workload)
    data = {"machine": machine(), "workload": workload, "first_full_run": first, "cli": [], "inprocess": []}
    for i in range(args.runs):
        settle(args)
        m = timed([TUNECELL, "run", "--config", str(cfg), "--progress", "none"],
                  RESULTS / "logs" / f"cached-cli-{i}.log")
        c = probe("cached-cli", str(cfg))
        m["heavy_modules_imported"] = c["heavy_modules_imported"]
        data["cli"].append(m)
        data["inprocess"].append(probe("cached-inprocess", str(cfg)))
        log(f"   cached: CLI {m['wall_s']} s ({m['peak_rss_mb']} MB, heavy modules {c['heavy_modules_imported']}); "
            f"in process {data['inprocess'][-1]['repeat_median_s'] * 1000:.0f} ms")
    data["summary"] = {
        "cli_wall_s": median([m["wall_s"] for m in data["cli"]]),
        "cli_peak_rss_mb": median([m["peak_rss_mb"] for m in data["cli"]]),
        "cli_heavy_modules": data["cli"][-1]["heavy_modules_imported"],
        "inprocess_repeat_s": median([r["repeat_median_s"] for r in data["inprocess"]]),
        "inprocess_first_call_s": median([r["first_call_s"] for r in data["inprocess"]]),
        "inprocess_torch_imported": any(r["torch_imported"] for r in data["inprocess"])}
    print(json.dumps(data["summary"], indent=1))
    return data


def row_accuracy(args) -> dict:
    """int4 ONNX vs the merged PyTorch model on the held-out split (tunecell's evaluator, then the same function
    the other rows use, on both artifacts)."""
    workload = args.workloads.split(",")[0]
    _, evalf = split_files()
    cfg, m = full_run(workload)
    out = WORK / "out" / f"tunecell-{workload}-full"
    manifest = sorted((out).rglob("manifest*.json")) if out.exists() else []
    # the cached in-process rerun reports the metrics without running anything
    inproc = probe("cached-inprocess", str(cfg), "--reps", "1")
    metrics = inproc["metrics"]
    merged = next(Path(p) for p in sorted(cache_dir(workload).glob("default_workflow/merge-*/artifact")))
    onnx = find_onnx(out / "model")
    direct = {"merged_pytorch": accuracy_of(merged, evalf), "int4_onnx": accuracy_of(onnx, evalf)}
    data = {"machine": machine(), "workload": workload, "tunecell_metrics": metrics, "direct": direct,
            "drop_points": 100 * (direct["merged_pytorch"] - direct["int4_onnx"]), "manifests": [str(p) for p in manifest]}
    print(json.dumps({k: v for k, v in data.items() if k != "machine"}, indent=1))
    return data


# ------------------------------------------------------------------------------------------------ row 4
def row_loadext(args) -> dict:
    runs = []
    for i in range(args.runs):
        settle(args)
        runs.append(probe("loadext"))
    data = {"machine": machine(), "runs": runs, "summary": {
        "seconds": median([r["seconds"] for r in runs]), "torch_imported": any(r["torch_imported"] for r in runs),
        "new_modules": runs[-1]["new_modules"], "new_top_level": runs[-1]["new_top_level"]}}
    print(json.dumps(data["summary"], indent=1))
    return data


# ------------------------------------------------------------------------------------------------ row 5
VARIANTS = [  # (name, builder args of `bench.probes build`, onnxruntime-genai session intra-op threads or None)
    (DEFAULT_VARIANT, ["--block", "32", "--extra", "algo_config=k_quant_mixed"], None),  # as users get it
    ("b32-kquant-via-load_model", ["--block", "32", "--extra", "algo_config=k_quant"], None),  # the default before
    ("b32-kquant", ["--block", "32", "--extra", "algo_config=k_quant"], None),
    ("b32-rtn", ["--block", "32", "--extra", "algo_config=rtn"], None),
    ("builder-default-b32", ["--block", "32", "--extra", "algo_config=default"], None),  # tunecell's first
    ("b64-rtn", ["--block", "64", "--extra", "algo_config=rtn"], None),
    ("b128-rtn", ["--block", "128", "--extra", "algo_config=rtn"], None),
    ("b32-rtn-acc1", ["--block", "32", "--acc", "1", "--extra", "algo_config=rtn"], None),
    ("b32-rtn-threads2", ["--block", "32", "--extra", "algo_config=rtn"], 2),
    ("b128-rtn-threads2", ["--block", "128", "--extra", "algo_config=rtn"], 2),
]


def row_gen(args) -> dict:
    """Generation on SmolLM2-135M (the demo's merged model): int4 ONNX variants vs PyTorch fp32 generate."""
    workload = "smollm2"
    _, evalf = split_files()
    cfg, _ = full_run(workload)
    merged = next(Path(p) for p in sorted(cache_dir(workload).glob("default_workflow/merge-*/artifact")))
    built = {}
    variants = [v for v in VARIANTS if not args.variants or v[0] in args.variants.split(",")]
    for name, build_args, threads in variants:
        folder = WORK / "gen" / ("-".join(build_args).replace("--", "").replace("=", "-"))
        if not (folder / "genai_config.json").is_file():
            log(f"building {folder.name}")
            probe("build", str(merged), str(folder), *build_args)
        target = folder
        if threads:
            target = WORK / "gen" / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for f in folder.iterdir():
                if f.is_file() and f.name != "genai_config.json":
                    os.link(f, target / f.name)
            gc = json.loads((folder / "genai_config.json").read_text())
            gc["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
            (target / "genai_config.json").write_text(json.dumps(gc, indent=1))
        built[name] = target
    data = {"machine": machine(), "runs": [], "accuracy": {}}
    for i in range(args.runs):
        settle(args)
        log(f"generation run {i + 1}/{args.runs}")
        r = probe("generation", str(merged), *[f"{n}={p}" for n, p in built.items()])
        data["runs"].append(r)
        log("   pytorch {:.1f} tok/s; ".format(r["pytorch"]["tok_per_s"]) + "; ".join(
            f"{n} {r[n]['tok_per_s']:.0f} tok/s x{r[n]['speedup_vs_pytorch']:.2f} bw {r[n]['fraction_of_copy_bw']:.0%}"
            for n in built))
    if not args.no_accuracy:
        data["accuracy"]["merged_pytorch"] = accuracy_of(merged, evalf)
        for name, _, threads in variants:
            if not threads and not name.endswith("via-load_model"):
                data["accuracy"][name] = accuracy_of(built[name], evalf)
    s = data["summary"] = {"pytorch_tok_per_s": median([r["pytorch"]["tok_per_s"] for r in data["runs"]]),
                           "copy_gbs": median([max(r["copy_bandwidth"]["torch_gbs"], r["copy_bandwidth"]["numpy_gbs"])
                                               for r in data["runs"]])}
    for name in built:
        s[name] = {"tok_per_s": median([r[name]["tok_per_s"] for r in data["runs"]]),
                   "speedup": median([r[name]["speedup_vs_pytorch"] for r in data["runs"]]),
                   "fraction_of_copy_bw": median([r[name]["fraction_of_copy_bw"] for r in data["runs"]]),
                   "weight_mb_per_token": data["runs"][0][name]["weight_bytes_per_token"] / 1e6,
                   "accuracy": data["accuracy"].get(name)}
    print(json.dumps(s, indent=1))
    return data


# ------------------------------------------------------------------------------------------------ row 6
def row_preview(args) -> dict:
    runs = []
    for i in range(args.runs):
        settle(args)
        p = py([str(ROOT / "bench" / "bench_preview.py"), "100000"])
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-3000:])
        first = float(next(line.split("=")[1] for line in p.stdout.splitlines() if line.startswith("first_page_seconds")))
        runs.append({"first_page_s": first, "output": p.stdout})
        log(f"   preview first page {first:.3f} s")
    data = {"machine": machine(), "runs": runs, "summary": {"first_page_s": median([r["first_page_s"] for r in runs])}}
    print(json.dumps(data["summary"], indent=1))
    return data


# ------------------------------------------------------------------------------------------------ main
_IDLE_ONCE = False


def busy_fraction(seconds: float = 10.0) -> float:
    """CPU time used by every process over `seconds`, as a fraction of all cores (this process included)."""
    def total():
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    t0, i0 = total()
    time.sleep(seconds)
    t1, i1 = total()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def settle(args) -> None:
    """Before a timed measurement: wait for an idle machine when --wait-idle is given."""
    if args.wait_idle:
        wait_idle(args.max_load, limit=args.max_wait)


def wait_idle(max_load: float, poll: int = 60, limit: int = 2400, between_limit: int = 180) -> None:
    """The first time: wait until the 1-minute load average is below max_load (at most `limit` s). Later (between
    runs, when this harness's own last run still weighs on the load average): wait until the machine is idle now,
    under 10% of its CPU busy over 10 s."""
    global _IDLE_ONCE
    waited = 0
    if not _IDLE_ONCE:
        while load1() >= max_load and waited < limit:
            log(f"waiting for the 1-minute load average to drop below {max_load}")
            time.sleep(poll)
            waited += poll
        _IDLE_ONCE = True
        return
    while (busy := busy_fraction()) > 0.10 and waited < between_limit:
        log(f"waiting: {busy:.0%} of the CPU busy")
        waited += 10
    if busy > 0.10:
        log(f"measuring anyway: {busy:.0%} of the CPU busy (load {load1():.2f})")


def report(args) -> dict:
    from bench.report import table

    print(table())
    return {}


ROWS = {"prepare": prepare, "report": report, "e2e": row_e2e, "train": row_train, "cached": row_cached, "loadext": row_loadext,
        "gen": row_gen, "preview": row_preview, "accuracy": row_accuracy, "seeds": row_seeds}
ALIASES = {"1": "e2e", "2": "train", "3": "cached", "4": "loadext", "5": "gen", "6": "preview", "7": "accuracy"}


def compile_tunecell() -> None:
    """Compile tunecell's modules, as `pip install .` does when it installs them. .venv's install is editable, and
    where PYTHONDONTWRITEBYTECODE is set (this project's machine sets it) Python never caches them: every timed
    run would compile each module changed since its last cached copy (15 of the 42 a run imported, 2026-12-03).
    The libraries' and Olive's modules were compiled by pip; the plain script's own file is compiled in any case."""
    import compileall

    for folder in ("ext", "magics", "widgets"):
        compileall.compile_dir(str(ROOT / folder), quiet=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", nargs="+", help=f"{', '.join(ROWS)}, all (or 1-7)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (medians are reported)")
    parser.add_argument("--workloads", default="smollm2,tinyphi3", help="e2e: smollm2,tinyphi3; train/cached: first")
    parser.add_argument("--tools", default="tunecell,olive,plain", help="e2e: which of tunecell,olive,plain")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds: the training seeds (each draws its split)")
    parser.add_argument("--variants", default="", help="gen: names from VARIANTS (default all)")
    parser.add_argument("--no-accuracy", action="store_true", help="gen: skip the accuracy of each variant")
    parser.add_argument("--wait-idle", action="store_true", help="wait for the load average to drop before each run")
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps (default the demo's 100)")
    parser.add_argument("--max-wait", type=int, default=2400, help="seconds to wait for the load average, once")
    args = parser.parse_args(argv)
    globals()["STEPS"] = args.steps
    rows = [ALIASES.get(r, r) for r in args.row]
    compile_tunecell()
    if rows == ["all"]:
        rows = ["prepare", "loadext", "preview", "cached", "accuracy", "gen", "train", "e2e"]
    for row in rows:
        if row not in ROWS:
            parser.error(f"unknown row {row}")
        log(f"row {row}")
        data = ROWS[row](args)
        if row not in ("prepare", "report"):
            log(f"saved {save(row, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
