"""Production-like mess applied to one person's records, decided from the seed.

Each knob draws from its own random stream per person (`{seed}/{knob}/{index}`), so turning one
knob up changes only the records that knob touches and leaves every other decision as it was. What
each knob may touch is data in `messiness.yaml`; the knobs themselves are `spec.Messiness`.
"""

from __future__ import annotations

import functools
import hashlib
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from simulator.population.spec import Conventions, Messiness

DATA_ABSENT_URL = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
DATA_ABSENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
# US zones a hospital's interface engine might stamp instead of UTC.
LOCAL_OFFSETS = (-5, -6, -7, -8, -4)


@functools.cache
def mess_tables() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parent / "messiness.yaml").read_text(encoding="utf-8"))


def local_code(system: str, standard_code: str) -> str:
    """A hospital's own code for a concept: stable per (code system, concept), different per hospital."""
    digest = hashlib.blake2b(f"{system}|{standard_code}".encode(), digest_size=4).digest()
    return str(100000 + int.from_bytes(digest, "big") % 900000)


class MessyData:
    """The messiness decisions for one person (index) of one site."""

    def __init__(self, knobs: Messiness, conventions: Conventions, seed: int | str, index: int) -> None:
        self.knobs = knobs
        self.conventions = conventions
        self.seed = seed
        self.index = index
        self._rngs: dict[str, random.Random] = {}
        self.tables = mess_tables()

    def rng(self, knob: str) -> random.Random:
        rng = self._rngs.get(knob)
        if rng is None:
            rng = self._rngs[knob] = random.Random(f"{self.seed}/{knob}/{self.index}")
        return rng

    def hit(self, knob: str) -> bool:
        fraction = getattr(self.knobs, knob)
        return fraction > 0 and self.rng(knob).random() < fraction

    # -- people ----------------------------------------------------------------------------------
    def duplicate(self) -> str | None:
        """None, "duplicate" (a second unmerged record) or "merged" (a second record, merged)."""
        dup, merged = self.knobs.duplicates, self.knobs.merged
        if dup + merged <= 0:
            return None
        draw = self.rng("duplicates").random()
        if draw < dup:
            return "duplicate"
        if draw < dup + merged:
            return "merged"
        return None

    def name_variant(self, given: str, family: str) -> tuple[str, str]:
        """How a registration clerk got the name wrong: a typo, swapped names or all capitals."""
        rng = self.rng("duplicates")
        variant = rng.choice(("typo", "swapped", "upper"))
        if variant == "swapped":
            return family, given
        if variant == "upper":
            return given.upper(), family.upper()
        in_family = rng.random() < 0.5
        target = family if in_family else given
        if len(target) > 2:
            at = rng.randrange(1, len(target) - 1)
            changed = target[:at] + target[at + 1] + target[at] + target[at + 2 :]
            if changed == target:  # a doubled letter swaps to itself: drop one instead
                changed = target[:at] + target[at + 1 :]
        else:
            changed = target + target[-1]
        return (given, changed) if in_family else (changed, family)

    # -- coded concepts --------------------------------------------------------------------------
    def concept(self, kind: str, codings: list[dict[str, Any]], text: str, short: str | None = None) -> dict:
        """A CodeableConcept as this hospital writes it: local coding beside or instead, or text only."""
        if self.hit("text_only_codes"):
            return {"text": short or text}
        if self.hit("local_codes"):
            local = self.conventions.local_codes
            system = local.systems.get(kind)
            if system and codings:
                coding: dict[str, Any] = {
                    "system": system,
                    "code": local_code(system, codings[0]["code"]),
                    "display": short or text,
                }
                if local.user_selected:
                    coding["userSelected"] = True
                kept = codings if local.placement == "beside" else []
                return {"coding": [coding, *kept], "text": short or text}
        return {"coding": codings, "text": text}

    # -- records ---------------------------------------------------------------------------------
    def apply(self, resources: list[dict[str, Any]]) -> None:
        """Record-level knobs, in a fixed order, over one person's records."""
        for resource in resources:
            rtype = resource["resourceType"]
            if self.hit("entered_in_error"):
                self._entered_in_error(resource, rtype)
            if self.hit("missing_fields"):
                self._missing_field(resource, rtype)
            if rtype in ("Observation", "Patient") and self.hit("data_absent"):
                self._data_absent(resource, rtype)
            if rtype == "Observation":
                if self.hit("missing_units"):
                    self._missing_units(resource)
                if "effectiveDateTime" in resource and self.hit("effective_period"):
                    when = resource.pop("effectiveDateTime")
                    resource["effectivePeriod"] = {"start": when, "end": when}
            if rtype == "Condition" and "clinicalStatus" in resource and self.hit("no_clinical_status"):
                del resource["clinicalStatus"]
            if self.hit("odd_timestamps"):
                self._odd_timestamp(resource, rtype)
            if self.hit("implausible"):
                self._implausible(resource, rtype)
            if self.hit("r5_extensions"):
                self._r5_extension(resource, rtype)

    def _entered_in_error(self, resource: dict[str, Any], rtype: str) -> None:
        change = self.tables["entered_in_error"].get(rtype)
        if change is None:
            return
        resource.update(change)
        if rtype in ("Condition", "AllergyIntolerance"):
            resource.pop("clinicalStatus", None)  # R4 invariants: no clinical status on an error

    def _missing_field(self, resource: dict[str, Any], rtype: str) -> None:
        present = [e for e in self.tables["optional_elements"].get(rtype, ()) if e in resource]
        if present:
            del resource[self.rng("missing_fields").choice(present)]

    def _data_absent(self, resource: dict[str, Any], rtype: str) -> None:
        reason = self.rng("data_absent").choice(self.tables["data_absent_reasons"])
        if rtype == "Patient":
            if resource.pop("birthDate", None) is not None:
                resource["_birthDate"] = {"extension": [{"url": DATA_ABSENT_URL, "valueCode": "unknown"}]}
            return
        absent = {"coding": [{"system": DATA_ABSENT_SYSTEM, **reason}], "text": reason["display"]}
        value_keys = [k for k in resource if k.startswith("value")]
        if value_keys:
            for key in value_keys:
                del resource[key]
            resource.pop("interpretation", None)
            resource["dataAbsentReason"] = absent
        for component in resource.get("component", ()):
            for key in [k for k in component if k.startswith("value")]:
                del component[key]
            component["dataAbsentReason"] = absent

    def _missing_units(self, resource: dict[str, Any]) -> None:
        quantities = [resource.get("valueQuantity")]
        quantities += [c.get("valueQuantity") for c in resource.get("component", ())]
        for quantity in quantities:
            if quantity:
                for key in ("unit", "system", "code"):
                    quantity.pop(key, None)

    def _odd_timestamp(self, resource: dict[str, Any], rtype: str) -> None:
        paths = [p for p in self.tables["datetime_elements"].get(rtype, ()) if _get(resource, p)]
        if not paths:
            return
        rng = self.rng("odd_timestamps")
        path = rng.choice(paths)
        value = _get(resource, path)
        styled = restyle(value, rng.choice(self.knobs.timestamp_styles), rng)
        _set(resource, path, styled)

    def _implausible(self, resource: dict[str, Any], rtype: str) -> None:
        code = None
        if rtype == "Observation":
            codings = resource.get("code", {}).get("coding") or [{}]
            code = next((c.get("code") for c in codings if c.get("system") == "http://loinc.org"), None)
        choices = [
            entry
            for entry in self.tables["implausible"]
            if entry["resource"] == rtype
            and entry.get("code") in (None, code)
            and all(_get(resource, path) is not None for path in entry["set"])
        ]
        if choices:
            for path, value in self.rng("implausible").choice(choices)["set"].items():
                _set(resource, path, value)

    def _r5_extension(self, resource: dict[str, Any], rtype: str) -> None:
        for entry in self.tables["r5_extensions"]:
            if entry["resource"] != rtype:
                continue
            value = _get(resource, entry["from"]) if "from" in entry else entry.get("value")
            if value is not None:
                resource.setdefault("extension", []).append({"url": entry["url"], entry["type"]: value})


def restyle(value: str, style: str, rng: random.Random) -> str:
    """A dateTime written the way some interface engines write it."""
    if len(value) < 19:  # already a date: only shortening applies
        return value[:7] if style == "year-month" else value
    if style == "date-only":
        return value[:10]
    if style == "year-month":
        return value[:7]
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if style == "microseconds":  # a device clock's reading, not a rounded chart time
        moment = moment.replace(microsecond=rng.randrange(1, 1_000_000))
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    if style == "local-offset":
        zone = timezone(timedelta(hours=rng.choice(LOCAL_OFFSETS)))
        return moment.astimezone(zone).isoformat(timespec="seconds")
    if style == "naive":  # not valid R4: opt-in only (docs/population.md)
        return moment.replace(tzinfo=None).isoformat(timespec="seconds")
    raise ValueError(f"unknown timestamp style {style!r}")


def _get(resource: Any, path: str) -> Any:
    node = resource
    for part in path.split("."):
        if isinstance(node, list):
            node = node[int(part)] if part.isdigit() and int(part) < len(node) else None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
        if node is None:
            return None
    return node


def _set(resource: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = _get(resource, ".".join(parents)) if parents else resource
    if isinstance(node, dict):
        node[leaf] = value
