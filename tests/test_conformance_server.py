"""The server conformance checks pass against ehrsim, and each one can fail against a broken server."""

from __future__ import annotations

import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conformance.check import REGISTRY, Target
from conformance.report import exit_code, junit_xml
from conformance.runner import run_checks, run_server_checks, select
from simulator.testing import free_socket

ROOT = Path(__file__).resolve().parent.parent


def test_all_server_checks_pass_against_ehrsim(server) -> None:
    results = run_server_checks(server.fhir_base)
    failed = [(r.check.id, r.message) for r in results if r.status not in ("passed",)]
    assert failed == []
    assert len(results) == len(REGISTRY)


def broken_app() -> Starlette:
    """A 'FHIR server' that gets every requirement wrong in one way or another."""

    async def metadata(request: Request) -> Response:
        return JSONResponse(
            {
                "resourceType": "Conformance",
                "fhirVersion": "3.0.2",
                "format": ["xml"],
                "rest": [
                    {
                        "resource": [
                            {"type": "Patient", "searchParam": [{"name": "name", "type": "string"}]}
                        ],
                        "operation": [
                            {
                                "name": "export",
                                "definition": "http://example.org/export",
                                "documentation": "Supports _type and _typeFilter",  # ignores both
                            }
                        ],
                    }
                ],
            }
        )

    async def patients(request: Request) -> Response:
        if any(key.endswith(":missing") for key in request.query_params):
            return JSONResponse({"resourceType": "OperationOutcome", "issue": []}, status_code=400)
        # _count=1 gets three matches; other searches get Patients marked as includes.
        mode = "match" if request.query_params.get("_count") == "1" else "include"
        entries = [
            {"resource": {"resourceType": "Patient", "id": f"p{i}"}, "search": {"mode": mode}}
            for i in range(3)
        ]
        return JSONResponse(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": entries,
                "link": [
                    {"relation": "self", "url": str(request.url)},
                    {"relation": "next", "url": str(request.url)},
                ],
            },
        )

    async def patient(request: Request) -> Response:
        if request.path_params["rid"].startswith("ehrsim-conformance"):
            return Response("not here", status_code=200, media_type="text/plain")
        return JSONResponse(
            {"resourceType": "Patient", "id": "someone-else", "meta": {"versionId": "2"}},
            headers={"ETag": 'W/"1"'},
        )

    async def export(request: Request) -> Response:
        return Response(status_code=202, headers={"Content-Location": "export-status"})  # not absolute

    async def export_status(request: Request) -> Response:
        if request.method == "DELETE":
            return Response("no", status_code=405)  # cannot cancel
        base = str(request.base_url).rstrip("/")
        # No transactionTime, request or requiresAccessToken; the file is not NDJSON.
        return JSONResponse({"output": [{"type": "Patient", "url": f"{base}/fhir/export-file"}]})

    async def export_file(request: Request) -> Response:
        return JSONResponse({"resourceType": "Bundle", "type": "collection", "entry": []})

    return Starlette(
        routes=[
            Route("/fhir/metadata", metadata),
            Route("/fhir/Patient", patients),
            Route("/fhir/Patient/{rid}", patient),
            Route("/fhir/$export", export),
            Route("/fhir/export-status", export_status, methods=["GET", "DELETE"]),
            Route("/fhir/export-file", export_file),
        ]
    )


@pytest.fixture(scope="module")
def broken_base() -> Iterator[str]:
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(broken_app(), log_level="warning"))
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/fhir"
    server.should_exit = True
    thread.join(5)


@pytest.mark.parametrize("check_id", sorted(REGISTRY))
def test_each_check_fails_against_a_broken_server(broken_base: str, check_id: str) -> None:
    with httpx.Client(timeout=10) as http:
        [result] = run_checks(Target(broken_base, http), select(ids=[check_id]))
    assert result.status in ("failed", "error"), (check_id, result.status, result.message)
    assert result.message


def test_junit_report_and_exit_code(broken_base: str, server) -> None:
    bad = run_server_checks(broken_base)
    assert exit_code(bad) == 1
    suite = ET.fromstring(junit_xml(bad))
    assert suite.tag == "testsuite"
    assert int(suite.get("failures")) + int(suite.get("errors")) == len(bad)
    assert all(case.find("failure") is not None or case.find("error") is not None for case in suite)
    assert exit_code(run_server_checks(server.fhir_base)) == 0


def test_cli_writes_junit(server, tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "conformance",
            "server",
            "--fhir-base",
            server.fhir_base,
            "--junit",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(REGISTRY)} passed, 0 failed" in result.stdout
    assert ET.fromstring(report.read_bytes()).get("tests") == str(len(REGISTRY))
