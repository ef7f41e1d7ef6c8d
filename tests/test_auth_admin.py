"""The admin API's SMART routes (`/_admin/clients`, `/_admin/token`) and `ehrsim token`, against a
real server; the CLI runs as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulator.admin_client import AdminClient, AdminError
from simulator.scenario import load_scenario
from simulator.testing import RunningServer
from tests.smart_support import REDIRECT, TIMEOUT, bearer, serve_auth

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def admin(smart: RunningServer) -> Iterator[AdminClient]:
    with AdminClient(smart.origin) as client:
        yield client


def patient_count(server: RunningServer) -> int:
    return len(server.sandbox.sites["s"].site.store.current("Patient"))


def test_clients_lists_and_registers(smart: RunningServer, admin: AdminClient) -> None:
    listed = admin.clients()
    assert listed["site"] == "s"
    assert [c["client_id"] for c in listed["clients"]][:2] == ["public-app", "confidential-app"]
    made = admin.register_client(
        {"client_id": "ci-bot", "client_secret": "ci", "grant_types": ["client_credentials"]}
    )
    assert (made["client_id"], made["client_secret"], made["site"]) == ("ci-bot", "ci", "s")
    token = httpx.post(
        smart.fhir_base + "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
        auth=("ci-bot", "ci"),
        timeout=TIMEOUT,
    )
    assert token.status_code == 200
    with pytest.raises(AdminError) as duplicate:
        admin.register_client(
            {"client_id": "ci-bot", "grant_types": ["client_credentials"], "client_secret": "x"}
        )
    assert (duplicate.value.status, duplicate.value.error) == (400, "invalid_client_metadata")
    with pytest.raises(AdminError) as bad:
        admin.register_client({"redirect_uris": ["nope"]})
    assert bad.value.error == "invalid_redirect_uri"


def test_token_defaults_to_the_first_client_and_its_scopes(smart: RunningServer, admin: AdminClient) -> None:
    minted = admin.token()
    assert minted["client_id"] == "public-app"
    assert minted["scope"] == "openid fhirUser user/*.cruds"
    assert minted["token_type"] == "Bearer" and minted["expires_in"] == 3600
    response = httpx.get(smart.fhir_base + "/Patient", headers=bearer(minted), timeout=TIMEOUT)
    assert response.json()["total"] == patient_count(smart)


def test_token_with_client_scope_and_patient(smart: RunningServer, admin: AdminClient) -> None:
    first = next(iter(smart.sandbox.sites["s"].site.store.current("Patient")))
    minted = admin.token(client_id="public-app", scope="launch/patient patient/*.rs")
    assert minted["patient"] == first
    patients = list(smart.sandbox.sites["s"].site.store.current("Patient"))
    chosen = admin.token(scope="launch/patient patient/*.rs", patient=patients[-1])
    search = httpx.get(smart.fhir_base + "/Patient", headers=bearer(chosen), timeout=TIMEOUT).json()
    assert [e["resource"]["id"] for e in search["entry"]] == [patients[-1]]
    system = admin.token(client_id="confidential-app", scope="system/Observation.rs")
    assert (
        httpx.get(
            smart.fhir_base + "/Observation?_count=1", headers=bearer(system), timeout=TIMEOUT
        ).status_code
        == 200
    )
    assert httpx.get(smart.fhir_base + "/Patient", headers=bearer(system), timeout=TIMEOUT).status_code == 403


@pytest.mark.parametrize(
    ("request_body", "status", "error"),
    [
        ({"site": "nowhere"}, 404, "not_found"),
        ({"client_id": "nobody"}, 404, "not_found"),
        ({"scope": "patient/Observation.zz"}, 400, "invalid_scope"),
        ({"scope": "launch/patient patient/*.rs", "patient": "no-such-patient"}, 400, "invalid_request"),
    ],
)
def test_token_errors(admin: AdminClient, request_body: dict, status: int, error: str) -> None:
    with pytest.raises(AdminError) as failure:
        admin.token(**request_body)
    assert (failure.value.status, failure.value.error) == (status, error)


def test_token_rejects_a_non_object_body(smart: RunningServer) -> None:
    response = httpx.post(
        smart.admin + "/token",
        content=b"[1, 2]",
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    garbled = httpx.post(
        smart.admin + "/token", content=b"{", headers={"Content-Type": "application/json"}, timeout=TIMEOUT
    )
    assert garbled.status_code == 400


def test_token_on_a_scenario_without_auth(server: RunningServer) -> None:
    response = httpx.post(server.admin + "/token", json={}, timeout=TIMEOUT)
    assert (response.status_code, response.json()["error"]) == (409, "auth_off")
    assert httpx.get(server.admin + "/clients", timeout=TIMEOUT).status_code == 409


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", "token", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_prints_the_bare_token_last(smart: RunningServer) -> None:
    result = run_cli("--server", smart.origin, "--scope", "launch/patient", "patient/*.rs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "scope launch/patient patient/*.rs" in lines[0] and "patient" in lines[0]
    search = httpx.get(smart.fhir_base + "/Patient", headers=bearer(lines[-1]), timeout=TIMEOUT).json()
    assert search["total"] == 1
    system = run_cli(
        "--server", smart.origin, "--site", "s", "--client", "confidential-app", "--scope", "system/*.rs"
    )
    assert system.returncode == 0
    assert (
        httpx.get(
            smart.fhir_base + "/Encounter", headers=bearer(system.stdout.splitlines()[-1]), timeout=TIMEOUT
        ).status_code
        == 200
    )


def test_cli_errors_exit_1_with_the_reason(server: RunningServer) -> None:
    off = run_cli("--server", server.origin)
    assert off.returncode == 1 and "auth_off" in off.stderr
    down = run_cli("--server", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_registered_client_metadata_round_trips(smart: RunningServer, admin: AdminClient) -> None:
    made = admin.register_client(
        {"client_name": "picker app", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    )
    listed = {c["client_id"]: c for c in admin.clients(site="s")["clients"]}
    assert listed[made["client_id"]]["client_name"] == "picker app"
    assert "client_secret" not in listed[made["client_id"]]


@pytest.mark.parametrize(
    ("vendor", "everything"), [("epic", "user/*.cruds"), ("oracle-health", "user/*.cruds")]
)
def test_token_on_a_site_without_clients_uses_an_admin_client(vendor: str, everything: str) -> None:
    with serve_auth(load_scenario(vendor)) as server, AdminClient(server.origin) as admin:
        minted = admin.token()
        assert minted["client_id"] == "ehrsim-admin"
        assert minted["scope"] == f"openid fhirUser {everything}"  # in the syntax the site accepts
        site = next(iter(server.sandbox.sites.values())).site
        patient = next(iter(site.store.current("Patient")))
        read = httpx.get(f"{server.fhir_base}/Patient/{patient}", headers=bearer(minted), timeout=TIMEOUT)
        assert read.status_code == 200
        assert httpx.get(f"{server.fhir_base}/Patient/{patient}", timeout=TIMEOUT).status_code == 401


def test_reset_forgets_runtime_clients_and_tokens_and_starts_over() -> None:
    """`/_admin/reset` puts auth back to the scenario's start too: a test that registers a client
    or holds a token cannot leak it into the next one, and token values repeat (determinism)."""
    with serve_auth() as server, AdminClient(server.origin) as admin:
        first = admin.token()["access_token"]
        admin.register_client(
            {"client_id": "ci-bot", "client_secret": "ci", "grant_types": ["client_credentials"]}
        )
        patients = server.fhir_base + "/Patient"
        assert httpx.get(patients, headers=bearer(first), timeout=TIMEOUT).status_code == 200
        admin.reset()
        dead = httpx.get(patients, headers=bearer(first), timeout=TIMEOUT)
        assert dead.status_code == 401  # the token died with the reset
        assert "ci-bot" not in [c["client_id"] for c in admin.clients()["clients"]]
        refused = httpx.post(
            server.fhir_base + "/auth/token",
            data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
            auth=("ci-bot", "ci"),
            timeout=TIMEOUT,
        )
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
        assert admin.token()["access_token"] == first  # the same sequence as after start
