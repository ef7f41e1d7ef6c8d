"""The web dashboard at /_admin/ui: one HTML page, one script and one stylesheet (package data in
`static/`) that show the sandbox through the admin API: sites, faults, the clock, a journal tail.

The files hold no data and no secrets, so they are served without the admin token; the page asks
for the token itself when the API answers 401. A strict Content-Security-Policy (same origin only,
no inline script or style) backs up the script's rule of rendering every value as text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STATIC = Path(__file__).parent / "static"

# URL path -> (file in static/, media type)
ASSETS: dict[str, tuple[str, str]] = {
    "/_admin/ui": ("dashboard.html", "text/html; charset=utf-8"),
    "/_admin/ui/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/_admin/ui/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def dashboard_routes() -> list[Route]:
    """The routes serving the dashboard's files (read once: they are small and never change)."""

    def endpoint(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
        body = (STATIC / name).read_bytes()

        async def serve(request: Request) -> Response:
            return Response(body, media_type=media_type, headers=HEADERS)

        return serve

    return [
        Route(path, endpoint(name, media_type), methods=["GET"], name=f"dashboard {name}")
        for path, (name, media_type) in ASSETS.items()
    ]
