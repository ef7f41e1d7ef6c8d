#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite in parallel (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
# tests/test_dashboard.py drives Debian's Chromium with Playwright (never skipped: without it, stop).
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; } || {
    echo "could not install Debian's chromium (apt-get install -y chromium); the dashboard tests need it" >&2
    exit 1
  }
fi
exec .venv/bin/python -m pytest -n auto -q "$@"
