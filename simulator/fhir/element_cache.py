"""A fast path for validating resources that repeat themselves (device writes, feeds).

A device posting vitals every second sends the same `code`, `category`, `subject` and `status` each
time; only `effective[x]` and `value[x]` change. Validating the whole resource with its R4B model
re-checks the repeated parts every time. Here the resource's top level is checked the way the
model checks it (known elements, choice elements used once, required elements, no nulls in lists of
complex types), and each element is validated with the model's own type for that element, remembering
the elements already found valid (by their exact JSON).

It only ever answers "valid"; anything it does not vouch for goes to the full model validation, which
also writes the error report, so errors are the model's own. `tests/test_validation_cache.py` checks
that it never accepts what the model rejects.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

CAPACITY = 20_000  # remembered valid elements, across types
MAX_REMEMBERED_BYTES = 1024  # larger elements (attachments, narratives) are validated every time


@dataclass(frozen=True, slots=True)
class _Field:
    adapter: TypeAdapter
    complex_list: bool  # a list of complex types: a null item is an error
    choice: str | None  # the choice element (e.g. "effective") this alias is one type of


@dataclass(frozen=True, slots=True)
class _Plan:
    fields: dict[str, _Field]  # by JSON name
    required_choices: frozenset[str]  # choice elements that must be present
    required: tuple[tuple[str, str | None], ...]  # (alias, alias of its `_` extension sibling)


@functools.cache
def plan_for(model: Any) -> _Plan:
    from fhir_core.utils import is_list_type, is_primitive_type

    fields: dict[str, _Field] = {}
    required_groups: set[str] = set()
    required: list[tuple[str, str | None]] = []
    aliases = {name: info.alias or name for name, info in model.model_fields.items()}
    for name, info in model.model_fields.items():
        alias = aliases[name]
        if alias == "resourceType":
            continue
        complex_list = is_list_type(info) and not is_primitive_type(info) and not name.endswith("__ext")
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        choice = extra.get("one_of_many") or None
        fields[alias] = _Field(TypeAdapter(info.annotation), complex_list, choice)
        if choice and extra.get("one_of_many_required"):
            required_groups.add(choice)
        if extra.get("element_required") or info.is_required():
            sibling = aliases.get(f"{name}__ext")
            required.append((alias, sibling))
    return _Plan(fields, frozenset(required_groups), tuple(required))


# An OrderedDict, not a dict: dropping a dict's oldest key (next(iter(d))) walks every slot its
# earlier deletions left behind, microseconds per write once the cache is full.
_valid: OrderedDict[tuple[str, str, str | bytes], bool] = OrderedDict()


def vouch(model: Any, resource: dict[str, Any]) -> bool:
    """True when `resource` is certainly valid for `model`; False means: ask the model."""
    plan = plan_for(model)
    rtype = resource.get("resourceType")
    chosen: set[str] = set()
    for key, value in resource.items():
        if key == "resourceType":
            continue
        spec = plan.fields.get(key)
        if spec is None or value is None:
            return False
        if spec.choice is not None:
            if spec.choice in chosen:  # two types of one choice element (effectiveDateTime + effectivePeriod)
                return False
            chosen.add(spec.choice)
        if spec.complex_list and isinstance(value, list) and any(item is None for item in value):
            return False
        # Strings (codes, ids, dates) are their own key; structures are keyed by their JSON.
        raw = value if type(value) is str else orjson.dumps(value)
        remember = len(raw) <= MAX_REMEMBERED_BYTES
        if remember and (rtype, key, raw) in _valid:
            continue
        try:
            spec.adapter.validate_python(value)
        except (ValidationError, ValueError, TypeError):
            return False
        if remember:
            if len(_valid) >= CAPACITY:
                _valid.popitem(last=False)  # oldest first
            _valid[(rtype, key, raw)] = True
    if not plan.required_choices <= chosen:
        return False
    for alias, sibling in plan.required:
        if resource.get(alias) is None and (
            sibling is None or not (resource.get(sibling) or {}).get("extension")
        ):
            return False
    return True
