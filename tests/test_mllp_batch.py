"""The listener's batch: frames from many reads are handled together, and every connection still
gets its ACKs in the order it sent its messages, whatever mix of whole frames, split frames and
delayed replies arrives while a batch waits.

These drive `MllpConnection` with a recording transport (no sockets) so that several reads land
in one batch deterministically; the socket tests in test_mllp_endpoint.py and test_mllp_faults.py
cover the same paths end to end, where the interleaving depends on timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from simulator.mllp.client import ack_fields
from simulator.mllp.framing import END, START, frame
from simulator.mllp.server import MllpConnection, MllpListener
from simulator.mllp.settings import MllpSettings
from simulator.sandbox import Sandbox
from tests.mllp_support import mllp_fault, mllp_scenario, oru


class RecordingTransport:
    """What a connection wrote, and whether it was closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", self.port) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def acked_ids(self) -> list[str]:
        stream = b"".join(self.written)
        frames = [chunk.lstrip(START) for chunk in stream.split(END) if chunk]
        return [ack_fields(f)["control_id"] for f in frames]


def listener_for(faults: list[dict[str, Any]] | None = None) -> MllpListener:
    sandbox = Sandbox(mllp_scenario({}, patients=0, faults=faults), service_factories=[])
    return MllpListener(sandbox.sites["h1"], sandbox, MllpSettings(), "127.0.0.1", 0)


def connect(listener: MllpListener, port: int) -> tuple[MllpConnection, RecordingTransport]:
    connection = MllpConnection(listener)
    transport = RecordingTransport(port)
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


async def settle(connection: MllpConnection, seconds: float = 0.0) -> None:
    """Let the loop run the batch (and any delayed reply) to the end."""
    deadline = asyncio.get_running_loop().time() + seconds + 2
    await asyncio.sleep(seconds)
    while (connection.queued or connection.worker or connection.pending) and (
        asyncio.get_running_loop().time() < deadline
    ):
        await asyncio.sleep(0.01)


def test_reads_arriving_while_a_batch_waits_are_answered_in_order() -> None:
    async def run() -> tuple[list[str], list[str], int]:
        listener = listener_for()
        a, a_out = connect(listener, 1001)
        b, b_out = connect(listener, 1002)
        one, two, three = (frame(oru(f"ORD-{i}", mrn="B1").encode()) for i in range(3))
        a.data_received(one)  # a whole frame: queued in the batch
        a.data_received(two[:20])  # a split frame behind it, then its end and a whole frame
        a.data_received(two[20:] + three)
        b.data_received(frame(oru("OTHER-1", mrn="B2").encode()))
        assert a.queued == 3 and a_out.written == []  # nothing answered before the batch runs
        await settle(a)
        await settle(b)
        applied = sum(1 for e in listener.endpoint.journal if e.get("applied"))
        return a_out.acked_ids(), b_out.acked_ids(), applied

    a_ids, b_ids, applied = asyncio.run(run())
    assert a_ids == ["ORD-0", "ORD-1", "ORD-2"]
    assert b_ids == ["OTHER-1"]
    assert applied == 4


def test_a_delayed_ack_holds_back_the_later_acks_of_its_connection_only() -> None:
    late = mllp_fault("late", "ack_delay", {"control_id": "SLOW-0"}, delay=0.2)

    async def run() -> tuple[list[str], list[str], list[str]]:
        listener = listener_for([late])
        a, a_out = connect(listener, 2001)
        b, b_out = connect(listener, 2002)
        a.data_received(frame(oru("SLOW-0", mrn="D1").encode()))
        a.data_received(frame(oru("SLOW-1", mrn="D1").encode()))
        b.data_received(frame(oru("FAST-0", mrn="D2").encode()))
        await asyncio.sleep(0.05)  # the batch has run; SLOW-0's ACK is still waiting
        before = a_out.acked_ids()
        assert b_out.acked_ids() == ["FAST-0"]
        await settle(a, 0.2)
        return before, a_out.acked_ids(), b_out.acked_ids()

    before, after, other = asyncio.run(run())
    assert before == []  # SLOW-1 was handled but not sent ahead of SLOW-0
    assert after == ["SLOW-0", "SLOW-1"]
    assert other == ["FAST-0"]


def test_frames_of_a_connection_closed_before_the_batch_runs_are_not_applied() -> None:
    async def run() -> tuple[list[bytes], int]:
        listener = listener_for()
        a, a_out = connect(listener, 3001)
        a.data_received(frame(oru("GONE-1", mrn="G1").encode()))
        a.connection_lost(None)
        await settle(a)
        messages = [e for e in listener.endpoint.journal if e.get("kind") == "message"]
        return a_out.written, len(messages)

    written, messages = asyncio.run(run())
    assert written == [] and messages == 0


def test_a_failure_answering_one_connection_closes_it_and_spares_the_rest_of_the_batch(monkeypatch) -> None:
    """No known input makes the endpoint raise (it answers bugs with a NAK); this breaks the
    oversize answer on purpose to show the listener's last line of defence."""

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    async def run() -> tuple[bool, list[str], bool, int]:
        listener = listener_for()
        monkeypatch.setattr(listener.endpoint, "handle_oversize", broken)
        bad, bad_out = connect(listener, 4001)
        good, good_out = connect(listener, 4002)
        good.data_received(frame(oru("KEPT-1", mrn="K1").encode()))
        bad.data_received(frame(oru("BAD-1", mrn="K2").encode()))  # queued: what follows joins the batch
        bad.data_received(START + b"x" * (listener.settings.max_frame_bytes + 10) + END)
        good.data_received(frame(oru("KEPT-2", mrn="K1").encode()))
        await settle(good)
        return bad_out.closed, good_out.acked_ids(), good.closed, bad.queued

    bad_closed, good_ids, good_closed, bad_queued = asyncio.run(run())
    assert bad_closed and bad_queued == 0
    assert good_ids == ["KEPT-1", "KEPT-2"] and not good_closed
