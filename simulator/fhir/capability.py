"""The CapabilityStatement, generated from what a site really serves.

Resource types come from `Site.resource_types()` (the types the search table knows, the R4B models
can validate and the site's settings allow); search parameters from the compiled search table; the
interactions and operations from `INTERACTIONS` and `OPERATIONS`, the same lists the REST router
dispatches on. Nothing here is written by hand per resource, so it cannot drift from behaviour.
"""

from __future__ import annotations

from typing import Any

from simulator import FHIR_VERSION, __version__
from simulator.clock import fhir_instant
from simulator.fhir.bulk import OPERATION_DOCUMENTATION as EXPORT_DOCUMENTATION
from simulator.fhir.bulk import OPERATIONS as EXPORT_OPERATIONS
from simulator.fhir.searchparams import RESULT_PARAMETERS
from simulator.site import Site

# Type-level interactions every served resource type supports (see fhir.api.FhirApi).
INTERACTIONS = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")
OPERATIONS = {
    "Patient": [
        ("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything"),
        ("export", EXPORT_OPERATIONS["Patient"]),
    ],
    "Group": [("export", EXPORT_OPERATIONS["Group"])],
}
SYSTEM_OPERATIONS = [("export", EXPORT_OPERATIONS["system"])]
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"

_DOCS = {
    "_count": "Page size (default and maximum are site settings)",
    "_sort": "Sort by one or more search parameters; prefix '-' for descending",
    "_include": "Include referenced resources (Type:param[:Target])",
    "_revinclude": "Include resources that reference the matches (Type:param)",
    "_summary": "true | text | data | count | false",
    "_elements": "Return only these top-level elements",
    "_total": "none | estimate | accurate",
}


# A layer that secures the site puts a callable (base_url) -> rest.security here (e.g. the SMART
# `oauth-uris` extension), so the statement advertises what the layer enforces.
SECURITY_EXTRA = "capability.security"


def _security(site: Site, base_url: str) -> dict[str, Any]:
    security = site.extras.get(SECURITY_EXTRA)
    return {"security": security(base_url)} if security is not None else {}


def capability_statement(site: Site, base_url: str) -> dict[str, Any]:
    resources = []
    reverse: dict[str, list[str]] = {}
    types = site.resource_types()
    for rtype in types:
        for param in site.registry.for_type(rtype).values():
            if param.type == "reference":
                for target in param.targets or ():
                    reverse.setdefault(target, []).append(f"{rtype}:{param.code}")
    for rtype in types:
        params = site.registry.for_type(rtype)
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": code} for code in site_interactions(site, rtype)],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical", "local"],
            "searchInclude": sorted(f"{rtype}:{p.code}" for p in params.values() if p.type == "reference"),
            "searchRevInclude": sorted(reverse.get(rtype, [])),
            "searchParam": [
                _param_entry(p)
                for code, p in sorted(params.items())
                if not code.startswith("_")
                or code in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")
            ],
        }
        if rtype in OPERATIONS:
            entry["operation"] = [_operation(name, url) for name, url in OPERATIONS[rtype]]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "id": f"ehrsim-{site.id}",
        "url": f"{base_url}/metadata",
        "name": "EhrsimCapabilityStatement",
        "title": f"ehrsim site {site.id}",
        "status": "active",
        "experimental": True,
        "date": fhir_instant(site.clock.start),
        "publisher": "ehrsim",
        "kind": "instance",
        "instantiates": [BULK_DATA],
        "software": {"name": site.settings.software_name, "version": __version__},
        "implementation": {"description": site.description or f"ehrsim site {site.id}", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                **_security(site, base_url),
                "resource": resources,
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "operation": [_operation(name, url) for name, url in SYSTEM_OPERATIONS],
                "searchParam": [
                    {"name": name, "type": "special" if name != "_count" else "number", "documentation": doc}
                    for name, doc in _DOCS.items()
                    if name in RESULT_PARAMETERS
                ],
            }
        ],
    }


def site_interactions(site: Site, resource_type: str) -> tuple[str, ...]:
    """The interactions a site offers on a type: all of ehrsim's unless its settings narrow them."""
    allowed = site.settings.interactions
    if allowed is None:
        return INTERACTIONS
    return tuple(code for code in INTERACTIONS if code in allowed.get(resource_type, ()))


def _operation(name: str, url: str) -> dict[str, Any]:
    entry = {"name": name, "definition": url}
    if name == "export":  # the IG's OperationDefinitions leave several parameters optional
        entry["documentation"] = EXPORT_DOCUMENTATION
    return entry


def _param_entry(param: Any) -> dict[str, Any]:
    entry = {"name": param.code, "type": param.type}
    if param.url:
        entry["definition"] = param.url
    return entry
