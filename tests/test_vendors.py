"""Vendor behaviour beyond the captures: the same rules on requests the captures do not show."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulator.testing import serve_in_thread
from simulator.vendors.fidelity import NO_AUTH

CAPTURES = Path(__file__).parent / "fixtures" / "vendor-captures"
EPIC_OID = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369"
DERRICK = "eq081-VQEgP8drUUqCWzHfw3"
NANCY = "12724066"
PAULA = "9bec5771-4796-5189-a54e-352c571a44c8"
VITALS = {"resourceType": "Observation", "status": "final"}


@pytest.fixture(scope="module")
def epic() -> Iterator[httpx.Client]:
    with (
        serve_in_thread("epic", options=NO_AUTH) as server,
        httpx.Client(base_url=server.fhir_base, timeout=30) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def oracle() -> Iterator[httpx.Client]:
    with (
        serve_in_thread("oracle-health", options=NO_AUTH) as server,
        httpx.Client(base_url=server.fhir_base, timeout=30) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def meditech() -> Iterator[httpx.Client]:
    with (
        serve_in_thread("meditech", options=NO_AUTH) as server,
        httpx.Client(base_url=server.fhir_base, timeout=30) as client,
    ):
        yield client


def _codes(outcome: dict) -> list[tuple[str, str | None]]:
    return [
        (i["severity"], ((i.get("details") or {}).get("coding") or [{}])[0].get("code"))
        for i in outcome["issue"]
    ]


def _outcome_entry(bundle: dict) -> dict | None:
    return next((e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"), None)


def _walk(client: httpx.Client, url: str, base: str) -> list[dict]:
    pages = []
    while url:
        response = client.get(url.replace(base, ""))
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url = next((link["url"] for link in pages[-1]["link"] if link["relation"] == "next"), "")
    return pages


# -- Epic ------------------------------------------------------------------------------------------


def test_epic_patient_search_without_criteria_is_refused_with_59159_only(epic: httpx.Client) -> None:
    response = epic.get("/Patient")
    assert response.status_code == 400
    assert _codes(response.json()) == [("fatal", "59159")]


def test_epic_patient_search_by_one_demographic_is_allowed(epic: httpx.Client) -> None:
    bundle = epic.get("/Patient", params={"family": "Lin"}).json()
    assert bundle["total"] == 1
    assert bundle["entry"][0]["resource"]["id"] == DERRICK


def test_epic_unknown_parameter_on_a_valid_search_is_ignored_and_reported(epic: httpx.Client) -> None:
    response = epic.get("/Patient", params={"_id": DERRICK, "shoe-size": "11"})
    assert response.status_code == 200
    bundle = response.json()
    assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == [DERRICK]
    issue = _outcome_entry(bundle)["issue"][0]
    assert (issue["severity"], issue["details"]["coding"][0]["code"]) == ("information", "59100")
    assert issue["diagnostics"] == "Unknown parameter: SHOE-SIZE. Parameter has been ignored."
    assert "shoe-size" not in bundle["link"][0]["url"]


def test_epic_observation_search_needs_category_or_code(epic: httpx.Client) -> None:
    response = epic.get("/Observation", params={"patient": DERRICK})
    assert response.status_code == 400
    assert _codes(response.json()) == [("fatal", "59108")]
    assert (
        epic.get("/Observation", params={"patient": DERRICK, "code": "http://loinc.org|8867-4"}).status_code
        == 200
    )


def test_epic_empty_search_is_200_total_0_with_4101(epic: httpx.Client) -> None:
    bundle = epic.get("/Immunization", params={"patient": "no-such-patient"}).json()
    assert bundle["total"] == 0
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["outcome"]
    assert _codes(_outcome_entry(bundle)) == [("warning", "4101")]


def test_epic_session_paging_walks_every_match_once(epic: httpx.Client) -> None:
    first = epic.get("/Observation", params={"patient": DERRICK, "category": "vital-signs", "_count": "400"})
    base = str(first.url).split("/Observation")[0]
    pages = _walk(epic, str(first.url), base)
    nexts = [link["url"] for page in pages for link in page["link"] if link["relation"] == "next"]
    assert all(
        re.fullmatch(re.escape(base) + r"/Observation\?sessionID=\d+-[0-9A-F]{32}", url) for url in nexts
    )
    ids = [e["resource"]["id"] for page in pages for e in page["entry"]]
    assert len(ids) == len(set(ids)) == 1100
    assert [len(page["entry"]) for page in pages] == [400, 400, 300]


def test_epic_bad_session_id_is_a_precise_error(epic: httpx.Client) -> None:
    response = epic.get("/Observation", params={"sessionID": "1-NOTAVALIDTOKEN"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["coding"][0]["system"] == EPIC_OID
    assert "sessionID" in response.json()["issue"][0]["diagnostics"]


def test_epic_unknown_type_is_an_html_page_on_any_path(epic: httpx.Client) -> None:
    for path in ("/Spaceship", "/Spaceship/123", "/Spaceship?_count=1"):
        response = epic.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "404 - File or directory not found." in response.text


def test_epic_ids_and_codings_look_like_epic(epic: httpx.Client) -> None:
    bundle = epic.get(
        "/Observation", params={"patient": DERRICK, "category": "vital-signs", "_count": "5"}
    ).json()
    observation = bundle["entry"][0]["resource"]
    assert re.fullmatch(r"f[A-Za-z0-9.-]{43}4", observation["id"])
    systems = {c["system"] for c in observation["code"]["coding"]}
    assert {
        "http://loinc.org",
        "http://open.epic.com/FHIR/StructureDefinition/observation-flowsheet-id",
    } <= systems
    assert (
        observation["extension"][0]["url"]
        == "http://open.epic.com/FHIR/StructureDefinition/extension/template-id"
    )
    assert observation["subject"]["display"] == "Lin, Derrick"


def test_epic_vitals_create_rules(epic: httpx.Client) -> None:
    probe = json.loads((CAPTURES / "epic" / "write-probe-Observation.json").read_text())[
        "_canonical_submitted"
    ]
    created = epic.post("/Observation", json=probe, headers={"content-type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    assert re.fullmatch(r"f[A-Za-z0-9.-]{43}4", created.json()["id"])
    lab = {**probe, "category": [{"coding": [{"code": "laboratory"}]}]}
    del lab["effectiveDateTime"]
    refused = epic.post("/Observation", json=lab, headers={"content-type": "application/fhir+json"})
    assert refused.status_code == 400
    messages = [i["diagnostics"] for i in refused.json()["issue"]]
    assert messages == [
        "Only vital-sign Observations can be created (category vital-signs).",
        "Observation.effectiveDateTime is required.",
    ]
    assert (
        epic.post(
            "/Observation", content=b"{not json", headers={"content-type": "application/fhir+json"}
        ).status_code
        == 400
    )


def test_epic_interactions_follow_the_capability_statement(epic: httpx.Client) -> None:
    response = epic.delete(f"/Patient/{DERRICK}")
    assert response.status_code == 405
    assert response.json()["issue"][0]["details"]["coding"][0]["system"] == EPIC_OID
    assert epic.get(f"/Patient/{DERRICK}").status_code == 200


# -- Oracle Health ----------------------------------------------------------------------------------


def test_oracle_create_is_201_empty_with_location_and_etag(oracle: httpx.Client) -> None:
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{NANCY}"},
        "code": {"text": "Cough"},
    }
    response = oracle.post("/Condition", json=condition, headers={"content-type": "application/fhir+json"})
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["etag"] == 'W/"1"'
    new_id = response.headers["location"].split("/Condition/")[1].split("/")[0]
    assert new_id.isdigit()
    update = {**condition, "id": new_id}
    refused = oracle.put(
        f"/Condition/{new_id}", json=update, headers={"content-type": "application/fhir+json"}
    )
    assert refused.status_code == 412
    assert refused.json()["issue"][0]["details"] == {"text": "If-Match header is required for update"}
    accepted = oracle.put(
        f"/Condition/{new_id}",
        json=update,
        headers={"content-type": "application/fhir+json", "if-match": 'W/"1"'},
    )
    assert accepted.status_code == 200


def test_oracle_clinical_search_needs_a_patient(oracle: httpx.Client) -> None:
    response = oracle.get("/Condition", params={"clinical-status": "active"})
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert (issue["severity"], issue["code"], "diagnostics" in issue) == ("error", "invalid", False)


def test_oracle_observation_count_is_capped_at_200_and_pages_by_context(oracle: httpx.Client) -> None:
    first = oracle.get("/Observation", params={"patient": NANCY, "_count": "500"})
    bundle = first.json()
    assert "total" not in bundle
    assert len(bundle["entry"]) == 200  # Nancy has 270 observations: more than a capped page
    default = oracle.get("/Observation", params={"patient": NANCY, "category": "vital-signs"}).json()
    assert len(default["entry"]) == 50
    nxt = next(link["url"] for link in default["link"] if link["relation"] == "next")
    assert re.search(r"\?patient=12724066&category=vital-signs&-pageContext=[^&]+&-pageDirection=NEXT$", nxt)


def test_oracle_bad_page_context_is_a_precise_error(oracle: httpx.Client) -> None:
    response = oracle.get(
        "/Observation", params={"patient": NANCY, "-pageContext": "garbage", "-pageDirection": "NEXT"}
    )
    assert response.status_code == 400
    assert "-pageContext" in response.json()["issue"][0]["details"]["text"]


def test_oracle_unknown_type_is_fhir_not_found(oracle: httpx.Client) -> None:
    response = oracle.get("/Spaceship")
    assert response.status_code == 404
    assert response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found", "details": {"text": "Not Found"}}],
    }


def test_oracle_local_codes_are_user_selected(oracle: httpx.Client) -> None:
    bundle = oracle.get(
        "/Observation", params={"patient": NANCY, "category": "laboratory", "_count": "3"}
    ).json()
    for entry in bundle["entry"]:
        first = entry["resource"]["code"]["coding"][0]
        assert first["system"] == "https://fhir.cerner.com/ec2458f2-1e24-41c8-b71b-0e701af7583d/codeSet/72"
        assert first["userSelected"] is True
        assert entry["resource"]["id"].startswith("L-")


# -- MEDITECH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "detail"),
    [
        ("GET", "/Patient/no-such-patient", 404, "Not Found"),
        ("GET", "/Patient?shoe-size=11", 400, "Bad Request"),
        ("POST", "/Observation", 405, "Method Not Allowed"),
        ("GET", "/Spaceship", 404, "Not Found"),
    ],
)
def test_meditech_every_4xx_is_the_envelope(meditech: httpx.Client, method, path, status, detail) -> None:
    response = meditech.request(
        method, path, content=b"{}", headers={"content-type": "application/fhir+json"}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"resource": "v1/resource/error/_version/1/", "detail": detail}


def test_meditech_writes_only_communication_and_questionnaire_response(meditech: httpx.Client) -> None:
    note = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{PAULA}"},
    }
    created = meditech.post("/Communication", json=note, headers={"content-type": "application/fhir+json"})
    assert created.status_code == 201
    assert re.fullmatch(r"[0-9a-f-]{36}", created.json()["id"])
    assert meditech.post("/Condition", json={"resourceType": "Condition"}).status_code == 405


def test_meditech_paging_totals_and_data_conventions(meditech: httpx.Client) -> None:
    first = meditech.get("/Observation", params={"patient": PAULA, "category": "vital-signs"})
    base = str(first.url).split("/Observation")[0]
    pages = _walk(meditech, str(first.url), base)
    assert [p["total"] for p in pages] == [len(p["entry"]) for p in pages]
    assert pages[0]["total"] == 20 and len(pages) >= 2
    assert all("id" not in p and "meta" not in p for p in pages)
    ids = [e["resource"]["id"] for p in pages for e in p["entry"]]
    assert len(ids) == len(set(ids)) and all(i.startswith("VS.") for i in ids)
    observation = pages[0]["entry"][0]["resource"]
    assert observation["subject"] == {
        "reference": f"Patient/{PAULA}",
        "display": "Bond,Paula",
        "type": "Patient",
    }
    assert observation["effectiveDateTime"].endswith("+00:00")


# -- all vendors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["epic", "oracle-health", "meditech"])
def test_metadata_matches_the_vendor_capability_statement(vendor: str) -> None:
    statement = json.loads((CAPTURES / vendor / "CapabilityStatement.json").read_text())
    theirs = {
        r["type"]: {i["code"] for i in r.get("interaction", [])}
        & {"read", "search-type", "create", "update", "delete"}
        for r in statement["rest"][0]["resource"]
        if r["type"] not in ("Binary", "CapabilityStatement", "OperationDefinition", "StructureDefinition")
    }
    with serve_in_thread(vendor, options=NO_AUTH) as server:
        ours_statement = httpx.get(server.fhir_base + "/metadata").json()
    ours = {r["type"]: {i["code"] for i in r["interaction"]} for r in ours_statement["rest"][0]["resource"]}
    for rtype, codes in theirs.items():
        assert rtype in ours, rtype
        assert codes <= ours[rtype], (rtype, codes, ours[rtype])
        extra = ours[rtype] - codes
        assert extra <= {"create", "update"}, (
            rtype,
            extra,
        )  # writes from the vendor's docs (docs/vendors.md)


def test_same_scenario_same_bytes() -> None:
    bodies = []
    for _ in range(2):
        with serve_in_thread("oracle-health", options=NO_AUTH) as server:
            response = httpx.get(
                server.fhir_base + "/Observation", params={"patient": NANCY, "category": "laboratory"}
            )
            # Instants follow the simulated clock, which runs at real speed here; mask them.
            masked = re.sub(rb'"lastUpdated":"[^"]+"', b"", response.content)
            bodies.append(masked.replace(str(server.port).encode(), b"PORT"))
    assert bodies[0] == bodies[1]
    assert b"L-" in bodies[0]


def test_epic_summary_count_keeps_the_total_and_no_4101(epic: httpx.Client) -> None:
    bundle = epic.get(
        "/Observation", params={**{"patient": DERRICK, "category": "vital-signs"}, "_summary": "count"}
    ).json()
    assert bundle["total"] >= 1100  # other tests in this module may have added vitals
    assert _outcome_entry(bundle) is None


def test_vendor_page_requests_are_journaled_as_pages() -> None:
    from simulator.admin_client import AdminClient

    with serve_in_thread("meditech", options=NO_AUTH) as server, httpx.Client(timeout=30) as client:
        first = client.get(
            server.fhir_base + "/Observation", params={"patient": PAULA, "category": "laboratory"}
        )
        nxt = next(link["url"] for link in first.json()["link"] if link["relation"] == "next")
        assert client.get(nxt).status_code == 200
        entries = [e for e in AdminClient(server.origin).journal() if e.get("resource_type") == "Observation"]
    assert [e["interaction"] for e in entries] == ["search", "page"]


def test_meditech_older_r4_base_answers_the_same_way() -> None:
    with serve_in_thread("meditech", options=NO_AUTH) as server, httpx.Client(timeout=30) as client:
        base = server.site_base("meditech-r4")
        assert base.endswith("/v1/uscore/R4")
        assert client.get(f"{base}/Patient/{PAULA}").json()["name"][0]["family"] == "Bond"
        missing = client.get(f"{base}/Patient/nobody")
        assert (missing.status_code, missing.json()) == (
            404,
            {"resource": "v1/resource/error/_version/1/", "detail": "Not Found"},
        )


def test_oracle_population_has_combined_patients_that_search_skips(oracle: httpx.Client) -> None:
    everyone = oracle.get("/Patient", params={"birthdate": "ge1800-01-01"}).json()["entry"]
    found = {e["resource"]["id"] for e in everyone}
    for entry in everyone:
        for link in entry["resource"].get("link", []):
            if link["type"] == "replaces":  # the surviving record: its merged twin reads but is never found
                twin = link["other"]["reference"].split("/")[1]
                assert twin not in found
                read = oracle.get(f"/Patient/{twin}").json()
                assert read["active"] is False and read["link"][0]["type"] == "replaced-by"
                return
    raise AssertionError("the oracle-health population should hold a combined patient (messiness.merged)")


def test_oracle_combined_patients_are_read_but_never_found(oracle: httpx.Client) -> None:
    current = oracle.get("/Patient/12744580")
    merged = {
        **current.json(),
        "active": False,
        "link": [{"other": {"reference": f"Patient/{NANCY}"}, "type": "replaced-by"}],
    }
    headers = {"content-type": "application/fhir+json", "if-match": current.headers["etag"]}
    assert oracle.put("/Patient/12744580", json=merged, headers=headers).status_code == 200
    assert oracle.get("/Patient/12744580").json()["link"][0]["type"] == "replaced-by"
    found = oracle.get("/Patient", params={"_id": "12744580"}).json()
    assert "entry" not in found
    assert [e["resource"]["id"] for e in oracle.get("/Patient", params={"_id": NANCY}).json()["entry"]] == [
        NANCY
    ]


def test_epic_labels_json_as_asked(epic: httpx.Client) -> None:
    plain = epic.get(f"/Patient/{DERRICK}", headers={"accept": "application/json"})
    assert plain.headers["content-type"] == "application/json; charset=utf-8"
    fhir = epic.get(f"/Patient/{DERRICK}", headers={"accept": "application/fhir+json"})
    assert fhir.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert plain.json() == fhir.json()


def test_epic_post_search_follows_the_same_rules(epic: httpx.Client) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    refused = epic.post("/Patient/_search", content=b"", headers=form)
    assert refused.status_code == 400
    assert _codes(refused.json()) == [("fatal", "59159")]
    found = epic.post("/Patient/_search", content=b"family=Lin&shoe-size=11", headers=form)
    assert found.status_code == 200
    bundle = found.json()
    assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == [DERRICK]
    assert _codes(_outcome_entry(bundle)) == [("information", "59100")]
    not_a_form = epic.post("/Patient/_search", content=b"family=Lin", headers={"content-type": "text/plain"})
    assert not_a_form.status_code == 415
    assert not_a_form.json()["issue"][0]["details"]["coding"][0]["system"] == EPIC_OID


NASTY = [
    ("GET", "/Observation?patient=%FF%FE&category=vital-signs", b""),
    ("GET", "/Observation?_count=abc&patient=x&category=laboratory", b""),
    ("GET", "/Observation?sessionID=", b""),
    ("GET", "/Observation?sessionID=9-ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", b""),
    ("GET", "/Observation?-pageContext=%25%25%25&-pageDirection=NEXT", b""),
    ("GET", "/Observation?continue=LA.not-a-cursor", b""),
    ("GET", "/Patient?=&&=x&" + "a" * 5000 + "=1", b""),
    ("GET", "/Patient?_id=a&_id=b&_id=c&family:exact=", b""),
    ("POST", "/Observation", b"\xff\xfe not json"),
    ("POST", "/Observation", b'{"resourceType": "Observation", "category": 7, "code": "x"}'),
    ("POST", "/Patient/_search", b"\xff\xfe=\x00"),
    ("PUT", "/Condition/1", b"[]"),
    ("DELETE", "/Spaceship/1", b""),
    ("GET", "/Patient/" + "x" * 300, b""),
]


@pytest.mark.parametrize("vendor", ["epic", "oracle-health", "meditech"])
def test_bad_input_gets_a_vendor_shaped_answer_never_a_500(vendor: str, epic, oracle, meditech) -> None:
    client = {"epic": epic, "oracle-health": oracle, "meditech": meditech}[vendor]
    for method, path, body in NASTY:
        kind = "application/x-www-form-urlencoded" if path.endswith("_search") else "application/fhir+json"
        response = client.request(
            method, path, content=body, headers={"content-type": kind, "if-match": "garbage"}
        )
        assert response.status_code < 500, (vendor, method, path, response.text[:200])
        if response.status_code >= 400 and "html" not in response.headers["content-type"]:
            shaped = response.json()
            assert shaped == "" or "issue" in shaped or set(shaped) == {"resource", "detail"}, (path, shaped)


def test_injected_errors_leave_in_the_vendor_shape(tmp_path: Path) -> None:
    """A rate limit (outside the vendor layers) answers a MEDITECH site with MEDITECH's 4xx envelope."""
    scenario = tmp_path / "meditech-throttled.yaml"
    scenario.write_text(
        "name: meditech-throttled\nextends: meditech\nrate_limits:\n  - {id: tight, rate: 1/s, burst: 1}\n"
    )
    with serve_in_thread(str(scenario), options=NO_AUTH) as server, httpx.Client(timeout=30) as client:
        first = client.get(server.fhir_base + f"/Patient/{PAULA}")
        assert first.status_code == 200
        throttled = client.get(server.fhir_base + f"/Patient/{PAULA}")
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"]
        assert throttled.headers["content-type"].startswith("application/json")
        assert throttled.json() == {
            "resource": "v1/resource/error/_version/1/",
            "detail": "Too Many Requests",
        }
