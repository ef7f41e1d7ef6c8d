"""Bad input gets a precise OperationOutcome with the right status: never a 500, never a hang."""

from __future__ import annotations

import socket

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import patient


def outcome(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"]
    return body


def test_malformed_json(fhir: httpx.Client) -> None:
    body = outcome(
        fhir.post(
            "/Patient",
            content=b'{"resourceType": "Patient",',
            headers={"content-type": "application/fhir+json"},
        ),
        400,
    )
    assert body["issue"][0]["code"] == "structure"
    outcome(fhir.post("/Patient", content=b"", headers={"content-type": "application/fhir+json"}), 400)
    outcome(fhir.post("/Patient", content=b"[1, 2]", headers={"content-type": "application/fhir+json"}), 400)


def test_invalid_resource_carries_fhirpath_expressions(fhir: httpx.Client) -> None:
    bad = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": 5}]},
        "valueQuantity": {"value": "abc"},
        "unknownThing": 1,
    }
    body = outcome(fhir.post("/Observation", json=bad), 400)
    expressions = {e for issue in body["issue"] for e in issue.get("expression", [])}
    assert {
        "Observation.code.coding[0].system",
        "Observation.valueQuantity.value",
        "Observation.unknownThing",
    } <= expressions
    wrong_type = outcome(fhir.post("/Observation", json=patient()), 400)
    assert wrong_type["issue"][0]["expression"] == ["resourceType"]
    missing = outcome(
        fhir.post("/Observation", json={"resourceType": "Observation", "code": {"text": "x"}}), 400
    )
    assert missing["issue"][0]["expression"] == ["Observation.status"]
    assert missing["issue"][0]["code"] == "required"
    bad_code = outcome(fhir.post("/Patient", json=patient(gender="robot")), 400)
    assert bad_code["issue"][0]["code"] == "code-invalid"


def test_unknown_type_id_and_paths(fhir: httpx.Client) -> None:
    outcome(fhir.get("/Spaceship/1"), 404)
    outcome(fhir.get("/Spaceship"), 404)
    outcome(fhir.get("/Patient/does-not-exist"), 404)
    outcome(fhir.get("/Patient/1/_history/1/extra"), 404)
    outcome(fhir.get("/nothing-here"), 404)
    outcome(httpx.get(str(fhir.base_url).rsplit("/fhir", 1)[0] + "/not-a-site"), 404)


def test_wrong_method_is_405_with_allow(fhir: httpx.Client) -> None:
    response = fhir.patch("/Patient/1", json={})
    outcome(response, 405)
    assert "GET" in response.headers["allow"]
    outcome(fhir.delete("/metadata"), 405)
    outcome(fhir.put("/Patient", json=patient()), 405)  # PUT on a type needs criteria


def test_content_types(fhir: httpx.Client) -> None:
    xml = fhir.post("/Patient", content=b"<Patient/>", headers={"content-type": "application/fhir+xml"})
    assert "XML" in outcome(xml, 415)["issue"][0]["diagnostics"]
    outcome(fhir.post("/Patient", content=b"{}", headers={"content-type": "text/plain"}), 415)
    accepted = fhir.post("/Patient", json=patient(), headers={"content-type": "application/json"})
    assert accepted.status_code == 201
    wants_xml = fhir.get("/metadata", headers={"accept": "application/fhir+xml"})
    assert "XML" in outcome(wants_xml, 406)["issue"][0]["diagnostics"]
    outcome(fhir.get("/metadata", params={"_format": "xml"}), 406)
    assert fhir.get("/metadata", params={"_format": "json"}).status_code == 200
    assert fhir.get("/metadata", headers={"accept": "application/json"}).status_code == 200


def test_body_over_limit_is_413(fhir: httpx.Client, server) -> None:
    limit = next(iter(server.sandbox.sites.values())).site.settings.max_body_bytes
    big = b'{"resourceType":"Patient","text":{"div":"' + b"x" * (limit + 10) + b'"}}'
    outcome(fhir.post("/Patient", content=big, headers={"content-type": "application/fhir+json"}), 413)

    def chunks():
        yield b'{"resourceType":"Patient","x":"'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield b'"}'

    # Without Content-Length (chunked), the limit is enforced while reading.
    outcome(fhir.post("/Patient", content=chunks(), headers={"content-type": "application/fhir+json"}), 413)


def test_deep_nesting_and_bad_unicode(fhir: httpx.Client) -> None:
    deep = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"
    outcome(fhir.post("/Patient", content=deep, headers={"content-type": "application/fhir+json"}), 400)
    bad_utf8 = b'{"resourceType":"Patient","name":[{"family":"\xff\xfe"}]}'
    outcome(fhir.post("/Patient", content=bad_utf8, headers={"content-type": "application/fhir+json"}), 400)
    lone_surrogate = b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}'
    outcome(
        fhir.post("/Patient", content=lone_surrogate, headers={"content-type": "application/fhir+json"}), 400
    )


def test_bad_query_strings(fhir: httpx.Client, server) -> None:
    # Raw bytes on the wire, so no client library tidies them up first.
    for query in (b"family=%ZZ", b"family=%ff%fe", b"&&&=", b"date=ge%00", b"_count=99999999999999999999"):
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"GET /fhir/Patient?" + query + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert status in (200, 400), (query, reply[:300])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
            ),
            max_leaves=20,
        ).map(
            lambda v: (
                httpx.Request(
                    "POST",
                    "http://x",
                    json={
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "x"},
                        "value": v,
                    },
                ).content
            )
        ),
    )
)
def test_fuzzed_bodies_never_500(fhir: httpx.Client, body: bytes) -> None:
    response = fhir.post("/Observation", content=body, headers={"content-type": "application/fhir+json"})
    assert response.status_code in (201, 400), response.text
    assert response.json()["resourceType"] in ("Observation", "OperationOutcome")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(
        [
            "code",
            "date",
            "patient",
            "value-quantity",
            "family",
            "_sort",
            "_include",
            "_count",
            "subject:Patient.name",
            "code:not",
            "_has:Observation:patient:code",
            "_elements",
            "x",
        ]
    ),
    value=st.text(max_size=30),
)
def test_fuzzed_queries_never_500(fhir: httpx.Client, name: str, value: str) -> None:
    path = "/Patient" if name in ("family",) else "/Observation"
    response = fhir.get(path, params={name: value})
    assert response.status_code in (200, 400), response.text


@pytest.mark.parametrize("value", ["NAN", "inf", "-Infinity", "gtsNaN", "NaN|http://unitsofmeasure.org|mg"])
def test_non_finite_numbers_in_searches_are_a_400(fhir: httpx.Client, value: str) -> None:
    response = fhir.get("/Observation", params={"value-quantity": value})
    assert response.status_code == 400, response.text
    assert "is not a number" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", ["/Patient/../../etc/passwd", "/Patient/%2e%2e", "/Patient/a%00b"])
def test_odd_paths(fhir: httpx.Client, path: str) -> None:
    response = fhir.get(path)
    assert response.status_code in (400, 404)
    assert response.json()["resourceType"] == "OperationOutcome"


# "²" and ARABIC-INDIC DIGIT ONE pass str.isdigit(); int() refuses the first and reads the second as 1.
@pytest.mark.parametrize("digits", ["\u00b2", "\u0661", "\u0663\u0660"])
def test_non_ascii_digits_are_not_numbers(fhir: httpx.Client, server, digits: str) -> None:
    for path, params in (
        ("/Observation", {"_count": digits}),
        ("/Patient/_history", {"_count": digits}),
        ("/Observation", {"_getpages": "x", "_getpagesoffset": digits}),
    ):
        response = fhir.get(path, params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert "non-negative integer" in response.json()["issue"][0]["diagnostics"]
    patient_id = fhir.get("/Patient", params={"_count": 1}).json()["entry"][0]["resource"]["id"]
    assert fhir.get(f"/Patient/{patient_id}/_history/{digits}").status_code == 404
    everything = fhir.get(f"/Patient/{patient_id}/$everything", params={"_count": digits})
    assert everything.status_code == 400, everything.text  # was silently ignored
    assert "non-negative integer" in everything.json()["issue"][0]["diagnostics"]
    admin = server.admin
    for params in ({"after": digits}, {"offset": digits}, {"limit": digits}):
        response = httpx.get(admin + "/journal", params=params)
        assert response.status_code == 400 and "non-negative integer" in response.json()["message"], params


@pytest.mark.parametrize("status", ["\u00b2", "\u0664\u0662\u0669"])
def test_journal_verification_refuses_non_ascii_status_digits(server, status: str) -> None:
    response = httpx.post(
        server.admin + "/journal/verify", json={"check": "count", "filter": {"status": status}}
    )
    assert response.status_code == 400, response.text
    assert f"status: '{status}' is not a status code" in response.json()["message"]
