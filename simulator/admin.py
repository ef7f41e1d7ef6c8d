"""The admin API under /_admin/: the sandbox's control surface for people, tests and CI."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from simulator import __version__
from simulator.clock import fhir_instant
from simulator.sandbox import Sandbox


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


class AdminApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.router = Router(
            routes=[
                Route("/_admin/health", self.health, methods=["GET"]),
                Route("/_admin/sites", self.sites, methods=["GET"]),
                Route("/_admin/reset", self.reset, methods=["POST"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router(scope, receive, send)

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

    async def sites(self, request: Request) -> Response:
        origin = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
        return json_response(self.sandbox.describe_sites(origin))

    async def reset(self, request: Request) -> Response:
        self.sandbox.reset()
        return json_response({"status": "reset", "scenario": self.sandbox.scenario.name})
