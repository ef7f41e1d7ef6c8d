"""Helpers for the MLLP tests: a served site with an `mllp:` section, and message builders."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simulator.mllp.client import MllpClient
from simulator.scenario import Scenario, build_scenario
from simulator.testing import RunningServer, serve_in_thread

FIXTURES = Path(__file__).parent / "fixtures" / "hl7v2"


def fixture(name: str) -> bytes:
    """A sample message with its segments ended by CR, as on the wire."""
    return FIXTURES.joinpath(name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def mllp_scenario(
    mllp: dict[str, Any] | None = None, patients: int = 2, clock: dict | None = None
) -> Scenario:
    site: dict[str, Any] = {"id": "h1", "base_path": "/fhir", "population": {"patients": patients}}
    if mllp is not None:
        site["mllp"] = mllp
    return build_scenario({"name": "mllp-test", "seed": 7, "clock": clock or {}, "sites": [site]})


@contextlib.contextmanager
def mllp_site(mllp: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[tuple[RunningServer, int]]:
    with serve_in_thread(mllp_scenario(mllp, **kwargs)) as server:
        yield server, server.sandbox.sites["h1"].site.extras["mllp_port"]


def client(port: int, timeout: float = 5.0) -> MllpClient:
    return MllpClient("127.0.0.1", port, timeout=timeout)


def journal(server: RunningServer, kind: str) -> list[dict[str, Any]]:
    return [e for e in server.sandbox.journal if e.get("kind") == kind]


def msh(message_type: str, control_id: str, version: str = "2.5", extra: str = "") -> str:
    return f"MSH|^~\\&|LAB|GOODHOSP|EHR|EHRSIM|20260101120000+0000||{message_type}|{control_id}|P|{version}{extra}"


def oru(
    control_id: str,
    mrn: str = "X1",
    value: str = "72",
    unit: str = "beats/min",
    code: str = "8867-4^Heart rate^LN",
    value_type: str = "NM",
    status: str = "F",
    extra: str = "",
    sep: str = "\r",
) -> str:
    segments = [
        msh("ORU^R01^ORU_R01", control_id, extra=extra),
        f"PID|1||{mrn}^^^GOODHOSP^MR||DOE^JANE||19800101|F",
        "OBR|1||F-"
        + control_id
        + "^GOODHOSP|85353-1^Vital signs panel^LN|||20260101115500+0000||||||||||||||||||F",
        f"OBX|1|{value_type}|{code}||{value}|{unit}|60-100|N|||{status}|||20260101115500+0000",
    ]
    return sep.join(segments) + sep


def adt(
    trigger: str,
    control_id: str,
    mrn: str = "A1",
    visit: str = "V1",
    family: str = "DOE",
    patient_class: str = "I",
) -> str:
    segments = [
        msh(f"ADT^{trigger}^ADT_A01", control_id),
        f"EVN|{trigger}|20260101120000+0000",
        f"PID|1||{mrn}^^^GOODHOSP^MR||{family}^JOHN^Q||19700214|M|||1 MAIN ST^^SPRINGFIELD^IL^62701^US||555-0100",
        f"PV1|1|{patient_class}|4EAST^401^A||||1234^ATTEND^ALLISON|||MED|||||||||{visit}^^^GOODHOSP^VN",
    ]
    return "\r".join(segments) + "\r"
