"""Scenarios: YAML files that describe the sandbox (sites, data, faults, rate limits, auth).

`load_scenario("default")` finds `scenarios/default.yaml`; a path loads that file. A scenario may
`extends:` another by name; mappings merge recursively and lists in the child replace the parent's.
Every scenario is checked against the JSON Schema in `scenarios/schema/` (one file per section)
before it is built; `validate_file` reports every problem with its file, line, path and a fix hint.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

SCENARIO_DIR = Path(os.environ.get("EHRSIM_SCENARIOS", Path(__file__).resolve().parent.parent / "scenarios"))
SCHEMA_DIR = SCENARIO_DIR / "schema"


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message names the file and the problem(s)."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario file, where it is, and how to fix it."""

    file: str
    line: int | None
    path: str  # e.g. faults[0].schedule.after
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.path or '(top level)'}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


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
    faults: list[Any] = field(default_factory=list)  # simulator/faults/
    rate_limits: list[Any] = field(default_factory=list)  # simulator/ratelimit.py
    data_latency: list[Any] = field(default_factory=list)  # simulator/datalatency.py
    journal: dict[str, Any] = field(default_factory=dict)  # capacity, spill, enabled, bodies
    clients: list[Any] = field(default_factory=list)  # OAuth clients (SMART)


def _is_file(path: Path) -> bool:
    """Not `exists`: "" is Path("."), and a directory is no YAML file. A name too long for the
    file system raises OSError from `is_file` instead of answering False."""
    try:
        return path.is_file()
    except OSError:
        return False


def named_yaml(name_or_path: str, directory: Path, kind: str) -> Path:
    """A YAML file given by path (ending in .yaml or .yml), or by name in `directory` (scenarios,
    vendor profiles). Only YAML files: the admin API reads a path a client names, and its errors
    quote what they read, so any other file (/etc/passwd) must not be read at all."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not _is_file(candidate):
            raise ScenarioError(f"{candidate}: no such {kind} file")
        return candidate
    path = directory / f"{name_or_path}.yaml"
    if "/" in name_or_path or "\\" in name_or_path or not _is_file(path):
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
        raise ScenarioError(
            f"unknown {kind} '{name_or_path}' (known: {known}; a {kind} file's name ends in .yaml)"
        )
    return path


def scenario_path(name_or_path: str) -> Path:
    return named_yaml(name_or_path, SCENARIO_DIR, "scenario")


# (file, YAML node tree) of a scenario and the scenarios it extends, child first: for line numbers.
Sources = list[tuple[Path, Any]]


def _read_yaml(path: Path) -> tuple[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read it as a UTF-8 YAML file ({exc})") from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except RecursionError:  # PyYAML recurses once per nesting level
        raise ScenarioError(f"{path}: the YAML is nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = Problem(
            str(path),
            line,
            "",
            f"not valid YAML: {getattr(exc, 'problem', exc)}",
            "check indentation and quoting",
        )
        raise ScenarioError(str(problem), [problem]) from None


def load_sources(name_or_path: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path, Sources]:
    """The merged mapping (with `extends` resolved), its file, and every file's YAML nodes."""
    path = scenario_path(name_or_path)
    data, node = _read_yaml(path)
    data = data or {}
    if not isinstance(data, dict):
        problem = Problem(
            str(path),
            1,
            "",
            "a scenario must be a mapping at the top level",
            "start with name:, seed:, sites:",
        )
        raise ScenarioError(str(problem), [problem])
    sources: Sources = [(path, node)]
    parent = data.get("extends")
    if parent:
        parent = str(parent)
        relative = path.parent / parent
        if Path(parent).suffix in (".yaml", ".yml") and not Path(parent).is_absolute() and relative.exists():
            parent = str(relative)  # a path is relative to the file that extends it
        if parent in _seen or parent == name_or_path:
            raise ScenarioError(f"{path}: 'extends' loops through {' -> '.join((*_seen, str(parent)))}")
        base, _, parent_sources = load_sources(str(parent), (*_seen, name_or_path))
        data = merge(base, {k: v for k, v in data.items() if k != "extends"})
        sources += parent_sources
    return data, path, sources


def load_raw(name_or_path: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    data, path, _ = load_sources(name_or_path, _seen)
    return data, path


def merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return override


def load_scenario(name_or_path: str = "default") -> Scenario:
    data, path, sources = load_sources(name_or_path)
    problems = validate(data, sources)
    if problems:
        raise ScenarioError("\n".join(str(p) for p in problems), problems)
    return build_scenario(data, path)


def scenario_from_mapping(data: dict[str, Any], where: str = "<scenario>") -> Scenario:
    """A scenario given as data (e.g. through the admin API); `extends` names a shipped one."""
    sources: Sources = []
    if data.get("extends"):
        base, _, sources = load_sources(str(data["extends"]))
        data = merge(base, {k: v for k, v in data.items() if k != "extends"})
    problems = validate(data, sources, where)
    if problems:
        raise ScenarioError("\n".join(str(p) for p in problems), problems)
    return build_scenario(data)


def validate_file(name_or_path: str) -> list[Problem]:
    """Every problem in a scenario file (schema, then what only building it can find)."""
    try:
        data, path, sources = load_sources(name_or_path)
    except ScenarioError as exc:
        return exc.problems or [Problem(name_or_path, None, "", str(exc))]
    problems = validate(data, sources)
    if not problems:
        try:
            check_semantics(build_scenario(data, path))
        except (ScenarioError, ValueError) as exc:
            problems.append(Problem(str(path), None, "", str(exc)))
    return problems


def check_semantics(scenario: Scenario) -> None:
    """What the schema cannot see (e.g. 'every' shorter than 'for'); raises ValueError."""
    from simulator.clock import Clock
    from simulator.datalatency import visibility_for
    from simulator.faults import FaultEngine
    from simulator.mllp.faults import check_action
    from simulator.mllp.settings import check_site_section
    from simulator.ratelimit import RateLimiter
    from simulator.site import SiteSettings

    clock = Clock(scenario.clock_start, scenario.clock_speed)
    FaultEngine.from_specs(scenario.faults, clock, scenario.seed)
    RateLimiter.from_specs(scenario.rate_limits, clock)
    site_ids = [spec.id for spec in scenario.sites]
    for section in ("faults", "rate_limits", "data_latency"):
        for index, item in enumerate(getattr(scenario, section)):
            named = (item.get("match") or {}).get("site") if section == "faults" else item.get("site")
            for name in named if isinstance(named, list) else [named]:
                if isinstance(name, str) and not any(c in name for c in "*?[") and name not in site_ids:
                    raise ValueError(
                        f"{section}[{index}] names site '{name}', which is not in this scenario "
                        f"(sites: {', '.join(site_ids)})"
                    )
    for fault in scenario.faults or []:  # MLLP action settings the schema cannot check
        if isinstance(fault, dict) and isinstance(fault.get("action"), dict):
            check_action(str(fault.get("id", "?")), fault["action"])
    check_expectations(scenario.raw.get("expect") or [], scenario.faults, clock.start)
    for spec in scenario.sites:
        SiteSettings.from_mapping(spec.settings)
        check_site_section(spec.raw.get("mllp"), f"sites[{spec.id}].mllp")
        visibility_for(scenario.data_latency, spec.id, clock)


def check_expectations(items: list[Any], faults: list[Any], start: datetime | None) -> None:
    """`expect:` filters that verify.py would refuse, and `during` checks naming no timed fault."""
    from simulator.faults.schedule import Schedule
    from simulator.verify import EntryFilter, VerifyError

    timed = {
        f.get("id")
        for f in faults
        if isinstance(f, dict) and Schedule.from_mapping(f.get("schedule") or {}).timed
    }
    for index, item in enumerate(items):
        try:
            for flt in [item.get("filter"), *(item.get("sequence") or [])]:
                EntryFilter.from_mapping(flt, start)
        except VerifyError as exc:
            raise ValueError(f"expect[{index}]: {exc}") from None
        if item.get("check") == "during" and item.get("fault") and item["fault"] not in timed:
            raise ValueError(
                f"expect[{index}]: 'during' names fault '{item['fault']}', which is not a timed fault of "
                f"this scenario (timed: {', '.join(sorted(map(str, timed))) or 'none'})"
            )


def shipped() -> list[tuple[str, str]]:
    """(name, one-line description) of every scenario in the scenarios folder."""
    out = []
    for file in sorted(SCENARIO_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            data = {"description": "(not valid YAML; run `ehrsim scenario validate`)"}
        description = str(data.get("description", "")).strip().splitlines() if isinstance(data, dict) else []
        out.append((file.stem, description[0] if description else ""))
    return out


def resolved(name_or_path: str) -> dict[str, Any]:
    """The scenario as the sandbox sees it: `extends` merged and defaults filled in."""
    scenario = load_scenario(name_or_path)
    data = dict(scenario.raw)
    data["name"] = scenario.name
    data.setdefault("seed", scenario.seed)
    data["clock"] = {"start": data.get("clock", {}).get("start", "now"), "speed": scenario.clock_speed}
    data["sites"] = [
        {
            **spec.raw,
            "base_path": spec.base_path,
            "population": {
                **(spec.raw.get("population") or {}),
                "patients": spec.patients,
                "as_of": spec.as_of.isoformat(),
            },
        }
        for spec in scenario.sites
    ]
    data["journal"] = {"enabled": True, "capacity": 100_000, "bodies": "writes", **scenario.journal}
    for key in ("faults", "rate_limits", "data_latency", "clients"):
        data.setdefault(key, [])
    return _plain(data)


# -- the schema ------------------------------------------------------------------------------------
_validator: Draft202012Validator | None = None


def schema_validator() -> Draft202012Validator:
    """The scenario schema with its section files (scenarios/schema/*.schema.json) as references."""
    global _validator
    if _validator is None:
        root = json.loads((SCHEMA_DIR / "scenario.schema.json").read_text(encoding="utf-8"))
        _validator = Draft202012Validator(root, registry=schema_registry())
    return _validator


@functools.cache
def _fault_validator() -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": "https://ehrsim.dev/schema/fault.schema.json"}, registry=schema_registry()
    )


def fault_problems(spec: dict[str, Any], where: str = "fault") -> list[Problem]:
    """What the fault schema finds wrong with one fault added at run time (the admin API), as a
    scenario file's faults are checked: the engine reads action settings only when the fault fires.
    A runtime fault's id is free text and its action may be a bare type name."""
    data = _plain(spec)
    if isinstance(data.get("action"), str):
        data["action"] = {"type": data["action"]}
    errors = [
        error
        for error in _fault_validator().iter_errors(data)
        if not (list(error.absolute_path) == ["id"] and error.validator == "pattern")
    ]
    errors.sort(key=lambda e: list(map(str, e.absolute_path)))
    return [_problem(error, [], where) for error in errors]


@functools.cache
def schema_registry() -> Registry:
    """Every section schema (scenarios/schema/*.schema.json) by its $id, for cross-file $refs."""
    resources = []
    for file in sorted(SCHEMA_DIR.glob("*.schema.json")):
        schema = json.loads(file.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def _plain(value: Any) -> Any:
    """YAML dates and datetimes as ISO strings, as JSON Schema sees them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _dotted(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _node_at(node: Any, path: list[Any]) -> Any:
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
        if node is None:
            return None
    return node


def _key_line(node: Any, key: str) -> int | None:
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            if k.value == key:
                return k.start_mark.line + 1
    return None


def _locate(sources: Sources, path: list[Any], key: str | None, where: str) -> tuple[str, int | None]:
    for file, root in sources:
        node = _node_at(root, path)
        if node is None:
            continue
        line = _key_line(node, key) if key else None
        if key is None or line is not None:
            return str(file), line or node.start_mark.line + 1
    if sources:
        return str(sources[0][0]), None
    return where, None


def _problem(error: ValidationError, sources: Sources, where: str) -> Problem:
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    key = None
    message = error.message
    hint = ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        key = extras[0] if extras else None
        message = f"unknown field {', '.join(repr(k) for k in extras)}"
        hint = f"check the spelling; allowed here: {', '.join(allowed)}"
    elif error.validator == "required":
        hint = f"add {error.message.split(' is a required')[0]}"
    elif error.validator == "enum":
        hint = "use one of " + ", ".join(map(str, error.validator_value))
    elif error.validator == "anyOf" and path and path[-1] == "action":
        from simulator.faults.http import HTTP_ACTIONS

        kind = error.instance.get("type") if isinstance(error.instance, dict) else None
        kind = kind if isinstance(kind, str) else None  # `type: [status]` is no action name either
        branch = [e for e in error.context or () if e.relative_schema_path[0] == 0]
        if kind in HTTP_ACTIONS and branch:  # a known HTTP action with a bad setting: report that
            return _problem(branch[0], sources, where)
        message = f"unknown action {kind!r}" if kind else "an action needs a 'type'"
        hint = (
            "HTTP actions: "
            + ", ".join(sorted(HTTP_ACTIONS))
            + "; MLLP/auth/profile actions per their schema files"
        )
    elif error.validator == "anyOf" and isinstance(schema.get("description"), str):
        message = f"{error.instance!r} is not valid here"
        hint = schema["description"]
    elif error.validator in (
        "pattern",
        "type",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "minItems",
        "maxItems",
    ):
        hint = str(schema.get("description", "")) or f"expected {error.validator} {error.validator_value}"
    file, line = _locate(sources, path, key, where)
    return Problem(file, line, _dotted(path), message, hint)


def validate(
    data: dict[str, Any], sources: Sources | None = None, where: str = "<scenario>"
) -> list[Problem]:
    """Problems found by the JSON Schema, in document order."""
    errors = sorted(
        schema_validator().iter_errors(_plain(data)), key=lambda e: list(map(str, e.absolute_path))
    )
    problems = [_problem(error, sources or [], where) for error in errors]
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return problems


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
        faults=list(data.get("faults") or []),
        rate_limits=list(data.get("rate_limits") or []),
        data_latency=list(data.get("data_latency") or []),
        journal=dict(data.get("journal") or {}),
        clients=list(data.get("clients") or []),
    )


def parse_seed(text: str) -> int | str:
    """A seed given as text (CLI, conformance runs): a number when it is one, else the text."""
    return int(text) if text.isascii() and text.isdigit() else text
