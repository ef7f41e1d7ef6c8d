"""The SQLite store: the in-memory store's indexes over a durable, append-only version table.

Every version is one row; a commit is one SQLite transaction that is on disk before the caller gets
control back (WAL, synchronous=FULL), so a response is only sent for a durable write. On open the
rows are replayed in order into the in-memory structures, which serve all reads and searches: the
history, versions and ids survive a restart exactly. Several sites can share one file (`site` column).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import orjson

from simulator.store.base import StoredVersion
from simulator.store.memory import MemoryStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    site TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    timestamp REAL NOT NULL,
    method TEXT NOT NULL,
    body BLOB,
    PRIMARY KEY (site, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_by_resource ON versions (site, type, id, version);
"""


class SQLiteStore(MemoryStore):
    def __init__(self, path: str | Path, site_id: str = "default") -> None:
        super().__init__()
        self.path = str(path)
        self.site_id = site_id
        # The event loop is the only writer; check_same_thread=False lets start-up load from a worker.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._replay()

    def _replay(self) -> None:
        rows = self._db.execute(
            "SELECT seq, type, id, version, last_updated, timestamp, method, body FROM versions "
            "WHERE site = ? ORDER BY seq",
            (self.site_id,),
        )
        for seq, rtype, rid, version, last_updated, timestamp, method, body in rows:
            resource = orjson.loads(body) if body is not None else None
            self._apply(StoredVersion(rtype, rid, version, last_updated, timestamp, method, resource, seq))

    def _persist(self, versions: list[StoredVersion]) -> None:
        rows = [
            (
                self.site_id,
                v.seq,
                v.type,
                v.id,
                v.version,
                v.last_updated,
                v.timestamp,
                v.method,
                orjson.dumps(v.resource) if v.resource is not None else None,
            )
            for v in versions
        ]
        with self._db:  # one transaction: all versions or none
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def expunge(self, resource_type: str, resource_ids: Iterable[str]) -> int:
        ids = list(resource_ids)
        with self._db:  # gone from disk before it is gone from memory
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "DELETE FROM versions WHERE site = ? AND type = ? AND id = ?",
                [(self.site_id, resource_type, rid) for rid in ids],
            )
        return super().expunge(resource_type, ids)

    def clear(self) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM versions WHERE site = ?", (self.site_id,))
        super().clear()

    def close(self) -> None:
        self._db.close()
