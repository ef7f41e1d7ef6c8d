"""Helpers for the SMART auth tests: scenarios with auth on, PKCE, the browser flow over HTTP,
and backend-services keys and assertions. Everything talks to a real ehrsim over a socket."""

from __future__ import annotations

import contextlib
import re
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from conformance.smart_checks import pkce
from simulator.scenario import Scenario, build_scenario
from simulator.testing import RunningServer, serve_in_thread

# Server keys for this test process (not the user's ~/.ehrsim); removed at exit.
KEYS = tempfile.TemporaryDirectory(prefix="ehrsim-test-keys-")

REDIRECT = "http://127.0.0.1:9999/callback"
TIMEOUT = 30.0  # the test machine is shared and may be slow; slowness is not what these tests check
PUBLIC = {
    "client_id": "public-app",
    "token_endpoint_auth_method": "none",
    "redirect_uris": [REDIRECT],
}
CONFIDENTIAL = {
    "client_id": "confidential-app",
    "token_endpoint_auth_method": "client_secret_basic",
    "client_secret": "s3cret",
    "redirect_uris": [REDIRECT],
    "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
}
CLIENTS = [PUBLIC, CONFIDENTIAL]


def auth_scenario(
    auth: dict[str, Any] | None = None,
    clients: list[dict[str, Any]] | None = None,
    patients: int = 3,
    clock: dict[str, Any] | None = None,
) -> Scenario:
    """One site at /fhir with auth on and, by default, a frozen clock (tests advance it)."""
    return build_scenario(
        {
            "name": "auth-test",
            "seed": 7,
            "clock": clock or {"start": "2026-03-01T08:00:00Z", "speed": 0},
            "sites": [
                {
                    "id": "s",
                    "base_path": "/fhir",
                    "population": {"patients": patients, "as_of": "2026-01-01"},
                    "auth": {"required": True, **(auth or {})},
                }
            ],
            "clients": CLIENTS if clients is None else clients,
        }
    )


@contextlib.contextmanager
def serve_auth(
    scenario: Scenario | None = None, options_extra: dict[str, Any] | None = None, **kwargs: Any
) -> Iterator[RunningServer]:
    options = {"data_dir": KEYS.name, **(options_extra or {})}
    with serve_in_thread(scenario or auth_scenario(), options=options, **kwargs) as server:
        yield server


def authorize_params(base: str, scope: str, client_id: str = "public-app", **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-" + secrets.token_hex(4),
        "aud": base,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.text)
    location = response.headers["location"]
    assert location.startswith(REDIRECT), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def form_value(html: str, name: str) -> list[str]:
    return re.findall(rf'name="{name}" value="([^"]+)"', html)


def get_code(
    http: httpx.Client,
    base: str,
    scope: str,
    client_id: str = "public-app",
    patient: str | None = None,
    **extra: str,
) -> tuple[str, str]:
    """Run the authorization through the login/picker page like a person; (code, verifier)."""
    verifier, challenge = pkce()
    params = authorize_params(base, scope, client_id, code_challenge=challenge, **extra)
    page = http.get(base + "/auth/authorize", params=params)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    form = {"txn": form_value(page.text, "txn")[0], "decision": "approve"}
    patients = form_value(page.text, "patient")
    if patients:
        form["patient"] = patient or patients[0]
    query = redirect_query(http.post(base + "/auth/authorize/decision", data=form))
    assert query["state"] == params["state"]
    return query["code"], verifier


def token_request(
    http: httpx.Client, base: str, data: dict[str, str], auth: tuple[str, str] | None = None
) -> httpx.Response:
    return http.post(base + "/auth/token", data=data, auth=auth)


def login(
    http: httpx.Client,
    base: str,
    scope: str,
    client_id: str = "public-app",
    patient: str | None = None,
    **extra: str,
) -> dict[str, Any]:
    """Authorization code + PKCE for a public client; the token response body."""
    code, verifier = get_code(http, base, scope, client_id, patient, **extra)
    response = token_request(
        http,
        base,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": client_id,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str | dict[str, Any]) -> dict[str, str]:
    value = token["access_token"] if isinstance(token, dict) else token
    return {"Authorization": f"Bearer {value}"}


# -- backend services -----------------------------------------------------------------------
def new_key(alg: str) -> Any:
    kid = f"k-{alg}-{uuid.uuid4().hex[:6]}"
    if alg.startswith("ES"):
        return ECKey.generate_key("P-384", parameters={"kid": kid, "alg": alg})
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": alg})


def public_jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def assertion(key: Any, alg: str, client_id: str, token_url: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def backend_form(signed: str, scope: str = "system/*.rs") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
    }
