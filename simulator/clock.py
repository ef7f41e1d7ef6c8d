"""Simulated time: what "now" means to the sites, the faults and the tokens.

The clock starts at the scenario's start instant and runs at the scenario's speed (1.0 = real time,
0 = frozen). Tests and the admin API move it forward with `advance`; nothing ever moves it back, so
versions, journals and token expiry stay monotonic.
"""

from __future__ import annotations

import functools
import math
import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._start_timestamp = self._start.timestamp()
        self.speed = speed
        self._wall_anchor = time.monotonic()
        self._offset = 0.0  # seconds added by advance()

    @property
    def start(self) -> datetime:
        return self._start

    def elapsed(self) -> float:
        """Simulated seconds since the scenario started."""
        return (time.monotonic() - self._wall_anchor) * self.speed + self._offset

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.elapsed())

    def at(self, elapsed: float) -> datetime:
        """The simulated instant `elapsed` simulated seconds after the start."""
        return self._start + timedelta(seconds=elapsed)

    def timestamp(self) -> float:
        """Simulated now as a POSIX timestamp."""
        return self._start_timestamp + (time.monotonic() - self._wall_anchor) * self.speed + self._offset

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        try:
            self.at(self.elapsed() + seconds)
        except OverflowError:
            raise ValueError(f"advancing {seconds:g} seconds would move the clock past year 9999") from None
        self._offset += seconds
        return self.now()

    def reset(self) -> None:
        self._wall_anchor = time.monotonic()
        self._offset = 0.0


def fhir_instant(moment: datetime) -> str:
    """An R4 `instant` with millisecond precision and an explicit UTC offset."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def instant_at(timestamp: float) -> str:
    """`fhir_instant` of a POSIX timestamp already rounded to milliseconds (the store's stamps)."""
    second = math.floor(timestamp)
    millis = round((timestamp - second) * 1000)
    if millis == 1000:
        second, millis = second + 1, 0
    return f"{_second_text(second)}.{millis:03d}Z"


@functools.lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    # Commits within one second share the formatting (a write-heavy hot path otherwise paid it).
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate, for Last-Modified."""
    return _http_date(int(moment.timestamp()))


@functools.lru_cache(maxsize=256)
def _http_date(second: int) -> str:
    # Writes in the same second share the header; strftime on every response showed in profiles.
    return datetime.fromtimestamp(second, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
