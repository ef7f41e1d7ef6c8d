"""The ER7 tokenizer, MLLP framing and ACK building, as plain calls (no socket needed here)."""

from __future__ import annotations

import pytest

from simulator.mllp.ack import AckMode, ack_mode, build_ack, wants
from simulator.mllp.er7 import HL7Error, escape, read_charset_field, tokenize, unescape
from simulator.mllp.framing import Frame, FrameReader, Junk, Oversize, frame
from tests.mllp_support import fixture, oru


def test_tokenizer_reads_header_fields_and_custom_delimiters():
    text = "MSH#*!$%#A#B#C#D#20260101##ORU*R01*ORU_R01#ID$F$9#P#2.5\rPID#1##123*x%y*z!456\r"
    message = tokenize(text)
    assert message.enc.field == "#" and message.enc.component == "*" and message.enc.repetition == "!"
    assert message.message_type == "ORU^R01" and message.structure == "ORU_R01"
    assert message.control_id == "ID#9"  # \F\ in MSH-10 is the field separator, unescaped
    pid = message.segment("PID")
    assert pid.value(3, 1) == "123"
    assert pid.value(3, 2, 2) == "y"
    assert pid.value(3, 1, rep=1) == "456"
    assert pid.repetitions(3) == ["123*x%y*z", "456"]


def test_escape_sequences_round_trip():
    assert unescape("A\\T\\B \\F\\ \\S\\ \\R\\ \\E\\ \\X41\\ \\.br\\ \\Z9\\") == "A&B | ^ ~ \\ A \n \\Z9\\"
    assert unescape(escape("a|b^c~d&e\\f")) == "a|b^c~d&e\\f"


def test_real_sample_with_bom_and_many_segments():
    message = tokenize(fixture("LAB-ORU-1.hl7").decode("utf-8"))
    assert message.control_id == "182"
    assert [s.name for s in message.segments].count("OBX") == 10
    assert message.all("OBR")[1].value(4, 1) == "26464-8"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("PID|1||x\r", 100),  # not starting with MSH
        ("MSH|^^~\\&|A\r", 102),  # repeated encoding character
        ("MSH|^~\\&|A|B|C|D|||ORU^R01|1|P|2.5\rpid|1\r", 100),  # lower-case segment id
    ],
)
def test_tokenizer_errors_are_hl7_errors(text, code):
    with pytest.raises(HL7Error) as info:
        tokenize(text)
    assert info.value.code == code


def test_charset_is_read_from_raw_bytes():
    assert read_charset_field(oru("1", extra="||||||8859/1").encode()) == "8859/1"
    assert read_charset_field(oru("1").encode()) == ""


def test_frame_reader_split_frames_two_frames_and_junk():
    reader = FrameReader()
    data = b"junk" + frame(b"MSH|one") + frame(b"MSH|two")
    events = []
    for i in range(0, len(data), 3):  # three bytes at a time
        events += reader.feed(data[i : i + 3])
    frames = [e.payload for e in events if isinstance(e, Frame)]
    assert frames == [b"MSH|one", b"MSH|two"]
    assert b"".join(e.data for e in events if isinstance(e, Junk)) == b"junk"


def test_frame_reader_skips_oversized_frame_and_recovers():
    reader = FrameReader(max_frame_bytes=100)
    events = reader.feed(frame(b"x" * 150))
    events += reader.feed(b"\x0b" + b"y" * 300)
    events += reader.feed(b"y" * 300 + b"\x1c")
    events += reader.feed(b"\x0d" + frame(b"MSH|ok"))
    assert [type(e) for e in events] == [Oversize, Oversize, Frame]
    assert events[0].size == 150 and events[1].size == 600
    assert events[2].payload == b"MSH|ok"


def test_ack_swaps_sender_and_receiver_and_echoes_control_id():
    message = tokenize(oru("C-1"))
    ack = build_ack(message, "AA", "ACK-9", "20260101120000+0000")
    msh, msa = ack.split("\r")[:2]
    fields = msh.split("|")
    assert fields[2:6] == ["EHR", "EHRSIM", "LAB", "GOODHOSP"]
    assert fields[8] == "ACK^R01^ACK" and fields[9] == "ACK-9"
    assert msa == "MSA|AA|C-1"


def test_err_segment_uses_version_specific_layout():
    error = HL7Error(101, "PID-3 is empty", "PID", sequence=1, field=3)
    v25 = build_ack(tokenize(oru("C-1")), "AE", "A1", "x", error)
    assert "\rERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 is empty\r" in v25
    old = tokenize(oru("C-2").replace("|P|2.5", "|P|2.3"))
    v23 = build_ack(old, "AE", "A2", "x", error)
    assert "\rERR|PID^1^3^101&Required field missing&HL70357\r" in v23


def test_ack_mode_and_conditions():
    assert ack_mode(tokenize(oru("1"))) is AckMode.ORIGINAL
    assert ack_mode(tokenize(oru("1", extra="|||AL|NE"))) is AckMode.ENHANCED
    assert wants("ER", success=True) is False and wants("ER", success=False) is True
    assert wants("SU", success=True) is True and wants("NE", success=True) is False


def test_ack_uses_standard_delimiters_whatever_the_sender_used():
    message = tokenize("MSH#*!$%#APP*X#FAC#EHR#HOSP#20260101##ORU*R01#ID|9#P#2.5\rPID#1##1\r")
    ack = build_ack(message, "AA", "A1", "20260101")
    assert ack.startswith("MSH|^~\\&|EHR|HOSP|APP^X|FAC|20260101||ACK^R01^ACK|A1|P|2.5\r")
    assert "\rMSA|AA|ID\\F\\9\r" in ack  # the sender's "|" in MSH-10, escaped for our delimiters
