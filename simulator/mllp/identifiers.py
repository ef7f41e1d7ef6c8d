"""Identifier lookups for v2 ingest: (system, value) -> resource id, without running a FHIR search.

PID-3 and PV1-19 are looked up for every inbound message; a FHIR search orders its whole result
set, far too slow for the MLLP hot path. `IdentifierIndex` follows one resource type of one site
through `FhirService` commit listeners, so writes over REST, bundles and MLLP all keep it current.
"""

from __future__ import annotations

from typing import Any

from simulator.fhir.service import FhirService
from simulator.site import Site
from simulator.store.base import StoredVersion

Key = tuple[str, str]


class IdentifierIndex:
    def __init__(self, service: FhirService, resource_type: str) -> None:
        self.service = service
        self.resource_type = resource_type
        self._ids: dict[Key, list[str]] = {}
        self._keys: dict[str, list[Key]] = {}
        store = service.site.store
        for rid in list(store.current(resource_type)):
            version = store.read(resource_type, rid)
            if version is not None:
                self._index(version)
        service.listeners.append(self._on_commit)

    def close(self) -> None:
        if self._on_commit in self.service.listeners:
            self.service.listeners.remove(self._on_commit)

    def _on_commit(self, site: Site, versions: list[StoredVersion]) -> None:
        for version in versions:
            if version.type == self.resource_type:
                self._index(version)

    def _index(self, version: StoredVersion) -> None:
        rid = version.id
        for key in self._keys.pop(rid, ()):
            ids = self._ids.get(key)
            if ids and rid in ids:
                ids.remove(rid)
        if version.resource is None:
            return
        keys = [
            (i.get("system", ""), i["value"])
            for i in version.resource.get("identifier", ())
            if isinstance(i, dict) and i.get("value")
        ]
        self._keys[rid] = keys
        for key in keys:
            self._ids.setdefault(key, []).append(rid)

    def find(self, system: str, value: str) -> dict[str, Any] | None:
        """The current resource with this identifier; an active one wins over an inactive (merged) one."""
        store = self.service.site.store
        fallback = None
        for rid in self._ids.get((system, value), ()):
            version = store.read(self.resource_type, rid)
            if version is None or version.resource is None:
                continue
            if version.resource.get("active", True) is not False:
                return version.resource
            fallback = fallback or version.resource
        return fallback
