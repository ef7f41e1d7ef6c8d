"""Verdicts against an issue's targets, printed the same way by every benchmark script."""

from __future__ import annotations


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def finish(missed: list[str], check: bool) -> int:
    """Name the missed targets; the exit code: 3 with `--check` when any was missed, else 0."""
    if not missed:
        return 0
    print(f"\ntargets missed: {', '.join(missed)}")
    return 3 if check else 0
