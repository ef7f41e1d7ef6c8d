"""The response content type a vendor picks from the request's Accept header.

`quirks.content_types` maps an Accept media type to the Content-Type the vendor answers with, e.g.
Epic labels its JSON `application/json` when asked for `application/json` (and
`application/fhir+json` otherwise). Only the header changes; the body streams through.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator.site import Site
from simulator.vendors.asgi import request_header
from simulator.vendors.quirks import quirks_of


class ContentTypes:
    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app, self.site = app, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        table = quirks_of(self.site).get("content_types")
        accept = (
            (request_header(scope, b"accept") or b"").decode("latin-1").split(",")[0].split(";")[0].strip()
        )
        answer = (table or {}).get(accept.lower())
        if not answer:
            await self.app(scope, receive, send)
            return
        wanted = f"{answer}; charset=utf-8".encode()

        async def relabel(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (
                        k,
                        wanted
                        if k.lower() == b"content-type" and v.startswith(b"application/fhir+json")
                        else v,
                    )
                    for k, v in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, relabel)
