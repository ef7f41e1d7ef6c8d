"""Locust load test: bedside devices posting vital signs, over FHIR and over HL7 v2 MLLP.

Each simulated user is one device. It is bound to one patient and sends a heart-rate reading every
`DEVICE_PERIOD` seconds (default 1): `FhirDevice` as `POST [base]/Observation`, `MllpDevice` as an
ORU^R01 on a persistent MLLP connection, waiting for the ACK like a real interface engine.

    ehrsim serve --scenario device-writes &
    locust -f loadtests/locustfile_devices.py --headless -u 1000 -r 100 -t 2m \\
        --host http://127.0.0.1:8080/fhir

Settings (environment): EHRSIM_FHIR_BASE (else --host), EHRSIM_MLLP_HOST / EHRSIM_MLLP_PORT
(default 127.0.0.1:2575), DEVICE_PERIOD (seconds between readings), EHRSIM_TOKEN (a bearer token
for sites with auth on, e.g. from `ehrsim token`). Pick the users with `locust ... FhirDevice` or
`MllpDevice`; by default both run, three FHIR devices for each MLLP one. Copy this file and change
the payloads or cadence to match your devices.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from datetime import UTC, datetime

from locust import HttpUser, User, constant_pacing, events, task

from simulator.mllp.client import MllpClient
from simulator.testing import heart_rate

PERIOD = float(os.environ.get("DEVICE_PERIOD", "1"))
_device_numbers = itertools.count(1)


def _now() -> datetime:
    return datetime.now(UTC)


class FhirDevice(HttpUser):
    """One device writing a vital sign over FHIR every PERIOD seconds."""

    weight = 3
    wait_time = constant_pacing(PERIOD)

    def on_start(self) -> None:
        if os.environ.get("EHRSIM_FHIR_BASE"):
            self.client.base_url = os.environ["EHRSIM_FHIR_BASE"].rstrip("/")
        self.headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
        if os.environ.get("EHRSIM_TOKEN"):
            self.headers["Authorization"] = f"Bearer {os.environ['EHRSIM_TOKEN']}"
        # Bind this device to a patient of the site, as a bedside monitor is.
        found = self.client.get(
            "/Patient", params={"_count": 50}, headers=self.headers, name="/Patient (setup)"
        )
        entries = found.json().get("entry", []) if found.ok else []
        patient = random.choice(entries)["resource"]["id"] if entries else "unknown"
        self.subject = f"Patient/{patient}"

    @task
    def post_vital(self) -> None:
        reading = heart_rate(self.subject, round(random.gauss(75, 8)), _now().isoformat(timespec="seconds"))
        with self.client.post(
            "/Observation", json=reading, headers=self.headers, catch_response=True, name="/Observation"
        ) as response:
            if response.status_code != 201:
                response.failure(f"expected 201, got {response.status_code}: {response.text[:200]}")


class MllpDevice(User):
    """One device sending ORU^R01 results over a persistent MLLP connection every PERIOD seconds."""

    weight = 1
    wait_time = constant_pacing(PERIOD)

    def on_start(self) -> None:
        self.number = next(_device_numbers)
        self.sent = itertools.count(1)
        host = os.environ.get("EHRSIM_MLLP_HOST", "127.0.0.1")
        port = int(os.environ.get("EHRSIM_MLLP_PORT", "2575"))
        self.connection = MllpClient(host, port, timeout=10)

    def on_stop(self) -> None:
        self.connection.close()

    def message(self) -> str:
        stamp = _now().strftime("%Y%m%d%H%M%S")
        control = f"DEV{self.number:05d}-{next(self.sent):08d}"
        return (
            "\r".join(
                [
                    f"MSH|^~\\&|MONITOR|ICU|EHR|HOSP|{stamp}||ORU^R01|{control}|P|2.5.1",
                    f"PID|1||DEV-PT-{self.number:05d}^^^HOSP^MR||DEVICE^PATIENT{self.number}",
                    f"OBR|1||{control}|8867-4^Heart rate^LN|||{stamp}",
                    f"OBX|1|NM|8867-4^Heart rate^LN||{round(random.gauss(75, 8))}|/min|||||F|||{stamp}",
                ]
            )
            + "\r"
        )

    @task
    def send_result(self) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        ack = b""
        try:
            ack = self.connection.send(self.message())
            if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                error = RuntimeError(f"not accepted: {ack[:120]!r}")
        except (OSError, TimeoutError, ConnectionError) as exc:
            error = exc
        events.request.fire(
            request_type="MLLP",
            name="ORU^R01",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=len(ack),
            exception=error,
            context={},
        )
