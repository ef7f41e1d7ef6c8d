"""Interactions a site does not offer (`SiteSettings.interactions`) are refused before the FHIR API.

The CapabilityStatement is generated from the same setting (`capability.site_interactions`), so what
/metadata advertises and what the site accepts cannot drift apart.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.fhir.errors import FHIRError
from simulator.site import Site
from simulator.vendors.asgi import note_rule, path_parts, respond_json


def interaction_of(method: str, parts: list[str]) -> str | None:
    """The FHIR interaction code a request is, for `[type]...` paths; None for anything else."""
    n = len(parts)
    if n == 1:
        return {"GET": "search-type", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(method)
    if n == 2 and parts[1] == "_search":
        return "search-type"
    if n == 2 and parts[1] == "_history":
        return "history-type"
    if n == 2 and not parts[1].startswith("$"):
        return {"GET": "read", "HEAD": "read", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}.get(
            method
        )
    if n == 3 and parts[2] == "_history":
        return "history-instance"
    if n == 4 and parts[2] == "_history":
        return "vread"
    return None


class InteractionRules:
    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app, self.site = app, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = self.site.settings.interactions
        parts = path_parts(scope)
        if allowed is not None and parts and parts[0] in allowed:
            code = interaction_of(scope["method"], parts)
            offered = allowed[parts[0]]
            if code is not None and code not in offered:
                error = FHIRError.of(
                    405,
                    "not-supported",
                    f"{parts[0]} does not support the {code} interaction here (supported: {', '.join(offered)})",
                )
                note_rule(scope, "interaction-not-supported")
                await respond_json(send, 405, error.outcome(), [(b"allow", _allow(offered).encode())])
                return
        await self.app(scope, receive, send)


def _allow(offered: list[str]) -> str:
    methods = {"read": "GET", "search-type": "GET", "create": "POST", "update": "PUT", "delete": "DELETE"}
    return ", ".join(dict.fromkeys(methods[c] for c in offered if c in methods))
