"""The CapabilityStatement is generated from the server, and everything it lists works."""

from __future__ import annotations

import httpx
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

US_CORE_TYPES = [
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Encounter",
    "Observation",
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "Medication",
    "Immunization",
    "Procedure",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "CareTeam",
    "Goal",
    "Device",
    "Provenance",
    "ServiceRequest",
    "Coverage",
]


def statement(fhir: httpx.Client) -> dict:
    response = fhir.get("/metadata")
    assert response.status_code == 200
    return response.json()


def test_capability_statement_is_valid_r4(fhir: httpx.Client) -> None:
    cs = statement(fhir)
    CapabilityStatement.model_validate(cs)
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert cs["implementation"]["url"] == str(fhir.base_url).rstrip("/")
    types = {r["type"] for r in cs["rest"][0]["resource"]}
    assert set(US_CORE_TYPES) <= types
    assert {i["code"] for i in cs["rest"][0]["interaction"]} == {"transaction", "batch", "history-system"}


def test_us_core_search_parameters_are_listed(fhir: httpx.Client) -> None:
    by_type = {
        r["type"]: {p["name"] for p in r["searchParam"]} for r in statement(fhir)["rest"][0]["resource"]
    }
    assert {"patient", "category", "code", "date", "status", "_id", "_lastUpdated"} <= by_type["Observation"]
    assert {"race", "ethnicity", "birthdate", "family", "given", "identifier", "name", "gender"} <= by_type[
        "Patient"
    ]
    assert (
        "Provenance:target"
        in next(r for r in statement(fhir)["rest"][0]["resource"] if r["type"] == "Patient")[
            "searchRevInclude"
        ]
    )
    # Composite parameters are not implemented, so they are not claimed.
    assert "code-value-quantity" not in by_type["Observation"]


def test_every_listed_search_parameter_answers(fhir: httpx.Client) -> None:
    failures = []
    for resource in statement(fhir)["rest"][0]["resource"]:
        rtype = resource["type"]
        for param in resource["searchParam"]:
            response = fhir.get(
                f"/{rtype}", params={f"{param['name']}:missing": "false", "_summary": "count"}
            )
            if response.status_code != 200:
                failures.append((rtype, param["name"], response.status_code, response.text[:200]))
    assert failures == []


def test_every_listed_include_answers(fhir: httpx.Client) -> None:
    failures = []
    for resource in statement(fhir)["rest"][0]["resource"]:
        if resource["type"] not in US_CORE_TYPES:
            continue
        for include in resource["searchInclude"]:
            response = fhir.get(f"/{resource['type']}", params={"_include": include, "_count": 1})
            if response.status_code != 200:
                failures.append((include, response.status_code))
        for include in resource["searchRevInclude"][:20]:
            response = fhir.get(f"/{resource['type']}", params={"_revinclude": include, "_count": 1})
            if response.status_code != 200:
                failures.append((include, response.status_code))
    assert failures == []


def test_every_listed_type_supports_its_interactions(fhir: httpx.Client) -> None:
    for resource in statement(fhir)["rest"][0]["resource"]:
        rtype = resource["type"]
        codes = {i["code"] for i in resource["interaction"]}
        assert {"read", "search-type", "create", "update", "delete"} <= codes
        assert fhir.get(f"/{rtype}/unknown-id").status_code == 404
        assert fhir.get(f"/{rtype}", params={"_summary": "count"}).status_code == 200
        assert fhir.get(f"/{rtype}/_history", params={"_count": 1}).status_code == 200
