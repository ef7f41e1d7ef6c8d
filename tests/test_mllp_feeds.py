"""Outbound feeds to a test listener: order, ACK matching, retries, stop on AE, messy defects."""

from __future__ import annotations

import time

import httpx
import pytest

from simulator.mllp.er7 import tokenize
from simulator.testing import serve_in_thread
from tests.mllp_support import IntegrationListener, ack_for, control_id_of, feed_scenario, journal, mllp_site


@pytest.fixture
def listener():
    created: list[IntegrationListener] = []

    def make(respond=None) -> IntegrationListener:
        created.append(IntegrationListener(respond))
        return created[-1]

    yield make
    for item in created:
        item.close()


def run_feed(port: int, wait_kinds=("done", "stopped"), timeout: float = 10, **feed):
    with serve_in_thread(feed_scenario(port, **feed)) as server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(
                e.get("protocol") == "outbound" and e["kind"] in wait_kinds for e in server.sandbox.journal
            ):
                break
            time.sleep(0.02)
        return server, list(server.sandbox.journal)


def kinds(entries, name):
    protocol, _, kind = name.partition(".")
    return [e for e in entries if e.get("protocol") == protocol and e.get("kind") == kind]


def test_feed_delivers_in_order_and_journals_every_attempt_and_ack(listener):
    target = listener()
    _server, entries = run_feed(target.port)
    ids = [control_id_of(p) for p in target.received]
    assert ids == [f"F1-{n:06d}" for n in range(1, 7)]
    first = tokenize(target.received[0].decode())
    assert first.message_type == "ADT^A01" and first.segment("PID").value(3, 4) == "EHRSIM"
    assert all(tokenize(p.decode()).message_code in ("ADT", "ORU") for p in target.received)
    assert [e["control_id"] for e in kinds(entries, "outbound.delivery")] == ids
    acks = kinds(entries, "outbound.ack")
    assert [(a["control_id"], a["ack_code"], a["outcome"]) for a in acks] == [
        (i, "AA", "accepted") for i in ids
    ]
    assert kinds(entries, "outbound.done")[0]["sent"] == 6
    assert target.connections == 1  # one persistent connection


def test_ar_is_retried_with_the_same_control_id(listener):
    target = listener(
        lambda p, attempt: ack_for(p, "AR" if control_id_of(p) == "F1-000002" and attempt < 3 else "AA")
    )
    _, entries = run_feed(target.port)
    ids = [control_id_of(p) for p in target.received]
    assert ids == [
        "F1-000001",
        "F1-000002",
        "F1-000002",
        "F1-000002",
        "F1-000003",
        "F1-000004",
        "F1-000005",
        "F1-000006",
    ]
    retries = kinds(entries, "outbound.retry")
    assert [(r["control_id"], r["attempt"], r["after"]) for r in retries] == [
        ("F1-000002", 1, "rejected"),
        ("F1-000002", 2, "rejected"),
    ]
    assert [r["wait"] for r in retries] == [0.05, 0.1]  # exponential backoff


def test_timeout_reconnects_and_resends(listener):
    target = listener(
        lambda p, attempt: None if control_id_of(p) == "F1-000001" and attempt == 1 else ack_for(p, "AA")
    )
    _, entries = run_feed(target.port, count=2, ack_timeout=0.3)
    assert [control_id_of(p) for p in target.received] == ["F1-000001", "F1-000001", "F1-000002"]
    assert kinds(entries, "outbound.ack")[0]["outcome"] == "timeout"
    assert target.connections == 2  # a late ACK must not be read as the next message's


def test_reset_by_listener_reconnects(listener):
    target = listener(
        lambda p, attempt: "close" if attempt == 1 and control_id_of(p) == "F1-000002" else ack_for(p, "AA")
    )
    _, entries = run_feed(target.port, count=3)
    assert [control_id_of(p) for p in target.received] == ["F1-000001", "F1-000002", "F1-000002", "F1-000003"]
    assert any(a["outcome"] == "connection" for a in kinds(entries, "outbound.ack"))


def test_mismatched_msa2_is_not_taken_as_the_ack(listener):
    target = listener(
        lambda p, attempt: ack_for(p, "AA", "SOMETHING-ELSE") if attempt == 1 else ack_for(p, "AA")
    )
    _, entries = run_feed(target.port, count=1, ack_timeout=0.3)
    outcomes = [a["outcome"] for a in kinds(entries, "outbound.ack")]
    assert outcomes == ["mismatch", "timeout", "accepted"]


def test_ae_stops_the_feed(listener):
    target = listener(lambda p, attempt: ack_for(p, "AE" if control_id_of(p) == "F1-000003" else "AA"))
    _, entries = run_feed(target.port)
    assert [control_id_of(p) for p in target.received] == ["F1-000001", "F1-000002", "F1-000003"]
    stopped = kinds(entries, "outbound.stopped")[0]
    assert "F1-000003 was answered AE" in stopped["reason"] and stopped["sent"] == 2


def test_retries_exhausted_stop_the_feed_without_skipping(listener):
    target = listener(lambda p, attempt: ack_for(p, "AR"))
    _, entries = run_feed(target.port, retries=1)
    assert [control_id_of(p) for p in target.received] == ["F1-000001", "F1-000001"]
    assert "not accepted after 2 attempts" in kinds(entries, "outbound.stopped")[0]["reason"]


def test_unreachable_listener_is_retried_then_stops():
    _, entries = run_feed(1, retries=1, count=1)  # port 1: nothing listens
    acks = kinds(entries, "outbound.ack")
    assert [a["outcome"] for a in acks] == ["connection", "connection"]
    assert kinds(entries, "outbound.stopped")


@pytest.mark.parametrize(
    ("defect", "check"),
    [
        ("lf", lambda raw: b"\n" in raw and b"\r" not in raw),
        ("crlf", lambda raw: b"\r\n" in raw),
        ("z_segment", lambda raw: b"\rZEH|" in raw),
        ("multi_id", lambda raw: raw.count(b"^MR") + raw.count(b"^SS") >= 3),
        ("local_codes", lambda raw: b"ORU" not in raw.split(b"\r")[0] or b"^L|" in raw),
        ("no_timezone", lambda raw: b"+0000" not in raw),
        ("latin1", lambda raw: b"\xe9" in raw),
        ("truncated_msh", lambda raw: raw.split(b"\r")[0].count(b"|") == 10),
        ("missing_segment", lambda raw: b"\rPV1|" not in raw or b"\rPID|" not in raw),
        ("large_obx", lambda raw: b"ORU" not in raw.split(b"\r")[0] or len(raw) > 100_000),
    ],
)
def test_messy_defects(listener, defect, check):
    target = listener()
    _, entries = run_feed(target.port, count=4, messy={defect: 1.0})
    assert len(target.received) == 4
    assert all(check(raw) for raw in target.received), target.received[0][:300]
    assert all(defect in a["defects"] for a in kinds(entries, "outbound.delivery"))


def test_two_frames_in_one_write(listener):
    target = listener()
    _, entries = run_feed(target.port, count=4, messy={"two_frames": 1.0})
    assert [control_id_of(p) for p in target.received] == [f"F1-{n:06d}" for n in range(1, 5)]
    assert 2 in target.writes
    assert any(a.get("frames_in_write") == 2 for a in kinds(entries, "outbound.delivery"))


def test_events_out_of_order(listener):
    target = listener()
    run_feed(target.port, count=4, messy={"out_of_order": 1.0})
    assert [control_id_of(p) for p in target.received] == ["F1-000002", "F1-000001", "F1-000004", "F1-000003"]


def test_same_seed_same_feed(listener):
    first, second = listener(), listener()
    frozen = {"start": "2026-03-01T08:00:00Z", "speed": 0}
    run_feed(first.port, clock=frozen, messy={"multi_id": 0.5, "z_segment": 0.5, "no_timezone": 0.5})
    run_feed(second.port, clock=frozen, messy={"multi_id": 0.5, "z_segment": 0.5, "no_timezone": 0.5})
    assert len(first.received) == 6
    assert first.received == second.received


def test_feed_into_an_ehrsim_endpoint_lands_in_fhir():
    """ehrsim's feed to another ehrsim site's listener: admit, transfer, discharge end up in FHIR."""
    with mllp_site() as (receiver, port):
        _, entries = run_feed(port, count=3, events=["adt"])
        assert [a["outcome"] for a in kinds(entries, "outbound.ack")] == ["accepted"] * 3
        assert [e["message_type"] for e in journal(receiver, "mllp.message")] == [
            "ADT^A01",
            "ADT^A02",
            "ADT^A03",
        ]
        encounter = httpx.get(receiver.fhir_base + "/Encounter", params={"identifier": "V000001"}).json()
        resource = encounter["entry"][0]["resource"]
        assert resource["status"] == "finished" and resource["location"]


def test_sandbox_reset_restarts_the_feed(listener):
    target = listener()
    with serve_in_thread(feed_scenario(target.port, count=3)) as server:
        target.wait_for(3)
        assert httpx.post(server.admin + "/reset").status_code == 200
        target.wait_for(6)
    assert [control_id_of(p) for p in target.received] == ["F1-000001", "F1-000002", "F1-000003"] * 2


@pytest.mark.parametrize(("messy", "valid"), [({}, True), ({"missing_segment": 1.0}, False)])
def test_feed_messages_checked_against_hl7apy_structures(messy, valid):
    """hl7apy is the reference model: clean feed messages are valid for their structure and
    version (2.5.1); a feed told to leave out required segments is not."""
    from simulator.mllp.er7 import HL7Error
    from simulator.mllp.feeds import FeedMessages, FeedSpec
    from simulator.mllp.validation import validate_structure
    from simulator.sandbox import Sandbox
    from tests.mllp_support import mllp_scenario

    sandbox = Sandbox(mllp_scenario(patients=2), service_factories=[])
    spec = FeedSpec.from_mapping({"name": "v", "target": "127.0.0.1:1", "messy": messy}, "feed")
    messages = iter(FeedMessages(spec, sandbox.sites["h1"], 7))
    outcomes = []
    for _ in range(10):
        outbound = next(messages)
        try:
            validate_structure(tokenize(outbound.text))
            outcomes.append(True)
        except HL7Error:
            outcomes.append(False)
    assert outcomes == [valid] * 10


def test_retries_are_verifiable_through_the_admin_journal_api(listener):
    target = listener(lambda p, attempt: ack_for(p, "AR" if attempt < 4 else "AA"))
    with serve_in_thread(feed_scenario(target.port, count=1, retries=3, backoff=0.1)) as server:
        target.wait_for(4)
        # Generous: the whole suite shares two cores; the loop ends as soon as the feed is done.
        deadline = time.monotonic() + 30
        while not journal(server, "outbound.done") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert journal(server, "outbound.done"), "the feed never journaled outbound.done"
        check = {
            "check": "gaps",
            "filter": {"protocol": "outbound", "kind": "delivery"},
            "clock": "wall",
            "min_gap": 0.1,  # never resent before the backoff (timing-only checks would be flaky)
        }
        result = httpx.post(server.admin + "/journal/verify", json=check).json()
        assert result["ok"] is True, result
        assert len(result["gaps"]) == 3
        assert [r["wait"] for r in journal(server, "outbound.retry")] == [0.1, 0.2, 0.4]
        exported = httpx.get(server.admin + "/journal", params={"protocol": "outbound", "kind": "ack"}).json()
        assert [e["ack_code"] for e in exported["entries"]] == ["AR", "AR", "AR", "AA"]
