"""HL7 v2 medical documents to FHIR R4 DocumentReference: MDM^T01 to MDM^T11.

One DocumentReference per message, named by TXA-12 (unique document number). What each trigger
event does (create a document, update it, add an addendum or a replacement that points at its parent
TXA-13, cancel it) is the `document_events` table in data/v2-to-fhir.yaml; the codes (TXA-17
completion status, TXA-18 confidentiality, ED media types) are tables there too. Fields follow the
HL7 v2-to-FHIR IG's TXA[DocumentReference] map; docs/mllp.md ("Documents") says where ehrsim
differs. Documents are found by their numbers through an `IdentifierIndex`. The writes go into the
message's single commit (`V2Mapper.apply`): applied completely or not at all.
"""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any

from simulator.fhir.values import is_instant
from simulator.mllp.er7 import (
    DATA_TYPE_ERROR,
    DUPLICATE_KEY,
    INTERNAL_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    UNSUPPORTED_EVENT_CODE,
    HL7Error,
    Message,
    Segment,
)
from simulator.mllp.identifiers import IdentifierIndex
from simulator.mllp.mapping import MappingResult, V2Mapper, order_number_system, v2_datetime, xcn_reference
from simulator.mllp.orders import ORDER_NUMBERS
from simulator.store.base import Write

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
TEXT_TYPES = ("TX", "FT", "ST")  # OBX-2 value types whose lines make the document's text

# What the tables may say (check_tables): FHIR R4 codes of DocumentReference.
ACTIONS = ("create", "update")
RELATIONS = ("appends", "replaces", "transforms", "signs")
STATUSES = ("current", "superseded", "entered-in-error")
DOC_STATUSES = ("preliminary", "final", "amended", "entered-in-error")


def check_tables(tables: dict[str, Any], where: str = "mllp.mapping") -> None:
    """The document tables (packaged or overridden by a site) name actions and FHIR codes that exist;
    raises ValueError naming the entry."""

    def expect(ok: bool, entry: str, what: str) -> None:
        if not ok:
            raise ValueError(f"{where}.{entry} {what}")

    events = tables.get("document_events")
    expect(isinstance(events, dict), "document_events", "must be a mapping of MDM trigger events")
    for code, event in events.items():
        name = f"document_events.{code}"
        expect(isinstance(event, dict), name, "must be a mapping")
        expect(event.get("action") in ACTIONS, f"{name}.action", f"must be one of {', '.join(ACTIONS)}")
        for key, allowed in (("relation", RELATIONS), ("status", STATUSES), ("parent_status", STATUSES)):
            if key in event:
                expect(event[key] in allowed, f"{name}.{key}", f"must be one of {', '.join(allowed)}")
        expect(isinstance(event.get("content", False), bool), f"{name}.content", "must be true or false")
    doc_type = tables.get("document_type")
    expect(
        isinstance(doc_type, dict)
        and isinstance(doc_type.get("system"), str)
        and isinstance(doc_type.get("codes"), dict),
        "document_type",
        "must have a system and codes",
    )
    for code, status in (tables.get("document_completion_status") or {}).items():
        expect(
            status in DOC_STATUSES,
            f"document_completion_status.{code}",
            f"must be one of {', '.join(DOC_STATUSES)}",
        )
    for code, label in (tables.get("document_confidentiality") or {}).items():
        expect(
            isinstance(label, dict) and bool(label.get("code")),
            f"document_confidentiality.{code}",
            "must be {code, display}",
        )
    for code, media in (tables.get("document_media_types") or {}).items():
        expect(
            isinstance(media, str) and "/" not in media,
            f"document_media_types.{code}",
            "must be a MIME top-level type",
        )


class DocumentMapping:
    """The MDM^T01-T11 handler of one site's `V2Mapper`, with its document number index."""

    def __init__(self, mapper: V2Mapper) -> None:
        self.mapper = mapper
        self.tables = mapper.tables
        self._index: IdentifierIndex | None = None

    @property
    def index(self) -> IdentifierIndex:
        # Built at the first document message, as for orders: sites without documents pay nothing.
        if self._index is None:
            self._index = IdentifierIndex(self.mapper.service, "DocumentReference")
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def reindex(self) -> None:
        """Forget the document index (after the sandbox's reset): rebuilt when next needed."""
        self.close()

    def apply(self, message: Message, result: MappingResult) -> list[Write]:
        site = self.mapper.service.site
        if not site.supports("DocumentReference"):
            raise HL7Error(
                INTERNAL_ERROR,
                f"site '{site.id}' does not offer DocumentReference (its resource_types), "
                "so documents cannot be stored",
                "MSH",
                field=9,
            )
        event = self.tables["document_events"].get(message.trigger)
        if event is None:
            raise HL7Error(
                UNSUPPORTED_EVENT_CODE,
                f"MDM {message.trigger} is not in this site's document_events table",
                "MSH",
                field=9,
                component=2,
                reject=True,
            )
        txa = message.segment("TXA")
        if txa is None:
            raise HL7Error(
                SEGMENT_SEQUENCE_ERROR, f"MDM {message.trigger} needs a TXA segment (document header)", "TXA"
            )
        warnings = result.warnings
        number = self.number(txa, 12, message)
        if number is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "TXA-12 unique document number is empty; ehrsim identifies documents by it",
                "TXA",
                sequence=txa.occurrence,
                field=12,
            )
        # The message's own content first (codes, content), then the lookups.
        doc_type = self.document_type(txa, message)
        doc_status = self.completion_status(txa, warnings)
        content = self.content(message, event, warnings)
        writes: list[Write] = []
        existing = self.index.find(number["system"], number["value"])
        if event["action"] == "create":
            if existing is not None:
                raise HL7Error(
                    DUPLICATE_KEY,
                    f"document number {number['value']} ({number['system']}) is already "
                    f"DocumentReference/{existing['id']}; MDM {message.trigger} needs a new number",
                    "TXA",
                    sequence=txa.occurrence,
                    field=12,
                )
            parent = self.parent(txa, message, event, required=bool(event.get("relation")))
            patient_id = self.mapper.upsert_patient(message, result, writes, create_only=True)
            document: dict[str, Any] = {
                "resourceType": "DocumentReference",
                "masterIdentifier": number,
                "identifier": [dict(number)],
                "status": "current",
                "subject": self.mapper.subject(patient_id),
            }
        else:
            if existing is None:
                raise HL7Error(
                    UNKNOWN_KEY,
                    f"no document has number {number['value']} ({number['system']}); "
                    f"MDM {message.trigger} needs an existing document (send T01 or T02 first)",
                    "TXA",
                    sequence=txa.occurrence,
                    field=12,
                )
            parent = self.parent(txa, message, event, required=False)
            if parent is not None and parent["id"] == existing["id"]:
                parent = None  # TXA-13 names the document itself: nothing to relate
            document = copy.deepcopy(existing)
        document["type"] = doc_type
        if doc_status is not None:
            document["docStatus"] = doc_status
        if "status" in event:
            document["status"] = event["status"]
        self.fill(document, txa, message, warnings)
        if content:
            document["content"] = content
        elif "content" not in document:  # R4 requires content: a notification says what it can
            document["content"] = [{"attachment": self.placeholder(txa)}]
        if parent is not None:
            relation = {
                "code": event["relation"],
                "target": {"reference": f"DocumentReference/{parent['id']}"},
            }
            if relation not in document.get("relatesTo", []):
                document["relatesTo"] = [*document.get("relatesTo", []), relation]
            if "parent_status" in event and parent.get("status") != event["parent_status"]:
                parent = copy.deepcopy(parent)
                parent["status"] = event["parent_status"]
                self.mapper._put(parent, writes)
        self.mapper._put(document, writes)
        return writes

    # -- document numbers ------------------------------------------------------------------------
    def number(self, seg: Segment, n: int, message: Message) -> dict[str, str] | None:
        """An EI document number as an Identifier: system from EI-2 (namespace), else EI-3 when EI-4
        is ISO (an OID), else the sending facility (MSH-4), as for order numbers."""
        value = seg.value(n)
        if not value:
            return None
        namespace, universal, universal_type = seg.value(n, 2), seg.value(n, 3), seg.value(n, 4)
        if not namespace and universal and universal_type.upper() == "ISO":
            return {"system": f"urn:oid:{universal}", "value": value}
        return {
            "system": order_number_system("document", namespace or self.mapper._facility(message)),
            "value": value,
        }

    def parent(
        self, txa: Segment, message: Message, event: dict[str, Any], required: bool
    ) -> dict[str, Any] | None:
        """The document TXA-13 names, when the event relates documents (AE when it must and cannot)."""
        if not event.get("relation"):
            return None
        number = self.number(txa, 13, message)
        if number is None:
            if not required:
                return None
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                f"TXA-13 parent document number is empty; MDM {message.trigger} "
                f"({event['relation']}) needs the document it relates to",
                "TXA",
                sequence=txa.occurrence,
                field=13,
            )
        found = self.index.find(number["system"], number["value"])
        if found is None:
            raise HL7Error(
                UNKNOWN_KEY,
                f"no document has parent document number {number['value']} ({number['system']})",
                "TXA",
                sequence=txa.occurrence,
                field=13,
            )
        return found

    # -- TXA -------------------------------------------------------------------------------------
    def document_type(self, txa: Segment, message: Message) -> dict[str, Any]:
        """TXA-2 as `type`: a code without a coding system (IS before v2.7) or named HL70270 is from
        table 0270 when the table has it; other codes keep their own (local) system."""
        concept = self.mapper.concept(txa, 2, message)
        if concept is None:
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "TXA-2 document type is empty; a DocumentReference needs a type",
                "TXA",
                sequence=txa.occurrence,
                field=2,
            )
        table = self.tables["document_type"]
        code, v2_system = txa.value(2).upper(), txa.value(2, 3).upper()
        display = table["codes"].get(code)
        if display is None or (v2_system and v2_system not in table["v2_systems"]):
            return concept
        coding = {"system": table["system"], "code": code, "display": txa.value(2, 2) or display}
        return {**concept, "coding": [coding, *concept.get("coding", [])[1:]]}  # shared: a new one

    def completion_status(self, txa: Segment, warnings: list[str]) -> str | None:
        """TXA-17 (table 0271) as `docStatus`; None (left out, or kept on an update) when empty."""
        code = txa.value(17).strip().upper()
        if not code:
            warnings.append("TXA-17 document completion status is empty; docStatus not set from it")
            return None
        table = self.tables["document_completion_status"]
        status = table.get(code)
        if status is None:
            raise HL7Error(
                TABLE_VALUE_NOT_FOUND,
                f"TXA-17 document completion status '{code}' is not in table 0271 ({', '.join(table)})",
                "TXA",
                sequence=txa.occurrence,
                field=17,
            )
        return status

    def fill(self, document: dict[str, Any], txa: Segment, message: Message, warnings: list[str]) -> None:
        """Set what the message carries (an update leaves what it does not carry as it was)."""
        when = self.date(txa, warnings)
        if when is not None:
            document["date"] = when
        authors = self.people(txa, 9) or self.people(txa, 5)
        if authors:
            document["author"] = authors
        authenticator = (self.people(txa, 22) or self.people(txa, 10))[:1]
        if authenticator:
            document["authenticator"] = authenticator[0]
        confidentiality = txa.value(18).strip().upper()
        if confidentiality:
            label = self.tables["document_confidentiality"].get(confidentiality)
            if label is None:
                warnings.append(
                    f"TXA-18 confidentiality status '{confidentiality}' is not in table 0272; securityLabel left out"
                )
            else:
                document["securityLabel"] = [{"coding": [{"system": CONFIDENTIALITY, **label}]}]
        if txa.value(25):
            document["description"] = txa.value(25)
        file_name = txa.value(16)
        if file_name:
            ident = {
                "system": order_number_system("document-file", self.mapper._facility(message)),
                "value": file_name,
            }
            if ident not in document["identifier"]:
                document["identifier"] = [*document["identifier"], ident]
        context = dict(document.get("context", {}))
        encounter = self.encounter(message, warnings)
        if encounter is not None:
            context["encounter"] = [encounter]
        related = self.related(message, txa, warnings)
        if related:
            context["related"] = related
        if context:
            document["context"] = context

    def date(self, txa: Segment, warnings: list[str]) -> str | None:
        """TXA-6 origination, else TXA-4 activity date/time, as `date` (an instant: to the second)."""
        for n, name in ((6, "origination"), (4, "activity")):
            raw = txa.value(n)
            if not raw:
                continue
            when = v2_datetime(raw, self.mapper.default_tz, ("TXA", n), warnings)
            if is_instant(when):
                return when
            warnings.append(
                f"TXA-{n} {name} date/time '{raw}' is not precise to the second: not used as date"
            )
        return None

    def people(self, seg: Segment, n: int) -> list[dict[str, Any]]:
        """Each repetition of an XCN (or PPN) field as a display/identifier reference."""
        out = []
        for rep in range(len(seg.repetitions(n))):
            reference = xcn_reference(seg, n, rep)
            if reference is not None:
                out.append(reference)
        return out

    def placeholder(self, txa: Segment) -> dict[str, str]:
        """The attachment of a document whose content the message does not carry: its media type
        (TXA-3, else application/octet-stream) and title (TXA-25, else TXA-16)."""
        presentation = txa.value(3).strip().upper()
        media = self.tables["document_presentation"].get(presentation, "application/octet-stream")
        attachment = {"contentType": media}
        title = txa.value(25) or txa.value(16)
        if title:
            attachment["title"] = title
        return attachment

    # -- content (OBX) ---------------------------------------------------------------------------
    def content(self, message: Message, event: dict[str, Any], warnings: list[str]) -> list[dict[str, Any]]:
        """The document's content from its OBX segments: TX/FT/ST lines as one text/plain attachment,
        each ED as its own attachment. AE 101 when the event must carry content and has none."""
        lines: list[str] = []
        attachments: list[dict[str, Any]] = []
        segments = message.all("OBX")
        for obx in segments:
            value_type = obx.value(2).strip().upper()
            if value_type in TEXT_TYPES:
                lines += [obx.unescape(r) for r in obx.repetitions(5)]
            elif value_type == "ED":
                attachments.append(self.embedded(obx, warnings))
            else:
                warnings.append(
                    f"OBX {obx.occurrence} of type '{value_type}' is not document content "
                    f"(mapped: {', '.join(TEXT_TYPES)}, ED); not mapped"
                )
        if lines:
            text = "\n".join(lines).encode("utf-8")
            attachments.insert(
                0, {"contentType": "text/plain", "data": base64.b64encode(text).decode("ascii")}
            )
        if not attachments and event.get("content"):
            where = segments[0].occurrence if segments else 1
            raise HL7Error(
                REQUIRED_FIELD_MISSING,
                "the document has no content: MDM with content needs OBX segments of type TX, FT, ST or ED",
                "OBX",
                sequence=where,
                field=5 if segments else None,
            )
        return [{"attachment": a} for a in attachments]

    def embedded(self, obx: Segment, warnings: list[str]) -> dict[str, Any]:
        """An ED OBX-5 (source ^ type ^ subtype ^ encoding ^ data) as an Attachment whose data is
        base64: Base64 data is checked and kept as it is, Hex and A (text) are converted."""
        where = obx.occurrence
        media_code, subtype = obx.value(5, 2).strip(), obx.value(5, 3).strip().lower()
        media = self.tables["document_media_types"].get(media_code.upper())
        if media is None:
            warnings.append(
                f"OBX {where} ED type of data '{media_code}' is not a known media type; read as application"
            )
            media = "application"
        subtype = subtype or ("plain" if media == "text" else "octet-stream")
        attachment: dict[str, Any] = {"contentType": f"{media}/{subtype}"}
        encoding, data = obx.value(5, 4).strip().upper(), obx.value(5, 5)
        if not data:
            warnings.append(f"OBX {where} ED carries no data: the attachment has its content type only")
            return attachment
        try:
            if encoding == "BASE64":
                base64.b64decode(data, validate=True)
            elif encoding == "HEX":
                data = base64.b64encode(bytes.fromhex(data)).decode("ascii")
            elif encoding == "A":
                data = base64.b64encode(data.encode("utf-8")).decode("ascii")
            else:
                raise HL7Error(
                    TABLE_VALUE_NOT_FOUND,
                    f"OBX-5 ED encoding '{obx.value(5, 4)}' is not in table 0299 (A, Hex, Base64)",
                    "OBX",
                    sequence=where,
                    field=5,
                )
        except (binascii.Error, ValueError):
            raise HL7Error(
                DATA_TYPE_ERROR,
                f"OBX-5 ED data is not valid {obx.value(5, 4)} (OBX {where})",
                "OBX",
                sequence=where,
                field=5,
            ) from None
        attachment["data"] = data
        return attachment

    # -- context ---------------------------------------------------------------------------------
    def encounter(self, message: Message, warnings: list[str]) -> dict[str, str] | None:
        """The encounter PV1-19 names, when it is known (else a warning)."""
        pv1 = message.segment("PV1")
        ident = self.mapper._visit_identifier(pv1, message) if pv1 is not None else None
        if ident is None:
            return None
        rid = self.mapper.encounters.find_id(ident["system"], ident["value"])
        if rid is None:
            warnings.append(
                f"PV1-19 visit number {ident['value']} ({ident['system']}) is not a known encounter; "
                "context.encounter left out"
            )
            return None
        return {"reference": f"Encounter/{rid}"}

    def related(self, message: Message, txa: Segment, warnings: list[str]) -> list[dict[str, str]]:
        """The orders the document belongs to, by the placer/filler numbers of its ORC and OBR
        segments and TXA-14/15, as `context.related` (unknown numbers: a warning)."""
        numbers: list[tuple[str, str, str, str]] = []  # (kind, namespace, value, where)
        for seg in message.segments:
            if seg.name in ("ORC", "OBR"):
                for n, _, kind in ORDER_NUMBERS:
                    if seg.value(n):
                        numbers.append((kind, seg.value(n, 2), seg.value(n), f"{seg.name}-{n}"))
        for n, kind in ((14, "placer"), (15, "filler")):
            if txa.value(n):
                numbers.append((kind, txa.value(n, 2), txa.value(n), f"TXA-{n}"))
        if not numbers:
            return []
        orders = self.mapper.orders
        has_orders = bool(self.mapper.service.site.store.current("ServiceRequest"))
        related: list[dict[str, str]] = []
        seen: set[tuple[str, str]] = set()  # ORC and OBR usually repeat the same numbers
        for kind, namespace, value, where in numbers:
            system = order_number_system(kind, namespace or self.mapper._facility(message))
            if (system, value) in seen:
                continue
            seen.add((system, value))
            rid = orders.index.find_id(system, value) if has_orders else None
            if rid is None:
                warnings.append(f"{where} order number {value} ({system}) is not a known order; not related")
                continue
            reference = {"reference": f"ServiceRequest/{rid}"}
            if reference not in related:
                related.append(reference)
        return related
