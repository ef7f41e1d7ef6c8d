"""What the vendor quirk layers cost: the `epic` site against the same site with its quirks removed.

    python -m loadtests.bench_vendors            # ~1 minute on 2 cores
    python -m loadtests.bench_vendors --quick    # a few seconds, proves the harness works

Both servers hold the same data (same scenario, same seed) and run in this process on real sockets;
one keep-alive client per target sends the same requests in alternating rounds, and the figures are
medians. Reported per request kind: requests/s with quirks, without, and the ratio (1.0 = free).
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from simulator.scenario import Scenario, load_scenario
from simulator.testing import serve_in_thread
from simulator.vendors.fidelity import NO_AUTH

DERRICK = "eq081-VQEgP8drUUqCWzHfw3"
REQUESTS = {
    "read Patient": ("GET", f"/Patient/{DERRICK}"),
    "search vitals, 50 a page": ("GET", f"/Observation?patient={DERRICK}&category=vital-signs&_count=50"),
    "read unknown id (error shape)": ("GET", "/Patient/no-such-id"),
}


def without_quirks(scenario: Scenario) -> Scenario:
    """The same scenario with each site's vendor quirks and interaction limits removed."""
    for spec in scenario.sites:
        spec.raw = {k: v for k, v in spec.raw.items() if k != "quirks"}
        spec.settings = {
            k: v for k, v in spec.settings.items() if k not in ("interactions", "resource_types")
        }
    return scenario


def rate(client: httpx.Client, base: str, method: str, path: str, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        client.request(method, base + path)
        done += 1
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, seconds = (1, 0.5) if args.quick else (5, 2.0)
    with (
        serve_in_thread("epic", options=NO_AUTH) as vendor,
        serve_in_thread(without_quirks(load_scenario("epic")), options=NO_AUTH) as plain,
        httpx.Client(timeout=30) as client,
    ):
        print(f"{'request':32} {'quirks req/s':>13} {'plain req/s':>12} {'ratio':>6}")
        for label, (method, path) in REQUESTS.items():
            with_q, without = [], []
            for _ in range(rounds):
                with_q.append(rate(client, vendor.fhir_base, method, path, seconds))
                without.append(rate(client, plain.fhir_base, method, path, seconds))
            a, b = statistics.median(with_q), statistics.median(without)
            print(f"{label:32} {a:13.0f} {b:12.0f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
