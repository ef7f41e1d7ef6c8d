"""Bulk Data export parameters that narrow or annotate an export (docs/bulk-data.md): `_typeFilter`,
`_elements`, the manifest's `deleted` files and the `Expires` of a completed export, over real HTTP
on both stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from simulator.admin_client import AdminClient
from simulator.clock import http_date
from simulator.sandbox import Sandbox
from simulator.scenario import build_scenario, validate_file
from simulator.testing import RunningServer, heart_rate, serve_in_thread
from tests.smart_support import CLIENTS, auth_scenario, serve_auth
from tests.test_bulk_export import (
    DELAY,
    KICK_OFF,
    bulk_scenario,
    download,
    finish,
    ids,
    kick_off,
    live,
    post_kick_off,
    reset_client,
    serve_bulk,
)

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def bulk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve_bulk(request.param, tmp_path_factory) as running:
        yield running


@pytest.fixture
def fhir(bulk: RunningServer) -> Iterator[httpx.Client]:
    with reset_client(bulk) as client:
        yield client


def searched(client: httpx.Client, rtype: str, **params: str) -> list[dict[str, Any]]:
    """The matches of a search through the server's search API (one page holds them all here)."""
    bundle = client.get(f"/{rtype}", params={**params, "_count": "1000"}).json()
    assert bundle["total"] < 1000
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def export(client: httpx.Client, server: RunningServer, params: Any, path: str = "/$export") -> dict:
    response = client.get(path, params=params, headers=KICK_OFF)
    assert response.status_code == 202, response.text
    return finish(server, client, response.headers["content-location"])


# -- _typeFilter -----------------------------------------------------------------------------------


def test_type_filters_narrow_their_types_and_leave_the_others_whole(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    repeated = [("_typeFilter", "Patient?gender=female"), ("_typeFilter", "Observation?code=8867-4,9279-1")]
    exported = download(fhir, export(fhir, bulk, repeated))
    female = searched(fhir, "Patient", gender="female")
    codes = searched(fhir, "Observation", code="8867-4,9279-1")
    assert 0 < len(female) < len(live(bulk, "Patient"))
    assert 0 < len(codes) < len(live(bulk, "Observation"))
    assert exported["Patient"] == female
    assert exported["Observation"] == codes  # the search's matches, in the store's order
    assert exported["Condition"] == list(live(bulk, "Condition").values())  # no filter: all of it
    # The same filters comma-separated in one value: a comma before `Type?` starts the next filter.
    joined = [("_typeFilter", "Patient?gender=female,Observation?code=8867-4,9279-1")]
    again = download(fhir, export(fhir, bulk, joined))
    assert (again["Patient"], again["Observation"]) == (female, codes)


def test_filters_of_one_type_are_or_and_the_parameters_of_a_filter_and(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    patient = next(pid for pid, p in live(bulk, "Patient").items() if p["gender"] == "male")
    response = post_kick_off(
        fhir,
        "/$export",
        {"name": "_type", "valueString": "Observation"},
        {"name": "_typeFilter", "valueString": "Observation?code=8867-4"},
        {"name": "_typeFilter", "valueString": f"Observation?category=laboratory&subject=Patient/{patient}"},
    )
    assert response.status_code == 202, response.text
    exported = download(fhir, finish(bulk, fhir, response.headers["content-location"]))
    heart = ids(searched(fhir, "Observation", code="8867-4"))
    labs = ids(searched(fhir, "Observation", category="laboratory", subject=f"Patient/{patient}"))
    assert heart and labs and not heart & labs
    assert ids(exported["Observation"]) == heart | labs
    assert len(exported["Observation"]) == len(heart | labs)  # a resource matching both comes once


def test_type_filters_apply_inside_a_patient_level_export_and_to_its_snapshot(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    chosen = next(iter(live(bulk, "Patient")))
    response = post_kick_off(
        fhir,
        "/Patient/$export",
        {"name": "_typeFilter", "valueString": "Observation?code=8867-4"},
        {"name": "patient", "valueReference": {"reference": f"Patient/{chosen}"}},
    )
    assert response.status_code == 202, response.text
    # Written after the kick-off and matching the filter: not in the snapshot.
    assert fhir.post("/Observation", json=heart_rate(f"Patient/{chosen}")).status_code == 201
    exported = download(fhir, finish(bulk, fhir, response.headers["content-location"]))
    mine = [
        o
        for o in live(bulk, "Observation").values()
        if o["subject"]["reference"] == f"Patient/{chosen}" and o["code"]["coding"][0]["code"] == "8867-4"
    ]
    assert len(mine) > 1 and exported["Observation"] == mine[:-1]
    assert ids(exported["Patient"]) == {chosen}


@pytest.mark.parametrize(
    ("params", "says"),
    [
        (
            [("_type", "Patient"), ("_typeFilter", "Observation?code=8867-4")],
            "_typeFilter 'Observation?code=8867-4': Observation is not in _type (Patient)",
        ),
        (
            [("_typeFilter", "Observation?colour=red")],
            "_typeFilter 'Observation?colour=red': Unknown search parameter 'colour' for resource type "
            "Observation",
        ),
        (
            [("_typeFilter", "Observation?date=gt2026-13-45")],
            "_typeFilter 'Observation?date=gt2026-13-45': Invalid search parameter 'date'",
        ),
        (
            [("_typeFilter", "Observation?code:sounds-like=x")],
            "modifier ':sounds-like' is not supported on token parameters",
        ),
        (
            [("_typeFilter", "Observation?_include=Observation:subject&code=8867-4")],
            "_include is not allowed in a filter",
        ),
        (
            [("_typeFilter", "Observation?_count=5&_sort=date&_elements=id")],
            "_count, _elements, _sort are not allowed in a filter",
        ),
        ([("_typeFilter", "Observation")], "each filter is a search of one type: Type?param=value"),
        ([("_typeFilter", "Observation?")], "each filter is a search of one type"),
        ([("_typeFilter", "Nope?x=1")], "Nope is not a type a system-level export holds"),
        ([("_typeFilter", "")], "'_typeFilter' is empty"),
    ],
)
def test_bad_type_filters_are_a_400_naming_the_filter(fhir: httpx.Client, params: Any, says: str) -> None:
    response = fhir.get("/$export", params=params, headers=KICK_OFF)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert says in issue["diagnostics"]
    assert issue["expression"] == ["_typeFilter"]


def test_a_patient_level_filter_on_a_type_outside_the_compartment_is_refused(fhir: httpx.Client) -> None:
    response = fhir.get("/Patient/$export", params={"_typeFilter": "Practitioner?name=x"}, headers=KICK_OFF)
    assert response.status_code == 400
    assert "Practitioner is not a type a Patient-level export holds" in response.text


def test_lenient_handling_drops_unknown_filter_parameters_as_a_search_does(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    params = {"_type": "Observation", "_typeFilter": "Observation?colour=red&code=8867-4"}
    response = fhir.get(
        "/$export", params=params, headers={**KICK_OFF, "Prefer": "respond-async, handling=lenient"}
    )
    assert response.status_code == 202, response.text
    manifest = finish(bulk, fhir, response.headers["content-location"])
    assert download(fhir, manifest)["Observation"] == searched(fhir, "Observation", code="8867-4")
    # The IG: a parameter processed leniently gets an OperationOutcome in the `error` files.
    (item,) = manifest["error"]
    assert (item["type"], item["count"]) == ("OperationOutcome", 1)
    response = fhir.get(item["url"])
    assert response.headers["content-type"] == "application/fhir+ndjson"
    (outcome,) = [json.loads(line) for line in response.text.splitlines()]
    assert outcome["issue"] == [
        {
            "severity": "warning",
            "code": "not-supported",
            "diagnostics": "_typeFilter 'Observation?colour=red&code=8867-4': unknown search parameter "
            "'colour' was ignored",
            "expression": ["_typeFilter"],
        }
    ]


# -- _elements -------------------------------------------------------------------------------------


def test_elements_keep_the_listed_and_mandatory_elements_like_a_search(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    params = {"_type": "Patient,Observation,Condition", "_elements": "gender,Observation.valueQuantity"}
    exported = download(fhir, export(fhir, bulk, params))
    for rtype, elements in (("Patient", "gender"), ("Observation", "gender,valueQuantity")):
        expected = searched(fhir, rtype, _elements=elements)
        assert exported[rtype] == expected, rtype
    patient = exported["Patient"][0]
    assert set(patient) == {"resourceType", "id", "meta", "gender"}
    assert SUBSETTED in patient["meta"]["tag"]
    observation = exported["Observation"][0]
    # The search's subsetting keeps the required primitive elements: Observation.status (1..1).
    assert set(observation) == {"resourceType", "id", "meta", "status", "valueQuantity"}
    assert observation["meta"]["lastUpdated"] and SUBSETTED in observation["meta"]["tag"]
    # `gender` is a plain element name, so it applies to Condition too (which has no gender).
    assert all(SUBSETTED in c["meta"]["tag"] and "gender" not in c for c in exported["Condition"])


def test_typed_elements_leave_the_other_types_whole(bulk: RunningServer, fhir: httpx.Client) -> None:
    exported = download(fhir, export(fhir, bulk, {"_elements": "Patient.birthDate"}))
    assert all(set(p) == {"resourceType", "id", "meta", "birthDate"} for p in exported["Patient"])
    assert exported["Observation"] == list(live(bulk, "Observation").values())


def test_an_unknown_element_name_keeps_only_the_mandatory_elements_as_a_search_does(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    exported = download(fhir, export(fhir, bulk, {"_type": "Patient", "_elements": "colour"}))
    assert exported["Patient"] == searched(fhir, "Patient", _elements="colour")
    assert all(set(p) == {"resourceType", "id", "meta"} for p in exported["Patient"])


def test_post_elements_and_a_bad_post_filter(bulk: RunningServer, fhir: httpx.Client) -> None:
    response = post_kick_off(
        fhir,
        "/Patient/$export",
        {"name": "_type", "valueString": "Patient"},
        {"name": "_elements", "valueString": "Patient.gender"},
    )
    assert response.status_code == 202, response.text
    exported = download(fhir, finish(bulk, fhir, response.headers["content-location"]))
    assert exported["Patient"] == searched(fhir, "Patient", _elements="gender")
    assert all(set(p) == {"resourceType", "id", "meta", "gender"} for p in exported["Patient"])
    refused = post_kick_off(
        fhir, "/$export", {"name": "_typeFilter", "valueString": "Observation?code=8867-4&_sort=date"}
    )
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["diagnostics"] == (
        "_typeFilter 'Observation?code=8867-4&_sort=date': _sort is not allowed in a filter "
        "(only parameters that select resources)"
    )


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"_elements": "Patient.name.given"}, "'Patient.name.given' is not 'element' or 'Type.element'"),
        ({"_elements": "gender,"}, "'' is not 'element' or 'Type.element'"),
        ({"_elements": "Patient."}, "'Patient.' is not 'element'"),
        ({"_elements": ".gender"}, "'.gender' is not 'element'"),
        ({"_elements": "Nope.gender"}, "'Nope' in 'Nope.gender' is not a resource type"),
        (
            {"_type": "Patient", "_elements": "Observation.status"},
            "'Observation.status' names Observation, which is not in _type (Patient)",
        ),
    ],
)
def test_bad_elements_are_a_400_naming_the_parameter(fhir: httpx.Client, params: Any, says: str) -> None:
    response = fhir.get("/$export", params=params, headers=KICK_OFF)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert says in issue["diagnostics"]
    assert issue["expression"] == ["_elements"]


# -- deleted ---------------------------------------------------------------------------------------


def deletions(client: httpx.Client, manifest: dict[str, Any]) -> list[str]:
    """The `Type/id` each Bundle of the manifest's `deleted` files deletes, in file order."""
    out = []
    for item in manifest["deleted"]:
        assert item["type"] == "Bundle"
        response = client.get(item["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/fhir+ndjson"
        bundles = [json.loads(line) for line in response.text.splitlines()]
        assert len(bundles) == item["count"]
        for bundle in bundles:
            assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "transaction")
            assert bundle["meta"]["lastUpdated"] == manifest["transactionTime"]
            (entry,) = bundle["entry"]
            assert entry["request"]["method"] == "DELETE"
            out.append(entry["request"]["url"])
    return out


def test_since_lists_the_resources_deleted_after_it(bulk: RunningServer, fhir: httpx.Client) -> None:
    admin = AdminClient(bulk.origin)
    first, second, third, fourth = list(live(bulk, "Observation"))[:4]
    condition = next(iter(live(bulk, "Condition")))
    early = fhir.delete(f"/Observation/{first}")  # before _since: not listed
    assert early.status_code in (200, 204)
    admin.advance(60)
    revived = live(bulk, "Observation")[fourth]
    for path in (f"/Observation/{third}", f"/Condition/{condition}", f"/Observation/{second}"):
        assert fhir.delete(path).status_code in (200, 204)
    assert fhir.delete(f"/Observation/{fourth}").status_code in (200, 204)
    assert fhir.put(f"/Observation/{fourth}", json=revived).status_code in (200, 201)  # live again

    since = {"_since": "2026-03-01T08:00:30Z"}
    manifest = export(fhir, bulk, since)
    assert [i["url"].rsplit("/", 1)[1] for i in manifest["deleted"]] == ["Bundle-deleted-1.ndjson"]
    assert deletions(fhir, manifest) == [
        f"Observation/{third}",
        f"Condition/{condition}",
        f"Observation/{second}",
    ]
    assert fourth in ids(download(fhir, manifest)["Observation"])
    only_conditions = export(fhir, bulk, {**since, "_type": "Condition"})
    assert deletions(fhir, only_conditions) == [f"Condition/{condition}"]
    assert export(fhir, bulk, {"_type": "Observation"})["deleted"] == []  # no _since: none listed


def test_a_patient_level_export_lists_only_deletions_in_its_patients_compartments(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    chosen, other, *_ = list(live(bulk, "Patient"))
    observations = live(bulk, "Observation")
    mine = next(oid for oid, o in observations.items() if o["subject"]["reference"] == f"Patient/{chosen}")
    theirs = next(oid for oid, o in observations.items() if o["subject"]["reference"] == f"Patient/{other}")
    AdminClient(bulk.origin).advance(60)
    for oid in (mine, theirs):
        assert fhir.delete(f"/Observation/{oid}").status_code in (200, 204)
    response = post_kick_off(
        fhir,
        "/Patient/$export",
        {"name": "_since", "valueInstant": "2026-03-01T08:00:30Z"},
        {"name": "patient", "valueReference": {"reference": f"Patient/{chosen}"}},
    )
    assert response.status_code == 202, response.text
    manifest = finish(bulk, fhir, response.headers["content-location"])
    assert deletions(fhir, manifest) == [f"Observation/{mine}"]
    assert manifest["output"] == []


def test_deleted_files_are_split_by_resources_per_file(bulk: RunningServer, fhir: httpx.Client) -> None:
    AdminClient(bulk.origin).advance(60)
    gone = list(live(bulk, "Observation"))[:6]  # PER_FILE is 4: two files
    for oid in gone:
        assert fhir.delete(f"/Observation/{oid}").status_code in (200, 204)
    manifest = export(fhir, bulk, {"_since": "2026-03-01T08:00:30Z", "_type": "Observation"})
    assert [i["count"] for i in manifest["deleted"]] == [4, 2]
    assert deletions(fhir, manifest) == [f"Observation/{oid}" for oid in gone]
    journal = AdminClient(bulk.origin).journal()
    assert [e["resource_type"] for e in journal[-2:]] == ["Bundle", "Bundle"]


# -- Expires -----------------------------------------------------------------------------------------


def test_a_completed_export_expires_after_an_hour_of_simulated_time(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    status_url = kick_off(fhir, _type="Patient")
    assert "expires" not in fhir.get(status_url).headers  # still running
    manifest = finish(bulk, fhir, status_url)
    clock = bulk.sandbox.sites["s"].site.clock
    expires = http_date(clock.start + timedelta(seconds=DELAY + 3600))
    status = fhir.get(status_url)
    file_url = manifest["output"][0]["url"]
    assert status.headers["expires"] == expires == fhir.get(file_url).headers["expires"]
    admin = AdminClient(bulk.origin)
    admin.advance(3600 - 1)
    assert fhir.get(file_url).status_code == 200  # one simulated second left
    admin.advance(1)
    for url in (status_url, file_url):
        gone = fhir.get(url)
        assert gone.status_code == 404
        assert gone.json()["issue"][0]["diagnostics"] == (
            f"Bulk export job '{status_url.rsplit('/', 1)[1]}' expired at 2026-03-01T09:00:10.000Z; "
            "its files are gone, kick off a new export"
        )
    assert fhir.delete(status_url).status_code == 404


def test_expires_after_is_a_site_setting() -> None:
    raw = bulk_scenario().raw
    site = {**raw["sites"][0], "settings": {"bulk_export": {"delay": "0s", "expires_after": "5m"}}}
    scenario = build_scenario({**raw, "sites": [site]})
    with serve_in_thread(scenario) as server, httpx.Client(base_url=server.fhir_base, timeout=30) as client:
        status_url = kick_off(client, _type="Patient")
        done = client.get(status_url)
        assert done.status_code == 200
        assert done.headers["expires"] == http_date(
            server.sandbox.sites["s"].site.clock.start + timedelta(minutes=5)
        )
        AdminClient(server.origin).advance(300)
        assert client.get(status_url).status_code == 404


def test_a_bad_expires_after_is_refused_by_the_schema_and_the_site(tmp_path: Any) -> None:
    path = tmp_path / "bad-expiry.yaml"
    path.write_text("sites:\n  - id: a\n    settings:\n      bulk_export: {expires_after: later}\n")
    assert "sites[0].settings.bulk_export.expires_after" in {p.path for p in validate_file(str(path))}
    scenario = build_scenario(
        {"name": "bad", "sites": [{"id": "a", "settings": {"bulk_export": {"expires_after": "0s"}}}]}
    )
    with pytest.raises(ValueError, match=r"site a: settings.bulk_export: bulk_export.expires_after must be"):
        Sandbox(scenario, service_factories=[])


# -- includeAssociatedData --------------------------------------------------------------------------


def provenance(target: str, by: str) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": "2026-03-01T08:00:00Z",
        "agent": [{"who": {"reference": by}}],
    }


def test_associated_provenance_is_the_latest_or_every_one_targeting_an_exported_resource(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    first, second, *_ = list(live(bulk, "Observation"))
    organization = next(iter(live(bulk, "Organization")))
    written = []
    for target in (f"Observation/{first}", f"Observation/{second}", f"Observation/{first}"):
        created = fhir.post("/Provenance", json=provenance(target, f"Organization/{organization}"))
        assert created.status_code == 201, created.text
        written.append(created.json()["id"])
    older, other, newer = written
    on_patients = set(live(bulk, "Provenance")) - set(written)  # the population's: they target Patients
    assert on_patients

    def exported_provenance(value: str, types: str = "Observation") -> list[str]:
        params = {"_type": types, "includeAssociatedData": value}
        exported = download(fhir, export(fhir, bulk, params))
        assert exported["Observation"] == list(live(bulk, "Observation").values())
        return [p["id"] for p in exported.get("Provenance", [])]

    assert exported_provenance("LatestProvenanceResources") == [other, newer]  # store order
    assert exported_provenance("RelevantProvenanceResources") == [older, other, newer]
    # Conflicting values: the least restrictive applies.
    assert exported_provenance("LatestProvenanceResources,RelevantProvenanceResources") == written
    # Provenance asked for by _type too: still only the associated ones (the IG: no others).
    assert exported_provenance("LatestProvenanceResources", "Observation,Provenance") == [other, newer]
    plain = download(fhir, export(fhir, bulk, {"_type": "Provenance"}))
    assert set(ids(plain["Provenance"])) == on_patients | set(written)


def test_a_patient_level_export_holds_the_provenance_of_its_compartment(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    chosen, other, *_ = list(live(bulk, "Patient"))
    observations = live(bulk, "Observation")
    mine = next(oid for oid, o in observations.items() if o["subject"]["reference"] == f"Patient/{chosen}")
    theirs = next(oid for oid, o in observations.items() if o["subject"]["reference"] == f"Patient/{other}")
    practitioner = next(iter(live(bulk, "Practitioner")))
    organization = f"Organization/{next(iter(live(bulk, 'Organization')))}"
    written = {}
    for key, target in (
        ("mine", f"Observation/{mine}"),
        ("theirs", f"Observation/{theirs}"),
        ("practitioner", f"Practitioner/{practitioner}"),
    ):
        created = fhir.post("/Provenance", json=provenance(target, organization))
        assert created.status_code == 201, created.text
        written[key] = created.json()["id"]
    on_chosen = {
        pid
        for pid, p in live(bulk, "Provenance").items()
        if p["target"][0]["reference"] == f"Patient/{chosen}"
    }
    response = post_kick_off(
        fhir,
        "/Patient/$export",
        {"name": "_type", "valueString": "Patient,Observation,Provenance"},
        {"name": "patient", "valueReference": {"reference": f"Patient/{chosen}"}},
    )
    assert response.status_code == 202, response.text
    exported = download(fhir, finish(bulk, fhir, response.headers["content-location"]))
    # The IG: every Provenance whose target is in the compartment, not only those on the Patient.
    assert on_chosen and ids(exported["Provenance"]) == on_chosen | {written["mine"]}


def test_an_unsupported_associated_data_value_is_a_400_or_with_lenient_handling_a_warning(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    params = {"_type": "Patient", "includeAssociatedData": "LatestProvenanceResources,_myPreset"}
    refused = fhir.get("/$export", params=params, headers=KICK_OFF)
    assert refused.status_code == 400
    issue = refused.json()["issue"][0]
    assert issue["diagnostics"].startswith("includeAssociatedData: '_myPreset' is not supported")
    assert issue["expression"] == ["includeAssociatedData"]
    lenient = {**KICK_OFF, "Prefer": "respond-async, handling=lenient"}
    accepted = fhir.get("/$export", params=params, headers=lenient)
    assert accepted.status_code == 202
    manifest = finish(bulk, fhir, accepted.headers["content-location"])
    exported = download(fhir, manifest)
    assert ids(exported["Provenance"]) == set(live(bulk, "Provenance"))  # each targets a Patient
    (item,) = manifest["error"]
    (outcome,) = [json.loads(line) for line in fhir.get(item["url"]).text.splitlines()]
    assert outcome["issue"][0]["diagnostics"] == (
        "includeAssociatedData: '_myPreset' is not supported and was ignored"
    )


# -- SMART auth on ---------------------------------------------------------------------------------


def test_a_patient_context_token_gets_only_its_patients_filtered_resources_and_deletions() -> None:
    with serve_auth(auth_scenario(clients=CLIENTS)) as server:
        admin = AdminClient(server.origin)
        store = server.sandbox.sites["s"].site.store
        mine, theirs, *_ = list(store.current("Patient"))
        by_patient: dict[str, str] = {}
        for oid, version in store.current("Observation").items():
            by_patient.setdefault(version.resource["subject"]["reference"], oid)
        writer = admin.token(client_id="confidential-app", scope="system/*.cruds")
        reader = admin.token(client_id="confidential-app", scope="patient/*.rs", patient=mine)
        write = {"Authorization": f"Bearer {writer['access_token']}"}
        read = {"Authorization": f"Bearer {reader['access_token']}"}
        admin.advance(60)
        with httpx.Client(base_url=server.fhir_base, timeout=30) as client:
            added = {}
            for pid in (mine, theirs):
                gone = by_patient[f"Patient/{pid}"]
                assert client.delete(f"/Observation/{gone}", headers=write).status_code in (200, 204)
                created = client.post("/Observation", json=heart_rate(f"Patient/{pid}"), headers=write)
                assert created.status_code == 201, created.text
                added[pid] = created.json()["id"]
            params = {"_since": "2026-03-01T08:00:30Z", "_typeFilter": "Observation?code=8867-4"}
            kicked = client.get("/$export", params=params, headers={**KICK_OFF, **read})
            assert kicked.status_code == 202, kicked.text
            admin.advance(5)
            manifest = client.get(kicked.headers["content-location"], headers=read).json()
            assert [i["type"] for i in manifest["output"]] == ["Observation"]
            lines = client.get(manifest["output"][0]["url"], headers=read).text.splitlines()
            assert [json.loads(line)["id"] for line in lines] == [added[mine]]
            (deleted,) = manifest["deleted"]
            bundles = client.get(deleted["url"], headers=read).text.splitlines()
            urls = [json.loads(b)["entry"][0]["request"]["url"] for b in bundles]
            assert urls == [f"Observation/{by_patient[f'Patient/{mine}']}"]


# -- capability and determinism --------------------------------------------------------------------


def test_the_capability_statement_lists_the_supported_export_parameters(fhir: httpx.Client) -> None:
    rest = fhir.get("/metadata").json()["rest"][0]
    documented = [op["documentation"] for op in rest["operation"] if op["name"] == "export"]
    by_type = {r["type"]: r for r in rest["resource"]}
    documented += [o["documentation"] for o in by_type["Group"]["operation"]]
    assert len(documented) == 2
    for text in documented:
        assert "_typeFilter" in text and "_elements" in text
        assert "includeAssociatedData (LatestProvenanceResources, RelevantProvenanceResources)" in text
        assert "Not supported: organizeOutputBy" in text


def test_filtered_exports_are_byte_identical_for_the_same_seed_and_requests() -> None:
    runs = []
    params = [
        ("_since", "2026-03-01T08:00:30Z"),
        ("_typeFilter", "Observation?category=vital-signs"),
        ("_elements", "Observation.valueQuantity,Patient.gender"),
    ]
    for _ in range(2):
        with (
            serve_in_thread(bulk_scenario(seed=5)) as server,
            httpx.Client(base_url=server.fhir_base, timeout=30) as client,
        ):
            observations = list(live(server, "Observation"))
            AdminClient(server.origin).advance(60)
            patient = next(iter(live(server, "Patient")))
            assert client.post("/Observation", json=heart_rate(f"Patient/{patient}")).status_code == 201
            assert client.delete(f"/Observation/{observations[0]}").status_code in (200, 204)
            manifest = export(client, server, params)
            items = manifest["output"] + manifest["deleted"]
            files = [client.get(i["url"]).content for i in items]
            runs.append(([i["url"].removeprefix(server.fhir_base) for i in items], files))
    assert runs[0] == runs[1]
    assert len(runs[0][1]) == 2 and all(runs[0][1])
