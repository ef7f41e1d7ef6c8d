"""The admin API under /_admin/: the sandbox's control surface for people, tests and CI.

Described by the OpenAPI document at /_admin/openapi.json (`simulator/openapi.py`); the Python
client is `simulator/admin_client.py`. Features add routes through `assembly.admin_routes()`.
When the server listens on a non-loopback address every route but `health` needs the admin token
(`Authorization: Bearer <token>`), printed at start-up or given with `--admin-token`.
"""

from __future__ import annotations

import bisect
import hmac
import logging
import secrets
from typing import Any

import orjson
import yaml
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

from simulator import __version__
from simulator.clock import fhir_instant
from simulator.dashboard import ASSETS as DASHBOARD_ASSETS
from simulator.dashboard import dashboard_routes
from simulator.faults import FaultSpecError, parse_duration
from simulator.fhir.jsonbody import MAX_DEPTH, too_deep
from simulator.fhir.values import ascii_int
from simulator.sandbox import Sandbox
from simulator.scenario import fault_problems, load_scenario, scenario_from_mapping
from simulator.verify import FILTER_KEYS, VerifyError, select, verify

log = logging.getLogger("ehrsim.admin")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Served without the admin token: the health check and the dashboard's files (no data in them).
PUBLIC_PATHS = frozenset({"/_admin/health", *DASHBOARD_ASSETS})


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json")


def admin_error(status: int, error: str, message: str) -> Response:
    """Admin errors are JSON `{"error": code, "message": text}` (the admin API is not FHIR)."""
    return json_response({"error": error, "message": message}, status)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, error: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.error = error


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if too_deep(data, raw):
        raise BadRequest(f"the JSON is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def admin_token(sandbox: Sandbox) -> str | None:
    """The token the admin API requires: given (`admin_token` option), or made up when the server
    listens beyond loopback (the CLI prints it); None on loopback without one."""
    token = sandbox.options.get("admin_token")
    if not token and str(sandbox.options.get("host", "127.0.0.1")) not in LOOPBACK:
        token = sandbox.options["admin_token"] = secrets.token_urlsafe(24)
    return str(token) if token else None


class AdminApi:
    def __init__(self, sandbox: Sandbox) -> None:
        from simulator import assembly

        self.sandbox = sandbox
        self.token = admin_token(sandbox)
        routes = [
            Route("/_admin/health", self.health, methods=["GET"]),
            Route("/_admin/openapi.json", self.openapi, methods=["GET"]),
            Route("/_admin/sites", self.sites, methods=["GET"]),
            Route("/_admin/scenario", self.scenario, methods=["GET", "PUT"]),
            Route("/_admin/reset", self.reset, methods=["POST"]),
            Route("/_admin/faults", self.faults, methods=["GET", "POST"]),
            # `path`: a fault id may contain "/" (sent as %2F, which the server decodes)
            Route("/_admin/faults/{fault_id:path}", self.fault, methods=["GET", "PATCH"]),
            Route("/_admin/faults/{fault_id:path}/{switch:str}", self.fault_switch, methods=["POST"]),
            Route("/_admin/rate-limits", self.rate_limits, methods=["GET"]),
            Route("/_admin/clock", self.clock, methods=["GET"]),
            Route("/_admin/clock/advance", self.advance, methods=["POST"]),
            Route("/_admin/journal", self.journal, methods=["GET", "DELETE"]),
            Route("/_admin/journal/export", self.export, methods=["GET"]),
            Route("/_admin/journal/verify", self.verify, methods=["POST"]),
            Route("/_admin/metrics", self.metrics, methods=["GET"]),
            *dashboard_routes(),
        ]
        self.feature_routes = list(assembly.admin_routes(sandbox))
        routes += self.feature_routes
        self.router = Router(routes=routes, default=self.not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.token
        if token is not None and scope["path"] not in PUBLIC_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                response = admin_error(
                    401, "unauthorized", "the admin API needs 'Authorization: Bearer <admin token>'"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="ehrsim-admin"'
                await response(scope, receive, send)
                return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            # With "app" in the scope a route raises HTTPException for a wrong method instead of
            # answering plain text, so the 405 below takes the admin API's shape.
            await self.router({**scope, "app": self}, receive, tracked)
        except BadRequest as exc:
            await admin_error(exc.status, exc.error, str(exc))(scope, receive, send)
        except HTTPException as exc:  # a wrong method (405), or Starlette refusing a request body
            if exc.status_code != 405:
                await admin_error(exc.status_code, "invalid_request", str(exc.detail))(scope, receive, send)
                return
            allowed = ", ".join(sorted((exc.headers or {}).get("Allow", "").split(", ")))  # a set: sort it
            response = admin_error(
                405,
                "method_not_allowed",
                f"{scope['method']} is not allowed on {scope['path']}; use {allowed}",
            )
            response.headers["Allow"] = allowed
            await response(scope, receive, send)
        except Exception:  # a bug, not bad input: still answer in the admin API's shape, and log it
            log.exception("unhandled error for %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await admin_error(500, "internal_error", "Internal error in ehrsim; see the server log")(
                scope, receive, send
            )

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await admin_error(
            404, "not_found", f"no admin endpoint at {scope['path']}; see /_admin/openapi.json"
        )(scope, receive, send)

    # -- sandbox -----------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        sandbox = self.sandbox
        return json_response(
            {
                "status": "ok",
                "version": __version__,
                "scenario": sandbox.scenario.name,
                "sites": len(sandbox.sites),
                "now": fhir_instant(sandbox.clock.now()),
            }
        )

    async def openapi(self, request: Request) -> Response:
        from simulator.openapi import openapi_document

        return json_response(openapi_document(self.feature_routes))

    async def sites(self, request: Request) -> Response:
        origin = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
        return json_response(self.sandbox.describe_sites(origin))

    async def scenario(self, request: Request) -> Response:
        if request.method == "GET":
            scenario = self.sandbox.scenario
            return json_response(
                {
                    "name": scenario.name,
                    "description": scenario.description,
                    "source": str(scenario.source) if scenario.source else None,
                    "seed": scenario.seed,
                    "definition": scenario.raw,
                }
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        try:
            if content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
                try:
                    data = yaml.safe_load(await request.body())
                except yaml.YAMLError as exc:
                    raise BadRequest(f"the body is not valid YAML: {exc}") from None
                except RecursionError:  # PyYAML's composer recurses once per level
                    raise BadRequest(f"the YAML is nested deeper than {MAX_DEPTH} levels") from None
                if too_deep(data):
                    raise BadRequest(f"the YAML is nested deeper than {MAX_DEPTH} levels")
                if not isinstance(data, dict):
                    raise BadRequest("a scenario must be a mapping at the top level")
                scenario = scenario_from_mapping(data)
            else:
                body = await json_body(request)
                if isinstance(body.get("name"), str) and "definition" not in body:
                    scenario = load_scenario(body["name"])
                elif isinstance(body.get("definition"), dict):
                    scenario = scenario_from_mapping(body["definition"])
                else:
                    raise BadRequest("give {'name': 'outage'} or {'definition': {...}} (or a YAML body)")
            await self.sandbox.reload(scenario)
        except ValueError as exc:  # a ScenarioError, or a feature refusing its part while building
            raise BadRequest(str(exc), 422, "invalid_scenario") from None
        return json_response({"status": "loaded", "scenario": scenario.name})

    async def reset(self, request: Request) -> Response:
        self.sandbox.reset()
        return json_response({"status": "reset", "scenario": self.sandbox.scenario.name})

    # -- faults ------------------------------------------------------------------------------------
    async def faults(self, request: Request) -> Response:
        engine = self.sandbox.faults
        if request.method == "GET":
            return json_response(engine.describe())
        body = await json_body(request)
        problems = fault_problems(body)
        if problems:
            raise BadRequest("; ".join(map(str, problems)), 422, "invalid_fault")
        try:
            fault = engine.add(body)
        except FaultSpecError as exc:
            raise BadRequest(str(exc), 422, "invalid_fault") from None
        return json_response(fault.to_mapping(), 201)

    def _fault(self, fault_id: str) -> Any:
        fault = self.sandbox.faults.faults.get(fault_id)
        if fault is None:
            known = ", ".join(self.sandbox.faults.faults) or "none"
            raise BadRequest(f"no fault '{fault_id}' (known: {known})", 404, "not_found")
        return fault

    async def fault(self, request: Request) -> Response:
        fault = self._fault(request.path_params["fault_id"])
        if request.method == "PATCH":
            body = await json_body(request)
            if not isinstance(body.get("enabled"), bool):
                raise BadRequest("PATCH takes {'enabled': true|false}")
            self.sandbox.faults.set_enabled(fault.id, body["enabled"])
        return json_response(fault.to_mapping())

    async def fault_switch(self, request: Request) -> Response:
        switch = request.path_params["switch"]
        if switch not in ("enable", "disable"):
            raise BadRequest(f"use .../enable or .../disable, not .../{switch}", 404, "not_found")
        fault = self._fault(request.path_params["fault_id"])
        self.sandbox.faults.set_enabled(fault.id, switch == "enable")
        return json_response(fault.to_mapping())

    async def rate_limits(self, request: Request) -> Response:
        return json_response(self.sandbox.rate_limits.describe())

    # -- clock -------------------------------------------------------------------------------------
    def _clock_state(self) -> dict[str, Any]:
        clock = self.sandbox.clock
        return {
            "now": fhir_instant(clock.now()),
            "start": fhir_instant(clock.start),
            "elapsed": round(clock.elapsed(), 6),
            "speed": clock.speed,
        }

    async def clock(self, request: Request) -> Response:
        return json_response(self._clock_state())

    async def advance(self, request: Request) -> Response:
        body = await json_body(request)
        value = body.get("seconds", body.get("duration"))
        if value is None:
            raise BadRequest("give {'seconds': 60} or {'duration': '5m'}")
        try:
            self.sandbox.clock.advance(parse_duration(value, "duration"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return json_response(self._clock_state())

    # -- journal -----------------------------------------------------------------------------------
    def _selected(self, request: Request) -> list[dict[str, Any]]:
        params = request.query_params
        unknown = sorted(set(params) - {*FILTER_KEYS, "limit", "offset", "after"})
        if unknown:
            raise BadRequest(f"unknown journal filter(s) {', '.join(unknown)}; use {', '.join(FILTER_KEYS)}")
        try:
            filters = {k: v for k, v in params.items() if k in FILTER_KEYS}
            return select(self._after(request), filters, self.sandbox.clock.start)
        except VerifyError as exc:
            raise BadRequest(str(exc)) from None

    def _after(self, request: Request) -> list[dict[str, Any]]:
        """The entries after the `after` seq (a poller asks for what is new since its last entry)."""
        entries = list(self.sandbox.journal)
        after = request.query_params.get("after")
        if after is None:
            return entries
        seq = ascii_int(after)
        if seq is None:
            raise BadRequest("after must be a journal seq (a non-negative integer)")
        return entries[bisect.bisect_right(entries, seq, key=lambda e: e["seq"]) :]

    def _page(self, request: Request, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit = request.query_params.get("limit")
        start = ascii_int(request.query_params.get("offset", "0"))
        size = ascii_int(limit) if limit is not None else 0
        if start is None or size is None:
            raise BadRequest("offset and limit must be non-negative integers")
        return entries[start : start + size] if limit is not None else entries[start:]

    async def journal(self, request: Request) -> Response:
        journal = self.sandbox.journal
        if request.method == "DELETE":
            journal.clear()
            return json_response(journal.stats())
        entries = self._selected(request)
        page = self._page(request, entries)
        return json_response(
            {**journal.stats(), "total": len(entries), "entries": [journal.exported(e) for e in page]}
        )

    async def export(self, request: Request) -> Response:
        journal = self.sandbox.journal
        entries = self._page(request, self._selected(request))
        return StreamingResponse(
            journal.ndjson(entries),
            media_type="application/x-ndjson",
            headers={"X-Ehrsim-Journal-Dropped": str(journal.dropped)},
        )

    async def verify(self, request: Request) -> Response:
        body = await json_body(request)
        try:
            return json_response(verify(self.sandbox.journal, body, self.sandbox.faults))
        except VerifyError as exc:
            raise BadRequest(str(exc)) from None

    async def metrics(self, request: Request) -> Response:
        return Response(
            self.sandbox.metrics.render(self.sandbox), media_type="text/plain; version=0.0.4; charset=utf-8"
        )
