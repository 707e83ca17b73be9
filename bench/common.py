"""Shared plumbing of the benchmark rows: paths, a quiet offline environment, process timing with peak RSS."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
WORK = RESULTS / "work"  # models, configs, caches, outputs of the runs (gitignored)
PY = str(ROOT / ".venv" / "bin" / "python")
TUNECELL = str(ROOT / ".venv" / "bin" / "tunecell")
OLIVE = str(BENCH / ".olive-venv" / "bin" / "olive")
DATA = ROOT / "example_notebooks" / "data" / "tones.jsonl"
DEMO_CONFIG = ROOT / "example_notebooks" / "tones.yaml"
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
LABELS = ["Sad", "Joy", "Fear", "Surprise"]
SMOL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MODEL_CACHE = WORK / "model-cache"  # tunecell cache_dir holding the dequantized SmolLM2 (models/<digest>)
# row 5's variant that is tunecell's default int4 model (k_quant, block 32) opened by tunecell.load_model
DEFAULT_VARIANT = "tunecell-default-via-load_model"


def env(**extra: str) -> dict[str, str]:
    """Offline, no telemetry, every library cache under WORK; 2 cores are all there is."""
    e = dict(os.environ)
    e.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "HF_HOME": str(WORK / "hf-home"), "XDG_CACHE_HOME": str(WORK / "xdg-cache"),
              "OLIVE_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0",
              "PYTHONPATH": str(ROOT)})
    e.update(extra)
    return e


def machine() -> dict[str, Any]:
    from tunecell.estimate import cpu_name

    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "mem_mib": mem, "python": platform.python_version(),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "load_avg_at_start": os.getloadavg()}


def load1() -> float:
    return os.getloadavg()[0]


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def timed(cmd: Sequence[str], log: Path, *, cwd: Optional[Path] = None, env_extra: Optional[dict] = None,
          timeout: float = 3600) -> dict[str, Any]:
    """Run cmd; wall time, peak RSS of the whole process tree (psutil, sampled every 50 ms) and the largest
    single-process max RSS (/usr/bin/time -v). Output goes to log."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    time_file = log.with_suffix(".time")
    full = ["/usr/bin/time", "-v", "-o", str(time_file), *cmd]
    peak = 0
    load_at_start = round(load1(), 2)
    with open(log, "w") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env(**(env_extra or {})))
        ps = psutil.Process(p.pid)
        while p.poll() is None:
            peak = max(peak, _tree_rss(ps))
            if time.perf_counter() - t0 > timeout:
                p.kill()
            time.sleep(0.05)
        wall = time.perf_counter() - t0
    maxrss, cpu = 0, 0.0
    if time_file.exists():
        for line in time_file.read_text().splitlines():
            if "Maximum resident set size" in line:
                maxrss = int(line.split()[-1]) * 1024
            elif "User time (seconds)" in line or "System time (seconds)" in line:
                cpu += float(line.split()[-1])
    return {"cmd": " ".join(map(str, cmd)), "rc": p.returncode, "load1_at_start": load_at_start,
            "load1_at_end": round(load1(), 2), "cpu_s": round(cpu, 1), "wall_s": round(wall, 2),
            "peak_rss_mb": round(max(peak, maxrss) / 1e6, 1), "tree_rss_sampled_mb": round(peak / 1e6, 1),
            "max_rss_one_process_mb": round(maxrss / 1e6, 1), "log": str(log)}


def median(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def save(row: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{row}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    (RESULTS / f"{row}-latest.json").write_text(json.dumps(data, indent=1, default=str))
    return path


def last_json_line(text: str, prefix: str = "BENCH_JSON ") -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])
    raise RuntimeError(f"no {prefix!r} line in the output:\n" + text[-3000:])


def py(code_or_args: Sequence[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *code_or_args], capture_output=True, text=True, env=env(), cwd=ROOT, **kw)
