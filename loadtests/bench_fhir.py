"""The FHIR benchmark of issue 2 (and issue 3's journal cost): ratios measured in one run.

    python -m loadtests.bench_fhir                  # the full run (a few minutes on 2 cores)
    python -m loadtests.bench_fhir --quick          # a tiny run that proves the harness works
    python -m loadtests.bench_fhir --json out.json  # also write every figure as JSON

Measures, on this machine, in this run:
1. writes:  `POST Observation` throughput of `ehrsim serve` (a real subprocess) against a bare
   Starlette endpoint (`loadtests/bare_starlette.py`) under the same uvicorn options, driven by the
   same keep-alive load client (`loadtests/load_client.py`) from separate processes; also the
   journal-on / journal-off variants (`loadtests/scenarios/`) and any `--variant LABEL=SCENARIO`, in
   the same rounds, with the server's CPU time per request beside req/s.
2. search:  `Observation?patient=X&code=Y` and `?patient=X&category=vital-signs&date=ge...` latency
   (p50, p99) on 100,000 Observations over 1,000 patients: in-process through `FhirService.search`,
   and over HTTP against `ehrsim serve --store sqlite:...` holding the same data, next to the bare
   endpoint's GET as the HTTP floor.
3. startup: spawn `ehrsim serve` until `/_admin/health` answers 200, next to the bare app's start-up.
Rounds alternate the targets and the figures are medians, because a shared 2-core machine is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from loadtests import pyspy
from loadtests.load_client import LoadResult, drive, http_request, median
from loadtests.verdicts import finish, verdict
from simulator.clock import Clock
from simulator.fhir.service import FhirService
from simulator.journal import Journal
from simulator.site import Site
from simulator.store import MemoryStore, SQLiteStore, Store
from simulator.store.base import Write
from simulator.testing import free_ports

REPO = Path(__file__).resolve().parent.parent
LOINC = "http://loinc.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Issue 3: POST throughput with the journal on (and faults that do not match) vs off, same rounds.
JOURNAL_VARIANTS = [
    ("journal-on", str(REPO / "loadtests" / "scenarios" / "journal-on.yaml")),
    ("journal-off", str(REPO / "loadtests" / "scenarios" / "journal-off.yaml")),
]
TARGETS = {"write_ratio": 0.5, "search_p50_ms": 5.0, "startup_s": 2.0, "journal_ratio": 0.8}

# (LOINC code, display, unit, mean, sd): what devices and labs send.
VITALS = [
    ("8867-4", "Heart rate", "/min", 75, 12),
    ("9279-1", "Respiratory rate", "/min", 16, 3),
    ("8310-5", "Body temperature", "Cel", 36.9, 0.4),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 97, 1.5),
    ("29463-7", "Body weight", "kg", 78, 15),
    ("8302-2", "Body height", "cm", 170, 10),
    ("39156-5", "Body mass index", "kg/m2", 26, 4),
]
LABS = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 100, 20),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 1.0, 0.2),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 14, 1.5),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 140, 3),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.2, 0.4),
]
FIRST_DAY = date(2025, 1, 1)
DAYS = 365


@dataclass
class Config:
    quick: bool
    rounds: int
    duration: float | None  # seconds per write measurement, or
    writes: int | None  # a fixed number of writes per measurement (quick mode)
    connections: int
    processes: int
    patients: int
    per_patient: int
    queries: int
    http_queries: int
    startup_runs: int
    variants: list[tuple[str, str]]  # (label, scenario) measured beside the default ehrsim
    parts: set[str]
    py_spy: Path | None = None  # record the ehrsim server under write load with py-spy


# -- servers as subprocesses -----------------------------------------------------------------------


class ServerProcess:
    """A server started as a real subprocess; `ready_seconds` is spawn-to-healthy time."""

    def __init__(self, label: str, argv: list[str], port: int, timeout: float = 120.0) -> None:
        self.label = label
        self.port = port
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        started = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=self.log)
        try:
            self._wait_healthy(timeout)
        except Exception:
            self.stop()
            raise
        self.ready_seconds = time.perf_counter() - started

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{self.label} exited with {self.proc.returncode} during start-up:\n{tail}"
                )
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                try:
                    conn.request("GET", "/_admin/health")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            time.sleep(0.005)
        raise RuntimeError(f"{self.label} was not healthy within {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        """User+system CPU the server process has used so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_ehrsim(label: str, scenario: str = "default", store: str = "memory") -> ServerProcess:
    port, mllp_port = free_ports(2)
    argv = [sys.executable, "-m", "simulator", "serve", "--scenario", scenario, "--port", str(port)]
    argv += ["--mllp-port", str(mllp_port), "--store", store]
    return ServerProcess(label, argv, port)


def start_bare() -> ServerProcess:
    (port,) = free_ports(1)
    return ServerProcess(
        "bare", [sys.executable, "-m", "loadtests.bare_starlette", "--port", str(port)], port
    )


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        yield server
    finally:
        server.stop()


# -- data ----------------------------------------------------------------------------------------------


def observation(rng: random.Random, patient_id: str, category: str, day: int) -> dict[str, Any]:
    code, display, unit, mean, sd = rng.choice(VITALS if category == "vital-signs" else LABS)
    moment = FIRST_DAY + timedelta(days=day)
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"system": OBS_CATEGORY, "code": category}], "text": category.replace("-", " ")}
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"{moment.isoformat()}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
        "valueQuantity": {
            "value": round(rng.gauss(mean, sd), 1),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def device_bodies(count: int = 64, seed: int = 7) -> list[bytes]:
    """`POST Observation` bodies a bedside device would send: a vital sign for one of a few patients."""
    rng = random.Random(seed)
    return [
        orjson.dumps(observation(rng, f"bench-{i % 16}", "vital-signs", rng.randrange(DAYS)))
        for i in range(count)
    ]


def clinical_store(patients: int, per_patient: int, seed: int = 11) -> list[Write]:
    """`patients` Patients, each with `per_patient` Observations (70% vital signs, 30% labs)."""
    rng = random.Random(seed)
    writes: list[Write] = []
    for p in range(patients):
        pid = f"p{p:05d}"
        patient = {"resourceType": "Patient", "name": [{"family": f"Bench{p}"}], "gender": "unknown"}
        writes.append(Write("Patient", pid, patient, "POST"))
        for o in range(per_patient):
            category = "vital-signs" if rng.random() < 0.7 else "laboratory"
            resource = observation(rng, pid, category, rng.randrange(DAYS))
            writes.append(Write("Observation", f"o{p:05d}-{o:03d}", resource, "POST"))
    return writes


def load_site(store: Store, writes: list[Write]) -> FhirService:
    site = Site(id="default", base_path="/fhir", store=store, clock=Clock(), journal=Journal(), seed=1)
    service = FhirService(site)
    for start in range(0, len(writes), 2000):
        service.commit(writes[start : start + 2000])
    return service


def search_queries(count: int, patients: int, seed: int = 3) -> dict[str, list[list[tuple[str, str]]]]:
    rng = random.Random(seed)
    by_code, by_date = [], []
    for _ in range(count):
        pid = f"p{rng.randrange(patients):05d}"
        code = rng.choice(VITALS + LABS)[0]
        by_code.append([("patient", pid), ("code", f"{LOINC}|{code}")])
        since = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        by_date.append([("patient", pid), ("category", "vital-signs"), ("date", f"ge{since.isoformat()}")])
    return {"patient+code": by_code, "patient+category+date": by_date}


# -- measurements ----------------------------------------------------------------------------------------


def post_requests(port: int, bodies: list[bytes]) -> list[bytes]:
    host = f"127.0.0.1:{port}"
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    return [http_request("POST", "/fhir/Observation", host, body, headers) for body in bodies]


def measure_writes(server: ServerProcess, cfg: Config, bodies: list[bytes]) -> dict[str, Any]:
    requests = post_requests(server.port, bodies)
    cpu = server.cpu_seconds()
    result = drive(
        "127.0.0.1",
        server.port,
        requests,
        connections=cfg.connections,
        processes=cfg.processes,
        duration=cfg.duration,
        total=cfg.writes,
    )
    server_cpu = server.cpu_seconds() - cpu
    return {
        "throughput": result.throughput,
        "requests": result.completed,
        "errors": result.errors((201,)),
        "statuses": dict(result.statuses),
        "p50_ms": result.percentile(50) * 1000,
        "p99_ms": result.percentile(99) * 1000,
        "server_cpu": server_cpu / result.seconds if result.seconds else float("nan"),
        # CPU per request is steadier than req/s when other processes compete for the cores.
        "cpu_us_per_request": server_cpu / result.completed * 1e6 if result.completed else float("nan"),
        "client_cpu": result.client_cpu / result.seconds if result.seconds else float("nan"),
        "failures": result.failures[:5],
    }


def bench_writes(cfg: Config, bare: ServerProcess) -> dict[str, Any]:
    bodies = device_bodies()
    targets: list[ServerProcess] = [bare]
    try:
        targets.append(start_ehrsim("ehrsim"))
        for label, scenario in cfg.variants:
            targets.append(start_ehrsim(label, scenario))
        warm = Config(**{**cfg.__dict__, "duration": None, "writes": 200, "processes": 1})
        for server in targets:
            measure_writes(server, warm, bodies)  # first requests pay for imports and caches
        runs: dict[str, list[dict[str, Any]]] = {s.label: [] for s in targets}
        for number in range(1, cfg.rounds + 1):
            for server in targets:
                runs[server.label].append(measure_writes(server, cfg, bodies))
            progress(
                f"writes round {number}/{cfg.rounds}: "
                + ", ".join(f"{label} {rows[-1]['throughput']:.0f}/s" for label, rows in runs.items())
            )
        if cfg.py_spy is not None:
            profile_writes(targets[1], cfg, bodies)
        # What the servers did, to show the variants are what they claim (journal size, fault hits).
        state = {s.label: admin_state(s) for s in targets[1:]}
    finally:
        for server in targets[1:]:
            server.stop()
    summary: dict[str, Any] = {}
    for label, samples in runs.items():
        summary[label] = {
            "throughput": median([s["throughput"] for s in samples]),
            "p50_ms": median([s["p50_ms"] for s in samples]),
            "p99_ms": median([s["p99_ms"] for s in samples]),
            "server_cpu": median([s["server_cpu"] for s in samples]),
            "cpu_us_per_request": median([s["cpu_us_per_request"] for s in samples]),
            "client_cpu": median([s["client_cpu"] for s in samples]),
            "errors": sum(s["errors"] for s in samples),
            "samples": samples,
            **state.get(label, {}),
        }
    for label in summary:
        summary[label]["round_ratios"] = round_ratios(runs[label], runs["bare"])
        summary[label]["ratio_to_bare"] = median(summary[label]["round_ratios"])
        summary[label]["cpu_ratio_to_bare"] = median(
            round_ratios(runs["bare"], runs[label], "cpu_us_per_request")
        )
    return summary


def round_ratios(
    top: list[dict[str, Any]], bottom: list[dict[str, Any]], key: str = "throughput"
) -> list[float]:
    """top/bottom within each round: both sides of a round saw the same load on the machine, so the
    median of these is steadier than the ratio of two medians taken from different rounds."""
    return [t[key] / b[key] if b[key] else 0.0 for t, b in zip(top, bottom, strict=True)]


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def profile_writes(server: ServerProcess, cfg: Config, bodies: list[bytes]) -> None:
    """One more write measurement of `server` under py-spy; prints where its time went."""
    assert cfg.py_spy is not None
    seconds = cfg.duration or 5.0
    spy = pyspy.record(server.proc.pid, seconds, cfg.py_spy)
    measure_writes(server, Config(**{**cfg.__dict__, "duration": seconds + 1, "writes": None}), bodies)
    _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not cfg.py_spy.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    inclusive, own = pyspy.summarize(cfg.py_spy)
    print(f"\n== py-spy: {server.label} under POST load (raw samples in {cfg.py_spy}) ==")
    print("inclusive (on the stack):")
    for share, frame in inclusive:
        print(f"  {share:6.1%}  {frame}")
    print("self (on top of the stack):")
    for share, frame in own[:15]:
        print(f"  {share:6.1%}  {frame}")


def admin_get(server: ServerProcess, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{server.label}: GET {path} answered {response.status}: {body[:200]!r}")
        return orjson.loads(body)
    finally:
        conn.close()


def admin_state(server: ServerProcess) -> dict[str, Any]:
    """Journal entries recorded (kept, dropped or spilled) and fault hits of an ehrsim server."""
    journal = admin_get(server, "/_admin/journal?limit=0")
    faults = admin_get(server, "/_admin/faults")
    return {
        "journal_enabled": journal["enabled"],
        "journal_entries": journal["size"] + journal["dropped"] + journal["spilled"],
        "fault_hits": {f["id"]: f["hits"] for f in faults},
    }


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


def latency_summary(samples: list[float], hits: list[int]) -> dict[str, Any]:
    result = LoadResult(latencies=samples)
    return {
        "p50_ms": result.percentile(50) * 1000,
        "p99_ms": result.percentile(99) * 1000,
        "queries": len(samples),
        "mean_hits": sum(hits) / len(hits) if hits else 0,
    }


def bench_search_in_process(cfg: Config, writes: list[Write]) -> dict[str, Any]:
    build, service = timed(load_site, MemoryStore(), writes)
    progress(f"search: {len(writes):,} resources loaded in memory in {build:.1f} s")
    out: dict[str, Any] = {"load_seconds": build, "observations": cfg.patients * cfg.per_patient}
    base = "http://127.0.0.1/fhir"
    for name, queries in search_queries(cfg.queries, cfg.patients).items():
        # The first search of a parameter builds its index (once per store, then kept by writes).
        first, _ = timed(service.search, "Observation", queries[0], base)
        samples, hits = [], []
        for items in queries:
            seconds, bundle = timed(service.search, "Observation", items, base)
            samples.append(seconds)
            hits.append(bundle["total"])
        out[name] = {**latency_summary(samples, hits), "first_query_ms": first * 1000}
    return out


def bench_search_http(cfg: Config, writes: list[Write], bare: ServerProcess) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ehrsim-bench-") as tmp:
        db = Path(tmp) / "bench.db"
        store = SQLiteStore(db, site_id="default")
        seconds, _ = timed(load_site, store, writes)
        store.close()
        progress(f"search: the same resources written to SQLite in {seconds:.1f} s")
        out: dict[str, Any] = {}
        with running(start_ehrsim("ehrsim-sqlite", store=f"sqlite:{db}")) as server:
            out["startup_with_store_s"] = server.ready_seconds
            for name, queries in search_queries(cfg.http_queries, cfg.patients, seed=5).items():
                host = f"127.0.0.1:{server.port}"
                requests = [http_request("GET", f"/fhir/Observation?{urlencode(q)}", host) for q in queries]
                drive("127.0.0.1", server.port, requests[:20], connections=1, total=20)  # index build
                result = drive("127.0.0.1", server.port, requests, connections=1, total=len(requests))
                out[name] = {**latency_summary(result.latencies, []), "errors": result.errors((200,))}
        floor = [http_request("GET", "/fhir/Observation?patient=p1", f"127.0.0.1:{bare.port}")]
        result = drive("127.0.0.1", bare.port, floor, connections=1, total=cfg.http_queries)
        out["bare GET"] = {**latency_summary(result.latencies, []), "errors": result.errors((200,))}
    return out


def bench_startup(cfg: Config) -> dict[str, Any]:
    ehrsim, bare = [], []
    for _ in range(cfg.startup_runs):
        with running(start_ehrsim("ehrsim-startup")) as server:
            ehrsim.append(server.ready_seconds)
        with running(start_bare()) as server:
            bare.append(server.ready_seconds)
    return {
        "ehrsim_s": median(ehrsim),
        "bare_s": median(bare),
        "ratio": median(ehrsim) / median(bare),
        "ehrsim_runs": ehrsim,
        "bare_runs": bare,
    }


# -- report ----------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> list[str]:
    """Print the figures; returns the targets missed."""
    missed: list[str] = []
    writes = results.get("writes")
    if writes:
        print("\n== POST Observation throughput (median of rounds) ==")
        print(
            f"{'target':<14}{'req/s':>8}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'srv cpu':>8}{'cli cpu':>8}{'cpu us/req':>11}{'cpu ratio':>10}"
        )
        for label, row in writes.items():
            print(
                f"{label:<14}{row['throughput']:>8.0f}{row['ratio_to_bare']:>6.2f}x{row['p50_ms']:>8.2f}"
                f"{row['p99_ms']:>8.2f}{row['server_cpu']:>8.0%}{row['client_cpu']:>8.0%}"
                f"{row['cpu_us_per_request']:>11.0f}{row['cpu_ratio_to_bare']:>9.2f}x"
            )
        print(
            "journal entries recorded: "
            + ", ".join(f"{k} {v['journal_entries']}" for k, v in writes.items() if "journal_entries" in v)
            + "; fault hits: "
            + ", ".join(
                f"{k} {sum(v['fault_hits'].values())}" for k, v in writes.items() if "fault_hits" in v
            )
        )
        ratio = writes["ehrsim"]["ratio_to_bare"]
        rounds = ", ".join(f"{r:.2f}" for r in writes["ehrsim"]["round_ratios"])
        print(
            f"ratio ehrsim/bare: {ratio:.2f}x (rounds: {rounds}; by CPU per request "
            f"{writes['ehrsim']['cpu_ratio_to_bare']:.2f}x); target >= {TARGETS['write_ratio']}x: "
            f"{verdict(ratio >= TARGETS['write_ratio'])}"
        )
        if ratio < TARGETS["write_ratio"]:
            missed.append("write_ratio")
        for label, on, off in results.get("journal_pairs", []):
            if on in writes and off in writes:
                r = median(round_ratios(writes[on]["samples"], writes[off]["samples"]))
                cpu = median(
                    round_ratios(writes[off]["samples"], writes[on]["samples"], "cpu_us_per_request")
                )
                print(
                    f"ratio {on}/{off}: {r:.2f}x (by CPU per request {cpu:.2f}x); "
                    f"target >= {TARGETS['journal_ratio']}x: {verdict(r >= TARGETS['journal_ratio'])}"
                )
                if r < TARGETS["journal_ratio"]:
                    missed.append(label)
        if not results.get("journal_pairs"):
            print("ratio journal-on/journal-off: not measured (--no-journal-variants)")
    search = results.get("search")
    if search:
        print(
            f"\n== Search latency, {search['observations']:,} Observations in-process "
            f"(load {search['load_seconds']:.1f} s) =="
        )
        for name in ("patient+code", "patient+category+date"):
            row = search[name]
            ok = row["p50_ms"] < TARGETS["search_p50_ms"]
            print(
                f"{name:<24} p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
                f"hits {row['mean_hits']:5.1f}  first {row['first_query_ms']:7.1f} ms  "
                f"target p50 < {TARGETS['search_p50_ms']} ms: {verdict(ok)}"
            )
            if not ok:
                missed.append(f"search_p50 {name}")
    over_http = results.get("search_http")
    if over_http:
        print(
            f"\n== Search latency over HTTP (ehrsim serve --store sqlite, ready in "
            f"{over_http['startup_with_store_s']:.2f} s with the store) =="
        )
        floor = over_http["bare GET"]["p50_ms"]
        for name in ("patient+code", "patient+category+date", "bare GET"):
            row = over_http[name]
            print(
                f"{name:<24} p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
                f"ratio p50 to bare GET {row['p50_ms'] / floor:5.1f}x"
            )
    startup = results.get("startup")
    if startup:
        ok = startup["ehrsim_s"] < TARGETS["startup_s"]
        print("\n== Start-up to healthy (median) ==")
        print(
            f"ehrsim serve {startup['ehrsim_s']:.2f} s, bare Starlette {startup['bare_s']:.2f} s, "
            f"ratio {startup['ratio']:.1f}x; target < {TARGETS['startup_s']} s: {verdict(ok)}"
        )
        if not ok:
            missed.append("startup")
    return missed


def error_count(results: dict[str, Any]) -> int:
    total = sum(row["errors"] for row in results.get("writes", {}).values())
    total += sum(
        row.get("errors", 0) for row in results.get("search_http", {}).values() if isinstance(row, dict)
    )
    return total


# -- command line ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_fhir", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny run (a few hundred requests): proves it works")
    p.add_argument("--rounds", type=int, help="write rounds; each target once per round (default 5)")
    p.add_argument("--duration", type=float, help="seconds per write measurement (default 4)")
    p.add_argument("--connections", type=int, help="keep-alive connections of the load client (default 32)")
    p.add_argument("--processes", type=int, default=1, help="load client processes (default 1)")
    p.add_argument("--patients", type=int, help="patients in the search store (default 1000)")
    p.add_argument("--per-patient", type=int, help="Observations per patient (default 100)")
    p.add_argument("--startup-runs", type=int, help="start-up measurements (default 5)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=SCENARIO",
        help="also measure ehrsim serving SCENARIO in the write rounds (repeatable)",
    )
    p.add_argument(
        "--no-journal-variants",
        action="store_true",
        help="skip the journal-on/journal-off variants (loadtests/scenarios/) in the write rounds",
    )
    p.add_argument("--only", default="writes,search,startup", help="parts to run (comma-separated)")
    p.add_argument("--json", type=Path, help="write all figures to this JSON file")
    p.add_argument(
        "--py-spy", type=Path, metavar="RAW", help="profile ehrsim under write load into RAW (needs py-spy)"
    )
    p.add_argument("--check", action="store_true", help="exit 3 when a target is missed")
    args = p.parse_args(argv)
    quick = args.quick
    variants = [] if args.no_journal_variants else list(JOURNAL_VARIANTS)
    for item in args.variant:
        label, sep, scenario = item.partition("=")
        if not sep or not label or not scenario:
            p.error(f"--variant wants LABEL=SCENARIO, got {item!r}")
        variants.append((label, scenario))
    cfg = Config(
        quick=quick,
        rounds=args.rounds or (1 if quick else 5),
        duration=None if quick else (args.duration or 4.0),
        writes=300 if quick else None,
        connections=args.connections or (4 if quick else 32),
        processes=args.processes,
        patients=args.patients or (20 if quick else 1000),
        per_patient=args.per_patient or (20 if quick else 100),
        queries=50 if quick else 2000,
        http_queries=30 if quick else 500,
        startup_runs=args.startup_runs or (1 if quick else 5),
        variants=variants,
        parts=set(args.only.split(",")),
        py_spy=args.py_spy,
    )
    unknown = cfg.parts - {"writes", "search", "startup"}
    if unknown:
        p.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    results: dict[str, Any] = {"config": {k: v for k, v in cfg.__dict__.items() if k != "parts"}}
    results["journal_pairs"] = (
        [] if args.no_journal_variants else [("journal_ratio", "journal-on", "journal-off")]
    )
    print(
        f"ehrsim FHIR benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{'quick' if cfg.quick else 'full'} run",
        flush=True,
    )
    try:
        with running(start_bare()) as bare:
            if "writes" in cfg.parts:
                results["writes"] = bench_writes(cfg, bare)
            if "search" in cfg.parts:
                writes = clinical_store(cfg.patients, cfg.per_patient)
                results["search"] = bench_search_in_process(cfg, writes)
                results["search_http"] = bench_search_http(cfg, writes, bare)
        if "startup" in cfg.parts:
            results["startup"] = bench_startup(cfg)
    except RuntimeError as exc:  # a server that would not start: say which and why, no traceback
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 1
    missed = report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    errors = error_count(results)
    if errors:
        print(f"\n{errors} requests failed: the figures above are not valid", file=sys.stderr)
        return 1
    return finish(missed, args.check)


if __name__ == "__main__":
    raise SystemExit(main())
