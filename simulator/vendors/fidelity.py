"""The fidelity check: replay real vendor captures against ehrsim and compare the answers' shape.

A capture is `{"_request": {"method", "url", "status"}, "body"}` (see the captures' README). The
request is replayed against the site of the vendor's scenario (same path below the base, same
query); the answer is compared on what an integration depends on, never on the data's values:

- status code; FHIR or not (and the keys of a non-FHIR envelope); resourceType
- OperationOutcome: each issue's severity, code, details system and code, in order
- Bundle: type, `total` present or not (and equal to the page's entries when the vendor's is),
  link relations, and each link's URL style (path below the base, query parameter names in order),
  search modes, match resource types, outcome-entry issues, per-entry links
- ids of matches (or of the resource read): the same format class (`uuid`, `VS.uuid`, `numeric`,
  `L-numeric`, `opaque45`)
- codings in `code`: every vendor-local code system the capture shows, and a standard terminology
  in common when the capture uses one

    python -m simulator.vendors.fidelity [CAPTURE_DIR]   # per-vendor report; exit 1 on mismatches
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from simulator.testing import serve_in_thread
from simulator.vendors.profile import load_profile

# The captures were taken with valid tokens; serving without auth (the auth layer's `auth: off`
# option) is the same as presenting one, and keeps the replay about the vendor's shapes.
NO_AUTH = {"auth": "off"}
CAPTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "vendor-captures"
VENDORS = ("epic", "oracle-health", "meditech")  # capture folder = scenario name = profile name
STANDARD_SYSTEMS = (
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://terminology.hl7.org/",
    "http://unitsofmeasure.org",
)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


@dataclass
class Capture:
    vendor: str
    name: str
    method: str
    url: str
    status: int
    body: Any


@dataclass
class Verdict:
    capture: Capture
    differences: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not self.differences


def load_captures(root: Path = CAPTURE_DIR) -> list[Capture]:
    """Every capture that records its request, vendor by vendor, in file order."""
    out = []
    for vendor in VENDORS:
        for path in sorted((root / vendor).glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            request = data.get("_request") if isinstance(data, dict) else None
            if request:
                out.append(
                    Capture(
                        vendor, path.stem, request["method"], request["url"], request["status"], data["body"]
                    )
                )
    return out


def id_class(resource_id: str) -> str:
    if re.fullmatch(_UUID, resource_id):
        return "uuid"
    if m := re.fullmatch(rf"([A-Za-z]+)\.{_UUID}", resource_id):
        return f"{m.group(1)}.uuid"
    if resource_id.isdigit():
        return "numeric"
    if m := re.fullmatch(r"([A-Za-z]+)-\d+(-\d+)*", resource_id):
        return f"{m.group(1)}-numeric"
    return f"opaque{len(resource_id)}"


def _url_style(url: str, base: str) -> tuple[str, tuple[str, ...]]:
    parts = urlsplit(url)
    path = (
        parts.path[len(urlsplit(base).path) :] if parts.path.startswith(urlsplit(base).path) else parts.path
    )
    return path, tuple(name for name, _ in parse_qsl(parts.query, keep_blank_values=True))


def _issues(outcome: dict[str, Any]) -> list[tuple[Any, ...]]:
    out = []
    for issue in outcome.get("issue", []):
        coding = ((issue.get("details") or {}).get("coding") or [{}])[0]
        out.append((issue.get("severity"), issue.get("code"), coding.get("system"), coding.get("code")))
    return out


def _systems(resources: list[dict[str, Any]]) -> set[str]:
    return {
        c.get("system")
        for r in resources
        for c in ((r.get("code") or {}).get("coding") or [])
        if isinstance(r.get("code"), dict) and c.get("system")
    }


def _standard(system: str) -> bool:
    return system.startswith(STANDARD_SYSTEMS)


def compare(capture: Capture, status: int, body: Any, vendor_base: str, our_base: str) -> list[str]:
    """What differs between the vendor's answer and ehrsim's, in words; empty when they match."""
    diffs: list[str] = []
    expected = capture.body
    if status != capture.status:
        diffs.append(f"status {status}, vendor {capture.status}")
    if not isinstance(expected, dict) or "resourceType" not in expected:
        want = sorted(expected) if isinstance(expected, dict) else None
        have = sorted(body) if isinstance(body, dict) and "resourceType" not in body else None
        if want != have:
            diffs.append(f"non-FHIR body keys {have}, vendor {want}")
        return diffs
    if not isinstance(body, dict) or body.get("resourceType") != expected["resourceType"]:
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        return [*diffs, f"resourceType {kind}, vendor {expected['resourceType']}"]
    rtype = expected["resourceType"]
    if rtype == "OperationOutcome":
        if _issues(body) != _issues(expected):
            diffs.append(f"issues {_issues(body)}, vendor {_issues(expected)}")
        return diffs
    if rtype != "Bundle":
        if id_class(str(body.get("id"))) != id_class(str(expected.get("id"))):
            diffs.append(
                f"id format {id_class(str(body.get('id')))}, vendor {id_class(str(expected.get('id')))}"
            )
        return diffs + _coding_differences([body], [expected])
    if body.get("type") != expected.get("type"):
        diffs.append(f"bundle type {body.get('type')}, vendor {expected.get('type')}")
    ours_entries, their_entries = body.get("entry", []), expected.get("entry", [])
    ours_matches = [e["resource"] for e in ours_entries if e.get("search", {}).get("mode") == "match"]
    their_matches = [e["resource"] for e in their_entries if e.get("search", {}).get("mode") == "match"]
    if ("total" in body) != ("total" in expected):
        diffs.append(f"total {'present' if 'total' in body else 'absent'}, vendor the opposite")
    elif (
        "total" in expected
        and expected["total"] == len(their_matches) > 0
        and body["total"] != len(ours_matches)
    ):
        diffs.append(
            f"total {body['total']} is not the page's {len(ours_matches)} entries, as the vendor's is"
        )
    ours_links = {link["relation"]: _url_style(link["url"], our_base) for link in body.get("link", [])}
    their_links = {
        link["relation"]: _url_style(link["url"], vendor_base) for link in expected.get("link", [])
    }
    if set(ours_links) != set(their_links):
        diffs.append(f"link relations {sorted(ours_links)}, vendor {sorted(their_links)}")
    for relation in set(ours_links) & set(their_links):
        if ours_links[relation] != their_links[relation]:
            diffs.append(f"{relation} link style {ours_links[relation]}, vendor {their_links[relation]}")
    if _modes(ours_entries) != _modes(their_entries):
        diffs.append(f"search modes {_modes(ours_entries)}, vendor {_modes(their_entries)}")
    if _kinds(ours_matches) != _kinds(their_matches):
        diffs.append(f"match types {_kinds(ours_matches)}, vendor {_kinds(their_matches)}")
    if _outcome_issues(ours_entries) != _outcome_issues(their_entries):
        diffs.append(
            f"outcome-entry issues {_outcome_issues(ours_entries)}, vendor {_outcome_issues(their_entries)}"
        )
    linked_ours, linked_theirs = (
        any("link" in e for e in ours_entries),
        any("link" in e for e in their_entries),
    )
    if linked_ours != linked_theirs:
        diffs.append(f"per-entry links {linked_ours}, vendor {linked_theirs}")
    ours_ids = {id_class(r["id"]) for r in ours_matches}
    their_ids = {id_class(r["id"]) for r in their_matches}
    if not ours_ids <= their_ids:
        diffs.append(f"id formats {sorted(ours_ids)}, vendor {sorted(their_ids)}")
    return diffs + _coding_differences(ours_matches, their_matches)


def _modes(entries: list[dict[str, Any]]) -> list[str]:
    return sorted({e.get("search", {}).get("mode") for e in entries})


def _kinds(resources: list[dict[str, Any]]) -> list[str]:
    return sorted({r["resourceType"] for r in resources})


def _outcome_issues(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        i for e in entries if e.get("search", {}).get("mode") == "outcome" for i in _issues(e["resource"])
    )


def _coding_differences(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    have, want = _systems(ours), _systems(theirs)
    diffs = []
    missing_local = sorted(s for s in want - have if not _standard(s))
    if missing_local:
        diffs.append(f"vendor code systems missing: {missing_local}")
    standard = {s for s in want if _standard(s)}
    if standard and not standard & have:
        diffs.append(
            f"no standard code system in common (vendor: {sorted(standard)}, ehrsim: {sorted(have)})"
        )
    return diffs


def replay_path(capture: Capture) -> str:
    """The capture's path and query below the vendor's base path."""
    base = load_profile(capture.vendor).site["base_path"]
    parts = urlsplit(capture.url)
    below = parts.path.split(base, 1)[1] if base in parts.path else parts.path
    return below + (f"?{parts.query}" if parts.query else "")


def vendor_base(capture: Capture) -> str:
    parts = urlsplit(capture.url)
    base = load_profile(capture.vendor).site["base_path"]
    return f"{parts.scheme}://{parts.netloc}{parts.path.split(base, 1)[0]}{base}"


def replay(client: httpx.Client, base: str, capture: Capture) -> Verdict:
    response = client.request(capture.method, base + replay_path(capture))
    try:
        body: Any = response.json()
    except ValueError:
        body = {"_non_json_body": response.text[:200]}
    return Verdict(capture, compare(capture, response.status_code, body, vendor_base(capture), base))


def run(captures: list[Capture]) -> list[Verdict]:
    verdicts = []
    for vendor in VENDORS:
        mine = [c for c in captures if c.vendor == vendor]
        if not mine:
            continue
        with serve_in_thread(vendor, options=NO_AUTH) as server, httpx.Client(timeout=30) as client:
            verdicts.extend(replay(client, server.fhir_base, c) for c in mine)
    return verdicts


def report(verdicts: list[Verdict]) -> str:
    lines = []
    for vendor in VENDORS:
        mine = [v for v in verdicts if v.capture.vendor == vendor]
        if mine:
            lines.append(f"{vendor}: {sum(v.matches for v in mine)}/{len(mine)} captures match")
            lines.extend(f"  {v.capture.name}: {'; '.join(v.differences)}" for v in mine if not v.matches)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verdicts = run(load_captures(Path(args[0]) if args else CAPTURE_DIR))
    print(report(verdicts))
    return 0 if all(v.matches for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
