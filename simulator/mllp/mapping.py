"""HL7 v2 to FHIR R4, into the site's own store.

ADT^A01/A04 (admit/register: Patient + Encounter), A08 (update), A02 (transfer), A03 (discharge), A28/A31 (person
add/update), A40 (merge, represented as the site's `merge` setting says) and ORU^R01 (an Observation
per OBX, a DiagnosticReport per OBR). Code systems, units, statuses and classes come from the tables
in `data/v2-to-fhir.yaml`, which a site may extend. Every write of one message goes through
`FhirService.commit` at once, so a message is applied completely or not at all; what cannot be
mapped raises `HL7Error` (an AE with ERR that says why).
"""

from __future__ import annotations

import copy
import functools
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml

from simulator.fhir.errors import FHIRError
from simulator.fhir.service import FhirService
from simulator.mllp.er7 import (
    DATA_TYPE_ERROR,
    DEFAULT_ENCODING,
    DUPLICATE_KEY,
    INTERNAL_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    HL7Error,
    Message,
    Segment,
)
from simulator.mllp.identifiers import IdentifierIndex
from simulator.scenario import merge
from simulator.store.base import Write, make_write

UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DR_CATEGORY = "http://terminology.hl7.org/CodeSystem/v2-0074"
_LAB_REPORT = [{"coding": [{"system": DR_CATEGORY, "code": "LAB", "display": "Laboratory"}]}]

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2}(?:\.\d{1,6})?)?([+-]\d{4})?$", re.ASCII)


@functools.cache
def default_tables() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parent / "data" / "v2-to-fhir.yaml").read_text(encoding="utf-8"))


def mapping_tables(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The packaged tables, with a site's `mllp: mapping:` merged over them."""
    tables = default_tables()
    return merge(copy.deepcopy(tables), overrides) if overrides else tables


class ResultShape(NamedTuple):
    """An OBX's content besides its value and time (shared by the Observations built from it)."""

    value_type: str  # OBX-2, upper case
    status: str
    code: dict[str, Any]
    category: list[Any]
    unit: dict[str, str]  # Quantity's unit, system and code ({} without OBX-6)
    interpretation: list[Any] | None
    ranges: list[Any] | None


class MappingResult:
    """What a message changed: "Type/id" per write, and warnings worth journaling."""

    __slots__ = ("warnings", "written")

    def __init__(self) -> None:
        self.written: tuple[str, ...] = ()
        self.warnings: list[str] = []


_last_full_timestamp: tuple[str | None, str] = (None, "")  # (raw, FHIR) of the last full-form one read


def v2_datetime(value: str, default_tz: str, where: tuple[str, int], warnings: list[str]) -> str:
    """A v2 DTM/TS as a FHIR dateTime. A time without a zone gets `default_tz` (and a warning)."""
    global _last_full_timestamp
    if value == _last_full_timestamp[0]:  # OBR-7 and OBX-14 usually repeat MSH-7's instant
        return _last_full_timestamp[1]
    raw = value
    value = value.strip()
    if (
        len(value) == 19
        and value[14] in "+-"
        and value.isascii()
        and value[:14].isdigit()
        and value[15:].isdigit()
    ):
        # The usual full form, YYYYMMDDHHMMSS+ZZZZ, sliced without the regex (once per OBX).
        v = value
        out = f"{v[:4]}-{v[4:6]}-{v[6:8]}T{v[8:10]}:{v[10:12]}:{v[12:14]}{v[14:17]}:{v[17:]}"
        _last_full_timestamp = (raw, out)
        return out
    m = _TS.match(value)
    if not m:
        raise HL7Error(
            DATA_TYPE_ERROR,
            f"{where[0]}-{where[1]} '{value}' is not a v2 timestamp",
            where[0],
            field=where[1],
        )
    year, month, day, hour, minute, second, zone = m.groups()
    out = year
    if month:
        out += f"-{month}"
    if day:
        out += f"-{day}"
    if hour is None:
        return out
    if not day:
        raise HL7Error(
            DATA_TYPE_ERROR,
            f"{where[0]}-{where[1]} '{value}' has a time but no day",
            where[0],
            field=where[1],
        )
    out += f"T{hour}:{minute or '00'}:{second or '00'}"
    if zone is None:
        warnings.append(f"{where[0]}-{where[1]} '{value}' has no time zone; read as {default_tz}")
        return out + default_tz
    return out + f"{zone[:3]}:{zone[3:]}"


def _memo(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    """Keep `value` under `key` in a bounded memo (cleared when full: the inputs are codes, units and
    identifiers, which repeat, so a clear costs one miss per distinct input)."""
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = value
    return value


_MEMO_SIZE = 4096
# The fields an OBX's `ResultShape` and an OBR's code and status are read from.
_RESULT_FIELDS = (operator.itemgetter(2, 3, 6, 7, 8, 11), 12)
_REPORT_FIELDS = (operator.itemgetter(4, 25), 26)


def memoized_shape(
    memo: dict[tuple[Any, ...], Any],
    picked: tuple[Callable[[list[str]], tuple[str, ...]], int],
    seg: Segment,
    message: Message,
    build: Callable[[Segment, Message], Any],
) -> Any:
    """`build(seg, message)`, memoized on the raw text of the fields `picked` takes (a getter and
    the length it needs) and of the sender, MSH-3 and MSH-4 (local codes get its system). Shared
    by the resources built from it: never change it in place."""
    fields = seg.fields
    pick, length = picked
    if seg.enc is not DEFAULT_ENCODING or len(fields) < length:
        return build(seg, message)
    msh = message.msh.fields
    key = (pick(fields), msh[3] if len(msh) > 3 else "", msh[4] if len(msh) > 4 else "")
    try:
        return memo[key]
    except KeyError:
        return _memo(memo, key, build(seg, message))


class V2Mapper:
    """Maps one site's inbound v2 messages to FHIR writes through its `FhirService`."""

    def __init__(
        self,
        service: FhirService,
        tables: dict[str, Any] | None = None,
        merge_as: str = "link",
        default_timezone: str = "+00:00",
    ) -> None:
        self.service = service
        self.tables = tables or default_tables()
        self.merge_as = merge_as
        self.default_tz = default_timezone
        self.vital_codes = frozenset(str(c) for c in self.tables.get("vital_signs_codes", []))
        self.patients = IdentifierIndex(service, "Patient")
        self.encounters = IdentifierIndex(service, "Encounter")
        # Derived from raw field text and shared by the resources built from it, which the store
        # never changes in place (writers copy before changing): codes, units, patient references.
        self._concepts: dict[tuple[str, ...], dict[str, Any] | None] = {}
        self._shapes: dict[tuple[Any, ...], ResultShape] = {}
        self._report_shapes: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}
        self._patient_keys: dict[str, list[tuple[str, str]]] = {}
        self._subjects: dict[str, dict[str, str]] = {}
        self._categories = {
            name: [{"coding": [{"system": OBS_CATEGORY, "code": name, "display": display}]}]
            for name, display in (("vital-signs", "Vital Signs"), ("laboratory", "Laboratory"))
        }
        # These modules build on this one, hence imported here.
        from simulator.mllp.documents import DocumentMapping
        from simulator.mllp.immunizations import ImmunizationMapping
        from simulator.mllp.orders import OrderMapping
        from simulator.mllp.scheduling import SchedulingMapping

        self.orders = OrderMapping(self)
        self.documents = DocumentMapping(self)
        self.immunizations = ImmunizationMapping(self)
        self.scheduling = SchedulingMapping(self)
        self.handlers: dict[str, Callable[[Message, MappingResult], list[Write]]] = {
            "ADT^A01": self.admit,
            "ADT^A04": self.admit,
            "ADT^A08": self.update_patient,
            "ADT^A28": self.update_patient,
            "ADT^A31": self.update_patient,
            "ADT^A02": self.transfer,
            "ADT^A03": self.discharge,
            "ADT^A40": self.merge_patients,
            "ORU^R01": self.results,
            "ORM^O01": self.orders.apply,
            "OML^O21": self.orders.apply,
            "MDM^T01": self.documents.apply,
            "MDM^T02": self.documents.apply,
            "MDM^T03": self.documents.apply,
            "MDM^T04": self.documents.apply,
            "MDM^T05": self.documents.apply,
            "MDM^T06": self.documents.apply,
            "MDM^T07": self.documents.apply,
            "MDM^T08": self.documents.apply,
            "MDM^T09": self.documents.apply,
            "MDM^T10": self.documents.apply,
            "MDM^T11": self.documents.apply,
            "VXU^V04": self.immunizations.apply,
            "SIU^S12": self.scheduling.apply,
            "SIU^S13": self.scheduling.apply,
            "SIU^S14": self.scheduling.apply,
            "SIU^S15": self.scheduling.apply,
            "SIU^S16": self.scheduling.apply,
            "SIU^S17": self.scheduling.apply,
            "SIU^S26": self.scheduling.apply,
        }

    def close(self) -> None:
        self.patients.close()
        self.encounters.close()
        self.orders.close()
        self.documents.close()
        self.immunizations.close()
        self.scheduling.close()

    def reindex(self) -> None:
        """Rebuild the identifier indexes from the store (after the sandbox's reset)."""
        self.close()
        self.patients = IdentifierIndex(self.service, "Patient")
        self.encounters = IdentifierIndex(self.service, "Encounter")
        self.orders.reindex()
        self.documents.reindex()
        self.immunizations.reindex()
        self.scheduling.reindex()

    def supports(self, message: Message) -> bool:
        return message.message_type in self.handlers

    def apply(self, message: Message) -> MappingResult:
        result = MappingResult()
        handler = self.handlers.get(message.message_type)
        if handler is None:
            known = sorted({t.split("^")[0] for t in self.handlers})
            if message.message_code in known:
                raise HL7Error(
                    UNSUPPORTED_EVENT_CODE,
                    f"{_spaced(message.message_type)} is not mapped to FHIR here "
                    f"(mapped: {', '.join(_spaced(t) for t in sorted(self.handlers))})",
                    "MSH",
                    field=9,
                    component=2,
                    reject=True,
                )
            raise HL7Error(
                UNSUPPORTED_MESSAGE_TYPE,
                f"message type '{_spaced(message.message_type)}' is not mapped to FHIR here",
                "MSH",
                field=9,
                reject=True,
            )
        writes = handler(message, result)
        if writes:
            try:
                versions = self.service.commit(writes)
            except FHIRError as exc:  # e.g. the site does not offer Encounter
                raise HL7Error(207, f"the FHIR store refused the mapped resources: {exc}") from None
            result.written = tuple([f"{v.type}/{v.id}" for v in versions])
        return result

    # -- tables ----------------------------------------------------------------------------------
    def _facility(self, message: Message) -> str:
        return message.msh.value(4, 1) or message.msh.value(3, 1) or "unknown"

    def concept(self, seg: Segment, n: int, message: Message, rep: int = 0) -> dict[str, Any] | None:
        """A CWE/CE field as a CodeableConcept; local codes keep their own (local) system.

        Shared between the resources that carry the same code: never change it in place."""
        if seg.enc is not DEFAULT_ENCODING:
            return self._concept(seg, n, message, rep)
        msh = message.msh.fields
        key = (seg[n], str(rep), msh[3] if len(msh) > 3 else "", msh[4] if len(msh) > 4 else "")
        try:
            return self._concepts[key]
        except KeyError:
            return _memo(self._concepts, key, self._concept(seg, n, message, rep))

    def _concept(self, seg: Segment, n: int, message: Message, rep: int) -> dict[str, Any] | None:
        parts = seg.components(n, rep)
        if not parts or not any(parts):
            return None
        codings = []
        for offset in (0, 3):  # identifier/text/system, then the alternate triplet
            code = parts[offset] if len(parts) > offset else ""
            if not code:
                continue
            display = parts[offset + 1] if len(parts) > offset + 1 else ""
            v2_system = parts[offset + 2] if len(parts) > offset + 2 else ""
            codings.append(
                {
                    "system": self.system_for(v2_system, message),
                    "code": code,
                    **({"display": display} if display else {}),
                }
            )
        text = parts[1] if len(parts) > 1 and parts[1] else (parts[8] if len(parts) > 8 else "")
        concept: dict[str, Any] = {}
        if codings:
            concept["coding"] = codings
        if text:
            concept["text"] = text
        return concept or None

    def system_for(self, v2_system: str, message: Message) -> str:
        known = self.tables["coding_systems"].get(v2_system.upper()) if v2_system else None
        if known:
            return known
        local = self.tables["local_system"].format(facility=_uri_part(self._facility(message)))
        return f"{local}:{_uri_part(v2_system)}" if v2_system else local

    def identifier_system(self, namespace: str, universal: str, universal_type: str) -> str:
        known = self.tables["assigning_authorities"].get(namespace) if namespace else None
        if known:
            return known
        if universal and universal_type.upper() == "ISO":
            return f"urn:oid:{universal}"
        if namespace:
            return f"urn:ehrsim:id:{_uri_part(namespace)}"
        return "urn:ehrsim:id:unknown"

    def identifiers(self, seg: Segment, n: int) -> list[dict[str, Any]]:
        """CX repetitions as FHIR Identifiers (value, system from the assigning authority, type)."""
        out = []
        enc = seg.enc
        for rep in seg.repetitions(n):
            parts = rep.split(enc.component)
            value = seg.unescape(parts[0])
            if not value:
                continue
            authority = parts[3].split(enc.subcomponent) if len(parts) > 3 else [""]
            authority += ["", ""]
            ident: dict[str, Any] = {
                "system": self.identifier_system(
                    seg.unescape(authority[0]), seg.unescape(authority[1]), authority[2]
                ),
                "value": value,
            }
            type_code = parts[4] if len(parts) > 4 else ""
            if type_code:
                ident["type"] = {"coding": [{"system": V2_0203, "code": seg.unescape(type_code)}]}
            out.append(ident)
        return out

    def patient_keys(self, pid: Segment) -> list[tuple[str, str]]:
        """(system, value) of each PID-3 identifier, memoized on the field's text."""
        raw = pid[3]
        keys = self._patient_keys.get(raw) if pid.enc is DEFAULT_ENCODING else None
        if keys is None:
            keys = [(i["system"], i["value"]) for i in self.identifiers(pid, 3)]
            if pid.enc is DEFAULT_ENCODING:
                _memo(self._patient_keys, raw, keys)
        return keys

    def subject(self, patient_id: str) -> dict[str, str]:
        """The reference to a patient, one dict per patient (shared: never change it in place)."""
        ref = self._subjects.get(patient_id)
        if ref is None:
            ref = _memo(self._subjects, patient_id, {"reference": f"Patient/{patient_id}"})
        return ref

    # -- Patient ---------------------------------------------------------------------------------
    def find_patient(self, identifiers: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The stored Patient with any of these identifiers (not a copy: copy before changing it)."""
        for ident in identifiers:
            found = self.patients.find(ident["system"], ident["value"])
            if found is not None:
                return found
        return None

    def patient_fields(self, pid: Segment, message: Message, warnings: list[str]) -> dict[str, Any]:
        """The Patient elements PID carries (only the ones present, so an update keeps the rest)."""
        out: dict[str, Any] = {}
        names = []
        for rep in range(len(pid.repetitions(5))):
            parts = pid.components(5, rep)
            family = parts[0].split(pid.enc.subcomponent)[0] if parts else ""
            given = [g for g in parts[1:3] if g] if len(parts) > 1 else []
            if not family and not given:
                continue
            name: dict[str, Any] = {}
            if family:
                name["family"] = family
            if given:
                name["given"] = given
            if len(parts) > 4 and parts[4]:
                name["prefix"] = [parts[4]]
            if len(parts) > 3 and parts[3]:
                name["suffix"] = [parts[3]]
            name["use"] = "official" if not names else "usual"
            names.append(name)
        if names:
            out["name"] = names
        birth = pid.value(7)
        if birth:
            out["birthDate"] = v2_datetime(birth[:8], self.default_tz, ("PID", 7), warnings)[:10]
        sex = pid.value(8)
        if sex:
            gender = self.tables["gender"].get(sex.upper())
            if gender is None:
                raise HL7Error(
                    TABLE_VALUE_NOT_FOUND,
                    f"PID-8 administrative sex '{sex}' is not in table 0001 "
                    f"({', '.join(self.tables['gender'])})",
                    "PID",
                    field=8,
                )
            out["gender"] = gender
        addresses = []
        for rep in range(len(pid.repetitions(11))):
            parts = pid.components(11, rep) + [""] * 6
            line = [p.split(pid.enc.subcomponent)[0] for p in parts[:2] if p]
            address = {
                k: v
                for k, v in (
                    ("city", parts[2]),
                    ("state", parts[3]),
                    ("postalCode", parts[4]),
                    ("country", parts[5]),
                )
                if v
            }
            if line:
                address["line"] = line
            if address:
                addresses.append(address)
        if addresses:
            out["address"] = addresses
        telecom = []
        for rep in range(len(pid.repetitions(13))):
            parts = pid.components(13, rep) + [""] * 7
            if parts[3] and "@" in parts[3]:
                telecom.append({"system": "email", "value": parts[3]})
            elif parts[0] or parts[6]:
                number = parts[0] or f"{parts[5]}{parts[6]}"
                telecom.append({"system": "phone", "value": number, "use": "home"})
        if telecom:
            out["telecom"] = telecom
        return out

    def upsert_patient(
        self, message: Message, result: MappingResult, writes: list[Write], create_only: bool = False
    ) -> str:
        """Find the PID's patient by any PID-3 identifier; create it or (unless `create_only`) update."""
        pid = message.segment("PID")
        if pid is None:
            raise HL7Error(SEGMENT_SEQUENCE_ERROR, f"{message.message_type} needs a PID segment", "PID")
        if create_only:  # the common case (results for a known patient): look up, build nothing
            for system, value in self.patient_keys(pid):
                found = self.patients.find_id(system, value)
                if found is not None:
                    return found
        identifiers = self.identifiers(pid, 3)
        if not identifiers:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "PID-3 patient identifier list is empty; ehrsim identifies patients by it",
                "PID",
                sequence=pid.occurrence,
                field=3,
            )
        # (create_only: the keys above found nobody, so there is nobody to find again)
        existing = None if create_only else self.find_patient(identifiers)
        if existing is not None:
            existing = copy.deepcopy(existing)
        fields = self.patient_fields(pid, message, result.warnings)
        if existing is None:
            patient = {"resourceType": "Patient", "identifier": identifiers, "active": True, **fields}
            patient["id"] = self.service.site.ids.new_id("Patient")
            writes.append(Write("Patient", patient["id"], patient, "POST"))
            return patient["id"]
        known = {(i.get("system"), i.get("value")) for i in existing.get("identifier", [])}
        existing["identifier"] = existing.get("identifier", []) + [
            i for i in identifiers if (i["system"], i["value"]) not in known
        ]
        existing.update(fields)
        writes.append(Write("Patient", existing["id"], existing, "PUT"))
        return existing["id"]

    # -- ADT -------------------------------------------------------------------------------------
    def _event_time(self, message: Message, warnings: list[str]) -> str | None:
        evn = message.segment("EVN")
        if evn is not None and evn.value(2):
            return v2_datetime(evn.value(2), self.default_tz, ("EVN", 2), warnings)
        stamp = message.msh.value(7)
        return v2_datetime(stamp, self.default_tz, ("MSH", 7), warnings) if stamp else None

    def _visit_identifier(self, pv1: Segment, message: Message) -> dict[str, Any] | None:
        idents = self.identifiers(pv1, 19)
        if not idents:
            return None
        ident = idents[0]
        if ident["system"] == "urn:ehrsim:id:unknown":
            ident["system"] = f"urn:ehrsim:visit:{_uri_part(self._facility(message))}"
        return ident

    def _find_encounter(self, ident: dict[str, Any]) -> dict[str, Any] | None:
        found = self.encounters.find(ident["system"], ident["value"])
        return copy.deepcopy(found) if found is not None else None

    def admit(self, message: Message, result: MappingResult) -> list[Write]:
        writes: list[Write] = []
        patient_id = self.upsert_patient(message, result, writes)
        pv1 = message.segment("PV1")
        if pv1 is None:
            raise HL7Error(SEGMENT_SEQUENCE_ERROR, f"{message.message_type} needs a PV1 segment", "PV1")
        patient_class = pv1.value(2)
        klass = self.tables["patient_class"].get(patient_class.upper()) if patient_class else None
        if klass is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING if not patient_class else TABLE_VALUE_NOT_FOUND,
                f"PV1-2 patient class '{patient_class}' does not map to an Encounter class "
                f"(known: {', '.join(self.tables['patient_class'])})",
                "PV1",
                sequence=pv1.occurrence,
                field=2,
            )
        ident = self._visit_identifier(pv1, message)
        encounter = (self._find_encounter(ident) if ident else None) or {"resourceType": "Encounter"}
        encounter.update(
            {
                "status": self.tables["encounter_status"][message.trigger]
                or encounter.get("status", "unknown"),
                "class": {"system": ACT_CODE, "code": klass["code"], "display": klass["display"]},
                "subject": {"reference": f"Patient/{patient_id}"},
            }
        )
        if ident:
            encounter["identifier"] = [ident]
        start = pv1.value(44)
        start = v2_datetime(start, self.default_tz, ("PV1", 44), result.warnings) if start else None
        start = start or self._event_time(message, result.warnings)
        if start:
            encounter["period"] = {"start": start}
        location = pv1.components(3)
        if location and any(location[:3]):
            display = " ".join(p.split(pv1.enc.subcomponent)[0] for p in location[:3] if p)
            encounter["location"] = [{"location": {"display": display}}]
        doctor = pv1.components(7)
        if len(doctor) > 2 and (doctor[1] or doctor[2]):
            encounter["participant"] = [
                {
                    "individual": {
                        "display": " ".join(
                            p for p in (doctor[2], doctor[1].split(pv1.enc.subcomponent)[0]) if p
                        )
                    }
                }
            ]
        self._put(encounter, writes)
        return writes

    def update_patient(self, message: Message, result: MappingResult) -> list[Write]:
        writes: list[Write] = []
        self.upsert_patient(message, result, writes)
        return writes

    def transfer(self, message: Message, result: MappingResult) -> list[Write]:
        """A02: the encounter moves to PV1-3 (the previous location is kept as completed)."""
        writes: list[Write] = []
        self.upsert_patient(message, result, writes, create_only=True)
        pv1, encounter = self._visit(message)
        location = pv1.components(3)
        if not location or not any(location[:3]):
            raise HL7Error(
                REQUIRED_FIELD_MISSING, "PV1-3 new location is empty", "PV1", sequence=pv1.occurrence, field=3
            )
        display = " ".join(p.split(pv1.enc.subcomponent)[0] for p in location[:3] if p)
        moves = [{**loc, "status": "completed"} for loc in encounter.get("location", [])]
        encounter["location"] = [*moves, {"location": {"display": display}, "status": "active"}]
        self._put(encounter, writes)
        return writes

    def _visit(self, message: Message) -> tuple[Segment, dict[str, Any]]:
        """PV1 and the encounter its PV1-19 visit number names (AE when either is missing)."""
        pv1 = message.segment("PV1")
        ident = self._visit_identifier(pv1, message) if pv1 is not None else None
        if pv1 is None or ident is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                f"PV1-19 visit number is needed to find the encounter ({message.message_type.replace('^', ' ')})",
                "PV1",
                sequence=pv1.occurrence if pv1 else 1,
                field=19,
            )
        encounter = self._find_encounter(ident)
        if encounter is None:
            raise HL7Error(
                UNKNOWN_KEY,
                f"no encounter has visit number {ident['value']} ({ident['system']}); admit it first",
                "PV1",
                sequence=pv1.occurrence,
                field=19,
            )
        return pv1, encounter

    def discharge(self, message: Message, result: MappingResult) -> list[Write]:
        writes: list[Write] = []
        patient_id = self.upsert_patient(message, result, writes)
        pv1, encounter = self._visit(message)
        end = pv1.value(45)
        end = v2_datetime(end, self.default_tz, ("PV1", 45), result.warnings) if end else None
        end = end or self._event_time(message, result.warnings)
        encounter["status"] = "finished"
        encounter["subject"] = {"reference": f"Patient/{patient_id}"}
        if end:
            encounter.setdefault("period", {})["end"] = end
        self._put(encounter, writes)
        return writes

    def merge_patients(self, message: Message, result: MappingResult) -> list[Write]:
        writes: list[Write] = []
        mrg = message.segment("MRG")
        if mrg is None:
            raise HL7Error(SEGMENT_SEQUENCE_ERROR, "ADT^A40 needs an MRG segment", "MRG")
        prior_ids = self.identifiers(mrg, 1)
        if not prior_ids:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "MRG-1 prior patient identifier is empty",
                "MRG",
                sequence=mrg.occurrence,
                field=1,
            )
        prior = self.find_patient(prior_ids)
        prior = copy.deepcopy(prior) if prior is not None else None
        if prior is None:
            raise HL7Error(
                UNKNOWN_KEY,
                f"no patient has prior identifier {prior_ids[0]['value']} ({prior_ids[0]['system']})",
                "MRG",
                sequence=mrg.occurrence,
                field=1,
            )
        survivor_id = self.upsert_patient(message, result, writes)
        if survivor_id == prior["id"]:
            raise HL7Error(
                DUPLICATE_KEY,
                "MRG-1 and PID-3 name the same patient; nothing to merge",
                "MRG",
                sequence=mrg.occurrence,
                field=1,
            )
        survivor = writes[-1].resource if writes and writes[-1].id == survivor_id else None
        if survivor is None:
            survivor = copy.deepcopy(self.service.site.store.read("Patient", survivor_id).resource)
            writes.append(Write("Patient", survivor_id, survivor, "PUT"))
        known = {(i.get("system"), i.get("value")) for i in survivor.get("identifier", [])}
        for ident in prior.get("identifier", []):
            if (ident.get("system"), ident.get("value")) not in known:
                survivor.setdefault("identifier", []).append({**ident, "use": "old"})
        if self.merge_as == "delete":
            writes.append(Write("Patient", prior["id"], None, "DELETE"))
        else:  # "link": FHIR's own representation (Patient.link replaced-by / replaces)
            survivor.setdefault("link", []).append(
                {"other": {"reference": f"Patient/{prior['id']}"}, "type": "replaces"}
            )
            prior["active"] = False
            prior["link"] = [{"other": {"reference": f"Patient/{survivor_id}"}, "type": "replaced-by"}]
            writes.append(Write("Patient", prior["id"], prior, "PUT"))
        return writes

    def _put(self, resource: dict[str, Any], writes: list[Write]) -> None:
        rtype = resource["resourceType"]
        if "id" in resource:
            writes.append(Write(rtype, resource["id"], resource, "PUT"))
        else:
            rid = resource["id"] = self.service.site.ids.new_id(rtype)
            writes.append(make_write((rtype, rid, resource, "POST")))

    # -- ORU -------------------------------------------------------------------------------------
    def results(self, message: Message, result: MappingResult) -> list[Write]:
        writes: list[Write] = []
        patient_id = self.upsert_patient(message, result, writes, create_only=True)
        subject = self.subject(patient_id)
        report: dict[str, Any] | None = None
        obr: Segment | None = None
        for seg in message.segments:
            name = seg.name
            if name == "OBR":
                obr = seg
                report = self.report(seg, message, subject, result.warnings)
                self._put(report, writes)
            elif name == "OBX":
                if seg[2] == "ED":
                    if report is None:
                        raise HL7Error(
                            SEGMENT_SEQUENCE_ERROR,
                            "an OBX of type ED (a document) must follow an OBR",
                            "OBX",
                            sequence=seg.occurrence,
                        )
                    report.setdefault("presentedForm", []).append(self.attachment(seg))
                    continue
                observation = self.observation(seg, obr, message, subject, result.warnings)
                if report is not None and "basedOn" in report:
                    observation["basedOn"] = report["basedOn"]  # shared: never changed in place
                self._put(observation, writes)
                if report is not None:
                    report.setdefault("result", []).append({"reference": f"Observation/{observation['id']}"})
        if report is None and not any(w.type == "Observation" for w in writes):
            raise HL7Error(SEGMENT_SEQUENCE_ERROR, "ORU^R01 carries no OBR or OBX segment", "OBR")
        return writes

    def report(
        self, obr: Segment, message: Message, subject: dict[str, str], warnings: list[str]
    ) -> dict[str, Any]:
        code, status = memoized_shape(self._report_shapes, _REPORT_FIELDS, obr, message, self._report_shape)
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "status": status,
            "category": _LAB_REPORT,
            "code": code,
            "subject": subject,
        }
        filler = obr.value(3)
        if filler:
            namespace = obr.value(3, 2) or self._facility(message)
            report["identifier"] = [{"system": order_number_system("filler", namespace), "value": filler}]
        observed = obr.value(7)
        if observed:
            report["effectiveDateTime"] = v2_datetime(observed, self.default_tz, ("OBR", 7), warnings)
        based_on = self.orders.based_on(obr, message)
        if based_on is not None:
            report["basedOn"] = based_on
        return report

    def _report_shape(self, obr: Segment, message: Message) -> tuple[dict[str, Any], str]:
        """OBR-4 as the report's code and OBR-25 as its status."""
        code = self.concept(obr, 4, message)
        if code is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "OBR-4 universal service identifier is empty; a DiagnosticReport needs a code",
                "OBR",
                sequence=obr.occurrence,
                field=4,
            )
        status_code = obr.value(25)
        status = self.tables["report_status"].get(status_code.upper(), None) if status_code else "unknown"
        if status is None:
            raise HL7Error(
                TABLE_VALUE_NOT_FOUND,
                f"OBR-25 result status '{status_code}' is not in table 0123",
                "OBR",
                sequence=obr.occurrence,
                field=25,
            )
        return code, status

    def attachment(self, obx: Segment) -> dict[str, Any]:
        parts = obx.components(5)
        parts += [""] * (5 - len(parts))
        subtype, encoding, data = parts[2], parts[3].lower(), parts[4]
        content_type = {"pdf": "application/pdf"}.get(subtype.lower(), "application/octet-stream")
        attachment: dict[str, Any] = {"contentType": content_type}
        if encoding == "base64" and data:
            attachment["data"] = data
        return attachment

    def observation(
        self,
        obx: Segment,
        obr: Segment | None,
        message: Message,
        subject: dict[str, str],
        warnings: list[str],
    ) -> dict[str, Any]:
        shape: ResultShape = memoized_shape(self._shapes, _RESULT_FIELDS, obx, message, self._result_shape)
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "status": shape.status,
            "category": shape.category,
            "code": shape.code,
            "subject": subject,
        }
        value = self.value(obx, message, shape)
        if value is not None:
            observation[value[0]] = value[1]
        when = obx.value(14)
        if when:
            observation["effectiveDateTime"] = v2_datetime(when, self.default_tz, ("OBX", 14), warnings)
        elif obr is not None and (when := obr.value(7)):
            observation["effectiveDateTime"] = v2_datetime(when, self.default_tz, ("OBR", 7), warnings)
        if shape.interpretation:
            observation["interpretation"] = shape.interpretation
        if shape.ranges:
            observation["referenceRange"] = shape.ranges
        return observation

    def _result_shape(self, obx: Segment, message: Message) -> ResultShape:
        """What an OBX says besides its value and time (a device sends the same code, unit,
        range and status message after message)."""
        where = obx.occurrence
        code = self.concept(obx, 3, message)
        if code is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "OBX-3 observation identifier is empty",
                "OBX",
                sequence=where,
                field=3,
            )
        # Vital signs when a LOINC coding is a vital sign, else laboratory.
        loinc = next((c["code"] for c in code.get("coding", []) if c["system"] == "http://loinc.org"), None)
        category = self._categories["vital-signs" if loinc in self.vital_codes else "laboratory"]
        status_code = obx.value(11)
        status = self.tables["observation_status"].get(status_code.upper()) if status_code else None
        if status is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING if not status_code else TABLE_VALUE_NOT_FOUND,
                f"OBX-11 result status '{status_code}' does not map to Observation.status (table 0085)",
                "OBX",
                sequence=where,
                field=11,
            )
        interpretation = None
        flag = obx.value(8)
        interp = self.tables["interpretation"].get(flag.upper()) if flag else None
        if interp:
            coding = {"system": INTERPRETATION, "code": interp["code"], "display": interp["display"]}
            interpretation = [{"coding": [coding]}]
        reference_range = obx.value(7)
        return ResultShape(
            value_type=obx.value(2).upper(),
            status=status,
            code=code,
            category=category,
            unit=self.unit(obx),
            interpretation=interpretation,
            ranges=[{"text": reference_range}] if reference_range else None,
        )

    def value(self, obx: Segment, message: Message, shape: ResultShape) -> tuple[str, Any] | None:
        """OBX-5 as the Observation's value[x]: (element name, value), None when OBX-5 is empty."""
        raw = obx[5]
        if not raw:
            return None
        value_type = shape.value_type
        where = obx.occurrence
        if value_type == "NM":
            text = obx.value(5).strip()
            number = _plain_number(text)
            if number is None:
                try:
                    number = Decimal(text)
                except InvalidOperation:
                    raise HL7Error(
                        DATA_TYPE_ERROR,
                        f"OBX-5 '{text}' is not a number (OBX-2 is NM)",
                        "OBX",
                        sequence=where,
                        field=5,
                    ) from None
            return "valueQuantity", self.quantity(number, shape.unit, obx)
        if value_type in ("ST", "TX", "FT", "RP"):
            return "valueString", "\n".join(obx.unescape(r) for r in obx.repetitions(5))
        if value_type in ("CE", "CWE", "CNE", "CF"):
            return "valueCodeableConcept", self.concept(obx, 5, message)
        if value_type in ("DT", "TS", "DTM"):
            return "valueDateTime", v2_datetime(obx.value(5), self.default_tz, ("OBX", 5), [])
        if value_type == "SN":
            parts = [*obx.components(5), "", "", "", ""]
            comparator, number = parts[0], parts[1]
            if parts[2] or comparator not in ("", "<", ">", "<=", ">="):
                return "valueString", "".join(parts[:4])
            try:
                quantity = self.quantity(Decimal(number), shape.unit, obx)
            except InvalidOperation:
                raise HL7Error(
                    DATA_TYPE_ERROR,
                    f"OBX-5 '{number}' is not a structured number",
                    "OBX",
                    sequence=where,
                    field=5,
                ) from None
            if comparator:
                quantity["comparator"] = comparator
            return "valueQuantity", quantity
        raise HL7Error(
            TABLE_VALUE_NOT_FOUND,
            f"OBX-2 value type '{value_type}' is not mapped to an Observation value "
            "(mapped: NM, SN, ST, TX, FT, RP, CE, CWE, CNE, CF, DT, TS, DTM; ED goes to the report)",
            "OBX",
            sequence=where,
            field=2,
        )

    @staticmethod
    def quantity(number: Decimal | int | float, unit: dict[str, str], obx: Segment) -> dict[str, Any]:
        """A Quantity of `number` (int when integral, else float) with `unit`'s fields."""
        if isinstance(number, Decimal):
            if not number.is_finite():
                raise HL7Error(
                    DATA_TYPE_ERROR,
                    f"OBX-5 '{number}' is not a finite number",
                    "OBX",
                    sequence=obx.occurrence,
                    field=5,
                )
            if number == number.to_integral_value() and number.as_tuple().exponent >= 0:  # type: ignore[operator]
                number = int(number)
            else:
                number = float(number)
        return {"value": number, **unit}

    def unit(self, obx: Segment) -> dict[str, str]:
        """OBX-6 as Quantity's unit, and its UCUM system and code where known."""
        out: dict[str, str] = {}
        unit = obx.value(6, 1)
        if unit:
            out["unit"] = obx.value(6, 2) or unit
            ucum = self.tables["units"].get(unit)
            if ucum is None and obx.value(6, 3).upper() in ("UCUM", "ISO+", "ANSI+"):
                ucum = unit
            if ucum is not None:
                out["system"] = UCUM
                out["code"] = ucum
        return out


def _plain_number(text: str) -> int | float | None:
    """The usual device value (digits, or digits.digits) without going through Decimal; None for
    anything else (signs, exponents, long values), which the caller reads as a Decimal."""
    if len(text) > 15 or not text.isascii():  # 15 digits: a float holds them exactly
        return None
    if text.isdigit():
        return int(text)
    whole, dot, fraction = text.partition(".")
    if dot and whole.isdigit() and fraction.isdigit():
        return float(text)  # the same double as float(Decimal(text)): both round correctly
    return None


def _spaced(message_type: str) -> str:
    """ "ADT^A01" as "ADT A01", so error texts need no escapes."""
    return message_type.replace("^", " ")


@functools.lru_cache(maxsize=1024)
def order_number_system(kind: str, namespace: str) -> str:
    """The identifier system of a placer or filler order number in its namespace (EI-2, or the
    sending facility): shared by orders (ServiceRequest) and results (DiagnosticReport)."""
    return f"urn:ehrsim:{kind}:{_uri_part(namespace)}"


@functools.lru_cache(maxsize=1024)
def _uri_part(text: str) -> str:
    # Facilities, namespaces and coding systems repeat message after message: memoized.
    return _NOT_URI.sub("-", text.strip()) or "unknown"


_NOT_URI = re.compile(r"[^A-Za-z0-9.\-_]+")


IdentifiedT = TypeVar("IdentifiedT", bound=tuple[Any, ...])  # (identifier, ...) as a family keeps it


class IndexedHandler:
    """A message family's handler on one site's `V2Mapper` (orders, documents, immunizations,
    scheduling) with an identifier index of the resource type it writes and finds again. The index
    is built at the family's first message: until then no commit listener runs for it, so a site
    that only takes ADT and ORU pays nothing on its hot path."""

    resource_type: str
    noun: str  # what the family stores, for the error when the site does not offer resource_type

    def __init__(self, mapper: V2Mapper) -> None:
        self.mapper = mapper
        self._index: IdentifierIndex | None = None

    @property
    def index(self) -> IdentifierIndex:
        if self._index is None:
            self._index = IdentifierIndex(self.mapper.service, self.resource_type)
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def reindex(self) -> None:
        """Forget the index (after the sandbox's reset): rebuilt from the store when next needed."""
        self.close()

    def typed_identifier(
        self, seg: Segment, n: int, type_code: str, kind: str, message: Message
    ) -> dict[str, Any] | None:
        """An EI field (placer or filler number, appointment id) as an identifier typed by table
        0203 (PLAC, FILL), its system named by `kind` and EI-2, else the sending facility; None
        when the field is empty."""
        value = seg.value(n)
        if not value:
            return None
        namespace = seg.value(n, 2) or self.mapper._facility(message)
        return {
            "type": {"coding": [{"system": V2_0203, "code": type_code}]},
            "system": order_number_system(kind, namespace),
            "value": value,
        }

    def typed_identifiers(
        self, seg: Segment | None, fields: tuple[tuple[int, str, str], ...], message: Message
    ) -> list[tuple[dict[str, Any], int]]:
        """`typed_identifier` of each (field, type code, kind) of `fields` that `seg` values, with
        the field it came from."""
        found = []
        for n, type_code, kind in fields if seg is not None else ():
            ident = self.typed_identifier(seg, n, type_code, kind, message)
            if ident is not None:
                found.append((ident, n))
        return found

    def find(
        self, numbered: Sequence[IdentifiedT], touched: Mapping[tuple[str, str], dict[str, Any]] | None = None
    ) -> tuple[dict[str, Any] | None, IdentifiedT | None]:
        """The resource one of these identifiers (each the first item of its tuple) names: one this
        message already writes (`touched`, by system and value), else a stored one (not a copy);
        with the tuple that found it. (None, None) when none does."""
        for item in numbered:
            ident = item[0]
            key = (ident["system"], ident["value"])
            found = (touched.get(key) if touched else None) or self.index.find(*key)
            if found is not None:
                return found, item
        return None, None

    def encounter(self, message: Message, warnings: list[str], element: str) -> dict[str, str] | None:
        """A reference to the encounter PV1-19 names, when it is known; else a warning that
        `element` is left out."""
        pv1 = message.segment("PV1")
        ident = self.mapper._visit_identifier(pv1, message) if pv1 is not None else None
        if ident is None:
            return None
        rid = self.mapper.encounters.find_id(ident["system"], ident["value"])
        if rid is None:
            warnings.append(
                f"PV1-19 visit number {ident['value']} ({ident['system']}) is not a known encounter; "
                f"{element} left out"
            )
            return None
        return {"reference": f"Encounter/{rid}"}

    def require_resource_type(self) -> None:
        """AE 207 when the site's resource_types leave out what this family writes."""
        site = self.mapper.service.site
        if not site.supports(self.resource_type):
            raise HL7Error(
                INTERNAL_ERROR,
                f"site '{site.id}' does not offer {self.resource_type} (its resource_types), "
                f"so {self.noun} cannot be stored",
                "MSH",
                field=9,
            )


def xcn_reference(seg: Segment, n: int, rep: int = 0) -> dict[str, Any] | None:
    """A person in an XCN (or PPN) field as a Reference: `display` "given family", `identifier.value`
    XCN-1; None when the repetition is empty."""
    parts = seg.components(n, rep)
    if not any(parts):
        return None
    parts = parts + [""] * 3
    family = parts[1].split(seg.enc.subcomponent)[0]
    reference: dict[str, Any] = {}
    display = " ".join(p for p in (parts[2], family) if p)
    if display:
        reference["display"] = display
    if parts[0]:
        reference["identifier"] = {"value": parts[0]}
    return reference or None
