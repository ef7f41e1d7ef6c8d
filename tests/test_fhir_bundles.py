"""Batch and transaction Bundles, and Patient/$everything."""

from __future__ import annotations

import httpx

from tests.builders import create, ids, observation, patient, unique


def transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def test_transaction_resolves_urn_references(fhir: httpx.Client) -> None:
    family = unique("Tx")
    bundle = transaction(
        {
            "fullUrl": "urn:uuid:pat-1",
            "resource": patient(family=family),
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": "urn:uuid:obs-1",
            "resource": {**observation("placeholder"), "subject": {"reference": "urn:uuid:pat-1"}},
            "request": {"method": "POST", "url": "Observation"},
        },
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    pid = result["entry"][0]["response"]["location"].split("/")[1]
    obs_location = result["entry"][1]["response"]["location"]
    stored = fhir.get("/" + obs_location.rsplit("/_history", 1)[0]).json()
    assert stored["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_is_all_or_nothing(fhir: httpx.Client) -> None:
    family = unique("Atomic")
    bundle = transaction(
        {"resource": patient(family=family), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": {"resourceType": "Observation", "status": "final"},
            "request": {"method": "POST", "url": "Observation"},
        },
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.code"]
    assert fhir.get("/Patient", params={"family": family}).json()["total"] == 0


def test_transaction_conditional_create_reuses_existing(fhir: httpx.Client) -> None:
    mrn = unique("MRN")
    existing = create(fhir, patient(identifier=[{"system": "urn:test:tx", "value": mrn}]))
    bundle = transaction(
        {
            "fullUrl": "urn:uuid:p",
            "resource": patient(identifier=[{"system": "urn:test:tx", "value": mrn}]),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:test:tx|{mrn}"},
        },
        {
            "resource": {**observation("x"), "subject": {"reference": "urn:uuid:p"}},
            "request": {"method": "POST", "url": "Observation"},
        },
    )
    result = fhir.post("", json=bundle).json()
    assert result["entry"][0]["response"]["status"] == "200 OK"
    obs_id = result["entry"][1]["response"]["location"].split("/")[1]
    assert fhir.get(f"/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{existing['id']}"


def test_transaction_update_delete_and_read(fhir: httpx.Client) -> None:
    doomed = create(fhir, patient())
    kept = create(fhir, patient(given="Old"))
    bundle = transaction(
        {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
        {
            "resource": {**kept, "name": [{"family": "New"}]},
            "request": {"method": "PUT", "url": f"Patient/{kept['id']}"},
        },
        {"request": {"method": "GET", "url": f"Patient/{kept['id']}"}},
    )
    result = fhir.post("", json=bundle).json()
    assert [e["response"]["status"] for e in result["entry"]] == ["200 OK", "200 OK", "200 OK"]
    assert result["entry"][2]["resource"]["name"][0]["family"] == "New"
    assert fhir.get(f"/Patient/{doomed['id']}").status_code == 410


def test_transaction_if_match_conflict_rolls_back(fhir: httpx.Client) -> None:
    target = create(fhir, patient())
    family = unique("Rollback")
    bundle = transaction(
        {"resource": patient(family=family), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": target,
            "request": {"method": "PUT", "url": f"Patient/{target['id']}", "ifMatch": 'W/"9"'},
        },
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == 412
    assert fhir.get("/Patient", params={"family": family}).json()["total"] == 0


def test_batch_reports_each_entry(fhir: httpx.Client) -> None:
    existing = create(fhir, patient())
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Patient", "gender": "nope"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"request": {"method": "GET", "url": f"Patient?_id={existing['id']}"}},
            {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
            {"request": {"method": "FETCH", "url": "Patient"}},
        ],
    }
    response = fhir.post("", json=bundle)
    assert response.status_code == 200
    result = response.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == [
        "201 Created",
        "400 Bad Request",
        "200 OK",
        "404 Not Found",
        "200 OK",
        "200 OK",
        "400 Bad Request",
    ]
    assert result["entry"][1]["response"]["outcome"]["issue"][0]["expression"] == ["Patient.gender"]
    assert ids(result["entry"][4]["resource"]) == [existing["id"]]


def test_bundle_shape_errors(fhir: httpx.Client) -> None:
    assert fhir.post("", json={"resourceType": "Patient"}).status_code == 400
    assert fhir.post("", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    no_request = fhir.post(
        "", json={"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient()}]}
    )
    assert no_request.status_code == 400
    assert no_request.json()["issue"][0]["expression"] == ["Bundle.entry[0].request"]


def test_patient_everything(fhir: httpx.Client) -> None:
    pat = create(fhir, patient())
    other = create(fhir, patient())
    mine = [create(fhir, observation(pat["id"]))["id"] for _ in range(3)]
    create(fhir, observation(other["id"]))
    cond = create(
        fhir,
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{pat['id']}"},
            "code": {"text": "Flu"},
        },
    )
    bundle = fhir.get(f"/Patient/{pat['id']}/$everything").json()
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert ("Patient", pat["id"]) in found
    assert {("Observation", i) for i in mine} <= found
    assert ("Condition", cond["id"]) in found
    assert ("Patient", other["id"]) not in found
    assert len(found) == 5
    paged = fhir.get(f"/Patient/{pat['id']}/$everything", params={"_count": 2}).json()
    assert len(paged["entry"]) == 2
    assert any(link["relation"] == "next" for link in paged["link"])
    assert fhir.get("/Patient/nobody/$everything").status_code == 404
