"""Rate limits over real HTTP: token buckets per client, per route, daily quota, batch entries."""

from __future__ import annotations

import httpx
import pytest

from simulator.admin_client import AdminClient
from simulator.ratelimit import parse_rate
from simulator.scenario import build_scenario
from simulator.testing import RunningServer, serve_in_thread


@pytest.fixture
def limited() -> RunningServer:
    with serve_in_thread("rate-limited") as running:
        running.sandbox.clock.speed = 0  # frozen: refills happen only when the test advances the clock
        yield running


def client_from(address: str, server: RunningServer) -> httpx.Client:
    """A client whose source address is `address` (any 127.x.y.z works on Linux loopback)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.fhir_base, transport=transport, timeout=5)


def test_a_burst_gets_429_with_retry_after_and_a_client_that_waits_is_served(limited: RunningServer) -> None:
    admin = AdminClient(limited.origin)
    with httpx.Client(base_url=limited.fhir_base, timeout=5) as fhir:
        statuses = [fhir.get("/Patient?_count=1").status_code for _ in range(12)]
        assert statuses == [200] * 10 + [429, 429]
        refused = fhir.get("/Patient?_count=1")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"  # 5/s: one token in 0.2 s, rounded up
        outcome = refused.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "throttled"
        admin.advance(1)  # the client waits as told
        assert fhir.get("/Patient?_count=1").status_code == 200
    state = {limit["id"]: limit for limit in admin.rate_limits()}
    assert state["per-client"]["rejected"] == 3
    assert state["per-client"]["buckets"]["default:127.0.0.1"]["used_today"] == 11
    entries = admin.journal(status="429")
    assert len(entries) == 3
    assert (entries[0]["outcome"], entries[0]["retry_after"]) == ("rate_limited", 1)
    assert entries[0]["response_headers"]["retry-after"] == "1"
    assert 'ehrsim_rate_limit_rejections_total{limit="per-client"} 3' in admin.metrics()


def test_buckets_are_per_client(limited: RunningServer) -> None:
    with client_from("127.0.0.2", limited) as first, client_from("127.0.0.3", limited) as second:
        assert [first.get("/Patient?_count=1").status_code for _ in range(11)][-1] == 429
        assert second.get("/Patient?_count=1").status_code == 200
    buckets = {limit["id"]: limit for limit in AdminClient(limited.origin).rate_limits()}["per-client"][
        "buckets"
    ]
    assert set(buckets) == {"default:127.0.0.2", "default:127.0.0.3"}


def test_a_route_limit_is_tighter_than_the_client_limit(limited: RunningServer) -> None:
    with httpx.Client(base_url=limited.fhir_base, timeout=5) as fhir:
        searches = [fhir.get("/Observation?_count=1").status_code for _ in range(4)]
        assert searches == [200, 200, 200, 429]
        assert "observation-search" in fhir.get("/Observation?_count=1").json()["issue"][0]["diagnostics"]
        # refused searches cost nothing: 3 of the client's 10 tokens are gone, 7 are left
        assert [fhir.get("/Patient?_count=1").status_code for _ in range(8)] == [200] * 7 + [429]


def test_daily_quota_resets_at_simulated_midnight() -> None:
    scenario = build_scenario(
        {
            "seed": 1,
            "clock": {"start": "2026-03-02T23:00:00Z", "speed": 0},
            "sites": [{"id": "default", "base_path": "/fhir", "population": {"patients": 1}}],
            "rate_limits": [{"id": "quota", "rate": 100, "burst": 100, "daily_quota": 3}],
        }
    )
    with serve_in_thread(scenario) as server, httpx.Client(base_url=server.fhir_base) as fhir:
        assert [fhir.get("/Patient?_count=1").status_code for _ in range(4)] == [200, 200, 200, 429]
        refused = fhir.get("/Patient?_count=1")
        assert int(refused.headers["retry-after"]) == 3600  # until midnight, simulated
        server.sandbox.clock.advance(3600)
        assert fhir.get("/Patient?_count=1").status_code == 200


def test_batch_entries_past_the_limit_get_their_own_429(limited: RunningServer) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient?_count=1"}} for _ in range(12)],
    }
    with httpx.Client(base_url=limited.fhir_base, timeout=5) as fhir:
        response = fhir.post("", json=bundle)
        assert response.status_code == 200
        statuses = [e["response"]["status"] for e in response.json()["entry"]]
        assert statuses == ["200 OK"] * 10 + ["429 Too Many Requests"] * 2
        transaction = {**bundle, "type": "transaction", "entry": bundle["entry"][:2]}
        refused = fhir.post("", json=transaction)
        assert refused.status_code == 429  # all or nothing
        assert refused.headers["retry-after"] == "1"
    entries = AdminClient(limited.origin).journal(interaction="batch")
    assert [e.get("rate_limited_entries") for e in entries] == [2, 2]


def test_reset_refills_the_buckets(limited: RunningServer) -> None:
    admin = AdminClient(limited.origin)
    with httpx.Client(base_url=limited.fhir_base, timeout=5) as fhir:
        for _ in range(11):
            fhir.get("/Patient?_count=1")
        admin.reset()
        limited.sandbox.clock.speed = 0
        assert fhir.get("/Patient?_count=1").status_code == 200
    assert admin.rate_limits()[0]["rejected"] == 0


@pytest.mark.parametrize(("text", "per_second"), [(5, 5.0), ("5/s", 5.0), ("300/min", 5.0), ("3600/h", 1.0)])
def test_rate_syntax(text: object, per_second: float) -> None:
    assert parse_rate(text) == per_second


@pytest.mark.parametrize("text", ["fast", "0/s", -1, "5/fortnight"])
def test_bad_rates_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate(text)
