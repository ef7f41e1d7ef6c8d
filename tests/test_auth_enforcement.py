"""Scopes enforced on FHIR data: bearer tokens required, patient compartments, resource types,
interactions and granular scopes, checked over HTTP against a real server."""

from __future__ import annotations

import httpx
import pytest

from conformance.smart_checks import CATEGORY
from simulator.testing import RunningServer
from tests.smart_support import TIMEOUT, auth_scenario, bearer, login, serve_auth, token_request

SYSTEM_SECRET = ("confidential-app", "s3cret")


def system_token(http: httpx.Client, base: str, scope: str = "system/*.cruds") -> dict:
    response = token_request(
        http, base, {"grant_type": "client_credentials", "scope": scope}, auth=SYSTEM_SECRET
    )
    assert response.status_code == 200, response.text
    return response.json()


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def everything(http: httpx.Client, url: str, token: dict) -> list[dict]:
    """All pages of a search, as resources."""
    out = []
    while url:
        bundle = http.get(url, headers=bearer(token)).json()
        out += [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return out


def subject(resource: dict) -> str:
    return (resource.get("subject") or resource.get("patient"))["reference"]


# -- bearer tokens --------------------------------------------------------------------------------
def test_no_token_is_401_with_a_bearer_challenge(smart: RunningServer, http: httpx.Client) -> None:
    response = http.get(smart.fhir_base + "/Patient")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["issue"][0]["code"] == "login"
    assert http.get(smart.fhir_base + "/Patient", headers={"Authorization": "Basic eDp5"}).status_code == 401


def test_unknown_and_forged_tokens_are_invalid_token(smart: RunningServer, http: httpx.Client) -> None:
    token = login(http, smart.fhir_base, "launch/patient patient/*.rs")["access_token"]
    for value in ("nonsense", token[:-4] + "AAAA"):
        response = http.get(smart.fhir_base + "/Patient", headers=bearer(value))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_tokens_expire_on_the_simulated_clock() -> None:
    with (
        serve_auth(auth_scenario({"access_token_lifetime": 570})) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        body = login(http, server.fhir_base, "launch/patient patient/*.rs")
        assert body["expires_in"] == 570
        server.sandbox.clock.advance(569)
        assert http.get(server.fhir_base + "/Patient", headers=bearer(body)).status_code == 200
        server.sandbox.clock.advance(2)
        expired = http.get(server.fhir_base + "/Patient", headers=bearer(body))
        assert expired.status_code == 401
        assert "expired" in expired.headers["www-authenticate"]
        assert expired.json()["issue"][0]["code"] == "expired"


# -- patient compartment --------------------------------------------------------------------------
def test_patient_token_sees_only_its_compartment(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    token = login(http, base, "launch/patient patient/*.rs")
    me = f"Patient/{token['patient']}"
    assert ids(http.get(base + "/Patient", headers=bearer(token)).json()) == [token["patient"]]
    mine = everything(http, base + "/Observation?_count=20", token)
    assert mine and all(subject(o) == me for o in mine)
    all_obs = everything(http, base + "/Observation?_count=200", system_token(http, base))
    assert len(mine) == sum(1 for o in all_obs if subject(o) == me) < len(all_obs)
    others = [o for o in all_obs if subject(o) != me]
    assert http.get(f"{base}/Observation/{others[0]['id']}", headers=bearer(token)).status_code == 403
    other_patient = subject(others[0])
    assert http.get(f"{base}/{other_patient}", headers=bearer(token)).status_code == 403
    assert http.get(f"{base}/{other_patient}/$everything", headers=bearer(token)).status_code == 403
    # Searching for someone else's data by parameter finds nothing rather than leaking it.
    assert ids(http.get(f"{base}/Observation?subject={other_patient}", headers=bearer(token)).json()) == []
    # Non-patient data (practitioners) is not limited by the compartment.
    assert http.get(base + "/Practitioner", headers=bearer(token)).json()["total"] >= 1


def test_includes_and_everything_stay_in_the_compartment(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    token = login(http, base, "launch/patient patient/*.rs")
    bundle = http.get(
        base + "/Encounter?_include=Encounter:patient&_revinclude=Observation:encounter",
        headers=bearer(token),
    ).json()
    included = [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "include"]
    patients = {r["id"] for r in included if r["resourceType"] == "Patient"}
    assert patients == {token["patient"]}
    assert all(
        subject(r) == f"Patient/{token['patient']}" for r in included if r["resourceType"] == "Observation"
    )
    full = http.get(f"{base}/Patient/{token['patient']}/$everything?_count=500", headers=bearer(token)).json()
    for entry in full["entry"]:
        resource = entry["resource"]
        if "subject" in resource or "patient" in resource:
            assert subject(resource) == f"Patient/{token['patient']}"


def test_history_is_filtered_to_the_grant(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    token = login(http, base, "launch/patient patient/Observation.rs")
    history = http.get(base + "/_history?_count=1000", headers=bearer(token)).json()
    types = {e["resource"]["resourceType"] for e in history["entry"]}
    assert types == {"Observation"}
    assert all(subject(e["resource"]) == f"Patient/{token['patient']}" for e in history["entry"])
    assert http.get(base + "/Condition/_history", headers=bearer(token)).status_code == 403


def test_vendor_status_for_out_of_compartment_reads() -> None:
    with (
        serve_auth(auth_scenario({"forbidden_status": 404})) as server,
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        base = server.fhir_base
        token = login(http, base, "launch/patient patient/*.rs")
        other = next(
            p for p in server.sandbox.sites["s"].site.store.current("Patient") if p != token["patient"]
        )
        response = http.get(f"{base}/Patient/{other}", headers=bearer(token))
        assert response.status_code == 404
        assert response.json()["issue"][0]["code"] == "not-found"


# -- types and interactions -------------------------------------------------------------------------
def test_types_not_granted_are_403(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    token = login(http, base, "launch/patient patient/Observation.read")
    assert http.get(base + "/Observation", headers=bearer(token)).status_code == 200
    response = http.get(base + "/Condition", headers=bearer(token))
    assert response.status_code == 403
    assert "insufficient_scope" in response.headers["www-authenticate"]
    assert response.json()["issue"][0]["code"] == "forbidden"
    assert http.get(f"{base}/Patient/{token['patient']}", headers=bearer(token)).status_code == 403


def test_v2_read_without_search_and_search_without_read(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    read_only = login(http, base, "launch/patient patient/Patient.r")
    assert http.get(f"{base}/Patient/{read_only['patient']}", headers=bearer(read_only)).status_code == 200
    assert http.get(f"{base}/Patient", headers=bearer(read_only)).status_code == 403
    search_only = login(http, base, "launch/patient patient/Patient.s")
    assert http.get(f"{base}/Patient", headers=bearer(search_only)).status_code == 200
    assert (
        http.get(f"{base}/Patient/{search_only['patient']}", headers=bearer(search_only)).status_code == 403
    )


def test_writes_need_write_scopes_and_stay_in_the_compartment(
    smart: RunningServer, http: httpx.Client
) -> None:
    base = smart.fhir_base
    reader = login(http, base, "launch/patient patient/*.rs")
    writer = login(http, base, "launch/patient patient/Observation.cruds patient/Patient.rs")
    me = writer["patient"]
    other = next(p for p in smart.sandbox.sites["s"].site.store.current("Patient") if p != me)

    def vital(patient: str) -> dict:
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "pulse"},
            "subject": {"reference": f"Patient/{patient}"},
        }

    assert http.post(base + "/Observation", json=vital(me), headers=bearer(reader)).status_code == 403
    created = http.post(base + "/Observation", json=vital(me), headers=bearer(writer))
    assert created.status_code == 201
    assert http.post(base + "/Observation", json=vital(other), headers=bearer(writer)).status_code == 403
    obs = created.json()
    moved = {**obs, "subject": {"reference": f"Patient/{other}"}}
    assert http.put(f"{base}/Observation/{obs['id']}", json=moved, headers=bearer(writer)).status_code == 403
    assert (
        http.put(
            f"{base}/Observation/{obs['id']}", json={**obs, "status": "amended"}, headers=bearer(writer)
        ).status_code
        == 200
    )
    assert (
        http.put(
            f"{base}/Patient/{me}", json={"resourceType": "Patient", "id": me}, headers=bearer(writer)
        ).status_code
        == 403
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "POST", "url": "Observation"}, "resource": vital(other)}],
    }
    assert http.post(base, json=bundle, headers=bearer(writer)).status_code == 403
    assert http.delete(f"{base}/Observation/{obs['id']}", headers=bearer(writer)).status_code == 200


def test_user_and_system_scopes_are_not_limited_to_a_patient(
    smart: RunningServer, http: httpx.Client
) -> None:
    base = smart.fhir_base
    count = len(smart.sandbox.sites["s"].site.store.current("Patient"))
    user = login(http, base, "openid fhirUser user/*.rs")
    assert "patient" not in user
    assert http.get(base + "/Patient", headers=bearer(user)).json()["total"] == count
    system = system_token(http, base, "system/Patient.rs")
    assert http.get(base + "/Patient", headers=bearer(system)).json()["total"] == count
    assert http.get(base + "/Observation", headers=bearer(system)).status_code == 403


# -- granular scopes --------------------------------------------------------------------------------
@pytest.mark.parametrize("category", ["vital-signs", "laboratory"])
def test_granular_scope_returns_exactly_the_granted_subset(
    smart: RunningServer, http: httpx.Client, category: str
) -> None:
    base = smart.fhir_base
    full = login(http, base, "launch/patient patient/*.rs")
    patient = full["patient"]
    narrow = login(
        http, base, f"launch/patient patient/Observation.rs?category={CATEGORY}|{category}", patient=patient
    )
    assert narrow["patient"] == patient
    everything_seen = everything(http, base + "/Observation?_count=25", full)
    expected = {
        o["id"]
        for o in everything_seen
        if any(c["code"] == category for k in o.get("category", []) for c in k["coding"])
    }
    got = everything(http, base + "/Observation?_count=25", narrow)
    assert expected and {o["id"] for o in got} == expected
    outside = next(o for o in everything_seen if o["id"] not in expected)
    assert http.get(f"{base}/Observation/{outside['id']}", headers=bearer(narrow)).status_code == 403
    inside = next(iter(expected))
    assert http.get(f"{base}/Observation/{inside}", headers=bearer(narrow)).status_code == 200


def narrow_to(http: httpx.Client, base: str, full: dict, category: str) -> dict:
    return login(
        http,
        base,
        f"launch/patient patient/Observation.rs?category={CATEGORY}|{category}",
        patient=full["patient"],
    )


def test_granular_scopes_add_up(smart: RunningServer, http: httpx.Client) -> None:
    base = smart.fhir_base
    full = login(http, base, "launch/patient patient/*.rs")
    both = login(
        http,
        base,
        f"launch/patient patient/Observation.rs?category={CATEGORY}|vital-signs patient/Observation.rs?category={CATEGORY}|laboratory",
        patient=full["patient"],
    )
    seen = everything(http, base + "/Observation?_count=50", full)
    expected = {
        o["id"]
        for o in seen
        if any(c["code"] in ("vital-signs", "laboratory") for k in o.get("category", []) for c in k["coding"])
    }
    got = {o["id"] for o in everything(http, base + "/Observation?_count=50", both)}
    assert got == expected
    assert len(expected) > len(
        {
            o["id"]
            for o in everything(
                http, base + "/Observation?_count=50", narrow_to(http, base, full, "laboratory")
            )
        }
    )
