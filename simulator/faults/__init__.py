"""Fault injection: matcher + schedule + probability + action, all data from the scenario.

`engine.FaultEngine.decide` is the one decision point for every protocol; `http` applies the HTTP
actions as a layer around each site's FHIR API. MLLP and auth apply their own actions.
"""

from simulator.faults.engine import Fault, FaultDecision, FaultEngine, FaultSpecError, draw_delay
from simulator.faults.matcher import Matcher
from simulator.faults.schedule import Schedule, parse_duration

__all__ = [
    "Fault",
    "FaultDecision",
    "FaultEngine",
    "FaultSpecError",
    "Matcher",
    "Schedule",
    "draw_delay",
    "parse_duration",
]
