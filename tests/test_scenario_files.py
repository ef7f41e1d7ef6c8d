"""Scenario files: the schema, precise errors, extends, and the `ehrsim scenario` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simulator.scenario import SCENARIO_DIR, ScenarioError, load_scenario, resolved, shipped, validate_file

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
REQUIRED = {"default", "rate-limited", "outage", "batch-latency", "device-writes"}


def ehrsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_validates_and_loads(name: str) -> None:
    assert validate_file(name) == []
    scenario = load_scenario(name)
    assert scenario.sites and scenario.description


def test_the_required_scenarios_ship_and_are_documented() -> None:
    assert set(SHIPPED) >= REQUIRED
    readme = (SCENARIO_DIR / "README.md").read_text(encoding="utf-8")
    for name in SHIPPED:
        assert f"`{name}`" in readme, f"scenarios/README.md does not describe {name}"


BAD = """\
name: bad
seed: 1
clok: {speed: 1}
sites:
  - id: default
    base_path: fhir
faults:
  - id: a
    schedule: {after: 10 minutes}
    action: {type: outage, retry_after: soon}
  - id: b
    action: {type: explode}
rate_limits:
  - rate: fast
    per: everyone
"""


def test_every_problem_is_reported_with_file_line_path_and_hint(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    problems = validate_file(str(path))
    found = {(p.line, p.path) for p in problems}
    assert found == {
        (3, ""),
        (6, "sites[0].base_path"),
        (9, "faults[0].schedule.after"),
        (10, "faults[0].action.retry_after"),
        (12, "faults[1].action"),
        (14, "rate_limits[0].rate"),
        (15, "rate_limits[0].per"),
    }
    by_path = {p.path: p for p in problems}
    assert "unknown field 'clok'" in by_path[""].message and "clock" in by_path[""].hint
    assert "5m" in by_path["faults[0].schedule.after"].hint
    assert "unknown action 'explode'" in by_path["faults[1].action"].message
    assert "latency" in by_path["faults[1].action"].hint
    assert "client, site" in by_path["rate_limits[0].per"].hint
    assert all(p.file == str(path) for p in problems)
    with pytest.raises(ScenarioError) as refused:
        load_scenario(str(path))
    assert len(refused.value.problems) == len(problems)


def test_semantic_problems_the_schema_cannot_see(tmp_path: Path) -> None:
    path = tmp_path / "every.yaml"
    path.write_text(
        "sites: [{id: a}]\nfaults:\n  - action: {type: outage}\n    schedule: {after: 1m, for: 2h, every: 1h}\n"
    )
    (problem,) = validate_file(str(path))
    assert "'every' needs a 'for' no longer than the period" in problem.message


def test_a_fault_for_a_site_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("sites: [{id: main}]\nfaults:\n  - {match: {site: mian}, action: {type: outage}}\n")
    (problem,) = validate_file(str(path))
    assert "faults[0] names site 'mian', which is not in this scenario (sites: main)" in problem.message


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsites:\n  - id: a\n   base_path: /x\n")
    (problem,) = validate_file(str(path))
    assert problem.line == 4 and "not valid YAML" in problem.message


def test_extends_merges_and_errors_point_into_the_right_file(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("extends: outage\nname: child\nfaults:\n  - {action: {type: hang, delay: forever}}\n")
    (problem,) = validate_file(str(child))
    assert (problem.file, problem.line, problem.path) == (str(child), 4, "faults[0].action.delay")
    ok = tmp_path / "ok.yaml"
    ok.write_text("extends: rate-limited\nname: ok\nclock: {speed: 0}\n")
    data = resolved(str(ok))
    assert data["clock"] == {"start": "2026-03-02T08:00:00Z", "speed": 0.0}
    assert [limit["id"] for limit in data["rate_limits"]] == ["per-client", "observation-search"]


def test_extends_by_relative_path_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\nseed: 9\nsites: [{id: a}]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\nname: child\n")
    scenario = load_scenario(str(tmp_path / "sub" / "child.yaml"))
    assert (scenario.name, scenario.seed, scenario.sites[0].id) == ("child", 9, "a")


def test_extends_loops_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(f"extends: {tmp_path / 'b.yaml'}\nsites: [{{id: a}}]\n")
    (tmp_path / "b.yaml").write_text(f"extends: {tmp_path / 'a.yaml'}\nsites: [{{id: b}}]\n")
    with pytest.raises(ScenarioError, match="loops"):
        load_scenario(str(tmp_path / "a.yaml"))


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(ScenarioError, match=r"known: .*default"):
        load_scenario("no-such-thing")


def test_cli_validate_exit_codes_and_output(tmp_path: Path) -> None:
    good = ehrsim("scenario", "validate", "default", "outage")
    assert good.returncode == 0 and "outage: ok" in good.stdout
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    bad = ehrsim("scenario", "validate", str(path))
    assert bad.returncode == 1
    assert f"{path}:6: sites[0].base_path:" in bad.stderr
    assert "7 problem(s)" in bad.stderr


def test_cli_list_and_show() -> None:
    listed = ehrsim("scenario", "list")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == [name for name, _ in shipped()] and set(names) >= REQUIRED
    shown = ehrsim("scenario", "show", "batch-latency")
    data = yaml.safe_load(shown.stdout)
    assert data["name"] == "batch-latency" and data["sites"][0]["base_path"] == "/fhir"  # from default
    assert data["journal"]["bodies"] == "writes"  # a default filled in
    as_json = json.loads(ehrsim("scenario", "show", "outage", "--format", "json").stdout)
    assert as_json["faults"][0]["id"] == "maintenance"
    missing = ehrsim("scenario", "show", "nope")
    assert missing.returncode == 1 and "unknown scenario" in missing.stderr
