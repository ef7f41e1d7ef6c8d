"""A site's `auth:` section: whether auth is on and the vendor's rules for it, as data.

Vendor profiles and scenarios set these (token lifetimes, refresh-token rules, advertised scopes and
capabilities); the code never asks which vendor it is imitating.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
]
DEFAULT_SCOPES = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.read",
    "patient/*.rs",
    "patient/*.cruds",
    "user/*.read",
    "user/*.rs",
    "user/*.cruds",
    "system/*.read",
    "system/*.rs",
    "system/*.cruds",
]


@dataclass(slots=True)
class RefreshRules:
    """Who gets refresh tokens and how they behave."""

    public_clients: bool = True  # Epic: public clients get none
    confidential_clients: bool = True
    rotate: bool = True  # a refresh returns a new refresh token and retires the old one (Oracle: no)
    lifetime: int = 90 * 24 * 3600  # simulated seconds
    requires_offline_access: bool = True  # offline_access or online_access must be granted


def _names(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass(slots=True)
class AuthSettings:
    required: bool = False  # auth on: bearer tokens required, OAuth endpoints served
    access_token_lifetime: int = 3600  # simulated seconds; Oracle Health: 570
    id_token_lifetime: int = 3600
    code_lifetime: int = 120
    refresh_tokens: RefreshRules = field(default_factory=RefreshRules)
    auto_approve: bool = False  # skip the login/picker page (CI); also `?auto_approve=true`
    audiences: list[str] = field(default_factory=list)  # accepted besides the FHIR base; "*": any
    backend_jwt_alg: list[str] = field(default_factory=lambda: ["RS384", "ES384"])  # or one name
    max_assertion_lifetime: int = 300  # backend-services `exp` at most this far ahead
    forbidden_status: int = 403  # data outside the grant (some vendors answer 404)
    scope_syntax: list[str] = field(default_factory=lambda: ["v1", "v2"])  # accepted SMART scope versions
    pkce: str = "S256"  # S256: required for every client; optional: may be omitted (never plain)
    scopes_supported: list[str] = field(default_factory=lambda: list(DEFAULT_SCOPES))
    extra_scopes: list[str] = field(default_factory=list)  # vendor scopes accepted verbatim
    capabilities: list[str] = field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    grant_types: list[str] = field(
        default_factory=lambda: ["authorization_code", "refresh_token", "client_credentials"]
    )
    client_auth: list[str] = field(
        default_factory=lambda: ["client_secret_basic", "client_secret_post", "private_key_jwt"]
    )
    discovery: dict[str, Any] = field(default_factory=dict)  # extra smart-configuration fields
    failures: list[dict[str, Any]] = field(default_factory=list)  # see auth/failures.py
    clients: list[dict[str, Any]] = field(default_factory=list)  # clients of this site only

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> AuthSettings:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown auth settings: {', '.join(sorted(unknown))}")
        refresh = data.pop("refresh_tokens", None) or {}
        refresh_known = {f.name for f in fields(RefreshRules)}
        if set(refresh) - refresh_known:
            bad = ", ".join(sorted(set(refresh) - refresh_known))
            raise ValueError(f"unknown auth.refresh_tokens settings: {bad}")
        for key in ("backend_jwt_alg", "scope_syntax", "client_auth"):
            if key in data:
                data[key] = _names(data[key])
        settings = cls(refresh_tokens=RefreshRules(**refresh), **data)
        if settings.pkce not in ("S256", "optional"):
            raise ValueError(
                f"auth.pkce must be S256 or optional, not {settings.pkce!r} (plain is never allowed)"
            )
        if not set(settings.scope_syntax) <= {"v1", "v2"} or not settings.scope_syntax:
            raise ValueError(f"auth.scope_syntax takes v1 and/or v2, not {settings.scope_syntax}")
        return settings

    def accepts_audience(self, aud: str | None, fhir_base: str) -> bool:
        if "*" in self.audiences:
            return True
        wanted = (aud or "").rstrip("/")
        return wanted == fhir_base.rstrip("/") or wanted in (a.rstrip("/") for a in self.audiences)

    def advertised_capabilities(self) -> list[str]:
        """`capabilities` without permission-v1/v2 for a scope syntax this site refuses."""
        refused = {f"permission-{v}" for v in ("v1", "v2") if v not in self.scope_syntax}
        return [c for c in self.capabilities if c not in refused]
