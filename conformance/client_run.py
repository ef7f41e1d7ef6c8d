"""One conformance run of an integration: start the sandbox, run the integration against it, judge.

    results = run_integration(["python", "my_integration.py"], scenario="outage", timeout=60)

The sandbox is the real server (`simulator.testing.serve_in_thread`: uvicorn on a free loopback
port, MLLP on free ports) in this process; the integration is a child process that finds it
through the EHRSIM_* variables (`simulator.integration_env`). When it has exited (or was killed at
the timeout) and `settle` seconds have passed, the client checks judge the journal; the command's
own outcome is reported as one more result, `client_command`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from conformance.check import Check
from conformance.client_checks import Thresholds, run_client_checks
from conformance.runner import Result
from simulator.admin_client import AdminClient
from simulator.integration_env import integration_env

COMMAND_CHECK = Check(
    "client_command",
    "The integration ran to completion",
    "The integration command exits with status 0 within the timeout",
    "ehrsim conformance client (docs/conformance.md)",
    "client",
    lambda target: None,
)


@dataclass(frozen=True)
class Integration:
    """The command under test and how it is run."""

    command: Sequence[str]
    timeout: float = 300.0
    settle: float = 0.5
    site: str | None = None
    client_id: str | None = None
    private_key: str | None = None


def run_command(integration: Integration, env: dict[str, str]) -> Result:
    """Run the command with the EHRSIM_* variables; its outcome as a `client_command` result."""
    started = time.monotonic()
    shown = " ".join(integration.command)
    try:
        # A session of its own, so a timeout ends the command and whatever it started.
        process = subprocess.Popen(
            list(integration.command), env={**os.environ, **env}, start_new_session=True
        )
    except OSError as exc:
        return Result(COMMAND_CHECK, "failed", f"COMMAND `{shown}` could not start: {exc}", 0.0)
    try:
        code = process.wait(timeout=integration.timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        message = f"COMMAND `{shown}` timed out after {integration.timeout:g} s and was stopped"
        return Result(COMMAND_CHECK, "failed", message, time.monotonic() - started)
    seconds = time.monotonic() - started
    if code != 0:
        return Result(COMMAND_CHECK, "failed", f"COMMAND `{shown}` exited with status {code}", seconds)
    return Result(COMMAND_CHECK, "passed", "", seconds)


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def judge(
    origin: str,
    integration: Integration | None = None,
    thresholds: Thresholds | None = None,
    admin_token: str | None = None,
) -> list[Result]:
    """Run the integration (if any) against the sandbox at `origin`, then the client checks."""
    ran: list[Result] = []
    if integration is not None and integration.command:
        with AdminClient(origin, admin_token) as admin:
            env = integration_env(admin, integration.site, integration.client_id, integration.private_key)
        ran.append(run_command(integration, env))
        time.sleep(integration.settle)  # late exchanges (delayed ACKs, outbound feeds) reach the journal
    return ran + run_client_checks(origin, admin_token, thresholds)


@contextlib.contextmanager
def sandbox(scenario: str, seed: str | None = None) -> Iterator[str]:
    """The scenario served on free loopback ports; yields the origin (http://127.0.0.1:port)."""
    from simulator.scenario import load_scenario, parse_seed
    from simulator.testing import serve_in_thread

    loaded = load_scenario(scenario)
    if seed is not None:
        loaded.seed = parse_seed(seed)
    with serve_in_thread(loaded) as server:
        yield server.origin


def run_integration(
    command: Sequence[str],
    scenario: str = "default",
    seed: str | None = None,
    thresholds: Thresholds | None = None,
    timeout: float = 300.0,
    settle: float = 0.5,
) -> list[Result]:
    """Serve `scenario`, run `command` against it, judge the journal."""
    with sandbox(scenario, seed) as origin:
        return judge(origin, Integration(command, timeout, settle), thresholds)
