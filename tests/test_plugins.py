"""Third-party passes (issue 8): the example package in examples/, installed with pip, discovered and run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "example_notebooks" / "data" / "tones.jsonl"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """examples/tunecell-int8 installed with pip into its own folder (the test venv stays as it was)."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "tunecell-int8")], check=True)
    return target


def _python(code: str, plugin_path: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_the_plugin_is_listed_with_its_options_and_source(plugin_path, tmp_path):
    out = _python("""
        from tunecell.passes.registry import describe_passes
        print(describe_passes())
    """, plugin_path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "OnnxDynamicQuantization  (onnx -> onnx)  from tunecell-int8 0.1.0" in out.stdout
    assert "per_channel: default False" in out.stdout
    out = _python("""
        from tunecell.passes.registry import pass_specs
        print(pass_specs()["OnnxDynamicQuantization"].packages)
    """, plugin_path, tmp_path)
    assert out.stdout.strip().startswith("('tunecell-int8',")  # its version is in the pass's cache key


def _write_config(tiny_model: Path, tmp_path: Path) -> None:
    """c.yaml in tmp_path: the builder's fp32 model, then the plugin's int8 quantization, both evaluated."""
    config = f"""
input_model: {{model_path: {tiny_model}}}
data_configs:
  - name: tones
    load_dataset_config: {{data_name: json, data_files: {DATA}}}
    pre_process_data_config: {{text_template: "### Text: {{phrase}}\\n### The tone is:\\n{{tone}}"}}
passes:
  mb: {{type: ModelBuilder, precision: fp32}}
  int8: {{type: OnnxDynamicQuantization, per_channel: true}}
evaluators:
  ev: {{metrics: [{{name: accuracy, type: accuracy, data_config: tones, label_column: tone, max_new_tokens: 2, max_samples: 4}},
                  {{name: size, type: size_on_disk}}]}}
evaluator: ev
cache_dir: {tmp_path}/cache
output_dir: {tmp_path}/out
"""
    (tmp_path / "c.yaml").write_text(config)


def test_the_plugin_runs_from_a_config_and_is_evaluated_like_the_others(plugin_path, tiny_model, tmp_path):
    _write_config(tiny_model, tmp_path)
    out = _python("""
        import json, tunecell
        result = tunecell.run("c.yaml", progress="none")
        print(json.dumps({"status": result.status, "metrics": result.metrics,
                          "generated": tunecell.load_model(result.artifacts["model"]).generate("Hello", 3)}))
    """, plugin_path, tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == "succeeded"
    assert set(report["metrics"]) == {"input", "mb", "int8"}
    # int8 weights are about a quarter of the fp32 ones
    assert report["metrics"]["int8"]["size"] < 0.5 * report["metrics"]["mb"]["size"]
    assert isinstance(report["generated"], str)


def test_the_command_keeps_bitsandbytes_importable_when_a_plugin_pass_runs(plugin_path, tiny_model, tmp_path):
    # `tunecell run` blocks the bitsandbytes import for configs that cannot use it; what a plugin imports is unknown
    _write_config(tiny_model, tmp_path)
    out = _python("""
        from tunecell.cli import uses_bitsandbytes
        from tunecell.config import load_config
        print("uses bitsandbytes:", uses_bitsandbytes(load_config("c.yaml")))
    """, plugin_path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "uses bitsandbytes: True" in out.stdout


def test_plugin_options_are_validated_with_located_errors(plugin_path, tmp_path):
    out = _python("""
        import tunecell
        try:
            tunecell.load_config("input_model: {model_path: m}\\npasses:\\n  mb: {type: ModelBuilder}\\n"
                                 "  int8: {type: OnnxDynamicQuantization, per_chanel: true}\\n")
        except tunecell.ConfigError as e:
            print(e.key, e.line, e.hint)
    """, plugin_path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "passes.int8.per_chanel 4 did you mean 'per_channel'?"


def test_without_the_package_the_pass_type_is_unknown(tmp_path):
    from tunecell.errors import ConfigError
    import tunecell

    with pytest.raises(ConfigError, match="OnnxDynamicQuantization' is not supported yet"):
        tunecell.load_config("input_model: {model_path: m}\npasses:\n  q: {type: OnnxDynamicQuantization}\n")


def test_a_plugin_that_breaks_the_contract_gets_a_clear_error(tmp_path):
    pkg = tmp_path / "bad"
    (pkg / "badpass").mkdir(parents=True)
    (pkg / "badpass" / "__init__.py").write_text(textwrap.dedent("""
        from typing import Literal
        from pydantic import BaseModel
        class Config(BaseModel):
            type: Literal["Other"] = "Other"
        class Bad:
            config_model = Config
            takes = {"onnx"}
            gives = "onnx"
            def run(self, input, config, context):
                return {}
    """))
    dist = pkg / "badpass-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: badpass\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tunecell.passes]\nBadPass = badpass:Bad\n")
    out = _python("""
        import tunecell
        try:
            tunecell.load_config("input_model: {model_path: m}\\n")
        except tunecell.TunecellError as e:
            print(e)
    """, pkg, tmp_path)
    assert "the pass 'BadPass' from badpass 0.1" in out.stdout and "Literal['BadPass']" in out.stdout
