"""ehrsim and its benchmarks as users run them: real processes started at the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` to completion, output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )


def serve(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`ehrsim serve ARGS` started, and its banner read up to the admin line (it is then ready)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "serve", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith("  admin:"):
            break
    return proc, lines
