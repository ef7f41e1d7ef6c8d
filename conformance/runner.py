"""Running checks against a target and collecting results."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from conformance import bulk_checks, server_checks  # noqa: F401  (register the checks)
from conformance.check import REGISTRY, Check, CheckFailed, CheckSkipped, Target


@dataclass(frozen=True)
class Result:
    check: Check
    status: str  # passed | failed | skipped | error
    message: str
    seconds: float


def select(groups: Iterable[str] | None = None, ids: Iterable[str] | None = None) -> list[Check]:
    wanted_groups = set(groups or ())
    wanted_ids = set(ids or ())
    return [
        c
        for c in REGISTRY.values()
        if (not wanted_groups or c.group in wanted_groups) and (not wanted_ids or c.id in wanted_ids)
    ]


def run_checks(target: Target, checks: list[Check]) -> list[Result]:
    results = []
    for item in checks:
        started = time.monotonic()
        try:
            item.run(target)
        except CheckFailed as exc:
            status, message = "failed", str(exc)
        except CheckSkipped as exc:
            status, message = "skipped", str(exc)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            # The server answered something the check could not read: a failure of the server,
            # reported as an error so it is not confused with a clean assertion.
            status, message = "error", f"{type(exc).__name__}: {exc}"
        else:
            status, message = "passed", ""
        results.append(Result(item, status, message, time.monotonic() - started))
    return results


def run_server_checks(
    fhir_base: str, token: str | None = None, groups: Iterable[str] | None = None
) -> list[Result]:
    with httpx.Client(timeout=30) as http:
        return run_checks(Target(fhir_base, http, token), select(groups))
