"""The FHIR and MLLP benchmarks run end to end in their quick modes and report their ratios.

Speed is not asserted here (that is what the benchmark's figures are for); only that every part ran
against real servers, every request succeeded, and the ratios came out as numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from loadtests import pyspy
from loadtests.load_client import LoadResult, http_request
from tests.process_support import run_python


def test_quick_benchmark_runs_and_prints_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_python("-m", "loadtests.bench_fhir", "--quick", "--json", str(out), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stdout = proc.stdout
    assert re.search(r"ratio ehrsim/bare: \d+\.\d\dx", stdout), stdout
    assert re.search(r"patient\+code\s+p50\s+\d+\.\d\d ms", stdout), stdout
    assert re.search(r"ehrsim serve \d+\.\d\d s, bare Starlette \d+\.\d\d s, ratio \d+\.\dx", stdout), stdout

    figures = json.loads(out.read_text())
    writes = figures["writes"]
    assert re.search(r"ratio journal-on/journal-off: \d+\.\d\dx", stdout), stdout
    for label in ("bare", "ehrsim", "journal-on", "journal-off"):
        # Quick mode sends 300 writes per target; every one must have been a 201.
        assert writes[label]["samples"][0]["statuses"] == {"201": 300}, writes[label]
        assert writes[label]["throughput"] > 0
    assert writes["ehrsim"]["ratio_to_bare"] > 0
    # The journal variants are what they claim: one records every write, the other nothing, and the
    # journal-on variant's faults are evaluated but never fire.
    warmup = 200
    assert writes["journal-on"]["journal_entries"] >= warmup + 300
    assert writes["journal-off"]["journal_entries"] == 0
    assert writes["journal-off"]["journal_enabled"] is False
    assert writes["journal-on"]["fault_hits"] == {"patient-read-errors": 0, "marked-writes-throttled": 0}
    search = figures["search"]
    assert search["observations"] == 400
    assert search["patient+code"]["queries"] == 50
    assert search["patient+category+date"]["mean_hits"] > 0  # the queries really match data
    for name in ("patient+code", "patient+category+date", "bare GET"):
        assert figures["search_http"][name]["queries"] == 30
        assert figures["search_http"][name]["errors"] == 0
    assert figures["startup"]["ehrsim_s"] > 0 and figures["startup"]["bare_s"] > 0


def test_variant_needs_label_and_scenario() -> None:
    proc = run_python("-m", "loadtests.bench_fhir", "--quick", "--variant", "journal-on", timeout=60)
    assert proc.returncode == 2
    assert "--variant wants LABEL=SCENARIO" in proc.stderr


def test_request_bytes_and_percentiles() -> None:
    request = http_request("POST", "/fhir/Observation", "127.0.0.1:1", b'{"a":1}', {"X-Test": "1"})
    assert request == (
        b"POST /fhir/Observation HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-Test: 1\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}'
    )
    result = LoadResult(latencies=[i / 1000 for i in range(1, 101)])
    assert result.percentile(50) == 0.050
    assert result.percentile(99) == 0.099


def test_a_server_that_cannot_start_aborts_with_its_reason() -> None:
    args = ["--quick", "--only", "writes", "--no-journal-variants", "--variant", "broken=no-such-scenario"]
    proc = run_python("-m", "loadtests.bench_fhir", *args, timeout=120)
    assert proc.returncode == 1
    assert "benchmark aborted: broken exited with 2 during start-up" in proc.stderr
    assert "unknown scenario 'no-such-scenario'" in proc.stderr


def test_py_spy_samples_are_summarised_inclusive_and_self(tmp_path: Path) -> None:
    raw = tmp_path / "server.raw"
    raw.write_text(
        "main (simulator/cli.py:32);handle (simulator/fhir/api.py:120);validate (validation.py:103) 3\n"
        "main (simulator/cli.py:32);handle (simulator/fhir/api.py:121) 1\n"
    )
    inclusive, own = pyspy.summarize(raw)
    assert inclusive[:2] == [(1.0, "handle (simulator/fhir/api.py)"), (1.0, "main (simulator/cli.py)")]
    assert (0.75, "validate (validation.py)") in inclusive
    assert own == [(0.75, "validate (validation.py)"), (0.25, "handle (simulator/fhir/api.py)")]


def test_quick_mllp_benchmark_measures_both_servers_and_prints_ratios() -> None:
    result = run_python(
        "loadtests/bench_mllp.py", "--quick", "--only", "framing", "--only", "ehrsim", timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rates = dict(re.findall(r"^\s*(framing|ehrsim):\s+([\d,]+) messages/s", result.stdout, re.M))
    assert set(rates) == {"framing", "ehrsim"}, result.stdout
    assert all(int(rate.replace(",", "")) > 0 for rate in rates.values())
    assert re.search(
        r"ehrsim / framing: throughput \d+\.\d\dx, .*target >= 0.5x: (met|MISSED)", result.stdout
    ), result.stdout
    assert re.search(r"in-process .*with FHIR \d+ us", result.stdout), result.stdout


def test_quick_bulk_export_benchmark_runs_and_counts_what_it_exported(tmp_path: Path) -> None:
    out = tmp_path / "bulk.json"
    proc = run_python("-m", "loadtests.bench_bulk", "--quick", "--json", str(out), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"ratio \d+\.\d\dx \(median of 1\)", proc.stdout), proc.stdout
    figures = json.loads(out.read_text())
    assert figures["patients"] == 20 and figures["resources"] > 20 and figures["bytes"] > 0
    assert figures["export_seconds"] > 0 and figures["baseline_seconds"] > 0
