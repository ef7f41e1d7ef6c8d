"""Where a site's resources live: every version of every resource, plus search indexes.

`open_store("memory")` or `open_store("sqlite:PATH")`; both implement `Store`.
"""

from simulator.store.base import Store, StoredVersion, VersionConflict, Write
from simulator.store.memory import MemoryStore
from simulator.store.sqlite import SQLiteStore


def open_store(spec: str, site_id: str = "default") -> Store:
    """Parse a `--store` value: `memory` or `sqlite:PATH` (one database file may hold many sites)."""
    if spec in ("", "memory"):
        return MemoryStore()
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:") :]
        if not path:
            raise ValueError("--store sqlite:PATH needs a file path, e.g. sqlite:ehrsim.db")
        return SQLiteStore(path, site_id=site_id)
    raise ValueError(f"unknown store {spec!r}: use 'memory' or 'sqlite:PATH'")


__all__ = ["MemoryStore", "SQLiteStore", "Store", "StoredVersion", "VersionConflict", "Write", "open_store"]
