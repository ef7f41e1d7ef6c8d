"""Orders over MLLP (ORM^O01, OML^O21) become ServiceRequests, read back over FHIR from the same site."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.fhir.validation import validate_resource
from tests.mllp_support import adt, assert_refused, fhir, fixture, journal, mllp_site, msh, one, orm, send

PLACER = "urn:ehrsim:placer:GOODHOSP"
FILLER = "urn:ehrsim:filler:GOODHOSP"


@pytest.fixture(scope="module")
def site():
    with mllp_site() as running:  # duplicate detection on (the default window)
        yield running


def order(server, placer):
    return one(server, "/ServiceRequest", identifier=f"{PLACER}|{placer}")


def test_new_order_creates_a_readable_service_request(site):
    server, port = site
    message = orm(
        "ORD-NW",
        placer="PL-NW",
        filler="FI-NW",
        mrn="ORD-P1",
        priority="S",
        observed="20260102083000+0000",
    )
    assert send(port, message)["code"] == "AA"
    patient = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|ORD-P1")
    request = one(server, "/ServiceRequest", patient=f"Patient/{patient['id']}")
    assert order(server, "PL-NW")["id"] == request["id"]
    assert one(server, "/ServiceRequest", identifier=f"{FILLER}|FI-NW")["id"] == request["id"]
    assert request["status"] == "active" and request["intent"] == "order"
    assert request["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert request["code"]["coding"] == [
        {"system": "http://loinc.org", "code": "24317-0", "display": "Hemogram and platelet count"}
    ]
    assert [(i["type"]["coding"][0]["code"], i["value"]) for i in request["identifier"]] == [
        ("PLAC", "PL-NW"),
        ("FILL", "FI-NW"),
    ]
    assert request["priority"] == "stat"
    assert request["occurrenceDateTime"] == "2026-01-02T08:30:00+00:00"
    assert request["authoredOn"] == "2026-01-01T11:00:00+00:00"
    assert request["requester"] == {"display": "OLIVIA ORDER", "identifier": {"value": "1234"}}
    assert request["requisition"] == {"system": PLACER, "value": "GRP-ORD-NW"}
    assert "encounter" not in request  # no PV1-19
    validate_resource(request, "ServiceRequest")


@pytest.mark.parametrize(
    ("control", "status"),
    [("CA", "revoked"), ("OC", "revoked"), ("DC", "revoked"), ("HD", "on-hold"), ("OH", "on-hold")],
)
def test_order_control_sets_the_status(site, control, status):
    server, port = site
    placer = f"PL-{control}"
    assert send(port, orm(f"ORD-{control}-1", placer=placer))["code"] == "AA"
    bare = orm(f"ORD-{control}-2", control=control, placer=placer).split("OBR|")[0]  # ORC alone
    assert send(port, bare)["code"] == "AA"
    request = order(server, placer)
    assert request["status"] == status and request["meta"]["versionId"] == "2"
    assert request["code"]["coding"][0]["code"] == "24317-0"  # a status change keeps the order
    validate_resource(request, "ServiceRequest")


def test_hold_then_release(site):
    server, port = site
    send(port, orm("ORD-HR-1", placer="PL-HR"))
    assert send(port, orm("ORD-HR-2", control="HD", placer="PL-HR"))["code"] == "AA"
    assert order(server, "PL-HR")["status"] == "on-hold"
    assert send(port, orm("ORD-HR-3", control="RL", placer="PL-HR"))["code"] == "AA"
    assert order(server, "PL-HR")["status"] == "active"


@pytest.mark.parametrize(
    ("order_status", "status"),
    [("CM", "completed"), ("IP", "active"), ("HD", "on-hold"), ("CA", "revoked"), ("ER", "entered-in-error")],
)
def test_status_changed_follows_orc5_and_finds_the_order_by_filler_number(site, order_status, status):
    server, port = site
    placer, filler = f"PL-SC-{order_status}", f"FI-SC-{order_status}"
    send(port, orm(f"ORD-SC-{order_status}-1", placer=placer, filler=filler))
    change = orm(f"ORD-SC-{order_status}-2", control="SC", filler=filler, order_status=order_status)
    assert send(port, change)["code"] == "AA"
    assert order(server, placer)["status"] == status


@pytest.mark.parametrize(
    ("control", "order_status", "status", "warned"),
    [
        ("NW", "CM", "completed", False),  # a filler reporting an order it already completed
        ("NW", "IP", "active", False),
        ("NW", "ZZ", "active", True),  # not in table 0038: ORC-1 decides, with a warning
        ("HD", "HD", "on-hold", False),
    ],
)
def test_a_valued_orc5_decides_the_status_for_any_order_control(site, control, order_status, status, warned):
    server, port = site
    placer = f"PL-O5-{control}-{order_status}"
    if control != "NW":
        assert send(port, orm(f"O5-{control}-{order_status}-0", placer=placer))["code"] == "AA"
    message = orm(f"O5-{control}-{order_status}", control=control, placer=placer, order_status=order_status)
    assert send(port, message)["code"] == "AA"
    assert order(server, placer)["status"] == status
    entry = next(
        e for e in journal(server, "mllp.message") if e["control_id"] == f"O5-{control}-{order_status}"
    )
    assert any("not in table 0038" in w for w in entry["warnings"]) == warned


def test_an_order_created_over_fhir_is_cancelled_over_mllp(site):
    server, port = site
    patient = fhir(server, "/Patient", _count=1)["entry"][0]["resource"]
    created = httpx.post(
        f"{server.fhir_base}/ServiceRequest",
        json={
            "resourceType": "ServiceRequest",
            "identifier": [{"system": PLACER, "value": "PL-REST"}],
            "status": "active",
            "intent": "order",
            "code": {"text": "CBC"},
            "subject": {"reference": f"Patient/{patient['id']}"},
        },
    )
    assert created.status_code == 201, created.text
    assert send(port, orm("ORD-REST", control="CA", placer="PL-REST"))["code"] == "AA"
    request = httpx.get(f"{server.fhir_base}/ServiceRequest/{created.json()['id']}").json()
    assert request["status"] == "revoked" and request["meta"]["versionId"] == "2"


def test_filler_number_assigned_later_joins_the_order(site):
    server, port = site
    send(port, orm("ORD-FN-1", placer="PL-FN"))
    # The filler answers with its own number beside the placer's; later messages may use either.
    send(port, orm("ORD-FN-2", control="SC", placer="PL-FN", filler="FI-FN", order_status="IP"))
    assert send(port, orm("ORD-FN-3", control="CA", filler="FI-FN"))["code"] == "AA"
    request = one(server, "/ServiceRequest", identifier=f"{FILLER}|FI-FN")
    assert request["status"] == "revoked" and order(server, "PL-FN")["id"] == request["id"]


def test_change_updates_the_code_and_keeps_the_status(site):
    server, port = site
    send(port, orm("ORD-XO-1", placer="PL-XO", priority="R"))
    send(port, orm("ORD-XO-2", control="HD", placer="PL-XO"))
    change = orm(
        "ORD-XO-3", control="XO", placer="PL-XO", code="57021-8^CBC W Auto Differential^LN", priority="A"
    )
    assert send(port, change)["code"] == "AA"
    request = order(server, "PL-XO")
    assert request["code"]["coding"][0]["code"] == "57021-8"
    assert request["priority"] == "asap" and request["status"] == "on-hold"
    assert request["meta"]["versionId"] == "3"


def test_oml_o21_new_order_with_tq1_and_a_known_visit(site):
    server, port = site
    assert send(port, adt("A01", "ORD-OML-ADT", mrn="ORD-P2", visit="V-ORD"))["code"] == "AA"
    encounter = one(server, "/Encounter", identifier="V-ORD")
    message = (
        msh("OML^O21^OML_O21", "ORD-OML", version="2.5.1") + "\r"
        "PID|1||ORD-P2^^^GOODHOSP^MR||DOE^JOHN||19700214|M\r"
        "PV1|1|I|4EAST^401^A" + "|" * 16 + "V-ORD^^^GOODHOSP^VN\r"
        "ORC|NW|PL-OML^GOODHOSP||||||||||1234^ORDER^OLIVIA\r"
        "TQ1|1||||||20260103070000+0000||A\r"
        "OBR|1|PL-OML^GOODHOSP||2345-7^Glucose^LN\r"
    )
    assert send(port, message)["code"] == "AA"
    request = order(server, "PL-OML")
    assert request["encounter"] == {"reference": f"Encounter/{encounter['id']}"}
    assert request["occurrenceDateTime"] == "2026-01-03T07:00:00+00:00"  # TQ1-7
    assert request["priority"] == "asap"  # TQ1-9
    assert request["subject"] == encounter["subject"]
    validate_resource(request, "ServiceRequest")


def oml_with_specimens(control_id, placer, *spms):
    return (
        msh("OML^O21^OML_O21", control_id, version="2.5.1") + "\r"
        "PID|1||SPM-P1^^^GOODHOSP^MR||DOE^JANE||19800101|F\r"
        f"ORC|NW|{placer}^GOODHOSP\r"
        f"OBR|1|{placer}^GOODHOSP||2345-7^Glucose^LN\r" + "".join(f"{spm}\r" for spm in spms)
    )


def test_oml_specimens_become_specimen_resources_linked_to_their_order(site):
    server, port = site
    message = oml_with_specimens(
        "ORD-SPM",
        "PL-SPM",
        "SPM|1|S-100&LAB^F-200&FILLLAB||BLD^Whole blood^HL70487|||||||P||||||20260105081500+0000|20260105093000+0000",
        "SPM|2|S-101&LAB||SER^Serum^HL70487|||||||P||||||20260105081500+0000|20260105",
    )
    ack = send(port, message)
    assert ack["code"] == "AA", ack
    request = order(server, "PL-SPM")
    specimens = [httpx.get(f"{server.fhir_base}/{ref['reference']}").json() for ref in request["specimen"]]
    assert [s["type"]["coding"][0]["code"] for s in specimens] == ["BLD", "SER"]
    first, second = specimens
    assert first["request"] == [{"reference": f"ServiceRequest/{request['id']}"}]
    assert first["subject"] == request["subject"]
    assert [i["value"] for i in first["identifier"]] == ["S-100", "F-200"]
    assert first["collection"]["collectedDateTime"] == "2026-01-05T08:15:00+00:00"
    assert first["receivedTime"] == "2026-01-05T09:30:00+00:00"
    assert "receivedTime" not in second  # a date is no instant
    entry = next(e for e in journal(server, "mllp.message") if e["control_id"] == "ORD-SPM")
    assert any("SPM-18 '20260105' is not precise to the second" in w for w in entry["warnings"])
    for resource in (request, *specimens):
        validate_resource(resource, resource["resourceType"])


@pytest.mark.parametrize(
    ("message", "location", "why"),
    [
        (
            oml_with_specimens("ORD-SPM-4", "PL-SPM-4", "SPM|1|S-1&LAB||"),
            "|SPM^1^4|101^",
            "SPM-4 specimen type is empty",
        ),
        (
            msh("OML^O21^OML_O21", "ORD-SPM-SEQ", version="2.5.1") + "\rPID|1||SPM-P2^^^GOODHOSP^MR\r"
            "ORC|NW|PL-SPM-SEQ^GOODHOSP\rSPM|1|S-2^LAB||BLD\rOBR|1|PL-SPM-SEQ^GOODHOSP||2345-7^Glucose^LN\r",
            "|SPM^1^|100^",
            "SPM comes before the OBR of its order",
        ),
    ],
)
def test_bad_specimens_get_an_ae_that_points_at_them_and_store_nothing(site, message, location, why):
    server, port = site
    ack = send(port, message)
    assert ack["code"] == "AE" and location in ack["err"] and why in ack["err"], ack
    assert fhir(server, "/Specimen", identifier="S-1")["total"] == 0


def test_timing_quantity_gives_priority_and_start(site):
    server, port = site
    message = orm("ORD-TQ", placer="PL-TQ", timing="1^^^20260104090000+0000^^R", observed="20260101")
    assert send(port, message)["code"] == "AA"
    request = order(server, "PL-TQ")
    assert request["priority"] == "routine"  # ORC-7.6
    assert request["occurrenceDateTime"] == "2026-01-04T09:00:00+00:00"  # ORC-7.4 before OBR-7


def test_unknown_visit_and_priority_are_left_out_with_warnings(site):
    server, port = site
    assert send(port, orm("ORD-WARN", placer="PL-WARN", visit="V-NOWHERE", priority="PRN"))["code"] == "AA"
    request = order(server, "PL-WARN")
    assert "encounter" not in request and "priority" not in request
    entry = next(e for e in journal(server, "mllp.message") if e.get("control_id") == "ORD-WARN")
    assert any("V-NOWHERE" in w and "not a known encounter" in w for w in entry["warnings"])
    assert any("OBR-5 priority 'PRN'" in w for w in entry["warnings"])


def two_orders(control_id, first, second, mrn="ORD-P3"):
    """An ORM^O01 with two orders: (ORC-1, placer number) each, an OBR after each ORC."""
    segments = [msh("ORM^O01^ORM_O01", control_id), f"PID|1||{mrn}^^^GOODHOSP^MR||DOE^JANE||19800101|F"]
    for control, placer in (first, second):
        segments += [f"ORC|{control}|{placer}^GOODHOSP", f"OBR|1|{placer}^GOODHOSP||2345-7^Glucose^LN"]
    return "\r".join(segments) + "\r"


def test_one_message_with_two_new_orders(site):
    server, port = site
    assert send(port, two_orders("ORD-TWO", ("NW", "PL-TWO-1"), ("NW", "PL-TWO-2")))["code"] == "AA"
    patient = one(server, "/Patient", identifier="ORD-P3")
    bundle = fhir(server, "/ServiceRequest", patient=f"Patient/{patient['id']}")
    assert sorted(e["resource"]["identifier"][0]["value"] for e in bundle["entry"]) == [
        "PL-TWO-1",
        "PL-TWO-2",
    ]


def test_an_order_created_and_cancelled_in_one_message_is_one_write(site):
    server, port = site
    assert send(port, two_orders("ORD-NWCA", ("NW", "PL-NWCA"), ("CA", "PL-NWCA")))["code"] == "AA"
    request = order(server, "PL-NWCA")
    assert request["status"] == "revoked" and request["meta"]["versionId"] == "1"


def test_a_failing_order_rolls_back_the_whole_message(site):
    server, port = site
    ack = send(port, two_orders("ORD-ROLL", ("NW", "PL-ROLL"), ("CA", "PL-ROLL-NOPE"), mrn="ORD-ROLL"))
    assert ack["code"] == "AE" and "|ORC^2^2|204^" in ack["err"]
    assert fhir(server, "/ServiceRequest", identifier=f"{PLACER}|PL-ROLL")["total"] == 0
    assert fhir(server, "/Patient", identifier="ORD-ROLL")["total"] == 0


def test_a_cancel_creates_no_patient(site):
    server, port = site
    send(port, orm("ORD-NOPAT-1", placer="PL-NOPAT", mrn="ORD-P4"))
    assert send(port, orm("ORD-NOPAT-2", control="CA", placer="PL-NOPAT", mrn="ORD-STRANGER"))["code"] == "AA"
    assert order(server, "PL-NOPAT")["status"] == "revoked"
    assert fhir(server, "/Patient", identifier="ORD-STRANGER")["total"] == 0


def test_unknown_order_is_ae_pointing_at_orc2(site):
    server, port = site
    ack = send(port, orm("ORD-UNK", control="CA", placer="PL-NOPE"))
    assert ack["code"] == "AE", ack
    assert ack["err"].startswith("ERR||ORC^1^2|204^")
    assert f"no order has number PL-NOPE ({PLACER})" in ack["err"]
    assert fhir(server, "/ServiceRequest", identifier=f"{PLACER}|PL-NOPE")["total"] == 0


def test_unknown_filler_number_points_at_orc3(site):
    _, port = site
    ack = send(port, orm("ORD-UNK-F", control="SC", filler="FI-NOPE", order_status="CM").split("OBR|")[0])
    assert ack["code"] == "AE" and ack["err"].startswith("ERR||ORC^1^3|204^")
    assert f"no order has number FI-NOPE ({FILLER})" in ack["err"]


def test_new_order_under_a_taken_filler_number_points_at_it(site):
    _, port = site
    assert send(port, orm("ORD-TAKEN-1", placer="PL-TAKEN-1", filler="FI-TAKEN"))["code"] == "AA"
    ack = send(port, orm("ORD-TAKEN-2", placer="PL-TAKEN-2", filler="FI-TAKEN"))
    assert ack["code"] == "AE" and ack["err"].startswith("ERR||OBR^1^3|205^")


def test_v23_err_is_err1(site):
    _, port = site
    ack = send(port, orm("ORD-UNK-23", control="DC", placer="PL-NOPE", version="2.3"))
    assert ack["code"] == "AE"
    assert ack["err"].startswith("ERR|ORC^1^2^204&")  # ERR-1 (ELD) before v2.5


@pytest.mark.parametrize(
    ("message", "where", "why"),
    [
        (
            msh("ORM^O01^ORM_O01", "ORD-BAD-1") + "\rPID|1||B1^^^GOODHOSP^MR\r",
            "|ORC^1^|100^",
            "ORM O01 needs an ORC segment",
        ),
        (
            msh("ORM^O01^ORM_O01", "ORD-BAD-2")
            + "\rPID|1||B1^^^GOODHOSP^MR\rOBR|1|PL-B2^GOODHOSP||24317-0^CBC^LN\r",
            "|OBR^1^|100^",
            "OBR comes before any ORC",
        ),
        (orm("ORD-BAD-3", control="ZZ", placer="PL-B3"), "|ORC^1^1|103^", "'ZZ' is not mapped (table 0119"),
        (orm("ORD-BAD-4", control="", placer="PL-B4"), "|ORC^1^1|101^", "ORC-1 order control is empty"),
        (orm("ORD-BAD-5", placer="PL-B5", code=""), "|OBR^1^4|101^", "OBR-4 universal service identifier"),
        (orm("ORD-BAD-6", placer="PL-B6").split("OBR|")[0], "|ORC^1^|100^", "has no OBR"),
        (orm("ORD-BAD-7"), "|ORC^1^2|101^", "an order needs a placer or filler order number"),
        (
            orm("ORD-BAD-8", control="SC", placer="PL-NW", order_status="QQ"),
            "|ORC^1^5|103^",
            "ORC-5 order status 'QQ' is not in table 0038",
        ),
        (orm("ORD-BAD-9", control="SC", placer="PL-NW"), "|ORC^1^5|101^", "needs ORC-5 order status"),
        (
            orm("ORD-BAD-10", placer="PL-B10", observed="2026-01-01"),
            "|OBR^1^7|102^",
            "not a v2 timestamp",
        ),
    ],
)
def test_bad_orders_are_ae_saying_why(site, message, where, why):
    assert_refused(*site, message, where, why)


def test_duplicate_control_id_is_not_applied_twice(site):
    server, port = site
    message = orm("ORD-DUP", placer="PL-DUP")
    assert send(port, message)["code"] == "AA"
    assert send(port, message)["code"] == "AA"  # the resend gets its ACK again
    assert fhir(server, "/ServiceRequest", identifier=f"{PLACER}|PL-DUP")["total"] == 1
    entries = [e for e in journal(server, "mllp.message") if e.get("control_id") == "ORD-DUP"]
    assert [e.get("duplicate", False) for e in entries] == [False, True]
    # The same order under a new MSH-10 is a second NW for a number already taken.
    ack = send(port, orm("ORD-DUP-2", placer="PL-DUP"))
    assert ack["code"] == "AE" and "|OBR^1^2|205^" in ack["err"]
    assert "a new order (NW) needs a new number" in ack["err"]


@pytest.mark.parametrize(("name", "segment"), [("ORM-O01-05.hl7", "RQD"), ("ORM-O01-06.hl7", "RXO")])
def test_order_details_other_than_obr_are_ae_naming_them(site, name, segment):
    server, port = site
    ack = send(port, fixture(name).replace(b"MSG00018", f"ORD-{segment}".encode()))
    assert ack["code"] == "AE", ack
    assert f"ERR||{segment}^1^|200^" in ack["err"] and "not mapped to FHIR here" in ack["err"]
    entry = next(e for e in journal(server, "mllp.message") if e.get("control_id") == f"ORD-{segment}")
    assert entry["applied"] is False and "written" not in entry


@pytest.fixture(scope="module")
def samples():
    with mllp_site() as running:
        yield running


@pytest.mark.parametrize(
    ("name", "placer", "code"),
    [
        ("LAB-ORM-1.hl7", "88502218", "24317-0"),  # v2.3, ORC-2/OBR-2 without a namespace
        ("ORM-O01-02.hl7", "1101", "24725-4"),  # v2.6
        ("OML-O21-01.hl7", "1101", "57698-3"),  # v2.6, TQ1; the same placer number as above
    ],
)
def test_real_samples_create_orders(samples, name, placer, code):
    server, port = samples
    # Each sample starts from the scenario's data: a reset also rebuilds the order number index.
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    ack = send(port, fixture(name))
    assert ack["code"] == "AA", ack
    entry = [e for e in journal(server, "mllp.message") if e.get("control_id") == ack["control_id"]][-1]
    refs = entry["written"]
    assert any(r.startswith("ServiceRequest/") for r in refs)
    for ref in refs:
        resource = httpx.get(f"{server.fhir_base}/{ref}").json()
        validate_resource(resource, resource["resourceType"])
    request = fhir(server, "/ServiceRequest", identifier=placer)["entry"][0]["resource"]
    assert request["code"]["coding"][0]["code"] == code and request["status"] == "active"
    assert any(r.startswith("Specimen/") for r in refs) == (name == "OML-O21-01.hl7")  # its SPM


def test_reset_forgets_orders(samples):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    message = orm("ORD-RESET", placer="PL-RESET")
    assert send(port, message)["code"] == "AA"
    assert send(port, message.replace("ORD-RESET", "ORD-RESET-2"))["code"] == "AE"  # number taken
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    assert send(port, message)["code"] == "AA"  # a new order again, not a stale index hit
    assert fhir(server, "/ServiceRequest", identifier=f"{PLACER}|PL-RESET")["total"] == 1


def test_order_tables_are_overridable_per_site():
    # A hospital whose discontinue means "done": data in the scenario, not code.
    mapping = {
        "order_control": {"DC": {"action": "update", "status": "completed"}},
        "order_priority": {"P": "urgent"},
    }
    with mllp_site({"mapping": mapping}) as (server, port):
        assert send(port, orm("ORD-OVR-1", placer="PL-OVR", priority="P"))["code"] == "AA"
        assert order(server, "PL-OVR")["priority"] == "urgent"
        assert send(port, orm("ORD-OVR-2", control="DC", placer="PL-OVR"))["code"] == "AA"
        assert order(server, "PL-OVR")["status"] == "completed"


@pytest.fixture(scope="module")
def fuzz_site():
    with mllp_site({"duplicate_window": 0}) as running:
        yield running


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    control=st.sampled_from(["NW", "CA", "DC", "HD", "RL", "SC", "XO", "ZZ", ""]),
    order_status=st.sampled_from(["", "CM", "IP", "QQ"]),
    placer=st.sampled_from(["", "PL-FZ-1", "PL-FZ-2"]),
    filler=st.sampled_from(["", "FI-FZ-1"]),
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("|^~\\&\rX")), max_size=4),
)
def test_near_valid_orders_get_a_precise_answer(fuzz_site, control, order_status, placer, filler, cuts):
    """Orders in any state, in any order, lightly garbled: an AA or an AE/AR that says why, never
    a mapping crash (which the endpoint would answer as an internal error)."""
    _, port = fuzz_site
    text = list(orm("FZ", control=control, placer=placer, filler=filler, order_status=order_status))
    body = text.index("\r") + 1  # garble the order, not the header (which decides the ACK mode)
    for pos, ch in cuts:
        text.insert(body + pos % (len(text) - body), ch)
    ack = send(port, "".join(text))
    assert ack["code"] in ("AA", "AE", "AR"), ack
    assert "internal error" not in ack["err"], ack["err"]
    if ack["code"] != "AA":
        assert ack["err"], ack


def test_results_point_at_the_order_they_answer(site):
    """An ORU whose OBR-2 (placer) or OBR-3 (filler number) names a known order: the
    DiagnosticReport and its Observations get `basedOn` that ServiceRequest (v2-to-FHIR IG)."""
    server, port = site
    assert send(port, orm("ORD-BASE", placer="PL-BASE", filler="FI-BASE", mrn="ORD-B1"))["code"] == "AA"
    request = order(server, "PL-BASE")
    by_placer = (
        f"{msh('ORU^R01^ORU_R01', 'RES-BASE-1')}\r"
        "PID|1||ORD-B1^^^GOODHOSP^MR||DOE^JANE||19800101|F\r"
        "OBR|1|PL-BASE^GOODHOSP||24317-0^Hemogram and platelet count^LN|||20260102090000+0000"
        "||||||||||||||||||F\r"
        "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|12-16|N|||F\r"
    )
    by_filler = by_placer.replace("RES-BASE-1", "RES-BASE-2").replace(
        "OBR|1|PL-BASE^GOODHOSP||", "OBR|1||FI-BASE^GOODHOSP|"
    )
    unknown = by_placer.replace("RES-BASE-1", "RES-BASE-3").replace("PL-BASE^", "PL-NONE^")
    for message in (by_placer, by_filler, unknown):
        assert send(port, message)["code"] == "AA"
    reference = f"ServiceRequest/{request['id']}"
    reports = fhir(server, "/DiagnosticReport", **{"based-on": reference})["entry"]
    assert len(reports) == 2
    observations = fhir(server, "/Observation", **{"based-on": reference})["entry"]
    assert len(observations) == 2
    assert all(e["resource"]["basedOn"] == [{"reference": reference}] for e in reports + observations)
    patient = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|ORD-B1")
    all_reports = fhir(server, "/DiagnosticReport", subject=f"Patient/{patient['id']}")["entry"]
    assert sum("basedOn" not in e["resource"] for e in all_reports) == 1  # PL-NONE answers no order
