"""Run a real ehrsim server inside the current process, on a real socket, for tests and tools.

    with serve_in_thread("default") as server:
        httpx.get(server.fhir_base + "/Patient")

The server is uvicorn on a background thread bound to a free loopback port; nothing is mocked.
Over HTTPS with a self-signed pair (simulator/tls.py):

    cert, key = self_signed_pair(tmp_path)
    with serve_in_thread("default", tls=(cert, key)) as server:
        httpx.get(server.fhir_base + "/metadata", verify=server.ssl_context())
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from simulator.app import create_app
from simulator.sandbox import Layer, Sandbox
from simulator.scenario import Scenario, load_scenario


@dataclass
class RunningServer:
    sandbox: Sandbox
    host: str
    port: int
    cert: Path | None = None  # the certificate served when over HTTPS

    @property
    def origin(self) -> str:
        return f"{'https' if self.cert else 'http'}://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the served certificate (e.g. `httpx.Client(verify=...)`)."""
        if self.cert is None:
            raise ValueError("this server speaks plain HTTP (serve_in_thread(..., tls=(cert, key)))")
        return ssl.create_default_context(cafile=str(self.cert))

    @property
    def fhir_base(self) -> str:
        """The first site's FHIR base URL."""
        site = next(iter(self.sandbox.sites.values())).site
        return self.origin + site.base_path

    def site_base(self, site_id: str) -> str:
        return self.origin + self.sandbox.sites[site_id].site.base_path

    @property
    def admin(self) -> str:
        return self.origin + "/_admin"


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different free ports: each socket stays bound until all are chosen (ports taken one
    after the other can coincide, and a server given the same HTTP and MLLP port fails to start)."""
    socks = [free_socket(host) for _ in range(count)]
    try:
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _run(main: Any) -> None:
    # The same loop as `ehrsim serve` (uvicorn[standard] picks uvloop). With the stdlib loop in a
    # thread beside the client, every request here took ~40 ms instead of ~1 ms.
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


@contextlib.contextmanager
def serve_in_thread(
    scenario: str | Scenario = "default",
    store: str = "memory",
    layers: list[Layer] | None = None,
    host: str = "127.0.0.1",
    options: dict[str, Any] | None = None,
    tls: tuple[str | Path, str | Path] | None = None,
) -> Iterator[RunningServer]:
    """`options` reach `Sandbox.options`; MLLP ports default to 0 (a free port) here.
    `tls`: (certificate, key) PEM paths to serve HTTPS instead of HTTP (checked before starting)."""
    if tls is not None:
        from simulator.tls import server_context

        server_context(*tls)  # a bad pair raises TLSError here, not in the server thread
    loaded = load_scenario(scenario) if isinstance(scenario, str) else scenario
    sandbox = Sandbox(
        loaded, store=store, layers=layers, options={"mllp_port": 0, "host": host, **(options or {})}
    )
    sock = free_socket(host)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(sandbox),
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: _run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            if not thread.is_alive():
                raise RuntimeError("ehrsim server thread died during start-up")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("ehrsim server did not start within 5 s")
        yield RunningServer(sandbox, host, port, Path(tls[0]) if tls else None)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def heart_rate(subject: str, value: float = 72, when: str | None = None) -> dict[str, Any]:
    """A device's heart-rate vital sign for `subject` ("Patient/123"): the payload of the write
    benchmarks and of tests that play a device."""
    observation: dict[str, Any] = {
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
        "subject": {"reference": subject},
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    if when is not None:
        observation["effectiveDateTime"] = when
    return observation
