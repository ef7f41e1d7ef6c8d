"""Reports: a text table for people, JUnit XML for CI, and the exit code that gates a pipeline."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

from conformance.runner import Result


def text(results: list[Result]) -> str:
    lines = []
    for r in results:
        mark = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERR "}[r.status]
        lines.append(f"{mark} {r.check.id:<14} {r.check.title}")
        if r.message:
            lines.append(f"     {r.message}")
    counts = Counter(r.status for r in results)
    lines.append(
        f"{counts['passed']} passed, {counts['failed'] + counts['error']} failed, {counts['skipped']} skipped"
    )
    return "\n".join(lines)


def junit_xml(results: list[Result], suite: str = "ehrsim-conformance") -> bytes:
    counts = Counter(r.status for r in results)
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(counts["failed"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(
            root,
            "testcase",
            classname=f"{suite}.{r.check.group}",
            name=f"{r.check.id} {r.check.title}",
            time=f"{r.seconds:.3f}",
        )
        if r.status == "failed":
            ET.SubElement(
                case, "failure", message=r.message
            ).text = f"{r.check.description}\nSpec: {r.check.spec}"
        elif r.status == "error":
            ET.SubElement(case, "error", message=r.message)
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.message)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status in ("failed", "error") for r in results) else 0
