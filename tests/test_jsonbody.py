"""Request-body parsing: each bad body gets its own precise message (see simulator/fhir/jsonbody.py)."""

from __future__ import annotations

import pytest

from simulator.fhir.errors import FHIRError
from simulator.fhir.jsonbody import MAX_DEPTH, parse_json


def _diagnostics(body: bytes) -> str:
    with pytest.raises(FHIRError) as caught:
        parse_json(body)
    assert caught.value.status == 400
    return caught.value.outcome()["issue"][0]["diagnostics"]


def test_invalid_utf8_is_reported_with_its_byte_position() -> None:
    assert _diagnostics(b'{"a":"\xff"}') == "The request body is not valid UTF-8 (byte 6: invalid start byte)"


def test_invalid_json_that_is_valid_utf8_is_reported_as_json() -> None:
    assert _diagnostics(b'{"a": }').startswith("The request body is not valid JSON: ")


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    depth = MAX_DEPTH + 1
    body = b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    assert _diagnostics(body) == f"The JSON is nested deeper than {MAX_DEPTH} levels"
    ok = b'{"a":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert parse_json(ok)["a"]


def test_many_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "{[" * MAX_DEPTH
    assert parse_json(b'{"text": "' + text.encode() + b'"}') == {"text": text}
