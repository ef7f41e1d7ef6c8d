"""Small ASGI helpers the quirk layers share: run the inner app and keep its answer, answer directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FHIR_JSON = "application/fhir+json; charset=utf-8"


@dataclass
class Captured:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    extra: list[Message] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any | None:
        kind = self.header(b"content-type") or b""
        if b"json" not in kind or not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


async def capture(app: ASGIApp, scope: Scope, receive: Receive) -> Captured:
    """Run `app` and return its whole response instead of sending it."""
    result = Captured(500, [])
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    result.body = b"".join(chunks)
    return result


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str | None = FHIR_JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a whole response; `content_type=None` keeps the content type among `headers`."""
    dropped = (b"content-length", b"content-type") if content_type else (b"content-length",)
    kept = [(k, v) for k, v in (headers or []) if k.lower() not in dropped]
    if content_type and body:
        kept.append((b"content-type", content_type.encode()))
    kept.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await respond(send, status, orjson.dumps(data), FHIR_JSON, headers)


def replay(body: bytes) -> Receive:
    """A `receive` that hands the inner app a body this layer already read."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body, and whether it stayed within `limit` (if not, it is returned uncut)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks), size <= limit


def path_parts(scope: Scope) -> list[str]:
    return [p for p in scope.get("ehrsim.subpath", "").split("/") if p]


def query_items(scope: Scope) -> list[tuple[str, str]]:
    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def request_header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", []) if k.lower() == name), None)


def note_rule(scope: Scope, rule: str) -> None:
    """Say in the journal entry which vendor rule answered this request (e.g. required-parameters)."""
    entry = scope.get("ehrsim.entry")
    if entry is not None:
        entry["vendor_rule"] = rule
