"""How `ehrsim serve` uses CPython's cyclic garbage collector.

The store holds every version of every resource as long-lived dicts and lists, and inbound MLLP and
REST writes add thousands a second. Left to itself, the collector scans each of them again as it
ages (generation 1, then the full collections of generation 2): about 3 us of the ~58 us of server
CPU an inbound ORU^R01 costs, and every full collection stops the server for a time that grows with
the store (1.1 s at 350,000 messages; docs/benchmarks.md#mllp).

Stored resources hold no reference cycles, and what a reset or a delete drops is freed by reference
counting, which freezing does not stop. So whatever survives a collection is frozen (`gc.freeze`)
and never scanned again. The price is that a reference cycle still alive at a collection, and
dropped later, waits for the next full collection, which runs after each sandbox reset, when the
data is gone and the scan is short. Measured: 20,000 REST writes, 20,000 failed requests (400, 404)
and 350,000 MLLP messages leave nothing for a full collection to find (tests/test_gcpolicy.py
checks the mechanism).

Only `ehrsim serve` installs this: a sandbox embedded in someone's test process (the pytest plugin,
`simulator.testing`) leaves that process's collector alone.
"""

from __future__ import annotations

import gc
from typing import Any

# Net allocations between young collections (CPython's default, 700, scans about 30 times as often).
YOUNG_THRESHOLD = 20_000


def install() -> None:
    """Freeze what exists now (the scenario's population) and every collection's survivors."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def installed() -> bool:
    return _freeze_survivors in gc.callbacks


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop":
        gc.freeze()


def full_collection() -> int:
    """Scan everything once, frozen or not, and freeze what is left; the number of unreachable
    objects found. Does nothing (0) where the policy is not installed."""
    if not installed():
        return 0
    gc.unfreeze()
    try:
        return gc.collect()
    finally:
        gc.freeze()
