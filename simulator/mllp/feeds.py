"""Outbound feeds: ehrsim pushes ADT events and ORU results (and, when asked, scheduling, documents
and immunizations: feed_events.py) to an integration's MLLP listener.

A feed (a site's `mllp: feeds:` entry) walks the site's patients through admit -> results and
vitals -> transfer -> discharge at a cadence of simulated time, and can make its messages messy the
way production feeds are (`messy:` probabilities per defect, drawn from the scenario's seeded RNG).

The sender is the well-behaved peer an integration's listener should expect: one message at a time
on one connection, waiting for the ACK with a timeout, matching MSA-2 to MSH-10, retrying the same
message (same MSH-10) with exponential backoff on timeout, reset or AR, stopping on AE, reconnecting
after resets, never reordering. Every attempt and every ACK is journaled (`mllp.feed.*`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from simulator.mllp.er7 import escape
from simulator.mllp.framing import Frame, FrameReader, frame
from simulator.mllp.settings import MllpSettings

if TYPE_CHECKING:
    from simulator.sandbox import BackgroundService, Sandbox, SiteRuntime

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.7418.2.1"
DEFECTS = frozenset(
    {
        "lf",
        "crlf",
        "z_segment",
        "multi_id",
        "local_codes",
        "no_timezone",
        "latin1",
        "truncated_msh",
        "missing_segment",
        "out_of_order",
        "large_obx",
        "two_frames",
    }
)
# Defects that leave each message valid HL7 v2 (messy, not broken): a listener should accept these.
# The others break the standard (segment separators, charset, truncated MSH, a required segment
# missing) or the event order, where an AE/AR is a fair answer.
VALID_DEFECTS = frozenset({"z_segment", "multi_id", "local_codes", "no_timezone", "large_obx", "two_frames"})
# The kinds feed_events.py builds around each visit.
VISIT_KINDS = frozenset({"scheduling", "documents", "immunizations"})
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
EVENTS = frozenset({"adt", "lab", "vitals", *VISIT_KINDS})
# A feed that names no events sends what feeds sent before the other kinds existed, message for message.
DEFAULT_EVENTS = frozenset({"adt", "lab", "vitals"})


@functools.cache
def feed_tables() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parent / "data" / "feeds.yaml").read_text(encoding="utf-8"))


def expand_environment(text: str) -> str:
    """`$VAR` and `${VAR}` from the environment (left as written when unset), and `${VAR:-default}`
    (the default when VAR is unset or empty), so a shipped scenario can aim its feed at
    `127.0.0.1:${EHRSIM_LISTEN_PORT:-2576}`."""
    text = _DEFAULTED.sub(lambda m: os.environ.get(m[1]) or m[2], text)
    return os.path.expandvars(text)


@dataclass
class FeedSpec:
    name: str
    host: str
    port: int
    events: frozenset[str] = DEFAULT_EVENTS
    interval: float = 60.0  # simulated seconds between messages
    count: int | None = None  # stop after this many messages
    ack_timeout: float = 5.0  # real seconds
    retries: int = 3
    backoff: float = 0.5  # first retry delay, doubled each time, capped by backoff_max
    backoff_max: float = 10.0
    connect_timeout: float = 5.0
    sending_application: str = "EHRSIM"
    sending_facility: str = "EHRSIM"
    receiving_application: str = "INTEGRATION"
    receiving_facility: str = ""
    messy: dict[str, float] = field(default_factory=dict)
    large_obx_bytes: int = 512 * 1024

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str) -> FeedSpec:
        data = dict(data)
        target = expand_environment(str(data.pop("target", "")))
        host, _, port = target.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()):
            raise ValueError(f"{where}.target must be host:port (e.g. 127.0.0.1:6661), not '{target}'")
        events = frozenset(data.pop("events", DEFAULT_EVENTS))
        if not events <= EVENTS:
            raise ValueError(
                f"{where}.events: unknown {', '.join(sorted(events - EVENTS))} (known: {', '.join(sorted(EVENTS))})"
            )
        messy = {str(k): float(v) for k, v in (data.pop("messy", None) or {}).items()}
        if not set(messy) <= DEFECTS:
            raise ValueError(
                f"{where}.messy: unknown {', '.join(sorted(set(messy) - DEFECTS))} (known: {', '.join(sorted(DEFECTS))})"
            )
        known = set(cls.__dataclass_fields__) - {"host", "port", "events", "messy"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown feed settings {', '.join(unknown)}")
        if "name" not in data:
            raise ValueError(f"{where} needs a 'name'")
        return cls(host=host, port=int(port), events=events, messy=messy, **data)


@dataclass
class Outbound:
    control_id: str
    message_type: str
    text: str
    defects: list[str]
    charset: str = "utf-8"

    def payload(self) -> bytes:
        if "latin1" in self.defects:
            return self.text.encode("latin-1", "replace")
        return self.text.encode(self.charset)


class FeedMessages:
    """The messages of one feed, in order; deterministic for (seed, site, feed, patients, clock)."""

    def __init__(self, spec: FeedSpec, runtime: SiteRuntime, seed: int | str) -> None:
        self.spec = spec
        self.site = runtime.site
        self.key = f"{seed}/{self.site.id}/feed/{spec.name}"
        self.rng = random.Random(self.key)
        self.tables = feed_tables()
        self._n = 0

    def patients(self) -> list[dict[str, Any]]:
        store = self.site.store
        out = []
        for pid in store.current("Patient"):
            version = store.read("Patient", pid)
            if version is not None and not version.deleted:
                out.append(version.resource)
        return out

    def __iter__(self) -> Iterator[Outbound]:
        patients = self.patients()
        if not patients:
            return
        spec = self.spec
        # The other kinds draw from RNGs of their own: ADT and ORU content is the same with them or without.
        from simulator.mllp.feed_events import VisitEvents  # it builds on this module

        care = VisitEvents(self) if spec.events & VISIT_KINDS else None
        visit = 0
        while True:
            for patient in patients:
                visit += 1
                visit_no = f"V{visit:06d}"
                if care is not None:
                    yield from care.due(visit)  # what happens later to earlier visits' bookings and reports
                ward = self.rng.choice(self.tables["wards"])
                if "adt" in spec.events:
                    yield self.adt("A01", patient, visit_no, ward)
                for _ in range(self.rng.randint(1, 3)):
                    if "vitals" in spec.events:
                        yield self.oru(patient, visit_no, vitals=True)
                    if "lab" in spec.events:
                        yield self.oru(patient, visit_no, vitals=False)
                if care is not None:
                    yield from care.during_stay(patient, visit, visit_no, ward)
                if "adt" in spec.events:
                    yield self.adt("A02", patient, visit_no, self.rng.choice(self.tables["wards"]))
                    yield self.adt("A03", patient, visit_no, ward)
                if care is not None:
                    yield from care.at_discharge(patient, visit)

    # -- building --------------------------------------------------------------------------------
    def draw_defects(self, rng: random.Random | None = None, kinds: frozenset[str] = DEFECTS) -> list[str]:
        """The defects of the next message, drawn from `rng` (the ADT/ORU one by default)."""
        rng = rng or self.rng
        return [d for d, p in sorted(self.spec.messy.items()) if p > 0 and d in kinds and rng.random() < p]

    def stamp(self, defects: list[str], offset: float = 0.0) -> str:
        return v2_stamp(self.site.clock.now() + timedelta(seconds=offset), defects)

    def header(
        self, message_type: str, structure: str, defects: list[str], rng: random.Random | None = None
    ) -> tuple[str, str]:
        """(MSH-10, the MSH segment) of the next message."""
        rng = rng or self.rng
        self._n += 1
        control_id = f"{self.spec.name.upper()}-{self._n:06d}"
        spec = self.spec
        charset = "" if "latin1" in defects and rng.random() < 0.5 else "UNICODE UTF-8"
        fields = [
            "MSH",
            "^~\\&",
            spec.sending_application,
            spec.sending_facility,
            spec.receiving_application,
            spec.receiving_facility,
            self.stamp(defects),
            "",
            f"{message_type}^{structure}",
            control_id,
            "P",
            "2.5.1",
            "",
            "",
            "",
            "",
            "",
            charset,
        ]
        if "truncated_msh" in defects:
            fields = fields[:11]
        while fields[-1] == "":
            fields.pop()
        return control_id, "|".join(fields)

    def pid(self, patient: dict[str, Any], defects: list[str], rng: random.Random | None = None) -> str:
        rng = rng or self.rng
        mrn = next(
            (i["value"] for i in patient.get("identifier", []) if i.get("system") == MRN_SYSTEM),
            patient["id"],
        )
        ids = [f"{escape(mrn)}^^^EHRSIM^MR"]
        if "multi_id" in defects:
            ids += [
                f"{rng.randint(100000000, 999999999)}^^^SSA^SS",
                f"X{rng.randint(1000, 9999)}^^^OTHERHOSP&2.16.840.1.113883.19.5&ISO^MR",
            ]
        name = (patient.get("name") or [{}])[0]
        family = escape(name.get("family", ""))
        given = escape((name.get("given") or [""])[0])
        if "latin1" in defects:
            family += "é"  # a byte the declared (or default) UTF-8 cannot decode
        sex = {"male": "M", "female": "F", "other": "O"}.get(patient.get("gender", ""), "U")
        birth = patient.get("birthDate", "").replace("-", "")
        return f"PID|1||{'~'.join(ids)}||{family}^{given}||{birth}|{sex}"

    def finish(
        self,
        message_type: str,
        control_id: str,
        segments: list[str],
        defects: list[str],
        rng: random.Random | None = None,
    ) -> Outbound:
        """The message of `segments`, with the defects that shape the whole of it."""
        if "z_segment" in defects:
            segments.append(f"ZEH|1|{self.site.id}|{(rng or self.rng).randint(1, 99999)}")
        separator = "\r\n" if "crlf" in defects else ("\n" if "lf" in defects else "\r")
        return Outbound(control_id, message_type, separator.join(segments) + separator, defects)

    def adt(self, trigger: str, patient: dict[str, Any], visit_no: str, ward: str) -> Outbound:
        defects = self.draw_defects()
        control_id, msh = self.header(f"ADT^{trigger}", f"ADT_{trigger}", defects)
        stamp = self.stamp(defects)
        visit = pv1(ward=ward, visit=visit_no)
        if trigger == "A01":
            visit = pv1(ward=ward, visit=visit_no, admitted=stamp)
        elif trigger == "A03":
            visit = pv1(ward=ward, visit=visit_no, discharged=stamp)
        segments = [msh, f"EVN|{trigger}|{stamp}", self.pid(patient, defects), visit]
        if "missing_segment" in defects:
            segments.remove(visit)
        return self.finish(f"ADT^{trigger}", control_id, segments, defects)

    def oru(self, patient: dict[str, Any], visit_no: str, vitals: bool) -> Outbound:
        defects = self.draw_defects()
        control_id, msh = self.header("ORU^R01", "ORU_R01", defects)
        tables = self.tables
        panel = tables["vitals_panel" if vitals else "panel"]
        tests = tables["vitals"] if vitals else self.rng.sample(tables["labs"], k=3)
        stamp = self.stamp(defects)
        local = "local_codes" in defects

        def code(entry: dict[str, Any]) -> str:
            return (
                f"{entry['local']}^{entry['display']}^L"
                if local
                else f"{entry['code']}^{entry['display']}^LN"
            )

        pid = self.pid(patient, defects)
        segments = [msh, pid, pv1(ward="", visit=visit_no)]
        segments.append(f"OBR|1||{control_id}^EHRSIM|{code(panel)}|||{stamp}||||||||||||||||||F")
        for i, test in enumerate(tests, start=1):
            low, high = float(test["low"]), float(test["high"])
            value = round(self.rng.uniform(low - (high - low) * 0.2, high + (high - low) * 0.2), 1)
            flag = "H" if value > high else ("L" if value < low else "N")
            segments.append(
                f"OBX|{i}|NM|{code(test)}||{value:g}|{escape(test['unit'])}|{test['low']}-{test['high']}|{flag}|||F|||{stamp}"
            )
        if "large_obx" in defects:
            pdf = b"%PDF-1.4\n" + bytes(self.rng.getrandbits(8) for _ in range(64)) * (
                self.spec.large_obx_bytes // 64
            )
            segments.append(
                f"OBX|{len(tests) + 1}|ED|PDF^Report^L||^application^pdf^Base64^{base64.b64encode(pdf).decode()}||||||F"
            )
        if "missing_segment" in defects:
            segments.remove(pid)
        return self.finish("ORU^R01", control_id, segments, defects)


def v2_stamp(moment: datetime, defects: list[str]) -> str:
    """A v2 timestamp of a UTC instant (without its zone when the message has `no_timezone`)."""
    text = moment.strftime("%Y%m%d%H%M%S")
    return text if "no_timezone" in defects else text + "+0000"


def pv1(ward: str, visit: str, admitted: str = "", discharged: str = "") -> str:
    fields = ["PV1", "1", "I", ward] + [""] * 42
    fields[7] = "1234^ATTEND^ALLISON" if ward else ""
    fields[10] = "MED" if ward else ""
    fields[19] = f"{visit}^^^EHRSIM^VN"
    fields[44], fields[45] = admitted, discharged
    while fields[-1] == "":
        fields.pop()
    return "|".join(fields)


class FeedStopped(Exception):
    pass


class MllpFeed:
    """One outbound feed as a sandbox background service."""

    def __init__(self, spec: FeedSpec, runtime: SiteRuntime, sandbox: Sandbox) -> None:
        self.spec = spec
        self.runtime = runtime
        self.journal = sandbox.journal
        self.clock = runtime.site.clock
        self.seed = sandbox.scenario.seed
        self.messages = FeedMessages(spec, runtime, self.seed)
        self.task: asyncio.Task[None] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.frames = FrameReader(16 * 1024 * 1024)
        self.sent = 0
        self.state = "idle"
        self._buffered: list[bytes] = []

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def reset(self) -> None:
        """The sandbox was reset: the feed starts over from its first message."""
        if self.task is not None:
            self.task.cancel()
        self.messages = FeedMessages(self.spec, self.runtime, self.seed)
        self.sent = 0
        if self.writer is not None:
            self.writer.close()
        self.writer = self.reader = None
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self._disconnect()

    def _record(self, kind: str, **fields: Any) -> None:
        entry = {
            "protocol": "outbound",
            "kind": kind,
            "site": self.runtime.site.id,
            "client_id": f"{self.spec.host}:{self.spec.port}",
            "feed": self.spec.name,
            "target": f"{self.spec.host}:{self.spec.port}",
        }
        entry.update({k: v for k, v in fields.items() if v is not None})
        self.journal.record(entry)

    async def run(self) -> None:
        self.state = "running"
        try:
            messages = iter(self.messages)
            limit = self.spec.count
            taken = 0
            held: Outbound | None = None
            while limit is None or taken < limit:
                outbound = next(messages, None)
                if outbound is None:
                    break
                taken += 1
                if held is None and "out_of_order" in outbound.defects and (limit is None or taken < limit):
                    held = outbound  # goes out after the next message
                    continue
                batch = [outbound]
                if held is not None:
                    batch.append(held)
                    held = None
                elif "two_frames" in outbound.defects and (limit is None or taken < limit):
                    extra = next(messages, None)
                    if extra is not None:
                        taken += 1
                        batch.append(extra)
                await self._pace()
                await self._send_until_acked(batch)
            if held is not None:
                await self._send_until_acked([held])
            self.state = "done"
            self._record("done", sent=self.sent)
        except FeedStopped as exc:
            self.state = "stopped"
            self._record("stopped", reason=str(exc), sent=self.sent)
        finally:
            if asyncio.current_task() is self.task:  # not a run that reset() replaced
                await self._disconnect()

    async def _pace(self) -> None:
        if self.sent == 0 or not self.spec.interval:
            return
        speed = self.clock.speed
        await asyncio.sleep(self.spec.interval / speed if speed > 0 else self.spec.interval)

    async def _send_until_acked(self, batch: list[Outbound]) -> None:
        """Send (a batch is several frames in one write) and wait for each ACK, in order; retry what
        was not accepted on timeout, reset or AR; stop on AE."""
        spec = self.spec
        delay = spec.backoff
        pending = list(batch)
        for attempt in range(1, spec.retries + 2):
            outcome = await self._attempt(pending, attempt)
            if outcome == "accepted":
                return
            if outcome == "error":
                raise FeedStopped(
                    f"{pending[0].control_id} was answered AE; the feed stops so the order is kept"
                )
            if attempt <= spec.retries:
                self._record(
                    "retry",
                    control_id=pending[0].control_id,
                    attempt=attempt,
                    after=outcome,
                    wait=delay,
                )
                await _sleep_at_least(delay)
                delay = min(delay * 2, spec.backoff_max)
        raise FeedStopped(f"{pending[0].control_id} was not accepted after {spec.retries + 1} attempts")

    async def _attempt(self, pending: list[Outbound], attempt: int) -> str:
        """One write of every pending message; accepted ones are removed from `pending`."""
        spec = self.spec
        current = pending[0]
        try:
            if self.writer is None:
                await self._connect()
            assert self.writer is not None
            data = b""
            for outbound in pending:
                framed = frame(outbound.payload())
                data += framed
                self._record(
                    "delivery",
                    control_id=outbound.control_id,
                    message_type=outbound.message_type,
                    attempt=attempt,
                    bytes=len(framed),
                    defects=outbound.defects or None,
                    frames_in_write=len(pending) if len(pending) > 1 else None,
                )
            self.writer.write(data)
            await self.writer.drain()
            started = time.monotonic()
            deadline = started + spec.ack_timeout
            while pending:
                current = pending[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                payload = await self._read_frame(remaining)
                code, msa2 = _read_ack(payload)
                latency = round(time.monotonic() - started, 6)
                if msa2 != current.control_id:
                    self._record(
                        "ack",
                        control_id=current.control_id,
                        ack_code=code,
                        msa2=msa2,
                        outcome="mismatch",
                        latency=latency,
                    )
                    continue
                outcome = {"AA": "accepted", "CA": "accepted", "AE": "error", "CE": "error"}.get(
                    code or "", "rejected"
                )
                self._record(
                    "ack",
                    control_id=current.control_id,
                    ack_code=code,
                    msa2=msa2,
                    outcome=outcome,
                    latency=latency,
                )
                if outcome != "accepted":
                    return outcome
                pending.pop(0)
                self.sent += 1
            return "accepted"
        except TimeoutError:
            self._record("ack", control_id=current.control_id, outcome="timeout", after=spec.ack_timeout)
            await self._disconnect()  # a late ACK on this connection would be read as the next one's
            return "timeout"
        except (ConnectionError, OSError, asyncio.IncompleteReadError, EOFError) as exc:
            self._record(
                "ack",
                control_id=current.control_id,
                outcome="connection",
                error=f"{type(exc).__name__}: {exc}",
            )
            await self._disconnect()
            return "connection"

    async def _connect(self) -> None:
        spec = self.spec
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(spec.host, spec.port), spec.connect_timeout
        )
        self.frames = FrameReader(16 * 1024 * 1024)
        self._buffered = []
        self._record("connect")

    async def _disconnect(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _read_frame(self, timeout: float) -> bytes:
        assert self.reader is not None
        while not self._buffered:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("the listener closed the connection before acknowledging")
            self._buffered.extend(e.payload for e in self.frames.feed(data) if isinstance(e, Frame))
        return self._buffered.pop(0)


def _read_ack(payload: bytes) -> tuple[str | None, str | None]:
    """MSA-1 and MSA-2 of an ACK (None when there is no MSA)."""
    text = payload.decode("utf-8", "replace").replace("\n", "\r")
    for line in text.split("\r"):
        if line.startswith("MSA"):
            fields = line.split(line[3]) if len(line) > 3 else ["MSA"]
            return (fields[1] if len(fields) > 1 else ""), (fields[2] if len(fields) > 2 else "")
    return None, None


def mllp_feeds(sandbox: Sandbox) -> list[BackgroundService]:
    """One sender per `mllp: feeds:` entry of each site (the service factory)."""
    services: list[BackgroundService] = []
    for spec in sandbox.scenario.sites:
        settings = MllpSettings.from_mapping(spec.raw.get("mllp"), f"sites[{spec.id}].mllp")
        feeds = [
            FeedSpec.from_mapping(raw, f"sites[{spec.id}].mllp.feeds[{index}]")
            for index, raw in enumerate(settings.feeds)
        ]
        services.extend(MllpFeed(feed, sandbox.sites[spec.id], sandbox) for feed in feeds)
        if feeds:  # /_admin/sites lists where each feed delivers (EHRSIM_LISTEN_PORT comes from it)
            targets = [{"name": f.name, "target": f"{f.host}:{f.port}"} for f in feeds]
            describe = sandbox.sites[spec.id].site.extras.setdefault("describe", [])
            describe.append(lambda base, targets=targets: {"mllp_feeds": targets})
    return services


async def _sleep_at_least(seconds: float) -> None:
    """Sleep no less than `seconds` by the monotonic clock: the event loop's timers have millisecond
    granularity and can wake a little early, and a retry must never go out before its backoff."""
    resume = time.monotonic() + seconds
    while (left := resume - time.monotonic()) > 0:
        await asyncio.sleep(left)
