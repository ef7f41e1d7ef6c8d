"""OperationOutcome issues the way a vendor writes them, from the templates in its profile.

An issue template is data: `{severity, code, vendor_code, vendor_display, diagnostics, location,
expression}`. `vendor_code` becomes `details.coding` under the profile's `outcome.details_system`
(with the display from `outcome.codes` or `vendor_display`); without a system, the display goes to
`details.text` alone (Oracle Health's shape). Strings may use `{name}`, `{NAME}` (upper-cased),
`{type}`, `{diagnostics}` and the other fields a caller passes.
"""

from __future__ import annotations

from typing import Any


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: str, fields: dict[str, Any]) -> str:
    values = _Fields({k: v for k, v in fields.items() if v is not None})
    if "name" in values:
        values.setdefault("NAME", str(values["name"]).upper())
    try:
        return text.format_map(values)
    except (ValueError, IndexError):  # stray braces in a profile's text: keep it as written
        return text


def render_issue(template: dict[str, Any], outcome: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """One `OperationOutcome.issue` from a template and the profile's `outcome:` section."""
    issue: dict[str, Any] = {
        "severity": template.get("severity", "error"),
        "code": template.get("code", "processing"),
    }
    details = vendor_details(template, outcome)
    if details:
        issue["details"] = details
    if template.get("diagnostics"):
        issue["diagnostics"] = fill(str(template["diagnostics"]), fields)
    for key in ("location", "expression"):
        if template.get(key):
            issue[key] = [fill(str(v), fields) for v in template[key]]
    return issue


def vendor_details(template: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any] | None:
    code = template.get("vendor_code")
    known = (outcome.get("codes") or {}).get(template.get("code", ""), {})
    if code is None and template.get("vendor_display") is None:
        return None
    display = template.get("vendor_display")
    if display is None:
        display = next(
            (c.get("display") for c in (outcome.get("codes") or {}).values() if c.get("code") == code),
            known.get("display"),
        )
    system = outcome.get("details_system")
    details: dict[str, Any] = {}
    if system and code is not None:
        coding = {"system": system, "code": str(code)}
        if display:
            coding["display"] = display
        details["coding"] = [coding]
    if display and (outcome.get("details_text", True) or not system):
        details["text"] = display
    return details or None


def restyle_issue(issue: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """A core (ehrsim) issue in the vendor's words: its severity mapping and its code for the type."""
    out = dict(issue)
    out["severity"] = (outcome.get("severity") or {}).get(out.get("severity", ""), out.get("severity"))
    known = (outcome.get("codes") or {}).get(out.get("code", ""))
    if known and "details" not in out:
        details = vendor_details(
            {"vendor_code": known.get("code"), "vendor_display": known.get("display")}, outcome
        )
        if details:
            out = {"severity": out["severity"], "code": out["code"], "details": details, **out}
    if outcome.get("diagnostics_as_text") and "details" not in out and out.get("diagnostics"):
        # Oracle Health puts the message in details.text and sends no diagnostics
        text = out.pop("diagnostics")
        out = {"severity": out["severity"], "code": out["code"], "details": {"text": text}, **out}
    return out


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": issues}
