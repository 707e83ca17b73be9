#!/usr/bin/env bash
# What the browser test (tests/test_browser.py) needs, on top of .ci/setup.sh's .venv:
# - Debian's Chromium (/usr/bin/chromium), and a colour emoji font for the widgets' button icons;
# - Python playwright in .venv, which drives that binary. It never downloads a browser (no `playwright install`).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run bash .ci/setup.sh first (no .venv)" >&2; exit 1; }
PLAYWRIGHT=playwright==1.65.2  # checked with Debian's Chromium 156

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || missing+=(fonts-noto-color-emoji)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
.venv/bin/python -m pip show -q playwright >/dev/null 2>&1 || .venv/bin/python -m pip install -q "$PLAYWRIGHT"
/usr/bin/chromium --version 2>/dev/null  # (its wrapper script prints a harmless "[: unexpected operator")
.venv/bin/python -c "import playwright, importlib.metadata as m; print('playwright', m.version('playwright'))"
