"""The journal: every interaction the simulator had, in order, for tests to query and verify.

An entry is a flat dict (cheap to build on the hot path, trivially NDJSON). Memory is bounded: a ring
buffer of `capacity` entries; entries pushed out are counted in `dropped` (or written to `spill_path`
as NDJSON when set), never lost silently.

Fields every protocol sets (see docs/architecture.md, "Journal"): `protocol`, `kind`, `site`,
`client_id`, `correlation_id`, `faults` (ids of the faults applied). The journal adds `seq`,
`monotonic` (wall clock, for durations) and `sim` (simulated seconds since the clock start).
Values are kept atomic (str, int, float, None, bytes) or tuples (headers as (name, value) pairs):
such dicts are untracked by the cyclic garbage collector, so a full journal costs no GC time.
Queries and verification live in `simulator/verify.py`.
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

from simulator.clock import Clock, fhir_instant

# Request bodies kept: none, writes (POST/PUT/PATCH/DELETE, the default), or all.
BODY_MODES = ("none", "writes", "all")


class Journal:
    def __init__(
        self,
        capacity: int = 100_000,
        spill_path: str | Path | None = None,
        clock: Clock | None = None,
        enabled: bool = True,
        bodies: str = "writes",
    ) -> None:
        self.capacity = capacity
        self.clock = clock
        self.enabled = enabled  # off: nothing is recorded (for benchmarks); `dropped` stays honest
        self.bodies = bodies
        self._entries: deque[dict[str, Any]] = deque()
        self._seq = itertools.count(1)
        self._correlation = itertools.count(1)
        self.dropped = 0
        self.spilled = 0
        self.clears = 0  # times emptied (reset, DELETE): a poller seeing it change starts over
        self.spill_path = Path(spill_path) if spill_path else None
        self._spill: IO[bytes] | None = open(spill_path, "ab") if spill_path else None  # noqa: SIM115
        self._lock = threading.Lock()  # MLLP and HTTP may record from different threads

    def configure(
        self,
        capacity: int | None = None,
        spill_path: str | Path | None = None,
        enabled: bool | None = None,
        bodies: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Apply a scenario's `journal:` settings (and a new clock) to this journal."""
        if bodies is not None and bodies not in BODY_MODES:
            raise ValueError(f"journal.bodies must be one of {', '.join(BODY_MODES)}, not {bodies!r}")
        with self._lock:
            if capacity is not None:
                self.capacity = capacity
            if enabled is not None:
                self.enabled = enabled
            if bodies is not None:
                self.bodies = bodies
            if clock is not None:
                self.clock = clock
            if spill_path is not None and Path(spill_path) != self.spill_path:
                if self._spill is not None:
                    self._spill.close()
                self.spill_path = Path(spill_path)
                self._spill = open(spill_path, "ab")  # noqa: SIM115

    def correlation_id(self, prefix: str = "req") -> str:
        """A new correlation id, in sequence (deterministic for the same interactions)."""
        return f"{prefix}-{next(self._correlation)}"

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append `entry` (given `seq`, and `monotonic`/`sim` if missing) and return it."""
        if "sim" not in entry and self.clock is not None:
            entry["sim"] = self.clock.elapsed()
        with self._lock:
            entry["seq"] = next(self._seq)
            entry.setdefault("monotonic", time.monotonic())
            self._entries.append(entry)
            if len(self._entries) > self.capacity:
                evicted = self._entries.popleft()
                if self._spill is not None:
                    self._spill.write(orjson.dumps(self.exported(evicted), default=str) + b"\n")
                    self.spilled += 1
                else:
                    self.dropped += 1
        return entry

    def exported(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry as it leaves the process: with `time`, the simulated instant, added."""
        out = dict(entry)
        if self.clock is not None and "sim" in entry and "time" not in entry:
            out["time"] = fhir_instant(self.clock.at(entry["sim"]))
        for key, value in entry.items():  # bodies and raw messages are kept as bytes: text on export
            if isinstance(value, bytes):
                out[key] = value.decode("utf-8", "replace")
            elif key.endswith("_headers") and isinstance(value, tuple):
                out[key] = dict(value)
        return out

    def ndjson(self, entries: list[dict[str, Any]] | None = None) -> Iterator[bytes]:
        for entry in self if entries is None else entries:
            yield orjson.dumps(self.exported(entry), default=str) + b"\n"

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "size": len(self._entries),
            "capacity": self.capacity,
            "dropped": self.dropped,
            "clears": self.clears,
            "spilled": self.spilled,
            "spill_path": str(self.spill_path) if self.spill_path else None,
            "bodies": self.bodies,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seq = itertools.count(1)
            self._correlation = itertools.count(1)
            self.dropped = 0
            self.spilled = 0
            self.clears += 1

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
