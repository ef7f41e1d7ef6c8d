"""Who may read and change what: the hook through which an auth layer enforces scopes on data.

A layer runs the request `acting_under(policy)`; `FhirService` asks `current_policy()` before every
read, search and write, and filters search results, includes, history and `$everything` through it.
With no policy (auth off) there are no checks and the cost is one context-variable lookup.
Interactions are SMART v2 letters: c(reate), r(ead), u(pdate), d(elete), s(earch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from simulator.fhir.errors import FHIRError
    from simulator.fhir.service import FhirService


class AccessPolicy(Protocol):
    def require(self, resource_type: str, interaction: str) -> None:
        """Raise a FHIRError (403) unless some grant covers `interaction` on `resource_type`."""
        ...

    def filter_ids(
        self, service: FhirService, resource_type: str, ids: list[str], interaction: str
    ) -> list[str] | None:
        """The permitted subset of these stored ids when it can be told without reading each
        resource (e.g. from an index); None: `allows` must judge them one by one."""
        ...

    def allows(
        self, service: FhirService, resource_type: str, resource: dict[str, Any] | None, interaction: str
    ) -> bool:
        """Whether this resource (None: a deletion marker) is inside what was granted."""
        ...

    def denied(self, resource_type: str, resource_id: str, interaction: str) -> FHIRError:
        """The error for a resource outside the grant (403, or the vendor's status)."""
        ...


_policy: ContextVar[AccessPolicy | None] = ContextVar("ehrsim_access_policy", default=None)


def current_policy() -> AccessPolicy | None:
    return _policy.get()


@contextlib.contextmanager
def acting_under(policy: AccessPolicy | None) -> Iterator[None]:
    token = _policy.set(policy)
    try:
        yield
    finally:
        _policy.reset(token)
