"""A small ER7 (pipe-and-hat) tokenizer for the MLLP hot path.

It does what ingest needs and nothing more: read the encoding characters from MSH-1/2, split
segments and fields, unescape values on demand, and expose the MSH fields that drive
acknowledgement. Fields are kept as raw strings and split into repetitions/components only when a
mapping asks, so a message costs one `split` per segment. hl7apy remains the reference model and is
used for strict structure validation when a scenario asks for it (`simulator/mllp/validation.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Table 0357 (message error condition codes) that ehrsim reports.
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_PROCESSING_ID = 202
UNSUPPORTED_VERSION_ID = 203
UNKNOWN_KEY = 204
DUPLICATE_KEY = 205
INTERNAL_ERROR = 207

ERROR_NAMES = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    UNKNOWN_KEY: "Unknown key identifier",
    DUPLICATE_KEY: "Duplicate key identifier",
    INTERNAL_ERROR: "Application internal error",
}


class HL7Error(Exception):
    """A problem with an inbound message, reported in an ERR segment.

    `reject` selects AR/CR (the message was not processed for a reason unrelated to its content, or
    cannot be read at all) rather than AE/CE.
    """

    def __init__(
        self,
        code: int,
        text: str,
        segment: str | None = None,
        sequence: int = 1,
        field: int | None = None,
        component: int | None = None,
        reject: bool = False,
    ) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.component = component
        self.reject = reject

    @property
    def location(self) -> str:
        if self.segment is None:
            return ""
        where = f"{self.segment}"
        if self.field is not None:
            where += f"-{self.field}"
            if self.component is not None:
                where += f".{self.component}"
        return where


@dataclass(frozen=True, slots=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def msh2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


DEFAULT_ENCODING = Encoding()

_DEFAULT_SPECIALS = re.compile(r"[|^~\\&\r]")
_HEX_ESCAPE = re.compile(r"^X([0-9A-Fa-f]{2})+$")


class Segment:
    """One segment; `fields[n]` is field n (for MSH, `fields[1]` is MSH-1, the field separator)."""

    __slots__ = ("enc", "fields", "name", "occurrence", "position")

    def __init__(
        self, name: str, fields: list[str], enc: Encoding, position: int, occurrence: int = 1
    ) -> None:
        self.name = name
        self.fields = fields
        self.enc = enc
        self.position = position  # 1-based index in the message
        self.occurrence = occurrence  # 1 for the first segment of this name, ...: ERR-2's sequence

    def __getitem__(self, n: int) -> str:
        """Field n, raw (escaped, with repetitions and components), or "" when absent."""
        fields = self.fields
        return fields[n] if n < len(fields) else ""

    def repetitions(self, n: int) -> list[str]:
        raw = self[n]
        return raw.split(self.enc.repetition) if raw else []

    def components(self, n: int, rep: int = 0) -> list[str]:
        """Components of repetition `rep` of field n, unescaped."""
        raw = self[n]
        if not raw:
            return []
        if rep or self.enc.repetition in raw:
            reps = raw.split(self.enc.repetition)
            raw = reps[rep] if rep < len(reps) else ""
        return [self.unescape(c) for c in raw.split(self.enc.component)]

    def value(self, n: int, component: int = 1, subcomponent: int = 1, rep: int = 0) -> str:
        """One value, unescaped: field n, repetition `rep`, component and subcomponent (1-based)."""
        fields = self.fields
        if n >= len(fields):
            return ""
        raw = fields[n]
        if not raw:
            return raw
        enc = self.enc
        if component == 1 and subcomponent == 1 and not rep:  # what most mappings read
            raw = raw.partition(enc.repetition)[0].partition(enc.component)[0].partition(enc.subcomponent)[0]
            return unescape(raw, enc) if enc.escape and enc.escape in raw else raw
        if rep:
            reps = raw.split(enc.repetition)
            raw = reps[rep] if rep < len(reps) else ""
        else:
            raw = raw.partition(enc.repetition)[0]
        if component > 1:
            parts = raw.split(enc.component)
            raw = parts[component - 1] if component <= len(parts) else ""
        else:
            raw = raw.partition(enc.component)[0]
        if subcomponent > 1:
            parts = raw.split(enc.subcomponent)
            raw = parts[subcomponent - 1] if subcomponent <= len(parts) else ""
        else:
            raw = raw.partition(enc.subcomponent)[0]
        esc = enc.escape
        return unescape(raw, enc) if esc and esc in raw else raw

    def unescape(self, text: str) -> str:
        esc = self.enc.escape
        if not esc or esc not in text:
            return text
        return unescape(text, self.enc)

    def __repr__(self) -> str:
        return f"Segment({self.enc.field.join(self.fields)!r})"


def unescape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Resolve \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\ and \\.br\\; unknown sequences are kept as they are."""
    esc = enc.escape
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        end = text.find(esc, i + 1) if ch == esc else -1
        if end == -1:
            out.append(ch)
            i += 1
            continue
        seq = text[i + 1 : end]
        if seq == "F":
            out.append(enc.field)
        elif seq == "S":
            out.append(enc.component)
        elif seq == "T":
            out.append(enc.subcomponent)
        elif seq == "R":
            out.append(enc.repetition)
        elif seq == "E":
            out.append(esc)
        elif seq == ".br":
            out.append("\n")
        elif _HEX_ESCAPE.match(seq):
            out.append(bytes.fromhex(seq[1:]).decode("latin-1"))
        else:
            out.append(text[i : end + 1])
        i = end + 1
    return "".join(out)


def escape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """The inverse of `unescape` for the delimiters (used when ehrsim writes messages)."""
    esc = enc.escape
    if enc is DEFAULT_ENCODING:
        if not _DEFAULT_SPECIALS.search(text):
            return text
    elif not any(c in text for c in (enc.field, enc.component, enc.repetition, esc, enc.subcomponent, "\r")):
        return text
    return (
        text.replace(esc, f"{esc}E{esc}")
        .replace(enc.field, f"{esc}F{esc}")
        .replace(enc.component, f"{esc}S{esc}")
        .replace(enc.subcomponent, f"{esc}T{esc}")
        .replace(enc.repetition, f"{esc}R{esc}")
        .replace("\r", f"{esc}.br{esc}")
    )


class Message:
    """A tokenized ER7 message: its segments in order and the MSH fields acknowledgement needs."""

    __slots__ = ("_header", "_type", "enc", "msh", "plain_header", "segments", "text")

    def __init__(self, text: str, segments: list[Segment], enc: Encoding) -> None:
        self.text = text
        self.segments = segments
        self.msh = segments[0]  # the tokenizer makes sure a message begins with MSH
        self.enc = enc
        self._type: str | None = None
        self._header: tuple[str, ...] | None = None
        # Set by `header()`: MSH-9..16 hold no escapes, repetitions or subcomponents, so none of
        # the header's values contains a delimiter (an ACK can copy them as they are).
        self.plain_header = False

    def segment(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]

    def header(self) -> tuple[str, ...]:
        """MSH-9.1, 9.2, 9.3, 10, 11.1, 12.1, 15 and 16, unescaped, read once per message."""
        header = self._header
        if header is None and self.enc is DEFAULT_ENCODING:
            fields = self.msh.fields
            raw = fields[9:17]
            if len(raw) < 8:
                raw += [""] * (8 - len(raw))
            joined = "|".join(raw)
            if "\\" not in joined and "~" not in joined and "&" not in joined:
                # Standard delimiters, nothing escaped, no repetitions or subcomponents: split once.
                self.plain_header = True
                kind = raw[0].split("^")
                kind += [""] * (3 - len(kind))
                header = self._header = (
                    kind[0],
                    kind[1],
                    kind[2],
                    raw[1].partition("^")[0],
                    raw[2].partition("^")[0],
                    raw[3].partition("^")[0],
                    raw[6].partition("^")[0].strip().upper(),
                    raw[7].partition("^")[0].strip().upper(),
                )
        if header is None:
            header = self._header = header_values(self.msh)
        return header

    # MSH fields, unescaped.
    @property
    def control_id(self) -> str:
        return (self._header or self.header())[3]

    @property
    def message_code(self) -> str:
        return (self._header or self.header())[0]

    @property
    def trigger(self) -> str:
        return (self._header or self.header())[1]

    @property
    def structure(self) -> str:
        return (self._header or self.header())[2]

    @property
    def message_type(self) -> str:
        """e.g. "ORU^R01" (code and trigger)."""
        if self._type is None:
            header = self._header or self.header()
            self._type = f"{header[0]}^{header[1]}" if header[1] else header[0]
        return self._type

    @property
    def version(self) -> str:
        return (self._header or self.header())[5]

    @property
    def processing_id(self) -> str:
        return (self._header or self.header())[4]

    @property
    def accept_ack_type(self) -> str:
        return (self._header or self.header())[6]

    @property
    def app_ack_type(self) -> str:
        return (self._header or self.header())[7]


def header_values(msh: Segment) -> tuple[str, ...]:
    """`Message.header()` read value by value: any delimiters, escapes and repetitions (and the
    reference its one-split shortcut is tested against)."""
    value = msh.value
    return (
        value(9, 1),
        value(9, 2),
        value(9, 3),
        value(10),
        value(11, 1),
        value(12, 1),
        value(15).strip().upper(),
        value(16).strip().upper(),
    )


def read_encoding(text: str) -> Encoding:
    """The encoding characters declared by MSH-1 and MSH-2 (defaults for the ones left out)."""
    if not text.startswith("MSH") or len(text) < 8:
        raise HL7Error(
            SEGMENT_SEQUENCE_ERROR, "the message must begin with an MSH segment", "MSH", reject=True
        )
    fs = text[3]
    end = text.find(fs, 4)
    msh2 = text[4:] if end == -1 else text[4:end]
    if fs.isalnum() or not msh2 or len(set(fs + msh2[:4])) != len(fs + msh2[:4]):
        raise HL7Error(
            DATA_TYPE_ERROR,
            f"MSH-1/MSH-2 do not declare distinct encoding characters ({text[3:8]!r})",
            "MSH",
            field=2,
            reject=True,
        )
    declared = fs + msh2[:4]
    enc = _ENCODINGS.get(declared)
    if enc is None:
        d = DEFAULT_ENCODING
        enc = Encoding(
            field=fs,
            component=msh2[0],
            repetition=msh2[1] if len(msh2) > 1 else d.repetition,
            escape=msh2[2] if len(msh2) > 2 else "",
            subcomponent=msh2[3] if len(msh2) > 3 else d.subcomponent,
        )
        if len(_ENCODINGS) < 64:  # one instance per declaration, so `enc is DEFAULT_ENCODING` works
            _ENCODINGS[declared] = enc
    return enc


_ENCODINGS: dict[str, Encoding] = {"|^~\\&": DEFAULT_ENCODING}


def tokenize(text: str) -> Message:
    """Split a decoded message whose segments end with `\\r` (callers normalise other endings)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    enc = DEFAULT_ENCODING if text.startswith(_DEFAULT_MSH) else read_encoding(text)
    fs = enc.field
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    lines = text.split("\r")
    position = 0
    for line in lines:
        if not line:
            continue
        position += 1
        fields = line.split(fs)
        name = fields[0]
        if position == 1:
            # MSH-1 is the separator itself: shift so that fields[n] is MSH-n.
            fields.insert(1, fs)
        elif name not in _SEGMENT_IDS:
            if len(name) != 3 or not name.isalnum() or not name.isupper() or not name.isascii():
                raise HL7Error(
                    SEGMENT_SEQUENCE_ERROR,
                    f"segment {position} has no valid segment id ({line[:12]!r})",
                    name[:3] or "?",
                )
            if len(_SEGMENT_IDS) < 4096:
                _SEGMENT_IDS.add(name)
        occurrence = counts[name] = counts.get(name, 0) + 1
        segments.append(Segment(name, fields, enc, position, occurrence))
    return Message(text, segments, enc)


_DEFAULT_MSH = "MSH|^~\\&|"
_SEGMENT_IDS: set[str] = set()  # ids already seen to be valid (3 upper-case letters or digits)


def read_charset_field(payload: bytes) -> str:
    """MSH-18 read from the raw bytes (ASCII-compatible in every charset ehrsim accepts)."""
    end = payload.find(b"\r")
    if end == -1:
        end = len(payload)
    lf = payload.find(b"\n", 0, end)
    header = payload[: lf if lf != -1 else end]
    if header.startswith(b"\xef\xbb\xbf"):
        header = header[3:]
    if len(header) < 4:
        return ""
    fs = header[3:4]
    # fields[0] = "MSH", fields[1] = MSH-2, so MSH-n is fields[n - 1]: MSH-18 needs 17 separators.
    if header.count(fs) < 17:
        return ""
    fields = header.split(fs)
    return charset_name(fields[17].decode("ascii", "replace"))


def charset_name(msh18: str) -> str:
    """MSH-18's first repetition as `codec_for` looks it up."""
    return msh18.split("~")[0].strip().upper()
