"""Medical documents over MLLP (MDM^T01-T11) become DocumentReferences, read back over FHIR."""

from __future__ import annotations

import base64

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.fhir.validation import validate_resource
from simulator.mllp.client import ack_fields
from simulator.mllp.documents import check_tables
from simulator.mllp.mapping import default_tables
from simulator.scenario import check_semantics
from tests.mllp_support import (
    adt,
    assert_refused,
    client,
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

DOCS = "urn:ehrsim:document:GOODHOSP"
PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF\n").decode("ascii")


@pytest.fixture(scope="module")
def site():
    with mllp_site() as running:  # duplicate detection on (the default window)
        yield running


def txa(number: str, **fields: str) -> str:
    """A TXA: document type PR (progress note), text, activity/origination times, originator, TXA-12 `number`,
    completion status AU; `fields` set others by position (`f13` = TXA-13, ...)."""
    values = {
        2: "PR",
        3: "TX",
        4: "20260102080000+0000",
        6: "20260102081500+0000",
        9: "D100^DOCTOR^DORA",
        12: number,
        17: "AU",
    }
    values.update({int(k[1:]): v for k, v in fields.items()})
    return "TXA|1|" + "|".join(values.get(n, "") for n in range(2, max(values) + 1))


def mdm(
    trigger: str,
    control_id: str,
    number: str,
    lines: tuple[str, ...] = (),
    mrn: str = "DOC-P1",
    visit: str = "",
    extra: tuple[str, ...] = (),
    **fields: str,
) -> str:
    """An MDM message: EVN, PID, PV1, `extra` segments (ORC/OBR), TXA and one TX OBX per line."""
    segments = [
        msh(f"MDM^{trigger}^MDM_{trigger}", control_id, version="2.6"),
        f"EVN|{trigger}|20260102090000+0000",
        f"PID|1||{mrn}^^^GOODHOSP^MR||DOE^JANE||19800101|F",
        "PV1|1|I|4EAST^401^A" + ("|" * 16 + f"{visit}^^^GOODHOSP^VN" if visit else ""),
        *extra,
        txa(number, **fields),
        *(f"OBX|{i}|TX|NOTE^Note^L||{line}||||||F" for i, line in enumerate(lines, 1)),
    ]
    return "\r".join(segments) + "\r"


def document(server, number: str) -> dict:
    return one(server, "/DocumentReference", identifier=f"{DOCS}|{number}")


def text_of(doc: dict, index: int = 0) -> str:
    return base64.b64decode(doc["content"][index]["attachment"]["data"]).decode("utf-8")


def entry_of(server, control_id: str) -> dict:
    return [e for e in journal(server, "mllp.message") if e.get("control_id") == control_id][-1]


def test_original_notification_creates_a_readable_document(site):
    server, port = site
    message = mdm(
        "T01",
        "DOC-T01",
        "DN-T01",
        f18="R",
        f22="D200^AUTH^ALEX^^^^^^^^^^^^20260102100000+0000",
        f25="Progress note, day 2",
    )
    ack = send(port, message)
    assert ack["code"] == "AA", ack
    patient = one(server, "/Patient", identifier="urn:ehrsim:id:GOODHOSP|DOC-P1")
    doc = one(server, "/DocumentReference", patient=f"Patient/{patient['id']}", identifier=f"{DOCS}|DN-T01")
    assert document(server, "DN-T01")["id"] == doc["id"]
    assert doc["masterIdentifier"] == {"system": DOCS, "value": "DN-T01"}
    assert doc["status"] == "current" and doc["docStatus"] == "final"
    assert doc["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert doc["type"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0270", "code": "PR", "display": "Progress note"}
    ]
    assert doc["date"] == "2026-01-02T08:15:00+00:00"  # TXA-6 before TXA-4
    assert doc["author"] == [{"display": "DORA DOCTOR", "identifier": {"value": "D100"}}]
    assert doc["authenticator"] == {"display": "ALEX AUTH", "identifier": {"value": "D200"}}
    assert doc["securityLabel"][0]["coding"][0]["code"] == "R"
    assert doc["description"] == "Progress note, day 2"
    # A notification carries no content; R4 needs one, so it says what it can (TXA-3, TXA-25).
    assert doc["content"] == [{"attachment": {"contentType": "text/plain", "title": "Progress note, day 2"}}]
    assert "context" not in doc  # no PV1-19, no order
    validate_resource(doc, "DocumentReference")


def test_document_with_text_and_a_pdf(site):
    server, port = site
    message = mdm("T02", "DOC-T02", "DN-T02", lines=("Line one", "Fish \\T\\ chips", "Zoë"), f17="IP")
    message += f"OBX|4|ED|PDF^Report^L||^application^pdf^Base64^{PDF}||||||F\r"
    assert send(port, message)["code"] == "AA"
    doc = document(server, "DN-T02")
    assert doc["docStatus"] == "preliminary"
    first, second = (c["attachment"] for c in doc["content"])
    assert first["contentType"] == "text/plain" and text_of(doc) == "Line one\nFish & chips\nZoë"
    assert second == {"contentType": "application/pdf", "data": PDF}  # the base64 data as sent
    validate_resource(doc, "DocumentReference")


def test_local_document_type_keeps_its_system(site):
    server, port = site
    assert (
        send(port, mdm("T01", "DOC-LOCAL", "DN-LOCAL", f2="CARDNOTE^Cardiology note^99DOC"))["code"] == "AA"
    )
    doc = document(server, "DN-LOCAL")
    assert doc["type"]["coding"] == [
        {"system": "urn:ehrsim:local:GOODHOSP:99DOC", "code": "CARDNOTE", "display": "Cardiology note"}
    ]
    assert (
        one(server, "/DocumentReference", type="urn:ehrsim:local:GOODHOSP:99DOC|CARDNOTE")["id"] == doc["id"]
    )


def test_status_change_then_status_change_with_content(site):
    server, port = site
    assert send(port, mdm("T02", "DOC-SC-1", "DN-SC", lines=("draft",), f17="DO"))["code"] == "AA"
    assert send(port, mdm("T03", "DOC-SC-2", "DN-SC", f17="LA"))["code"] == "AA"
    doc = document(server, "DN-SC")
    assert doc["docStatus"] == "final" and doc["meta"]["versionId"] == "2"
    assert text_of(doc) == "draft"  # a status change without content keeps it
    assert send(port, mdm("T04", "DOC-SC-3", "DN-SC", lines=("signed text",), f17="AU"))["code"] == "AA"
    doc = document(server, "DN-SC")
    assert text_of(doc) == "signed text" and doc["meta"]["versionId"] == "3"
    validate_resource(doc, "DocumentReference")


@pytest.mark.parametrize("trigger", ["T05", "T06"])
def test_addendum_is_a_new_document_that_appends_to_its_parent(site, trigger):
    server, port = site
    parent_no, number = f"DN-ADD-{trigger}-P", f"DN-ADD-{trigger}"
    assert send(port, mdm("T01", f"DOC-ADD-{trigger}-1", parent_no))["code"] == "AA"
    lines = ("addendum text",) if trigger == "T06" else ()
    assert (
        send(port, mdm(trigger, f"DOC-ADD-{trigger}-2", number, lines=lines, f13=parent_no))["code"] == "AA"
    )
    parent, addendum = document(server, parent_no), document(server, number)
    assert addendum["id"] != parent["id"]
    assert addendum["relatesTo"] == [
        {"code": "appends", "target": {"reference": f"DocumentReference/{parent['id']}"}}
    ]
    assert parent["status"] == "current" and parent["meta"]["versionId"] == "1"  # an addendum leaves it
    found = fhir(server, "/DocumentReference", relatesto=f"DocumentReference/{parent['id']}")
    assert [e["resource"]["id"] for e in found["entry"]] == [addendum["id"]]
    if trigger == "T06":
        assert text_of(addendum) == "addendum text"
    validate_resource(addendum, "DocumentReference")


@pytest.mark.parametrize("trigger", ["T07", "T08"])
def test_edit_changes_the_document_in_place(site, trigger):
    server, port = site
    number = f"DN-EDIT-{trigger}"
    assert (
        send(port, mdm("T02", f"DOC-EDIT-{trigger}-1", number, lines=("frist draft",), f17="IP"))["code"]
        == "AA"
    )
    lines = ("first draft",) if trigger == "T08" else ()
    ack = send(port, mdm(trigger, f"DOC-EDIT-{trigger}-2", number, lines=lines, f17="PA", f25="Edited"))
    assert ack["code"] == "AA", ack
    doc = document(server, number)
    assert doc["meta"]["versionId"] == "2" and doc["description"] == "Edited"
    assert text_of(doc) == ("first draft" if trigger == "T08" else "frist draft")
    assert "relatesTo" not in doc  # no TXA-13


def test_edit_naming_a_parent_transforms_it(site):
    server, port = site
    assert send(port, mdm("T01", "DOC-TR-1", "DN-TR-P"))["code"] == "AA"
    assert send(port, mdm("T01", "DOC-TR-2", "DN-TR"))["code"] == "AA"
    assert send(port, mdm("T08", "DOC-TR-3", "DN-TR", lines=("merged",), f13="DN-TR-P"))["code"] == "AA"
    parent = document(server, "DN-TR-P")
    assert document(server, "DN-TR")["relatesTo"] == [
        {"code": "transforms", "target": {"reference": f"DocumentReference/{parent['id']}"}}
    ]


@pytest.mark.parametrize("trigger", ["T09", "T10"])
def test_replacement_supersedes_its_parent(site, trigger):
    server, port = site
    parent_no, number = f"DN-REP-{trigger}-P", f"DN-REP-{trigger}"
    assert send(port, mdm("T02", f"DOC-REP-{trigger}-1", parent_no, lines=("old",)))["code"] == "AA"
    lines = ("new",) if trigger == "T10" else ()
    assert (
        send(port, mdm(trigger, f"DOC-REP-{trigger}-2", number, lines=lines, f13=parent_no))["code"] == "AA"
    )
    parent, replacement = document(server, parent_no), document(server, number)
    assert parent["status"] == "superseded" and parent["meta"]["versionId"] == "2"
    assert text_of(parent) == "old"
    assert replacement["status"] == "current"
    assert replacement["relatesTo"] == [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{parent['id']}"}}
    ]
    superseded = fhir(server, "/DocumentReference", status="superseded", identifier=f"{DOCS}|{parent_no}")
    assert superseded["total"] == 1
    for doc in (parent, replacement):
        validate_resource(doc, "DocumentReference")


def test_cancel_marks_the_document_entered_in_error(site):
    server, port = site
    assert send(port, mdm("T01", "DOC-CAN-1", "DN-CAN"))["code"] == "AA"
    assert send(port, mdm("T11", "DOC-CAN-2", "DN-CAN", mrn="DOC-STRANGER"))["code"] == "AA"
    doc = document(server, "DN-CAN")
    assert doc["status"] == "entered-in-error" and doc["meta"]["versionId"] == "2"
    assert fhir(server, "/Patient", identifier="DOC-STRANGER")["total"] == 0  # a cancel creates nobody


def test_known_visit_and_order_become_the_context(site):
    server, port = site
    assert send(port, adt("A01", "DOC-CTX-ADT", mrn="DOC-P2", visit="V-DOC"))["code"] == "AA"
    assert send(port, orm("DOC-CTX-ORM", placer="PL-DOC", filler="FI-DOC", mrn="DOC-P2"))["code"] == "AA"
    encounter = one(server, "/Encounter", identifier="V-DOC")
    request = one(server, "/ServiceRequest", identifier="urn:ehrsim:placer:GOODHOSP|PL-DOC")
    orc = ("ORC|RE|PL-DOC^GOODHOSP|FI-DOC^GOODHOSP", "OBR|1|PL-DOC^GOODHOSP|FI-DOC^GOODHOSP|24317-0^CBC^LN")
    message = mdm("T02", "DOC-CTX", "DN-CTX", lines=("text",), mrn="DOC-P2", visit="V-DOC", extra=orc)
    assert send(port, message)["code"] == "AA"
    doc = document(server, "DN-CTX")
    assert doc["context"] == {
        "encounter": [{"reference": f"Encounter/{encounter['id']}"}],
        "related": [{"reference": f"ServiceRequest/{request['id']}"}],
    }
    assert doc["subject"] == encounter["subject"]
    assert one(server, "/DocumentReference", encounter=f"Encounter/{encounter['id']}")["id"] == doc["id"]
    validate_resource(doc, "DocumentReference")


def test_unknown_visit_and_order_are_left_out_with_warnings(site):
    server, port = site
    extra = ("ORC|RE|PL-NOWHERE^GOODHOSP",)
    message = mdm("T01", "DOC-WARN", "DN-WARN", visit="V-NOWHERE", extra=extra, f17="", f6="20260102")
    assert send(port, message)["code"] == "AA"
    doc = document(server, "DN-WARN")
    assert "context" not in doc and "docStatus" not in doc
    assert doc["date"] == "2026-01-02T08:00:00+00:00"  # TXA-6 is a date only: TXA-4 is the instant
    warnings = entry_of(server, "DOC-WARN")["warnings"]
    assert any("V-NOWHERE" in w and "not a known encounter" in w for w in warnings)
    assert any("ORC-2 order number PL-NOWHERE" in w for w in warnings)
    assert any("TXA-17 document completion status is empty" in w for w in warnings)
    assert any("TXA-6 origination date/time '20260102' is not precise" in w for w in warnings)


def test_ed_in_hex_and_text_is_stored_as_base64(site):
    server, port = site
    message = mdm("T02", "DOC-ENC", "DN-ENC")
    message += "OBX|1|ED|IMG^Image^L||^IM^PNG^Hex^89504E47||||||F\r"
    message += "OBX|2|ED|TXT^Text^L||^TEXT^^A^plain words||||||F\r"
    assert send(port, message)["code"] == "AA"
    png, words = (c["attachment"] for c in document(server, "DN-ENC")["content"])
    assert png == {"contentType": "image/png", "data": base64.b64encode(b"\x89PNG").decode()}
    assert words == {"contentType": "text/plain", "data": base64.b64encode(b"plain words").decode()}


def no_txa(control_id: str) -> str:
    return (
        "\r".join(line for line in mdm("T01", control_id, "X").split("\r") if not line.startswith("TXA"))
        + "\r"
    )


@pytest.mark.parametrize(
    ("message", "where", "why"),
    [
        (no_txa("DOC-BAD-1"), "|TXA^1^|100^", "needs a TXA segment"),
        (mdm("T01", "DOC-BAD-2", ""), "|TXA^1^12|101^", "TXA-12 unique document number is empty"),
        (mdm("T01", "DOC-BAD-3", "DN-BAD-3", f2=""), "|TXA^1^2|101^", "TXA-2 document type is empty"),
        (mdm("T01", "DOC-BAD-4", "DN-BAD-4", f17="ZZ"), "|TXA^1^17|103^", "'ZZ' is not in table 0271"),
        (mdm("T02", "DOC-BAD-5", "DN-BAD-5"), "|OBX^1^|101^", "the document has no content"),
        (
            mdm("T02", "DOC-BAD-6", "DN-BAD-6", lines=("x",))
            + "OBX|2|ED|PDF^R^L||^application^pdf^Base64^no*base64!||||||F\r",
            "|OBX^2^5|102^",
            "OBX-5 ED data is not valid Base64",
        ),
        (
            mdm("T02", "DOC-BAD-7", "DN-BAD-7") + "OBX|1|ED|PDF^R^L||^application^pdf^uuencode^abc||||||F\r",
            "|OBX^1^5|103^",
            "not in table 0299",
        ),
        (
            mdm("T02", "DOC-BAD-8", "DN-BAD-8") + "OBX|1|ED|PDF^R^L||^IM^png^Hex^XYZ||||||F\r",
            "|OBX^1^5|102^",
            "not valid Hex",
        ),
        (mdm("T01", "DOC-BAD-9", "DN-BAD-9", f6="2026-01-02"), "|TXA^1^6|102^", "not a v2 timestamp"),
        (mdm("T05", "DOC-BAD-10", "DN-BAD-10"), "|TXA^1^13|101^", "TXA-13 parent document number is empty"),
        (mdm("T01", "DOC-BAD-11", "DN-BAD-11", mrn=""), "|PID^1^3|101^", "PID-3 patient identifier list"),
    ],
)
def test_bad_documents_are_ae_saying_why_and_store_nothing(site, message, where, why):
    server, port = site
    ack = assert_refused(server, port, message, where, why)
    number = ack["control_id"].replace("DOC-", "DN-")
    assert fhir(server, "/DocumentReference", identifier=f"{DOCS}|{number}")["total"] == 0


@pytest.mark.parametrize("trigger", ["T03", "T04", "T07", "T08", "T11"])
def test_unknown_document_is_ae_204_at_txa12(site, trigger):
    _, port = site
    ack = send(port, mdm(trigger, f"DOC-UNK-{trigger}", "DN-NOPE", lines=("text",)))
    assert ack["code"] == "AE", ack
    assert (
        ack["err"].startswith("ERR||TXA^1^12|204^")
        and f"no document has number DN-NOPE ({DOCS})" in ack["err"]
    )


@pytest.mark.parametrize("trigger", ["T05", "T06", "T07", "T08", "T09", "T10"])
def test_unknown_parent_is_ae_204_at_txa13_and_rolls_back(site, trigger):
    server, port = site
    number = f"DN-ORPHAN-{trigger}"
    if trigger in ("T07", "T08"):  # an edit names an existing document and, here, an unknown parent
        assert send(port, mdm("T01", f"DOC-ORPHAN-{trigger}-0", number))["code"] == "AA"
    ack = send(
        port,
        mdm(trigger, f"DOC-ORPHAN-{trigger}", number, lines=("text",), mrn=f"DOC-O-{trigger}", f13="DN-NONE"),
    )
    assert ack["code"] == "AE", ack
    assert (
        ack["err"].startswith("ERR||TXA^1^13|204^")
        and "no document has parent document number DN-NONE" in ack["err"]
    )
    if trigger not in ("T07", "T08"):
        assert fhir(server, "/DocumentReference", identifier=f"{DOCS}|{number}")["total"] == 0
        assert fhir(server, "/Patient", identifier=f"DOC-O-{trigger}")["total"] == 0  # not created either


def test_a_new_document_under_a_taken_number_is_ae_205(site):
    _, port = site
    assert send(port, mdm("T01", "DOC-TAKEN-1", "DN-TAKEN"))["code"] == "AA"
    ack = send(port, mdm("T02", "DOC-TAKEN-2", "DN-TAKEN", lines=("again",)))
    assert ack["code"] == "AE" and ack["err"].startswith("ERR||TXA^1^12|205^"), ack
    assert "needs a new number" in ack["err"]


def test_unmapped_mdm_event_is_ar_201(site):
    _, port = site
    ack = send(port, mdm("T12", "DOC-T12", "DN-T12"))
    assert ack["code"] == "AR" and "|MSH^1^9^1^2|201^" in ack["err"], ack


def test_duplicate_control_id_is_not_applied_twice(site):
    server, port = site
    message = mdm("T02", "DOC-DUP", "DN-DUP", lines=("once",))
    assert send(port, message)["code"] == "AA"
    assert send(port, message)["code"] == "AA"  # the resend gets its ACK again
    doc = document(server, "DN-DUP")
    assert doc["meta"]["versionId"] == "1"
    entries = [e for e in journal(server, "mllp.message") if e.get("control_id") == "DOC-DUP"]
    assert [e.get("duplicate", False) for e in entries] == [False, True]


def test_number_namespace_and_oid_give_the_system(site):
    server, port = site
    assert send(port, mdm("T01", "DOC-NS", "DN-NS^RADIOLOGY"))["code"] == "AA"
    assert one(server, "/DocumentReference", identifier="urn:ehrsim:document:RADIOLOGY|DN-NS")
    assert send(port, mdm("T01", "DOC-OID", "DN-OID^^1.2.3.4^ISO"))["code"] == "AA"
    assert one(server, "/DocumentReference", identifier="urn:oid:1.2.3.4|DN-OID")


# -- the public samples ------------------------------------------------------------------------------
SAMPLE_DOC = "urn:ehrsim:document:XYZHOSPITAL"
SAMPLE_NUMBER = "1.2.840.317.5947431.51.20080131160038"
SAMPLE_PARENT = "1.2.840.317.5947431.51.20080131155715"  # their TXA-13


@pytest.fixture(scope="module")
def samples():
    with mllp_site() as running:
        yield running


def sample_parent() -> str:
    """A T01 from the samples' sender (MSH-4 XYZHOSPITAL, same patient) for their TXA-13."""
    return (
        "MSH|^~\\&|PROSOLV|XYZHOSPITAL|SYSTEM|XYZHOSPITAL|200801311500+0215||MDM^T01^MDM_T01|PARENT-1|P|2.8\r"
        "PID|1|987654321|987654321||PROSOLV^SAMPLE||19721201|M\r"
        f"TXA|1|DI|TX|200801311500+0215||||||||{SAMPLE_PARENT}|||||AU\r"
    )


def written(server, control_id: str) -> list[dict]:
    refs = entry_of(server, control_id)["written"]
    resources = [httpx.get(f"{server.fhir_base}/{ref}").json() for ref in refs]
    for resource in resources:
        validate_resource(resource, resource["resourceType"])
    return resources


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("MDM-T01-01.hl7", None),
        ("MDM-T01-02.hl7", None),
        ("MDM-T02-01.hl7", None),  # its ED OBX carries no data; its HD OBX is no content
        ("MDM-T02-02.hl7", "Toilet cylinder crackers"),
    ],
)
def test_real_original_documents(samples, name, text):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200  # the samples share MSH-10 and TXA-12
    ack = send(port, fixture(name))
    assert ack["code"] == "AA", ack
    doc = next(r for r in written(server, ack["control_id"]) if r["resourceType"] == "DocumentReference")
    assert one(server, "/DocumentReference", identifier=f"{SAMPLE_DOC}|{SAMPLE_NUMBER}")["id"] == doc["id"]
    patient = one(server, "/Patient", identifier="987654321")
    assert doc["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert doc["type"]["coding"][0]["code"] == "DI" and doc["docStatus"] == "final"
    assert doc["date"] == "2008-01-31T16:00:00+02:15"
    assert doc["authenticator"] == {"display": "Ivan Doctorovich", "identifier": {"value": "54321"}}
    if text:
        assert text_of(doc).startswith(text)
    if name == "MDM-T02-01.hl7":
        assert doc["content"] == [{"attachment": {"contentType": "application/pdf"}}]
        assert any("OBX 1 of type 'HD'" in w for w in entry_of(server, ack["control_id"])["warnings"])


def test_real_v23_document_in_enhanced_mode(samples):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    with client(port) as c:  # MSH-16 AL, MSH-15 empty: a commit ACK, then the application ACK
        assert ack_fields(c.send(fixture("MDM-T02-03.hl7")))["code"] == "CA"
        assert ack_fields(c.receive())["code"] == "AA"
    doc = one(server, "/DocumentReference", identifier="urn:ehrsim:document:SFAC|2RWRVAJ627408")
    assert doc["docStatus"] == "preliminary" and doc["type"]["coding"][0]["code"] == "DS"
    assert doc["author"] == [{"display": "Kathleen Woolfson", "identifier": {"value": "C006"}}]
    lines = text_of(doc).split("\n")
    assert len(lines) == 29 and lines[-1].startswith("Reminder shofar congo")
    validate_resource(doc, "DocumentReference")


@pytest.mark.parametrize(
    ("name", "relation", "parent_status"),
    [
        ("MDM-T05-01.hl7", "appends", "current"),
        ("MDM-T05-02.hl7", "appends", "current"),
        ("MDM-T06-01.hl7", "appends", "current"),
        ("MDM-T06-02.hl7", "appends", "current"),
        ("MDM-T09-01.hl7", "replaces", "superseded"),
        ("MDM-T09-02.hl7", "replaces", "superseded"),
        ("MDM-T10-01.hl7", "replaces", "superseded"),
        ("MDM-T10-02.hl7", "replaces", "superseded"),
    ],
)
def test_real_addenda_and_replacements(samples, name, relation, parent_status):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    assert send(port, fixture(name))["code"] == "AE"  # the parent (TXA-13) is not known yet
    assert send(port, sample_parent())["code"] == "AA"
    ack = send(port, fixture(name).replace(b"PS1-20080131160038", b"PS1-AGAIN"))
    assert ack["code"] == "AA", ack
    parent = one(server, "/DocumentReference", identifier=f"{SAMPLE_DOC}|{SAMPLE_PARENT}")
    doc = one(server, "/DocumentReference", identifier=f"{SAMPLE_DOC}|{SAMPLE_NUMBER}")
    assert doc["relatesTo"] == [
        {"code": relation, "target": {"reference": f"DocumentReference/{parent['id']}"}}
    ]
    assert parent["status"] == parent_status and doc["subject"] == parent["subject"]
    written(server, "PS1-AGAIN")  # validates each resource the message wrote


def test_real_sample_with_a_txa_under_an_adt_header(samples):
    """MDM_01.hl7 says ADT^A01 in MSH-9: it is an admission (its TXA is not read). Relabelled
    MDM^T01, its TXA makes a document."""
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    ack = send(port, fixture("MDM_01.hl7"))
    assert ack["code"] == "AA", ack
    assert [r["resourceType"] for r in written(server, "MSG00001")] == ["Patient", "Encounter"]
    relabelled = fixture("MDM_01.hl7").replace(b"ADT^A01^ADT_A01|MSG00001", b"MDM^T01^MDM_T01|MSG00002")
    ack = send(port, relabelled)
    assert ack["code"] == "AA", ack
    doc = one(server, "/DocumentReference", identifier="urn:ehrsim:document:GHHSFacility|018840")
    assert doc["type"]["coding"][0] == {"system": "urn:ehrsim:local:GHHSFacility", "code": "DIS"}
    assert doc["docStatus"] == "final" and doc["description"] == "string ofCharacters"  # TXA-25
    assert doc["author"] == [{"identifier": {"value": "Chris Rock"}}]  # TXA-9 carries a name in XCN-1
    assert {"system": "urn:ehrsim:document-file:GHHSFacility", "value": "54302-DEX"} in doc["identifier"]
    written(server, "MSG00002")


# -- tables and sites --------------------------------------------------------------------------------
def test_document_tables_are_overridable_per_site():
    # A site whose dictated documents count as final and whose edits are new documents: data only.
    mapping = {
        "document_completion_status": {"DI": "final"},
        "document_events": {"T03": {"action": "update", "status": "superseded"}},
    }
    with mllp_site({"mapping": mapping}) as (server, port):
        assert send(port, mdm("T01", "DOC-OVR-1", "DN-OVR", f17="DI"))["code"] == "AA"
        assert document(server, "DN-OVR")["docStatus"] == "final"
        assert send(port, mdm("T03", "DOC-OVR-2", "DN-OVR"))["code"] == "AA"
        assert document(server, "DN-OVR")["status"] == "superseded"


def test_packaged_document_tables_cover_t01_to_t11_and_pass_their_check():
    tables = default_tables()
    check_tables(tables)  # raises ValueError naming a bad entry
    assert sorted(tables["document_events"]) == [f"T{n:02d}" for n in range(1, 12)]


@pytest.mark.parametrize(
    ("mapping", "why"),
    [
        ({"document_events": {"T01": {"action": "shred"}}}, "document_events.T01.action"),
        (
            {"document_events": {"T09": {"action": "create", "relation": "eats"}}},
            "document_events.T09.relation",
        ),
        ({"document_completion_status": {"AU": "done"}}, "document_completion_status.AU"),
    ],
)
def test_bad_document_tables_are_a_scenario_error(mapping, why):
    with pytest.raises(ValueError, match=why):  # what `ehrsim validate` runs
        check_semantics(mllp_scenario({"mapping": mapping}))


def test_reset_forgets_documents(samples):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    message = mdm("T01", "DOC-RESET", "DN-RESET")
    assert send(port, message)["code"] == "AA"
    assert send(port, message.replace("DOC-RESET", "DOC-RESET-2"))["code"] == "AE"  # number taken
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    assert send(port, message)["code"] == "AA"  # a new document again, not a stale index hit
    assert fhir(server, "/DocumentReference", identifier=f"{DOCS}|DN-RESET")["total"] == 1


@pytest.fixture(scope="module")
def fuzz_site():
    with mllp_site({"duplicate_window": 0}) as running:
        yield running


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    trigger=st.sampled_from([f"T{n:02d}" for n in range(1, 13)]),
    number=st.sampled_from(["", "DN-FZ-1", "DN-FZ-2"]),
    parent=st.sampled_from(["", "DN-FZ-1", "DN-FZ-3"]),
    status=st.sampled_from(["", "AU", "IP", "QQ"]),
    content=st.sampled_from(["", "TX", "ED", "EDBAD", "NM"]),
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("|^~\\&\rX")), max_size=4),
)
def test_near_valid_documents_get_a_precise_answer(fuzz_site, trigger, number, parent, status, content, cuts):
    """Documents in any state, in any order, lightly garbled: an AA or an AE/AR that says why, never
    a mapping crash (which the endpoint would answer as an internal error)."""
    _, port = fuzz_site
    message = mdm(trigger, "FZ", number, f13=parent, f17=status)
    obx = {
        "TX": "OBX|1|TX|N^N^L||some text||||||F\r",
        "ED": f"OBX|1|ED|P^P^L||^application^pdf^Base64^{PDF}||||||F\r",
        "EDBAD": "OBX|1|ED|P^P^L||^application^pdf^Base64^%%%||||||F\r",
        "NM": "OBX|1|NM|N^N^L||12||||||F\r",
    }
    text = list(message + obx.get(content, ""))
    body = text.index("\r") + 1  # garble the document, not the header (which decides the ACK mode)
    for pos, ch in cuts:
        text.insert(body + pos % (len(text) - body), ch)
    ack = send(port, "".join(text))
    assert ack["code"] in ("AA", "AE", "AR"), ack
    assert "internal error" not in ack["err"], ack["err"]
    if ack["code"] != "AA":
        assert ack["err"], ack
