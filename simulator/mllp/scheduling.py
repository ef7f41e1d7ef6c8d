"""HL7 v2 scheduling to FHIR R4 Appointment: SIU^S12-S17 and S26 (v2.3-2.8).

One message is one appointment, named by SCH-1 (placer) and SCH-2 (filler appointment id). The
trigger event says what the message does (book, reschedule, modify, cancel, discontinue, delete,
no-show) through the `appointment_event` table in data/v2-to-fhir.yaml, SCH-25 (filler status,
table 0278) the status when it is valued. The patient (PID) and each resource of the RGS groups
(AIS services, AIG general resources, AIL locations, AIP personnel) become participants. An
existing appointment is found through an `IdentifierIndex`; the writes go into the message's single
commit (`V2Mapper.apply`): applied completely or not at all.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from simulator.fhir.values import is_instant
from simulator.mllp.er7 import (
    DATA_TYPE_ERROR,
    DUPLICATE_KEY,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    UNSUPPORTED_EVENT_CODE,
    HL7Error,
    Message,
    Segment,
)
from simulator.mllp.mapping import (
    IndexedHandler,
    MappingResult,
    V2Mapper,
    _spaced,
    order_number_system,
    v2_datetime,
    xcn_reference,
)
from simulator.store.base import Write

# (SCH field, identifier type in table 0203, system kind): the placer's and the filler's appointment id.
APPOINTMENT_IDS = ((1, "PLAC", "appointment:placer"), (2, "FILL", "appointment:filler"))

# The resource segments: (start, duration, duration units, filler status) field numbers.
RESOURCE_FIELDS = {"AIS": (4, 7, 8, 10), "AIG": (8, 11, 12, 14), "AIL": (6, 9, 10, 12), "AIP": (6, 9, 10, 12)}

# R4 Appointment.status and participant.status codes, for checking the tables a site overrides.
APPOINTMENT_STATUSES = frozenset(
    {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    }
)
PARTICIPANT_STATUSES = frozenset(("accepted", "declined", "tentative", "needs-action"))
EVENT_ACTIONS = frozenset(("new", "change", "update"))
SCH7_TARGETS = ("reasonCode", "appointmentType")
# R4 app-3: only these may lack start and end.
UNTIMED_STATUSES = frozenset(("proposed", "cancelled", "waitlist"))

Timing = tuple[str, Segment, int]  # a FHIR instant and the field it came from


def check_scheduling_tables(tables: dict[str, Any], where: str = "mllp.mapping") -> None:
    """The scheduling tables hold FHIR codes this module can write (raises ValueError)."""
    for table in ("appointment_event", "appointment_status", "appointment_participant_status"):
        if not isinstance(tables.get(table), dict):
            raise ValueError(f"{where}.{table} must be a mapping")
    for trigger, event in tables["appointment_event"].items():
        if not isinstance(event, dict) or event.get("action") not in EVENT_ACTIONS:
            raise ValueError(
                f"{where}.appointment_event.{trigger}: action must be one of {', '.join(sorted(EVENT_ACTIONS))}"
            )
        if event["action"] == "new" and event.get("status") is None:
            raise ValueError(f"{where}.appointment_event.{trigger}: a new appointment needs a status")
        if event.get("status") is not None and event["status"] not in APPOINTMENT_STATUSES:
            raise ValueError(
                f"{where}.appointment_event.{trigger}.status '{event['status']}' is not an R4 Appointment status"
            )
    for table, allowed in (
        ("appointment_status", APPOINTMENT_STATUSES),
        ("appointment_participant_status", PARTICIPANT_STATUSES),
    ):
        for code, status in tables[table].items():
            if status not in allowed:
                raise ValueError(
                    f"{where}.{table}.{code}: '{status}' is not one of {', '.join(sorted(allowed))}"
                )
    if tables.get("appointment_sch7", "reasonCode") not in SCH7_TARGETS:
        raise ValueError(f"{where}.appointment_sch7 must be one of {', '.join(SCH7_TARGETS)}")
    units = tables.get("appointment_duration_units")
    if not isinstance(units, dict):
        raise ValueError(f"{where}.appointment_duration_units must be a mapping")
    for unit, seconds in units.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ValueError(f"{where}.appointment_duration_units.{unit}: seconds must be a positive number")


def _after(start: str, seconds: float, seg: Segment, n: int) -> str:
    """The instant `seconds` after `start` (AE 102 at the duration's field when out of range)."""
    try:
        return (datetime.fromisoformat(start) + timedelta(seconds=seconds)).isoformat()
    except (OverflowError, ValueError):
        raise HL7Error(
            DATA_TYPE_ERROR,
            f"{seg.name}-{n} duration ends past the year 9999",
            seg.name,
            sequence=seg.occurrence,
            field=n,
        ) from None


def _is_patient(participant: dict[str, Any]) -> bool:
    return str(participant.get("actor", {}).get("reference", "")).startswith("Patient/")


def _by_code(table: Any) -> dict[str, Any]:
    """A table of v2 codes, looked up case-insensitively (senders write Booked, BOOKED, booked)."""
    if not isinstance(table, dict):  # a site's broken override (the scenario check names it)
        return {}
    return {str(code).upper(): value for code, value in table.items()}


class SchedulingMapping(IndexedHandler):
    """The SIU handler of one site's `V2Mapper`, with its appointment id index."""

    resource_type = "Appointment"
    noun = "appointments"

    def __init__(self, mapper: V2Mapper) -> None:
        super().__init__(mapper)
        tables = mapper.tables
        self.events = _by_code(tables.get("appointment_event"))
        self.statuses = _by_code(tables.get("appointment_status"))
        self.participant_statuses = _by_code(tables.get("appointment_participant_status"))
        self.duration_units = _by_code(tables.get("appointment_duration_units"))
        self.sch7 = tables.get("appointment_sch7", "reasonCode")

    def apply(self, message: Message, result: MappingResult) -> list[Write]:
        """The writes of a scheduling message: its patient (booking and changes) and its Appointment."""
        self.require_resource_type()
        sch = message.segment("SCH")
        if sch is None:
            raise HL7Error(
                SEGMENT_SEQUENCE_ERROR,
                f"{_spaced(message.message_type)} needs an SCH segment (schedule activity information)",
                "SCH",
            )
        event = self.events.get(message.trigger.upper())
        if not isinstance(event, dict) or event.get("action") not in EVENT_ACTIONS:  # a site's bad override
            raise HL7Error(
                UNSUPPORTED_EVENT_CODE,
                f"{_spaced(message.message_type)} has no usable entry in this site's appointment_event table",
                "MSH",
                field=9,
                component=2,
            )
        action = event["action"]
        ids = self.typed_identifiers(sch, APPOINTMENT_IDS, message)
        if not ids:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "SCH-1 placer and SCH-2 filler appointment ids are empty: an appointment needs one of them",
                "SCH",
                field=2,
            )
        status = self.status(sch) or event.get("status")
        existing, found_by = self.find(ids)
        writes: list[Write] = []
        if action == "new":
            if existing is not None and found_by is not None:
                ident, n = found_by
                raise HL7Error(
                    DUPLICATE_KEY,
                    f"appointment id {ident['value']} ({ident['system']}) is already booked as "
                    f"Appointment/{existing['id']}; a new booking (S12) needs a new id",
                    "SCH",
                    field=n,
                )
            appointment: dict[str, Any] = {"resourceType": "Appointment", "identifier": [i for i, _ in ids]}
        else:
            if existing is None:
                ident, n = next(((i, n) for i, n in ids if n == 2), ids[0])  # SCH-2 when valued
                raise HL7Error(
                    UNKNOWN_KEY,
                    f"no appointment has id {ident['value']} ({ident['system']}); "
                    f"{_spaced(message.message_type)} needs an existing appointment (book it with S12 first)",
                    "SCH",
                    field=n,
                )
            appointment = copy.deepcopy(existing)
            # An id the appointment did not have yet (e.g. the filler's, assigned later) joins it.
            known = {(i.get("system"), i.get("value")) for i in appointment.get("identifier", [])}
            appointment["identifier"] = appointment.get("identifier", []) + [
                i for i, _ in ids if (i["system"], i["value"]) not in known
            ]
        if status is not None:
            appointment["status"] = status
        if action in ("new", "change"):
            # A booking needs its patient (PID); a change without PID keeps the stored one.
            patient_id = None
            if action == "new" or message.segment("PID") is not None:
                patient_id = self.mapper.upsert_patient(message, result, writes, create_only=True)
            self.fill(appointment, message, sch, patient_id, action == "new", result.warnings)
        if appointment.get("status") == "cancelled" and sch.value(6):
            appointment["cancelationReason"] = self.mapper.concept(sch, 6, message)
        self.mapper._put(appointment, writes)
        return writes

    def status(self, sch: Segment) -> str | None:
        """SCH-25 filler status through `appointment_status` (None when empty: the event decides)."""
        code = sch.value(25).strip()
        if not code:
            return None
        status = self.statuses.get(code.upper())
        if status is None:
            raise HL7Error(
                TABLE_VALUE_NOT_FOUND,
                f"SCH-25 filler status '{code}' is not mapped to an Appointment status "
                f"(table 0278; mapped here, in any case: {', '.join(self.statuses)})",
                "SCH",
                field=25,
            )
        return status

    # -- the appointment's content ---------------------------------------------------------------
    def fill(
        self,
        appointment: dict[str, Any],
        message: Message,
        sch: Segment,
        patient_id: str | None,
        new: bool,
        warnings: list[str],
    ) -> None:
        """Set what the message carries (a change keeps what it does not carry)."""
        resources = [seg for seg in message.segments if seg.name in RESOURCE_FIELDS]
        services = [seg for seg in resources if seg.name == "AIS"]
        self.timing(appointment, message, sch, services, new, warnings)
        # SCH-7 holds a reason (table 0277 senders) or the type (0276: CHECKUP, EMERGENCY, ...).
        sch7_is_type = self.sch7 == "appointmentType"
        reason = None if sch7_is_type else self.mapper.concept(sch, 7, message)
        service_types = [c for c in (self.mapper.concept(ais, 3, message) for ais in services) if c]
        if reason is not None:
            appointment["reasonCode"] = [reason]
        elif service_types:
            appointment["reasonCode"] = service_types
        if service_types:
            appointment["serviceType"] = service_types
        kind = self.mapper.concept(sch, 7 if sch7_is_type else 8, message)
        if kind is not None:
            appointment["appointmentType"] = kind
        notes = self.notes(message)
        if notes.get("SCH"):
            appointment["description"] = notes["SCH"]
        if notes.get("AIS"):
            appointment["comment"] = notes["AIS"]
        based_on = self.based_on(sch, message, warnings)
        if based_on:
            appointment["basedOn"] = based_on
        stored = appointment.get("participant", [])
        patients = [p for p in stored if _is_patient(p)]
        if patient_id is not None:
            patients = [{"actor": self.mapper.subject(patient_id), "status": "accepted"}]
        if services:
            patients = [{**p, "status": self.participant_status(services[0], warnings)} for p in patients]
        participants = list(patients)
        if resources:
            for seg in resources:
                if seg.name == "AIS":  # the service: serviceType, and the patient's status above
                    continue
                participant = self.participant(seg, message, warnings)
                if participant is not None:
                    participants.append(participant)
        else:  # a change without resource segments keeps the stored resources
            participants += [p for p in stored if not _is_patient(p)]
        appointment["participant"] = participants

    def timing(
        self,
        appointment: dict[str, Any],
        message: Message,
        sch: Segment,
        services: list[Segment],
        new: bool,
        warnings: list[str],
    ) -> None:
        """start and end: TQ1-7/8, else SCH-11.4/11.5 (TQ), else the first AIS-4 and its duration;
        minutesDuration: end - start, else SCH-9/10, else AIS-7/8."""
        tq1 = message.segment("TQ1")
        ais = services[0] if services else None
        start = end = None
        if tq1 is not None and tq1.value(7):
            start = self.instant(tq1.value(7), tq1, 7, warnings)
            if tq1.value(8):
                end = self.instant(tq1.value(8), tq1, 8, warnings)
        elif sch.value(11, 4):
            start = self.instant(sch.value(11, 4), sch, 11, warnings)
            if sch.value(11, 5):
                end = self.instant(sch.value(11, 5), sch, 11, warnings)
        elif ais is not None and ais.value(4):
            start = self.instant(ais.value(4), ais, 4, warnings)
        if start is None:
            if new:
                raise HL7Error(
                    REQUIRED_FIELD_MISSING,
                    "no start time: TQ1-7, SCH-11.4 (timing quantity start) and AIS-4 are empty; "
                    "a booking needs one",
                    "TQ1" if tq1 is not None else "SCH",
                    sequence=tq1.occurrence if tq1 is not None else 1,
                    field=7 if tq1 is not None else 11,
                )
            return  # a change that does not say when keeps the stored times
        duration, lasting = self.duration(sch, 9, 10, warnings), (sch, 9)
        if duration is None and ais is not None:
            duration, lasting = self.duration(ais, 7, 8, warnings), (ais, 7)
        if end is not None:
            seconds = (datetime.fromisoformat(end[0]) - datetime.fromisoformat(start[0])).total_seconds()
            if seconds < 0:
                raise HL7Error(
                    DATA_TYPE_ERROR,
                    f"{end[1].name}-{end[2]} end {end[0]} is before the start {start[0]}",
                    end[1].name,
                    sequence=end[1].occurrence,
                    field=end[2],
                )
            duration = seconds
        elif duration is None and not new and appointment.get("minutesDuration"):
            duration = appointment["minutesDuration"] * 60.0  # a reschedule keeps the length
        if end is None and duration is not None:
            end = (_after(start[0], duration, *lasting), start[1], start[2])
        if end is None and appointment.get("status", "booked") not in UNTIMED_STATUSES:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                f"no end time or duration for the start in {start[1].name}-{start[2]} "
                "(TQ1-8, SCH-11.5, SCH-9 or AIS-7): an Appointment has both start and end or neither",
                start[1].name,
                sequence=start[1].occurrence,
                field=start[2],
            )
        appointment["start"] = start[0]
        if end is not None:
            appointment["end"] = end[0]
        minutes = round(duration / 60) if duration is not None else 0
        if minutes >= 1:
            appointment["minutesDuration"] = minutes
        else:
            appointment.pop("minutesDuration", None)

    def instant(self, value: str, seg: Segment, n: int, warnings: list[str]) -> Timing:
        """A v2 timestamp as an R4 instant (AE 102 when it is not one, not to the minute, or not a
        date and time that exists, such as February 31st)."""
        text = v2_datetime(value, self.mapper.default_tz, (seg.name, n), warnings)
        problem = (
            None if is_instant(text) else "is not precise to the minute: an appointment's times are instants"
        )
        if problem is None:
            try:
                datetime.fromisoformat(text)  # the arithmetic on start, end and durations reads it
            except ValueError:
                problem = "is not a date and time that exists"
        if problem is not None:
            raise HL7Error(
                DATA_TYPE_ERROR,
                f"{seg.name}-{n} '{value}' {problem}",
                seg.name,
                sequence=seg.occurrence,
                field=n,
            )
        return text, seg, n

    def duration(self, seg: Segment, n: int, units: int, warnings: list[str]) -> float | None:
        """Field n as seconds, in the units of field `units` (minutes when empty); None when empty
        or in units `appointment_duration_units` does not have (a warning)."""
        text = seg.value(n).strip()
        if not text:
            return None
        try:
            amount = Decimal(text)
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount < 0:
            raise HL7Error(
                DATA_TYPE_ERROR,
                f"{seg.name}-{n} duration '{text}' is not a number of units (0 or more)",
                seg.name,
                sequence=seg.occurrence,
                field=n,
            )
        unit = seg.value(units).strip() or "min"
        seconds = self.duration_units.get(unit.upper())
        if seconds is None:
            warnings.append(
                f"{seg.name}-{units} duration unit '{unit}' is not known "
                f"(known, in any case: {', '.join(self.duration_units)}); {seg.name}-{n} left out"
            )
            return None
        return float(amount) * seconds

    def notes(self, message: Message) -> dict[str, str]:
        """NTE-3 of the NTEs that follow SCH (and its TQ1s) and of those that follow AIS segments,
        one line each."""
        out: dict[str, list[str]] = {}
        owner = None
        for seg in message.segments:
            name = seg.name
            if name == "NTE":
                text = "\n".join(seg.unescape(r) for r in seg.repetitions(3) if r)
                if owner is not None and text:
                    out.setdefault(owner, []).append(text)
            elif name == "TQ1" and owner == "SCH":
                continue
            else:
                owner = name
        return {k: "\n".join(v) for k, v in out.items()}

    def participant_status(self, seg: Segment, warnings: list[str]) -> str:
        """The segment's filler status through `appointment_participant_status` (accepted when
        empty; unknown: accepted with a warning)."""
        n = RESOURCE_FIELDS[seg.name][3]
        code = seg.value(n).strip()
        if not code:
            return "accepted"
        status = self.participant_statuses.get(code.upper())
        if status is None:
            warnings.append(
                f"{seg.name}-{n} filler status '{code}' is not in appointment_participant_status "
                "(table 0278); participant status accepted"
            )
            return "accepted"
        return status

    def participant(self, seg: Segment, message: Message, warnings: list[str]) -> dict[str, Any] | None:
        """One AIG/AIL/AIP as a participant: actor display from field 3, type from field 4 (AIG,
        AIP), status and period from the segment. None when nothing identifies the resource."""
        name = seg.name
        participant: dict[str, Any] = {}
        if name == "AIP":
            actor = xcn_reference(seg, 3) or {}
            kind = self.mapper.concept(seg, 4, message)
        elif name == "AIL":
            parts = seg.components(3)
            display = " ".join(p.split(seg.enc.subcomponent)[0] for p in parts[:4] if p)
            actor = {"display": display} if display else {}
            kind = None
        elif name == "AIG":
            parts = [*seg.components(3), "", ""]
            display = parts[1] or parts[0]
            actor = {"display": display} if display else {}
            kind = self.mapper.concept(seg, 4, message)
        else:
            raise ValueError(f"{name} is not a resource segment with an actor")
        if not actor and kind is None:
            warnings.append(f"{name} {seg.occurrence} names no resource ({name}-3 is empty); left out")
            return None
        if actor:
            participant["actor"] = actor
        if kind is not None:
            participant["type"] = [kind]
        participant["status"] = self.participant_status(seg, warnings)
        start_n, duration_n, units_n, _ = RESOURCE_FIELDS[name]
        if seg.value(start_n):
            start = self.instant(seg.value(start_n), seg, start_n, warnings)[0]
            period = {"start": start}
            seconds = self.duration(seg, duration_n, units_n, warnings)
            if seconds is not None:
                period["end"] = _after(start, seconds, seg, duration_n)
            participant["period"] = period
        return participant

    def based_on(self, sch: Segment, message: Message, warnings: list[str]) -> list[dict[str, str]]:
        """SCH-26 placer / SCH-27 filler order numbers (v2.5+) of known orders, as `basedOn`
        (the v2-to-FHIR IG); an order ehrsim does not know is left out with a warning."""
        out: list[dict[str, str]] = []
        for n, kind in ((26, "placer"), (27, "filler")):
            for rep in range(len(sch.repetitions(n))):
                value = sch.value(n, 1, 1, rep)
                if not value:
                    continue
                namespace = sch.value(n, 2, 1, rep) or self.mapper._facility(message)
                system = order_number_system(kind, namespace)
                rid = self.mapper.orders.index.find_id(system, value)
                if rid is None:
                    warnings.append(
                        f"SCH-{n} order number {value} ({system}) is not a known order; not in basedOn"
                    )
                    continue
                reference = {"reference": f"ServiceRequest/{rid}"}
                if reference not in out:
                    out.append(reference)
        return out
