"""FHIR search: parse a query into clauses, then evaluate it against a store's indexes.

Semantics follow the R4 search page (https://hl7.org/fhir/R4/search.html): comma-separated values of
one parameter are OR, repeated parameters are AND; token, string, date, reference, quantity, number
and uri types with their modifiers and prefixes; chained and reverse-chained (`_has`) references;
`_sort`, `_include`, `_revinclude`, `_summary`, `_elements`, `_total`, `_count`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from simulator.fhir.errors import FHIRError, Issue
from simulator.fhir.searchparams import (
    MODIFIERS_BY_TYPE,
    PREFIXES,
    RESULT_PARAMETERS,
    SearchParameter,
    SearchRegistry,
)
from simulator.fhir.values import BadValue, ascii_int, date_range, normalise_text
from simulator.store.base import Store

SUMMARY_MODES = ("true", "false", "text", "data", "count")
TOTAL_MODES = ("none", "estimate", "accurate")
MAX_CHAIN_DEPTH = 3


@dataclass(slots=True)
class Clause:
    """One `name[:modifier][.chain]=v1,v2` parameter: its values are OR-ed."""

    param: SearchParameter
    modifier: str | None
    values: list[str]
    chain: SearchQuery | None = None  # for `subject:Patient.name=x`, the query on the target type
    reverse: tuple[str, SearchParameter] | None = None  # for `_has:Type:param:...`


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    param: SearchParameter
    target_type: str | None
    iterate: bool = False


@dataclass(slots=True)
class SearchQuery:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    count: int | None = None
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param code, descending)
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    total: str | None = None
    elements: list[str] | None = None
    ignored: list[str] = field(default_factory=list)  # unknown parameters dropped under lenient handling

    def self_params(self) -> list[tuple[str, str]]:
        """The parameters the server used, for the bundle's `self` link."""
        out: list[tuple[str, str]] = []
        for c in self.clauses:
            out.append((_clause_name(c), ",".join(c.values)))
        if self.count is not None:
            out.append(("_count", str(self.count)))
        if self.sort:
            out.append(("_sort", ",".join(("-" if d else "") + code for code, d in self.sort)))
        out.extend(("_include", _include_text(i)) for i in self.includes)
        out.extend(("_revinclude", _include_text(i)) for i in self.revincludes)
        for name, value in (("_summary", self.summary), ("_total", self.total)):
            if value:
                out.append((name, value))
        if self.elements:
            out.append(("_elements", ",".join(self.elements)))
        return out


def _clause_name(c: Clause) -> str:
    if c.reverse:
        return c.param.code  # stored verbatim for _has
    name = c.param.code + (f":{c.modifier}" if c.modifier else "")
    if c.chain:
        inner = c.chain.clauses[0]
        name += "." + _clause_name(inner)
    return name


def _include_text(i: Include) -> str:
    text = f"{i.source_type}:{i.param.code}"
    return text + (f":{i.target_type}" if i.target_type else "")


# -- parsing -------------------------------------------------------------------------------------


class QueryParser:
    def __init__(self, registry: SearchRegistry, max_count: int, base_url: str = "") -> None:
        self.registry = registry
        self.max_count = max_count
        self.base_url = base_url.rstrip("/")

    def parse(
        self, resource_type: str, items: Iterable[tuple[str, str]], lenient: bool = False
    ) -> SearchQuery:
        query = SearchQuery(resource_type)
        for name, value in items:
            try:
                self._parse_item(query, name, value)
            except _UnknownParameter as unknown:
                if not lenient:
                    raise FHIRError.of(
                        400,
                        "not-supported",
                        f"Unknown search parameter '{unknown.name}' for resource type {resource_type}. "
                        f"Send 'Prefer: handling=lenient' to have it ignored.",
                        expression=[name],
                    ) from None
                query.ignored.append(name)
        return query

    def _parse_item(self, query: SearchQuery, name: str, value: str) -> None:
        rtype = query.resource_type
        if name in RESULT_PARAMETERS or name.split(":")[0] in ("_include", "_revinclude"):
            self._result_parameter(query, name, value)
            return
        if name.startswith("_has:"):
            query.clauses.append(self._reverse_chain(rtype, name, value))
            return
        query.clauses.append(self._clause(rtype, name, value, depth=0))

    def _clause(self, rtype: str, name: str, value: str, depth: int) -> Clause:
        head, _, chained = name.partition(".")
        code, _, modifier = head.partition(":")
        param = self.registry.get(rtype, code)
        if param is None:
            raise _UnknownParameter(name)
        modifier = modifier or None
        if chained:
            if param.type != "reference":
                raise _bad(name, f"'{code}' is not a reference parameter and cannot be chained")
            if depth >= MAX_CHAIN_DEPTH:
                raise _bad(name, f"chains are limited to {MAX_CHAIN_DEPTH} levels")
            targets = [modifier] if modifier else list(param.targets)
            inner_candidates = [
                t for t in targets if self.registry.get(t, chained.split(".")[0].split(":")[0])
            ]
            if len(inner_candidates) != 1:
                raise _bad(
                    name,
                    f"chained parameter '{chained}' is ambiguous or unknown for targets {', '.join(targets)}; "
                    f"name the type, e.g. {code}:{targets[0] if targets else 'Patient'}.{chained}",
                )
            inner = SearchQuery(
                inner_candidates[0], [self._clause(inner_candidates[0], chained, value, depth + 1)]
            )
            return Clause(param, inner_candidates[0], [value], chain=inner)
        self._check_modifier(param, modifier, name)
        values = _split_or(value)
        if modifier == "missing":
            if value not in ("true", "false"):
                raise _bad(name, ":missing takes true or false")
        else:
            for v in values:
                self._check_value(param, modifier, v, name)
        return Clause(param, modifier, values)

    def _reverse_chain(self, rtype: str, name: str, value: str) -> Clause:
        # _has:Observation:patient:code=1234 -> resources referenced by Observations with code 1234
        parts = name.split(":", 3)
        if len(parts) != 4:
            raise _bad(name, "_has takes the form _has:Type:reference-param:param=value")
        _, source, ref_code, rest = parts
        ref = self.registry.get(source, ref_code)
        if ref is None or ref.type != "reference":
            raise _bad(name, f"'{ref_code}' is not a reference parameter of {source}")
        inner = SearchQuery(source, [self._clause(source, rest, value, depth=1)])
        holder = SearchParameter(rtype, name, "special", "", None)
        return Clause(holder, None, [value], chain=inner, reverse=(source, ref))

    def _check_modifier(self, param: SearchParameter, modifier: str | None, name: str) -> None:
        if modifier is None:
            return
        if param.type == "reference" and modifier not in ("missing", "identifier", "type"):
            if param.targets and modifier not in param.targets:
                raise _bad(name, f"'{modifier}' is not a target type of {param.code}")
            return
        if modifier not in MODIFIERS_BY_TYPE.get(param.type, ()) or modifier == "type":
            allowed = ", ".join(":" + m for m in MODIFIERS_BY_TYPE.get(param.type, ()) if m != "type")
            raise _bad(
                name, f"modifier ':{modifier}' is not supported on {param.type} parameters ({allowed})"
            )

    def _check_value(self, param: SearchParameter, modifier: str | None, value: str, name: str) -> None:
        if value == "":
            raise _bad(name, "empty value")
        kind = param.type
        if kind == "date":
            _, rest = split_prefix(value)
            try:
                date_range(_fix_plus(rest))
            except BadValue as exc:
                raise _bad(name, str(exc)) from None
        elif kind in ("number", "quantity"):
            _, rest = split_prefix(value)
            number = rest.split("|", 1)[0]
            try:
                parsed: Decimal | None = Decimal(number)
            except InvalidOperation:
                parsed = None
            if parsed is None or not parsed.is_finite():  # NaN and Infinity compare with nothing
                raise _bad(name, f"'{number}' is not a number") from None
            # Resources hold JSON numbers within float range; an exponent of 1e999999999 would
            # overflow the decimal arithmetic of the comparison.
            if not all(-400 <= e <= 400 for e in (parsed.adjusted(), parsed.as_tuple().exponent)):
                raise _bad(name, f"'{number}' is out of range (exponent beyond 400)") from None

    def _result_parameter(self, query: SearchQuery, name: str, value: str) -> None:
        rtype = query.resource_type
        base, _, modifier = name.partition(":")
        if base == "_count":
            count = ascii_int(value)
            if count is None:
                raise _bad(name, "_count must be a non-negative integer")
            query.count = min(count, self.max_count)
        elif base == "_sort":
            for key in _split_or(value):
                desc = key.startswith("-")
                code = key[1:] if desc else key
                if code not in ("_id", "_lastUpdated") and self.registry.get(rtype, code) is None:
                    raise _bad(name, f"cannot sort by unknown parameter '{code}'")
                query.sort.append((code, desc))
        elif base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise _bad(name, f"unknown modifier ':{modifier}'")
            for spec in _split_or(value):
                include = self._include(rtype, spec, name, reverse=base == "_revinclude")
                if include:
                    (query.revincludes if base == "_revinclude" else query.includes).append(include)
        elif base == "_summary":
            if value not in SUMMARY_MODES:
                raise _bad(name, f"_summary must be one of {', '.join(SUMMARY_MODES)}")
            query.summary = value
        elif base == "_total":
            if value not in TOTAL_MODES:
                raise _bad(name, f"_total must be one of {', '.join(TOTAL_MODES)}")
            query.total = value
        elif base == "_elements":
            query.elements = [e.strip() for e in value.split(",") if e.strip()]
        # _format, _pretty and _contained are answered by the response layer or ignored as allowed.

    def _include(self, rtype: str, spec: str, name: str, reverse: bool) -> Include | None:
        if spec == "*":
            return None  # wildcard: expanded by the executor from the resource's reference params
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise _bad(name, f"'{spec}' must be SourceType:param[:TargetType]")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if not reverse and source != rtype:
            raise _bad(name, f"_include source type {source} is not the searched type {rtype}")
        param = self.registry.get(source, code)
        if param is None or param.type != "reference":
            raise _bad(name, f"'{code}' is not a reference search parameter of {source}")
        return Include(source, param, target)


class _UnknownParameter(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _bad(name: str, why: str) -> FHIRError:
    return FHIRError.of(400, "invalid", f"Invalid search parameter '{name}': {why}", expression=[name])


def _split_or(value: str) -> list[str]:
    """Split on commas that are not escaped with a backslash; unescape `\\,` `\\|` `\\$` `\\\\`."""
    out, current, escaped = [], [], False
    for ch in value:
        if escaped:
            current.append(ch if ch in ",|$\\" else "\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[2:3].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _fix_plus(text: str) -> str:
    # An unescaped "+" in a query string arrives as a space: "2024-01-01T10:00:00 05:00".
    return text.replace(" ", "+")


# -- evaluation -----------------------------------------------------------------------------------


class SearchEngine:
    def __init__(self, store: Store, registry: SearchRegistry, base_url: str = "") -> None:
        self.store = store
        self.registry = registry
        self.base_url = base_url.rstrip("/")

    def ids(self, query: SearchQuery) -> list[str]:
        """Ids of the matching resources, in the requested order."""
        live = self.store.current(query.resource_type)
        candidates: set[str] | None = None
        filters: list[Clause] = []
        for clause in sorted(query.clauses, key=_clause_cost):
            matched = self._indexed(query.resource_type, clause)
            if matched is None:
                filters.append(clause)
                continue
            candidates = matched if candidates is None else candidates & matched
            if not candidates:
                return []
        if candidates is None:
            ordered = list(live)
        else:
            ordered = (
                [rid for rid in live if rid in candidates]
                if len(candidates) * 4 > len(live)
                else _in_store_order(candidates, live)
            )
        for clause in filters:
            values = self.store.values(query.resource_type, clause.param)
            test = _predicate(clause, self.base_url)
            ordered = [rid for rid in ordered if test(values.get(rid, ()))]
            if not ordered:
                return []
        if query.sort:
            ordered = self._sorted(query, ordered)
        return ordered

    def _indexed(self, rtype: str, clause: Clause) -> set[str] | None:
        """The matching ids from an inverted index, or None when the clause needs a scan."""
        param = clause.param
        if clause.reverse is not None:
            source, ref = clause.reverse
            assert clause.chain is not None
            sources = self.ids(clause.chain)
            values = self.store.values(source, ref)
            out: set[str] = set()
            prefix = rtype + "/"
            for sid in sources:
                for key in values.get(sid, ()):
                    if key.startswith(prefix):
                        out.add(key[len(prefix) :])
            return out
        if param.code == "_id" and clause.modifier is None:
            live = self.store.current(rtype)
            return {v for v in clause.values if v in live}
        if clause.chain is not None:
            target_ids = self.ids(clause.chain)
            target = clause.chain.resource_type
            postings = self.store.postings(rtype, param)
            out = set()
            for tid in target_ids:
                out |= postings.get(f"{target}/{tid}", set())
            return out
        if param.type == "token" and clause.modifier in (None, "not"):
            postings = self.store.postings(rtype, param)
            matched = _union(postings, clause.values)
            if clause.modifier == "not":
                return set(self.store.current(rtype)) - matched
            return matched
        if param.type == "reference" and clause.modifier not in ("missing",):
            postings = self.store.postings(rtype, param)
            return _union(postings, [self._reference_key(clause, value) for value in clause.values])
        return None

    def _reference_key(self, clause: Clause, value: str) -> str:
        if clause.modifier == "identifier":
            return "identifier:" + (value if "|" in value else "|" + value)
        if self.base_url and value.startswith(self.base_url + "/"):
            value = value[len(self.base_url) + 1 :]
        if clause.modifier and "/" not in value:
            return f"{clause.modifier}/{value}"
        return value

    def _sorted(self, query: SearchQuery, ids: list[str]) -> list[str]:
        live = self.store.current(query.resource_type)
        for code, descending in reversed(query.sort):
            if code == "_id":
                key: Callable[[str], Any] = lambda rid: (0, rid)  # noqa: E731
            elif code == "_lastUpdated":
                key = lambda rid: (0, live[rid].timestamp)  # noqa: E731
            else:
                param = self.registry.get(query.resource_type, code)
                values = self.store.values(query.resource_type, param)
                key = _sort_key(param.type, values, descending)
            present = [rid for rid in ids if key(rid)[0] == 0]
            missing = [rid for rid in ids if key(rid)[0] != 0]
            present.sort(key=key, reverse=descending)
            ids = present + missing  # resources without a value sort last either way
        return ids


def _in_store_order(candidates: set[str], live: dict[str, Any]) -> list[str]:
    """The live candidates in `live`'s order, in O(k log k) for k candidates.

    `live` is ordered by last write, which is the order of its versions' `seq`; sorting by `seq`
    avoids a position map of the whole type (100,000 entries cost ~10 ms per search)."""
    return sorted((rid for rid in candidates if rid in live), key=lambda rid: live[rid].seq)


def _union(postings: dict[Any, set[str]], keys: list[Any]) -> set[str]:
    """The ids under any of `keys`. Read-only: with one key (the usual case) this is the index's own
    set, because copying a large posting (a category most resources share) costs milliseconds."""
    if len(keys) == 1:
        return postings.get(keys[0], set())
    out: set[str] = set()
    for key in keys:
        out |= postings.get(key, set())
    return out


def _clause_cost(clause: Clause) -> int:
    # Index lookups first (they shrink the candidate set), scans last.
    if clause.param.code == "_id":
        return 0
    if clause.param.type in ("token", "reference") and clause.modifier in (None,):
        return 1
    return 2


def _sort_key(kind: str, values: dict[str, list], descending: bool) -> Callable[[str], Any]:
    def key(rid: str) -> Any:
        vals = values.get(rid)
        if not vals:
            return (1, 0)
        if kind == "string":
            items = [normalise_text(v) for v in vals]
        elif kind == "date":
            items = [v[1] if descending else v[0] for v in vals]
        elif kind == "token":
            items = [v[1] or v[2] or "" for v in vals]
        elif kind == "quantity":
            items = [v[0] for v in vals]
        else:
            items = [str(v) if not isinstance(v, Decimal) else v for v in vals]
        return (0, max(items) if descending else min(items))

    return key


def _predicate(clause: Clause, base_url: str) -> Callable[[Iterable[Any]], bool]:
    """A test on a resource's extracted values for a clause that has no index."""
    if clause.modifier == "missing":
        want_missing = clause.values[0] == "true"
        return lambda vals: (not vals) == want_missing
    kind = clause.param.type
    tests = [_value_test(kind, clause.modifier, v) for v in clause.values]
    return lambda vals: any(test(v) for v in vals for test in tests)


def _value_test(kind: str, modifier: str | None, raw: str) -> Callable[[Any], bool]:
    if kind == "string":
        if modifier == "exact":
            return lambda v: v == raw
        needle = normalise_text(raw)
        if modifier == "contains":
            return lambda v: needle in normalise_text(v)
        return lambda v: normalise_text(v).startswith(needle)
    if kind == "token":  # :text (other token forms use the index)
        needle = normalise_text(raw)
        return lambda v: v[2] is not None and normalise_text(v[2]).startswith(needle)
    if kind == "uri":
        if modifier == "below":
            return lambda v: v.startswith(raw)
        if modifier == "above":
            return lambda v: raw.startswith(v)
        return lambda v: v == raw
    if kind == "date":
        prefix, rest = split_prefix(raw)
        target = date_range(_fix_plus(rest))
        compare = _range_compare(prefix, target)
        return compare
    if kind in ("number", "quantity"):
        prefix, rest = split_prefix(raw)
        number_text, _, unit_part = rest.partition("|")
        system, _, code = unit_part.partition("|") if unit_part else ("", "", "")
        number = Decimal(number_text)
        half = Decimal(1).scaleb(number.as_tuple().exponent) / 2
        compare = _range_compare(prefix, (number - half, number + half), point=number)
        if kind == "number":
            return lambda v: compare((v, v))
        if not code and system:  # `5.4||mg` is `value||code`; `5.4|mg` is read as a code too
            code, system = system, ""

        def quantity(v: Any) -> bool:
            value, q_system, q_code, q_unit = v
            if system and q_system != system:
                return False
            if code and code not in (q_code, q_unit):
                return False
            return compare((value, value))

        return quantity
    return lambda v: False


def _range_compare(prefix: str, target: tuple[Any, Any], point: Any = None) -> Callable[[Any], bool]:
    """Compare a resource's value range (low, high) with a search range, per the R4 prefix rules."""
    low, high = target
    if prefix == "ap":
        # Approximately: within 10% of the distance to now (dates) or of the value (numbers).
        centre = point if point is not None else (low + high) / 2
        reference = centre if point is not None else time.time()
        margin = abs(centre - reference) * (Decimal("0.1") if point is not None else 0.1)
        low, high = low - margin, high + margin
        return lambda r: r[0] < high and r[1] > low
    if prefix == "eq":
        if point is not None:
            return lambda r: low <= r[0] < high
        return lambda r: r[0] >= low and r[1] <= high
    if prefix == "ne":
        if point is not None:
            return lambda r: not (low <= r[0] < high)
        return lambda r: not (r[0] >= low and r[1] <= high)
    if point is not None:
        ops = {
            "gt": lambda r: r[0] > point,
            "lt": lambda r: r[0] < point,
            "ge": lambda r: r[0] >= point,
            "le": lambda r: r[0] <= point,
            "sa": lambda r: r[0] > point,
            "eb": lambda r: r[0] < point,
        }
        return ops[prefix]
    ops = {
        "gt": lambda r: r[1] > high,
        "lt": lambda r: r[0] < low,
        "ge": lambda r: r[1] > high or (r[0] >= low and r[1] <= high),
        "le": lambda r: r[0] < low or (r[0] >= low and r[1] <= high),
        "sa": lambda r: r[0] >= high,
        "eb": lambda r: r[1] <= low,
    }
    return ops[prefix]


def ignored_outcome(query: SearchQuery) -> dict[str, Any] | None:
    if not query.ignored:
        return None
    issues = [
        Issue("warning", "not-supported", f"Unknown search parameter '{name}' was ignored", (name,))
        for name in query.ignored
    ]
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}
