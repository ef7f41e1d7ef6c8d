"""The OpenAPI 3.1 document of the admin API, served at /_admin/openapi.json."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Route

from simulator import __version__
from simulator.verify import CHECKS

_JSON = "application/json"


def _ok(description: str, schema: dict[str, Any] | None = None, media: str = _JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": _ok("Bad input: the message says what to change", _ERROR),
    "401": _ok("Admin token missing or wrong (servers bound beyond loopback)", _ERROR),
}


def _op(
    summary: str, responses: dict[str, Any], body: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **_ERRORS}, **extra}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": body}}}
    return op


_FILTERS = [
    {"name": key, "in": "query", "required": False, "schema": {"type": "string"}, "description": desc}
    for key, desc in {
        "site": "site id (glob)",
        "protocol": "fhir, auth, mllp, outbound (glob)",
        "kind": "http, message, ack, delivery (glob)",
        "method": "HTTP method (glob)",
        "path": "path below the site's FHIR base (glob), e.g. /Observation*",
        "resource_type": "FHIR resource type (glob)",
        "interaction": "read, vread, search, create, update, patch, delete, history, batch, ... (glob)",
        "client_id": "OAuth client id or source address (glob)",
        "outcome": "what a fault or limit did instead, e.g. hang, rate_limited (glob)",
        "message_type": "MLLP message type, e.g. ORU^R01 (glob)",
        "control_id": "MLLP MSH-10; a resend repeats it (glob)",
        "ack_code": "MLLP acknowledgment code: AA, AE, AR, CA, resent, ... (glob)",
        "status": "status codes or classes, comma separated: 429,5xx",
        "fault": "id of a fault that applied",
        "since": "simulated seconds since the clock start, or an ISO instant of simulated time (inclusive)",
        "until": "simulated seconds since the clock start, or an ISO instant of simulated time (inclusive)",
    }.items()
] + [
    {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
    {
        "name": "after",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
        "description": "only entries with a higher seq (what is new since a poller's last entry)",
    },
]

_FAULT_ID = [
    {
        "name": "fault_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "percent-encoded (a '/' in an id as %2F)",
    }
]


def feature_paths(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """Entries for routes that features add (`assembly.admin_routes`), from their docstrings."""
    paths: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        doc = (route.endpoint.__doc__ or route.name or "").strip()
        summary = doc.splitlines()[0] if doc else route.path
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _op(
                summary, {"200": _ok("see the feature's docs")}
            )
    return paths


def openapi_document(extra_routes: Iterable[BaseRoute] = ()) -> dict[str, Any]:
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "ehrsim admin API",
            "version": __version__,
            "description": "Control and observe an ehrsim sandbox: scenario, clock, faults, rate limits, "
            "journal queries and verification. Python client: simulator.admin_client.AdminClient.",
        },
        "security": [{}, {"adminToken": []}],
        "paths": {
            "/_admin/health": {
                "get": _op("Liveness, version, scenario and simulated now", {"200": _ok("ok")})
            },
            "/_admin/openapi.json": {"get": _op("This document", {"200": _ok("OpenAPI 3.1")})},
            "/_admin/ui": {
                "get": {
                    "summary": "The web dashboard (HTML; its script asks for the admin token if needed)",
                    "security": [{}],
                    "responses": {"200": _ok("the page", {"type": "string"}, "text/html")},
                }
            },
            "/_admin/sites": {
                "get": _op("Each site's FHIR base and description", {"200": _ok("sites", {"type": "array"})})
            },
            "/_admin/scenario": {
                "get": _op("The loaded scenario (resolved definition)", {"200": _ok("scenario")}),
                "put": _op(
                    "Load another scenario (resets everything): {name} of a shipped one or a .yaml file path "
                    "the server can read, {definition}, or a YAML body",
                    {
                        "200": _ok("loaded"),
                        "422": _ok("The scenario is invalid; every problem is listed", _ERROR),
                    },
                    {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "definition": {"type": "object"}},
                    },
                ),
            },
            "/_admin/reset": {
                "post": _op(
                    "Data, clock, journal, faults, buckets, MLLP memory and SMART clients and tokens back to the start",
                    {"200": _ok("reset")},
                )
            },
            "/_admin/faults": {
                "get": _op("Faults with hit counts", {"200": _ok("faults", {"type": "array"})}),
                "post": _op(
                    "Add a fault at runtime (same shape as in a scenario file)",
                    {"201": _ok("the fault"), "422": _ok("The fault is invalid", _ERROR)},
                    {"$ref": "https://ehrsim.dev/schema/fault.schema.json"},
                ),
            },
            "/_admin/faults/{fault_id}": {
                "get": _op(
                    "One fault",
                    {"200": _ok("the fault"), "404": _ok("No such fault", _ERROR)},
                    parameters=_FAULT_ID,
                ),
                "patch": _op(
                    "Enable or disable a fault",
                    {"200": _ok("the fault"), "404": _ok("No such fault", _ERROR)},
                    {
                        "type": "object",
                        "required": ["enabled"],
                        "properties": {"enabled": {"type": "boolean"}},
                    },
                    parameters=_FAULT_ID,
                ),
            },
            "/_admin/faults/{fault_id}/enable": {
                "post": _op(
                    "Enable a fault",
                    {"200": _ok("the fault"), "404": _ok("No such fault", _ERROR)},
                    parameters=_FAULT_ID,
                )
            },
            "/_admin/faults/{fault_id}/disable": {
                "post": _op(
                    "Disable a fault",
                    {"200": _ok("the fault"), "404": _ok("No such fault", _ERROR)},
                    parameters=_FAULT_ID,
                )
            },
            "/_admin/rate-limits": {
                "get": _op(
                    "Rate limits with their buckets per client", {"200": _ok("limits", {"type": "array"})}
                )
            },
            "/_admin/clock": {
                "get": _op("Simulated now, start, elapsed seconds, speed", {"200": _ok("clock")})
            },
            "/_admin/clock/advance": {
                "post": _op(
                    "Move simulated time forward",
                    {"200": _ok("clock")},
                    {
                        "type": "object",
                        "properties": {
                            "seconds": {"type": "number", "minimum": 0},
                            "duration": {"type": "string", "examples": ["5m"]},
                        },
                    },
                )
            },
            "/_admin/journal": {
                "get": _op(
                    "Query the journal",
                    {"200": _ok("entries with size, capacity, dropped, clears, total")},
                    parameters=_FILTERS,
                ),
                "delete": _op("Empty the journal", {"200": _ok("journal stats")}),
            },
            "/_admin/journal/export": {
                "get": _op(
                    "Matching entries as NDJSON (header X-Ehrsim-Journal-Dropped)",
                    {"200": _ok("NDJSON", {"type": "string"}, "application/x-ndjson")},
                    parameters=_FILTERS,
                )
            },
            "/_admin/journal/verify": {
                "post": _op(
                    "Run a verification check over the journal",
                    {"200": _ok("{ok, ...details}")},
                    {
                        "type": "object",
                        "required": ["check"],
                        "properties": {
                            "check": {"enum": list(CHECKS)},
                            "filter": {"type": "object", "description": "journal filter fields"},
                            "at_least": {"type": "integer"},
                            "at_most": {"type": "integer"},
                            "exactly": {"type": "integer"},
                            "sequence": {"type": "array", "items": {"type": "object"}},
                            "min_gap": {"type": "number"},
                            "backoff": {"type": "number"},
                            "key": {"type": "string"},
                            "fault": {"type": "string"},
                            "window": {
                                "type": "object",
                                "properties": {"from": {"type": "number"}, "to": {"type": "number"}},
                            },
                            "clock": {"enum": ["sim", "wall"]},
                        },
                    },
                )
            },
            "/_admin/metrics": {
                "get": _op(
                    "Prometheus text metrics", {"200": _ok("metrics", {"type": "string"}, "text/plain")}
                )
            },
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
    }
    for path, operations in feature_paths(extra_routes).items():
        document["paths"].setdefault(path, {}).update(operations)
    return document
