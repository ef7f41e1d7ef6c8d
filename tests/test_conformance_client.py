"""The conformance client suite: real integrations (tests/fixtures/client-suite/integration.py, a
child process reading EHRSIM_*) against the real server, judged from its journal. The well-behaved
integration passes; each badly behaved one makes exactly its check fail, with a message that says
what the journal shows."""

from __future__ import annotations

import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import yaml

from conformance.client_checks import CLIENT_CHECKS, Thresholds, error_streaks, run_client_checks, window_end
from conformance.client_run import Integration, judge, run_integration, sandbox
from conformance.runner import Result
from simulator.cli import main
from simulator.faults.schedule import Schedule
from simulator.scenario import load_scenario, validate_file
from simulator.testing import free_ports, serve_in_thread

FIXTURES = Path(__file__).parent / "fixtures" / "client-suite"
INTEGRATION = str(FIXTURES / "integration.py")
SCENARIO = {
    "http": str(FIXTURES / "http.yaml"),
    "token": str(FIXTURES / "token.yaml"),
    "mllp": str(FIXTURES / "mllp.yaml"),
    "bulk": str(FIXTURES / "bulk.yaml"),
    "listener": str(FIXTURES / "listener.yaml"),
}


def integrate(kind: str, mode: str, **options: object) -> dict[str, Result]:
    results = run_integration(
        [sys.executable, INTEGRATION, kind, mode], SCENARIO[kind], timeout=60, **options
    )
    return {r.check.id: r for r in results}


def statuses(results: dict[str, Result]) -> dict[str, str]:
    return {check_id: r.status for check_id, r in results.items()}


def assert_only_failure(results: dict[str, Result], failing: str, pattern: str) -> None:
    """`failing` failed with a message matching `pattern`; no other client check failed."""
    assert results[failing].status == "failed", results[failing]
    assert re.search(pattern, results[failing].message), results[failing].message
    others = {i: r.status for i, r in results.items() if i != failing and i in CLIENT_CHECKS}
    assert all(s in ("passed", "skipped") for s in others.values()), others
    assert results["client_command"].status == "passed"


# -- HTTP: Retry-After, backoff, recovery, duplicate writes ---------------------------------------
def test_well_behaved_http_integration_passes() -> None:
    with sandbox(SCENARIO["http"]) as origin:
        command = [sys.executable, INTEGRATION, "http", "good"]
        results = {r.check.id: r for r in judge(origin, Integration(command, timeout=60))}
        # the same run, judged by a stricter rule: its 0.5 s, 1 s backoff is under 5 s
        strict = {r.check.id: r for r in run_client_checks(origin, thresholds=Thresholds(min_gap=5.0))}
    assert statuses(results) == {
        "client_command": "passed",
        "client_retry_after": "passed",
        "client_backoff": "passed",
        "client_recovers": "passed",
        "client_no_duplicate_writes": "passed",
        "client_token_refresh": "skipped",
        "client_mllp_resend": "skipped",
        "client_mllp_no_flood": "skipped",
        "client_bulk_polling": "skipped",
        "client_listener_acks": "skipped",
        "client_listener_accepts": "skipped",
        "expect_patients-read": "passed",
    }
    assert "no MLLP message lost its ACK" in results["client_mllp_resend"].message
    assert "no outbound feed delivered" in results["client_listener_acks"].message
    assert strict["client_backoff"].status == "failed"
    assert re.search(
        r"fault down: outage\).*gap 1 is [\d.]+ s, under 5\.0 s", strict["client_backoff"].message
    )


@pytest.mark.parametrize(
    ("mode", "failing", "pattern"),
    [
        (
            "hammer",
            "client_backoff",
            r"client 127\.0\.0\.1 sent \d+ failing requests in [\d.]+ s, from seq \d+ "
            r"\(GET /Patient -> no response, [\d.]+ s, fault down: outage\).*gap 1 is 0\.[0-4]\d* s, under 0\.5 s",
        ),
        (
            "give-up",
            "client_recovers",
            r"no successful fhir exchange with site default after fault 'down' ended at 3\.00 s "
            r"\(its last victim: seq \d+ \(GET /Patient -> no response",
        ),
        (
            "duplicate",
            "client_no_duplicate_writes",
            r"Observation:urn:example:device-readings\|reading-1 was created 2 times: "
            r"seq \d+ \(POST /Observation -> 201, [\d.]+ s, fault lost-create: reset\), seq \d+ \(POST /Observation -> 201",
        ),
    ],
)
def test_badly_behaved_http_integration_fails_its_check(mode: str, failing: str, pattern: str) -> None:
    # give-up stops at the outage; the settle lets the window close so recovery can be judged
    results = integrate("http", mode, settle=2.0)
    assert_only_failure(results, failing, pattern)


def test_ignoring_retry_after_fails_through_the_cli_with_junit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "client.xml"
    code = main(
        [
            "conformance",
            "client",
            "--scenario",
            SCENARIO["http"],
            "--junit",
            str(junit),
            "--timeout",
            "60",
            "--",
            sys.executable,
            INTEGRATION,
            "http",
            "impatient",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL client_retry_after" in out
    suite = ET.parse(junit).getroot()
    assert suite.get("name") == "ehrsim-conformance-client"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("12", "1", "0")
    cases = {case.get("name", "").split()[0]: case for case in suite.iter("testcase")}
    failure = cases["client_retry_after"].find("failure")
    assert failure is not None
    assert re.search(
        r"request seq \d+ \(GET /Patient -> \d+, [\d.]+ s\) came 0\.\d+ s after a 429 \(seq \d+\) "
        r"that said Retry-After: 1 \(0\.\d+ s early\)",
        failure.get("message", ""),
    ), failure.get("message")
    assert "Retry-After" in (failure.text or "")  # the requirement, for the CI reader
    assert cases["client_mllp_resend"].find("skipped") is not None
    assert cases["client_backoff"].find("failure") is None


# -- tokens ---------------------------------------------------------------------------------------
def test_integration_that_refreshes_expired_tokens_passes() -> None:
    results = integrate("token", "good")
    assert results["client_token_refresh"].status == "passed", results["client_token_refresh"]
    assert results["client_command"].status == "passed"


def test_retrying_a_dead_token_fails() -> None:
    results = integrate("token", "dead-token")
    assert_only_failure(
        results,
        "client_token_refresh",
        r"after seq \d+ \(GET /Patient -> 401, [\d.]+ s\) client backend retried the dead token 3 times "
        r"\(at most 1\) before getting a new one at seq \d+",
    )


def test_dead_token_threshold_is_a_parameter() -> None:
    results = integrate("token", "dead-token", thresholds=Thresholds(dead_token_retries=3))
    assert results["client_token_refresh"].status == "passed", results["client_token_refresh"]


# -- MLLP ------------------------------------------------------------------------------------------
def test_mllp_sender_that_resends_with_the_same_msh10_passes() -> None:
    results = integrate("mllp", "good")
    assert results["client_mllp_resend"].status == "passed", results["client_mllp_resend"]
    assert results["client_mllp_no_flood"].status == "passed", results["client_mllp_no_flood"]


def test_mllp_resend_with_a_new_msh10_fails() -> None:
    results = integrate("mllp", "new-id")
    assert_only_failure(
        results,
        "client_mllp_resend",
        r"seq \d+ \(ADT\^A01 MSH-10 'MSG1' -> AA, [\d.]+ s, fault lost-ack: lost_ack\) got no ACK and was "
        r"never resent with that MSH-10; \d+ later message\(s\) carried other MSH-10s \(MSG1-R1",
    )
    assert "fault silent: never_ack" in results["client_mllp_resend"].message


def test_mllp_resends_without_a_pause_fail() -> None:
    results = integrate("mllp", "flood")
    assert_only_failure(
        results,
        "client_mllp_no_flood",
        r"MSH-10 'MSG1' was sent 2 times \(seqs \d+, \d+\): gap 1 is 0\.[0-4]\d* s, under 0\.5 s",
    )


# -- the integration's own MLLP listener, fed by an outbound feed ----------------------------------
@pytest.fixture
def listen_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """The listener's port, as the scenario's feed target reads it ($EHRSIM_LISTEN_PORT)."""
    (port,) = free_ports(1)
    monkeypatch.setenv("EHRSIM_LISTEN_PORT", str(port))
    return port


def test_listener_that_acks_every_message_passes(listen_port: int) -> None:
    results = integrate("listener", "good")
    assert results["client_listener_acks"].status == "passed", results["client_listener_acks"]
    assert results["client_listener_accepts"].status == "passed", results["client_listener_accepts"]
    assert results["client_command"].status == "passed"


@pytest.mark.parametrize(
    ("mode", "failing", "pattern"),
    [
        (
            "silent",
            "client_listener_acks",
            r"^seq \d+ \(feed adt delivery MSH-10 'ADT-000002' \(ORU\^R01, attempt \d\), [\d.]+ s\) got no ACK "
            r"within 0\.5 s \(seq \d+\); [1-9] more time\(s\) for this message$",
        ),
        (
            "wrong-id",
            "client_listener_acks",
            r"^seq \d+ \(feed adt delivery MSH-10 'ADT-000001' \(ADT\^A01, attempt \d\), [\d.]+ s\) got an ACK "
            r"with MSA-2 'WRONG' \(seq \d+\); 1 more time\(s\) for this message$",
        ),
        (
            "drop",
            "client_listener_acks",
            r"MSH-10 'ADT-000003' .* got the connection ended before an ACK \(EOFError: the listener closed",
        ),
        ("strict", "client_listener_accepts", r"was answered AE \(seq \d+\); its defects: z_segment"),
    ],
)
def test_listener_breaking_a_rule_fails_its_check(
    listen_port: int, mode: str, failing: str, pattern: str
) -> None:
    assert_only_failure(integrate("listener", mode), failing, pattern)


# -- Bulk Data: status polls timed by Retry-After ---------------------------------------------------
def test_bulk_client_that_waits_as_retry_after_says_passes() -> None:
    results = integrate("bulk", "good")
    assert results["client_bulk_polling"].status == "passed", results["client_bulk_polling"]
    assert all(s in ("passed", "skipped") for s in statuses(results).values()), statuses(results)


def test_bulk_client_polling_every_tenth_of_a_second_fails() -> None:
    results = integrate("bulk", "eager")
    assert_only_failure(
        results,
        "client_bulk_polling",
        r"poll .* came 0\.\d\d s after the 202 of seq \d+ that said Retry-After: \d",
    )


# -- the command itself ----------------------------------------------------------------------------
def test_failing_command_fails_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "conformance",
            "client",
            "--scenario",
            "default",
            "--settle",
            "0",
            "--",
            sys.executable,
            "-c",
            "import sys; sys.exit(3)",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(
        r"FAIL client_command .*\n\s+COMMAND `.* -c import sys; sys.exit\(3\)` exited with status 3", out
    ), out


def test_command_past_the_timeout_is_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "conformance",
            "client",
            "--scenario",
            "default",
            "--timeout",
            "0.5",
            "--settle",
            "0",
            "--",
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
        ]
    )
    assert code == 1
    assert "timed out after 0.5 s and was stopped" in capsys.readouterr().out


def test_command_that_cannot_start_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["conformance", "client", "--scenario", "default", "--settle", "0", "--", "/nonexistent/integration"]
    )
    assert code == 1
    assert "COMMAND `/nonexistent/integration` could not start" in capsys.readouterr().out


def test_command_gets_the_ehrsim_variables(tmp_path: Path) -> None:
    seen = tmp_path / "env.txt"
    code = [
        sys.executable,
        "-c",
        f"import os; open({str(seen)!r}, 'w').write(os.environ['EHRSIM_FHIR_BASE'] + ' ' + os.environ['EHRSIM_MLLP_PORT'])",
    ]
    results = {r.check.id: r for r in run_integration(code, "default", settle=0)}
    assert results["client_command"].status == "passed"
    base, port = seen.read_text().split()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/fhir", base) and int(port) > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "no-such-scenario", "--", "true"], "unknown scenario 'no-such-scenario'"),
        (["--scenario", "default"], "give the integration to run after --"),
        (["--server", "http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9"),
        (["--scenario", "default", "--timeout", "0", "--", "true"], "--timeout must be above 0"),
        (["--scenario", "default", "--settle", "-1", "--", "true"], "--settle 0 or more"),
    ],
)
def test_bad_invocations_get_a_clear_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["conformance", "client", *argv]) == 2
    assert message in capsys.readouterr().err


def test_command_after_dashes_only_for_the_client_suite(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scenario", "list", "--", "true"])
    assert "only `ehrsim conformance client` takes a command after --" in capsys.readouterr().err


# -- a sandbox already running, and the scenario's expect: -------------------------------------------
def expecting(tmp_path: Path, expect: list[dict]) -> Path:
    path = tmp_path / "expecting.yaml"
    path.write_text(yaml.safe_dump({"extends": "default", "name": "expecting", "expect": expect}))
    return path


def test_scenario_expectations_judge_a_running_sandbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = expecting(
        tmp_path,
        [
            {
                "id": "no-patient-reads",
                "title": "Never reads patients",
                "check": "count",
                "filter": {"resource_type": "Patient"},
                "at_most": 0,
            },
            {
                "id": "metadata-first",
                "check": "order",
                "sequence": [{"interaction": "capabilities"}, {"resource_type": "Patient"}],
            },
            {"check": "count", "filter": {"status": "2xx"}, "at_least": 1},
        ],
    )
    assert validate_file(str(path)) == []
    with serve_in_thread(load_scenario(str(path))) as server:
        with httpx.Client(base_url=server.fhir_base, timeout=10) as http:
            assert http.get("/Patient").status_code == 200
            assert http.get("/Patient", params={"_count": 1}).status_code == 200
        code = main(["conformance", "client", "--server", server.origin])
        results = {r.check.id: r for r in run_client_checks(server.origin)}
    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL expect_no-patient-reads Never reads patients" in out
    assert results["expect_no-patient-reads"].message == "found 2 matching entries, expected at most 0"
    assert results["expect_metadata-first"].status == "failed"
    assert results["expect_metadata-first"].message.startswith("step 1 of the sequence never came")
    assert results["expect_3"].status == "passed"
    assert "client_command" not in results  # nothing was run: checks only


def test_expectation_the_server_refuses_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = expecting(tmp_path, [{"check": "count", "filter": {"status": "teapot"}}])
    problems = validate_file(str(path))
    assert len(problems) == 1 and "expect[0]: status: 'teapot' is not a status code" in str(problems[0])
    with serve_in_thread(load_scenario(str(path))) as server:
        results = {r.check.id: r for r in run_client_checks(server.origin)}
    assert results["expect_1"].status == "error"
    assert "status: 'teapot' is not a status code or class" in results["expect_1"].message


def test_expectations_are_checked_by_the_schema(tmp_path: Path) -> None:
    problems = validate_file(
        str(expecting(tmp_path, [{"check": "duplicates", "filter": {"method": "POST"}, "at_leats": 1}]))
    )
    text = "\n".join(map(str, problems))
    assert "expect[0]" in text and "at_leats" in text
    problems = validate_file(str(expecting(tmp_path, [{"check": "during", "fault": "nope"}])))
    assert "'during' names fault 'nope', which is not a timed fault" in "\n".join(map(str, problems))


# -- the pieces the checks are built from ------------------------------------------------------------
def test_window_end_follows_repeating_windows() -> None:
    schedule = Schedule.from_mapping({"after": "30m", "for": "15m", "every": "6h"})
    assert window_end(schedule, 1800 + 60) == 2700
    assert window_end(schedule, 6 * 3600 + 1800 + 60) == 6 * 3600 + 2700
    assert window_end(Schedule.from_mapping({"after": 10}), 20) == float("inf")


def test_error_streaks_break_at_an_answer() -> None:
    def e(seq: int, status: int | None, client: str = "a") -> dict:
        return {
            "seq": seq,
            "protocol": "fhir",
            "site": "s",
            "client_id": client,
            "status": status,
            "sim": seq,
        }

    streaks = error_streaks(
        [e(1, 503), e(2, None), e(3, 200), e(4, 500), e(5, 500, "b"), e(6, 502), e(7, 500, "b")]
    )
    assert [[x["seq"] for x in s] for s in streaks] == [[1, 2], [4, 6], [5, 7]]


def test_mllp_refuse_window_without_a_victim_is_not_judged() -> None:
    """The listener journals its own `refusing` event; that is no client exchange to recover from."""
    from tests.mllp_support import mllp_fault, mllp_site, send

    down = mllp_fault("down", "refuse", schedule={"after": 0.4, "for": 0.3})
    with mllp_site(faults=[down]) as (server, port):
        message = (
            "MSH|^~\\&|DEVICES|WARD4|EHRSIM|HOSP|20260302080000||ADT^A01^ADT_A01|ONLY1|P|2.5.1\r"
            "EVN|A01|20260302080000\r"
            "PID|1||MRN-1^^^HOSP^MR||Doe^Jane||19800101|F\r"
            "PV1|1|I|WARD4^101^1\r"
        )
        assert send(port, message)["code"] == "AA"
        while server.sandbox.clock.elapsed() < 0.9:  # past the window, which the sender never met
            time.sleep(0.05)
        assert any(e.get("kind") == "listener" for e in server.sandbox.journal)
        results = {r.check.id: r for r in run_client_checks(server.origin)}
    assert results["client_recovers"].status == "skipped", results["client_recovers"]


def reading_bundle(kind: str, conditional: bool) -> dict:
    """A transaction or batch creating one device reading (and, conditionally, only if absent)."""
    request = {"method": "POST", "url": "Observation"}
    if conditional:
        request["ifNoneExist"] = "identifier=urn:example:device-readings|bundle-1"
    reading = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "identifier": [{"system": "urn:example:device-readings", "value": "bundle-1"}],
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    other = {
        "resourceType": "Patient",
        "id": f"{kind}-1",
        "identifier": [{"system": "urn:example:mrn", "value": f"{kind}-1"}],
    }
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": other, "request": {"method": "PUT", "url": f"Patient/{kind}-1"}},
            {"resource": reading, "request": request},
        ],
    }


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_duplicates_created_inside_bundles_are_caught(kind: str) -> None:
    with serve_in_thread("default") as server:
        for _ in range(2):  # a retried bundle without ifNoneExist: the reading is created twice
            response = httpx.post(server.fhir_base, json=reading_bundle(kind, conditional=False))
            assert response.status_code == 200, response.text
        results = {r.check.id: r for r in run_client_checks(server.origin)}
    check = results["client_no_duplicate_writes"]
    assert check.status == "failed", check
    assert re.fullmatch(
        r"Observation:urn:example:device-readings\|bundle-1 was created 2 times: "
        r"seq \d+ \(POST \[base\] -> 200, [\d.]+ s\), seq \d+ \(POST \[base\] -> 200, [\d.]+ s\)",
        check.message,
    ), check.message
    assert "Patient:" not in check.message  # PUT entries update the same resource: no duplicate


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_bundles_retried_with_if_none_exist_pass(kind: str) -> None:
    with serve_in_thread("default") as server:
        statuses = []
        for _ in range(2):
            response = httpx.post(server.fhir_base, json=reading_bundle(kind, conditional=True))
            assert response.status_code == 200, response.text
            statuses.append(response.json()["entry"][1]["response"]["status"])
        results = {r.check.id: r for r in run_client_checks(server.origin)}
    assert [s.split()[0] for s in statuses] == ["201", "200"]
    assert results["client_no_duplicate_writes"].status == "passed", results["client_no_duplicate_writes"]
