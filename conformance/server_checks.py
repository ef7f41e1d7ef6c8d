"""Checks any FHIR R4 server must pass (RESTful API, search, errors), in the spirit of Inferno's kits.

Each docstring quotes the requirement; `spec` links to it.
"""

from __future__ import annotations

from conformance.check import CheckSkipped, Target, check, expect, expect_status

R4 = "https://hl7.org/fhir/R4"
FHIR_JSON = ("application/fhir+json", "application/json+fhir")


@check(
    "capability-01", "Server returns its CapabilityStatement", f"{R4}/http.html#capabilities", "capability"
)
def capability_statement(target: Target) -> None:
    """Applications SHALL return a resource that describes the functionality of the server end-point."""
    statement = target.capability()
    expect(
        statement.get("resourceType") == "CapabilityStatement",
        f"expected a CapabilityStatement, got resourceType {statement.get('resourceType')!r}",
    )


@check(
    "capability-02",
    "CapabilityStatement declares FHIR 4.0.1",
    f"{R4}/capabilitystatement-definitions.html#CapabilityStatement.fhirVersion",
    "capability",
)
def fhir_version(target: Target) -> None:
    """The version of the FHIR specification that this CapabilityStatement describes: 4.0.1 for R4."""
    version = target.capability().get("fhirVersion")
    expect(version == "4.0.1", f"expected fhirVersion 4.0.1, got {version!r}")


@check(
    "capability-03",
    "CapabilityStatement supports JSON",
    f"{R4}/capabilitystatement-definitions.html#CapabilityStatement.format",
    "capability",
)
def json_format(target: Target) -> None:
    """A server SHALL list the formats it supports; a JSON client needs json or application/fhir+json."""
    formats = target.capability().get("format", [])
    expect(
        any("json" in f for f in formats),
        f"expected a JSON format in CapabilityStatement.format, got {formats}",
    )


@check("http-01", "Responses use the FHIR JSON media type", f"{R4}/http.html#mime-type", "http")
def media_type(target: Target) -> None:
    """The formal MIME-type for FHIR resources is application/fhir+json."""
    response = target.get("/metadata")
    kind = response.headers.get("content-type", "")
    expect(
        kind.split(";")[0].strip() in FHIR_JSON, f"expected Content-Type application/fhir+json, got {kind!r}"
    )


@check("read-01", "Read returns the resource with its id", f"{R4}/http.html#read", "read")
def read_patient(target: Target) -> None:
    """GET [base]/[type]/[id] returns the resource; Resource.id SHALL equal the id in the URL."""
    rid = target.any_id("Patient")
    response = target.get(f"/Patient/{rid}")
    expect_status(response, 200, f"GET Patient/{rid}")
    body = response.json()
    expect(body.get("resourceType") == "Patient", f"expected a Patient, got {body.get('resourceType')!r}")
    expect(body.get("id") == rid, f"expected id {rid!r}, got {body.get('id')!r}")


@check("read-02", "Read returns an ETag with the version", f"{R4}/http.html#read", "read")
def read_etag(target: Target) -> None:
    """The server SHOULD return an ETag header with the versionId of the resource (if versioning is supported)."""
    rid = target.any_id("Patient")
    response = target.get(f"/Patient/{rid}")
    etag = response.headers.get("etag")
    if etag is None:
        raise CheckSkipped("no ETag header: the server does not claim versioning")
    version = response.json().get("meta", {}).get("versionId")
    expect(etag in (f'W/"{version}"', f'"{version}"'), f'expected ETag W/"{version}", got {etag!r}')


@check("read-03", "Unknown id gives 404", f"{R4}/http.html#read", "read")
def read_unknown(target: Target) -> None:
    """Unknown resources and deleted resources are treated differently on a read: a GET for an unknown
    resource returns 404 Not Found."""
    response = target.get("/Patient/ehrsim-conformance-no-such-id")
    expect_status(response, 404, "GET Patient/<unknown id>")


@check("errors-01", "Errors carry an OperationOutcome", f"{R4}/http.html#Status-Codes", "errors")
def error_outcome(target: Target) -> None:
    """When the server returns an error (4xx or 5xx), it SHOULD return an OperationOutcome with details."""
    response = target.get("/Patient/ehrsim-conformance-no-such-id")
    try:
        body = response.json()
    except ValueError:
        body = {}
    expect(
        body.get("resourceType") == "OperationOutcome",
        f"expected an OperationOutcome body with the 404, got {response.text[:120]!r}",
    )


@check("search-01", "Search returns a searchset Bundle", f"{R4}/search.html#return", "search")
def searchset(target: Target) -> None:
    """The response to a search is a Bundle of type searchset; matches have search.mode = match."""
    response = target.get("/Patient", params={"_count": 2})
    expect_status(response, 200, "GET Patient?_count=2")
    bundle = response.json()
    expect(
        bundle.get("resourceType") == "Bundle" and bundle.get("type") == "searchset",
        f"expected a searchset Bundle, got {bundle.get('resourceType')}/{bundle.get('type')}",
    )
    modes = {
        e.get("search", {}).get("mode")
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") == "Patient"
    }
    expect(modes <= {"match"}, f"expected search.mode match on Patient entries, got {modes}")
    expect(all("fullUrl" in e for e in bundle.get("entry", [])), "every entry SHALL have a fullUrl")


@check("search-02", "Search honours _count and pages with next links", f"{R4}/http.html#paging", "search")
def paging(target: Target) -> None:
    """Servers SHOULD page results; the next link returns the following page of the same search."""
    first = target.get("/Patient", params={"_count": 1})
    expect_status(first, 200, "GET Patient?_count=1")
    bundle = first.json()
    matches = [e for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
    expect(len(matches) <= 1, f"_count=1 returned {len(matches)} matches")
    next_url = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None)
    if next_url is None:
        raise CheckSkipped("only one Patient on the server: no second page to follow")
    second = target.get(next_url)
    expect_status(second, 200, "GET next page")
    ids = [
        e["resource"]["id"]
        for e in second.json().get("entry", [])
        if e.get("resource", {}).get("resourceType") == "Patient"
    ]
    expect(
        ids and ids != [m["resource"]["id"] for m in matches],
        "the next page repeated the first page or was empty",
    )


@check(
    "search-03",
    "Every advertised Patient search parameter is accepted",
    f"{R4}/capabilitystatement-definitions.html#CapabilityStatement.rest.resource.searchParam",
    "search",
)
def advertised_parameters(target: Target) -> None:
    """Search parameters listed in the CapabilityStatement are supported by the implementation."""
    entry = target.resource_entry("Patient")
    if entry is None:
        raise CheckSkipped("Patient is not listed in the CapabilityStatement")
    failures = []
    for param in entry.get("searchParam", []):
        response = target.get("/Patient", params={f"{param['name']}:missing": "false", "_count": 1})
        if response.status_code != 200:
            failures.append(f"{param['name']} -> {response.status_code}")
    expect(not failures, "advertised parameters refused: " + ", ".join(failures))


@check(
    "search-04", "Unknown search parameters are rejected or reported", f"{R4}/search.html#errors", "search"
)
def unknown_parameter(target: Target) -> None:
    """Servers SHALL either reject the search (4xx) or ignore the parameter and say so in the self link
    or an OperationOutcome (search.mode = outcome) when it cannot process a parameter."""
    response = target.get("/Patient", params={"ehrsim-unknown-param": "1"})
    if 400 <= response.status_code < 500:
        return
    expect_status(response, 200, "GET Patient?ehrsim-unknown-param=1")
    bundle = response.json()
    self_link = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "self"), "")
    reported = any(e.get("search", {}).get("mode") == "outcome" for e in bundle.get("entry", []))
    expect(
        "ehrsim-unknown-param" not in self_link or reported,
        "the unknown parameter was neither rejected, reported, nor dropped from the self link",
    )
