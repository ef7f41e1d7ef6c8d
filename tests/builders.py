"""Small FHIR resource builders for tests: each call makes data unique to the test."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITALS = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
    ]
}
LAB = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]
}


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def patient(family: str | None = None, given: str = "Ann", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family or unique("Fam"), "given": [given]}],
        "gender": "female",
        "birthDate": "1980-05-17",
        **extra,
    }


def observation(
    patient_id: str,
    code: str = "8867-4",
    value: float = 72,
    unit: str = "/min",
    when: str = "2024-05-01T10:00:00Z",
    category: dict | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [category or VITALS],
        "code": {"coding": [{"system": LOINC, "code": code}], "text": f"code {code}"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **extra,
    }


def create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode]


def search_ids(client: httpx.Client, path: str, params: Any = None, **kw: Any) -> list[str]:
    response = client.get(path, params=params, **kw)
    assert response.status_code == 200, response.text
    return ids(response.json())
