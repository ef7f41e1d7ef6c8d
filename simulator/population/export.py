"""Writing a population to files other servers can load (`ehrsim generate`).

- `bundle`: one FHIR transaction Bundle per person (`patient-00001.json`...) after one for the
  hospital's shared resources (`hospital.json`). Entries are `PUT Type/id`, so the ids and the
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


def write_population(chunks: Iterable[list[dict[str, Any]]], out: Path, fmt: str) -> dict[str, int]:
    """Write the hospital chunk, then one chunk per person, to `out`; returns resources per type."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    files: dict[str, IO[bytes]] = {}
    try:
        for number, chunk in enumerate(chunks):
            for resource in chunk:
                counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
            if fmt == "bundle":
                name = "hospital.json" if number == 0 else f"patient-{number:05d}.json"
                (out / name).write_bytes(orjson.dumps(transaction(chunk), option=orjson.OPT_INDENT_2) + b"\n")
                continue
            for resource in chunk:
                rtype = resource["resourceType"]
                handle = files.get(rtype)
                if handle is None:
                    handle = files[rtype] = (out / f"{rtype}.ndjson").open("wb")
                handle.write(orjson.dumps(resource) + b"\n")
    finally:
        for handle in files.values():
            handle.close()
    return counts
