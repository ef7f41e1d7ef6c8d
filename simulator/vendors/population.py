"""Vendor rules applied to a site's generated population, and the vendor's documented test patients.

The generator itself follows the hospital conventions it knows (`reference_display`,
`instant_suffix`, `reference_type`, `mrn_system`, `local_codes`; docs/population.md). A profile's
vendor rules are applied here, after generation (keys in docs/vendors.md): `local_codings` (vendor
code systems beside LOINC/SNOMED: Epic flowsheet ids, Oracle code sets) and `extensions` (Epic's
template-id), with `tables`. `sandbox_patients` gives the vendor's documented
test patients their ids, names and birth dates, so requests copied from vendor docs work unchanged.
Everything is derived from the data itself (hashes, tables), so the same seed gives the same bytes.
"""

from __future__ import annotations

import copy as copy_module
import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from simulator.population.messiness import local_code

_OPAQUE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def prepare_population(
    resources: list[dict[str, Any]], site: dict[str, Any], new_id: Callable[..., str]
) -> list[dict[str, Any]]:
    """The generated resources with the site's sandbox patients and vendor conventions applied."""
    patients = site.get("sandbox_patients") or []
    conventions = (site.get("population") or {}).get("conventions") or {}
    if patients:
        display = conventions.get("reference_display", "{given} {family}")
        resources = adopt_sandbox_patients(resources, patients, display)
        resources = extend_histories(resources, patients, new_id)
    if conventions:
        apply_vendor_rules(resources, conventions)
    return resources


def category_codes(resource: dict[str, Any]) -> set[str]:
    return {
        coding.get("code")
        for concept in resource.get("category") or []
        if isinstance(concept, dict)
        for coding in concept.get("coding", [])
    }


def _walk_references(item: Any) -> Iterator[dict[str, Any]]:
    if isinstance(item, dict):
        if isinstance(item.get("reference"), str):
            yield item
        for value in item.values():
            if isinstance(value, dict | list):
                yield from _walk_references(value)
    elif isinstance(item, list):
        for value in item:
            yield from _walk_references(value)


def _subject_id(resource: dict[str, Any]) -> str | None:
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("Patient/"):
            return ref["reference"].split("/", 1)[1]
    return None


def adopt_sandbox_patients(
    resources: list[dict[str, Any]],
    patients: list[dict[str, Any]],
    display: str | None = "{given} {family}",
) -> list[dict[str, Any]]:
    """The first generated people become the vendor's documented test patients; references to them
    are renamed and re-displayed (`display` is the site's reference_display convention)."""
    # A record merged into another (link replaced-by) stays what it is: it is not a test patient.
    generated = [
        r
        for r in resources
        if r["resourceType"] == "Patient"
        and not any(link.get("type") == "replaced-by" for link in r.get("link", []))
    ]
    renamed: dict[str, str] = {}
    adopted: dict[str, dict[str, Any]] = {}
    omit: dict[str, list[dict[str, Any]]] = {}
    for resource, wanted in zip(generated, patients, strict=False):
        old = resource["id"]
        renamed[f"Patient/{old}"] = f"Patient/{wanted['id']}"
        resource["id"] = str(wanted["id"])
        name = dict(resource["name"][0]) if resource.get("name") else {}
        name["family"], name["given"] = wanted["family"], [wanted["given"]]
        name.pop("text", None)
        resource["name"] = [name, *resource.get("name", [])[1:]]
        for key in ("gender", "birthDate"):
            if wanted.get(key):
                resource[key] = wanted[key]
        omit[resource["id"]] = wanted.get("without") or []
        adopted[f"Patient/{resource['id']}"] = wanted
    kept = []
    for resource in resources:
        for ref in _walk_references(resource):
            new = renamed.get(ref["reference"])
            if new:
                ref["reference"] = new
                wanted = adopted[new]
                if display and "display" in ref:
                    ref["display"] = display.format(given=wanted["given"], family=wanted["family"])
        owner = _subject_id(resource)
        rules = omit.get(owner or "", [])
        if any(
            rule["type"] == resource["resourceType"]
            and (not rule.get("category") or rule["category"] in category_codes(resource))
            for rule in rules
        ):
            continue
        kept.append(resource)
    return kept


def extend_histories(
    resources: list[dict[str, Any]], patients: list[dict[str, Any]], new_id: Callable[..., str]
) -> list[dict[str, Any]]:
    """Sandbox patients with long histories (Epic's Derrick Lin has over 1000 vitals): the generated
    series of a category is repeated further back in time, a day per round, until it is long enough.
    `at_least: {Type: n}` borrows records of that type from other people when the story has fewer."""
    out = list(resources)
    for wanted in patients:
        for category, size in (wanted.get("history") or {}).items():
            series = [
                r
                for r in resources
                if r["resourceType"] == "Observation"
                and _subject_id(r) == wanted["id"]
                and category in category_codes(r)
            ]
            for n in range(max(0, size - len(series)) if series else 0):
                copy = copy_module.deepcopy(series[n % len(series)])
                shift = timedelta(days=n // len(series) + 1)
                for key in ("effectiveDateTime", "issued"):
                    if isinstance(copy.get(key), str):
                        copy[key] = _shifted(copy[key], shift)
                copy["id"] = new_id("Observation", category)
                out.append(copy)
        for rtype, least in (wanted.get("at_least") or {}).items():
            own = [r for r in out if r["resourceType"] == rtype and _subject_id(r) == wanted["id"]]
            donors = [
                r for r in out if r["resourceType"] == rtype and _subject_id(r) not in (None, wanted["id"])
            ]
            for donor in donors[: max(0, least - len(own))]:
                copy = copy_module.deepcopy(donor)
                for key in ("subject", "patient"):
                    if isinstance(copy.get(key), dict):
                        copy[key] = {"reference": f"Patient/{wanted['id']}"}
                copy["id"] = new_id(rtype, next(iter(category_codes(copy)), None))
                out.append(copy)
    return out


def _shifted(value: str, shift: timedelta) -> str:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    text = (moment - shift).isoformat()
    return text.replace("+00:00", "Z") if value.endswith("Z") else text


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("|".join(parts).encode()).digest()


def vendor_code(style: str, system: str, source: str) -> str:
    """A vendor's own code for a concept: digits (the population's `local_code`) or an opaque token
    like Epic's flowsheet ids; stable per (system, concept)."""
    if style == "opaque":
        return "".join(_OPAQUE[b % len(_OPAQUE)] for b in _digest(system, source)[:24])
    return local_code(system, source)


def _applies(rule: dict[str, Any], resource: dict[str, Any]) -> bool:
    if rule.get("resource") not in (None, resource["resourceType"]):
        return False
    return not rule.get("category") or rule["category"] in category_codes(resource)


def apply_vendor_rules(resources: list[dict[str, Any]], conventions: dict[str, Any]) -> None:
    fields = {k: str(v) for k, v in (conventions.get("vars") or {}).items()}
    tables = conventions.get("tables") or {}
    for resource in resources:
        for rule in conventions.get("local_codings") or []:
            if _applies(rule, resource):
                _add_local_coding(resource, rule, tables, fields)
        for rule in conventions.get("extensions") or []:
            if _applies(rule, resource):
                resource.setdefault("extension", []).append(rule["extension"])


def _add_local_coding(
    resource: dict[str, Any], rule: dict[str, Any], tables: dict[str, Any], fields: dict[str, str]
) -> None:
    code = resource.get("code")
    if not isinstance(code, dict) or not code.get("coding"):
        return
    first = code["coding"][0]
    system = rule["system"].format_map(fields)
    if rule.get("from"):
        table = tables.get(rule["from"]) or {}
        value = next((table[c["code"]] for c in code["coding"] if c.get("code") in table), None)
        if value is None:
            return
    elif rule.get("code_style") == "same":  # an alias system for the same code (an OID for LOINC)
        value = first.get("code")
    else:
        value = vendor_code(
            rule.get("code_style", "digits"), system, f"{first.get('system')}|{first.get('code')}"
        )
    coding: dict[str, Any] = {"system": system, "code": value}
    label = first.get("display") or code.get("text")
    if label:
        coding["display"] = label
    if rule.get("user_selected"):
        coding["userSelected"] = True
    if rule.get("position", "first") == "first":
        code["coding"] = [coding, *code["coding"]]
    else:
        code["coding"].append(coding)
