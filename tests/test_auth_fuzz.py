"""Bad input to the SMART endpoints gets an OAuth error (4xx with `error`), never a 5xx or a hang:
generated forms, query strings, headers and JSON against the real server."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.testing import RunningServer
from tests.fuzz_support import FUZZ, SCALARS
from tests.smart_support import TIMEOUT, assertion, backend_form, new_key, public_jwks

FIELDS = [
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "client_id",
    "client_secret",
    "refresh_token",
    "scope",
    "client_assertion_type",
    "client_assertion",
    "token",
    "response_type",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "launch",
    "txn",
    "decision",
    "patient",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "public-app",
            "confidential-app",
            "code",
            "S256",
            "plain",
            "patient/*.rs",
            "launch/patient patient/Observation.rs?category=x|y",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "eyJhbGciOiJub25lIn0.eyJpc3MiOiJwdWJsaWMtYXBwIn0.",
            "a.b.c",
            "http://127.0.0.1:9999/callback",
        ]
    ),
    st.text(max_size=40),
)
FORMS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8)
AUTHORIZATION = st.one_of(
    st.none(),
    st.sampled_from(
        ["Basic", "Basic !!!", "Basic Y29uZmlkZW50aWFsLWFwcDo=", "Bearer", "Bearer x", "Digest y"]
    ),
)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        assert "error" in response.json()


@FUZZ
@given(
    path=st.sampled_from(
        ["/auth/token", "/auth/introspect", "/auth/revoke", "/auth/authorize", "/auth/authorize/decision"]
    ),
    form=FORMS,
    authorization=AUTHORIZATION,
)
def test_generated_forms_get_oauth_errors(
    smart: RunningServer, path: str, form: dict, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if authorization:
        headers["Authorization"] = authorization
    with httpx.Client(timeout=TIMEOUT) as http:
        check(http.post(smart.fhir_base + path, content=urlencode(form).encode(), headers=headers))


@FUZZ
@given(query=FORMS)
def test_generated_authorize_queries_get_oauth_errors(smart: RunningServer, query: dict) -> None:
    with httpx.Client(timeout=TIMEOUT) as http:
        check(http.get(smart.fhir_base + "/auth/authorize?" + urlencode(query)))


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
            lambda children: st.one_of(
                st.lists(children, max_size=4),
                st.dictionaries(
                    st.sampled_from(
                        [
                            "redirect_uris",
                            "grant_types",
                            "jwks",
                            "jwks_uri",
                            "scope",
                            "token_endpoint_auth_method",
                            "client_name",
                        ]
                    ),
                    children,
                    max_size=5,
                ),
            ),
            max_leaves=12,
        ).map(lambda value: httpx.Request("POST", "http://x", json=value).content),
    )
)
def test_generated_registrations_get_oauth_errors(smart: RunningServer, body: bytes) -> None:
    with httpx.Client(timeout=TIMEOUT) as http:
        check(
            http.post(
                smart.fhir_base + "/auth/register", content=body, headers={"Content-Type": "application/json"}
            )
        )


@FUZZ
@given(
    authorization=st.tuples(
        st.sampled_from(["", "Bearer ", "bearer ", "Basic ", "Bearer  "]),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
    )
    .map("".join)
    .map(str.strip)
    .filter(bool)
)
def test_generated_authorization_headers_on_fhir_requests(smart: RunningServer, authorization: str) -> None:
    with httpx.Client(timeout=TIMEOUT) as http:
        response = http.get(smart.fhir_base + "/Patient", headers={"Authorization": authorization})
    assert response.status_code == 401, response.text


# -- client assertions: signed JWTs with generated claims and headers, and broken JWTs -----------
CLAIM_VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
    st.sampled_from(["backend", "AUD", "NOW"]),
)


@pytest.fixture(scope="module")
def backend(smart: RunningServer) -> tuple[Any, str]:
    """A private_key_jwt client with a fresh ES384 key: (key, client_id)."""
    key = new_key("ES384")
    response = httpx.post(
        smart.fhir_base + "/auth/register",
        json={
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": public_jwks(key),
        },
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return key, response.json()["client_id"]


def b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@FUZZ
@given(
    claims=st.dictionaries(st.sampled_from(["iss", "sub", "aud", "exp", "jti", "iat", "nbf"]), CLAIM_VALUES),
    header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "jku", "crit"]), CLAIM_VALUES, max_size=3),
    damage=st.sampled_from(["none", "header", "truncate", "segments", "payload"]),
    raw=st.binary(max_size=30),
)
def test_generated_client_assertions_get_oauth_errors(
    smart: RunningServer, backend: tuple[Any, str], claims: dict, header: dict, damage: str, raw: bytes
) -> None:
    key, client_id = backend
    token_url = smart.fhir_base + "/auth/token"
    symbolic = {"backend": client_id, "AUD": token_url, "NOW": int(time.time()) + 60}
    claims = {k: symbolic.get(v, v) if isinstance(v, str) else v for k, v in claims.items()}
    try:
        signed = assertion(key, "ES384", client_id, token_url, **claims)
    except UnicodeEncodeError:  # a lone surrogate: joserfc will not sign it, so send it unsigned
        signed = f"{b64({'alg': 'ES384'})}.{b64(claims)}.{b64(raw)}"
    head, payload, signature = signed.split(".")
    if damage == "header":  # a generated header over a valid signature
        head = b64({"alg": "ES384", "kid": key.kid, **header})
    elif damage == "payload":
        payload = b64(raw)
    elif damage == "segments":
        signature = f"{signature}.{b64(raw)}"
    elif damage == "truncate":
        signature = signature[: len(raw)]
    check_token(smart, backend_form(f"{head}.{payload}.{signature}"))


def check_token(smart: RunningServer, form: dict) -> None:
    with httpx.Client(timeout=TIMEOUT) as http:
        response = http.post(smart.fhir_base + "/auth/token", data=form)
    check(response)
    assert response.status_code in (200, 400, 401), response.text


@pytest.mark.parametrize(
    "header, named",
    [({"crit": None}, "crit"), ({"crit": "exp"}, "crit"), ({"crit": []}, "crit"), ({"kid": 5}, "kid")],
)
def test_client_assertion_headers_of_the_wrong_type_are_invalid_client(
    smart: RunningServer, backend: tuple[Any, str], header: dict, named: str
) -> None:
    # joserfc iterates `crit` without checking it: "crit": null was a TypeError and a 500.
    key, client_id = backend
    token_url = smart.fhir_base + "/auth/token"
    _, payload, signature = assertion(key, "ES384", client_id, token_url).split(".")
    head = b64({"alg": "ES384", "kid": key.kid, **header})
    with httpx.Client(timeout=TIMEOUT) as http:
        response = http.post(token_url, data=backend_form(f"{head}.{payload}.{signature}"))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert f"client_assertion header {named} has the wrong JSON type" in response.json()["error_description"]
