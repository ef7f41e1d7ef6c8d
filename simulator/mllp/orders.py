"""HL7 v2 orders to FHIR R4 ServiceRequest: ORM^O01 (v2.3-2.5) and OML^O21 (v2.5+).

Each ORC starts an order; the OBRs after it (up to the next ORC) are the services requested, one
ServiceRequest each, and the SPMs after an OBR its specimens (a Specimen each, in
`ServiceRequest.specimen`). ORC-1 (order control) says what the message does: create, cancel, hold,
release, change status or change the order, as the `order_control` table in data/v2-to-fhir.yaml
says. An existing order is found by its placer or filler number through an `IdentifierIndex`. The
writes go into the message's single commit (`V2Mapper.apply`): applied completely or not at all.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from simulator.fhir.values import is_instant
from simulator.mllp.er7 import (
    DUPLICATE_KEY,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    UNSUPPORTED_MESSAGE_TYPE,
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

# ORM^O01 order details other than OBR (supplies, medication, diet): not mapped, said so in the ERR.
UNMAPPED_DETAILS = {
    "RQD": "requisition detail",
    "RQ1": "requisition detail-1",
    "RXO": "pharmacy/treatment order",
    "ODS": "dietary order",
    "ODT": "diet tray instruction",
}

# (field of ORC and OBR, identifier type in table 0203, system prefix): placer and filler numbers.
ORDER_NUMBERS = ((2, "PLAC", "placer"), (3, "FILL", "filler"))

Numbered = tuple[dict[str, Any], Segment, int]  # an order identifier and the field it came from


@dataclass
class Order:
    """One ORC and what follows it up to the next ORC: its OBRs, their SPMs and its first TQ1."""

    orc: Segment
    requests: list[Segment] = field(default_factory=list)
    timing: Segment | None = None
    specimens: list[tuple[Segment, Segment]] = field(default_factory=list)  # (OBR, an SPM of it)


def orders_of(message: Message) -> list[Order]:
    """The message's orders; AE when it has none or carries order details ehrsim does not map."""
    orders: list[Order] = []
    for seg in message.segments:
        name = seg.name
        if name == "ORC":
            orders.append(Order(seg))
        elif name in UNMAPPED_DETAILS:
            raise HL7Error(
                UNSUPPORTED_MESSAGE_TYPE,
                f"{name} ({UNMAPPED_DETAILS[name]}) orders are not mapped to FHIR here; "
                "only OBR (observation request) orders are",
                name,
                sequence=seg.occurrence,
            )
        elif name == "OBR":
            if not orders:
                raise HL7Error(
                    SEGMENT_SEQUENCE_ERROR,
                    "OBR comes before any ORC: each order starts with its ORC (common order)",
                    "OBR",
                    sequence=seg.occurrence,
                )
            orders[-1].requests.append(seg)
        elif name == "TQ1" and orders and orders[-1].timing is None:
            orders[-1].timing = seg
        elif name == "SPM":
            if not orders or not orders[-1].requests:
                raise HL7Error(
                    SEGMENT_SEQUENCE_ERROR,
                    "SPM comes before the OBR of its order: a specimen belongs to an observation request",
                    "SPM",
                    sequence=seg.occurrence,
                )
            orders[-1].specimens.append((orders[-1].requests[-1], seg))
    if not orders:
        raise HL7Error(
            SEGMENT_SEQUENCE_ERROR,
            f"{_spaced(message.message_type)} needs an ORC segment (common order)",
            "ORC",
        )
    return orders


class OrderMapping(IndexedHandler):
    """The ORM^O01 / OML^O21 handler of one site's `V2Mapper`, with its order number index."""

    resource_type = "ServiceRequest"
    noun = "orders"

    def __init__(self, mapper: V2Mapper) -> None:
        super().__init__(mapper)
        self.tables = mapper.tables

    def apply(self, message: Message, result: MappingResult) -> list[Write]:
        """The writes of an order message: its patient (for new orders) and its ServiceRequests."""
        self.require_resource_type()
        orders = orders_of(message)
        controls = [self.control(order.orc) for order in orders]
        writes: list[Write] = []
        subject = None
        if any(c["action"] == "new" for c in controls):  # a cancel or hold creates no patient
            patient_id = self.mapper.upsert_patient(message, result, writes, create_only=True)
            subject = {"reference": f"Patient/{patient_id}"}
        encounter = self.encounter(message, result.warnings, "ServiceRequest.encounter")
        touched: dict[tuple[str, str], dict[str, Any]] = {}  # orders this message already writes
        for order, control in zip(orders, controls, strict=True):
            for obr in order.requests or [None]:
                request = self.request(message, order, obr, control, subject, touched, result.warnings)
                if encounter is not None and control["action"] in ("new", "change"):
                    request["encounter"] = encounter
                if not any(w.resource is request for w in writes):
                    self.mapper._put(request, writes)
                if control["action"] in ("new", "change"):
                    for spm in (spm for of, spm in order.specimens if of is obr):
                        specimen = self.specimen(spm, request, message, result.warnings)
                        self.mapper._put(specimen, writes)
                        request["specimen"] = [
                            *request.get("specimen", []),
                            {"reference": f"Specimen/{specimen['id']}"},
                        ]
                for ident in request["identifier"]:
                    touched[(ident["system"], ident["value"])] = request
        return writes

    def specimen(
        self, spm: Segment, request: dict[str, Any], message: Message, warnings: list[str]
    ) -> dict[str, Any]:
        """A Specimen from an SPM of the order's OBR: type (SPM-4), the placer's and filler's
        specimen ids (SPM-2), collection (SPM-17.1) and receipt (SPM-18) times."""
        kind = self.mapper.concept(spm, 4, message)
        if kind is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "SPM-4 specimen type is empty",
                "SPM",
                sequence=spm.occurrence,
                field=4,
            )
        specimen: dict[str, Any] = {
            "resourceType": "Specimen",
            "status": "available",
            "type": kind,
            "subject": request["subject"],
            "request": [{"reference": f"ServiceRequest/{request['id']}"}],
        }
        identifiers = []
        for component, kind_of in ((1, "placer"), (2, "filler")):  # SPM-2: EIP (placer ^ filler EI)
            value = spm.value(2, component)
            if value:
                namespace = spm.value(2, component, 2) or self.mapper._facility(message)
                identifiers.append(
                    {"system": order_number_system(f"specimen-{kind_of}", namespace), "value": value}
                )
        if identifiers:
            specimen["identifier"] = identifiers
        tz = self.mapper.default_tz
        if spm.value(17):
            specimen["collection"] = {
                "collectedDateTime": v2_datetime(spm.value(17), tz, ("SPM", 17), warnings)
            }
        if spm.value(18):
            received = v2_datetime(spm.value(18), tz, ("SPM", 18), warnings)
            if is_instant(received):
                specimen["receivedTime"] = received
            else:  # FHIR's instant needs the second and a zone
                warnings.append(
                    f"SPM-18 '{spm.value(18)}' is not precise to the second: receivedTime left out"
                )
        return specimen

    def request(
        self,
        message: Message,
        order: Order,
        obr: Segment | None,
        control: dict[str, Any],
        subject: dict[str, str] | None,
        touched: dict[tuple[str, str], dict[str, Any]],
        warnings: list[str],
    ) -> dict[str, Any]:
        """The ServiceRequest of one OBR (or of a bare ORC) after this message."""
        orc = order.orc
        status = self.status(control, orc, warnings)  # the message's own content first, then the lookups
        numbers = self.numbers(orc, obr, message)
        if not numbers:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "ORC-2/ORC-3 and OBR-2/OBR-3 are empty: an order needs a placer or filler order number",
                "ORC",
                sequence=orc.occurrence,
                field=2,
            )
        existing, matched = self.find(numbers, touched)
        action = control["action"]
        if action == "new":
            if existing is not None and matched is not None:
                ident, seg, n = matched
                raise HL7Error(
                    DUPLICATE_KEY,
                    f"order number {ident['value']} ({ident['system']}) is already "
                    f"ServiceRequest/{existing.get('id', '(new)')}; a new order (NW) needs a new number",
                    seg.name,
                    sequence=seg.occurrence,
                    field=n,
                )
            if obr is None:
                raise HL7Error(
                    SEGMENT_SEQUENCE_ERROR,
                    f"the new order (ORC-1 NW) of ORC {orc.occurrence} has no OBR: the service requested",
                    "ORC",
                    sequence=orc.occurrence,
                )
            request: dict[str, Any] = {
                "resourceType": "ServiceRequest",
                "identifier": [ident for ident, _, _ in numbers],
                "status": "unknown",
                "intent": control.get("intent", "order"),
                "subject": subject,
            }
        else:
            if existing is None:
                ident, _, n = numbers[0]
                raise HL7Error(
                    UNKNOWN_KEY,
                    f"no order has number {ident['value']} ({ident['system']}); "
                    f"ORC-1 {orc.value(1)} needs an existing order (send NW first)",
                    "ORC",
                    sequence=orc.occurrence,
                    field=n,  # ORC-2, or ORC-3 when the message names the order by its filler number only
                )
            request = existing if any(existing is r for r in touched.values()) else copy.deepcopy(existing)
            # A number the order did not have yet (e.g. the filler's, assigned later) joins it.
            known = {(i.get("system"), i.get("value")) for i in request.get("identifier", [])}
            request["identifier"] = request.get("identifier", []) + [
                ident for ident, _, _ in numbers if (ident["system"], ident["value"]) not in known
            ]
        if action in ("new", "change"):
            self.fill(request, message, order, obr, warnings)
        if status is not None:
            request["status"] = status
        return request

    # -- ORC-1 and ORC-5 -------------------------------------------------------------------------
    def control(self, orc: Segment) -> dict[str, Any]:
        return self.coded(
            orc,
            1,
            "order_control",
            "ORC-1 order control is empty",
            "ORC-1 order control '{code}' is not mapped (table 0119; mapped here: {known})",
        )

    def status(self, control: dict[str, Any], orc: Segment, warnings: list[str]) -> str | None:
        """ServiceRequest.status after the message (None: keep it). A valued ORC-5 decides it, as
        the v2-to-FHIR IG maps it; SC (status changed) must carry one from table 0038. For other
        ORC-1 codes an ORC-5 outside the table leaves ORC-1's status, with a warning."""
        status = control.get("status")
        if status == "ORC-5":
            return self.coded(
                orc,
                5,
                "order_status",
                f"ORC-1 {orc.value(1)} (status changed) needs ORC-5 order status",
                "ORC-5 order status '{code}' is not in table 0038 ({known})",
            )
        code = orc.value(5).strip().upper()
        if not code:
            return status
        mapped = self.tables["order_status"].get(code)
        if mapped is None:
            warnings.append(
                f"ORC-5 order status '{code}' is not in table 0038; the status follows ORC-1 {orc.value(1)}"
            )
            return status
        return mapped

    def coded(self, seg: Segment, n: int, table: str, empty: str, unknown: str) -> Any:
        """The `table` entry for the code in field n: AE 101 when it is empty, 103 when the table
        does not have it (`unknown` names it with {code} and the table's codes with {known})."""
        code = seg.value(n).strip().upper()
        if not code:
            raise HL7Error(REQUIRED_FIELD_MISSING, empty, seg.name, sequence=seg.occurrence, field=n)
        entries = self.tables[table]
        value = entries.get(code)
        if value is None:
            raise HL7Error(
                TABLE_VALUE_NOT_FOUND,
                unknown.format(code=code, known=", ".join(entries)),
                seg.name,
                sequence=seg.occurrence,
                field=n,
            )
        return value

    # -- placer and filler numbers ---------------------------------------------------------------
    def numbers(self, orc: Segment, obr: Segment | None, message: Message) -> list[Numbered]:
        """Placer and filler numbers (OBR-2/3, else ORC-2/3) as typed identifiers. A number without
        a namespace (EI-2) is the sending facility's, as for DiagnosticReport filler numbers."""
        out = []
        for n, type_code, kind in ORDER_NUMBERS:
            seg = obr if obr is not None and obr.value(n) else orc
            ident = self.typed_identifier(seg, n, type_code, kind, message)
            if ident is not None:
                out.append((ident, seg, n))
        return out

    def based_on(self, obr: Segment, message: Message) -> list[dict[str, str]] | None:
        """The order an ORU's OBR answers, found by OBR-2 (placer) or OBR-3 (filler number), as
        `basedOn`: None while the site holds no ServiceRequest (results-only feeds pay one check)
        or when no order has those numbers."""
        if not self.mapper.service.site.store.current("ServiceRequest"):
            return None
        for n, _, kind in ORDER_NUMBERS:
            value = obr.value(n)
            if not value:
                continue
            namespace = obr.value(n, 2) or self.mapper._facility(message)
            rid = self.index.find_id(order_number_system(kind, namespace), value)
            if rid is not None:
                return [{"reference": f"ServiceRequest/{rid}"}]
        return None

    # -- the order's content ---------------------------------------------------------------------
    def fill(
        self,
        request: dict[str, Any],
        message: Message,
        order: Order,
        obr: Segment | None,
        warnings: list[str],
    ) -> None:
        """Set what the message carries (a change leaves what it does not carry as it was)."""
        orc, tz = order.orc, self.mapper.default_tz
        if obr is not None:
            code = self.mapper.concept(obr, 4, message)
            if code is None and "code" not in request:
                raise HL7Error(
                    REQUIRED_FIELD_MISSING,
                    "OBR-4 universal service identifier is empty; a ServiceRequest needs a code",
                    "OBR",
                    sequence=obr.occurrence,
                    field=4,
                )
            if code is not None:
                request["code"] = code
        priority = self.priority(order, obr, warnings)
        if priority is not None:
            request["priority"] = priority
        when = self.occurrence(order, obr)
        if when is not None:
            value, seg, n = when
            request["occurrenceDateTime"] = v2_datetime(value, tz, (seg, n), warnings)
        if orc.value(9):
            request["authoredOn"] = v2_datetime(orc.value(9), tz, ("ORC", 9), warnings)
        requester = self.requester(orc, obr)
        if requester is not None:
            request["requester"] = requester
        if orc.value(4):
            namespace = orc.value(4, 2) or self.mapper._facility(message)
            request["requisition"] = {
                "system": order_number_system("placer", namespace),
                "value": orc.value(4),
            }

    def priority(self, order: Order, obr: Segment | None, warnings: list[str]) -> str | None:
        """TQ1-9 (v2.5+), else ORC-7.6 (timing quantity), else OBR-5, through table 0027."""
        candidates = [
            (order.timing.value(9) if order.timing is not None else "", "TQ1-9"),
            (order.orc.value(7, 6), "ORC-7.6"),
            (obr.value(5) if obr is not None else "", "OBR-5"),
        ]
        table = self.tables["order_priority"]
        for code, where in candidates:
            if code:
                mapped = table.get(code.strip().upper())
                if mapped is None:
                    warnings.append(
                        f"{where} priority '{code}' has no FHIR request-priority "
                        f"(mapped: {', '.join(table)}); ServiceRequest.priority left out"
                    )
                return mapped
        return None

    def occurrence(self, order: Order, obr: Segment | None) -> tuple[str, str, int] | None:
        """TQ1-7 start (v2.5+), else ORC-7.4 (timing quantity start), else OBR-7."""
        if order.timing is not None and order.timing.value(7):
            return order.timing.value(7), "TQ1", 7
        if order.orc.value(7, 4):
            return order.orc.value(7, 4), "ORC", 7
        if obr is not None and obr.value(7):
            return obr.value(7), "OBR", 7
        return None

    def requester(self, orc: Segment, obr: Segment | None) -> dict[str, Any] | None:
        """ORC-12 ordering provider, else OBR-16: display "given family", identifier XCN-1."""
        return xcn_reference(orc, 12) or (xcn_reference(obr, 16) if obr is not None else None)
