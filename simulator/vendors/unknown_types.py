"""Unknown resource types answered the vendor's way, e.g. Epic's IIS HTML 404 page (not FHIR)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.site import Site
from simulator.vendors.asgi import note_rule, path_parts, respond
from simulator.vendors.quirks import quirks_of


class UnknownTypePage:
    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app, self.site = app, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        page = quirks_of(self.site).get("unknown_type")
        parts = path_parts(scope)
        if page and parts and parts[0][:1].isupper() and not self.site.supports(parts[0]):
            body = str(page.get("body", "")).encode("utf-8")
            note_rule(scope, "unknown-type-page")
            await respond(
                send, int(page.get("status", 404)), body, str(page.get("content_type", "text/html"))
            )
            return
        await self.app(scope, receive, send)
