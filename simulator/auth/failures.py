"""Injectable auth failures: the vocabulary, where each one strikes, and what it does.

Each failure is data, `{type: NAME, ...params}`, optionally limited to one `client_id`. The flows ask
`AuthFailures.active(point, client_id)` at each decision point and apply what comes back:

| type                          | point       | effect                                                   |
|-------------------------------|-------------|----------------------------------------------------------|
| invalid_client_id             | authorize, token | the client is treated as unknown (400 / 401 invalid_client) |
| invalid_redirect_uri          | authorize   | the redirect_uri is rejected (400 invalid_request, no redirect) |
| invalid_scope                 | authorize, token | the scope request is refused (invalid_scope)        |
| invalid_client_secret         | token       | the secret is wrong (401 invalid_client)                 |
| invalid_jti                   | token       | the assertion's jti counts as replayed (401 invalid_client) |
| expired_refresh_token         | token       | refresh tokens are expired (400 invalid_grant)           |
| refresh_token_revoked_after   | token       | `uses: N`: the N+1th refresh with a token fails (invalid_grant) |
| token_endpoint_outage         | token       | 503 temporarily_unavailable, `retry_after` s; `hang` s first (a timeout) |
| slow_token_endpoint           | token       | `delay` s (wall clock) before answering normally         |
| narrower_scopes               | token       | grants fewer scopes: `drop: [...]`, default every write scope and offline_access |
| missing_patient_context       | token       | the response has no `patient` (the token is still bound to one) |
| clock_skew                    | token       | tokens are issued with `iat` `seconds` (default 300) in the future |
| invalid_token                 | resource    | every bearer token is rejected (401 invalid_token)       |
| expired_access_token          | resource    | every bearer token is expired (401 invalid_token)        |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

POINTS: dict[str, tuple[str, ...]] = {
    "invalid_client_id": ("authorize", "token"),
    "invalid_redirect_uri": ("authorize",),
    "invalid_scope": ("authorize", "token"),
    "invalid_client_secret": ("token",),
    "invalid_jti": ("token",),
    "expired_refresh_token": ("token",),
    "refresh_token_revoked_after": ("token",),
    "token_endpoint_outage": ("token",),
    "slow_token_endpoint": ("token",),
    "narrower_scopes": ("token",),
    "missing_patient_context": ("token",),
    "clock_skew": ("token",),
    "invalid_token": ("resource",),
    "expired_access_token": ("resource",),
}
_PARAMS = {
    "refresh_token_revoked_after": {"uses"},
    "token_endpoint_outage": {"status", "retry_after", "hang"},
    "slow_token_endpoint": {"delay"},
    "narrower_scopes": {"drop"},
    "clock_skew": {"seconds"},
}


def check_failure(entry: Any, where: str) -> dict[str, Any]:
    """Validate one failure entry; ValueError names the entry and the fix."""
    if not isinstance(entry, dict) or "type" not in entry:
        raise ValueError(f"{where}: an auth failure is a mapping with a 'type'")
    kind = entry["type"]
    if kind not in POINTS:
        raise ValueError(f"{where}: unknown auth failure '{kind}' (known: {', '.join(sorted(POINTS))})")
    unknown = set(entry) - {"type", "client_id"} - _PARAMS.get(kind, set())
    if unknown:
        raise ValueError(f"{where}: '{kind}' takes no {', '.join(sorted(unknown))}")
    return dict(entry)


class AuthFailures:
    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = [check_failure(e, f"auth.failures[{i}]") for i, e in enumerate(entries)]

    def active(
        self, point: str, client_id: str | None = None, injected: Sequence[dict[str, Any]] = ()
    ) -> dict[str, dict[str, Any]]:
        """The failures striking at `point` for this client, by type: the site's always-on ones and
        those `injected` for this request by the scenario fault engine."""
        return {
            e["type"]: e
            for e in (*self.entries, *injected)
            if point in POINTS.get(e["type"], ()) and e.get("client_id") in (None, client_id)
        }
