"""Bad input to the admin API gets `{error, message}` JSON with a 4xx, never a 5xx or a hang:
generated JSON bodies and query strings for every route, against the real server over a socket.
Each bug these found has a named regression test below."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.scenario import load_raw
from simulator.testing import RunningServer, serve_in_thread
from simulator.verify import CHECKS, FILTER_KEYS
from tests.fuzz_support import FUZZ, SCALARS, bodies, json_values, queries
from tests.smart_support import TIMEOUT

FAULT_KEYS = [
    *["id", "match", "schedule", "action", "probability", "description", "enabled", "type", "status"],
    *["delay", "fixed", "uniform", "lognormal", "median", "sigma", "max", "after", "for", "every"],
    *["requests", "from", "to", "times", "protocol", "site", "method", "path", "headers", "resource_type"],
]
VERIFY_KEYS = [
    *[*FILTER_KEYS, "check", "filter", "at_least", "at_most", "exactly", "sequence", "min_gap", "backoff"],
    *["key", "window", "clock"],
]
SCENARIO_KEYS = [
    *["name", "definition", "extends", "sites", "seed", "clock", "faults", "start", "speed", "id"],
    *["base_path", "population", "patients", "vendor", "auth", "rate_limits", "as_of"],
]
AUTH_KEYS = [
    *["site", "client_id", "scope", "patient", "encounter", "user", "launch_url", "redirect_uris"],
    *["grant_types", "jwks", "jwks_uri", "token_endpoint_auth_method", "client_name", "client_secret"],
]
ROUTES = [
    ("POST", "/faults", FAULT_KEYS),
    ("PATCH", "/faults/f", ["enabled", "id"]),
    ("POST", "/journal/verify", VERIFY_KEYS),
    ("POST", "/clock/advance", ["seconds", "duration"]),
    ("PUT", "/scenario", SCENARIO_KEYS),
]
AUTH_ROUTES = [("POST", "/clients", AUTH_KEYS), ("POST", "/token", AUTH_KEYS), ("POST", "/launch", AUTH_KEYS)]


@pytest.fixture(scope="module")
def admin_server() -> Iterator[RunningServer]:
    with serve_in_thread("default") as running:
        httpx.post(
            running.admin + "/faults", json={"id": "f", "action": "status", "match": {"path": "/none"}}
        )
        yield running


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()
        assert error["error"] and error["message"], error


def send(server: RunningServer, method: str, path: str, body: bytes) -> httpx.Response:
    with httpx.Client(timeout=TIMEOUT) as http:
        return http.request(
            method, server.admin + path, content=body, headers={"content-type": "application/json"}
        )


@FUZZ
@given(data=st.data(), route=st.sampled_from(ROUTES))
def test_generated_bodies_get_admin_errors(admin_server: RunningServer, data: st.DataObject, route) -> None:
    method, path, keys = route
    check(send(admin_server, method, path, data.draw(bodies(keys))))


ACTION_PARAMS = [
    "status",
    "code",
    "diagnostics",
    "headers",
    "retry_after",
    "delay",
    "mode",
    "fraction",
    "body",
]
FAULTS = st.fixed_dictionaries(
    {
        "match": st.just({"resource_type": "Flag"}),  # only this module's own requests, below
        "action": st.one_of(
            SCALARS,
            st.fixed_dictionaries(
                {"type": st.sampled_from(["status", "throttle", "outage", "empty", "revoke_token", "x", ""])},
                optional={
                    **{name: SCALARS for name in ACTION_PARAMS},
                    "headers": json_values(["Retry-After", "x"]),
                },
            ),
        ),
    },
    optional={
        "id": SCALARS,
        "probability": SCALARS,
        "schedule": json_values(["after", "for", "every", "requests", "from", "to", "times"]),
    },
)
VERIFY = st.fixed_dictionaries(
    {"check": st.sampled_from(CHECKS)},
    optional={key: json_values([*VERIFY_KEYS, "from", "to"]) for key in VERIFY_KEYS if key != "check"},
)


@FUZZ
@given(fault=FAULTS)
def test_accepted_faults_answer_as_configured(admin_server: RunningServer, fault: dict) -> None:
    """A fault the admin API accepts must work when it fires: nothing accepted may turn into an
    internal error later."""
    added = httpx.post(admin_server.admin + "/faults", json=fault)
    check(added)
    if added.status_code != 201:
        return
    try:
        response = httpx.get(admin_server.fhir_base + "/Flag", timeout=TIMEOUT)
        assert "Internal error" not in response.text, response.text
    finally:
        fault_id = quote(added.json()["id"], safe="")
        assert httpx.post(f"{admin_server.admin}/faults/{fault_id}/disable").status_code == 200


@FUZZ
@given(spec=VERIFY)
def test_generated_verify_specs_get_admin_errors(admin_server: RunningServer, spec: dict) -> None:
    httpx.get(admin_server.fhir_base + "/metadata")  # something in the journal to check
    check(httpx.post(admin_server.admin + "/journal/verify", content=json.dumps(spec).encode()))


@FUZZ
@given(data=st.data(), route=st.sampled_from(AUTH_ROUTES))
def test_generated_auth_admin_bodies_get_admin_errors(
    smart: RunningServer, data: st.DataObject, route
) -> None:
    method, path, keys = route
    check(send(smart, method, path, data.draw(bodies(keys))))


@FUZZ
@given(body=bodies(SCENARIO_KEYS).map(lambda b: b.replace(b'"', b"")))
def test_generated_yaml_scenarios_get_admin_errors(admin_server: RunningServer, body: bytes) -> None:
    with httpx.Client(timeout=TIMEOUT) as http:
        check(http.put(admin_server.admin + "/scenario", content=body, headers={"content-type": "text/yaml"}))


@FUZZ
@given(
    method=st.sampled_from(["GET", "GET", "GET", "PUT", "OPTIONS", "TRACE"]),
    path=st.sampled_from(["/journal", "/journal/export", "/clients", "/faults/f", "/sites", "/clock", "/x"]),
    query=queries([*FILTER_KEYS, "limit", "offset", "after", "x"], ["1", "500", "5xx", "GET", "2026-01-01"]),
)
def test_generated_queries_get_admin_errors(
    admin_server: RunningServer, method: str, path: str, query: str
) -> None:
    with httpx.Client(timeout=TIMEOUT) as http:
        check(http.request(method, f"{admin_server.admin}{path}?{query}"))


def mutated(definition: Any, data: st.DataObject) -> Any:
    """`definition` with one or two of its values (at any depth) replaced by generated JSON."""
    definition = copy.deepcopy(definition)
    for _ in range(data.draw(st.integers(1, 2))):
        node = definition
        while True:  # down to a value, or stop at a container on the way
            key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
            child = node[key]
            if not isinstance(child, dict | list) or not child or data.draw(st.booleans()):
                break
            node = child
        node[key] = data.draw(json_values(SCENARIO_KEYS))
    return definition


def small(definition: Any) -> Any:
    """Populations of at most 5 patients, so that a mutation that still loads loads fast."""
    if isinstance(definition, dict):
        return {
            k: min(v, 5) if k == "patients" and type(v) is int else small(v) for k, v in definition.items()
        }
    return [small(v) for v in definition] if isinstance(definition, list) else definition


SHIPPED = ["default", "token-expiry", "outage", "rate-limited", "two-hospitals", "epic", "messy-data"]


@pytest.fixture(scope="module")
def reload_server() -> Iterator[RunningServer]:
    with serve_in_thread("default") as running:
        yield running


@FUZZ
@given(name=st.sampled_from(SHIPPED), data=st.data())
def test_near_valid_scenarios_load_or_get_admin_errors(
    reload_server: RunningServer, name: str, data: st.DataObject
) -> None:
    """Shipped scenarios with a value or two replaced: either they load and serve, or the answer
    is a 4xx and the scenario before keeps serving."""
    definition = small(mutated({k: v for k, v in load_raw(name)[0].items() if k != "extends"}, data))
    before = httpx.get(reload_server.admin + "/health").json()["scenario"]
    response = httpx.put(
        reload_server.admin + "/scenario",
        content=json.dumps({"definition": definition}, default=str).encode(),
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    check(response)
    health = httpx.get(reload_server.admin + "/health").json()
    assert health["scenario"] == (response.json()["scenario"] if response.status_code == 200 else before)
    assert health["sites"] >= 1 or response.status_code == 200


@pytest.mark.parametrize(
    "method, path, allowed",
    [("DELETE", "/clock", "GET, HEAD"), ("GET", "/reset", "POST"), ("OPTIONS", "/faults", "GET, HEAD, POST")],
)
def test_a_wrong_method_is_a_405_in_the_admin_shape(
    admin_server: RunningServer, method: str, path: str, allowed: str
) -> None:
    # Starlette answered plain text "Method Not Allowed"
    response = httpx.request(method, admin_server.admin + path)
    assert response.status_code == 405 and response.headers["allow"] == allowed
    assert response.json() == {
        "error": "method_not_allowed",
        "message": f"{method} is not allowed on /_admin{path}; use {allowed}",
    }


# -- regressions: each was a 500 -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        # timedelta overflows past year 9999
        ({"seconds": 1.5e16}, "past year 9999"),
        ({"duration": "99999999999999999d"}, "past year 9999"),
        # float("9" * 400) is inf
        ({"duration": "9" * 400}, "too large or not a finite number"),
        # ARABIC-INDIC ONE matched \d and float() read it as 1 (not a 500, but a duration nobody wrote)
        ({"duration": "\u0661m"}, "is not a duration"),
    ],
)
def test_clock_advance_refuses_durations_the_clock_cannot_hold(
    admin_server: RunningServer, body: dict, message: str
) -> None:
    before = httpx.get(admin_server.admin + "/clock").json()["now"]
    response = httpx.post(admin_server.admin + "/clock/advance", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request" and message in response.json()["message"]
    assert httpx.get(admin_server.admin + "/clock").json()["now"][:10] == before[:10]


@pytest.mark.parametrize("name", ["", ".", "scenarios", "/", "x" * 300])
def test_scenario_names_that_are_no_files_are_unknown_scenarios(
    admin_server: RunningServer, name: str
) -> None:
    # Path("") is "."; reading a directory raised IsADirectoryError, and a name longer than the file
    # system allows raised OSError (ENAMETOOLONG) from Path.exists.
    response = httpx.put(admin_server.admin + "/scenario", json={"name": name})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_scenario"
    assert f"unknown scenario '{name}'" in response.json()["message"]


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/token", {"site": []}, "'site' must be a string, not an array"),
        ("/clients", {"site": {}}, "'site' must be a string, not an object"),
        ("/launch", {"site": [1]}, "'site' must be a string, not an array"),
        ("/launch", {"launch_url": 5}, "'launch_url' must be a string, not a number"),
        ("/token", {"scope": {"scope": None}}, "'scope' must be a string, not an object"),
        ("/token", {"client_id": ["a"]}, "'client_id' must be a string, not an array"),
        ("/token", {"patient": [True]}, "'patient' must be a string, not an array"),
        ("/token", {"user": {}}, "'user' must be a string, not an object"),
        ("/token", {"encounter": False}, "'encounter' must be a string, not a boolean"),
    ],
)
def test_auth_admin_fields_must_be_strings(smart: RunningServer, path: str, body: dict, message: str) -> None:
    response = httpx.post(smart.admin + path, json=body, timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_request", "message": message}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"check": "count", "at_least": "x"}, "at_least must be a non-negative integer, not 'x'"),
        ({"check": "count", "exactly": [1]}, "exactly must be a non-negative integer, not [1]"),
        ({"check": "count", "at_most": "²"}, "at_most must be a non-negative integer, not '²'"),
        ({"check": "gaps", "min_gap": "x"}, "min_gap must be a number, not 'x'"),
        ({"check": "gaps", "backoff": "nan"}, "backoff must be a number, not 'nan'"),
        ({"check": "during", "window": {"from": "x"}}, "window.from must be a number, not 'x'"),
        ({"check": "during", "fault": ["a"]}, "fault must be a fault id (a string), not ['a']"),
        ({"check": "duplicates", "key": ["a"]}, "'duplicates' needs a 'key'"),
        ({"check": "count", "filter": [1]}, "a filter is a mapping of journal fields"),
        ({"check": "order", "sequence": [1]}, "a filter is a mapping of journal fields"),
        (
            {"check": "count", "filter": {"since": "\u0661"}},
            "since/until: '\u0661' is neither simulated seconds",
        ),
    ],
)
def test_verify_specs_of_the_wrong_type_are_a_400(
    admin_server: RunningServer, spec: dict, message: str
) -> None:
    for _ in range(2):  # entries to look at, so every check runs its loop
        httpx.get(admin_server.fhir_base + "/metadata")
    response = httpx.post(admin_server.admin + "/journal/verify", json=spec)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request" and message in response.json()["message"]


@pytest.mark.parametrize(
    "spec, message",
    [
        # each was accepted, then a 500 (or a dropped connection) on every matching FHIR request
        ({"action": {"type": "status", "status": "abc"}}, "action.status: 'abc' is not of type 'integer'"),
        (
            {"action": {"type": "status", "status": 999}},
            "action.status: 999 is greater than the maximum of 599",
        ),
        ({"action": {"type": "truncate", "fraction": "x"}}, "action.fraction: 'x' is not of type 'number'"),
        ({"action": {"type": "status", "headers": []}}, "action.headers: [] is not of type 'object'"),
        (
            {"action": {"type": "throttle", "retry_after": "soon"}},
            "action.retry_after: 'soon' is not valid here",
        ),
        ({"action": {"type": "slow_body", "chunk": "x"}}, "action.chunk: 'x' is not of type 'integer'"),
        ({"action": {"type": "status", "code": {}}}, "action.code: {} is not of type 'string'"),
        ({"id": ["a"], "action": "status"}, "id: ['a'] is not of type 'string'"),
        # and these were a 500 when added
        ({"action": "status", "probability": "x"}, "probability: 'x' is not of type 'number'"),
        ({"action": "status", "match": "x"}, "match: 'x' is not of type 'object'"),
        (
            {"action": "status", "schedule": {"requests": "x"}},
            "schedule.requests: 'x' is not of type 'object'",
        ),
        ({"action": {"type": ["status"]}}, "action: an action needs a 'type'"),
        # "math domain error" before
        (
            {"action": {"type": "latency", "delay": {"lognormal": {"median": 0}}}},
            "lognormal.median must be above 0",
        ),
    ],
)
def test_runtime_faults_are_checked_like_scenario_faults(
    admin_server: RunningServer, spec: dict, message: str
) -> None:
    spec = {"id": "bad", "match": {"path": "/Patient"}, **spec}
    response = httpx.post(admin_server.admin + "/faults", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_fault" and message in response.json()["message"]
    assert "bad" not in [fault["id"] for fault in httpx.get(admin_server.admin + "/faults").json()]
    assert httpx.get(admin_server.fhir_base + "/Patient", params={"_count": 1}).status_code == 200


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_scenario_a_feature_refuses_leaves_the_old_one_serving(store: str, tmp_path) -> None:
    # The auth layer refused the client while the sandbox was half rebuilt: a 500, no sites left,
    # and the data written before it gone.
    refused = {
        "name": "refused",
        "sites": [
            {
                "id": "other",
                "base_path": "/other",
                "population": {"patients": 1},
                "auth": {"required": True, "clients": [{"client_id": "x", "redirect_uris": [""]}]},
            }
        ],
    }
    spec = "memory" if store == "memory" else f"sqlite:{tmp_path / 'ehrsim.db'}"
    with serve_in_thread("default", store=spec) as server:
        written = {"resourceType": "Patient", "name": [{"family": "Kept"}]}
        assert httpx.post(server.fhir_base + "/Patient", json=written).status_code == 201
        response = httpx.put(server.admin + "/scenario", json={"definition": refused})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_scenario"
        assert "client 0 (x): invalid_redirect_uri" in response.json()["message"]
        assert httpx.get(server.admin + "/health").json()["scenario"] == "default"
        found = httpx.get(server.fhir_base + "/Patient", params={"family": "Kept"}).json()
        assert found["total"] == 1


@pytest.mark.parametrize(
    "path, method, body, content_type",
    [
        # the schema validator recursed once per level: RecursionError at ~500 levels
        ("/scenario", "PUT", '{"definition": {"name": "d", "sites": %s}}' % ("[" * 500 + "]" * 500), "json"),
        ("/faults", "POST", '{"action": "status", "match": %s}' % ("[" * 500 + "]" * 500), "json"),
        # PyYAML's composer recursed out of the stack
        ("/scenario", "PUT", "a: " + "[" * 5000 + "]" * 5000, "yaml"),
    ],
)
def test_deeply_nested_admin_bodies_are_a_400(
    admin_server: RunningServer, path: str, method: str, body: str, content_type: str
) -> None:
    response = httpx.request(
        method,
        admin_server.admin + path,
        content=body.encode(),
        headers={"content-type": f"application/{content_type}"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"] == f"the {content_type.upper()} is nested deeper than 64 levels"
