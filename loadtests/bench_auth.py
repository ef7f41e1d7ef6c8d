"""What SMART auth costs per request: throughput with auth off (baseline) and with a patient-context
and a system token, measured in the same run against the same scenario (token-expiry).

    python loadtests/bench_auth.py [--seconds 5] [--concurrency 8] [--rounds 5]

Each configuration runs its own `ehrsim serve` subprocess (the real server, real sockets); the
client drives it from threads with keep-alive connections, in rounds that alternate between the
configurations (`--seconds` per operation in all), keeping each one's best round. Ratios are against the baseline of the
same run, so they compare on any machine; absolute numbers depend on it (and include the client).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def ehrsim(*extra: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "serve",
            "--scenario",
            "token-expiry",
            "--port",
            str(port),
            "--mllp-port",
            "0",
            "--no-journal",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    origin = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(origin + "/_admin/health", timeout=1).status_code == 200:
                    break
            if process.poll() is not None:
                raise RuntimeError(
                    f"ehrsim exited: {process.stderr.read().decode() if process.stderr else ''}"
                )
            time.sleep(0.05)
        yield origin
    finally:
        process.terminate()
        process.wait(timeout=10)


def drive(request: Callable[[httpx.Client], httpx.Response], seconds: float, concurrency: int) -> float:
    """Requests per second over `seconds` from `concurrency` threads; every answer must be 2xx."""
    counts = [0] * concurrency
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        with httpx.Client(timeout=10) as http:
            while time.monotonic() < stop:
                response = request(http)
                if response.status_code >= 300:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                counts[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(errors[0])
    return sum(counts) / (time.monotonic() - started)


def operations(
    base: str, patient: str, headers: dict[str, str]
) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    """What each configuration is measured on: a read, a compartment search and a vital-sign write."""
    vital = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    return {
        "read Patient/[id]": lambda http: http.get(f"{base}/Patient/{patient}", headers=headers),
        "search Observation?patient": lambda http: http.get(
            f"{base}/Observation?patient={patient}&_count=10", headers=headers
        ),
        "create Observation": lambda http: http.post(f"{base}/Observation", json=vital, headers=headers),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (best one counts)")
    args = parser.parse_args()
    configs = {
        "auth off (baseline)": (("--no-auth",), None),
        "patient token (patient/*.cruds)": (
            (),
            {"client_id": "ehrsim-public-app", "scope": "launch/patient patient/*.cruds"},
        ),
        "system token (system/*.cruds)": (
            (),
            {"client_id": "ehrsim-confidential-app", "scope": "system/*.cruds"},
        ),
    }
    results: dict[str, dict[str, float]] = {name: {} for name in configs}
    with contextlib.ExitStack() as stack:
        targets = {}
        for name, (flags, token_request) in configs.items():
            origin = stack.enter_context(ehrsim(*flags))
            base = origin + "/fhir"
            headers: dict[str, str] = {}
            if token_request is not None:
                minted = httpx.post(origin + "/_admin/token", json=token_request).json()
                headers = {"Authorization": f"Bearer {minted['access_token']}"}
            search = httpx.get(base + "/Patient?_count=1", headers=headers).json()
            targets[name] = operations(base, search["entry"][0]["resource"]["id"], headers)
        # Rounds alternate between the configurations so that load from elsewhere on the machine
        # hits them alike; each keeps its best round.
        for _ in range(args.rounds):
            for name, ops in targets.items():
                for op, fn in ops.items():
                    rate = drive(fn, args.seconds / args.rounds, args.concurrency)
                    results[name][op] = max(rate, results[name].get(op, 0.0))
    baseline = results["auth off (baseline)"]
    print(f"{'configuration':34} {'operation':28} {'req/s':>9} {'ratio':>6}")
    for name, row in results.items():
        for op, rate in row.items():
            print(f"{name:34} {op:28} {rate:9.0f} {rate / baseline[op]:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
