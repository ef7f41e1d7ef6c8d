"""Scopes enforced on data: the `AccessPolicy` a bearer token's grant puts on a FHIR request.

- A type or interaction no scope covers: 403 (`insufficient_scope`).
- `patient/` scopes reach only the token's patient compartment: reads of other patients' data get
  `forbidden_status` (403 by default), searches are filtered to the compartment. Types outside the
  patient compartment (Practitioner, Organization, Medication...) are not restricted by it.
- Granular scopes (`patient/Observation.rs?category=...`) let through exactly the matching resources.
- `user/` and `system/` scopes are not limited to a compartment.
A resource is visible if any one covering scope admits it (scopes add up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simulator.auth.scopes import ResourceScope
from simulator.fhir.errors import FHIRError
from simulator.fhir.service import compartment_param

if TYPE_CHECKING:
    from simulator.fhir.service import FhirService

_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


class ScopePolicy:
    def __init__(
        self, scopes: tuple[ResourceScope, ...], patient: str | None, forbidden_status: int = 403
    ) -> None:
        self.scopes = scopes
        self.patient = patient
        self.forbidden_status = forbidden_status
        self._covers: dict[tuple[str, str], list[ResourceScope]] = {}
        self._compartment: dict[str, set[str]] = {}
        self._params: dict[
            str, Any
        ] = {}  # compartment search parameter per type (None: not patient data)  # per type, for this request (policies are per request)

    def _covering(self, resource_type: str, interaction: str) -> list[ResourceScope]:
        key = (resource_type, interaction)
        found = self._covers.get(key)
        if found is None:
            found = self._covers[key] = [s for s in self.scopes if s.covers(resource_type, interaction)]
        return found

    def require(self, resource_type: str, interaction: str) -> None:
        if not self._covering(resource_type, interaction):
            granted = " ".join(s.text for s in self.scopes) or "none"
            raise FHIRError.of(
                403,
                "forbidden",
                f"The access token's scopes do not allow {_VERBS[interaction]} of {resource_type} "
                f"(granted resource scopes: {granted})",
                headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
            )

    def filter_ids(
        self, service: FhirService, resource_type: str, ids: list[str], interaction: str
    ) -> list[str] | None:
        covering = self._covering(resource_type, interaction)
        if any(s.query for s in covering):
            return None  # granular: judged resource by resource
        if any(s.context != "patient" for s in covering):
            return ids
        if not covering:
            return []
        if resource_type == "Patient":
            return [rid for rid in ids if rid == self.patient]
        compartment = self._compartment_ids(service, resource_type)
        return ids if compartment is None else [rid for rid in ids if rid in compartment]

    def allows(
        self, service: FhirService, resource_type: str, resource: dict[str, Any] | None, interaction: str
    ) -> bool:
        registry = service.site.registry
        for scope in self._covering(resource_type, interaction):
            if scope.context == "patient" and not self._in_compartment(
                service, resource_type, resource, interaction
            ):
                continue
            if scope.matches(registry, resource_type, resource):
                return True
        return False

    def denied(self, resource_type: str, resource_id: str, interaction: str) -> FHIRError:
        if self.forbidden_status == 404:
            return FHIRError.of(404, "not-found", f"Resource {resource_type}/{resource_id} is not known")
        return FHIRError.of(
            self.forbidden_status,
            "forbidden",
            f"{resource_type}/{resource_id} is outside what the access token grants "
            f"({_VERBS[interaction]}; patient context: {self.patient or 'none'})",
        )

    def _compartment_param(self, service: FhirService, resource_type: str) -> Any:
        if resource_type not in self._params:
            self._params[resource_type] = compartment_param(service.site, resource_type)
        return self._params[resource_type]

    def _compartment_ids(self, service: FhirService, resource_type: str) -> set[str] | None:
        """Stored ids of the type in the token's patient compartment (None: not patient data),
        from the store's reference index; kept for the request (policies are per request)."""
        param = self._compartment_param(service, resource_type)
        if param is None:
            return None
        ids = self._compartment.get(resource_type)
        if ids is None:
            found = service.site.store.postings(resource_type, param).get(f"Patient/{self.patient}", ())
            ids = self._compartment[resource_type] = set(found) if self.patient else set()
        return ids

    def _in_compartment(
        self, service: FhirService, resource_type: str, resource: dict[str, Any] | None, interaction: str
    ) -> bool:
        if resource_type == "Patient":
            return resource is not None and self.patient is not None and resource.get("id") == self.patient
        if self._compartment_param(service, resource_type) is None:
            return True  # not patient data
        if resource is None or self.patient is None:
            return False
        if interaction in ("r", "s"):  # stored data: the index answers without evaluating it
            rid = resource.get("id")
            if rid in (self._compartment_ids(service, resource_type) or ()):
                return True
            if rid in service.site.store.current(resource_type):
                return False
            # Deleted, so out of the index: judge the version given (a bulk export lists a deletion
            # by the version before it).
        return f"Patient/{self.patient}" in self._compartment_param(service, resource_type).values(resource)
