"""The SQLite store survives a restart with every version and its history; concurrent writes are kept."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx

from simulator.testing import serve_in_thread
from tests.builders import create, observation, patient


def test_sqlite_survives_restart(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'site.db'}"
    with serve_in_thread("default", store=store) as first:
        client = httpx.Client(base_url=first.fhir_base)
        population = client.get("/Patient", params={"_summary": "count"}).json()["total"]
        made = create(client, patient(given="V1"))
        rid = made["id"]
        client.put(f"/Patient/{rid}", json={**made, "name": [{"family": "Second", "given": ["V2"]}]})
        doomed = create(client, patient())
        client.delete(f"/Patient/{doomed['id']}")
        history_before = client.get(f"/Patient/{rid}/_history").json()
        ids_before = {
            e["resource"]["id"] for e in client.get("/Patient", params={"_count": 1000}).json()["entry"]
        }
    with serve_in_thread("default", store=store) as second:
        client = httpx.Client(base_url=second.fhir_base)
        # The population is not loaded again on top of the stored data.
        assert client.get("/Patient", params={"_summary": "count"}).json()["total"] == population + 1
        current = client.get(f"/Patient/{rid}")
        assert current.headers["etag"] == 'W/"2"'
        assert current.json()["name"][0]["family"] == "Second"
        assert client.get(f"/Patient/{rid}/_history/1").json()["name"][0]["given"] == ["V1"]
        history_after = client.get(f"/Patient/{rid}/_history").json()
        assert [e["response"] for e in history_after["entry"]] == [
            e["response"] for e in history_before["entry"]
        ]
        assert client.get(f"/Patient/{doomed['id']}").status_code == 410
        assert client.get("/Patient", params={"family": "Second"}).json()["total"] >= 1
        # New ids continue the sequence instead of colliding with stored ones.
        fresh = create(client, patient())
        assert fresh["id"] not in ids_before | {doomed["id"]}


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'busy.db'}"
    with serve_in_thread("default", store=store) as running:
        pat = create(httpx.Client(base_url=running.fhir_base), patient())

        def writer(n: int) -> list[str]:
            with httpx.Client(base_url=running.fhir_base) as client:
                return [create(client, observation(pat["id"], value=n * 100 + i))["id"] for i in range(25)]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            written = [rid for ids in pool.map(writer, range(8)) for rid in ids]
    assert len(set(written)) == 200
    with serve_in_thread("default", store=store) as again:
        client = httpx.Client(base_url=again.fhir_base)
        found = client.get("/Observation", params={"patient": pat["id"], "_count": 1000}).json()
        assert found["total"] == 200
        assert {e["resource"]["id"] for e in found["entry"]} == set(written)


def test_store_option_errors() -> None:
    from simulator.store import open_store

    for bad in ("sqlite:", "postgres://x", "mem"):
        try:
            open_store(bad)
        except ValueError as exc:
            assert "store" in str(exc) or "sqlite" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
