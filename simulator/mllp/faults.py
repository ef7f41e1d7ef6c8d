"""MLLP fault actions: what an interface engine sees when the other side misbehaves.

Faults are the scenario's `faults:` (or added at runtime through `/_admin/faults`), decided by the
sandbox's fault engine (`simulator/faults/engine.py`) with `protocol: mllp`; this module names the
MLLP actions, checks their settings, and asks the engine at the moment each action can act:

- `listen` (polled, not counted as hits): `refuse` closes the port while the fault's time window is
  open.
- `connect`: `accept_close` (accept, then close), `max_connections` (reject beyond `limit`).
- `frame` (a frame has started but not ended): `reset_mid_frame`.
- `message` (a complete message; match on `message_type`, `trigger`, `control_id`, `peer`):
  `lost_ack`, `never_ack`, `ack_delay` (`delay:`), `ack_dribble` (`interval:`), `ack_code` (`code:`
  AE/AR/CE/CR), `ack_wrong_id` (`mode:` wrong/stale), `ack_duplicate`, `ack_without_msa`,
  `non_hl7_reply` (`body:`), `nak_byte`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator.faults.engine import FaultDecision, FaultEngine, FaultSpecError

LISTEN = frozenset({"refuse"})
CONNECT = frozenset({"accept_close", "max_connections"})
FRAME = frozenset({"reset_mid_frame"})
MESSAGE = frozenset(
    {
        "lost_ack",
        "never_ack",
        "ack_delay",
        "ack_dribble",
        "ack_code",
        "ack_wrong_id",
        "ack_duplicate",
        "ack_without_msa",
        "non_hl7_reply",
        "nak_byte",
    }
)
ACTIONS = LISTEN | CONNECT | FRAME | MESSAGE

# Settings each action takes besides `type` (and `delay`, which the engine draws).
_PARAMS: dict[str, set[str]] = {name: set() for name in ACTIONS}
_PARAMS.update(
    {
        "max_connections": {"limit"},
        "ack_delay": {"delay"},
        "ack_dribble": {"interval"},
        "ack_code": {"code", "text"},
        "ack_wrong_id": {"mode"},
        "non_hl7_reply": {"body"},
    }
)


def check_action(fault_id: str, action: Mapping[str, Any]) -> None:
    """Raise FaultSpecError naming the fault if an MLLP action's settings are wrong."""
    kind = action.get("type")
    if kind not in ACTIONS:
        return
    extra = sorted(set(action) - {"type"} - _PARAMS[kind])
    if extra:
        takes = ", ".join(sorted(_PARAMS[kind])) or "nothing besides type"
        raise FaultSpecError(
            f"fault '{fault_id}': MLLP action '{kind}' does not take {', '.join(extra)} (takes: {takes})"
        )
    if kind == "ack_code" and action.get("code") not in ("AE", "AR", "CE", "CR"):
        raise FaultSpecError(f"fault '{fault_id}': ack_code needs code AE, AR, CE or CR")
    if kind == "ack_wrong_id" and action.get("mode", "wrong") not in ("wrong", "stale"):
        raise FaultSpecError(f"fault '{fault_id}': ack_wrong_id mode is 'wrong' or 'stale'")
    if kind == "ack_delay" and "delay" not in action:
        raise FaultSpecError(
            f"fault '{fault_id}': ack_delay needs a delay (e.g. 4.9s or {{uniform: [4, 6]}})"
        )
    if kind == "max_connections" and not (isinstance(action.get("limit"), int) and action["limit"] >= 0):
        raise FaultSpecError(f"fault '{fault_id}': max_connections needs a limit (an integer >= 0)")


class MllpFaults:
    """One site's view of the fault engine, for the MLLP listener and endpoint."""

    def __init__(self, engine: FaultEngine, site_id: str) -> None:
        self.engine = engine
        self.site_id = site_id
        for fault in engine.faults.values():
            check_action(fault.id, fault.action)

    def any(self, kinds: frozenset[str]) -> bool:
        """Cheap pre-check: is any fault (of any site) of these kinds defined at all?"""
        if not self.engine.faults:
            return False
        return any(f.action.get("type") in kinds for f in self.engine.faults.values())

    def decide(self, kinds: frozenset[str], attrs: Mapping[str, Any]) -> list[FaultDecision]:
        return self.engine.decide("mllp", self.site_id, attrs, actions=kinds)

    def active(self, action: str, attrs: Mapping[str, Any]) -> FaultDecision | None:
        """A fault of this action whose window is open now, without counting it as a hit (polls)."""
        return self.engine.active("mllp", self.site_id, action, attrs)
