"""Writing a population to files other servers can load (`ehrsim generate`).

- `bundle`: one FHIR transaction Bundle per person (`patient-00001.json`...: their Patient
  records, duplicates and merges included, and everything about them) after one for the
  resources no patient owns (`hospital.json`). Entries are `PUT Type/id`, so the ids and the
  references between resources survive the load unchanged on any server that allows client ids.
- `ndjson`: one file per resource type (`Patient.ndjson`...), one resource per line: the FHIR Bulk
  Data format, for `$import`-style loaders.

Output is byte-identical for the same scenario and seed: keys keep the order the generator wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

FORMATS = ("bundle", "ndjson")


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
            for resource in resources
        ],
    }


def people(resources: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """Split resources into the shared ones and one group per person.

    A person is a Patient with every record whose subject/patient/target is that Patient, together
    with the records of Patients linked to it (a duplicate and its merge), so each bundle's
    references resolve within the bundle or to the shared resources loaded before it.
    """
    resources = list(resources)
    person: dict[str, str] = {}  # patient id -> the id of the person's first record
    for resource in resources:
        if resource["resourceType"] == "Patient":
            key = person.setdefault(resource["id"], resource["id"])
            for link in resource.get("link") or ():
                other = _patient_id(link.get("other"))
                if other:
                    person.setdefault(other, key)
    shared: list[dict[str, Any]] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        owner = _owner(resource)
        if owner is None:
            shared.append(resource)
        else:
            groups.setdefault(person.get(owner, owner), []).append(resource)
    return shared, list(groups.values())


def _patient_id(ref: Any) -> str | None:
    if isinstance(ref, dict):
        value = ref.get("reference")
        if isinstance(value, str) and value.startswith("Patient/"):
            return value.split("/", 1)[1]
    return None


def _owner(resource: dict[str, Any]) -> str | None:
    if resource["resourceType"] == "Patient":
        return resource["id"]
    for key in ("subject", "patient"):
        pid = _patient_id(resource.get(key))
        if pid:
            return pid
    for target in resource.get("target") or ():
        pid = _patient_id(target)
        if pid:
            return pid
    return None


def ndjson_line(resource: dict[str, Any]) -> bytes:
    """One resource as one NDJSON line (also the `$export` files' format, simulator/fhir/bulk.py)."""
    return orjson.dumps(resource) + b"\n"


def write_population(resources: Iterable[dict[str, Any]], out: Path, fmt: str) -> dict[str, int]:
    """Write a site's resources to `out` as bundles or NDJSON; returns resources per type."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
    out.mkdir(parents=True, exist_ok=True)
    resources = list(resources)
    counts: dict[str, int] = {}
    for resource in resources:
        counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
    if fmt == "bundle":
        shared, groups = people(resources)
        for name, group in [("hospital.json", shared)] + [
            (f"patient-{n:05d}.json", group) for n, group in enumerate(groups, 1)
        ]:
            (out / name).write_bytes(orjson.dumps(transaction(group), option=orjson.OPT_INDENT_2) + b"\n")
        return counts
    files: dict[str, IO[bytes]] = {}
    try:
        for resource in resources:
            rtype = resource["resourceType"]
            handle = files.get(rtype)
            if handle is None:
                handle = files[rtype] = (out / f"{rtype}.ndjson").open("wb")
            handle.write(ndjson_line(resource))
    finally:
        for handle in files.values():
            handle.close()
    return counts
