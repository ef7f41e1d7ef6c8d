"""Search semantics over HTTP: parameter types, modifiers, prefixes, chaining, result parameters."""

from __future__ import annotations

import httpx
import pytest

from tests.builders import LAB, LOINC, create, ids, observation, patient, search_ids, unique


@pytest.fixture
def person(fhir: httpx.Client) -> dict:
    """A patient of this test alone, with five observations spread over codes, dates and values."""
    family = unique("Müller")
    pat = create(
        fhir,
        patient(
            family=family,
            given="José",
            identifier=[{"system": "urn:test:mrn", "value": unique("MRN")}],
            telecom=[{"system": "phone", "value": "555-0100"}],
        ),
    )
    obs = [
        create(fhir, observation(pat["id"], "8867-4", 60, "/min", "2023-12-31T23:00:00Z")),
        create(fhir, observation(pat["id"], "8867-4", 80, "/min", "2024-05-01T10:00:00Z")),
        create(fhir, observation(pat["id"], "8310-5", 37.2, "Cel", "2024-05-02T08:30:00+02:00")),
        create(fhir, observation(pat["id"], "2345-7", 110, "mg/dL", "2024-06-15", category=LAB)),
        create(fhir, observation(pat["id"], "29463-7", 70.5, "kg", "2025-01-10T12:00:00Z")),
    ]
    return {"patient": pat, "family": family, "obs": [o["id"] for o in obs]}


def obs_search(fhir: httpx.Client, person: dict, **params: str) -> list[str]:
    return search_ids(fhir, "/Observation", {"patient": person["patient"]["id"], **params})


def test_token_forms(fhir: httpx.Client, person: dict) -> None:
    o = person["obs"]
    assert obs_search(fhir, person, code="8867-4") == o[0:2]
    assert obs_search(fhir, person, code=f"{LOINC}|8867-4") == o[0:2]
    assert obs_search(fhir, person, code="http://other|8867-4") == []
    assert obs_search(fhir, person, code="|8867-4") == []  # only codes without a system
    assert obs_search(fhir, person, code=f"{LOINC}|") == o
    assert obs_search(fhir, person, code="8867-4,8310-5") == o[0:3]  # comma = OR
    assert obs_search(fhir, person, **{"code:not": "8867-4"}) == o[2:]
    assert obs_search(fhir, person, **{"code:text": "CODE 2345"}) == [o[3]]
    assert obs_search(fhir, person, category="laboratory") == [o[3]]


def test_repeated_parameters_are_and(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    params = [("patient", pid), ("date", "ge2024-01-01"), ("date", "lt2024-06-01")]
    assert search_ids(fhir, "/Observation", params) == person["obs"][1:3]


def test_string_search(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    family = person["family"]
    assert search_ids(fhir, "/Patient", {"family": family[:15].upper()}) == [pid]  # starts-with, any case
    assert search_ids(fhir, "/Patient", {"family": family.replace("ü", "u")[:15]}) == [
        pid
    ]  # accent-insensitive
    assert search_ids(fhir, "/Patient", {"name": family, "given": "jose"}) == [pid]  # accent-insensitive
    assert search_ids(fhir, "/Patient", {"family:exact": family}) == [pid]
    assert search_ids(fhir, "/Patient", {"family:exact": family.lower()}) == []
    assert search_ids(fhir, "/Patient", {"family:contains": family[3:15].lower()}) == [pid]
    assert search_ids(fhir, "/Patient", {"family": family[2:15]}) == []  # not a prefix


def test_date_prefixes_and_precision(fhir: httpx.Client, person: dict) -> None:
    o = person["obs"]
    assert obs_search(fhir, person, date="2024") == o[1:4]
    assert obs_search(fhir, person, date="2024-05") == o[1:3]
    assert obs_search(fhir, person, date="eq2024-05-01") == [o[1]]
    assert obs_search(fhir, person, date="ne2024") == [o[0], o[4]]
    assert obs_search(fhir, person, date="gt2024-06-15") == [o[4]]
    assert obs_search(fhir, person, date="ge2024-06-15") == o[3:]
    assert obs_search(fhir, person, date="lt2024-01-01") == [o[0]]
    assert obs_search(fhir, person, date="le2024-05-01") == o[0:2]
    assert obs_search(fhir, person, date="sa2024-06-15") == [o[4]]
    assert obs_search(fhir, person, date="eb2024") == [o[0]]
    # 08:30+02:00 is 06:30Z: offsets are honoured (a "+" in a URL must be encoded as %2B).
    assert obs_search(fhir, person, date="ge2024-05-02T06:30:00Z") == o[2:]
    assert obs_search(fhir, person, date="lt2024-05-02T06:30:00Z") == o[0:2]
    assert obs_search(fhir, person, date="ge2024-05-02T08:30:00+02:00") == o[2:]


def test_quantity_and_number_precision(fhir: httpx.Client, person: dict) -> None:
    o = person["obs"]
    assert obs_search(fhir, person, **{"value-quantity": "37.2"}) == [o[2]]
    assert obs_search(fhir, person, **{"value-quantity": "37"}) == [o[2]]  # 37 means [36.5, 37.5)
    assert obs_search(fhir, person, **{"value-quantity": "37.0"}) == []  # [36.95, 37.05)
    assert obs_search(fhir, person, **{"value-quantity": "gt75"}) == [o[1], o[3]]
    assert obs_search(fhir, person, **{"value-quantity": "le70.5"}) == [o[0], o[2], o[4]]
    assert obs_search(fhir, person, **{"value-quantity": "110|http://unitsofmeasure.org|mg/dL"}) == [o[3]]
    assert obs_search(fhir, person, **{"value-quantity": "110|http://unitsofmeasure.org|kg"}) == []
    assert obs_search(fhir, person, **{"value-quantity": "gt50||kg"}) == [o[4]]


def test_reference_forms_and_chaining(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    all_obs = person["obs"]
    assert search_ids(fhir, "/Observation", {"subject": f"Patient/{pid}"}) == all_obs
    assert search_ids(fhir, "/Observation", {"subject": pid}) == all_obs
    assert search_ids(fhir, "/Observation", {"subject:Patient": pid}) == all_obs
    absolute = f"{fhir.base_url}/Patient/{pid}".replace("//Patient", "/Patient")
    assert search_ids(fhir, "/Observation", {"subject": absolute}) == all_obs
    chained = {"subject:Patient.name": person["family"], "code": "8867-4"}
    assert search_ids(fhir, "/Observation", chained) == all_obs[0:2]
    assert search_ids(fhir, "/Observation", {"patient.family": person["family"]}) == all_obs
    identifier = person["patient"]["identifier"][0]["value"]
    assert search_ids(fhir, "/Observation", {"patient.identifier": f"urn:test:mrn|{identifier}"}) == all_obs
    reverse = {"_has:Observation:patient:code": "2345-7", "family": person["family"]}
    assert search_ids(fhir, "/Patient", reverse) == [pid]
    assert search_ids(fhir, "/Patient", {**reverse, "_has:Observation:patient:code": "0000-0"}) == []


def test_missing_and_id_and_last_updated(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    extra = create(
        fhir,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "no value"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )
    assert obs_search(fhir, person, **{"value-quantity:missing": "true"}) == [extra["id"]]
    assert obs_search(fhir, person, **{"value-quantity:missing": "false"}) == person["obs"]
    assert search_ids(fhir, "/Patient", {"_id": f"{pid},nope"}) == [pid]
    stamp = extra["meta"]["lastUpdated"]
    assert obs_search(fhir, person, _lastUpdated=f"ge{stamp}") == [extra["id"]]
    assert fhir.get("/Observation", params={"value-quantity:missing": "maybe"}).status_code == 400


def test_token_identifier_and_telecom(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    value = person["patient"]["identifier"][0]["value"]
    assert search_ids(fhir, "/Patient", {"identifier": value}) == [pid]
    assert search_ids(fhir, "/Patient", {"identifier": f"urn:test:mrn|{value}"}) == [pid]
    assert search_ids(fhir, "/Patient", {"phone": "555-0100", "family": person["family"]}) == [pid]
    assert search_ids(fhir, "/Patient", {"gender": "female", "family": person["family"]}) == [pid]


def test_sort_multiple_keys(fhir: httpx.Client, person: dict) -> None:
    o = person["obs"]
    assert obs_search(fhir, person, _sort="-date") == list(reversed(o))
    assert obs_search(fhir, person, _sort="date") == o
    by_code_then_date = obs_search(fhir, person, _sort="code,-date")
    assert by_code_then_date == [
        o[3],
        o[4],
        o[2],
        o[1],
        o[0],
    ]  # 2345-7, 29463-7, 8310-5, 8867-4 (newest first)
    assert fhir.get("/Observation", params={"_sort": "nonsense"}).status_code == 400


def test_include_and_revinclude(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    bundle = fhir.get(
        "/Observation", params={"patient": pid, "code": "2345-7", "_include": "Observation:patient"}
    ).json()
    assert ids(bundle) == [person["obs"][3]]
    assert ids(bundle, "include") == [pid]
    prov = create(
        fhir,
        {
            "resourceType": "Provenance",
            "target": [{"reference": f"Patient/{pid}"}],
            "recorded": "2024-01-01T00:00:00Z",
            "agent": [{"who": {"reference": f"Patient/{pid}"}}],
        },
    )
    rev = fhir.get("/Patient", params={"_id": pid, "_revinclude": "Provenance:target"}).json()
    assert ids(rev) == [pid]
    assert ids(rev, "include") == [prov["id"]]
    bad = fhir.get("/Observation", params={"_include": "Observation:code"})
    assert bad.status_code == 400


def test_summary_total_elements(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    count = fhir.get("/Observation", params={"patient": pid, "_summary": "count"}).json()
    assert count["total"] == 5
    assert "entry" not in count
    no_total = fhir.get("/Observation", params={"patient": pid, "_total": "none"}).json()
    assert "total" not in no_total
    assert len(no_total["entry"]) == 5
    slim = fhir.get("/Observation", params={"patient": pid, "_elements": "code"}).json()
    first = slim["entry"][0]["resource"]
    assert set(first) == {"resourceType", "id", "meta", "code", "status"}  # status is mandatory
    assert first["meta"]["tag"][0]["code"] == "SUBSETTED"
    full = fhir.get(f"/Patient/{pid}").json()
    full["communication"] = [{"language": {"text": "English"}}]
    fhir.put(f"/Patient/{pid}", json=full)
    summary = fhir.get("/Patient", params={"_id": pid, "_summary": "true"}).json()["entry"][0]["resource"]
    assert "name" in summary and "telecom" in summary
    assert "communication" not in summary  # not a summary element in R4
    assert summary["meta"]["tag"][0]["code"] == "SUBSETTED"
    data = fhir.get("/Patient", params={"_id": pid, "_summary": "data"}).json()["entry"][0]["resource"]
    assert "communication" in data
    assert fhir.get("/Patient", params={"_summary": "everything"}).status_code == 400


def test_paging_is_stable_and_links_work(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    first = fhir.get("/Observation", params={"patient": pid, "_count": 2}).json()
    relations = {link["relation"]: link["url"] for link in first["link"]}
    assert first["total"] == 5
    assert relations["self"].endswith("_count=2") or "_count=2" in relations["self"]
    seen = ids(first)
    # A write after the first page does not disturb the pages of this search.
    create(fhir, observation(pid, "8867-4", 99, "/min", "2024-01-01T00:00:00Z"))
    url = relations["next"]
    while url:
        page = httpx.get(url).json()
        seen += ids(page)
        links = {link["relation"]: link["url"] for link in page["link"]}
        url = links.get("next")
        if url:
            assert "previous" in links
    assert seen == person["obs"]
    back = httpx.get(relations["last"]).json()
    assert ids(back) == person["obs"][4:]
    expired = httpx.get(relations["next"].replace("_getpages=", "_getpages=ffff"))
    assert expired.status_code == 410


def test_count_is_capped(fhir: httpx.Client, server) -> None:
    maximum = next(iter(server.sandbox.sites.values())).site.settings.max_count
    bundle = fhir.get("/Observation", params={"_count": maximum * 10}).json()
    assert len(bundle.get("entry", [])) <= maximum
    assert fhir.get("/Observation", params={"_count": "-1"}).status_code == 400


def test_post_search_with_form_body(fhir: httpx.Client, person: dict) -> None:
    response = fhir.post(
        "/Observation/_search",
        data={"patient": person["patient"]["id"], "code": "8310-5"},
    )
    assert response.status_code == 200
    assert ids(response.json()) == [person["obs"][2]]
    merged = fhir.post(f"/Observation/_search?patient={person['patient']['id']}", data={"code": "2345-7"})
    assert ids(merged.json()) == [person["obs"][3]]
    wrong = fhir.post(
        "/Observation/_search", content=b'{"a":1}', headers={"content-type": "application/json"}
    )
    assert wrong.status_code == 415


def test_unknown_parameter_strict_and_lenient(fhir: httpx.Client, person: dict) -> None:
    strict = fhir.get("/Observation", params={"patient": person["patient"]["id"], "bogus": "1"})
    assert strict.status_code == 400
    issue = strict.json()["issue"][0]
    assert "bogus" in issue["diagnostics"]
    assert issue["expression"] == ["bogus"]
    lenient = fhir.get(
        "/Observation",
        params={"patient": person["patient"]["id"], "bogus": "1"},
        headers={"Prefer": "handling=lenient"},
    )
    assert lenient.status_code == 200
    bundle = lenient.json()
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1
    assert "bogus" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert len(ids(bundle)) == 5
    assert "bogus" not in next(link["url"] for link in bundle["link"] if link["relation"] == "self")


@pytest.mark.parametrize(
    "params",
    [
        {"date": "2024-13-01"},
        {"date": "notadate"},
        {"value-quantity": "abc"},
        {"code:fuzzy": "1"},
        {"patient.nosuch": "1"},
        {"_has:Observation:code:code": "1"},
        {"_include": "nonsense"},
        {"_count": "ten"},
        {"family": ""},
    ],
)
def test_bad_search_values_are_400(fhir: httpx.Client, params: dict) -> None:
    response = fhir.get("/Observation" if "family" not in params else "/Patient", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_us_core_combinations(fhir: httpx.Client, person: dict) -> None:
    pid = person["patient"]["id"]
    o = person["obs"]
    assert search_ids(fhir, "/Observation", {"patient": pid, "category": "vital-signs"}) == [
        o[0],
        o[1],
        o[2],
        o[4],
    ]
    assert search_ids(fhir, "/Observation", {"patient": pid, "code": "8867-4"}) == o[0:2]
    both = {"patient": pid, "category": "vital-signs", "date": "ge2024-05-01"}
    assert search_ids(fhir, "/Observation", both) == [o[1], o[2], o[4]]
    assert search_ids(fhir, "/Observation", {**both, "status": "final"}) == [o[1], o[2], o[4]]
