"""`import tunecell`, loading a config, planning it and the CLI's validate stay light: no torch, no azure."""
from __future__ import annotations

from pathlib import Path

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "datasets", "azure", "onnxruntime", "onnxruntime_genai", "peft", "accelerate")

EXAMPLE = (Path(__file__).parent / "configs" / "example.yaml").read_text()  # the example of issue 4

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
    tones = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
    config.write_text(EXAMPLE.replace("example_notebooks/data/tones.jsonl", str(tones)), encoding="utf-8")
    script = ("import json, sys, tunecell.cli\n"
              "code = tunecell.cli.main(['validate', sys.argv[1]])\n"
              "heavy = set(json.loads(sys.argv[2]))\n"
              "print(code, json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n")
    done = subprocess.run([sys.executable, "-c", script, str(config), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []"
