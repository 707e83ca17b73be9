"""Is the form's training-time estimate right? The calibrated estimate against a measured run of the tiny Phi-3.

Builds the tiny random Phi-3 (tests/tinymodel.py) and a LoRA config on example_notebooks/data/tones.jsonl in a temp
folder, then:

1. ``tunecell.estimate.calibrate``: a short training run of the model as the LoRA pass trains it (a few steps at
   the configured batch size and sequence length, timed), stored in the cache folder;
2. ``tunecell.estimate.estimate``: overhead + tokens the run will process x calibrated seconds per token;
3. a real run (``tunecell.runner.run``): the LoRA pass's measured train_runtime_s and tokens;
4. ``tunecell.estimate.record_run``: the measured rate is stored, and the estimate for a second, longer run (from
   the measured rate) is checked against that run too.

Target: each estimate within 30% of the measured time. A benchmark, not a unit test: the numbers depend on the
machine and its load. Run: python bench/bench_estimate.py [--steps 60] [--batch 8] [--max-seq-len 64]
[--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "example_notebooks" / "data" / "tones.jsonl"
TOLERANCE = 0.30

CONFIG = """\
input_model: {{model_path: {model}}}
data_configs:
  - name: tones
    load_dataset_config: {{data_name: json, data_files: {data}}}
    pre_process_data_config:
      text_template: "### Text: {{phrase}}\\n### The tone is:\\n{{tone}}"
      strategy: {strategy}
      max_seq_len: {max_seq_len}
      train_on_prompt: false
passes:
  lora:
    type: LoRA
    r: 8
    alpha: 16
    target_modules: [qkv_proj, o_proj, gate_up_proj, down_proj]
    train_data_config: tones
    eval_dataset_size: 0.2
    training_args: {{max_steps: {steps}, per_device_train_batch_size: {batch}, seed: 0, logging_steps: 10}}
cache_dir: {cache}
output_dir: {out}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of the first measured run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=64)
    parser.add_argument("--strategy", default="line-by-line", choices=["line-by-line", "join"])
    parser.add_argument("--calibration-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for calibration and runs alike (1 is steadier on a loaded machine)")
    options = parser.parse_args()
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)

    with tempfile.TemporaryDirectory(prefix="tunecell-bench-estimate-") as tmp:
        tmp_path = Path(tmp)
        for name, sub in (("HF_HOME", "hf"), ("HF_DATASETS_CACHE", "datasets"), ("XDG_CACHE_HOME", "xdg")):
            os.environ.setdefault(name, str(tmp_path / sub))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        sys.path.insert(0, str(ROOT / "tests"))
        from tinymodel import make_tiny_model

        from tunecell.config import load_config
        from tunecell.estimate import calibrate, estimate, human_seconds, machine, record_run
        from tunecell.runner import run

        model = make_tiny_model(tmp_path / "tiny-phi3")

        def config(steps: int, out: str):
            return load_config(CONFIG.format(model=model, data=DATA, steps=steps, batch=options.batch,
                                             max_seq_len=options.max_seq_len, strategy=options.strategy,
                                             cache=tmp_path / "cache", out=tmp_path / out))

        first = config(options.steps, "out1")
        t0 = time.perf_counter()
        cal = calibrate(first, steps=options.calibration_steps)
        calibration_s = time.perf_counter() - t0
        est1 = estimate(first)
        result1 = run(first, progress="none")
        stats1 = next(p.stats for p in result1.passes if p.name == "lora")
        comparisons = record_run(result1)

        second = config(options.steps * 2, "out2")  # after the run: estimated from the measured rate
        est2 = estimate(second)
        result2 = run(second, progress="none")
        stats2 = next(p.stats for p in result2.passes if p.name == "lora")

    def row(label: str, est, stats) -> dict:
        error = est.seconds / stats["train_runtime_s"] - 1 if est.seconds else None
        return {"run": label, "steps": [est.steps, stats["steps"]], "tokens": [est.tokens, stats["tokens"]],
                "seconds": [round(est.seconds, 2) if est.seconds else None, stats["train_runtime_s"]],
                "time_source": est.time_source, "error": round(error, 3) if error is not None else None,
                "within_30%": error is not None and abs(error) <= TOLERANCE}

    rows = [row(f"{options.steps} steps, calibrated", est1, stats1),
            row(f"{options.steps * 2} steps, from the measured run", est2, stats2)]
    report = {"machine": machine(), "load_average": os.getloadavg(),
              "calibration": {"steps": cal.steps, "seconds": round(cal.seconds, 3),
                              "wall_s_including_model_load": round(calibration_s, 2),
                              "ms_per_token": round(cal.s_per_token * 1e3, 4), "overhead_s": round(cal.overhead_s, 3)},
              "estimate_vs_measured": rows,
              "record_run": [c.describe() for c in comparisons]}
    print(json.dumps(report, indent=2, default=str))
    for r in rows:
        print(f"{r['run']}: estimated {human_seconds(r['seconds'][0])}, measured {human_seconds(r['seconds'][1])} "
              f"({r['error']:+.0%})" if r["error"] is not None else f"{r['run']}: no estimate")
    return 0 if all(r["within_30%"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
