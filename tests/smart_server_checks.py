"""The server checks of Inferno's SMART App Launch (STU2) and g(10) test kits, as small units run
against any SMART server reachable over HTTP (here: ehrsim). Each check has a stable id, a title,
the requirement it verifies with a link, and assertions whose messages say what was expected and
what came back. `test_auth_inferno.py` runs them all against ehrsim, and each against a
deliberately broken configuration to prove it can fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.smart_support import CATEGORY, REDIRECT, authorize_params, bearer, form_value, pkce

SMART = "https://hl7.org/fhir/smart-app-launch/STU2.1"


@dataclass
class Target:
    """The server under test and a public client registered on it."""

    base: str
    http: httpx.Client
    client_id: str = "public-app"
    secret_auth: tuple[str, str] = ("confidential-app", "s3cret")
    cache: dict[str, Any] = field(default_factory=dict)

    def discovery(self) -> dict[str, Any]:
        if "discovery" not in self.cache:
            self.cache["discovery"] = self.http.get(self.base + "/.well-known/smart-configuration").json()
        return self.cache["discovery"]

    def authorize(self, scope: str, **extra: str) -> tuple[httpx.Response, dict[str, str], str]:
        """Authorize as a person would (picker page when shown); (redirect, params, verifier)."""
        verifier, challenge = pkce()
        params = authorize_params(self.base, scope, self.client_id, code_challenge=challenge)
        params.update(extra)
        page = self.http.get(self.discovery()["authorization_endpoint"], params=params)
        if page.status_code == 200 and "txn" in page.text:
            form = {"txn": form_value(page.text, "txn")[0], "decision": "approve"}
            patients = form_value(page.text, "patient")
            if patients:
                form["patient"] = patients[0]
            page = self.http.post(self.base + "/auth/authorize/decision", data=form)
        return page, params, verifier

    def exchange(self, scope: str, **extra: str) -> httpx.Response:
        redirect, _, verifier = self.authorize(scope, **extra)
        code = query_of(redirect).get("code", "")
        return self.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_id": self.client_id,
            }
        )

    def token(self, form: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
        return self.http.post(self.discovery()["token_endpoint"], data=form, auth=auth)

    def access(self, scope: str) -> dict[str, Any]:
        response = self.exchange(scope)
        assert response.status_code == 200, f"token exchange failed: {response.status_code} {response.text}"
        return response.json()


def query_of(response: httpx.Response) -> dict[str, str]:
    location = response.headers.get("location", "")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    requirement: str
    url: str
    run: Callable[[Target], None]


CHECKS: list[Check] = []


def check(id: str, title: str, requirement: str, url: str) -> Callable[[Callable[[Target], None]], Callable]:
    def register(run: Callable[[Target], None]) -> Callable[[Target], None]:
        CHECKS.append(Check(id, title, requirement, url, run))
        return run

    return register


@check(
    "smart_well_known_endpoint",
    "SMART configuration is served as JSON",
    "The discovery document is available at [base]/.well-known/smart-configuration with Content-Type application/json",
    f"{SMART}/conformance.html#using-well-known",
)
def well_known_endpoint(t: Target) -> None:
    response = t.http.get(t.base + "/.well-known/smart-configuration")
    assert response.status_code == 200, f"expected 200, got {response.status_code}"
    content_type = response.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == "application/json", (
        f"expected Content-Type application/json, got {content_type!r}"
    )


@check(
    "smart_well_known_capabilities",
    "SMART configuration has the required fields",
    "authorization_endpoint, token_endpoint, capabilities, grant_types_supported and "
    "code_challenge_methods_supported (S256, never plain) are present",
    f"{SMART}/conformance.html#metadata",
)
def well_known_capabilities(t: Target) -> None:
    doc = t.discovery()
    for key in ("authorization_endpoint", "token_endpoint"):
        assert isinstance(doc.get(key), str) and doc[key].startswith("http"), (
            f"{key} must be a URL, got {doc.get(key)!r}"
        )
    assert isinstance(doc.get("capabilities"), list) and doc["capabilities"], (
        "capabilities must be a non-empty array"
    )
    assert "authorization_code" in (doc.get("grant_types_supported") or []), (
        "grant_types_supported lacks authorization_code"
    )
    methods = doc.get("code_challenge_methods_supported") or []
    assert "S256" in methods, f"code_challenge_methods_supported must include S256, got {methods}"
    assert "plain" not in methods, f"code_challenge_methods_supported must not include plain, got {methods}"


@check(
    "smart_metadata_oauth_uris",
    "CapabilityStatement's oauth-uris match the SMART configuration",
    "The oauth-uris extension's authorize and token URLs equal the discovery document's",
    f"{SMART}/conformance.html",
)
def metadata_oauth_uris(t: Target) -> None:
    statement = t.http.get(t.base + "/metadata").json()
    security = statement["rest"][0].get("security", {})
    found = [e for e in security.get("extension", []) if e.get("url", "").endswith("/oauth-uris")]
    assert found, "CapabilityStatement.rest.security has no oauth-uris extension"
    uris = {e["url"]: e.get("valueUri") for e in found[0]["extension"]}
    doc = t.discovery()
    assert uris.get("authorize") == doc["authorization_endpoint"], (
        f"authorize {uris.get('authorize')} != {doc['authorization_endpoint']}"
    )
    assert uris.get("token") == doc["token_endpoint"], f"token {uris.get('token')} != {doc['token_endpoint']}"


@check(
    "smart_code_received",
    "Authorization redirects back with a code and the same state",
    "The server redirects to the redirect_uri with a code and the state the app sent",
    f"{SMART}/app-launch.html#response-5",
)
def code_received(t: Target) -> None:
    redirect, params, _ = t.authorize("launch/patient patient/*.rs")
    assert redirect.status_code in (302, 303), f"expected a redirect, got {redirect.status_code}"
    query = query_of(redirect)
    assert "error" not in query, f"authorization failed: {query}"
    assert query.get("code"), "the redirect carries no code"
    assert query.get("state") == params["state"], f"state {query.get('state')!r} != sent {params['state']!r}"


@check(
    "smart_token_response_body",
    "Token response has the required fields",
    "access_token, token_type Bearer, expires_in, scope; patient for launch/patient; id_token for "
    "openid fhirUser; refresh_token for offline_access",
    f"{SMART}/app-launch.html#response-6",
)
def token_response_body(t: Target) -> None:
    body = t.access("launch/patient openid fhirUser offline_access patient/*.rs")
    assert body.get("access_token"), "no access_token"
    assert str(body.get("token_type", "")).lower() == "bearer", f"token_type {body.get('token_type')!r}"
    assert isinstance(body.get("expires_in"), int), f"expires_in {body.get('expires_in')!r} is not an integer"
    assert isinstance(body.get("scope"), str) and body["scope"], "no scope"
    assert body.get("patient"), "no patient although launch/patient was granted"
    assert body.get("id_token"), "no id_token although openid fhirUser were granted"
    assert body.get("refresh_token"), "no refresh_token although offline_access was granted"


@check(
    "smart_token_response_headers",
    "Token response is not cacheable",
    "Token responses carry Cache-Control: no-store and Pragma: no-cache",
    f"{SMART}/app-launch.html#response-6",
)
def token_response_headers(t: Target) -> None:
    response = t.exchange("launch/patient patient/*.rs")
    assert response.status_code == 200, f"token exchange failed: {response.status_code}"
    assert "no-store" in response.headers.get("cache-control", "").lower(), (
        f"Cache-Control {response.headers.get('cache-control')!r} lacks no-store"
    )
    assert "no-cache" in response.headers.get("pragma", "").lower(), (
        f"Pragma {response.headers.get('pragma')!r} lacks no-cache"
    )


@check(
    "smart_pkce_incorrect_verifier",
    "Token request with an incorrect code_verifier is rejected",
    "The server verifies code_verifier against the code_challenge (RFC 7636 section 4.6)",
    f"{SMART}/app-launch.html#considerations-for-pkce-support",
)
def pkce_incorrect_verifier(t: Target) -> None:
    redirect, _, _ = t.authorize("launch/patient patient/*.rs")
    form = {
        "grant_type": "authorization_code",
        "code": query_of(redirect).get("code", ""),
        "redirect_uri": REDIRECT,
        "code_verifier": "incorrect-" + "v" * 50,
        "client_id": t.client_id,
    }
    response = t.token(form)
    assert response.status_code in (400, 401), (
        f"expected 400/401 for a wrong code_verifier, got {response.status_code}"
    )


@check(
    "smart_pkce_plain_rejected",
    "code_challenge_method plain is rejected",
    "Servers SHALL NOT support the plain method",
    f"{SMART}/app-launch.html#considerations-for-pkce-support",
)
def pkce_plain_rejected(t: Target) -> None:
    verifier = "plain-" + "p" * 50
    redirect, _, _ = t.authorize(
        "launch/patient patient/*.rs", code_challenge=verifier, code_challenge_method="plain"
    )
    query = query_of(redirect)
    assert "code" not in query, "the server issued a code for code_challenge_method=plain"
    assert query.get("error") == "invalid_request", f"expected error=invalid_request, got {query}"


@check(
    "smart_token_refresh",
    "Refresh token grants a new access token",
    "A refresh_token request returns a new access_token with no-store headers",
    f"{SMART}/app-launch.html#step-6-app-uses-a-refresh-token-to-obtain-a-new-access-token",
)
def token_refresh(t: Target) -> None:
    body = t.access("launch/patient offline_access patient/*.rs")
    response = t.token(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": t.client_id}
    )
    assert response.status_code == 200, f"refresh failed: {response.status_code} {response.text}"
    assert response.json().get("access_token"), "refresh response has no access_token"
    assert "no-store" in response.headers.get("cache-control", ""), (
        "refresh response lacks Cache-Control: no-store"
    )


@check(
    "smart_invalid_refresh_token",
    "An invalid refresh token is rejected",
    "The token endpoint answers 400 invalid_grant for a refresh token it did not issue",
    "https://www.rfc-editor.org/rfc/rfc6749#section-5.2",
)
def invalid_refresh_token(t: Target) -> None:
    response = t.token(
        {"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token", "client_id": t.client_id}
    )
    assert response.status_code == 400, f"expected 400, got {response.status_code}"
    assert response.json().get("error") == "invalid_grant", f"expected invalid_grant, got {response.text}"


@check(
    "smart_unauthorized_access",
    "FHIR requests without a token are refused",
    "A request with no access token gets 401",
    "https://www.rfc-editor.org/rfc/rfc6750#section-3.1",
)
def unauthorized_access(t: Target) -> None:
    response = t.http.get(t.base + "/Patient")
    assert response.status_code == 401, f"expected 401 without a token, got {response.status_code}"


@check(
    "g10_restricted_resource_type_access",
    "Resource types outside the granted scopes are refused",
    "With patient/Patient.rs and patient/Observation.rs only, a Condition search is refused (403)",
    "https://inferno.healthit.gov/suites/g10_certification",
)
def restricted_resource_type(t: Target) -> None:
    body = t.access("launch/patient patient/Patient.rs patient/Observation.rs")
    allowed = t.http.get(t.base + "/Observation", params={"patient": body["patient"]}, headers=bearer(body))
    assert allowed.status_code == 200, f"granted Observation search failed: {allowed.status_code}"
    refused = t.http.get(t.base + "/Condition", params={"patient": body["patient"]}, headers=bearer(body))
    assert refused.status_code in (401, 403), f"expected 403 for Condition, got {refused.status_code}"


def _search_all(t: Target, url: str, token: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    next_url: str | None = url
    while next_url:
        bundle = t.http.get(next_url, headers=bearer(token)).json()
        out += [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]
        next_url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    return out


@check(
    "g10_granular_scope_subset",
    "Granular scopes return exactly the granted subset",
    "With patient/Observation.rs?category=...|vital-signs, a search returns the patient's vital signs and nothing else",
    f"{SMART}/scopes-and-launch-context.html#finer-grained-resource-constraints-using-search-parameters",
)
def granular_scope_subset(t: Target) -> None:
    full = t.access("launch/patient patient/Observation.rs")
    narrow = t.access(f"launch/patient patient/Observation.rs?category={CATEGORY}|vital-signs")
    url = f"{t.base}/Observation?patient={full['patient']}&_count=50"
    everything = _search_all(t, url, full)
    expected = {
        o["id"]
        for o in everything
        if any(c.get("code") == "vital-signs" for k in o.get("category", []) for c in k.get("coding", []))
    }
    got = {o["id"] for o in _search_all(t, url, narrow)}
    assert expected, "the test patient has no vital signs to compare"
    assert got == expected, (
        f"expected the {len(expected)} vital signs, got {len(got)} resources ({len(got - expected)} outside the grant)"
    )


@check(
    "smart_openid_id_token",
    "id_token is signed and valid now",
    "The id_token verifies with the server's JWKS; iss, sub, aud (the client) are present; iat is not in the future",
    f"{SMART}/scopes-and-launch-context.html#scopes-for-requesting-identity-data",
)
def openid_id_token(t: Target) -> None:
    body = t.access("launch/patient openid fhirUser patient/*.rs")
    keys = KeySet.import_key_set(t.http.get(t.discovery()["jwks_uri"]).json())
    claims = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    for claim in ("iss", "sub", "aud", "exp", "iat", "fhirUser"):
        assert claim in claims, f"id_token lacks {claim}"
    assert claims["aud"] == t.client_id, f"aud {claims['aud']!r} is not the client {t.client_id!r}"
    now = time.time()
    assert claims["iat"] <= now + 60, f"id_token iat is {claims['iat'] - now:.0f} s in the future"
    assert claims["exp"] > now, "id_token has already expired"


@check(
    "smart_token_introspection",
    "Introspection reports an active token and an inactive one",
    "An issued token introspects as active with scope, client_id and exp; an unknown one as active: false",
    "https://www.rfc-editor.org/rfc/rfc7662#section-2.2",
)
def token_introspection(t: Target) -> None:
    body = t.access("launch/patient patient/*.rs")
    url = t.discovery()["introspection_endpoint"]
    info = t.http.post(url, data={"token": body["access_token"]}, auth=t.secret_auth).json()
    assert info.get("active") is True, f"an issued token introspects as {info}"
    for claim in ("scope", "client_id", "exp"):
        assert claim in info, f"introspection lacks {claim}"
    unknown = t.http.post(url, data={"token": "not-a-token"}, auth=t.secret_auth).json()
    assert unknown.get("active") is False, f"an unknown token introspects as {unknown}"
