"""A small blocking MLLP client for tests, tools and examples.

with MllpClient("127.0.0.1", 2575) as client:
    ack = client.send(message)        # str or bytes; returns the ACK payload as bytes
"""

from __future__ import annotations

import socket
import ssl
import time
from types import TracebackType

from simulator.mllp.framing import Frame, FrameReader, Junk, frame


class MllpClient:
    def __init__(
        self, host: str, port: int, timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.timeout = timeout
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = (
            ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context is not None else raw
        )
        self.reader = FrameReader(64 * 1024 * 1024)
        self._frames: list[bytes] = []
        self.junk: list[bytes] = []  # bytes the server sent outside frames (e.g. a non-HL7 reply)

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def write(self, data: bytes) -> None:
        """Raw bytes, unframed: for split frames, junk and other edge cases."""
        self.sock.sendall(data)

    def send(self, message: str | bytes, timeout: float | None = None) -> bytes:
        payload = message.encode("utf-8") if isinstance(message, str) else message
        self.sock.sendall(frame(payload))
        return self.receive(timeout)

    def receive(self, timeout: float | None = None) -> bytes:
        """The next frame; raises TimeoutError, or ConnectionError if the server closes first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no MLLP frame within the timeout")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no MLLP frame within the timeout") from None
            if not data:
                raise ConnectionError("the server closed the connection")
            for event in self.reader.feed(data):
                if isinstance(event, Frame):
                    self._frames.append(event.payload)
                elif isinstance(event, Junk):
                    self.junk.append(event.data)
        return self._frames.pop(0)


def ack_fields(ack: bytes) -> dict[str, str]:
    """MSA-1, MSA-2, the ERR segment and MSH-10 of an ACK, for assertions."""
    out = {"code": "", "control_id": "", "err": "", "ack_id": "", "msa": ""}
    for line in ack.decode("utf-8", "replace").split("\r"):
        fields = line.split("|")
        if fields[0] == "MSA":
            out["msa"] = line
            out["code"] = fields[1] if len(fields) > 1 else ""
            out["control_id"] = fields[2] if len(fields) > 2 else ""
        elif fields[0] == "ERR":
            out["err"] = line
        elif fields[0] == "MSH":
            out["ack_id"] = fields[9] if len(fields) > 9 else ""
    return out
