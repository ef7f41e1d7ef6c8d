"""FHIR Bulk Data export (`$export`, docs/bulk-data.md) over real HTTP: kick-off, polling on the
simulated clock, the manifest, NDJSON files, delete, bad input, SMART scopes and determinism."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from simulator.admin_client import AdminClient
from simulator.sandbox import Sandbox
from simulator.scenario import Scenario, build_scenario, validate_file
from simulator.testing import RunningServer, heart_rate, serve_in_thread
from tests.smart_support import CLIENTS, auth_scenario, serve_auth

START = "2026-03-01T08:00:00.000Z"
KICK_OFF = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
DELAY = 10  # the test site's bulk_export.delay, in simulated seconds
PER_FILE = 4


def bulk_scenario(seed: int = 11) -> Scenario:
    return build_scenario(
        {
            "name": "bulk-test",
            "seed": seed,
            "clock": {"start": START, "speed": 0},  # frozen: the tests move time
            "sites": [
                {
                    "id": "s",
                    "base_path": "/fhir",
                    "population": {"patients": 3, "as_of": "2026-01-01"},
                    "settings": {"bulk_export": {"delay": f"{DELAY}s", "resources_per_file": PER_FILE}},
                }
            ],
        }
    )


@contextmanager
def serve_bulk(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The test site on a `memory` or `sqlite` store: the export reads the store's `current`,
    history and indexes, which both must serve."""
    url = "memory" if store == "memory" else f"sqlite:{tmp_path_factory.mktemp('bulk') / 'ehrsim.db'}"
    with serve_in_thread(bulk_scenario(), store=url) as running:
        yield running


@contextmanager
def reset_client(server: RunningServer) -> Iterator[httpx.Client]:
    AdminClient(server.origin).reset()  # data, clock and export jobs back to the start
    with httpx.Client(base_url=server.fhir_base, timeout=30) as client:
        yield client


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def bulk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve_bulk(request.param, tmp_path_factory) as running:
        yield running


@pytest.fixture
def fhir(bulk: RunningServer) -> Iterator[httpx.Client]:
    with reset_client(bulk) as client:
        yield client


def live(server: RunningServer, rtype: str) -> dict[str, dict[str, Any]]:
    """The site's live resources of a type, from its store."""
    store = server.sandbox.sites["s"].site.store
    return {rid: v.resource for rid, v in store.current(rtype).items()}


def stored_types(server: RunningServer) -> set[str]:
    return set(server.sandbox.sites["s"].site.store.resource_types())


def kick_off(client: httpx.Client, path: str = "/$export", **params: str) -> str:
    response = client.get(path, params=params, headers=KICK_OFF)
    assert response.status_code == 202, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    return response.headers["content-location"]


def finish(server: RunningServer, client: httpx.Client, status_url: str, **headers: str) -> dict[str, Any]:
    AdminClient(server.origin).advance(DELAY)
    response = client.get(status_url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def download(client: httpx.Client, manifest: dict[str, Any], **headers: str) -> dict[str, list[dict]]:
    """Every file of the manifest, parsed: resources by type, in file order."""
    out: dict[str, list[dict]] = {}
    for item in manifest["output"]:
        response = client.get(item["url"], headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/fhir+ndjson"
        lines = response.text.splitlines()
        assert response.text.endswith("\n") and all(lines)
        resources = [json.loads(line) for line in lines]
        assert len(resources) == item["count"] <= PER_FILE
        assert {r["resourceType"] for r in resources} == {item["type"]}
        out.setdefault(item["type"], []).extend(resources)
    return out


def ids(resources: list[dict]) -> set[str]:
    return {r["id"] for r in resources}


def test_kick_off_poll_then_manifest_and_files_hold_the_whole_store(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    status_url = kick_off(fhir)
    assert status_url.startswith(bulk.fhir_base + "/_bulk/")
    first = fhir.get(status_url)
    assert first.status_code == 202
    assert (first.headers["x-progress"], first.headers["retry-after"]) == ("0% (in progress)", str(DELAY))
    AdminClient(bulk.origin).advance(DELAY / 2)
    halfway = fhir.get(status_url)
    assert halfway.status_code == 202
    assert (halfway.headers["x-progress"], halfway.headers["retry-after"]) == ("50% (in progress)", "5")

    manifest = finish(bulk, fhir, status_url)
    assert manifest["transactionTime"] == START
    assert manifest["request"] == bulk.fhir_base + "/$export"
    assert manifest["requiresAccessToken"] is False
    assert manifest["error"] == []
    exported = download(fhir, manifest)
    assert set(exported) == stored_types(bulk)
    types = [i["type"] for i in manifest["output"]]
    assert types == sorted(types)
    for rtype, resources in exported.items():
        stored = live(bulk, rtype)
        assert [r["id"] for r in resources] == list(stored)  # creation order, nothing twice
        assert resources == list(stored.values())
    counts: dict[str, int] = {}
    for item in manifest["output"]:
        counts[item["type"]] = counts.get(item["type"], 0) + item["count"]
    assert counts == {rtype: len(live(bulk, rtype)) for rtype in exported}
    busiest = max(counts, key=lambda t: counts[t])
    assert counts[busiest] > PER_FILE  # so the split into files is exercised
    names = [i["url"].rsplit("/", 1)[1] for i in manifest["output"] if i["type"] == busiest]
    assert names == [f"{busiest}-{n}.ndjson" for n in range(1, len(names) + 1)]


def test_type_filter_exports_exactly_those_types(bulk: RunningServer, fhir: httpx.Client) -> None:
    manifest = finish(bulk, fhir, kick_off(fhir, _type="Patient,Observation", _outputFormat="ndjson"))
    exported = download(fhir, manifest)
    assert set(exported) == {"Patient", "Observation"}
    assert ids(exported["Patient"]) == set(live(bulk, "Patient"))
    assert ids(exported["Observation"]) == set(live(bulk, "Observation"))
    assert manifest["request"].endswith("/$export?_type=Patient%2CObservation&_outputFormat=ndjson")


def test_since_exports_only_what_changed_after_it(bulk: RunningServer, fhir: httpx.Client) -> None:
    AdminClient(bulk.origin).advance(60)
    patient = next(iter(live(bulk, "Patient")))
    created = fhir.post("/Observation", json=heart_rate(f"Patient/{patient}"))
    assert created.status_code == 201
    manifest = finish(bulk, fhir, kick_off(fhir, _since="2026-03-01T08:00:30+00:00"))
    assert [(i["type"], i["count"]) for i in manifest["output"]] == [("Observation", 1)]
    assert ids(download(fhir, manifest)["Observation"]) == {created.json()["id"]}
    assert manifest["transactionTime"] == "2026-03-01T08:01:00.000Z"
    # Strictly after: the write's own lastUpdated as _since leaves it out.
    stamp = created.json()["meta"]["lastUpdated"]
    assert finish(bulk, fhir, kick_off(fhir, _since=stamp))["output"] == []


def patient_refs(item: Any) -> set[str]:
    """Every `Patient/...` reference anywhere in a resource."""
    if isinstance(item, dict):
        ref = item.get("reference")
        own = {ref} if isinstance(ref, str) and ref.startswith("Patient/") else set()
        return own.union(*(patient_refs(v) for v in item.values()))
    if isinstance(item, list):
        return set().union(*(patient_refs(v) for v in item))
    return set()


def test_patient_export_is_the_patients_compartments(bulk: RunningServer, fhir: httpx.Client) -> None:
    system_url, patient_url = kick_off(fhir), kick_off(fhir, "/Patient/$export")
    system = download(fhir, finish(bulk, fhir, system_url))
    exported = download(fhir, fhir.get(patient_url).json())
    patients = set(live(bulk, "Patient"))
    assert ids(exported["Patient"]) == patients
    outside = set(system) - set(exported)
    assert outside, "the population has data outside any patient's compartment"
    for rtype in outside:  # practitioners, organizations, locations: no patient in them
        assert not any(patient_refs(r) for r in system[rtype]), rtype
    for rtype, resources in exported.items():
        if rtype != "Patient":
            assert resources == system[rtype]  # every patient: all of the compartment data
            assert all(patient_refs(r) & {f"Patient/{p}" for p in patients} for r in resources)


def post_kick_off(client: httpx.Client, path: str, *parameters: dict[str, Any]) -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": list(parameters)}
    return client.post(path, json=body, headers={**KICK_OFF, "Content-Type": "application/fhir+json"})


def test_post_kick_off_takes_parameters_and_patients(bulk: RunningServer, fhir: httpx.Client) -> None:
    chosen, *_ = list(live(bulk, "Patient"))
    response = post_kick_off(
        fhir,
        "/Patient/$export",
        {"name": "_type", "valueString": "Patient,Observation"},
        {"name": "patient", "valueReference": {"reference": f"Patient/{chosen}"}},
    )
    assert response.status_code == 202, response.text
    exported = download(fhir, finish(bulk, fhir, response.headers["content-location"]))
    assert set(exported) == {"Patient", "Observation"}
    assert ids(exported["Patient"]) == {chosen}
    assert exported["Observation"] and all(
        o["subject"]["reference"] == f"Patient/{chosen}" for o in exported["Observation"]
    )


@pytest.mark.parametrize(
    ("path", "parameter", "status", "says"),
    [
        (
            "/$export",
            {"name": "patient", "valueReference": {"reference": "Patient/x"}},
            400,
            "Patient- and Group-level",
        ),
        (
            "/Patient/$export",
            {"name": "patient", "valueReference": {"reference": "Patient/nobody"}},
            404,
            "Patient/nobody is not on this server",
        ),
        (
            "/Patient/$export",
            {"name": "patient", "valueString": "nobody"},
            400,
            "valueReference Patient/[id]",
        ),
        ("/$export", {"name": "_type"}, 400, "needs one value"),
        (
            "/$export",
            {"name": "organizeOutputBy", "valueString": "Patient"},
            400,
            "'organizeOutputBy' is not supported",
        ),
    ],
)
def test_bad_post_parameters_get_a_precise_answer(
    fhir: httpx.Client, path: str, parameter: dict[str, Any], status: int, says: str
) -> None:
    response = post_kick_off(fhir, path, parameter)
    assert response.status_code == status, response.text
    assert says in response.json()["issue"][0]["diagnostics"]


def test_a_post_body_that_is_not_parameters_is_refused(fhir: httpx.Client) -> None:
    response = fhir.post(
        "/$export",
        json={"resourceType": "Patient"},
        headers={**KICK_OFF, "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 400
    assert "needs a Parameters resource" in response.json()["issue"][0]["diagnostics"]


def test_group_export_covers_only_the_members(bulk: RunningServer, fhir: httpx.Client) -> None:
    member, *others = list(live(bulk, "Patient"))
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": f"Patient/{member}"}},
            {"entity": {"reference": f"Patient/{others[0]}"}, "inactive": True},
        ],
    }
    created = fhir.post("/Group", json=group)
    assert created.status_code == 201
    manifest = finish(bulk, fhir, kick_off(fhir, f"/Group/{created.json()['id']}/$export"))
    exported = download(fhir, manifest)
    assert ids(exported["Patient"]) == {member}
    assert "Group" not in exported and "Practitioner" not in exported
    mine = f"Patient/{member}"
    observations = [o for o in live(bulk, "Observation").values() if o["subject"]["reference"] == mine]
    assert observations and exported["Observation"] == observations
    for rtype, resources in exported.items():
        if rtype != "Patient":
            assert all(mine in patient_refs(r) for r in resources), rtype


def test_writes_after_the_kick_off_are_not_in_the_files(bulk: RunningServer, fhir: httpx.Client) -> None:
    status_url = kick_off(fhir, _type="Patient,Observation")
    patient_id, before = next(iter(live(bulk, "Patient").items()))
    changed = {**before, "gender": "other" if before.get("gender") != "other" else "unknown"}
    assert fhir.put(f"/Patient/{patient_id}", json=changed).status_code == 200
    added = fhir.post("/Observation", json=heart_rate(f"Patient/{patient_id}"))
    assert added.status_code == 201
    exported = download(fhir, finish(bulk, fhir, status_url))
    assert added.json()["id"] not in ids(exported["Observation"])
    (exported_patient,) = [p for p in exported["Patient"] if p["id"] == patient_id]
    assert exported_patient == before
    assert exported_patient["meta"]["versionId"] == "1"


def test_delete_forgets_the_job_and_its_files(bulk: RunningServer, fhir: httpx.Client) -> None:
    status_url = kick_off(fhir, _type="Patient")
    manifest = finish(bulk, fhir, status_url)
    file_url = manifest["output"][0]["url"]
    deleted = fhir.delete(status_url)
    assert deleted.status_code == 202
    assert deleted.json()["issue"][0]["severity"] == "information"
    for url in (status_url, file_url):
        gone = fhir.get(url)
        assert gone.status_code == 404
        assert "No bulk export job" in gone.json()["issue"][0]["diagnostics"]
    assert fhir.delete(status_url).status_code == 404


def test_a_file_is_not_served_before_the_export_completes(bulk: RunningServer, fhir: httpx.Client) -> None:
    status_url = kick_off(fhir, _type="Patient")
    early = fhir.get(status_url + "/Patient-1.ndjson")
    assert early.status_code == 404
    assert "still in progress" in early.json()["issue"][0]["diagnostics"]
    finish(bulk, fhir, status_url)
    assert fhir.get(status_url + "/Patient-1.ndjson").status_code == 200
    missing = fhir.get(status_url + "/Patient-9.ndjson")
    assert missing.status_code == 404
    assert "has no file 'Patient-9.ndjson'" in missing.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "params", "status", "says"),
    [
        ("GET", "/$export", {"Accept": "application/fhir+json"}, {}, 400, "Prefer: respond-async"),
        ("GET", "/$export", {"Prefer": "respond-async"}, {}, 400, "Accept: application/fhir+json"),
        ("GET", "/$export", {**KICK_OFF, "Accept": "application/json"}, {}, 400, "'application/json'"),
        ("GET", "/$export", {**KICK_OFF, "Accept": "application/fhir+xml"}, {}, 406, "XML is not supported"),
        ("GET", "/$export", KICK_OFF, {"_type": "Patient,Nope"}, 400, "'Nope' is not a resource type"),
        ("GET", "/$export", KICK_OFF, {"_type": ""}, 400, "'_type' is empty"),
        ("GET", "/$export", KICK_OFF, {"_since": "2026-01-01"}, 400, "is not a FHIR instant"),
        ("GET", "/$export", KICK_OFF, {"_since": "yesterday"}, 400, "is not a FHIR instant"),
        ("GET", "/$export", KICK_OFF, {"_since": "2026-13-01T00:00:00Z"}, 400, "_since"),
        ("GET", "/$export", KICK_OFF, {"_outputFormat": "text/csv"}, 400, "_outputFormat 'text/csv'"),
        ("GET", "/$export", KICK_OFF, {"organizeOutputBy": "Patient"}, 400, "'organizeOutputBy' is not"),
        ("GET", "/$export", KICK_OFF, {"colour": "red"}, 400, "Unknown $export parameter 'colour'"),
        ("GET", "/$export", KICK_OFF, [("_type", "Patient"), ("_type", "Condition")], 400, "more than once"),
        ("POST", "/$export", KICK_OFF, {}, 400, "The request body is empty"),
        ("POST", "/$export", KICK_OFF, {"_type": "Patient"}, 400, "in the Parameters body, not the URL"),
        (
            "GET",
            "/Patient/$export",
            KICK_OFF,
            {"_type": "Practitioner"},
            400,
            "not in the Patient compartment",
        ),
        (
            "GET",
            "/Observation/$export",
            KICK_OFF,
            {},
            400,
            "Operation $export is not supported on Observation",
        ),
        ("GET", "/Group/no-such-group/$export", KICK_OFF, {}, 404, "Group/no-such-group is not known"),
        ("GET", "/_bulk/0123456789abcdef", {}, {}, 404, "No bulk export job '0123456789abcdef'"),
        ("PUT", "/_bulk/0123456789abcdef", {}, {}, 405, "allowed: GET, DELETE"),
        ("GET", "/_bulk/a/b/c", {}, {}, 404, "No bulk export endpoint"),
    ],
)
def test_bad_requests_get_a_precise_operation_outcome(
    fhir: httpx.Client,
    method: str,
    path: str,
    headers: dict[str, str],
    params: Any,
    status: int,
    says: str,
) -> None:
    response = fhir.request(method, path, headers=headers, params=params)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert says in outcome["issue"][0]["diagnostics"]


def test_journal_names_the_interactions_and_a_fault_can_target_the_status_poll(
    bulk: RunningServer, fhir: httpx.Client
) -> None:
    admin = AdminClient(bulk.origin)
    admin.add_fault(
        {
            "id": "poll-down",
            "match": {"interaction": "bulk-status"},
            "schedule": {"times": 1},
            "action": {"type": "status", "status": 503},
        }
    )
    status_url = kick_off(fhir, _type="Patient")
    assert fhir.get(status_url).status_code == 503
    manifest = finish(bulk, fhir, status_url)
    download(fhir, manifest)
    entries = admin.journal()
    seen = [(e["interaction"], e["resource_type"], e["status"], tuple(e["faults"])) for e in entries]
    assert seen[-4:] == [
        ("operation", None, 202, ()),
        ("bulk-status", None, 503, ("poll-down",)),
        ("bulk-status", None, 200, ()),
        ("bulk-file", "Patient", 200, ()),
    ]
    assert entries[-4]["response_headers"]["content-location"] == status_url


def test_capability_statement_advertises_the_export_operations(fhir: httpx.Client) -> None:
    statement = fhir.get("/metadata").json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    rest = statement["rest"][0]
    assert [(o["name"], o["definition"]) for o in rest["operation"]] == [
        ("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export")
    ]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert [o["name"] for o in by_type["Patient"]["operation"]] == ["everything", "export"]
    assert [o["name"] for o in by_type["Group"]["operation"]] == ["export"]


def test_same_seed_same_job_urls_and_identical_files() -> None:
    runs = []
    for _ in range(2):
        with (
            serve_in_thread(bulk_scenario(seed=5)) as server,
            httpx.Client(base_url=server.fhir_base, timeout=30) as client,
        ):
            manifest = finish(server, client, kick_off(client))
            files = [client.get(i["url"]).content for i in manifest["output"]]
            urls = [i["url"].removeprefix(server.fhir_base) for i in manifest["output"]]
            runs.append((urls, files, manifest["transactionTime"]))
    assert runs[0] == runs[1]
    assert runs[0][1] and all(runs[0][1])


def test_bulk_export_settings_are_checked_by_the_schema_and_the_site(tmp_path: Any) -> None:
    path = tmp_path / "bad-bulk.yaml"
    path.write_text(
        "sites:\n  - id: a\n    settings:\n      bulk_export: {delay: soon, resources_per_file: 0, speed: 2}\n"
    )
    problems = validate_file(str(path))
    paths = {p.path for p in problems}
    assert {
        "sites[0].settings.bulk_export.delay",
        "sites[0].settings.bulk_export.resources_per_file",
    } <= paths
    assert any("speed" in p.message for p in problems)


# -- SMART auth on -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured() -> Iterator[RunningServer]:
    scenario = auth_scenario(clients=CLIENTS)
    with serve_auth(scenario) as running:
        yield running


def bearer(server: RunningServer, scope: str) -> dict[str, str]:
    token = AdminClient(server.origin).token(client_id="confidential-app", scope=scope)
    return {"Authorization": f"Bearer {token['access_token']}"}


def test_with_auth_every_step_needs_a_token_whose_scopes_cover_the_types(secured: RunningServer) -> None:
    AdminClient(secured.origin).reset()
    everything = bearer(secured, "system/*.read")
    patients_only = bearer(secured, "system/Patient.rs")
    with httpx.Client(base_url=secured.fhir_base, timeout=30) as client:
        assert client.get("/$export", headers=KICK_OFF).status_code == 401
        refused = client.get(
            "/$export", params={"_type": "Observation"}, headers={**KICK_OFF, **patients_only}
        )
        assert refused.status_code == 403
        assert "do not allow read of Observation" in refused.json()["issue"][0]["diagnostics"]

        status_url = kick_off_with(client, everything)
        assert client.get(status_url).status_code == 401
        assert client.get(status_url, headers=patients_only).status_code == 403
        AdminClient(secured.origin).advance(5)  # the default delay is 2 s
        manifest = client.get(status_url, headers=everything).json()
        assert manifest["requiresAccessToken"] is True
        observation_file = next(i["url"] for i in manifest["output"] if i["type"] == "Observation")
        assert client.get(observation_file).status_code == 401
        assert client.get(observation_file, headers=everything).status_code == 200

        # Without _type, a narrower grant exports just what it covers.
        narrow_url = kick_off_with(client, patients_only)
        AdminClient(secured.origin).advance(5)
        narrow = client.get(narrow_url, headers=patients_only).json()
        assert {i["type"] for i in narrow["output"]} == {"Patient"}
        patient_file = narrow["output"][0]["url"]
        lines = client.get(patient_file, headers=patients_only).text.splitlines()
        assert len(lines) == len(secured.sandbox.sites["s"].site.store.current("Patient"))


def kick_off_with(client: httpx.Client, token: dict[str, str]) -> str:
    response = client.get("/$export", headers={**KICK_OFF, **token})
    assert response.status_code == 202, response.text
    return response.headers["content-location"]


def test_a_patient_context_token_exports_only_that_patients_compartment(secured: RunningServer) -> None:
    AdminClient(secured.origin).reset()
    store = secured.sandbox.sites["s"].site.store
    patient = next(iter(store.current("Patient")))
    token = AdminClient(secured.origin).token(
        client_id="confidential-app", scope="patient/*.rs", patient=patient
    )
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    with httpx.Client(base_url=secured.fhir_base, timeout=30) as client:
        status_url = kick_off_with(client, headers)
        AdminClient(secured.origin).advance(5)
        manifest = client.get(status_url, headers=headers).json()
        exported: dict[str, list[dict]] = {}
        for item in manifest["output"]:
            lines = client.get(item["url"], headers=headers).text.splitlines()
            exported.setdefault(item["type"], []).extend(json.loads(line) for line in lines)
    assert ids(exported["Patient"]) == {patient}
    assert len(store.current("Patient")) > 1
    observations = [v.resource for v in store.current("Observation").values()]
    mine = [o for o in observations if o["subject"]["reference"] == f"Patient/{patient}"]
    assert mine and len(mine) < len(observations)
    assert exported["Observation"] == mine


def test_a_bad_bulk_export_setting_stops_the_site_from_loading() -> None:
    scenario = build_scenario(
        {"name": "bad", "sites": [{"id": "a", "settings": {"bulk_export": {"delay": "soon"}}}]}
    )
    with pytest.raises(ValueError, match=r"site a: settings.bulk_export: bulk_export.delay: 'soon'"):
        Sandbox(scenario, service_factories=[])


def test_data_latency_hides_writes_from_an_export_until_they_are_visible() -> None:
    scenario = bulk_scenario()
    scenario = build_scenario(
        {**scenario.raw, "data_latency": [{"resource_type": "Observation", "delay": "5m"}]}
    )
    with serve_in_thread(scenario) as server, httpx.Client(base_url=server.fhir_base, timeout=30) as client:
        patient = next(iter(live(server, "Patient")))
        written = client.post("/Observation", json=heart_rate(f"Patient/{patient}")).json()["id"]
        early = download(client, finish(server, client, kick_off(client, _type="Observation")))
        assert written not in ids(early["Observation"])
        assert len(early["Observation"]) == len(live(server, "Observation")) - 1
        AdminClient(server.origin).advance("5m")
        later = download(client, finish(server, client, kick_off(client, _type="Observation")))
        assert written in ids(later["Observation"])
