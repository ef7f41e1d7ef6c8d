"""How `ehrsim serve` uses CPython's cyclic garbage collector.

The store holds every version of every resource as long-lived dicts and lists, and inbound MLLP and
REST writes add thousands a second. Left to itself, the collector scans each of them again as it
ages (generation 1, then the full collections of generation 2): about 3 us of the ~58 us of server
CPU an inbound ORU^R01 costs (docs/benchmarks.md#mllp). Stored resources hold no reference cycles,
and what a reset or a delete drops is freed by reference counting, which freezing does not stop.

So whatever survives a collection is frozen (`gc.freeze`) and never scanned again. The price is
that a reference cycle still alive at a collection, and dropped later, waits for the next full
collection, which `collect_periodically` runs every `FULL_COLLECTION_SECONDS`.

Only `ehrsim serve` installs this: a sandbox embedded in someone's test process (the pytest plugin,
`simulator.testing`) leaves that process's collector alone.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

# Net allocations between young collections (CPython's default, 700, scans about 30 times as often).
YOUNG_THRESHOLD = 20_000
FULL_COLLECTION_SECONDS = 600.0


def install() -> None:
    """Freeze what exists now (the scenario's population) and every collection's survivors."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop":
        gc.freeze()


def full_collection() -> int:
    """Scan everything once, frozen or not; the number of unreachable objects found."""
    gc.unfreeze()
    try:
        return gc.collect()
    finally:
        gc.freeze()


async def collect_periodically(seconds: float = FULL_COLLECTION_SECONDS) -> None:
    while True:
        await asyncio.sleep(seconds)
        full_collection()
