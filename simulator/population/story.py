"""One hospital's people and their clinical stories, as FHIR R4 resources (dicts).

`Hospital` builds the site-level resources (organization, locations, practitioners) once; each
`PatientStory` then builds one person: demographics, a problem list that fits their age, and
encounters over years with vitals series around the person's own baselines, lab panels with
reference ranges and interpretation (shifted by their conditions), notes, procedures, immunizations,
allergies, devices and provenance. Content comes from `clinical.yaml`; names and addresses from Faker.
"""

from __future__ import annotations

import base64
import copy
import functools
import inspect
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from faker import Faker

from simulator.population.messiness import MessyData
from simulator.population.spec import Conventions, PopulationSpec

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
NPI = "http://hl7.org/fhir/sid/us-npi"
OMB = "urn:oid:2.16.840.1.113883.6.238"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
VITAL = ("vital-signs", "Vital Signs")
LAB = ("laboratory", "Laboratory")
SOCIAL = ("social-history", "Social History")

Resource = dict[str, Any]
# The site's id generator: new_id(resource_type) or new_id(resource_type, category), where category is
# e.g. "vital-signs" or "laboratory" for Observations (vendors prefix ids by it: VS., LA., L-).
NewId = Callable[..., str]


@functools.cache
def clinical_tables() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parent / "clinical.yaml").read_text(encoding="utf-8"))


def coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [coding(system, code, display)], "text": display}


def weighted(rng: random.Random, items: list[dict[str, Any]]) -> dict[str, Any]:
    return rng.choices(items, weights=[i.get("weight", 1) for i in items])[0]


def category_aware(new_id: NewId) -> Callable[[str, str | None], str]:
    """Call `new_id` with the category hint only if it takes one (older id generators do not)."""
    try:
        params = inspect.signature(new_id).parameters.values()
    except (TypeError, ValueError):
        return lambda rtype, category: new_id(rtype)
    takes_two = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 2 or any(
        p.kind == p.VAR_POSITIONAL for p in params
    )
    if takes_two:
        return lambda rtype, category: new_id(rtype, category)
    return lambda rtype, category: new_id(rtype)


class Timestamps:
    """Writes instants the way the hospital does (Z or +00:00, seconds or milliseconds)."""

    def __init__(self, conventions: Conventions) -> None:
        self.spec = "milliseconds" if conventions.timestamp_precision == "milliseconds" else "seconds"
        self.zulu = conventions.instant_suffix == "Z"

    def instant(self, moment: datetime) -> str:
        text = moment.astimezone(UTC).isoformat(timespec=self.spec)
        return text.replace("+00:00", "Z") if self.zulu else text


class Hospital:
    """The site-level resources every story refers to, and what the stories share."""

    def __init__(self, spec: PopulationSpec, seed: int | str, new_id: NewId, as_of: datetime) -> None:
        self.spec = spec
        self.seed = seed
        self.as_of = as_of
        self.new_id = category_aware(new_id)
        self.conventions = spec.conventions
        self.clock = Timestamps(spec.conventions)
        self.tables = clinical_tables()
        self.fake = Faker(spec.locale)
        self.out: list[Resource] = []
        self.org: Resource = {}
        self.locations: list[Resource] = []
        self.practitioners: list[Resource] = []

    def add(self, resource: Resource, category: str | None = None) -> Resource:
        rtype = resource["resourceType"]
        # resourceType and id first: the order people expect when reading exported JSON.
        resource = {"resourceType": rtype, "id": self.new_id(rtype, category), **resource}
        self.out.append(resource)
        return resource

    def ref(self, resource: Resource, display: str | None = None) -> dict[str, str]:
        ref = {"reference": f"{resource['resourceType']}/{resource['id']}"}
        if self.conventions.reference_type:
            ref["type"] = resource["resourceType"]
        if display:
            ref["display"] = display
        return ref

    def build(self) -> list[Resource]:
        rng = random.Random(f"{self.seed}/population/hospital")
        self.fake.seed_instance(rng.getrandbits(32))
        address = {
            "line": [self.fake.street_address()],
            "city": self.fake.city(),
            "state": self.fake.state_abbr(include_territories=False),
            "postalCode": self.fake.zipcode(),
            "country": "US",
        }
        self.org = self.add(
            {
                "resourceType": "Organization",
                "meta": {"profile": [f"{US_CORE}/us-core-organization"]},
                "identifier": [{"system": NPI, "value": _npi(rng)}],
                "active": True,
                "type": [
                    concept(
                        "http://terminology.hl7.org/CodeSystem/organization-type",
                        "prov",
                        "Healthcare Provider",
                    )
                ],
                "name": self.conventions.organization,
                "telecom": [{"system": "phone", "value": self.fake.numerify("555-###-####"), "use": "work"}],
                "address": [address],
            }
        )
        for name, kind in (
            ("Main Campus", "HOSP"),
            ("Emergency Department", "ER"),
            ("Clinical Laboratory", "HLAB"),
        ):
            self.locations.append(
                self.add(
                    {
                        "resourceType": "Location",
                        "status": "active",
                        "name": f"{self.conventions.organization} {name}",
                        "type": [concept("http://terminology.hl7.org/CodeSystem/v3-RoleCode", kind, name)],
                        "address": dict(address),
                        "managingOrganization": self.ref(self.org),
                    }
                )
            )
        specialties = self.tables["specialties"]
        for n in range(self.spec.practitioners):
            family, given = self.fake.last_name(), self.fake.first_name()
            practitioner = self.add(
                {
                    "resourceType": "Practitioner",
                    "identifier": [{"system": NPI, "value": _npi(rng)}],
                    "active": True,
                    "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}],
                }
            )
            self.practitioners.append(practitioner)
            specialty = specialties[n % len(specialties)]
            self.add(
                {
                    "resourceType": "PractitionerRole",
                    "active": True,
                    "practitioner": self.ref(practitioner, f"{given} {family}"),
                    "organization": self.ref(self.org),
                    "code": [
                        concept("http://nucc.org/provider-taxonomy", specialty["code"], specialty["display"])
                    ],
                    "specialty": [
                        concept("http://nucc.org/provider-taxonomy", specialty["code"], specialty["display"])
                    ],
                    "location": [self.ref(self.locations[0])],
                }
            )
        return self.out


def _npi(rng: random.Random) -> str:
    """A 10-digit NPI with a valid Luhn check digit (prefix 80840)."""
    body = f"1{rng.randint(10_000_000, 99_999_999)}"
    digits = [int(d) for d in "80840" + body]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 0:
            digit *= 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return body + str((10 - total % 10) % 10)


class PatientStory:
    """One person's records; `build()` returns them in dependency order (patient first)."""

    def __init__(self, hospital: Hospital, index: int) -> None:
        self.h = hospital
        self.index = index
        self.rng = random.Random(f"{hospital.seed}/population/{index}")
        self.mess = MessyData(hospital.spec.messiness, hospital.conventions, hospital.seed, index)
        self.tables = hospital.tables
        self.out: list[Resource] = []
        self.shifts: dict[str, float] = {}

    def add(self, resource: Resource, category: str | None = None) -> Resource:
        rtype = resource["resourceType"]
        resource = {"resourceType": rtype, "id": self.h.new_id(rtype, category), **resource}
        self.out.append(resource)
        return resource

    def build(self) -> list[Resource]:
        h, rng = self.h, self.rng
        h.fake.seed_instance(rng.getrandbits(32))
        as_of = h.as_of
        sex = rng.choice(("male", "female"))
        self.sex = sex
        self.given = h.fake.first_name_male() if sex == "male" else h.fake.first_name_female()
        self.family = h.fake.last_name()
        age_days = rng.randint(18 * 365, 90 * 365) if rng.random() < 0.9 else rng.randint(365, 18 * 365)
        self.birth = as_of.date() - timedelta(days=age_days)
        self.age = age_days // 365
        patient = self.patient(self.given, self.family, self.index)
        subject = self.subject(patient)
        conditions = self.problem_list()
        self.baselines = self.draw_baselines()
        history_days = min(365 * h.spec.years, age_days - 1)
        low, high = h.spec.encounters
        # visits start in US daytime (13:00-22:00 UTC is 08:00-17:00 Eastern)
        midnight = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
        visits = sorted(
            midnight - timedelta(days=rng.randint(1, max(history_days, 2)), minutes=-rng.randint(780, 1320))
            for _ in range(rng.randint(low, high))
        )
        for condition in conditions:
            onset = visits[0] - timedelta(days=rng.randint(0, 2000))
            self.condition(subject, condition, onset)
            if condition.get("medication"):
                self.medication_request(subject, condition, onset + timedelta(days=rng.randint(0, 30)))
        for allergy in rng.sample(self.tables["allergies"], k=rng.choice((0, 0, 1, 1, 2))):
            self.allergy(subject, allergy, visits[0])
        panels = sorted({p for c in conditions for p in c.get("panels", ())})
        for n, start in enumerate(visits):
            kind = weighted(rng, self.tables["encounter_types"])
            encounter = self.encounter(subject, start, kind)
            enc_ref = h.ref(encounter, kind["display"])
            self.vitals(subject, enc_ref, start + timedelta(minutes=15))
            if n == 0:
                self.smoking_status(subject, enc_ref, start + timedelta(minutes=10))
            ordered = ["cmp"] if n == 0 or rng.random() < 0.45 else []
            ordered += [p for p in panels if rng.random() < 0.5]
            for panel in ordered:
                self.lab_panel(subject, enc_ref, panel, start + timedelta(minutes=40))
            if rng.random() < 0.6:
                self.note(subject, enc_ref, encounter, start + timedelta(hours=1), conditions)
        for procedure in self.eligible(self.tables["procedures"]):
            if rng.random() < 0.25:
                self.procedure(subject, procedure, rng.choice(visits))
        self.immunizations(subject, visits[0])
        for device in self.eligible(self.tables["devices"]):
            if rng.random() < 0.02 * device.get("weight", 1):
                self.device(subject, device, visits[0])
        self.provenance(patient)
        kind = self.mess.duplicate()
        if kind:
            self.duplicate_record(patient, kind, visits[-1])
        self.mess.apply(self.out)
        return self.out

    # -- the person ------------------------------------------------------------------------------
    def subject(self, patient: Resource) -> dict[str, str]:
        template = self.h.conventions.reference_display
        name = patient["name"][0]
        display = template.format(given=name["given"][0], family=name["family"]) if template else None
        return self.h.ref(patient, display)

    def patient(self, given: str, family: str, mrn_number: int) -> Resource:
        h, rng, fake = self.h, self.rng, self.h.fake
        c = h.conventions
        race = weighted(rng, self.tables["race"])
        ethnicity = weighted(rng, self.tables["ethnicity"])
        mrn = f"{c.mrn_prefix}{mrn_number + 10 ** (c.mrn_digits - 1):0{c.mrn_digits}d}"
        return self.add(
            {
                "resourceType": "Patient",
                "meta": {"profile": [f"{US_CORE}/us-core-patient"]},
                "extension": [
                    {
                        "url": f"{US_CORE}/us-core-race",
                        "extension": [
                            {"url": "ombCategory", "valueCoding": coding(OMB, race["code"], race["display"])},
                            {"url": "text", "valueString": race["display"]},
                        ],
                    },
                    {
                        "url": f"{US_CORE}/us-core-ethnicity",
                        "extension": [
                            {
                                "url": "ombCategory",
                                "valueCoding": coding(OMB, ethnicity["code"], ethnicity["display"]),
                            },
                            {"url": "text", "valueString": ethnicity["display"]},
                        ],
                    },
                    {"url": f"{US_CORE}/us-core-birthsex", "valueCode": "M" if self.sex == "male" else "F"},
                ],
                "identifier": [
                    {
                        "use": "usual",
                        "type": concept(
                            "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number"
                        ),
                        "system": c.mrn_system,
                        "value": mrn,
                        "assigner": h.ref(h.org, c.organization),
                    }
                ],
                "active": True,
                "name": [{"use": "official", "family": family, "given": [given]}],
                "telecom": [
                    {"system": "phone", "value": fake.numerify("555-###-####"), "use": "home"},
                    {
                        "system": "email",
                        "value": f"{given.lower()}.{family.lower()}{self.index}@example.org",
                        "use": "home",
                    },
                ],
                "gender": self.sex,
                "birthDate": self.birth.isoformat(),
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
                    {"language": concept("urn:ietf:bcp:47", "en-US", "English (United States)")}
                ],
                "generalPractitioner": [self.h.ref(self.h.practitioners[self.index % len(h.practitioners)])],
                "managingOrganization": h.ref(h.org),
            }
        )

    def duplicate_record(self, original: Resource, kind: str, last_visit: datetime) -> None:
        """A second registration of the same person: new MRN, a name variant, one ED visit of its own."""
        given, family = self.mess.name_variant(self.given, self.family)
        h = self.h
        twin = copy.deepcopy({k: v for k, v in original.items() if k != "id"})
        twin["name"] = [{"use": "official", "family": family, "given": [given]}]
        twin["identifier"] = [dict(original["identifier"][0])]
        number = h.spec.patients + self.index  # past every first registration's MRN
        c = h.conventions
        twin["identifier"][0]["value"] = f"{c.mrn_prefix}{number + 10 ** (c.mrn_digits - 1):0{c.mrn_digits}d}"
        twin = self.add(twin)
        if kind == "merged":
            twin["active"] = False
            twin["link"] = [{"other": h.ref(original), "type": "replaced-by"}]
            original["link"] = [{"other": h.ref(twin), "type": "replaces"}]
        subject = self.subject(twin)
        start = last_visit - timedelta(days=self.rng.randint(30, 400))
        encounter = self.encounter(subject, start, kind=self.tables["encounter_types"][2])
        self.vitals(subject, h.ref(encounter), start + timedelta(minutes=20))

    def problem_list(self) -> list[dict[str, Any]]:
        eligible = [c for c in self.tables["conditions"] if self.age >= c.get("min_age", 0)]
        wanted = min(len(eligible), self.rng.choice((0, 1, 1, 2, 2, 3)) + self.age // 30)
        chosen: list[dict[str, Any]] = []
        while len(chosen) < wanted:
            pick = weighted(self.rng, eligible)
            if pick not in chosen:
                chosen.append(pick)
        for condition in chosen:
            for code, shift in (condition.get("shifts") or {}).items():
                self.shifts[code] = self.shifts.get(code, 0.0) + shift
        return chosen

    def eligible(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [i for i in items if self.age >= i.get("min_age", 0) and i.get("gender", self.sex) == self.sex]

    def draw_baselines(self) -> dict[str, float]:
        rng, tables = self.rng, self.tables
        specs = [
            *tables["vitals"],
            tables["blood_pressure"]["systolic"],
            tables["blood_pressure"]["diastolic"],
        ]
        specs += [t for panel in tables["lab_panels"].values() for t in panel["tests"]]
        baselines = {}
        for spec in specs:
            mean = spec["mean"] + self.shifts.get(spec["loinc"], 0.0)
            if spec["loinc"] == "8302-2" and self.sex == "female":
                mean -= 12
            baselines[spec["loinc"]] = rng.gauss(mean, spec["sd"])
        return baselines

    def measure(self, spec: dict[str, Any]) -> float:
        value = self.rng.gauss(self.baselines[spec["loinc"]], spec.get("visit_sd", spec["sd"] / 2))
        value = max(value, spec["mean"] * 0.2)
        return min(value, spec["max"]) if "max" in spec else value

    # -- encounters and observations -------------------------------------------------------------
    def encounter(self, subject: dict, start: datetime, kind: dict[str, Any]) -> Resource:
        h = self.h
        location = h.locations[1] if kind["class"] == "EMER" else h.locations[0]
        practitioner = self.rng.choice(h.practitioners)
        return self.add(
            {
                "resourceType": "Encounter",
                "meta": {"profile": [f"{US_CORE}/us-core-encounter"]},
                "identifier": [
                    {"system": f"{h.conventions.mrn_system}.8", "value": str(self.rng.randint(10**6, 10**7))}
                ],
                "status": "finished",
                "class": coding(
                    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    kind["class"],
                    {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}[kind["class"]],
                ),
                "type": [
                    self.mess.concept(
                        "encounter",
                        [coding(SNOMED, kind["snomed"], kind["display"])],
                        kind["display"],
                        kind.get("short"),
                    )
                ],
                "subject": subject,
                "participant": [
                    {
                        "type": [
                            concept(
                                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "ATND",
                                "attender",
                            )
                        ],
                        "individual": h.ref(practitioner),
                    }
                ],
                "period": {
                    "start": h.clock.instant(start),
                    "end": h.clock.instant(start + timedelta(hours=kind["hours"])),
                },
                "location": [{"location": h.ref(location)}],
                "serviceProvider": h.ref(h.org),
            }
        )

    def observation(
        self,
        subject: dict,
        encounter: dict,
        when: datetime,
        category: tuple[str, str],
        code: dict[str, Any],
        **value: Any,
    ) -> Resource:
        return self.add(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [concept(OBS_CATEGORY, *category)],
                "code": code,
                "subject": subject,
                "encounter": encounter,
                "effectiveDateTime": self.h.clock.instant(when),
                **value,
            },
            category[0],
        )

    @staticmethod
    def quantity(value: float, unit: str, decimals: int) -> dict[str, Any]:
        number: float | int = round(value, decimals) if decimals else round(value)
        return {"value": number, "unit": unit, "system": UCUM, "code": unit}

    def vitals(self, subject: dict, encounter: dict, when: datetime) -> None:
        measured: dict[str, float] = {}
        for item in self.tables["vitals"]:
            value = measured[item["loinc"]] = self.measure(item)
            codings = [coding(LOINC, item["loinc"], item["display"])]
            if item.get("also"):
                codings.append(coding(LOINC, item["also"], item["display"]))
            self.observation(
                subject,
                encounter,
                when,
                VITAL,
                self.mess.concept("observation", codings, item["display"], item.get("short")),
                valueQuantity=self.quantity(value, item["unit"], item["decimals"]),
            )
        bp = self.tables["blood_pressure"]
        components = []
        for part in ("systolic", "diastolic"):
            spec = bp[part]
            components.append(
                {
                    "code": concept(LOINC, spec["loinc"], spec["display"]),
                    "valueQuantity": self.quantity(self.measure(spec), spec["unit"], 0),
                }
            )
        panel = bp["panel"]
        self.observation(
            subject,
            encounter,
            when,
            VITAL,
            self.mess.concept(
                "observation",
                [coding(LOINC, panel["loinc"], panel["display"])],
                panel["display"],
                panel["short"],
            ),
            component=components,
        )
        bmi = self.tables["bmi"]
        height_m = measured["8302-2"] / 100
        self.observation(
            subject,
            encounter,
            when,
            VITAL,
            self.mess.concept(
                "observation", [coding(LOINC, bmi["loinc"], bmi["display"])], bmi["display"], bmi["short"]
            ),
            valueQuantity=self.quantity(measured["29463-7"] / height_m**2, bmi["unit"], 1),
        )

    def smoking_status(self, subject: dict, encounter: dict, when: datetime) -> None:
        spec = self.tables["smoking"]
        answer = weighted(self.rng, spec["answers"])
        self.observation(
            subject,
            encounter,
            when,
            SOCIAL,
            concept(LOINC, spec["loinc"], spec["display"]),
            valueCodeableConcept=concept(SNOMED, answer["snomed"], answer["display"]),
        )

    def lab_panel(self, subject: dict, encounter: dict, name: str, when: datetime) -> None:
        h = self.h
        panel = self.tables["lab_panels"][name]
        results = []
        for test in panel["tests"]:
            unit = test["unit"]
            quantity = self.quantity(self.measure(test), unit, test["decimals"])
            value = quantity["value"]  # the lab flags the value it reports, not the raw reading
            flag = (
                ("L", "Low")
                if value < test["low"]
                else ("H", "High")
                if value > test["high"]
                else ("N", "Normal")
            )
            obs = self.observation(
                subject,
                encounter,
                when,
                LAB,
                self.mess.concept(
                    "observation",
                    [coding(LOINC, test["loinc"], test["display"])],
                    test["display"],
                    test.get("short"),
                ),
                valueQuantity=quantity,
                interpretation=[concept(INTERPRETATION, *flag)],
                referenceRange=[
                    {
                        "low": {"value": test["low"], "unit": unit, "system": UCUM, "code": unit},
                        "high": {"value": test["high"], "unit": unit, "system": UCUM, "code": unit},
                    }
                ],
            )
            obs["performer"] = [h.ref(h.org)]
            results.append(h.ref(obs))
        self.add(
            {
                "resourceType": "DiagnosticReport",
                "meta": {"profile": [f"{US_CORE}/us-core-diagnosticreport-lab"]},
                "status": "final",
                "category": [concept("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratory")],
                "code": self.mess.concept(
                    "observation",
                    [coding(LOINC, panel["loinc"], panel["display"])],
                    panel["display"],
                    panel.get("short"),
                ),
                "subject": subject,
                "encounter": encounter,
                "effectiveDateTime": h.clock.instant(when),
                "issued": h.clock.instant(when + timedelta(hours=2)),
                "performer": [h.ref(h.org)],
                "result": results,
            },
            "laboratory",
        )

    # -- the rest of the chart -------------------------------------------------------------------
    def note(
        self, subject: dict, encounter: dict, visit: Resource, when: datetime, conditions: list[dict]
    ) -> None:
        h = self.h
        kinds = [t for t in self.tables["note_types"] if visit["class"]["code"] in t["classes"]]
        kind = self.rng.choice(kinds)
        problems = "; ".join(c["display"] for c in conditions) or "no active problems"
        text = f"{kind['display']}. Assessment: {problems}. Plan: continue current management."
        author = next((p["individual"] for p in visit.get("participant", ())), h.ref(h.practitioners[0]))
        self.add(
            {
                "resourceType": "DocumentReference",
                "meta": {"profile": [f"{US_CORE}/us-core-documentreference"]},
                "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{_uuid(self.rng)}"}],
                "status": "current",
                "docStatus": "final",
                "type": self.mess.concept(
                    "document",
                    [coding(LOINC, kind["loinc"], kind["display"])],
                    kind["display"],
                    kind.get("short"),
                ),
                "category": [
                    concept(
                        "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                        "clinical-note",
                        "Clinical Note",
                    )
                ],
                "subject": subject,
                "date": h.clock.instant(when),
                "author": [author],
                "content": [
                    {
                        "attachment": {
                            "contentType": "text/plain",
                            "data": base64.b64encode(text.encode()).decode(),
                        },
                        "format": coding(
                            "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                            "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                            "mimeType Sufficient",
                        ),
                    }
                ],
                "context": {"encounter": [encounter], "period": {"start": h.clock.instant(when)}},
            }
        )

    def condition(self, subject: dict, condition: dict, onset: datetime) -> None:
        self.add(
            {
                "resourceType": "Condition",
                "meta": {"profile": [f"{US_CORE}/us-core-condition-problems-health-concerns"]},
                "clinicalStatus": concept(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                ),
                "verificationStatus": concept(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"
                ),
                "category": [
                    concept(
                        "http://terminology.hl7.org/CodeSystem/condition-category",
                        "problem-list-item",
                        "Problem List Item",
                    )
                ],
                "code": self.mess.concept(
                    "condition",
                    [
                        coding(SNOMED, condition["snomed"], condition["display"]),
                        coding(ICD10, condition["icd10"], condition["display"]),
                    ],
                    condition["display"],
                    condition.get("short"),
                ),
                "subject": subject,
                "onsetDateTime": onset.date().isoformat(),
                "recordedDate": self.h.clock.instant(onset + timedelta(days=self.rng.randint(0, 60))),
            }
        )

    def medication_request(self, subject: dict, condition: dict, when: datetime) -> None:
        h = self.h
        rxnorm = condition["medication"]
        self.add(
            {
                "resourceType": "MedicationRequest",
                "meta": {"profile": [f"{US_CORE}/us-core-medicationrequest"]},
                "status": "active",
                "intent": "order",
                "category": [
                    concept(
                        "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                        "outpatient",
                        "Outpatient",
                    )
                ],
                "medicationCodeableConcept": concept(RXNORM, rxnorm, self.tables["medications"][rxnorm]),
                "subject": subject,
                "authoredOn": h.clock.instant(min(when, h.as_of)),
                "requester": h.ref(self.rng.choice(h.practitioners)),
                "dosageInstruction": [{"text": "Take 1 tablet by mouth once daily"}],
            }
        )

    def allergy(self, subject: dict, allergy: dict, first_visit: datetime) -> None:
        self.add(
            {
                "resourceType": "AllergyIntolerance",
                "meta": {"profile": [f"{US_CORE}/us-core-allergyintolerance"]},
                "clinicalStatus": concept(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"
                ),
                "verificationStatus": concept(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "confirmed",
                    "Confirmed",
                ),
                "category": [allergy["category"]],
                "criticality": allergy["criticality"],
                "code": concept(SNOMED, allergy["snomed"], allergy["display"]),
                "patient": subject,
                "recordedDate": self.h.clock.instant(first_visit),
                "reaction": [
                    {
                        "manifestation": [
                            concept(SNOMED, allergy["reaction"]["snomed"], allergy["reaction"]["display"])
                        ]
                    }
                ],
            }
        )

    def immunizations(self, subject: dict, first_visit: datetime) -> None:
        h, rng = self.h, self.rng
        for vaccine in self.eligible(self.tables["immunizations"]):
            if vaccine.get("yearly"):
                dates = [
                    h.as_of - timedelta(days=365 * year + rng.randint(30, 120))
                    for year in range(h.spec.years)
                    if rng.random() < 0.55
                ]
            else:
                dates = (
                    [h.as_of - timedelta(days=rng.randint(30, 365 * h.spec.years))]
                    if rng.random() < 0.5
                    else []
                )
            for when in dates:
                self.add(
                    {
                        "resourceType": "Immunization",
                        "meta": {"profile": [f"{US_CORE}/us-core-immunization"]},
                        "status": "completed",
                        "vaccineCode": concept(CVX, vaccine["cvx"], vaccine["display"]),
                        "patient": subject,
                        "occurrenceDateTime": h.clock.instant(when),
                        "primarySource": True,
                        "location": h.ref(h.locations[0]),
                    }
                )

    def procedure(self, subject: dict, procedure: dict, when: datetime) -> None:
        self.add(
            {
                "resourceType": "Procedure",
                "meta": {"profile": [f"{US_CORE}/us-core-procedure"]},
                "status": "completed",
                "code": self.mess.concept(
                    "procedure",
                    [coding(SNOMED, procedure["snomed"], procedure["display"])],
                    procedure["display"],
                    procedure.get("short"),
                ),
                "subject": subject,
                "performedDateTime": self.h.clock.instant(when + timedelta(hours=1)),
            }
        )

    def device(self, subject: dict, device: dict, first_visit: datetime) -> None:
        rng = self.rng
        di = f"{rng.randint(10**13, 10**14 - 1)}"
        serial = f"SN{rng.randint(10**7, 10**8 - 1)}"
        self.add(
            {
                "resourceType": "Device",
                "meta": {"profile": [f"{US_CORE}/us-core-implantable-device"]},
                "udiCarrier": [
                    {
                        "deviceIdentifier": di,
                        "issuer": "http://hl7.org/fhir/NamingSystem/gs1-di",
                        "carrierHRF": f"(01){di}(21){serial}",
                    }
                ],
                "status": "active",
                "serialNumber": serial,
                "type": concept(SNOMED, device["snomed"], device["display"]),
                "patient": subject,
            }
        )

    def provenance(self, patient: Resource) -> None:
        h = self.h
        self.add(
            {
                "resourceType": "Provenance",
                "target": [h.ref(patient)],
                "recorded": h.clock.instant(h.as_of),
                "agent": [
                    {
                        "type": concept(
                            "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "author",
                            "Author",
                        ),
                        "who": h.ref(h.org),
                    }
                ],
            }
        )


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
