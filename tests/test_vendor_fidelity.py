"""The fidelity check: every real vendor capture replayed against ehrsim's vendor site must match.

The per-vendor counts are printed by `test_fidelity_report` (run with -s) and by
`python -m simulator.vendors.fidelity`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.testing import RunningServer, serve_in_thread
from simulator.vendors import fidelity
from simulator.vendors.fidelity import NO_AUTH
from simulator.vendors.layers import vendor_quirks

CAPTURES = fidelity.load_captures()
CAPTURE_DIR = Path(__file__).parent / "fixtures" / "vendor-captures"


@pytest.fixture(scope="module")
def vendor_servers() -> Iterator[dict[str, RunningServer]]:
    with (
        serve_in_thread("epic", options=NO_AUTH) as epic,
        serve_in_thread("oracle-health", options=NO_AUTH) as oracle,
        serve_in_thread("meditech", options=NO_AUTH) as meditech,
    ):
        yield {"epic": epic, "oracle-health": oracle, "meditech": meditech}


def test_every_vendor_has_captures() -> None:
    assert {c.vendor for c in CAPTURES} == set(fidelity.VENDORS)
    assert len(CAPTURES) == 17


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda c: f"{c.vendor}/{c.name}")
def test_capture_replays_identically(capture: fidelity.Capture, vendor_servers) -> None:
    server = vendor_servers[capture.vendor]
    with httpx.Client(timeout=30) as client:
        verdict = fidelity.replay(client, server.fhir_base, capture)
    assert verdict.differences == [], f"{capture.vendor}/{capture.name}: {verdict.differences}"


def test_fidelity_report(vendor_servers, capsys) -> None:
    verdicts = []
    with httpx.Client(timeout=30) as client:
        for capture in CAPTURES:
            verdicts.append(fidelity.replay(client, vendor_servers[capture.vendor].fhir_base, capture))
    text = fidelity.report(verdicts)
    with capsys.disabled():
        print("\n" + text)
    assert text.splitlines() == [
        "epic: 7/7 captures match",
        "oracle-health: 6/6 captures match",
        "meditech: 4/4 captures match",
    ]


def test_compare_notices_each_kind_of_difference() -> None:
    """The comparator is not a rubber stamp: each aspect it checks can fail."""
    vitals = next(c for c in CAPTURES if c.vendor == "oracle-health" and "vital" in c.name)
    base = fidelity.vendor_base(vitals)
    same = json.loads(json.dumps(vitals.body))
    assert fidelity.compare(vitals, 200, same, base, base) == []
    assert fidelity.compare(vitals, 400, same, base, base) == ["status 400, vendor 200"]
    with_total = {**same, "total": 50}
    assert fidelity.compare(vitals, 200, with_total, base, base) == ["total present, vendor the opposite"]
    renumbered = json.loads(json.dumps(same))
    for entry in renumbered["entry"]:
        entry["resource"]["id"] = "5d1b1f0e-7a3c-4c47-9d8a-0d5e4b3f2a11"
    assert "id formats ['uuid']" in fidelity.compare(vitals, 200, renumbered, base, base)[0]
    loinc_only = json.loads(json.dumps(same))
    for entry in loinc_only["entry"]:
        code = entry["resource"]["code"]
        code["coding"] = [c for c in code["coding"] if c["system"] == "http://loinc.org"]
    assert fidelity.compare(vitals, 200, loinc_only, base, base)[0].startswith("vendor code systems missing")
    unpaged = {**same, "link": [link for link in same["link"] if link["relation"] == "self"]}
    assert fidelity.compare(vitals, 200, unpaged, base, base) == [
        "link relations ['self'], vendor ['next', 'self']"
    ]


def test_id_classes() -> None:
    assert fidelity.id_class("9bec5771-4796-5189-a54e-352c571a44c8") == "uuid"
    assert fidelity.id_class("VS.614e0902-b440-5057-a564-f3a37f97d938") == "VS.uuid"
    assert fidelity.id_class("12724066") == "numeric"
    assert fidelity.id_class("BP-209016066-209016068") == "BP-numeric"
    assert fidelity.id_class("eq081-VQEgP8drUUqCWzHfw3") == "opaque24"


class _Unauthorized:
    """Stands in for the auth layer (issue 5, not merged yet): refuses every request with 401."""

    def __init__(self, app: ASGIApp, *_: object) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"login","diagnostics":"no token"}]}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/fhir+json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def test_meditech_unauthorised_read_is_the_capture_envelope() -> None:
    """The capture has no request line: a Patient read without a token. The vendor layer turns the
    auth layer's 401 into MEDITECH's envelope, byte for byte."""
    expected = json.loads((CAPTURE_DIR / "meditech" / "error-unauth-patient-read.json").read_text())
    with serve_in_thread("meditech", layers=[vendor_quirks, _Unauthorized]) as server:
        response = httpx.get(server.fhir_base + "/Patient/9bec5771-4796-5189-a54e-352c571a44c8")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == expected


def test_epic_unauthorised_is_an_empty_json_string_with_invalid_token() -> None:
    """Epic's 401 (captured in us-core-deviations.json transport_findings): body `""`, JSON, and a
    WWW-Authenticate naming invalid_token."""
    with serve_in_thread("epic", layers=[vendor_quirks, _Unauthorized]) as server:
        response = httpx.get(server.fhir_base + "/Patient/eq081-VQEgP8drUUqCWzHfw3")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.content == b'""'
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="The access token provided is not valid"'
    )
