"""The MLLP hot path's shortcuts give exactly what the general code gives, for any header.

`Message.header()` splits a plain MSH once instead of reading eight values one by one, and
`build_ack` writes a plain positive ACK in one f-string, and a plain OBX-5 number skips Decimal; all fall back to the general code when a
field has escapes, repetitions or subcomponents. Hypothesis throws headers made of delimiters,
escapes and text at both and compares them with the general path.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.clock import Clock
from simulator.faults.engine import FaultEngine
from simulator.journal import Journal
from simulator.mllp.ack import build_ack, general_ack, plain_ack
from simulator.mllp.er7 import HL7Error, header_values, tokenize
from simulator.mllp.faults import MllpFaults
from simulator.mllp.ingest import Endpoint, _reads_ascii
from simulator.mllp.mapping import V2Mapper, _plain_number
from simulator.mllp.settings import MllpSettings

PLAIN = ["A", "b", "2.5", "ORU", "R01", "al", "^", " ", "é", ""]  # what the shortcuts take
SPECIAL = ["~", "&", "\\", "\\F\\", "\\S\\"]  # what sends them to the general code


def headers(pieces: list[str]) -> st.SearchStrategy[str]:
    field = st.lists(st.sampled_from(pieces), max_size=5).map("".join)
    return st.lists(field, max_size=18).map(lambda fields: "MSH|^~\\&|" + "|".join(fields) + "\rPID|1\r")


HEADER = st.one_of(headers(PLAIN), headers(PLAIN + SPECIAL))


@settings(max_examples=400, deadline=None)
@given(HEADER)
def test_header_shortcut_reads_what_the_value_calls_read(text: str) -> None:
    try:
        message = tokenize(text)
    except HL7Error:
        return
    assert message.header() == header_values(message.msh)


@settings(max_examples=400, deadline=None)
@given(HEADER, st.sampled_from(["AA", "CA"]))
def test_plain_ack_is_the_general_ack(text: str, code: str) -> None:
    try:
        message = tokenize(text)
    except HL7Error:
        return
    plain = plain_ack(message, code, "ACK7", "20260101120000+0000")
    general = general_ack(message, code, "ACK7", "20260101120000+0000")
    assert plain is None or plain == general
    assert build_ack(message, code, "ACK7", "20260101120000+0000") == general


def test_the_usual_ack_takes_the_shortcut() -> None:
    message = tokenize("MSH|^~\\&|LAB|HOSP|EHR|SITE|20260101||ORU^R01^ORU_R01|M1|P|2.5.1\rPID|1\r")
    assert plain_ack(message, "AA", "ACK1", "20260101120000+0000") == (
        "MSH|^~\\&|EHR|SITE|LAB|HOSP|20260101120000+0000||ACK^R01^ACK|ACK1|P|2.5.1\rMSA|AA|M1\r"
    )


OBX = tokenize("MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.5\rOBX|1|NM|X^Y^L||1\r").segments[1]
NUMBER_TEXT = st.lists(st.sampled_from(list("0123456789.-+eE ")), min_size=1, max_size=20).map("".join)


@settings(max_examples=600, deadline=None)
@given(st.one_of(NUMBER_TEXT, st.decimals(allow_nan=False, allow_infinity=False).map(str)))
def test_plain_number_is_what_decimal_gives(text: str) -> None:
    plain = _plain_number(text)
    if plain is None:
        return
    general = V2Mapper.quantity(Decimal(text), {}, OBX)["value"]
    assert plain == general and type(plain) is type(general)


def test_plain_number_declines_what_it_cannot_read_exactly() -> None:
    assert [_plain_number(t) for t in ("72", "36.6", "0.5")] == [72, 36.6, 0.5]
    # Signs, exponents, bare dots, non-ASCII digits and 16+ characters go the Decimal way.
    for text in ("-1", "+2", "1e3", ".5", "5.", "1.2.3", "\uff11\uff12", "1234567890.123456", ""):
        assert _plain_number(text) is None


ENDPOINT = Endpoint("t", MllpSettings(), Journal(), Clock(), None, MllpFaults(FaultEngine([], Clock()), "t"))
MSH_FIELD = st.sampled_from(["", "A", "ORU^R01", "M1", "2.5", "2.5.1", "P", "AL", "x~y", "UTF-8"])
CHARSET = st.sampled_from(["", "UTF-8", " unicode utf-8 ", "8859/1", "ASCII~UTF-8", "EBCDIC", "UTF-8^x"])
SEGMENT = st.sampled_from(["PID|1||X^^^H^MR", "OBX|1|NM|8867-4^HR^LN||72", "pid|bad", "ZZ1|x", ""])


@st.composite
def ascii_messages(draw):  # type: ignore[no-untyped-def]
    """Near-valid ASCII messages: MSH with or without MSH-18 (charsets known and not), other
    segments good and bad, CR, LF or CRLF terminators, sometimes no MSH at all."""
    fields = ["LAB", "H", "EHR", "S", "20260101", "", "ORU^R01", "M1", "P", "2.5"]
    for n in draw(st.lists(st.integers(0, len(fields) - 1), max_size=3)):
        fields[n] = draw(MSH_FIELD)
    if draw(st.integers(0, 3)) == 0:
        fields = fields[: draw(st.integers(6, len(fields)))]
    if draw(st.booleans()):
        fields += [""] * (15 - len(fields)) + [draw(CHARSET)] + draw(st.lists(MSH_FIELD, max_size=3))
    header = draw(st.sampled_from(["MSH|^~\\&|"] * 6 + ["MSH", "PID|"])) + "|".join(fields)
    segments = [header, *draw(st.lists(SEGMENT, max_size=4))]
    return "".join(segment + draw(st.sampled_from(["\r", "\r", "\n", "\r\n"])) for segment in segments)


def read_outcome(read, payload: bytes):  # type: ignore[no-untyped-def]
    warnings: list[str] = []
    try:
        message, codec = read(payload, warnings)
    except HL7Error as error:
        context = getattr(error, "context", None)
        return ("error", error.code, error.text, error.location, context and context.text)
    return ("read", message.text, [s.fields for s in message.segments], codec, warnings)


@settings(max_examples=600, deadline=None)
@given(ascii_messages())
def test_ascii_read_is_the_declared_charset_read(text: str) -> None:
    """ASCII payloads are decoded before MSH-18 is looked at; the outcome (message, codec,
    warnings, or the error and what it echoes) is that of reading MSH-18 from the bytes first."""
    payload = text.encode("utf-8")
    assert read_outcome(ENDPOINT._read, payload) == read_outcome(ENDPOINT._read_declared, payload)


def test_ascii_shortcut_only_where_the_default_charset_reads_ascii() -> None:
    assert [_reads_ascii(c) for c in ("utf-8", "latin-1", "ascii", "utf-16", "no-such-codec")] == [
        True,
        True,
        True,
        False,
        False,
    ]
