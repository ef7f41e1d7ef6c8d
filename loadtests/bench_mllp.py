"""MLLP ingest benchmark: ehrsim against two baselines, in one run, on this machine.

    python loadtests/bench_mllp.py [--seconds 8] [--connections 16] [--only ehrsim] [--quick] [--check]

Each server runs in its own process; one client process keeps 16 persistent connections, each
sending a 4-segment ORU^R01 (MSH, PID, OBR, OBX; unique MSH-10, observation time and value, four
vital signs in turn, 200 patients) and waiting for its ACK before sending the next. Servers:

  framing   a framing-only asyncio server answering a fixed ACK (the practical limit)
  hl7       python-hl7's asyncio MLLP server: parse + create_ack (pip install 'ehrsim[bench]')
  ehrsim    `python -m simulator serve` (default scenario): tokenize, duplicate check, map to FHIR
            (Patient lookup/creation, Observation + DiagnosticReport), store, journal, ACK

All three use the same event loop implementation (uvloop when installed, as `ehrsim serve` does).
Prints messages/s per server and the ratios ehrsim/framing and ehrsim/hl7 with their verdicts
against issue 6's targets (>= 0.5x and >= 5x); `--check` exits 3 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `loadtests` and `simulator` from this checkout

from loadtests.verdicts import finish, verdict  # noqa: E402
from simulator import gcpolicy  # noqa: E402
from simulator.testing import free_ports  # noqa: E402

# Issue 6's targets: ehrsim's throughput at least these times each baseline's, in the same run.
TARGETS = {"framing": 0.5, "hl7": 5.0}
T = TypeVar("T")
FIXED_ACK = b"\x0bMSH|^~\\&|B|B|A|A|20260101||ACK^R01^ACK|1|P|2.5\rMSA|AA|1\r\x1c\r"


# A bedside monitor's vital signs: LOINC code, display, UCUM unit, normal range, base value.
VITALS = (
    ("8867-4", "Heart rate", "/min", "60-100", 60),
    ("9279-1", "Respiratory rate", "/min", "12-20", 12),
    ("59408-5", "Oxygen saturation", "%", "95-100", 95),
    ("8310-5", "Body temperature", "Cel", "36.1-37.2", 36),
)


def oru(connection: int, n: int) -> bytes:
    """A device result as feeds send them: every message its own control id, observation time
    (one second apart per connection) and value, four vital signs in turn, 200 patients."""
    mrn = f"B{(connection * 7919 + n) % 200:05d}"
    code, name, unit, normal, base = VITALS[n % len(VITALS)]
    seconds = 12 * 3600 + connection * 60 + n
    when = f"20260101{seconds // 3600 % 24:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}+0000"
    value = f"{base}.{n % 10}" if unit == "Cel" else str(base + n % 5)
    return (
        f"MSH|^~\\&|BENCH|LAB|EHRSIM|HOSP|{when}||ORU^R01^ORU_R01|C{connection}-{n}|P|2.5.1\r"
        f"PID|1||{mrn}^^^LAB^MR||DOE^JANE||19800101|F\r"
        f"OBR|1||F{connection}-{n}^LAB|85353-1^Vital signs panel^LN|||{when}||||||||||||||||||F\r"
        f"OBX|1|NM|{code}^{name}^LN||{value}|{unit}^{unit}^UCUM|{normal}|N|||F|||{when}\r"
    ).encode()


# -- baseline servers (run in their own process) -------------------------------------------------
class FramingOnly(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\x1c\x0d")
            if end == -1:
                return
            self.buffer = self.buffer[end + 2 :]
            self.transport.write(FIXED_ACK)  # type: ignore[attr-defined]


async def serve_framing(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(FramingOnly, "127.0.0.1", port)
    await server.serve_forever()


async def serve_hl7(port: int) -> None:
    import hl7.mllp

    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack())
                await writer.drain()

    server = await hl7.mllp.start_hl7_server(handle, host="127.0.0.1", port=port)
    await server.serve_forever()


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed (servers and client alike, as `ehrsim serve` runs)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- the client ------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), for CPU per message."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    port: int, connections: int, seconds: float, warmup: float, server_pid: int | None = None
) -> tuple[int, float, float, float]:
    """Messages acknowledged in the measured window, its length, and the server's and this
    client's CPU seconds in it (whichever is near 100% busy limits the throughput)."""
    counts = [0] * connections
    stop_at = time.monotonic() + warmup + seconds
    measure_from = time.monotonic() + warmup
    measured = [0] * connections
    cpu: list[float] = []
    client_cpu: list[float] = []

    async def sample_cpu() -> None:
        if server_pid is None:
            return
        await asyncio.sleep(warmup)
        cpu.append(cpu_seconds(server_pid))
        client_cpu.append(time.process_time())
        await asyncio.sleep(seconds)
        cpu.append(cpu_seconds(server_pid))
        client_cpu.append(time.process_time())

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n = 0
        buffer = b""
        while (now := time.monotonic()) < stop_at:
            writer.write(b"\x0b" + oru(index, n) + b"\x1c\x0d")
            n += 1
            while b"\x1c\x0d" not in buffer:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                buffer += data
            frame, _, buffer = buffer.partition(b"\x1c\x0d")
            if b"MSA|AA|" not in frame and b"MSA|CA|" not in frame:
                raise RuntimeError(f"not accepted: {frame[:200]!r}")
            counts[index] += 1
            if now >= measure_from:
                measured[index] += 1
        writer.close()

    await asyncio.gather(sample_cpu(), *(one(i) for i in range(connections)))
    if len(cpu) != 2:
        return sum(measured), seconds, float("nan"), float("nan")
    return sum(measured), seconds, cpu[1] - cpu[0], client_cpu[1] - client_cpu[0]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port, http_port = free_ports(2)
    if kind == "ehrsim":
        cmd = [
            sys.executable,
            "-m",
            "simulator",
            "serve",
            "--port",
            str(http_port),
            "--mllp-port",
            str(port),
        ]
    else:
        cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_port(port)
    return process, port


def in_process(count: int = 20_000) -> dict[str, float]:
    """CPU microseconds per message of ehrsim's endpoint called directly (no sockets), with and
    without the FHIR mapping, GC as `ehrsim serve` sets it: where the server's time goes."""
    from simulator.mllp.faults import MllpFaults
    from simulator.mllp.ingest import Endpoint
    from simulator.mllp.settings import MllpSettings
    from simulator.sandbox import Sandbox
    from simulator.scenario import load_scenario

    sandbox = Sandbox(load_scenario("default"), service_factories=[])
    runtime = sandbox.sites["default"]
    faults = MllpFaults(sandbox.faults, "default")
    gcpolicy.install()
    out = {}
    for label, settings in (("ack only", MllpSettings(map_to_fhir=False)), ("with FHIR", MllpSettings())):
        endpoint = Endpoint.for_site(runtime, settings, sandbox.journal, faults)
        messages = [oru(99 if label == "ack only" else 98, n) for n in range(count)]
        started = time.process_time()
        for payload in messages:
            endpoint.handle(payload, "bench")
        out[label] = (time.process_time() - started) / count * 1e6
    return out


def machine() -> str:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpu if line.startswith("Model name")), "?")
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", choices=["framing", "hl7", "ehrsim"], action="append")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run (1 s per server) that proves the harness works"
    )
    parser.add_argument("--check", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--serve", choices=["framing", "hl7"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_loop(serve_framing(args.port) if args.serve == "framing" else serve_hl7(args.port))
        return 0
    if args.quick:
        args.seconds, args.warmup = 1.0, 0.3
    print(f"machine: {machine()}")
    print(
        f"load: {args.connections} persistent connections, 4-segment ORU^R01, {args.seconds:g} s after {args.warmup:g} s warm-up"
    )
    rates: dict[str, float] = {}
    costs: dict[str, float] = {}
    for kind in args.only or ["framing", "hl7", "ehrsim"]:
        process, port = start(kind)
        try:
            done, seconds, cpu, client_cpu = run_loop(
                drive(port, args.connections, args.seconds, args.warmup, process.pid)
            )
        finally:
            process.terminate()
            process.wait(10)
        rates[kind] = done / seconds
        costs[kind] = cpu / done * 1e6 if done else float("nan")
        print(
            f"{kind:>8}: {rates[kind]:10,.0f} messages/s   server CPU {costs[kind]:6.1f} us/message, "
            f"busy {cpu / seconds * 100:3.0f}%   client busy {client_cpu / seconds * 100:3.0f}%"
        )
    missed = []
    if "ehrsim" in rates:
        for base in ("framing", "hl7"):
            if base in rates:
                ratio = rates["ehrsim"] / rates[base]
                target = TARGETS[base]
                if ratio < target:
                    missed.append(base)
                print(
                    f"ehrsim / {base}: throughput {ratio:.2f}x, "
                    f"CPU per message {costs['ehrsim'] / costs[base]:.2f}x; "
                    f"target >= {target:g}x: {verdict(ratio >= target)}"
                )
    parts = in_process(2_000 if args.quick else 20_000)
    print(
        "ehrsim endpoint in-process (CPU per message, no sockets): "
        + ", ".join(f"{label} {us:.0f} us" for label, us in parts.items())
    )
    return finish(missed, args.check)


if __name__ == "__main__":
    raise SystemExit(main())
