"""A site's `mllp:` section: how its MLLP endpoint listens, acknowledges, maps and misbehaves.

Documented field by field in docs/mllp.md. Unknown keys are an error naming the key, so a typo in a
scenario does not silently fall back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_PORT = 2575

CHARSETS = {
    "": None,  # the site's default charset
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "ISO IR100": "latin-1",
}


@dataclass
class MllpSettings:
    enabled: bool = True
    host: str | None = None  # default: the sandbox's host option, else 127.0.0.1
    port: int | None = None  # first site: --mllp-port wins
    max_frame_bytes: int = 4 * 1024 * 1024
    idle_timeout: float = 300.0  # seconds without a byte before the server closes; 0 = never
    max_connections: int = 0  # 0 = unlimited
    segment_terminators: str = "lenient"  # strict: \n or \r\n gets a NAK; lenient: accept, journal a warning
    charset: str = "utf-8"  # when MSH-18 is empty
    duplicate_window: float = 600.0  # seconds a MSH-10 is remembered; 0 = no duplicate detection
    duplicate_capacity: int = 100_000
    validation: str = "none"  # strict: validate structure and version with hl7apy (off the fast path)
    accept_unmapped: bool = False  # true: AA (journaled) for message types not mapped to FHIR
    map_to_fhir: bool = True
    merge: str = "link"  # ADT^A40 representation: link (Patient.link replaces/replaced-by) | delete
    timezone: str = "+00:00"  # for v2 timestamps without a zone
    ack_prefix: str = "ACK"
    mapping: dict[str, Any] = field(default_factory=dict)  # overrides of data/v2-to-fhir.yaml
    tls: dict[str, Any] | None = None  # {cert: path, key: path}
    feeds: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, where: str = "mllp") -> MllpSettings:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{where}: unknown MLLP settings {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        settings = cls(**data)
        if settings.segment_terminators not in ("strict", "lenient"):
            raise ValueError(f"{where}.segment_terminators must be 'strict' or 'lenient'")
        if settings.validation not in ("none", "strict"):
            raise ValueError(f"{where}.validation must be 'none' or 'strict'")
        if settings.merge not in ("link", "delete"):
            raise ValueError(f"{where}.merge must be 'link' or 'delete'")
        if settings.max_frame_bytes < 64:
            raise ValueError(f"{where}.max_frame_bytes must be at least 64")
        return settings


def codec_for(msh18: str, default: str) -> str | None:
    """The Python codec for an MSH-18 value; None when ehrsim does not know the charset."""
    if msh18 in CHARSETS:
        return CHARSETS[msh18] or default
    return None


def check_site_section(data: dict[str, Any] | None, where: str) -> None:
    """Everything about a site's `mllp:` section the schema cannot see (raises ValueError)."""
    from simulator.mllp.feeds import FeedSpec

    settings = MllpSettings.from_mapping(data, where)
    if settings.mapping:  # the packaged tables are checked by the tests; a site's overrides here
        from simulator.mllp import documents, immunizations, scheduling
        from simulator.mllp.mapping import mapping_tables

        tables = mapping_tables(settings.mapping)
        documents.check_tables(tables, f"{where}.mapping")
        immunizations.check_tables(tables, f"{where}.mapping.immunization")
        scheduling.check_scheduling_tables(tables, f"{where}.mapping")
    for index, feed in enumerate(settings.feeds):
        FeedSpec.from_mapping(feed, f"{where}.feeds[{index}]")
    if settings.tls:
        from simulator.mllp.tls import server_context

        server_context(settings.tls)
