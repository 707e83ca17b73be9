"""OnnxDynamicQuantization: int8 dynamic quantization of an onnxruntime-genai fp32 model folder."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class DynamicQuantizationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["OnnxDynamicQuantization"] = "OnnxDynamicQuantization"
    per_channel: bool = False
    weight_type: Literal["int8", "uint8"] = "int8"
    op_types: list[str] = ["MatMul"]


class OnnxDynamicQuantization:
    config_model = DynamicQuantizationConfig
    takes = {"onnx"}
    gives = "onnx"
    packages = ("onnxruntime",)

    def run(self, input, config: DynamicQuantizationConfig, context) -> dict:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source, out = Path(input.path), Path(context.out_dir)
        for item in source.iterdir():  # genai_config.json, tokenizer files: everything but the weights
            if not item.name.startswith("model.onnx"):
                shutil.copy2(item, out / item.name)
        quantize_dynamic(source / "model.onnx", out / "model.onnx", per_channel=config.per_channel,
                         weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8,
                         op_types_to_quantize=config.op_types, use_external_data_format=True)
        context.log(f"int8 weights: {sum(f.stat().st_size for f in out.glob('model.onnx*')) / 1e6:.1f} MB")
        return {"weight_type": config.weight_type}
