"""The pytest plugin (conformance/pytest_plugin.py) as a user gets it: inner test files run by pytest
in a subprocess that finds the plugin through the `pytest11` entry point pyproject.toml declares,
against real servers the plugin starts (or one this test started, for --ehrsim-server)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from simulator.admin_client import AdminClient
from simulator.testing import serve_in_thread

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose subprocesses see ehrsim installed: this tree importable, and a distribution
    whose `pytest11` entry point is the one pyproject.toml declares (what `pip install` records)."""
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    site = pytester.mkdir("site-packages")
    dist = site / "ehrsim_plugin_under_test-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ehrsim-plugin-under-test\nVersion: 0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points["pytest11"].items())
    (dist / "entry_points.txt").write_text(f"[pytest11]\n{lines}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(site), str(ROOT))))
    for name in [name for name in os.environ if name.startswith("EHRSIM_")]:  # the shell's, if any
        monkeypatch.delenv(name)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # no .pytest_cache: nothing to read or write between inner runs
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_plugin_is_loaded_by_the_entry_point_and_idle_until_used(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys, threading

        def test_idle(request):
            assert request.config.pluginmanager.has_plugin("ehrsim")
            assert request.config.getoption("ehrsim_server") is None  # its options are registered
            assert not [m for m in sys.modules if m.startswith("simulator")]
            assert threading.active_count() == 1
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_fixture_serves_fhir_and_mllp_and_a_failing_expect_shows_the_finding(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import socket
        import httpx

        def test_reads_patients(ehrsim):
            bundle = httpx.get(ehrsim.fhir_base + "/Patient", params={"_summary": "count"}).json()
            assert bundle["total"] == 10  # the default scenario's population
            host, port = ehrsim.mllp
            socket.create_connection((host, port), timeout=5).close()
            ehrsim.expect("count", filter={"path": "/Patient", "status": "200"}, exactly=1)

        def test_expects_a_delete(ehrsim):
            ehrsim.expect("count", filter={"method": "DELETE"}, at_least=1)
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            '>*ehrsim.expect("count", filter={"method": "DELETE"}, at_least=1)',
            "E*VerificationFailed: journal check 'count' failed",
            "E*asked: filter={'method': 'DELETE'}, at_least=1",
            "E*found: count=0, expected={'at_least': 1}",
        ]
    )


def test_closest_marker_then_the_option_choose_the_scenario(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked="""
        import httpx
        import pytest

        pytestmark = pytest.mark.ehrsim(scenario="rate-limited")

        def test_module_marker_gives_429s(ehrsim):
            assert ehrsim.admin.scenario()["name"] == "rate-limited"
            codes = [httpx.get(ehrsim.fhir_base + "/Observation").status_code for _ in range(5)]
            assert 429 in codes, codes
            ehrsim.expect("count", filter={"status": "429"}, at_least=1)

        @pytest.mark.ehrsim("default", seed=7)
        def test_function_marker_wins(ehrsim):
            scenario = ehrsim.admin.scenario()
            assert (scenario["name"], scenario["seed"]) == ("default", 7)
            codes = {httpx.get(ehrsim.fhir_base + "/Observation").status_code for _ in range(5)}
            assert codes == {200}

        class TestSeeded:
            pytestmark = pytest.mark.ehrsim(seed="class", store="sqlite")

            @pytest.mark.ehrsim(seed=9)
            def test_arguments_merge_closest_first(self, ehrsim, tmp_path_factory):
                scenario = ehrsim.admin.scenario()
                assert (scenario["name"], scenario["seed"]) == ("rate-limited", 9)
                assert list(tmp_path_factory.getbasetemp().glob("ehrsim-store*/ehrsim.db"))
        """,
        test_unmarked="""
        def test_option_is_the_default(ehrsim):
            assert ehrsim.admin.scenario()["name"] == "two-hospitals"
            assert len(ehrsim.sites) == 2
            second = ehrsim.sites[1]
            env = ehrsim.env_for(site=second["id"], private_key="/keys/app.pem")
            assert (env["EHRSIM_FHIR_BASE"], env["EHRSIM_PRIVATE_KEY"]) == (second["fhir_base"], "/keys/app.pem")
        """,
    )
    run(pytester, "--ehrsim-scenario", "two-hospitals").assert_outcomes(passed=4)


def test_each_test_starts_from_the_scenario_start(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data, ids, clock, journal, runtime faults and scenario faults' switches are reset between
    tests sharing a server. The scenario is a file beside pytest.ini (the marker's path is from the
    rootdir, though pytest runs in tests/), with a fault that starts disabled."""
    pytester.makeini("[pytest]\n")
    pytester.makefile(
        ".yaml",
        hospital="""
        name: hospital
        extends: default
        clock: {start: "2026-03-02T08:00:00Z", speed: 0}
        faults:
          - id: teapot
            enabled: false
            match: {path: /Practitioner*}
            action: {type: status, status: 418}
        """,
    )
    inner = """
        import httpx
        import pytest

        pytestmark = pytest.mark.ehrsim(scenario="hospital.yaml")

        def test_{n}(ehrsim):
            assert httpx.get(ehrsim.fhir_base + "/Patient", params={{"family": "Isolated"}}).json()["total"] == 0
            assert ehrsim.journal(method="POST") == []
            assert [f["id"] for f in ehrsim.faults.list()] == ["teapot"]
            assert ehrsim.admin.clock()["elapsed"] == 0
            assert httpx.get(ehrsim.fhir_base + "/Practitioner").status_code == 200

            created = httpx.post(ehrsim.fhir_base + "/Patient", json={{"resourceType": "Patient", "name": [{{"family": "Isolated"}}]}})
            print("created", created.json()["id"])
            ehrsim.faults.enable("teapot")
            assert httpx.get(ehrsim.fhir_base + "/Practitioner").status_code == 418
            ehrsim.faults.add({{"id": "gone", "match": {{"path": "/Encounter*"}}, "action": {{"type": "status", "status": 503}}}})
            ehrsim.advance("1h")
        """
    pytester.mkpydir("tests")
    pytester.makepyfile(**{"tests/test_isolation": "\n".join(inner.format(n=n) for n in (1, 2))})
    monkeypatch.chdir(pytester.path / "tests")
    result = run(pytester, "-s")
    result.assert_outcomes(passed=2)
    created = re.findall(r"created (\S+)", result.stdout.str())
    assert len(created) == 2 and created[0] == created[1]  # the id sequence starts over too


def test_env_is_applied_for_the_test_and_restored_after(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHRSIM_FHIR_BASE", "http://stale.invalid/fhir")
    monkeypatch.setenv("EHRSIM_TOKEN_URL", "http://stale.invalid/token")
    pytester.makepyfile(
        """
        import os

        def test_applied(ehrsim):
            env = ehrsim.apply_env()
            assert os.environ["EHRSIM_FHIR_BASE"] == env["EHRSIM_FHIR_BASE"] == ehrsim.fhir_base
            assert os.environ["EHRSIM_MLLP_PORT"] == str(ehrsim.mllp[1])
            assert "EHRSIM_TOKEN_URL" not in os.environ  # the default site has no auth: no stale URL

        def test_restored():
            assert os.environ["EHRSIM_FHIR_BASE"] == "http://stale.invalid/fhir"
            assert os.environ["EHRSIM_TOKEN_URL"] == "http://stale.invalid/token"
            assert "EHRSIM_MLLP_PORT" not in os.environ
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_ehrsim_server_uses_the_running_sandbox(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest

        @pytest.mark.ehrsim(scenario="rate-limited")
        def test_marker_loads_the_scenario_there(ehrsim, pytestconfig):
            assert ehrsim.origin == pytestconfig.getoption("ehrsim_server")
            assert ehrsim.admin.scenario()["name"] == "rate-limited"
            assert ehrsim.journal() == []  # loading started it over

        def test_writes(ehrsim):
            patient = {"resourceType": "Patient", "identifier": [{"system": "urn:outer", "value": "1"}]}
            assert httpx.post(ehrsim.fhir_base + "/Patient", json=patient).status_code == 201
        """
    )
    with (
        serve_in_thread("default", options={"admin_token": "s3cret"}) as server,
        AdminClient(server.origin, "s3cret") as admin,
    ):
        httpx.get(server.fhir_base + "/Patient")
        run(pytester, "--ehrsim-server", server.origin, "--ehrsim-admin-token", "s3cret").assert_outcomes(
            passed=2
        )
        assert admin.scenario()["name"] == "rate-limited"
        assert [(e["method"], e["status"]) for e in admin.journal()] == [("POST", 201)]


def test_ehrsim_server_problems_fail_the_test_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile("def test_uses(ehrsim):\n    pass\n")
    with serve_in_thread("default", options={"admin_token": "s3cret"}) as server:
        monkeypatch.setenv("EHRSIM_ADMIN_TOKEN", "wrong")
        result = run(pytester, "--ehrsim-server", server.origin)
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            ["*the admin API at http://127.0.0.1:*refused: 401*--ehrsim-admin-token*"]
        )
        # one sandbox for parallel workers would have their resets undo each other's tests
        monkeypatch.setenv("EHRSIM_ADMIN_TOKEN", "s3cret")
        pytester.makepyfile(test_other="def test_uses_too(ehrsim):\n    pass\n")
        result = run(pytester, "-n", "2", "--ehrsim-server", server.origin)
        result.assert_outcomes(errors=2)
        result.stdout.fnmatch_lines(["*--ehrsim-server is one sandbox*run without -n*"])
    result = run(pytester, "--ehrsim-server", server.origin)  # stopped: nobody answers there
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*ehrsim: no sandbox answers at http://127.0.0.1:*"])


def test_tls_marker_serves_https_and_apply_env_trusts_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    pytester.makepyfile(
        """
        import os
        import ssl

        import httpx
        import pytest

        @pytest.mark.ehrsim(tls=True)
        def test_https(ehrsim):
            assert ehrsim.origin.startswith("https://") and ehrsim.fhir_base.startswith(ehrsim.origin)
            trust = ssl.create_default_context(cafile=str(ehrsim.ca_file))
            assert httpx.get(ehrsim.fhir_base + "/metadata", verify=trust).status_code == 200
            env = ehrsim.apply_env()
            assert os.environ["SSL_CERT_FILE"] == str(ehrsim.ca_file)
            # the integration's plain client trusts the sandbox through SSL_CERT_FILE
            assert httpx.get(env["EHRSIM_FHIR_BASE"] + "/Patient").json()["resourceType"] == "Bundle"

        def test_plain_by_default(ehrsim):
            ehrsim.apply_env()
            assert ehrsim.origin.startswith("http://") and ehrsim.ca_file is None
            assert "SSL_CERT_FILE" not in os.environ

        @pytest.mark.ehrsim(tls="yes")
        def test_bad(ehrsim):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.ehrsim: tls must be True or False, not 'yes'*"])


def test_xdist_workers_have_servers_of_their_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json, os
        import httpx

        def test_records_its_server(ehrsim, pytestconfig):
            httpx.post(ehrsim.fhir_base + "/Patient", json={"resourceType": "Patient"})
            ehrsim.expect("count", filter={"method": "POST"}, exactly=1)  # not the other worker's too
            out = pytestconfig.rootpath / os.environ["PYTEST_XDIST_WORKER"]
            out.write_text(json.dumps(ehrsim.origin))
        """
    )
    run(pytester, "-n", "2", "--dist", "each").assert_outcomes(passed=2)
    origins = {json.loads((pytester.path / worker).read_text()) for worker in ("gw0", "gw1")}
    assert len(origins) == 2


def test_bad_marker_arguments_and_scenarios_fail_the_test_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ehrsim(scenario="default", sed=1)
        def test_typo(ehrsim):
            pass

        @pytest.mark.ehrsim(store="postgres")
        def test_store(ehrsim):
            pass

        @pytest.mark.ehrsim(scenario="no-such-hospital")
        def test_unknown(ehrsim):
            pass

        @pytest.mark.ehrsim(store="sqlite:/nonexistent/dir/ehrsim.db")
        def test_unwritable(ehrsim):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines_random(
        [
            "*@pytest.mark.ehrsim: unknown argument(s) sed; use scenario, seed, store, tls*",
            "*@pytest.mark.ehrsim: store must be 'memory', 'sqlite' or 'sqlite:PATH', not 'postgres'*",
            "*ehrsim: cannot load scenario 'no-such-hospital'*",
            "unknown scenario 'no-such-hospital' (known: *default*)",
            "*ehrsim: cannot start 'default' with store 'sqlite:/nonexistent/dir/ehrsim.db': unable to open*",
        ]
    )


def test_importing_the_plugin_imports_no_simulator() -> None:
    code = "import sys, conformance.pytest_plugin; print(sorted(m for m in sys.modules if m.startswith('simulator')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
