"""Admin API routes for SMART auth: `/_admin/clients` (list, register), `/_admin/token` (mint) and
`/_admin/launch` (start an EHR launch: a `launch` id bound to patient, encounter and user).

`POST /_admin/token` with `{"site"?, "client_id"?, "scope"?, "patient"?, "encounter"?, "user"?}`
returns a token response as the token endpoint would, without the OAuth dance; with no client, the
site's first registered client and all its registered scopes. For scripts and manual testing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.admin import BadRequest, json_body
from simulator.auth.errors import OAuthError, json_response
from simulator.auth.layer import AUTH_EXTRA
from simulator.auth.scopes import ScopeError
from simulator.auth.server import AuthorizationServer
from simulator.auth.tokens import Grant
from simulator.fhir.api import site_base_url

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox


class AdminError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def response(self) -> Response:
        return json_response({"error": self.error, "message": self.message}, self.status)


async def _body(request: Request) -> dict[str, Any]:
    try:
        return await json_body(request)
    except BadRequest as exc:
        raise AdminError(exc.status, exc.error, str(exc)) from None


def _text(body: dict[str, Any], key: str) -> str | None:
    """`body[key]` when it is a string or absent; a JSON array, object or number there is a 400."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        kind = {dict: "an object", list: "an array", bool: "a boolean"}.get(type(value), "a number")
        raise AdminError(400, "invalid_request", f"'{key}' must be a string, not {kind}")
    return value


def _server(sandbox: Sandbox, site_id: str | None) -> tuple[AuthorizationServer, Any]:
    """The authorization server of `site_id`, or of the first site with auth on."""
    runtimes = [sandbox.sites[site_id]] if site_id in sandbox.sites else []
    if site_id is not None and not runtimes:
        raise AdminError(404, "not_found", f"no site '{site_id}' (sites: {', '.join(sandbox.sites)})")
    if site_id is None:
        runtimes = [r for r in sandbox.sites.values() if AUTH_EXTRA in r.site.extras]
        if not runtimes:
            raise AdminError(409, "auth_off", "no site of this scenario has auth on (auth: required: true)")
    runtime = runtimes[0]
    server = runtime.site.extras.get(AUTH_EXTRA)
    if server is None:
        raise AdminError(409, "auth_off", f"site '{runtime.site.id}' has auth off (auth: required: false)")
    return server, runtime.site


ADMIN_CLIENT = {
    "client_id": "ehrsim-admin",
    "client_name": "ehrsim admin API (tokens minted by /_admin/token)",
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code"],
    "redirect_uris": ["http://127.0.0.1/ehrsim-admin"],
}


def admin_routes(sandbox: Sandbox) -> list[Route]:
    async def clients(request: Request) -> Response:
        try:
            if request.method == "GET":
                server, site = _server(sandbox, request.query_params.get("site"))
                return json_response(
                    {"site": site.id, "clients": [c.metadata() for c in server.clients.clients.values()]}
                )
            body = await _body(request)
            server, site = _server(sandbox, _text(body, "site"))
            body.pop("site", None)
            try:
                client = server.register(body)  # the admin may choose the client_id
            except OAuthError as exc:
                raise AdminError(400, exc.error, exc.description) from None
            return json_response({"site": site.id, **client.metadata()}, 201)
        except AdminError as exc:
            return exc.response()

    async def token(request: Request) -> Response:
        try:
            body = await _body(request)
            server, site = _server(sandbox, _text(body, "site"))
            return json_response(mint(server, site_base_url(site, request), body), 200)
        except AdminError as exc:
            return exc.response()

    async def launch(request: Request) -> Response:
        try:
            body = await _body(request)
            server, site = _server(sandbox, _text(body, "site"))
            app_url = _text(body, "launch_url")
            body.pop("site", None)
            body.pop("launch_url", None)
            try:
                launch_id = server.create_launch(body)
            except ValueError as exc:
                raise AdminError(400, "invalid_request", str(exc)) from None
            iss = site_base_url(site, request)
            answer = {"site": site.id, "launch": launch_id, "iss": iss}
            if app_url:  # where the EHR would send the browser: the app's launch URL
                answer["url"] = (
                    f"{app_url}{'&' if '?' in app_url else '?'}{urlencode({'iss': iss, 'launch': launch_id})}"
                )
            return json_response(answer, 201)
        except AdminError as exc:
            return exc.response()

    return [
        Route("/_admin/clients", clients, methods=["GET", "POST"]),
        Route("/_admin/token", token, methods=["POST"]),
        Route("/_admin/launch", launch, methods=["POST"]),
    ]


def mint(server: AuthorizationServer, base: str, body: dict[str, Any]) -> dict[str, Any]:
    for key in ("client_id", "scope", "patient", "encounter", "user"):
        _text(body, key)
    if body.get("client_id"):
        client = server.clients.get(body["client_id"])
        if client is None:
            raise AdminError(
                404, "not_found", f"no client '{body['client_id']}' on this site; POST /_admin/clients first"
            )
    else:
        # A site nobody registered a client on (e.g. a vendor scenario) gets a public one to hold tokens.
        client = server.clients.first() or server.register(ADMIN_CLIENT)
    scope = body.get("scope") or client.scope or _default_scope(client, server.settings.scope_syntax)
    try:
        scopes = server.parse_scopes(scope)
    except ScopeError as exc:
        raise AdminError(400, "invalid_scope", str(exc)) from None
    patient = body.get("patient")
    if patient is None and "patient" in scopes.contexts():
        patient = server.first_id("Patient")
    if patient is not None and not server.exists("Patient", patient):
        raise AdminError(400, "invalid_request", f"Patient/{patient} does not exist on this site")
    user = body.get("user") or (server.default_user(patient) if "system" not in scopes.contexts() else None)
    grant = Grant(client.client_id, scopes, patient, body.get("encounter"), user)
    response = server.issue(grant, client, base, {}, with_refresh=True)
    return {"client_id": client.client_id, **response}


def _default_scope(client: Any, syntax: list[str]) -> str:
    """Everything the client could have, in a scope syntax the site accepts."""
    everything = "cruds" if "v2" in syntax else "*"
    if "client_credentials" in client.grant_types and not client.public:
        return f"system/*.{everything}"
    return f"openid fhirUser user/*.{everything}"
