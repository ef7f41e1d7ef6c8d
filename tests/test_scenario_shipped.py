"""The shipped scenarios, driven by a real HTTP client; asserts on responses and on the journal.
(`rate-limited` is driven in test_ratelimit.py.)"""

from __future__ import annotations

import httpx
import pytest

from simulator.admin_client import AdminClient
from simulator.integration_env import integration_env
from simulator.mllp.feeds import FeedSpec
from simulator.scenario import load_scenario
from simulator.testing import RunningServer, heart_rate, serve_in_thread
from tests.mllp_support import IntegrationListener


def serve_frozen(name: str) -> RunningServer:
    """The scenario with its clock frozen at the start, so the test alone moves time."""
    context = serve_in_thread(name)
    server = context.__enter__()
    server.sandbox.clock.speed = 0
    server.sandbox.clock.reset()
    server._context = context  # type: ignore[attr-defined]
    return server


@pytest.fixture
def outage() -> RunningServer:
    server = serve_frozen("outage")
    yield server
    server._context.__exit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture
def batch() -> RunningServer:
    server = serve_frozen("batch-latency")
    yield server
    server._context.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_outage_answers_503_only_inside_the_window(outage: RunningServer) -> None:
    admin = AdminClient(outage.origin)
    with httpx.Client(base_url=outage.fhir_base, timeout=5) as fhir:
        assert fhir.get("/Patient?_count=1").status_code == 200
        admin.advance("30m")
        down = fhir.get("/Patient?_count=1")
        assert down.status_code == 503
        assert down.headers["retry-after"] == "900"  # the rest of the 15-minute window
        assert down.json()["issue"][0]["code"] == "transient"
        admin.advance("14m")
        assert fhir.get("/Patient?_count=1").headers["retry-after"] == "60"
        admin.advance("1m")
        assert fhir.get("/Patient?_count=1").status_code == 200
        admin.advance("2h15m")  # 3 h in: the hard outage resets connections
        with pytest.raises(httpx.TransportError):
            fhir.get("/Patient?_count=1")
        admin.advance("10m")
        assert fhir.get("/Patient?_count=1").status_code == 200
        admin.advance("3h20m")  # 6 h 30 min in: the maintenance window again
        assert fhir.get("/Patient?_count=1").status_code == 503
    statuses = [e["status"] for e in admin.journal(path="/Patient")]
    assert statuses == [200, 503, 503, 200, None, 200, 503]
    during = admin.verify("during", fault="maintenance", filter={"path": "/Patient"})
    assert during["count"] == 3
    assert {f["id"]: f["hits"] for f in admin.faults()} == {"maintenance": 3, "hard-down": 1}


def test_batch_latency_hides_writes_until_the_batch_boundary(batch: RunningServer) -> None:
    admin = AdminClient(batch.origin)
    patient = {"resourceType": "Patient", "name": [{"family": "Latency", "given": ["Lou"]}]}
    with httpx.Client(base_url=batch.fhir_base, timeout=5) as fhir:
        created = fhir.post("/Patient", json=patient)
        assert created.status_code == 201  # acknowledged at once
        pid = created.json()["id"]
        assert fhir.get(f"/Patient/{pid}").status_code == 404
        assert fhir.get("/Patient", params={"_id": pid}).json()["total"] == 0
        admin.advance("39m")  # 08:59
        assert fhir.get(f"/Patient/{pid}").status_code == 404
        admin.advance("1m")  # 09:00: the hourly batch ran
        assert fhir.get(f"/Patient/{pid}").json()["name"][0]["family"] == "Latency"
        assert fhir.get("/Patient", params={"_id": pid}).json()["total"] == 1
        admin.advance("1m")  # 09:01: this update waits for the 10:00 batch
        updated = fhir.put(f"/Patient/{pid}", json={**patient, "id": pid, "name": [{"family": "Later"}]})
        assert updated.status_code == 200
        assert (
            fhir.get(f"/Patient/{pid}").json()["name"][0]["family"] == "Latency"
        )  # the last visible version
        assert fhir.get(f"/Patient/{pid}/_history/2").status_code == 404
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{pid}"},
        }
        oid = fhir.post("/Observation", json=observation).json()["id"]
        admin.advance("4m58s")
        assert fhir.get(f"/Observation/{oid}").status_code == 404
        # Observations: 5 minutes, not the hourly batch. (With the clock frozen, writes are stamped a
        # millisecond apart to keep lastUpdated strictly increasing, so allow a second.)
        admin.advance("3s")
        assert fhir.get(f"/Observation/{oid}").status_code == 200
        assert fhir.get(f"/Patient/{pid}").json()["name"][0]["family"] == "Latency"  # still before 10:00
    reads = admin.journal(method="GET", path=f"/Patient/{pid}")
    assert [e["status"] for e in reads] == [404, 404, 200, 200, 200]


def test_device_writes_keeps_a_lean_journal() -> None:
    with (
        serve_in_thread("device-writes") as server,
        httpx.Client(base_url=server.fhir_base, timeout=5) as fhir,
    ):
        patients = fhir.get("/Patient?_count=3").json()["entry"]
        for i in range(30):
            vital = heart_rate(f"Patient/{patients[i % 3]['resource']['id']}", value=70)
            assert fhir.post("/Observation", json=vital).status_code == 201
        admin = AdminClient(server.origin)
        assert admin.expect("count", filter={"method": "POST", "status": "201"}, exactly=30)
        entries = admin.journal(method="POST")
        assert all("request_body" not in e and e["request_bytes"] > 0 for e in entries)
        stats = admin.journal_stats()
        assert (stats["capacity"], stats["bodies"], stats["dropped"]) == (1_000_000, "none", 0)


def test_default_scenario_journals_everything_with_no_faults() -> None:
    with serve_in_thread("default") as server:
        httpx.get(server.fhir_base + "/Patient?_count=2")
        httpx.get(server.fhir_base + "/Observation/unknown-id")
        admin = AdminClient(server.origin)
        assert [e["status"] for e in admin.journal()] == [200, 404]
        assert admin.faults() == [] and admin.rate_limits() == []


def test_hl7_feeds_pushes_every_kind_to_the_listen_port(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = IntegrationListener()
    monkeypatch.setenv("EHRSIM_LISTEN_PORT", str(listener.port))
    scenario = load_scenario("hl7-feeds")
    scenario.clock_speed = 1000.0  # 2 simulated seconds between messages: 2 ms here
    try:
        with serve_in_thread(scenario) as server:
            listener.wait_for(120)
            env = integration_env(AdminClient(server.origin))
            acks = [
                e for e in server.sandbox.journal if e.get("protocol") == "outbound" and e["kind"] == "ack"
            ]
    finally:
        listener.close()
    assert env["EHRSIM_LISTEN_PORT"] == str(listener.port)
    kinds = {
        payload.replace(b"\n", b"\r").split(b"\r")[0].split(b"|")[8].split(b"^")[0]
        for payload in listener.received
    }
    assert kinds == {b"ADT", b"ORU", b"SIU", b"MDM", b"VXU"}, kinds
    assert acks and all(e["outcome"] == "accepted" for e in acks)


@pytest.mark.parametrize(
    ("environment", "port"),
    [({}, 2576), ({"EHRSIM_LISTEN_PORT": ""}, 2576), ({"EHRSIM_LISTEN_PORT": "7001"}, 7001)],
)
def test_feed_targets_take_a_default_port(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], port: int
) -> None:
    monkeypatch.delenv("EHRSIM_LISTEN_PORT", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    spec = FeedSpec.from_mapping({"name": "f", "target": "127.0.0.1:${EHRSIM_LISTEN_PORT:-2576}"}, "feed")
    assert (spec.host, spec.port) == ("127.0.0.1", port)
    with pytest.raises(
        ValueError, match=r"feed.target must be host:port .*not '127.0.0.1:\$NOT_SET_ANYWHERE'"
    ):
        FeedSpec.from_mapping({"name": "f", "target": "127.0.0.1:$NOT_SET_ANYWHERE"}, "feed")
