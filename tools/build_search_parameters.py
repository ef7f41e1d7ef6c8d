"""Build ehrsim's search-parameter table from the official definitions.

Reads the FHIR R4 (4.0.1) SearchParameter bundle and the US Core 6.1.0 SearchParameters (both CC0,
in ../shared/fhir-r4/) and writes simulator/fhir/data/search-parameters.json: for each resource type,
each parameter's code, type, the FHIRPath expression for that resource only, targets, comparators,
modifiers and canonical URL. The server derives its indexes, its query parser and its
CapabilityStatement from that one table, so regenerate it here rather than editing it by hand.

    python tools/build_search_parameters.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "simulator" / "fhir" / "data" / "search-parameters.json"


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath union at top-level '|' (not inside parentheses or quotes)."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def expression_for(base: str, expression: str) -> str:
    """The part of a multi-resource expression that applies to one base resource."""
    own = []
    for part in split_union(expression):
        bare = part.lstrip("(")
        if bare.startswith(base + ".") or bare == base or bare.startswith(f"{base} "):
            own.append(part)
    return " | ".join(own)


def entry(resource: dict, base: str) -> dict:
    expression = resource.get("expression") or ""
    item = {
        "code": resource["code"],
        "type": resource["type"],
        "expression": expression_for(base, expression) if expression else "",
        "url": resource.get("url"),
    }
    for key in ("target", "comparator", "modifier"):
        if resource.get(key):
            item[key + "s" if key != "modifier" else "modifiers"] = resource[key]
    if resource.get("component"):
        item["components"] = [
            {"definition": c["definition"], "expression": c["expression"]} for c in resource["component"]
        ]
    return item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.environ.get("EHRSIM_SHARED", str(ROOT.parent / "shared")))
    args = parser.parse_args()
    shared = Path(args.shared)
    spec = json.loads((shared / "fhir-r4" / "search-parameters.json").read_text())
    table: dict[str, dict[str, dict]] = {}
    by_url = {}
    for e in spec["entry"]:
        r = e["resource"]
        by_url[r["url"]] = r
        for base in r["base"]:
            table.setdefault(base, {})[r["code"]] = entry(r, base)
    # US Core parameters add what R4 lacks (race, ethnicity, gender-identity...) and win where both
    # define a code, because the certified vendor APIs implement the US Core form.
    for path in sorted(glob.glob(str(shared / "fhir-r4" / "us-core-6.1.0" / "SearchParameter-*.json"))):
        r = json.loads(Path(path).read_text())
        for base in r["base"]:
            item = entry(r, base)
            if r["code"] in table.get(base, {}) and not item["expression"]:
                continue
            table.setdefault(base, {})[r["code"]] = item
    # Composite parameters refer to their components by URL; resolve them to codes.
    for params in table.values():
        for item in params.values():
            for comp in item.get("components", []):
                target = by_url.get(comp["definition"])
                comp["code"] = target["code"] if target else comp["definition"].rsplit("-", 1)[-1]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    ordered = {base: dict(sorted(params.items())) for base, params in sorted(table.items())}
    OUT.write_text(json.dumps(ordered, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}: {sum(len(p) for p in table.values())} parameters")


if __name__ == "__main__":
    main()
