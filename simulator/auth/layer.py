"""The SMART auth layer around a site's FHIR API.

It serves the authorization server's endpoints under the site's base path and, when the site's
`auth: required` is true, demands a bearer token on every FHIR request except `metadata`, then runs
the request under the token's `ScopePolicy` so that `FhirService` enforces the scopes on data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.auth.clients import basic_client_id
from simulator.auth.discovery import PATHS, discovery_urls
from simulator.auth.enforcement import ScopePolicy
from simulator.auth.errors import OAuthError
from simulator.auth.failures import POINTS
from simulator.auth.keys import data_dir, server_keys
from simulator.auth.server import AuthorizationServer
from simulator.auth.settings import AuthSettings
from simulator.fhir.access import acting_under
from simulator.fhir.api import error_response
from simulator.fhir.capability import SECURITY_EXTRA
from simulator.fhir.errors import FHIRError
from simulator.site import Site

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox

AUTH_EXTRA = "auth"  # site.extras key of the site's AuthorizationServer
PUBLIC_PATHS = ("/metadata",)


def site_auth_settings(sandbox: Sandbox, site: Site) -> AuthSettings:
    spec = next(s for s in sandbox.scenario.sites if s.id == site.id)
    try:
        return AuthSettings.from_mapping(spec.raw.get("auth"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"site {site.id}: auth: {exc}") from None


def scenario_clients(sandbox: Sandbox, site: Site) -> list[dict]:
    """The scenario's top-level `clients:` for this site (no `sites:` list: every site)."""
    out = []
    for entry in sandbox.scenario.raw.get("clients") or []:
        if not isinstance(entry, dict):
            raise ValueError("clients: each client is a mapping of RFC 7591 metadata")
        sites = entry.get("sites")
        if sites is None or site.id in sites:
            out.append({k: v for k, v in entry.items() if k != "sites"})
    return out


class SmartAuth:
    def __init__(self, app: ASGIApp, site: Site, sandbox: Sandbox) -> None:
        self.app = app
        self.site = site
        self.settings = site_auth_settings(sandbox, site)
        self.sandbox = sandbox
        self.keys = server_keys(data_dir(sandbox.options.get("data_dir")))
        self.server = self._start()
        # /_admin/reset: clients registered at runtime, tokens, codes and launches are forgotten.
        site.extras.setdefault("on_reset", []).append(self._restart)
        site.extras.setdefault("describe", []).append(lambda base: {"smart": discovery_urls(base)})

    def _start(self) -> AuthorizationServer:
        """A fresh authorization server with the scenario's clients registered."""
        site = self.site
        try:
            server = AuthorizationServer(site, self.sandbox, self.settings, self.keys)
        except ValueError as exc:
            raise ValueError(f"site {site.id}: {exc}") from None
        for index, metadata in enumerate([*self.settings.clients, *scenario_clients(self.sandbox, site)]):
            try:
                server.register(metadata)
            except (OAuthError, ValueError) as exc:
                raise ValueError(
                    f"site {site.id}: client {index} ({metadata.get('client_id')}): {exc}"
                ) from None
        site.extras[AUTH_EXTRA] = server
        site.extras[SECURITY_EXTRA] = server.security
        return server

    def _restart(self) -> None:
        self.server = self._start()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        subpath = scope.get("ehrsim.subpath", "")
        injected = injected_failures(scope)
        if subpath in PATHS:
            response = await self.server.handle(Request(scope, receive), subpath, injected)
            await response(scope, receive, send)
            return
        if subpath in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            policy = self._policy(scope, injected)
        except FHIRError as error:
            await error_response(error)(scope, receive, send)
            return
        with acting_under(policy):
            await self.app(scope, receive, send)

    def _policy(self, scope: Scope, injected: list[dict[str, Any]]) -> ScopePolicy:
        header = _authorization(scope)
        realm = f'Bearer realm="{self.site.id}"'
        if header[:7].lower() != "bearer " or not header[7:].strip():
            raise FHIRError.of(
                401,
                "login",
                "This server requires a bearer access token",
                headers={"WWW-Authenticate": realm},
            )
        token = self.server.tokens.access.get(header[7:].strip())
        failures = self.server.failures.active(
            "resource", token.grant.client_id if token else None, injected, scope.get("ehrsim.entry")
        )
        problem = None
        if token is None or "invalid_token" in failures:
            problem = ("invalid", "The access token is not valid")
        elif token.revoked:
            problem = ("invalid", "The access token has been revoked")
        elif not token.active(self.server.now()) or "expired_access_token" in failures:
            problem = ("expired", "The access token has expired")
        if problem is not None:
            challenge = f'{realm}, error="invalid_token", error_description="{problem[1]}"'
            raise FHIRError.of(401, problem[0], problem[1], headers={"WWW-Authenticate": challenge})
        assert token is not None
        return ScopePolicy(token.grant.scopes.resources, token.grant.patient, self.settings.forbidden_status)


def oauth_client(scope: Scope, site: Site, sandbox: Sandbox) -> str | None:
    """The client a request comes from, for the journal and fault matching: the owner of its
    bearer token, or the id in its HTTP Basic credentials (token endpoint)."""
    server = site.extras.get(AUTH_EXTRA)
    if server is None:
        return None
    header = _authorization(scope)
    if header[:7].lower() == "bearer ":
        token = server.tokens.access.get(header[7:].strip())
        return token.grant.client_id if token is not None else None
    if header[:6].lower() == "basic ":
        return basic_client_id(header)
    return None


def _authorization(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return value.decode("latin-1")
    return ""


def injected_failures(scope: Scope) -> list[dict[str, Any]]:
    """Auth failures the fault layer decided on for this request (`scope["ehrsim.faults"]`), in the
    shape of a site's `auth.failures` entries."""
    out = []
    for decision in scope.get("ehrsim.faults") or ():
        if decision.action in POINTS:
            entry = {**decision.params, "type": decision.action}
            if decision.delay:  # the engine draws `delay` distributions
                entry["delay"] = decision.delay
            out.append(entry)
    return out


def auth_layer(app: ASGIApp, site: Site, sandbox: Sandbox) -> ASGIApp:
    """SmartAuth for sites with `auth: required: true`; other sites, and every site when the sandbox
    option `auth` is "off" (`ehrsim serve --no-auth`), get their app untouched."""
    if not site_auth_settings(sandbox, site).required or sandbox.options.get("auth") == "off":
        return app
    return SmartAuth(app, site, sandbox)
