"""The `auth:` section and `clients:` in scenario files: the shipped token-expiry scenario, and
schema errors that name the place and the fix."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simulator.admin_client import AdminClient
from simulator.scenario import ScenarioError, load_scenario, scenario_from_mapping, validate_file
from tests.smart_support import TIMEOUT, auth_scenario, bearer, login, serve_auth


def test_token_expiry_scenario_validates_and_expires_tokens_after_five_minutes() -> None:
    assert validate_file("token-expiry") == []
    with serve_auth(load_scenario("token-expiry")) as server, AdminClient(server.origin) as admin:
        minted = admin.token(client_id="ehrsim-confidential-app", scope="system/Patient.rs")
        assert minted["expires_in"] == 300
        assert (
            httpx.get(server.fhir_base + "/Patient", headers=bearer(minted), timeout=TIMEOUT).status_code
            == 200
        )
        admin.advance("301s")
        assert (
            httpx.get(server.fhir_base + "/Patient", headers=bearer(minted), timeout=TIMEOUT).status_code
            == 401
        )
        assert {c["client_id"] for c in admin.clients()["clients"]} == {
            "ehrsim-public-app",
            "ehrsim-confidential-app",
        }


def test_scenario_clients_can_be_limited_to_sites() -> None:
    scenario = scenario_from_mapping(
        {
            "name": "two",
            "sites": [
                {"id": "a", "auth": {"required": True}},
                {"id": "b", "auth": {"required": True}},
            ],
            "clients": [
                {
                    "client_id": "only-b",
                    "client_secret": "x",
                    "grant_types": ["client_credentials"],
                    "sites": ["b"],
                }
            ],
        }
    )
    with serve_auth(scenario) as server, AdminClient(server.origin) as admin:
        assert admin.clients(site="a")["clients"] == []
        assert [c["client_id"] for c in admin.clients(site="b")["clients"]] == ["only-b"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"auth": {"required": True, "token_lifetime": 5}}, "sites[0].auth: unknown field 'token_lifetime'"),
        (
            {"auth": {"refresh_tokens": {"rotat": True}}},
            "sites[0].auth.refresh_tokens: unknown field 'rotat'",
        ),
        ({"auth": {"forbidden_status": 418}}, "sites[0].auth.forbidden_status"),
        (
            {"auth": {"failures": [{"type": "nope"}]}},
            "sites[0].auth.failures[0]: {'type': 'nope'} is not valid here",
        ),
        ({"auth": {"failures": [{"type": "clock_skew", "minutes": 1}]}}, "clock_skew (seconds)"),
    ],
)
def test_auth_section_schema_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as error:
        scenario_from_mapping({"name": "x", "sites": [{"id": "s", **change}]})
    assert message in str(error.value)


def test_clients_schema_errors() -> None:
    with pytest.raises(ScenarioError, match=r"clients\[0\].token_endpoint_auth_method: 'magic'"):
        scenario_from_mapping(
            {"name": "x", "sites": [{"id": "s"}], "clients": [{"token_endpoint_auth_method": "magic"}]}
        )


def test_auth_settings_ride_on_auth_off_sites_without_effect() -> None:
    scenario = scenario_from_mapping(
        {"name": "x", "sites": [{"id": "s", "base_path": "/fhir", "auth": {"required": False}}]}
    )
    with serve_auth(scenario) as server:
        assert httpx.get(server.fhir_base + "/Patient", timeout=TIMEOUT).status_code == 200
        assert (
            httpx.get(server.fhir_base + "/.well-known/smart-configuration", timeout=TIMEOUT).status_code
            == 404
        )


def test_admin_sites_lists_the_smart_endpoints() -> None:
    with serve_auth(load_scenario("token-expiry")) as server, AdminClient(server.origin) as admin:
        (site,) = admin.sites()
        base = server.fhir_base
        assert site["smart"] == {
            "configuration": base + "/.well-known/smart-configuration",
            "authorize": base + "/auth/authorize",
            "token": base + "/auth/token",
        }


def test_auth_can_be_switched_off_for_a_whole_sandbox() -> None:
    with serve_auth(load_scenario("token-expiry"), options_extra={"auth": "off"}) as server:
        assert httpx.get(server.fhir_base + "/Patient", timeout=TIMEOUT).status_code == 200
        assert "smart" not in httpx.get(server.admin + "/sites", timeout=TIMEOUT).json()[0]


def test_same_scenario_and_requests_give_the_same_tokens() -> None:
    issued = []
    for _ in range(2):
        with (
            serve_auth(auth_scenario()) as server,
            httpx.Client(timeout=TIMEOUT) as http,
            AdminClient(server.origin) as admin,
        ):
            body = login(http, server.fhir_base, "launch/patient offline_access patient/*.rs")
            minted = admin.token()
            # Each server has its own port, so only the URLs (iss, aud) may differ.
            claims = [
                {
                    k: v
                    for k, v in server.sandbox.sites["s"].site.extras["auth"].keys.verify(t).items()
                    if k not in ("iss", "aud")
                }
                for t in (body["access_token"], minted["access_token"])
            ]
            issued.append((claims, body["refresh_token"], body["patient"]))
    assert issued[0] == issued[1]
    assert issued[0][0][0]["jti"] != issued[0][0][1]["jti"]  # and not the same value twice within a run
