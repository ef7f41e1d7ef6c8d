"""When a fault is armed: simulated-time windows, request-count windows, or always.

    schedule: {after: 10m, for: 5m, every: 1h}   # 10 min in, for 5 min, again every hour
    schedule: {requests: {from: 3, to: 5}}       # the 3rd to 5th matching request
    schedule: {times: 2}                         # the first two times it fires, then never

Durations are seconds (a number) or a string with units: `500ms`, `30s`, `5m`, `2h`, `1d`, `1h30m`.
Times are simulated seconds since the scenario's clock start, so `advance` on the clock moves them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$", re.ASCII)
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$", re.ASCII)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.ASCII)


def parse_duration(value: Any, where: str = "duration") -> float:
    """Seconds from `30`, `1.5`, `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`, `"1h30m"`."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a duration such as 30s, 5m or 2h, not {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{where}: a duration cannot be negative")
        seconds = float(value) if abs(value) < 1e300 else math.inf
    else:
        text = str(value)
        number = _NUMBER.match(text)
        if number:
            seconds = float(number.group(1))
        elif _DURATION.match(text):
            seconds = sum(float(amount) * _UNITS[unit] for amount, unit in _PART.findall(text))
        else:
            raise ValueError(
                f"{where}: '{value}' is not a duration; use a number of seconds or 500ms, 30s, 5m, 2h, 1d, 1h30m"
            )
    # NaN, infinity and 400-digit numbers would poison every clock and window computed from them.
    if not math.isfinite(seconds):
        raise ValueError(f"{where}: {str(value)[:40]!r} is too large or not a finite number of seconds")
    return seconds


@dataclass(frozen=True, slots=True)
class Schedule:
    after: float = 0.0  # window opens this many simulated seconds after the clock start
    length: float | None = None  # `for`: the window stays open this long (None: for ever)
    every: float | None = None  # the window repeats with this period
    first_request: int = 1  # request-count window, 1-based and inclusive
    last_request: int | None = None
    times: int | None = None  # at most this many hits

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, where: str = "schedule") -> Schedule:
        data = data or {}
        requests = data.get("requests") or {}
        every = parse_duration(data["every"], f"{where}.every") if "every" in data else None
        length = parse_duration(data["for"], f"{where}.for") if "for" in data else None
        if every is not None and (length is None or length > every):
            raise ValueError(f"{where}: 'every' needs a 'for' no longer than the period")
        return cls(
            after=parse_duration(data.get("after", 0), f"{where}.after"),
            length=length,
            every=every,
            first_request=int(requests.get("from", 1)),
            last_request=int(requests["to"]) if requests.get("to") is not None else None,
            times=int(data["times"]) if data.get("times") is not None else None,
        )

    @property
    def timed(self) -> bool:
        return self.after > 0 or self.length is not None

    def open_at(self, elapsed: float) -> bool:
        """Whether the time window is open `elapsed` simulated seconds after the clock start."""
        since = elapsed - self.after
        if since < 0:
            return False
        if self.every is not None:
            since %= self.every
        return self.length is None or since < self.length

    def window_end(self, elapsed: float) -> float | None:
        """Simulated seconds (since start) when the window open at `elapsed` closes; None if never."""
        if self.length is None:
            return None
        since = elapsed - self.after
        start = self.after + (since - since % self.every if self.every else 0.0)
        return start + self.length

    def counts(self, nth: int) -> bool:
        """Whether the nth matching request (1-based) is inside the request-count window."""
        return nth >= self.first_request and (self.last_request is None or nth <= self.last_request)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.after:
            out["after"] = self.after
        if self.length is not None:
            out["for"] = self.length
        if self.every is not None:
            out["every"] = self.every
        if self.first_request != 1 or self.last_request is not None:
            out["requests"] = {"from": self.first_request, "to": self.last_request}
        if self.times is not None:
            out["times"] = self.times
        return out
