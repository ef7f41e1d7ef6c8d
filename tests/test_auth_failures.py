"""Injectable auth failures: each one, configured as data, gives the spec's OAuth error (or the
FHIR 401) with the right status, and only where and for whom it is configured."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from simulator.sandbox import Sandbox
from tests.smart_support import (
    KEYS,
    TIMEOUT,
    assertion,
    auth_scenario,
    authorize_params,
    backend_form,
    bearer,
    login,
    new_key,
    pkce,
    public_jwks,
    redirect_query,
    serve_auth,
    token_request,
)

SECRET = ("confidential-app", "s3cret")
SYSTEM = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}


def failing(*failures: dict[str, Any], **auth: Any) -> Any:
    return serve_auth(auth_scenario({"failures": list(failures), **auth}))


def test_invalid_client_id() -> None:
    with failing({"type": "invalid_client_id"}) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        page = http.get(
            base + "/auth/authorize", params=authorize_params(base, "patient/*.rs", code_challenge=pkce()[1])
        )
        assert (page.status_code, page.json()["error"]) == (400, "invalid_client")
        token = token_request(http, base, SYSTEM, auth=SECRET)
        assert (token.status_code, token.json()["error"]) == (401, "invalid_client")


def test_invalid_redirect_uri() -> None:
    with failing({"type": "invalid_redirect_uri"}) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        response = http.get(
            base + "/auth/authorize", params=authorize_params(base, "patient/*.rs", code_challenge=pkce()[1])
        )
        assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
        assert "redirect_uri" in response.json()["error_description"] and "location" not in response.headers


def test_invalid_scope() -> None:
    with failing({"type": "invalid_scope"}) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        query = redirect_query(
            http.get(
                base + "/auth/authorize",
                params=authorize_params(base, "patient/*.rs", code_challenge=pkce()[1]),
            )
        )
        assert query["error"] == "invalid_scope"
        token = token_request(http, base, SYSTEM, auth=SECRET)
        assert (token.status_code, token.json()["error"]) == (400, "invalid_scope")


def test_invalid_client_secret() -> None:
    with failing({"type": "invalid_client_secret"}) as server, httpx.Client(timeout=TIMEOUT) as http:
        response = token_request(http, server.fhir_base, SYSTEM, auth=SECRET)
        assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


def test_invalid_jti() -> None:
    key = new_key("ES384")
    backend = {"client_id": "backend", "grant_types": ["client_credentials"], "jwks": public_jwks(key)}
    scenario = auth_scenario({"failures": [{"type": "invalid_jti"}]}, clients=[backend])
    with serve_auth(scenario) as server, httpx.Client(timeout=TIMEOUT) as http:
        signed = assertion(key, "ES384", "backend", server.fhir_base + "/auth/token")
        response = token_request(http, server.fhir_base, backend_form(signed))
        assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
        assert "jti" in response.json()["error_description"]


def test_expired_refresh_token() -> None:
    with failing({"type": "expired_refresh_token"}) as server, httpx.Client(timeout=TIMEOUT) as http:
        body = login(http, server.fhir_base, "launch/patient offline_access patient/*.rs")
        form = {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": "public-app",
        }
        response = token_request(http, server.fhir_base, form)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
        assert "expired" in response.json()["error_description"]


def test_refresh_tokens_expire_on_the_simulated_clock() -> None:
    with (
        serve_auth(auth_scenario({"refresh_tokens": {"lifetime": 600}})) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        body = login(http, server.fhir_base, "launch/patient offline_access patient/*.rs")
        server.sandbox.clock.advance(601)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": "public-app",
        }
        assert token_request(http, server.fhir_base, form).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("rotate", [True, False])
def test_refresh_token_revoked_after_n_uses(rotate: bool) -> None:
    scenario = auth_scenario(
        {
            "refresh_tokens": {"rotate": rotate},
            "failures": [{"type": "refresh_token_revoked_after", "uses": 2}],
        }
    )
    with serve_auth(scenario) as server, httpx.Client(timeout=TIMEOUT) as http:
        refresh = login(http, server.fhir_base, "launch/patient offline_access patient/*.rs")["refresh_token"]
        for _ in range(2):
            form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "public-app"}
            response = token_request(http, server.fhir_base, form)
            assert response.status_code == 200
            assert ("refresh_token" in response.json()) is rotate  # Oracle Health-style: no rotation
            refresh = response.json().get("refresh_token", refresh)
        form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "public-app"}
        third = token_request(http, server.fhir_base, form)
        assert (third.status_code, third.json()["error"]) == (400, "invalid_grant")
        assert "revoked" in third.json()["error_description"]


def test_token_endpoint_outage() -> None:
    with (
        failing({"type": "token_endpoint_outage", "retry_after": 12, "hang": 0.2}) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        started = time.monotonic()
        response = token_request(http, server.fhir_base, SYSTEM, auth=SECRET)
        assert time.monotonic() - started >= 0.2
        assert (response.status_code, response.json()["error"]) == (503, "temporarily_unavailable")
        assert response.headers["retry-after"] == "12"
        # Only the token endpoint is down: discovery still answers.
        assert http.get(server.fhir_base + "/.well-known/smart-configuration").status_code == 200


def test_slow_token_endpoint() -> None:
    with (
        failing({"type": "slow_token_endpoint", "delay": 0.3}) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        started = time.monotonic()
        response = token_request(http, server.fhir_base, SYSTEM, auth=SECRET)
        assert time.monotonic() - started >= 0.3
        assert response.status_code == 200


def test_narrower_scopes_are_granted_and_enforced() -> None:
    with failing({"type": "narrower_scopes"}) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        body = login(http, base, "launch/patient offline_access patient/*.cruds patient/Observation.rs")
        assert body["scope"] == "launch/patient patient/Observation.rs"
        assert "refresh_token" not in body
        assert http.get(base + "/Observation", headers=bearer(body)).status_code == 200
        assert http.get(base + "/Condition", headers=bearer(body)).status_code == 403
    with (
        failing({"type": "narrower_scopes", "drop": ["patient/Condition.rs"]}) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        body = login(http, server.fhir_base, "launch/patient patient/Condition.rs patient/Patient.rs")
        assert body["scope"] == "launch/patient patient/Patient.rs"


def test_missing_patient_context() -> None:
    with failing({"type": "missing_patient_context"}) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        body = login(http, base, "launch/patient patient/*.rs")
        assert "patient" not in body
        # The token is still bound to the patient that was picked.
        assert http.get(base + "/Patient", headers=bearer(body)).json()["total"] == 1


def test_clock_skew_issues_tokens_from_the_future() -> None:
    with failing({"type": "clock_skew", "seconds": 900}) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        body = login(http, base, "launch/patient openid fhirUser patient/*.rs")
        now = server.sandbox.clock.timestamp()
        info = http.post(base + "/auth/introspect", data={"token": body["access_token"]}, auth=SECRET).json()
        assert info["iat"] == int(now + 900)
        from joserfc import jwt
        from joserfc.jwk import KeySet

        keys = KeySet.import_key_set(http.get(base + "/auth/jwks").json())
        assert jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims["iat"] == int(now + 900)
        assert jwt.decode(body["access_token"], keys, algorithms=["RS384"]).claims["iat"] == int(now + 900)


@pytest.mark.parametrize(
    ("kind", "code"), [("invalid_token", "invalid"), ("expired_access_token", "expired")]
)
def test_resource_server_token_failures(kind: str, code: str) -> None:
    with failing({"type": kind}) as server, httpx.Client(timeout=TIMEOUT) as http:
        body = login(http, server.fhir_base, "launch/patient patient/*.rs")
        response = http.get(server.fhir_base + "/Patient", headers=bearer(body))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert response.json()["issue"][0]["code"] == code


def test_a_failure_limited_to_one_client_spares_the_others() -> None:
    with (
        failing({"type": "invalid_token", "client_id": "public-app"}) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        base = server.fhir_base
        public = login(http, base, "launch/patient patient/*.rs")
        assert http.get(base + "/Patient", headers=bearer(public)).status_code == 401
        system = token_request(http, base, SYSTEM, auth=SECRET).json()
        assert http.get(base + "/Patient", headers=bearer(system)).status_code == 200


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ({"type": "nonsense"}, "unknown auth failure 'nonsense'"),
        ({"type": "clock_skew", "minutes": 5}, "'clock_skew' takes no minutes"),
        ({"delay": 1}, "needs|a mapping with a 'type'"),
    ],
)
def test_bad_failure_configuration_is_refused_with_its_place(failure: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sandbox(auth_scenario({"failures": [failure]}), options={"data_dir": KEYS.name})


def test_bad_auth_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown auth settings: token_lifetime"):
        Sandbox(auth_scenario({"token_lifetime": 5}), options={"data_dir": KEYS.name})
    with pytest.raises(ValueError, match=r"client 0 .*invalid_redirect_uri"):
        Sandbox(auth_scenario(clients=[{"redirect_uris": ["no"]}]), options={"data_dir": KEYS.name})
