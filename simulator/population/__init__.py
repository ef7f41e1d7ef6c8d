"""The synthetic population: patients with a plausible clinical story, the same for the same seed.

`generate(seed, patients, as_of, new_id)` returns FHIR R4 resources (dicts) in dependency order:
organization, practitioners and location first, then each patient with encounters, vitals, labs,
conditions, medications, allergies, immunizations, procedures, reports, notes and provenance.
Clinical content comes from `clinical.yaml`; names and addresses from Faker, seeded.
"""

from __future__ import annotations

import base64
import functools
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from faker import Faker

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.7418.2.1"  # the sandbox's own MRN namespace


@functools.cache
def clinical_tables() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parent / "clinical.yaml").read_text())


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], "text": display}


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def category_code(resource: dict[str, Any]) -> str | None:
    """The first category code: the hint id formats use for per-category prefixes (VS-, LA.)."""
    for concept in resource.get("category") or []:
        for coding in concept.get("coding", []) if isinstance(concept, dict) else []:
            return coding.get("code")
    return None


def _category(code: str, display: str) -> list[dict[str, Any]]:
    return [{"coding": [_coding(OBS_CATEGORY, code, display)], "text": display}]


class _PatientStory:
    """Builds one patient's resources; a helper object keeps the many small builders readable."""

    def __init__(
        self,
        rng: random.Random,
        fake: Faker,
        as_of: datetime,
        new_id: Callable[..., str],
        org: dict,
        prac: dict,
        loc: dict,
    ) -> None:
        self.rng, self.fake, self.as_of, self.new_id = rng, fake, as_of, new_id
        self.org, self.prac, self.loc = org, prac, loc
        self.tables = clinical_tables()
        self.out: list[dict[str, Any]] = []

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        resource["id"] = self.new_id(resource["resourceType"], category_code(resource))
        self.out.append(resource)
        return resource

    def ref(self, resource: dict[str, Any], display: str | None = None) -> dict[str, str]:
        ref = {"reference": f"{resource['resourceType']}/{resource['id']}"}
        if display:
            ref["display"] = display
        return ref

    def build(self, index: int) -> list[dict[str, Any]]:
        rng = self.rng
        patient = self.patient(index)
        name = f"{patient['name'][0]['given'][0]} {patient['name'][0]['family']}"
        subject = self.ref(patient, name)
        conditions = rng.sample(self.tables["conditions"], k=rng.randint(1, 3))
        for condition in conditions:
            self.condition(subject, condition)
            self.medication_request(subject, condition)
        if rng.random() < 0.6:
            self.allergy(subject, rng.choice(self.tables["allergies"]))
        years = rng.randint(1, 4)
        for n in range(rng.randint(2, 4)):
            start = self.as_of - timedelta(days=rng.randint(5, 365 * years), hours=rng.randint(0, 8))
            encounter = self.encounter(subject, start)
            enc_ref = self.ref(encounter)
            self.vitals(subject, enc_ref, start + timedelta(minutes=15))
            if n == 0 or rng.random() < 0.5:
                self.labs(subject, enc_ref, start + timedelta(minutes=40))
            if rng.random() < 0.5:
                self.note(subject, enc_ref, start + timedelta(hours=1), conditions)
        for vaccine in rng.sample(self.tables["immunizations"], k=rng.randint(1, 2)):
            self.immunization(subject, vaccine)
        if rng.random() < 0.4:
            self.procedure(subject, rng.choice(self.tables["procedures"]))
        self.add(
            {
                "resourceType": "Provenance",
                "target": [self.ref(patient)],
                "recorded": _instant(self.as_of),
                "agent": [
                    {
                        "type": _concept(
                            "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "author",
                            "Author",
                        ),
                        "who": self.ref(self.org),
                    }
                ],
            }
        )
        return self.out

    def patient(self, index: int) -> dict[str, Any]:
        rng, fake = self.rng, self.fake
        sex = rng.choice(["male", "female"])
        given = fake.first_name_male() if sex == "male" else fake.first_name_female()
        birth = self.as_of.date() - timedelta(days=rng.randint(18 * 365, 90 * 365))
        race = rng.choice(self.tables["race"])
        ethnicity = rng.choice(self.tables["ethnicity"])
        omb = "urn:oid:2.16.840.1.113883.6.238"
        return self.add(
            {
                "resourceType": "Patient",
                "meta": {"profile": [f"{US_CORE}/us-core-patient"]},
                "extension": [
                    {
                        "url": f"{US_CORE}/us-core-race",
                        "extension": [
                            {
                                "url": "ombCategory",
                                "valueCoding": _coding(omb, race["code"], race["display"]),
                            },
                            {"url": "text", "valueString": race["display"]},
                        ],
                    },
                    {
                        "url": f"{US_CORE}/us-core-ethnicity",
                        "extension": [
                            {
                                "url": "ombCategory",
                                "valueCoding": _coding(omb, ethnicity["code"], ethnicity["display"]),
                            },
                            {"url": "text", "valueString": ethnicity["display"]},
                        ],
                    },
                    {"url": f"{US_CORE}/us-core-birthsex", "valueCode": "M" if sex == "male" else "F"},
                ],
                "identifier": [
                    {
                        "use": "usual",
                        "type": _concept(
                            "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number"
                        ),
                        "system": MRN_SYSTEM,
                        "value": f"MRN{100000 + index:07d}",
                    }
                ],
                "active": True,
                "name": [{"use": "official", "family": fake.last_name(), "given": [given]}],
                "telecom": [
                    {"system": "phone", "value": fake.numerify("555-###-####"), "use": "home"},
                    {"system": "email", "value": f"{given.lower()}{index}@example.org"},
                ],
                "gender": sex,
                "birthDate": birth.isoformat(),
                "address": [
                    {
                        "use": "home",
                        "line": [fake.street_address()],
                        "city": fake.city(),
                        "state": fake.state_abbr(include_territories=False),
                        "postalCode": fake.zipcode(),
                        "country": "US",
                    }
                ],
                "communication": [
                    {"language": _concept("urn:ietf:bcp:47", "en-US", "English (United States)")}
                ],
                "managingOrganization": self.ref(self.org),
            }
        )

    def encounter(self, subject: dict, start: datetime) -> dict[str, Any]:
        kind = self.rng.choice(self.tables["encounter_types"])
        hours = {"AMB": 1, "EMER": 5, "IMP": 72}[kind["class"]]
        return self.add(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": _coding(
                    "http://terminology.hl7.org/CodeSystem/v3-ActCode", kind["class"], kind["class"]
                ),
                "type": [_concept(SNOMED, kind["snomed"], kind["display"])],
                "subject": subject,
                "participant": [{"individual": self.ref(self.prac)}],
                "period": {"start": _instant(start), "end": _instant(start + timedelta(hours=hours))},
                "location": [{"location": self.ref(self.loc)}],
                "serviceProvider": self.ref(self.org),
            }
        )

    def _observation(
        self,
        subject: dict,
        encounter: dict,
        when: datetime,
        category: tuple[str, str],
        code: dict,
        **value: Any,
    ) -> dict[str, Any]:
        return self.add(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": _category(*category),
                "code": code,
                "subject": subject,
                "encounter": encounter,
                "effectiveDateTime": _instant(when),
                **value,
            }
        )

    def _quantity(self, value: float, unit: str, decimals: int) -> dict[str, Any]:
        number: float | int = round(value, decimals) if decimals else round(value)
        return {"value": number, "unit": unit, "system": UCUM, "code": unit}

    def vitals(self, subject: dict, encounter: dict, when: datetime) -> None:
        rng = self.rng
        vital = ("vital-signs", "Vital Signs")
        measured: dict[str, float] = {}
        for item in self.tables["vitals"]:
            value = rng.gauss(item["mean"], item["sd"])
            measured[item["loinc"]] = value
            coding = [_coding(LOINC, item["loinc"], item["display"])]
            if item.get("also"):
                coding.append(_coding(LOINC, item["also"], item["display"]))
            self._observation(
                subject,
                encounter,
                when,
                vital,
                {"coding": coding, "text": item["display"]},
                valueQuantity=self._quantity(value, item["unit"], item["decimals"]),
            )
        bp = self.tables["blood_pressure"]
        components = []
        for part in ("systolic", "diastolic"):
            spec = bp[part]
            components.append(
                {
                    "code": _concept(LOINC, spec["loinc"], spec["display"]),
                    "valueQuantity": self._quantity(rng.gauss(spec["mean"], spec["sd"]), spec["unit"], 0),
                }
            )
        self._observation(
            subject,
            encounter,
            when,
            vital,
            _concept(LOINC, bp["panel"]["loinc"], bp["panel"]["display"]),
            component=components,
        )
        weight, height = measured.get("29463-7"), measured.get("8302-2")
        if weight and height:
            bmi = self.tables["bmi"]
            self._observation(
                subject,
                encounter,
                when,
                vital,
                _concept(LOINC, bmi["loinc"], bmi["display"]),
                valueQuantity=self._quantity(weight / (height / 100) ** 2, bmi["unit"], 1),
            )

    def labs(self, subject: dict, encounter: dict, when: datetime) -> None:
        rng = self.rng
        results = []
        lab = ("laboratory", "Laboratory")
        interpretation_system = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
        for test in self.tables["labs"]["tests"]:
            value = rng.gauss(test["mean"], test["sd"])
            flag = (
                ("L", "Low")
                if value < test["low"]
                else ("H", "High")
                if value > test["high"]
                else ("N", "Normal")
            )
            obs = self._observation(
                subject,
                encounter,
                when,
                lab,
                _concept(LOINC, test["loinc"], test["display"]),
                valueQuantity=self._quantity(value, test["unit"], test["decimals"]),
                interpretation=[_concept(interpretation_system, *flag)],
                referenceRange=[
                    {
                        "low": {
                            "value": test["low"],
                            "unit": test["unit"],
                            "system": UCUM,
                            "code": test["unit"],
                        },
                        "high": {
                            "value": test["high"],
                            "unit": test["unit"],
                            "system": UCUM,
                            "code": test["unit"],
                        },
                    }
                ],
            )
            results.append(self.ref(obs))
        panel = self.tables["labs"]["panel"]
        self.add(
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "category": [_concept("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratory")],
                "code": _concept(LOINC, panel["loinc"], panel["display"]),
                "subject": subject,
                "encounter": encounter,
                "effectiveDateTime": _instant(when),
                "issued": _instant(when + timedelta(hours=2)),
                "performer": [self.ref(self.org)],
                "result": results,
            }
        )

    def note(self, subject: dict, encounter: dict, when: datetime, conditions: list[dict]) -> None:
        text = (
            "Progress note. Assessment: " + "; ".join(c["display"] for c in conditions) + ". Plan: continue."
        )
        self.add(
            {
                "resourceType": "DocumentReference",
                "status": "current",
                "type": _concept(LOINC, "11506-3", "Progress note"),
                "category": [
                    _concept(
                        "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                        "clinical-note",
                        "Clinical Note",
                    )
                ],
                "subject": subject,
                "date": _instant(when),
                "author": [self.ref(self.prac)],
                "content": [
                    {
                        "attachment": {
                            "contentType": "text/plain",
                            "data": base64.b64encode(text.encode()).decode(),
                        },
                        "format": _coding(
                            "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                            "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                            "mimeType Sufficient",
                        ),
                    }
                ],
                "context": {"encounter": [encounter], "period": {"start": _instant(when)}},
            }
        )

    def condition(self, subject: dict, condition: dict) -> None:
        onset = self.as_of.date() - timedelta(days=self.rng.randint(200, 3000))
        self.add(
            {
                "resourceType": "Condition",
                "clinicalStatus": _concept(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                ),
                "verificationStatus": _concept(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"
                ),
                "category": [
                    _concept(
                        "http://terminology.hl7.org/CodeSystem/condition-category",
                        "problem-list-item",
                        "Problem List Item",
                    )
                ],
                "code": {
                    "coding": [
                        _coding(SNOMED, condition["snomed"], condition["display"]),
                        _coding(ICD10, condition["icd10"], condition["display"]),
                    ],
                    "text": condition["display"],
                },
                "subject": subject,
                "onsetDateTime": onset.isoformat(),
                "recordedDate": onset.isoformat(),
            }
        )

    def medication_request(self, subject: dict, condition: dict) -> None:
        rxnorm = condition["medication"]
        display = self.tables["medications"][rxnorm]
        self.add(
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": _concept(RXNORM, rxnorm, display),
                "subject": subject,
                "authoredOn": (self.as_of.date() - timedelta(days=self.rng.randint(10, 900))).isoformat(),
                "requester": self.ref(self.prac),
                "dosageInstruction": [{"text": "Take as directed"}],
            }
        )

    def allergy(self, subject: dict, allergy: dict) -> None:
        self.add(
            {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": _concept(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"
                ),
                "verificationStatus": _concept(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "confirmed",
                    "Confirmed",
                ),
                "category": [allergy["category"]],
                "code": _concept(SNOMED, allergy["snomed"], allergy["display"]),
                "patient": subject,
                "reaction": [
                    {
                        "manifestation": [
                            _concept(SNOMED, allergy["reaction"]["snomed"], allergy["reaction"]["display"])
                        ]
                    }
                ],
            }
        )

    def immunization(self, subject: dict, vaccine: dict) -> None:
        when = self.as_of - timedelta(days=self.rng.randint(30, 700))
        self.add(
            {
                "resourceType": "Immunization",
                "status": "completed",
                "vaccineCode": _concept(CVX, vaccine["cvx"], vaccine["display"]),
                "patient": subject,
                "occurrenceDateTime": _instant(when),
                "primarySource": True,
            }
        )

    def procedure(self, subject: dict, procedure: dict) -> None:
        when = self.as_of - timedelta(days=self.rng.randint(30, 2000))
        self.add(
            {
                "resourceType": "Procedure",
                "status": "completed",
                "code": _concept(SNOMED, procedure["snomed"], procedure["display"]),
                "subject": subject,
                "performedDateTime": _instant(when),
            }
        )


def generate(
    seed: int | str,
    patients: int,
    as_of: date | datetime,
    new_id: Callable[..., str],
    locale: str = "en_US",
) -> list[dict[str, Any]]:
    """Resources for `patients` people, deterministic for (seed, patients, as_of, new_id sequence)."""
    if isinstance(as_of, datetime):
        moment = as_of.astimezone(UTC)
    else:
        moment = datetime(as_of.year, as_of.month, as_of.day, 12, tzinfo=UTC)
    rng = random.Random(f"{seed}/population")
    fake = Faker(locale)
    fake.seed_instance(rng.getrandbits(32))
    out: list[dict[str, Any]] = []

    def add(resource: dict[str, Any]) -> dict[str, Any]:
        resource["id"] = new_id(resource["resourceType"])
        out.append(resource)
        return resource

    org = add(
        {
            "resourceType": "Organization",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
            "active": True,
            "type": [
                _concept(
                    "http://terminology.hl7.org/CodeSystem/organization-type", "prov", "Healthcare Provider"
                )
            ],
            "name": "General Hospital (ehrsim)",
            "telecom": [{"system": "phone", "value": "555-010-0000"}],
            "address": [
                {
                    "line": ["1 Hospital Way"],
                    "city": "Springfield",
                    "state": "IL",
                    "postalCode": "62701",
                    "country": "US",
                }
            ],
        }
    )
    loc = add(
        {
            "resourceType": "Location",
            "status": "active",
            "name": "General Hospital Main Campus",
            "address": {
                "line": ["1 Hospital Way"],
                "city": "Springfield",
                "state": "IL",
                "postalCode": "62701",
            },
            "managingOrganization": {"reference": f"Organization/{org['id']}"},
        }
    )
    family, given = fake.last_name(), fake.first_name()
    prac = add(
        {
            "resourceType": "Practitioner",
            "identifier": [
                {"system": "http://hl7.org/fhir/sid/us-npi", "value": f"1{rng.randint(100000000, 999999999)}"}
            ],
            "active": True,
            "name": [{"family": family, "given": [given], "prefix": ["Dr."]}],
        }
    )
    add(
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{prac['id']}"},
            "organization": {"reference": f"Organization/{org['id']}"},
            "code": [_concept("http://nucc.org/provider-taxonomy", "207Q00000X", "Family Medicine")],
            "location": [{"reference": f"Location/{loc['id']}"}],
        }
    )
    for index in range(patients):
        story = _PatientStory(rng, fake, moment, new_id, org, prac, loc)
        out.extend(story.build(index))
    return out
