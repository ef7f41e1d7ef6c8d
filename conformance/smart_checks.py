"""SMART App Launch server checks: those of Inferno's SMART App Launch (STU2) and g(10) kits that
a server answers over HTTP (discovery, code flow with PKCE, token response, refresh, scopes enforced
on data, id_token, introspection), as `conformance.check.Check` units in group `smart`.

They need a client registered on the server (`SmartTarget`): a public client with `redirect_uri`
for the code flow, and a confidential one (`secret_auth`) for introspection. Where the server asks a
person to sign in, the target fills in ehrsim's sign-in page (the first patient on the picker); on
a server whose page it does not know, the flow checks are skipped. They are kept apart from
`conformance.check.REGISTRY` (the generic server checks) and run with `run_smart_checks`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from conformance.check import Check, CheckSkipped, Target, expect
from conformance.runner import Result, run_checks

SMART = "https://hl7.org/fhir/smart-app-launch/STU2.1"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def pkce() -> tuple[str, str]:
    """A PKCE code_verifier and its S256 code_challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}"}


def _form_values(html: str, name: str) -> list[str]:
    return re.findall(rf'name="{name}" value="([^"]+)"', html)


@dataclass
class SmartTarget(Target):
    """The server under test and the clients registered on it for the checks."""

    client_id: str = "public-app"
    redirect_uri: str = "http://127.0.0.1:9999/callback"
    secret_auth: tuple[str, str] | None = None  # a confidential client, for introspection

    def discovery(self) -> dict[str, Any]:
        if "discovery" not in self.cache:
            response = self.http.get(self.fhir_base + "/.well-known/smart-configuration")
            expect(
                response.status_code == 200, f"GET .well-known/smart-configuration: {response.status_code}"
            )
            self.cache["discovery"] = response.json()
        return self.cache["discovery"]

    def authorize(self, scope: str, **extra: str) -> tuple[httpx.Response, dict[str, str], str]:
        """Authorize as a person would (ehrsim's sign-in page when shown): (redirect, params, verifier)."""
        verifier, challenge = pkce()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "state": "st-" + secrets.token_hex(4),
            "aud": self.fhir_base,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        endpoint = self.discovery()["authorization_endpoint"]
        page = self.http.get(endpoint, params=params)
        if page.status_code == 200:
            txn = _form_values(page.text, "txn")
            if not txn:
                raise CheckSkipped("the server asks a person to sign in, on a page this suite cannot fill in")
            form = {"txn": txn[0], "decision": "approve"}
            patients = _form_values(page.text, "patient")
            if patients:
                form["patient"] = patients[0]
            page = self.http.post(endpoint + "/decision", data=form)
        return page, params, verifier

    def exchange(self, scope: str, **extra: str) -> httpx.Response:
        redirect, _, verifier = self.authorize(scope, **extra)
        code = query_of(redirect).get("code", "")
        return self.token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
                "client_id": self.client_id,
            }
        )

    def token_request(self, form: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
        return self.http.post(self.discovery()["token_endpoint"], data=form, auth=auth)

    def access(self, scope: str) -> dict[str, Any]:
        response = self.exchange(scope)
        expect(response.status_code == 200, f"token exchange failed: {response.status_code} {response.text}")
        return response.json()


def query_of(response: httpx.Response) -> dict[str, str]:
    location = response.headers.get("location", "")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


SMART_CHECKS: list[Check] = []


def check(id: str, title: str, spec: str) -> Callable[[Callable[[SmartTarget], None]], Callable]:
    """Register a SMART check; its docstring is the requirement."""

    def register(fn: Callable[[SmartTarget], None]) -> Callable[[SmartTarget], None]:
        if any(c.id == id for c in SMART_CHECKS):
            raise ValueError(f"duplicate check id {id}")
        SMART_CHECKS.append(Check(id, title, (fn.__doc__ or "").strip(), spec, "smart", fn))  # type: ignore[arg-type]
        return fn

    return register


def run_smart_checks(fhir_base: str, **clients: Any) -> list[Result]:
    """Run every SMART check; `clients`: client_id, redirect_uri, secret_auth (see SmartTarget)."""
    with httpx.Client(timeout=30) as http:
        return run_checks(SmartTarget(fhir_base, http, **clients), SMART_CHECKS)


@check(
    "smart_well_known_endpoint",
    "SMART configuration is served as JSON",
    f"{SMART}/conformance.html#using-well-known",
)
def well_known_endpoint(t: SmartTarget) -> None:
    """The discovery document is available at [base]/.well-known/smart-configuration with Content-Type application/json"""
    response = t.http.get(t.fhir_base + "/.well-known/smart-configuration")
    expect(response.status_code == 200, f"expected 200, got {response.status_code}")
    content_type = response.headers.get("content-type", "")
    expect(
        content_type.split(";")[0].strip() == "application/json",
        f"expected Content-Type application/json, got {content_type!r}",
    )


@check(
    "smart_well_known_capabilities",
    "SMART configuration has the required fields",
    f"{SMART}/conformance.html#metadata",
)
def well_known_capabilities(t: SmartTarget) -> None:
    """authorization_endpoint, token_endpoint, capabilities, grant_types_supported and code_challenge_methods_supported (S256, never plain) are present"""
    doc = t.discovery()
    for key in ("authorization_endpoint", "token_endpoint"):
        expect(
            isinstance(doc.get(key), str) and doc[key].startswith("http"),
            f"{key} must be a URL, got {doc.get(key)!r}",
        )
    expect(
        isinstance(doc.get("capabilities"), list) and doc["capabilities"],
        "capabilities must be a non-empty array",
    )
    expect(
        "authorization_code" in (doc.get("grant_types_supported") or []),
        "grant_types_supported lacks authorization_code",
    )
    methods = doc.get("code_challenge_methods_supported") or []
    expect("S256" in methods, f"code_challenge_methods_supported must include S256, got {methods}")
    expect("plain" not in methods, f"code_challenge_methods_supported must not include plain, got {methods}")


@check(
    "smart_metadata_oauth_uris",
    "CapabilityStatement's oauth-uris match the SMART configuration",
    f"{SMART}/conformance.html",
)
def metadata_oauth_uris(t: SmartTarget) -> None:
    """The oauth-uris extension's authorize and token URLs equal the discovery document's"""
    statement = t.http.get(t.fhir_base + "/metadata").json()
    security = statement["rest"][0].get("security", {})
    found = [e for e in security.get("extension", []) if e.get("url", "").endswith("/oauth-uris")]
    expect(found, "CapabilityStatement.rest.security has no oauth-uris extension")
    uris = {e["url"]: e.get("valueUri") for e in found[0]["extension"]}
    doc = t.discovery()
    expect(
        uris.get("authorize") == doc["authorization_endpoint"],
        f"authorize {uris.get('authorize')} != {doc['authorization_endpoint']}",
    )
    expect(
        uris.get("token") == doc["token_endpoint"], f"token {uris.get('token')} != {doc['token_endpoint']}"
    )


@check(
    "smart_code_received",
    "Authorization redirects back with a code and the same state",
    f"{SMART}/app-launch.html#response-5",
)
def code_received(t: SmartTarget) -> None:
    """The server redirects to the redirect_uri with a code and the state the app sent"""
    redirect, params, _ = t.authorize("launch/patient patient/*.rs")
    expect(redirect.status_code in (302, 303), f"expected a redirect, got {redirect.status_code}")
    query = query_of(redirect)
    expect("error" not in query, f"authorization failed: {query}")
    expect(query.get("code"), "the redirect carries no code")
    expect(query.get("state") == params["state"], f"state {query.get('state')!r} != sent {params['state']!r}")


@check(
    "smart_token_response_body",
    "Token response has the required fields",
    f"{SMART}/app-launch.html#response-6",
)
def token_response_body(t: SmartTarget) -> None:
    """access_token, token_type Bearer, expires_in, scope; patient for launch/patient; id_token for openid fhirUser; refresh_token for offline_access"""
    body = t.access("launch/patient openid fhirUser offline_access patient/*.rs")
    expect(body.get("access_token"), "no access_token")
    expect(str(body.get("token_type", "")).lower() == "bearer", f"token_type {body.get('token_type')!r}")
    expect(
        isinstance(body.get("expires_in"), int), f"expires_in {body.get('expires_in')!r} is not an integer"
    )
    expect(isinstance(body.get("scope"), str) and body["scope"], "no scope")
    expect(body.get("patient"), "no patient although launch/patient was granted")
    expect(body.get("id_token"), "no id_token although openid fhirUser were granted")
    expect(body.get("refresh_token"), "no refresh_token although offline_access was granted")


@check(
    "smart_token_response_headers",
    "Token response is not cacheable",
    f"{SMART}/app-launch.html#response-6",
)
def token_response_headers(t: SmartTarget) -> None:
    """Token responses carry Cache-Control: no-store and Pragma: no-cache"""
    response = t.exchange("launch/patient patient/*.rs")
    expect(response.status_code == 200, f"token exchange failed: {response.status_code}")
    expect(
        "no-store" in response.headers.get("cache-control", "").lower(),
        f"Cache-Control {response.headers.get('cache-control')!r} lacks no-store",
    )
    expect(
        "no-cache" in response.headers.get("pragma", "").lower(),
        f"Pragma {response.headers.get('pragma')!r} lacks no-cache",
    )


@check(
    "smart_pkce_incorrect_verifier",
    "Token request with an incorrect code_verifier is rejected",
    f"{SMART}/app-launch.html#considerations-for-pkce-support",
)
def pkce_incorrect_verifier(t: SmartTarget) -> None:
    """The server verifies code_verifier against the code_challenge (RFC 7636 section 4.6)"""
    redirect, _, _ = t.authorize("launch/patient patient/*.rs")
    form = {
        "grant_type": "authorization_code",
        "code": query_of(redirect).get("code", ""),
        "redirect_uri": t.redirect_uri,
        "code_verifier": "incorrect-" + "v" * 50,
        "client_id": t.client_id,
    }
    response = t.token_request(form)
    expect(
        response.status_code in (400, 401),
        f"expected 400/401 for a wrong code_verifier, got {response.status_code}",
    )


@check(
    "smart_pkce_plain_rejected",
    "code_challenge_method plain is rejected",
    f"{SMART}/app-launch.html#considerations-for-pkce-support",
)
def pkce_plain_rejected(t: SmartTarget) -> None:
    """Servers SHALL NOT support the plain method"""
    verifier = "plain-" + "p" * 50
    redirect, _, _ = t.authorize(
        "launch/patient patient/*.rs", code_challenge=verifier, code_challenge_method="plain"
    )
    query = query_of(redirect)
    expect("code" not in query, "the server issued a code for code_challenge_method=plain")
    expect(query.get("error") == "invalid_request", f"expected error=invalid_request, got {query}")


@check(
    "smart_token_refresh",
    "Refresh token grants a new access token",
    f"{SMART}/app-launch.html#step-6-app-uses-a-refresh-token-to-obtain-a-new-access-token",
)
def token_refresh(t: SmartTarget) -> None:
    """A refresh_token request returns a new access_token with no-store headers"""
    body = t.access("launch/patient offline_access patient/*.rs")
    response = t.token_request(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": t.client_id}
    )
    expect(response.status_code == 200, f"refresh failed: {response.status_code} {response.text}")
    expect(response.json().get("access_token"), "refresh response has no access_token")
    expect(
        "no-store" in response.headers.get("cache-control", ""),
        "refresh response lacks Cache-Control: no-store",
    )


@check(
    "smart_invalid_refresh_token",
    "An invalid refresh token is rejected",
    "https://www.rfc-editor.org/rfc/rfc6749#section-5.2",
)
def invalid_refresh_token(t: SmartTarget) -> None:
    """The token endpoint answers 400 invalid_grant for a refresh token it did not issue"""
    response = t.token_request(
        {"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token", "client_id": t.client_id}
    )
    expect(response.status_code == 400, f"expected 400, got {response.status_code}")
    expect(response.json().get("error") == "invalid_grant", f"expected invalid_grant, got {response.text}")


@check(
    "smart_unauthorized_access",
    "FHIR requests without a token are refused",
    "https://www.rfc-editor.org/rfc/rfc6750#section-3.1",
)
def unauthorized_access(t: SmartTarget) -> None:
    """A request with no access token gets 401"""
    response = t.http.get(t.fhir_base + "/Patient")
    expect(response.status_code == 401, f"expected 401 without a token, got {response.status_code}")


@check(
    "g10_restricted_resource_type_access",
    "Resource types outside the granted scopes are refused",
    "https://inferno.healthit.gov/suites/g10_certification",
)
def restricted_resource_type(t: SmartTarget) -> None:
    """With patient/Patient.rs and patient/Observation.rs only, a Condition search is refused (403)"""
    body = t.access("launch/patient patient/Patient.rs patient/Observation.rs")
    allowed = t.http.get(
        t.fhir_base + "/Observation", params={"patient": body["patient"]}, headers=bearer(body)
    )
    expect(allowed.status_code == 200, f"granted Observation search failed: {allowed.status_code}")
    refused = t.http.get(
        t.fhir_base + "/Condition", params={"patient": body["patient"]}, headers=bearer(body)
    )
    expect(refused.status_code in (401, 403), f"expected 403 for Condition, got {refused.status_code}")


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
    f"{SMART}/scopes-and-launch-context.html#finer-grained-resource-constraints-using-search-parameters",
)
def granular_scope_subset(t: SmartTarget) -> None:
    """With patient/Observation.rs?category=...|vital-signs, a search returns the patient's vital signs and nothing else"""
    full = t.access("launch/patient patient/Observation.rs")
    narrow = t.access(f"launch/patient patient/Observation.rs?category={CATEGORY}|vital-signs")
    url = f"{t.fhir_base}/Observation?patient={full['patient']}&_count=50"
    everything = _search_all(t, url, full)
    expected = {
        o["id"]
        for o in everything
        if any(c.get("code") == "vital-signs" for k in o.get("category", []) for c in k.get("coding", []))
    }
    got = {o["id"] for o in _search_all(t, url, narrow)}
    expect(expected, "the test patient has no vital signs to compare")
    expect(
        got == expected,
        f"expected the {len(expected)} vital signs, got {len(got)} resources ({len(got - expected)} outside the grant)",
    )


@check(
    "smart_openid_id_token",
    "id_token is signed and valid now",
    f"{SMART}/scopes-and-launch-context.html#scopes-for-requesting-identity-data",
)
def openid_id_token(t: SmartTarget) -> None:
    """The id_token verifies with the server's JWKS; iss, sub, aud (the client) are present; iat is not in the future"""
    body = t.access("launch/patient openid fhirUser patient/*.rs")
    keys = KeySet.import_key_set(t.http.get(t.discovery()["jwks_uri"]).json())
    claims = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    for claim in ("iss", "sub", "aud", "exp", "iat", "fhirUser"):
        expect(claim in claims, f"id_token lacks {claim}")
    expect(claims["aud"] == t.client_id, f"aud {claims['aud']!r} is not the client {t.client_id!r}")
    now = time.time()
    expect(claims["iat"] <= now + 60, f"id_token iat is {claims['iat'] - now:.0f} s in the future")
    expect(claims["exp"] > now, "id_token has already expired")


@check(
    "smart_token_introspection",
    "Introspection reports an active token and an inactive one",
    "https://www.rfc-editor.org/rfc/rfc7662#section-2.2",
)
def token_introspection(t: SmartTarget) -> None:
    """An issued token introspects as active with scope, client_id and exp; an unknown one as active: false"""
    body = t.access("launch/patient patient/*.rs")
    url = t.discovery()["introspection_endpoint"]
    # The caller authenticates as a confidential client, or else with the token itself.
    caller: dict[str, Any] = {"auth": t.secret_auth} if t.secret_auth else {"headers": bearer(body)}
    info = t.http.post(url, data={"token": body["access_token"]}, **caller).json()
    expect(info.get("active") is True, f"an issued token introspects as {info}")
    for claim in ("scope", "client_id", "exp"):
        expect(claim in info, f"introspection lacks {claim}")
    unknown = t.http.post(url, data={"token": "not-a-token"}, **caller).json()
    expect(unknown.get("active") is False, f"an unknown token introspects as {unknown}")
