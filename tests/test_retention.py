"""Retention (`settings.retention`): a site keeps at most N live resources of a type, so a long
load test does not grow the store without bound. Over real HTTP and MLLP, on both stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.sandbox import Sandbox
from simulator.scenario import ScenarioError, build_scenario
from simulator.store.base import Write
from simulator.store.memory import MemoryStore
from simulator.testing import heart_rate, serve_in_thread
from tests.mllp_support import adt, client, oru

LIMIT = 10


def scenario(retention: dict[str, Any], mllp: bool = False) -> Any:
    site: dict[str, Any] = {
        "id": "h1",
        "base_path": "/fhir",
        "population": {"patients": 1},
        "settings": {"retention": retention},
    }
    if not mllp:
        site["mllp"] = {"enabled": False}
    return build_scenario({"name": "retention", "seed": 3, "sites": [site]})


def count(base: str, rtype: str) -> int:
    return httpx.get(f"{base}/{rtype}", params={"_summary": "count"}).json()["total"]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_past_the_limit_the_least_recently_written_are_expunged(store: str, tmp_path: Path) -> None:
    where = "memory" if store == "memory" else f"sqlite:{tmp_path / 'store.db'}"
    with serve_in_thread(scenario({"Observation": LIMIT}), store=where) as server:
        base = server.fhir_base
        assert count(base, "Observation") <= LIMIT  # the population's own were trimmed at load
        created = []
        for n in range(30):
            body = heart_rate("Patient/example", when=f"2026-01-01T00:{n:02d}:00Z")
            response = httpx.post(f"{base}/Observation", json=body)
            assert response.status_code == 201, response.text
            created.append(response.json()["id"])
            assert count(base, "Observation") <= LIMIT
        kept = {e["resource"]["id"] for e in httpx.get(f"{base}/Observation?_count=100").json()["entry"]}
        assert set(created[-(LIMIT - LIMIT // 100) :]) <= kept  # the newest are always there
        assert httpx.get(f"{base}/Observation/{created[0]}").status_code == 404  # never written, now
        history = httpx.get(f"{base}/Observation/_history?_count=1000").json()
        assert {e["resource"]["id"] for e in history["entry"] if "resource" in e} == kept
        entries = [e for e in server.sandbox.journal if e.get("kind") == "retention"]
        assert entries and all(e["resource_type"] == "Observation" and e["limit"] == LIMIT for e in entries)
        assert count(base, "Patient") == 1  # other types are not limited


def test_sqlite_restart_replays_only_what_was_kept_and_keeps_writing(tmp_path: Path) -> None:
    path = f"sqlite:{tmp_path / 'store.db'}"
    first = Sandbox(scenario({"Observation": LIMIT}), store=path, service_factories=[])
    service = first.sites["h1"].service
    for n in range(25):
        service.create("Observation", heart_rate("Patient/example", when=f"2026-01-01T01:{n:02d}:00Z"))
    kept = set(first.sites["h1"].site.store.current("Observation"))
    first.close()
    again = Sandbox(scenario({"Observation": LIMIT}), store=path, service_factories=[])
    store = again.sites["h1"].site.store
    assert set(store.current("Observation")) == kept
    created = again.sites["h1"].service.create("Observation", heart_rate("Patient/example"))
    assert created.status == 201  # a fresh seq: no clash with the rows on disk
    assert created.version is not None and created.version.seq > max(
        v.seq for v in store if v.id != created.version.id
    )
    again.close()


def test_identifier_indexes_forget_expunged_patients(tmp_path: Path) -> None:
    """ADT creates patients past a Patient limit; a result for an expunged patient then creates a
    new patient rather than pointing at one that no longer exists."""
    with serve_in_thread(scenario({"Patient": 3}, mllp=True)) as server:
        port = server.sandbox.sites["h1"].site.extras["mllp_port"]
        with client(port) as c:
            for n in range(6):
                assert b"MSA|AA|" in c.send(adt("A04", f"R-A{n}", mrn=f"RET{n}", visit=f"RV{n}"))
            ack = c.send(oru("R-O1", mrn="RET0"))
        assert b"MSA|AA|" in ack
        entry = next(e for e in server.sandbox.journal if e.get("control_id") == "R-O1")
        observation = next(ref for ref in entry["written"] if ref.startswith("Observation/"))
        subject = httpx.get(f"{server.fhir_base}/{observation}").json()["subject"]["reference"]
        patient = httpx.get(f"{server.fhir_base}/{subject}")
        assert patient.status_code == 200
        assert any(i["value"] == "RET0" for i in patient.json()["identifier"])


def test_expunge_keeps_history_order_and_compacts_the_log() -> None:
    store = MemoryStore()
    for n in range(100):
        store.commit(
            [Write("Basic", f"b{n}", {"code": {"text": str(n)}}, "PUT")], "2026-01-01T00:00:00.000Z", n
        )
    assert store.expunge("Basic", [f"b{n}" for n in range(0, 60)]) == 60
    assert [v.id for v in reversed(store.history("Basic"))] == [f"b{n}" for n in range(60, 100)]
    assert len(store._log) == 40  # compacted once more than half of it was expunged
    later = store.commit([Write("Basic", "b200", {}, "PUT")], "2026-01-01T00:00:00.000Z", 200)
    assert later[0].seq == 101  # seq keeps counting past what was expunged


@pytest.mark.parametrize(
    "bad", [{"Observation": 0}, {"Observation": "many"}, {"Observation": True}, ["Observation"]]
)
def test_bad_retention_settings_stop_the_scenario(bad: Any) -> None:
    with pytest.raises((ScenarioError, ValueError), match="retention"):
        Sandbox(scenario(bad), service_factories=[])
