"""The validation fast path never accepts what the R4B model rejects, and does accept real data."""

from __future__ import annotations

import copy
import functools
import itertools
from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from simulator.fhir.element_cache import vouch
from simulator.fhir.validation import model_for
from simulator.population import generate


@functools.cache
def population() -> list[dict[str, Any]]:
    counter = itertools.count()
    return generate(5, 4, date(2026, 1, 1), lambda *_: f"id{next(counter)}")


def model_accepts(resource: dict[str, Any]) -> bool:
    try:
        model_for(resource["resourceType"]).model_validate(resource)
    except (ValidationError, ValueError, TypeError):
        return False
    return True


def test_real_resources_take_the_fast_path() -> None:
    resources = population()
    vouched = [r for r in resources if vouch(model_for(r["resourceType"]), r)]
    assert len(vouched) == len(resources)
    assert all(model_accepts(r) for r in vouched)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.text(max_size=6)
    | st.sampled_from(["2024-01-01", "x|y"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["value", "code", "system", "reference", "coding", "text", "x"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


@settings(max_examples=400, deadline=None)
@given(
    index=st.integers(min_value=0),
    kind=st.sampled_from(["replace", "delete", "unknown", "second-choice", "null-in-list"]),
    pick=st.integers(min_value=0),
    new=json_values,
)
def test_fast_path_never_accepts_what_the_model_rejects(index: int, kind: str, pick: int, new: Any) -> None:
    resources = population()
    resource = copy.deepcopy(resources[index % len(resources)])
    model = model_for(resource["resourceType"])
    assert vouch(model, resource)  # warms the remembered elements with the valid originals
    paths = [p for p in _paths(resource) if p[0] != "resourceType"]
    if kind == "replace" and paths:
        path = paths[pick % len(paths)]
        holder = functools.reduce(lambda v, k: v[k], path[:-1], resource)
        holder[path[-1]] = new
    elif kind == "delete" and paths:
        path = paths[pick % len(paths)]
        holder = functools.reduce(lambda v, k: v[k], path[:-1], resource)
        del holder[path[-1]]
    elif kind == "unknown":
        resource["notAnElement"] = new
    elif kind == "second-choice":
        choice = next(
            (
                k
                for k in resource
                if k.startswith(("effective", "value", "onset", "occurrence", "performed", "medication"))
            ),
            None,
        )
        if choice:
            base = next(
                k
                for k in ("effective", "value", "onset", "occurrence", "performed", "medication")
                if choice.startswith(k)
            )
            resource[base + "String"] = "also"
    elif kind == "null-in-list":
        lists = [k for k, v in resource.items() if isinstance(v, list)]
        if lists:
            resource[lists[pick % len(lists)]].append(None)
    if vouch(model, resource):
        assert model_accepts(resource), (kind, resource)
