"""deploy/monitoring/prometheusrule.yaml: valid rules, every alert unit-tested with promtool, runbook for each.

promtool is built from the Prometheus Go module by tests/tools/build.sh (`make tools`); without Go the
promtool tests skip, unless CI/REQUIRE_CLUSTER is set: then they fail (the `tools_bin_dir` fixture).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/cml-dev/cml-operator/blob/main/docs/runbook.md#"


def _rule_object() -> dict[str, Any]:
    return yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _rule_object()["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def _promtool(bin_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rule_object()["spec"], sort_keys=False))
    shutil.copy(MONITORING / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    return subprocess.run([str(bin_dir / "promtool"), *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_promtool_checks_the_rules(tools_bin_dir: Path, tmp_path: Path) -> None:
    proc = _promtool(tools_bin_dir, tmp_path, "check", "rules", "rules.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in proc.stdout + proc.stderr


def test_promtool_unit_tests_of_every_alert_pass(tools_bin_dir: Path, tmp_path: Path) -> None:
    proc = _promtool(tools_bin_dir, tmp_path, "test", "rules", "alerts-test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [case for test in yaml.safe_load((MONITORING / "alerts-test.yaml").read_text())["tests"]
             for case in test["alert_rule_test"]]
    names = {alert["alert"] for alert in _alerts()}
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert names - firing == set(), "alerts no test sees firing"
    # A rule that fires without its `for` (or always) must fail a quiet case; only the absent() case has none.
    assert names - quiet == set(), "alerts no test sees quiet"


def test_every_alert_has_summary_description_severity_and_a_runbook_section() -> None:
    anchors = {_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    alerts = _alerts()
    assert len(alerts) >= 12
    for alert in alerts:
        annotations, name = alert["annotations"], alert["alert"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        url = annotations["runbook_url"]
        assert url == RUNBOOK_URL + name.lower(), name
        assert name.lower() in anchors, f"docs/runbook.md has no section '## {name}'"


def test_the_issue_s_alerts_are_all_there() -> None:
    exprs = {alert["alert"]: alert["expr"] for alert in _alerts()}
    assert 'phase="Failed"' in exprs["CMLWorkerStalled"] and _for("CMLWorkerStalled") == "15m"
    assert "ReplacementLimitReached" in exprs["CMLWorkerReplacementLimitReached"]
    assert "cml_duplicate_instances" in exprs["CMLDuplicateInstances"]
    assert "cml_orphan_instances" in exprs["CMLOrphanInstances"]
    assert "cml_leader" in exprs["CMLOperatorNoLeader"] and "cml_leader" in exprs["CMLOperatorMultipleLeaders"]
    assert "CMLUnreachable" in exprs["CMLControllerUnreachable"]
    assert {"CMLEC2ErrorRatioHigh", "CMLEC2Throttled", "CMLOperatorDown", "CMLWorkerLaunchFailing"} <= set(exprs)


def _for(name: str) -> str:
    [alert] = [alert for alert in _alerts() if alert["alert"] == name]
    return alert["for"]
