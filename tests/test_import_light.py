"""`import tunecell`, loading a config, planning it and the CLI's validate stay light: no torch, no azure."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "datasets", "azure", "onnxruntime", "onnxruntime_genai", "peft", "accelerate")

EXAMPLE = """\
input_model: {type: HfModel, model_path: HuggingFaceTB/SmolLM2-135M-Instruct}
data_configs:
  - name: tones
    type: HuggingfaceContainer
    load_dataset_config: {data_name: json, data_files: example_notebooks/data/tones.jsonl, split: train}
    pre_process_data_config:
      text_template: "### Text: {phrase}\\n### The tone is:\\n{tone}"
      strategy: line-by-line
      max_seq_len: 64
passes:
  lora:
    type: LoRA
    r: 16
    alpha: 32
    lora_dropout: 0.1
    target_modules: [q_proj, k_proj, v_proj, o_proj]
    train_data_config: tones
    eval_dataset_size: 0.2
    training_args: {max_steps: 100, learning_rate: 3.0e-4, per_device_train_batch_size: 8, seed: 0}
  merge: {type: MergeAdapterWeights}
  mb: {type: ModelBuilder, precision: int4}
evaluators:
  tone_eval:
    metrics:
      - {name: accuracy, type: accuracy, data_config: tones, label_column: tone, max_new_tokens: 4}
      - {name: latency, type: latency}
evaluator: tone_eval
cache_dir: .tunecell/cache
output_dir: models/tones
"""

SCRIPT = textwrap.dedent("""
    import json, sys
    import tunecell
    config = tunecell.load_config(sys.argv[1])
    import tunecell.planner, tunecell.cli
    tunecell.plan(config).describe()
    heavy = set(json.loads(sys.argv[2]))
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
""")


def test_import_load_plan_and_cli_leave_heavy_modules_unimported(tmp_path):
    config = tmp_path / "tones.yaml"
    config.write_text(EXAMPLE, encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(config), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_cli_validate_leaves_heavy_modules_unimported(tmp_path):
    config = tmp_path / "tones.yaml"
    config.write_text(EXAMPLE, encoding="utf-8")
    script = ("import json, sys, tunecell.cli\n"
              "code = tunecell.cli.main(['validate', sys.argv[1]])\n"
              "heavy = set(json.loads(sys.argv[2]))\n"
              "print(code, json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n")
    done = subprocess.run([sys.executable, "-c", script, str(config), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []"
