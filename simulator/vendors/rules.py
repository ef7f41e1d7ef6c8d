"""Conditions on a resource, written as data: `{path, equals | one_of, message}` over dotted paths.

Lists along a path are searched element-wise: `category.coding.code` holds `vital-signs` if any
coding of any category has it. Write rules (required fields) and search exclusions use these.
"""

from __future__ import annotations

from typing import Any


def values_at(data: Any, path: str) -> list[Any]:
    current = [data]
    for key in path.split("."):
        found: list[Any] = []
        for item in current:
            value = item.get(key) if isinstance(item, dict) else None
            if isinstance(value, list):
                found.extend(value)
            elif value is not None:
                found.append(value)
        current = found
    return current


def broken_rules(resource: Any, rules: list[dict[str, Any]]) -> list[str]:
    """The messages of the rules `resource` breaks, in rule order."""
    out = []
    for rule in rules:
        values = values_at(resource, rule["path"])
        if "equals" in rule:
            ok = rule["equals"] in values
        elif "one_of" in rule:
            ok = any(v in rule["one_of"] for v in values)
        else:
            ok = bool(values)
        if not ok:
            out.append(str(rule.get("message", f"{rule['path']} is required")))
    return out


def holds(resource: Any, rule: dict[str, Any]) -> bool:
    return not broken_rules(resource, [rule])
