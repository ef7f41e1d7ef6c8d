"""MLLP release 1 framing: `0x0B` payload `0x1C 0x0D`.

`FrameReader` is fed whatever a socket read returned and yields complete frames, bytes found
outside a frame (junk) and frames that exceeded the size limit. Partial frames stay buffered across
reads; an oversized frame is skipped to its end so the connection stays usable.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
NAK_V2 = b"\x0b\x15\x1c\x0d"  # MLLP release 2 negative commit acknowledgement


def frame(payload: bytes) -> bytes:
    return START + payload + END


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Junk:
    """Bytes received outside a frame (before a start byte, or after an end without a start)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Oversize:
    """A frame longer than the limit; `head` is its first bytes (enough to read MSH-10)."""

    size: int
    head: bytes


FrameEvent = Frame | Junk | Oversize


class FrameReader:
    def __init__(self, max_frame_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._skipping = 0  # >0: inside an oversized frame, that many bytes discarded so far
        self._head = b""

    @property
    def idle(self) -> bool:
        """True when nothing is buffered: the next read starts afresh."""
        return not self._buffer and not self._in_frame and not self._skipping

    @property
    def in_frame(self) -> bool:
        """True while a started frame is incomplete."""
        return self._in_frame

    def feed(self, data: bytes) -> list[FrameEvent]:
        events: list[FrameEvent] = []
        buf = self._buffer
        buf += data
        while buf:
            if not self._in_frame:
                start = buf.find(START)
                if start == -1:
                    events.append(Junk(bytes(buf)))
                    buf.clear()
                    break
                if start:
                    events.append(Junk(bytes(buf[:start])))
                del buf[: start + 1]
                self._in_frame = True
            end = buf.find(END)
            if self._skipping:
                if end == -1:
                    # Keep the last byte: it may be the 0x1C of an end marker split across reads.
                    self._skipping += len(buf) - 1
                    del buf[:-1]
                    break
                events.append(Oversize(self._skipping + end, self._head))
                del buf[: end + 2]
                self._skipping = 0
                self._in_frame = False
                continue
            if end == -1:
                if len(buf) > self.max_frame_bytes:
                    self._head = bytes(buf[:512])
                    self._skipping = len(buf) - 1
                    del buf[:-1]
                break
            if end > self.max_frame_bytes:
                events.append(Oversize(end, bytes(buf[:512])))
            else:
                events.append(Frame(bytes(buf[:end])))
            del buf[: end + 2]
            self._in_frame = False
        return events
