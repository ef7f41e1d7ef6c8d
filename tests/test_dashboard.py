"""The dashboard at /_admin/ui: its files over HTTP, then the page in headless Chromium (Playwright)
against a real server: sites, fault switches, the journal tail, text-only rendering, clock, reset
and the admin token prompt."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from simulator.dashboard import ASSETS
from simulator.scenario import Scenario, build_scenario
from simulator.testing import RunningServer, free_ports, serve_in_thread
from tests.mllp_support import ack_fields, client, oru
from tests.process_support import serve

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); not Playwright's download
TIMEOUT_MS = 5000
# Inline script and an inline event handler: either would set the marker if rendered as HTML.
HOSTILE_PATH = '/Patient/<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def scenario() -> Scenario:
    return build_scenario(
        {
            "name": "dashboard",
            "description": "a hospital on a bad day",
            "seed": 7,
            "sites": [
                {"id": "north", "base_path": "/fhir", "population": {"patients": 2}},
                {"id": "south", "base_path": "/south/fhir", "auth": {"required": True}},
            ],
            "faults": [
                {
                    "id": "patient-down",
                    "description": "Patient reads fail",
                    "enabled": False,
                    "match": {"resource_type": "Patient"},
                    "action": {"type": "status", "status": 503},
                },
                {  # an id with a "/" must still be switchable (the page percent-encodes it)
                    "id": "flags/down now",
                    "enabled": False,
                    "match": {"resource_type": "Flag"},
                    "action": {"type": "status", "status": 503},
                },
            ],
        }
    )


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(scenario()) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    """The dashboard, opened on a sandbox back at its start."""
    assert httpx.post(server.admin + "/reset").status_code == 200
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.admin + "/ui")
    expect(page.locator("#main")).to_be_visible()
    yield page
    context.close()


@pytest.fixture
def dialogs(page: Page) -> list[str]:
    """The messages of the dialogs the page opens (a script injected through journal data could)."""
    messages: list[str] = []
    page.on("dialog", lambda dialog: messages.append(dialog.message))
    return messages


# -- the files, over HTTP ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/_admin/ui", "text/html"),
        ("/_admin/ui/dashboard.js", "text/javascript"),
        ("/_admin/ui/dashboard.css", "text/css"),
    ],
)
def test_files_are_served_with_their_type_and_a_strict_csp(
    server: RunningServer, path: str, media_type: str
) -> None:
    response = httpx.get(server.origin + path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe" not in csp and "http" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert path in ASSETS


def test_page_loads_only_its_own_files(server: RunningServer) -> None:
    html = httpx.get(server.admin + "/ui").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(sources) == ["/_admin/ui/dashboard.css", "/_admin/ui/dashboard.js"]
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # no inline script (the CSP forbids it)
    assert " style=" not in html


def test_openapi_documents_the_page_as_open_without_the_token(server: RunningServer) -> None:
    document = httpx.get(server.admin + "/openapi.json").json()
    assert document["paths"]["/_admin/ui"]["get"]["security"] == [{}]
    after = [p for p in document["paths"]["/_admin/journal"]["get"]["parameters"] if p["name"] == "after"]
    assert after and after[0]["schema"]["type"] == "integer"


def test_unknown_dashboard_file_is_a_json_404(server: RunningServer) -> None:
    response = httpx.get(server.admin + "/ui/other.js")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_journal_after_gives_what_is_new_and_counts_clears(server: RunningServer) -> None:
    httpx.post(server.admin + "/reset")
    clears = httpx.get(server.admin + "/journal").json()["clears"]
    for _ in range(3):
        httpx.get(server.fhir_base + "/metadata")
    data = httpx.get(server.admin + "/journal", params={"after": 1}).json()
    assert [e["seq"] for e in data["entries"]] == [2, 3]
    assert (data["size"], data["total"]) == (3, 2)
    assert httpx.get(server.admin + "/journal", params={"after": 3}).json()["entries"] == []
    bad = httpx.get(server.admin + "/journal", params={"after": "-1"})
    assert bad.status_code == 400 and "after must be a journal seq" in bad.json()["message"]
    httpx.post(server.admin + "/reset")
    assert httpx.get(server.admin + "/journal").json()["clears"] == clears + 1


def test_banner_names_the_dashboard_and_the_token_guards_the_api_not_the_page() -> None:
    port, mllp_port = free_ports(2)
    proc, lines = serve("--port", str(port), "--mllp-port", str(mllp_port), "--admin-token", "tok-9")
    try:
        assert proc.stdout is not None
        lines.append(proc.stdout.readline().rstrip())
        origin = f"http://127.0.0.1:{port}"
        assert lines[-1] == f"  dashboard: {origin}/_admin/ui", lines
        for path in ASSETS:
            assert httpx.get(origin + path).status_code == 200
        assert httpx.get(origin + "/_admin/faults").status_code == 401
        authorized = {"Authorization": "Bearer tok-9"}
        assert httpx.get(origin + "/_admin/faults", headers=authorized).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the page, in Chromium ---------------------------------------------------------------------------


def test_page_shows_the_scenario_and_its_sites(page: Page, server: RunningServer) -> None:
    expect(page.locator("#scenario-name")).to_have_text("dashboard")
    expect(page.locator("#scenario-seed")).to_have_text("seed 7")
    row = page.locator('#sites-body tr[data-site="north"]')
    expect(row).to_contain_text(server.fhir_base)
    mllp_port = server.sandbox.sites["north"].site.extras["mllp_port"]
    expect(row).to_contain_text(f"127.0.0.1:{mllp_port}")
    expect(row).to_contain_text("no SMART auth")
    south = page.locator('#sites-body tr[data-site="south"]')
    expect(south).to_contain_text(server.site_base("south") + "/.well-known/smart-configuration")


def test_fault_switch_changes_the_fault_and_the_next_request(page: Page, server: RunningServer) -> None:
    patients = server.fhir_base + "/Patient?_count=1"
    assert httpx.get(patients).status_code == 200
    row = page.locator('#faults-body tr[data-fault="patient-down"]')
    expect(row).to_have_attribute("data-enabled", "false")
    expect(row).to_contain_text("Patient reads fail")
    row.get_by_role("switch").click()
    expect(row).to_have_attribute("data-enabled", "true")
    assert httpx.get(server.admin + "/faults/patient-down").json()["enabled"] is True
    assert httpx.get(patients).status_code == 503
    expect(row).to_contain_text("1 / 1")  # matched / hits, refreshed by the poll
    row.get_by_role("switch").click()
    expect(row).to_have_attribute("data-enabled", "false")
    assert httpx.get(patients).status_code == 200


def test_a_fault_whose_id_has_a_slash_switches_too(page: Page, server: RunningServer) -> None:
    row = page.locator('#faults-body tr[data-fault="flags/down now"]')
    expect(row).to_have_attribute("data-enabled", "false")
    row.get_by_role("switch").click()
    expect(row).to_have_attribute("data-enabled", "true")
    assert httpx.get(server.fhir_base + "/Flag").status_code == 503
    assert httpx.get(server.fhir_base + "/Patient?_count=1").status_code == 200


def test_a_fhir_request_appears_in_the_tail_with_its_fault(page: Page, server: RunningServer) -> None:
    httpx.post(server.admin + "/faults/patient-down/enable")
    assert httpx.get(server.fhir_base + "/Patient?_count=1").status_code == 503
    newest = page.locator("#journal-body tr").first
    expect(newest).to_contain_text("GET /Patient?_count=1")
    expect(newest.locator(".result")).to_have_text("503")
    expect(newest.locator(".faults")).to_have_text("patient-down")
    assert httpx.get(server.fhir_base + "/metadata").status_code == 200
    expect(page.locator("#journal-body tr").first).to_contain_text("GET /metadata")  # newest first
    # The protocol filter asks the journal for that protocol only: no MLLP traffic here.
    page.select_option("#journal-protocol", "mllp")
    expect(page.locator("#journal-body tr")).to_have_count(0)
    page.select_option("#journal-protocol", "fhir")
    expect(page.locator("#journal-body tr")).to_have_count(2)
    # A reset elsewhere empties the journal and its seqs start over: so does the tail.
    assert httpx.post(server.admin + "/reset").status_code == 200
    expect(page.locator("#journal-body tr")).to_have_count(0)
    for _ in range(3):
        httpx.get(server.fhir_base + "/metadata")
    expect(page.locator("#journal-body tr")).to_have_count(3)
    expect(page.locator("#journal-body tr").first).to_have_attribute("data-seq", "3")


def test_an_mllp_message_appears_with_its_control_id_and_ack_code(page: Page, server: RunningServer) -> None:
    with client(server.sandbox.sites["north"].site.extras["mllp_port"]) as mllp:
        assert ack_fields(mllp.send(oru("DASH-1")))["code"] == "AA"
    httpx.get(server.fhir_base + "/metadata")
    page.select_option("#journal-protocol", "mllp")
    rows = page.locator("#journal-body tr")
    expect(rows).to_have_count(3)  # connection open, the message, connection closed: newest first
    expect(rows.nth(0).locator(".request")).to_have_text("closed by client")
    expect(rows.nth(1).locator(".request")).to_have_text("ORU^R01 control id DASH-1")
    expect(rows.nth(1).locator(".result")).to_have_text("AA")
    expect(rows.nth(2).locator(".request")).to_have_text("open")
    page.select_option("#journal-protocol", "")
    expect(rows).to_have_count(4)


def test_a_script_in_a_request_path_is_shown_as_text(
    page: Page, dialogs: list[str], server: RunningServer
) -> None:
    assert httpx.get(server.fhir_base + HOSTILE_PATH).status_code == 404
    request = page.locator("#journal-body tr").first.locator(".request")
    expect(request).to_have_text(f"GET {HOSTILE_PATH}")
    assert page.locator("#journal-body script, #journal-body img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []


def test_clock_advances_from_the_page_and_bad_durations_are_explained(
    page: Page, server: RunningServer
) -> None:
    before = page.locator("#clock-now").text_content()
    page.fill("#advance-duration", "2h")
    page.click("#advance-form button")
    expect(page.locator("#clock-now")).not_to_have_text(before or "")
    assert httpx.get(server.admin + "/clock").json()["elapsed"] >= 7200
    page.fill("#advance-duration", "soon")
    page.click("#advance-form button")
    expect(page.locator("#clock-message")).to_contain_text("soon")
    assert httpx.get(server.admin + "/clock").json()["elapsed"] < 7300


def test_reset_from_the_page_asks_first(page: Page, dialogs: list[str], server: RunningServer) -> None:
    httpx.post(server.admin + "/clock/advance", json={"duration": "1h"})
    httpx.get(server.fhir_base + "/metadata")
    expect(page.locator("#journal-body tr")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#reset-button")
    assert httpx.get(server.admin + "/clock").json()["elapsed"] >= 3600
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#reset-button")
    expect(page.locator("#status")).to_have_text("scenario dashboard reset")
    assert httpx.get(server.admin + "/clock").json()["elapsed"] < 3600
    expect(page.locator("#journal-body tr")).to_have_count(0)
    assert len(dialogs) == 2 and all(m.startswith("Reset the sandbox?") for m in dialogs)


def test_the_page_asks_for_the_admin_token_when_the_api_needs_one(browser: Browser) -> None:
    with serve_in_thread(scenario(), options={"admin_token": "tok-7"}) as guarded:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(guarded.admin + "/ui")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#status")).to_have_text("The admin API needs the admin token.")
            expect(page.locator("#main")).to_be_hidden()
            page.fill("#token-input", "wrong")
            page.click("#login-form button")
            expect(page.locator("#login-message")).to_contain_text("was not accepted")
            page.fill("#token-input", "tok-7")
            page.click("#login-form button")
            expect(page.locator('#sites-body tr[data-site="north"]')).to_be_visible()
            expect(page.locator("#login")).to_be_hidden()
            page.reload()  # asked once: the token is kept for the tab
            expect(page.locator('#sites-body tr[data-site="north"]')).to_be_visible()
        finally:
            context.close()
