"""`ehrsim generate`: byte-identical exports, the served ids, and files another server can load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from simulator.cli import main
from simulator.scenario import load_scenario
from simulator.testing import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_same_seed_gives_a_byte_identical_export(tmp_path: Path) -> None:
    common = ("generate", "--scenario", "messy-data", "--patients", "12", "--format", "ndjson")
    first = run_cli(*common, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    assert "site messy:" in first.stdout
    assert run_cli(*common, "--out", str(tmp_path / "b")).returncode == 0
    assert run_cli(*common, "--seed", "43", "--out", str(tmp_path / "c")).returncode == 0
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert "messy/Patient.ndjson" in a and "messy/Observation.ndjson" in a
    assert a == b
    assert a["messy/Patient.ndjson"] != c["messy/Patient.ndjson"]


def test_ndjson_has_one_type_per_file_and_every_line_parses(tmp_path: Path) -> None:
    assert (
        main(
            [
                "generate",
                "--scenario",
                "default",
                "--patients",
                "4",
                "--format",
                "ndjson",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    files = list((tmp_path / "default").glob("*.ndjson"))
    assert len(files) >= 12
    for path in files:
        lines = path.read_bytes().splitlines()
        assert lines
        assert {json.loads(line)["resourceType"] for line in lines} == {path.stem}
    assert len((tmp_path / "default" / "Patient.ndjson").read_bytes().splitlines()) == 4


def test_export_carries_the_ids_the_server_serves(tmp_path: Path) -> None:
    scenario = load_scenario("messy-data")
    scenario.sites[0].patients = 6
    assert main(["generate", "--scenario", "messy-data", "--patients", "6", "--out", str(tmp_path)]) == 0
    exported = set()
    for path in (tmp_path / "messy").glob("patient-*.json"):
        bundle = json.loads(path.read_bytes())
        exported |= {
            e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        }
    with serve_in_thread(scenario) as server:
        page = httpx.get(f"{server.fhir_base}/Patient", params={"_count": 100}, timeout=10).json()
    served = {e["resource"]["id"] for e in page["entry"]}
    assert len(exported) >= 6
    assert served == exported


def test_bundles_load_into_an_empty_server(tmp_path: Path) -> None:
    assert main(["generate", "--scenario", "default", "--patients", "3", "--out", str(tmp_path / "out")]) == 0
    files = sorted((tmp_path / "out" / "default").glob("*.json"))
    assert [f.name for f in files] == [
        "hospital.json",
        "patient-00001.json",
        "patient-00002.json",
        "patient-00003.json",
    ]
    empty = tmp_path / "empty.yaml"
    empty.write_text(
        "name: empty\nseed: 1\nsites:\n  - id: other\n    base_path: /fhir\n    population: {patients: 0}\n"
    )
    scenario = load_scenario(str(empty))
    with serve_in_thread(scenario) as server, httpx.Client(base_url=server.fhir_base, timeout=30) as client:
        before = server.sandbox.sites["other"].site.store.count()
        loaded = 0
        for path in files:
            bundle = json.loads(path.read_bytes())
            assert bundle["type"] == "transaction"
            assert all(e["request"]["method"] == "PUT" for e in bundle["entry"])
            response = client.post("", json=bundle, headers={"Content-Type": "application/fhir+json"})
            assert response.status_code == 200, response.text[:500]
            assert response.json()["type"] == "transaction-response"
            loaded += len(bundle["entry"])
        assert server.sandbox.sites["other"].site.store.count() == before + loaded
        patient = json.loads(files[1].read_bytes())["entry"][0]["resource"]
        assert client.get(f"/Patient/{patient['id']}").json()["name"] == patient["name"]
        observations = client.get("/Observation", params={"patient": patient["id"], "_count": 1000}).json()
        expected = sum(
            1
            for e in json.loads(files[1].read_bytes())["entry"]
            if e["resource"]["resourceType"] == "Observation"
            and e["resource"]["subject"]["reference"] == f"Patient/{patient['id']}"
        )
        assert observations["total"] == expected > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (["--site", "nowhere"], "no site nowhere in scenario 'default' (sites: default)"),
        (["--patients", "-1"], "--patients must be 0 or more"),
    ],
)
def test_bad_generate_arguments_are_precise_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["generate", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_bad_population_in_a_scenario_file_names_the_file_and_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nseed: 1\nsites:\n  - id: north\n    population:\n      patients: 2\n"
        "      messiness: {duplicates: 2}\n"
    )
    result = run_cli("generate", "--scenario", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    # the scenario schema names the file, the line and the path
    assert (
        f"{bad}:7: sites[0].population.messiness.duplicates: 2 is greater than the maximum of 1"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    unknown_format = run_cli("generate", "--format", "xml", "--out", str(tmp_path / "out"))
    assert unknown_format.returncode == 2 and "invalid choice: 'xml'" in unknown_format.stderr


def test_messy_data_is_served_and_searchable_without_errors() -> None:
    scenario = load_scenario("messy-data")
    scenario.sites[0].patients = 30
    queries = [
        ("Patient", {"name": "a", "_count": 50}),
        ("Patient", {"active": "false"}),
        ("Patient", {"birthdate": "lt1970-01-01"}),
        ("Observation", {"date": "ge2024-01-01", "_sort": "-date", "_count": 200}),
        ("Observation", {"date": "lt1970-01-02"}),
        ("Observation", {"code": "http://loinc.org|8310-5", "value-quantity": "lt30"}),
        ("Observation", {"category": "vital-signs", "status": "entered-in-error"}),
        ("Condition", {"clinical-status": "active", "_count": 200}),
        ("Encounter", {"date": "ge2023", "_sort": "date"}),
        ("DocumentReference", {"type": "http://loinc.org|11506-3"}),
    ]
    with serve_in_thread(scenario) as server, httpx.Client(base_url=server.fhir_base, timeout=30) as client:
        totals = {}
        for rtype, params in queries:
            response = client.get(f"/{rtype}", params=params)
            assert response.status_code == 200, (rtype, params, response.text[:300])
            assert response.json()["resourceType"] == "Bundle"
            totals[(rtype, tuple(params.items()))] = response.json().get("total")
        inactive = totals[("Patient", (("active", "false"),))]
        assert inactive and inactive > 0  # merged records are there to be found


def references(item: object) -> list[str]:
    if isinstance(item, dict):
        found = [item["reference"]] if isinstance(item.get("reference"), str) else []
        return found + [r for value in item.values() for r in references(value)]
    if isinstance(item, list):
        return [r for value in item for r in references(value)]
    return []


def test_each_bundle_is_self_contained_given_the_hospital_bundle(tmp_path: Path) -> None:
    from simulator.population import generate
    from simulator.population.export import write_population
    from simulator.site import IdGenerator

    resources = generate(
        3, 40, None, IdGenerator(3, "x").new_id, {"messiness": {"duplicates": 0.2, "merged": 0.2}}
    )
    counts = write_population(resources, tmp_path, "bundle")
    assert sum(counts.values()) == len(resources)
    bundles = {p.name: json.loads(p.read_bytes()) for p in tmp_path.glob("*.json")}
    hospital = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundles.pop("hospital.json")["entry"]
    }
    merged_pairs = 0
    for name, bundle in bundles.items():
        own = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
        dangling = {r for e in bundle["entry"] for r in references(e["resource"])} - own - hospital
        assert dangling == set(), name
        patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
        # One bundle per person: exactly one Patient, except when that person's record was merged,
        # where the surviving and the replaced record travel together (and link each other).
        if any(p.get("link") for p in patients):
            merged_pairs += 1
            assert len(patients) == 2, name
            assert {p["link"][0]["type"] for p in patients} == {"replaces", "replaced-by"}
        else:
            assert len(patients) == 1, name
    all_patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert merged_pairs > 0
    assert len(bundles) == len(all_patients) - merged_pairs


def test_reset_brings_back_the_same_population() -> None:
    scenario = load_scenario("messy-data")
    scenario.sites[0].patients = 5
    with serve_in_thread(scenario) as server, httpx.Client(timeout=30) as client:

        def snapshot() -> list[tuple[str, str]]:
            page = client.get(f"{server.fhir_base}/Patient", params={"_count": 100, "_sort": "_id"}).json()
            return [(e["resource"]["id"], json.dumps(e["resource"]["name"])) for e in page["entry"]]

        before = snapshot()
        created = client.post(
            f"{server.fhir_base}/Patient",
            json={"resourceType": "Patient", "name": [{"family": "Extra"}]},
            headers={"Content-Type": "application/fhir+json"},
        )
        assert created.status_code == 201
        assert len(snapshot()) == len(before) + 1
        assert client.post(f"{server.admin}/reset").status_code == 200
        assert snapshot() == before
