"""Read, vread, create, update, delete and history over HTTP, with their headers."""

from __future__ import annotations

import httpx

from tests.builders import create, observation, patient, unique

FHIR_JSON = "application/fhir+json; charset=utf-8"


def test_create_assigns_id_version_and_headers(fhir: httpx.Client) -> None:
    body = patient()
    body["id"] = "client-chosen"
    body["meta"] = {"versionId": "99", "lastUpdated": "1999-01-01T00:00:00Z"}
    response = fhir.post("/Patient", json=body)
    assert response.status_code == 201
    created = response.json()
    assert created["id"] != "client-chosen"  # create ignores the client's id
    assert created["meta"]["versionId"] == "1"
    assert created["meta"]["lastUpdated"] != "1999-01-01T00:00:00Z"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith(f"/Patient/{created['id']}/_history/1")
    assert response.headers["content-type"] == FHIR_JSON
    assert response.headers["last-modified"].endswith("GMT")


def test_read_vread_and_not_modified(fhir: httpx.Client) -> None:
    created = create(fhir, patient())
    rid = created["id"]
    read = fhir.get(f"/Patient/{rid}")
    assert read.status_code == 200
    assert read.json() == created
    assert read.headers["etag"] == 'W/"1"'
    assert fhir.get(f"/Patient/{rid}/_history/1").json() == created
    assert fhir.get(f"/Patient/{rid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    missing = fhir.get(f"/Patient/{rid}/_history/7")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_update_versions_and_if_match(fhir: httpx.Client) -> None:
    created = create(fhir, patient(given="Before"))
    rid = created["id"]
    created["name"][0]["given"] = ["After"]
    ok = fhir.put(f"/Patient/{rid}", json=created, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert ok.json()["meta"]["versionId"] == "2"
    assert ok.headers["etag"] == 'W/"2"'
    stale = fhir.put(f"/Patient/{rid}", json=created, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    assert fhir.get(f"/Patient/{rid}").json()["name"][0]["given"] == ["After"]
    assert fhir.get(f"/Patient/{rid}/_history/1").json()["name"][0]["given"] == ["Before"]


def test_update_creates_when_absent_and_checks_ids(fhir: httpx.Client) -> None:
    rid = unique("pt-")
    body = patient()
    body["id"] = rid
    created = fhir.put(f"/Patient/{rid}", json=body)
    assert created.status_code == 201
    assert created.json()["id"] == rid
    assert created.headers["location"].endswith(f"/Patient/{rid}/_history/1")
    body["id"] = "other"
    mismatch = fhir.put(f"/Patient/{rid}", json=body)
    assert mismatch.status_code == 400
    assert "does not match" in mismatch.json()["issue"][0]["diagnostics"]
    del body["id"]
    assert fhir.put(f"/Patient/{rid}", json=body).status_code == 400
    bad_id = fhir.put("/Patient/" + "x" * 65, json={**body, "id": "x" * 65})
    assert bad_id.status_code == 400


def test_delete_then_gone_then_recreate(fhir: httpx.Client) -> None:
    created = create(fhir, patient())
    rid = created["id"]
    deleted = fhir.delete(f"/Patient/{rid}")
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"
    gone = fhir.get(f"/Patient/{rid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert fhir.delete(f"/Patient/{rid}").status_code == 204  # idempotent
    assert fhir.get(f"/Patient/{rid}/_history/1").status_code == 200
    assert fhir.get(f"/Patient/{rid}/_history/2").status_code == 410
    revived = fhir.put(f"/Patient/{rid}", json={**patient(), "id": rid})
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"
    assert fhir.delete("/Patient/never-existed").status_code == 404


def test_conditional_create(fhir: httpx.Client) -> None:
    system, value = "urn:test:mrn", unique()
    body = patient(identifier=[{"system": system, "value": value}])
    condition = {"If-None-Exist": f"identifier={system}|{value}"}
    first = fhir.post("/Patient", json=body, headers=condition)
    assert first.status_code == 201
    again = fhir.post("/Patient", json=body, headers=condition)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    # A second matching record makes the condition ambiguous: 412.
    create(fhir, body)
    assert fhir.post("/Patient", json=body, headers=condition).status_code == 412


def test_conditional_update_and_delete(fhir: httpx.Client) -> None:
    value = unique()
    body = patient(identifier=[{"system": "urn:test:cu", "value": value}])
    made = fhir.put(f"/Patient?identifier=urn:test:cu|{value}", json=body)
    assert made.status_code == 201
    rid = made.json()["id"]
    body["gender"] = "male"
    updated = fhir.put(f"/Patient?identifier=urn:test:cu|{value}", json=body)
    assert updated.status_code == 200
    assert updated.json()["id"] == rid
    assert updated.json()["gender"] == "male"
    assert fhir.delete(f"/Patient?identifier=urn:test:cu|{value}").status_code == 200
    assert fhir.get(f"/Patient/{rid}").status_code == 410


def test_prefer_return(fhir: httpx.Client) -> None:
    minimal = fhir.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]
    outcome = fhir.post("/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    full = fhir.post("/Patient", json=patient(), headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"


def test_history_instance_type_system(fhir: httpx.Client) -> None:
    created = create(fhir, patient())
    rid = created["id"]
    fhir.put(f"/Patient/{rid}", json={**created, "gender": "male"})
    fhir.delete(f"/Patient/{rid}")
    history = fhir.get(f"/Patient/{rid}/_history").json()
    assert history["type"] == "history"
    assert history["total"] == 3
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]  # newest first
    assert "resource" not in history["entry"][0]
    assert history["entry"][1]["response"]["etag"] == 'W/"2"'
    since = history["entry"][0]["response"]["lastModified"]
    recent = fhir.get(f"/Patient/{rid}/_history", params={"_since": since}).json()
    assert [e["request"]["method"] for e in recent["entry"]] == ["DELETE"]
    type_history = fhir.get("/Patient/_history", params={"_count": 2}).json()
    assert len(type_history["entry"]) == 2
    assert all(e["fullUrl"].split("/")[-2] == "Patient" for e in type_history["entry"])
    assert any(link["relation"] == "next" for link in type_history["link"])
    system = fhir.get("/_history", params={"_count": 1}).json()
    assert system["type"] == "history"
    assert len(system["entry"]) == 1
    assert fhir.get("/_history", params={"_since": "yesterday"}).status_code == 400
    assert fhir.get("/Patient/nope/_history").status_code == 404


def test_observation_roundtrip_keeps_content(fhir: httpx.Client) -> None:
    pat = create(fhir, patient())
    obs = observation(pat["id"], value=98.6, unit="[degF]", code="8310-5")
    made = create(fhir, obs)
    read = fhir.get(f"/Observation/{made['id']}").json()
    for key in ("status", "category", "code", "subject", "effectiveDateTime", "valueQuantity"):
        assert read[key] == obs[key]


def test_since_a_versions_own_last_modified_includes_it(fhir: httpx.Client) -> None:
    """Many writes in the same milliseconds: each version's lastModified, given back as _since,
    must select that version (the stored instant and its text must agree to the millisecond)."""
    created = create(fhir, patient())
    rid = created["id"]
    with httpx.Client(base_url=str(fhir.base_url), timeout=10) as quick:
        for n in range(40):
            quick.put(f"/Patient/{rid}", json={**created, "gender": "male" if n % 2 else "female"})
    history = fhir.get(f"/Patient/{rid}/_history", params={"_count": 100}).json()["entry"]
    for entry in history:
        since = entry["response"]["lastModified"]
        found = fhir.get(f"/Patient/{rid}/_history", params={"_since": since, "_count": 100}).json()
        versions = {e["response"]["etag"] for e in found.get("entry", [])}
        assert entry["response"]["etag"] in versions, since
