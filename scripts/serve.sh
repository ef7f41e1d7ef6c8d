#!/usr/bin/env bash
# Install ehrsim into .venv and serve the default scenario (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e .
exec .venv/bin/ehrsim serve "$@"
