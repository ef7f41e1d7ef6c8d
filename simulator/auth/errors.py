"""OAuth 2.0 errors (RFC 6749 section 5.2): what every auth endpoint answers when it says no."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response

# Token responses, good or bad, must not be cached (RFC 6749 section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class OAuthError(Exception):
    """Raised by the authorization server; rendered as `{"error", "error_description"}` JSON."""

    error: str  # invalid_request, invalid_client, invalid_grant, invalid_scope, ...
    description: str
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}

    def response(self) -> Response:
        return json_response(self.body(), self.status, {**NO_STORE, **self.headers})

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def invalid_client(description: str, basic: bool = False) -> OAuthError:
    # A client that tried HTTP Basic gets the challenge back (RFC 6749 section 5.2).
    headers = {"WWW-Authenticate": 'Basic realm="ehrsim"'} if basic else {}
    return OAuthError("invalid_client", description, 401, headers)
