"""Validation of incoming resources against the FHIR R4B models of fhir.resources.

ehrsim speaks FHIR R4 (4.0.1). fhir.resources 8 ships R5 by default and R4B (4.3.0) as its closest
model of R4; the differences that matter here are listed in docs/fhir-r4-and-r4b.md. Each problem is
reported as an OperationOutcome issue whose `expression` is the FHIRPath of the element.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from simulator.fhir.element_cache import vouch
from simulator.fhir.errors import FHIRError, Issue

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# R4 resource types that R4B removed or restructured (the MedicinalProduct* family and the evidence
# syntheses): no R4B model validates them, so the server does not offer them.
R4_ONLY_TYPES = frozenset(
    {
        "EffectEvidenceSynthesis",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductInteraction",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "RiskEvidenceSynthesis",
        "SubstanceSpecification",
    }
)


@functools.cache
def model_for(resource_type: str) -> Any | None:
    if resource_type in R4_ONLY_TYPES:
        return None
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


@functools.cache
def _top_level_rules(resource_type: str) -> tuple[tuple[str, ...], tuple[tuple[str, frozenset[str]], ...]]:
    """Required top-level elements, and `code` elements whose complete code list the model carries.

    The models record both (`element_required`, `enum_values`) without enforcing them; a list that
    ends in "+" is only the start of a larger value set, so it is not checked.
    """
    model = model_for(resource_type)
    required, coded = [], []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("element_required"):
            required.append(info.alias or name)
        codes = extra.get("enum_values")
        if codes and "+" not in codes:
            coded.append((info.alias or name, frozenset(codes)))
    return tuple(required), tuple(coded)


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}"
    return out


def validate_resource(resource: Any, expected_type: str | None = None) -> None:
    """Raise FHIRError(400) listing every structural problem in `resource`."""
    if not isinstance(resource, dict):
        raise FHIRError.of(400, "structure", "A FHIR resource must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise FHIRError.of(400, "required", "The resource has no resourceType", expression=["resourceType"])
    if expected_type and rtype != expected_type:
        raise FHIRError.of(
            400,
            "invalid",
            f"resourceType {rtype} does not match the URL's resource type {expected_type}",
            expression=["resourceType"],
        )
    model = model_for(rtype)
    if model is None:
        raise FHIRError.of(400, "not-supported", f"Resource type {rtype} is not supported by this server")
    rid = resource.get("id")
    issues: list[Issue] = []
    if rid is not None and (not isinstance(rid, str) or not ID_PATTERN.match(rid)):
        issues.append(
            Issue("error", "value", "Resource id must match [A-Za-z0-9\\-.]{1,64}", (f"{rtype}.id",))
        )
    try:
        if not vouch(model, resource):
            model.model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if p != "resourceType")
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "Unknown element (not defined in FHIR R4 for this resource)"
            elif err["type"] == "missing":
                message = "Required element is missing"
            path = _path(rtype, loc)
            if path == f"{rtype}.id" and issues and issues[0].expression == (path,):
                continue  # already reported with the R4 rule
            required = err["type"] == "missing" or "is required" in message
            kind = "required" if required else "structure"
            issues.append(Issue("error", kind, message, (path,)))
    except (ValueError, TypeError, RecursionError) as exc:  # model code beyond pydantic's own checks
        issues.append(Issue("error", "structure", f"Invalid resource: {exc}", (rtype,)))
    required, coded = _top_level_rules(rtype)
    reported = {e for i in issues for e in i.expression}
    for name in required:
        if resource.get(name) is None and f"{rtype}.{name}" not in reported:
            issues.append(Issue("error", "required", "Required element is missing", (f"{rtype}.{name}",)))
    for name, codes in coded:
        value = resource.get(name)
        if isinstance(value, str) and value not in codes:
            issues.append(
                Issue(
                    "error",
                    "code-invalid",
                    f"'{value}' is not a valid code for {name} (allowed: {', '.join(sorted(codes))})",
                    (f"{rtype}.{name}",),
                )
            )
    if issues:
        raise FHIRError(400, issues)
