"""The device locustfile runs against a real ehrsim: FHIR and MLLP devices, no failures."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import httpx

from simulator.testing import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent


def test_devices_write_over_fhir_and_mllp(tmp_path: Path) -> None:
    with serve_in_thread("device-writes") as server:
        site = next(iter(server.sandbox.sites.values())).site
        env = {
            **os.environ,
            "EHRSIM_MLLP_HOST": "127.0.0.1",
            "EHRSIM_MLLP_PORT": str(site.extras["mllp_port"]),
            "DEVICE_PERIOD": "0.5",
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                "loadtests/locustfile_devices.py",
                "--headless",
                "-u",
                "8",
                "-r",
                "8",
                "-t",
                "4s",
                "--host",
                server.fhir_base,
                "--csv",
                str(tmp_path / "run"),
                "--only-summary",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        with open(tmp_path / "run_stats.csv", newline="") as handle:
            rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(handle)}
        writes = rows[("POST", "/Observation")]
        messages = rows[("MLLP", "ORU^R01")]
        assert int(writes["Request Count"]) > 0 and int(writes["Failure Count"]) == 0
        assert int(messages["Request Count"]) > 0 and int(messages["Failure Count"]) == 0
        # The sandbox saw them too: the journal counts the device writes.
        journaled = httpx.get(server.admin + "/journal", params={"method": "POST", "status": "201"}).json()
        assert len(journaled["entries"]) >= int(writes["Request Count"])
