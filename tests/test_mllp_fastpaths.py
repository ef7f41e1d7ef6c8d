"""The MLLP hot path's shortcuts give exactly what the general code gives, for any header.

`Message.header()` splits a plain MSH once instead of reading eight values one by one, and
`build_ack` writes a plain positive ACK in one f-string; both fall back to the general code when a
field has escapes, repetitions or subcomponents. Hypothesis throws headers made of delimiters,
escapes and text at both and compares them with the general path.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.mllp.ack import build_ack, general_ack, plain_ack
from simulator.mllp.er7 import HL7Error, header_values, tokenize

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
