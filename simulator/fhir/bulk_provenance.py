"""`includeAssociatedData` of a Bulk Data export: the Provenance of the exported resources.

`LatestProvenanceResources` exports, for each exported resource, the Provenance that targets it and
was written last; `RelevantProvenanceResources` every Provenance that targets one. Either replaces
the export's own Provenance output (the IG: other Provenance resources are not returned). Targets
are found through the store's `Provenance.target` index. docs/bulk-data.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from simulator.fhir.errors import FHIRError, Issue
from simulator.fhir.service import FhirService
from simulator.store.base import StoredVersion

LATEST = "LatestProvenanceResources"
RELEVANT = "RelevantProvenanceResources"
VALUES = (LATEST, RELEVANT)


def associated_data(value: str, lenient: bool) -> tuple[str | None, list[Issue]]:
    """The mode `includeAssociatedData` asks for (None: nothing to add), and a warning for each
    value lenient handling dropped; 400 naming an unsupported value otherwise. RELEVANT wins over
    LATEST when both are given: the IG asks for the least restrictive of conflicting values."""
    asked = [v.strip() for v in value.split(",")]
    unknown = [v for v in asked if v not in VALUES]
    if unknown and not lenient:
        raise FHIRError.of(
            400,
            "not-supported",
            f"includeAssociatedData: '{unknown[0]}' is not supported (supported: {', '.join(VALUES)}; "
            "send 'Prefer: handling=lenient' to have it ignored)",
            expression=["includeAssociatedData"],
        )
    dropped = [
        Issue(
            "warning",
            "not-supported",
            f"includeAssociatedData: '{v}' is not supported and was ignored",
            ("includeAssociatedData",),
        )
        for v in unknown
    ]
    mode = RELEVANT if RELEVANT in asked else LATEST if LATEST in asked else None
    return mode, dropped


def provenance_of(service: FhirService, exported: Iterable[StoredVersion], mode: str) -> set[str]:
    """Ids of the live Provenance resources that target the exported resources, per `mode`."""
    site = service.site
    param = site.registry.get("Provenance", "target")
    if param is None or not site.supports("Provenance"):
        return set()
    postings = site.store.postings("Provenance", param)
    live = site.store.current("Provenance")
    chosen: set[str] = set()
    for version in exported:
        targeting = [pid for pid in postings.get(f"{version.type}/{version.id}", ()) if pid in live]
        if not targeting:
            continue
        if mode == RELEVANT:
            chosen.update(targeting)
        else:  # the most recent: the last one written
            chosen.add(max(targeting, key=lambda pid: live[pid].seq))
    return chosen
