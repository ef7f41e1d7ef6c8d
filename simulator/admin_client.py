"""A small Python client for the admin API, for tests, the conformance suite and users.

from simulator.admin_client import AdminClient
admin = AdminClient("http://127.0.0.1:8080")
admin.advance("5m")
admin.expect("count", filter={"path": "/Observation", "status": "429"}, at_least=1)
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

import httpx
import orjson


class AdminError(RuntimeError):
    """The admin API answered with an error; `status` and `error` are its status and code."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message


class VerificationFailed(AssertionError):
    """`expect` found the journal did not match; the message carries the check's findings."""


def finding(check: str, spec: dict[str, Any], result: dict[str, Any]) -> str:
    """A failed check as a test failure message: what was asked, then what the journal showed."""
    asked = ", ".join(f"{k}={v!r}" for k, v in spec.items()) or "-"
    found = ", ".join(f"{k}={v!r}" for k, v in result.items() if k not in ("check", "ok", "dropped"))
    if result.get("dropped"):  # a full journal forgot its oldest entries: the check saw fewer
        found += f" (the journal dropped {result['dropped']} old entries)"
    return f"journal check '{check}' failed\n  asked: {asked}\n  found: {found}"


class AdminClient:
    def __init__(
        self,
        origin: str,
        token: str | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`origin` is the server's http://host:port or https://host:port (the admin API is under
        /_admin); `verify` is how an HTTPS server is trusted (default: the system's CAs, or
        $SSL_CERT_FILE), e.g. `ssl.create_default_context(cafile="certs/ehrsim-cert.pem")`."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=origin.rstrip("/") + "/_admin", headers=headers, timeout=timeout, verify=verify
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                raise AdminError(response.status_code, body.get("error", ""), body.get("message", ""))
            except (ValueError, AttributeError):
                raise AdminError(response.status_code, "error", response.text) from None
        return response.json()

    # -- sandbox -----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def sites(self) -> list[dict[str, Any]]:
        return self._call("GET", "/sites")

    def scenario(self) -> dict[str, Any]:
        return self._call("GET", "/scenario")

    def load_scenario(
        self, name: str | None = None, definition: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Load a shipped scenario by name, or one given as data; everything is reset."""
        body = {"definition": definition} if definition is not None else {"name": name}
        return self._call("PUT", "/scenario", json=body)

    def reset(self) -> dict[str, Any]:
        return self._call("POST", "/reset")

    # -- faults, limits, clock ---------------------------------------------------------------------
    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")

    def fault(self, fault_id: str) -> dict[str, Any]:
        return self._call("GET", _fault_path(fault_id))

    def add_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/faults", json=spec)

    def enable_fault(self, fault_id: str) -> dict[str, Any]:
        return self._call("POST", _fault_path(fault_id) + "/enable")

    def disable_fault(self, fault_id: str) -> dict[str, Any]:
        return self._call("POST", _fault_path(fault_id) + "/disable")

    def rate_limits(self) -> list[dict[str, Any]]:
        return self._call("GET", "/rate-limits")

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "/clock")

    def advance(self, duration: float | str) -> dict[str, Any]:
        """Move simulated time forward by seconds or a duration such as '5m'."""
        key = "seconds" if isinstance(duration, int | float) else "duration"
        return self._call("POST", "/clock/advance", json={key: duration})

    # -- journal -----------------------------------------------------------------------------------
    def journal(self, **filters: Any) -> list[dict[str, Any]]:
        """Entries matching the filters (site, method, path, status, client_id, fault, since, ...)."""
        return self._call("GET", "/journal", params=filters)["entries"]

    def journal_stats(self) -> dict[str, Any]:
        data = self._call("GET", "/journal", params={"limit": 0})
        return {k: v for k, v in data.items() if k != "entries"}

    def clear_journal(self) -> dict[str, Any]:
        return self._call("DELETE", "/journal")

    def export(self, **filters: Any) -> list[dict[str, Any]]:
        response = self.http.get("/journal/export", params=filters)
        if response.status_code >= 400:
            body = response.json()
            raise AdminError(response.status_code, body.get("error", ""), body.get("message", ""))
        return [orjson.loads(line) for line in response.content.splitlines() if line]

    def verify(self, check: str, **spec: Any) -> dict[str, Any]:
        """Run a check (count, order, gaps, retry_after, duplicates, during); returns its findings."""
        return self._call("POST", "/journal/verify", json={"check": check, **spec})

    def expect(self, check: str, **spec: Any) -> dict[str, Any]:
        """Like `verify`, but raise VerificationFailed (an AssertionError) when the check fails."""
        __tracebackhide__ = True  # under pytest, the failure points at the caller's line
        result = self.verify(check, **spec)
        if not result.get("ok"):
            raise VerificationFailed(finding(check, spec, result))
        return result

    def metrics(self) -> str:
        response = self.http.get("/metrics")
        if response.status_code >= 400:
            raise AdminError(response.status_code, "error", response.text)
        return response.text

    # -- SMART auth (simulator/auth/admin.py) ------------------------------------------------------
    def clients(self, site: str | None = None) -> dict[str, Any]:
        return self._call("GET", "/clients", params={"site": site} if site else None)

    def register_client(self, metadata: dict[str, Any], site: str | None = None) -> dict[str, Any]:
        """Register an OAuth client (RFC 7591 metadata; client_id and client_secret may be chosen)."""
        return self._call("POST", "/clients", json={**metadata, **({"site": site} if site else {})})

    def token(self, **request: Any) -> dict[str, Any]:
        """Mint a token: `site`, `client_id`, `scope`, `patient`, `encounter`, `user` (all optional)."""
        return self._call("POST", "/token", json={k: v for k, v in request.items() if v is not None})

    def launch(self, **context: Any) -> dict[str, Any]:
        """Start an EHR launch: `patient`, `encounter`, `user` ("Practitioner/id"), `site`,
        `launch_url` (the app's); returns `launch`, `iss` and, with a launch_url, the `url`."""
        return self._call("POST", "/launch", json={k: v for k, v in context.items() if v is not None})


def _fault_path(fault_id: str) -> str:
    # Fault ids are free text in scenario files: "/", "?", "#" or spaces must not change the route.
    return "/faults/" + quote(fault_id, safe="")
