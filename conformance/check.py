"""The unit of the conformance suite: one requirement, one check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


class CheckFailed(AssertionError):
    """The server did not meet the requirement; the message says what was expected and what came."""


class CheckSkipped(Exception):
    """The requirement does not apply to this server (e.g. it does not claim the feature)."""


@dataclass
class Target:
    """The server under test."""

    fhir_base: str
    http: httpx.Client
    token: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        headers = {"Accept": "application/fhir+json", **kw.pop("headers", {})}
        if self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        url = path if path.startswith("http") else self.fhir_base.rstrip("/") + path
        return self.http.get(url, headers=headers, **kw)

    def capability(self) -> dict[str, Any]:
        if "capability" not in self.cache:
            response = self.get("/metadata")
            expect(response.status_code == 200, f"GET /metadata: expected 200, got {response.status_code}")
            self.cache["capability"] = response.json()
        return self.cache["capability"]

    def resource_entry(self, resource_type: str) -> dict[str, Any] | None:
        for rest in self.capability().get("rest", []):
            for entry in rest.get("resource", []):
                if entry.get("type") == resource_type:
                    return entry
        return None

    def any_id(self, resource_type: str) -> str:
        """The id of some resource of the type on the server (found by a search), or skip."""
        key = f"id:{resource_type}"
        if key not in self.cache:
            response = self.get(f"/{resource_type}", params={"_count": 1})
            entries = response.json().get("entry", []) if response.status_code == 200 else []
            found = [
                e["resource"]["id"]
                for e in entries
                if e.get("resource", {}).get("resourceType") == resource_type
            ]
            if not found:
                raise CheckSkipped(f"no {resource_type} found on the server to test with")
            self.cache[key] = found[0]
        return self.cache[key]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    description: str
    spec: str
    group: str
    run: Callable[[Target], None]


REGISTRY: dict[str, Check] = {}


def check(
    id: str, title: str, spec: str, group: str, registry: dict[str, Check] | None = None
) -> Callable[[Callable[[Target], None]], Callable[[Target], None]]:
    """Register a function as a check; its docstring is the requirement, quoted from the spec.
    `registry`: a suite kept apart from the server checks (default REGISTRY)."""
    checks = REGISTRY if registry is None else registry

    def register(fn: Callable[[Target], None]) -> Callable[[Target], None]:
        if id in checks:
            raise ValueError(f"duplicate check id {id}")
        checks[id] = Check(id, title, (fn.__doc__ or "").strip(), spec, group, fn)
        return fn

    return register


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_status(response: httpx.Response, status: int, what: str) -> None:
    expect(
        response.status_code == status,
        f"{what}: expected HTTP {status}, got {response.status_code} ({response.text[:200]!r})",
    )
