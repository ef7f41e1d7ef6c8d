"""A site: one simulated hospital endpoint with its own FHIR base path, data and settings.

One ehrsim process serves one or more sites (a scenario's `sites:`). Each has its own store, id
sequence and search snapshots; the clock and the journal belong to the whole sandbox so that faults,
tokens and verification see one timeline.
"""

from __future__ import annotations

import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from simulator.clock import Clock
from simulator.fhir.searchparams import SearchRegistry, default_registry
from simulator.journal import Journal
from simulator.store import Store


@dataclass(slots=True)
class SiteSettings:
    """What a site does where FHIR leaves servers a choice. Vendor profiles set these as data."""

    default_count: int = 50
    max_count: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024
    unknown_parameters: str = "strict"  # strict: 400; lenient: ignore and report in the bundle
    resource_types: frozenset[str] | None = None  # None: every type the server can validate
    max_snapshots: int = 2000  # search result sets kept for paging (oldest dropped first)
    public_base: str | None = None  # e.g. https://ehr.example.org/fhir; default: from the request
    software_name: str = "ehrsim"

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> SiteSettings:
        data = dict(data or {})
        if data.get("resource_types") is not None:
            data["resource_types"] = frozenset(data["resource_types"])
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown site settings: {', '.join(sorted(unknown))}")
        return cls(**data)


class IdGenerator:
    """Server-assigned ids: random-looking, but the same sequence for the same seed and site."""

    def __init__(self, seed: int | str, site_id: str) -> None:
        self._rng = random.Random(f"{seed}/{site_id}/ids")

    def new_id(self, resource_type: str) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))


class Snapshots:
    """Search results frozen at search time so that paging is stable while data changes."""

    def __init__(self, capacity: int, seed: int | str, site_id: str) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._rng = random.Random(f"{seed}/{site_id}/snapshots")

    def put(self, value: Any) -> str:
        key = f"{self._rng.getrandbits(64):016x}"
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return key

    def get(self, key: str) -> Any | None:
        return self._items.get(key)

    def clear(self) -> None:
        self._items.clear()


@dataclass
class Site:
    id: str
    base_path: str  # e.g. "/fhir"; always starts with "/" and has no trailing "/"
    store: Store
    clock: Clock
    journal: Journal
    seed: int | str = 0
    settings: SiteSettings = field(default_factory=SiteSettings)
    registry: SearchRegistry = field(default_factory=default_registry)
    description: str = ""
    ids: IdGenerator = field(init=False)
    snapshots: Snapshots = field(init=False)
    extras: dict[str, Any] = field(default_factory=dict)  # per-site state owned by later layers

    def __post_init__(self) -> None:
        self.base_path = "/" + self.base_path.strip("/")
        self.ids = IdGenerator(self.seed, self.id)
        self.snapshots = Snapshots(self.settings.max_snapshots, self.seed, self.id)

    def supports(self, resource_type: str) -> bool:
        from simulator.fhir.validation import model_for

        allowed = self.settings.resource_types
        if allowed is not None and resource_type not in allowed:
            return False
        return bool(self.registry.for_type(resource_type)) and model_for(resource_type) is not None

    def resource_types(self) -> list[str]:
        return [t for t in self.registry.resource_types() if self.supports(t)]

    def reset_sequences(self) -> None:
        self.ids = IdGenerator(self.seed, self.id)
        self.snapshots = Snapshots(self.settings.max_snapshots, self.seed, self.id)
