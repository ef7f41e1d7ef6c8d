"""`ehrsim serve` as users run it: a real process, its printed URLs, its exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from simulator.testing import free_socket
from tests.process_support import ROOT, serve


def start(*args: str) -> tuple[subprocess.Popen, list[str]]:
    # A free MLLP port, so that parallel workers (and a developer's own ehrsim) do not collide on 2575.
    return serve("--mllp-port", "0", *args)


def test_serve_prints_urls_and_answers() -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    proc, lines = start("--port", str(port), "--seed", "7")
    try:
        assert "ready in" in lines[0], lines
        fhir_line = next(line for line in lines if "FHIR" in line)
        base = fhir_line.split("FHIR ", 1)[1].split()[0]
        assert base == f"http://127.0.0.1:{port}/fhir"
        mllp = next(line for line in lines if "MLLP" in line).split("MLLP ", 1)[1]
        sites = httpx.get(f"http://127.0.0.1:{port}/_admin/sites").json()
        assert mllp == f"127.0.0.1:{sites[0]['mllp_port']}"
        assert httpx.get(f"http://127.0.0.1:{port}/_admin/health").json()["status"] == "ok"
        assert httpx.get(base + "/Patient").json()["total"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_seed_makes_the_same_population(tmp_path: Path) -> None:
    """Same seed, same data and ids; another seed, other data."""

    def patients(seed: str) -> list[tuple[str, str]]:
        sock = free_socket()
        port = sock.getsockname()[1]
        sock.close()
        proc, _ = start("--port", str(port), "--seed", seed)
        try:
            bundle = httpx.get(f"http://127.0.0.1:{port}/fhir/Patient", params={"_count": 100}).json()
            return [(e["resource"]["id"], e["resource"]["name"][0]["family"]) for e in bundle["entry"]]
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    first = patients("11")
    assert first == patients("11")
    assert first != patients("12")


def test_bad_scenario_and_store_exit_2() -> None:
    for args in (["--scenario", "no-such-scenario"], ["--store", "postgres://x"]):
        result = subprocess.run(
            [sys.executable, "-m", "simulator", "serve", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert result.stderr.startswith("ehrsim: ")


def test_dockerfile_runs_as_non_root_and_binds_all_interfaces() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    cmd = [line for line in lines if line.startswith("CMD ")][-1]
    assert '"0.0.0.0"' in cmd
    assert any(line.startswith("HEALTHCHECK") for line in lines)
