"""Check an Olive JSON config exported by tunecell against a real Olive 0.13 (not a unit test).

Runs in Olive's own venv (bench/.olive-venv, made by bench/setup_olive.sh: Olive 0.13 needs onnxruntime-genai 0.14.1,
which conflicts with tunecell's). Olive 0.13 has no `olive run --dry_run`, so this does what `olive run --config`
does before it runs anything, and a little more:

1. `olive.workflows.run.config.RunConfig.parse_file_or_obj`: Olive's own loader and validator (systems, data
   configs, evaluators, engine, passes); its warnings about keys it ignores are collected.
2. Each pass's parameters through the pass class's `generate_config` (search off), on the accelerator of the
   config's host: what Olive would actually run, with its defaults filled in; keys it ignores are collected.
3. Each data config's pre-processing keys against Olive's `TextGenParams`: keys Olive does not know are ignored
   by Olive (tunecell's own, such as train_on_prompt, change what is trained).
4. With --export (the config is given in any dialect tunecell reads), tunecell's effective settings of each pass
   (from its plan) against Olive's: a setting the export left out because it is tunecell's default, where Olive's
   default differs, is a run that would not train the same model. (Where Olive leaves a setting unset, the
   library's default is compared: transformers' for training arguments; the builder's own defaults are not.)

Usage:
    bash bench/setup_olive.sh                                   # once
    bench/.olive-venv/bin/python bench/olive_export_check.py exported.json [more.json ...]
    bench/.olive-venv/bin/python bench/olive_export_check.py --export example_notebooks/tones.yaml \\
        tests/configs/cookbook.json tests/configs/params_config.json tests/configs/olive013.json

--export writes the Olive JSON with the repository's .venv (tunecell's export_config) under
bench/results/olive-export/ first. Exit status 0 when Olive loads every file, 1 when it rejects one. Each file's
report ends with OK, OK with warnings, or FAILED.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
TUNECELL_PYTHON = REPO / ".venv" / "bin" / "python"
EXPORT_DIR = REPO / "bench" / "results" / "olive-export"

# runs in the tunecell venv: write the Olive JSON, print tunecell's effective pass settings and pre-processing
EXPORT_SCRIPT = r"""
import json, sys
from tunecell.config import load_config
from tunecell.config.export import export_config
from tunecell.planner import plan
config = load_config(sys.argv[1])
notes = export_config(config, sys.argv[2])
from transformers import TrainingArguments
defaults = TrainingArguments(output_dir="unused", use_cpu=True)
defaults = {"optim": str(getattr(defaults.optim, "value", defaults.optim))}
print(json.dumps({"notes": notes, "training_defaults": defaults,
                  "passes": {s.name: s.settings for s in plan(config).steps},
                  "data": {d.name: d.pre_process_data_config.model_dump(mode="json") for d in config.data_configs}}))
"""
# tunecell's names -> Olive's, where they differ (pass settings and training arguments)
SAME_MEANING = {"train_data_config": None, "eval_data_config": None, "execution_provider": None}
PRE_PROCESS_OLIVE_ARGS = {"model_name", "task", "trust_remote_code"}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def export(source: Path) -> tuple[Path, dict[str, Any]]:
    """tunecell's export of ``source`` (any dialect) as Olive JSON, and tunecell's effective settings."""
    if not TUNECELL_PYTHON.exists():
        sys.exit(f"--export needs tunecell's venv at {TUNECELL_PYTHON} (bash .ci/setup.sh)")
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    target = EXPORT_DIR / f"{source.stem}.json"
    done = subprocess.run([str(TUNECELL_PYTHON), "-c", EXPORT_SCRIPT, str(source), str(target)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"tunecell could not export {source}:\n{done.stderr}")
    return target, json.loads(done.stdout.strip().splitlines()[-1])


def accelerator_for(run_config: Any) -> Any:
    from olive.hardware import DEFAULT_CPU_ACCELERATOR, DEFAULT_GPU_CUDA_ACCELERATOR

    host = run_config.engine.host
    accelerators = getattr(getattr(host, "config", None), "accelerators", None) or []
    device = str(getattr(accelerators[0], "device", "cpu")).lower() if accelerators else "cpu"
    return DEFAULT_GPU_CUDA_ACCELERATOR if "gpu" in device else DEFAULT_CPU_ACCELERATOR


def plain(value: Any) -> Any:
    """A JSON-able view of Olive's values (enums, DataConfigs, nested models)."""
    if hasattr(value, "model_dump"):
        return plain(value.model_dump())
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
        return value.value
    return value


def compare_pass(name: str, olive: dict[str, Any], tunecell: Optional[dict[str, Any]],
                 tunecell_defaults: dict[str, Any]) -> list[str]:
    """Settings where what Olive would run differs from what tunecell runs."""
    if tunecell is None:
        return []
    differences = []
    olive_args = dict(olive.get("training_args") or {})
    olive_args.update(olive_args.pop("extra_args", None) or {})
    for key, value in tunecell.items():
        if key in SAME_MEANING:
            continue
        if key == "training_args" and isinstance(value, dict):
            for arg, arg_value in value.items():
                if arg in olive_args and not _same(olive_args[arg], arg_value):
                    differences.append(f"{name}.training_args.{arg}: tunecell {arg_value!r}, Olive {olive_args[arg]!r}")
                elif arg not in olive_args:  # Olive leaves it to transformers' TrainingArguments default
                    default = _transformers_default(arg)
                    if not _same(default, arg_value):
                        differences.append(f"{name}.training_args.{arg}: tunecell {arg_value!r}, Olive "
                                           f"{default!r} (transformers' default)")
            for arg, olive_value in olive_args.items():
                if arg in value or olive_value in (None, False, "none") or arg == "output_dir":
                    continue
                ours = tunecell_defaults.get(arg)  # tunecell leaves it to its transformers' default
                if not _same(ours, olive_value):
                    differences.append(f"{name}.training_args.{arg}: Olive sets {olive_value!r}, tunecell "
                                       f"leaves {ours!r} (transformers' default)")
            continue
        if key not in olive:
            differences.append(f"{name}.{key}: tunecell {value!r}; Olive's pass has no such setting")
        elif olive[key] is None:  # Olive leaves it to the library's own default
            continue
        elif not _same(olive[key], value):
            differences.append(f"{name}.{key}: tunecell {value!r}, Olive {olive[key]!r}")
    return differences


def _transformers_default(arg: str) -> Any:
    import dataclasses

    from transformers import TrainingArguments

    field = TrainingArguments.__dataclass_fields__.get(arg)
    if field is None:
        return None
    return field.default if field.default is not dataclasses.MISSING else None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def check(path: Path, tunecell: Optional[dict[str, Any]] = None) -> bool:
    from olive.data.component.text_generation import TextGenParams
    from olive.package_config import OlivePackageConfig
    from olive.workflows.run.config import RunConfig

    print(f"=== {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    collect = Collect()
    logging.getLogger("olive").addHandler(collect)
    failures, warnings, differences = [], [], []
    try:
        try:
            run_config = RunConfig.parse_file_or_obj(copy.deepcopy(data))
        except Exception as e:  # pydantic's ValidationError, or Olive's own ValueError
            print(f"Olive's RunConfig rejects it:\n{e}")
            print("FAILED")
            return False
        engine = run_config.engine
        print(f"input model: {run_config.input_model.type} {run_config.input_model.config.get('model_path')}")
        print(f"systems: {', '.join(f'{n} ({s.type})' for n, s in (run_config.systems or {}).items()) or 'none'}; "
              f"host: {getattr(engine.host, 'type', None) or 'local'}; "
              f"evaluator: {'yes' if engine.evaluator else 'none'}; output_dir: {engine.output_dir}")
        package = OlivePackageConfig.load_default_config()
        accelerator = accelerator_for(run_config)
        for name, pass_configs in run_config.passes.items():
            for pass_config in pass_configs:
                try:
                    cls = package.import_pass_module(pass_config.type)
                    settings = cls.generate_config(accelerator, dict(pass_config.config or {}), disable_search=True)
                except Exception as e:
                    failures.append(f"pass {name} ({pass_config.type}): {type(e).__name__}: {e}")
                    continue
                olive = {k: plain(v) for k, v in settings.model_dump().items() if not k.endswith("data_config")}
                shown = {k: v for k, v in olive.items() if v not in (None, {}, [])}
                print(f"pass {name}: Olive {cls.__name__} with {json.dumps(shown, default=str)}")
                differences += compare_pass(name, olive, (tunecell or {}).get("passes", {}).get(name),
                                            (tunecell or {}).get("training_defaults", {}))
        known = set(TextGenParams.model_fields) | PRE_PROCESS_OLIVE_ARGS
        for dc in run_config.data_configs:
            params = dict(dc.pre_process_data_config.params or {}) if dc.pre_process_data_config else {}
            ignored = sorted(set(params) - known)
            if ignored:
                warnings.append(f"data config {dc.name}: Olive's {dc.pre_process_data_config.type} ignores "
                                f"{', '.join(ignored)}")
            ours = (tunecell or {}).get("data", {}).get(dc.name)
            if ours:
                skip = {"text_cols"} if ours.get("text_template") else set()  # the template wins in both
                for key in sorted(set(ours) & set(TextGenParams.model_fields) - skip):
                    olive_value = params.get(key, TextGenParams.model_fields[key].default)
                    if not _same(plain(olive_value), ours[key]):
                        differences.append(f"data config {dc.name}.{key}: tunecell {ours[key]!r}, "
                                           f"Olive {plain(olive_value)!r}")
    finally:
        logging.getLogger("olive").removeHandler(collect)
    warnings = [f"Olive: {m}" for m in dict.fromkeys(collect.messages)] + warnings
    for title, lines in (("not valid in Olive", failures), ("warnings", warnings),
                         ("would run differently in Olive", differences)):
        if lines:
            print(f"{title}:")
            print("\n".join(f"  - {line}" for line in lines))
    verdict = "FAILED" if failures else "OK with warnings" if warnings or differences else "OK"
    print(verdict)
    return not failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path, help="Olive JSON files (or, with --export, any config)")
    parser.add_argument("--export", action="store_true",
                        help="export each config with tunecell first (and compare its effective settings)")
    args = parser.parse_args()
    try:
        import olive
    except ImportError:
        sys.exit("olive-ai is not importable: run this with bench/.olive-venv/bin/python (bash bench/setup_olive.sh)")
    print(f"olive-ai {olive.__version__} ({Path(olive.__file__).parent})")
    ok = True
    for source in args.configs:
        path, tunecell = export(source) if args.export else (source, None)
        for note in (tunecell or {}).get("notes", []):
            print(f"tunecell's export: note: {note}")
        ok &= check(path, tunecell)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
