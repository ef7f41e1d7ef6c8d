"""A site: one simulated hospital endpoint with its own FHIR base path, data and settings.

One ehrsim process serves one or more sites (a scenario's `sites:`). Each has its own store, id
sequence and search snapshots; the clock and the journal belong to the whole sandbox so that faults,
tokens and verification see one timeline.
"""

from __future__ import annotations

import functools
import random
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
    paging: str = "getpages"  # page-link style by name: simulator.fhir.paging.PAGING_STYLES
    ids: dict[str, Any] | None = None  # id format per resource type: see IdGenerator
    interactions: dict[str, list[str]] | None = None  # per type; None: every interaction ehrsim has
    counts: dict[str, dict[str, int]] | None = None  # per type {default, max} page sizes
    bulk_export: dict[str, Any] | None = None  # $export timing and file size: fhir.bulk.BulkExportSettings
    # Most live resources kept per type; past it the least recently written are expunged (for long
    # load tests: the store otherwise keeps everything). docs/architecture.md, "Retention".
    retention: dict[str, int] | None = None

    def count_limits(self, resource_type: str | None) -> tuple[int, int]:
        """(default, maximum) page size for a search on `resource_type`."""
        per_type = (self.counts or {}).get(resource_type or "", {})
        return per_type.get("default", self.default_count), per_type.get("max", self.max_count)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> SiteSettings:
        data = dict(data or {})
        if data.get("resource_types") is not None:
            data["resource_types"] = frozenset(data["resource_types"])
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown site settings: {', '.join(sorted(unknown))}")
        retention = data.get("retention")
        if retention is not None and not _positive_counts(retention):
            raise ValueError(
                f"settings.retention maps resource types to positive integers, not {retention!r}"
            )
        return cls(**data)


def _positive_counts(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value.values()
    )


_OPAQUE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-"


_UUID_KEEP = ~(0xC000 << 48) & ~(0xF000 << 64)  # all but the variant and version bits
_UUID_SET = (0x8000 << 48) | (4 << 76)  # variant RFC 4122, version 4


def _uuid4(bits: int) -> str:
    """The same string as str(uuid.UUID(int=bits, version=4)), without building a UUID object."""
    text = (bits & _UUID_KEEP | _UUID_SET).to_bytes(16, "big").hex()  # (a third faster than :032x)
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class IdGenerator:
    """Server-assigned ids: random-looking, but the same sequence for the same seed and site.

    The format is data (`SiteSettings.ids`): a spec per resource type, or `default`, with a `style`
    (`uuid`; `numeric` with `digits`; `opaque` with `length`, letters, digits, `.` and `-`), an
    optional `prefix`/`suffix`, `uppercase`, and `category_prefix` (e.g. `{vital-signs: "VS-"}`),
    chosen by the category hint a caller passes for category-bearing resources such as Observation.
    """

    def __init__(self, seed: int | str, site_id: str, formats: dict[str, Any] | None = None) -> None:
        self._rng = random.Random(f"{seed}/{site_id}/ids")
        self._formats = formats or {}
        self._counters: dict[str, int] = {}

    def new_id(self, resource_type: str, category: str | None = None) -> str:
        spec = self._formats.get(resource_type) or self._formats.get("default")
        if not spec:  # plain UUIDs, the default: the MLLP and REST write paths ask for many
            return _uuid4(self._rng.getrandbits(128))
        style = spec.get("style", "uuid")
        if style == "uuid":
            body = _uuid4(self._rng.getrandbits(128))
        elif style == "numeric":
            body = str(self._next_number(resource_type, int(spec.get("digits", 8))))
        elif style == "opaque":
            length = int(spec.get("length", 24)) - len(spec.get("prefix", "")) - len(spec.get("suffix", ""))
            body = "".join(self._rng.choice(_OPAQUE_ALPHABET) for _ in range(max(length, 1)))
        else:
            raise ValueError(f"unknown id style '{style}' (known: uuid, numeric, opaque)")
        if spec.get("uppercase"):
            body = body.upper()
        prefix = (spec.get("category_prefix") or {}).get(category or "", spec.get("prefix", ""))
        return f"{prefix}{body}{spec.get('suffix', '')}"

    def reformat(self, formats: dict[str, Any] | None) -> None:
        """New formats from now on (a vendor upgrade); the sequence itself carries on."""
        self._formats = formats or {}

    def _next_number(self, resource_type: str, digits: int) -> int:
        # Increasing with random gaps: looks like a busy production sequence, never repeats.
        current = self._counters.get(resource_type)
        if current is None:
            current = self._rng.randrange(10 ** (digits - 1), 2 * 10 ** (digits - 1))
        current += self._rng.randint(1, 97)
        self._counters[resource_type] = current
        return current


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


@functools.lru_cache(maxsize=4096)
def _servable(registry: SearchRegistry, resource_type: str) -> bool:
    """A type the search table knows and an R4B model can validate (asked on every request)."""
    from simulator.fhir.validation import model_for

    return bool(registry.for_type(resource_type)) and model_for(resource_type) is not None


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
        self.ids = IdGenerator(self.seed, self.id, self.settings.ids)
        self.snapshots = Snapshots(self.settings.max_snapshots, self.seed, self.id)

    def supports(self, resource_type: str) -> bool:
        allowed = self.settings.resource_types
        if allowed is not None and resource_type not in allowed:
            return False
        return _servable(self.registry, resource_type)

    def resource_types(self) -> list[str]:
        return [t for t in self.registry.resource_types() if self.supports(t)]

    def reset_sequences(self) -> None:
        self.ids = IdGenerator(self.seed, self.id, self.settings.ids)
        self.snapshots = Snapshots(self.settings.max_snapshots, self.seed, self.id)
