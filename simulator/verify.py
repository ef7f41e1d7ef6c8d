"""Journal queries and verification: what a test asks about how a client behaved.

    EntryFilter.from_mapping({"site": "default", "method": "GET", "status": "4xx"})
    verify(journal, {"check": "count", "filter": {...}, "at_least": 3}, faults)

Checks (each returns a dict with `ok` and what was found, so a failure message can say why):
- `count`: matching entries, with `at_least` / `at_most` / `exactly`.
- `order`: `sequence` of filters matched in this order (not necessarily adjacent).
- `gaps`: seconds between consecutive matching requests; `min_gap`, and `backoff` (each gap at
  least `backoff` times the previous: exponential backoff).
- `retry_after`: no matching request before the time a `Retry-After` answer advertised.
- `duplicates`: entries sharing a `key` (a journal field such as `control_id`, or `identifier`: the
  business identifiers, Type:system|value, of the resources an entry created: a create answered
  201, or each POST entry a transaction or batch answered 201); `identified` counts the entries
  that had a value for the key.
- `during`: matching entries inside a fault's time windows (`fault: id`) or a `window: {from, to}`,
  with the count bounds of `count`.
Times are simulated seconds since the clock start (`sim`); `clock: wall` uses the monotonic clock.
Filters' `since`/`until` take simulated seconds or an ISO 8601 instant of simulated time.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import translate
from typing import TYPE_CHECKING, Any

import orjson

from simulator.fhir.values import ascii_int

if TYPE_CHECKING:
    from simulator.faults import FaultEngine
    from simulator.journal import Journal

_GLOB_FIELDS = (
    "site",
    "protocol",
    "kind",
    "method",
    "path",
    "resource_type",
    "interaction",
    "client_id",
    "outcome",
    # MLLP message entries: resends of one message share its control_id (MSH-10)
    "message_type",
    "control_id",
    "ack_code",
)
FILTER_KEYS = (*_GLOB_FIELDS, "status", "fault", "since", "until")


class VerifyError(ValueError):
    """A query or check that cannot be run as given; the message says what to change."""


def _number(value: Any, where: str) -> float:
    """A finite number from a JSON number or a string of ASCII digits (float() alone also reads
    "nan", "inf" and Arabic-Indic digits)."""
    number = math.nan
    readable = isinstance(value, str) and value.isascii()
    if readable or (isinstance(value, int | float) and not isinstance(value, bool)):
        with contextlib.suppress(ValueError, OverflowError):
            number = float(value)
    if not math.isfinite(number):
        raise VerifyError(f"{where} must be a number, not {value!r}")
    return number


def _count(value: Any, where: str) -> int:
    count = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str):
        count = ascii_int(value)
    if count is None or count < 0:
        raise VerifyError(f"{where} must be a non-negative integer, not {value!r}")
    return count


def _status_rule(value: Any) -> tuple[set[int], set[int]]:
    exact: set[int] = set()
    classes: set[int] = set()
    for part in value if isinstance(value, list) else str(value).split(","):
        text = str(part).strip().lower()
        if re.fullmatch(r"[1-5]xx", text):
            classes.add(int(text[0]))
        elif ascii_int(text) is not None:
            exact.add(int(text))
        else:
            raise VerifyError(f"status: '{part}' is not a status code or class such as 429 or 5xx")
    return exact, classes


@dataclass
class EntryFilter:
    globs: tuple[tuple[str, re.Pattern[str]], ...] = ()
    statuses: tuple[set[int], set[int]] | None = None
    fault: str | None = None
    since: float | None = None
    until: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, start: datetime | None = None) -> EntryFilter:
        """`start`: the clock's start, to turn ISO instants in since/until into simulated seconds."""
        if data is not None and not isinstance(data, Mapping):
            raise VerifyError(
                f"a filter is a mapping of journal fields ({', '.join(FILTER_KEYS)}), not {data!r}"
            )
        data = dict(data or {})
        unknown = sorted(set(data) - set(FILTER_KEYS))
        if unknown:
            raise VerifyError(f"unknown filter field(s) {', '.join(unknown)}; use {', '.join(FILTER_KEYS)}")
        globs = tuple(
            (key, re.compile(translate(str(data[key]))))
            for key in _GLOB_FIELDS
            if data.get(key) not in (None, "")
        )
        since, until = _moment(data.get("since"), start), _moment(data.get("until"), start)
        statuses = _status_rule(data["status"]) if data.get("status") not in (None, "") else None
        return cls(globs, statuses, data.get("fault") or None, since, until)

    def matches(self, entry: Mapping[str, Any]) -> bool:
        for key, pattern in self.globs:
            value = entry.get(key)
            if value is None or not pattern.match(str(value)):
                return False
        if self.statuses is not None:
            status = entry.get("status")
            exact, classes = self.statuses
            if status is None or (status not in exact and status // 100 not in classes):
                return False
        if self.fault is not None and self.fault not in (entry.get("faults") or ()):
            return False
        sim = entry.get("sim", 0.0)
        if self.since is not None and sim < self.since:
            return False
        return self.until is None or sim <= self.until


def _moment(value: Any, start: datetime | None) -> float | None:
    """Simulated seconds since the clock start, from seconds or an ISO instant."""
    if value in (None, ""):
        return None
    with contextlib.suppress(VerifyError):
        return _number(value, "since/until")
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or start is None:
        raise VerifyError(
            f"since/until: '{value}' is neither simulated seconds since the clock start nor an ISO instant"
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - start).total_seconds()


def select(
    entries: Iterable[dict[str, Any]], spec: Mapping[str, Any] | None, start: datetime | None = None
) -> list[dict[str, Any]]:
    flt = EntryFilter.from_mapping(spec, start)
    return [e for e in entries if flt.matches(e)]


def _bounds(spec: Mapping[str, Any], count: int) -> tuple[bool, dict[str, Any]]:
    expected = {k: _count(spec[k], k) for k in ("at_least", "at_most", "exactly") if spec.get(k) is not None}
    ok = (
        count >= expected.get("at_least", count)
        and count <= expected.get("at_most", count)
        and count == expected.get("exactly", count)
    )
    return ok, expected


def _time(entry: Mapping[str, Any], clock: str) -> float:
    return float(entry.get("monotonic" if clock == "wall" else "sim", 0.0))


def _identifiers(entry: Mapping[str, Any]) -> list[str]:
    """The business identifiers (`Type:system|value`) of what an entry created: the resource of a
    create answered 201, or of each POST entry a transaction or batch answered 201 (the response
    Bundle's entries follow the request's)."""
    interaction = entry.get("interaction")
    if interaction == "create":
        return _resource_identifiers(_json(entry.get("request_body"))) if entry.get("status") == 201 else []
    if interaction != "batch":
        return []
    sent, answered = _json(entry.get("request_body")), _json(entry.get("response_body"))
    if not isinstance(sent, dict) or not isinstance(answered, dict):
        return []
    found = []
    for request, response in zip(_dicts(sent.get("entry")), _dicts(answered.get("entry")), strict=False):
        method = _dict(request.get("request")).get("method")
        status = str(_dict(response.get("response")).get("status", ""))
        if method == "POST" and status.startswith("201"):
            found += _resource_identifiers(request.get("resource"))
    return found


def _json(body: Any) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    # Not-a-dict entries stay in place (as {}) so request and response entries keep their pairing.
    return [_dict(v) for v in value] if isinstance(value, list) else []


def _resource_identifiers(resource: Any) -> list[str]:
    if not isinstance(resource, dict):
        return []
    found = resource.get("identifier") or []
    if isinstance(found, dict):
        found = [found]
    return [
        f"{resource.get('resourceType')}:{i.get('system', '')}|{i.get('value', '')}"
        for i in found
        if isinstance(i, dict) and i.get("value")
    ]


CHECKS = ("count", "order", "gaps", "retry_after", "duplicates", "during")


def verify(journal: Journal, spec: Mapping[str, Any], faults: FaultEngine | None = None) -> dict[str, Any]:
    """Run one check over the journal; see the module docstring for the checks."""
    check = spec.get("check")
    if check not in CHECKS:
        raise VerifyError(f"'check' must be one of {', '.join(CHECKS)}, not {check!r}")
    clock = str(spec.get("clock", "sim"))
    if clock not in ("sim", "wall"):
        raise VerifyError("clock must be 'sim' (simulated seconds) or 'wall' (monotonic seconds)")
    entries = list(journal)
    start = journal.clock.start if journal.clock is not None else None
    result: dict[str, Any] = {"check": check, "dropped": journal.dropped}
    if check == "order":
        steps = spec.get("sequence")
        if not isinstance(steps, list) or not steps:
            raise VerifyError("'order' needs a non-empty 'sequence' of filters")
        filters = [EntryFilter.from_mapping(s, start) for s in steps]
        matched: list[int] = []
        position = 0
        for flt in filters:
            while position < len(entries) and not flt.matches(entries[position]):
                position += 1
            if position == len(entries):
                break
            matched.append(entries[position]["seq"])
            position += 1
        result.update(ok=len(matched) == len(filters), matched_seqs=matched, missing_step=None)
        if len(matched) < len(filters):
            result["missing_step"] = len(matched)
        return result
    chosen = select(entries, spec.get("filter"), start)
    if check == "count":
        ok, expected = _bounds(spec, len(chosen))
        result.update(ok=ok, count=len(chosen), expected=expected)
    elif check == "gaps":
        times = [_time(e, clock) for e in chosen]
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
        problems = []
        if spec.get("min_gap") is not None:
            min_gap = _number(spec["min_gap"], "min_gap")
            problems += [
                f"gap {i + 1} is {g} s, under {min_gap} s" for i, g in enumerate(gaps) if g < min_gap
            ]
        if spec.get("backoff") is not None:
            factor = _number(spec["backoff"], "backoff")
            problems += [
                f"gap {i + 2} is {b} s, less than {factor} x the previous {a} s"
                for i, (a, b) in enumerate(itertools.pairwise(gaps))
                if b < a * factor - 1e-6
            ]
        result.update(ok=not problems, gaps=gaps, problems=problems, count=len(chosen))
    elif check == "retry_after":
        violations = []
        for index, entry in enumerate(chosen):
            header = dict(entry.get("response_headers") or ()).get("retry-after")
            seconds = ascii_int(str(header)) if header is not None else None
            if seconds is None or index + 1 >= len(chosen):
                continue
            allowed = _time(entry, clock) + seconds
            following = chosen[index + 1]
            if _time(following, clock) < allowed - 1e-6:
                violations.append(
                    {
                        "seq": following["seq"],
                        "after_seq": entry["seq"],
                        "early_by": round(allowed - _time(following, clock), 6),
                    }
                )
        result.update(ok=not violations, violations=violations, count=len(chosen))
    elif check == "duplicates":
        key = spec.get("key")
        if not key or not isinstance(key, str):
            raise VerifyError("'duplicates' needs a 'key': a journal field (e.g. control_id) or 'identifier'")
        groups: dict[str, list[int]] = {}
        identified = 0
        for entry in chosen:
            values = [
                v for v in (_identifiers(entry) if key == "identifier" else [entry.get(key)]) if v is not None
            ]
            identified += bool(values)
            for value in values:
                groups.setdefault(str(value), []).append(entry["seq"])
        duplicates = {k: seqs for k, seqs in groups.items() if len(seqs) > 1}
        result.update(ok=not duplicates, duplicates=duplicates, count=len(chosen), identified=identified)
    elif check == "during":
        if spec.get("fault"):
            if not isinstance(spec["fault"], str):
                raise VerifyError(f"fault must be a fault id (a string), not {spec['fault']!r}")
            fault = faults.faults.get(spec["fault"]) if faults is not None else None
            if fault is None:
                raise VerifyError(f"no fault with id '{spec['fault']}'")
            if not fault.schedule.timed:
                raise VerifyError(f"fault '{fault.id}' has no time window (schedule after/for)")
            inside = [e for e in chosen if fault.schedule.open_at(e.get("sim", 0.0))]
        elif isinstance(spec.get("window"), Mapping):
            window = spec["window"]
            low = _number(window.get("from", 0), "window.from")
            high = _number(window["to"], "window.to") if window.get("to") is not None else math.inf
            inside = [e for e in chosen if low <= e.get("sim", 0.0) < high]
        else:
            raise VerifyError("'during' needs 'fault' (a timed fault's id) or 'window: {from, to}'")
        ok, expected = _bounds(spec, len(inside))
        result.update(ok=ok, count=len(inside), expected=expected, seqs=[e["seq"] for e in inside])
    return result
