"""Print a vendor profile's `interactions:` and `search_parameters:` blocks from a CapabilityStatement.

    python tools/capability_to_profile.py ../shared/vendor-captures/epic/CapabilityStatement.json

The output is YAML to paste under a profile's `site.settings` (interactions) and `quirks`
(search_parameters). Types ehrsim cannot serve (no R4B model or search table) are left out and
listed on stderr, so the profile's /metadata stays honest.
"""

from __future__ import annotations

import json
import sys

from simulator.fhir.capability import INTERACTIONS
from simulator.fhir.searchparams import default_registry
from simulator.fhir.validation import model_for


def main(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        statement = json.load(handle)
    registry = default_registry()
    interactions, params, skipped = {}, {}, []
    for resource in statement["rest"][0]["resource"]:
        rtype = resource["type"]
        if not registry.for_type(rtype) or model_for(rtype) is None:
            skipped.append(rtype)
            continue
        interactions[rtype] = [
            i["code"] for i in resource.get("interaction", []) if i["code"] in INTERACTIONS
        ]
        params[rtype] = sorted({p["name"] for p in resource.get("searchParam", [])})
    print("interactions:")
    for rtype, codes in interactions.items():
        print(f"  {rtype}: [{', '.join(codes)}]")
    print("search_parameters:")
    for rtype, names in params.items():
        print(f"  {rtype}: [{', '.join(json.dumps(n) if n.startswith(('-', '_')) else n for n in names)}]")
    if skipped:
        print("not served by ehrsim: " + ", ".join(skipped), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
