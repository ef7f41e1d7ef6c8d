"""Where a benchmarked server spends its time: py-spy samples of the real process under load.

    python -m loadtests.bench_fhir --only writes --py-spy /tmp/ehrsim.raw

py-spy (`pip install py-spy`, not a dependency of ehrsim) samples the server's Python stacks from
outside the process; `summarize` turns its raw output into the share of samples in which each
function is on the stack (inclusive) or on top (self).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path


def record(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen:
    """Start sampling `pid` for `seconds`; wait on the returned process before reading `out`."""
    exe = shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    argv = [exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate)]
    argv += ["--format", "raw", "-o", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize(raw: Path, top: int = 30) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """(inclusive, self) shares of samples per function, largest first."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if frames:
            own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    if not total:
        return [], []
    return _ranked(inclusive, total, top), _ranked(own, total, top)


def _ranked(counts: Counter[str], total: int, top: int) -> list[tuple[float, str]]:
    # Largest first; ties by name so the same samples always print the same way.
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [(n / total, frame) for frame, n in ordered]


def _short(frame: str) -> str:
    # "validate_resource (simulator/fhir/validation.py:103)" -> "validate_resource (simulator/fhir/validation.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name
