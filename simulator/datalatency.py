"""Data latency: writes become visible to reads only after a delay or at batch boundaries, as with
hospital systems that sync in batches.

    data_latency:
      - site: default              # glob; default every site
        resource_type: Observation # glob or list; default every type
        delay: 5m                  # visible 5 simulated minutes after the write
      - batch_every: 1h            # visible at the next full hour of simulated UTC time
        offset: 5m                 # ...plus five minutes (the batch job's run time)

A write is acknowledged at once (201 with the resource), but reads, searches, vreads and history
hide the versions that are not yet visible: a read shows the last visible version, or 404 if none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simulator.clock import Clock
from simulator.faults.matcher import Matcher
from simulator.faults.schedule import parse_duration
from simulator.store.base import StoredVersion

Visibility = Callable[[StoredVersion], bool]


@dataclass(frozen=True)
class LatencyRule:
    sites: Matcher
    types: Matcher
    delay: float = 0.0
    batch_every: float | None = None
    offset: float = 0.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> LatencyRule:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: a data_latency rule is a mapping with delay or batch_every")
        if "delay" not in data and "batch_every" not in data:
            raise ValueError(f"{where}: give 'delay' (e.g. 5m) or 'batch_every' (e.g. 1h)")
        every = data.get("batch_every")
        return cls(
            sites=Matcher({"site": data["site"]} if "site" in data else None),
            types=Matcher({"resource_type": data["resource_type"]} if "resource_type" in data else None),
            delay=parse_duration(data.get("delay", 0), f"{where}.delay"),
            batch_every=parse_duration(every, f"{where}.batch_every") if every is not None else None,
            offset=parse_duration(data.get("offset", 0), f"{where}.offset"),
        )

    def visible_from(self, timestamp: float) -> float:
        """Simulated POSIX time from which a version written at `timestamp` can be read."""
        at = timestamp + self.delay
        if self.batch_every:
            at = math.ceil(at / self.batch_every) * self.batch_every
        return at + self.offset


def visibility_for(
    specs: list[Any] | None, site_id: str, clock: Clock, baseline_seq: int = 0
) -> Visibility | None:
    """The visibility predicate for one site, or None when its writes are visible at once.
    Versions up to `baseline_seq` (the scenario's starting population) are always visible."""
    rules = [LatencyRule.from_mapping(spec, f"data_latency[{i}]") for i, spec in enumerate(specs or [])]
    rules = [r for r in rules if r.sites.matches("fhir", site_id, {})]
    if not rules:
        return None
    by_type: dict[str, LatencyRule | None] = {}

    def rule_for(resource_type: str) -> LatencyRule | None:
        if resource_type not in by_type:
            attrs = {"resource_type": resource_type}
            by_type[resource_type] = next((r for r in rules if r.types.matches("fhir", site_id, attrs)), None)
        return by_type[resource_type]

    def visible(version: StoredVersion) -> bool:
        if version.seq <= baseline_seq:
            return True
        rule = rule_for(version.type)
        return rule is None or rule.visible_from(version.timestamp) <= clock.timestamp()

    return visible
