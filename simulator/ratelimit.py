"""Rate limits: token buckets per client (OAuth client id, else source address), per site and
optionally per route, with an optional daily quota. Over the limit: 429, `Retry-After` (whole
seconds, rounded up) and an OperationOutcome.

    rate_limits:
      - id: api
        site: default          # glob; default every site
        path: /Observation*    # glob on the path below the FHIR base; default every route
        method: [GET]          # default every method
        per: client            # client (default): a bucket per client; site: one shared bucket
        rate: 5/s              # refill: a number (per second) or N/s, N/min, N/h
        burst: 10              # bucket size; default max(1, rate per second)
        daily_quota: 1000      # requests per simulated UTC day

Buckets run on the simulated clock, so advancing the clock refills them; `Retry-After` is in
simulated seconds (real seconds at speed 1). Batch bundles are charged per entry: entries past the
limit get their own 429 inside a 200 batch-response; a transaction is charged all or nothing.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.clock import Clock
from simulator.faults.http import site_error_response
from simulator.faults.matcher import Matcher
from simulator.fhir.errors import FHIRError
from simulator.fhir.transaction import entry_gate

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox
    from simulator.site import Site

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
DAY = 86400.0


def parse_rate(value: Any, where: str = "rate") -> float:
    """Tokens per second from `5`, `"5/s"`, `"300/min"`, `"1000/h"`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _RATE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"{where}: '{value}' is not a rate; use a positive number per second or N/s, N/min, N/h"
        )
    return float(match.group(1)) / _PER[match.group(2)]


@dataclass
class Bucket:
    tokens: float
    updated: float  # simulated seconds since the clock start
    day: int = -1
    used_today: int = 0


@dataclass
class RateLimit:
    id: str
    rate: float
    burst: float
    per: str = "client"
    daily_quota: int | None = None
    matcher: Matcher = field(default_factory=lambda: Matcher(None))
    raw: dict[str, Any] = field(default_factory=dict)
    buckets: dict[str, Bucket] = field(default_factory=dict)
    allowed: int = 0
    rejected: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], default_id: str) -> RateLimit:
        if not isinstance(data, Mapping):
            raise ValueError(f"{default_id}: a rate limit is a mapping with rate and burst")
        lid = str(data.get("id") or default_id)
        rate = parse_rate(data.get("rate"), f"rate limit '{lid}'.rate")
        burst = float(data.get("burst", max(1.0, rate)))
        if burst < 1:
            raise ValueError(f"rate limit '{lid}': burst must be at least 1")
        per = str(data.get("per", "client"))
        if per not in ("client", "site"):
            raise ValueError(f"rate limit '{lid}': per must be 'client' or 'site', not '{per}'")
        match = {k: data[k] for k in ("site", "path", "method", "resource_type", "interaction") if k in data}
        quota = data.get("daily_quota")
        return cls(
            id=lid,
            rate=rate,
            burst=burst,
            per=per,
            daily_quota=int(quota) if quota is not None else None,
            matcher=Matcher(match),
            raw=dict(data),
        )

    def wait(self, key: str, cost: int, now: float, stamp: float) -> tuple[Bucket, float | None]:
        """The refilled bucket, and None if `cost` fits, else the simulated seconds until it would.
        `now`: simulated seconds since the clock start; `stamp`: simulated POSIX time (for days)."""
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if self.daily_quota is not None:
            day = int(stamp // DAY)
            if day != bucket.day:
                bucket.day, bucket.used_today = day, 0
            if bucket.used_today + cost > self.daily_quota:
                return bucket, (day + 1) * DAY - stamp
        if bucket.tokens < cost:
            return bucket, (cost - bucket.tokens) / self.rate
        return bucket, None

    def state(self, now: float) -> dict[str, Any]:
        clients = {}
        for key, bucket in self.buckets.items():
            tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            clients[key] = {"tokens": round(tokens, 3), "used_today": bucket.used_today}
        return {
            "id": self.id,
            "rate_per_second": self.rate,
            "burst": self.burst,
            "per": self.per,
            "daily_quota": self.daily_quota,
            "match": self.matcher.raw,
            "allowed": self.allowed,
            "rejected": self.rejected,
            "buckets": clients,
        }


class RateLimiter:
    def __init__(self, limits: list[RateLimit], clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()

    @classmethod
    def from_specs(cls, specs: list[Any] | None, clock: Clock) -> RateLimiter:
        limits = [RateLimit.from_mapping(spec, f"limit-{i + 1}") for i, spec in enumerate(specs or [])]
        return cls(limits, clock)

    def check(self, site: str, request: Mapping[str, Any], cost: int = 1) -> FHIRError | None:
        """Charge `cost` to every limit that applies, or to none if one refuses (then the error to
        answer with: the longest wait among the refusing limits)."""
        now, stamp = self.clock.elapsed(), self.clock.timestamp()
        with self._lock:
            charged: list[tuple[RateLimit, Bucket]] = []
            refusal: tuple[float, RateLimit, str] | None = None
            for limit in self.limits:
                if not limit.matcher.matches(request["protocol"], site, request):
                    continue
                key = f"{site}:{request.get('client_id')}" if limit.per == "client" else site
                bucket, wait = limit.wait(key, cost, now, stamp)
                if wait is None:
                    charged.append((limit, bucket))
                else:
                    limit.rejected += 1
                    if refusal is None or wait > refusal[0]:
                        refusal = (wait, limit, key)
            if refusal is None:
                for limit, bucket in charged:
                    bucket.tokens -= cost
                    bucket.used_today += cost
                    limit.allowed += 1
                return None
        wait, limit, key = refusal
        seconds = max(1, math.ceil(wait - 1e-9))
        return FHIRError.of(
            429,
            "throttled",
            f"Rate limit '{limit.id}' exceeded for {key}; retry after {seconds} s",
            headers={"Retry-After": str(seconds)},
        )

    def reset(self) -> None:
        with self._lock:
            for limit in self.limits:
                limit.buckets.clear()
                limit.allowed = limit.rejected = 0

    def describe(self) -> list[dict[str, Any]]:
        now = self.clock.elapsed()
        with self._lock:
            return [limit.state(now) for limit in self.limits]


class RateLimitLayer:
    def __init__(self, app: ASGIApp, site: Site, sandbox: Sandbox) -> None:
        self.app = app
        self.site = site
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.sandbox.rate_limits
        request = scope.get("ehrsim.request")
        if scope["type"] != "http" or request is None or not limiter.limits:
            await self.app(scope, receive, send)
            return
        entry = scope.get("ehrsim.entry")
        if request["interaction"] == "batch":
            # Charged per entry (batch) or for all entries (transaction) by the bundle processor.
            def gate(cost: int) -> None:
                error = limiter.check(self.site.id, request, cost)
                if error is not None:
                    if entry is not None:
                        entry.setdefault("rate_limited_entries", 0)
                        entry["rate_limited_entries"] += cost
                    raise error

            token = entry_gate.set(gate)
            try:
                await self.app(scope, receive, send)
            finally:
                entry_gate.reset(token)
            return
        error = limiter.check(self.site.id, request)
        if error is None:
            await self.app(scope, receive, send)
            return
        if entry is not None:
            entry["retry_after"] = int(error.headers["Retry-After"])
            entry["outcome"] = "rate_limited"
        await site_error_response(self.site, error)(scope, receive, send)


def rate_limit_layer(app: ASGIApp, site: Site, sandbox: Sandbox) -> ASGIApp:
    return RateLimitLayer(app, site, sandbox)
