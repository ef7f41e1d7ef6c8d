"""SMART App Launch and backend services, end to end over HTTP: discovery, the authorization code
flow with PKCE through the login and patient-picker pages, EHR launch, refresh, client secrets,
private_key_jwt, introspection, revocation and dynamic registration, with their negative cases."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from simulator.admin_client import AdminClient, AdminError
from simulator.testing import RunningServer
from tests.smart_support import (
    REDIRECT,
    TIMEOUT,
    assertion,
    authorize_params,
    backend_form,
    bearer,
    form_value,
    get_code,
    login,
    new_key,
    pkce,
    public_jwks,
    redirect_query,
    serve_auth,
    token_request,
)


def patients(server: RunningServer) -> list[str]:
    return list(server.sandbox.sites["s"].site.store.current("Patient"))


def code_form(code: str, verifier: str, client_id: str = "public-app") -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": client_id,
    }


# -- discovery ------------------------------------------------------------------------------------
def test_smart_configuration_is_json_with_every_endpoint(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    response = http.get(base + "/.well-known/smart-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    for key in ("authorization", "token", "introspection", "revocation", "registration"):
        assert doc[f"{key}_endpoint"].startswith(base + "/auth/")
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
    assert "launch-ehr" in doc["capabilities"] and "permission-v2" in doc["capabilities"]
    assert "patient/*.rs" in doc["scopes_supported"]
    keys = http.get(doc["jwks_uri"]).json()["keys"]
    assert {k["alg"] for k in keys} == {"RS256", "RS384", "ES384"}
    assert all("d" not in k for k in keys)  # public halves only


def test_capability_statement_advertises_oauth_uris(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    metadata = http.get(base + "/metadata")
    assert metadata.status_code == 200  # public: no token needed
    security = metadata.json()["rest"][0]["security"]
    (ext,) = [e for e in security["extension"] if e["url"].endswith("/oauth-uris")]
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    doc = http.get(base + "/.well-known/smart-configuration").json()
    assert uris["authorize"] == doc["authorization_endpoint"]
    assert uris["token"] == doc["token_endpoint"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


def test_auth_is_off_in_the_default_scenario(server: RunningServer) -> None:
    assert httpx.get(server.fhir_base + "/Patient", timeout=TIMEOUT).status_code == 200
    assert (
        httpx.get(server.fhir_base + "/.well-known/smart-configuration", timeout=TIMEOUT).status_code == 404
    )
    assert "security" not in httpx.get(server.fhir_base + "/metadata", timeout=TIMEOUT).json()["rest"][0]


# -- authorization code + PKCE, standalone --------------------------------------------------------
def test_standalone_launch_picks_a_patient_on_the_page(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    chosen = patients(smart)[1]
    verifier, challenge = pkce()
    params = authorize_params(
        base, "launch/patient openid fhirUser offline_access patient/*.rs", code_challenge=challenge
    )
    page = http.get(base + "/auth/authorize", params=params)
    assert page.status_code == 200 and "Choose a patient" in page.text
    assert set(form_value(page.text, "patient")) == set(patients(smart))
    users = form_value(page.text, "user")
    assert users and users[0].startswith("Practitioner/")
    decision = http.post(
        base + "/auth/authorize/decision",
        data={
            "txn": form_value(page.text, "txn")[0],
            "patient": chosen,
            "user": users[0],
            "decision": "approve",
        },
    )
    query = redirect_query(decision)
    assert query["state"] == params["state"]
    response = token_request(http, base, code_form(query["code"], verifier))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["patient"] == chosen
    assert body["expires_in"] == 3600
    assert set(body["scope"].split()) == {
        "launch/patient",
        "openid",
        "fhirUser",
        "offline_access",
        "patient/*.rs",
    }
    assert body["refresh_token"]
    keys = KeySet.import_key_set(http.get(base + "/auth/jwks").json())
    id_token = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    assert id_token["aud"] == "public-app"
    assert id_token["fhirUser"] == f"{base}/{users[0]}"
    assert id_token["iss"] == base
    own = http.get(f"{base}/Patient/{chosen}", headers=bearer(body))
    assert own.status_code == 200


def test_picker_rejects_a_patient_that_does_not_exist(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    _, challenge = pkce()
    page = http.get(
        base + "/auth/authorize",
        params=authorize_params(base, "launch/patient patient/*.rs", code_challenge=challenge),
    )
    txn = form_value(page.text, "txn")[0]
    again = http.post(
        base + "/auth/authorize/decision", data={"txn": txn, "patient": "nope", "decision": "approve"}
    )
    assert again.status_code == 400 and "Choose a patient" in again.text


def test_deny_redirects_with_access_denied(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    _, challenge = pkce()
    page = http.get(
        base + "/auth/authorize",
        params=authorize_params(base, "launch/patient patient/*.rs", code_challenge=challenge),
    )
    txn = form_value(page.text, "txn")[0]
    query = redirect_query(
        http.post(base + "/auth/authorize/decision", data={"txn": txn, "decision": "deny"})
    )
    assert query["error"] == "access_denied"
    replay = http.post(base + "/auth/authorize/decision", data={"txn": txn, "decision": "approve"})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_request"


def test_auto_approve_skips_the_page(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    verifier, challenge = pkce()
    wanted = patients(smart)[2]
    params = authorize_params(
        base, "launch/patient patient/*.rs", code_challenge=challenge, auto_approve="true", patient=wanted
    )
    query = redirect_query(http.get(base + "/auth/authorize", params=params))
    body = token_request(http, base, code_form(query["code"], verifier)).json()
    assert body["patient"] == wanted
    assert "refresh_token" not in body  # no offline_access asked for


def test_ehr_launch_carries_patient_encounter_and_user(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    store = smart.sandbox.sites["s"].site.store
    encounter = next(iter(store.current("Encounter").values())).resource
    patient = encounter["subject"]["reference"].split("/")[1]
    practitioner = f"Practitioner/{next(iter(store.current('Practitioner')))}"
    with AdminClient(smart.origin) as admin:
        started = admin.launch(
            patient=patient,
            encounter=encounter["id"],
            user=practitioner,
            launch_url="https://app.example/launch",
        )
    assert started["iss"] == base
    assert (
        started["url"] == f"https://app.example/launch?iss={quote(base, safe='')}&launch={started['launch']}"
    )
    verifier, challenge = pkce()
    params = authorize_params(
        base, "launch openid fhirUser patient/*.rs", code_challenge=challenge, launch=started["launch"]
    )
    page = http.get(base + "/auth/authorize", params=params)
    assert "Choose a patient" not in page.text and "Sign in as" not in page.text  # the EHR gave both
    query = redirect_query(
        http.post(
            base + "/auth/authorize/decision",
            data={"txn": form_value(page.text, "txn")[0], "decision": "approve"},
        )
    )
    body = token_request(http, base, code_form(query["code"], verifier)).json()
    assert (body["patient"], body["encounter"], body["need_patient_banner"]) == (
        patient,
        encounter["id"],
        True,
    )
    keys = KeySet.import_key_set(http.get(base + "/auth/jwks").json())
    assert (
        jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims["fhirUser"]
        == f"{base}/{practitioner}"
    )
    missing = http.get(
        base + "/auth/authorize",
        params=authorize_params(base, "launch patient/*.rs", code_challenge=pkce()[1]),
    )
    assert redirect_query(missing)["error"] == "invalid_request"
    forged = http.get(
        base + "/auth/authorize",
        params=authorize_params(base, "launch patient/*.rs", code_challenge=pkce()[1], launch="made-up"),
    )
    query = redirect_query(forged)
    assert (
        query["error"] == "invalid_request"
        and "not a launch id issued by this server" in query["error_description"]
    )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"patient": "nobody"}, "Patient/nobody does not exist"),
        ({"encounter": "nothing"}, "Encounter/nothing does not exist"),
        ({"user": "Practitioner/ghost"}, "is not an existing"),
        ({"location": "ward-1"}, "not location"),
    ],
)
def test_launch_context_must_exist(smart: RunningServer, context: dict[str, str], message: str) -> None:
    with AdminClient(smart.origin) as admin, pytest.raises(AdminError) as failure:
        admin.launch(**context)
    assert failure.value.status == 400 and message in failure.value.message


# -- authorization request negatives --------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),  # PKCE missing
        ({"code_challenge_method": "plain"}, "invalid_request"),  # plain is never accepted
        ({"code_challenge_method": None}, "invalid_request"),
        ({"aud": "http://elsewhere.example/fhir"}, "invalid_request"),
        ({"state": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "patient/Observation.xr"}, "invalid_scope"),
        ({"scope": "system/*.rs"}, "invalid_scope"),  # system scopes are for backend services
        ({"scope": "openid unknown-scope"}, "invalid_scope"),
    ],
)
def test_bad_authorization_requests_redirect_with_an_error(
    smart: RunningServer, http: httpx.Client, change: dict[str, Any], error: str
) -> None:
    base = smart.fhir_base
    params = authorize_params(base, "launch/patient patient/*.rs", code_challenge=pkce()[1])
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    query = redirect_query(http.get(base + "/auth/authorize", params=params))
    assert query["error"] == error
    assert query.get("state") == params.get("state")


def test_unknown_client_or_redirect_uri_is_not_redirected(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    params = authorize_params(base, "patient/*.rs", code_challenge=pkce()[1], client_id="who")
    response = http.get(base + "/auth/authorize", params=params)
    assert response.status_code == 400 and response.json()["error"] == "invalid_client"
    params = authorize_params(
        base, "patient/*.rs", code_challenge=pkce()[1], redirect_uri="http://evil.example/cb"
    )
    response = http.get(base + "/auth/authorize", params=params)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert "location" not in response.headers


# -- token endpoint negatives ---------------------------------------------------------------------
def test_code_exchange_negatives(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    code, verifier = get_code(http, base, "launch/patient patient/*.rs")
    wrong = token_request(http, base, code_form(code, "not-the-verifier-" + "x" * 40))
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    no_verifier = code_form(code, verifier)
    no_verifier.pop("code_verifier")
    assert token_request(http, base, no_verifier).json()["error"] == "invalid_grant"
    other_redirect = {**code_form(code, verifier), "redirect_uri": "http://127.0.0.1:9999/other"}
    assert token_request(http, base, other_redirect).json()["error"] == "invalid_grant"
    good = token_request(http, base, code_form(code, verifier))
    assert good.status_code == 200
    reused = token_request(http, base, code_form(code, verifier))
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    # Replaying a code revokes what it bought.
    assert http.get(base + "/Patient", headers=bearer(good.json())).status_code == 401


def test_code_expires_on_the_simulated_clock(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    code, verifier = get_code(http, base, "launch/patient patient/*.rs")
    smart.sandbox.clock.advance(121)
    assert token_request(http, base, code_form(code, verifier)).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "client_id": "nobody"}, 401, "invalid_client"),
        (
            {"grant_type": "authorization_code", "code": "bogus", "client_id": "public-app"},
            400,
            "invalid_grant",
        ),
        (
            {"grant_type": "refresh_token", "refresh_token": "bogus", "client_id": "public-app"},
            400,
            "invalid_grant",
        ),
        ({"grant_type": "authorization_code", "client_id": "confidential-app"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "public-app"}, 400, "unauthorized_client"),
    ],
)
def test_token_endpoint_errors(
    smart: RunningServer, http: httpx.Client, data: dict[str, str], status: int, error: str
) -> None:
    response = token_request(http, smart.fhir_base, data)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.headers["cache-control"] == "no-store"


def test_token_endpoint_rejects_json_repeats_and_get(smart: RunningServer, http: httpx.Client) -> None:
    url = smart.fhir_base + "/auth/token"
    as_json = http.post(url, json={"grant_type": "client_credentials"})
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    repeated = http.post(
        url,
        content="grant_type=refresh_token&grant_type=refresh_token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (
        repeated.json()["error"] == "invalid_request" and "repeated" in repeated.json()["error_description"]
    )
    get = http.get(url)
    assert get.status_code == 405 and get.headers["allow"] == "POST"


# -- refresh ----------------------------------------------------------------------------------------
def test_refresh_rotates_and_retires_the_old_token(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    first = login(http, base, "launch/patient offline_access patient/*.rs")
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": "public-app"}
    second = token_request(http, base, form)
    assert second.status_code == 200
    body = second.json()
    assert body["patient"] == first["patient"]
    assert body["refresh_token"] != first["refresh_token"]
    assert http.get(base + "/Observation", headers=bearer(body)).status_code == 200
    again = token_request(http, base, form)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    wider = token_request(
        http,
        base,
        {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": "public-app",
            "scope": "patient/*.cruds",
        },
    )
    assert wider.json()["error"] == "invalid_scope"


def test_refresh_token_belongs_to_its_client(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    first = login(http, base, "launch/patient offline_access patient/*.rs")
    stolen = token_request(
        http,
        base,
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=("confidential-app", "s3cret"),
    )
    assert stolen.json()["error"] == "invalid_grant"


# -- confidential clients -------------------------------------------------------------------------
def test_client_secret_basic_and_post(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    code, verifier = get_code(http, base, "launch/patient patient/*.rs", client_id="confidential-app")
    form = code_form(code, verifier, "confidential-app")
    bad = token_request(http, base, form, auth=("confidential-app", "wrong"))
    assert (bad.status_code, bad.json()["error"]) == (401, "invalid_client")
    assert bad.headers["www-authenticate"].startswith("Basic")
    good = token_request(http, base, form, auth=("confidential-app", "s3cret"))
    assert good.status_code == 200
    posted = token_request(
        http,
        base,
        {
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs",
            "client_id": "confidential-app",
            "client_secret": "s3cret",
        },
    )
    assert posted.status_code == 200 and posted.json()["scope"] == "system/Patient.rs"
    everyone = http.get(base + "/Patient", headers=bearer(posted.json()))
    assert everyone.json()["total"] == len(patients(smart))


# -- backend services -----------------------------------------------------------------------------
def register_backend(
    server: RunningServer, jwks: dict[str, Any] | None = None, jwks_uri: str | None = None
) -> str:
    metadata: dict[str, Any] = {
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
    }
    if jwks is not None:
        metadata["jwks"] = jwks
    if jwks_uri is not None:
        metadata["jwks_uri"] = jwks_uri
    response = httpx.post(server.fhir_base + "/auth/register", json=metadata, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    return response.json()["client_id"]


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_with_a_fresh_key(smart: RunningServer, http: httpx.Client, alg: str) -> None:
    base = smart.fhir_base
    key = new_key(alg)
    client_id = register_backend(smart, jwks=public_jwks(key))
    response = token_request(http, base, backend_form(assertion(key, alg, client_id, base + "/auth/token")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "system/*.rs" and "refresh_token" not in body and "patient" not in body
    assert http.get(base + "/Observation?_count=1", headers=bearer(body)).status_code == 200
    assert (
        http.post(base + "/Patient", json={"resourceType": "Patient"}, headers=bearer(body)).status_code
        == 403
    )


@pytest.fixture(scope="module")
def jwks_host() -> Iterator[tuple[str, dict[str, Any]]]:
    """A JWKS served from its own socket, as a client's jwks_uri would be."""
    published: dict[str, Any] = {"keys": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(published).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json", published
    httpd.shutdown()
    httpd.server_close()


def test_backend_services_with_jwks_uri(smart: RunningServer, http: httpx.Client, jwks_host: tuple) -> None:
    url, published = jwks_host
    key = new_key("ES384")
    published["keys"] = public_jwks(key)["keys"]
    client_id = register_backend(smart, jwks_uri=url)
    token_url = smart.fhir_base + "/auth/token"
    response = token_request(
        http, smart.fhir_base, backend_form(assertion(key, "ES384", client_id, token_url))
    )
    assert response.status_code == 200, response.text
    published["keys"] = []  # the client rotated its key away: old signatures stop working
    stale = token_request(http, smart.fhir_base, backend_form(assertion(key, "ES384", client_id, token_url)))
    assert stale.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        ("sub differs from iss", {"sub": "someone-else"}),
        ("aud is not the token endpoint", {"aud": "http://127.0.0.1/fhir/auth/token-other"}),
        ("exp more than 5 minutes ahead", {"exp_offset": 600}),
        ("expired", {"exp_offset": -10}),
        ("no exp", {"exp": None}),
        ("no jti", {"jti": None}),
    ],
)
def test_backend_assertion_claims_are_checked_strictly(
    smart: RunningServer, http: httpx.Client, case: str, overrides: dict[str, Any]
) -> None:
    import time

    key = new_key("RS384")
    client_id = register_backend(smart, jwks=public_jwks(key))
    if "exp_offset" in overrides:
        overrides = {"exp": int(time.time()) + overrides.pop("exp_offset")}
    signed = assertion(key, "RS384", client_id, smart.fhir_base + "/auth/token", **overrides)
    response = token_request(http, smart.fhir_base, backend_form(signed))
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client"), case


def test_backend_assertion_replay_alg_and_signature(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    token_url = base + "/auth/token"
    key = new_key("RS384")
    client_id = register_backend(smart, jwks=public_jwks(key))
    signed = assertion(key, "RS384", client_id, token_url)
    assert token_request(http, base, backend_form(signed)).status_code == 200
    replay = token_request(http, base, backend_form(signed))
    assert (replay.status_code, replay.json()["error"]) == (401, "invalid_client")
    assert "already been used" in replay.json()["error_description"]
    rs256 = new_key("RS256")
    client_256 = register_backend(smart, jwks=public_jwks(rs256))
    weak = token_request(http, base, backend_form(assertion(rs256, "RS256", client_256, token_url)))
    assert weak.json()["error"] == "invalid_client" and "RS256" in weak.json()["error_description"]
    impostor = new_key("RS384")
    impostor = type(impostor).import_key(impostor.as_dict(private=True) | {"kid": key.kid})
    forged = token_request(http, base, backend_form(assertion(impostor, "RS384", client_id, token_url)))
    assert forged.json()["error"] == "invalid_client"
    garbage = token_request(http, base, backend_form("not-a-jwt"))
    assert garbage.json()["error"] == "invalid_client"
    wrong_scope = token_request(
        http, base, backend_form(assertion(key, "RS384", client_id, token_url), "patient/*.rs")
    )
    assert wrong_scope.json()["error"] == "invalid_scope"


# -- introspection and revocation -------------------------------------------------------------------
def test_introspection_reports_active_tokens_and_needs_a_caller(
    smart: RunningServer, http: httpx.Client
) -> None:
    base = smart.fhir_base
    body = login(http, base, "launch/patient openid fhirUser offline_access patient/*.rs")
    url = base + "/auth/introspect"
    anonymous = http.post(url, data={"token": body["access_token"]})
    assert anonymous.status_code == 401
    info = http.post(url, data={"token": body["access_token"]}, auth=("confidential-app", "s3cret")).json()
    assert info["active"] is True
    assert info["client_id"] == "public-app"
    assert info["patient"] == body["patient"]
    assert set(info["scope"].split()) == set(body["scope"].split())
    assert info["exp"] - info["iat"] == 3600
    assert info["fhirUser"].startswith(base + "/Practitioner/")
    by_bearer = http.post(url, data={"token": body["refresh_token"]}, headers=bearer(body)).json()
    assert by_bearer["active"] is True and by_bearer["token_type"] == "refresh_token"
    assert http.post(url, data={"token": "nonsense"}, headers=bearer(body)).json() == {"active": False}


def test_revocation_of_access_and_refresh_tokens(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    body = login(http, base, "launch/patient offline_access patient/*.rs")
    url = base + "/auth/revoke"
    assert http.post(url, data={"token": body["access_token"], "client_id": "public-app"}).status_code == 200
    revoked = http.get(base + "/Patient", headers=bearer(body))
    assert revoked.status_code == 401 and 'error="invalid_token"' in revoked.headers["www-authenticate"]
    assert http.post(url, data={"token": body["refresh_token"], "client_id": "public-app"}).status_code == 200
    refresh = token_request(
        http,
        base,
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": "public-app"},
    )
    assert refresh.json()["error"] == "invalid_grant"
    assert http.post(url, data={"token": "unknown", "client_id": "public-app"}).status_code == 200
    assert http.post(url, data={"token": "x", "client_id": "nobody"}).status_code == 401


# -- dynamic registration -------------------------------------------------------------------------
def test_registered_public_client_can_log_in(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    response = http.post(
        base + "/auth/register",
        json={
            "client_name": "New app",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "scope": "launch/patient patient/Observation.rs",
        },
    )
    assert response.status_code == 201
    client = response.json()
    assert "client_secret" not in client
    body = login(
        http,
        base,
        "launch/patient patient/Observation.rs patient/Condition.rs",
        client_id=client["client_id"],
    )
    assert body["scope"] == "launch/patient patient/Observation.rs"  # limited to what it registered
    secret_client = http.post(base + "/auth/register", json={"redirect_uris": [REDIRECT]}).json()
    assert secret_client["token_endpoint_auth_method"] == "client_secret_basic"
    assert secret_client["client_secret"]


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"redirect_uris": ["not a uri"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://app.example/cb#frag"]}, "invalid_redirect_uri"),
        ({"grant_types": ["authorization_code"]}, "invalid_redirect_uri"),
        ({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "magic"}, "invalid_client_metadata"),
        (
            {"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt"},
            "invalid_client_metadata",
        ),
        (
            {"grant_types": ["client_credentials"], "jwks": {"keys": [{"kty": "RSA"}]}},
            "invalid_client_metadata",
        ),
        ({"grant_types": ["implicit"]}, "invalid_client_metadata"),
        ({"redirect_uris": [REDIRECT], "scope": "patient/Observation.zz"}, "invalid_client_metadata"),
        ({"redirect_uris": [REDIRECT], "client_id": "chosen"}, "invalid_client_metadata"),
        (["not", "an", "object"], "invalid_client_metadata"),
    ],
)
def test_registration_errors(smart: RunningServer, http: httpx.Client, metadata: Any, error: str) -> None:
    response = http.post(smart.fhir_base + "/auth/register", json=metadata)
    assert (response.status_code, response.json()["error"]) == (400, error)


def test_registration_needs_json(smart: RunningServer, http: httpx.Client) -> None:
    url = smart.fhir_base + "/auth/register"
    assert (
        http.post(url, content=b"{", headers={"Content-Type": "application/json"}).json()["error"]
        == "invalid_client_metadata"
    )
    assert http.post(url, data={"redirect_uris": REDIRECT}).status_code == 400


def test_server_keys_persist_across_restarts(http: httpx.Client) -> None:
    from simulator.auth.keys import server_keys

    with serve_auth() as first:
        kids = {k["kid"] for k in http.get(first.fhir_base + "/auth/jwks").json()["keys"]}
    server_keys.cache_clear()  # as a new process would: read the key file again
    with serve_auth() as second:
        assert {k["kid"] for k in http.get(second.fhir_base + "/auth/jwks").json()["keys"]} == kids


def test_oversized_and_garbled_bodies_get_oauth_errors(smart: RunningServer, http: httpx.Client) -> None:
    url = smart.fhir_base + "/auth/token"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    huge = http.post(url, content=b"grant_type=" + b"x" * 70_000, headers=form)
    assert (huge.status_code, huge.json()["error"]) == (413, "invalid_request")
    garbled = http.post(url, content=b"grant_type=\xff\xfe", headers=form)
    assert (garbled.status_code, garbled.json()["error"]) == (400, "invalid_request")
    decision = http.post(smart.fhir_base + "/auth/authorize/decision", data={"txn": "unknown"})
    assert (decision.status_code, decision.json()["error"]) == (400, "invalid_request")
    # The server is still fine afterwards.
    assert http.get(smart.fhir_base + "/.well-known/smart-configuration").status_code == 200


def test_authorize_by_post_and_introspection_after_expiry(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    verifier, challenge = pkce()
    params = authorize_params(
        base, "launch/patient patient/*.rs", code_challenge=challenge, auto_approve="true"
    )
    query = redirect_query(http.post(base + "/auth/authorize", data=params))  # authorize-post
    body = token_request(http, base, code_form(query["code"], verifier)).json()
    url = base + "/auth/introspect"
    assert http.post(url, data={"token": body["access_token"]}, auth=("confidential-app", "s3cret")).json()[
        "active"
    ]
    smart.sandbox.clock.advance(3601)
    expired = http.post(url, data={"token": body["access_token"]}, auth=("confidential-app", "s3cret")).json()
    assert expired == {"active": False}


@pytest.mark.parametrize("iss", [["list"], {"a": 1}, 7, None])
def test_assertions_with_odd_issuers_are_invalid_client(
    smart: RunningServer, http: httpx.Client, iss: Any
) -> None:
    key = new_key("RS384")
    signed = assertion(key, "RS384", "x", smart.fhir_base + "/auth/token", iss=iss)
    response = token_request(http, smart.fhir_base, backend_form(signed))
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
