"""The SMART on FHIR authorization server of one site: discovery, authorize, token, introspection,
revocation, registration and keys, all under the site's FHIR base.

Flows: authorization code with PKCE (S256 only) for EHR launch (`launch` carries the context) and
standalone launch (`launch/patient` -> the patient picker), refresh tokens by the vendor's rules, and
client credentials for backend services. Every "no" is the RFC's OAuth error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from simulator.auth.clients import Client, ClientRegistry, basic_client_id
from simulator.auth.discovery import (
    AUTHORIZE,
    DECISION,
    DISCOVERY,
    INTROSPECT,
    JWKS,
    REVOKE,
    TOKEN,
    capability_security,
    smart_configuration,
)
from simulator.auth.errors import NO_STORE, OAuthError, invalid_client, json_response
from simulator.auth.failures import AuthFailures
from simulator.auth.keys import ServerKeys
from simulator.auth.pages import authorize_page
from simulator.auth.scopes import ResourceScope, ScopeError, ScopeSet
from simulator.auth.settings import AuthSettings
from simulator.auth.tokens import AccessToken, AuthorizationCode, Grant, RefreshToken, TokenStore
from simulator.fhir.api import site_base_url
from simulator.site import Site

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox

log = logging.getLogger("ehrsim.auth")

_FORM = "application/x-www-form-urlencoded"
_PICKER_LIMIT = 50
MAX_BODY = 64 * 1024
MAX_PENDING = 1000


@dataclass
class AuthRequest:
    """An authorization request that passed validation and waits for the person's decision."""

    client: Client
    redirect_uri: str
    state: str
    scopes: ScopeSet
    code_challenge: str
    launch: dict[str, str]
    nonce: str | None
    needs_patient: bool


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class AuthorizationServer:
    def __init__(self, site: Site, sandbox: Sandbox, settings: AuthSettings, keys: ServerKeys) -> None:
        self.site = site
        self.sandbox = sandbox
        self.settings = settings
        self.keys = keys
        self.clients = ClientRegistry(sandbox.scenario.seed, site.id)
        self.tokens = TokenStore(sandbox.scenario.seed, site.id)
        self.failures = AuthFailures(settings.failures)
        self.pending: OrderedDict[str, AuthRequest] = OrderedDict()  # oldest first, dropped in O(1)
        self.launches: dict[str, dict[str, str]] = {}  # EHR launch id -> context

    def create_launch(self, context: dict[str, Any]) -> str:
        """An EHR launch: an opaque `launch` id bound to a patient, encounter and user; ValueError
        names what does not exist."""
        unknown = set(context) - {"patient", "encounter", "user"}
        if unknown:
            raise ValueError(
                f"a launch context has patient, encounter and user, not {', '.join(sorted(unknown))}"
            )
        for key, value in context.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"launch {key} must be a non-empty string")
        if "patient" in context and not self.exists("Patient", context["patient"]):
            raise ValueError(f"Patient/{context['patient']} does not exist on this site")
        if "encounter" in context and not self.exists("Encounter", context["encounter"]):
            raise ValueError(f"Encounter/{context['encounter']} does not exist on this site")
        user = context.get("user", "")
        if user and ("/" not in user or not self.exists(*user.split("/", 1))):
            raise ValueError(
                f"user '{user}' is not an existing Practitioner/id, Patient/id or RelatedPerson/id"
            )
        launch = self.tokens.new_value(16)
        self.launches[launch] = dict(context)
        return launch

    # -- shared helpers ----------------------------------------------------------------------
    def now(self) -> float:
        return self.sandbox.clock.timestamp()

    def parse_scopes(self, text: str | None) -> ScopeSet:
        extra = frozenset(self.settings.extra_scopes) | frozenset(self.settings.scopes_supported)
        return ScopeSet.parse(text, self.site.registry, extra, self.settings.scope_syntax)

    def register(self, metadata: Any) -> Client:
        return self.clients.register(metadata, self.parse_scopes, self.now(), self.settings.client_auth)

    async def authenticate(
        self,
        form: dict[str, str],
        authorization: str | None,
        base: str,
        failures: dict[str, Any] | None = None,
    ) -> Client:
        """The calling client, by the site's accepted methods and backend-services rules."""
        failures = failures or {}
        return await self.clients.authenticate(
            form,
            authorization,
            base + TOKEN,
            self.settings.backend_jwt_alg,
            self.settings.max_assertion_lifetime,
            reject_jti="invalid_jti" in failures,
            reject_secret="invalid_client_secret" in failures,
            methods=self.settings.client_auth,
        )

    def discovery(self, base: str) -> dict[str, Any]:
        return smart_configuration(self.settings, base)

    def security(self, base: str) -> dict[str, Any]:
        return capability_security(base)

    # -- dispatch -----------------------------------------------------------------------------
    async def handle(
        self, request: Request, subpath: str, injected: Sequence[dict[str, Any]] = ()
    ) -> Response:
        """Answer an OAuth endpoint; `injected` are failures the fault engine chose for this request."""
        base = site_base_url(self.site, request)
        try:
            if subpath == DISCOVERY:
                self._only(request, ("GET",))
                return json_response(self.discovery(base))
            if subpath == JWKS:
                self._only(request, ("GET",))
                return json_response(self.keys.public_jwks())
            if subpath == AUTHORIZE:
                self._only(request, ("GET", "POST"))
                params = dict(request.query_params) if request.method == "GET" else await _form(request)
                if params.get("client_id") in self.clients.clients:
                    _journal_client(request, params["client_id"])
                return self.authorize(params, base, injected, request.scope.get("ehrsim.entry"))
            if subpath == DECISION:
                self._only(request, ("POST",))
                return self.decide(await _form(request), base)
            if subpath == TOKEN:
                self._only(request, ("POST",))
                return await self.token(request, base, injected)
            if subpath == INTROSPECT:
                self._only(request, ("POST",))
                return await self.introspect(request, base)
            if subpath == REVOKE:
                self._only(request, ("POST",))
                return await self.revoke(request, base)
            self._only(request, ("POST",))
            return await self.registration(request)
        except OAuthError as error:
            return error.response()
        except Exception:  # a bug, not bad input: still answer in OAuth's terms, and log it loudly
            log.exception("unhandled error at %s %s", request.method, subpath)
            return OAuthError("server_error", "Internal error in ehrsim; see the server log", 500).response()

    @staticmethod
    def _only(request: Request, methods: tuple[str, ...]) -> None:
        if request.method not in methods:
            raise OAuthError(
                "invalid_request",
                f"{request.method} is not allowed here; use {' or '.join(methods)}",
                405,
                {"Allow": ", ".join(methods)},
            )

    # -- authorization endpoint ---------------------------------------------------------------
    def authorize(
        self,
        params: dict[str, str],
        base: str,
        injected: Sequence[dict[str, Any]] = (),
        entry: dict[str, Any] | None = None,
    ) -> Response:
        client_id = params.get("client_id")
        failures = self.failures.active("authorize", client_id, injected, entry)
        client = self.clients.get(client_id)
        if client is None or "invalid_client_id" in failures:
            raise OAuthError("invalid_client", f"Unknown client_id '{client_id or ''}'", 400)
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        if not redirect_uri or redirect_uri not in client.redirect_uris or "invalid_redirect_uri" in failures:
            # Never redirect to an unregistered URI (RFC 6749 section 4.1.2.1).
            raise OAuthError(
                "invalid_request", f"redirect_uri '{redirect_uri or ''}' is not registered for this client"
            )
        state = params.get("state", "")

        def fail(error: str, description: str) -> Response:
            return _redirect(redirect_uri, {"error": error, "error_description": description, "state": state})

        if params.get("response_type") != "code":
            return fail("unsupported_response_type", "response_type must be 'code'")
        if not state:
            return fail("invalid_request", "state is required")
        if not self.settings.accepts_audience(params.get("aud"), base):
            return fail("invalid_request", f"aud must be this FHIR server's base URL, {base}")
        challenge, method = params.get("code_challenge", ""), params.get("code_challenge_method")
        # `pkce: optional` (older vendor setups) lets confidential clients skip PKCE; public never.
        if not challenge and (self.settings.pkce == "S256" or client.public):
            return fail(
                "invalid_request", "PKCE is required: send code_challenge and code_challenge_method=S256"
            )
        if (challenge or method) and method != "S256":
            return fail("invalid_request", f"code_challenge_method must be S256, not '{method or ''}'")
        try:
            scopes = self.parse_scopes(params.get("scope"))
        except ScopeError as exc:
            return fail("invalid_scope", str(exc))
        if "invalid_scope" in failures:
            return fail("invalid_scope", "The requested scope is invalid, unknown, or malformed")
        if any(r.context == "system" for r in scopes.resources):
            return fail("invalid_scope", "system/ scopes are only for the client_credentials grant")
        scopes = self._allowed(client, scopes)
        if not scopes.scopes:
            return fail("invalid_scope", "None of the requested scopes is allowed for this client")
        launch: dict[str, str] = {}
        if "launch" in scopes:
            if not params.get("launch"):
                return fail("invalid_request", "The 'launch' scope needs the launch parameter from the EHR")
            if params["launch"] not in self.launches:
                return fail("invalid_request", "launch is not a launch id issued by this server")
            launch = self.launches[params["launch"]]
        request = AuthRequest(
            client=client,
            redirect_uri=redirect_uri,
            state=state,
            scopes=scopes,
            code_challenge=challenge,
            launch=launch,
            nonce=params.get("nonce"),
            needs_patient="launch/patient" in scopes and not launch.get("patient"),
        )
        if self.settings.auto_approve or params.get("auto_approve", "").lower() in ("1", "true", "yes"):
            patient = params.get("patient") or launch.get("patient") or self.first_id("Patient")
            user = launch.get("user") or self.default_user(patient)
            return self._approve(
                request, patient if request.needs_patient or launch.get("patient") else None, user
            )
        txn = self.tokens.new_value(16)
        self.pending[txn] = request
        while len(self.pending) > MAX_PENDING:  # pages nobody answered: forget the oldest
            self.pending.popitem(last=False)
        return self._page(request, txn, base)

    def _page(
        self, request: AuthRequest, txn: str, base: str, error: str = "", status: int = 200
    ) -> Response:
        store = self.site.store
        patients = None
        if request.needs_patient:
            patients = [v.resource for v in list(store.current("Patient").values())[:_PICKER_LIMIT]]
        users = [v.resource for v in list(store.current("Practitioner").values())[:_PICKER_LIMIT]]
        if request.launch.get("user"):
            users = []  # the EHR session already says who the user is
        html = authorize_page(
            base + DECISION,
            txn,
            request.client.name or request.client.client_id,
            list(request.scopes.scopes),
            patients,
            users,
            error,
        )
        return HTMLResponse(html, status_code=status, headers=NO_STORE)

    def decide(self, form: dict[str, str], base: str) -> Response:
        request = self.pending.get(form.get("txn", ""))
        if request is None:
            raise OAuthError("invalid_request", "This authorization has expired or was already decided")
        txn = form["txn"]
        if form.get("decision") == "deny":
            del self.pending[txn]
            return _redirect(
                request.redirect_uri,
                {
                    "error": "access_denied",
                    "error_description": "The user denied access",
                    "state": request.state,
                },
            )
        patient = request.launch.get("patient")
        if request.needs_patient:
            patient = form.get("patient", "")
            if not self.exists("Patient", patient):
                return self._page(request, txn, base, f"Choose a patient (got '{patient}')", 400)
        user = request.launch.get("user") or form.get("user") or self.default_user(patient)
        if user and "/" in user and not self.exists(*user.split("/", 1)):
            return self._page(request, txn, base, f"Unknown user '{user}'", 400)
        del self.pending[txn]
        return self._approve(request, patient, user)

    def _approve(self, request: AuthRequest, patient: str | None, user: str | None) -> Response:
        grant = Grant(
            client_id=request.client.client_id,
            scopes=request.scopes,
            patient=patient,
            encounter=request.launch.get("encounter"),
            fhir_user=user,
            nonce=request.nonce,
        )
        code = self.tokens.new_value(24)
        self.tokens.codes[code] = AuthorizationCode(
            code,
            grant,
            request.redirect_uri,
            request.code_challenge,
            self.now() + self.settings.code_lifetime,
        )
        return _redirect(request.redirect_uri, {"code": code, "state": request.state})

    # -- token endpoint -----------------------------------------------------------------------
    async def token(self, request: Request, base: str, injected: Sequence[dict[str, Any]] = ()) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != _FORM:
            raise OAuthError(
                "invalid_request", f"The token endpoint takes {_FORM}, not '{content_type or 'no type'}'"
            )
        form = await _form(request)
        client_hint = (
            form.get("client_id")
            or _assertion_issuer(form)
            or basic_client_id(request.headers.get("authorization", ""))
        )
        failures = self.failures.active("token", client_hint, injected, request.scope.get("ehrsim.entry"))
        if "token_endpoint_outage" in failures:
            outage = failures["token_endpoint_outage"]
            await asyncio.sleep(float(outage.get("hang", 0)))
            raise OAuthError(
                "temporarily_unavailable",
                "The token endpoint is unavailable (simulated outage)",
                int(outage.get("status", 503)),
                {"Retry-After": str(int(outage.get("retry_after", 30)))},
            )
        if "slow_token_endpoint" in failures:
            await asyncio.sleep(float(failures["slow_token_endpoint"].get("delay", 2.0)))
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type not in self.settings.grant_types:
            raise OAuthError("unsupported_grant_type", f"grant_type '{grant_type}' is not supported here")
        if "invalid_client_id" in failures:
            raise invalid_client(f"Unknown client_id '{client_hint or ''}'")
        client = await self.authenticate(form, request.headers.get("authorization"), base, failures)
        _journal_client(request, client.client_id)
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"Client '{client.client_id}' may not use {grant_type}")
        if "invalid_scope" in failures:
            raise OAuthError("invalid_scope", "The requested scope is invalid, unknown, or malformed")
        if grant_type == "authorization_code":
            body = self._exchange_code(form, client, base, failures)
        elif grant_type == "refresh_token":
            body = self._refresh(form, client, base, failures)
        else:
            body = self._client_credentials(form, client, base, failures)
        return json_response(body, 200, NO_STORE)

    def _exchange_code(
        self, form: dict[str, str], client: Client, base: str, failures: dict
    ) -> dict[str, Any]:
        code = self.tokens.codes.get(form.get("code", ""))
        if code is None:
            raise OAuthError("invalid_grant", "The authorization code is not valid")
        if code.used:
            for token in code.issued:  # a replayed code voids what it bought (RFC 6749 section 4.1.2)
                self.tokens.revoke(token)
            raise OAuthError("invalid_grant", "The authorization code has already been used")
        if code.grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The authorization code was issued to another client")
        if self.now() >= code.expires_at:
            raise OAuthError("invalid_grant", "The authorization code has expired")
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier")
        if code.code_challenge and not verifier:
            raise OAuthError("invalid_grant", "code_verifier is required (PKCE)")
        if code.code_challenge and not hmac.compare_digest(s256(verifier or ""), code.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        code.used = True
        body = self.issue(code.grant, client, base, failures, with_refresh=True)
        code.issued.extend(t for t in (body["access_token"], body.get("refresh_token")) if t)
        return body

    def _refresh(self, form: dict[str, str], client: Client, base: str, failures: dict) -> dict[str, Any]:
        refresh = self.tokens.refresh.get(form.get("refresh_token", ""))
        if refresh is None or refresh.grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The refresh token is not valid for this client")
        if refresh.revoked:
            raise OAuthError("invalid_grant", "The refresh token has been revoked")
        if not refresh.active(self.now()) or "expired_refresh_token" in failures:
            raise OAuthError("invalid_grant", "The refresh token has expired")
        limit = failures.get("refresh_token_revoked_after")
        if limit is not None and refresh.uses >= int(limit.get("uses", 1)):
            self.tokens.revoke(refresh.token)
            raise OAuthError("invalid_grant", f"The refresh token was revoked after {refresh.uses} uses")
        grant = refresh.grant
        if form.get("scope"):
            try:
                wanted = self.parse_scopes(form["scope"])
            except ScopeError as exc:
                raise OAuthError("invalid_scope", str(exc)) from None
            extra = [s for s in wanted.scopes if s not in grant.scopes]
            if extra:
                raise OAuthError("invalid_scope", f"A refresh cannot add scopes: {' '.join(extra)}")
            grant = Grant(**{**grant.__dict__, "scopes": wanted})
        refresh.uses += 1
        rotate = self.settings.refresh_tokens.rotate
        body = self.issue(
            grant,
            client,
            base,
            failures,
            with_refresh=rotate,
            refresh_token=None if rotate else refresh.token,
        )
        if rotate:
            refresh.revoked = True
            # The use count follows the grant across rotations (refresh_token_revoked_after).
            if "refresh_token" in body:
                self.tokens.refresh[body["refresh_token"]].uses = refresh.uses
        return body

    def _client_credentials(
        self, form: dict[str, str], client: Client, base: str, failures: dict
    ) -> dict[str, Any]:
        if client.public:
            raise OAuthError("unauthorized_client", "client_credentials needs a confidential client")
        try:
            scopes = self.parse_scopes(form.get("scope"))
        except ScopeError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        if not scopes.resources or any(r.context != "system" for r in scopes.resources):
            raise OAuthError("invalid_scope", "client_credentials grants system/ scopes only")
        scopes = self._allowed(client, scopes)
        if not scopes.resources:
            raise OAuthError("invalid_scope", "None of the requested scopes is allowed for this client")
        return self.issue(Grant(client.client_id, scopes), client, base, failures, with_refresh=False)

    def issue(
        self,
        grant: Grant,
        client: Client,
        base: str,
        failures: dict[str, dict[str, Any]],
        with_refresh: bool,
        refresh_token: str | None = None,
        lifetime: int | None = None,
    ) -> dict[str, Any]:
        """Mint an access token (and id_token, refresh token) for `grant`; the token response body."""
        if "narrower_scopes" in failures:
            grant = Grant(
                **{**grant.__dict__, "scopes": _narrower(grant.scopes, failures["narrower_scopes"])}
            )
        now = self.now()
        iat = now + int(failures["clock_skew"].get("seconds", 300)) if "clock_skew" in failures else now
        lifetime = self.settings.access_token_lifetime if lifetime is None else lifetime
        exp = now + lifetime
        jti = self.tokens.new_value(12)
        claims: dict[str, Any] = {
            "iss": base,
            "aud": base,
            "sub": grant.fhir_user or client.client_id,
            "client_id": client.client_id,
            "scope": str(grant.scopes),
            "iat": int(iat),
            "exp": int(exp),
            "jti": jti,
        }
        if grant.patient:
            claims["patient"] = grant.patient
        access = self.keys.sign(claims, "RS384")
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": str(grant.scopes),
        }
        if grant.patient and "missing_patient_context" not in failures:
            body["patient"] = grant.patient
        if grant.encounter:
            body["encounter"] = grant.encounter
        if grant.patient or grant.encounter:
            body["need_patient_banner"] = True
        if "openid" in grant.scopes and "fhirUser" in grant.scopes and grant.fhir_user:
            body["id_token"] = self._id_token(grant, client, base, iat)
        if with_refresh and self._gets_refresh(client, grant.scopes):
            refresh_token = self.tokens.new_value(32)
            self.tokens.refresh[refresh_token] = RefreshToken(
                refresh_token, grant, now + self.settings.refresh_tokens.lifetime
            )
            body["refresh_token"] = refresh_token
        self.tokens.access[access] = AccessToken(access, grant, iat, exp, jti, refresh_token=refresh_token)
        self.tokens.forget_inactive(now)
        return body

    def _id_token(self, grant: Grant, client: Client, base: str, iat: float) -> str:
        assert grant.fhir_user is not None
        claims = {
            "iss": base,
            "sub": grant.fhir_user.split("/", 1)[-1],
            "aud": client.client_id,
            "iat": int(iat),
            "exp": int(iat + self.settings.id_token_lifetime),
            "fhirUser": f"{base}/{grant.fhir_user}",
        }
        if grant.nonce:
            claims["nonce"] = grant.nonce
        return self.keys.sign(claims, "RS256")

    def _gets_refresh(self, client: Client, scopes: ScopeSet) -> bool:
        rules = self.settings.refresh_tokens
        if "refresh_token" not in client.grant_types or "refresh_token" not in self.settings.grant_types:
            return False
        if not (rules.public_clients if client.public else rules.confidential_clients):
            return False
        return not rules.requires_offline_access or "offline_access" in scopes or "online_access" in scopes

    def _allowed(self, client: Client, scopes: ScopeSet) -> ScopeSet:
        """The requested scopes this client may have (all of them if it registered no scope)."""
        if client.scope is None:
            return scopes
        allowed = self.parse_scopes(client.scope)
        keep = [
            s
            for s in scopes.scopes
            if s in allowed or any(_within(r, allowed.resources) for r in scopes.resources if r.text == s)
        ]
        return scopes.only(keep)

    # -- introspection, revocation, registration -----------------------------------------------
    async def introspect(self, request: Request, base: str) -> Response:
        form = await _form(request)
        authorization = request.headers.get("authorization") or ""
        if authorization[:7].lower() == "bearer ":
            caller = self.tokens.access.get(authorization[7:].strip())
            if caller is None or not caller.active(self.now()):
                raise OAuthError(
                    "invalid_token", "The bearer token used to call introspection is not active", 401
                )
        else:
            await self.authenticate(form, authorization, base)
        if "token" not in form:
            raise OAuthError("invalid_request", "token is required")
        now = self.now()
        access = self.tokens.access.get(form["token"])
        if access is not None and access.active(now):
            grant = access.grant
            body: dict[str, Any] = {
                "active": True,
                "scope": str(grant.scopes),
                "client_id": grant.client_id,
                "token_type": "Bearer",
                "exp": int(access.expires_at),
                "iat": int(access.issued_at),
                "sub": grant.fhir_user or grant.client_id,
                "iss": base,
                "aud": base,
                "jti": access.jti,
            }
            if grant.patient:
                body["patient"] = grant.patient
            if grant.fhir_user:
                body["fhirUser"] = f"{base}/{grant.fhir_user}"
            return json_response(body, 200, NO_STORE)
        refresh = self.tokens.refresh.get(form["token"])
        if refresh is not None and refresh.active(now):
            return json_response(
                {
                    "active": True,
                    "scope": str(refresh.grant.scopes),
                    "client_id": refresh.grant.client_id,
                    "token_type": "refresh_token",
                    "exp": int(refresh.expires_at),
                },
                200,
                NO_STORE,
            )
        return json_response({"active": False}, 200, NO_STORE)

    async def revoke(self, request: Request, base: str) -> Response:
        form = await _form(request)
        client = await self.authenticate(form, request.headers.get("authorization"), base)
        if "token" not in form:
            raise OAuthError("invalid_request", "token is required")
        # Unknown tokens and other clients' tokens: 200 and nothing happens (RFC 7009 section 2.2).
        self.tokens.revoke(form["token"], client.client_id)
        return Response(status_code=200, headers=NO_STORE)

    async def registration(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise OAuthError("invalid_client_metadata", "Registration takes an application/json body")
        try:
            data = orjson.loads(await _read(request))
        except orjson.JSONDecodeError as exc:
            raise OAuthError("invalid_client_metadata", f"The body is not valid JSON: {exc}") from None
        if isinstance(data, dict) and "client_id" in data:
            raise OAuthError("invalid_client_metadata", "client_id is assigned by the server")
        client = self.register(data)
        return json_response(client.metadata(), 201, NO_STORE)

    # -- data lookups for the pages and defaults ----------------------------------------------
    def exists(self, resource_type: str, resource_id: str) -> bool:
        version = self.site.store.read(resource_type, resource_id) if resource_id else None
        return version is not None and not version.deleted

    def first_id(self, resource_type: str) -> str | None:
        return next(iter(self.site.store.current(resource_type)), None)

    def default_user(self, patient: str | None) -> str | None:
        practitioner = self.first_id("Practitioner")
        if practitioner:
            return f"Practitioner/{practitioner}"
        return f"Patient/{patient}" if patient else None


def _within(scope: ResourceScope, allowed: tuple[ResourceScope, ...]) -> bool:
    return any(
        a.context == scope.context
        and a.resource_type in ("*", scope.resource_type)
        and scope.interactions <= a.interactions
        and (not a.query or a.query == scope.query)
        for a in allowed
    )


def _narrower(scopes: ScopeSet, failure: dict[str, Any]) -> ScopeSet:
    drop = failure.get("drop")
    if drop is None:
        drop = [r.text for r in scopes.resources if r.writes()] + ["offline_access"]
    return scopes.only([s for s in scopes.scopes if s not in set(drop)])


def _redirect(uri: str, params: dict[str, str]) -> Response:
    joiner = "&" if "?" in uri else "?"
    query = urlencode({k: v for k, v in params.items() if k != "state" or v})  # no state: none back
    return RedirectResponse(uri + joiner + query, status_code=302, headers=NO_STORE)


def _journal_client(request: Request, client_id: str) -> None:
    """Name the client in the journal entry once the body says who it is (form-posted ids)."""
    entry = request.scope.get("ehrsim.entry")
    if entry is not None:
        entry["client_id"] = client_id


async def _read(request: Request) -> bytes:
    """The request body, refused past MAX_BODY (OAuth requests are small; a huge one is abuse)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise OAuthError("invalid_request", f"The request body is over {MAX_BODY} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request) -> dict[str, str]:
    """A form body as a dict; a parameter sent twice is an error (RFC 6749 section 3.2)."""
    body = await _read(request)
    try:
        items = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "The form body is not valid UTF-8") from None
    out: dict[str, str] = {}
    for key, value in items:
        if key in out:
            raise OAuthError("invalid_request", f"Parameter '{key}' is repeated")
        out[key] = value
    return out


def _assertion_issuer(form: dict[str, str]) -> str | None:
    try:
        from joserfc.jws import extract_compact

        claims = orjson.loads(extract_compact(form.get("client_assertion", "").encode()).payload)
        return str(claims.get("iss")) if isinstance(claims, dict) else None
    except Exception:  # not a JWT: authentication reports it properly
        return None
