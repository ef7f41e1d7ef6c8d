"""The in-memory store: all versions in dicts, search indexes built per parameter on first use.

An index for a (resource type, parameter) pair is built the first time a search uses it and kept up
to date by every later write, so a write pays only for the parameters that searches actually use.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from simulator.fhir.values import posting_keys
from simulator.store.base import StoredVersion, Write, make_version

INDEXED_TYPES = frozenset({"token", "reference"})


class _TypeIndex:
    __slots__ = ("history", "live", "postings", "values")

    def __init__(self) -> None:
        # id -> its only version, or a list of its versions once there are two: most resources
        # never change, and a list per resource was two more objects for the GC to walk per write.
        self.history: dict[str, StoredVersion | list[StoredVersion]] = {}
        self.live: dict[str, StoredVersion] = {}
        self.values: dict[Any, dict[str, list]] = {}  # param -> id -> values
        self.postings: dict[Any, dict[Any, set[str]]] = {}  # param -> key -> ids

    def activate(self, param: Any) -> None:
        values = {rid: param.values(v.resource) for rid, v in self.live.items()}
        self.values[param] = values
        if param.type in INDEXED_TYPES:
            postings: dict[Any, set[str]] = {}
            for rid, vals in values.items():
                for key in posting_keys(param.type, vals):
                    postings.setdefault(key, set()).add(rid)
            self.postings[param] = postings

    def remove(self, rid: str) -> None:
        self.live.pop(rid, None)
        for param, values in self.values.items():
            old = values.pop(rid, None)
            if old and param in self.postings:
                postings = self.postings[param]
                for key in posting_keys(param.type, old):
                    ids = postings.get(key)
                    if ids is not None:
                        ids.discard(rid)
                        if not ids:
                            del postings[key]

    def put(self, version: StoredVersion) -> None:
        rid = version.id
        if rid in self.live:
            self.remove(rid)
        self.live[rid] = version
        for param, values in self.values.items():
            vals = param.values(version.resource)
            values[rid] = vals
            if param in self.postings:
                postings = self.postings[param]
                for key in posting_keys(param.type, vals):
                    postings.setdefault(key, set()).add(rid)


class MemoryStore:
    """Volatile store; the default. See `simulator.store.base.Store` for the contract."""

    def __init__(self) -> None:
        self._types: dict[str, _TypeIndex] = {}
        self._log: list[StoredVersion] = []
        self._last_seq = 0  # seq of the last version written (the log shrinks when data is expunged)
        self._expunged: set[int] = set()  # seqs of expunged versions still in the log

    # -- reads -----------------------------------------------------------------------------------
    def _versions(self, resource_type: str, resource_id: str) -> list[StoredVersion] | StoredVersion | None:
        index = self._types.get(resource_type)
        return index.history.get(resource_id) if index is not None else None

    def read(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        versions = self._versions(resource_type, resource_id)
        return versions[-1] if type(versions) is list else versions  # type: ignore[return-value]

    def vread(self, resource_type: str, resource_id: str, version: int) -> StoredVersion | None:
        versions = self._versions(resource_type, resource_id)
        if versions is None:
            return None
        if type(versions) is not list:
            return versions if version == 1 else None  # type: ignore[return-value]
        if not 1 <= version <= len(versions):
            return None
        return versions[version - 1]

    def history(
        self, resource_type: str | None = None, resource_id: str | None = None, since: float | None = None
    ) -> list[StoredVersion]:
        if resource_type and resource_id:
            versions = self._versions(resource_type, resource_id)
            source: Iterable[StoredVersion] = (
                versions if type(versions) is list else [versions] if versions is not None else []  # type: ignore[list-item]
            )
        else:
            expunged = self._expunged
            source = (v for v in self._log if v.seq not in expunged) if expunged else self._log
        out = [
            v
            for v in source
            if (resource_type is None or v.type == resource_type) and (since is None or v.timestamp >= since)
        ]
        out.reverse()
        return out

    def current(self, resource_type: str) -> dict[str, StoredVersion]:
        index = self._types.get(resource_type)
        return index.live if index else {}

    def values(self, resource_type: str, param: Any) -> dict[str, list]:
        index = self._index(resource_type)
        if param not in index.values:
            index.activate(param)
        return index.values[param]

    def postings(self, resource_type: str, param: Any) -> dict[Any, set[str]]:
        index = self._index(resource_type)
        if param not in index.postings:
            index.activate(param)
        return index.postings[param]

    def resource_types(self) -> Iterable[str]:
        return [t for t, index in self._types.items() if index.live]

    def count(self) -> int:
        return sum(len(index.live) for index in self._types.values())

    def __iter__(self) -> Iterator[StoredVersion]:
        expunged = self._expunged
        if expunged:
            return (v for v in self._log if v.seq not in expunged)
        return iter(self._log)

    # -- writes ----------------------------------------------------------------------------------
    def commit(self, writes: list[Write], last_updated: str, timestamp: float) -> list[StoredVersion]:
        versions = self._prepare(writes, last_updated, timestamp)
        self._persist(versions)
        for version in versions:
            self._apply(version)
        return versions

    def _prepare(self, writes: list[Write], last_updated: str, timestamp: float) -> list[StoredVersion]:
        pending: dict[tuple[str, str], int] = {}
        out = []
        seq = self._last_seq
        types = self._types
        shared_meta: dict[int, dict[str, str]] = {}  # version -> meta of this commit's plain bodies
        for rtype, rid, body, method in writes:
            key = (rtype, rid)
            if key in pending:
                number = pending[key] + 1
            else:
                index = types.get(rtype)
                previous = index.history.get(rid) if index is not None else None
                number = 1 if previous is None else (len(previous) if type(previous) is list else 1) + 1
            pending[key] = number
            resource = None
            if body is not None:
                meta = body.get("meta")
                if meta:
                    meta = {**meta, "versionId": str(number), "lastUpdated": last_updated}
                else:  # one dict for all of them (stored resources are never changed in place)
                    meta = shared_meta.get(number)
                    if meta is None:
                        meta = shared_meta[number] = {"versionId": str(number), "lastUpdated": last_updated}
                # resourceType, id and meta first: the order people expect when reading JSON.
                # (The body's own values for the three, if any, keep that position and are reset.)
                resource = {"resourceType": rtype, "id": rid, "meta": meta, **body}
                resource["resourceType"], resource["id"], resource["meta"] = rtype, rid, meta
            seq += 1
            out.append(make_version((rtype, rid, number, last_updated, timestamp, method, resource, seq)))
        return out

    def _persist(self, versions: list[StoredVersion]) -> None:
        """Make versions durable before they become visible; nothing to do in memory."""

    def _apply(self, version: StoredVersion) -> None:
        self._log.append(version)
        self._last_seq = version.seq
        index = self._index(version.type)
        history = index.history
        previous = history.get(version.id)
        if previous is None:
            history[version.id] = version
        elif type(previous) is list:
            previous.append(version)
        else:
            history[version.id] = [previous, version]  # type: ignore[list-item]
        if version.resource is None:
            index.remove(version.id)
        else:
            index.put(version)

    def _index(self, resource_type: str) -> _TypeIndex:
        index = self._types.get(resource_type)
        if index is None:
            index = self._types[resource_type] = _TypeIndex()
        return index

    def expunge(self, resource_type: str, resource_ids: Iterable[str]) -> int:
        """Forget every version of these resources, as if they had never been written (retention);
        the number of versions dropped."""
        index = self._types.get(resource_type)
        if index is None:
            return 0
        expunged = self._expunged
        before = len(expunged)
        for rid in resource_ids:
            versions = index.history.pop(rid, None)
            if versions is None:
                continue
            expunged.update(v.seq for v in (versions if type(versions) is list else (versions,)))
            index.remove(rid)
        dropped = len(expunged) - before
        if len(expunged) > len(self._log) // 2:  # compact the log now and then: O(1) amortized
            self._log = [v for v in self._log if v.seq not in expunged]
            expunged.clear()
        return dropped

    def clear(self) -> None:
        self._types.clear()
        self._log.clear()
        self._last_seq = 0
        self._expunged.clear()

    def close(self) -> None:
        pass
