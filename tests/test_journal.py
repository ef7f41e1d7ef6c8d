"""The journal: what is recorded, bounded memory, queries, export, verification, determinism."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from simulator.admin_client import AdminClient, AdminError, VerificationFailed
from simulator.clock import Clock
from simulator.journal import Journal
from simulator.scenario import build_scenario
from simulator.testing import RunningServer, serve_in_thread
from simulator.verify import VerifyError, verify


def observation(patient: str, value: float) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:device", "value": f"hr-{value}"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def frozen(**extra: object) -> object:
    return build_scenario(
        {
            "name": "frozen",
            "seed": 11,
            "clock": {"start": "2026-03-02T08:00:00Z", "speed": 0},
            "sites": [{"id": "default", "base_path": "/fhir", "population": {"patients": 2}}],
            **extra,
        }
    )


@pytest.fixture
def server() -> RunningServer:
    with serve_in_thread(frozen()) as running:
        yield running


def test_http_entries_carry_request_response_and_context(server: RunningServer) -> None:
    admin = AdminClient(server.origin)
    with httpx.Client(base_url=server.fhir_base, timeout=5) as fhir:
        created = fhir.post("/Observation", json=observation("p1", 72), headers={"x-request-id": "abc-1"})
        assert created.status_code == 201
        fhir.get("/Observation?_count=1")
    create, search = admin.journal(path="/Observation*")
    assert create["correlation_id"] == "abc-1" and created.headers["x-correlation-id"] == "abc-1"
    assert (create["protocol"], create["kind"], create["site"]) == ("fhir", "http", "default")
    assert (create["method"], create["resource_type"], create["interaction"], create["status"]) == (
        "POST",
        "Observation",
        "create",
        201,
    )
    assert create["client_id"] == "127.0.0.1"
    assert create["request_bytes"] == len(orjson.dumps(observation("p1", 72)))
    assert create["response_bytes"] == len(created.content)
    assert create["duration_ms"] > 0
    assert create["time"] == "2026-03-02T08:00:00.000Z" and create["sim"] == 0
    assert create["response_headers"]["location"] == created.headers["location"]
    assert orjson.loads(create["request_body"])["valueQuantity"]["value"] == 72  # writes keep bodies
    assert (search["interaction"], search["query"]) == ("search", "_count=1")
    assert "request_body" not in search  # reads do not, by default


def test_each_request_can_be_logged_as_one_json_line(server: RunningServer) -> None:
    import logging

    from simulator.logformat import JsonFormatter

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))

    logger = logging.getLogger("ehrsim.requests")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        response = httpx.get(server.fhir_base + "/Nope", headers={"x-request-id": "log-1"})
        for _ in range(200):  # logged just after the response is sent, on the server's thread
            if any("log-1" in text for text in lines):
                break
            time.sleep(0.01)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (line,) = [orjson.loads(text) for text in lines if "log-1" in text]
    assert response.status_code == 404
    assert (line["site"], line["status"], line["correlation_id"], line["level"]) == (
        "default",
        404,
        "log-1",
        "info",
    )
    assert line["message"].startswith("GET /fhir/Nope 404") and line["duration_ms"] > 0


def test_http_entries_are_not_tracked_by_the_garbage_collector(server: RunningServer) -> None:
    """Entries hold only atomic values and tuples, so a full journal adds no GC traversal cost."""
    import gc

    with httpx.Client(base_url=server.fhir_base, timeout=5) as fhir:
        fhir.post("/Observation", json=observation("p1", 70), headers={"prefer": "return=minimal"})
        fhir.get("/Observation?_count=1")
    entries = AdminClient(server.origin).journal()  # also waits until both are recorded
    assert len(entries) == 2 and entries[0]["request_headers"]["prefer"] == "return=minimal"
    # CPython untracks dicts in full collections, after the tuples they hold: two passes.
    gc.collect()
    gc.collect()
    assert [gc.is_tracked(e) for e in server.sandbox.journal] == [False, False]


def test_journal_can_be_switched_off() -> None:
    with serve_in_thread(frozen(journal={"enabled": False})) as server:
        assert httpx.get(server.fhir_base + "/Patient").status_code == 200
        assert AdminClient(server.origin).journal_stats()["size"] == 0
    with serve_in_thread(frozen(), options={"journal": False}) as server:
        httpx.get(server.fhir_base + "/Patient")
        assert len(server.sandbox.journal) == 0


def test_ring_buffer_counts_what_it_drops_and_spills_when_configured(tmp_path) -> None:
    journal = Journal(capacity=3)
    for i in range(5):
        journal.record({"n": i})
    assert [e["n"] for e in journal] == [2, 3, 4] and journal.dropped == 2
    spill = tmp_path / "spill.ndjson"
    spilling = Journal(capacity=2, spill_path=spill, clock=Clock(None, 0))
    for i in range(5):
        spilling.record({"n": i})
    spilling.close()
    lines = [orjson.loads(line) for line in spill.read_bytes().splitlines()]
    assert [e["n"] for e in lines] == [0, 1, 2] and spilling.spilled == 3 and spilling.dropped == 0
    assert all("time" in e for e in lines)


def test_dropped_entries_are_reported_by_the_admin_api() -> None:
    with serve_in_thread(frozen(journal={"capacity": 2})) as server:
        for _ in range(4):
            httpx.get(server.fhir_base + "/Patient?_count=1")
        admin = AdminClient(server.origin)
        stats = admin.journal_stats()
        assert (stats["size"], stats["dropped"]) == (2, 2)
        assert admin.verify("count", filter={}, at_least=0)["dropped"] == 2
        assert "ehrsim_journal_dropped_total 2" in admin.metrics()


def test_query_filters_and_ndjson_export(server: RunningServer) -> None:
    admin = AdminClient(server.origin)
    with httpx.Client(base_url=server.fhir_base, timeout=5) as fhir:
        fhir.get("/Patient?_count=1")
        fhir.get("/Nope")
        server.sandbox.clock.advance(30)
        fhir.post("/Observation", json=observation("p1", 80))
    assert [e["status"] for e in admin.journal(status="4xx")] == [404]
    assert [e["method"] for e in admin.journal(since=10)] == ["POST"]
    assert [e["method"] for e in admin.journal(until=10)] == ["GET", "GET"]
    assert [e["method"] for e in admin.journal(since="2026-03-02T08:00:10Z")] == ["POST"]
    assert len(admin.journal(resource_type="Obs*", method="POST")) == 1
    assert len(admin.journal(limit=1, offset=1)) == 1
    exported = admin.export(status="200,201")
    assert [e["status"] for e in exported] == [200, 201]
    assert exported[1]["time"] == "2026-03-02T08:00:30.000Z"
    with pytest.raises(AdminError, match="unknown journal filter"):
        admin.journal(colour="red")
    with pytest.raises(AdminError, match="neither simulated seconds"):
        admin.journal(since="yesterday")
    with pytest.raises(AdminError, match="not a status code"):
        admin.journal(status="teapot")


def test_verify_count_order_duplicates(server: RunningServer) -> None:
    admin = AdminClient(server.origin)
    with httpx.Client(base_url=server.fhir_base, timeout=5) as fhir:
        fhir.get("/Patient?_count=1")
        fhir.post("/Observation", json=observation("p1", 60))
        fhir.post("/Observation", json=observation("p1", 60))  # the same device reading twice
        fhir.post("/Observation", json=observation("p1", 61))
    assert admin.verify("count", filter={"method": "POST"}, exactly=3)["ok"]
    failed = admin.verify("count", filter={"method": "POST"}, at_most=2)
    assert (failed["ok"], failed["count"]) == (False, 3)
    assert admin.verify("order", sequence=[{"method": "GET"}, {"method": "POST"}])["ok"]
    wrong = admin.verify("order", sequence=[{"method": "POST"}, {"method": "GET"}])
    assert (wrong["ok"], wrong["missing_step"]) == (False, 1)
    dupes = admin.verify("duplicates", filter={"interaction": "create"}, key="identifier")
    assert not dupes["ok"]
    assert list(dupes["duplicates"]) == ["Observation:urn:device|hr-60"]
    with pytest.raises(VerificationFailed, match="duplicates"):
        admin.expect("duplicates", filter={"interaction": "create"}, key="identifier")
    assert admin.expect("duplicates", filter={"interaction": "create"}, key="correlation_id")["ok"]


def test_verify_gaps_backoff_and_retry_after() -> None:
    journal = Journal(clock=Clock(None, 0))
    for sim, retry in ((0, "2"), (1, "2"), (4, "2"), (10, None)):
        entry = {"method": "GET", "path": "/Patient", "status": 429 if retry else 200, "sim": sim}
        if retry:
            entry["response_headers"] = (("retry-after", retry),)
        journal.record(entry)
    gaps = verify(journal, {"check": "gaps", "filter": {"path": "/Patient"}, "backoff": 2})
    assert gaps["gaps"] == [1, 3, 6] and gaps["ok"]
    assert not verify(journal, {"check": "gaps", "filter": {}, "min_gap": 2})["ok"]
    retry = verify(journal, {"check": "retry_after", "filter": {"path": "/Patient"}})
    assert not retry["ok"]
    assert retry["violations"] == [{"seq": 2, "after_seq": 1, "early_by": 1.0}]


def test_verify_requests_during_an_outage_window() -> None:
    scenario = frozen(
        faults=[
            {
                "id": "down",
                "match": {"protocol": "fhir"},
                "schedule": {"after": "1m", "for": "1m"},
                "action": {"type": "outage"},
            }
        ]
    )
    with serve_in_thread(scenario) as server, httpx.Client(base_url=server.fhir_base) as fhir:
        admin = AdminClient(server.origin)
        fhir.get("/Patient?_count=1")
        admin.advance("90s")
        assert fhir.get("/Patient?_count=1").status_code == 503
        assert fhir.get("/Patient?_count=1").status_code == 503
        admin.advance("1m")
        fhir.get("/Patient?_count=1")
        during = admin.verify("during", fault="down", filter={"path": "/Patient"}, at_most=1)
        assert (during["ok"], during["count"]) == (False, 2)
        assert admin.verify("during", window={"from": 0, "to": 60}, filter={}, exactly=1)["ok"]
        with pytest.raises(AdminError, match="no fault with id"):
            admin.verify("during", fault="nope")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"check": "sing"}, "must be one of"),
        ({"check": "order"}, "non-empty 'sequence'"),
        ({"check": "duplicates"}, "needs a 'key'"),
        ({"check": "count", "filter": {"colour": "red"}}, "unknown filter"),
        ({"check": "count", "clock": "sundial"}, "clock must be"),
        ({"check": "during"}, "needs 'fault'"),
    ],
)
def test_bad_verification_requests_say_what_to_change(spec: dict, message: str) -> None:
    with pytest.raises(VerifyError, match=message):
        verify(Journal(), spec)


def scripted_run() -> list[dict]:
    """A scripted client against a scenario with probabilistic faults; the journal minus wall time."""
    scenario = frozen(
        faults=[
            {
                "id": "flaky",
                "match": {"method": "GET"},
                "probability": 0.4,
                "action": {"type": "status", "status": 500},
            },
            {
                "id": "slow",
                "probability": 0.5,
                "action": {"type": "latency", "delay": {"uniform": ["1ms", "5ms"]}},
            },
        ]
    )
    with serve_in_thread(scenario) as server, httpx.Client(base_url=server.fhir_base) as fhir:
        ids = []
        for i in range(6):
            created = fhir.post("/Observation", json=observation("p1", i))
            ids.append(created.json()["id"] if created.status_code == 201 else None)
            fhir.get(f"/Observation/{ids[-1]}")
        entries = AdminClient(server.origin).export()
        origin = server.origin  # the free port differs between runs
    wall = {"monotonic", "duration_ms"}
    text = orjson.dumps([{k: v for k, v in e.items() if k not in wall} for e in entries])
    return orjson.loads(text.replace(origin.encode(), b"ORIGIN"))


def test_same_scenario_seed_and_requests_give_the_same_journal() -> None:
    first, second = scripted_run(), scripted_run()
    assert first == second
    assert any(e["faults"] for e in first) and any(not e["faults"] for e in first)
    assert any(e["status"] == 500 for e in first)
