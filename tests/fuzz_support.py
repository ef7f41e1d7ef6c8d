"""Shared hypothesis strategies for the "never a 5xx" sweeps (tests/test_*_fuzz.py): JSON bodies
built from a route's own field names, raw query strings, and the values that have broken parsers
before. The tests send them to the real server over a socket."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# CI runs the same 80 examples each time; EHRSIM_FUZZ_EXAMPLES=2000 explores further with fresh
# random examples (then add what it finds as a named regression test).
EXPLORE = int(os.environ.get("EHRSIM_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXPLORE or 80,
    deadline=None,
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Values that have broken parsers before: non-ASCII digits, NUL, lone surrogates, huge numbers.
TRAPS = [
    "²",
    "\u0661",
    "\uff10",
    "\x00",
    "\ud800",
    "-1",
    "1e400",
    "9" * 400,
    "nan",
    "inf",
    "",
    "*",
    "x" * 2000,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [*TRAPS, "5m", "1h30m", "500", "GET", "Patient", "default", "s", "public-app", "patient/*.rs"]
    ),
)


def queries(names: list[str], values: list[str]) -> st.SearchStrategy[str]:
    """A raw query string: repeated names, any text percent-encoded byte for byte (a lone surrogate
    becomes %ED%A0%80), and malformed escapes such as `%zz` left as they are."""
    value = st.one_of(st.text(max_size=12), st.sampled_from([*TRAPS, *values])).map(
        lambda text: quote(text.encode("utf-8", "surrogatepass"))
    )
    pair = st.tuples(
        st.sampled_from(names), st.one_of(value, st.sampled_from(["%", "%zz", "%ff%fe", "a%00b"]))
    )
    return st.lists(pair.map("=".join), max_size=4).map("&".join)


def json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    """Nested JSON whose object keys are the route's own field names, so validation runs deep."""
    return st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.sampled_from(keys), children, max_size=5)
        ),
        max_leaves=12,
    )


def bodies(keys: list[str]) -> st.SearchStrategy[bytes]:
    """A JSON object of the route's fields, any JSON value, or any bytes. `json.dumps` writes a
    lone surrogate as the escape `\\ud800`, which is valid JSON text but no Unicode string."""
    value = json_values(keys)
    return st.one_of(
        st.dictionaries(st.sampled_from(keys), value, max_size=6).map(lambda v: json.dumps(v).encode()),
        value.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=60),
    )
