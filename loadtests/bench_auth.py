"""What SMART auth costs per request: auth off (baseline) against a patient-context and a system
token, on the same scenario (token-expiry), as ratios measured in one run.

    python -m loadtests.bench_auth            # 7 interleaved rounds
    python -m loadtests.bench_auth --quick    # 1 small round: proves the harness

In-process (no sockets, so auth's share is as large as it can be): each request goes through the
whole app (journal, faults, rate limits, auth, FHIR API). Operations: read `Patient/[id]`, a
compartment search `Observation?patient=[id]&_count=10`, and `POST Observation` for that patient.
Rounds alternate the configurations and the figures are medians, because a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import orjson
from starlette.types import ASGIApp

from simulator.app import create_app
from simulator.auth.admin import mint
from simulator.sandbox import Sandbox
from simulator.scenario import load_scenario
from simulator.testing import heart_rate

CONFIGURATIONS = {
    "auth off (baseline)": None,
    "patient token": {"client_id": "ehrsim-public-app", "scope": "launch/patient patient/*.cruds"},
    "system token": {"client_id": "ehrsim-confidential-app", "scope": "system/*.cruds"},
}


class Target:
    """One sandbox, its app, and the request headers of one configuration."""

    def __init__(self, token_request: dict[str, Any] | None, keys: str) -> None:
        options = {"data_dir": keys, **({"auth": "off"} if token_request is None else {})}
        self.sandbox = Sandbox(load_scenario("token-expiry"), options=options)
        self.app: ASGIApp = create_app(self.sandbox)
        site = self.sandbox.sites["default"].site
        self.patient = next(iter(site.store.current("Patient")))
        self.headers = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/fhir+json")]
        if token_request is not None:
            token = mint(site.extras["auth"], "http://127.0.0.1:8080/fhir", token_request)["access_token"]
            self.headers.append((b"authorization", f"Bearer {token}".encode()))
        self.observation = orjson.dumps(heart_rate(f"Patient/{self.patient}"))

    def operations(self) -> dict[str, tuple[str, str, bytes, bytes]]:
        """name -> (method, path, query, body)"""
        return {
            "read Patient/[id]": ("GET", f"/fhir/Patient/{self.patient}", b"", b""),
            "search Observation?patient": (
                "GET",
                "/fhir/Observation",
                f"patient={self.patient}&_count=10".encode(),
                b"",
            ),
            "create Observation": ("POST", "/fhir/Observation", b"", self.observation),
        }

    async def per_request(self, operation: str, requests: int) -> float:
        """Microseconds per request; every answer must be a success."""
        method, path, query, body = self.operations()[operation]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        started = time.perf_counter()
        for _ in range(requests):
            scope = {
                "type": "http",
                "method": method,
                "path": path,
                "raw_path": path.encode(),
                "query_string": query,
                "headers": self.headers,
                "scheme": "http",
                "server": ("127.0.0.1", 8080),
                "client": ("127.0.0.1", 50000),
                "http_version": "1.1",
                "root_path": "",
            }
            await self.app(scope, receive, send)
        elapsed = time.perf_counter() - started
        failed = [s for s in statuses if s >= 300]
        if failed:
            raise RuntimeError(f"{operation}: {len(failed)} answers were not successes (e.g. {failed[0]})")
        self.sandbox.journal.clear()
        return elapsed / requests * 1e6


async def main(rounds: int, requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ehrsim-bench-keys-") as keys:
        targets = {name: Target(request, keys) for name, request in CONFIGURATIONS.items()}
        operations = list(next(iter(targets.values())).operations())
        figures: dict[tuple[str, str], list[float]] = {(n, o): [] for n in targets for o in operations}
        for target in targets.values():  # warm-up: first-use caches (indexes, models)
            for operation in operations:
                await target.per_request(operation, 50)
        names = list(targets)
        for round_number in range(rounds):
            # Each round starts with another configuration, so none is always measured first.
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            for operation in operations:
                for name in order:
                    target = targets[name]
                    # Writes make the data grow; fewer of them keeps the rounds comparable.
                    count = requests // 10 if operation.startswith("create") else requests
                    figures[(name, operation)].append(await target.per_request(operation, max(1, count)))
    medians = {key: statistics.median(values) for key, values in figures.items()}
    baseline = "auth off (baseline)"
    print(f"{'configuration':22} {'operation':28} {'us/request':>10} {'throughput vs baseline':>24}")
    for (name, operation), value in medians.items():
        ratio = medians[(baseline, operation)] / value
        print(f"{name:22} {operation:28} {value:10.1f} {ratio:24.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(main(1, 100) if args.quick else main(args.rounds, args.requests))
