"""The inbound MLLP endpoint over real TCP: ACK modes, framing edge cases, charsets, duplicates, TLS."""

from __future__ import annotations

import socket
import ssl
import time

import httpx
import pytest

from simulator.mllp.client import MllpClient, ack_fields
from simulator.mllp.framing import frame
from simulator.tls import self_signed_pair
from tests.mllp_support import client, journal, mllp_site, oru


@pytest.fixture(scope="module")
def site():
    with mllp_site({"max_frame_bytes": 4096, "segment_terminators": "strict"}) as running:
        yield running


def test_original_mode_aa_with_swapped_header(site):
    server, port = site
    with client(port) as c:
        ack = c.send(oru("ORIG-1", mrn="E1"))
    fields = ack_fields(ack)
    assert fields["code"] == "AA" and fields["control_id"] == "ORIG-1"
    assert ack.startswith(b"MSH|^~\\&|EHR|EHRSIM|LAB|GOODHOSP|")
    entry = next(e for e in journal(server, "mllp.message") if e.get("control_id") == "ORIG-1")
    assert entry["ack_code"] == "AA" and entry["applied"] is True and entry["ack_mode"] == "original"


def test_ack_control_ids_are_unique(site):
    _, port = site
    with client(port) as c:
        ids = {ack_fields(c.send(oru(f"U-{i}", mrn="E2")))["ack_id"] for i in range(5)}
    assert len(ids) == 5


def test_many_messages_on_many_connections(site):
    _, port = site
    clients = [client(port) for _ in range(4)]
    try:
        for i in range(10):
            for n, c in enumerate(clients):
                assert ack_fields(c.send(oru(f"MANY-{n}-{i}", mrn=f"M{n}")))["code"] == "AA"
    finally:
        for c in clients:
            c.close()


def test_application_error_gives_ae_with_err(site):
    _, port = site
    with client(port) as c:
        ack = ack_fields(c.send(oru("AE-1", value="seventy")))
    assert ack["code"] == "AE" and ack["control_id"] == "AE-1"
    assert ack["err"].startswith("ERR||OBX^1^5|102^Data type error^HL70357|E|")
    assert "'seventy' is not a number" in ack["err"]


def test_unsupported_message_type_gives_ar(site):
    _, port = site
    with client(port) as c:
        ack = ack_fields(c.send(oru("AR-1").replace("ORU^R01^ORU_R01", "ZZZ^Z99^ZZZ_Z99")))
    assert ack["code"] == "AR" and "|200^Unsupported message type^HL70357|" in ack["err"]


def test_missing_control_id_is_rejected(site):
    _, port = site
    with client(port) as c:
        ack = ack_fields(c.send(oru("")))
    assert ack["code"] == "AR" and "MSH^1^10" in ack["err"]


def test_garbage_payload_gets_ar_without_msa2(site):
    _, port = site
    with client(port) as c:
        ack = ack_fields(c.send(b"hello, this is not HL7"))
    assert ack["code"] == "AR" and ack["control_id"] == ""
    assert "must begin with an MSH segment" in ack["err"]


@pytest.mark.parametrize(
    ("accept", "app", "expected"),
    [
        ("AL", "AL", ["CA", "AA"]),
        ("AL", "NE", ["CA"]),
        ("NE", "AL", ["AA"]),
        ("ER", "SU", ["AA"]),
    ],
)
def test_enhanced_mode_commit_and_application_acks(site, accept, app, expected):
    _, port = site
    control_id = f"ENH-{accept}-{app}"
    with client(port) as c:
        c.write(frame(oru(control_id, extra=f"|||{accept}|{app}").encode()))
        codes = [ack_fields(c.receive())["code"] for _ in expected]
        with pytest.raises(TimeoutError):
            c.receive(timeout=0.2)  # nothing more than asked for
    assert codes == expected


def test_enhanced_mode_ne_ne_sends_nothing_but_applies(site):
    server, port = site
    with client(port) as c:
        c.write(frame(oru("ENH-NE", mrn="NE1", extra="|||NE|NE").encode()))
        with pytest.raises(TimeoutError):
            c.receive(timeout=0.3)
    entry = next(e for e in journal(server, "mllp.message") if e.get("control_id") == "ENH-NE")
    assert entry["ack_code"] == "none" and entry["applied"] is True


def test_enhanced_mode_application_error_is_ca_then_ae(site):
    _, port = site
    with client(port) as c:
        c.write(frame(oru("ENH-AE", value="x", extra="|||AL|AL").encode()))
        assert [ack_fields(c.receive())["code"] for _ in range(2)] == ["CA", "AE"]


def test_enhanced_mode_rejection_is_cr(site):
    _, port = site
    with client(port) as c:
        c.write(frame(oru("ENH-CR", extra="|||AL|AL").replace("|2.5|", "|3.0|").encode()))
        ack = ack_fields(c.receive())
    assert ack["code"] == "CR" and "203^Unsupported version id" in ack["err"]


def test_split_frame_and_two_frames_in_one_packet(site):
    _, port = site
    one, two, three = (frame(oru(f"SPLIT-{i}", mrn="S1").encode()) for i in range(3))
    with client(port) as c:
        c.write(one[:10])
        time.sleep(0.05)
        c.write(one[10:40])
        time.sleep(0.05)
        c.write(one[40:] + two + three)  # end of one frame and two whole frames in one packet
        ids = [ack_fields(c.receive())["control_id"] for _ in range(3)]
    assert ids == ["SPLIT-0", "SPLIT-1", "SPLIT-2"]


def test_junk_before_start_byte_is_skipped_and_journaled(site):
    server, port = site
    with client(port) as c:
        c.write(b"GET / HTTP/1.0\r\n\r\n" + frame(oru("JUNK-1").encode()))
        assert ack_fields(c.receive())["control_id"] == "JUNK-1"
    assert any(e["head"].startswith("GET / HTTP/1.0") for e in journal(server, "mllp.junk"))


def test_oversized_frame_is_rejected_and_connection_stays_usable(site):
    _, port = site
    big = oru("BIG-1", value="1" * 5000, value_type="ST")
    with client(port) as c:
        ack = ack_fields(c.send(big))
        assert ack["code"] == "AR" and ack["control_id"] == "BIG-1"
        assert "exceeds this endpoint's limit of 4096 bytes" in ack["err"]
        assert ack_fields(c.send(oru("AFTER-BIG")))["code"] == "AA"


def test_strict_site_naks_lf_terminators(site):
    _, port = site
    with client(port) as c:
        ack = ack_fields(c.send(oru("LF-1", sep="\n")))
    assert ack["code"] == "AE" and ack["control_id"] == "LF-1"
    assert "HL7 v2 requires CR" in ack["err"]


def test_lenient_site_accepts_crlf_with_a_warning():
    with mllp_site({"segment_terminators": "lenient"}) as (server, port), client(port) as c:
        assert ack_fields(c.send(oru("CRLF-1", sep="\r\n")))["code"] == "AA"
        entry = next(e for e in journal(server, "mllp.message") if e.get("control_id") == "CRLF-1")
        assert any("LF or CRLF" in w for w in entry["warnings"])


def test_latin1_declared_in_msh18_is_decoded(site):
    server, port = site
    message = oru("LATIN-1", mrn="LAT1", extra="||||||8859/1").replace("DOE^JANE", "MÜLLER^JOSÉ")
    with client(port) as c:
        assert ack_fields(c.send(message.encode("latin-1")))["code"] == "AA"
    bundle = httpx.get(server.fhir_base + "/Patient", params={"identifier": "LAT1"}).json()
    assert bundle["entry"][0]["resource"]["name"][0]["family"] == "MÜLLER"


def test_bytes_that_do_not_decode_get_ae_not_a_crash(site):
    _, port = site
    message = oru("BADBYTES", extra="||||||UNICODE UTF-8").replace("DOE^JANE", "M\udcfcLLER^J")
    with client(port) as c:
        ack = ack_fields(c.send(message.encode("utf-8", "surrogateescape")))
        assert ack["code"] == "AE" and ack["control_id"] == "BADBYTES"
        assert "not valid utf-8" in ack["err"] and "|PID^1^|102^" in ack["err"]
        assert ack_fields(c.send(oru("AFTER-BAD")))["code"] == "AA"


def test_unknown_charset_is_rejected(site):
    _, port = site
    with client(port) as c:
        ack = ack_fields(c.send(oru("CS-1", extra="||||||EBCDIC")))
    assert ack["code"] == "AR" and "MSH^1^18" in ack["err"]


def test_duplicate_is_acked_again_and_not_applied_twice(site):
    server, port = site
    message = oru("DUP-1", mrn="DUP", value="99")
    with client(port) as c:
        first = c.send(message)
    with client(port) as c:  # a resend usually comes on a new connection
        second = c.send(message)
    assert first == second and ack_fields(first)["code"] == "AA"
    entries = [e for e in journal(server, "mllp.message") if e.get("control_id") == "DUP-1"]
    assert [e.get("duplicate", False) for e in entries] == [False, True]
    patients = httpx.get(server.fhir_base + "/Patient", params={"identifier": "DUP"}).json()
    pid = patients["entry"][0]["resource"]["id"]
    found = httpx.get(server.fhir_base + "/Observation", params={"subject": f"Patient/{pid}"}).json()
    assert found["total"] == 1


def test_idle_connections_are_closed():
    with mllp_site({"idle_timeout": 0.2}) as (server, port):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(2)
        assert sock.recv(10) == b""  # closed by the server
        sock.close()
        assert any(e.get("reason") == "idle_timeout" for e in journal(server, "mllp.connection"))


def test_max_connections_setting_rejects_the_extra_client():
    with mllp_site({"max_connections": 1}) as (server, port), client(port) as first:
        assert ack_fields(first.send(oru("MAX-1")))["code"] == "AA"
        with pytest.raises(ConnectionError), client(port) as second:  # reset may come at connect
            second.send(oru("MAX-2"))
        assert any(e.get("reason") == "max_connections" for e in journal(server, "mllp.connection"))


def test_tls_listener(tmp_path):
    cert, key = self_signed_pair(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    with mllp_site({"tls": {"cert": str(cert), "key": str(key)}}) as (_, port):
        with MllpClient("127.0.0.1", port, ssl_context=context) as c:
            assert ack_fields(c.send(oru("TLS-1")))["code"] == "AA"
        with client(port) as plain, pytest.raises((ConnectionError, TimeoutError)):
            plain.send(oru("PLAIN-1"), timeout=1)


def test_admin_sites_lists_the_mllp_port(site):
    server, port = site
    sites = httpx.get(server.admin + "/sites").json()
    assert sites[0]["mllp_port"] == port


def test_strict_validation_uses_hl7apy_structure():
    with mllp_site({"validation": "strict"}) as (_, port), client(port) as c:
        assert ack_fields(c.send(oru("VAL-1")))["code"] == "AA"
        no_obr = "\r".join(s for s in oru("VAL-2").split("\r") if not s.startswith("OBR"))
        ack = ack_fields(c.send(no_obr))
        assert ack["code"] == "AE" and "OBR" in ack["err"]


def test_sandbox_reset_forgets_duplicates_and_starts_ack_ids_over():
    with mllp_site() as (server, port):
        message = oru("RESET-1", mrn="RST")
        with client(port) as c:
            first = ack_fields(c.send(message))
        assert httpx.post(server.admin + "/reset").status_code == 200
        with client(port) as c:
            again = ack_fields(c.send(message))
        assert again["ack_id"] == first["ack_id"]  # ids start over with the sandbox
        entries = journal(server, "mllp.message")
        assert len(entries) == 1 and entries[0].get("duplicate") is None and entries[0]["applied"] is True
        patients = httpx.get(server.fhir_base + "/Patient", params={"identifier": "RST"}).json()
        assert patients["total"] == 1
