"""The Bulk Data export benchmark: a whole `$export` over HTTP against writing the same NDJSON.

    python -m loadtests.bench_bulk                  # 500 patients (~56,000 resources), 3 rounds
    python -m loadtests.bench_bulk --quick          # 20 patients, 1 round: proves the harness
    python -m loadtests.bench_bulk --patients 1000 --json out.json
    python -m loadtests.bench_bulk --query '_typeFilter=Observation%3Fcategory%3Dlaboratory&_elements=status,subject'

Measures, on this machine, in this run (medians over the rounds):
1. export:   `ehrsim serve` as a real subprocess (site setting `bulk_export: {delay: 0s}`): kick-off,
   one status poll, then every file of the manifest downloaded in turn over one connection;
2. baseline: `simulator.population.export.write_population(..., "ndjson")` (what `ehrsim generate`
   writes) of the same resources to a temporary directory, in this process.
The ratio export / baseline says what the HTTP round trips, the snapshot and the status machinery
cost on top of serialising the same data; a faster or slower machine moves both together. With
`--query` (kick-off parameters such as `_typeFilter`, `_elements`) the baseline writes the files the
filtered export produced, so the ratio also holds the filters' evaluation and the subsetting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from loadtests.bench_fhir import running, start_ehrsim
from simulator.population.export import write_population

KICK_OFF = {"Accept": "application/fhir+json", "Prefer": "respond-async"}


def scenario_file(directory: Path, patients: int) -> Path:
    path = directory / "bulk-bench.yaml"
    path.write_text(
        "name: bulk-bench\nseed: 42\nclock: {start: '2026-03-01T08:00:00Z', speed: 1.0}\n"
        "sites:\n  - id: main\n    base_path: /fhir\n"
        f"    population: {{patients: {patients}, as_of: '2026-01-01'}}\n"
        "    settings: {bulk_export: {delay: 0s}}\n"
    )
    return path


def export_once(client: httpx.Client, query: str = "") -> tuple[float, list[bytes]]:
    """Seconds from kick-off to the last byte of the last file, and the files."""
    started = time.perf_counter()
    kicked = client.get("/fhir/$export" + (f"?{query}" if query else ""), headers=KICK_OFF)
    if kicked.status_code != 202:
        raise RuntimeError(f"kick-off answered {kicked.status_code}: {kicked.text[:300]}")
    status = client.get(kicked.headers["content-location"])
    if status.status_code != 200:
        raise RuntimeError(f"status answered {status.status_code} with delay 0s")
    files = []
    for item in status.json()["output"]:
        response = client.get(item["url"])
        if response.status_code != 200:
            raise RuntimeError(f"{item['url']} answered {response.status_code}")
        files.append(response.content)
    return time.perf_counter() - started, files


def baseline_once(resources: list[dict[str, Any]]) -> float:
    with tempfile.TemporaryDirectory(prefix="ehrsim-bulk-bench-") as out:
        started = time.perf_counter()
        write_population(resources, Path(out), "ndjson")
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20 patients, 1 round")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--query", default="", help="kick-off query string, e.g. _typeFilter=...")
    args = parser.parse_args(argv)
    patients, rounds = (20, 1) if args.quick else (args.patients, args.rounds)

    exports, baselines, size, count = [], [], 0, 0
    with tempfile.TemporaryDirectory(prefix="ehrsim-bulk-bench-") as tmp:
        server = start_ehrsim("ehrsim", str(scenario_file(Path(tmp), patients)))
        with running(server), httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=300) as client:
            client.get("/fhir/metadata")  # first use of the type table (model imports): not export cost
            for _ in range(rounds):
                seconds, files = export_once(client, args.query)
                exports.append(seconds)
                resources = [orjson.loads(line) for body in files for line in body.splitlines()]
                size, count = sum(len(b) for b in files), len(resources)
                baselines.append(baseline_once(resources))
    export_s, baseline_s = statistics.median(exports), statistics.median(baselines)
    figures = {
        "patients": patients,
        "query": args.query,
        "resources": count,
        "bytes": size,
        "export_seconds": export_s,
        "baseline_seconds": baseline_s,
        "ratio": export_s / baseline_s,
        "export_mb_per_s": size / export_s / 1e6,
    }
    print(
        f"{count} resources, {size / 1e6:.1f} MB: $export over HTTP {export_s * 1000:.0f} ms "
        f"({figures['export_mb_per_s']:.0f} MB/s), write_population ndjson {baseline_s * 1000:.0f} ms; "
        f"ratio {figures['ratio']:.2f}x (median of {rounds})"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
