"""Which interactions a fault applies to: a mapping of attribute -> glob (or list of globs).

    match: {site: default, protocol: fhir, method: [POST, PUT], path: /Observation*,
            resource_type: Observation, interaction: create, client_id: "app-*",
            headers: {x-request-priority: low}}

Every key must match (AND); a list matches if any element does (OR). Keys other than `site`,
`protocol` and `headers` are looked up in the attributes the protocol passes to `decide`, so MLLP
can match `message_type: "ORU^R01"` and auth `endpoint: token` without changes here. An attribute
the protocol does not supply never matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import translate
from typing import Any


class _Globs:
    """One matcher value: globs, with the plain ones (most of them) compared as strings."""

    __slots__ = ("literals", "patterns")

    def __init__(self, value: Any) -> None:
        values = [str(v) for v in (value if isinstance(value, list) else [value])]
        self.literals = frozenset(v for v in values if not any(ch in v for ch in "*?["))
        self.patterns = tuple(re.compile(translate(v)) for v in values if v not in self.literals)

    def match(self, value: Any) -> bool:
        if value is None:
            return False
        text = value if isinstance(value, str) else str(value)
        return text in self.literals or any(p.match(text) for p in self.patterns)


def _compile(value: Any) -> _Globs:
    return _Globs(value)


def _any(globs: _Globs, value: Any) -> bool:
    return globs.match(value)


class Matcher:
    __slots__ = ("headers", "protocols", "raw", "rules", "sites")

    def __init__(self, data: Mapping[str, Any] | None) -> None:
        self.raw = dict(data or {})
        data = dict(self.raw)
        self.sites = _compile(data.pop("site")) if "site" in data else None
        self.protocols = _compile(data.pop("protocol")) if "protocol" in data else None
        headers = data.pop("headers", None) or {}
        self.headers = tuple((str(k).lower(), _compile(v)) for k, v in headers.items())
        self.rules = tuple((key, _compile(value)) for key, value in data.items())

    def protocol_names(self) -> list[str] | None:
        """The literal protocols this matcher names (for indexing), or None for any."""
        if "protocol" not in self.raw:
            return None
        value = self.raw["protocol"]
        return [str(v) for v in (value if isinstance(value, list) else [value])]

    def matches(self, protocol: str, site: str | None, attrs: Mapping[str, Any]) -> bool:
        if self.sites is not None and not _any(self.sites, site):
            return False
        if self.protocols is not None and not _any(self.protocols, protocol):
            return False
        for key, patterns in self.rules:
            if not _any(patterns, attrs.get(key)):
                return False
        if self.headers:
            have = attrs.get("headers") or {}
            for name, patterns in self.headers:
                if not _any(patterns, have.get(name)):
                    return False
        return True
