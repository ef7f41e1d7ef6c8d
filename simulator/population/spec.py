"""A site's `population:` mapping as typed settings: size, hospital conventions and messiness knobs.

The mapping is checked against `scenarios/schema/population.schema.json`; a vendor profile's
population defaults are merged under the site's own mapping before it gets here, so a profile sets
conventions (local code systems, "Last,First" displays, `+00:00` offsets) as data.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any

import jsonschema

from simulator.scenario import SCHEMA_DIR

SCHEMA_PATH = SCHEMA_DIR / "population.schema.json"
DEFAULT_AS_OF = date(2026, 1, 1)


class PopulationError(ValueError):
    """A `population:` mapping that does not fit the schema; the message names the path and the fix."""


@functools.cache
def population_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class LocalCodes:
    placement: str = "beside"  # beside: local coding first, standard kept; instead: local only
    user_selected: bool = False
    systems: dict[str, str] = field(
        default_factory=lambda: {
            "observation": "urn:oid:2.16.840.1.113883.3.7418.5.1",
            "condition": "urn:oid:2.16.840.1.113883.3.7418.5.2",
            "encounter": "urn:oid:2.16.840.1.113883.3.7418.5.3",
            "procedure": "urn:oid:2.16.840.1.113883.3.7418.5.4",
            "document": "urn:oid:2.16.840.1.113883.3.7418.5.5",
        }
    )


@dataclass(frozen=True, slots=True)
class Conventions:
    """How one hospital writes its data; what vendor profiles set."""

    organization: str = "General Hospital (ehrsim)"
    reference_display: str | None = "{given} {family}"
    instant_suffix: str = "Z"
    timestamp_precision: str = "seconds"
    reference_type: bool = False
    mrn_system: str = "urn:oid:2.16.840.1.113883.3.7418.2.1"
    mrn_prefix: str = "MRN"
    mrn_digits: int = 7
    local_codes: LocalCodes = field(default_factory=LocalCodes)
    # Vendor-profile rules (local_codings, extensions, text_only_codes, vars, tables) that the
    # vendor layer applies after generation; kept here only so the mapping round-trips.
    vendor_rules: dict[str, Any] = field(default_factory=dict)


VENDOR_RULE_KEYS = ("vars", "local_codings", "extensions", "text_only_codes", "tables")


@dataclass(frozen=True, slots=True)
class Messiness:
    """Fractions of records each pattern touches; all 0 gives clean US Core data."""

    duplicates: float = 0.0
    merged: float = 0.0
    missing_fields: float = 0.0
    data_absent: float = 0.0
    local_codes: float = 0.0
    text_only_codes: float = 0.0
    missing_units: float = 0.0
    odd_timestamps: float = 0.0
    timestamp_styles: tuple[str, ...] = ("date-only", "year-month", "microseconds", "local-offset")
    effective_period: float = 0.0
    no_clinical_status: float = 0.0
    entered_in_error: float = 0.0
    implausible: float = 0.0
    r5_extensions: float = 0.0


@dataclass(frozen=True, slots=True)
class PopulationSpec:
    patients: int = 10
    as_of: date = DEFAULT_AS_OF
    locale: str = "en_US"
    years: int = 5
    encounters: tuple[int, int] = (3, 9)
    practitioners: int = 6
    conventions: Conventions = field(default_factory=Conventions)
    messiness: Messiness = field(default_factory=Messiness)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, where: str = "population") -> PopulationSpec:
        """Check `data` against the schema and build the spec; `where` prefixes error paths."""
        data = dict(data or {})
        if isinstance(data.get("as_of"), date):  # YAML reads an unquoted date as a date
            data["as_of"] = data["as_of"].isoformat()
        validator = jsonschema.Draft202012Validator(
            population_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            error = errors[0]
            path = ".".join([where, *(str(p) for p in error.absolute_path)])
            hint = _hint(error)
            raise PopulationError(f"{path}: {error.message}{hint}")
        conventions = dict(data.get("conventions") or {})
        local = dict(conventions.pop("local_codes", None) or {})
        vendor_rules = {key: conventions.pop(key) for key in VENDOR_RULE_KEYS if key in conventions}
        systems = {**LocalCodes().systems, **(local.pop("systems", None) or {})}
        messiness = dict(data.get("messiness") or {})
        if "timestamp_styles" in messiness:
            messiness["timestamp_styles"] = tuple(messiness["timestamp_styles"])
        base = cls()
        low, high = data.get("encounters", base.encounters)
        if low > high:
            raise PopulationError(f"{where}.encounters: fewest ({low}) is more than most ({high})")
        return cls(
            patients=int(data.get("patients", base.patients)),
            as_of=date.fromisoformat(data["as_of"]) if "as_of" in data else DEFAULT_AS_OF,
            locale=str(data.get("locale", base.locale)),
            years=int(data.get("years", base.years)),
            encounters=(int(low), int(high)),
            practitioners=int(data.get("practitioners", base.practitioners)),
            conventions=Conventions(
                **conventions, local_codes=LocalCodes(**local, systems=systems), vendor_rules=vendor_rules
            ),
            messiness=Messiness(**messiness),
        )

    def to_mapping(self) -> dict[str, Any]:
        """The spec as a `population:` mapping (what `from_mapping` reads)."""
        conventions = {f.name: getattr(self.conventions, f.name) for f in fields(Conventions)}
        conventions.update(conventions.pop("vendor_rules"))
        local = self.conventions.local_codes
        conventions["local_codes"] = {
            "placement": local.placement,
            "user_selected": local.user_selected,
            "systems": dict(local.systems),
        }
        messiness = {f.name: getattr(self.messiness, f.name) for f in fields(Messiness)}
        messiness["timestamp_styles"] = list(self.messiness.timestamp_styles)
        return {
            "patients": self.patients,
            "as_of": self.as_of.isoformat(),
            "locale": self.locale,
            "years": self.years,
            "encounters": list(self.encounters),
            "practitioners": self.practitioners,
            "conventions": conventions,
            "messiness": messiness,
        }


def _hint(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        return f" (known keys: {', '.join(known)}; see docs/population.md)"
    if error.validator in ("minimum", "maximum") and error.schema.get("maximum") == 1:
        return " (a fraction: 0 means never, 1 means every record)"
    return " (see docs/population.md)"
