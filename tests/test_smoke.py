import httpx


def test_health_and_metadata(server, fhir: httpx.Client) -> None:
    health = httpx.get(server.admin + "/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    meta = fhir.get("/metadata")
    assert meta.status_code == 200
    assert meta.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert meta.json()["fhirVersion"] == "4.0.1"
