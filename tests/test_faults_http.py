"""Every HTTP fault action, seen by a real HTTP client over a real socket, and in the journal."""

from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest

from simulator.scenario import build_scenario
from simulator.testing import RunningServer, serve_in_thread


def action(name: str, **params: object) -> dict:
    """A fault selected by the request header `x-fault: <name>`."""
    return {
        "id": name,
        "match": {"headers": {"x-fault": name}},
        "action": {"type": name.split(".")[0], **params},
    }


FAULTS = [
    action("status", status=502, code="transient", diagnostics="Upstream interface engine failed"),
    action("throttle", retry_after="7s"),
    action("outage"),
    action("outage.refuse", mode="refuse"),
    action("latency", delay="300ms"),
    action("hang", delay="200ms"),
    action("reset"),
    action("empty"),
    action("truncate", fraction=0.5),
    action("malformed"),
    action("slow_body", chunk=200, interval="50ms"),
    action("revoke_token"),
    {"id": "auth-only", "match": {"protocol": "auth"}, "action": {"type": "status", "status": 500}},
]


@pytest.fixture(scope="module")
def faulty() -> RunningServer:
    scenario = build_scenario(
        {
            "name": "faulty",
            "seed": 3,
            "sites": [{"id": "default", "base_path": "/fhir", "population": {"patients": 2}}],
            "faults": FAULTS,
        }
    )
    with serve_in_thread(scenario) as running:
        yield running


def entry_for(server: RunningServer, response: httpx.Response) -> dict:
    """The journal entry of a response (recorded just after the response is sent)."""
    correlation = response.headers["x-correlation-id"]
    for _ in range(200):
        found = [e for e in server.sandbox.journal if e["correlation_id"] == correlation]
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"no journal entry for {correlation}")


def a_patient(server: RunningServer) -> str:
    bundle = httpx.get(server.fhir_base + "/Patient?_count=1").json()
    return "/Patient/" + bundle["entry"][0]["resource"]["id"]


def get(server: RunningServer, fault: str, path: str = "/Patient", timeout: float = 5) -> httpx.Response:
    return httpx.get(server.fhir_base + path, headers={"x-fault": fault}, timeout=timeout)


def last_entry(server: RunningServer, fault: str) -> dict:
    """The latest entry a fault touched; after a reset the client may see it before it is recorded."""
    for _ in range(200):
        found = [e for e in server.sandbox.journal if fault in e["faults"]]
        if found:
            return found[-1]
        time.sleep(0.01)
    raise AssertionError(f"no journal entry for fault {fault}")


def test_status_renders_an_operation_outcome(faulty: RunningServer) -> None:
    response = get(faulty, "status")
    assert response.status_code == 502
    issue = response.json()["issue"][0]
    assert (issue["code"], issue["diagnostics"]) == ("transient", "Upstream interface engine failed")
    entry = entry_for(faulty, response)
    assert (entry["status"], entry["outcome"]) == (502, "status")


def test_throttle_is_429_with_retry_after(faulty: RunningServer) -> None:
    response = get(faulty, "throttle")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["issue"][0]["code"] == "throttled"


def test_outage_is_503_and_refuse_mode_resets_the_connection(faulty: RunningServer) -> None:
    response = get(faulty, "outage")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"  # untimed fault: the default
    with pytest.raises(httpx.TransportError):
        get(faulty, "outage.refuse")
    assert last_entry(faulty, "outage.refuse")["status"] is None


def test_latency_delays_the_real_response(faulty: RunningServer) -> None:
    started = time.monotonic()
    response = get(faulty, "latency")
    assert response.status_code == 200 and response.json()["resourceType"] == "Bundle"
    assert time.monotonic() - started >= 0.3


def test_hang_closes_without_a_response(faulty: RunningServer) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        get(faulty, "hang")
    assert time.monotonic() - started >= 0.2
    entry = last_entry(faulty, "hang")
    assert (entry["status"], entry["outcome"]) == (None, "hang")


def test_hang_longer_than_the_client_timeout_is_a_client_timeout(faulty: RunningServer) -> None:
    with pytest.raises(httpx.ReadTimeout):
        get(faulty, "hang", timeout=0.05)


def test_reset_mid_response(faulty: RunningServer) -> None:
    with pytest.raises(httpx.TransportError):
        get(faulty, "reset")
    assert last_entry(faulty, "reset")["outcome"] == "reset"


def test_empty_body(faulty: RunningServer) -> None:
    response = get(faulty, "empty")
    assert response.status_code == 200 and response.content == b""


def test_truncated_and_malformed_bodies_are_not_json(faulty: RunningServer) -> None:
    path = a_patient(faulty)
    whole = httpx.get(faulty.fhir_base + path).content
    truncated = get(faulty, "truncate", path)
    assert truncated.status_code == 200
    assert truncated.content == whole[: len(whole) // 2]
    for response in (truncated, get(faulty, "malformed")):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(response.content)


def test_slow_body_dribbles_the_whole_response(faulty: RunningServer) -> None:
    path = a_patient(faulty)
    whole = httpx.get(faulty.fhir_base + path).content
    started = time.monotonic()
    response = get(faulty, "slow_body", path, timeout=30)
    assert response.content == whole
    chunks = -(-len(whole) // 200)
    assert time.monotonic() - started >= 0.05 * (chunks - 1)


def test_revoke_token_is_401_invalid_token(faulty: RunningServer) -> None:
    response = get(faulty, "revoke_token")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_faults_do_not_touch_unmatched_requests(faulty: RunningServer) -> None:
    response = httpx.get(faulty.fhir_base + "/Patient")
    assert response.status_code == 200
    assert entry_for(faulty, response)["faults"] == ()


def test_server_keeps_serving_after_connection_faults(faulty: RunningServer) -> None:
    for fault in ("reset", "outage.refuse", "hang"):
        with pytest.raises(httpx.TransportError):
            get(faulty, fault)
        assert httpx.get(faulty.fhir_base + "/Patient?_count=1").status_code == 200


def test_refuse_is_a_reset_not_a_clean_close(faulty: RunningServer) -> None:
    sock = socket.create_connection((faulty.host, faulty.port), timeout=5)
    sock.sendall(b"GET /fhir/Patient HTTP/1.1\r\nHost: x\r\nx-fault: outage.refuse\r\n\r\n")
    with pytest.raises(ConnectionResetError):
        while sock.recv(1024):
            pass
    sock.close()


def test_injected_errors_take_the_sites_error_shape() -> None:
    """A site whose errors are shaped (as a vendor profile does) answers injected faults the same way."""
    from starlette.responses import JSONResponse

    from simulator.faults.http import ERROR_RENDERER

    scenario = build_scenario(
        {
            "seed": 3,
            "sites": [{"id": "default", "base_path": "/fhir", "population": {"patients": 1}}],
            "faults": [action("outage")],
            "rate_limits": [{"rate": "1/h", "burst": 1}],
        }
    )
    with serve_in_thread(scenario) as server:
        site = server.sandbox.sites["default"].site

        def envelope(error):  # e.g. MEDITECH's non-FHIR error body
            detail = error.issues[0].diagnostics
            return JSONResponse({"resource": "error", "detail": detail}, error.status, error.headers)

        site.extras[ERROR_RENDERER] = envelope
        down = get(server, "outage")
        assert down.status_code == 503 and down.headers["retry-after"] == "60"
        assert down.json() == {"resource": "error", "detail": "The service is unavailable"}
        assert httpx.get(server.fhir_base + "/Patient?_count=1").status_code == 200
        limited = httpx.get(server.fhir_base + "/Patient?_count=1")
        assert limited.status_code == 429 and limited.json()["resource"] == "error"
