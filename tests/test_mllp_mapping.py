"""v2 to FHIR: messages sent over MLLP are read back over FHIR from the same site."""

from __future__ import annotations

import httpx
import pytest

from simulator.fhir.validation import validate_resource
from tests.mllp_support import adt, fhir, fixture, journal, mllp_site, one, orm, oru, send
from tests.test_mllp_documents import mdm
from tests.test_mllp_immunizations import vxu
from tests.test_mllp_scheduling import siu


@pytest.fixture(scope="module")
def site():
    with mllp_site({"duplicate_window": 0}) as running:
        yield running


def test_admit_creates_patient_and_encounter(site):
    server, port = site
    assert send(port, adt("A01", "MAP-A01", mrn="P100", visit="V100"))["code"] == "AA"
    patient = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|P100")
    assert patient["name"][0] == {"family": "DOE", "given": ["JOHN", "Q"], "use": "official"}
    assert patient["gender"] == "male" and patient["birthDate"] == "1970-02-14"
    assert patient["address"][0]["city"] == "SPRINGFIELD"
    encounter = one(server, "/Encounter", identifier="V100")
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "IMP"
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
    assert encounter["period"]["start"] == "2026-01-01T12:00:00+00:00"
    validate_resource(patient, "Patient")
    validate_resource(encounter, "Encounter")


def test_register_update_and_discharge(site):
    server, port = site
    assert send(port, adt("A04", "MAP-A04", mrn="P200", visit="V200", patient_class="O"))["code"] == "AA"
    encounter = one(server, "/Encounter", identifier="V200")
    assert encounter["status"] == "arrived" and encounter["class"]["code"] == "AMB"
    assert send(port, adt("A08", "MAP-A08", mrn="P200", visit="V200", family="SMITH"))["code"] == "AA"
    patient = one(server, "/Patient", identifier="P200")
    assert patient["name"][0]["family"] == "SMITH"
    assert patient["meta"]["versionId"] == "2"  # updated in place, not a second patient
    assert send(port, adt("A03", "MAP-A03", mrn="P200", visit="V200"))["code"] == "AA"
    encounter = one(server, "/Encounter", identifier="V200")
    assert encounter["status"] == "finished" and encounter["period"]["end"] == "2026-01-01T12:00:00+00:00"


def test_discharge_of_unknown_visit_is_ae(site):
    _, port = site
    ack = send(port, adt("A03", "MAP-A03-X", mrn="P201", visit="NOPE"))
    assert ack["code"] == "AE" and "no encounter has visit number NOPE" in ack["err"]
    assert "|PV1^1^19|204^" in ack["err"]


def test_merge_links_the_two_patients(site):
    server, port = site
    send(port, adt("A01", "MAP-M1", mrn="OLD1", visit="VM1"))
    send(port, adt("A01", "MAP-M2", mrn="NEW1", visit="VM2"))
    merge = (
        "MSH|^~\\&|LAB|GOODHOSP|EHR|EHRSIM|20260101120000+0000||ADT^A40^ADT_A39|MAP-A40|P|2.5\r"
        "EVN|A40|20260101120000+0000\r"
        "PID|1||NEW1^^^GOODHOSP^MR||DOE^JOHN\r"
        "MRG|OLD1^^^GOODHOSP^MR\r"
    )
    assert send(port, merge)["code"] == "AA"
    survivor = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|NEW1", active="true")
    old = fhir(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|OLD1", active="false")["entry"]
    old = next(e["resource"] for e in old if e["resource"]["id"] != survivor["id"])
    assert old["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    assert {"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"} in survivor["link"]
    assert any(i["value"] == "OLD1" and i.get("use") == "old" for i in survivor["identifier"])
    validate_resource(survivor, "Patient")


def test_merge_as_delete_is_a_site_setting():
    with mllp_site({"merge": "delete"}) as (server, port):
        send(port, adt("A01", "D-1", mrn="GONE", visit="VD1"))
        send(port, adt("A01", "D-2", mrn="KEEP", visit="VD2"))
        gone_id = one(server, "/Patient", identifier="GONE")["id"]
        merge = (
            "MSH|^~\\&|LAB|GOODHOSP|EHR|EHRSIM|20260101120000+0000||ADT^A40|D-3|P|2.5\r"
            "PID|1||KEEP^^^GOODHOSP^MR\rMRG|GONE^^^GOODHOSP^MR\r"
        )
        assert send(port, merge)["code"] == "AA"
        assert httpx.get(f"{server.fhir_base}/Patient/{gone_id}").status_code == 410


def test_merge_of_unknown_prior_patient_is_ae(site):
    _, port = site
    merge = "MSH|^~\\&|LAB|GOODHOSP|EHR|EHRSIM|20260101||ADT^A40|MAP-A40-X|P|2.5\rPID|1||NEW9^^^GOODHOSP^MR\rMRG|GHOST^^^GOODHOSP^MR\r"
    ack = send(port, merge)
    assert ack["code"] == "AE" and "|MRG^1^1|204^" in ack["err"]


def test_oru_observation_per_obx_in_a_report_per_obr(site):
    server, port = site
    message = (
        "MSH|^~\\&|LAB|GOODHOSP|EHR|EHRSIM|20260101120000+0000||ORU^R01|MAP-ORU|P|2.5.1\r"
        "PID|1||R1^^^GOODHOSP^MR||ROE^RITA||19900101|F\r"
        "OBR|1||FILL-1^GOODHOSP|24323-8^Metabolic panel^LN|||202601011100+0000||||||||||||||||||F\r"
        "OBX|1|NM|2345-7^Glucose^LN||182|mg/dl|70-105|H|||F\r"
        "OBX|2|NM|GLU-LOCAL^Local glucose^L||9.1|mmol/l||N|||P\r"
        "OBR|2||FILL-2^GOODHOSP|85353-1^Vitals^LN|||202601011100+0000||||||||||||||||||P\r"
        "OBX|1|NM|8867-4^Heart rate^LN||72|beats/min||N|||F\r"
        "OBX|2|ST|NOTE^Comment^99LOC||feels \\T\\ looks fine||||||F\r"
        "OBX|3|SN|2160-0^Creatinine^LN||<^0.5|mg/dL||L|||F\r"
    )
    assert send(port, message)["code"] == "AA"
    patient = one(server, "/Patient", identifier="R1")
    reports = fhir(server, "/DiagnosticReport", subject=f"Patient/{patient['id']}")["entry"]
    assert [r["resource"]["status"] for r in reports] == ["final", "preliminary"]
    assert [len(r["resource"]["result"]) for r in reports] == [2, 3]
    observations = {
        o["resource"]["code"]["coding"][0]["code"]: o["resource"]
        for o in fhir(server, "/Observation", subject=f"Patient/{patient['id']}")["entry"]
    }
    glucose = observations["2345-7"]
    assert glucose["valueQuantity"] == {
        "value": 182,
        "unit": "mg/dl",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    }
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["effectiveDateTime"] == "2026-01-01T11:00:00+00:00"
    local = observations["GLU-LOCAL"]
    assert local["code"]["coding"][0]["system"] == "urn:ehrsim:local:GOODHOSP:L"  # kept with its system
    assert local["status"] == "preliminary" and local["valueQuantity"]["code"] == "mmol/L"
    assert observations["8867-4"]["category"][0]["coding"][0]["code"] == "vital-signs"
    assert observations["8867-4"]["valueQuantity"]["code"] == "/min"
    assert observations["NOTE"]["valueString"] == "feels & looks fine"
    assert observations["2160-0"]["valueQuantity"]["comparator"] == "<"
    for resource in [*observations.values(), *(r["resource"] for r in reports)]:
        validate_resource(resource, resource["resourceType"])


def test_repeated_results_differ_where_their_fields_or_senders_do(site):
    """Each OBX's code, status, unit, range and flag are read once per distinct text and reused:
    a change in any of them, or a different sender of the same local code, is never missed."""
    server, port = site
    obx = "OBX|1|NM|GLU-LOCAL^Local glucose^L||{value}|{unit}|{range}|{flag}|||{status}\r"
    sent = [  # (sending facility, value, unit, range, flag, status)
        ("GOODHOSP", "5.5", "mmol/l", "3.9-5.5", "N", "F"),
        ("GOODHOSP", "9.1", "mmol/l", "3.9-5.5", "H", "F"),
        ("GOODHOSP", "9.2", "mmol/l", "3.9-6.1", "H", "P"),
        ("GOODHOSP", "166", "mg/dl", "70-105", "H", "P"),
        ("OTHERLAB", "5.5", "mmol/l", "3.9-5.5", "N", "F"),
    ]
    for n, (facility, value, unit, normal, flag, status) in enumerate(sent):
        message = (
            f"MSH|^~\\&|LAB|{facility}|EHR|EHRSIM|20260101120000+0000||ORU^R01|SHAPE-{n}|P|2.5.1\r"
            "PID|1||S1^^^GOODHOSP^MR||ROE^RITA||19900101|F\r"
            + obx.format(value=value, unit=unit, range=normal, flag=flag, status=status)
        )
        assert send(port, message)["code"] == "AA"
    patient = one(server, "/Patient", identifier="S1")
    stored = [
        e["resource"] for e in fhir(server, "/Observation", subject=f"Patient/{patient['id']}")["entry"]
    ]
    got = sorted(
        (
            o["code"]["coding"][0]["system"].rsplit(":", 2)[-2],
            o["valueQuantity"]["value"],
            o["valueQuantity"]["code"],
            o["referenceRange"][0]["text"],
            o["interpretation"][0]["coding"][0]["code"],
            o["status"],
        )
        for o in stored
    )
    assert got == [
        ("GOODHOSP", 5.5, "mmol/L", "3.9-5.5", "N", "final"),
        ("GOODHOSP", 9.1, "mmol/L", "3.9-5.5", "H", "final"),
        ("GOODHOSP", 9.2, "mmol/L", "3.9-6.1", "H", "preliminary"),
        ("GOODHOSP", 166, "mg/dL", "70-105", "H", "preliminary"),
        ("OTHERLAB", 5.5, "mmol/L", "3.9-5.5", "N", "final"),
    ]


def test_repeated_reports_differ_where_their_code_status_or_sender_does(site):
    server, port = site
    sent = [  # (sending facility, OBR-4, OBR-25 or None for a short OBR without it)
        ("GOODHOSP", "PANEL^Local panel^L", "F"),
        ("GOODHOSP", "PANEL^Local panel^L", "P"),
        ("GOODHOSP", "PANEL^Local panel^L", None),
        ("GOODHOSP", "24323-8^Metabolic panel^LN", "F"),
        ("OTHERLAB", "PANEL^Local panel^L", "F"),
    ]
    for n, (facility, code, status) in enumerate(sent):
        obr = f"OBR|1||R{n}^{facility}|{code}|||202601011100+0000"
        if status is not None:
            obr += "|" * 18 + status
        message = (
            f"MSH|^~\\&|LAB|{facility}|EHR|EHRSIM|20260101120000+0000||ORU^R01|REPORT-{n}|P|2.5.1\r"
            f"PID|1||S2^^^GOODHOSP^MR||ROE^RITA||19900101|F\r{obr}\r"
            "OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F\r"
        )
        assert send(port, message)["code"] == "AA"
    patient = one(server, "/Patient", identifier="S2")
    reports = fhir(server, "/DiagnosticReport", subject=f"Patient/{patient['id']}")["entry"]
    got = sorted(
        (
            r["resource"]["identifier"][0]["value"],
            r["resource"]["code"]["coding"][0]["system"],
            r["resource"]["status"],
        )
        for r in reports
    )
    assert got == [
        ("R0", "urn:ehrsim:local:GOODHOSP:L", "final"),
        ("R1", "urn:ehrsim:local:GOODHOSP:L", "preliminary"),
        ("R2", "urn:ehrsim:local:GOODHOSP:L", "unknown"),
        ("R3", "http://loinc.org", "final"),
        ("R4", "urn:ehrsim:local:OTHERLAB:L", "final"),
    ]


def test_results_for_a_population_patient_use_its_mrn(site):
    server, port = site
    patient = fhir(server, "/Patient", _count=1)["entry"][0]["resource"]
    mrn = patient["identifier"][0]["value"]
    message = oru("MAP-POP", mrn=mrn).replace(f"{mrn}^^^GOODHOSP^MR", f"{mrn}^^^EHRSIM^MR")
    assert send(port, message)["code"] == "AA"
    found = fhir(server, "/Observation", subject=f"Patient/{patient['id']}", code="8867-4")
    assert found["total"] >= 1


@pytest.mark.parametrize(
    ("message", "where", "why"),
    [
        (oru("BAD-1", mrn=""), "PID^1^3|101^", "PID-3 patient identifier list is empty"),
        (oru("BAD-2", code=""), "OBX^1^3|101^", "OBX-3 observation identifier is empty"),
        (oru("BAD-3", status="Q"), "OBX^1^11|103^", "OBX-11 result status 'Q'"),
        (oru("BAD-4", value_type="ZZ"), "OBX^1^2|103^", "value type 'ZZ' is not mapped"),
        (oru("BAD-5").replace("19800101|F", "19800101|Q"), "PID^1^8|103^", "administrative sex 'Q'"),
        (
            oru("BAD-6").replace("20260101115500+0000||||", "2026-01-01||||"),
            "OBR^1^7|102^",
            "not a v2 timestamp",
        ),
        (adt("A01", "BAD-7", patient_class="Z"), "PV1^1^2|103^", "PV1-2 patient class 'Z'"),
    ],
)
def test_unmappable_content_is_ae_saying_why(site, message, where, why):
    _server, port = site
    ack = send(port, message)
    assert ack["code"] == "AE", ack
    assert where in ack["err"] and why in ack["err"]


def test_nothing_is_stored_when_mapping_fails(site):
    server, port = site
    before = fhir(server, "/Patient", identifier="HALF", _summary="count")["total"]
    bad = oru("HALF-1", mrn="HALF").replace(
        "OBX|1|NM|8867-4^Heart rate^LN||72", "OBX|1|NM|8867-4^Heart rate^LN||x"
    )
    assert send(port, bad)["code"] == "AE"
    assert fhir(server, "/Patient", identifier="HALF", _summary="count")["total"] == before == 0


def test_timestamp_without_zone_uses_site_timezone_and_warns():
    with mllp_site({"timezone": "-05:00"}) as (server, port):
        message = oru("TZ-1", mrn="TZ").replace("20260101115500+0000||||", "202601011155||||")
        assert send(port, message)["code"] == "AA"
        report = one(server, "/DiagnosticReport", identifier="F-TZ-1")
        assert report["effectiveDateTime"] == "2026-01-01T11:55:00-05:00"
        entry = next(e for e in journal(server, "mllp.message") if e.get("control_id") == "TZ-1")
        assert any("no time zone" in w for w in entry["warnings"])


def test_mapping_tables_are_overridable_per_site():
    with mllp_site(
        {"mapping": {"units": {"beats/min": "{beats}/min"}, "coding_systems": {"99LOC": "urn:x"}}}
    ) as (
        server,
        port,
    ):
        assert send(port, oru("TAB-1", mrn="TAB", code="HR^Heart^99LOC"))["code"] == "AA"
        observation = one(server, "/Observation", code="urn:x|HR")
        assert observation["valueQuantity"]["code"] == "{beats}/min"


@pytest.mark.parametrize(
    "name",
    ["LAB-ORU-1.hl7", "ORU-R01-RMGEAD.hl7", "ADT-A01-01.hl7", "ADT-A08-01.hl7", "ADT04-251.hl7"],
)
def test_real_samples_are_accepted_and_mapped(site, name):
    server, port = site
    ack = send(port, fixture(name))
    assert ack["code"] == "AA", ack
    entry = [e for e in journal(server, "mllp.message") if e.get("control_id") == ack["control_id"]][-1]
    assert entry["applied"] is True and entry["written"]
    for ref in entry["written"]:
        resource = httpx.get(f"{server.fhir_base}/{ref}").json()
        validate_resource(resource, resource["resourceType"])


def test_unmapped_types_can_be_accepted_by_setting():
    with mllp_site({"accept_unmapped": True}) as (server, port):
        ack = send(port, fixture("SIU_12.hl7"))  # an ADT^A60: not mapped
        assert ack["code"] == "AA"
        entry = journal(server, "mllp.message")[-1]
        assert entry["applied"] is False and "not mapped" in entry["warnings"][-1]


@pytest.mark.parametrize(
    ("message", "resource_type", "mrn"),
    [
        (orm("ORD-NOSR", placer="PL-NOSR", mrn="NO-TYPE-1"), "ServiceRequest", "NO-TYPE-1"),
        (mdm("T01", "DOC-NODR", "DN-NODR", mrn="NO-TYPE-2"), "DocumentReference", "NO-TYPE-2"),
        (vxu("IZ-NOIMM", filler="F-NOIMM", mrn="NO-TYPE-3"), "Immunization", "NO-TYPE-3"),
        (siu("S12", "NO-APPT", placer="PL-NOAPPT", mrn="NO-TYPE-4"), "Appointment", "NO-TYPE-4"),
    ],
)
def test_a_site_without_the_family_type_answers_ae_207_and_stores_nothing(message, resource_type, mrn):
    """Orders, documents, immunizations, scheduling (mapping.IndexedHandler): a site whose
    resource_types leave the family's type out refuses the message and creates no patient."""
    adt_and_oru_only = {"resource_types": ["Patient", "Encounter", "Observation"]}
    with mllp_site(patients=1, settings=adt_and_oru_only) as (server, port):
        ack = send(port, message)
        assert ack["code"] == "AE", ack
        assert "|MSH^1^9|207^" in ack["err"] and f"does not offer {resource_type}" in ack["err"]
        assert fhir(server, "/Patient", identifier=mrn)["total"] == 0
