"""What the request layers (journal, faults, rate limits) cost per request; ratios in one run.

    python -m loadtests.bench_layers            # 7 interleaved rounds of 10,000 requests
    python -m loadtests.bench_layers --quick    # 1 round of 500: proves the harness

Measures, in-process (no sockets, so the layers' share is as large as it can be), the time per
`POST /Observation` through the default layers around a FHIR API that answers at once, with the
journal off and on (bodies kept, as for writes by default), next to the bare inner app; and then a
real `POST Observation` through `FhirApi` with the journal off and on. Rounds alternate the
variants and the figures are medians, because a shared machine is noisy. The issue's target is the
last ratio: throughput with the journal on >= 0.8 x with it off.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from simulator import assembly
from simulator.app import create_app
from simulator.sandbox import Sandbox
from simulator.scenario import load_scenario
from simulator.testing import heart_rate

OBSERVATION = orjson.dumps(heart_rate("Patient/example", when="2026-01-01T00:00:00Z"))
HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"content-type", b"application/fhir+json"),
    (b"content-length", str(len(OBSERVATION)).encode()),
    (b"user-agent", b"bench"),
]


async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/fhir+json")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def per_request(app: ASGIApp, requests: int, through_site_routing: bool) -> float:
    """Microseconds per request."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": OBSERVATION, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    started = time.perf_counter()
    for _ in range(requests):
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/fhir/Observation",
            "raw_path": b"/fhir/Observation",
            "query_string": b"",
            "headers": HEADERS,
            "scheme": "http",
            "server": ("127.0.0.1", 8080),
            "client": ("127.0.0.1", 50000),
            "http_version": "1.1",
            "root_path": "",
        }
        if not through_site_routing:
            scope["ehrsim.subpath"], scope["ehrsim.site"] = "/Observation", "default"
        await app(scope, receive, send)
    return (time.perf_counter() - started) / requests * 1e6


async def main(rounds: int, requests: int) -> None:
    layered = Sandbox(load_scenario("default"))
    site = layered.sites["default"].site
    wrapped: ASGIApp = answer_at_once
    for layer in reversed(assembly.default_layers()):
        wrapped = layer(wrapped, site, layered)
    fhir = create_app(layered)
    figures: dict[str, list[float]] = {k: [] for k in ("bare", "layers, journal off", "layers, journal on")}
    figures |= {"POST Observation, journal off": [], "POST Observation, journal on": []}
    await per_request(fhir, 200, True)  # warm-up: first-use caches (search indexes, models)
    layered.journal.clear()
    for _ in range(rounds):
        figures["bare"].append(await per_request(answer_at_once, requests, False))
        for enabled in (False, True):
            layered.journal.enabled = enabled
            state = "on" if enabled else "off"
            figures[f"layers, journal {state}"].append(await per_request(wrapped, requests, False))
            figures[f"POST Observation, journal {state}"].append(
                await per_request(fhir, max(1, requests // 10), True)
            )
            layered.journal.clear()
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        print(f"{name:<32} {value:8.1f} us/request  ({1e6 / value:,.0f}/s)")
    off, on = medians["POST Observation, journal off"], medians["POST Observation, journal on"]
    print(
        f"journal cost per request (layers): {medians['layers, journal on'] - medians['layers, journal off']:.1f} us"
    )
    print(f"POST Observation throughput, journal on / off: {off / on:.3f} (target >= 0.8)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(1, 500) if args.quick else main(args.rounds, args.requests))
