"""Auth failures injected through the scenario fault engine (`faults:` with auth actions): windows,
counts and client matching come from the engine; the auth layer applies the action; the journal
records the fault and the client."""

from __future__ import annotations

from typing import Any

import httpx

from simulator.admin_client import AdminClient
from simulator.scenario import build_scenario
from tests.smart_support import CLIENTS, TIMEOUT, bearer, login, serve_auth, token_request

SECRET = ("confidential-app", "s3cret")
SYSTEM = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}


def with_faults(*faults: dict[str, Any]) -> Any:
    return build_scenario(
        {
            "name": "auth-faults",
            "seed": 11,
            "clock": {"start": "2026-03-01T08:00:00Z", "speed": 0},
            "sites": [
                {"id": "s", "base_path": "/fhir", "population": {"patients": 2}, "auth": {"required": True}}
            ],
            "clients": CLIENTS,
            "faults": list(faults),
        }
    )


def test_token_endpoint_outage_for_two_requests_then_recovery() -> None:
    fault = {
        "id": "token-down",
        "match": {"protocol": "auth", "path": "/auth/token"},
        "schedule": {"times": 2},
        "action": {"type": "token_endpoint_outage", "retry_after": 7},
    }
    with serve_auth(with_faults(fault)) as server, httpx.Client(timeout=TIMEOUT) as http:
        for _ in range(2):
            down = token_request(http, server.fhir_base, SYSTEM, auth=SECRET)
            assert (down.status_code, down.json()["error"], down.headers["retry-after"]) == (
                503,
                "temporarily_unavailable",
                "7",
            )
        up = token_request(http, server.fhir_base, SYSTEM, auth=SECRET)
        assert up.status_code == 200
        # Discovery is protocol auth too, but not the token path: untouched.
        assert http.get(server.fhir_base + "/.well-known/smart-configuration").status_code == 200
        with AdminClient(server.origin) as admin:
            hit = admin.journal(fault="token-down")
            assert len(hit) == 2
            assert {(e["protocol"], e["path"], e["status"], e["client_id"]) for e in hit} == {
                ("auth", "/auth/token", 503, "confidential-app")
            }


def test_expired_access_tokens_in_a_simulated_time_window() -> None:
    fault = {
        "id": "expiry-storm",
        "match": {"protocol": "fhir"},
        "schedule": {"after": "10m", "for": "5m"},
        "action": {"type": "expired_access_token"},
    }
    with serve_auth(with_faults(fault)) as server, httpx.Client(timeout=TIMEOUT) as http:
        body = login(http, server.fhir_base, "launch/patient patient/*.rs")
        assert http.get(server.fhir_base + "/Patient", headers=bearer(body)).status_code == 200
        server.sandbox.clock.advance(11 * 60)
        inside = http.get(server.fhir_base + "/Patient", headers=bearer(body))
        assert inside.status_code == 401 and "expired" in inside.headers["www-authenticate"]
        server.sandbox.clock.advance(5 * 60)
        assert http.get(server.fhir_base + "/Patient", headers=bearer(body)).status_code == 200
        with AdminClient(server.origin) as admin:
            (entry,) = admin.journal(fault="expiry-storm")
            assert (entry["status"], entry["client_id"]) == (401, "public-app")


def test_a_fault_matched_on_one_client() -> None:
    fault = {
        "id": "bad-secret",
        "match": {"protocol": "auth", "client_id": "confidential-app"},
        "action": {"type": "invalid_client_secret"},
    }
    with serve_auth(with_faults(fault)) as server, httpx.Client(timeout=TIMEOUT) as http:
        refused = token_request(http, server.fhir_base, SYSTEM, auth=SECRET)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
        # Another client's login goes through.
        assert login(http, server.fhir_base, "launch/patient patient/*.rs")["access_token"]


def test_faults_added_at_runtime_through_the_admin_api() -> None:
    with (
        serve_auth(with_faults()) as server,
        httpx.Client(timeout=TIMEOUT) as http,
        AdminClient(server.origin) as admin,
    ):
        admin.add_fault(
            {
                "id": "no-context",
                "match": {"protocol": "auth", "path": "/auth/token"},
                "action": {"type": "missing_patient_context"},
            }
        )
        body = login(http, server.fhir_base, "launch/patient patient/*.rs")
        assert "patient" not in body
        admin.disable_fault("no-context")
        assert "patient" in login(http, server.fhir_base, "launch/patient patient/*.rs")


def test_journal_names_the_client_of_form_posted_token_requests() -> None:
    with (
        serve_auth(with_faults()) as server,
        httpx.Client(timeout=TIMEOUT) as http,
        AdminClient(server.origin) as admin,
    ):
        body = login(http, server.fhir_base, "launch/patient patient/*.rs")  # public: client_id in the form
        http.get(server.fhir_base + "/Patient", headers=bearer(body))
        entries = admin.journal(client_id="public-app")
        paths = [(e["protocol"], e["path"]) for e in entries]
        assert ("auth", "/auth/authorize") in paths
        assert ("auth", "/auth/token") in paths
        assert ("fhir", "/Patient") in paths
