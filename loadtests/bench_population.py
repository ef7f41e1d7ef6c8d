"""The population benchmark of issue 4: generate and load a big, messy population; ratios in one run.

    python -m loadtests.bench_population                   # 1,000 patients, 3 rounds (about 2 minutes)
    python -m loadtests.bench_population --quick           # 50 patients, 1 round: proves the harness
    python -m loadtests.bench_population --patients 2000 --json out.json

Measures, on this machine, in this run (figures are medians over the rounds):
1. baseline: an orjson dumps+loads round trip of the same resources (cyclic GC paused), the
   yardstick the other figures are divided by (a faster or slower machine moves them together);
2. generate: `simulator.population.generate` for the `messy-data` scenario's site with N patients;
3. load:     a `Sandbox` built from that scenario: generation plus commit into the memory store,
   i.e. what `ehrsim serve` does before it is ready (the issue's target: under 60 s for 1,000 x ~100);
4. memory:   resident memory a fresh process gains by holding the loaded site, per resource and
   scaled to 100,000 resources (measured in a child process so earlier rounds do not count);
5. default:  building the default scenario (10 patients), the population part of `ehrsim serve`'s
   start-up.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
TARGET_LOAD_S = 60.0  # issue 4: 1,000 patients x ~100 resources generated and loaded


def messy_scenario(patients: int) -> Any:
    from simulator.scenario import load_scenario

    scenario = load_scenario("messy-data")
    scenario.sites[0].patients = patients
    return scenario


def build(scenario: Any) -> Any:
    from simulator.sandbox import Sandbox

    return Sandbox(scenario, layers=[], service_factories=[])


def timed(fn: Any, collector: bool = True) -> tuple[float, Any]:
    gc.collect()
    if not collector:
        gc.disable()
    try:
        started = time.perf_counter()
        value = fn()
        return time.perf_counter() - started, value
    finally:
        gc.enable()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(patients: int) -> dict[str, Any]:
    """Run in a child: RSS gained by building (and keeping) the loaded site."""
    scenario = messy_scenario(patients)
    build(messy_scenario(1))  # imports, models and tables loaded before the first reading
    gc.collect()
    before = rss_bytes()
    sandbox = build(scenario)
    gc.collect()
    after = rss_bytes()
    count = sum(r.site.store.count() for r in sandbox.sites.values())
    return {"resources": count, "rss_gain_bytes": after - before}


def run(patients: int, rounds: int) -> dict[str, Any]:
    from simulator.population import generate
    from simulator.scenario import load_scenario
    from simulator.site import IdGenerator

    scenario = messy_scenario(patients)
    spec = scenario.sites[0]
    population = spec.raw.get("population")
    figures: dict[str, list[float]] = {"baseline_s": [], "generate_s": [], "load_s": [], "default_s": []}
    resources: list[dict[str, Any]] = []
    for _ in range(rounds):
        ids = IdGenerator(scenario.seed, spec.id).new_id
        seconds, resources = timed(
            lambda ids=ids: generate(scenario.seed, patients, spec.as_of, ids, population)
        )
        figures["generate_s"].append(seconds)
        # the yardstick runs without the cyclic GC so that it measures the machine, not the heap
        seconds, _ = timed(lambda data=resources: orjson.loads(orjson.dumps(data)), collector=False)
        figures["baseline_s"].append(seconds)
        seconds, sandbox = timed(lambda: build(messy_scenario(patients)))
        figures["load_s"].append(seconds)
        del sandbox
        seconds, _ = timed(lambda: build(load_scenario("default")))
        figures["default_s"].append(seconds)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    probe = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_population", "--memory-probe", str(patients)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    memory = json.loads(probe.stdout)
    count = len(resources)
    per_resource = memory["rss_gain_bytes"] / memory["resources"]
    return {
        "patients": patients,
        "resources": count,
        "resources_per_patient": round(count / patients, 1),
        "rounds": rounds,
        **{k: round(v, 3) for k, v in medians.items()},
        "generate_per_s": round(count / medians["generate_s"]),
        "load_per_s": round(count / medians["load_s"]),
        "generate_ratio": round(medians["generate_s"] / medians["baseline_s"], 1),
        "load_ratio": round(medians["load_s"] / medians["baseline_s"], 1),
        "rss_bytes_per_resource": round(per_resource),
        "rss_mb_per_100k_resources": round(per_resource * 100_000 / 2**20),
        "load_target_s": TARGET_LOAD_S * patients / 1000,
        "load_within_target": medians["load_s"] <= TARGET_LOAD_S * patients / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="50 patients, 1 round")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args.memory_probe)))
        return 0
    patients, rounds = (50, 1) if args.quick else (args.patients, args.rounds)
    figures = run(patients, rounds)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["load_within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
