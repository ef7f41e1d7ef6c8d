"""Normalised search values: what an element *means* to a search parameter of a given type.

Extraction (resource → values, at write time) and query parsing (URL → values, at search time) both
land here so that the two sides always compare like with like.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

# (low, high) as POSIX seconds, high exclusive; partial dates cover their whole span.
DateRange = tuple[float, float]
# (system, code, text): text is a display or CodeableConcept.text for the :text modifier.
TokenValue = tuple[str | None, str | None, str | None]
# (value, system, code, unit)
QuantityValue = tuple[Decimal, str | None, str | None, str | None]

INFINITY = float("inf")

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$",
    re.ASCII,  # "\d" alone also matches Arabic-Indic digits, which int() reads as numbers
)


class BadValue(ValueError):
    """A query value that cannot mean anything for its parameter type."""


# A FHIR `instant`: to the second at least, with a zone (what `receivedTime` and `_since` need).
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.ASCII)


def ascii_int(text: str) -> int | None:
    """`text` as a non-negative integer when it is ASCII digits only, else None. (`str.isdigit`
    alone also accepts "²" and other digits that `int` refuses or reads as other numbers.)"""
    return int(text) if text.isascii() and text.isdigit() else None


def is_instant(text: str) -> bool:
    return _INSTANT.match(text) is not None


def normalise_text(text: str) -> str:
    """Case- and accent-insensitive form used by string search."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def date_range(text: str) -> DateRange:
    """The span an R4 date/dateTime/instant covers. A dateTime without offset is read as UTC."""
    m = _DATE.match(text.strip())
    if not m:
        raise BadValue(f"'{text}' is not a FHIR date or dateTime")
    y = int(m["y"])
    if y == 0:
        raise BadValue(f"'{text}': year 0 does not exist (years run from 0001)")
    # Ends are counted in seconds from the start: datetime stops at 9999-12-31, so the end of that
    # day (or month, or year) is not a datetime.
    if m["m"] is None:
        days = 366 if calendar.isleap(y) else 365
        return _span(datetime(y, 1, 1, tzinfo=UTC), days)
    month = int(m["m"])
    if not 1 <= month <= 12:
        raise BadValue(f"'{text}' has month {month}")
    if m["d"] is None:
        return _span(datetime(y, month, 1, tzinfo=UTC), calendar.monthrange(y, month)[1])
    try:
        day = datetime(y, month, int(m["d"]), tzinfo=UTC)
    except ValueError as exc:
        raise BadValue(f"'{text}': {exc}") from None
    if m["H"] is None:
        return _span(day, 1)
    tz = UTC
    try:
        if m["tz"] and m["tz"] != "Z":  # timezone() refuses offsets of a day or more (+99:00)
            sign = 1 if m["tz"][0] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(m["tz"][1:3]), minutes=int(m["tz"][4:6])))
        moment = day.replace(hour=int(m["H"]), minute=int(m["M"]), tzinfo=tz)
    except ValueError as exc:
        raise BadValue(f"'{text}': {exc}") from None
    if m["S"] is None:
        return moment.timestamp(), moment.timestamp() + 60
    seconds = int(m["S"])
    if seconds > 59:
        raise BadValue(f"'{text}' has second {seconds}")
    frac = m["f"] or ""
    # Rounded to the microsecond, so the same instant written as text and stored as a (rounded)
    # timestamp compares equal: `_since` with a version's own lastModified must include it.
    start = round(moment.timestamp() + seconds + (float(frac) if frac else 0.0), 6)
    width = 10.0 ** -(len(frac) - 1) if frac else 1.0
    return start, round(start + width, 6)


def _span(start: datetime, days: int) -> DateRange:
    return start.timestamp(), start.timestamp() + days * 86400


def dates_of(value: Any) -> list[DateRange]:
    if isinstance(value, str):
        try:
            return [date_range(value)]
        except BadValue:
            return []
    if isinstance(value, dict):
        if "start" in value or "end" in value:  # Period; an open end is unbounded
            low = _safe_range(value.get("start"))
            high = _safe_range(value.get("end"))
            return [(low[0] if low else -INFINITY, high[1] if high else INFINITY)]
        if "event" in value:  # Timing
            return [r for e in value.get("event") or [] for r in dates_of(e)]
    return []


def _safe_range(text: Any) -> DateRange | None:
    if not isinstance(text, str):
        return None
    try:
        return date_range(text)
    except BadValue:
        return None


def tokens_of(value: Any) -> list[TokenValue]:
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str | int):
        return [(None, str(value), None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        out: list[TokenValue] = [t for c in value.get("coding") or [] for t in tokens_of(c)]
        if isinstance(value.get("text"), str):
            out.append((None, None, value["text"]))
        return out
    if "code" in value and "value" not in value:  # Coding
        return [(value.get("system"), value.get("code"), value.get("display"))]
    if "value" in value:  # Identifier, ContactPoint, Quantity (by code)
        if isinstance(value.get("value"), str):
            kind = value.get("type")
            text = kind.get("text") if isinstance(kind, dict) else None
            system = value.get("system")
            # ContactPoint.system is "phone"/"email", not a namespace; only Identifier has one.
            return [(None if _is_contact_system(system) else system, value["value"], text)]
        if "code" in value:
            return [(value.get("system"), value.get("code"), value.get("unit"))]
    return []


def _is_contact_system(system: Any) -> bool:
    return system in ("phone", "fax", "email", "pager", "url", "sms", "other")


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def strings_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
    out: list[str] = []
    for key in parts:
        item = value.get(key)
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.extend(x for x in item if isinstance(x, str))
    if not out and isinstance(value.get("display"), str):
        out.append(value["display"])
    return out


def references_of(value: Any) -> list[str]:
    """Index keys for a Reference: "Type/id", the bare id, absolute URL, and logical identifier."""
    if isinstance(value, str):  # canonical used as reference
        return [value]
    if not isinstance(value, dict):
        return []
    out: list[str] = []
    ref = value.get("reference")
    if isinstance(ref, str) and ref and not ref.startswith("#"):
        parts = ref.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) >= 2:
            out.append(f"{parts[-2]}/{parts[-1]}")
            out.append(parts[-1])
            if ref.startswith(("http://", "https://", "urn:")):
                out.append(ref)
        else:
            out.append(ref)
    ident = value.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        out.append(f"identifier:{ident.get('system') or ''}|{ident['value']}")
    return out


def quantities_of(value: Any) -> list[QuantityValue]:
    if isinstance(value, dict) and value.get("value") is not None:
        try:
            number = Decimal(str(value["value"]))
        except InvalidOperation:
            return []
        return [(number, value.get("system"), value.get("code"), value.get("unit"))]
    return []


def numbers_of(value: Any) -> list[Decimal]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float | Decimal):
        return [Decimal(str(value))]
    if isinstance(value, dict) and value.get("value") is not None:
        return [q[0] for q in quantities_of(value)]
    return []


def uris_of(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else []


EXTRACTORS = {
    "token": tokens_of,
    "string": strings_of,
    "date": dates_of,
    "reference": references_of,
    "quantity": quantities_of,
    "number": numbers_of,
    "uri": uris_of,
}


def token_keys(values: list[TokenValue]) -> set[str]:
    """Inverted-index keys for token values: `code`, `system|code`, `|code` (no system), `system|`."""
    keys: set[str] = set()
    for system, code, _ in values:
        if code is None:
            continue
        keys.add(code)
        keys.add(f"{system or ''}|{code}")
        if system:
            keys.add(f"{system}|")
    return keys


def posting_keys(param_type: str, values: list) -> set:
    if param_type == "token":
        return token_keys(values)
    return set(values)
