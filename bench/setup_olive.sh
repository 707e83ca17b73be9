#!/usr/bin/env bash
# Olive 0.13 in its own venv (bench/.olive-venv), for side-by-side benchmarks: its ModelBuilder pass needs
# onnxruntime-genai 0.14.1, which conflicts with tunecell's 0.18; requests is an undeclared import of its telemetry.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .olive-venv/bin/python ] || python3 -m venv .olive-venv
.olive-venv/bin/python -m pip install -q --upgrade pip
.olive-venv/bin/python -m pip install -q torch==2.13.0
echo "torch==2.13.0" > .olive-venv/constraints.txt
.olive-venv/bin/python -m pip install -q -c .olive-venv/constraints.txt "olive-ai[cpu,lora]==0.13.0" datasets requests \
    onnxruntime-genai==0.14.1 gguf
