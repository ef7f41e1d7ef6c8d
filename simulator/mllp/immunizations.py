"""HL7 v2 immunizations to FHIR R4 Immunization: VXU^V04 (v2.3.1-2.8, the CDC IIS guide's shape).

PID, then per administration an ORC (its identifier), an RXA (the dose), an optional RXR (route and
site) and OBX (funding, eligibility, the vaccine information statement shown). One Immunization per
RXA; RXA-21 (action code) says whether the message adds, replaces or deletes it, and the
`immunization` tables in data/v2-to-fhir.yaml say what the codes mean. An existing Immunization is
found by its ORC-3/ORC-2 number through an `IdentifierIndex`. The writes go into the message's
single commit (`V2Mapper.apply`): applied completely or not at all.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from simulator.mllp.er7 import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    HL7Error,
    Message,
    Segment,
)
from simulator.mllp.mapping import (
    UCUM,
    IndexedHandler,
    MappingResult,
    V2Mapper,
    v2_datetime,
    xcn_reference,
)
from simulator.store.base import Write

LOINC = "http://loinc.org"
ORIGIN = "http://terminology.hl7.org/CodeSystem/immunization-origin"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v2-0443"  # performer function: AP, OP

STATUSES = ("completed", "entered-in-error", "not-done")
ACTIONS = ("add", "update", "delete")
ORIGINS = ("provider", "record", "recall", "school")
ELEMENTS = (
    "fundingSource",
    "programEligibility",
    "education.documentType",
    "education.publicationDate",
    "education.presentationDate",
)
CODED = ("CE", "CWE", "CNE")
DATES = ("DT", "TS", "DTM")

# (ORC field, identifier type in table 0203, system prefix): the filler's number first.
NUMBERS = ((3, "FILL", "filler"), (2, "PLAC", "placer"))

Key = tuple[str, str]
_NM = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$", re.ASCII)


def check_tables(tables: dict[str, Any], where: str = "mllp.mapping.immunization") -> None:
    """The `immunization` tables name only FHIR codes and elements ehrsim writes (raises ValueError)."""
    section = tables.get("immunization") or {}

    def check(table: str, allowed: tuple[str, ...], pick: Any = None) -> None:
        for code, entry in (section.get(table) or {}).items():
            value = pick(entry) if pick is not None else entry
            if value not in allowed:
                raise ValueError(f"{where}.{table}.{code}: '{value}' is not one of {', '.join(allowed)}")

    check("completion_status", STATUSES, lambda e: e.get("status") if isinstance(e, dict) else e)
    check("action_code", ACTIONS)
    check("observations", ELEMENTS)
    for code, entry in (section.get("information_source") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("primarySource"), bool):
            raise ValueError(f"{where}.information_source.{code}: needs primarySource: true or false")
        if entry.get("reportOrigin") not in (None, *ORIGINS):
            raise ValueError(
                f"{where}.information_source.{code}.reportOrigin: "
                f"'{entry['reportOrigin']}' is not one of {', '.join(ORIGINS)}"
            )


@dataclass
class Administration:
    """One RXA, the ORC before it and the RXR and OBX after it."""

    rxa: Segment
    orc: Segment | None
    route: Segment | None = None
    observations: list[Segment] = field(default_factory=list)


def administrations_of(message: Message, warnings: list[str]) -> list[Administration]:
    """The message's RXAs with their ORC, RXR and OBX; AE when it has none."""
    out: list[Administration] = []
    orc: Segment | None = None
    current: Administration | None = None
    for seg in message.segments:
        name = seg.name
        if name == "ORC":
            orc, current = seg, None
        elif name == "RXA":
            if orc is not None and out and out[-1].orc is orc:
                raise HL7Error(
                    SEGMENT_SEQUENCE_ERROR,
                    f"RXA {seg.occurrence} shares ORC {orc.occurrence} with RXA {out[-1].rxa.occurrence}: "
                    "each administration needs its own ORC (its identifier)",
                    "RXA",
                    sequence=seg.occurrence,
                )
            current = Administration(seg, orc)
            out.append(current)
        elif name == "RXR" and current is not None and current.route is None:
            current.route = seg
        elif name == "OBX":
            if current is None:
                warnings.append(
                    f"OBX {seg.occurrence} ({seg.value(3)}) does not follow an RXA: not mapped to an Immunization"
                )
            else:
                current.observations.append(seg)
    if not out:
        raise HL7Error(
            SEGMENT_SEQUENCE_ERROR,
            "VXU V04 carries no RXA segment (pharmacy/treatment administration): no immunization to record",
            "RXA",
        )
    return out


class ImmunizationMapping(IndexedHandler):
    """The VXU^V04 handler of one site's `V2Mapper`, with its Immunization identifier index."""

    resource_type = "Immunization"
    noun = "immunizations"

    def __init__(self, mapper: V2Mapper) -> None:
        super().__init__(mapper)
        self.tables: dict[str, Any] = mapper.tables.get("immunization") or {}

    def apply(self, message: Message, result: MappingResult) -> list[Write]:
        """The writes of a VXU^V04: its patient and an Immunization per RXA."""
        self.require_resource_type()
        warnings = result.warnings
        administrations = administrations_of(message, warnings)
        actions = [self.action(a.rxa) for a in administrations]  # the message's own content first
        writes: list[Write] = []
        subject = encounter = None
        if any(action != "delete" for action in actions):  # a delete alone creates no patient
            subject = self.mapper.subject(self.mapper.upsert_patient(message, result, writes))
            encounter = self.encounter(message, warnings, "Immunization.encounter")
        touched: dict[Key, dict[str, Any]] = {}  # Immunizations this message already writes
        for administration, action in zip(administrations, actions, strict=True):
            numbers = self.typed_identifiers(administration.orc, NUMBERS, message)
            existing, _ = self.find(numbers, touched)
            if action != "add" or existing is not None:
                self.check_known(administration, action, numbers, existing, warnings)
            if action == "delete":
                assert existing is not None
                ours = any(existing is r for r in touched.values())
                immunization = existing if ours else copy.deepcopy(existing)
                immunization["status"] = "entered-in-error"
            else:
                immunization = self.immunization(administration, message, subject, encounter, warnings)
                identifiers = [ident for ident, _ in numbers]
                if existing is not None:  # a replacement keeps the id and any number it had
                    immunization["id"] = existing["id"]
                    new = {(i["system"], i["value"]) for i in identifiers}
                    identifiers += [
                        i
                        for i in existing.get("identifier", [])
                        if (i.get("system"), i.get("value")) not in new
                    ]
                if identifiers:
                    immunization["identifier"] = identifiers
            self.write(immunization, writes)
            for ident in immunization.get("identifier", []):
                touched[(ident["system"], ident["value"])] = immunization
        return writes

    def write(self, immunization: dict[str, Any], writes: list[Write]) -> None:
        """Add the Immunization to the writes, or replace this message's earlier write of it."""
        rid = immunization.get("id")
        for i, w in enumerate(writes):
            if w.type == "Immunization" and rid is not None and w.id == rid:
                writes[i] = Write(w.type, w.id, immunization, w.method)
                return
        self.mapper._put(immunization, writes)

    # -- RXA-21 and the identifier ---------------------------------------------------------------
    def action(self, rxa: Segment) -> str:
        code = rxa.value(21).strip().upper()
        if not code:
            return "add"
        table = self.tables["action_code"]
        action = table.get(code)
        if action is None:
            raise HL7Error(
                TABLE_VALUE_NOT_FOUND,
                f"RXA-21 action code '{code}' is not in table 0206 (mapped: {', '.join(table)})",
                "RXA",
                sequence=rxa.occurrence,
                field=21,
            )
        return action

    def check_known(
        self,
        administration: Administration,
        action: str,
        numbers: list[tuple[dict[str, Any], int]],
        existing: dict[str, Any] | None,
        warnings: list[str],
    ) -> None:
        """An update or delete names a known Immunization; a resent add updates it, with a warning."""
        rxa, orc = administration.rxa, administration.orc
        code = rxa.value(21).strip().upper()
        if not numbers:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                f"RXA-21 {code} ({action}) needs ORC-3 filler order number (or ORC-2) to name the immunization",
                "ORC" if orc is not None else "RXA",
                sequence=orc.occurrence if orc is not None else rxa.occurrence,
                field=3 if orc is not None else 21,
            )
        ident, n = numbers[0]
        if existing is None:
            raise HL7Error(
                UNKNOWN_KEY,
                f"no immunization has number {ident['value']} ({ident['system']}); "
                f"RXA-21 {code} ({action}) needs an existing one (send A first)",
                "ORC",
                sequence=orc.occurrence if orc is not None else 1,
                field=n,
            )
        if action == "add":
            warnings.append(
                f"RXA {rxa.occurrence}: immunization {ident['value']} ({ident['system']}) already exists as "
                f"Immunization/{existing.get('id', '(new)')}; the add (RXA-21 A) replaces it as an update"
            )

    # -- the Immunization ------------------------------------------------------------------------
    def immunization(
        self,
        administration: Administration,
        message: Message,
        subject: dict[str, str] | None,
        encounter: dict[str, str] | None,
        warnings: list[str],
    ) -> dict[str, Any]:
        """The Immunization one RXA (with its ORC, RXR and OBX) describes."""
        rxa, orc = administration.rxa, administration.orc
        vaccine = self.mapper.concept(rxa, 5, message)
        if vaccine is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "RXA-5 administered code is empty; an Immunization needs a vaccine code",
                "RXA",
                sequence=rxa.occurrence,
                field=5,
            )
        if not rxa.value(3):
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "RXA-3 date/time start of administration is empty; an Immunization needs its date",
                "RXA",
                sequence=rxa.occurrence,
                field=3,
            )
        completion = self.completion(rxa)
        immunization: dict[str, Any] = {
            "resourceType": "Immunization",
            "status": completion["status"],
            "vaccineCode": vaccine,
            "patient": subject,
            "occurrenceDateTime": self.when(rxa, 3, warnings),
        }
        if completion.get("isSubpotent"):
            immunization["isSubpotent"] = True
        reason = self.mapper.concept(rxa, 18, message)
        if reason is not None and completion["status"] == "not-done":
            immunization["statusReason"] = reason
        elif reason is not None:
            warnings.append(
                f"RXA {rxa.occurrence}: RXA-18 refusal reason with RXA-20 '{rxa.value(20)}' "
                f"({completion['status']}): statusReason left out"
            )
        if encounter is not None:
            immunization["encounter"] = encounter
        if rxa.value(22):
            immunization["recorded"] = self.when(rxa, 22, warnings)
        elif orc is not None and orc.value(9):
            immunization["recorded"] = self.when(orc, 9, warnings)
        immunization.update(self.source(rxa, warnings))
        location = rxa.value(11, 4)
        if location:
            immunization["location"] = {"display": location}
        manufacturer = self.manufacturer(rxa, message)
        if manufacturer is not None:
            immunization["manufacturer"] = manufacturer
        if rxa.value(15):
            immunization["lotNumber"] = rxa.value(15)
        if rxa.value(16):
            immunization["expirationDate"] = self.when(rxa, 16, warnings)[:10]
        rxr = administration.route
        if rxr is not None:
            for n, element in ((1, "route"), (2, "site")):
                concept = self.mapper.concept(rxr, n, message)
                if concept is not None:
                    immunization[element] = concept
        dose = self.dose(rxa, warnings)
        if dose is not None:
            immunization["doseQuantity"] = dose
        performers = [
            {"function": {"coding": [{"system": PARTICIPATION, "code": code}]}, "actor": actor}
            for seg, n, code in ((rxa, 10, "AP"), (orc, 12, "OP"))
            if seg is not None and (actor := xcn_reference(seg, n)) is not None
        ]
        if performers:
            immunization["performer"] = performers
        reasons = [
            c for rep in range(len(rxa.repetitions(19))) if (c := self.mapper.concept(rxa, 19, message, rep))
        ]
        if reasons:
            immunization["reasonCode"] = reasons
        self.observations(administration, immunization, message, warnings)
        return immunization

    def when(self, seg: Segment, n: int, warnings: list[str]) -> str:
        """A timestamp field as a FHIR dateTime; AE 102 that points at this segment's occurrence."""
        try:
            return v2_datetime(seg.value(n), self.mapper.default_tz, (seg.name, n), warnings)
        except HL7Error as exc:
            exc.sequence = seg.occurrence
            raise

    def completion(self, rxa: Segment) -> dict[str, Any]:
        """RXA-20 through table 0322; empty means completed (the IG's default)."""
        code = rxa.value(20).strip().upper()
        if not code:
            return {"status": "completed"}
        table = self.tables["completion_status"]
        entry = table.get(code)
        if entry is None:
            raise HL7Error(
                TABLE_VALUE_NOT_FOUND,
                f"RXA-20 completion status '{code}' is not in table 0322 (mapped: {', '.join(table)})",
                "RXA",
                sequence=rxa.occurrence,
                field=20,
            )
        return entry

    def source(self, rxa: Segment, warnings: list[str]) -> dict[str, Any]:
        """primarySource (and reportOrigin) from the first RXA-9 repetition in the NIP001 table."""
        table = self.tables["information_source"]
        codes = [rxa.value(9, rep=rep) for rep in range(len(rxa.repetitions(9)))]
        for code in codes:
            entry = table.get(code.strip())
            if entry is not None:
                out: dict[str, Any] = {"primarySource": entry["primarySource"]}
                if entry.get("reportOrigin"):
                    out["reportOrigin"] = {"coding": [{"system": ORIGIN, "code": entry["reportOrigin"]}]}
                return out
        if any(codes):
            warnings.append(
                f"RXA {rxa.occurrence}: RXA-9 '{', '.join(c for c in codes if c)}' is not an information "
                f"source (NIP001: {', '.join(table)}); primarySource left out"
            )
        return {}

    def manufacturer(self, rxa: Segment, message: Message) -> dict[str, Any] | None:
        """RXA-17 as a reference by display and identifier (the MVX code): no Organization is made."""
        code, name, v2_system = [*rxa.components(17), "", "", ""][:3]
        if not code and not name:
            return None
        reference: dict[str, Any] = {}
        if name:
            reference["display"] = name
        if code:
            reference["identifier"] = {"system": self.mapper.system_for(v2_system, message), "value": code}
        return reference

    def dose(self, rxa: Segment, warnings: list[str]) -> dict[str, Any] | None:
        """RXA-6 amount and RXA-7 units as doseQuantity (UCUM when known)."""
        amount = rxa.value(6).strip()
        if not amount:
            return None
        if amount in self.tables.get("unknown_amount", ()):
            warnings.append(
                f"RXA {rxa.occurrence}: RXA-6 amount {amount} means unknown; doseQuantity left out"
            )
            return None
        if len(amount) > 32 or not _NM.match(amount):  # v2 NM: digits, a sign and a point, no exponent
            raise HL7Error(
                DATA_TYPE_ERROR,
                f"RXA-6 administered amount '{amount}' is not a number",
                "RXA",
                sequence=rxa.occurrence,
                field=6,
            )
        unit: dict[str, str] = {}
        code = rxa.value(7, 1)
        if code:
            unit["unit"] = rxa.value(7, 2) or code
            ucum = self.tables.get("dose_units", {}).get(code) or self.mapper.tables["units"].get(code)
            if ucum is None and rxa.value(7, 3).upper() in ("UCUM", "ISO+", "ANSI+"):
                ucum = code
            if ucum is not None:
                unit["system"] = UCUM
                unit["code"] = ucum
        return V2Mapper.quantity(Decimal(amount), unit, rxa)

    def observations(
        self,
        administration: Administration,
        immunization: dict[str, Any],
        message: Message,
        warnings: list[str],
    ) -> None:
        """The OBX after the RXA whose LOINC code the `observations` table knows: funding source,
        eligibility and the VIS (education, one entry per OBX-4 sub-id). Others: a warning each."""
        table = self.tables["observations"]
        rxa = administration.rxa
        education: dict[str, dict[str, str]] = {}
        for obx in administration.observations:
            code = self.mapper.concept(obx, 3, message) or {}
            loinc = next((c["code"] for c in code.get("coding", []) if c["system"] == LOINC), None)
            element = table.get(loinc) if loinc else None
            where = f"OBX {obx.occurrence} ({loinc or obx.value(3)}) after RXA {rxa.occurrence}"
            if element is None:
                warnings.append(f"{where} is not mapped to the Immunization; left out")
                continue
            value_type = obx.value(2).upper()
            is_date = element.endswith("Date")
            if value_type not in (DATES if is_date else CODED) or not obx.value(5):
                expected = "a date (DT/TS)" if is_date else "a code (CE/CWE)"
                warnings.append(
                    f"{where} is {value_type or 'untyped'} '{obx.value(5)}', not {expected}; {element} left out"
                )
                continue
            if element == "fundingSource":
                immunization["fundingSource"] = self.mapper.concept(obx, 5, message)
            elif element == "programEligibility":
                immunization.setdefault("programEligibility", []).append(self.mapper.concept(obx, 5, message))
            elif element == "education.documentType":
                education.setdefault(obx.value(4), {})["documentType"] = obx.value(5, 2) or obx.value(5)
            else:
                date = self.when(obx, 5, warnings)
                education.setdefault(obx.value(4), {})[element.partition(".")[2]] = date
        for sub_id, entry in education.items():
            if "documentType" not in entry:  # FHIR's imm-1: a document type or reference
                warnings.append(
                    f"RXA {rxa.occurrence}: VIS dates (OBX-4 '{sub_id}') without a document type (69764-9 or "
                    "30956-7); education left out"
                )
                continue
            immunization.setdefault("education", []).append(entry)
