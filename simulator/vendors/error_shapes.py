"""Error bodies in the vendor's shape: its issue codes and wording, or a non-FHIR envelope.

Every 4xx/5xx that leaves a vendor site passes here. Rules in the profile's `quirks.errors` match a
status (`404`, or a class such as `4xx`) and optionally the core issue's `code`; a rule either
replaces the issues with its own template(s) or replaces the whole body with an `envelope` (MEDITECH's
`{"resource": ..., "detail": ...}`), or with any JSON value (`json`), optionally setting headers
(`headers`, e.g. Epic's WWW-Authenticate). Errors no rule matches keep ehrsim's diagnostics but take the
vendor's code for their issue type (`quirks.outcome.codes`) and its severity words.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator.fhir.api import error_response
from simulator.fhir.errors import FHIRError
from simulator.site import Site
from simulator.vendors.asgi import FHIR_JSON, respond
from simulator.vendors.outcomes import fill, operation_outcome, render_issue, restyle_issue
from simulator.vendors.quirks import quirks_of


def rule_for(rules: list[dict[str, Any]], status: int, code: str | None) -> dict[str, Any] | None:
    for rule in rules:
        when = rule.get("when") or {}
        wanted = str(when.get("status", ""))
        if wanted and wanted != str(status) and not (wanted.endswith("xx") and str(status)[0] == wanted[0]):
            continue
        if when.get("code") and when["code"] != code:
            continue
        return rule
    return None


def reshape(body: Any, status: int, quirks: dict[str, Any]) -> tuple[Any, str]:
    """The vendor's error body (and its content type) for an ehrsim error body."""
    outcome = quirks.get("outcome") or {}
    issues = body.get("issue", []) if isinstance(body, dict) else []
    first = issues[0] if issues else {}
    rule = rule_for(quirks.get("errors") or [], status, _first_code(body))
    fields = {
        "status": status,
        "reason": _reason(status),
        "diagnostics": first.get("diagnostics", ""),
        "code": first.get("code", ""),
    }
    if rule and "envelope" in rule:
        envelope = {k: fill(str(v), fields) for k, v in rule["envelope"].items()}
        return envelope, str(rule.get("content_type", "application/json"))
    if rule and "json" in rule:  # any JSON value, e.g. Epic's 401 body: the empty string ""
        return rule["json"], str(rule.get("content_type", "application/json"))
    if rule and "issue" in rule:
        return operation_outcome([render_issue(rule["issue"], outcome, **fields)]), FHIR_JSON
    return operation_outcome([restyle_issue(i, outcome) for i in issues]), FHIR_JSON


def _first_code(body: Any) -> str | None:
    issues = body.get("issue") if isinstance(body, dict) else None
    return issues[0].get("code") if issues and isinstance(issues[0], dict) else None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def render_error(site: Site, error: FHIRError) -> Response:
    """An error made outside the FHIR API (a fault, a rate limit) in the site's vendor shape."""
    quirks = quirks_of(site)
    body = error.outcome()
    if not quirks:
        return error_response(error)
    shaped, content_type = reshape(body, error.status, quirks)
    headers = dict(error.headers)
    rule = rule_for(quirks.get("errors") or [], error.status, _first_code(body))
    headers.update({name: str(value) for name, value in ((rule or {}).get("headers") or {}).items()})
    return Response(orjson.dumps(shaped), status_code=error.status, headers=headers, media_type=content_type)


class ErrorShapes:
    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app, self.site = app, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        quirks = quirks_of(self.site)
        if not quirks:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def watch(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    await send(message)  # successes stream through untouched
                else:
                    start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_error(send, start, b"".join(chunks), quirks)

        await self.app(scope, receive, watch)

    async def _send_error(self, send: Send, start: Message, body: bytes, quirks: dict[str, Any]) -> None:
        headers = list(start.get("headers", []))
        kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
        if b"json" not in kind:  # e.g. an HTML page a quirk already chose: leave it
            await respond(send, start["status"], body, None, headers)
            return
        try:
            data = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            data = {}
        shaped, content_type = reshape(data, start["status"], quirks)
        rule = rule_for(quirks.get("errors") or [], start["status"], _first_code(data))
        for name, value in ((rule or {}).get("headers") or {}).items():
            key = name.lower().encode()
            headers = [(k, v) for k, v in headers if k.lower() != key] + [(key, str(value).encode())]
        await respond(send, start["status"], orjson.dumps(shaped), content_type, headers)
