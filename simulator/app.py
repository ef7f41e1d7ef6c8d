"""The ASGI application: `/_admin/...` for the admin API, each site's base path for its FHIR API."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from simulator.admin import AdminApi
from simulator.fhir.api import error_response
from simulator.fhir.errors import FHIRError
from simulator.sandbox import Sandbox

ADMIN_PREFIX = "/_admin"


class SandboxApp:
    """Routes by path prefix, looking sites up on every request so a scenario reload takes effect."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.admin = AdminApi(sandbox)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await self.admin(scope, receive, send)
            return
        runtime = self.sandbox.site_for_path(path)
        if runtime is None:
            bases = ", ".join(r.site.base_path for r in self.sandbox.sites.values())
            error = FHIRError.of(404, "not-found", f"No site serves '{path}'; FHIR bases here: {bases}")
            await error_response(error)(scope, receive, send)
            return
        scope = dict(scope)
        scope["ehrsim.subpath"] = path[len(runtime.site.base_path) :]
        scope["ehrsim.site"] = runtime.site.id
        await runtime.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.sandbox.start_services()
                except Exception as exc:  # e.g. the MLLP port is taken: fail start-up, say why
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.sandbox.stop_services()
                self.sandbox.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(sandbox: Sandbox) -> SandboxApp:
    return SandboxApp(sandbox)
