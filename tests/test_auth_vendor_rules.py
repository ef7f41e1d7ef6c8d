"""Vendor differences in auth are settings: scope syntax, PKCE, client authentication methods,
backend algorithms and refresh rules, each checked over HTTP."""

from __future__ import annotations

import httpx
import pytest

from simulator.sandbox import Sandbox
from tests.smart_support import (
    CONFIDENTIAL,
    KEYS,
    PUBLIC,
    REDIRECT,
    TIMEOUT,
    assertion,
    auth_scenario,
    authorize_params,
    backend_form,
    get_code,
    login,
    new_key,
    pkce,
    public_jwks,
    redirect_query,
    serve_auth,
    token_request,
)

SYSTEM = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}


def test_v2_only_site_refuses_v1_scopes() -> None:
    with serve_auth(auth_scenario({"scope_syntax": "v2"})) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        params = authorize_params(base, "launch/patient patient/Observation.read", code_challenge=pkce()[1])
        query = redirect_query(http.get(base + "/auth/authorize", params=params))
        assert query["error"] == "invalid_scope" and "v1" in query["error_description"]
        assert (
            login(http, base, "launch/patient patient/Observation.rs")["scope"]
            == "launch/patient patient/Observation.rs"
        )
        v1 = token_request(
            http, base, {**SYSTEM, "scope": "system/Patient.read"}, auth=("confidential-app", "s3cret")
        )
        assert v1.json()["error"] == "invalid_scope"
        capabilities = http.get(base + "/.well-known/smart-configuration").json()["capabilities"]
        assert "permission-v2" in capabilities and "permission-v1" not in capabilities


def test_optional_pkce_lets_only_confidential_clients_skip_it() -> None:
    with serve_auth(auth_scenario({"pkce": "optional"})) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        params = authorize_params(
            base, "launch/patient patient/*.rs", client_id="confidential-app", auto_approve="true"
        )
        code = redirect_query(http.get(base + "/auth/authorize", params=params))["code"]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        assert token_request(http, base, form, auth=("confidential-app", "s3cret")).status_code == 200
        public = authorize_params(base, "launch/patient patient/*.rs", auto_approve="true")
        assert redirect_query(http.get(base + "/auth/authorize", params=public))["error"] == "invalid_request"
        plain = authorize_params(
            base,
            "patient/*.rs",
            client_id="confidential-app",
            code_challenge="x" * 43,
            code_challenge_method="plain",
        )
        assert redirect_query(http.get(base + "/auth/authorize", params=plain))["error"] == "invalid_request"
    with serve_auth(auth_scenario()) as server, httpx.Client(timeout=TIMEOUT) as http:
        params = authorize_params(
            server.fhir_base, "patient/*.rs", client_id="confidential-app", auto_approve="true"
        )
        assert (
            redirect_query(http.get(server.fhir_base + "/auth/authorize", params=params))["error"]
            == "invalid_request"
        )


def test_client_auth_methods_are_enforced() -> None:
    post_only = {**CONFIDENTIAL, "token_endpoint_auth_method": "client_secret_post"}
    with (
        serve_auth(
            auth_scenario({"client_auth": "client_secret_post"}, clients=[PUBLIC, post_only])
        ) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        base = server.fhir_base
        basic = token_request(http, base, SYSTEM, auth=("confidential-app", "s3cret"))
        assert (basic.status_code, basic.json()["error"]) == (401, "invalid_client")
        assert "client_secret_basic is not accepted" in basic.json()["error_description"]
        posted = token_request(
            http, base, {**SYSTEM, "client_id": "confidential-app", "client_secret": "s3cret"}
        )
        assert posted.status_code == 200
        registered = http.post(base + "/auth/register", json={"redirect_uris": [REDIRECT]})
        assert registered.json()["error"] == "invalid_client_metadata"  # defaults to client_secret_basic
        assert login(http, base, "launch/patient patient/*.rs")["access_token"]  # public clients: none
        assert http.get(base + "/.well-known/smart-configuration").json()[
            "token_endpoint_auth_methods_supported"
        ] == ["client_secret_post"]


def test_backend_algorithm_list_is_enforced() -> None:
    es = new_key("ES384")
    backend = {"client_id": "backend", "grant_types": ["client_credentials"], "jwks": public_jwks(es)}
    with (
        serve_auth(auth_scenario({"backend_jwt_alg": "RS384"}, clients=[backend])) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        signed = assertion(es, "ES384", "backend", server.fhir_base + "/auth/token")
        response = token_request(http, server.fhir_base, backend_form(signed))
        assert (
            response.json()["error"] == "invalid_client" and "ES384" in response.json()["error_description"]
        )


def test_no_refresh_tokens_for_public_clients() -> None:
    rules = {"refresh_tokens": {"public_clients": False}}
    with serve_auth(auth_scenario(rules)) as server, httpx.Client(timeout=TIMEOUT) as http:
        base = server.fhir_base
        assert "refresh_token" not in login(http, base, "launch/patient offline_access patient/*.rs")
        code, verifier = get_code(
            http, base, "launch/patient offline_access patient/*.rs", client_id="confidential-app"
        )
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        assert "refresh_token" in token_request(http, base, form, auth=("confidential-app", "s3cret")).json()


def test_bad_vendor_settings_are_refused() -> None:
    for bad, message in (
        ({"pkce": "plain"}, "plain is never allowed"),
        ({"scope_syntax": ["v3"]}, "v1 and/or v2"),
    ):
        with pytest.raises(ValueError, match=message):
            Sandbox(auth_scenario(bad), options={"data_dir": KEYS.name})


def test_epic_advertises_and_grants_v2_scopes_as_its_backend_capture_shows() -> None:
    """The captured Epic backend-services token grants `system/Account.r`-style (v2) scopes."""
    from simulator.testing import serve_in_thread

    with serve_in_thread("epic") as server, httpx.Client(timeout=TIMEOUT) as http:
        capabilities = http.get(server.fhir_base + "/.well-known/smart-configuration").json()["capabilities"]
        assert {"permission-v1", "permission-v2"} <= set(capabilities)
        minted = http.post(server.admin + "/token", json={"site": "epic", "scope": "system/Patient.rs"})
        assert minted.status_code == 200, minted.text
        assert minted.json()["scope"] == "system/Patient.rs"
