"""SMART scope parsing (v1, v2, granular) and matching against resources."""

from __future__ import annotations

import pytest

from simulator.auth.scopes import ScopeError, ScopeSet, parse_resource_scope
from simulator.fhir.searchparams import default_registry

REGISTRY = default_registry()
VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


@pytest.mark.parametrize(
    ("text", "letters"),
    [
        ("patient/Observation.read", "rs"),
        ("user/*.write", "cud"),
        ("system/*.*", "cruds"),
        ("patient/Observation.rs", "rs"),
        ("user/Patient.cruds", "cruds"),
        ("system/Encounter.r", "r"),
        ("patient/Condition.cu", "cu"),
    ],
)
def test_v1_and_v2_permissions_map_to_letters(text: str, letters: str) -> None:
    scope = parse_resource_scope(text, REGISTRY)
    assert scope is not None
    assert scope.interactions == frozenset(letters)


@pytest.mark.parametrize(
    "text",
    [
        "patient/Observation.sr",  # v2 letters out of order
        "patient/Observation.rr",
        "patient/Observation.xyz",
        "patient/Observation",
        "patient/Observation.read?category=vital-signs",  # granular needs v2
        "patient/*.rs?category=vital-signs",  # granular needs one type
        "patient/Observation.rs?nonsense=1",  # not a search parameter
        "patient/Observation.rs?date=2020",  # not a token/reference/uri/string parameter
        "patient/Observation.rs?category=",
    ],
)
def test_malformed_resource_scopes_are_rejected(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_resource_scope(text, REGISTRY)


def test_context_scopes_are_not_resource_scopes_and_unknown_scopes_fail() -> None:
    scopes = ScopeSet.parse("openid fhirUser launch/patient offline_access patient/*.rs", REGISTRY)
    assert [r.text for r in scopes.resources] == ["patient/*.rs"]
    assert "launch/patient" in scopes
    with pytest.raises(ScopeError, match="unknown scope 'vendor-magic'"):
        ScopeSet.parse("openid vendor-magic", REGISTRY)
    assert "vendor-magic" in ScopeSet.parse("vendor-magic", REGISTRY, frozenset({"vendor-magic"}))


def test_granular_scope_matches_exactly_its_category() -> None:
    scope = parse_resource_scope(f"patient/Observation.rs?category={VITALS}", REGISTRY)
    assert scope is not None
    vital = {
        "resourceType": "Observation",
        "category": [{"coding": [{"system": VITALS.split("|")[0], "code": "vital-signs"}]}],
    }
    lab = {
        "resourceType": "Observation",
        "category": [{"coding": [{"system": VITALS.split("|")[0], "code": "laboratory"}]}],
    }
    other_system = {
        "resourceType": "Observation",
        "category": [{"coding": [{"system": "http://example.org/local", "code": "vital-signs"}]}],
    }
    assert scope.matches(REGISTRY, "Observation", vital)
    assert not scope.matches(REGISTRY, "Observation", lab)
    assert not scope.matches(REGISTRY, "Observation", other_system)
    code_only = parse_resource_scope("patient/Observation.rs?category=vital-signs,laboratory", REGISTRY)
    assert code_only is not None
    assert code_only.matches(REGISTRY, "Observation", other_system)
    assert code_only.matches(REGISTRY, "Observation", lab)
