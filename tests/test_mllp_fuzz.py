"""Fuzzing the endpoint over TCP: random bytes and near-valid messages never stop it answering."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.mllp.client import ack_fields
from simulator.mllp.framing import frame
from tests.mllp_support import client, mllp_site, oru

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def site():
    with mllp_site({"max_frame_bytes": 2048, "duplicate_window": 0}) as running:
        yield running


def still_answers(port: int) -> None:
    with client(port, timeout=5) as c:
        assert ack_fields(c.send(oru("ALIVE")))["code"] == "AA"


@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes_in_a_frame_get_an_ack(site, data):
    _, port = site
    payload = data.replace(b"\x1c\x0d", b"").replace(b"\x0b", b"")
    with client(port, timeout=5) as c:
        ack = ack_fields(c.send(payload))
    assert ack["code"] in ("AA", "AE", "AR")


@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes_on_the_wire_do_not_break_the_server(site, data):
    _, port = site
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
    still_answers(port)


MUTATIONS = st.sampled_from(["drop", "dup", "swap", "insert", "truncate"])


@FUZZ
@given(
    ops=st.lists(
        st.tuples(MUTATIONS, st.integers(0, 10_000), st.sampled_from("|^~\\&\r\nX9é\x00")), max_size=6
    ),
    seps=st.sampled_from(["\r", "\n", "\r\n"]),
)
def test_near_valid_messages_get_a_precise_answer(site, ops, seps):
    _, port = site
    text = list(oru("NEAR", sep=seps))
    for op, pos, ch in ops:
        if not text:
            break
        i = pos % len(text)
        if op == "drop":
            del text[i]
        elif op == "dup":
            text.insert(i, text[i])
        elif op == "swap" and i + 1 < len(text):
            text[i], text[i + 1] = text[i + 1], text[i]
        elif op == "insert":
            text.insert(i, ch)
        elif op == "truncate":
            del text[i:]
    with client(port, timeout=5) as c:
        ack = c.send("".join(text).encode("utf-8"))
    fields = ack_fields(ack)
    assert fields["code"] in ("AA", "AE", "AR", "CA", "CE", "CR")
    if fields["code"] != "AA" and fields["code"] != "CA":
        assert fields["err"], ack  # every negative ACK says why


def test_many_frames_back_to_back_with_junk_between(site):
    _, port = site
    data = b"".join(frame(oru(f"B2B-{i}").encode()) + b"\x00junk\r\n" for i in range(50))
    with client(port) as c:
        c.write(data)
        ids = [ack_fields(c.receive())["control_id"] for _ in range(50)]
    assert ids == [f"B2B-{i}" for i in range(50)]
