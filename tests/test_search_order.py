"""Search results without `_sort` come in the order of each resource's last write.

Pins the behaviour of the index path (`SearchEngine.ids` ordering a few candidates out of many), which
is sorted by version `seq` rather than by a position map of the whole type, for speed.
"""

from __future__ import annotations

import httpx

from simulator.testing import RunningServer


def _observation(patient: str, code: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def test_unsorted_search_follows_last_write(fresh_server: RunningServer) -> None:
    with httpx.Client(base_url=fresh_server.fhir_base, timeout=10) as fhir:
        created = []
        for code in ("8867-4", "8867-4", "9279-1", "8867-4"):
            response = fhir.post("/Observation", json=_observation("order-1", code))
            assert response.status_code == 201, response.text
            created.append(response.json())
        first = created[0]
        updated = fhir.put(f"/Observation/{first['id']}", json={**first, "status": "amended"})
        assert updated.status_code == 200, updated.text
        deleted = fhir.delete(f"/Observation/{created[1]['id']}")
        assert deleted.status_code == 200

        found = fhir.get("/Observation", params={"patient": "order-1", "code": "http://loinc.org|8867-4"})
        assert found.status_code == 200
        ids = [e["resource"]["id"] for e in found.json().get("entry", [])]
        assert ids == [created[3]["id"], first["id"]]

        either = fhir.get("/Observation", params={"subject": "Patient/order-1", "code": "8867-4,9279-1"})
        ids = [e["resource"]["id"] for e in either.json().get("entry", [])]
        assert ids == [created[2]["id"], created[3]["id"], first["id"]]
