"""The store interface shared by the in-memory and SQLite stores."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol


class StoredVersion(NamedTuple):
    """One version of one resource. `resource` is None for a deletion.

    A named tuple rather than a frozen dataclass: every write builds one, and a frozen dataclass's
    `__init__` (object.__setattr__ per field) cost several times as much on the MLLP hot path."""

    type: str
    id: str
    version: int
    last_updated: str  # FHIR instant
    timestamp: float  # the same moment as POSIX seconds, for _since/_lastUpdated comparisons
    method: str  # POST, PUT or DELETE: the history entry's request.method
    resource: dict[str, Any] | None
    seq: int  # global order of writes in this store

    @property
    def deleted(self) -> bool:
        return self.resource is None


class Write(NamedTuple):
    """A change to apply: a new version of `type/id` (`resource`), or its deletion (None)."""

    type: str
    id: str
    resource: dict[str, Any] | None
    method: str


# Both named tuples built through tuple.__new__, without their Python-level __new__: half the time,
# for the write paths that build one per resource (MLLP ingest, the store's commit).
make_version = functools.partial(tuple.__new__, StoredVersion)
make_write = functools.partial(tuple.__new__, Write)


class VersionConflict(Exception):
    """A write lost a race it was told to check (If-Match)."""


class Store(Protocol):
    """Resources with full version history and search indexes.

    `commit` applies a list of writes atomically (all or none) and assigns versions; everything a
    caller reads afterwards reflects it. Index methods are used by the search engine.
    """

    def read(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The latest version (a deletion marker if deleted), or None if never written."""
        ...

    def vread(self, resource_type: str, resource_id: str, version: int) -> StoredVersion | None: ...

    def history(
        self, resource_type: str | None = None, resource_id: str | None = None, since: float | None = None
    ) -> list[StoredVersion]:
        """Versions newest first, optionally for one type or one resource, after `since`."""
        ...

    def commit(self, writes: list[Write], last_updated: str, timestamp: float) -> list[StoredVersion]: ...

    def current(self, resource_type: str) -> dict[str, StoredVersion]:
        """Live (not deleted) resources of a type by id, in creation order."""
        ...

    def values(self, resource_type: str, param: Any) -> dict[str, list]:
        """Extracted values of a search parameter for every live resource of the type."""
        ...

    def postings(self, resource_type: str, param: Any) -> dict[Any, set[str]]:
        """Inverted index key -> ids for token and reference parameters."""
        ...

    def resource_types(self) -> Iterable[str]: ...

    def expunge(self, resource_type: str, resource_ids: Iterable[str]) -> int:
        """Forget every version of these resources (retention); the number of versions dropped."""
        ...

    def count(self) -> int: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...

    def __iter__(self) -> Iterator[StoredVersion]: ...
