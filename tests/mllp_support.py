"""Helpers for the MLLP tests: a served site with an `mllp:` section, and message builders."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from simulator.mllp.client import MllpClient, ack_fields
from simulator.scenario import Scenario, build_scenario
from simulator.testing import RunningServer, serve_in_thread

FIXTURES = Path(__file__).parent / "fixtures" / "hl7v2"


def fixture(name: str) -> bytes:
    """A sample message with its segments ended by CR, as on the wire."""
    return FIXTURES.joinpath(name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def mllp_scenario(
    mllp: dict[str, Any] | None = None,
    patients: int = 2,
    clock: dict | None = None,
    faults: list[dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Scenario:
    site: dict[str, Any] = {"id": "h1", "base_path": "/fhir", "population": {"patients": patients}}
    if mllp is not None:
        site["mllp"] = mllp
    if settings is not None:
        site["settings"] = settings
    data: dict[str, Any] = {"name": "mllp-test", "seed": 7, "clock": clock or {}, "sites": [site]}
    if faults:
        data["faults"] = faults
    return build_scenario(data)


def mllp_fault(
    fault_id: str, action: str, match: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """A scenario fault for the MLLP protocol; `fields` are the action's settings, except
    `schedule` and `probability`, which belong to the fault."""
    fault: dict[str, Any] = {"id": fault_id, "match": {"protocol": "mllp", **(match or {})}}
    for key in ("schedule", "probability"):
        if key in fields:
            fault[key] = fields.pop(key)
    fault["action"] = {"type": action, **fields}
    return fault


@contextlib.contextmanager
def mllp_site(mllp: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[tuple[RunningServer, int]]:
    with serve_in_thread(mllp_scenario(mllp, **kwargs)) as server:
        yield server, server.sandbox.sites["h1"].site.extras["mllp_port"]


def client(port: int, timeout: float = 5.0) -> MllpClient:
    return MllpClient("127.0.0.1", port, timeout=timeout)


def send(port: int, message: str | bytes) -> dict[str, str]:
    """One message over a fresh connection; the ACK's fields (`ack_fields`)."""
    with client(port) as c:
        return ack_fields(c.send(message))


def fhir(server: RunningServer, path: str, **params: Any) -> dict[str, Any]:
    """A FHIR read or search of the first site over HTTP (200 expected)."""
    response = httpx.get(server.fhir_base + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def one(server: RunningServer, path: str, **params: Any) -> dict[str, Any]:
    """The single resource a search finds."""
    bundle = fhir(server, path, **params)
    assert bundle["total"] == 1, bundle
    return bundle["entry"][0]["resource"]


def journal(server: RunningServer, name: str) -> list[dict[str, Any]]:
    """Entries of one kind, named "protocol.kind" (e.g. "mllp.message", "outbound.ack")."""
    protocol, _, kind = name.partition(".")
    return [e for e in server.sandbox.journal if e.get("protocol") == protocol and e.get("kind") == kind]


def assert_refused(
    server: RunningServer, port: int, message: str | bytes, where: str, why: str
) -> dict[str, str]:
    """The message is answered AE whose ERR has `where` (e.g. "|ORC^1^5|101^") and `why`, and
    the journal shows nothing of it applied; the ACK's fields."""
    ack = send(port, message)
    assert ack["code"] == "AE", ack
    assert where in ack["err"] and why in ack["err"], ack["err"]
    entry = [e for e in journal(server, "mllp.message") if e.get("control_id") == ack["control_id"]][-1]
    assert entry["applied"] is False and "written" not in entry
    return ack


def msh(message_type: str, control_id: str, version: str = "2.5", extra: str = "") -> str:
    return f"MSH|^~\\&|LAB|GOODHOSP|EHR|EHRSIM|20260101120000+0000||{message_type}|{control_id}|P|{version}{extra}"


def oru(
    control_id: str,
    mrn: str = "X1",
    value: str = "72",
    unit: str = "beats/min",
    code: str = "8867-4^Heart rate^LN",
    value_type: str = "NM",
    status: str = "F",
    extra: str = "",
    sep: str = "\r",
) -> str:
    segments = [
        msh("ORU^R01^ORU_R01", control_id, extra=extra),
        f"PID|1||{mrn}^^^GOODHOSP^MR||DOE^JANE||19800101|F",
        "OBR|1||F-"
        + control_id
        + "^GOODHOSP|85353-1^Vital signs panel^LN|||20260101115500+0000||||||||||||||||||F",
        f"OBX|1|{value_type}|{code}||{value}|{unit}|60-100|N|||{status}|||20260101115500+0000",
    ]
    return sep.join(segments) + sep


def adt(
    trigger: str,
    control_id: str,
    mrn: str = "A1",
    visit: str = "V1",
    family: str = "DOE",
    patient_class: str = "I",
) -> str:
    segments = [
        msh(f"ADT^{trigger}^ADT_A01", control_id),
        f"EVN|{trigger}|20260101120000+0000",
        f"PID|1||{mrn}^^^GOODHOSP^MR||{family}^JOHN^Q||19700214|M|||1 MAIN ST^^SPRINGFIELD^IL^62701^US||555-0100",
        f"PV1|1|{patient_class}|4EAST^401^A||||1234^ATTEND^ALLISON|||MED|||||||||{visit}^^^GOODHOSP^VN",
    ]
    return "\r".join(segments) + "\r"


def orm(
    control_id: str,
    control: str = "NW",
    placer: str = "",
    filler: str = "",
    mrn: str = "O1",
    code: str = "24317-0^Hemogram and platelet count^LN",
    order_status: str = "",
    version: str = "2.5",
    visit: str = "",
    timing: str = "",
    priority: str = "",
    observed: str = "",
) -> str:
    """An ORM^O01 with one order (ORC + OBR); `placer`/`filler` are the order numbers (EI-1), both
    in ORC and OBR under the namespace GOODHOSP; `timing` is ORC-7 (TQ)."""

    def number(value: str) -> str:
        return f"{value}^GOODHOSP" if value else ""

    segments = [
        msh("ORM^O01^ORM_O01", control_id, version=version),
        f"PID|1||{mrn}^^^GOODHOSP^MR||DOE^JANE||19800101|F",
        "PV1|1|I|4EAST^401^A" + ("|" * 16 + f"{visit}^^^GOODHOSP^VN" if visit else ""),
        f"ORC|{control}|{number(placer)}|{number(filler)}|GRP-{control_id}|{order_status}||{timing}||"
        "20260101110000+0000|||1234^ORDER^OLIVIA",
        f"OBR|1|{number(placer)}|{number(filler)}|{code}|{priority}||{observed}",
    ]
    return "\r".join(segments) + "\r"


class IntegrationListener:
    """A stand-in for an integration's MLLP listener (plain sockets, not ehrsim code) that records
    what it receives and answers as `respond(payload, attempt)` says: ACK bytes, None (stay silent),
    or "close" (drop the connection)."""

    def __init__(self, respond: Any = None) -> None:
        import socket
        import threading

        self.respond = respond or (lambda payload, attempt: ack_for(payload, "AA"))
        self.received: list[bytes] = []
        self.writes: list[int] = []  # frames per recv() that held complete frames
        self.attempts: dict[str, int] = {}
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import threading

        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: Any) -> None:
        from simulator.mllp.framing import Frame, FrameReader, frame

        reader = FrameReader(64 * 1024 * 1024)
        conn.settimeout(0.1)
        with conn:
            while not self._stop:
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                frames = [e.payload for e in reader.feed(data) if isinstance(e, Frame)]
                if frames:
                    self.writes.append(len(frames))
                for payload in frames:
                    self.received.append(payload)
                    control_id = control_id_of(payload)
                    self.attempts[control_id] = self.attempts.get(control_id, 0) + 1
                    answer = self.respond(payload, self.attempts[control_id])
                    if answer == "close":
                        return
                    if answer is not None:
                        conn.sendall(frame(answer))

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` messages have arrived; fails (saying how many came) after `timeout` s."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.received) >= count, f"expected {count} messages, received {len(self.received)}"

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def control_id_of(payload: bytes) -> str:
    header = payload.replace(b"\n", b"\r").split(b"\r")[0].decode("latin-1")
    fields = header.split("|")
    return fields[9] if len(fields) > 9 else ""


def ack_for(payload: bytes, code: str, control_id: str | None = None) -> bytes:
    echo = control_id_of(payload) if control_id is None else control_id
    return f"MSH|^~\\&|INT||EHRSIM||20260101||ACK|A{echo}|P|2.5\rMSA|{code}|{echo}\r".encode()


def feed_scenario(port: int, clock: dict | None = None, **feed: Any) -> Scenario:
    spec = {
        "name": "f1",
        "target": f"127.0.0.1:{port}",
        "interval": 0,
        "count": 6,
        "ack_timeout": 0.5,
        "retries": 2,
        "backoff": 0.05,
        **feed,
    }
    return mllp_scenario({"feeds": [spec]}, patients=3, clock=clock)
