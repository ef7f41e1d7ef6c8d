"""Acknowledgements: original mode (AA/AE/AR) and enhanced mode (CA/CE/CR, then AA/AE/AR).

An ACK swaps the sender and receiver of the message it answers (MSH-3/4 <-> MSH-5/6), echoes its
MSH-10 in MSA-2 and carries a control id of its own. A negative ACK has an ERR segment that points
at the failing segment/field with a table 0357 code; versions before 2.5 get ERR-1 (ELD), later
ones ERR-2 (location), ERR-3 (code), ERR-4 (severity) and ERR-8 (text).
"""

from __future__ import annotations

import enum
import re

from simulator.mllp.er7 import DEFAULT_ENCODING, ERROR_NAMES, Encoding, HL7Error, Message, Segment, escape


class AckMode(enum.Enum):
    ORIGINAL = "original"
    ENHANCED = "enhanced"


def ack_mode(message: Message) -> AckMode:
    """Enhanced mode when the sender filled MSH-15 or MSH-16 (HL7 v2 chapter 2)."""
    header = message.header()
    return AckMode.ENHANCED if header[6] or header[7] else AckMode.ORIGINAL  # MSH-15, MSH-16


def wants(condition: str, success: bool) -> bool:
    """Whether an acknowledgement condition (table 0155: AL, NE, ER, SU; empty = AL) asks for an ACK."""
    if condition in ("", "AL"):
        return True
    if condition == "NE":
        return False
    if condition == "ER":
        return not success
    if condition == "SU":
        return success
    return True


def _version_before_25(version: str) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) < (2, 5)
    except ValueError:
        return False


def err_segment(error: HL7Error, version: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    c, fs = enc.component, enc.field
    name = ERROR_NAMES.get(error.code, "Error")
    text = escape(error.text, enc)
    if _version_before_25(version):
        location = c.join([error.segment or "", str(error.sequence), str(error.field or "")])
        return f"ERR{fs}{location}{c}{error.code}{enc.subcomponent}{name}{enc.subcomponent}HL70357"
    location = ""
    if error.segment:
        location = c.join([error.segment, str(error.sequence), str(error.field or "")])
        if error.component:
            location += f"{c}1{c}{error.component}"
    severity = "E"
    return fs.join(["ERR", "", location, f"{error.code}{c}{name}{c}HL70357", severity, "", "", "", text])


def build_ack(
    message: Message | None,
    code: str,
    control_id: str,
    timestamp: str,
    error: HL7Error | None = None,
    answers: str | None = None,
) -> str:
    """The ACK for `message` (None: it could not be read; the ACK then has an empty MSA-2).

    `answers` overrides MSA-2 (faults that send a wrong or stale id use it).
    """
    if message is not None and error is None and answers is None and message.enc is DEFAULT_ENCODING:
        ack = plain_ack(message, code, control_id, timestamp)
        if ack is not None:
            return ack
    return general_ack(message, code, control_id, timestamp, error, answers)


def general_ack(
    message: Message | None,
    code: str,
    control_id: str,
    timestamp: str,
    error: HL7Error | None = None,
    answers: str | None = None,
) -> str:
    """`build_ack` for every case, field by field (the reference `plain_ack` is tested against)."""
    # ACKs always use the standard delimiters (|^~\&): a sender's unusual ones are re-encoded.
    enc = DEFAULT_ENCODING
    fs, c = enc.field, enc.component
    if message is not None:
        msh = message.msh
        version = message.version or "2.5"
        # Standard delimiters already: the raw fields are copied as they are (the fast path).
        recode = _recode if message.enc != DEFAULT_ENCODING else _raw_first_repetition
        msh_fields = [
            "MSH",
            enc.msh2,
            recode(msh, 5),
            recode(msh, 6),
            recode(msh, 3),
            recode(msh, 4),
            timestamp,
            "",
            f"ACK{c}{escape(message.trigger)}{c}ACK" if message.trigger else "ACK",
            control_id,
            escape(message.processing_id) or "P",
            escape(version),
        ]
        echo = message.control_id if answers is None else answers
    else:
        version = "2.5"
        msh_fields = ["MSH", enc.msh2, "EHRSIM", "", "", "", timestamp, "", "ACK", control_id, "P", version]
        echo = "" if answers is None else answers
    lines = [fs.join(msh_fields)]
    msa = ["MSA", code, escape(echo, enc)]
    if error is not None:
        msa.append(escape(error.text[:80], enc))
    lines.append(fs.join(msa))
    if error is not None:
        lines.append(err_segment(error, version))
    return "\r".join(lines) + "\r"


def plain_ack(message: Message, code: str, control_id: str, timestamp: str) -> str | None:
    """The common positive ACK, written in one step: standard delimiters, nothing that needs
    escaping (None otherwise, and `build_ack` takes the general path)."""
    fields = message.msh.fields
    if len(fields) < 7:
        return None
    header = message.header()
    trigger, echo, processing, version = header[1], header[3], header[4], header[5]
    if not message.plain_header and _SPECIALS.search(f"{trigger}{processing}{version}{echo}"):
        return None
    kind = f"ACK^{trigger}^ACK" if trigger else "ACK"
    return (
        f"MSH|^~\\&|{fields[5].partition('~')[0]}|{fields[6].partition('~')[0]}"
        f"|{fields[3].partition('~')[0]}|{fields[4].partition('~')[0]}|{timestamp}||{kind}|{control_id}"
        f"|{processing or 'P'}|{version or '2.5'}\rMSA|{code}|{echo}\r"
    )


_SPECIALS = re.compile(r"[|^~\\&\r]")


def _recode(segment: Segment, n: int) -> str:
    """Field n (components of its first repetition) in the standard delimiters."""
    return "^".join(escape(part) for part in segment.components(n))


def _raw_first_repetition(segment: Segment, n: int) -> str:
    return segment[n].partition("~")[0]


class AckIds:
    """Unique control ids for the ACKs a site sends: a prefix and a counter (deterministic)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        return f"{self.prefix}{self._n}"
