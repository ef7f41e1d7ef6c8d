"""The fault engine's decisions: matching, windows, counting, seeded probability, delays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simulator.clock import Clock
from simulator.faults import FaultEngine, FaultSpecError, parse_duration

START = datetime(2026, 1, 1, tzinfo=UTC)


def engine(*specs: dict, seed: int | str = 7) -> FaultEngine:
    return FaultEngine.from_specs(list(specs), Clock(START, speed=0), seed)


def fired(e: FaultEngine, protocol: str = "fhir", site: str = "s", **attrs: object) -> list[str]:
    return [d.fault_id for d in e.decide(protocol, site, attrs)]


def test_matcher_keys_are_anded_and_lists_are_ored() -> None:
    e = engine(
        {
            "id": "f",
            "match": {"site": "s*", "protocol": "fhir", "method": ["POST", "PUT"], "path": "/Observation*"},
            "action": {"type": "status"},
        }
    )
    assert fired(e, method="POST", path="/Observation") == ["f"]
    assert fired(e, method="PUT", path="/Observation/1") == ["f"]
    assert fired(e, method="GET", path="/Observation") == []
    assert fired(e, method="POST", path="/Patient") == []
    assert fired(e, protocol="mllp", method="POST", path="/Observation") == []
    assert fired(e, site="other", method="POST", path="/Observation") == []


def test_header_and_protocol_specific_attributes() -> None:
    e = engine(
        {"id": "h", "match": {"headers": {"x-priority": "low"}}, "action": {"type": "status"}},
        {"id": "m", "match": {"protocol": "mllp", "message_type": "ORU^*"}, "action": {"type": "ack_delay"}},
    )
    assert fired(e, headers={"x-priority": "low"}) == ["h"]
    assert fired(e, headers={"x-priority": "high"}) == []
    assert fired(e) == []  # an attribute the protocol does not supply never matches
    assert fired(e, "mllp", message_type="ORU^R01") == ["m"]
    assert fired(e, "mllp", message_type="ADT^A01") == []


def test_request_count_window_and_times() -> None:
    e = engine(
        {
            "id": "third-to-fifth",
            "schedule": {"requests": {"from": 3, "to": 5}},
            "action": {"type": "status"},
        },
        {"id": "twice", "schedule": {"times": 2}, "action": {"type": "latency"}},
    )
    hits = [fired(e) for _ in range(7)]
    assert [("third-to-fifth" in h) for h in hits] == [False, False, True, True, True, False, False]
    assert [("twice" in h) for h in hits] == [True, True, False, False, False, False, False]
    counts = {f["id"]: (f["matched"], f["hits"]) for f in e.describe()}
    assert counts == {"third-to-fifth": (7, 3), "twice": (7, 2)}


def test_time_window_repeats_every_period_and_reports_time_left() -> None:
    e = engine(
        {"id": "w", "schedule": {"after": "10m", "for": "5m", "every": "1h"}, "action": {"type": "outage"}}
    )
    clock = e.clock
    assert fired(e) == []
    clock.advance(600)
    decision = e.decide("fhir", "s", {})[0]
    assert decision.until == pytest.approx(300)
    clock.advance(299)
    assert fired(e) == ["w"]
    clock.advance(1)
    assert fired(e) == []  # the window is half-open: [10m, 15m)
    clock.advance(3600 - 300 + 60)  # 1h11m: inside the second window
    assert fired(e) == ["w"]


def test_probability_is_seeded_and_deterministic() -> None:
    spec = {"id": "p", "probability": 0.3, "action": {"type": "status"}}
    runs = [[bool(fired(e)) for _ in range(200)] for e in (engine(spec), engine(spec))]
    assert runs[0] == runs[1]
    assert 30 < sum(runs[0]) < 90  # about 60 of 200
    different_seed = engine(spec, seed=8)
    assert [bool(fired(different_seed)) for _ in range(200)] != runs[0]


def test_delay_distributions_are_drawn_per_hit() -> None:
    e = engine(
        {"id": "u", "action": {"type": "latency", "delay": {"uniform": ["100ms", "300ms"]}}},
        {"id": "f", "action": {"type": "latency", "delay": "2s"}},
        {
            "id": "l",
            "action": {"type": "latency", "delay": {"lognormal": {"median": 0.2, "sigma": 1, "max": "1s"}}},
        },
    )
    draws = [e.decide("fhir", "s", {}) for _ in range(50)]
    uniform = [d[0].delay for d in draws]
    assert all(0.1 <= x <= 0.3 for x in uniform) and len(set(uniform)) > 40
    assert {d[1].delay for d in draws} == {2.0}
    lognormal = [d[2].delay for d in draws]
    assert all(0 < x <= 1.0 for x in lognormal) and max(lognormal) == 1.0


def test_decide_can_be_limited_to_some_actions_and_active_does_not_count() -> None:
    e = engine(
        {
            "id": "refuse",
            "match": {"protocol": "mllp"},
            "schedule": {"after": "1m", "for": "1m"},
            "action": {"type": "refuse"},
        },
        {"id": "slow-ack", "match": {"protocol": "mllp"}, "action": {"type": "delay_ack", "delay": 1}},
    )
    assert [d.fault_id for d in e.decide("mllp", "s", {}, actions={"delay_ack"})] == ["slow-ack"]
    assert e.active("mllp", "s", "refuse") is None
    e.clock.advance(90)
    window = e.active("mllp", "s", "refuse")
    assert window is not None and window.until == pytest.approx(30)
    assert e.active("fhir", "s", "refuse") is None
    counts = {f["id"]: (f["matched"], f["hits"]) for f in e.describe()}
    assert counts == {"refuse": (0, 0), "slow-ack": (1, 1)}


def test_disable_add_and_reset() -> None:
    e = engine({"id": "a", "action": {"type": "status"}})
    e.set_enabled("a", False)
    assert fired(e) == []
    e.set_enabled("a", True)
    e.add({"id": "b", "match": {"protocol": "auth"}, "action": {"type": "status"}})
    assert fired(e, "auth") == ["a", "b"]
    with pytest.raises(FaultSpecError, match="already exists"):
        e.add({"id": "b", "action": {"type": "status"}})
    e.reset()
    assert [f["id"] for f in e.describe()] == ["a"]
    assert e.describe()[0]["hits"] == 0


def test_reset_gives_scenario_faults_their_enabled_flag_back() -> None:
    e = engine(
        {"id": "on", "action": {"type": "status"}}, {"id": "off", "enabled": False, "action": "status"}
    )
    e.set_enabled("on", False)
    e.set_enabled("off", True)
    assert fired(e) == ["off"]
    e.reset()
    assert fired(e) == ["on"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"action": {}}, "needs a 'type'"),
        ({"action": {"type": "status"}, "probability": 2}, "between 0 and 1"),
        ({"action": {"type": "status"}, "schedule": {"after": "soon"}}, "not a duration"),
        ({"action": {"type": "status"}, "schedule": {"every": "1m", "for": "2m"}}, "'every' needs a 'for'"),
        ({"action": {"type": "latency", "delay": {"gamma": 1}}}, "uniform"),
        ("not a mapping", "is a mapping"),
    ],
)
def test_bad_fault_specs_are_refused_with_the_reason(spec: object, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        FaultEngine.from_specs([spec], Clock(START, 0))


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(FaultSpecError, match="unique: x"):
        engine({"id": "x", "action": {"type": "status"}}, {"id": "x", "action": {"type": "status"}})


def test_parse_duration_units() -> None:
    assert [parse_duration(v) for v in (3, "500ms", "30s", "5m", "2h", "1d", "1.5", "1h30m")] == [
        3.0,
        0.5,
        30.0,
        300.0,
        7200.0,
        86400.0,
        1.5,
        5400.0,
    ]
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-1)
