"""Parsing request bodies safely: size, encoding, syntax and nesting are checked before use."""

from __future__ import annotations

from typing import Any

import orjson

from simulator.fhir.errors import FHIRError

# orjson refuses nesting deeper than 1024 itself; FHIR resources are far shallower, and a
# shallower limit keeps recursive code (validation, FHIRPath) far from Python's recursion limit.
MAX_DEPTH = 64


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise FHIRError.of(400, "structure", "The request body is empty; a FHIR JSON resource was expected")
    try:
        data = orjson.loads(body)  # rejects invalid UTF-8 too; decoding is only needed to say where
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise FHIRError.of(
                400, "structure", f"The request body is not valid UTF-8 (byte {bad.start}: {bad.reason})"
            ) from None
        raise FHIRError.of(400, "structure", f"The request body is not valid JSON: {exc}") from None
    if too_deep(data, body):
        raise FHIRError.of(400, "structure", f"The JSON is nested deeper than {MAX_DEPTH} levels")
    return data


def too_deep(data: Any, body: bytes | None = None) -> bool:
    """Whether `data` nests deeper than MAX_DEPTH (the admin API and scenario YAML use it too: the
    schema validator recurses). With the raw JSON `body`, most bodies skip the walk: nesting cannot
    be deeper than the number of brackets."""
    if body is not None and body.count(b"{") + body.count(b"[") <= MAX_DEPTH:
        return False
    return _depth(data) > MAX_DEPTH


def _depth(value: Any) -> int:
    # Iterative so a hostile body cannot exhaust the Python stack.
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return deepest


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)
