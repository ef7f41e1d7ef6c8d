"""Bad input to the FHIR API gets an OperationOutcome with a 4xx, never a 5xx or a hang: generated
paths, methods, headers and query strings, transaction and batch bundles, `_history` and `$export`
requests, against the real server over a socket, on both stores. Each bug these found has a named
regression test below."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.testing import RunningServer, serve_in_thread
from tests.fuzz_support import FUZZ, SCALARS, json_values, queries

SEGMENTS = st.one_of(
    st.sampled_from(
        [
            *["Patient", "Observation", "Group", "Foo", "metadata", "_history", "_search", "$export"],
            *["$everything", "$meta", "$validate", "1", "²", "%00", "%zz", "..", "_bulk", "PATIENT_ID"],
        ]
    ),
    st.text(
        st.characters(min_codepoint=33, max_codepoint=0x2000, exclude_characters="/?#%\x7f"),
        min_size=1,
        max_size=6,
    ),
)
SEARCH_NAMES = [
    *["_count", "_since", "_at", "_type", "_typeFilter", "_elements", "_id", "_lastUpdated", "_sort"],
    *["_include", "_revinclude", "_summary", "_total", "_has:Observation:patient:code", "identifier"],
    *["name", "birthdate", "code", "date", "subject", "subject:Patient", "_getpages", "_getpagesoffset"],
    *["_format", "_contained", "_text", "_content", "family", "value-quantity", "_tag", "_filter", "patient"],
    *["start", "end", "_outputFormat", "includeAssociatedData", "_until"],
]
SEARCH_VALUES = [
    *["Patient", "Observation,Patient", "Patient?gender=male", "2026-01-01T00:00:00Z", "gt2020", "true"],
    *["Observation:subject", "*", "Patient:link", "http://loinc.org|", "|x", "a,b,,c"],
    *["9999-12-31", "sa9999", "0000", "0001-01-01T00:00:00-14:00", "2026-01-01T00:00:00+99:00"],
    *["1e999999999", "gt0e-999999", "5.4|http://unitsofmeasure.org|mg"],
]
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Prefer",
            "Accept",
            "If-Match",
            "If-None-Exist",
            "If-Modified-Since",
            "If-None-Match",
            "Content-Type",
        ]
    ),
    st.one_of(
        # any legal field value (uvicorn itself answers text/plain 400 to control characters)
        st.text(
            st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=20
        ).map(str.strip),
        st.sampled_from(
            [
                *["respond-async", "return=minimal", "return=OperationOutcome", "handling=strict"],
                *["application/fhir+json", "application/fhir+xml", "text/html", "*/*", 'W/"1"', 'W/"²"'],
                *['"1"', "W/", "identifier=x", "_id=²", "Mon, 01 Jan 2024 00:00:00 GMT", "garbage"],
                *["application/x-www-form-urlencoded", "application/fhir+json; fhirVersion=9"],
            ]
        ),
    ),
    max_size=3,
)
FHIR_KEYS = [
    *["resourceType", "id", "type", "entry", "resource", "request", "method", "url", "fullUrl"],
    *["ifNoneExist", "ifMatch", "parameter", "name", "valueString", "valueReference", "reference"],
    *["meta", "versionId", "subject", "code", "status", "identifier", "value", "system", "coding"],
]
REQUEST_URLS = [
    *["Patient", "Patient/PATIENT_ID", "Patient?_id=PATIENT_ID", "Patient/PATIENT_ID/_history/1"],
    *["Observation?code=²", "Patient/_history?_count=²", "metadata", "$export", "urn:uuid:1", ""],
    "Patient/PATIENT_ID/$everything",
]


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    store = (
        "memory" if request.param == "memory" else f"sqlite:{tmp_path_factory.mktemp('fuzz') / 'ehrsim.db'}"
    )
    with serve_in_thread("default", store=store) as running:
        yield running


@pytest.fixture(scope="module")
def patient_id(site: RunningServer) -> str:
    return httpx.get(site.fhir_base + "/Patient", params={"_count": 1}).json()["entry"][0]["resource"]["id"]


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert response.json()["resourceType"] == "OperationOutcome", response.text[:300]


def send(site: RunningServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(timeout=30) as http:
        return http.request(method, site.fhir_base + path, **kwargs)


def fhir_json(value: Any) -> dict[str, Any]:
    """Content and header for a JSON body; lone surrogates go out as JSON escapes (`\\ud800`)."""
    return {"content": json.dumps(value).encode(), "headers": {"Content-Type": "application/fhir+json"}}


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
    segments=st.lists(SEGMENTS, max_size=4),
    query=queries(SEARCH_NAMES, SEARCH_VALUES),
    headers=HEADERS,
    body=st.one_of(
        st.none(), json_values(FHIR_KEYS).map(lambda v: json.dumps(v).encode()), st.binary(max_size=40)
    ),
)
def test_generated_requests_get_operation_outcomes(
    site: RunningServer, patient_id: str, method: str, segments: list, query: str, headers: dict, body: Any
) -> None:
    path = "/" + "/".join(patient_id if s == "PATIENT_ID" else s for s in segments)
    headers = {name: value.encode("latin-1") for name, value in headers.items()}
    check(send(site, method, f"{path}?{query}", headers=headers, content=body))


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.sampled_from(
        [
            *["/Patient/PATIENT_ID", "/Patient/PATIENT_ID/_history", "/Patient/PATIENT_ID/_history/1"],
            *["/Patient/PATIENT_ID/$everything", "/Patient/_history", "/_history", "/Observation/_search"],
            *["/Patient", "/Observation", "/$export", "/Patient/$export", "/metadata"],
        ]
    ),
    query=queries(SEARCH_NAMES, SEARCH_VALUES),
    headers=HEADERS,
)
def test_generated_queries_on_known_paths_get_operation_outcomes(
    site: RunningServer, patient_id: str, method: str, path: str, query: str, headers: dict
) -> None:
    """Conditional update and delete (PUT/DELETE [type]?query), history, $everything and _search
    with generated parameters and headers; the body, when one is needed, is a valid Patient."""
    headers = {name: value.encode("latin-1") for name, value in headers.items()}
    body = (
        json.dumps({"resourceType": "Patient", "id": patient_id}).encode()
        if method in ("POST", "PUT")
        else None
    )
    if path.endswith("_search") and method == "POST":
        headers, body = {"Content-Type": b"application/x-www-form-urlencoded"}, query.encode()
    check(
        send(site, method, f"{path.replace('PATIENT_ID', patient_id)}?{query}", headers=headers, content=body)
    )


ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "fullUrl": SCALARS,
        "resource": st.one_of(
            json_values(FHIR_KEYS),
            st.fixed_dictionaries(
                {"resourceType": st.sampled_from(["Patient", "Observation", "Foo"])},
                optional={"id": SCALARS, "subject": json_values(FHIR_KEYS), "status": SCALARS},
            ),
        ),
        "request": st.one_of(
            json_values(FHIR_KEYS),
            st.fixed_dictionaries(
                {
                    "method": st.one_of(
                        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "X"]), SCALARS
                    )
                },
                optional={
                    "url": st.one_of(SCALARS, st.sampled_from(REQUEST_URLS)),
                    **dict.fromkeys(["ifMatch", "ifNoneExist", "ifNoneMatch", "ifModifiedSince"], SCALARS),
                },
            ),
        ),
    },
)


@FUZZ
@given(
    kind=st.sampled_from(["transaction", "batch", "collection", "x"]),
    entries=st.one_of(json_values(FHIR_KEYS), st.lists(st.one_of(ENTRY, json_values(FHIR_KEYS)), max_size=4)),
)
def test_generated_bundles_get_operation_outcomes(
    site: RunningServer, patient_id: str, kind: str, entries: Any
) -> None:
    bundle = json.loads(
        json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}).replace(
            "PATIENT_ID", patient_id
        )
    )
    response = send(site, "POST", "", **fhir_json(bundle))
    check(response)
    if response.status_code == 200:  # a batch answers each entry; a transaction all or nothing
        assert response.json()["resourceType"] == "Bundle"


EXPORT_NAMES = [
    "_type",
    "_since",
    "_until",
    "_typeFilter",
    "_elements",
    "includeAssociatedData",
    "_outputFormat",
    "patient",
]


@FUZZ
@given(
    path=st.sampled_from(["/$export", "/Patient/$export", "/Group/g/$export"]),
    query=queries(EXPORT_NAMES, [*SEARCH_VALUES, "LatestProvenanceResources", "application/fhir+ndjson"]),
    headers=st.sampled_from(
        [{"Prefer": "respond-async"}, {"Prefer": "respond-async", "Accept": "application/fhir+json"}, {}]
    ),
)
def test_generated_export_kick_offs_get_operation_outcomes(
    site: RunningServer, path: str, query: str, headers: dict
) -> None:
    check(send(site, "GET", f"{path}?{query}", headers=headers))


PARAMETER = st.fixed_dictionaries(
    {"name": st.one_of(SCALARS, st.sampled_from(EXPORT_NAMES))},
    optional={"valueString": SCALARS, "valueReference": json_values(FHIR_KEYS), "valueInstant": SCALARS},
)


@FUZZ
@given(
    path=st.sampled_from(["/$export", "/Patient/$export", "/Group/g/$export"]),
    parameters=st.one_of(
        json_values(FHIR_KEYS), st.lists(st.one_of(PARAMETER, json_values(FHIR_KEYS)), max_size=4)
    ),
)
def test_generated_export_parameters_get_operation_outcomes(
    site: RunningServer, path: str, parameters: Any
) -> None:
    body = {"resourceType": "Parameters", "parameter": parameters}
    request = fhir_json(body)
    check(
        send(
            site,
            "POST",
            path,
            content=request["content"],
            headers={**request["headers"], "Prefer": "respond-async"},
        )
    )


# -- regressions: each was a 500 -----------------------------------------------------------------


@pytest.mark.parametrize(
    "parameters, says",
    [
        (3417034, "Parameters.parameter must be an array"),
        ({"name": "_type"}, "Parameters.parameter must be an array"),
        ([{"name": 5, "valueString": "Patient"}], "needs a name (a string), not 5"),
        ([{"valueString": "Patient"}], "needs a name (a string), not None"),
        (
            [{"name": "patient", "valueReference": "Patient/1"}],
            "patient needs valueReference Patient/[id], not None",
        ),
        (
            [{"name": "patient", "valueReference": {"reference": 5}}],
            "patient needs valueReference Patient/[id], not 5",
        ),
    ],
)
def test_malformed_export_parameters_are_a_400(site: RunningServer, parameters: Any, says: str) -> None:
    request = fhir_json({"resourceType": "Parameters", "parameter": parameters})
    response = send(
        site,
        "POST",
        "/Patient/$export",
        content=request["content"],
        headers={**request["headers"], "Prefer": "respond-async"},
    )
    assert response.status_code == 400, response.text
    assert says in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "request_fields, says",
    [
        ({"method": [], "url": "Patient"}, "Unsupported request.method []"),  # unhashable: a 500
        (
            {"method": "POST", "url": "Patient", "ifNoneExist": 5},
            "request.ifNoneExist must be a string, not 5",
        ),
        (
            {"method": "PUT", "url": "Patient/PATIENT_ID", "ifMatch": {}},
            "request.ifMatch must be a string, not {}",
        ),
        (
            {"method": "GET", "url": "Patient/PATIENT_ID", "ifNoneMatch": True},
            "request.ifNoneMatch must be a string",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_bundle_requests_of_the_wrong_type_are_a_400(
    site: RunningServer, patient_id: str, kind: str, request_fields: dict, says: str
) -> None:
    request = {
        k: v.replace("PATIENT_ID", patient_id) if isinstance(v, str) else v for k, v in request_fields.items()
    }
    entry = {"resource": {"resourceType": "Patient", "id": patient_id}, "request": request}
    response = send(site, "POST", "", **fhir_json({"resourceType": "Bundle", "type": kind, "entry": [entry]}))
    if kind == "transaction":  # all or nothing: the whole bundle is refused
        assert response.status_code == 400, response.text
        outcome = response.json()
    else:  # a batch answers the entry
        assert response.status_code == 200, response.text
        (answer,) = response.json()["entry"]
        assert answer["response"]["status"].startswith("400"), answer
        outcome = answer["response"]["outcome"]
    assert says in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "path, params, status, says",
    [
        # the end of 9999-12-31 (or 9999, or 9999-12) is past datetime.max: OverflowError, a 500
        ("/Patient", {"birthdate": "9999-12-31"}, 200, None),
        ("/Patient", {"birthdate": "sa9999-12-31"}, 200, None),
        ("/Observation", {"date": "9999"}, 200, None),
        ("/Observation", {"date": "9999-12"}, 200, None),
        ("/Patient", {"birthdate": "0000"}, 400, "year 0 does not exist"),
        ("/Observation", {"date": "2026-01-01T00:00:00+99:00"}, 400, "offset"),
        # "\d" read Arabic-Indic digits as 2026 (not a 500, but a date nobody wrote)
        ("/Patient", {"birthdate": "\u0662\u0660\u0662\u0666"}, 400, "is not a FHIR date"),
        # Decimal arithmetic overflowed on the exponent
        ("/Observation", {"value-quantity": "1e999999999"}, 400, "out of range (exponent beyond 400)"),
        ("/Observation", {"value-quantity": "gt0e-999999999"}, 400, "out of range (exponent beyond 400)"),
    ],
)
def test_search_values_at_the_edges_of_dates_and_numbers(
    site: RunningServer, path: str, params: dict, status: int, says: str | None
) -> None:
    response = send(site, "GET", path, params=params)
    assert response.status_code == status, response.text
    if says:
        assert says in response.json()["issue"][0]["diagnostics"]


def test_a_birth_date_in_year_9999_is_stored_and_found(site: RunningServer) -> None:
    patient = {"resourceType": "Patient", "birthDate": "9999-12-31", "name": [{"family": "Farfuture"}]}
    created = send(site, "POST", "/Patient", **fhir_json(patient))
    assert created.status_code == 201, created.text
    found = send(site, "GET", "/Patient", params={"birthdate": "9999-12-31", "family": "Farfuture"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [created.json()["id"]]
