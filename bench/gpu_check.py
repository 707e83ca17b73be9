"""The CUDA checks of issue 4, for a machine with an NVIDIA GPU (none of it runs in CI, which has no GPU).

    python bench/gpu_check.py OUT_DIR

On the tiny random Phi-3 of tests/tinymodel.py, through tunecell.run with a local CUDA target
(`systems.local_gpu.accelerators: [{device: gpu, execution_providers: [CUDAExecutionProvider]}]`):
1. LoRA (fp32) trains on the GPU -> merge -> ModelBuilder int4 for the cuda execution provider;
2. QLoRA (bitsandbytes nf4, double quant, bf16 compute) on the GPU -> merge into the fp32 base -> ModelBuilder
   int4 and fp16 for cuda (fp16 is refused for a CPU target).
Each check asserts what it claims and the script writes OUT_DIR/gpu_check.json; it exits 1 if any failed.
The CUDA execution provider itself (onnxruntime-gpu) is loaded only when it is installed.
"""
from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
CUDA_TARGET = {"local_gpu": {"type": "LocalSystem", "accelerators": [
    {"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}]}}


def workflow(model: Path, root: Path, train_pass: dict, precision: str) -> dict:
    """The runner tests' tiny workflow (tests/test_runner_pipeline.py) on the CUDA target, 20 steps, no evaluator."""
    from test_runner_pipeline import tiny_config

    config = tiny_config(model, root / "cache", root / f"out-{train_pass['type']}-{precision}")
    config.update(systems=CUDA_TARGET, target="local_gpu", evaluator=None)
    config["passes"]["lora"].update(train_pass)
    config["passes"]["lora"]["training_args"]["max_steps"] = 20
    config["passes"]["mb"]["precision"] = precision
    return config


def check_run(result, precision: str, base: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    assert result.status == "succeeded", result
    stats = result.passes[0].stats
    assert stats["device"].startswith("cuda"), f"trained on {stats['device']}"
    merged = Path(result.artifacts["merge"]) / "artifact"
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config, "the merge kept the 4-bit quantization"
    weights = {k: v for f in merged.glob("*.safetensors") for k, v in load_file(f).items()}
    assert all(t.dtype == torch.float32 for t in weights.values()), "the merged model is not fp32"
    original = {k: v for f in base.glob("*.safetensors") for k, v in load_file(f).items()}
    changed = sorted(k for k in original if not torch.equal(original[k], weights[k]))
    assert changed and all(k.endswith(("qkv_proj.weight", "o_proj.weight")) for k in changed), changed
    onnx_dir = Path(result.artifacts["model"])
    genai = json.loads((onnx_dir / "genai_config.json").read_text())
    options = genai["model"]["decoder"]["session_options"].get("provider_options", [])
    assert any("cuda" in option for option in options), f"genai_config.json has no cuda provider: {options}"
    ops, weight_types = onnx_contents(onnx_dir / "model.onnx")
    if precision == "int4":
        assert "MatMulNBits" in ops, sorted(ops)
    else:
        assert "FLOAT16" in weight_types, weight_types
    return {"status": result.status, "device": stats["device"], "steps": stats["steps"],
            "train_loss": round(stats["train_loss"], 4), "tokens_per_s": stats["tokens_per_s"],
            "changed_weights": len(changed), "provider_options": options, "onnx_ops": sorted(ops),
            "onnx_weight_types": weight_types,
            "generated": generate_on_cuda(onnx_dir)}


def onnx_contents(path: Path) -> tuple[set[str], list[str]]:
    """The graph's operator types and its initializers' element types."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    types = sorted({onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer})
    return {node.op_type for node in graph.node}, types


def generate_on_cuda(onnx_dir: Path) -> str:
    """Greedy tokens from the CUDA execution provider, where onnxruntime-genai-cuda is installed."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "not run: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-genai-cuda)"
    import tunecell

    return tunecell.load_model(onnx_dir).generate("### Text: I lost my dog\n### The tone is:\n", max_new_tokens=4)


def main(out: Path) -> int:
    import torch

    import tunecell
    from tinymodel import make_tiny_model

    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "checks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = make_tiny_model(root / "tiny-phi3")
        checks = {
            "lora-int4": ({"type": "LoRA"}, "int4"),
            "qlora-int4": ({"type": "QLoRA", "quant_type": "nf4", "double_quant": True,
                            "compute_dtype": "bfloat16"}, "int4"),
            "qlora-fp16": ({"type": "QLoRA", "quant_type": "nf4", "double_quant": True,
                            "compute_dtype": "bfloat16"}, "fp16"),
        }
        for name, (train_pass, precision) in checks.items():
            try:
                result = tunecell.run(workflow(base, root, train_pass, precision), progress="none")
                report["checks"][name] = {"ok": True, **check_run(result, precision, base)}
            except Exception as error:  # one failed check must not hide the others
                report["checks"][name] = {"ok": False, "error": f"{type(error).__name__}: {error}",
                                          "traceback": traceback.format_exc()}
            print(name, json.dumps(report["checks"][name], default=str)[:2000], flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    return 0 if all(check["ok"] for check in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-check")))
