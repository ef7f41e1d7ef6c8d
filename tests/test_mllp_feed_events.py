"""Outbound feeds' scheduling, documents and immunizations kinds: content, defects, hl7apy
validity, determinism, and a site-to-site round trip into another ehrsim site's FHIR API."""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from collections import Counter

import httpx
import pytest

from simulator.mllp.er7 import HL7Error, tokenize
from simulator.mllp.feeds import EVENTS, FeedMessages, FeedSpec, Outbound
from simulator.mllp.validation import validate_structure
from simulator.sandbox import Sandbox
from simulator.scenario import build_scenario
from simulator.testing import free_ports, serve_in_thread
from tests.mllp_support import IntegrationListener, control_id_of, feed_scenario, journal, mllp_scenario

FROZEN = {"start": "2026-03-01T08:00:00Z", "speed": 0}
KINDS = {"scheduling": "SIU", "documents": "MDM", "immunizations": "VXU"}
REQUIRED = {"SIU": "SCH", "MDM": "TXA", "VXU": "RXA"}  # what `missing_segment` drops


def messages(count: int, seed: int = 7, patients: int = 3, **feed) -> list[Outbound]:
    """The first `count` messages of a feed of a site with `patients` (clock frozen)."""
    sandbox = Sandbox(mllp_scenario(patients=patients, clock=FROZEN), service_factories=[])
    spec = FeedSpec.from_mapping({"name": "f1", "target": "127.0.0.1:1", **feed}, "feed")
    return list(itertools.islice(FeedMessages(spec, sandbox.sites["h1"], seed), count))


def segments(outbound: Outbound) -> list[str]:
    return outbound.text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r").split("\r")


def field(outbound: Outbound, name: str, n: int) -> str:
    return next(s for s in segments(outbound) if s.startswith(name + "|")).split("|")[n]


@pytest.mark.parametrize(
    ("kind", "triggers"),
    [
        ("scheduling", {"SIU^S12", "SIU^S14", "SIU^S15", "SIU^S26"}),
        ("documents", {"MDM^T02", "MDM^T06", "MDM^T10"}),
        ("immunizations", {"VXU^V04"}),
    ],
)
def test_each_new_kind_is_valid_for_hl7apy_and_has_its_later_events(kind, triggers):
    """hl7apy, the reference model, accepts every clean message of the kind for its structure in
    v2.5.1; over enough visits every later event of the kind turns up."""
    sent = messages(60, events=[kind])
    assert {o.message_type for o in sent} == triggers
    for outbound in sent:
        validate_structure(tokenize(outbound.text))  # raises HL7Error (AE) when invalid


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_missing_segment_drops_the_required_segment_and_hl7apy_refuses_it(kind):
    code = KINDS[kind]
    sent = messages(12, events=[kind], messy={"missing_segment": 1.0})
    assert sent and all(o.message_type.startswith(code) for o in sent)
    for outbound in sent:
        assert not any(s.startswith(REQUIRED[code] + "|") for s in segments(outbound)), outbound.text
        with pytest.raises(HL7Error):
            validate_structure(tokenize(outbound.text))


def all_new(raw: list[Outbound]) -> list[Outbound]:
    return [o for o in raw if o.message_type[:3] in REQUIRED]


@pytest.mark.parametrize(
    ("defect", "check"),
    [
        ("lf", lambda o: "\n" in o.text and "\r" not in o.text),
        ("crlf", lambda o: o.text.count("\r\n") == len(segments(o))),
        ("z_segment", lambda o: segments(o)[-1].startswith("ZEH|1|h1|")),
        ("multi_id", lambda o: {"MR", "SS"} <= {c.split("^")[-1] for c in field(o, "PID", 3).split("~")}),
        ("no_timezone", lambda o: "+0000" not in o.text),
        ("latin1", lambda o: b"\xe9" in o.payload()),
        ("truncated_msh", lambda o: segments(o)[0].count("|") == 10),
    ],
)
def test_message_wide_defects_apply_to_every_new_kind(defect, check):
    sent = all_new(messages(40, events=sorted(KINDS), messy={defect: 1.0}))
    assert {o.message_type[:3] for o in sent} == set(REQUIRED)
    for outbound in sent:
        assert defect in outbound.defects and check(outbound), outbound.text[:400]


def test_local_codes_put_the_services_documents_and_vaccines_in_system_l():
    sent = all_new(messages(40, events=sorted(KINDS), messy={"local_codes": 1.0}))
    coded = {
        "SIU": [field(o, "AIS", 3) for o in sent if o.message_type in ("SIU^S12", "SIU^S14")],
        "MDM": [field(o, "OBX", 3) for o in sent if o.message_type.startswith("MDM")],
        "VXU": [field(o, "RXA", 5) for o in sent if o.message_type.startswith("VXU")],
    }
    assert all(coded.values())
    assert all(code.endswith("^L") for codes in coded.values() for code in codes), coded
    assert {field(o, "TXA", 2) for o in sent if o.message_type.startswith("MDM")} <= {
        "DCSUM",
        "PROCN",
        "CONSN",
    }
    clean = all_new(messages(40, events=sorted(KINDS)))
    assert {field(o, "RXA", 5).split("^")[-1] for o in clean if o.message_type == "VXU^V04"} == {"CVX"}


def test_adt_and_oru_stay_byte_for_byte_what_they_were():
    """The SHA-256 of the first 60 messages of the default feed, clean and messy, as main sent them
    before the new kinds existed (same seed, frozen clock)."""
    expected = {
        "clean": "d9164ffe16219c161d8869dccbe57823baeb801e1d6d24bf64f4c3016b2276c3",
        "messy": "d797e8c51cf29a6bc4f8b6f5db199df110f748e04b6c1139a5eb5500b13686e2",
    }
    messy = {"multi_id": 0.5, "z_segment": 0.5, "no_timezone": 0.5, "latin1": 0.3, "local_codes": 0.5}
    for name, feed in (("clean", {}), ("messy", {"messy": {**messy, "missing_segment": 0.2}})):
        digest = hashlib.sha256(b"".join(o.payload() for o in messages(60, **feed))).hexdigest()
        assert digest == expected[name], name


def test_turning_on_the_new_kinds_leaves_adt_and_oru_content_alone():
    """Only MSH-10 (one counter for the feed) differs: the other kinds draw from RNGs of their own."""
    messy = {"multi_id": 0.5, "z_segment": 0.5, "no_timezone": 0.5}
    alone = messages(30, messy=messy)
    mixed = [
        o for o in messages(80, events=sorted(EVENTS), messy=messy) if o.message_type[:3] in ("ADT", "ORU")
    ]

    def without_msh10(o: Outbound) -> str:
        return o.text.replace(o.control_id, "")

    assert [without_msh10(o) for o in mixed[:30]] == [without_msh10(o) for o in alone]


def test_same_seed_same_new_kinds_and_another_seed_differs():
    first = messages(40, events=sorted(KINDS), messy={"z_segment": 0.5, "multi_id": 0.5})
    again = messages(40, events=sorted(KINDS), messy={"z_segment": 0.5, "multi_id": 0.5})
    other = messages(40, seed=8, events=sorted(KINDS), messy={"z_segment": 0.5, "multi_id": 0.5})
    assert [o.payload() for o in first] == [o.payload() for o in again]
    assert [o.payload() for o in first] != [o.payload() for o in other]


def test_later_events_follow_their_booking_or_report():
    sent = messages(120, events=sorted(KINDS))
    booked: dict[str, int] = {}
    reports: dict[str, int] = {}
    for index, outbound in enumerate(sent):
        if outbound.message_type == "SIU^S12":
            booked[field(outbound, "SCH", 1)] = index
        elif outbound.message_type.startswith("SIU"):
            placer = field(outbound, "SCH", 1)
            assert placer in booked and index > booked[placer] + 1, outbound.message_type
        elif outbound.message_type == "MDM^T02":
            reports[field(outbound, "TXA", 12)] = index
        elif outbound.message_type.startswith("MDM"):
            assert field(outbound, "TXA", 13) in reports and field(outbound, "TXA", 12) not in reports
            reports[field(outbound, "TXA", 12)] = index


def test_unknown_event_kind_names_every_known_one():
    with pytest.raises(ValueError, match="events: unknown billing") as caught:
        FeedSpec.from_mapping({"name": "x", "target": "127.0.0.1:1", "events": ["billing"]}, "feed")
    assert "documents, immunizations, lab, scheduling, vitals" in str(caught.value)


def test_new_kinds_go_out_of_order_and_two_frames_per_write_over_the_wire():
    for messy, expected_writes in (({"out_of_order": 1.0}, None), ({"two_frames": 1.0}, 2)):
        target = IntegrationListener()
        try:
            scenario = feed_scenario(target.port, clock=FROZEN, count=4, events=["scheduling"], messy=messy)
            with serve_in_thread(scenario) as server:
                target.wait_for(4)
                deadline = time.monotonic() + 10
                while not journal(server, "outbound.done") and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert journal(server, "outbound.done")
        finally:
            target.close()
        ids = [control_id_of(p) for p in target.received]
        if expected_writes is None:
            assert ids == ["F1-000002", "F1-000001", "F1-000004", "F1-000003"]
        else:
            assert ids == [f"F1-{n:06d}" for n in range(1, 5)] and expected_writes in target.writes
        assert all(p.split(b"|")[8].startswith(b"SIU^") for p in target.received)


# -- site to site ------------------------------------------------------------------------------------
COUNT = 150


def round_trip_scenario(b_port: int):
    feed = {
        "name": "rt",
        "target": f"127.0.0.1:{b_port}",
        "events": sorted(EVENTS),
        "interval": 0,
        "count": COUNT,
        "ack_timeout": 10,
        "retries": 0,  # any refusal shows as a stopped feed, not as a retry that hides it
    }
    sites = [
        {"id": "a", "base_path": "/a/fhir", "population": {"patients": 3}, "mllp": {"feeds": [feed]}},
        {"id": "b", "base_path": "/b/fhir", "population": {"patients": 0}, "mllp": {"port": b_port}},
    ]
    return build_scenario({"name": "round-trip", "seed": 11, "clock": FROZEN, "sites": sites}), feed


def instant(v2: str) -> str:
    """The FHIR instant of a v2 timestamp with seconds and +0000."""
    return f"{v2[:4]}-{v2[4:6]}-{v2[6:8]}T{v2[8:10]}:{v2[10:12]}:{v2[12:14]}+00:00"


def search(base: str, path: str, **params) -> list[dict]:
    response = httpx.get(f"{base}/{path}", params={"_count": 1000, **params})
    assert response.status_code == 200, response.text
    bundle = response.json()
    found = [
        e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"
    ]
    assert bundle["total"] == len(found)
    return found


def test_site_to_site_round_trip_lands_every_kind_in_fhir():
    """Site A's feed (every kind, clean) goes to site B's own MLLP port: every message is AA and B's
    FHIR API has what the messages describe. ehrsim's outbound messages are ones its inbound reads."""
    (b_port,) = free_ports(1)
    scenario, feed = round_trip_scenario(b_port)
    with serve_in_thread(scenario) as server:
        deadline = time.monotonic() + 60  # generous: two cores are shared by the whole suite
        while time.monotonic() < deadline:
            ends = journal(server, "outbound.done") + journal(server, "outbound.stopped")
            if ends:
                break
            time.sleep(0.05)
        assert [e["kind"] for e in ends] == ["done"], ends
        entries = list(server.sandbox.journal)
        # What A sent, rebuilt from the same seed and frozen clock, is what went over the wire.
        spec = FeedSpec.from_mapping(feed, "feed")
        sent = list(itertools.islice(FeedMessages(spec, server.sandbox.sites["a"], 11), COUNT))
        delivered = [e for e in entries if e.get("protocol") == "outbound" and e["kind"] == "delivery"]
        assert [e["control_id"] for e in delivered] == [o.control_id for o in sent]
        acks = [e for e in entries if e.get("protocol") == "outbound" and e["kind"] == "ack"]
        assert [(a["ack_code"], a["outcome"]) for a in acks] == [("AA", "accepted")] * COUNT
        received = [e for e in entries if e.get("protocol") == "mllp" and e.get("kind") == "message"]
        assert [e["site"] for e in received] == ["b"] * COUNT
        assert {e["ack_code"] for e in received} == {"AA"}, [
            e.get("error") for e in received if e["ack_code"] != "AA"
        ]

        types = Counter(o.message_type for o in sent)
        assert all(types[t] for t in ("SIU^S14", "SIU^S15", "SIU^S26", "MDM^T06", "MDM^T10", "VXU^V04")), (
            types
        )
        b = server.site_base("b")

        appointments = search(b, "Appointment")
        assert len(appointments) == types["SIU^S12"]
        statuses = Counter(a["status"] for a in appointments)
        assert statuses == Counter(
            booked=types["SIU^S12"] - types["SIU^S15"] - types["SIU^S26"],
            cancelled=types["SIU^S15"],
            noshow=types["SIU^S26"],
        )
        first_booking = next(o for o in sent if o.message_type == "SIU^S12")
        placer = field(first_booking, "SCH", 1).split("^")[0]
        booked = search(b, "Appointment", identifier=f"urn:ehrsim:appointment:placer:EHRSIM|{placer}")
        assert len(booked) == 1
        assert (booked[0]["start"], booked[0]["end"]) == (
            instant(field(first_booking, "TQ1", 7)),
            instant(field(first_booking, "TQ1", 8)),
        )
        assert booked[0]["minutesDuration"] == int(field(first_booking, "AIS", 7))
        reason = booked[0]["reasonCode"][0]["coding"][0]
        assert reason["system"] == "http://terminology.hl7.org/CodeSystem/v2-0276"
        assert reason["code"] == field(first_booking, "SCH", 7).split("^")[0]
        modified = next(o for o in sent if o.message_type == "SIU^S14")
        placer = field(modified, "SCH", 1).split("^")[0]
        (moved,) = search(b, "Appointment", identifier=f"urn:ehrsim:appointment:placer:EHRSIM|{placer}")
        provider = field(modified, "AIP", 3).split("^")
        assert {"display": f"{provider[2]} {provider[1]}", "identifier": {"value": provider[0]}} in [
            p["actor"] for p in moved["participant"]
        ]

        documents = search(b, "DocumentReference")
        assert len(documents) == types["MDM^T02"] + types["MDM^T06"] + types["MDM^T10"]
        assert Counter(d["status"] for d in documents)["superseded"] == types["MDM^T10"]
        relations = Counter(r["code"] for d in documents for r in d.get("relatesTo", []))
        assert relations == Counter(appends=types["MDM^T06"], replaces=types["MDM^T10"])
        assert all(d["content"][0]["attachment"]["contentType"] == "text/plain" for d in documents)
        report = next(o for o in sent if o.message_type == "MDM^T02")
        number = field(report, "TXA", 12).split("^")[0]
        (stored,) = search(b, "DocumentReference", identifier=f"urn:ehrsim:document:EHRSIM|{number}")
        text = base64.b64decode(stored["content"][0]["attachment"]["data"]).decode()
        assert text == "\n".join(s.split("|")[5] for s in segments(report) if s.startswith("OBX|"))
        assert stored["context"]["encounter"][0]["reference"].startswith("Encounter/")

        immunizations = search(b, "Immunization")
        assert len(immunizations) == types["VXU^V04"]
        vaccination = next(o for o in sent if o.message_type == "VXU^V04")
        lots = {i["lotNumber"]: i for i in immunizations}
        given = lots[field(vaccination, "RXA", 15)]
        assert given["vaccineCode"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/cvx"
        assert given["vaccineCode"]["coding"][0]["code"] == field(vaccination, "RXA", 5).split("^")[0]
        assert given["route"]["coding"][0]["code"] == field(vaccination, "RXR", 1).split("^")[0]

        encounters = search(b, "Encounter")
        assert len(encounters) == types["ADT^A01"]
        assert Counter(e["status"] for e in encounters)["finished"] == types["ADT^A03"]
        observations = search(b, "Observation")
        assert len(observations) == sum(
            1 for o in sent if o.message_type == "ORU^R01" for s in segments(o) if s.startswith("OBX|")
        )
        assert len(search(b, "Patient")) == 3


def test_scenario_files_accept_the_new_kinds_and_name_an_unknown_one(tmp_path):
    from simulator.scenario import validate_file

    def problems(events: str) -> list:
        path = tmp_path / "feed.yaml"
        path.write_text(
            "sites:\n  - id: a\n    mllp:\n      feeds:\n"
            f"        - {{name: f, target: '127.0.0.1:6661', events: {events}}}\n"
        )
        return validate_file(str(path))

    assert problems("[adt, scheduling, documents, immunizations]") == []
    (problem,) = problems("[adt, billing]")
    assert problem.path.startswith("sites[0].mllp.feeds[0].events")
