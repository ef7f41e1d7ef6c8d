"""Scenarios: YAML files that describe the sandbox (sites, data, and later faults and auth).

`load_scenario("default")` finds `scenarios/default.yaml`; a path loads that file. A scenario may
`extends:` another by name; mappings merge recursively and lists in the child replace the parent's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIR = Path(os.environ.get("EHRSIM_SCENARIOS", Path(__file__).resolve().parent.parent / "scenarios"))


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message names the file and the problem."""


@dataclass
class SiteSpec:
    id: str
    base_path: str
    patients: int = 10
    as_of: date = date(2026, 1, 1)
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the whole mapping, for later layers


@dataclass
class Scenario:
    name: str
    description: str
    seed: int | str
    clock_start: datetime | None  # None: real now at start-up
    clock_speed: float
    sites: list[SiteSpec]
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def scenario_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise ScenarioError(f"{candidate}: no such scenario file")
        return candidate
    path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
        raise ScenarioError(f"unknown scenario '{name_or_path}' (known: {known})")
    return path


def load_raw(name_or_path: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    path = scenario_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario must be a mapping at the top level")
    parent = data.get("extends")
    if parent:
        if parent in _seen:
            raise ScenarioError(f"{path}: 'extends' loops through {' -> '.join((*_seen, parent))}")
        base, _ = load_raw(str(parent), (*_seen, str(parent)))
        data = merge(base, {k: v for k, v in data.items() if k != "extends"})
    return data, path


def merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return override


def load_scenario(name_or_path: str = "default") -> Scenario:
    data, path = load_raw(name_or_path)
    return build_scenario(data, path)


def build_scenario(data: dict[str, Any], path: Path | None = None) -> Scenario:
    where = str(path) if path else "<scenario>"
    clock = data.get("clock") or {}
    start = clock.get("start", "now")
    if start in (None, "now"):
        clock_start = None
    else:
        try:
            clock_start = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        except ValueError:
            raise ScenarioError(
                f"{where}: clock.start '{start}' is not an ISO 8601 instant or 'now'"
            ) from None
        if clock_start.tzinfo is None:
            clock_start = clock_start.replace(tzinfo=UTC)
    from simulator.vendors.profile import resolve_site  # profiles build on this module

    sites = []
    for index, raw in enumerate(data.get("sites") or []):
        if not isinstance(raw, dict) or "id" not in raw:
            raise ScenarioError(f"{where}: sites[{index}] needs an 'id'")
        raw = resolve_site(raw, where)  # a site naming a vendor `profile:` gets its defaults
        population = raw.get("population") or {}
        as_of = population.get("as_of", date(2026, 1, 1))
        if isinstance(as_of, str):
            as_of = date.fromisoformat(as_of)
        sites.append(
            SiteSpec(
                id=str(raw["id"]),
                base_path=str(raw.get("base_path") or f"/{raw['id']}/fhir"),
                patients=int(population.get("patients", 10)),
                as_of=as_of,
                description=str(raw.get("description", "")),
                settings=dict(raw.get("settings") or {}),
                raw=raw,
            )
        )
    if not sites:
        raise ScenarioError(f"{where}: a scenario needs at least one site")
    paths = [s.base_path for s in sites]
    if len(set(paths)) != len(paths):
        raise ScenarioError(f"{where}: two sites share a base_path")
    return Scenario(
        name=str(data.get("name") or (path.stem if path else "scenario")),
        description=str(data.get("description", "")),
        seed=data.get("seed", 0),
        clock_start=clock_start,
        clock_speed=float(clock.get("speed", 1.0)),
        sites=sites,
        source=path,
        raw=data,
    )
