"""The fault engine: one place that decides, deterministically, which faults hit an interaction.

A protocol module (the HTTP fault layer, MLLP, auth) describes the interaction and asks:

    decisions = sandbox.faults.decide("fhir", site_id, {"method": "GET", "path": "/Patient", ...})

The engine does the matching, the time and request-count windows, the hit counting and the seeded
probability draw; the protocol module applies each decision's `action`. The same scenario, seed and
sequence of matching interactions always give the same decisions.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from simulator.clock import Clock
from simulator.faults.matcher import Matcher
from simulator.faults.schedule import Schedule, parse_duration


class FaultSpecError(ValueError):
    """A fault definition that cannot be used; the message names where and why."""


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """One fault firing on one interaction. `params` are the action's settings from the scenario."""

    fault_id: str
    action: str  # e.g. "status", "latency", "hang", "outage" (HTTP); MLLP and auth add their own
    params: Mapping[str, Any]
    delay: float = 0.0  # seconds drawn from the action's `delay` distribution (0 when it has none)
    until: float | None = None  # simulated seconds until the fault's time window closes, if timed


def draw_delay(spec: Any, rng: random.Random, where: str = "delay") -> float:
    """Seconds from `2`, `"500ms"`, `{fixed: 2s}`, `{uniform: [0.1, 0.5]}` or
    `{lognormal: {median: 0.2, sigma: 0.5}}`."""
    if spec is None:
        return 0.0
    if not isinstance(spec, Mapping):
        return parse_duration(spec, where)
    if "fixed" in spec:
        return parse_duration(spec["fixed"], f"{where}.fixed")
    if "uniform" in spec:
        low, high = (parse_duration(v, f"{where}.uniform") for v in spec["uniform"])
        return rng.uniform(low, high)
    if "lognormal" in spec:
        params = spec["lognormal"]
        median = parse_duration(params["median"], f"{where}.lognormal.median")
        if median <= 0:  # log(0): "math domain error" says nothing about the spec
            raise FaultSpecError(f"{where}.lognormal.median must be above 0")
        value = rng.lognormvariate(math.log(median), float(params.get("sigma", 0.5)))
        cap = params.get("max")
        return min(value, parse_duration(cap, f"{where}.lognormal.max")) if cap is not None else value
    raise FaultSpecError(f"{where}: use a duration, {{fixed: ..}}, {{uniform: [a, b]}} or {{lognormal: ..}}")


@dataclass
class Fault:
    id: str
    action: dict[str, Any]  # {"type": ..., **params}
    matcher: Matcher
    schedule: Schedule = field(default_factory=Schedule)
    probability: float = 1.0
    description: str = ""
    enabled: bool = True
    enabled_at_start: bool = True  # what the scenario said; reset undoes runtime enable/disable
    origin: str = "scenario"  # or "runtime" (added through the admin API)
    matched: int = 0  # interactions that matched (inside the time window)
    hits: int = 0  # times it fired
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], default_id: str, origin: str = "scenario") -> Fault:
        if not isinstance(data, Mapping):
            raise FaultSpecError(f"{default_id}: a fault is a mapping with match, schedule and action")
        fid = str(data.get("id") or default_id)
        action = data.get("action")
        if isinstance(action, str):
            action = {"type": action}
        if not isinstance(action, Mapping) or not action.get("type"):
            raise FaultSpecError(f"fault '{fid}': 'action' needs a 'type' (e.g. status, latency, outage)")
        probability = float(data.get("probability", 1.0))
        if not 0.0 <= probability <= 1.0:
            raise FaultSpecError(f"fault '{fid}': probability must be between 0 and 1, not {probability}")
        try:
            schedule = Schedule.from_mapping(data.get("schedule"), f"fault '{fid}'.schedule")
            if "delay" in action:  # fail at load time, not on the first hit
                draw_delay(action["delay"], random.Random(0), f"fault '{fid}'.action.delay")
        except (ValueError, TypeError, KeyError) as exc:
            raise FaultSpecError(str(exc)) from None
        return cls(
            id=fid,
            action=dict(action),
            matcher=Matcher(data.get("match")),
            schedule=schedule,
            probability=probability,
            description=str(data.get("description", "")),
            enabled=bool(data.get("enabled", True)),
            enabled_at_start=bool(data.get("enabled", True)),
            origin=origin,
        )

    def to_mapping(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "match": self.matcher.raw,
            "schedule": self.schedule.to_mapping(),
            "probability": self.probability,
            "action": self.action,
            "enabled": self.enabled,
            "origin": self.origin,
            "matched": self.matched,
            "hits": self.hits,
        }


class FaultEngine:
    def __init__(self, faults: list[Fault], clock: Clock, seed: int | str = 0) -> None:
        self.clock = clock
        self.seed = seed
        self._lock = threading.Lock()  # MLLP may decide from another thread than HTTP
        self.faults: dict[str, Fault] = {}
        self._index: dict[str, list[Fault]] = {}
        self._any: list[Fault] = []
        for fault in faults:
            self._register(fault)

    @classmethod
    def from_specs(cls, specs: list[Any], clock: Clock, seed: int | str = 0) -> FaultEngine:
        faults = [Fault.from_mapping(spec, f"fault-{i + 1}") for i, spec in enumerate(specs or [])]
        ids = [f.id for f in faults]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise FaultSpecError(f"fault ids must be unique: {', '.join(duplicates)}")
        return cls(faults, clock, seed)

    def _register(self, fault: Fault) -> None:
        fault.rng = random.Random(f"{self.seed}/faults/{fault.id}")
        self.faults[fault.id] = fault
        names = fault.matcher.protocol_names()
        if names is None:
            self._any.append(fault)
            for bucket in self._index.values():
                bucket.append(fault)
        else:
            for name in names:
                self._index.setdefault(name, list(self._any)).append(fault)

    # -- the hot path ----------------------------------------------------------------------------
    def decide(
        self,
        protocol: str,
        site: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        actions: Collection[str] | None = None,
    ) -> list[FaultDecision]:
        """The faults that fire on this interaction, in scenario order. Counts matches and hits.
        `actions` limits the decision to faults with those action types, for a protocol that
        decides at several moments (MLLP: on connect, then per message)."""
        candidates = self._index.get(protocol, self._any)
        if not candidates:
            return []
        attrs = attrs or {}
        elapsed = self.clock.elapsed()
        decisions: list[FaultDecision] = []
        with self._lock:
            for fault in candidates:
                if actions is not None and fault.action["type"] not in actions:
                    continue
                if not fault.enabled or not fault.matcher.matches(protocol, site, attrs):
                    continue
                schedule = fault.schedule
                if not schedule.open_at(elapsed):
                    continue
                fault.matched += 1
                if not schedule.counts(fault.matched):
                    continue
                if schedule.times is not None and fault.hits >= schedule.times:
                    continue
                if fault.probability < 1.0 and fault.rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                end = schedule.window_end(elapsed)
                decisions.append(
                    FaultDecision(
                        fault.id,
                        fault.action["type"],
                        fault.action,
                        draw_delay(fault.action.get("delay"), fault.rng),
                        None if end is None else max(0.0, end - elapsed),
                    )
                )
        return decisions

    def active(
        self, protocol: str, site: str | None, action: str, attrs: Mapping[str, Any] | None = None
    ) -> FaultDecision | None:
        """A fault with this action whose time window is open now, without counting or drawing
        (e.g. MLLP `refuse`: is the listener closed at the moment?)."""
        elapsed = self.clock.elapsed()
        for fault in self._index.get(protocol, self._any):
            if (
                fault.enabled
                and fault.action["type"] == action
                and fault.schedule.open_at(elapsed)
                and fault.matcher.matches(protocol, site, attrs or {})
            ):
                end = fault.schedule.window_end(elapsed)
                return FaultDecision(
                    fault.id, action, fault.action, 0.0, None if end is None else max(0.0, end - elapsed)
                )
        return None

    # -- control (admin API) ---------------------------------------------------------------------
    def add(self, data: Mapping[str, Any]) -> Fault:
        fault = Fault.from_mapping(data, f"runtime-{len(self.faults) + 1}", origin="runtime")
        with self._lock:
            if fault.id in self.faults:
                raise FaultSpecError(f"a fault with id '{fault.id}' already exists")
            self._register(fault)
        return fault

    def set_enabled(self, fault_id: str, enabled: bool) -> Fault:
        fault = self.faults.get(fault_id)
        if fault is None:
            raise KeyError(fault_id)
        fault.enabled = enabled
        return fault

    def reset(self) -> None:
        """Counters, random draws and enabled flags back to the start (runtime-added faults are
        removed)."""
        with self._lock:
            kept = [f for f in self.faults.values() if f.origin == "scenario"]
            self.faults, self._index, self._any = {}, {}, []
            for fault in kept:
                fault.matched = fault.hits = 0
                fault.enabled = fault.enabled_at_start
                self._register(fault)

    def describe(self) -> list[dict[str, Any]]:
        return [f.to_mapping() for f in self.faults.values()]
