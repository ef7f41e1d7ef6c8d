"""FHIR errors: every failure leaves the server as an OperationOutcome with the right status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # IssueType: invalid, structure, required, value, not-found, not-supported, ...
    diagnostics: str
    expression: tuple[str, ...] = ()
    details: dict[str, Any] | None = None  # CodeableConcept, e.g. a vendor's error code

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.details:
            issue["details"] = self.details
        issue["diagnostics"] = self.diagnostics
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


@dataclass(slots=True)
class FHIRError(Exception):
    """Raised anywhere in request handling; rendered as `status` + OperationOutcome."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        status: int,
        code: str,
        diagnostics: str,
        *,
        expression: tuple[str, ...] | list[str] = (),
        severity: str = "error",
        headers: dict[str, str] | None = None,
    ) -> FHIRError:
        return cls(status, [Issue(severity, code, diagnostics, tuple(expression))], dict(headers or {}))

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)

    def __str__(self) -> str:
        return f"{self.status}: " + "; ".join(i.diagnostics for i in self.issues)


def not_found(resource_type: str, resource_id: str) -> FHIRError:
    return FHIRError.of(404, "not-found", f"Resource {resource_type}/{resource_id} is not known")


def invalid(diagnostics: str, expression: tuple[str, ...] | list[str] = (), status: int = 400) -> FHIRError:
    return FHIRError.of(status, "invalid", diagnostics, expression=expression)
