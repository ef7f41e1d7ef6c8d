"""Building Bundles: searchset pages with stable paging, history, and entry subsetting."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from simulator.clock import fhir_instant
from simulator.fhir.search import SearchQuery
from simulator.fhir.validation import model_for
from simulator.site import Site
from simulator.store.base import StoredVersion

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@dataclass(slots=True)
class SearchSnapshot:
    """A frozen result set: the resources that matched, in order, at search time."""

    refs: list[tuple[str, str]]  # (type, id) of the matches
    query: SearchQuery | None  # None for $everything and history
    self_params: list[tuple[str, str]] = field(default_factory=list)
    self_path: str = ""  # e.g. "Observation" or "Patient/1/$everything"
    bundle_type: str = "searchset"
    versions: list[StoredVersion] | None = None  # history bundles page over versions instead


def page_link(base_url: str, key: str, offset: int, count: int, bundle_type: str) -> str:
    query = urlencode(
        {"_getpages": key, "_getpagesoffset": offset, "_count": count, "_bundletype": bundle_type}
    )
    return f"{base_url}?{query}"


def self_link(base_url: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base_url}/{path}" if path else base_url
    return url + ("?" + urlencode(params, safe=":|,/$*") if params else "")


def subset(resource: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """Apply _summary / _elements to one resource; subsetted resources carry the SUBSETTED tag."""
    if (not summary or summary == "false") and not elements:
        return resource
    rtype = resource["resourceType"]
    if summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif summary == "text":
        keep = {"resourceType", "id", "meta", "text", *_mandatory(rtype)}
        out = {k: v for k, v in resource.items() if k in keep}
    elif summary == "true":
        keep = {"resourceType", "id", "meta", *_summary_elements(rtype)}
        out = {k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep}
    else:
        keep = {"resourceType", "id", "meta", *(elements or []), *_mandatory(rtype)}
        out = {k: v for k, v in resource.items() if k in keep or _choice_base(k) in keep}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out


def _choice_base(key: str) -> str:
    for i, ch in enumerate(key):
        if i and ch.isupper():
            return key[:i]
    return key


# Cached: a bulk export subsets every resource of a type; walking the model's fields for each
# one took about half the time of an `_elements` export (loadtests/bench_bulk.py --query).
@functools.cache
def _mandatory(resource_type: str) -> frozenset[str]:
    model = model_for(resource_type)
    if model is None:
        return frozenset()
    return frozenset(
        (info.alias or name)
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("element_required")
    )


@functools.cache
def _summary_elements(resource_type: str) -> frozenset[str]:
    model = model_for(resource_type)
    if model is None:
        return frozenset()
    out = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("summary_element_property"):
            alias = info.alias or name
            out.add(alias)
            out.add(_choice_base(alias))
    return frozenset(out)


def bundle_shell(site: Site, bundle_type: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": site.ids.new_id("Bundle"),
        "meta": {"lastUpdated": fhir_instant(site.clock.now())},
        "type": bundle_type,
    }


def history_entry(base_url: str, version: StoredVersion) -> dict[str, Any]:
    url = f"{version.type}/{version.id}"
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{url}"}
    if version.resource is not None:
        entry["resource"] = version.resource
    status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[version.method]
    if version.method == "PUT" and version.version == 1:
        status = "201 Created"
    entry["request"] = {"method": version.method, "url": url if version.method != "POST" else version.type}
    entry["response"] = {
        "status": status,
        "etag": f'W/"{version.version}"',
        "lastModified": version.last_updated,
    }
    return entry
