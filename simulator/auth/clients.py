"""OAuth clients: registration (RFC 7591, scenario files, admin API) and client authentication.

Authentication methods: `none` (public clients, which must use PKCE), `client_secret_basic`,
`client_secret_post`, and `private_key_jwt` (SMART backend services: an RS384/ES384 assertion signed
with a key from the client's registered JWKS or `jwks_uri`). Assertions are judged strictly; see
`ClientRegistry._verify_assertion`.
"""

from __future__ import annotations

import base64
import hmac
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from simulator.auth.errors import OAuthError, invalid_client
from simulator.auth.scopes import ScopeError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")


@dataclass
class Client:
    client_id: str
    auth_method: str = "none"
    client_secret: str | None = None
    redirect_uris: list[str] = field(default_factory=list)
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])
    scope: str | None = None  # what the client may ask for; None: anything the site supports
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    name: str = ""
    issued_at: int = 0

    @property
    def public(self) -> bool:
        return self.auth_method == "none"

    def metadata(self, with_secret: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "client_id": self.client_id,
            "client_id_issued_at": self.issued_at,
            "client_name": self.name,
            "token_endpoint_auth_method": self.auth_method,
            "grant_types": self.grant_types,
            "redirect_uris": self.redirect_uris,
        }
        if self.scope is not None:
            out["scope"] = self.scope
        if self.jwks is not None:
            out["jwks"] = self.jwks
        if self.jwks_uri is not None:
            out["jwks_uri"] = self.jwks_uri
        if self.client_secret is not None and with_secret:
            out["client_secret"] = self.client_secret
            out["client_secret_expires_at"] = 0
        return out


def _method_of(form: dict[str, str], authorization: str | None) -> str:
    if form.get("client_assertion_type") or form.get("client_assertion"):
        return "private_key_jwt"
    if authorization and authorization[:6].lower() == "basic ":
        return "client_secret_basic"
    return "client_secret_post" if "client_secret" in form else "none"


def basic_client_id(header: str) -> str | None:
    """The client id in an `Authorization: Basic` header, without checking the secret."""
    if header[:6].lower() != "basic ":
        return None
    try:
        return unquote(base64.b64decode(header[6:].strip()).decode().partition(":")[0]) or None
    except (ValueError, UnicodeDecodeError):
        return None


def metadata_error(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description, 400)


class ClientRegistry:
    def __init__(self, seed: int | str, site_id: str) -> None:
        self._rng = random.Random(f"{seed}/{site_id}/clients")
        self.clients: dict[str, Client] = {}
        self._seen_jti: dict[str, float] = {}  # jti -> its assertion's exp (wall clock)

    def get(self, client_id: Any) -> Client | None:
        return self.clients.get(client_id) if isinstance(client_id, str) else None

    def first(self) -> Client | None:
        return next(iter(self.clients.values()), None)

    def _token(self, nbytes: int) -> str:
        raw = self._rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def register(
        self,
        data: Any,
        scope_check: Any = None,
        now: float | None = None,
        methods: list[str] | tuple[str, ...] = AUTH_METHODS,
    ) -> Client:
        """Validate RFC 7591 metadata and add the client; raise OAuthError naming the bad field.
        `scope_check(text)` raises ScopeError for scopes the site cannot grant; `methods` are the
        client authentication methods the site takes (public clients, `none`, always)."""
        if not isinstance(data, dict):
            raise metadata_error("The registration request must be a JSON object")
        grant_types = data.get("grant_types", ["authorization_code", "refresh_token"])
        if not isinstance(grant_types, list) or not grant_types:
            raise metadata_error("grant_types must be a non-empty array")
        unknown = [g for g in grant_types if g not in GRANT_TYPES]
        if unknown:
            raise metadata_error(f"grant_types not supported: {', '.join(map(str, unknown))}")
        jwks, jwks_uri = data.get("jwks"), data.get("jwks_uri")
        # RFC 7591's default is client_secret_basic; a client that sends keys means private_key_jwt.
        default_method = "private_key_jwt" if jwks or jwks_uri else "client_secret_basic"
        method = data.get("token_endpoint_auth_method", default_method)
        accepted = ["none", *(m for m in methods if m != "none")]
        if method not in accepted:
            raise metadata_error(
                f"token_endpoint_auth_method '{method}' is not supported here; use one of {', '.join(accepted)}"
            )
        redirect_uris = data.get("redirect_uris", [])
        if not isinstance(redirect_uris, list) or not all(isinstance(u, str) for u in redirect_uris):
            raise OAuthError("invalid_redirect_uri", "redirect_uris must be an array of URIs", 400)
        for uri in redirect_uris:
            parts = urlsplit(uri)
            if not parts.scheme or parts.fragment or (parts.scheme in ("http", "https") and not parts.netloc):
                raise OAuthError(
                    "invalid_redirect_uri", f"'{uri}' is not an absolute URI without a fragment", 400
                )
        if "authorization_code" in grant_types and not redirect_uris:
            raise OAuthError("invalid_redirect_uri", "the authorization_code grant needs redirect_uris", 400)
        if method == "private_key_jwt":
            if bool(jwks) == bool(jwks_uri):
                raise metadata_error("private_key_jwt needs exactly one of jwks and jwks_uri")
            if jwks is not None:
                try:
                    KeySet.import_key_set(jwks)
                except (JoseError, ValueError, KeyError, TypeError) as exc:
                    raise metadata_error(f"jwks is not a usable JSON Web Key Set: {exc}") from None
            if jwks_uri is not None and urlsplit(str(jwks_uri)).scheme not in ("http", "https"):
                raise metadata_error("jwks_uri must be an http(s) URL")
        if method == "none" and "client_credentials" in grant_types:
            raise metadata_error("client_credentials needs a confidential client, not auth method 'none'")
        scope = data.get("scope")
        if scope is not None:
            if not isinstance(scope, str):
                raise metadata_error("scope must be a space-separated string")
            if scope_check is not None:
                try:
                    scope_check(scope)
                except ScopeError as exc:
                    raise metadata_error(f"scope: {exc}") from None
        client_id = str(data.get("client_id") or self._token(12))
        if client_id in self.clients:
            raise metadata_error(f"client_id '{client_id}' is already registered")
        secret = None
        if method in ("client_secret_basic", "client_secret_post"):
            secret = str(data.get("client_secret") or self._token(24))
        client = Client(
            client_id=client_id,
            auth_method=method,
            client_secret=secret,
            redirect_uris=list(redirect_uris),
            grant_types=list(grant_types),
            scope=scope,
            jwks=jwks,
            jwks_uri=jwks_uri,
            name=str(data.get("client_name", "")),
            issued_at=int(now if now is not None else time.time()),
        )
        self.clients[client_id] = client
        return client

    # -- client authentication at the token, introspection and revocation endpoints -----------
    async def authenticate(
        self,
        form: dict[str, str],
        authorization: str | None,
        token_url: str,
        algorithms: list[str],
        max_lifetime: int,
        reject_jti: bool = False,
        reject_secret: bool = False,
        methods: list[str] | tuple[str, ...] = AUTH_METHODS,
    ) -> Client:
        """The client making this request, or OAuthError(invalid_client). `methods`: the client
        authentication methods the site takes (a public client's `none` always)."""
        used = _method_of(form, authorization)
        if used != "none" and used not in methods:
            raise invalid_client(
                f"Client authentication by {used} is not accepted here; use {' or '.join(methods)}",
                used == "client_secret_basic",
            )
        if used == "private_key_jwt":
            return await self._verify_assertion(form, token_url, algorithms, max_lifetime, reject_jti)
        if used == "client_secret_basic":
            assert authorization is not None
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                raw_id, _, raw_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                raise invalid_client(
                    "The Basic Authorization header is not base64 of id:secret", True
                ) from None
            client = self.get(unquote(raw_id))
            if client is None:
                raise invalid_client(f"Unknown client_id '{unquote(raw_id)}'", True)
            if form.get("client_id") not in (None, client.client_id):
                raise OAuthError("invalid_request", "client_id in the body differs from the Basic header")
            self._check_secret(client, unquote(raw_secret), reject_secret, basic=True)
            return client
        client = self.get(form.get("client_id"))
        if client is None:
            raise invalid_client(f"Unknown client_id '{form.get('client_id', '')}'")
        if "client_secret" in form:
            self._check_secret(client, form["client_secret"], reject_secret, basic=False)
            return client
        if not client.public:
            raise invalid_client(f"Client '{client.client_id}' is confidential and must authenticate")
        return client

    @staticmethod
    def _check_secret(client: Client, secret: str, reject: bool, basic: bool) -> None:
        if client.client_secret is None:
            raise invalid_client(
                f"Client '{client.client_id}' has no secret; it authenticates another way", basic
            )
        if reject or not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
            raise invalid_client("Invalid client secret", basic)

    async def _verify_assertion(
        self, form: dict[str, str], token_url: str, algorithms: list[str], max_lifetime: int, reject_jti: bool
    ) -> Client:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        try:
            compact = extract_compact(assertion.encode())
            header = compact.headers()
            claims = orjson.loads(compact.payload)
        except (JoseError, ValueError, TypeError):
            raise invalid_client("client_assertion is not a signed JWT") from None
        if not isinstance(claims, dict):
            raise invalid_client("client_assertion's payload is not a JSON object")
        malformed = [
            name
            for name, ok in (
                ("kid", lambda v: isinstance(v, str)),
                ("typ", lambda v: isinstance(v, str)),
                ("crit", lambda v: isinstance(v, list) and v and all(isinstance(n, str) for n in v)),
            )
            if name in header and not ok(header[name])
        ]
        if malformed:  # RFC 7515 4.1: kid and typ are strings, crit a non-empty list of names
            raise invalid_client(f"client_assertion header {', '.join(malformed)} has the wrong JSON type")
        alg = header.get("alg")
        if alg not in algorithms:
            raise invalid_client(
                f"client_assertion alg '{alg}' is not allowed; use one of {', '.join(algorithms)}"
            )
        client = self.get(claims.get("iss"))
        if client is None or client.auth_method != "private_key_jwt":
            raise invalid_client(f"'{claims.get('iss')}' is not a client registered for private_key_jwt")
        keys = await self._client_keys(client)
        try:
            verified = jwt.decode(assertion, keys, algorithms=[alg])
        except JoseError as exc:
            raise invalid_client(
                f"client_assertion signature does not verify with the client's JWKS ({exc.error})"
            ) from None
        claims = dict(verified.claims)
        if claims.get("sub") != client.client_id:
            raise invalid_client("client_assertion sub must equal iss (the client_id)")
        aud = claims.get("aud")
        if token_url not in (aud if isinstance(aud, list) else [aud]):
            raise invalid_client(f"client_assertion aud must be the token endpoint {token_url}")
        # The client signs with its own (wall) clock; the simulated clock only drives issued tokens.
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
            raise invalid_client("client_assertion needs a numeric exp")
        if exp <= now:
            raise invalid_client("client_assertion has expired")
        if exp > now + max_lifetime + 5:  # 5 s of leeway for the client's clock
            raise invalid_client(f"client_assertion exp is more than {max_lifetime} s in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise invalid_client("client_assertion needs a jti")
        self._seen_jti = {k: v for k, v in self._seen_jti.items() if v > now}
        if reject_jti or f"{client.client_id}/{jti}" in self._seen_jti:
            raise invalid_client(f"client_assertion jti '{jti}' has already been used")
        self._seen_jti[f"{client.client_id}/{jti}"] = float(exp)
        return client

    @staticmethod
    async def _client_keys(client: Client) -> KeySet:
        jwks = client.jwks
        if jwks is None and client.jwks_uri:
            try:
                async with httpx.AsyncClient(timeout=5) as http:
                    response = await http.get(client.jwks_uri)
                response.raise_for_status()
                jwks = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise invalid_client(
                    f"Could not fetch the client's jwks_uri {client.jwks_uri}: {exc}"
                ) from None
        try:
            return KeySet.import_key_set(jwks or {"keys": []})
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise invalid_client(f"The client's JWKS is not usable: {exc}") from None
