"""Inbound message handling for one site: bytes in, a `Reply` out.

decode (MSH-18) -> tokenize -> duplicate check (MSH-10) -> optional strict validation -> map to FHIR
-> acknowledge (original or enhanced mode) -> journal. Faults then change the reply. Nothing here
touches a socket: the listener (`server.py`) carries the reply out, so every rule is testable as a
plain call and every fault is one branch in `_apply_reply_faults`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from simulator.faults.engine import FaultDecision
from simulator.journal import Journal
from simulator.mllp.ack import AckIds, AckMode, ack_mode, build_ack, wants
from simulator.mllp.er7 import (
    DATA_TYPE_ERROR,
    INTERNAL_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_VERSION_ID,
    HL7Error,
    Message,
    charset_name,
    read_charset_field,
    tokenize,
)
from simulator.mllp.faults import MESSAGE, MllpFaults
from simulator.mllp.framing import NAK_V2, frame
from simulator.mllp.mapping import V2Mapper, mapping_tables
from simulator.mllp.settings import MllpSettings, codec_for

log = logging.getLogger("ehrsim.mllp")

VALUE_TOO_LONG = 104


class Reply:
    """What to send back for one message, and how (faults change the how)."""

    __slots__ = ("close", "data", "delay", "dribble", "faults", "hold")

    def __init__(self, data: list[bytes] | None = None) -> None:
        self.data = data if data is not None else []  # each already framed (or deliberately not)
        self.delay = 0.0
        self.dribble: float | None = None  # seconds between single bytes
        self.close: str | None = None  # "before": close without replying; "reset": RST; "after": close after
        self.hold = False  # never reply and keep the socket open
        self.faults: tuple[str, ...] = ()  # ids of the faults that changed it


class Endpoint:
    """One site's inbound v2 endpoint logic (shared by all its connections)."""

    def __init__(
        self,
        site_id: str,
        settings: MllpSettings,
        journal: Journal,
        clock: Any,
        mapper: V2Mapper | None,
        faults: MllpFaults,
    ) -> None:
        self.site_id = site_id
        self.settings = settings
        self.journal = journal
        self.clock = clock
        self.mapper = mapper
        self.faults = faults
        self.ack_ids = AckIds(f"{settings.ack_prefix}{site_id.upper()}-")
        # Oldest first. An OrderedDict: dropping a plain dict's oldest key walks the slots of all
        # earlier deletions (8 us per message at 100,000 remembered ids, measured).
        self._seen: OrderedDict[tuple[str, str, str], tuple[float, bytes]] = OrderedDict()
        self._last_control_id = ""
        self._stamp_second = -1
        self._stamp_text = ""
        self._ascii_default = _reads_ascii(settings.charset)
        self.validator = None
        if settings.validation == "strict":
            from simulator.mllp.validation import validate_structure

            self.validator = validate_structure

    @classmethod
    def for_site(cls, runtime: Any, settings: MllpSettings, journal: Journal, faults: MllpFaults) -> Endpoint:
        site = runtime.site
        mapper = None
        if settings.map_to_fhir:
            mapper = V2Mapper(
                runtime.service, mapping_tables(settings.mapping), settings.merge, settings.timezone
            )
        return cls(site.id, settings, journal, site.clock, mapper, faults)

    def reset(self) -> None:
        """Back to the start with the sandbox: no remembered MSH-10s, ACK ids from 1, fresh indexes."""
        self._seen.clear()
        self.ack_ids = AckIds(f"{self.settings.ack_prefix}{self.site_id.upper()}-")
        self._last_control_id = ""
        if self.mapper is not None:
            self.mapper.reindex()

    # -- the pipeline ----------------------------------------------------------------------------
    def _entry(self, peer: str, size: int, **fields: Any) -> dict[str, Any]:
        """A journal entry for one inbound message (docs/mllp.md lists its fields)."""
        return {
            "protocol": "mllp",
            "kind": "message",
            "site": self.site_id,
            "client_id": peer,
            "bytes": size,
            "faults": (),
            **fields,
        }

    def handle(self, payload: bytes, peer: str) -> Reply:
        try:
            return self._handle(payload, peer)
        except Exception as exc:  # a bug must cost one NAK, never the connection or the listener
            log.exception("site %s: unexpected error handling a message from %s", self.site_id, peer)
            error = HL7Error(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}", reject=True)
            ack = build_ack(None, "AR", self.ack_ids(), self._stamp(self.clock.timestamp()), error)
            entry = self._entry(peer, len(payload), error=_error_info(error), ack_code="AR", applied=False)
            if self.journal.enabled:
                self.journal.record(entry)
            return Reply([frame(ack.encode())])

    def _handle(self, payload: bytes, peer: str) -> Reply:
        stamp = self._stamp(self.clock.timestamp())
        warnings: list[str] = []
        try:
            message, codec = self._read(payload, warnings)
        except HL7Error as error:
            return self._unreadable(error, payload, peer, stamp, warnings)
        mode = ack_mode(message)
        fired: list[FaultDecision] = []
        if self.faults.any(MESSAGE):
            attrs = {
                "event": "message",
                "message_type": message.message_type,
                "trigger": message.trigger,
                "control_id": message.control_id,
                "peer": peer,
            }
            fired = self.faults.decide(MESSAGE, attrs)
        forced = next((f for f in fired if f.action == "ack_code"), None) if fired else None
        forced_code = str(forced.params.get("code", "AE")) if forced is not None else None
        entry = self._entry(
            peer,
            len(payload),
            control_id=message.control_id,
            message_type=message.message_type,
            ack_mode="original" if mode is AckMode.ORIGINAL else "enhanced",  # (Enum.value is slow)
            applied=False,
        )

        # Sender (MSH-3, MSH-4) and MSH-10, as sent: a resend repeats them byte for byte. (A read
        # message has MSH-12, so fields 3 and 4 exist.)
        msh = message.msh.fields
        duplicate_key = (msh[3], msh[4], message.control_id)
        previous = self._duplicate(duplicate_key) if self.settings.duplicate_window else None
        if previous is not None and forced is None:
            entry["duplicate"] = True
            entry["ack_code"] = "resent"
            entry["warnings"] = tuple(warnings)
            return self._finish(Reply([previous] if previous else []), entry, fired, message)

        error: HL7Error | None = None
        if forced is not None and forced_code is not None:
            text = str(forced.params.get("text", f"fault '{forced.fault_id}' answers {forced_code}"))
            error = HL7Error(INTERNAL_ERROR, text, reject=forced_code.endswith("R"))
        else:
            try:
                if self.validator is not None:
                    self.validator(message)
                self._apply(message, entry, warnings)
            except HL7Error as exc:
                error = exc
            except Exception as exc:  # a bug must cost one AE, never the connection
                log.exception("site %s: mapping %s failed", self.site_id, message.control_id)
                error = HL7Error(INTERNAL_ERROR, f"internal error while mapping: {type(exc).__name__}: {exc}")
        entry["warnings"] = tuple(warnings)
        if error is not None:
            entry["applied"] = False
            entry["error"] = _error_info(error)
        frames = self._acknowledge(message, mode, error, stamp, forced_code, entry)
        if len(frames) == 1:
            data = [frame(frames[0].encode(codec, "replace"))]
            sent = data[0]
        else:
            data = [frame(f.encode(codec, "replace")) for f in frames]
            sent = b"".join(data)
        if error is None and self.settings.duplicate_window:
            self._remember(duplicate_key, sent)
        return self._finish(Reply(data), entry, fired, message)

    def _unreadable(
        self, error: HL7Error, payload: bytes, peer: str, stamp: str, warnings: list[str]
    ) -> Reply:
        """The NAK for a message that could not be read (or whose header is unusable)."""
        message: Message | None = getattr(error, "context", None)  # set when readable enough
        codec = getattr(error, "codec", "utf-8")
        entry = self._entry(peer, len(payload))
        if message is not None:
            entry["control_id"] = message.control_id
            entry["message_type"] = message.message_type
        entry["error"] = _error_info(error)
        entry["warnings"] = tuple(warnings)
        entry["applied"] = False
        code = "AR" if error.reject else "AE"
        if message is not None and ack_mode(message) is AckMode.ENHANCED:
            # Not safely received: the commit ACK says so, and no application ACK follows.
            code = "C" + code[1]
            if not wants(message.accept_ack_type, success=False):
                entry["ack_code"] = "none"
                return self._finish(Reply(), entry, None)
        entry["ack_code"] = code
        ack = build_ack(message, code, self.ack_ids(), stamp, error)
        return self._finish(Reply([frame(ack.encode(codec, "replace"))]), entry, None)

    def handle_oversize(self, size: int, head: bytes, peer: str) -> Reply:
        control_id = ""
        try:
            head_text = head.decode("latin-1")
            message = tokenize(head_text.split("\r")[0] + "\r")
            control_id = message.control_id
        except HL7Error:
            message = None
        error = HL7Error(
            VALUE_TOO_LONG,
            f"frame of {size} bytes exceeds this endpoint's limit of {self.settings.max_frame_bytes} bytes",
            reject=True,
        )
        ack = build_ack(message, "AR", self.ack_ids(), self._stamp(self.clock.timestamp()), error)
        entry = self._entry(
            peer, size, control_id=control_id, error=_error_info(error), ack_code="AR", applied=False
        )
        return self._finish(Reply([frame(ack.encode())]), entry, None)

    def _stamp(self, timestamp: float) -> str:
        """MSH-7 of ACKs (second precision), formatted once per simulated second."""
        second = int(timestamp)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_text = datetime.fromtimestamp(second, UTC).strftime("%Y%m%d%H%M%S") + "+0000"
        return self._stamp_text

    # -- steps -----------------------------------------------------------------------------------
    def _read(self, payload: bytes, warnings: list[str]) -> tuple[Message, str]:
        if not (self._ascii_default and payload.isascii()):
            return self._read_declared(payload, warnings)
        # Every charset ehrsim reads decodes ASCII bytes alike: MSH-18 is checked after the split.
        text, other_terminators = _normalise(payload.decode("ascii"))
        try:
            message = tokenize(text)
        except HL7Error:
            return self._read_declared(payload, warnings)  # its errors, in its order
        msh = message.msh.fields
        codec = self._codec(charset_name(msh[18]) if len(msh) > 18 else "")
        return self._checked(message, codec, other_terminators, warnings), codec

    def _read_declared(self, payload: bytes, warnings: list[str]) -> tuple[Message, str]:
        """Decode by the MSH-18 read from the raw bytes, then split."""
        msh18 = read_charset_field(payload)
        codec = self._codec(msh18)
        try:
            text = payload.decode(codec)
        except UnicodeDecodeError as exc:
            # Read it anyway so the AE can echo MSH-10; the error says where the bad bytes are.
            message = tokenize(_normalise(payload.decode(codec, "replace"))[0])
            line = min(
                payload[: exc.start].replace(b"\r\n", b"\r").replace(b"\n", b"\r").count(b"\r"),
                len(message.segments) - 1,
            )
            bad = message.segments[line]
            error = HL7Error(
                DATA_TYPE_ERROR,
                f"bytes at offset {exc.start} are not valid {codec} (MSH-18 is '{msh18 or 'empty'}')",
                bad.name,
                sequence=bad.occurrence,
            )
            error.context = message  # type: ignore[attr-defined]
            raise error from None
        text, other_terminators = _normalise(text)
        return self._checked(tokenize(text), codec, other_terminators, warnings), codec

    def _codec(self, msh18: str) -> str:
        codec = codec_for(msh18, self.settings.charset)
        if codec is None:
            raise HL7Error(
                TABLE_VALUE_NOT_FOUND,
                f"MSH-18 character set '{msh18}' is not supported (supported: UNICODE UTF-8, 8859/1, ASCII)",
                "MSH",
                field=18,
                reject=True,
            )
        return codec

    def _checked(self, message: Message, codec: str, other_terminators: bool, warnings: list[str]) -> Message:
        try:
            self._check_header(message)
            if other_terminators:
                if self.settings.segment_terminators == "strict":
                    raise HL7Error(
                        SEGMENT_SEQUENCE_ERROR,
                        "segments end with LF or CRLF; HL7 v2 requires CR (this endpoint is strict)",
                        "MSH",
                    )
                warnings.append("segments end with LF or CRLF instead of CR; read leniently")
        except HL7Error as error:
            error.context = message  # type: ignore[attr-defined]
            error.codec = codec  # type: ignore[attr-defined]  # the NAK answers in the sender's charset
            raise
        return message

    def _check_header(self, message: Message) -> None:
        if not message.message_code:
            raise HL7Error(REQUIRED_FIELD_MISSING, "MSH-9 message type is empty", "MSH", field=9, reject=True)
        if not message.control_id:
            raise HL7Error(
                REQUIRED_FIELD_MISSING, "MSH-10 message control id is empty", "MSH", field=10, reject=True
            )
        version = message.version
        if not version:
            raise HL7Error(REQUIRED_FIELD_MISSING, "MSH-12 version id is empty", "MSH", field=12, reject=True)
        if not version.startswith("2."):
            raise HL7Error(
                UNSUPPORTED_VERSION_ID,
                f"MSH-12 version '{version}' is not HL7 v2.x",
                "MSH",
                field=12,
                reject=True,
            )

    def _apply(self, message: Message, entry: dict[str, Any], warnings: list[str]) -> None:
        if self.mapper is None:
            entry["applied"] = False
            return
        if not self.mapper.supports(message) and self.settings.accept_unmapped:
            entry["applied"] = False
            warnings.append(f"{message.message_type} is accepted but not mapped to FHIR")
            return
        result = self.mapper.apply(message)
        entry["applied"] = True
        entry["written"] = result.written
        warnings.extend(result.warnings)

    def _acknowledge(
        self,
        message: Message,
        mode: AckMode,
        error: HL7Error | None,
        stamp: str,
        forced: str | None,
        entry: dict[str, Any],
    ) -> list[str]:
        if mode is AckMode.ORIGINAL:
            code = forced or ("AA" if error is None else ("AR" if error.reject else "AE"))
            entry["ack_code"] = code
            return [build_ack(message, code, self.ack_ids(), stamp, error)]
        # Enhanced mode: a commit ACK (was it safely received?), then an application ACK.
        frames, codes = [], []
        commit_failed = error is not None and (error.reject or forced in ("CE", "CR"))
        if forced in ("CE", "CR"):
            commit = forced
        else:
            commit = "CR" if commit_failed else "CA"
        if wants(message.accept_ack_type, not commit_failed):
            frames.append(build_ack(message, commit, self.ack_ids(), stamp, error if commit_failed else None))
            codes.append(commit)
        if not commit_failed:
            app = (
                forced
                if forced in ("AE", "AR")
                else ("AA" if error is None else ("AR" if error.reject else "AE"))
            )
            if wants(message.app_ack_type, error is None):
                frames.append(build_ack(message, app, self.ack_ids(), stamp, error))
                codes.append(app)
        entry["ack_code"] = "+".join(codes) or "none"
        return frames

    def _finish(
        self,
        reply: Reply,
        entry: dict[str, Any],
        fired: list[FaultDecision] | None,
        message: Message | None = None,
    ) -> Reply:
        if fired:
            self._apply_reply_faults(reply, fired, message)
            if reply.delay:
                entry["ack_delay"] = round(reply.delay, 6)
        if reply.faults:
            entry["faults"] = reply.faults
            entry["outcome"] = "+".join(d.action for d in fired or ())
        if message is not None:
            self._last_control_id = message.control_id
        if self.journal.enabled:
            self.journal.record(entry)
        return reply

    def _apply_reply_faults(self, reply: Reply, fired: list[FaultDecision], message: Message | None) -> None:
        for decision in fired:
            action, params = decision.action, decision.params
            reply.faults = (*reply.faults, decision.fault_id)
            if action == "lost_ack":
                reply.close = "before"
                reply.data = []
            elif action == "never_ack":
                reply.hold = True
                reply.data = []
            elif action == "ack_delay":
                reply.delay = decision.delay
            elif action == "ack_dribble":
                reply.dribble = float(params.get("interval", 0.01))
            elif action == "ack_wrong_id" and message is not None:
                stale = params.get("mode", "wrong") == "stale"
                wrong = self._last_control_id if stale else f"X{message.control_id}X"
                reply.data = [_replace_msa2(d, wrong) for d in reply.data]
            elif action == "ack_duplicate":
                reply.data = reply.data + reply.data[-1:]
            elif action == "ack_without_msa":
                reply.data = [_drop_segment(d, b"MSA") for d in reply.data]
            elif action == "non_hl7_reply":
                body = str(params.get("body", "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
                reply.data = [body.encode()]
            elif action == "nak_byte":
                reply.data = [NAK_V2]

    # -- duplicates ------------------------------------------------------------------------------
    def _duplicate(self, key: tuple[str, str, str]) -> bytes | None:
        hit = self._seen.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self.settings.duplicate_window:
            del self._seen[key]
            return None
        return hit[1]

    def _remember(self, key: tuple[str, str, str], ack: bytes) -> None:
        seen = self._seen
        if key in seen:
            seen.move_to_end(key)
        seen[key] = (time.monotonic(), ack)
        if len(seen) > self.settings.duplicate_capacity:
            seen.popitem(last=False)


def _reads_ascii(codec: str) -> bool:
    """Whether a codec decodes ASCII bytes as ASCII (all of MSH-18's charsets do; a site's default
    could be something else, such as UTF-16)."""
    ascii_bytes = bytes(range(128))
    try:
        return ascii_bytes.decode(codec) == ascii_bytes.decode("ascii")
    except (LookupError, UnicodeDecodeError):
        return False


def _normalise(text: str) -> tuple[str, bool]:
    """Segments split on CR; whether LF or CRLF had to be turned into CR."""
    if "\n" not in text:
        return text, False
    return text.replace("\r\n", "\r").replace("\n", "\r"), True


def _error_info(error: HL7Error) -> dict[str, Any]:
    return {"code": error.code, "text": error.text, "location": error.location}


def _replace_msa2(data: bytes, replacement: str) -> bytes:
    needle = b"\rMSA|"
    start = data.find(needle)
    if start == -1:
        return data
    line_end = data.find(b"\r", start + 1)
    fields = data[start + 1 : line_end].split(b"|")
    if len(fields) > 2:
        fields[2] = replacement.encode()
    return data[: start + 1] + b"|".join(fields) + data[line_end:]


def _drop_segment(data: bytes, name: bytes) -> bytes:
    start = data.find(b"\r" + name + b"|")
    if start == -1:
        return data
    end = data.find(b"\r", start + 1)
    return data[:start] + data[end:]
