"""Inbound MLLP faults over real sockets: every action, its matcher, schedule and seeded probability."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from simulator.mllp.client import ack_fields
from simulator.mllp.faults import check_action
from simulator.mllp.framing import NAK_V2, frame
from tests.mllp_support import client, journal, mllp_fault, mllp_site, oru

REPLY_FAULTS = [
    mllp_fault("lost", "lost_ack", {"control_id": "LOST-*"}, schedule={"times": 1}),
    mllp_fault("hold", "never_ack", {"control_id": "HOLD-*"}),
    mllp_fault("slow", "ack_delay", {"control_id": "SLOW-*"}, delay="400ms"),
    mllp_fault("drip", "ack_dribble", {"control_id": "DRIP-*"}, interval=0.002),
    mllp_fault("ae", "ack_code", {"control_id": "CODE-AE"}, code="AE"),
    mllp_fault("ar", "ack_code", {"control_id": "CODE-AR"}, code="AR"),
    mllp_fault("ce", "ack_code", {"control_id": "CODE-CE"}, code="CE"),
    mllp_fault("cr", "ack_code", {"control_id": "CODE-CR"}, code="CR"),
    mllp_fault("wrong", "ack_wrong_id", {"control_id": "WRONG-*"}),
    mllp_fault("stale", "ack_wrong_id", {"control_id": "STALE-*"}, mode="stale"),
    mllp_fault("twice", "ack_duplicate", {"control_id": "TWICE-*"}),
    mllp_fault("nomsa", "ack_without_msa", {"control_id": "NOMSA-*"}),
    mllp_fault("http", "non_hl7_reply", {"control_id": "HTTP-*"}),
    mllp_fault("nak", "nak_byte", {"control_id": "NAK-*"}),
    mllp_fault("adt-only", "ack_code", {"message_type": "ADT^*", "control_id": "TYPE-*"}, code="AR"),
    # An HTTP fault (on every FHIR Encounter request) must not touch MLLP traffic.
    {
        "id": "http-down",
        "match": {"protocol": "fhir", "resource_type": "Encounter"},
        "action": {"type": "outage"},
    },
]


@pytest.fixture(scope="module")
def site():
    with mllp_site(faults=REPLY_FAULTS) as running:
        yield running


def entry_for(server, control_id):
    return [e for e in journal(server, "mllp.message") if e.get("control_id") == control_id]


def test_lost_ack_closes_before_replying_and_the_resend_is_deduplicated(site):
    server, port = site
    message = oru("LOST-1", mrn="LOST")
    with client(port) as c, pytest.raises(ConnectionError):
        c.send(message)
    with client(port) as c:
        assert ack_fields(c.send(message))["code"] == "AA"  # the fault fires once (schedule.times)
    entries = entry_for(server, "LOST-1")
    assert entries[0]["faults"] == ("lost",) and entries[0]["applied"] is True
    assert entries[1]["duplicate"] is True
    patient = httpx.get(server.fhir_base + "/Patient", params={"identifier": "LOST"}).json()["entry"][0]
    observations = httpx.get(
        server.fhir_base + "/Observation", params={"subject": f"Patient/{patient['resource']['id']}"}
    )
    assert observations.json()["total"] == 1


def test_never_ack_holds_the_socket(site):
    _, port = site
    with client(port) as c:
        c.write(frame(oru("HOLD-1").encode()))
        with pytest.raises(TimeoutError):
            c.receive(timeout=0.4)


def test_delay_ack_just_over_and_just_under_a_timeout(site):
    server, port = site
    with client(port) as c:
        c.write(frame(oru("SLOW-1").encode()))
        with pytest.raises(TimeoutError):
            c.receive(timeout=0.2)  # a client with a 0.2 s timeout gives up
        assert ack_fields(c.receive(timeout=2))["control_id"] == "SLOW-1"  # a patient one gets it
    assert entry_for(server, "SLOW-1")[0]["ack_delay"] == 0.4


def test_delayed_ack_keeps_later_acks_in_order(site):
    _, port = site
    with client(port) as c:
        c.write(frame(oru("SLOW-2").encode()) + frame(oru("AFTER-SLOW").encode()))
        assert [ack_fields(c.receive(timeout=2))["control_id"] for _ in range(2)] == ["SLOW-2", "AFTER-SLOW"]


def test_dribbled_ack_arrives_byte_by_byte(site):
    _, port = site
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(frame(oru("DRIP-1").encode()))
    chunks = []
    while not b"".join(chunks).endswith(b"\x1c\r"):
        chunks.append(sock.recv(65536))
    sock.close()
    assert len(chunks) > 20  # many small writes, not one
    assert b"MSA|AA|DRIP-1" in b"".join(chunks)


@pytest.mark.parametrize("code", ["AE", "AR", "CE", "CR"])
def test_ack_code_replaces_aa_and_the_message_is_not_applied(site, code):
    server, port = site
    with client(port) as c:
        ack = ack_fields(c.send(oru(f"CODE-{code}", mrn=f"CODE{code}")))
    assert ack["code"] == code and ack["control_id"] == f"CODE-{code}" and ack["err"]
    assert entry_for(server, f"CODE-{code}")[0]["applied"] is False
    found = httpx.get(server.fhir_base + "/Patient", params={"identifier": f"CODE{code}"}).json()
    assert found["total"] == 0


def test_wrong_and_stale_msa2(site):
    _, port = site
    with client(port) as c:
        assert ack_fields(c.send(oru("WRONG-1")))["control_id"] == "XWRONG-1X"
        assert ack_fields(c.send(oru("PREV-1")))["control_id"] == "PREV-1"
        assert ack_fields(c.send(oru("STALE-1")))["control_id"] == "PREV-1"


def test_duplicate_ack(site):
    _, port = site
    with client(port) as c:
        first = c.send(oru("TWICE-1"))
        assert c.receive(timeout=1) == first


def test_ack_without_msa(site):
    _, port = site
    with client(port) as c:
        ack = c.send(oru("NOMSA-1"))
    assert ack.startswith(b"MSH|") and b"MSA" not in ack


def test_non_hl7_reply(site):
    _, port = site
    with client(port) as c:
        c.write(frame(oru("HTTP-1").encode()))
        with pytest.raises(TimeoutError):
            c.receive(timeout=0.3)
        assert b"".join(c.junk).startswith(b"HTTP/1.1 400")


def test_mllp_v2_nak_byte(site):
    _, port = site
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(frame(oru("NAK-1").encode()))
    assert sock.recv(100) == NAK_V2
    sock.close()


def test_matcher_on_message_type(site):
    _, port = site
    with client(port) as c:
        assert ack_fields(c.send(oru("TYPE-1")))["code"] == "AA"  # an ORU does not match ADT^*
        adt = oru("TYPE-2").replace("ORU^R01^ORU_R01", "ADT^A08^ADT_A01")
        assert ack_fields(c.send(adt))["code"] == "AR"


def test_accept_then_close():
    with mllp_site(faults=[mllp_fault("bye", "accept_close")]) as (server, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        assert sock.recv(10) == b""
        sock.close()
        assert any(e.get("reason") == "accept_close" for e in journal(server, "mllp.connection"))


def test_reset_mid_frame():
    with mllp_site(faults=[mllp_fault("rst", "reset_mid_frame")]) as (_, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        sock.sendall(frame(oru("RST-1").encode())[:30])
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
            sock.sendall(b"more")
            sock.recv(10)
        sock.close()


def test_refuse_connections_for_a_window():
    with mllp_site(faults=[mllp_fault("down", "refuse", schedule={"for": 2.5})]) as (server, port):
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not journal(server, "mllp.listener"):
            time.sleep(0.01)
        assert server.sandbox.clock.elapsed() < 2.5, "start-up took the whole window; nothing to test"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1)
        while server.sandbox.clock.elapsed() < 2.6:
            time.sleep(0.05)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and len(journal(server, "mllp.listener")) < 2:
            time.sleep(0.01)
        with client(port) as c:
            assert ack_fields(c.send(oru("BACK-1")))["code"] == "AA"
        assert [e["event"] for e in journal(server, "mllp.listener")] == ["refusing", "accepting"]


def test_max_connections_fault():
    with mllp_site(faults=[mllp_fault("cap", "max_connections", limit=1)]) as (server, port):
        with client(port) as first:
            assert ack_fields(first.send(oru("CAP-1")))["code"] == "AA"
            with pytest.raises(ConnectionError), client(port) as second:
                second.send(oru("CAP-2"))
        rejected = [e for e in journal(server, "mllp.connection") if e.get("event") == "rejected"]
        assert rejected and rejected[0]["faults"] == ("cap",)


def _fired_sequence():
    faults = [mllp_fault("coin", "ack_code", code="AE", probability=0.5)]
    with mllp_site({"duplicate_window": 0}, faults=faults) as (_, port), client(port) as c:
        return [ack_fields(c.send(oru(f"P-{i}")))["code"] for i in range(24)]


def test_probability_is_seeded_and_reproducible():
    first, second = _fired_sequence(), _fired_sequence()
    assert first == second
    assert 0 < first.count("AE") < 24


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (mllp_fault("x", "ack_code", code="AA"), "ack_code needs code AE, AR, CE or CR"),
        (mllp_fault("x", "ack_delay"), "ack_delay needs a delay"),
        (mllp_fault("x", "ack_wrong_id", mode="sideways"), "mode is 'wrong' or 'stale'"),
        (mllp_fault("x", "nak_byte", code="AE"), "'nak_byte' does not take code"),
        (mllp_fault("x", "max_connections"), "max_connections needs a limit"),
    ],
)
def test_bad_mllp_actions_are_refused_with_the_reason(fault, why):
    from simulator.faults.engine import FaultSpecError

    with pytest.raises(FaultSpecError, match=why):
        check_action(fault["id"], fault["action"])


def test_faults_added_at_runtime_through_the_admin_api():
    with mllp_site() as (server, port):
        response = httpx.post(server.admin + "/faults", json=mllp_fault("late", "ack_code", code="AR"))
        assert response.status_code in (200, 201), response.text
        with client(port) as c:
            assert ack_fields(c.send(oru("RT-1")))["code"] == "AR"
        assert entry_for(server, "RT-1")[0]["faults"] == ("late",)


def test_mllp_flaky_scenario_is_valid_and_a_careful_client_gets_everything_through():
    from simulator.scenario import validate_file
    from simulator.testing import serve_in_thread
    from tests.mllp_support import adt

    assert validate_file("mllp-flaky") == []
    with serve_in_thread("mllp-flaky") as server:
        port = server.sandbox.sites["default"].site.extras["mllp_port"]
        conn = client(port)

        def deliver(control_id: str) -> str:
            """Resend on reset, timeout or a foreign MSA-2; skip ACKs for other messages."""
            nonlocal conn
            message = frame(adt("A01", control_id, mrn=control_id, visit=control_id).encode())
            for _ in range(6):
                try:
                    conn.write(message)
                    while True:
                        fields = ack_fields(conn.receive(timeout=1.5))
                        if fields["control_id"] == control_id:
                            return fields["code"]
                except (ConnectionError, TimeoutError, OSError):
                    conn.close()
                    conn = client(port)
            raise AssertionError(f"{control_id} never acknowledged")

        codes = [deliver(f"FLAKY-{i}") for i in range(25)]
        conn.close()
        assert set(codes) <= {"AA", "AR"} and codes.count("AA") >= 20
        applied = [e for e in journal(server, "mllp.message") if e.get("applied")]
        assert len({e["control_id"] for e in applied}) == len(applied) == codes.count("AA")  # never twice
        described = {f["id"]: f for f in httpx.get(server.admin + "/faults").json()}
        assert described["busy-rejects"]["matched"] >= 25
        assert sum(f["hits"] for f in described.values()) > 0  # the day really was bad
