"""The admin API and its Python client, over HTTP."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

import httpx
import pytest
import yaml

from simulator.admin_client import AdminClient, AdminError
from simulator.testing import RunningServer, serve_in_thread


@pytest.fixture
def admin_server() -> RunningServer:
    with serve_in_thread("default") as running:
        yield running


@pytest.fixture
def admin(admin_server: RunningServer) -> AdminClient:
    with AdminClient(admin_server.origin) as client:
        yield client


def test_health_sites_and_scenario(admin: AdminClient, admin_server: RunningServer) -> None:
    assert admin.health()["status"] == "ok"
    (site,) = admin.sites()
    assert site["fhir_base"] == admin_server.fhir_base
    scenario = admin.scenario()
    assert scenario["name"] == "default" and scenario["definition"]["sites"][0]["id"] == "default"


def test_openapi_documents_every_route(admin_server: RunningServer) -> None:
    document = httpx.get(admin_server.admin + "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    documented = set(document["paths"])
    served = {
        "/_admin/health",
        "/_admin/sites",
        "/_admin/scenario",
        "/_admin/reset",
        "/_admin/faults",
        "/_admin/faults/{fault_id}",
        "/_admin/rate-limits",
        "/_admin/clock",
        "/_admin/clock/advance",
        "/_admin/journal",
        "/_admin/journal/export",
        "/_admin/journal/verify",
        "/_admin/metrics",
        "/_admin/openapi.json",
    }
    assert served <= documented
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"] and operation["responses"], f"{method} {path}"


def test_faults_add_list_disable_enable(admin: AdminClient, admin_server: RunningServer) -> None:
    fault = admin.add_fault(
        {"id": "down", "match": {"resource_type": "Patient"}, "action": {"type": "status", "status": 503}}
    )
    assert (fault["origin"], fault["hits"]) == ("runtime", 0)
    patients = admin_server.fhir_base + "/Patient?_count=1"
    assert httpx.get(patients).status_code == 503
    assert admin.fault("down")["hits"] == 1
    admin.disable_fault("down")
    assert httpx.get(patients).status_code == 200
    admin.enable_fault("down")
    assert httpx.get(patients).status_code == 503
    patched = httpx.patch(admin_server.admin + "/faults/down", json={"enabled": False})
    assert patched.json()["enabled"] is False
    # while disabled, a fault neither matches nor fires
    assert [(f["id"], f["matched"], f["hits"]) for f in admin.faults()] == [("down", 2, 2)]
    assert 'ehrsim_fault_hits_total{fault="down"} 2' in admin.metrics()


@pytest.mark.parametrize("fault_id", ["ward 5/flags", "a/b/enable", "50%?#x"])
def test_fault_ids_with_route_characters(
    admin: AdminClient, admin_server: RunningServer, fault_id: str
) -> None:
    """Fault ids are free text: a "/", "?", "#" or "%" in one must not change the route."""
    spec = {"id": fault_id, "match": {"resource_type": "Flag"}, "action": {"type": "status", "status": 503}}
    assert admin.add_fault(spec)["id"] == fault_id
    flags = admin_server.fhir_base + "/Flag"
    assert httpx.get(flags).status_code == 503
    assert admin.disable_fault(fault_id)["enabled"] is False
    assert httpx.get(flags).status_code == 200
    assert admin.fault(fault_id)["id"] == fault_id
    assert admin.enable_fault(fault_id)["enabled"] is True
    assert httpx.get(flags).status_code == 503
    encoded = admin_server.admin + "/faults/" + quote(fault_id, safe="")
    assert httpx.patch(encoded, json={"enabled": False}).json() | {"hits": 0} == admin.fault(fault_id) | {
        "hits": 0
    }
    assert admin.fault(fault_id)["enabled"] is False
    assert httpx.get(flags).status_code == 200


def test_bad_admin_requests_get_precise_errors(admin: AdminClient, admin_server: RunningServer) -> None:
    with pytest.raises(AdminError) as missing:
        admin.enable_fault("nope")
    assert missing.value.status == 404 and "no fault 'nope'" in missing.value.message
    with pytest.raises(AdminError) as invalid:
        admin.add_fault({"action": {"type": "status"}, "probability": 3})
    # runtime faults are checked by the scenario schema (fault.schema.json), with the field's path
    assert (
        invalid.value.status == 422
        and "probability: 3 is greater than the maximum of 1" in invalid.value.message
    )
    empty = httpx.post(admin_server.admin + "/clock/advance", json={})
    assert empty.status_code == 400 and "give {'seconds'" in empty.json()["message"]
    with pytest.raises(AdminError, match="not a duration"):
        admin.advance("soon")
    bad_json = httpx.post(admin_server.admin + "/clock/advance", content=b"{nope")
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["message"]
    unknown = httpx.get(admin_server.admin + "/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    wrong_method = httpx.delete(admin_server.admin + "/clock")
    assert wrong_method.status_code == 405


def test_clock_advance_and_reset(admin: AdminClient, admin_server: RunningServer) -> None:
    before = admin.clock()["elapsed"]
    after = admin.advance("2h")
    assert after["elapsed"] >= before + 7200
    httpx.get(admin_server.fhir_base + "/Patient?_count=1")
    assert admin.journal_stats()["size"] == 1
    admin.reset()
    assert admin.clock()["elapsed"] < 60
    assert admin.journal_stats()["size"] == 0


def test_reset_data_is_stamped_as_at_the_start_whatever_ran_before(
    admin: AdminClient, admin_server: RunningServer
) -> None:
    """Same scenario, same seed, same requests: the same data, lastUpdated included."""
    first = httpx.get(admin_server.fhir_base + "/Patient?_count=1").json()["entry"][0]["resource"]
    admin.advance("3d")  # and a write three simulated days later
    created = httpx.post(
        admin_server.fhir_base + "/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Later"}]},
        headers={"content-type": "application/fhir+json"},
    )
    assert created.status_code == 201
    admin.reset()
    again = httpx.get(admin_server.fhir_base + "/Patient?_count=1").json()["entry"][0]["resource"]
    assert again["id"] == first["id"]
    stamped = [
        datetime.fromisoformat(r["meta"]["lastUpdated"].replace("Z", "+00:00")) for r in (first, again)
    ]
    assert abs((stamped[1] - stamped[0]).total_seconds()) < 3600  # as at the start, not 3 days on


def test_load_scenario_by_name_definition_and_yaml(admin: AdminClient, admin_server: RunningServer) -> None:
    assert admin.load_scenario("rate-limited")["scenario"] == "rate-limited"
    assert admin.rate_limits()[0]["id"] == "per-client"
    definition = {
        "name": "tiny",
        "seed": 5,
        "sites": [{"id": "a", "base_path": "/a/fhir", "population": {"patients": 1}}],
        "faults": [{"id": "x", "action": {"type": "status"}}],
    }
    admin.load_scenario(definition=definition)
    assert [s["id"] for s in admin.sites()] == ["a"]
    assert httpx.get(admin_server.origin + "/a/fhir/Patient").status_code == 500
    body = yaml.safe_dump({"extends": "outage", "name": "outage-copy"})
    loaded = httpx.put(
        admin_server.admin + "/scenario", content=body, headers={"content-type": "application/yaml"}
    )
    assert loaded.json()["scenario"] == "outage-copy"
    assert {f["id"] for f in admin.faults()} == {"maintenance", "hard-down"}


def test_invalid_scenarios_are_refused_and_the_old_one_keeps_running(
    admin: AdminClient, admin_server: RunningServer
) -> None:
    with pytest.raises(AdminError) as refused:
        admin.load_scenario(definition={"sites": [{"id": "a", "base_path": "no-slash"}], "colour": 1})
    assert refused.value.status == 422
    assert "sites[0].base_path" in refused.value.message and "'colour'" in refused.value.message
    with pytest.raises(AdminError, match="unknown scenario"):
        admin.load_scenario("no-such-scenario")
    assert admin.scenario()["name"] == "default"
    assert httpx.get(admin_server.fhir_base + "/Patient?_count=1").status_code == 200


def test_metrics_are_prometheus_text(admin: AdminClient, admin_server: RunningServer) -> None:
    httpx.get(admin_server.fhir_base + "/Patient?_count=1")
    httpx.get(admin_server.fhir_base + "/Nope")
    text = admin.metrics()
    assert 'ehrsim_http_requests_total{site="default",status="200"} 1' in text
    assert 'ehrsim_http_requests_total{site="default",status="404"} 1' in text
    assert 'ehrsim_http_request_duration_seconds_count{site="default"} 2' in text
    assert "# TYPE ehrsim_http_request_duration_seconds histogram" in text
    assert "ehrsim_journal_entries 2" in text


def test_admin_token_is_required_when_configured() -> None:
    with serve_in_thread("default", options={"admin_token": "s3cret"}) as server:
        assert httpx.get(server.admin + "/health").status_code == 200  # liveness stays open
        refused = httpx.get(server.admin + "/faults")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        with pytest.raises(AdminError) as wrong:
            AdminClient(server.origin, token="guess").faults()
        assert wrong.value.status == 401
        assert AdminClient(server.origin, token="s3cret").faults() == []


def test_a_token_is_made_up_when_listening_beyond_loopback() -> None:
    from simulator.admin import AdminApi
    from simulator.sandbox import Sandbox
    from simulator.scenario import load_scenario

    sandbox = Sandbox(load_scenario("default"), options={"host": "0.0.0.0"})
    api = AdminApi(sandbox)
    assert api.token and sandbox.options["admin_token"] == api.token
    assert AdminApi(Sandbox(load_scenario("default"), options={"host": "127.0.0.1"})).token is None


def test_serve_prints_the_admin_token_and_can_run_without_a_journal() -> None:
    import subprocess
    import sys
    from pathlib import Path

    from simulator.testing import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    command = [
        sys.executable,
        "-m",
        "simulator",
        "serve",
        "--port",
        str(port),
        "--admin-token",
        "tok-1",
        "--no-journal",
    ]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "admin token:" in line or len(lines) > 20:
                break
        assert lines[-1].strip() == "admin token: tok-1", lines
        origin = f"http://127.0.0.1:{port}"
        assert httpx.get(origin + "/_admin/journal").status_code == 401
        assert httpx.get(origin + "/fhir/Patient?_count=1").status_code == 200
        stats = AdminClient(origin, token="tok-1").journal_stats()
        assert (stats["enabled"], stats["size"]) == (False, 0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "text"),
    [
        ("PATCH", "/faults/f", {"json": {"enabled": "yes"}}, 400, "{'enabled': true|false}"),
        ("POST", "/faults/f/toggle", {}, 404, "use .../enable or .../disable"),
        ("POST", "/faults", {"json": ["not", "an", "object"]}, 400, "must be a JSON object"),
        (
            "POST",
            "/faults",
            {"json": {"action": {"type": "status"}, "schedule": {"after": "later"}}},
            422,
            "schedule.after: 'later' is not valid here (hint: Seconds, or a number with units",
        ),
        (
            "PUT",
            "/scenario",
            {"content": b"a: [", "headers": {"content-type": "application/yaml"}},
            400,
            "not valid YAML",
        ),
        (
            "PUT",
            "/scenario",
            {"content": b"- a list", "headers": {"content-type": "text/yaml"}},
            400,
            "a mapping",
        ),
        ("PUT", "/scenario", {"json": {"name": 5}}, 400, "give {'name'"),
        ("GET", "/journal?limit=-1", {}, 400, "non-negative integers"),
        ("GET", "/journal?since=yesterday", {}, 400, "neither simulated seconds"),
        (
            "POST",
            "/journal/verify",
            {"json": {"check": "count", "at_least": 1, "filter": {"status": "2xx"}}},
            200,
            '"ok":false',  # nothing journaled yet: admin calls are not
        ),
        ("POST", "/journal/verify", {"content": b"[]"}, 400, "must be a JSON object"),
    ],
)
def test_bad_admin_input_is_answered_precisely(
    admin_server: RunningServer, method: str, path: str, kwargs: dict, status: int, text: str
) -> None:
    with AdminClient(admin_server.origin) as admin:
        admin.add_fault({"id": "f", "action": {"type": "status"}})
    response = httpx.request(method, admin_server.admin + path, **kwargs)
    assert response.status_code == status, response.text
    assert text in response.text


def test_feature_routes_are_served_and_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    """Features add admin routes through assembly.admin_routes without editing admin.py."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from simulator import assembly

    async def clients(request):
        """Register an OAuth client."""
        return JSONResponse({"registered": True}, 201)

    monkeypatch.setattr(
        assembly, "admin_routes", lambda sandbox: [Route("/_admin/clients", clients, methods=["POST"])]
    )
    with serve_in_thread("default") as server:
        assert httpx.post(server.admin + "/clients").json() == {"registered": True}
        document = httpx.get(server.admin + "/openapi.json").json()
        assert document["paths"]["/_admin/clients"]["post"]["summary"] == "Register an OAuth client."


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../../../../etc/passwd", "/etc/hostname", "scenarios/outage"]
)
def test_scenario_by_name_reads_only_yaml_files(admin_server: RunningServer, name: str) -> None:
    """The server reads the path a client names: nothing but a .yaml/.yml file, so an error message
    cannot quote another file's lines."""
    response = httpx.put(admin_server.admin + "/scenario", json={"name": name})
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith(f"unknown scenario '{name}' (known: ") and "ends in .yaml" in message
    assert "root:" not in message
    assert httpx.get(admin_server.admin + "/scenario").json()["name"] == "default"  # still serving
