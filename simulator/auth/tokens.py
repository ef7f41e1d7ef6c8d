"""What the authorization server has handed out: codes, access tokens and refresh tokens.

Values come from a seeded generator (same scenario, seed and requests: same tokens). Expiry is on
the sandbox's simulated clock, so a test can advance the clock past a token's `exp`.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field

from simulator.auth.scopes import ScopeSet


@dataclass(frozen=True)
class Grant:
    """What a user (or a backend client) authorized: scopes and launch context."""

    client_id: str
    scopes: ScopeSet
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None  # e.g. "Practitioner/123"
    nonce: str | None = None


@dataclass
class AuthorizationCode:
    code: str
    grant: Grant
    redirect_uri: str
    code_challenge: str
    expires_at: float
    used: bool = False
    issued: list[str] = field(default_factory=list)  # tokens made from it, revoked on code reuse


@dataclass
class AccessToken:
    token: str
    grant: Grant
    issued_at: float
    expires_at: float
    jti: str
    revoked: bool = False
    refresh_token: str | None = None

    def active(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


@dataclass
class RefreshToken:
    token: str
    grant: Grant
    expires_at: float
    uses: int = 0
    revoked: bool = False

    def active(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


class TokenStore:
    def __init__(self, seed: int | str, site_id: str) -> None:
        self._rng = random.Random(f"{seed}/{site_id}/tokens")
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}

    def new_value(self, nbytes: int = 24) -> str:
        raw = self._rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def forget_inactive(self, now: float, keep: int = 10_000) -> None:
        """Drop expired and revoked tokens once there are more than `keep` (long load tests)."""
        if len(self.access) > keep:
            self.access = {k: v for k, v in self.access.items() if v.active(now)}
        if len(self.refresh) > keep:
            self.refresh = {k: v for k, v in self.refresh.items() if v.active(now)}
        if len(self.codes) > keep:
            self.codes = {k: v for k, v in self.codes.items() if not v.used and v.expires_at > now}

    def revoke(self, token: str, client_id: str | None = None) -> bool:
        """Revoke an access or refresh token (a refresh token takes its access tokens along)."""
        found = self.access.get(token) or self.refresh.get(token)
        if found is None or (client_id is not None and found.grant.client_id != client_id):
            return False
        found.revoked = True
        if isinstance(found, RefreshToken):
            for access in self.access.values():
                if access.refresh_token == token:
                    access.revoked = True
        return True
