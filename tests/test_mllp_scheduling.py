"""Scheduling over MLLP (SIU^S12-S17, S26) becomes Appointments, read back over FHIR from the same site."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.fhir.validation import validate_resource
from simulator.scenario import check_semantics
from tests.mllp_support import (
    assert_refused,
    fhir,
    fixture,
    journal,
    mllp_scenario,
    mllp_site,
    msh,
    one,
    orm,
    send,
)

PLACER = "urn:ehrsim:appointment:placer:GOODHOSP"
FILLER = "urn:ehrsim:appointment:filler:GOODHOSP"
START, END = "20260301090000+0000", "20260301093000+0000"
AIG = {1: "1", 3: "US-1^Ultrasound 1^L", 4: "EQ^Equipment^L", 14: "Booked"}  # the messages' AIG fields


def segment(name: str, fields: dict[int, str]) -> str:
    values = [""] * (max(fields) if fields else 0)
    for n, value in fields.items():
        values[n - 1] = value
    return "|".join([name, *values])


def siu(
    trigger: str,
    control_id: str,
    placer: str = "",
    filler: str = "",
    mrn: str = "S1",
    status: str = "",
    start: str = START,
    end: str = END,
    sch: dict[int, str] | None = None,
    note: str = "Bring your glasses",
    resources: bool = True,
    ais: dict[int, str] | None = None,
    version: str = "2.5",
) -> str:
    """An SIU message: SCH (ids in namespace GOODHOSP, `status` in SCH-25, `sch` other fields), TQ1
    with `start`/`end` (none when `start` is empty), an NTE, PID and one RGS group with an AIS, AIG,
    AIL and AIP (each Booked) unless `resources` is false."""

    def ident(value: str) -> str:
        return f"{value}^GOODHOSP" if value else ""

    sch_fields = {
        1: ident(placer),
        2: ident(filler),
        7: "FOLLOWUP^Follow-up visit^HL70276",
        8: "Normal^Routine^HL70277",
        25: status,
        **(sch or {}),
    }
    segments = [msh(f"SIU^{trigger}^SIU_{trigger}", control_id, version=version), segment("SCH", sch_fields)]
    if start:
        segments.append(segment("TQ1", {7: start, 8: end}))
    if note:
        segments.append(f"NTE|1||{note}")
    segments.append(f"PID|1||{mrn}^^^GOODHOSP^MR||DOE^JANE||19800101|F")
    if resources:
        segments += [
            "RGS|1|A",
            segment("AIS", {1: "1", 3: "11429006^Consultation^SCT", 10: "Booked", **(ais or {})}),
            "NTE|1||Fast from midnight",
            segment("AIG", AIG),
            segment("AIL", {1: "1", 3: "CLINIC^Room 4^^GOODHOSP", 12: "Booked"}),
            segment(
                "AIP", {1: "1", 3: "1234^SMITH^ANNA", 4: "ATND^attender^v3-ParticipationType", 12: "Booked"}
            ),
        ]
    return "\r".join(segments) + "\r"


@pytest.fixture(scope="module")
def site():
    with mllp_site() as running:  # duplicate detection on (the default window)
        yield running


def appointment(server, placer: str) -> dict:
    return one(server, "/Appointment", identifier=f"{PLACER}|{placer}")


def book(port, placer: str, filler: str = "", **kwargs) -> None:
    ack = send(port, siu("S12", f"BOOK-{placer}", placer=placer, filler=filler, **kwargs))
    assert ack["code"] == "AA", ack


def test_booking_creates_a_readable_appointment(site):
    server, port = site
    book(port, "PL-NEW", filler="FI-NEW", mrn="SIU-P1")
    patient = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|SIU-P1")
    found = one(server, "/Appointment", patient=f"Patient/{patient['id']}")
    assert appointment(server, "PL-NEW")["id"] == found["id"]
    assert one(server, "/Appointment", identifier=f"{FILLER}|FI-NEW")["id"] == found["id"]
    assert [(i["type"]["coding"][0]["code"], i["value"]) for i in found["identifier"]] == [
        ("PLAC", "PL-NEW"),
        ("FILL", "FI-NEW"),
    ]
    assert found["status"] == "booked"
    assert found["start"] == "2026-03-01T09:00:00+00:00" and found["end"] == "2026-03-01T09:30:00+00:00"
    assert found["minutesDuration"] == 30
    assert found["reasonCode"][0]["coding"][0]["code"] == "FOLLOWUP"
    assert found["appointmentType"]["coding"][0]["code"] == "Normal"
    assert found["serviceType"][0]["coding"] == [
        {"system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation"}
    ]
    assert found["description"] == "Bring your glasses"
    assert found["comment"] == "Fast from midnight"
    patient_part, equipment, room, doctor = found["participant"]
    assert patient_part == {"actor": {"reference": f"Patient/{patient['id']}"}, "status": "accepted"}
    assert (
        equipment["actor"] == {"display": "Ultrasound 1"}
        and equipment["type"][0]["coding"][0]["code"] == "EQ"
    )
    assert room == {"actor": {"display": "CLINIC Room 4 GOODHOSP"}, "status": "accepted"}
    assert doctor["actor"] == {"display": "ANNA SMITH", "identifier": {"value": "1234"}}
    assert doctor["type"][0]["coding"][0]["code"] == "ATND" and doctor["status"] == "accepted"
    validate_resource(found, "Appointment")
    # The actor search finds it by the patient participant too.
    assert one(server, "/Appointment", actor=f"Patient/{patient['id']}")["id"] == found["id"]


@pytest.mark.parametrize(
    ("trigger", "status"),
    [
        ("S13", "booked"),
        ("S14", "booked"),  # a modification keeps the status
        ("S15", "cancelled"),
        ("S16", "cancelled"),
        ("S17", "entered-in-error"),
        ("S26", "noshow"),
    ],
)
def test_each_event_sets_the_status(site, trigger, status):
    server, port = site
    placer = f"PL-EV-{trigger}"
    book(port, placer)
    assert send(port, siu(trigger, f"EV-{trigger}", placer=placer))["code"] == "AA"
    found = appointment(server, placer)
    assert found["status"] == status
    assert "cancelationReason" not in found  # SCH-6 is empty
    validate_resource(found, "Appointment")


@pytest.mark.parametrize(
    ("code", "status"),
    [("Complete", "fulfilled"), ("STARTED", "checked-in"), ("Dc", "cancelled"), ("Pending", "pending")],
)
def test_a_valued_sch25_decides_the_status(site, code, status):
    server, port = site
    placer = f"PL-25-{code}"
    book(port, placer)
    assert send(port, siu("S14", f"S25-{code}", placer=placer, status=code))["code"] == "AA"
    assert appointment(server, placer)["status"] == status


def test_booking_with_a_waitlist_status(site):
    server, port = site
    book(port, "PL-WAIT", status="Waitlist")
    assert appointment(server, "PL-WAIT")["status"] == "waitlist"


def test_reschedule_moves_the_times_and_replaces_the_resources(site):
    server, port = site
    book(port, "PL-RES", filler="FI-RES")
    message = siu("S13", "RES-2", filler="FI-RES", start="20260302140000+0100", end="20260302150000+0100")
    message = message.replace("1234^SMITH^ANNA", "5678^JONES^BOB")
    assert send(port, message)["code"] == "AA"
    found = appointment(server, "PL-RES")
    assert found["start"] == "2026-03-02T14:00:00+01:00" and found["end"] == "2026-03-02T15:00:00+01:00"
    assert found["minutesDuration"] == 60
    doctors = [p["actor"]["display"] for p in found["participant"] if p.get("type", [{}])[0].get("coding")]
    assert "BOB JONES" in doctors and "ANNA SMITH" not in doctors
    assert len(found["participant"]) == 4


def test_a_modification_without_times_or_resources_keeps_them(site):
    server, port = site
    book(port, "PL-KEEP")
    before = appointment(server, "PL-KEEP")
    change = siu("S14", "KEEP-2", placer="PL-KEEP", start="", resources=False, note="Now in building B")
    assert send(port, change)["code"] == "AA"
    after = appointment(server, "PL-KEEP")
    assert (after["start"], after["end"]) == (before["start"], before["end"])
    assert after["participant"] == before["participant"]
    assert after["description"] == "Now in building B"
    assert after["meta"]["versionId"] != before["meta"]["versionId"]


def test_a_change_without_pid_keeps_the_patient_and_a_new_pid_replaces_it(site):
    server, port = site
    book(port, "PL-PID", mrn="SIU-P6")
    patient = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|SIU-P6")
    no_pid = siu("S14", "PID-2", placer="PL-PID", resources=False)
    no_pid = "\r".join(seg for seg in no_pid.split("\r") if not seg.startswith("PID|"))
    assert send(port, no_pid)["code"] == "AA"
    found = appointment(server, "PL-PID")
    assert [p["actor"].get("reference") for p in found["participant"]].count(f"Patient/{patient['id']}") == 1
    assert len(found["participant"]) == 4  # the resources kept too
    # A modification for another patient (the booking named the wrong one) moves it, resources kept.
    assert send(port, siu("S14", "PID-3", placer="PL-PID", mrn="SIU-P7", resources=False))["code"] == "AA"
    other = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|SIU-P7")
    found = appointment(server, "PL-PID")
    references = [p["actor"].get("reference") for p in found["participant"]]
    assert references[0] == f"Patient/{other['id']}" and f"Patient/{patient['id']}" not in references
    assert len(found["participant"]) == 4


def test_reschedule_with_a_start_only_keeps_the_length(site):
    server, port = site
    book(port, "PL-LEN")
    moved = siu("S13", "LEN-2", placer="PL-LEN", start="20260305100000+0000", end="")
    assert send(port, moved)["code"] == "AA"
    found = appointment(server, "PL-LEN")
    assert (found["start"], found["end"]) == ("2026-03-05T10:00:00+00:00", "2026-03-05T10:30:00+00:00")


def test_cancellation_reason_comes_from_sch6(site):
    server, port = site
    book(port, "PL-CXL")
    cancel = siu("S15", "CXL-2", placer="PL-CXL", sch={6: "PATREQ^Patient request^L"})
    assert send(port, cancel)["code"] == "AA"
    found = appointment(server, "PL-CXL")
    assert found["status"] == "cancelled"
    assert found["cancelationReason"]["coding"][0]["code"] == "PATREQ"
    assert found["cancelationReason"]["text"] == "Patient request"
    validate_resource(found, "Appointment")


def test_times_from_sch11_when_there_is_no_tq1(site):
    server, port = site
    timing = "1^^30^202603041000+0000^202603041045+0000"
    book(port, "PL-TQ", start="", sch={11: timing})
    found = appointment(server, "PL-TQ")
    assert (found["start"], found["end"], found["minutesDuration"]) == (
        "2026-03-04T10:00:00+00:00",
        "2026-03-04T10:45:00+00:00",
        45,
    )


@pytest.mark.parametrize(
    ("ais", "end", "minutes"),
    [
        ({4: "20260306080000+0000", 7: "90", 8: "min^Minutes^ISO+"}, "2026-03-06T09:30:00+00:00", 90),
        ({4: "20260306080000+0000", 7: "2", 8: "h"}, "2026-03-06T10:00:00+00:00", 120),
        ({4: "20260306080000+0000", 7: "20"}, "2026-03-06T08:20:00+00:00", 20),  # no unit: minutes
    ],
)
def test_times_from_the_service_and_its_duration(site, ais, end, minutes):
    server, port = site
    placer = f"PL-AIS-{minutes}"
    book(port, placer, start="", ais=ais)
    found = appointment(server, placer)
    assert (found["start"], found["end"], found["minutesDuration"]) == (
        "2026-03-06T08:00:00+00:00",
        end,
        minutes,
    )


def test_a_filler_id_assigned_later_joins_and_finds_the_appointment(site):
    server, port = site
    book(port, "PL-LATE")
    assert send(port, siu("S14", "LATE-2", placer="PL-LATE", filler="FI-LATE"))["code"] == "AA"
    assert send(port, siu("S26", "LATE-3", filler="FI-LATE"))["code"] == "AA"
    found = one(server, "/Appointment", identifier=f"{FILLER}|FI-LATE")
    assert found["status"] == "noshow" and appointment(server, "PL-LATE")["id"] == found["id"]


def test_an_appointment_created_over_fhir_is_cancelled_over_mllp(site):
    server, port = site
    book(port, "PL-REST-PATIENT", mrn="SIU-P5")  # tests share the site, not their order: own patient
    patient = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|SIU-P5")
    body = {
        "resourceType": "Appointment",
        "status": "booked",
        "identifier": [{"system": FILLER, "value": "FI-REST"}],
        "start": "2026-04-01T09:00:00+00:00",
        "end": "2026-04-01T09:15:00+00:00",
        "participant": [{"actor": {"reference": f"Patient/{patient['id']}"}, "status": "accepted"}],
    }
    created = httpx.post(f"{server.fhir_base}/Appointment", json=body)
    assert created.status_code == 201, created.text
    assert send(port, siu("S15", "REST-CXL", filler="FI-REST"))["code"] == "AA"
    assert httpx.get(f"{server.fhir_base}/Appointment/{created.json()['id']}").json()["status"] == "cancelled"


def test_booking_points_at_a_known_order(site):
    server, port = site
    assert send(port, orm("SIU-ORD", placer="ORD-FOR-APPT", mrn="SIU-P2"))["code"] == "AA"
    order = one(server, "/ServiceRequest", identifier="urn:ehrsim:placer:GOODHOSP|ORD-FOR-APPT")
    book(port, "PL-ORD", mrn="SIU-P2", sch={26: "ORD-FOR-APPT^GOODHOSP", 27: "NO-SUCH-ORDER^GOODHOSP"})
    found = one(server, "/Appointment", **{"based-on": f"ServiceRequest/{order['id']}"})
    assert found["basedOn"] == [{"reference": f"ServiceRequest/{order['id']}"}]
    entry = next(e for e in journal(server, "mllp.message") if e.get("control_id") == "BOOK-PL-ORD")
    assert any("SCH-27 order number NO-SUCH-ORDER" in w for w in entry["warnings"])


def test_unknown_resource_status_and_unit_are_warnings(site):
    server, port = site
    ais = {4: "20260307080000+0000", 7: "3", 8: "fortnights", 10: "Maybe"}
    # No usable duration and no end: a booked appointment has both start and end or neither, so AE.
    ack = send(port, siu("S12", "WARN-1", placer="PL-WARN", start="", ais=ais))
    assert ack["code"] == "AE" and "|AIS^1^4|101^" in ack["err"], ack
    assert "no end time or duration" in ack["err"]
    assert send(port, siu("S12", "WARN-2", placer="PL-WARN", ais=ais))["code"] == "AA"  # TQ1 has both
    found = appointment(server, "PL-WARN")
    assert found["participant"][0]["status"] == "accepted" and found["minutesDuration"] == 30
    warnings = next(e for e in journal(server, "mllp.message") if e.get("control_id") == "WARN-2")["warnings"]
    assert any("AIS-8 duration unit 'fortnights' is not known" in w for w in warnings), warnings
    assert any("AIS-10 filler status 'Maybe'" in w for w in warnings), warnings


def test_the_patient_status_follows_the_first_service(site):
    server, port = site
    book(port, "PL-PEND", ais={10: "Pending"})
    assert appointment(server, "PL-PEND")["participant"][0]["status"] == "tentative"


@pytest.mark.parametrize(
    ("message", "where", "why"),
    [
        (
            msh("SIU^S12^SIU_S12", "SIU-BAD-1") + "\rPID|1||B1^^^GOODHOSP^MR\r",
            "|SCH^1^|100^",
            "SIU S12 needs an SCH segment",
        ),
        (
            "\r".join(
                seg for seg in siu("S12", "SIU-BAD-1B", placer="PL-B1B").split("\r") if seg[:4] != "PID|"
            ),
            "|PID^1^|100^",
            "S12 needs a PID segment",
        ),
        (siu("S12", "SIU-BAD-2"), "|SCH^1^2|101^", "SCH-1 placer and SCH-2 filler appointment ids are empty"),
        (siu("S12", "SIU-BAD-3", placer="PL-B3", start="", end=""), "|SCH^1^11|101^", "no start time: TQ1-7"),
        (
            siu("S12", "SIU-BAD-4", placer="PL-B4", start="", end="").replace(
                "\rNTE|1||Bring", "\rTQ1|1\rNTE|1||Bring"
            ),
            "|TQ1^1^7|101^",
            "no start time",
        ),
        (siu("S12", "SIU-BAD-5", placer="PL-B5", start="2026-03-01"), "|TQ1^1^7|102^", "not a v2 timestamp"),
        (
            siu("S12", "SIU-BAD-6", placer="PL-B6", start="20260301"),
            "|TQ1^1^7|102^",
            "not precise to the minute",
        ),
        (
            siu("S12", "SIU-BAD-6B", placer="PL-B6B", start="20260231090000+0000"),
            "|TQ1^1^7|102^",
            "'20260231090000+0000' is not a date and time that exists",
        ),
        (
            siu("S12", "SIU-BAD-6C", placer="PL-B6C", end="20260301096100+2500"),
            "|TQ1^1^8|102^",
            "is not a date and time that exists",
        ),
        (
            siu("S12", "SIU-BAD-7", placer="PL-B7", end="20260301080000+0000"),
            "|TQ1^1^8|102^",
            "is before the start",
        ),
        (siu("S12", "SIU-BAD-8", placer="PL-B8", end=""), "|TQ1^1^7|101^", "no end time or duration"),
        (
            siu("S12", "SIU-BAD-9", placer="PL-B9", status="Blocked"),
            "|SCH^1^25|103^",
            "SCH-25 filler status 'Blocked' is not mapped to an Appointment status (table 0278",
        ),
        (
            siu("S12", "SIU-BAD-10B", placer="PL-B10B", end="", sch={9: "1e400"}),
            "|SCH^1^9|102^",
            "SCH-9 duration ends past the year 9999",
        ),
        (
            siu("S12", "SIU-BAD-10C", placer="PL-B10C").replace(
                segment("AIG", AIG), segment("AIG", {**AIG, 8: START, 11: "99999999999", 12: "d"})
            ),
            "|AIG^1^11|102^",
            "AIG-11 duration ends past the year 9999",
        ),
        (
            siu("S12", "SIU-BAD-10", placer="PL-B10", end="", sch={9: "half an hour"}),
            "|SCH^1^9|102^",
            "duration 'half an hour' is not a number",
        ),
        (
            siu("S15", "SIU-BAD-11", placer="PL-NONE", filler="FI-NONE"),
            "|SCH^1^2|204^",
            "no appointment has id FI-NONE",
        ),
        (siu("S26", "SIU-BAD-12", placer="PL-NONE"), "|SCH^1^1|204^", "needs an existing appointment"),
        (
            siu("S12", "SIU-BAD-13", placer="PL-B13", start="", ais={4: "20260301", 7: "5"}),
            "|AIS^1^4|102^",
            "not precise to the minute",
        ),
    ],
)
def test_bad_scheduling_messages_are_ae_saying_why(site, message, where, why):
    assert_refused(*site, message, where, why)


def test_a_second_booking_under_a_taken_id_is_ae_205(site):
    server, port = site
    book(port, "PL-TAKEN", filler="FI-TAKEN", mrn="SIU-P3")
    ack = send(port, siu("S12", "TAKEN-2", filler="FI-TAKEN", mrn="SIU-P4"))
    assert ack["code"] == "AE" and "ERR||SCH^1^2|205^" in ack["err"], ack
    assert "is already booked" in ack["err"]
    assert fhir(server, "/Patient", identifier="SIU-P4")["total"] == 0  # the message stored nothing


def test_a_v23_message_gets_err1(site):
    _, port = site
    ack = send(port, siu("S15", "SIU-23", placer="PL-NOPE", version="2.3"))
    assert ack["code"] == "AE" and ack["err"].startswith("ERR|SCH^1^1^204&")


def test_duplicate_control_id_is_not_applied_twice(site):
    server, port = site
    book(port, "PL-DUP")
    noshow = siu("S26", "DUP-NOSHOW", placer="PL-DUP")
    assert send(port, noshow)["code"] == "AA"
    version = appointment(server, "PL-DUP")["meta"]["versionId"]
    assert send(port, noshow)["code"] == "AA"  # the resend gets its ACK again
    assert appointment(server, "PL-DUP")["meta"]["versionId"] == version
    entries = [e for e in journal(server, "mllp.message") if e.get("control_id") == "DUP-NOSHOW"]
    assert [e.get("duplicate", False) for e in entries] == [False, True]
    # The booking itself resent under a new MSH-10 is a second S12 for a taken id.
    ack = send(port, siu("S12", "BOOK-PL-DUP-AGAIN", placer="PL-DUP"))
    assert ack["code"] == "AE" and "|SCH^1^1|205^" in ack["err"]


@pytest.fixture(scope="module")
def samples():
    with mllp_site() as running:
        yield running


# The public samples of one series share their appointment ids (12345 / 36996) and MSH-10s, so each
# runs from the scenario's data again: its series' S12, then itself.
@pytest.mark.parametrize(
    ("name", "status", "participants"),
    [
        ("SIU-S12-01.hl7", "booked", 4),
        ("SIU-S13-01.hl7", "booked", 4),
        ("SIU-S14-01.hl7", "booked", 4),
        ("SIU-S15-01.hl7", "cancelled", 4),
        ("SIU-S16-01.hl7", "cancelled", 4),
        ("SIU-S17-01.hl7", "entered-in-error", 4),
        ("SIU-S26-01.hl7", "noshow", 4),
        ("SIU-S12-02.hl7", "booked", 9),  # three RGS groups: 2 AIG, 3 AIL, 3 AIP and the patient
        ("SIU-S13-02.hl7", "booked", 9),
        ("SIU-S14-02.hl7", "booked", 9),
        ("SIU-S15-02.hl7", "cancelled", 9),
        ("SIU-S16-02.hl7", "cancelled", 9),
        ("SIU-S17-02.hl7", "entered-in-error", 9),
        ("SIU-S26-02.hl7", "noshow", 9),
        ("SIU-S12_1.hl7", "booked", 11),  # 3 AIG, 4 AIL, 3 AIP; no AIS-4 or duration, but a TQ1
    ],
)
def test_real_samples_map_end_to_end(samples, name, status, participants):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    series = "SIU-S12" + name[7:]
    if name != series:
        assert send(port, fixture(series))["code"] == "AA"
    ack = send(port, fixture(name))
    assert ack["code"] == "AA", ack
    entry = [e for e in journal(server, "mllp.message") if e.get("control_id") == ack["control_id"]][-1]
    assert entry["applied"] is True and any(r.startswith("Appointment/") for r in entry["written"])
    for ref in entry["written"]:
        resource = httpx.get(f"{server.fhir_base}/{ref}").json()
        validate_resource(resource, resource["resourceType"])
    found = one(server, "/Appointment", identifier="urn:ehrsim:appointment:filler:GHHSFacility|36996")
    assert found["status"] == status and len(found["participant"]) == participants
    assert (
        one(server, "/Appointment", identifier="urn:ehrsim:appointment:placer:GHHSFacility|12345")["id"]
        == (found["id"])
    )
    patient = found["participant"][0]["actor"]["reference"]
    assert one(server, "/Appointment", patient=patient)["id"] == found["id"]


def test_real_sample_dates_and_services():
    with mllp_site() as (server, port):
        assert send(port, fixture("SIU-S12-01.hl7"))["code"] == "AA"
        found = one(server, "/Appointment", identifier="12345")
        assert (found["start"], found["end"], found["minutesDuration"]) == (
            "2021-09-24T09:30:00+02:15",
            "2021-09-24T10:20:00+02:15",
            50,
        )
        assert found["serviceType"][0]["coding"][0] == {
            "system": "http://snomed.info/sct",
            "code": "76164006",
            "display": "Biopsy of colon (procedure)",
        }
        assert found["description"] == "Appointment booked for emergency procedure"
        # The S14 sample moves the procedure from Room01 to Room02.
        assert send(port, fixture("SIU-S14-01.hl7"))["code"] == "AA"
        rooms = [
            p["actor"].get("display") for p in one(server, "/Appointment", identifier="12345")["participant"]
        ]
        assert "055 Room02 GH Clinic" in rooms and "055 Room01 GH Clinic" not in rooms


def test_the_adt_a60_sample_with_scheduling_segments_is_not_an_appointment(samples):
    """SIU_12.hl7 carries SCH/RGS/AIS... but is an ADT^A60 (adverse reaction): not mapped, AR 201."""
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    ack = send(port, fixture("SIU_12.hl7"))
    assert ack["code"] == "AR" and "|MSH^1^9^1^2|201^" in ack["err"], ack
    assert fhir(server, "/Appointment")["total"] == 0


def test_reset_forgets_appointments(samples):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    message = siu("S12", "RESET-1", placer="PL-RESET")
    assert send(port, message)["code"] == "AA"
    assert send(port, message.replace("RESET-1", "RESET-2"))["code"] == "AE"  # id taken
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    assert send(port, message)["code"] == "AA"  # a new booking again, not a stale index hit
    assert fhir(server, "/Appointment", identifier=f"{PLACER}|PL-RESET")["total"] == 1


def test_scheduling_tables_are_overridable_per_site():
    # A hospital whose discontinuation means "done", and which books blocked slots: data, not code.
    mapping = {
        "appointment_event": {"S16": {"action": "update", "status": "fulfilled"}},
        "appointment_status": {"Blocked": "booked"},
        "appointment_duration_units": {"qh": 900},
    }
    with mllp_site({"mapping": mapping}) as (server, port):
        book(port, "PL-OVR", status="Blocked", start="", ais={4: "20260308080000+0000", 7: "2", 8: "qh"})
        found = appointment(server, "PL-OVR")
        assert found["status"] == "booked" and found["minutesDuration"] == 30
        assert send(port, siu("S16", "OVR-2", placer="PL-OVR"))["code"] == "AA"
        assert appointment(server, "PL-OVR")["status"] == "fulfilled"


def test_a_sender_with_the_appointment_type_in_sch7_is_a_site_setting():
    # The public samples send EMERGENCY / CHECKUP (table 0276, appointment types) in SCH-7.
    with mllp_site({"mapping": {"appointment_sch7": "appointmentType"}}) as (server, port):
        assert send(port, fixture("SIU-S12-01.hl7"))["code"] == "AA"
        found = one(server, "/Appointment", identifier="12345")
        assert found["appointmentType"]["coding"][0]["code"] == "EMERGENCY"
        assert found["reasonCode"] == found["serviceType"]  # AIS-3: biopsy of colon
        assert found["reasonCode"][0]["coding"][0]["code"] == "76164006"
        validate_resource(found, "Appointment")


@pytest.mark.parametrize(
    ("mapping", "why"),
    [
        ({"appointment_status": {"Booked": "bokked"}}, "appointment_status.Booked: 'bokked' is not one of"),
        ({"appointment_event": {"S15": {"action": "erase"}}}, "appointment_event.S15: action must be one of"),
        ({"appointment_participant_status": {"Booked": "booked"}}, "appointment_participant_status.Booked"),
        ({"appointment_duration_units": {"min": 0}}, "appointment_duration_units.min: seconds must be"),
        (
            {"appointment_event": {"S12": {"action": "new", "status": None}}},
            "a new appointment needs a status",
        ),
        ({"appointment_status": ["Booked"]}, "appointment_status must be a mapping"),
        ({"appointment_sch7": "serviceType"}, "appointment_sch7 must be one of reasonCode, appointmentType"),
    ],
)
def test_bad_scheduling_tables_are_scenario_errors(mapping, why):
    with pytest.raises(ValueError, match=r"sites\[h1\]\.mllp\.mapping") as caught:
        check_semantics(mllp_scenario({"mapping": mapping}))
    assert why in str(caught.value)


def test_the_packaged_tables_and_a_good_override_pass_the_check():
    check_semantics(mllp_scenario({"mapping": {"appointment_status": {"Blocked": "booked"}}}))


def test_broken_site_tables_get_an_ae_not_a_crash():
    # Served without the scenario check (as build_scenario allows): each message says why.
    mapping = {"appointment_event": {"S26": None}, "appointment_status": ["Booked"]}
    with mllp_site({"mapping": mapping}) as (server, port):
        book(port, "PL-S26-OFF")
        ack = send(port, siu("S26", "S26-OFF", placer="PL-S26-OFF"))
        assert ack["code"] == "AE" and "|MSH^1^9^1^2|201^" in ack["err"], ack
        assert "no usable entry in this site's appointment_event table" in ack["err"]
        assert appointment(server, "PL-S26-OFF")["status"] == "booked"
        ack = send(port, siu("S14", "S14-BROKEN", placer="PL-S26-OFF", status="Booked"))
        assert ack["code"] == "AE" and "|SCH^1^25|103^" in ack["err"], ack


@pytest.fixture(scope="module")
def fuzz_site():
    with mllp_site({"duplicate_window": 0}) as running:
        yield running


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    trigger=st.sampled_from(["S12", "S13", "S14", "S15", "S16", "S17", "S26"]),
    status=st.sampled_from(["", "Booked", "Noshow", "Blocked", "zz"]),
    placer=st.sampled_from(["", "PL-FZ-1", "PL-FZ-2"]),
    filler=st.sampled_from(["", "FI-FZ-1"]),
    start=st.sampled_from(["", START, "2026", "20260301", "20260231090000+0000"]),
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("|^~\\&\rX")), max_size=4),
)
def test_near_valid_scheduling_gets_a_precise_answer(fuzz_site, trigger, status, placer, filler, start, cuts):
    """Appointments in any state, in any order, lightly garbled: an AA or an AE/AR that says why,
    never a mapping crash (which the endpoint would answer as an internal error)."""
    _, port = fuzz_site
    text = list(siu(trigger, "FZ", placer=placer, filler=filler, status=status, start=start))
    body = text.index("\r") + 1  # garble the appointment, not the header (which decides the ACK mode)
    for pos, ch in cuts:
        text.insert(body + pos % (len(text) - body), ch)
    ack = send(port, "".join(text))
    assert ack["code"] in ("AA", "AE", "AR"), ack
    assert "internal error" not in ack["err"], ack["err"]
    if ack["code"] != "AA":
        assert ack["err"], ack
