"""The MLLP listener: one asyncio server per site, a background service of the sandbox.

Each connection feeds a `FrameReader`; complete frames go to the site's `Endpoint`, whose `Reply`
is written back in order. A reply with nothing odd about it is written synchronously from
`data_received` (the fast path); a delayed, dribbled or held reply runs as a task, and frames that
arrive meanwhile wait their turn so ACKs stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from simulator.mllp.faults import CONNECT, FRAME, LISTEN, MllpFaults
from simulator.mllp.framing import END, START, Frame, FrameReader, Junk, Oversize
from simulator.mllp.ingest import Endpoint, Reply
from simulator.mllp.settings import DEFAULT_PORT, MllpSettings

if TYPE_CHECKING:
    from simulator.sandbox import BackgroundService, Sandbox, SiteRuntime

log = logging.getLogger("ehrsim.mllp")


class MllpConnection(asyncio.Protocol):
    def __init__(self, listener: MllpListener) -> None:
        self.listener = listener
        self.endpoint = listener.endpoint
        self.reader = FrameReader(listener.settings.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.pending: deque[Any] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closed = False
        self.last_activity = 0.0
        self.queued = 0  # frames of this connection waiting in the listener's batch

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = f"{host}:{port}"
        listener = self.listener
        listener.connections.add(self)
        refusal = self._refusal()
        if refusal is not None:
            self._journal("connection", event="rejected", reason=refusal[1], faults=refusal[0])
            self.abort(reset=refusal[1] != "accept_close")
            return
        self._journal("connection", event="open")
        self._touch()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = time.monotonic()  # the listener's sweep closes idle connections
        listener = self.listener
        if (
            self.worker is None
            and not self.pending
            and data[:1] == START
            and data.find(END) == len(data) - 2
            and len(data) - 3 <= self.reader.max_frame_bytes
            and self.reader.idle
        ):
            # One whole frame in one read, nothing buffered: the usual case, without the reader.
            self.queued += 1
            listener.enqueue(self, data[1:-2])
            return
        events = self.reader.feed(data)
        if self.queued:  # earlier frames wait in the listener's batch: these go after them
            self.queued += len(events)
            for event in events:
                listener.enqueue(self, event)
            return
        self.pending.extend(events)
        faults = self.endpoint.faults
        if self.reader.in_frame and not self.pending and faults.any(FRAME):
            fired = faults.decide(FRAME, {"event": "frame", "peer": self.peer})
            if fired:
                names = [f.fault_id for f in fired]
                self._journal("connection", event="reset", reason="reset_mid_frame", faults=names)
                self.abort(reset=True)
                return
        if self.worker is None:
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self._journal("connection", event="closed", by="client", error=str(exc) if exc else None)
        self.closed = True
        self.listener.connections.discard(self)
        if self.worker is not None:
            self.worker.cancel()

    # -- replies ---------------------------------------------------------------------------------
    def _drain(self) -> None:
        while self.pending and not self.closed and self.transport is not None:
            reply = self._answer(self.pending.popleft())
            if reply is not None and not self._send(reply):
                return

    def deliver(self, reply: Reply | None) -> None:
        """A reply the listener's batch computed: sent now, or after the replies still waiting."""
        self.queued -= 1
        if reply is None or self.closed:
            return
        if self.worker is not None or self.pending:
            self.pending.append(reply)
            if self.worker is None:
                self._drain()
        else:
            self._send(reply)

    def _send(self, reply: Reply) -> bool:
        """Write a reply now, or hand it to a task when a fault delays, dribbles, holds or closes
        (False: later frames wait for that task)."""
        if reply.delay or reply.dribble or reply.hold or reply.close:
            self.worker = asyncio.get_running_loop().create_task(self._slow(reply))
            return False
        transport = self.transport
        if transport is not None:
            for data in reply.data:
                transport.write(data)
        return True

    def _answer(self, event: Any) -> Reply | None:
        endpoint = self.endpoint
        if type(event) is bytes:  # a frame's payload, from the fast path
            return endpoint.handle(event, self.peer)
        if isinstance(event, Reply):  # computed by the listener's batch, sent in turn
            return event
        if isinstance(event, Frame):
            return endpoint.handle(event.payload, self.peer)
        if isinstance(event, Oversize):
            return endpoint.handle_oversize(event.size, event.head, self.peer)
        if isinstance(event, Junk):
            if event.data.strip(b"\r\n\x00 "):
                self._journal("junk", bytes=len(event.data), head=event.data[:64].decode("latin-1"))
            return None
        return None

    async def _slow(self, reply: Reply) -> None:
        transport = self.transport
        assert transport is not None
        try:
            if reply.hold:
                self.pending.clear()
                await asyncio.Event().wait()  # until the client gives up (connection_lost cancels)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.close == "before":
                self.abort(reset=False, reason="lost_ack")
                return
            for data in reply.data:
                if reply.dribble is not None:
                    for i in range(len(data)):
                        transport.write(data[i : i + 1])
                        await asyncio.sleep(reply.dribble)
                else:
                    transport.write(data)
            if reply.close:
                self.abort(reset=reply.close == "reset", reason="fault")
                return
        except asyncio.CancelledError:
            return
        self.worker = None
        self._drain()

    def abort(self, reset: bool, reason: str | None = None) -> None:
        """Close (FIN) or reset (RST, via SO_LINGER 0) the connection."""
        if self.closed or self.transport is None:
            return
        self.closed = True
        if reason:
            self._journal("connection", event="reset" if reset else "closed", by="server", reason=reason)
        if reset:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()

    # -- helpers ---------------------------------------------------------------------------------
    def _refusal(self) -> tuple[list[str], str] | None:
        listener = self.listener
        limit = listener.settings.max_connections
        faults = listener.endpoint.faults
        fired = faults.decide(CONNECT, {"event": "connect", "peer": self.peer}) if faults.any(CONNECT) else []
        names = [d.fault_id for d in fired]
        for decision in fired:
            if decision.action == "accept_close":
                return names, "accept_close"
            limit = int(decision.params.get("limit", 1))
        if limit and len(listener.connections) > limit:
            return names, "max_connections"
        return None

    def _touch(self) -> None:
        # A timestamp, not a timer per read: the listener's sweep closes idle connections.
        self.last_activity = time.monotonic()

    def _journal(self, kind: str, **fields: Any) -> None:
        entry: dict[str, Any] = {
            "protocol": "mllp",
            "kind": kind,
            "site": self.endpoint.site_id,
            "client_id": self.peer,
        }
        # Lists become tuples: the journal keeps entries the cyclic GC need not track.
        entry.update(
            {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if v not in (None, [])}
        )
        self.endpoint.journal.record(entry)


class MllpListener:
    """A site's MLLP endpoint as a sandbox background service."""

    def __init__(
        self, runtime: SiteRuntime, sandbox: Sandbox, settings: MllpSettings, host: str, port: int
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.host = host
        self.requested_port = port
        self.port = 0
        self.faults = MllpFaults(sandbox.faults, runtime.site.id)
        self.endpoint = Endpoint.for_site(runtime, settings, sandbox.journal, self.faults)
        self.connections: set[MllpConnection] = set()
        self._batch: list[tuple[MllpConnection, Any]] = []
        self._flush_scheduled = False
        self._server: asyncio.AbstractServer | None = None
        self._watch: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._ssl = None
        if settings.tls:
            from simulator.mllp.tls import server_context

            self._ssl = server_context(settings.tls)

    def enqueue(self, connection: MllpConnection, event: Any) -> None:
        """Queue a frame (its payload) or frame event; the batch runs once the loop has read
        every connection that had data."""
        self._batch.append((connection, event))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        # All messages first, then all replies: handling them back to back, rather than between
        # socket reads and writes, cost about a fifth less CPU per message (loadtests/bench_mllp.py).
        # A bug costs its connection, never the other messages of the batch (each would otherwise
        # wait forever for its turn); the try blocks cost nothing until something raises.
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        handle = self.endpoint.handle
        replies: list[Reply | None] = []
        for connection, event in batch:
            reply = None
            try:
                if connection.closed:
                    pass
                elif type(event) is bytes:  # a frame's payload, the usual case
                    reply = handle(event, connection.peer)
                else:
                    reply = connection._answer(event)
            except Exception:
                self._failed(connection)
            replies.append(reply)
        for (connection, _), reply in zip(batch, replies, strict=True):  # each delivered (or dropped) once
            try:
                connection.deliver(reply)
            except Exception:
                self._failed(connection)

    @staticmethod
    def _failed(connection: MllpConnection) -> None:
        log.exception("MLLP: unexpected error serving %s; closing that connection", connection.peer)
        connection.abort(reset=True, reason="internal_error")

    async def start(self) -> None:
        await self._listen(self.requested_port)
        site = self.runtime.site
        site.extras["mllp_port"] = self.port
        site.extras["mllp_host"] = self.host
        site.extras["mllp_tls"] = self._ssl is not None
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._refuse_windows())
        self._sweeper = loop.create_task(self._sweep_idle()) if self.settings.idle_timeout else None
        log.info("site %s: MLLP on %s:%d", site.id, self.host, self.port)

    async def _listen(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: MllpConnection(self), self.host, port, ssl=self._ssl, reuse_address=True, backlog=512
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _refuse_windows(self) -> None:
        """`refuse` faults: while one's time window is open, the port is closed, so connects get
        ECONNREFUSED. Polled without counting hits; `probability` and `times` do not apply."""
        faults = self.faults
        while True:
            await asyncio.sleep(0.02)
            fault = faults.active("refuse", {"event": "listen"}) if faults.any(LISTEN) else None
            if fault is not None and self._server is not None:
                self._server.close()
                self._server = None
                self._listener_event("refusing", [fault.fault_id])
            elif fault is None and self._server is None:
                await self._listen(self.port)
                self._listener_event("accepting", [])

    def _listener_event(self, event: str, faults: list[str]) -> None:
        entry: dict[str, Any] = {
            "protocol": "mllp",
            "kind": "listener",
            "site": self.runtime.site.id,
            "event": event,
        }
        if faults:
            entry["faults"] = tuple(faults)
        self.endpoint.journal.record(entry)

    def reset(self) -> None:
        self.endpoint.reset()

    async def _sweep_idle(self) -> None:
        timeout = self.settings.idle_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            cutoff = time.monotonic() - timeout
            for connection in list(self.connections):
                if connection.last_activity < cutoff and connection.worker is None:
                    connection.abort(reset=False, reason="idle_timeout")

    async def stop(self) -> None:
        for task in (self._watch, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort(reset=False)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self.runtime.site.extras.pop("mllp_port", None)
        if self.endpoint.mapper is not None:
            self.endpoint.mapper.close()


def mllp_listeners(sandbox: Sandbox) -> list[BackgroundService]:
    """One listener per site whose `mllp:` section does not disable it (the service factory)."""
    services: list[BackgroundService] = []
    default_host = sandbox.options.get("host") or "127.0.0.1"
    first_port = sandbox.options.get("mllp_port")
    for index, spec in enumerate(sandbox.scenario.sites):
        runtime = sandbox.sites[spec.id]
        settings = MllpSettings.from_mapping(spec.raw.get("mllp"), f"sites[{spec.id}].mllp")
        if not settings.enabled:
            continue
        if index == 0 and first_port is not None:
            port = int(first_port)
        elif settings.port is not None:
            port = settings.port
        elif first_port == 0:
            port = 0
        else:
            port = (first_port if first_port is not None else DEFAULT_PORT) + index
        host = settings.host or default_host
        services.append(MllpListener(runtime, sandbox, settings, host, port))
    return services
