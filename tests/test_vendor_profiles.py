"""Profiles as data: loading, validation, hospital variants (two-hospitals) and vendor upgrades."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from simulator.admin_client import AdminClient
from simulator.fhir.bundles import SearchSnapshot
from simulator.fhir.paging import PAGING_STYLES, PageRequest
from simulator.scenario import ScenarioError, build_scenario
from simulator.site import IdGenerator
from simulator.testing import serve_in_thread
from simulator.vendors.fidelity import NO_AUTH
from simulator.vendors.profile import load_profile, validate_profile

DERRICK = "eq081-VQEgP8drUUqCWzHfw3"
VITALS = {"patient": DERRICK, "category": "vital-signs"}


def test_profiles_load_and_extend() -> None:
    epic, upgraded = load_profile("epic"), load_profile("epic-2026-08")
    assert epic.site["settings"]["paging"] == upgraded.site["settings"]["paging"] == "session-id"
    assert (epic.site["settings"]["default_count"], upgraded.site["settings"]["default_count"]) == (1000, 100)
    assert upgraded.quirks["outcome"] == epic.quirks["outcome"]


def test_a_bad_profile_names_the_file_the_path_and_the_problem() -> None:
    bad = {"profile": "acme", "site": {"settings": {"paging": "pagination-by-carrier-pigeon"}}}
    with pytest.raises(
        ScenarioError,
        match=r"^acme\.yaml: at site/settings/paging: 'pagination-by-carrier-pigeon' is not one of",
    ):
        validate_profile(bad, "acme.yaml")
    with pytest.raises(ScenarioError, match="unknown vendor profile 'acme'"):
        build_scenario({"sites": [{"id": "x", "profile": "acme"}]})
    with pytest.raises(ScenarioError, match="needs 'extends"):
        build_scenario({"sites": [{"id": "x", "profile": {"quirks": {}}}]})
    with pytest.raises(
        ScenarioError, match=r"at quirks/required_parameters/Encounter: .any_of. is a required property"
    ):
        build_scenario(
            {
                "sites": [
                    {
                        "id": "x",
                        "profile": {
                            "extends": "epic",
                            "quirks": {"required_parameters": {"Encounter": {"status": 400}}},
                        },
                    }
                ]
            }
        )


def test_profile_population_and_auth_sections_use_the_scenario_schemas() -> None:
    bad_population = {"extends": "oracle-health", "site": {"population": {"conventions": {"bogus": 1}}}}
    with pytest.raises(ScenarioError, match=r"at site/population/conventions: .*'bogus' was unexpected"):
        build_scenario({"sites": [{"id": "x", "profile": bad_population}]})
    bad_rule = {
        "extends": "epic",
        "site": {"population": {"conventions": {"local_codings": [{"code_style": "digits"}]}}},
    }
    with pytest.raises(ScenarioError, match=r"local_codings/0: 'system' is a required property"):
        build_scenario({"sites": [{"id": "x", "profile": bad_rule}]})


def test_id_formats_are_data_and_deterministic() -> None:
    formats = {
        "default": {"style": "numeric", "digits": 8},
        "Observation": {"style": "uuid", "category_prefix": {"vital-signs": "VS.", "laboratory": "LA."}},
        "Condition": {"style": "opaque", "length": 70, "prefix": "e", "suffix": "3"},
    }
    first, second = IdGenerator(7, "site", formats), IdGenerator(7, "site", formats)
    ids = [
        first.new_id("Patient"),
        first.new_id("Observation", "vital-signs"),
        first.new_id("Observation", "laboratory"),
    ]
    ids += [first.new_id("Observation", "social-history"), first.new_id("Condition"), first.new_id("Patient")]
    assert ids == [
        second.new_id(*args)
        for args in [
            ("Patient",),
            ("Observation", "vital-signs"),
            ("Observation", "laboratory"),
            ("Observation", "social-history"),
            ("Condition",),
            ("Patient",),
        ]
    ]
    assert re.fullmatch(r"\d{8}", ids[0]) and int(ids[5]) > int(ids[0])
    assert ids[1].startswith("VS.") and ids[2].startswith("LA.") and re.fullmatch(r"[0-9a-f-]{36}", ids[3])
    assert re.fullmatch(r"e[A-Za-z0-9.-]{68}3", ids[4])  # beyond FHIR's 64, as some Epic ids are
    with pytest.raises(ValueError, match="unknown id style 'roman'"):
        IdGenerator(7, "site", {"default": {"style": "roman"}}).new_id("Patient")


@pytest.mark.parametrize("style", sorted(PAGING_STYLES))
def test_every_paging_style_round_trips(style: str) -> None:
    paging = PAGING_STYLES[style]
    snapshot = SearchSnapshot(
        refs=[("Observation", f"VS.{n}") for n in range(300)],
        query=None,
        self_params=[("patient", "1"), ("category", "vital-signs")],
        self_path="Observation",
    )
    url = paging.link("http://h/fhir", snapshot, "0123456789abcdef", 150, 50, "next")
    items = list(httpx.URL(url).params.multi_items())
    assert paging.parse(items) == PageRequest("0123456789abcdef", 150, 50)
    assert paging.parse([("patient", "1")]) is None


def test_two_hospitals_same_vendor_different_setup() -> None:
    with serve_in_thread("two-hospitals", options=NO_AUTH) as server, httpx.Client(timeout=30) as client:
        north, south = server.site_base("north"), server.site_base("south")
        patients = {
            name: client.get(f"{base}/Patient", params={"gender": "female"}).json()
            for name, base in (("north", north), ("south", south))
        }
        north_patient = patients["north"]["entry"][0]["resource"]
        south_patient = patients["south"]["entry"][0]["resource"]
        assert (
            north_patient["id"].startswith("e")
            and north_patient["id"].endswith("3")
            and len(north_patient["id"]) == 24
        )
        assert (
            south_patient["id"].startswith("t")
            and south_patient["id"].endswith("0")
            and len(south_patient["id"]) == 28
        )
        assert north_patient["identifier"][0]["system"] == "urn:oid:1.2.840.114350.1.13.324.2.7.5.737384.14"
        assert south_patient["identifier"][0]["system"] == "urn:oid:1.2.840.114350.1.13.511.3.7.5.737384.14"
        query = {"patient": north_patient["id"], "category": "vital-signs"}
        vitals = client.get(f"{north}/Observation", params=query).json()
        systems = {c["system"] for e in vitals["entry"] for c in e["resource"]["code"]["coding"]}
        assert "urn:oid:1.2.840.114350.1.13.324.2.7.2.707679" in systems
        refused = client.get(f"{south}/Observation", params={**query, "patient": south_patient["id"]})
        assert refused.status_code == 400
        assert "date range at this organization" in refused.json()["issue"][0]["diagnostics"]
        dated = client.get(
            f"{south}/Observation",
            params={"patient": south_patient["id"], "category": "vital-signs", "date": "ge2000-01-01"},
        )
        assert dated.status_code == 200
        south_systems = {c["system"] for e in dated.json()["entry"] for c in e["resource"]["code"]["coding"]}
        assert "urn:oid:1.2.840.114350.1.13.511.3.7.2.707679" in south_systems
        assert not any("324" in s for s in south_systems)
        assert client.get(f"{north}/Patient/{DERRICK}").status_code == 404  # no published test patients


def test_vendor_upgrade_switches_profile_at_the_scheduled_time() -> None:
    with (
        serve_in_thread("vendor-upgrade", options=NO_AUTH) as server,
        httpx.Client(base_url=server.fhir_base, timeout=30) as fhir,
    ):
        admin = AdminClient(server.origin)
        assert fhir.get("/Patient", params={"family": "Lin"}).status_code == 200
        before = fhir.get("/Observation", params=VITALS).json()
        assert len(before["entry"]) == 1000
        admin.advance("1h")
        assert fhir.get("/Patient", params={"family": "Lin"}).status_code == 200  # not yet
        admin.advance("61m")
        refused = fhir.get("/Patient", params={"family": "Lin"})
        assert refused.status_code == 400
        assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "59159"
        full = {"family": "Lin", "given": "Derrick", "birthdate": "1973-06-03"}
        assert [e["resource"]["id"] for e in fhir.get("/Patient", params=full).json()["entry"]] == [DERRICK]
        after = fhir.get("/Observation", params=VITALS).json()
        assert len(after["entry"]) == 100  # same data, smaller pages
        assert (
            fhir.get(
                "/Observation", params={"patient": DERRICK, "code": "http://loinc.org|8867-4"}
            ).status_code
            == 400
        )
        probe = json.loads(
            (Path(__file__).parent / "fixtures/vendor-captures/epic/write-probe-Observation.json").read_text()
        )
        created = fhir.post(
            "/Observation",
            json=probe["_canonical_submitted"],
            headers={"content-type": "application/fhir+json"},
        )
        assert created.status_code == 201
        assert re.fullmatch(r"g[A-Za-z0-9.-]{50}5", created.json()["id"])
        switches = [e for e in admin.journal() if e.get("kind") == "profile_switch"]
        assert [(e["site"], e["profile"]) for e in switches] == [("epic", "epic-2026-08")]


@pytest.mark.parametrize("vendor", ["epic", "oracle-health"])
def test_sandbox_patients_are_the_vendors_documented_ones(vendor: str) -> None:
    documented = json.loads(
        (Path(__file__).parent / "fixtures/vendor-captures" / vendor / "sandbox_patients.json").read_text()
    )
    ours = {p["id"]: p for p in load_profile(vendor).sandbox_patients}
    assert set(ours) == {p["id"] for p in documented["patients"]}
    for patient in documented["patients"]:
        mine = ours[patient["id"]]
        assert patient["display_name"].split()[0] in (mine["given"].split()[0], mine["family"])
        assert mine.get("birthDate") == patient["birthDate"]
        assert mine.get("gender") == patient["gender"]


def test_vendor_refusals_say_which_rule_in_the_journal() -> None:
    with serve_in_thread("epic", options=NO_AUTH) as server, httpx.Client(base_url=server.fhir_base) as fhir:
        assert fhir.get("/Patient").status_code == 400
        assert fhir.get("/Spaceship").status_code == 404
        assert fhir.delete(f"/Patient/{DERRICK}").status_code == 405
        assert fhir.post("/Observation", json={"resourceType": "Observation"}).status_code == 400
        entries = AdminClient(server.origin).journal()
    assert [e.get("vendor_rule") for e in entries if e.get("status", 0) >= 400] == [
        "required-parameters",
        "unknown-type-page",
        "interaction-not-supported",
        "required-fields",
    ]


def test_issue_templates_fill_fields_and_survive_stray_braces() -> None:
    from simulator.vendors.outcomes import fill

    assert fill("Unknown parameter: {NAME}. {type} {missing}", {"name": "shoe-size", "type": "Patient"}) == (
        "Unknown parameter: SHOE-SIZE. Patient {missing}"
    )
    assert fill('{"a": 1} {0}', {"name": "x"}) == '{"a": 1} {0}'
