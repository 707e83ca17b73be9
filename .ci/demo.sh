#!/usr/bin/env bash
# The main job: fine-tune the embedded SmolLM2-135M on the tone task, merge, build int4 ONNX, evaluate, try it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/tunecell run --config example_notebooks/tones.yaml
.venv/bin/python - <<'PY'
import tunecell

model = tunecell.load_model("models/tones/model")
template = "### Text: {text}\n### The tone is:\n"
for phrase in ["I lost my dog today", "We won the final in the last minute!", "Something is scratching at the window"]:
    print(f"int4 ONNX: {phrase!r} -> {model.classify(phrase, ['Sad', 'Joy', 'Fear', 'Surprise'], template)}")
PY
