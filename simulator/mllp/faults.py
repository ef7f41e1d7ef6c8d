"""MLLP faults: what an interface engine sees when the other side misbehaves.

A fault is data (a site's `mllp: faults:` list): a `match` on the message (type, trigger, MSH-10),
a `schedule` (simulated seconds since the scenario started, how many matches to skip, how many times
to fire), a `probability` drawn from the scenario's seeded RNG, and an `action` with its parameters.
Each fault has its own RNG stream (`seed/site/name`) so adding one fault does not change the
decisions of another: the same scenario, seed and traffic give the same faults.

Connection actions act when a client connects or while a frame is in flight; reply actions change
the acknowledgement of a complete message (see `Reply`).
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass, field
from typing import Any

from simulator.clock import Clock

CONNECTION_ACTIONS = frozenset({"refuse", "accept_close", "max_connections", "reset_mid_frame"})
# Actions decided before the message is applied: the message is not stored.
REJECT_ACTIONS = frozenset({"ack_code"})
REPLY_ACTIONS = frozenset(
    {
        "lost_ack",
        "never_ack",
        "delay_ack",
        "dribble_ack",
        "ack_code",
        "wrong_ack_id",
        "duplicate_ack",
        "ack_without_msa",
        "non_hl7_reply",
        "nak_byte",
    }
)
ACTIONS = CONNECTION_ACTIONS | REPLY_ACTIONS

_PARAMS = {
    "refuse": {"seconds"},
    "accept_close": set(),
    "max_connections": {"limit"},
    "reset_mid_frame": set(),
    "lost_ack": set(),
    "never_ack": set(),
    "delay_ack": {"seconds", "min", "max"},
    "dribble_ack": {"interval"},
    "ack_code": {"code", "text"},
    "wrong_ack_id": {"mode"},
    "duplicate_ack": set(),
    "ack_without_msa": set(),
    "non_hl7_reply": {"body"},
    "nak_byte": set(),
}
_COMMON = {"name", "action", "match", "schedule", "probability", "enabled", "description"}


@dataclass
class MllpFault:
    name: str
    action: str
    match: dict[str, str] = field(default_factory=dict)
    schedule: dict[str, float] = field(default_factory=dict)  # start, end (sim s), after, times
    probability: float = 1.0
    enabled: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    matched: int = 0
    fired: int = 0

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str) -> MllpFault:
        if not isinstance(data, dict) or "action" not in data:
            raise ValueError(f"{where}: a fault needs an 'action' (one of {', '.join(sorted(ACTIONS))})")
        action = data["action"]
        if action not in ACTIONS:
            raise ValueError(
                f"{where}: unknown MLLP fault action '{action}' (known: {', '.join(sorted(ACTIONS))})"
            )
        params = {k: v for k, v in data.items() if k not in _COMMON}
        unknown = sorted(set(params) - _PARAMS[action])
        if unknown:
            raise ValueError(
                f"{where}: '{action}' does not take {', '.join(unknown)} (takes: {', '.join(sorted(_PARAMS[action])) or 'nothing'})"
            )
        if action == "ack_code" and params.get("code") not in ("AE", "AR", "CE", "CR"):
            raise ValueError(f"{where}: ack_code needs code AE, AR, CE or CR")
        if action == "wrong_ack_id" and params.get("mode", "wrong") not in ("wrong", "stale"):
            raise ValueError(f"{where}: wrong_ack_id mode is 'wrong' or 'stale'")
        probability = float(data.get("probability", 1.0))
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"{where}: probability must be between 0 and 1")
        schedule = dict(data.get("schedule") or {})
        bad = sorted(set(schedule) - {"start", "end", "after", "times"})
        if bad:
            raise ValueError(
                f"{where}: schedule does not take {', '.join(bad)} (takes: start, end, after, times)"
            )
        match = {str(k): str(v) for k, v in (data.get("match") or {}).items()}
        bad = sorted(set(match) - {"message_type", "control_id", "peer"})
        if bad:
            raise ValueError(
                f"{where}: match does not take {', '.join(bad)} (takes: message_type, control_id, peer)"
            )
        return cls(
            name=str(data.get("name") or f"{action}-{where}"),
            action=action,
            match=match,
            schedule=schedule,
            probability=probability,
            enabled=bool(data.get("enabled", True)),
            params=params,
        )

    def in_window(self, clock: Clock) -> bool:
        start, end = self.schedule.get("start"), self.schedule.get("end")
        if start is None and end is None:
            return True
        elapsed = clock.elapsed()
        return (start is None or elapsed >= float(start)) and (end is None or elapsed < float(end))

    def matches(self, facts: dict[str, str]) -> bool:
        return all(fnmatch.fnmatchcase(facts.get(key, ""), pattern) for key, pattern in self.match.items())


class MllpFaults:
    """A site's MLLP faults and the seeded decisions about when they fire."""

    def __init__(self, specs: list[dict[str, Any]], seed: int | str, site_id: str, clock: Clock) -> None:
        self.faults = [MllpFault.from_mapping(spec, f"mllp.faults[{i}]") for i, spec in enumerate(specs)]
        names = [f.name for f in self.faults]
        if len(set(names)) != len(names):
            raise ValueError("mllp.faults: two faults share a name")
        self.clock = clock
        self._rngs = {f.name: random.Random(f"{seed}/{site_id}/mllp-fault/{f.name}") for f in self.faults}

    def decide(self, kinds: frozenset[str], facts: dict[str, str]) -> list[MllpFault]:
        """The faults among `kinds` that fire for this event, in file order."""
        fired = []
        for fault in self.faults:
            if not fault.enabled or fault.action not in kinds or not fault.in_window(self.clock):
                continue
            if not fault.matches(facts):
                continue
            fault.matched += 1
            if fault.matched <= int(fault.schedule.get("after", 0)):
                continue
            times = fault.schedule.get("times")
            if times is not None and fault.fired >= int(times):
                continue
            # Drawn only for matching events, so unrelated traffic does not shift the sequence.
            if fault.probability < 1.0 and self._rngs[fault.name].random() >= fault.probability:
                continue
            fault.fired += 1
            fired.append(fault)
        return fired

    def active(self, action: str) -> MllpFault | None:
        """A time-window fault that is on now (e.g. `refuse`), without drawing or counting."""
        for fault in self.faults:
            if fault.enabled and fault.action == action and fault.in_window(self.clock):
                return fault
        return None

    def delay(self, fault: MllpFault) -> float:
        if "seconds" in fault.params:
            return float(fault.params["seconds"])
        low, high = float(fault.params.get("min", 0.0)), float(fault.params.get("max", 1.0))
        return self._rngs[fault.name].uniform(low, high)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": f.name,
                "action": f.action,
                "enabled": f.enabled,
                "match": f.match,
                "schedule": f.schedule,
                "probability": f.probability,
                **f.params,
                "matched": f.matched,
                "fired": f.fired,
            }
            for f in self.faults
        ]
