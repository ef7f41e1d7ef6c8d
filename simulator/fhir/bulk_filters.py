"""The `$export` parameters that narrow what a Bulk Data export holds: `_typeFilter` and `_elements`.

A `_typeFilter` value is a FHIR search (`Observation?code=8867-4`) parsed and run by the search
engine (`FhirService.parser` / `engine`), so it accepts and refuses exactly what a search of that
type does. `_elements` reuses the search's subsetting (`bundles.subset`). docs/bulk-data.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl

from simulator.fhir.errors import FHIRError, Issue
from simulator.fhir.search import SearchQuery
from simulator.fhir.searchparams import RESULT_PARAMETERS
from simulator.fhir.service import FhirService

# Several filters in one value are split where a comma starts the next `Type?`: a comma inside a
# filter stays a search OR (`Observation?code=a,b`).
_NEXT_FILTER = re.compile(r",(?=[A-Z][A-Za-z]*\?)")
_TYPE = re.compile(r"^[A-Z][A-Za-z]*$")
# Parameters that shape a search's result set rather than select resources: meaningless in a filter.
_RESULT = RESULT_PARAMETERS | {"_include", "_revinclude"}


def split_type_filters(values: Iterable[str]) -> list[str]:
    """Every filter of the `_typeFilter` values (repeated, or comma-separated), in request order."""
    return [part for value in values for part in _NEXT_FILTER.split(value)]


def type_filters(
    service: FhirService,
    filters: list[str],
    exportable: list[str],
    scope: str,
    base_url: str,
    lenient: bool = False,
) -> tuple[dict[str, list[SearchQuery]], list[Issue]]:
    """The parsed `_typeFilter` queries by resource type, and a warning for each unknown parameter
    that lenient handling dropped; 400 naming the filter for a type outside `exportable` (`scope`
    says why), a result parameter, or whatever the search parser refuses."""
    out: dict[str, list[SearchQuery]] = {}
    dropped: list[Issue] = []
    parser = service.parser(base_url)
    for text in filters:
        rtype, mark, query = text.partition("?")
        if not mark or not _TYPE.match(rtype) or not query:
            raise _bad(text, "each filter is a search of one type: Type?param=value[&param=value]")
        if rtype not in exportable:
            raise _bad(text, f"{rtype} is not {scope}")
        items = parse_qsl(query, keep_blank_values=True)
        result = sorted({name for name, _ in items if name.split(":")[0] in _RESULT})
        if result:
            raise _bad(
                text,
                f"{', '.join(result)} {'is' if len(result) == 1 else 'are'} not allowed in a filter "
                "(only parameters that select resources)",
            )
        try:
            parsed = parser.parse(rtype, items, lenient=lenient)
        except FHIRError as exc:
            raise _bad(text, "; ".join(i.diagnostics for i in exc.issues), exc.status) from None
        out.setdefault(rtype, []).append(parsed)
        dropped.extend(
            Issue(
                "warning",
                "not-supported",
                f"_typeFilter '{text}': unknown search parameter '{name}' was ignored",
                ("_typeFilter",),
            )
            for name in parsed.ignored
        )
    return out, dropped


def matching_ids(service: FhirService, queries: list[SearchQuery], base_url: str) -> set[str]:
    """Ids of the live resources matching ANY of one type's filters (the IG's OR between filters)."""
    engine = service.engine(base_url)
    return set().union(*(engine.ids(query) for query in queries))


def element_lists(
    value: str, exportable: list[str], scope: str, served: list[str]
) -> dict[str, tuple[str, ...]]:
    """`_elements` (`element` or `Type.element`, comma-separated) as the elements to keep per
    exportable type; a type none of them applies to is absent (exported whole)."""
    common: list[str] = []
    typed: dict[str, list[str]] = {}
    for item in (part.strip() for part in value.split(",")):
        head, dot, element = item.rpartition(".")
        if not item or not element or "." in head or (dot and not head):
            raise FHIRError.of(
                400,
                "invalid",
                f"_elements: '{item}' is not 'element' or 'Type.element' (only top-level elements)",
                expression=["_elements"],
            )
        if not dot:
            common.append(element)
        elif head not in served:
            raise FHIRError.of(
                400,
                "not-supported",
                f"_elements: '{head}' in '{item}' is not a resource type this server exports",
                expression=["_elements"],
            )
        elif head not in exportable:
            raise FHIRError.of(
                400,
                "invalid",
                f"_elements: '{item}' names {head}, which is not {scope}",
                expression=["_elements"],
            )
        else:
            typed.setdefault(head, []).append(element)
    return {
        rtype: tuple(dict.fromkeys([*common, *typed.get(rtype, ())]))
        for rtype in exportable
        if common or rtype in typed
    }


def _bad(text: str, why: str, status: int = 400) -> FHIRError:
    return FHIRError.of(status, "invalid", f"_typeFilter '{text}': {why}", expression=["_typeFilter"])
