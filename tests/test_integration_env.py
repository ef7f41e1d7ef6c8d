"""`ehrsim env` and `integration_env`: the EHRSIM_* variables an integration under test reads
(PRODUCT.md), taken from a real server's admin API and used as an integration would use them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from simulator.admin_client import AdminClient
from simulator.integration_env import IntegrationEnvError, integration_env, shell_exports
from simulator.mllp.client import MllpClient, ack_fields
from simulator.mllp.framing import frame
from simulator.scenario import build_scenario
from simulator.testing import serve_in_thread
from tests.mllp_support import oru

ROOT = Path(__file__).resolve().parent.parent


def test_default_site_gives_fhir_base_and_mllp_address_that_work() -> None:
    with serve_in_thread("default") as server, AdminClient(server.origin) as admin:
        env = integration_env(admin)
        assert env["EHRSIM_FHIR_BASE"] == server.fhir_base
        assert "EHRSIM_TOKEN_URL" not in env and "EHRSIM_CLIENT_ID" not in env  # no auth here
        assert httpx.get(f"{env['EHRSIM_FHIR_BASE']}/Patient?_summary=count").json()["total"] > 0
        with MllpClient(env["EHRSIM_MLLP_HOST"], int(env["EHRSIM_MLLP_PORT"]), timeout=5) as mllp:
            mllp.write(frame(oru("ENV-1").encode()))
            assert ack_fields(mllp.receive())["code"] == "AA"


def test_smart_site_gives_a_backend_client_that_can_get_a_token() -> None:
    with serve_in_thread("token-expiry") as server, AdminClient(server.origin) as admin:
        env = integration_env(admin)
        assert env["EHRSIM_CLIENT_ID"] == "ehrsim-confidential-app"  # the one with client_credentials
        token = httpx.post(
            env["EHRSIM_TOKEN_URL"],
            data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
            auth=(env["EHRSIM_CLIENT_ID"], env["EHRSIM_CLIENT_SECRET"]),
        )
        assert token.status_code == 200, token.text
        patients = httpx.get(
            f"{env['EHRSIM_FHIR_BASE']}/Patient",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert patients.status_code == 200

        public = integration_env(admin, client_id="ehrsim-public-app", private_key="/keys/app.pem")
        assert public["EHRSIM_CLIENT_ID"] == "ehrsim-public-app"
        assert "EHRSIM_CLIENT_SECRET" not in public  # a public client has none
        assert "patient/*.rs" in public["EHRSIM_SCOPE"].split()
        assert public["EHRSIM_PRIVATE_KEY"] == "/keys/app.pem"


def test_listen_port_is_where_the_sites_first_feed_delivers() -> None:
    scenario = build_scenario(
        {
            "name": "feed-env",
            "seed": 3,
            "sites": [
                {
                    "id": "h1",
                    "base_path": "/fhir",
                    "mllp": {"feeds": [{"name": "adt", "target": "127.0.0.1:6789", "events": ["adt"]}]},
                }
            ],
        }
    )
    with serve_in_thread(scenario) as server, AdminClient(server.origin) as admin:
        env = integration_env(admin)
    assert env["EHRSIM_LISTEN_PORT"] == "6789"


def test_unknown_site_or_client_names_what_the_sandbox_has() -> None:
    with serve_in_thread("token-expiry") as server, AdminClient(server.origin) as admin:
        with pytest.raises(IntegrationEnvError, match=r"no site 'nope' \(the sandbox has: default\)"):
            integration_env(admin, site="nope")
        with pytest.raises(IntegrationEnvError, match="ehrsim-public-app, ehrsim-confidential-app"):
            integration_env(admin, client_id="nope")


def test_cli_exports_evaluate_in_a_shell_and_json_matches() -> None:
    with serve_in_thread("token-expiry") as server:
        cli = [sys.executable, "-m", "simulator", "env", "--server", server.origin]
        exports = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert exports.returncode == 0, exports.stderr
        shell = subprocess.run(
            ["bash", "-c", exports.stdout + 'printf "%s|%s" "$EHRSIM_FHIR_BASE" "$EHRSIM_CLIENT_SECRET"'],
            capture_output=True,
            text=True,
            timeout=30,
        )
        as_json = subprocess.run([*cli, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shell.stdout == f"{server.fhir_base}|ehrsim-sandbox-secret"
    values = json.loads(as_json.stdout)
    assert values["EHRSIM_FHIR_BASE"] == server.fhir_base
    assert shell_exports(values) == exports.stdout


def test_cli_says_why_when_no_server_answers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator", "env", "--server", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in result.stderr
