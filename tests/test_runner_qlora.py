"""QLoRA (bitsandbytes nf4, double quant) -> merge -> ModelBuilder int4 on CPU: the combination Olive's cookbook
called unsupported. The merge goes into the full-precision base, not the 4-bit one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tunecell

TONES = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
TARGETS = ("qkv_proj.weight", "o_proj.weight")


@pytest.fixture(scope="module")
def qlora(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("runner-qlora")
    config = {
        "input_model": {"model_path": str(tiny_model)},
        "data_configs": [{
            "name": "tones",
            "load_dataset_config": {"data_name": "json", "data_files": str(TONES)},
            "pre_process_data_config": {"text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                                        "strategy": "line-by-line", "max_seq_len": 64, "train_on_prompt": False},
        }],
        "passes": {
            "qlora": {"type": "QLoRA", "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32",
                      "r": 4, "alpha": 8, "target_modules": ["qkv_proj", "o_proj"], "train_data_config": "tones",
                      "eval_dataset_size": 0.2,
                      "training_args": {"max_steps": 6, "learning_rate": 1.0e-3, "per_device_train_batch_size": 8,
                                        "seed": 0}},
            "merge": {"type": "MergeAdapterWeights"},
            "mb": {"type": "ModelBuilder", "precision": "int4"},
        },
        "cache_dir": str(root / "cache"),
        "output_dir": str(root / "out"),
    }
    return tunecell.run(config, progress="none")


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_qlora_merge_int4_succeeds_on_cpu(qlora):
    assert qlora.status == "succeeded", qlora
    assert [(p.name, p.type, p.status) for p in qlora.passes] == [
        ("qlora", "QLoRA", "done"), ("merge", "MergeAdapterWeights", "done"), ("mb", "ModelBuilder", "done")]
    assert qlora.passes[0].stats["steps"] == 6
    adapter = json.loads((Path(qlora.artifacts["adapter"]) / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["o_proj", "qkv_proj"]
    model = tunecell.load_model(qlora.artifacts["model"])
    assert model.kind == "onnx" and isinstance(model.generate("hello there", max_new_tokens=4), str)


def test_qlora_adapter_merges_into_the_full_precision_base(qlora, tiny_model):
    import torch

    merged_dir = Path(qlora.artifacts["merge"]) / "artifact"
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())
    base, merged = _weights(tiny_model), _weights(merged_dir)
    assert set(merged) == set(base)
    assert all(t.dtype == torch.float32 for t in merged.values())
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    # every LoRA target moved (the gradient reached the first layer through the 4-bit ones); every other weight is
    # the base's own, bit for bit (never a 4-bit round trip)
    assert sorted(changed) == sorted(k for k in base if k.endswith(TARGETS)) and len(changed) == 8
