"""Inferno's SMART App Launch / g(10) server checks (`conformance/smart_checks.py`) pass against ehrsim,
and each fails against a deliberately broken configuration: a setting or injected failure where
ehrsim has one, otherwise a layer that breaks the one behaviour the check is about on its way out
(a stand-in for a non-conformant server)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conformance.check import Check
from conformance.report import exit_code, junit_xml, text
from conformance.runner import run_checks
from conformance.smart_checks import SMART_CHECKS, SmartTarget, run_smart_checks
from simulator.auth import auth_layer
from simulator.site import Site
from simulator.testing import RunningServer
from tests.smart_support import TIMEOUT, auth_scenario, serve_auth

WALL_CLOCK = {"start": "now", "speed": 1.0}  # checks compare token times with their own clock


def scenario(**auth: Any) -> Any:
    return auth_scenario(auth, clock=WALL_CLOCK, patients=2)


# -- breakers: layers that make one behaviour non-conformant -----------------------------------------
Edit = Callable[[str, int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


def breaking(edit_request: Callable[[Scope], None] | None = None, edit_response: Edit | None = None) -> Any:
    def layer(app: ASGIApp, site: Site, sandbox: Any) -> ASGIApp:
        async def broken(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            if edit_request is not None:
                edit_request(scope)
            if edit_response is None:
                await app(scope, receive, send)
                return
            start: Message = {}
            chunks: list[bytes] = []

            async def collect(message: Message) -> None:
                nonlocal start
                if message["type"] == "http.response.start":
                    start = message
                else:
                    chunks.append(message.get("body", b""))

            await app(scope, receive, collect)
            headers = {k.decode(): v.decode() for k, v in start["headers"]}
            status, headers, body = edit_response(
                scope["ehrsim.subpath"], start["status"], headers, b"".join(chunks)
            )
            headers["content-length"] = str(len(body))
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                }
            )
            await send({"type": "http.response.body", "body": body})

        return broken

    return layer


def on_path(path: str, edit: Edit) -> Edit:
    return lambda p, status, headers, body: (
        edit(p, status, headers, body) if p == path else (status, headers, body)
    )


def plain_content_type(p: str, status: int, headers: dict, body: bytes) -> tuple:
    return status, {**headers, "content-type": "text/plain"}, body


def drop_state(p: str, status: int, headers: dict, body: bytes) -> tuple:
    if "location" in headers:
        base, _, query = headers["location"].partition("?")
        headers["location"] = base + "?" + urlencode([(k, v) for k, v in parse_qsl(query) if k != "state"])
    return status, headers, body


def cacheable(p: str, status: int, headers: dict, body: bytes) -> tuple:
    return status, {k: v for k, v in headers.items() if k not in ("cache-control", "pragma")}, body


def accept_everything(p: str, status: int, headers: dict, body: bytes) -> tuple:
    if status == 400:
        fake = {
            "access_token": "accepted",
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "patient/*.rs",
        }
        return 200, headers, orjson.dumps(fake)
    return status, headers, body


def forbidden_to_ok(p: str, status: int, headers: dict, body: bytes) -> tuple:
    if status == 403:
        return (
            200,
            headers,
            orjson.dumps({"resourceType": "Bundle", "type": "searchset", "total": 0, "link": []}),
        )
    return status, headers, body


def always_inactive(p: str, status: int, headers: dict, body: bytes) -> tuple:
    return status, headers, orjson.dumps({"active": False})


def rewrite_query(change: Callable[[str, str], str]) -> Callable[[Scope], None]:
    def edit(scope: Scope) -> None:
        if scope["ehrsim.subpath"] == "/auth/authorize":
            items = parse_qsl(scope["query_string"].decode(), keep_blank_values=True)
            scope["query_string"] = urlencode([(k, change(k, v)) for k, v in items]).encode()

    return edit


def plain_as_s256(key: str, value: str) -> str:
    return "S256" if key == "code_challenge_method" and value == "plain" else value


def ignore_granular(key: str, value: str) -> str:
    return " ".join(s.split("?")[0] for s in value.split()) if key == "scope" else value


def with_breaker(layer: Any) -> dict[str, Any]:
    return {"scenario": scenario(), "layers": [layer, auth_layer]}


BROKEN: dict[str, dict[str, Any]] = {
    "smart_well_known_endpoint": with_breaker(
        breaking(edit_response=on_path("/.well-known/smart-configuration", plain_content_type))
    ),
    "smart_well_known_capabilities": {
        "scenario": scenario(discovery={"code_challenge_methods_supported": ["S256", "plain"]})
    },
    "smart_metadata_oauth_uris": {
        "scenario": scenario(discovery={"token_endpoint": "http://elsewhere.example/token"})
    },
    "smart_code_received": with_breaker(breaking(edit_response=drop_state)),
    "smart_token_response_body": {"scenario": scenario(failures=[{"type": "missing_patient_context"}])},
    "smart_token_response_headers": with_breaker(breaking(edit_response=on_path("/auth/token", cacheable))),
    "smart_pkce_incorrect_verifier": with_breaker(
        breaking(edit_response=on_path("/auth/token", accept_everything))
    ),
    "smart_pkce_plain_rejected": with_breaker(breaking(edit_request=rewrite_query(plain_as_s256))),
    "smart_token_refresh": {"scenario": scenario(failures=[{"type": "expired_refresh_token"}])},
    "smart_invalid_refresh_token": with_breaker(
        breaking(edit_response=on_path("/auth/token", accept_everything))
    ),
    "smart_unauthorized_access": {"scenario": scenario(required=False)},
    "g10_restricted_resource_type_access": with_breaker(breaking(edit_response=forbidden_to_ok)),
    "g10_granular_scope_subset": with_breaker(breaking(edit_request=rewrite_query(ignore_granular))),
    "smart_openid_id_token": {"scenario": scenario(failures=[{"type": "clock_skew", "seconds": 900}])},
    "smart_token_introspection": with_breaker(
        breaking(edit_response=on_path("/auth/introspect", always_inactive))
    ),
}


# What each check must say when it fails there, so that it fails for the right reason.
FAILS_WITH = {
    "smart_well_known_endpoint": "expected Content-Type application/json",
    "smart_well_known_capabilities": "must not include plain",
    "smart_metadata_oauth_uris": "!= http://elsewhere.example/token",
    "smart_code_received": "state None != sent",
    "smart_token_response_body": "no patient",
    "smart_token_response_headers": "lacks no-store",
    "smart_pkce_incorrect_verifier": "got 200",
    "smart_pkce_plain_rejected": "issued a code for code_challenge_method=plain",
    "smart_token_refresh": "refresh failed: 400",
    "smart_invalid_refresh_token": "expected 400, got 200",
    "smart_unauthorized_access": "expected 401 without a token, got 200",
    "g10_restricted_resource_type_access": "expected 403 for Condition, got 200",
    "g10_granular_scope_subset": "outside the grant",
    "smart_openid_id_token": "in the future",
    "smart_token_introspection": "introspects as {'active': False}",
}


@pytest.fixture(scope="module")
def conformant() -> Iterator[RunningServer]:
    with serve_auth(scenario()) as server:
        yield server


def test_every_check_has_a_broken_configuration() -> None:
    assert sorted(BROKEN) == sorted(FAILS_WITH) == sorted(c.id for c in SMART_CHECKS)


@pytest.mark.parametrize("check", SMART_CHECKS, ids=lambda c: c.id)
def target(server: RunningServer, http: httpx.Client) -> SmartTarget:
    return SmartTarget(server.fhir_base, http, secret_auth=("confidential-app", "s3cret"))


@pytest.mark.parametrize("check", SMART_CHECKS, ids=lambda c: c.id)
def test_check_passes_against_ehrsim(conformant: RunningServer, check: Check) -> None:
    with httpx.Client(timeout=TIMEOUT) as http:
        (result,) = run_checks(target(conformant, http), [check])
    assert (result.status, result.message) == ("passed", "")


@pytest.mark.parametrize("check", SMART_CHECKS, ids=lambda c: c.id)
def test_check_fails_against_a_broken_configuration(check: Check) -> None:
    broken = BROKEN[check.id]
    with (
        serve_auth(broken["scenario"], layers=broken.get("layers")) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        (result,) = run_checks(target(server, http), [check])
    assert result.status == "failed"
    assert FAILS_WITH[check.id] in result.message


def test_run_smart_checks_reports_like_the_rest_of_the_suite(conformant: RunningServer) -> None:
    results = run_smart_checks(conformant.fhir_base, secret_auth=("confidential-app", "s3cret"))
    assert f"{len(SMART_CHECKS)} passed, 0 failed, 0 skipped" in text(results)
    assert exit_code(results) == 0
    suite = ET.fromstring(junit_xml(results))
    assert (suite.get("tests"), suite.get("failures")) == (str(len(SMART_CHECKS)), "0")
    assert {case.get("classname") for case in suite} == {"ehrsim-conformance.smart"}


def unknown_sign_in_page(p: str, status: int, headers: dict, body: bytes) -> tuple:
    return status, headers, b"<html><body>Log in with your hospital account</body></html>"


def test_flow_checks_skip_on_a_sign_in_page_they_cannot_fill_in() -> None:
    layers = [breaking(edit_response=on_path("/auth/authorize", unknown_sign_in_page)), auth_layer]
    with serve_auth(scenario(), layers=layers) as server, httpx.Client(timeout=TIMEOUT) as http:
        results = {r.check.id: r for r in run_checks(target(server, http), SMART_CHECKS)}
    assert results["smart_code_received"].status == "skipped"
    assert "asks a person to sign in" in results["smart_code_received"].message
    assert results["smart_well_known_endpoint"].status == "passed"


def test_cli_runs_the_smart_checks_against_the_token_expiry_scenario(tmp_path: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from simulator.scenario import load_scenario

    report = tmp_path / "smart.xml"
    with serve_auth(load_scenario("token-expiry")) as server:
        unknown = subprocess.run(
            [
                sys.executable,
                "-m",
                "simulator",
                "conformance",
                "smart",
                "--fhir-base",
                server.fhir_base,
                "--client-id",
                "nobody",
            ],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "simulator",
                "conformance",
                "smart",
                "--fhir-base",
                server.fhir_base,
                "--client-id",
                "ehrsim-public-app",
                "--confidential",
                "ehrsim-confidential-app:ehrsim-sandbox-secret",
                "--junit",
                str(report),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert unknown.returncode == 1 and "FAIL smart_code_received" in unknown.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(SMART_CHECKS)} passed, 0 failed, 0 skipped" in result.stdout
    assert ET.fromstring(report.read_bytes()).get("tests") == str(len(SMART_CHECKS))
