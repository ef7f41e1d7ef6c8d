"""The synthetic population: valid R4, deterministic, clinically coherent, and messy on request."""

from __future__ import annotations

import functools
import itertools
import statistics
from collections import Counter, defaultdict
from datetime import date
from typing import Any

import pytest

from simulator.fhir.errors import FHIRError
from simulator.fhir.validation import validate_resource
from simulator.population import PopulationError, PopulationSpec, generate
from simulator.population.messiness import local_code
from simulator.site import IdGenerator

AS_OF = date(2026, 1, 1)
KNOBS = (
    "missing_fields",
    "data_absent",
    "local_codes",
    "text_only_codes",
    "missing_units",
    "odd_timestamps",
    "effective_period",
    "no_clinical_status",
    "entered_in_error",
    "implausible",
    "r5_extensions",
)


def population(patients: int, mapping: dict[str, Any] | None = None, seed: int | str = 7) -> list[dict]:
    return generate(seed, patients, AS_OF, IdGenerator(seed, "site").new_id, mapping)


@functools.cache
def clean(patients: int, encounters: tuple[int, int] = (3, 9)) -> tuple[dict, ...]:
    return tuple(population(patients, {"encounters": list(encounters)}))


def of_type(resources: Any, rtype: str) -> list[dict]:
    return [r for r in resources if r["resourceType"] == rtype]


def test_every_resource_validates_against_the_r4b_models_clean_and_messy() -> None:
    messy = {"messiness": {knob: 0.4 for knob in KNOBS} | {"duplicates": 0.2, "merged": 0.2}}
    for resources in (clean(25), population(25, messy)):
        problems = []
        for resource in resources:
            try:
                validate_resource(resource)
            except FHIRError as exc:
                problems.append((resource["resourceType"], resource["id"], exc.issues))
        assert problems == []
        assert len({(r["resourceType"], r["id"]) for r in resources}) == len(resources)


def test_a_patient_has_a_clinical_story_of_about_a_hundred_resources() -> None:
    resources = clean(40)
    counts = Counter(r["resourceType"] for r in resources)
    assert 60 <= len(resources) / counts["Patient"] <= 160
    for rtype in (
        "Encounter",
        "Observation",
        "Condition",
        "MedicationRequest",
        "AllergyIntolerance",
        "Immunization",
        "Procedure",
        "DiagnosticReport",
        "DocumentReference",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "Provenance",
    ):
        assert counts[rtype] > 0, rtype
    vitals = [
        o for o in of_type(resources, "Observation") if o["category"][0]["coding"][0]["code"] == "vital-signs"
    ]
    codes = {c["code"] for o in vitals for c in o["code"]["coding"]}
    assert {"8867-4", "85354-9", "59408-5", "8310-5", "29463-7", "39156-5"} <= codes
    panel = next(o for o in vitals if o["code"]["coding"][0]["code"] == "85354-9")
    assert [c["code"]["coding"][0]["code"] for c in panel["component"]] == ["8480-6", "8462-4"]
    assert all(c["valueQuantity"]["system"] == "http://unitsofmeasure.org" for c in panel["component"])


def test_us_core_must_support_elements_are_present_by_default() -> None:
    for patient in of_type(clean(40), "Patient"):
        urls = {e["url"].rsplit("/", 1)[-1] for e in patient["extension"]}
        assert urls == {"us-core-race", "us-core-ethnicity", "us-core-birthsex"}
        identifier = patient["identifier"][0]
        assert identifier["system"].startswith("urn:oid:") and identifier["value"]
        assert patient["name"][0]["family"] and patient["gender"] and patient["birthDate"]
    for condition in of_type(clean(40), "Condition"):
        systems = [c["system"] for c in condition["code"]["coding"]]
        assert systems == ["http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"]
        assert condition["clinicalStatus"]["coding"][0]["code"] == "active"


def test_lab_interpretation_matches_the_reference_range() -> None:
    labs = [
        o for o in of_type(clean(40), "Observation") if o["category"][0]["coding"][0]["code"] == "laboratory"
    ]
    assert len(labs) > 100
    for lab in labs:
        value = lab["valueQuantity"]["value"]
        low, high = lab["referenceRange"][0]["low"]["value"], lab["referenceRange"][0]["high"]["value"]
        flag = lab["interpretation"][0]["coding"][0]["code"]
        assert flag == ("L" if value < low else "H" if value > high else "N"), lab
    flags = Counter(lab["interpretation"][0]["coding"][0]["code"] for lab in labs)
    assert flags["N"] > flags["H"] > 0 and flags["L"] > 0


def test_conditions_shape_the_numbers_diabetics_run_high_glucose() -> None:
    resources = population(300, {"encounters": [1, 2]})
    diabetic = {
        c["subject"]["reference"]
        for c in of_type(resources, "Condition")
        if any(code["code"] == "E11.9" for code in c["code"]["coding"])
    }
    glucose: dict[bool, list[float]] = defaultdict(list)
    for obs in of_type(resources, "Observation"):
        if obs["code"]["coding"][0]["code"] == "2345-7":
            glucose[obs["subject"]["reference"] in diabetic].append(obs["valueQuantity"]["value"])
    assert len(glucose[True]) > 20 and len(glucose[False]) > 100
    assert statistics.mean(glucose[True]) > statistics.mean(glucose[False]) + 30


def test_same_seed_same_resources_other_seed_other_resources() -> None:
    mapping = {"messiness": {knob: 0.2 for knob in KNOBS} | {"duplicates": 0.1}}
    first = population(15, mapping, seed="abc")
    assert population(15, mapping, seed="abc") == first
    other = population(15, mapping, seed="abd")
    assert [p["name"] for p in of_type(other, "Patient")] != [p["name"] for p in of_type(first, "Patient")]


def person_key(patient: dict) -> tuple:
    phone = next(t["value"] for t in patient["telecom"] if t["system"] == "phone")
    return patient["birthDate"], patient["gender"], phone


def test_duplicates_at_a_tenth_give_about_a_tenth_of_people_a_second_record() -> None:
    people = 500
    short = {"encounters": [1, 1], "years": 1}  # the count of records is the point, not the stories
    patients = of_type(population(people, {**short, "messiness": {"duplicates": 0.1}}), "Patient")
    records = defaultdict(list)
    for patient in patients:
        records[person_key(patient)].append(patient)
    assert len(records) == people
    twice = [group for group in records.values() if len(group) == 2]
    assert len(patients) == people + len(twice)
    assert 0.07 <= len(twice) / people <= 0.13
    for first, second in twice:
        assert first["identifier"][0]["value"] != second["identifier"][0]["value"]
        assert first["identifier"][0]["system"] == second["identifier"][0]["system"]
        assert first["name"] != second["name"]  # a typo, swapped names or capitals
        assert first["active"] and second["active"] and "link" not in second
    assert len(of_type(population(people, {**short, "messiness": {"duplicates": 0.0}}), "Patient")) == people


def test_merged_records_are_inactive_and_linked_both_ways() -> None:
    resources = population(200, {"encounters": [1, 1], "messiness": {"merged": 0.1}})
    patients = {p["id"]: p for p in of_type(resources, "Patient")}
    merged = [p for p in patients.values() if not p["active"]]
    assert 8 <= len(merged) <= 35
    for old in merged:
        assert old["link"][0]["type"] == "replaced-by"
        survivor = patients[old["link"][0]["other"]["reference"].split("/")[1]]
        assert survivor["active"] and survivor["link"] == [
            {"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"}
        ]
        assert person_key(survivor) == person_key(old)


# Which records each knob may change (it changes about `fraction` of them and nothing else).
ELIGIBLE = {
    "missing_fields": lambda r: r["resourceType"] == "Observation",
    "data_absent": lambda r: r["resourceType"] == "Observation",
    "local_codes": lambda r: r["resourceType"] == "Observation",
    "text_only_codes": lambda r: r["resourceType"] == "Observation",
    "missing_units": lambda r: r["resourceType"] == "Observation" and "valueQuantity" in r,
    "odd_timestamps": lambda r: r["resourceType"] == "Observation",
    "effective_period": lambda r: r["resourceType"] == "Observation",
    "no_clinical_status": lambda r: r["resourceType"] == "Condition",
    "entered_in_error": lambda r: r["resourceType"] == "Observation",
    "implausible": lambda r: r["resourceType"] == "Observation",
    "r5_extensions": lambda r: r["resourceType"] == "Encounter",
}


# Types a knob must leave alone entirely.
UNTOUCHED = {
    "local_codes": ("Patient", "MedicationRequest", "Immunization", "AllergyIntolerance"),
    "text_only_codes": ("Patient", "MedicationRequest", "Immunization", "AllergyIntolerance"),
    "data_absent": ("Encounter", "Condition", "DiagnosticReport"),
    "missing_units": ("Patient", "Encounter", "Condition"),
    "effective_period": ("Patient", "Encounter", "DiagnosticReport"),
    "no_clinical_status": ("Patient", "Observation", "AllergyIntolerance"),
    "r5_extensions": ("Patient", "Condition"),
}


@pytest.mark.parametrize("knob", KNOBS)
def test_each_knob_changes_about_its_fraction_of_records(knob: str) -> None:
    fraction = 0.3
    base = clean(100, (2, 4))
    messy = population(100, {"encounters": [2, 4], "messiness": {knob: fraction}})
    assert [(r["resourceType"], r["id"]) for r in messy] == [(r["resourceType"], r["id"]) for r in base]
    eligible = [(a, b) for a, b in zip(base, messy, strict=True) if ELIGIBLE[knob](a)]
    changed = sum(a != b for a, b in eligible)
    assert len(eligible) > 200
    assert fraction - 0.08 <= changed / len(eligible) <= fraction + 0.08, (knob, changed, len(eligible))
    others = [(a, b) for a, b in zip(base, messy, strict=True) if not ELIGIBLE[knob](a)]
    assert [a for a, b in others if a != b and a["resourceType"] in UNTOUCHED.get(knob, ())] == []


def test_knobs_write_the_documented_patterns() -> None:
    mapping = {"messiness": {knob: 1.0 for knob in ("data_absent", "effective_period", "missing_units")}}
    observations = of_type(population(5, mapping), "Observation")
    for obs in observations:
        assert "effectivePeriod" in obs and "effectiveDateTime" not in obs
        assert not any(k.startswith("value") for k in obs)
        if "component" in obs:
            assert all(c["dataAbsentReason"]["coding"][0]["code"] for c in obs["component"])
        else:
            assert obs["dataAbsentReason"]["coding"][0]["system"].endswith("/data-absent-reason")
    conditions = of_type(population(5, {"messiness": {"no_clinical_status": 1.0}}), "Condition")
    assert conditions and all("clinicalStatus" not in c for c in conditions)
    errors = population(5, {"messiness": {"entered_in_error": 1.0}})
    assert {o["status"] for o in of_type(errors, "Observation")} == {"entered-in-error"}
    assert {c["verificationStatus"]["coding"][0]["code"] for c in of_type(errors, "Condition")} == {
        "entered-in-error"
    }
    assert all("clinicalStatus" not in c for c in of_type(errors, "Condition"))
    r5 = of_type(population(5, {"messiness": {"r5_extensions": 1.0}}), "Encounter")
    assert all(
        e["extension"][0]["url"].startswith("http://hl7.org/fhir/5.0/StructureDefinition/") for e in r5
    )
    text_only = of_type(population(5, {"messiness": {"text_only_codes": 1.0}}), "Observation")
    assert all(
        set(o["code"]) == {"text"}
        for o in text_only
        if o["category"][0]["coding"][0]["code"] != "social-history"
    )


def test_implausible_values_include_1969_dates() -> None:
    observations = of_type(population(20, {"messiness": {"implausible": 0.5}}), "Observation")
    effective = Counter(o.get("effectiveDateTime", "")[:4] for o in observations)
    assert effective["1969"] > 10 and effective["2099"] > 10


def test_odd_timestamp_styles_are_the_configured_ones() -> None:
    mapping = {"messiness": {"odd_timestamps": 1.0, "timestamp_styles": ["local-offset"]}}
    for obs in of_type(population(5, mapping), "Observation"):
        assert obs["effectiveDateTime"][-6:] in ("-04:00", "-05:00", "-06:00", "-07:00", "-08:00")
    mapping = {"messiness": {"odd_timestamps": 1.0, "timestamp_styles": ["date-only"]}}
    assert all(len(o["effectiveDateTime"]) == 10 for o in of_type(population(5, mapping), "Observation"))


def test_naive_timestamps_are_opt_in_and_really_invalid_r4() -> None:
    mapping = {"messiness": {"odd_timestamps": 1.0, "timestamp_styles": ["naive"]}}
    obs = of_type(population(3, mapping), "Observation")[0]
    assert len(obs["effectiveDateTime"]) == 19 and obs["effectiveDateTime"][10] == "T"
    with pytest.raises(FHIRError):
        validate_resource(obs)


def test_conventions_are_data_a_vendor_profile_can_set() -> None:
    meditech_like = {
        "conventions": {
            "reference_display": "{family},{given}",
            "instant_suffix": "+00:00",
            "reference_type": True,
            "local_codes": {
                "placement": "instead",
                "user_selected": True,
                "systems": {"observation": "urn:x:obs"},
            },
        },
        "messiness": {"local_codes": 1.0},
    }
    resources = population(5, meditech_like)
    patients = {p["id"]: p for p in of_type(resources, "Patient")}
    for obs in of_type(resources, "Observation"):
        name = patients[obs["subject"]["reference"].split("/")[1]]["name"][0]
        assert obs["subject"]["display"] == f"{name['family']},{name['given'][0]}"
        assert obs["subject"]["type"] == "Patient"
        assert obs["effectiveDateTime"].endswith("+00:00")
        if obs["category"][0]["coding"][0]["code"] != "social-history":
            (only,) = obs["code"]["coding"]
            assert only["system"] == "urn:x:obs" and only["userSelected"] is True


def test_two_hospitals_have_different_local_codes_for_the_same_concept() -> None:
    def heart_rate_local_code(system: str) -> set[str]:
        mapping = {
            "conventions": {"local_codes": {"systems": {"observation": system}}},
            "messiness": {"local_codes": 1.0},
        }
        return {
            o["code"]["coding"][0]["code"]
            for o in of_type(population(3, mapping), "Observation")
            if o["code"]["coding"][1:2] and o["code"]["coding"][1]["code"] == "8867-4"
        }

    north, south = heart_rate_local_code("urn:oid:1.2.3.4"), heart_rate_local_code("urn:oid:5.6.7.8")
    assert north == {local_code("urn:oid:1.2.3.4", "8867-4")}
    assert south == {local_code("urn:oid:5.6.7.8", "8867-4")} and north != south


def test_id_generators_get_a_category_hint_when_they_take_one() -> None:
    prefixes = {"vital-signs": "VS.", "laboratory": "LA."}
    counter = itertools.count()

    def new_id(resource_type: str, category: str | None = None) -> str:
        return f"{prefixes.get(category or '', '')}{next(counter):08d}"

    resources = generate(1, 3, AS_OF, new_id)
    for obs in of_type(resources, "Observation"):
        category = obs["category"][0]["coding"][0]["code"]
        assert obs["id"].startswith(prefixes[category]) if category in prefixes else obs["id"][0].isdigit()
    reports = of_type(resources, "DiagnosticReport")
    assert reports and all(r["id"].startswith("LA.") for r in reports)
    assert all(
        r["id"][0].isdigit()
        for r in resources
        if r["resourceType"] not in ("Observation", "DiagnosticReport")
    )


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (
            {"patinets": 5},
            "population: Additional properties are not allowed ('patinets' was unexpected) (known keys:",
        ),
        (
            {"messiness": {"duplicates": 1.5}},
            "population.messiness.duplicates: 1.5 is greater than the maximum of 1",
        ),
        (
            {"messiness": {"timestamp_styles": ["sideways"]}},
            "population.messiness.timestamp_styles.0: 'sideways'",
        ),
        ({"encounters": [5, 2]}, "population.encounters: fewest (5) is more than most (2)"),
        ({"as_of": "yesterday"}, "population.as_of: 'yesterday'"),
        (
            {"conventions": {"instant_suffix": "EST"}},
            "population.conventions.instant_suffix: 'EST' is not one of",
        ),
    ],
)
def test_a_bad_population_mapping_is_a_precise_error(mapping: dict, expected: str) -> None:
    with pytest.raises(PopulationError) as caught:
        PopulationSpec.from_mapping(mapping)
    assert str(caught.value).startswith(expected)


def test_spec_round_trips_through_its_mapping() -> None:
    spec = PopulationSpec.from_mapping(
        {"patients": 3, "conventions": {"mrn_prefix": "X"}, "messiness": {"duplicates": 0.5}}
    )
    assert PopulationSpec.from_mapping(spec.to_mapping()) == spec


def test_vendor_profile_rules_pass_through_the_population_schema() -> None:
    epic_like = {
        "patients": 2,
        "conventions": {
            "reference_display": "{family}, {given}",
            "instant_suffix": "Z",
            "vars": {"tenant": "t1"},
            "local_codings": [{"resource": "Observation", "system": "urn:oid:1.2.3", "code_style": "digits"}],
            "extensions": [{"resource": "Observation", "extension": {"url": "urn:x", "valueString": "y"}}],
            "text_only_codes": [{"resource": "Observation", "fraction": 0.5}],
            "tables": {"icd9": {"I10": "401.9"}},
        },
    }
    spec = PopulationSpec.from_mapping(epic_like)
    assert spec.conventions.vendor_rules["tables"] == {"icd9": {"I10": "401.9"}}
    assert PopulationSpec.from_mapping(spec.to_mapping()) == spec
    observation = of_type(population(2, epic_like), "Observation")[0]
    assert ", " in observation["subject"]["display"]
