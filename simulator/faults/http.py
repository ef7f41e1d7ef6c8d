"""HTTP fault actions, applied as a layer around each site's app (inside the journal layer).

The layer asks the engine once per request (`protocol` from the request context: `fhir`, or `auth`
for the SMART endpoints), records the fault ids in the journal entry, applies the actions below in
scenario order, and leaves every decision in `scope["ehrsim.faults"]` so inner layers (auth,
vendor profile) can apply actions this module does not know (e.g. `switch_profile`, `invalid_client`).

| action         | what the client sees                                                         |
|----------------|------------------------------------------------------------------------------|
| status         | `status` (default 500) with an OperationOutcome (`code`, `diagnostics`)       |
| throttle       | 429 with `Retry-After` and an OperationOutcome                                |
| outage         | 503 with `Retry-After` (default: until the window closes); `mode: refuse`     |
|                | resets the connection instead (a closed listener, as seen by the client)      |
| latency        | the real response, `delay` seconds late (fixed, uniform or lognormal)        |
| hang           | nothing for `delay` seconds (default 30), then the connection closes          |
| reset          | headers and part of the body, then a TCP reset                               |
| empty          | `status` (default 200) with an empty body                                    |
| truncate       | the real response cut to `fraction` (default 0.5) of its body               |
| malformed      | the real status with a corrupted (non-JSON) body                             |
| slow_body      | the real response dribbled `chunk` bytes every `interval` seconds            |
| revoke_token   | 401 with `WWW-Authenticate: Bearer error="invalid_token"`                     |
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator.faults.engine import FaultDecision
from simulator.faults.schedule import parse_duration
from simulator.fhir.api import error_response
from simulator.fhir.errors import FHIRError

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox
    from simulator.site import Site

HTTP_ACTIONS = frozenset(
    (
        "status",
        "throttle",
        "outage",
        "latency",
        "hang",
        "reset",
        "empty",
        "truncate",
        "malformed",
        "slow_body",
        "revoke_token",
    )
)


# A feature that shapes a site's errors (a vendor profile) sets `site.extras[ERROR_RENDERER]` to a
# callable (FHIRError) -> Response; errors made by faults and rate limits are answered through it.
ERROR_RENDERER = "error_renderer"


def site_error_response(site: Site, error: FHIRError) -> Response:
    """The error as this site answers errors: its renderer's shape, else an OperationOutcome."""
    render = site.extras.get(ERROR_RENDERER)
    return render(error) if render is not None else error_response(error)


def retry_after_seconds(value: Any, decision: FaultDecision, default: float) -> int:
    """`Retry-After` in whole seconds (ceiling): explicit, else until the fault window closes."""
    if value is not None:
        return math.ceil(parse_duration(value, "retry_after"))
    if decision.until is not None:
        return max(1, math.ceil(decision.until))
    return math.ceil(default)


def transport_of(send: Send) -> asyncio.Transport | None:
    """The connection's transport: uvicorn's send callable is a method of its request cycle."""
    return getattr(getattr(send, "__self__", None), "transport", None)


async def reset_connection(transport: asyncio.Transport | None) -> None:
    """Close with a TCP RST (SO_LINGER 0) rather than a FIN."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0)  # let the server see the disconnect before the app returns


async def _buffered(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message, bytes]:
    """Run the app and collect its whole response (for actions that rewrite the body)."""
    start: Message = {"type": "http.response.start", "status": 500, "headers": []}
    chunks: list[bytes] = []

    async def collect(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, collect)
    return start, b"".join(chunks)


def _with_length(start: Message, length: int) -> Message:
    headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**start, "headers": headers}


class FaultLayer:
    def __init__(self, app: ASGIApp, site: Site, sandbox: Sandbox) -> None:
        self.app = app
        self.site = site
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = scope.get("ehrsim.request")
        if scope["type"] != "http" or request is None:
            await self.app(scope, receive, send)
            return
        decisions = self.sandbox.faults.decide(request["protocol"], self.site.id, request)
        if not decisions:
            await self.app(scope, receive, send)
            return
        scope["ehrsim.faults"] = decisions
        entry = scope.get("ehrsim.entry")
        if entry is not None:
            entry["faults"] = tuple(d.fault_id for d in decisions)
        for decision in decisions:
            if decision.action == "latency":
                await asyncio.sleep(decision.delay)
        terminal = next((d for d in decisions if d.action in HTTP_ACTIONS and d.action != "latency"), None)
        if terminal is None:
            await self.app(scope, receive, send)
            return
        if entry is not None:
            entry["outcome"] = terminal.action
        await self.apply(terminal, scope, receive, send)

    async def apply(self, decision: FaultDecision, scope: Scope, receive: Receive, send: Send) -> None:
        params = decision.params
        action = decision.action
        transport = scope.get("ehrsim.transport")
        if action in ("status", "throttle", "outage", "revoke_token"):
            if action == "outage" and params.get("mode") == "refuse":
                await reset_connection(transport)
                return
            await site_error_response(self.site, self.error(decision))(scope, receive, send)
        elif action == "hang":
            seconds = decision.delay if "delay" in params else 30.0
            await asyncio.sleep(seconds)
            if transport is not None:
                transport.close()
                await asyncio.sleep(0)  # let the server see the disconnect before the app returns
        elif action == "empty":
            status = int(params.get("status", 200))
            await send(
                {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]}
            )
            await send({"type": "http.response.body", "body": b""})
        elif action in ("reset", "truncate", "malformed"):
            start, body = await _buffered(self.app, scope, receive)
            if action == "malformed":
                body = (
                    str(params.get("body", "")).encode()
                    or body[: len(body) // 2] + b"\x00<html>502 Bad Gateway"
                )
                await send(_with_length(start, len(body)))
                await send({"type": "http.response.body", "body": body})
                return
            cut = int(len(body) * float(params.get("fraction", 0.5)))
            if action == "truncate":
                await send(_with_length(start, cut))
                await send({"type": "http.response.body", "body": body[:cut]})
                return
            await send(_with_length(start, len(body)))
            await send({"type": "http.response.body", "body": body[:cut], "more_body": True})
            await asyncio.sleep(0.05)  # let the partial body leave before the reset discards it
            await reset_connection(transport)
        elif action == "slow_body":
            start, body = await _buffered(self.app, scope, receive)
            chunk = max(1, int(params.get("chunk", 16)))
            interval = parse_duration(params.get("interval", 0.1), "slow_body.interval")
            await send(_with_length(start, len(body)))
            for offset in range(0, len(body), chunk):
                await send(
                    {"type": "http.response.body", "body": body[offset : offset + chunk], "more_body": True}
                )
                await asyncio.sleep(interval)
            await send({"type": "http.response.body", "body": b""})

    def error(self, decision: FaultDecision) -> FHIRError:
        params = decision.params
        action = decision.action
        headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
        if action == "throttle":
            status, code, text = 429, "throttled", "Too many requests; retry later"
            headers["Retry-After"] = str(retry_after_seconds(params.get("retry_after"), decision, 1))
        elif action == "outage":
            status, code, text = int(params.get("status", 503)), "transient", "The service is unavailable"
            headers["Retry-After"] = str(retry_after_seconds(params.get("retry_after"), decision, 60))
        elif action == "revoke_token":
            status, code, text = 401, "security", "The access token has been revoked"
            headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", error_description="{params.get("diagnostics", text)}"'
            )
        else:
            status, code, text = int(params.get("status", 500)), "exception", "Injected fault"
            if params.get("retry_after") is not None:
                headers["Retry-After"] = str(retry_after_seconds(params["retry_after"], decision, 1))
        return FHIRError.of(
            status,
            str(params.get("code", code)),
            str(params.get("diagnostics", text)),
            headers=headers,
        )


def fault_layer(app: ASGIApp, site: Site, sandbox: Sandbox) -> ASGIApp:
    return FaultLayer(app, site, sandbox)
