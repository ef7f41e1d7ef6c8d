"""Bulk Data Access (FHIR Bulk Data IG v2.0.0) checks for any server that advertises `$export`.

They run a small export (`_type=Patient`), follow it to its manifest, read its files, and cancel a
second one. A server whose CapabilityStatement names no `export` operation skips them; the
`_typeFilter` check runs only for a server whose export operation's documentation names
`_typeFilter` (the IG has no computable way to say so). Each docstring states the requirement;
`spec` links to it.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx

from conformance.check import CheckFailed, CheckSkipped, Target, check, expect, expect_status

BULK = "https://hl7.org/fhir/uv/bulkdata/STU2/export.html"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
WAIT_SECONDS = 60.0  # how long a check follows an export before calling it stuck


def export_path(target: Target) -> str:
    """The kick-off the CapabilityStatement advertises: system level, else Patient; or skip."""
    for rest in target.capability().get("rest", []):
        if any(op.get("name") == "export" for op in rest.get("operation", [])):
            return "/$export"
        for entry in rest.get("resource", []):
            if entry.get("type") == "Patient" and any(
                op.get("name") == "export" for op in entry.get("operation", [])
            ):
                return "/Patient/$export"
    raise CheckSkipped("the CapabilityStatement advertises no $export operation")


def kick_off(target: Target, params: dict[str, str] | None = None) -> httpx.Response:
    return target.get(export_path(target), params=params or {"_type": "Patient"}, headers=ASYNC)


def status_url(target: Target, response: httpx.Response) -> str:
    """The status URL a kick-off answered with (a relative one resolved against the base)."""
    expect_status(response, 202, "kick-off")
    location = response.headers.get("content-location", "")
    expect(bool(location), "kick-off: 202 without a Content-Location header")
    return urljoin(target.fhir_base.rstrip("/") + "/", location)


def manifest(target: Target, params: dict[str, str] | None = None) -> dict[str, Any]:
    """Follow one export (`_type=Patient` unless `params` says otherwise) to its completed status
    response (polled as Retry-After says, at most every 5 s, for up to WAIT_SECONDS)."""
    key = f"bulk:manifest:{sorted((params or {}).items())}"
    if key in target.cache:
        return target.cache[key]
    url = status_url(target, kick_off(target, params))
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        response = target.get(url, headers={"Accept": "application/json"})
        if response.status_code != 202:
            break
        retry = response.headers.get("retry-after", "1")
        wait = min(float(retry), 5.0) if retry.replace(".", "", 1).isdigit() else 1.0
        expect(
            time.monotonic() + wait < deadline, f"the export was still in progress after {WAIT_SECONDS:g} s"
        )
        time.sleep(wait)
    expect_status(response, 200, "status request of a completed export")
    target.cache[key] = found = response.json()
    return found


def ndjson(target: Target, item: dict[str, Any]) -> list[Any]:
    """The parsed lines of one output file (200 or the check fails)."""
    response = target.get(item["url"], headers={"Accept": "application/fhir+ndjson"})
    expect_status(response, 200, f"GET {item['url']}")
    out = []
    for number, line in enumerate((line for line in response.text.splitlines() if line.strip()), 1):
        try:
            out.append(json.loads(line))
        except ValueError:
            raise CheckFailed(f"{item['url']} line {number} is not JSON: {line[:80]!r}") from None
    return out


def advertises_type_filter(target: Target) -> bool:
    """Whether an export operation of the CapabilityStatement documents `_typeFilter`."""
    for rest in target.capability().get("rest", []):
        operations = list(rest.get("operation", []))
        for entry in rest.get("resource", []):
            operations += entry.get("operation", [])
        if any(
            op.get("name") == "export" and "_typeFilter" in op.get("documentation", "") for op in operations
        ):
            return True
    return False


@check("bulk-01", "$export kick-off answers 202 with the status URL", f"{BULK}#response---success", "bulk")
def kick_off_accepted(target: Target) -> None:
    """Response - Success: HTTP Status Code of 202 Accepted; Content-Location header with the
    absolute URL of an endpoint for subsequent status requests (polling location)."""
    response = kick_off(target)
    url = response.headers.get("content-location", "")
    expect_status(response, 202, "kick-off with Prefer: respond-async")
    expect(
        urlparse(url).scheme in ("http", "https"),
        f"expected an absolute polling URL in Content-Location, got {url!r}",
    )


@check(
    "bulk-02",
    "The completed export's manifest has the required fields",
    f"{BULK}#response---complete-status",
    "bulk",
)
def complete_manifest(target: Target) -> None:
    """Complete status: HTTP 200 with a JSON body holding transactionTime (instant), request (the
    kick-off URL), requiresAccessToken (boolean) and output (array of {type, url})."""
    found = manifest(target)
    problems = []
    if not isinstance(found.get("transactionTime"), str) or "T" not in found["transactionTime"]:
        problems.append(f"transactionTime is {found.get('transactionTime')!r}, not an instant")
    if not isinstance(found.get("request"), str) or "$export" not in found["request"]:
        problems.append(f"request is {found.get('request')!r}, not the kick-off URL")
    if not isinstance(found.get("requiresAccessToken"), bool):
        problems.append(f"requiresAccessToken is {found.get('requiresAccessToken')!r}, not a boolean")
    output = found.get("output")
    if not isinstance(output, list) or not all(
        isinstance(o, dict) and o.get("type") and o.get("url") for o in output
    ):
        problems.append(f"output is {output!r}, not a list of {{type, url}}")
    expect(not problems, "; ".join(problems))


@check("bulk-03", "Output files are NDJSON of their declared type", f"{BULK}#file-request", "bulk")
def ndjson_files(target: Target) -> None:
    """Each output file is NDJSON (application/fhir+ndjson): one resource per line, of the type its
    manifest entry declares (and as many as its count, when given)."""
    found = manifest(target)
    outputs = found.get("output") or []
    if not outputs:
        raise CheckSkipped("the export produced no files (no Patient on the server?)")
    for item in outputs:
        resources = ndjson(target, item)
        for number, resource in enumerate(resources, 1):
            expect(
                isinstance(resource, dict) and resource.get("resourceType") == item["type"],
                f"{item['url']} line {number} is not a {item['type']}: {json.dumps(resource)[:80]!r}",
            )
        if "count" in item:
            expect(
                item["count"] == len(resources),
                f"{item['url']}: count {item['count']}, but {len(resources)} lines",
            )


@check(
    "bulk-04",
    "DELETE cancels an export; its status URL is then 404",
    f"{BULK}#bulk-data-delete-request",
    "bulk",
)
def delete_export(target: Target) -> None:
    """Delete request: DELETE on the polling location answers 202 Accepted; subsequent requests to
    the polling location SHALL return 404 Not Found."""
    url = status_url(target, kick_off(target))
    deleted = target.http.delete(
        url, headers={"Authorization": f"Bearer {target.token}"} if target.token else {}
    )
    expect_status(deleted, 202, f"DELETE {url}")
    expect_status(target.get(url, headers={"Accept": "application/json"}), 404, f"GET {url} after DELETE")


@check(
    "bulk-05",
    "A server that supports _typeFilter exports only what the filter matches",
    f"{BULK}#_typefilter-experimental-query-parameter",
    "bulk",
)
def type_filter(target: Target) -> None:
    """_typeFilter: a server with support for the parameter and requested search queries SHALL
    filter the data in the response to only include resources that meet the specified criteria.
    Checked with `_type=Patient&_typeFilter=Patient?_id=[one Patient's id]`."""
    if not advertises_type_filter(target):
        raise CheckSkipped("no export operation in the CapabilityStatement documents _typeFilter")
    chosen = target.any_id("Patient")
    found = manifest(target, {"_type": "Patient", "_typeFilter": f"Patient?_id={chosen}"})
    exported = [
        resource.get("id") if isinstance(resource, dict) else resource
        for item in found.get("output") or []
        for resource in ndjson(target, item)
    ]
    expect(
        exported == [chosen],
        f"_typeFilter=Patient?_id={chosen}: expected exactly Patient {chosen}, got ids {exported[:5]!r}"
        + (f" and {len(exported) - 5} more" if len(exported) > 5 else ""),
    )
