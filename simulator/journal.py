"""The journal: every interaction the simulator had, in order, for tests to query and verify.

An entry is a flat dict (cheap to build on the hot path, trivially NDJSON). Memory is bounded: a ring
buffer of `capacity` entries; entries pushed out are counted in `dropped` (or written to `spill_path`
as NDJSON when set), never lost silently.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson


class Journal:
    def __init__(self, capacity: int = 100_000, spill_path: str | Path | None = None) -> None:
        self.capacity = capacity
        self._entries: deque[dict[str, Any]] = deque()
        self._seq = itertools.count(1)
        self.dropped = 0
        self.spilled = 0
        self._spill: IO[bytes] | None = open(spill_path, "ab") if spill_path else None  # noqa: SIM115
        self._lock = threading.Lock()  # MLLP and HTTP may record from different threads

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append `entry` (mutated in place with `seq` and `monotonic` if missing) and return it."""
        with self._lock:
            entry["seq"] = next(self._seq)
            entry.setdefault("monotonic", time.monotonic())
            self._entries.append(entry)
            if len(self._entries) > self.capacity:
                evicted = self._entries.popleft()
                if self._spill is not None:
                    self._spill.write(orjson.dumps(evicted, default=str) + b"\n")
                    self.spilled += 1
                else:
                    self.dropped += 1
        return entry

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.dropped = 0
            self.spilled = 0

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
