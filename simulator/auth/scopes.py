"""SMART scopes, v1 and v2, including granular (`patient/Observation.rs?category=...`) scopes.

v1 permissions `read`, `write` and `*` map onto the v2 letters (`read` = rs, `write` = cud, `*` =
cruds), so enforcement works on one model. A granular scope's query is checked against the site's
search parameters when it is granted and matched against resources by their extracted values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from simulator.fhir.searchparams import SearchRegistry

V2_LETTERS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
# Scopes that ask for context or identity rather than data.
CONTEXT_SCOPES = frozenset(
    {
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
    }
)
_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]*)\.([^?\s]+)(?:\?(.*))?$")
_GRANULAR_TYPES = ("token", "reference", "uri", "string")


class ScopeError(ValueError):
    """A scope that is malformed or asks for something the site cannot grant."""


@dataclass(frozen=True, slots=True)
class ResourceScope:
    text: str
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    interactions: frozenset[str]  # letters of "cruds"
    query: tuple[tuple[str, str], ...] = ()  # granular restriction, all must match
    version: int = 2  # SMART scope syntax: 1 (.read/.write/.*) or 2 (.cruds letters)

    def covers(self, resource_type: str, interaction: str) -> bool:
        return interaction in self.interactions and self.resource_type in ("*", resource_type)

    def writes(self) -> bool:
        return bool(self.interactions & {"c", "u", "d"})

    def matches(self, registry: SearchRegistry, resource_type: str, resource: dict[str, Any] | None) -> bool:
        """Whether `resource` satisfies the granular query (always, for a plain scope)."""
        if not self.query:
            return True
        if resource is None:
            return False
        for code, wanted in self.query:
            param = registry.get(resource_type, code)
            if param is None or not _any_value_matches(param.type, param.values(resource), wanted):
                return False
        return True


def parse_resource_scope(text: str, registry: SearchRegistry | None = None) -> ResourceScope | None:
    """The resource scope `text` names, None if it is not one; ScopeError if it is malformed."""
    match = _RESOURCE_SCOPE.match(text)
    if match is None:
        if re.match(r"^(patient|user|system)/", text):
            raise ScopeError(f"'{text}' is not a SMART resource scope (context/Type.permissions)")
        return None
    context, rtype, permissions, query_text = match.groups()
    if permissions in V1_PERMISSIONS:
        if query_text is not None:
            raise ScopeError(f"'{text}': a granular query needs v2 permissions (e.g. .rs)")
        letters, version = V1_PERMISSIONS[permissions], 1
    else:
        if not re.fullmatch(r"c?r?u?d?s?", permissions):
            raise ScopeError(
                f"'{text}': permissions must be read, write, * or v2 letters in the order c r u d s"
            )
        letters, version = permissions, 2
    query: tuple[tuple[str, str], ...] = ()
    if query_text is not None:
        items = parse_qsl(query_text, keep_blank_values=True)
        if not items or rtype == "*":
            raise ScopeError(f"'{text}': a granular scope names one resource type and one or more parameters")
        for code, value in items:
            if not value:
                raise ScopeError(f"'{text}': parameter '{code}' has no value")
            if registry is not None:
                param = registry.get(rtype, code)
                if param is None or param.type not in _GRANULAR_TYPES:
                    raise ScopeError(
                        f"'{text}': '{code}' is not a token, reference, uri or string search parameter of {rtype}"
                    )
        query = tuple(items)
    return ResourceScope(text, context, rtype, frozenset(letters), query, version)


@dataclass(frozen=True)
class ScopeSet:
    """A space-separated scope string, parsed; `resources` are its resource scopes."""

    scopes: tuple[str, ...]
    resources: tuple[ResourceScope, ...]

    @classmethod
    def parse(
        cls,
        text: str | None,
        registry: SearchRegistry | None = None,
        extra: frozenset[str] = frozenset(),
        syntax: tuple[str, ...] | list[str] = ("v1", "v2"),
    ) -> ScopeSet:
        """Parse, rejecting what is neither a context scope, a resource scope nor in `extra`
        (vendor-specific scopes the site advertises), and resource scopes in a SMART version
        outside `syntax`."""
        names: list[str] = []
        resources: list[ResourceScope] = []
        for name in (text or "").split():
            if name in names:
                continue
            resource = parse_resource_scope(name, registry)
            if resource is not None:
                if f"v{resource.version}" not in syntax:
                    example = "e.g. .rs, .cruds" if "v2" in syntax else "e.g. .read, .write"
                    raise ScopeError(
                        f"'{name}' is SMART v{resource.version} syntax; this server takes "
                        f"{' and '.join(syntax)} scopes ({example})"
                    )
                resources.append(resource)
            elif name not in CONTEXT_SCOPES and name not in extra:
                raise ScopeError(f"unknown scope '{name}'")
            names.append(name)
        return cls(tuple(names), tuple(resources))

    def __contains__(self, name: object) -> bool:
        return name in self.scopes

    def __str__(self) -> str:
        return " ".join(self.scopes)

    def only(self, allowed: list[str]) -> ScopeSet:
        keep = set(allowed)
        return ScopeSet(
            tuple(s for s in self.scopes if s in keep), tuple(r for r in self.resources if r.text in keep)
        )

    def contexts(self) -> set[str]:
        return {r.context for r in self.resources}


def _any_value_matches(kind: str, values: list[Any], wanted: str) -> bool:
    options = wanted.split(",")
    for value in values:
        for option in options:
            if kind == "token":
                system, code = (None, option) if "|" not in option else option.split("|", 1)
                if value[1] == code and (system is None or (value[0] or "") == system):
                    return True
            elif value == option:
                return True
    return False
