"""Identifier lookups for v2 ingest: (system, value) -> resource id, without running a FHIR search.

PID-3 and PV1-19 are looked up for every inbound message; a FHIR search orders its whole result
set, far too slow for the MLLP hot path. `IdentifierIndex` follows one resource type of one site
through `FhirService` commit listeners, so writes over REST, bundles and MLLP all keep it current.
"""

from __future__ import annotations

from typing import Any

from simulator.fhir.service import FhirService
from simulator.store.base import StoredVersion

Key = tuple[str, str]


class IdentifierIndex:
    def __init__(self, service: FhirService, resource_type: str) -> None:
        self.service = service
        self.resource_type = resource_type
        self._ids: dict[Key, list[str]] = {}
        self._keys: dict[str, list[Key]] = {}
        self._inactive: set[str] = set()  # ids whose resource says active: false (merged away)
        store = service.site.store
        for rid in list(store.current(resource_type)):
            version = store.read(resource_type, rid)
            if version is not None:
                self._index(version)
        service.watch(resource_type, self._index)

    def close(self) -> None:
        self.service.unwatch(self.resource_type, self._index)

    def _index(self, version: StoredVersion) -> None:
        rid = version.id
        for key in self._keys.pop(rid, ()):
            ids = self._ids.get(key)
            if ids and rid in ids:
                ids.remove(rid)
        self._inactive.discard(rid)
        if version.resource is None:
            return
        if version.resource.get("active", True) is False:
            self._inactive.add(rid)
        keys = [
            (i.get("system", ""), i["value"])
            for i in version.resource.get("identifier", ())
            if isinstance(i, dict) and i.get("value")
        ]
        self._keys[rid] = keys
        for key in keys:
            self._ids.setdefault(key, []).append(rid)

    def find_id(self, system: str, value: str) -> str | None:
        """The id `find` would return, without reading the store (the per-message lookup)."""
        ids = self._ids.get((system, value))
        if not ids:
            return None
        for rid in ids:
            if rid not in self._inactive:
                return rid
        return ids[0]

    def find(self, system: str, value: str) -> dict[str, Any] | None:
        """The current resource with this identifier; an active one wins over an inactive (merged) one."""
        rid = self.find_id(system, value)
        if rid is None:
            return None
        version = self.service.site.store.read(self.resource_type, rid)
        return version.resource if version is not None else None
