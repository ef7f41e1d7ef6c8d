"""The synthetic population: a hospital's people with plausible clinical stories, messy on request.

`generate(seed, patients, as_of, new_id, population)` returns FHIR R4 resources (dicts) in
dependency order: the hospital (organization, locations, practitioners) first, then each person's
records. `population` is the site's `population:` mapping (schema:
`scenarios/schema/population.schema.json`, knobs documented in docs/population.md); `patients` and
`as_of` override its values when given. Same seed and mapping, same id sequence: same resources,
byte for byte.

- `story.py`: the clean clinical story (US Core must-support elements present).
- `messiness.py`: production-like mess (duplicates, local codes, odd timestamps...), per knob.
- `export.py`: transaction bundles per patient or NDJSON per type, for `ehrsim generate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from simulator.population.spec import PopulationError, PopulationSpec
from simulator.population.story import Hospital, PatientStory, clinical_tables

__all__ = ["PopulationError", "PopulationSpec", "clinical_tables", "generate", "iter_population"]


def iter_population(
    seed: int | str, spec: PopulationSpec, new_id: Callable[..., str]
) -> Iterator[list[dict[str, Any]]]:
    """The hospital's resources, then one list per person (their records, duplicates included)."""
    as_of = datetime(spec.as_of.year, spec.as_of.month, spec.as_of.day, 12, tzinfo=UTC)
    hospital = Hospital(spec, seed, new_id, as_of)
    yield hospital.build()
    for index in range(spec.patients):
        yield PatientStory(hospital, index).build()


def generate(
    seed: int | str,
    patients: int | None,
    as_of: date | datetime | None,
    new_id: Callable[..., str],
    population: dict[str, Any] | PopulationSpec | None = None,
) -> list[dict[str, Any]]:
    """All resources for a site, deterministic for (seed, population, new_id sequence)."""
    spec = population if isinstance(population, PopulationSpec) else PopulationSpec.from_mapping(population)
    if patients is not None:
        spec = replace(spec, patients=patients)
    if as_of is not None:
        spec = replace(spec, as_of=as_of.date() if isinstance(as_of, datetime) else as_of)
    return [resource for chunk in iter_population(seed, spec, new_id) for resource in chunk]
