"""The journaling layer: the outermost layer around each site; records every HTTP exchange.

It also builds the request's context once for the layers inside it (faults, rate limits, auth):

    scope["ehrsim.request"]  the attributes faults match on: protocol, method, path, resource_type,
                             interaction, client_id, headers (lower-case names)
    scope["ehrsim.entry"]    the journal entry being built (None when the journal is off); inner
                             layers add `faults`, `outcome`, `retry_after` to it

The entry is recorded just before the last byte of the response is sent, so a client that holds a
response can always find its entry; an exchange without a complete response (hang, reset,
disconnect) is recorded when it ends, with `status` None if nothing was sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator.faults.http import transport_of
from simulator.fhir.bulk import BULK_PATH, file_type
from simulator.fhir.paging import is_page_query

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox
    from simulator.site import Site

log = logging.getLogger("ehrsim.requests")

# Request headers copied into the journal (never Authorization: the journal is exported).
JOURNALED_REQUEST_HEADERS = (
    "content-type",
    "prefer",
    "if-match",
    "if-none-exist",
    "if-none-match",
    "user-agent",
    "x-request-id",
)
JOURNALED_RESPONSE_HEADERS = (
    b"retry-after",
    b"location",
    b"content-location",  # a $export kick-off's status URL
    b"x-progress",
    b"etag",
    b"www-authenticate",
)
_RESPONSE_HEADER_NAMES = frozenset(JOURNALED_RESPONSE_HEADERS)
_WRITES = frozenset(("POST", "PUT", "PATCH", "DELETE"))

# (scope, site, sandbox) -> client id or None; features such as SMART register one in assembly.
ClientResolver = Callable[[Scope, "Site", "Sandbox"], "str | None"]


def classify(method: str, subpath: str, query: str) -> tuple[str | None, str]:
    """(resource type, interaction) of a FHIR request; interaction names are documented in
    scenarios/README.md (read, vread, search, create, update, patch, delete, history, ...)."""
    parts = [p for p in subpath.split("/") if p]
    n = len(parts)
    if n == 0:
        if method == "POST":
            return None, "batch"
        return None, "page" if "_getpages" in query else "search"
    head = parts[0]
    if head == "metadata":
        return None, "capabilities"
    if head == BULK_PATH:  # a $export job's status URL, or one of its NDJSON files (by type)
        return (None, "bulk-status") if n <= 2 else (file_type(parts[2]), "bulk-file")
    if head == "_history":
        return None, "history"
    if head.startswith("$"):
        return None, "operation"
    if not head[:1].isupper():
        return None, "other"
    if n == 1:
        if method == "GET" and is_page_query(query):  # vendor styles page at [type]?sessionID=...
            return head, "page"
        return head, {"GET": "search", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(
            method, "other"
        )
    second = parts[1]
    if second == "_search":
        return head, "search"
    if second == "_history":
        return head, "history"
    if second.startswith("$") or (n == 3 and parts[2].startswith("$")):
        return head, "operation"
    if n == 2:
        return head, {
            "GET": "read",
            "HEAD": "read",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(method, "other")
    if n == 3 and parts[2] == "_history":
        return head, "history"
    if n == 4 and parts[2] == "_history":
        return head, "vread"
    return head, "other"


def protocol_of(subpath: str, prefixes: tuple[tuple[str, str], ...]) -> str:
    for prefix, protocol in prefixes:
        if subpath == prefix or subpath.startswith(prefix.rstrip("/") + "/"):
            return protocol
    return "fhir"


class JournalLayer:
    def __init__(self, app: ASGIApp, site: Site, sandbox: Sandbox) -> None:
        from simulator import assembly

        self.app = app
        self.site = site
        self.sandbox = sandbox
        self.prefixes = tuple(assembly.protocol_prefixes().items())
        self.resolvers: list[ClientResolver] = assembly.client_resolvers()

    def client_id(self, scope: Scope) -> str | None:
        for resolve in self.resolvers:
            found = resolve(scope, self.site, self.sandbox)
            if found:
                return found
        client = scope.get("client")
        return client[0] if client else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sandbox = self.sandbox
        journal = sandbox.journal
        method = scope["method"]
        subpath = scope.get("ehrsim.subpath", "")
        query = scope.get("query_string", b"").decode("latin-1")
        raw_headers = scope["headers"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
        scope["ehrsim.headers"] = (raw_headers, headers)  # fhir.api.header() reuses it
        resource_type, interaction = classify(method, subpath, query)
        client_id = self.client_id(scope)
        protocol = protocol_of(subpath, self.prefixes)
        scope["ehrsim.request"] = {
            "protocol": protocol,
            "method": method,
            "path": subpath,
            "resource_type": resource_type,
            "interaction": interaction,
            "client_id": client_id,
            "headers": headers,
        }
        correlation = headers.get("x-request-id") or journal.correlation_id()
        started = time.perf_counter()
        entry: dict[str, Any] | None = None
        if journal.enabled:
            entry = {
                "protocol": protocol,
                "kind": "http",
                "site": self.site.id,
                "client_id": client_id,
                "correlation_id": correlation,
                "method": method,
                "path": subpath,
                "query": query,
                "resource_type": resource_type,
                "interaction": interaction,
                "status": None,
                "request_bytes": 0,
                "response_bytes": 0,
                "faults": (),
                "sim": sandbox.clock.elapsed(),
            }
            picked = tuple((k, headers[k]) for k in JOURNALED_REQUEST_HEADERS if k in headers)
            if picked:
                entry["request_headers"] = picked
        scope["ehrsim.entry"] = entry
        scope["ehrsim.transport"] = transport_of(send)  # for connection-level faults (hang, reset)
        keep_bodies = entry is not None and (
            journal.bodies == "all" or (journal.bodies == "writes" and method in _WRITES)
        )
        request_chunks: list[bytes] = []
        response_chunks: list[bytes] = []
        status_box = [0]
        sizes = [0, 0]
        correlation_header = (b"x-correlation-id", correlation.encode("latin-1"))

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                sizes[0] += len(body)
                if keep_bodies and body:
                    request_chunks.append(body)
            return message

        finished = [False]

        def finish() -> None:
            """Record once: before the last body byte leaves (so a client holding the response can
            find its entry), or when the exchange ends without one (hang, reset, disconnect)."""
            finished[0] = True
            seconds = time.perf_counter() - started
            status = status_box[0] or None
            sandbox.metrics.observe_request(self.site.id, status, seconds)
            if entry is not None:
                entry["status"] = status
                entry["request_bytes"] = sizes[0]
                entry["response_bytes"] = sizes[1]
                entry["duration_ms"] = round(seconds * 1000, 3)
                if keep_bodies:
                    entry["request_body"] = b"".join(request_chunks)
                    entry["response_body"] = b"".join(response_chunks)
                journal.record(entry)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s%s %s %.1fms",
                    method,
                    self.site.base_path,
                    subpath,
                    status,
                    seconds * 1000,
                    extra={
                        "site": self.site.id,
                        "client_id": client_id,
                        "correlation_id": correlation,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "faults": entry["faults"] if entry is not None else None,
                    },
                )

        async def send_counted(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                status_box[0] = message["status"]
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), correlation_header]
                if entry is not None:
                    picked = tuple(
                        (k.decode("latin-1").lower(), v.decode("latin-1"))
                        for k, v in message["headers"]
                        if k in _RESPONSE_HEADER_NAMES or k.lower() in _RESPONSE_HEADER_NAMES
                    )
                    if picked:
                        entry["response_headers"] = picked
            elif kind == "http.response.body":
                body = message.get("body", b"")
                sizes[1] += len(body)
                if keep_bodies and body:
                    response_chunks.append(body)
                if not message.get("more_body", False) and not finished[0]:
                    finish()
            await send(message)

        try:
            await self.app(scope, receive_counted, send_counted)
        finally:
            if not finished[0]:
                finish()


def journal_layer(app: ASGIApp, site: Site, sandbox: Sandbox) -> ASGIApp:
    return JournalLayer(app, site, sandbox)
