#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite in parallel (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -n auto -q "$@"
