"""The other kinds of an outbound feed's visit: scheduling (SIU), documents (MDM), immunizations (VXU).

A feed (feeds.py) walks each patient through a visit; these kinds add, as the feed's `events` say, a
vaccine given during the stay (VXU^V04), a report written before discharge (MDM^T02, its text in OBX
TX lines) and a follow-up appointment booked at discharge (SIU^S12). Some change one or two visits
later, after simulated time has gone by: an appointment is modified (S14), cancelled (S15) or missed
(S26); a report gets an addendum (T06) or a replacement (T10). Codes, texts and probabilities are
data (`data/feeds.yaml`). Each kind draws from its own seeded RNG, so turning one on leaves the
content of the others (and of ADT and ORU) as it was.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from simulator.mllp.er7 import escape
from simulator.mllp.feeds import DEFECTS, VISIT_KINDS, FeedMessages, Outbound, pv1, v2_stamp

# A large base64 OBX is an ORU defect (an embedded PDF result); the others apply to every kind.
DEFECTS_OF_KINDS = DEFECTS - {"large_obx"}


def segment(name: str, fields: dict[int, str]) -> str:
    """An ER7 segment with `fields` by position (1 = the first after the name); the rest empty."""
    values = [""] * max(fields)
    for n, value in fields.items():
        values[n - 1] = value
    return "|".join([name, *values])


@dataclass
class Appointment:
    placer: str  # SCH-1 and SCH-2, as EI
    filler: str
    start: datetime
    minutes: int
    service: dict[str, Any]
    reason: str
    location: str
    provider: str
    note: str


@dataclass
class Report:
    number: str  # TXA-12, as EI
    kind: dict[str, Any]
    lines: list[str]
    visit_no: str
    ward: str
    author: str  # TXA-9
    parent: str = ""  # TXA-13: the report an addendum or a replacement follows


class VisitEvents:
    """The scheduling, document and immunization messages of one feed, and what is due later."""

    def __init__(self, messages: FeedMessages) -> None:
        self.messages = messages
        self.events = messages.spec.events
        self.tables = messages.tables
        self.rngs = {kind: random.Random(f"{messages.key}/{kind}") for kind in sorted(VISIT_KINDS)}
        self.prefix = messages.spec.name.upper()
        self.numbers: dict[str, int] = {}
        self.later: list[tuple[int, Callable[[], Outbound]]] = []  # (due visit, builder), in order

    # -- when -----------------------------------------------------------------------------------
    def due(self, visit: int) -> Iterator[Outbound]:
        """What earlier visits left for now, in the order it was decided."""
        now = [build for when, build in self.later if when <= visit]
        self.later = [(when, build) for when, build in self.later if when > visit]
        for build in now:
            yield build()

    def during_stay(
        self, patient: dict[str, Any], visit: int, visit_no: str, ward: str
    ) -> Iterator[Outbound]:
        if "immunizations" in self.events and self._happens("immunizations"):
            yield self.vaccination(patient, visit_no, ward)
        if "documents" in self.events and self._happens("documents"):
            report = self._report(visit_no, ward)
            yield self.document("T02", patient, report, report.lines)
            self._decide_later("documents", visit, patient, report)

    def at_discharge(self, patient: dict[str, Any], visit: int) -> Iterator[Outbound]:
        if "scheduling" in self.events and self._happens("scheduling"):
            appointment = self._appointment()
            yield self.scheduling("S12", patient, appointment)
            self._decide_later("scheduling", visit, patient, appointment)

    def _happens(self, kind: str) -> bool:
        return self.rngs[kind].random() < float(self.tables[kind]["per_visit"])

    def _decide_later(self, kind: str, visit: int, patient: dict[str, Any], subject: Any) -> None:
        rng = self.rngs[kind]
        draw = rng.random()
        for trigger, probability in self.tables[kind]["later"].items():
            draw -= float(probability)
            if draw < 0:
                when = visit + rng.randint(2, 3)  # after the next visit at least
                self.later.append((when, lambda t=trigger: self._follow_up(kind, t, patient, subject)))
                return

    def _follow_up(self, kind: str, trigger: str, patient: dict[str, Any], subject: Any) -> Outbound:
        if kind == "scheduling":
            return self.scheduling(trigger, patient, subject)
        rng = self.rngs["documents"]
        table = self.tables["documents"]
        extra = rng.choice(table["addenda" if trigger == "T06" else "corrections"])
        lines = [extra] if trigger == "T06" else [*subject.lines, extra]
        return self.document(trigger, patient, self._report(subject.visit_no, subject.ward, subject), lines)

    def _number(self, letter: str) -> str:
        self.numbers[letter] = self.numbers.get(letter, 0) + 1
        return f"{self.prefix}-{letter}{self.numbers[letter]:06d}^EHRSIM"

    # -- scheduling -----------------------------------------------------------------------------
    def _appointment(self) -> Appointment:
        rng = self.rngs["scheduling"]
        table = self.tables["scheduling"]
        today = self.messages.site.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        first, last = table["hours"]
        start = today + timedelta(
            days=rng.randint(*table["days_ahead"]),
            hours=rng.randint(first, last),
            minutes=rng.choice((0, 15, 30, 45)),
        )
        service = rng.choice(table["services"])
        return Appointment(
            placer=self._number("A"),
            filler=self._number("S"),
            start=start,
            minutes=int(service["minutes"]),
            service=service,
            reason=rng.choice(table["reasons"]),
            location=rng.choice(table["locations"]),
            provider=rng.choice(table["providers"]),
            note=rng.choice(table["notes"]),
        )

    def scheduling(self, trigger: str, patient: dict[str, Any], appointment: Appointment) -> Outbound:
        """SIU^S12 books `appointment`; S14 moves it to another room or provider; S15 / S26 set its
        status only (the RGS group is required, its resources are not)."""
        rng = self.rngs["scheduling"]
        table = self.tables["scheduling"]
        m = self.messages
        defects = m.draw_defects(rng, DEFECTS_OF_KINDS)
        control_id, msh = m.header(f"SIU^{trigger}", "SIU_S12", defects, rng)
        event = table["events"][trigger]
        if trigger == "S14":
            appointment.location = rng.choice(table["locations"])
            appointment.provider = rng.choice(table["providers"])
        timed = trigger in ("S12", "S14")
        start = v2_stamp(appointment.start, defects)
        end = v2_stamp(appointment.start + timedelta(minutes=appointment.minutes), defects)
        service = appointment.service
        code = (
            f"{service['local']}^{escape(service['display'])}^L"
            if "local_codes" in defects
            else f"{service['code']}^{escape(service['display'])}^{service['system']}"
        )
        sch = segment(
            "SCH",
            {
                1: appointment.placer,
                2: appointment.filler,
                6: rng.choice(event["reasons"]),
                7: appointment.reason,
                8: table["type"],
                16: appointment.provider,  # filler contact and entered-by person (required in v2.5.1)
                20: appointment.provider,
                25: event["status"],
            },
        )
        segments = [msh, sch]
        if timed:
            segments += [segment("TQ1", {1: "1", 7: start, 8: end}), f"NTE|1||{escape(appointment.note)}"]
        segments += [m.pid(patient, defects, rng), "RGS|1"]
        if timed:
            segments += [
                segment(
                    "AIS", {1: "1", 3: code, 4: start, 7: str(appointment.minutes), 8: "min", 10: "Booked"}
                ),
                segment("AIL", {1: "1", 3: appointment.location, 12: "Booked"}),
                segment("AIP", {1: "1", 3: appointment.provider, 12: "Booked"}),
            ]
        if "missing_segment" in defects:
            segments.remove(sch)
        return m.finish(f"SIU^{trigger}", control_id, segments, defects, rng)

    # -- documents ------------------------------------------------------------------------------
    def _report(self, visit_no: str, ward: str, parent: Report | None = None) -> Report:
        rng = self.rngs["documents"]
        table = self.tables["documents"]
        if parent is not None:
            return Report(
                self._number("D"), parent.kind, parent.lines, visit_no, ward, parent.author, parent.number
            )
        kind = rng.choice(table["types"])
        lines = [*kind["lines"], rng.choice(table["findings"])]
        return Report(self._number("D"), kind, lines, visit_no, ward, rng.choice(table["authors"]))

    def document(self, trigger: str, patient: dict[str, Any], report: Report, lines: list[str]) -> Outbound:
        """MDM^T02 (an original report), T06 (an addendum) or T10 (a replacement) of `report`; the
        later ones name the report they follow in TXA-13."""
        rng = self.rngs["documents"]
        m = self.messages
        defects = m.draw_defects(rng, DEFECTS_OF_KINDS)
        control_id, msh = m.header(f"MDM^{trigger}", "MDM_T02", defects, rng)
        stamp = m.stamp(defects)
        kind = report.kind
        local = "local_codes" in defects
        txa = segment(
            "TXA",
            {
                1: "1",
                2: kind["local"] if local else kind["code"],
                3: "TX",
                4: stamp,
                6: stamp,
                9: report.author,
                12: report.number,
                13: report.parent,
                17: "AU",
            },
        )
        code = (
            f"{kind['local']}^{escape(kind['display'])}^L"
            if local
            else f"{kind['loinc']}^{escape(kind['display'])}^LN"
        )
        segments = [
            msh,
            f"EVN|{trigger}|{stamp}",
            m.pid(patient, defects, rng),
            pv1(report.ward, report.visit_no),
            txa,
        ]
        segments += [f"OBX|{i}|TX|{code}||{escape(line)}||||||F" for i, line in enumerate(lines, start=1)]
        if "missing_segment" in defects:
            segments.remove(txa)
        return m.finish(f"MDM^{trigger}", control_id, segments, defects, rng)

    # -- immunizations --------------------------------------------------------------------------
    def vaccination(self, patient: dict[str, Any], visit_no: str, ward: str) -> Outbound:
        """VXU^V04: one administration (ORC filler number, RXA with CVX, lot and MVX, RXR)."""
        rng = self.rngs["immunizations"]
        table = self.tables["immunizations"]
        m = self.messages
        defects = m.draw_defects(rng, DEFECTS_OF_KINDS)
        control_id, msh = m.header("VXU^V04", "VXU_V04", defects, rng)
        vaccine = rng.choice(table["vaccines"])
        given = m.site.clock.now()
        expires = given + timedelta(days=rng.randint(*table["expires_days"]))
        lot = f"{rng.choice(table['lot_prefixes'])}{rng.randint(10000, 99999)}"
        code = (
            f"{vaccine['local']}^{escape(vaccine['display'])}^L"
            if "local_codes" in defects
            else f"{vaccine['cvx']}^{escape(vaccine['display'])}^CVX"
        )
        provider = rng.choice(table["providers"])
        rxa = segment(
            "RXA",
            {
                1: "0",
                2: "1",
                3: v2_stamp(given, defects),
                4: v2_stamp(given, defects),
                5: code,
                6: f"{float(vaccine['amount']):g}",
                7: "mL^mL^UCUM",
                9: "00^New immunization record^NIP001",
                10: provider,
                11: "^^^EHRSIM",
                15: lot,
                16: expires.strftime("%Y%m%d"),
                17: vaccine["mvx"],
                20: "CP",
                21: "A",
            },
        )
        segments = [
            msh,
            m.pid(patient, defects, rng),
            pv1(ward, visit_no),
            f"ORC|RE||{self._number('I')}|||||||||{provider}",
            rxa,
            f"RXR|{vaccine['route']}|{rng.choice(table['sites'])}",
        ]
        if "missing_segment" in defects:
            segments.remove(rxa)
        return m.finish("VXU^V04", control_id, segments, defects, rng)
