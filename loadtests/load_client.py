"""A small HTTP/1.1 keep-alive load client for benchmarks: raw sockets, asyncio, several processes.

    result = drive("127.0.0.1", 8080, requests, connections=16, processes=1, duration=5.0)

`requests` is a list of complete request byte strings (see `http_request`); each connection sends
them round-robin, one at a time (no pipelining), and reads each response before the next. Each
process runs its own event loop (uvloop when installed) so the client is not the bottleneck of the
server it measures; the server's own CPU use is reported by the benchmark to show which side was busy.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field


def http_request(
    method: str, target: str, host: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One HTTP/1.1 request as bytes, keep-alive, with Content-Length when there is a body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class LoadResult:
    """What one run of the client saw: completed requests, statuses and per-request latencies."""

    completed: int = 0
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, one per completed request
    failures: list[str] = field(default_factory=list)  # connection-level problems (reset, bad framing)
    client_cpu: float = 0.0  # CPU seconds used by the client processes

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def errors(self, ok: tuple[int, ...]) -> int:
        return sum(n for status, n in self.statuses.items() if status not in ok) + len(self.failures)

    def percentile(self, p: float) -> float:
        """Latency percentile in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
        return ordered[rank]

    def merge(self, other: LoadResult) -> None:
        self.completed += other.completed
        self.seconds = max(self.seconds, other.seconds)
        self.statuses.update(other.statuses)
        self.latencies.extend(other.latencies)
        self.failures.extend(other.failures)
        self.client_cpu += other.client_cpu


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, parse the response, send the next."""

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        self._send()

    def _send(self) -> None:
        request = self.worker.next_request()
        if request is None:
            assert self.transport is not None
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                self._fail(f"bad status line {lines[0]!r}")
                return
            status = int(parts[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding":
                    self._fail("chunked responses are not supported by the benchmark client")
                    return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self.worker.done(status, time.perf_counter() - self.sent_at)
            self._send()
            if self.transport is None or self.transport.is_closing():
                return

    def _fail(self, reason: str) -> None:
        self.worker.result.failures.append(reason)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.worker.result.failures.append(f"connection lost: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)


class _Worker:
    """The connections of one process, sharing a request budget and a deadline."""

    def __init__(
        self, requests: list[bytes], budget: int | None, deadline: float | None, offset: int
    ) -> None:
        self.requests = requests
        self.budget = budget
        self.deadline = deadline
        self.index = offset
        self.issued = 0
        self.result = LoadResult()

    def next_request(self) -> bytes | None:
        if self.budget is not None and self.issued >= self.budget:
            return None
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return None
        self.issued += 1
        request = self.requests[self.index % len(self.requests)]
        self.index += 1
        return request

    def done(self, status: int, latency: float) -> None:
        self.result.completed += 1
        self.result.statuses[status] += 1
        self.result.latencies.append(latency)


async def _run(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    budget: int | None,
    duration: float | None,
    offset: int,
    timeout: float,
) -> LoadResult:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    worker = _Worker(requests, budget, started + duration if duration else None, offset)
    protocols: list[_Connection] = []
    for _ in range(connections):
        try:
            _, protocol = await loop.create_connection(lambda: _Connection(worker), host, port)
        except OSError as exc:
            worker.result.failures.append(f"connect: {exc}")
            continue
        protocols.append(protocol)
    try:
        # A server that stops answering must fail the run, never hang it.
        await asyncio.wait_for(asyncio.gather(*(p.closed for p in protocols)), timeout)
    except TimeoutError:
        worker.result.failures.append(f"no response within {timeout:.0f} s")
        for p in protocols:
            if p.transport is not None:
                p.transport.abort()
    worker.result.seconds = time.perf_counter() - started
    return worker.result


def _process_main(args: tuple) -> LoadResult:
    try:
        import uvloop  # same event loop as the server under uvicorn[standard]

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    cpu = time.process_time()
    result = runner(_run(*args))
    result.client_cpu = time.process_time() - cpu
    return result


def drive(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int = 16,
    processes: int = 1,
    duration: float | None = None,
    total: int | None = None,
    timeout: float = 120.0,
) -> LoadResult:
    """Run the load from `processes` separate processes; stop after `duration` seconds or `total`
    requests (split evenly), whichever is given. Returns the merged result."""
    if (duration is None) == (total is None):
        raise ValueError("give exactly one of duration and total")
    per_process = None if total is None else max(1, total // processes)
    per_conn = max(1, connections // processes)
    jobs = [
        (host, port, requests, per_conn, per_process, duration, i * len(requests) // processes, timeout)
        for i in range(processes)
    ]
    merged = LoadResult()
    # spawn, not fork: the benchmark process may hold threads and a large store.
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for result in pool.map(_process_main, jobs):
            merged.merge(result)
    return merged


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
