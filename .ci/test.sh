#!/usr/bin/env bash
# The test suite, from nothing: .venv with the pinned stack, Chromium for the browser test, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
bash .ci/browser-setup.sh > /dev/null
.venv/bin/python -m pytest -q "$@"
