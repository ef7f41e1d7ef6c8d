"""Immunizations over MLLP (VXU^V04) become Immunization resources, read back over FHIR from the same site."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.fhir.validation import validate_resource
from simulator.mllp.immunizations import check_tables
from simulator.mllp.mapping import default_tables
from simulator.scenario import build_scenario, check_semantics
from tests.mllp_support import adt, assert_refused, fhir, fixture, journal, mllp_site, msh, one, send

FILLER = "urn:ehrsim:filler:GOODHOSP"
PLACER = "urn:ehrsim:placer:GOODHOSP"
PATIENTS = "urn:ehrsim:id:GOODHOSP"
FUNDING = "OBX|1|CE|30963-3^Vaccine funding source^LN|1|VXC50^Public^CDCPHINVS||||||F"
ELIGIBILITY = "OBX|2|CE|64994-7^Vaccine funding program eligibility category^LN|2|V02^VFC eligible - Medicaid^HL70064||||||F"
VIS = (
    "OBX|3|CE|69764-9^Document type^LN|3|253088698300003511070517^Hepatitis B VIS^cdcgs1vis||||||F",
    "OBX|4|DT|29769-7^Date VIS presented^LN|3|20260105||||||F",
)


def rxa(
    when: str = "20260105093000+0000",
    vaccine: str = "08^Hep B, adolescent or pediatric^CVX",
    amount: str = "0.5",
    units: str = "mL^mL^UCUM",
    source: str = "00^New immunization record^NIP001",
    status: str = "CP",
    action: str = "A",
    refusal: str = "",
    lot: str = "LOT-1",
    recorded: str = "",
) -> str:
    fields = [
        "0",
        "1",
        when,
        when,
        vaccine,
        amount,
        units,
        "",
        source,
        "7824^Jackson^Lily^^^^^^NIST-PI-1",  # RXA-10 administering provider
        "^^^CLINIC-1",  # RXA-11 administered-at location (LA2-4 facility)
        "",
        "",
        "",
        lot,
        "20261231",  # RXA-16 expiration
        "MSD^Merck and Co., Inc.^MVX",
        refusal,
        "",
        status,
        action,
        recorded,
    ]
    return "RXA|" + "|".join(fields)


def vxu(
    control_id: str,
    filler: str = "",
    placer: str = "",
    mrn: str = "IZ-P1",
    visit: str = "",
    observations: tuple[str, ...] = (FUNDING, ELIGIBILITY, *VIS),
    route: str = "RXR|C28161^Intramuscular^NCIT|LA^Left Arm^HL70163",
    version: str = "2.5.1",
    **fields: str,
) -> str:
    """A VXU^V04 with one administration (ORC + RXA + RXR + OBX); `filler`/`placer` are ORC-3/ORC-2
    under the namespace GOODHOSP; `fields` go to `rxa`."""

    def number(value: str) -> str:
        return f"{value}^GOODHOSP" if value else ""

    segments = [
        msh("VXU^V04^VXU_V04", control_id, version=version),
        f"PID|1||{mrn}^^^GOODHOSP^MR||LITTLE^TIMMY||20250101|M",
        "PD1|||||||||||02^Reminder/recall - any method^HL70215",
        "NK1|1|LITTLE^MOM|MTH^Mother^HL70063",
    ]
    if visit:
        segments.append("PV1|1|O" + "|" * 17 + f"{visit}^^^GOODHOSP^VN")
    segments += [
        f"ORC|RE|{number(placer)}|{number(filler)}|||||||I-1^Entered^Ed||57422^RADON^NICHOLAS",
        rxa(**fields),
    ]
    if route:
        segments.append(route)
    segments += observations
    return "\r".join(segments) + "\r"


@pytest.fixture(scope="module")
def site():
    with mllp_site() as running:  # duplicate detection on (the default window)
        yield running


def immunization(server, filler: str) -> dict:
    return one(server, "/Immunization", identifier=f"{FILLER}|{filler}")


def entry_of(server, control_id: str) -> dict:
    return [e for e in journal(server, "mllp.message") if e.get("control_id") == control_id][-1]


def test_new_administration_is_a_readable_immunization(site):
    server, port = site
    message = vxu("IZ-NEW", filler="F-NEW", placer="P-NEW", mrn="IZ-P-NEW", recorded="20260105100000+0000")
    assert send(port, message)["code"] == "AA"
    patient = one(server, "/Patient", identifier=f"{PATIENTS}|IZ-P-NEW")
    found = one(server, "/Immunization", patient=f"Patient/{patient['id']}")
    assert immunization(server, "F-NEW")["id"] == found["id"]
    assert one(server, "/Immunization", identifier=f"{PLACER}|P-NEW")["id"] == found["id"]
    assert found["status"] == "completed" and found["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert found["vaccineCode"]["coding"] == [
        {"system": "http://hl7.org/fhir/sid/cvx", "code": "08", "display": "Hep B, adolescent or pediatric"}
    ]
    assert found["occurrenceDateTime"] == "2026-01-05T09:30:00+00:00"
    assert found["recorded"] == "2026-01-05T10:00:00+00:00"
    assert found["primarySource"] is True and "reportOrigin" not in found
    assert found["doseQuantity"] == {
        "value": 0.5,
        "unit": "mL",
        "system": "http://unitsofmeasure.org",
        "code": "mL",
    }
    assert found["lotNumber"] == "LOT-1" and found["expirationDate"] == "2026-12-31"
    assert found["manufacturer"] == {
        "display": "Merck and Co., Inc.",
        "identifier": {"system": "http://hl7.org/fhir/sid/mvx", "value": "MSD"},
    }
    assert found["route"]["coding"][0] == {
        "system": "http://ncithesaurus-stage.nci.nih.gov",
        "code": "C28161",
        "display": "Intramuscular",
    }
    assert found["site"]["coding"][0]["code"] == "LA"
    assert [(p["function"]["coding"][0]["code"], p["actor"]) for p in found["performer"]] == [
        ("AP", {"display": "Lily Jackson", "identifier": {"value": "7824"}}),
        ("OP", {"display": "NICHOLAS RADON", "identifier": {"value": "57422"}}),
    ]
    assert found["location"] == {"display": "CLINIC-1"}
    assert found["fundingSource"]["coding"][0]["code"] == "VXC50"
    assert [c["coding"][0]["code"] for c in found["programEligibility"]] == ["V02"]
    assert found["education"] == [{"documentType": "Hepatitis B VIS", "presentationDate": "2026-01-05"}]
    assert [(i["type"]["coding"][0]["code"], i["value"]) for i in found["identifier"]] == [
        ("FILL", "F-NEW"),
        ("PLAC", "P-NEW"),
    ]
    assert "encounter" not in found and "isSubpotent" not in found and "statusReason" not in found
    validate_resource(found, "Immunization")
    assert not entry_of(server, "IZ-NEW").get("warnings")


def test_update_replaces_the_immunization_its_orc_names(site):
    server, port = site
    assert send(port, vxu("IZ-UPD-1", filler="F-UPD", lot="LOT-OLD"))["code"] == "AA"
    first = immunization(server, "F-UPD")
    update = vxu("IZ-UPD-2", filler="F-UPD", action="U", lot="LOT-NEW", observations=(), route="")
    assert send(port, update)["code"] == "AA"
    updated = immunization(server, "F-UPD")
    assert updated["id"] == first["id"] and updated["meta"]["versionId"] == "2"
    assert updated["lotNumber"] == "LOT-NEW"
    assert "route" not in updated and "fundingSource" not in updated  # replaced, not merged
    validate_resource(updated, "Immunization")


def test_update_of_an_unknown_immunization_is_ae_204_at_orc3(site):
    server, port = site
    ack = send(port, vxu("IZ-UPD-UNK", filler="F-NOPE", action="U", mrn="IZ-P-UNK"))
    assert ack["code"] == "AE", ack
    assert ack["err"].startswith("ERR||ORC^1^3|204^")
    assert f"no immunization has number F-NOPE ({FILLER})" in ack["err"]
    assert fhir(server, "/Patient", identifier=f"{PATIENTS}|IZ-P-UNK")["total"] == 0  # nothing stored


def test_delete_marks_it_entered_in_error_and_creates_no_patient(site):
    server, port = site
    assert send(port, vxu("IZ-DEL-1", filler="F-DEL"))["code"] == "AA"
    delete = vxu("IZ-DEL-2", filler="F-DEL", action="D", mrn="IZ-P-STRANGER")
    assert send(port, delete)["code"] == "AA"
    deleted = immunization(server, "F-DEL")
    assert deleted["status"] == "entered-in-error" and deleted["meta"]["versionId"] == "2"
    assert deleted["lotNumber"] == "LOT-1"  # the record stays, marked
    assert fhir(server, "/Patient", identifier=f"{PATIENTS}|IZ-P-STRANGER")["total"] == 0
    validate_resource(deleted, "Immunization")
    ack = send(port, vxu("IZ-DEL-3", filler="F-DEL-NOPE", action="D"))
    assert ack["code"] == "AE" and ack["err"].startswith("ERR||ORC^1^3|204^")


def test_delete_by_placer_number_only_points_at_orc2(site):
    _, port = site
    ack = send(port, vxu("IZ-DEL-P", placer="P-NOPE", action="D"))
    assert ack["code"] == "AE" and ack["err"].startswith("ERR||ORC^1^2|204^"), ack


def test_a_resent_add_updates_with_a_warning(site):
    server, port = site
    assert send(port, vxu("IZ-RESEND-1", filler="F-RESEND", lot="LOT-A"))["code"] == "AA"
    assert send(port, vxu("IZ-RESEND-2", filler="F-RESEND", lot="LOT-B"))["code"] == "AA"
    again = immunization(server, "F-RESEND")  # one resource (`one` checks the total)
    assert again["lotNumber"] == "LOT-B" and again["meta"]["versionId"] == "2"
    warnings = entry_of(server, "IZ-RESEND-2")["warnings"]
    assert any("already exists" in w and "replaces it as an update" in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("status", "refusal", "expected", "extra"),
    [
        ("RE", "00^Parental decision^NIP002", "not-done", {"statusReason": "00"}),
        ("NA", "", "not-done", {}),
        ("PA", "", "completed", {"isSubpotent": True}),
        ("", "", "completed", {}),  # RXA-20 empty: completed, as the IG maps it
    ],
)
def test_completion_status_table(site, status, refusal, expected, extra):
    server, port = site
    filler = f"F-ST-{status or 'EMPTY'}"
    message = vxu(f"IZ-ST-{status or 'EMPTY'}", filler=filler, status=status, refusal=refusal)
    assert send(port, message)["code"] == "AA"
    found = immunization(server, filler)
    assert found["status"] == expected
    if "statusReason" in extra:
        assert found["statusReason"]["coding"][0]["code"] == extra["statusReason"]
    else:
        assert "statusReason" not in found
    assert found.get("isSubpotent") == extra.get("isSubpotent")
    validate_resource(found, "Immunization")


def test_refusal_reason_on_a_completed_dose_is_a_warning(site):
    server, port = site
    assert send(port, vxu("IZ-RR", filler="F-RR", refusal="00^Parental decision^NIP002"))["code"] == "AA"
    assert "statusReason" not in immunization(server, "F-RR")
    assert any("RXA-18" in w for w in entry_of(server, "IZ-RR")["warnings"])


@pytest.mark.parametrize(
    ("source", "primary", "origin", "warned"),
    [
        ("01^Historical information - source unspecified^NIP001", False, None, False),
        ("02^From other provider^NIP001", False, "provider", False),
        ("07^From school record^NIP001", False, "school", False),
        ("ZZ^Something else^L", None, None, True),
    ],
)
def test_information_source_table(site, source, primary, origin, warned):
    server, port = site
    code = source.split("^")[0]
    assert send(port, vxu(f"IZ-SRC-{code}", filler=f"F-SRC-{code}", source=source))["code"] == "AA"
    found = immunization(server, f"F-SRC-{code}")
    assert found.get("primarySource") == primary
    assert (found["reportOrigin"]["coding"][0]["code"] if "reportOrigin" in found else None) == origin
    assert any("RXA-9" in w for w in entry_of(server, f"IZ-SRC-{code}")["warnings"]) == warned
    validate_resource(found, "Immunization")


def test_unknown_amount_and_other_obx_are_warnings_not_drops(site):
    server, port = site
    observations = (
        FUNDING,
        "OBX|2|CE|30945-0^Vaccination contraindication^LN|1|91^Allergy to eggs^CDCPHINVS||||||F",
    )
    message = vxu("IZ-WARN", filler="F-WARN", amount="999", units="", observations=observations)
    assert send(port, message)["code"] == "AA"
    found = immunization(server, "F-WARN")
    assert "doseQuantity" not in found and found["fundingSource"]["coding"][0]["code"] == "VXC50"
    warnings = entry_of(server, "IZ-WARN")["warnings"]
    assert any("RXA-6 amount 999 means unknown" in w for w in warnings), warnings
    assert any("30945-0" in w and "not mapped" in w for w in warnings), warnings


def test_vis_dates_without_a_document_and_a_wrongly_typed_obx_are_warnings(site):
    server, port = site
    observations = (
        "OBX|1|DT|29769-7^Date VIS presented^LN|1|20260105||||||F",
        "OBX|2|ST|64994-7^Eligibility^LN|2|V02||||||F",
    )
    assert send(port, vxu("IZ-VIS", filler="F-VIS", observations=observations))["code"] == "AA"
    found = immunization(server, "F-VIS")
    assert "education" not in found and "programEligibility" not in found
    warnings = entry_of(server, "IZ-VIS")["warnings"]
    assert any("without a document type" in w for w in warnings), warnings
    assert any("is ST 'V02', not a code" in w for w in warnings), warnings
    validate_resource(found, "Immunization")


def test_obx_before_any_rxa_is_a_warning(site):
    server, port = site
    message = vxu("IZ-EARLY", filler="F-EARLY").replace(
        "ORC|", "OBX|1|NM|8867-4^Heart rate^LN||60|/min|||||F\rORC|", 1
    )
    assert send(port, message)["code"] == "AA"
    assert any("does not follow an RXA" in w for w in entry_of(server, "IZ-EARLY")["warnings"])


def test_encounter_from_a_known_visit(site):
    server, port = site
    assert (
        send(port, adt("A04", "IZ-ADT", mrn="IZ-P-VISIT", visit="IZ-V1", patient_class="O"))["code"] == "AA"
    )
    message = vxu("IZ-VISIT", filler="F-VISIT", mrn="IZ-P-VISIT", visit="IZ-V1")
    assert send(port, message)["code"] == "AA"
    visit = one(server, "/Encounter", identifier="urn:ehrsim:id:GOODHOSP|IZ-V1")
    assert immunization(server, "F-VISIT")["encounter"] == {"reference": f"Encounter/{visit['id']}"}
    send(port, vxu("IZ-NOVISIT", filler="F-NOVISIT", visit="IZ-V-NOPE"))
    assert "encounter" not in immunization(server, "F-NOVISIT")
    assert any("IZ-V-NOPE" in w for w in entry_of(server, "IZ-NOVISIT")["warnings"])


def test_two_administrations_in_one_message(site):
    server, port = site
    second = "\r".join(["ORC|RE||F-TWO-2^GOODHOSP", rxa(vaccine="20^DTaP^CVX", when="20260106")])
    message = vxu("IZ-TWO", filler="F-TWO-1", mrn="IZ-P-TWO") + second + "\r"
    assert send(port, message)["code"] == "AA"
    patient = one(server, "/Patient", identifier=f"{PATIENTS}|IZ-P-TWO")
    bundle = fhir(server, "/Immunization", patient=f"Patient/{patient['id']}")
    assert bundle["total"] == 2
    assert immunization(server, "F-TWO-2")["vaccineCode"]["coding"][0]["code"] == "20"
    assert immunization(server, "F-TWO-2")["occurrenceDateTime"] == "2026-01-06"


def test_add_then_delete_in_one_message_is_one_write(site):
    server, port = site
    delete = "\r".join(["ORC|RE||F-AD^GOODHOSP", rxa(action="D")])
    message = vxu("IZ-AD", filler="F-AD") + delete + "\r"
    assert send(port, message)["code"] == "AA"
    assert immunization(server, "F-AD")["status"] == "entered-in-error"
    assert immunization(server, "F-AD")["meta"]["versionId"] == "1"


@pytest.mark.parametrize(
    ("message", "where", "why"),
    [
        (
            msh("VXU^V04^VXU_V04", "IZ-BAD-1") + "\rPID|1||IZ-P-BAD^^^GOODHOSP^MR\rORC|RE||F-B1\r",
            "|RXA^1^|100^",
            "carries no RXA segment",
        ),
        (vxu("IZ-BAD-2", filler="F-B2", vaccine=""), "|RXA^1^5|101^", "RXA-5 administered code is empty"),
        (vxu("IZ-BAD-3", filler="F-B3", when=""), "|RXA^1^3|101^", "RXA-3 date/time start"),
        (vxu("IZ-BAD-4", filler="F-B4", when="2026-01-05"), "|RXA^1^3|102^", "not a v2 timestamp"),
        (vxu("IZ-BAD-5", filler="F-B5", status="XX"), "|RXA^1^20|103^", "not in table 0322"),
        (vxu("IZ-BAD-6", filler="F-B6", action="Q"), "|RXA^1^21|103^", "not in table 0206"),
        (vxu("IZ-BAD-7", filler="F-B7", amount="half"), "|RXA^1^6|102^", "'half' is not a number"),
        (vxu("IZ-BAD-8", action="U"), "|ORC^1^3|101^", "needs ORC-3 filler order number"),
        (
            vxu("IZ-BAD-9", filler="F-B9") + rxa() + "\r",
            "|RXA^2^|100^",
            "each administration needs its own ORC",
        ),
        (
            vxu("IZ-BAD-10", filler="F-B10") + "ORC|RE||F-B10-2^GOODHOSP\r" + rxa(vaccine="") + "\r",
            "|RXA^2^5|101^",  # the second administration: the first is not stored either
            "RXA-5 administered code is empty",
        ),
        (
            vxu(
                "IZ-BAD-11",
                filler="F-B11",
                observations=("OBX|1|DT|29769-7^VIS presented^LN|1|2026-1||||||F",),
            ),
            "|OBX^1^5|102^",
            "not a v2 timestamp",
        ),
    ],
)
def test_bad_immunizations_are_ae_saying_why(site, message, where, why):
    server, port = site
    assert_refused(server, port, message.replace("|IZ-P1^", "|IZ-P-BAD^"), where, why)  # a new patient...
    assert fhir(server, "/Patient", identifier=f"{PATIENTS}|IZ-P-BAD")["total"] == 0


def test_duplicate_control_id_is_not_applied_twice(site):
    server, port = site
    message = vxu("IZ-DUP", filler="F-DUP")
    assert send(port, message)["code"] == "AA"
    assert send(port, message)["code"] == "AA"  # the resend gets its ACK again
    assert immunization(server, "F-DUP")["meta"]["versionId"] == "1"  # applied once
    entries = [e for e in journal(server, "mllp.message") if e.get("control_id") == "IZ-DUP"]
    assert [e.get("duplicate", False) for e in entries] == [False, True]


def test_rxa_without_orc_is_an_add_without_identifier(site):
    """Older senders (v2.3.1) send RXA without ORC: recorded, but nothing names it for later."""
    server, port = site
    with_orc = vxu("IZ-NOORC", mrn="IZ-P-NOORC", version="2.3.1")
    message = "\r".join(seg for seg in with_orc.split("\r") if not seg.startswith("ORC|"))
    assert send(port, message)["code"] == "AA"
    patient = one(server, "/Patient", identifier=f"{PATIENTS}|IZ-P-NOORC")
    found = one(server, "/Immunization", patient=f"Patient/{patient['id']}")
    assert "identifier" not in found and [p["function"]["coding"][0]["code"] for p in found["performer"]] == [
        "AP"
    ]
    validate_resource(found, "Immunization")
    ack = send(port, message.replace("IZ-NOORC", "IZ-NOORC-U").replace("|CP|A|", "|CP|U|"))
    assert ack["code"] == "AE" and ack["err"].startswith("ERR|RXA^1^21^101&"), ack  # ERR-1 before v2.5


@pytest.fixture(scope="module")
def fuzz_site():
    with mllp_site({"duplicate_window": 0}) as running:
        yield running


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    action=st.sampled_from(["A", "U", "D", "Q", ""]),
    status=st.sampled_from(["CP", "PA", "RE", "NA", "XX", ""]),
    filler=st.sampled_from(["", "F-FZ-1", "F-FZ-2"]),
    amount=st.sampled_from(["0.5", "999", "", "1e9999", "-.5", "5."]),
    when=st.sampled_from(["20260105", "2026010509", "202601", "", "2026-01-05"]),
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("|^~\\&\rX")), max_size=4),
)
def test_near_valid_immunizations_get_a_precise_answer(fuzz_site, action, status, filler, amount, when, cuts):
    """Administrations in any state and order, lightly garbled: an AA or an AE/AR that says why,
    never a mapping crash (which the endpoint would answer as an internal error)."""
    _, port = fuzz_site
    message = vxu("FZ", filler=filler, action=action, status=status, amount=amount, when=when)
    text = list(message)
    body = text.index("\r") + 1  # garble the message, not the header (which decides the ACK mode)
    for pos, ch in cuts:
        text.insert(body + pos % (len(text) - body), ch)
    ack = send(port, "".join(text))
    assert ack["code"] in ("AA", "AE", "AR"), ack
    assert "internal error" not in ack["err"], ack["err"]
    if ack["code"] != "AA":
        assert ack["err"], ack


@pytest.fixture(scope="module")
def samples():
    with mllp_site() as running:
        yield running


@pytest.mark.parametrize(
    ("name", "fillers", "vaccine"),
    [
        ("VXU-V04-01.hl7", ["13696"], "49281021588"),  # v2.8, a patient-level OBX before the ORC
        ("VXU-V04-02.hl7", ["13696", "38760", "35508"], "49281021588"),  # a CE OBX under a date code
        ("IZ_1_1.1_Admin_Child_Max_Message.hl7", ["IZ-783274"], "140"),  # v2.5.1, enhanced ACK mode
        ("VXU.hl7", ["13696", "38760", "35508"], "49281-0215-88"),  # NIST IIS test message
    ],
)
def test_real_samples_create_immunizations(samples, name, fillers, vaccine):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200  # each sample from the scenario's data
    ack = send(port, fixture(name))
    assert ack["code"] in ("AA", "CA"), ack
    refs = entry_of(server, ack["control_id"])["written"]
    assert sum(r.startswith("Immunization/") for r in refs) == len(fillers)
    for ref in refs:
        resource = httpx.get(f"{server.fhir_base}/{ref}").json()
        validate_resource(resource, resource["resourceType"])
    patient = next(r for r in refs if r.startswith("Patient/"))
    bundle = fhir(server, "/Immunization", patient=patient)
    assert bundle["total"] == len(fillers)
    first = fhir(server, "/Immunization", identifier=fillers[0])["entry"][0]["resource"]
    assert first["vaccineCode"]["coding"][0]["code"] == vaccine
    assert first["status"] == "completed" and first["primarySource"] is True


def test_sample_resent_after_a_reset_index_is_fresh(samples):
    server, port = samples
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    message = fixture("VXU.hl7")
    assert send(port, message)["code"] == "AA"
    assert send(port, message.replace(b"NIST-IZ-AD-2.1_Send_V04_Z22", b"IZ-AGAIN"))["code"] == "AA"
    assert fhir(server, "/Immunization", identifier="13696")["total"] == 1  # resend: an update
    assert any("already exists" in w for w in entry_of(server, "IZ-AGAIN")["warnings"])
    assert httpx.post(f"{server.admin}/reset").status_code == 200
    assert send(port, message)["code"] == "AA"
    assert list(entry_of(server, "NIST-IZ-AD-2.1_Send_V04_Z22")["warnings"]) == [
        "RXA 2: RXA-6 amount 999 means unknown; doseQuantity left out",
        "RXA 3: RXA-6 amount 999 means unknown; doseQuantity left out",
    ]  # no stale index hit after the reset


def test_immunization_tables_are_overridable_per_site():
    # A registry that files "not administered" as entered in error, and reads 999 as a real amount.
    mapping = {
        "immunization": {"completion_status": {"NA": {"status": "entered-in-error"}}, "unknown_amount": []}
    }
    with mllp_site({"mapping": mapping}) as (server, port):
        assert send(port, vxu("IZ-OVR", filler="F-OVR", status="NA", amount="999", units=""))["code"] == "AA"
        found = immunization(server, "F-OVR")
        assert found["status"] == "entered-in-error" and found["doseQuantity"] == {"value": 999}


def test_the_packaged_tables_check_and_a_bad_override_is_refused():
    check_tables(default_tables())
    bad = {"completion_status": {"CP": {"status": "done"}}}
    with pytest.raises(ValueError, match=r"immunization\.completion_status\.CP: 'done' is not one of"):
        check_semantics(
            build_scenario(
                {
                    "name": "bad-iz",
                    "sites": [{"id": "h1", "base_path": "/fhir", "mllp": {"mapping": {"immunization": bad}}}],
                }
            )
        )
    with pytest.raises(ValueError, match="reportOrigin"):
        check_tables(
            {"immunization": {"information_source": {"09": {"primarySource": False, "reportOrigin": "x"}}}}
        )
