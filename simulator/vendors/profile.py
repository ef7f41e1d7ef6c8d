"""Vendor profiles: how one EHR vendor answers, as data in `scenarios/vendors/NAME.yaml`.

A scenario's site names a profile (`profile: epic`); `resolve_site` merges the profile's `site:`
defaults (base path, settings, auth, population) and its `quirks:` under the site's own mapping, so
a hospital variant overrides only what differs. A profile may `extends:` another (a newer vendor
release, a hospital's local build). Nothing in ehrsim branches on a vendor's name: the quirk layers
in this package read `quirks:`, the core reads `settings:`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from simulator.scenario import SCENARIO_DIR, ScenarioError, merge, named_yaml, schema_registry
from simulator.vendors.outcomes import fill

PROFILE_DIR = SCENARIO_DIR / "vendors"
SCHEMA_PATH = SCENARIO_DIR / "schema" / "profile.schema.json"


@dataclass(frozen=True)
class VendorProfile:
    name: str
    version: str
    display_name: str
    site: dict[str, Any]  # defaults for a site's mapping: base_path, settings, auth, population
    quirks: dict[str, Any]  # read by the quirk layers (simulator/vendors/*)
    sandbox_patients: list[dict[str, Any]] = field(default_factory=list)
    source: Path | None = None


def profile_path(name_or_path: str) -> Path:
    return named_yaml(name_or_path, PROFILE_DIR, "vendor profile")


def _load_raw(name_or_path: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    path = profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a vendor profile must be a mapping at the top level")
    return _extended(data, str(path), seen), path


def _extended(data: dict[str, Any], where: str, seen: tuple[str, ...]) -> dict[str, Any]:
    parent = data.get("extends")
    if not parent:
        return data
    if parent in seen:
        raise ScenarioError(f"{where}: 'extends' loops through {' -> '.join((*seen, parent))}")
    base, _ = _load_raw(str(parent), (*seen, str(parent)))
    return merge(base, {k: v for k, v in data.items() if k != "extends"})


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    # A profile file is the schema's $defs/profile, and names itself; its site sections refer to
    # the scenario's section schemas (population, auth), found through the shared registry.
    return jsonschema.Draft202012Validator(
        {"$ref": f"{schema['$id']}#/$defs/profile", "required": ["profile"]}, registry=schema_registry()
    )


def validate_profile(data: dict[str, Any], where: str) -> None:
    """Raise ScenarioError naming the file, the path inside it and what is wrong."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = errors[0]
        at = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ScenarioError(f"{where}: at {at}: {error.message}")


@functools.cache
def load_profile(name_or_path: str) -> VendorProfile:
    data, path = _load_raw(name_or_path)
    validate_profile(data, str(path))
    return _profile(data, path)


def inline_profile(data: dict[str, Any], where: str) -> VendorProfile:
    """A site's own profile mapping: it `extends` a named profile and overrides parts of it."""
    if not data.get("extends"):
        raise ScenarioError(f"{where}: an inline profile needs 'extends: <profile name>'")
    merged = _extended(data, where, ())
    validate_profile(merged, where)
    return _profile(merged, None)


def _profile(data: dict[str, Any], path: Path | None) -> VendorProfile:
    return VendorProfile(
        name=str(data["profile"]),
        version=str(data.get("version", "")),
        display_name=str(data.get("display_name", data["profile"])),
        site=data.get("site") or {},
        quirks=data.get("quirks") or {},
        sandbox_patients=list(data.get("sandbox_patients") or []),
        source=path,
    )


def profile_of(spec: Any, where: str = "<scenario>") -> VendorProfile | None:
    """The profile a site mapping names (`profile: epic` or an inline mapping), if any."""
    if not spec:
        return None
    if isinstance(spec, dict):
        return inline_profile(spec, where)
    return load_profile(str(spec))


def site_defaults(profile: VendorProfile) -> dict[str, Any]:
    """What a profile contributes to a site's mapping (`quirks` and `sandbox_patients` are read by
    the vendor layers and the population step, not by the scenario schema)."""
    defaults = merge(
        profile.site,
        {
            "quirks": profile.quirks,
            "sandbox_patients": profile.sandbox_patients,
            "description": f"{profile.display_name} ({profile.version})",
            "vendor_profile": profile.name,
        },
    )
    return defaults


def _with_resource_types(site: dict[str, Any]) -> dict[str, Any]:
    settings = site.get("settings") or {}
    if settings.get("interactions") and "resource_types" not in settings:
        # A vendor serves the types its CapabilityStatement lists, and no others.
        site["settings"] = {**settings, "resource_types": sorted(settings["interactions"])}
    return site


def resolve_site(raw: dict[str, Any], where: str = "<scenario>") -> dict[str, Any]:
    """A site mapping with its profile's defaults merged underneath; unchanged without `profile:`."""
    profile = profile_of(raw.get("profile"), f"{where}: site '{raw.get('id')}' profile")
    if profile is None:
        return raw
    site = {k: v for k, v in raw.items() if k != "profile"}
    return _with_vars_filled(_with_resource_types(merge(site_defaults(profile), site)))


def _with_vars_filled(site: dict[str, Any]) -> dict[str, Any]:
    """`{name}` in population conventions filled from `conventions.vars` (an Epic instance's OID
    root, an Oracle tenant), so the generator and the vendor rules see plain systems."""
    conventions = (site.get("population") or {}).get("conventions")
    if not conventions or not conventions.get("vars"):
        return site
    fields = {k: str(v) for k, v in conventions["vars"].items()}

    def filled(value: Any) -> Any:
        if isinstance(value, str):
            return fill(value, fields)
        if isinstance(value, dict):
            return {k: (v if k == "vars" else filled(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [filled(v) for v in value]
        return value

    site["population"] = {**site["population"], "conventions": filled(conventions)}
    return site


def settings_of(profile: VendorProfile) -> dict[str, Any]:
    """The SiteSettings mapping a profile gives a site on its own (for a switch at run time)."""
    return _with_resource_types(site_defaults(profile)).get("settings") or {}
