"""The search-parameter table: every parameter of every resource, as data.

`data/search-parameters.json` is generated from the FHIR R4 and US Core 6.1.0 definitions by
`tools/build_search_parameters.py`. Each parameter whose expression compiles (see `fhirpath`) and
whose type the engine implements becomes a `SearchParameter`; the rest are recorded in
`SearchRegistry.unsupported` so the CapabilityStatement never claims them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.fhir import fhirpath
from simulator.fhir.values import EXTRACTORS

DATA = Path(__file__).parent / "data" / "search-parameters.json"

# Parameters every resource understands that are handled by the engine itself, not by an expression.
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_total",
        "_elements",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
    }
)

MODIFIERS_BY_TYPE = {
    "token": ("missing", "not", "text", "of-type"),
    "string": ("missing", "exact", "contains"),
    "date": ("missing",),
    "reference": ("missing", "identifier", "type"),
    "quantity": ("missing",),
    "number": ("missing",),
    "uri": ("missing", "below", "above"),
}
PREFIXED_TYPES = frozenset({"date", "number", "quantity"})
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True, slots=True)
class SearchParameter:
    resource_type: str
    code: str
    type: str
    expression: str
    url: str | None
    targets: tuple[str, ...] = ()
    documentation: str = ""
    _path: Callable[[Any], list[Any]] | None = field(default=None, repr=False, compare=False)

    def values(self, resource: dict) -> list[Any]:
        """The normalised values of this parameter in `resource` (see `values.EXTRACTORS`)."""
        if self.code == "_id":
            rid = resource.get("id")
            return [(None, rid, None)] if rid else []
        extract = EXTRACTORS[self.type]
        out: list[Any] = []
        assert self._path is not None
        for value, type_name in self._path(resource):
            if self.type == "reference" and type_name not in (None, "Reference", "Canonical", "Uri"):
                continue
            out.extend(extract(value))
        return out


class SearchRegistry:
    """All search parameters the engine can evaluate, by resource type."""

    def __init__(self, table: dict[str, dict[str, dict]]) -> None:
        self._by_type: dict[str, dict[str, SearchParameter]] = {}
        self.unsupported: dict[str, list[str]] = {}
        common = {**table.get("Resource", {}), **table.get("DomainResource", {})}
        for resource_type, params in table.items():
            if resource_type in ("Resource", "DomainResource"):
                continue
            compiled: dict[str, SearchParameter] = {}
            for code, spec in {**common, **params}.items():
                param = _compile(resource_type, code, spec)
                if param is None:
                    self.unsupported.setdefault(resource_type, []).append(code)
                else:
                    compiled[code] = param
            self._by_type[resource_type] = compiled

    def for_type(self, resource_type: str) -> dict[str, SearchParameter]:
        return self._by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParameter | None:
        return self._by_type.get(resource_type, {}).get(code)

    def resource_types(self) -> list[str]:
        return sorted(self._by_type)


def _compile(resource_type: str, code: str, spec: dict) -> SearchParameter | None:
    kind = spec["type"]
    if kind not in EXTRACTORS:
        return None  # composite and special: not implemented, so not advertised
    expression = spec.get("expression") or ""
    if code in ("_id",):
        path = None
    else:
        if "Resource." in expression or "DomainResource." in expression:
            expression = expression.replace("DomainResource.", f"{resource_type}.").replace(
                "Resource.", f"{resource_type}."
            )
        try:
            path = fhirpath.compile_path(expression, resource_type)
        except fhirpath.Unsupported:
            return None
    return SearchParameter(
        resource_type=resource_type,
        code=code,
        type=kind,
        expression=expression or f"{resource_type}.id",
        url=spec.get("url"),
        targets=tuple(spec.get("targets") or ()),
        _path=path,
    )


@functools.cache
def default_registry() -> SearchRegistry:
    return SearchRegistry(json.loads(DATA.read_text()))
